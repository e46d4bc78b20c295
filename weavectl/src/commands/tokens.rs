//! `weavectl token create|ls|revoke`.
use serde_json::{Value, json};
use weave_proto::{
    client::Api,
    v1::{CreateTokenRequest, ListTokensRequest, RevokeTokenRequest, Token},
};

use super::{Output, now, or_dash, relative, told};
use crate::{
    cli::{TokenCommand, Uses},
    failure::{Doing, Failure, Outcome, older_coordinator},
    table::Table,
};

pub(super) struct Checked {
    command: TokenCommand,
    /// 0: the coordinator's default lifetime.
    ttl_seconds: u64,
    never_expires: bool,
    /// 0: never.
    forget_after: u64,
}

pub(super) fn check(command: TokenCommand) -> Outcome<Checked> {
    let (ttl_seconds, never_expires) = match &command {
        TokenCommand::Create { ttl: Some(ttl), .. } => match weave_proto::duration::parse(ttl) {
            Ok(Some(d)) => (d.as_secs(), false),
            Ok(None) => (0, true),
            Err(e) => return Err(Failure::usage("--ttl", e)),
        },
        _ => (0, false),
    };
    let forget_after = match &command {
        TokenCommand::Create { forget_after: Some(f), .. } => match weave_proto::duration::parse(f) {
            Ok(d) => d.map_or(0, |d| d.as_secs()),
            Err(e) => return Err(Failure::usage("--forget-after", e)),
        },
        _ => 0,
    };
    Ok(Checked { command, ttl_seconds, never_expires, forget_after })
}

pub(super) async fn run(api: &mut Api, out: &Output, c: Checked) -> Outcome {
    match c.command {
        TokenCommand::Create { uses, description, .. } => {
            let description = description.unwrap_or_default();
            let req = CreateTokenRequest {
                ttl_seconds: c.ttl_seconds,
                // The API's 0 is "unlimited".
                uses: match uses {
                    Uses::Limited(n) => n,
                    Uses::Unlimited => 0,
                },
                description,
                never_expires: c.never_expires,
                forget_after_seconds: c.forget_after,
            };
            let resp = api.tokens.create_token(req).await.doing("creating a join token")?;
            let token = resp.token.unwrap_or_default();
            // An older coordinator made one whose nodes are never forgotten
            // (found by a review of upgrades, 2026-12-07): revoked.
            if c.forget_after > 0 && token.forget_after_seconds != c.forget_after {
                let revoke = RevokeTokenRequest { id: token.id.clone() };
                let undone = api.tokens.revoke_token(revoke).await.ok().map(|_| "the token was revoked");
                return Err(older_coordinator("creating a join token", "--forget-after", undone));
            }
            if out.json {
                let mut v = token_json(&token);
                v["secret_token"] = json!(resp.secret_token);
                let text = serde_json::to_string_pretty(&v).expect("a serde_json::Value serializes");
                told(format!("{text}\n"), "the new join token", &resp.secret_token)?;
            } else {
                // Only the token on stdout (`T=$(weavectl token create)`); the hint is for people.
                told(format!("{}\n", resp.secret_token), "the new join token", &resp.secret_token)?;
                let forget = match token.forget_after_seconds {
                    0 => String::new(),
                    s => format!(", its nodes forgotten after {} out of touch", weave_proto::duration::format(s)),
                };
                eprintln!(
                    "token {} ({}, {}{forget}); on each host: agent join --token-file <a file holding it>",
                    token.id,
                    uses_text(&token),
                    expiry(token.expires_at)
                );
                // A forgotten host comes back by joining again with it.
                if token.forget_after_seconds > 0 && (!token.unlimited || !never(token.expires_at)) {
                    eprintln!(
                        "note: a forgotten host joins again with this token only while it has uses left and has \
                         not expired (--uses unlimited --ttl never keeps it usable)"
                    );
                }
            }
        }
        TokenCommand::Ls => {
            let tokens = api.tokens.list_tokens(ListTokensRequest {}).await.doing("listing join tokens")?.tokens;
            let mut table =
                Table::new(&["ID", "STATE", "EXPIRES", "USES", "LEFT", "CREATED", "FORGET", "NODES", "DESCRIPTION"]);
            for t in &tokens {
                table.row(vec![
                    t.id.clone(),
                    state(t).into(),
                    if never(t.expires_at) { "never".into() } else { relative(t.expires_at) },
                    t.uses.to_string(),
                    if t.unlimited { "unlimited".into() } else { t.uses_left.to_string() },
                    relative(t.created_at),
                    forget_cell(t.forget_after_seconds),
                    or_dash(&t.joined_nodes.join(",")),
                    or_dash(&t.description),
                ]);
            }
            out.list(&table, || Value::Array(tokens.iter().map(token_json).collect()));
        }
        TokenCommand::Revoke { id } => {
            // A whole token pasted instead of its id: its id, and its
            // secret goes nowhere (not to the coordinator, not to stderr).
            let id = weave_proto::token::JoinToken::parse(&id).map(|t| t.id).unwrap_or(id);
            let token =
                api.tokens.revoke_token(RevokeTokenRequest { id: id.clone() }).await.doing("revoking a join token")?;
            let stay = match token.joined_nodes.as_slice() {
                [] if token.uses == 0 => "no member joined with it".to_string(),
                // Removed since, or a coordinator from before 2026-12-06
                // that does not name them: not "no member" (a review).
                [] => format!(
                    "{} join(s) with it, and the coordinator names no member that joined with it (removed \
                     since, or an older coordinator: check `weavectl node ls`)",
                    token.uses
                ),
                nodes => format!(
                    "the nodes that joined with it stay: {} (`weavectl node rm <name>` for any you do not know)",
                    nodes.join(", ")
                ),
            };
            out.done(&format!("revoked token {}; {stay}", token.id), || token_json(&token));
        }
    }
    Ok(())
}

fn state(t: &Token) -> &'static str {
    if t.revoked {
        "revoked"
    } else if t.expires_at != 0 && t.expires_at <= now() {
        "expired"
    } else if !t.unlimited && t.uses_left == 0 {
        "used up"
    } else {
        "active"
    }
}

/// The API says "never expires" with 0.
fn never(expires_at: i64) -> bool {
    expires_at == 0
}

fn expiry(expires_at: i64) -> String {
    if never(expires_at) {
        "never expires".into()
    } else if expires_at <= now() {
        format!("expired {}", relative(expires_at))
    } else {
        format!("expires {}", relative(expires_at))
    }
}

fn uses_text(t: &Token) -> String {
    if t.unlimited { "unlimited uses".into() } else { format!("{} use(s)", t.uses_left) }
}

fn token_json(t: &Token) -> Value {
    json!({
        "id": t.id,
        "state": state(t),
        "created_at": t.created_at,
        "expires_at": if never(t.expires_at) { Value::Null } else { json!(t.expires_at) },
        "uses": t.uses,
        "uses_left": if t.unlimited { Value::Null } else { json!(t.uses_left) },
        "revoked": t.revoked,
        "description": t.description,
        "joined_nodes": t.joined_nodes,
        "forget_after_seconds": forget_json(t.forget_after_seconds),
    })
}

/// A `forget_after` as `token ls`/`node ls` show it: after how long out of
/// touch the coordinator forgets a node, "-" for never.
pub(super) fn forget_cell(secs: u64) -> String {
    if secs == 0 { "-".into() } else { weave_proto::duration::format(secs) }
}

/// A `forget_after` in JSON: null for never.
pub(super) fn forget_json(secs: u64) -> Value {
    if secs == 0 { Value::Null } else { json!(secs) }
}
