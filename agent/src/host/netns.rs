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
