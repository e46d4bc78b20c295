//! The socket under the local API: one JSON line each way, and the
//! container's namespace passed as a descriptor (`SCM_RIGHTS`) with the
//! first byte of the request that names it.
use std::{
    collections::VecDeque,
    fs::File,
    io::{IoSlice, IoSliceMut},
    os::{
        fd::{AsRawFd, RawFd},
        unix::fs::{DirBuilderExt, PermissionsExt},
    },
    path::Path,
    sync::Arc,
};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest},
    net::{UnixListener, UnixStream},
};

use super::{Handler, Refusal, Request, Response};

/// Binds `path` (replacing a stale socket) with mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    }
    clear_stale(path)?;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What is at a socket's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketPath {
    /// Nothing.
    Free,
    /// A socket nobody serves (an earlier run's).
    Stale,
    /// A socket a process serves.
    Served,
    /// Something else (a file, a directory, a symlink).
    NotASocket,
}

/// Looks at `path` without taking anything over: a connect that is refused
/// is a stale socket; one that is accepted, or would wait (a live server
/// whose backlog is full: the connect is non-blocking), is a served one; any
/// other error is returned (nothing is to be removed on a guess).
pub fn probe(path: &Path) -> std::io::Result<SocketPath> {
    use nix::{
        errno::Errno,
        sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket},
    };
    use std::os::{fd::AsRawFd, unix::fs::FileTypeExt};
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SocketPath::Free),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Ok(SocketPath::NotASocket);
    }
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    match connect(fd.as_raw_fd(), &UnixAddr::new(path)?) {
        Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS) => Ok(SocketPath::Served),
        Err(Errno::ECONNREFUSED) => Ok(SocketPath::Stale),
        Err(e) => Err(e.into()),
    }
}

/// Makes room for a socket at `path`: removes a socket nobody serves any
/// more (an earlier run's), and refuses anything else there. A mistyped
/// `--socket` naming a file must not delete it, and a second daemon must not
/// take over the socket of one still running.
pub fn clear_stale(path: &Path) -> std::io::Result<()> {
    match usable(path)? {
        SocketPath::Stale => std::fs::remove_file(path),
        _ => Ok(()),
    }
}

/// What [`probe`] found at `path` if a socket may be bound there once a
/// stale one is gone (`Free` or `Stale`); the refusal otherwise.
pub fn usable(path: &Path) -> std::io::Result<SocketPath> {
    match probe(path)? {
        SocketPath::Served => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another process is serving on it (is an agent already running?)",
        )),
        SocketPath::NotASocket => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists and is not a socket (not replaced: pick another path)",
        )),
        found => Ok(found),
    }
}

/// Removes the socket at `path` if nobody serves it any more: this process's
/// own once its listener is closed, never one another process bound since.
pub fn remove_socket(path: &Path) -> std::io::Result<()> {
    match probe(path)? {
        SocketPath::Stale => std::fs::remove_file(path),
        _ => Ok(()),
    }
}

/// How long accepting pauses after an error that is not one connection's
/// (the coordinator's accept loop and the agent's DNS use the same).
const BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

pub async fn serve(listener: UnixListener, handler: Arc<dyn Handler>) {
    loop {
        let (stream, _) = next_connection(|| listener.accept()).await;
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &*handler).await {
                tracing::debug!(error = %e, "local API connection failed");
            }
        });
    }
}

/// The next accepted connection. An error that concerns only the connection
/// being accepted is skipped at once; any other (EMFILE, ENFILE, ENOBUFS)
/// pauses [`BACKOFF`] first: retrying at once would only spin a core while
/// the process is out of descriptors, and the pause lets open ones close.
async fn next_connection<T, F, Fut>(mut accept: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    loop {
        match accept().await {
            Ok(conn) => return conn,
            Err(e) if connection_only(&e) => tracing::debug!(error = %e, "local API: connection error on accept"),
            Err(e) => {
                tracing::warn!(error = %e, "local API: accept failed (out of file descriptors?); pausing before the next");
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

fn connection_only(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | BrokenPipe | Interrupted | WouldBlock | TimedOut)
}

async fn answer(stream: UnixStream, handler: &dyn Handler) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut inbox = Inbox::default();
    while let Some((line, mut fds)) = inbox.next_line(read.as_ref()).await? {
        let response = match serde_json::from_slice::<Request>(&line) {
            Ok(mut request) => match request.take_passed(&mut fds) {
                Ok(()) => handler.handle(request).await,
                Err(e) => Response::Error(Refusal::invalid(e)),
            },
            Err(e) => Response::Error(Refusal::invalid(format!("bad request: {e}"))),
        };
        let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        out.push(b'\n');
        write.write_all(&out).await?;
    }
    Ok(())
}

impl Request {
    /// Puts the descriptor that came with this request where it belongs.
    fn take_passed(&mut self, fds: &mut VecDeque<File>) -> Result<(), String> {
        match self {
            Request::Attach { netns_fd: true, netns, .. } | Request::Detach { netns_fd: true, netns, .. } => {
                let file = fds.pop_front().ok_or("netns_fd is set but no descriptor came with the request")?;
                *netns = Some(Arc::new(file));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The namespace descriptor to send with this request.
    fn passed(&self) -> Option<&File> {
        match self {
            Request::Attach { netns, .. } | Request::Detach { netns, .. } => netns.as_deref(),
            _ => None,
        }
    }
}

/// Descriptors a client may pass with one message; more are closed.
const MAX_FDS: usize = 4;

/// The bytes and descriptors read from one connection, split into lines.
/// The kernel delivers a descriptor with the first byte of the `sendmsg`
/// that carried it and never merges data across it, so a descriptor belongs
/// to the request whose first byte it came with.
#[derive(Default)]
struct Inbox {
    bytes: Vec<u8>,
    /// (offset in `bytes` of the first byte it came with, descriptor)
    fds: VecDeque<(usize, File)>,
    eof: bool,
}

impl Inbox {
    /// The next request line and the descriptors that came with it; None at
    /// end of stream.
    async fn next_line(&mut self, stream: &UnixStream) -> std::io::Result<Option<(Vec<u8>, VecDeque<File>)>> {
        loop {
            if let Some(end) = self.bytes.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.bytes.drain(..=end).collect();
                let mut mine = VecDeque::new();
                while self.fds.front().is_some_and(|(at, _)| *at <= end) {
                    if let Some((_, f)) = self.fds.pop_front() {
                        mine.push_back(f);
                    }
                }
                for (at, _) in &mut self.fds {
                    *at -= end + 1;
                }
                return Ok(Some((line, mine)));
            }
            if self.eof {
                return Ok(None);
            }
            stream.readable().await?;
            let got = stream.try_io(Interest::READABLE, || receive(stream.as_raw_fd()));
            let (chunk, fds) = match got {
                Ok(g) => g,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            self.eof = chunk.is_empty();
            let at = self.bytes.len();
            self.bytes.extend_from_slice(&chunk);
            self.fds.extend(fds.into_iter().map(|f| (at, f)));
        }
    }
}

/// One `recvmsg`: the bytes, and the descriptors that came with them.
fn receive(socket: RawFd) -> std::io::Result<(Vec<u8>, Vec<File>)> {
    let mut buf = vec![0u8; 8192];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(socket, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let n = msg.bytes;
    let mut raw = Vec::new();
    // More descriptors than fit were closed by the kernel (MSG_CTRUNC):
    // the request then finds none and is refused.
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                raw.extend(fds);
            }
        }
    }
    buf.truncate(n);
    Ok((buf, raw.into_iter().filter_map(adopt).collect()))
}

/// A received descriptor as a `File`, without `unsafe`: reopen it through
/// `/proc/self/fd` (for a namespace that is the same namespace) and close the
/// raw one. A descriptor that cannot be reopened (a socket) is dropped.
fn adopt(raw: RawFd) -> Option<File> {
    let file = File::open(format!("/proc/self/fd/{raw}"));
    let _ = nix::unistd::close(raw);
    match file {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::debug!(error = %e, "a passed descriptor is not a file; dropped");
            None
        }
    }
}

/// Sends `bytes` with `fd` attached to the first one (SCM_RIGHTS).
async fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: RawFd) -> std::io::Result<usize> {
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let fds = [fd];
            Ok(sendmsg::<()>(
                stream.as_raw_fd(),
                &[IoSlice::new(bytes)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )?)
        });
        match sent {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Client side, for `agent status`, weavectl and weave-cni. A request with a
/// namespace ([`Request::Attach`]/[`Request::Detach`] `netns`) sends it as a
/// descriptor. An answer not JSON is [`std::io::ErrorKind::InvalidData`],
/// none (the agent went away) `UnexpectedEof`, all else the socket's.
pub async fn request(path: &Path, request: &Request) -> std::io::Result<Response> {
    let stream = UnixStream::connect(path).await?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let sent = match request.passed() {
        Some(file) => send_with_fd(&stream, &line, file.as_raw_fd()).await?,
        None => 0,
    };
    let (read, mut write) = stream.into_split();
    write.write_all(&line[sent..]).await?;
    let Some(answer) = BufReader::new(read).lines().next_line().await? else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the agent closed the connection without an answer (it stopped?): the change may be partly made; \
             repeat the request once the agent runs again",
        ));
    };
    serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad answer from the agent: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_api::{AgentStatus, ErrorKind, PeerStatus, Reply, format_status};

    /// A file at the path stays; a live socket is not taken over; a stale
    /// one is replaced.
    /// An agent gone mid-request (killed) leaves no answer: the connection's
    /// end (weavectl: exit 3), not a bad answer.
    #[tokio::test]
    async fn no_answer_at_all_is_an_unexpected_end_not_bad_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let mut line = String::new();
            BufReader::new(listener.accept().await.unwrap().0).read_line(&mut line).await.unwrap();
        });
        let e = request(&path, &Request::Status).await.unwrap_err();
        server.await.unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
        assert!(e.to_string().contains("closed the connection without an answer"), "{e}");
    }

    #[tokio::test]
    async fn binding_replaces_only_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("precious");
        std::fs::write(&file, "important").unwrap();
        let err = bind(&file).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
        remove_socket(&file).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "important");

        let sock = dir.path().join("agent.sock");
        let live = bind(&sock).unwrap();
        let err = bind(&sock).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        // Served: neither replaced nor removed.
        remove_socket(&sock).unwrap();
        assert_eq!(probe(&sock).unwrap(), SocketPath::Served);
        drop(live);
        assert_eq!(probe(&sock).unwrap(), SocketPath::Stale);
        let again = bind(&sock).expect("a socket nobody serves is replaced");
        drop(again);
        remove_socket(&sock).unwrap();
        assert_eq!(probe(&sock).unwrap(), SocketPath::Free);
        // A symlink is not a socket, even to one.
        let link = dir.path().join("link");
        let _target = bind(&sock).unwrap();
        std::os::unix::fs::symlink(&sock, &link).unwrap();
        assert_eq!(probe(&link).unwrap(), SocketPath::NotASocket);
    }

    #[tokio::test]
    async fn out_of_descriptors_pauses_instead_of_spinning() {
        let emfile = || std::io::Error::from_raw_os_error(24);
        let mut results: VecDeque<std::io::Result<u32>> = VecDeque::from([
            Err(emfile()),
            Err(std::io::Error::from_raw_os_error(23)), // ENFILE
            Ok(1),
            Err(std::io::Error::from(std::io::ErrorKind::ConnectionAborted)),
            Ok(2),
        ]);
        let mut calls = 0;
        let start = std::time::Instant::now();
        let first = next_connection(|| {
            calls += 1;
            std::future::ready(results.pop_front().unwrap())
        })
        .await;
        assert_eq!((first, calls), (1, 3));
        assert!(start.elapsed() >= 2 * BACKOFF, "one pause per EMFILE/ENFILE");
        let start = std::time::Instant::now();
        let second = next_connection(|| std::future::ready(results.pop_front().unwrap())).await;
        assert_eq!(second, 2);
        assert!(start.elapsed() < BACKOFF, "no pause for one aborted connection");
    }

    struct Fixed;
    impl Handler for Fixed {
        fn handle(&self, request: Request) -> Reply<'_> {
            Box::pin(async move {
                match request {
                    Request::Status => Response::Status(status()),
                    // Answers with the inode of the descriptor that came along.
                    Request::Attach { netns: Some(f), .. } => {
                        use std::os::unix::fs::MetadataExt;
                        Response::Dns { name: f.metadata().unwrap().ino().to_string(), addresses: vec![] }
                    }
                    other => Response::Error(Refusal::failed(format!("not here: {other:?}"))),
                }
            })
        }
    }

    fn status() -> AgentStatus {
        AgentStatus {
            node_id: 1,
            name: "h1".into(),
            address: "10.47.0.1".parse().unwrap(),
            endpoint: "192.0.2.11:6784".into(),
            revision: 9,
            coordinator_connected: true,
            segments: vec![],
            peers: vec![PeerStatus {
                node_id: 2,
                name: "h2".into(),
                address: "10.47.0.2".parse().unwrap(),
                endpoint: Some("192.0.2.12:6784".parse().unwrap()),
                handshake_age_secs: Some(3.0),
                handshake_in_progress: false,
                tx_bytes: 10,
                rx_bytes: 20,
                dropped_spoofed: 0,
                dropped_foreign_segment: 0,
                dropped_storm: 0,
            }],
            ip_forward: Some(true),
        }
    }

    #[tokio::test]
    async fn status_round_trips_over_the_socket_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agent.sock");
        let listener = bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        tokio::spawn(serve(listener, Arc::new(Fixed)));
        let Response::Status(s) = request(&path, &Request::Status).await.unwrap() else { panic!("not a status") };
        assert_eq!(s.peers[0].rx_bytes, 20);
        let table = format_status(&s);
        assert!(table.contains("h2") && table.contains("3s ago"), "{table}");
        let release = Request::Release { container: "c".into() };
        assert!(matches!(request(&path, &release).await.unwrap(), Response::Error(_)));
    }

    #[tokio::test]
    async fn a_passed_descriptor_reaches_the_handler() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        tokio::spawn(serve(bind(&path).unwrap(), Arc::new(Fixed)));
        // Any file stands in for a namespace here; the path is one the server cannot open.
        let file = dir.path().join("ns");
        std::fs::write(&file, "").unwrap();
        let attach = |netns_fd, netns| Request::Attach {
            container: "/nowhere/ns".into(),
            netns_fd,
            netns,
            name: None,
            id: None,
            ifname: None,
            addrs: vec![],
            no_multicast: false,
            exact_ifname: false,
            no_dns: false,
            network: None,
            needs_egress: false,
        };
        let opened = Arc::new(File::open(&file).unwrap());
        let want = std::fs::metadata(&file).unwrap().ino().to_string();
        for _ in 0..2 {
            let Response::Dns { name, .. } = request(&path, &attach(true, Some(opened.clone()))).await.unwrap() else {
                panic!("the descriptor did not arrive")
            };
            assert_eq!(name, want);
        }
        // The flag without a descriptor is refused, not taken from elsewhere.
        let Response::Error(e) = request(&path, &attach(true, None)).await.unwrap() else { panic!("accepted") };
        assert!(e.kind == ErrorKind::Invalid && e.message.contains("no descriptor"), "{e}");
        // An old client (a path, no flag) reaches the handler without one.
        let Response::Error(e) = request(&path, &attach(false, None)).await.unwrap() else { panic!("accepted") };
        assert!(e.message.contains("not here"), "{e}");
    }
}
