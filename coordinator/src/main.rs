//! `coordinator serve`: parse flags, init tracing, start, wait for SIGINT/SIGTERM.
use std::{fmt::Write as _, io::Write as _, process::ExitCode};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use weave_coordinator::config::ServeArgs;

#[derive(Parser)]
#[command(name = "coordinator", version, about = "weave coordinator: the cluster's gRPC API and store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API (creates the database, TLS identity and admin credential on first start).
    Serve(Box<ServeArgs>),
    /// Copy a stopped coordinator's SQLite database into an empty PostgreSQL one (no agent re-joins).
    Migrate(weave_coordinator::store::migrate::MigrateArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = match weave_proto::command_line::parse_or_exit::<Cli>("coordinator").command {
        Command::Serve(args) => *args,
        Command::Migrate(args) => return args.run().await,
    };
    // At once: the banner tells a supervisor (or a test) it is up, and a
    // signal from then on must stop it gracefully, not by its default
    // action before the server first looked.
    let stop = weave_proto::stop_signal::install();
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => {
            say(&e.to_string());
            return ExitCode::from(2);
        }
    };
    let data_dir = settings.data_dir.clone();
    let running = match weave_coordinator::start(settings, stop.requested()).await {
        Ok(r) => r,
        Err(e) => {
            say(&weave_proto::client::error_chain(e.as_ref()));
            return ExitCode::FAILURE;
        }
    };
    // The banner goes to stdout, which a supervisor may close: a write error
    // there must not take the coordinator down (println! would panic).
    let mut banner = String::new();
    let _ = writeln!(banner, "coordinator listening on {} (advertised as {})", running.local_addr, running.advertise);
    let _ = writeln!(
        banner,
        "admin credential: {}",
        weave_coordinator::identity::admin_credential_path(&data_dir).display()
    );
    match &running.first_token {
        Some((join, token)) => {
            let uses =
                if token.unlimited { "unlimited uses".to_string() } else { format!("{} use(s)", token.uses_left) };
            let expiry = match token.expires_at {
                0 => "never expires".to_string(),
                at => format!("expires in {} s", at - weave_coordinator::store::now()),
            };
            let _ = writeln!(banner, "join token (first start): {join}");
            let _ = writeln!(banner, "  {uses}, {expiry}; on a host: agent join --token-file <file holding it>");
            let _ = writeln!(banner, "  tokens for more hosts: weavectl token create --uses N");
        }
        None => {
            let _ = writeln!(banner, "more join tokens: weavectl token create --uses N");
        }
    }
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(banner.as_bytes()).and_then(|()| stdout.flush());
    match running.task.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            say(&weave_proto::client::error_chain(&e));
            ExitCode::FAILURE
        }
        Err(e) => {
            say(&e.to_string());
            ExitCode::FAILURE
        }
    }
}

/// A failure on stderr, one printable line (`command_line::printable`).
fn say(why: &str) {
    eprintln!("coordinator: {}", weave_proto::command_line::printable(why));
}
