//! Finding the admin credential and opening a pinned channel to the coordinator.
use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
};

use weave_proto::{
    client::{Api, connect},
    token::AdminCredential,
};

use crate::{
    cli::Global,
    failure::{Exit, Failure, Outcome},
};

/// The file the admin credential is read from, if it comes from a file.
pub(crate) fn credential_file(global: &Global) -> Option<PathBuf> {
    match (&global.admin, &global.admin_file) {
        (Some(_), _) => None,
        (None, Some(path)) => Some(path.clone()),
        (None, None) => Some(global.data_dir.join("admin.credential")),
    }
}

/// The admin credential from the first source given (order in `weavectl --help`).
fn load(global: &Global) -> Outcome<AdminCredential> {
    if let Some(s) = &global.admin {
        return AdminCredential::parse(s).map_err(|e| Failure::usage("--admin (WEAVE_ADMIN)", e));
    }
    if let Some(path) = &global.admin_file {
        return read_file(path, "--admin-file (WEAVE_ADMIN_FILE)");
    }
    let path = global.data_dir.join("admin.credential");
    // Not `exists()`: a directory this user may not enter (0700, root's) is
    // not "does not exist" but permission denied, as for --admin-file.
    if matches!(path.try_exists(), Ok(false)) {
        // On a host with an agent, what needs no admin credential.
        let here = if global.socket.exists() {
            "; this host's own view needs none: `weavectl status peers`, `agent status`, and `weavectl \
             status` reads with the host's node credential (--agent-data-dir <the agent's data dir>, \
             WEAVE_AGENT_DATA_DIR, when it is not /var/lib/weave/agent)"
        } else {
            ""
        };
        return Err(Failure::usage(
            "no admin credential",
            format!(
                "{} does not exist; pass --admin <wva1…> (WEAVE_ADMIN), --admin-file <path> (WEAVE_ADMIN_FILE), \
                 or --data-dir <the coordinator's data dir> (WEAVE_DATA_DIR){here}",
                path.display()
            ),
        ));
    }
    read_file(&path, "admin credential")
}

fn read_file(path: &Path, source: &str) -> Outcome<AdminCredential> {
    let what = format!("{source} {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        ErrorKind::PermissionDenied => {
            Failure::new(Exit::Denied, &what, "permission denied (run as root, or pass --admin <wva1…>)")
        }
        _ => Failure::usage(&what, e),
    })?;
    AdminCredential::parse(&text).map_err(|e| Failure::usage(what, e))
}

/// Connects as admin or, with no admin credential given or found, as this
/// host's node (its agent's `identity.json`, root's): what `status` reads
/// a node may read too, so `weavectl status` works on every host, as
/// Weave Net's `weave status` did on every peer (a review, 2026-12-05).
pub(crate) async fn reader_api(global: &Global) -> Outcome<Api> {
    let no_admin = global.admin.is_none()
        && global.admin_file.is_none()
        && matches!(global.data_dir.join("admin.credential").try_exists(), Ok(false));
    let identity = global.agent_data_dir.join("identity.json");
    if !no_admin || !matches!(identity.try_exists(), Ok(true)) {
        return admin_api(global).await;
    }
    let what = format!("this host's node credential {}", identity.display());
    let text = std::fs::read(&identity).map_err(|e| match e.kind() {
        ErrorKind::PermissionDenied => Failure::new(Exit::Denied, &what, "permission denied (run as root)"),
        _ => Failure::usage(&what, e),
    })?;
    let saved: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Failure::usage(&what, e))?;
    let field = |k: &str| saved.get(k).and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
    let pin = weave_proto::token::Pin::parse(&field("pin")).ok_or_else(|| Failure::usage(&what, "no pin in it"))?;
    let coordinator = field("coordinator");
    let addr = global.coordinator.as_deref().map(str::trim).unwrap_or(&coordinator);
    let channel = connect(addr, pin).await.map_err(Failure::connect)?;
    Api::new(channel, &field("credential")).map_err(Failure::connect)
}

/// Connects as admin. Fails here, before any command runs, when the coordinator
/// is unreachable or its identity does not match the credential's pin.
pub(crate) async fn admin_api(global: &Global) -> Outcome<Api> {
    let cred = load(global)?;
    let addr = global.coordinator.as_deref().map(str::trim).unwrap_or(&cred.coordinator);
    let channel = connect(addr, cred.pin).await.map_err(Failure::connect)?;
    Api::new(channel, &cred.secret).map_err(Failure::connect)
}
