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
    // Said once a streak: ten lines a second while out of descriptors
    // buried the log (found by a review, 2026-12-07).
    let mut failed = 0u64;
    loop {
        match accept().await {
            Ok(conn) => {
                if failed > 0 {
                    tracing::warn!(failed, "local API: accepting again");
                }
                return conn;
            }
            Err(e) if connection_only(&e) => tracing::debug!(error = %e, "local API: connection error on accept"),
            Err(e) => {
                if failed == 0 {
                    tracing::warn!(
                        error = %e,
                        "local API: accept failed (out of file descriptors?); trying every 100 ms, said again once it works"
                    );
                }
                failed += 1;
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

    /// How long a client waits for this request's answer.
    pub fn answer_within(&self) -> std::time::Duration {
        match self {
            Request::Status | Request::DnsLookup { .. } => READ_WITHIN,
            _ => CHANGE_WITHIN,
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
/// An agent that does not answer (stopped by SIGSTOP, stuck) is
/// [`std::io::ErrorKind::TimedOut`] after [`Request::answer_within`]: every
/// client waited for ever (found by a review, 2026-12-07).
pub async fn request(path: &Path, request: &Request) -> std::io::Result<Response> {
    let within = request.answer_within();
    match tokio::time::timeout(within, exchange(path, request)).await {
        Ok(answer) => answer,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no answer within {} s (the agent is stopped or stuck){}",
                within.as_secs(),
                match within == READ_WITHIN {
                    true => "",
                    false => ": the change may be partly made; repeat the request once the agent answers",
                }
            ),
        )),
    }
}

/// How long a client waits for a read's answer (status, a lookup).
const READ_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
/// And for a change's (an attach waits out the coordinator's own bounds).
const CHANGE_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

async fn exchange(path: &Path, request: &Request) -> std::io::Result<Response> {
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
mod tests;
