//! The one way the agent enters a container's network namespace: a thread of
//! its own (`setns` changes only the calling thread) that enters, runs one
//! closure and ends. Whatever it opened (a socket) stays in that namespace.
use std::{fs::File, os::fd::AsFd};

use crate::error::Error;

/// Runs `f` on a new thread inside the namespace `netns` (`label` names it
/// in errors) and returns its result.
pub fn run_in<T: Send + 'static>(
    netns: &File,
    label: &str,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let fd = netns.as_fd().try_clone_to_owned().map_err(|e| Error::Io(format!("dup the namespace of {label}"), e))?;
    let what = format!("enter the namespace of {label}");
    std::thread::spawn(move || {
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| Error::Io(what, e.into()))?;
        f()
    })
    .join()
    .map_err(|_| Error::Netns(format!("the thread in the namespace of {label} panicked")))?
}

/// Every network namespace this agent can see, by inode, with a path that
/// leads to it: a mount of it first (`ip netns add`, a runtime's bind mount
/// under `/run`), else a process's `/proc/<pid>/ns/net`. Not the agent's own.
pub fn every_namespace() -> std::collections::BTreeMap<u64, std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut found = std::collections::BTreeMap::new();
    let own = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).ok();
    let inode = |link: &str| link.strip_prefix("net:[")?.strip_suffix(']')?.parse::<u64>().ok();
    for line in std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines() {
        let mut fields = line.split(' ').skip(3);
        if let (Some(Some(ino)), Some(point)) = (fields.next().map(inode), fields.next()) {
            found.entry(ino).or_insert_with(|| unescape_mount_point(point).into());
        }
    }
    let numeric = |n: &str| n.bytes().all(|b| b.is_ascii_digit());
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().filter(|n| numeric(n)).map(str::to_string) else { continue };
        let path = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
        if let Some(ino) = std::fs::read_link(&path).ok().and_then(|l| l.to_str().and_then(inode)) {
            found.entry(ino).or_insert(path);
        }
    }
    if let Some(own) = own {
        found.remove(&own);
    }
    found
}

/// A mount point as `/proc/self/mountinfo` writes it: space, tab, newline
/// and backslash as octal escapes (`\040`).
fn unescape_mount_point(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_as_the_kernel_escapes_them() {
        assert_eq!(unescape_mount_point("/run/netns/a\\040b"), "/run/netns/a b");
        assert_eq!(unescape_mount_point("/x\\134y\\0"), "/x\\y\\0");
        assert_eq!(unescape_mount_point("/run/netns/plain"), "/run/netns/plain");
    }

    #[test]
    fn every_namespace_leaves_out_the_agents_own() {
        use std::os::unix::fs::MetadataExt;
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let found = every_namespace();
        assert!(!found.contains_key(&own));
        for (ino, path) in found.iter().take(20) {
            if let Ok(m) = std::fs::metadata(path) {
                assert_eq!(m.ino(), *ino, "{}", path.display());
            }
        }
    }
}
