//! The local API socket's tests.
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

/// An agent that takes a request and never answers (stopped by SIGSTOP: the
/// kernel still queues the connection) is a timeout, a read's sooner than
/// a change's; every client waited for ever (found by a review, 2026-12-07).
#[tokio::test(start_paused = true)]
async fn an_agent_that_never_answers_is_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let _listener = tokio::net::UnixListener::bind(&path).unwrap();
    let start = tokio::time::Instant::now();
    let e = request(&path, &Request::Status).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert_eq!(start.elapsed(), READ_WITHIN);
    assert_eq!(e.to_string(), "no answer within 10 s (the agent is stopped or stuck)");
    let start = tokio::time::Instant::now();
    let change = Request::Expose { addrs: vec!["net:default".into()] };
    let e = request(&path, &change).await.unwrap_err();
    assert_eq!((e.kind(), start.elapsed()), (std::io::ErrorKind::TimedOut, CHANGE_WITHIN), "{e}");
    assert!(e.to_string().ends_with("repeat the request once the agent answers"), "{e}");
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
    // A log line per failed accept was ten a second while out of
    // descriptors (found by a review, 2026-12-07): one at the start of a
    // streak, one at its end. (Here alone: a callsite another test reaches
    // first, with no subscriber, may stay off for this one's.)
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _on = tracing::subscriber::set_default(subscriber);
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
    let log = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert_eq!(log.matches("accept failed").count(), 1, "{log}");
    assert_eq!(log.matches("accepting again").count(), 1, "{log}");
    assert!(log.contains("failed=2"), "{log}");
    let start = std::time::Instant::now();
    let second = next_connection(|| std::future::ready(results.pop_front().unwrap())).await;
    assert_eq!(second, 2);
    assert!(start.elapsed() < BACKOFF, "no pause for one aborted connection");
}

/// The HANDSHAKE column, one text for `agent status` and `weavectl status
/// peers` (the agent's showed neither connecting nor idle; a review, 2026-12-07).
#[test]
fn a_peers_handshake_column_says_its_state() {
    let mut p = status().peers.remove(0);
    let text = |p: &PeerStatus| p.handshake_text();
    for (age, connecting, unheard, says) in [
        (Some(12.0), false, None, "12s ago"),
        (Some(200.0), false, None, "200s ago (idle)"),
        (None, false, None, "never (idle)"),
        (Some(12.0), true, None, "connecting (last 12s ago)"),
        (None, true, None, "connecting"),
        (Some(2.0), false, Some(31.0), "one-way (unheard 31s)"),
    ] {
        (p.handshake_age_secs, p.handshake_in_progress, p.unheard_secs) = (age, connecting, unheard);
        assert_eq!(text(&p), says);
    }
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
        coordinator_refused: None,
        segments: vec![],
        peers: vec![PeerStatus {
            node_id: 2,
            name: "h2".into(),
            address: "10.47.0.2".parse().unwrap(),
            endpoint: Some("192.0.2.12:6784".parse().unwrap()),
            handshake_age_secs: Some(3.0),
            handshake_in_progress: false,
            unheard_secs: None,
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
        address: None,
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
