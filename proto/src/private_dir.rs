//! A data directory holds secrets (private keys, credentials, the
//! database): one that another user may write to lets them swap those files
//! between two starts (the coordinator's admin credential and database, say),
//! so the daemons refuse it, as sshd's `StrictModes` does (found by a
//! review, 2026-12-06: a `--data-dir` made 0777 beforehand was used as it
//! was).
use std::{os::unix::fs::MetadataExt, path::Path};

/// One line when `dir` exists and is writable by its group or by others, or
/// belongs to another user than this process's; nothing when it does not
/// exist yet (the daemons make it 0700) or is no directory (their own check
/// says so).
pub fn refuse_loose(dir: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(dir) else { return Ok(()) };
    if !meta.is_dir() {
        return Ok(());
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{} belongs to uid {}, not to this process's user ({me}): that user could replace its keys; \
             chown it or use another directory",
            dir.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by other users (mode {mode:04o}): they could replace its keys and credentials; \
             chmod 700 it or use another directory",
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::refuse_loose;

    #[test]
    fn a_directory_others_may_write_to_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(refuse_loose(dir.path()), Ok(()));
        assert_eq!(refuse_loose(&dir.path().join("not-yet")), Ok(()));
        for (mode, ok) in [
            (0o700, true),
            (0o755, true),
            (0o750, true),
            (0o775, false),
            (0o777, false),
            (0o1777, false),
            (0o722, false),
        ] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let r = refuse_loose(dir.path());
            assert_eq!(r.is_ok(), ok, "{mode:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains(&format!("mode {mode:04o}")) && e.contains("chmod 700"), "{e}");
            }
        }
    }
}
