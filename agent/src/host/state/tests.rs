use std::os::unix::fs::PermissionsExt;

use super::*;

fn identity() -> Identity {
    Identity {
        node_id: 7,
        name: "h1".into(),
        address: "10.47.0.1".parse().unwrap(),
        coordinator: "192.0.2.2:6783".into(),
        pin: Pin([3; 32]).to_string(),
        credential: "secret".into(),
        endpoint: "192.0.2.11:6784".parse().unwrap(),
        listen_port: 6784,
        endpoints_pinned: false,
    }
}

#[test]
fn join_state_round_trips_with_private_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::new(tmp.path().join("agent"));
    assert!(!dir.is_joined());
    let key = NodeKey::generate();
    let identity = identity();
    let map = NetworkMap { revision: 42, range: "10.32.0.0/12".into(), ..Default::default() };
    dir.save_join(&key, &identity, &map).unwrap();
    assert!(dir.is_joined());
    for f in [KEY, IDENTITY, MAP] {
        let mode = fs::metadata(dir.path().join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let (k, id, m) = dir.load().unwrap();
    assert_eq!(k.public().as_bytes(), key.public().as_bytes());
    assert_eq!(id.node_id, 7);
    assert_eq!(id.pin().unwrap(), Pin([3; 32]));
    assert_eq!(m.revision, 42);
    dir.remove().unwrap();
    assert!(!dir.path().exists());
}

/// A key that is not the node's (the saved map lists the node with
/// another) is refused with what to do; a key or credential others may
/// read is made private as it is loaded.
#[test]
fn a_key_that_is_not_the_nodes_is_refused_and_secrets_are_made_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::new(tmp.path().join("agent"));
    let key = NodeKey::generate();
    let node = |k: &NodeKey| weave_proto::v1::Node {
        id: 7,
        name: "h1".into(),
        public_key: k.public().as_bytes().to_vec(),
        ..Default::default()
    };
    let map = NetworkMap { revision: 3, nodes: vec![node(&key)], ..Default::default() };
    dir.save_join(&key, &identity(), &map).unwrap();
    for f in [KEY, IDENTITY] {
        fs::set_permissions(dir.path().join(f), fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir.load().unwrap();
    for f in [KEY, IDENTITY] {
        assert_eq!(fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777, 0o600, "{f}");
    }
    // Another host's key put in its place.
    dir.save_key(&NodeKey::generate()).unwrap();
    let Err(e) = dir.load() else { panic!("a key that is not the node's was taken") };
    let e = e.to_string();
    assert!(e.contains("private.key is not node h1's key") && e.contains("`weavectl node rm h1`"), "{e}");
    // Without the node in the saved map there is nothing to compare with.
    dir.save_map(&NetworkMap::default()).unwrap();
    dir.load().unwrap();
}

/// A rekey's key: saved before it is sent, refusing a start until the
/// rekey ends, and taken by `agent reset` with the rest.
#[test]
fn a_pending_key_blocks_a_start_and_goes_with_a_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::new(tmp.path().join("agent"));
    dir.save_join(&NodeKey::generate(), &identity(), &NetworkMap::default()).unwrap();
    let pending = dir.new_pending_key().unwrap();
    assert_eq!(dir.pending_key().unwrap().public().as_bytes(), pending.public().as_bytes());
    let Err(e) = dir.load() else { panic!("started with a rekey unfinished") };
    assert!(e.to_string().contains("did not finish"), "{e}");
    dir.remove().unwrap();
    assert!(!dir.path().exists(), "left: {:?}", fs::read_dir(dir.path()).map(|d| d.count()));
}

/// A replacement that fails leaves no temporary file behind.
#[test]
fn a_failed_replacement_takes_its_temporary_file_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (file, target) = (tmp.path().join(".x.tmp"), tmp.path().join("x"));
    // A directory that is not empty cannot be replaced by a file.
    fs::create_dir_all(target.join("in")).unwrap();
    assert!(replace_durably(&file, &target, b"new").is_err());
    assert!(!file.exists(), "the temporary file stayed");
    fs::remove_dir_all(&target).unwrap();
    replace_durably(&file, &target, b"new").unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"new");
}

#[test]
fn the_key_is_saved_alone_before_a_join_and_survives_forgetting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::new(tmp.path().join("agent"));
    assert!(dir.load_key().unwrap().is_none());
    let key = NodeKey::generate();
    dir.save_key(&key).unwrap();
    assert!(!dir.is_joined(), "a key alone is not a membership");
    let mode = fs::metadata(dir.path().join(KEY)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(dir.load_key().unwrap().unwrap().public().as_bytes(), key.public().as_bytes());
    assert!(fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    assert_eq!(dir.removed(), None);
    dir.forget_membership("node 'h1' was removed from the cluster", false).unwrap();
    assert!(dir.load_key().unwrap().is_some());
    assert_eq!(dir.removed().as_deref(), Some("node 'h1' was removed from the cluster"));
    // `agent reset` clears the mark with everything else.
    dir.remove().unwrap();
    assert_eq!(dir.removed(), None);
    // Forgotten by the coordinator: no removal mark, the key kept for
    // the next join, whose save clears what `agent run` would say.
    dir.save_key(&key).unwrap();
    fs::write(dir.path().join(registry::FILE), "[]").unwrap();
    dir.forget_membership("node 'h1' was forgotten", true).unwrap();
    assert!(!dir.path().join(registry::FILE).exists(), "the attached containers stayed listed");
    assert_eq!(dir.removed(), None);
    assert_eq!(dir.forgotten().as_deref(), Some("node 'h1' was forgotten"));
    assert!(dir.load_key().unwrap().is_some() && !dir.is_joined());
    dir.save_join(&key, &identity(), &NetworkMap::default()).unwrap();
    assert_eq!(dir.forgotten(), None);
    assert!(dir.is_joined());
    // Agents before 2026-12-05 wrote a forgetting as a removal: it is read
    // as what it was, and the next join clears it.
    let old = "node 'h1' was forgotten: it held no map watch for longer than its token's --forget-after";
    fs::write(dir.path().join(REMOVED), old).unwrap();
    assert_eq!((dir.removed(), dir.forgotten().as_deref()), (None, Some(old)));
    dir.save_join(&key, &identity(), &NetworkMap::default()).unwrap();
    assert_eq!((dir.removed(), dir.forgotten()), (None, None));
    assert!(!dir.path().join(REMOVED).exists());
}

/// An unreadable identity that cannot be set aside is an error naming
/// why (the join said to run itself again); `agent reset` removes what
/// set-aside files and interrupted writes leave, and the directory
/// (found by a review, 2026-12-06).
#[test]
fn set_aside_and_partial_files_are_said_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = StateDir::new(tmp.path().join("agent"));
    dir.save_join(&NodeKey::generate(), &identity(), &NetworkMap::default()).unwrap();
    fs::write(dir.path().join(IDENTITY), "garbage").unwrap();
    let blocker = dir.path().join(format!("{IDENTITY}.unreadable"));
    fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    let e = dir.set_aside_unreadable_identity().unwrap_err().to_string();
    assert!(e.contains("cannot be set aside") && e.contains("join again"), "{e}");
    fs::remove_dir_all(&blocker).unwrap();
    let why = dir.set_aside_unreadable_identity().unwrap().expect("set aside");
    // A damaged or lost key says the way on.
    for damaged in [&b"not a key"[..], &[0xff, 0xfe][..]] {
        fs::write(dir.path().join(KEY), damaged).unwrap();
        let e = dir.load_key().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("is lost") && e.contains("weavectl node rm"), "{e}");
    }
    assert!(why.contains("kept as") && blocker.is_file(), "{why}");
    // The way back asks for the node's name only when the saved map
    // that gives it to the join is gone too (a review, 2026-12-06).
    let key = NodeKey::generate();
    let mut map = NetworkMap { revision: 3, ..Default::default() };
    map.nodes.push(weave_proto::v1::Node {
        name: "h1".into(),
        public_key: key.public().as_bytes().to_vec(),
        ..Default::default()
    });
    dir.save_join(&key, &identity(), &map).unwrap();
    fs::write(dir.path().join(IDENTITY), "garbage").unwrap();
    let e = dir.load().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("run `agent join` with a new token") && !e.contains("--name"), "{e}");
    fs::write(dir.path().join(MAP), "junk").unwrap();
    let e = dir.load().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("and --name with this node's name"), "{e}");
    for leftover in [format!("{MAP}.unreadable"), format!(".{MAP}.tmp"), format!(".{IDENTITY}.tmp")] {
        fs::write(dir.path().join(leftover), "x").unwrap();
    }
    dir.remove().unwrap();
    assert!(!dir.path().exists(), "{:?}", fs::read_dir(dir.path()).map(|d| d.count()));
}

/// A lock let go within [`LOCK_WAIT`] (an agent exiting) is taken; one held
/// for longer (a second agent) is refused with one sentence.
#[test]
fn the_lock_waits_for_an_exiting_holder_but_not_for_ever() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("data"));
    let held = state.lock().unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        drop(held);
    });
    let started = std::time::Instant::now();
    let again = state.lock().expect("taken once the holder let go");
    assert!(started.elapsed() >= std::time::Duration::from_millis(400), "{:?}", started.elapsed());
    releaser.join().unwrap();
    let started = std::time::Instant::now();
    let Err(e) = state.lock() else { panic!("two locks at once") };
    assert!(started.elapsed() >= LOCK_WAIT, "{:?}", started.elapsed());
    assert!(e.to_string().contains("another agent uses --data-dir"), "{e}");
    drop(again);
}
