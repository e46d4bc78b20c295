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
            "; this host's own view needs none: `weavectl status peers`, `agent status`"
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

/// Connects as admin. Fails here, before any command runs, when the coordinator
/// is unreachable or its identity does not match the credential's pin.
pub(crate) async fn admin_api(global: &Global) -> Outcome<Api> {
    let cred = load(global)?;
    let addr = global.coordinator.as_deref().map(str::trim).unwrap_or(&cred.coordinator);
    let channel = connect(addr, cred.pin).await.map_err(Failure::connect)?;
    Api::new(channel, &cred.secret).map_err(Failure::connect)
}
