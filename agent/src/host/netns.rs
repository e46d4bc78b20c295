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

// `SO_NETNS_COOKIE` (Linux 5.14), which nix does not name.
use nix::{getsockopt_impl, libc, sockopt_impl};
sockopt_impl!(NetnsCookie, GetOnly, libc::SOL_SOCKET, libc::SO_NETNS_COOKIE, u64);

/// The cookie of namespace `netns`: unlike its inode, which the kernel gives
/// the next namespace as soon as this one is gone, never given to another
/// while the host runs. Read from a socket made inside it; None if it cannot
/// be (a kernel before 5.14).
pub fn cookie(netns: &File) -> Option<u64> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, getsockopt, socket};
    let read = run_in(netns, "its cookie", || {
        let s = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| Error::Io("a socket to read the namespace's cookie".into(), e.into()))?;
        getsockopt(&s, NetnsCookie).map_err(|e| Error::Io("SO_NETNS_COOKIE".into(), e.into()))
    });
    read.ok()
}

/// The key a namespace known only by its inode is attached and served DNS
/// under (no name, no CNI id): `netns:<inode>`.
pub fn key_of(inode: u64) -> String {
    format!("netns:{inode}")
}

/// The inode a `netns:<inode>` key names; `None` for a name or a CNI id.
pub fn inode_in_key(key: &str) -> Option<u64> {
    key.strip_prefix("netns:")?.parse().ok()
}

/// Every network namespace this agent can see, by inode, with a path that
/// leads to it: a mount of it first (`ip netns add`, a runtime's bind mount
/// under `/run`), else a process's `/proc/<pid>/ns/net`. Not the agent's own.
pub fn every_namespace() -> std::collections::BTreeMap<u64, std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut found = std::collections::BTreeMap::new();
    scan(false, |ino, path| {
        found.entry(ino).or_insert(path);
        false
    });
    if let Ok(own) = std::fs::metadata("/proc/self/ns/net") {
        found.remove(&own.ino());
    }
    found
}

/// Whether a network namespace is still in use by anyone but the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Mounted somewhere this agent sees (`ip netns add`, a runtime's bind
    /// mount), or the namespace of a process or any of its threads.
    Held,
    /// Nothing this agent sees holds it (it may live out of its sight).
    Unseen,
    /// Its inode is another namespace's now (the cookie differs): the one
    /// asked about is gone for sure.
    Gone,
}

/// Whether network namespace `inode` (whose [`cookie`], if known, is
/// `cookie`) is still in use by anyone but the agent: see [`Use`]. A
/// process's main thread may have ended while others go on (found by a
/// review, 2026-12-05). Not the agent's own threads: they enter a namespace
/// only for a moment, and its DNS sockets are what keeps it in being.
/// Without the cookie, a namespace that was given the inode of one gone
/// passes for it: the kernel gives a freed inode to the next namespace
/// made, and a dead CNI container's address stayed held while any
/// namespace had its inode (a CI run, 2026-12-06).
pub fn in_use(inode: u64, cookie: Option<u64>) -> Use {
    use std::os::unix::fs::MetadataExt;
    let mut found = None;
    let seen = scan(true, |ino, path| {
        let hit = ino == inode;
        if hit {
            found = Some(path);
        }
        hit
    });
    match (seen, cookie) {
        (false, _) => Use::Unseen,
        (true, None) => Use::Held,
        (true, Some(c)) => {
            // Two live namespaces never share an inode. One that cannot be
            // read (its process just ended) counts as held: the next look
            // tells. So does a path that leads elsewhere by the time it is
            // opened (a process that left the namespace, a mount stacked on
            // it): read there, another namespace's cookie gave away a live
            // pod's address (found by a review, 2026-12-06).
            let opened = found.and_then(|p| File::open(p).ok());
            let same = opened.filter(|f| f.metadata().is_ok_and(|m| m.ino() == inode));
            let now = same.and_then(|f| self::cookie(&f));
            if now.is_some_and(|now| now != c) { Use::Gone } else { Use::Held }
        }
    }
}

/// Offers `seen` each namespace mounted where this agent sees it, then each
/// of every other process (with `threads`, of each of its threads too), with
/// a path that leads to it, until `seen` returns true (then true).
fn scan(threads: bool, mut seen: impl FnMut(u64, std::path::PathBuf) -> bool) -> bool {
    use std::path::{Path, PathBuf};
    let inode = |link: &str| link.strip_prefix("net:[")?.strip_suffix(']')?.parse::<u64>().ok();
    for line in std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines() {
        let mut fields = line.split(' ').skip(3);
        if let (Some(Some(ino)), Some(point)) = (fields.next().map(inode), fields.next())
            && seen(ino, unescape_mount_point(point).into())
        {
            return true;
        }
    }
    let own = std::process::id().to_string();
    let numbered = |dir: &Path| -> Vec<PathBuf> {
        let numeric = |n: &str| n.bytes().all(|b| b.is_ascii_digit()) && n != own;
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        entries.filter(|e| e.file_name().to_str().is_some_and(numeric)).map(|e| e.path()).collect()
    };
    let mut entered = |dir: &Path| {
        let path = dir.join("ns/net");
        let ino = std::fs::read_link(&path).ok().and_then(|l| l.to_str().and_then(inode));
        ino.is_some_and(|ino| seen(ino, path))
    };
    for process in numbered(Path::new("/proc")) {
        if entered(&process) || (threads && numbered(&process.join("task")).iter().any(|t| entered(t))) {
            return true;
        }
    }
    false
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
    fn a_key_names_an_inode_or_not() {
        assert_eq!(inode_in_key(&key_of(4026532000)), Some(4026532000));
        assert_eq!(inode_in_key("web"), None);
        assert_eq!(inode_in_key("netns:"), None);
        assert_eq!(inode_in_key("netns:12x"), None);
    }

    #[test]
    fn a_namespace_is_in_use_while_a_thread_of_another_process_is_in_it() {
        use std::os::unix::fs::MetadataExt;
        // A child in a namespace of its own that no mount holds: only the
        // walk of processes finds it.
        let mut child = std::process::Command::new("unshare").args(["-n", "sleep", "30"]).spawn().expect("unshare");
        let path = format!("/proc/{}/ns/net", child.id());
        let mut inode = None;
        for _ in 0..100 {
            inode = std::fs::metadata(&path)
                .ok()
                .map(|m| m.ino())
                .filter(|i| *i != std::fs::metadata("/proc/self/ns/net").unwrap().ino());
            if inode.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let inode = inode.expect("the child's own namespace");
        assert_eq!(in_use(inode, None), Use::Held);
        let theirs = cookie(&File::open(&path).unwrap()).expect("its cookie");
        let own = cookie(&File::open("/proc/self/ns/net").unwrap()).expect("the agent's cookie");
        assert_ne!(theirs, own);
        assert_eq!(cookie(&File::open(&path).unwrap()), Some(theirs), "the same namespace, the same cookie");
        assert_eq!(in_use(inode, Some(theirs)), Use::Held);
        // Another namespace's cookie: this inode is not that one's now.
        assert_eq!(in_use(inode, Some(theirs + 1)), Use::Gone);
        assert!(every_namespace().contains_key(&inode));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(in_use(inode, Some(theirs)), Use::Unseen, "nothing holds it once the child is gone");
    }

    #[test]
    fn every_namespace_leaves_out_the_agents_own() {
        use std::os::unix::fs::MetadataExt;
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let found = every_namespace();
        assert!(!found.contains_key(&own));
        for (ino, path) in found.iter().take(20) {
            if let Ok(m) = std::fs::metadata(path)
                && m.ino() != *ino
            {
                // Another test (or runtime) made a namespace again under
                // that name since the listing (a CI run met one): a new
                // listing finds the new one there.
                let now = every_namespace();
                let moved = now.contains_key(&m.ino()) || std::fs::metadata(path).is_err();
                assert!(moved, "{} leads to {} but was listed as {ino}", path.display(), m.ino());
            }
        }
    }
}
