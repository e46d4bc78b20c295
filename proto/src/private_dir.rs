//! A data directory holds secrets (private keys, credentials, the
//! database): one that another user may write to lets them swap those files
//! between two starts (the coordinator's admin credential and database, say;
//! found by a review, 2026-12-06: a `--data-dir` made 0777 beforehand was used
//! as it was).
//!
//! What the daemons do with an existing one: another user's (not root's) is
//! refused; group or other write is taken away when the directory is this
//! process's; a root-owned one this process may not change (Kubernetes'
//! `fsGroup` volumes: kubelet makes them group-writable, setgid, on every
//! mount, and a local-path volume is 0777) is used with a warning (one that
//! says so when only this process's own group may write to it). sshd's
//! `StrictModes` refuses all of these; a refusal would stop the shipped
//! coordinator StatefulSet (found by the review of that change).
use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
};

/// `Err` (one line) for a directory another user owns; `Ok(Some(warning))`
/// when it was, or still is, writable by others; `Ok(None)` when all is
/// well or `dir` does not exist yet (the daemons make it 0700) or is no
/// directory (their own check says so).
pub fn secure(dir: &Path) -> Result<Option<String>, String> {
    secure_as(dir, nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
}

/// [`secure`] for a process of user `me` and group `group`.
fn secure_as(dir: &Path, me: u32, group: u32) -> Result<Option<String>, String> {
    let Ok(meta) = std::fs::metadata(dir) else { return Ok(None) };
    if !meta.is_dir() {
        return Ok(None);
    }
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "{} belongs to uid {}, not to this process's user ({me}) or root: that user could replace its keys; \
             chown it or use another directory",
            dir.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 == 0 {
        return Ok(None);
    }
    // A shared directory (sticky, as /tmp) is left as it is: taking others'
    // write away from a mistyped `--data-dir /tmp` would break the host
    // (found by the review of the first version of this).
    if mode & 0o1000 != 0 {
        return Ok(Some(format!(
            "{} is a shared directory (mode {mode:04o}, like /tmp): other users could replace its keys and \
             credentials; give the daemon a directory of its own",
            dir.display()
        )));
    }
    let tight = mode & !0o022;
    if meta.uid() == me && std::fs::set_permissions(dir, std::fs::Permissions::from_mode(tight)).is_ok() {
        return Ok(Some(format!(
            "{} was writable by other users (mode {mode:04o}): made {tight:04o}, as they could have replaced \
             its keys and credentials",
            dir.display()
        )));
    }
    // Root's, writable by this process's own group alone: Kubernetes'
    // `fsGroup` set to the pod's group, as the shipped StatefulSet does,
    // where only the pod's processes are in it. Said so (a warning that
    // others could write read as an attack at every start); not silent, as
    // elsewhere that group may be shared (`users`: found by the review of
    // a version that said nothing, 2026-12-06).
    if mode & 0o002 == 0 && meta.gid() == group {
        return Ok(Some(format!(
            "{} is writable by its group ({group}, this process's own, as a Kubernetes fsGroup volume is) and \
             not this process's to change: any other member of that group could replace its keys and credentials",
            dir.display()
        )));
    }
    Ok(Some(format!(
        "{} is writable by other users (mode {mode:04o}) and not this process's to change: whoever may write \
         to it could replace its keys and credentials",
        dir.display()
    )))
}

/// A secret file (a private key, a credential) that other users may read
/// is made private (its owner's bits alone) when it is this process's; the
/// warning to log, if any. (A key at 0644 was used as it was, without a
/// word; found by a review, 2026-12-07.) Group read alone, the group this
/// process's own (a Kubernetes `fsGroup` volume, whose files kubelet makes
/// group-readable at every mount), is taken away without a warning.
pub fn secret_file(path: &Path) -> Option<String> {
    secret_file_as(path, nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
}

/// [`secret_file`] for a process of user `me` and group `group`.
fn secret_file_as(path: &Path, me: u32, group: u32) -> Option<String> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return None;
    }
    let tight = mode & 0o700;
    let changed = meta.uid() == me && std::fs::set_permissions(path, std::fs::Permissions::from_mode(tight)).is_ok();
    match changed {
        true if mode & 0o007 == 0 && meta.gid() == group => None,
        true => Some(format!(
            "{} was readable by other users (mode {mode:04o}): made {tight:04o}; whoever read it meanwhile holds \
             this host's secret (a node's: `weavectl node rm` it and join again; the coordinator's: see \
             --new-identity)",
            path.display()
        )),
        false => Some(format!(
            "{} is readable by other users (mode {mode:04o}) and not this process's to change: whoever may read \
             it holds this host's secret",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::{secret_file, secure};

    #[test]
    fn a_secret_file_others_may_read_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("private.key");
        assert_eq!(secret_file(&file), None, "none yet");
        std::fs::write(&file, "k").unwrap();
        let mode = || std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
        let me = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        for (given, kept, warned) in
            [(0o600, 0o600, false), (0o400, 0o400, false), (0o644, 0o600, true), (0o604, 0o600, true)]
        {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(given)).unwrap();
            let w = secret_file(&file);
            assert_eq!((mode(), w.is_some()), (kept, warned), "{given:o}: {w:?}");
            if let Some(w) = w {
                assert!(w.contains(&format!("(mode {given:04o}): made {kept:04o}")), "{w}");
            }
        }
        // Group read, the process's own group (fsGroup): made private quietly; another group's: warned.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(super::secret_file_as(&file, me.0, me.1), None);
        assert_eq!(mode(), 0o600);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(super::secret_file_as(&file, me.0, me.1.wrapping_add(1)).is_some());
        // Not this process's: left, and said so.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = super::secret_file_as(&file, me.0.wrapping_add(1), me.1).unwrap();
        assert!(w.contains("not this process's to change"), "{w}");
        assert_eq!(mode(), 0o644);
    }

    #[test]
    fn a_directory_others_may_write_to_is_made_private_when_it_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(secure(dir.path()), Ok(None));
        assert_eq!(secure(&dir.path().join("not-yet")), Ok(None));
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        for (given, kept) in [
            (0o700, 0o700),
            (0o755, 0o755),
            (0o775, 0o755),
            (0o777, 0o755),
            (0o2777, 0o2755),
            (0o722, 0o700),
            (0o1777, 0o1777),
        ] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(given)).unwrap();
            let warned = secure(dir.path()).unwrap();
            assert_eq!(mode(dir.path()), kept, "{given:o}");
            assert_eq!(warned.is_some(), given & 0o022 != 0, "{given:o}: {warned:?}");
            match warned {
                Some(w) if given & 0o1000 != 0 => assert!(w.contains("a shared directory (mode 1777"), "{w}"),
                Some(w) => assert!(w.contains(&format!("(mode {given:04o}): made {kept:04o}")), "{w}"),
                None => {}
            }
        }
    }

    /// Run as root (CI): another user's directory is refused, root's is not.
    #[test]
    fn another_users_directory_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
        let e = secure(dir.path()).unwrap_err();
        assert!(e.contains("belongs to uid 65534") && e.contains("chown it"), "{e}");
        std::os::unix::fs::chown(dir.path(), Some(0), None).unwrap();
        assert_eq!(secure(dir.path()), Ok(None));
        // Root's, as a process of user and group 65532 finds a Kubernetes
        // `fsGroup: 65532` volume: its own group's write is said to be so;
        // others' or another group's is warned of; all left (not the process's).
        std::os::unix::fs::chown(dir.path(), Some(0), Some(65532)).unwrap();
        let mode = |m| std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(m)).unwrap();
        mode(0o2775);
        let warned = super::secure_as(dir.path(), 65532, 65532).unwrap().unwrap_or_default();
        assert!(warned.contains("writable by its group (65532, this process's own"), "{warned}");
        let warned = super::secure_as(dir.path(), 65532, 65533).unwrap().unwrap_or_default();
        assert!(warned.contains("(mode 2775) and not this process's to change"), "{warned}");
        mode(0o2777);
        let warned = super::secure_as(dir.path(), 65532, 65532).unwrap().unwrap_or_default();
        assert!(warned.contains("(mode 2777) and not this process's to change"), "{warned}");
    }
}
