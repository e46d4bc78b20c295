//! One module per command group. A command validates its arguments locally,
//! makes its calls, and prints either a table (people) or JSON (scripts).
mod admin;
mod dns;
mod ipam;
mod local;
mod nodes;
#[cfg(test)]
mod older;
mod status;
mod subnets;
mod tokens;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::{
    cli::{Cli, Command},
    connect::admin_api,
    failure::Outcome,
    table::Table,
};

/// Runs the parsed command line.
pub(crate) async fn run(cli: Cli) -> Outcome {
    let out = Output { json: cli.global.json };
    // Arguments are checked before connecting: a typo should not need a coordinator.
    match cli.command {
        Command::Token(c) => {
            let c = tokens::check(c)?;
            tokens::run(&mut admin_api(&cli.global).await?, &out, c).await
        }
        Command::Node(c) => nodes::run(&mut admin_api(&cli.global).await?, &out, c).await,
        Command::Subnet(c) => {
            let c = subnets::check(c)?;
            subnets::run(&mut admin_api(&cli.global).await?, &out, c).await
        }
        Command::Ipam(c) => {
            let c = ipam::check(c)?;
            ipam::run(&mut admin_api(&cli.global).await?, &out, c).await
        }
        // With an agent on this host, lookups ask it (what containers here resolve).
        Command::Dns(crate::cli::DnsCommand::Lookup { name }) if cli.global.socket.exists() => {
            match dns::lookup_local(&cli.global.socket, &name, &out).await {
                Some(done) => done,
                None => {
                    let c = crate::cli::DnsCommand::Lookup { name };
                    dns::run(&mut admin_api(&cli.global).await?, &out, c).await
                }
            }
        }
        Command::Dns(c) => {
            let c = dns::check(c)?;
            dns::run(&mut admin_api(&cli.global).await?, &out, c).await
        }
        Command::Admin(crate::cli::AdminCommand::Rotate) => {
            let file = crate::connect::credential_file(&cli.global);
            admin::rotate(&mut admin_api(&cli.global).await?, &out, file.as_deref()).await
        }
        Command::Local(c) => local::run(&cli.global.socket, &out, c).await,
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "weavectl", &mut script);
            crate::out!("{}", String::from_utf8_lossy(&script));
            Ok(())
        }
        Command::Status { view: crate::cli::StatusView::Peers } => local::peers(&cli.global.socket, &out).await,
        Command::Status { view } => status::run(&mut crate::connect::reader_api(&cli.global).await?, &out, view).await,
    }
}

/// Prints `text`, which holds a secret that exists nowhere else now (a new
/// join token, a rotated admin credential): when stdout refuses it (a closed
/// pipe, a full disk), the secret goes to stderr as `what: secret`, and the
/// command fails, rather than end quietly with the secret lost.
fn told(text: String, what: &str, secret: &str) -> Outcome {
    crate::try_out(format_args!("{text}")).map_err(|e| {
        eprintln!("weavectl: {what}: {secret}");
        crate::failure::Failure::new(crate::failure::Exit::Other, format!("printing {what}"), e)
    })
}

/// Where results go: stdout, as a table or as JSON.
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    /// A listing: the table for people, `json` for scripts.
    fn list(&self, table: &Table, json: impl FnOnce() -> Value) {
        if self.json {
            self.print_json(&json());
        } else {
            crate::out!("{table}");
        }
    }

    /// The result of a change: a sentence for people, `json` for scripts.
    fn done(&self, message: &str, json: impl FnOnce() -> Value) {
        if self.json {
            self.print_json(&json());
        } else {
            crate::out!("{message}\n");
        }
    }

    pub(crate) fn print_json(&self, value: &Value) {
        // Serializing a Value built by json!() cannot fail (no non-string keys).
        crate::out!("{}\n", serde_json::to_string_pretty(value).expect("a serde_json::Value serializes"));
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A unix time relative to now, roughly: "3h ago", "in 23h".
fn relative(ts: i64) -> String {
    let delta = ts - now();
    let span = delta.unsigned_abs();
    let text = match span {
        0..60 => format!("{span}s"),
        60..3600 => format!("{}m", span / 60),
        3600..172_800 => format!("{}h", span / 3600),
        _ => format!("{}d", span / 86_400),
    };
    if delta > 0 { format!("in {text}") } else { format!("{text} ago") }
}

/// An empty string shown as "-" so columns stay readable.
fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(now() - 7200), "2h ago");
        assert_eq!(relative(now() + 3 * 86_400 + 100), "in 3d");
        assert_eq!(or_dash(""), "-");
    }
}
