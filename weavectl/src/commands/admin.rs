//! `weavectl admin rotate`.
use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde_json::json;
use weave_proto::{client::Api, v1::RotateAdminCredentialRequest};

use super::{Output, told};
use crate::failure::{Doing, Outcome};

/// Writes `text` to `path` with mode 0600: temp file in the same directory,
/// synced, renamed over the old one, so a crash leaves the old or the new.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension("rotating");
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

pub(super) async fn rotate(api: &mut Api, out: &Output, file: Option<&Path>) -> Outcome {
    let resp = api
        .admin
        .rotate_admin_credential(RotateAdminCredentialRequest {})
        .await
        .doing("rotating the admin credential")?;
    // The old credential is dead now: losing the new one would lock the admin
    // out, so it is printed whenever it cannot be saved.
    let saved = match file {
        Some(path) => match write_private(path, &format!("{}\n", resp.credential)) {
            Ok(()) => Some(path.display().to_string()),
            Err(e) => {
                eprintln!("weavectl: cannot write the new credential to {}: {e}", path.display());
                None
            }
        },
        None => None,
    };
    match (&saved, out.json) {
        (Some(path), false) => {
            crate::out!("admin credential rotated; the old one no longer works; the new one is in {path}\n")
        }
        (None, false) => {
            // Only the credential on stdout, for `C=$(weavectl admin rotate)`.
            told(format!("{}\n", resp.credential), NEW_CREDENTIAL, &resp.credential)?;
            eprintln!("admin credential rotated (printed on stdout); the old one no longer works");
        }
        (Some(path), true) => out.print_json(&json!({ "rotated": true, "file": path })),
        (None, true) => {
            let text = serde_json::to_string_pretty(&json!({ "rotated": true, "credential": resp.credential }))
                .expect("a serde_json::Value serializes");
            told(format!("{text}\n"), NEW_CREDENTIAL, &resp.credential)?;
        }
    }
    Ok(())
}

/// What `told` calls the credential when stdout refuses it.
const NEW_CREDENTIAL: &str = "the new admin credential (the old one no longer works)";
