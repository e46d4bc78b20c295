//! The Docker plugin socket's directory, when the agent makes it, is 0755
//! whatever the umask: made 0777 under a loose umask, another user could move
//! the socket away and bind one of their own where dockerd connects (found by
//! a review, 2026-12-06). A test binary of its own: it sets the process's
//! umask.
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn the_plugin_sockets_directory_is_not_writable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("plugins/deeper/weave.sock");
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let bound = weave_agent::daemon::docker::bind(&socket);
    nix::sys::stat::umask(old);
    let _listener = bound.unwrap();
    for made in [dir.path().join("plugins"), dir.path().join("plugins/deeper")] {
        let mode = std::fs::metadata(&made).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "{}", made.display());
    }
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
