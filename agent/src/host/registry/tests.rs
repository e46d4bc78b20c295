use super::*;

#[test]
fn a_name_belongs_to_one_live_namespace() {
    let dir = tempfile::tempdir().unwrap();
    // Two "namespaces": any files, told apart by inode.
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, "").unwrap();
    std::fs::write(&b, "").unwrap();
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let (ia, ib) = (ino(&a), ino(&b));
    let names = Registry::load(dir.path());
    assert_eq!(names.check("web", "a", (ia, None), None, false), Ok(None));
    names.remember("web", a.clone(), ia, None, false);
    assert_eq!(names.check("web", "a", (ia, None), None, false), Ok(None), "same name, same namespace");
    let e = names.check("web", "b", (ib, None), None, false).unwrap_err();
    assert!(e.contains("already in use") && e.contains("weavectl detach web"), "{e}");
    let e = names.check("db", "a", (ia, None), None, false).unwrap_err();
    assert!(e.contains("already attached as 'web'"), "{e}");
    assert_eq!(names.of(ia).as_deref(), Some("web"));
    // Passed by descriptor under a path the agent cannot see.
    let unseen = Path::new("/nowhere/a");
    names.remember("hid", unseen.to_path_buf(), ib, Some(7), true);
    assert!(names.unseen("hid") && !names.unseen("web"));
    assert_eq!(names.of(ib), None, "not alive by path");
    let never = || -> Option<u64> { panic!("the cookie read when the path tells") };
    assert_eq!(names.of_passed(ib, unseen, never).as_deref(), Some("hid"));
    // Another path (another process of it, or a namespace given its inode
    // since): the namespace's cookie tells.
    assert_eq!(names.of_passed(ib, Path::new("/nowhere/b"), || Some(7)).as_deref(), Some("hid"));
    assert_eq!(names.of_passed(ib, Path::new("/nowhere/b"), || Some(8)), None, "a reused inode");
    assert_eq!(names.of_passed(ib, Path::new("/nowhere/b"), || None), None, "no cookie to tell");
    assert_eq!(names.of_passed(ia + ib, Path::new("/nowhere/b"), never), None, "no name has the inode");
    // Its name stays its own while its veths live, and it cannot take a second one.
    let e = names.check("hid", "a", (ia, None), None, true).unwrap_err();
    assert!(e.contains("already in use"), "{e}");
    assert_eq!(names.check("hid", "a", (ia, None), None, false), Ok(Some(ib)), "no veths: dead");
    let e = names.check("other", "/nowhere/a", (ib, None), Some(unseen), false).unwrap_err();
    assert!(e.contains("already attached as 'hid'"), "{e}");
    // Through another process of it (another path, its first one ended): the cookie tells.
    let e = names.check("other", "/nowhere/c", (ib, Some(7)), Some(Path::new("/nowhere/c")), false).unwrap_err();
    assert!(e.contains("already attached as 'hid'"), "{e}");
    let other = names.check("other", "/nowhere/c", (ib, Some(8)), Some(Path::new("/nowhere/c")), false);
    assert_eq!(other, Ok(None), "another namespace, given the inode since");
    names.forget("hid");
    // Saved across restarts.
    let names = Registry::load(dir.path());
    assert_eq!(names.get("web"), Some((a.clone(), ia)));
    // a dies: its name is free, and its inode (reusable) names nothing.
    std::fs::remove_file(&a).unwrap();
    assert_eq!(names.check("web", "b", (ib, None), None, false), Ok(Some(ia)));
    assert_eq!(names.of(ia), None);
    assert_eq!(names.check("db", "a", (ia, None), None, false), Ok(None));
    names.forget("web");
    assert_eq!(Registry::load(dir.path()).get("web"), None);
}

#[test]
fn dns_keys_and_their_names_survive_a_restart_in_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::load(dir.path());
    r.serve_dns("netns:1", Some("/run/netns/a".into()));
    r.serve_dns("netns:2", None);
    assert!(r.alias_dns(&["web".into(), "cni:x".into()], "netns:1").is_empty());
    // A restarted agent knows where `web` was served, and stops it by name.
    let r = Registry::load(dir.path());
    assert_eq!(r.dns_served(), [("netns:1".to_string(), "/run/netns/a".to_string())]);
    assert_eq!(r.dns_key("web").as_deref(), Some("netns:1"));
    // The name moves to a new namespace: the old key loses all its names.
    assert_eq!(r.alias_dns(&["web".into()], "netns:3"), ["netns:1"]);
    assert_eq!(r.dns_key("cni:x"), None);
    r.stop_dns("netns:3");
    assert_eq!(r.dns_key("web"), None);
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, [FILE], "one file, no temporaries");
}

/// Root's only, and an unreadable file is kept aside (and said), not
/// silently replaced by the next write (found by a review, 2026-12-04).
#[test]
fn the_file_is_roots_and_an_unreadable_one_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::load(dir.path());
    r.serve_dns("netns:1", Some("/run/netns/a".into()));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join(FILE)).unwrap().permissions())
            & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::write(dir.path().join(FILE), r#"{"names":{"w2":"#).unwrap();
    let r = Registry::load(dir.path());
    assert!(r.dns_served().is_empty());
    let aside = dir.path().join(format!("{FILE}.unreadable"));
    assert_eq!(std::fs::read_to_string(&aside).unwrap(), r#"{"names":{"w2":"#);
    r.serve_dns("netns:2", None);
    assert_eq!(std::fs::read_to_string(&aside).unwrap(), r#"{"names":{"w2":"#, "kept");
}

#[test]
fn the_two_legacy_files_are_taken_over_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("names.json"), r#"{"names":{"web":["/run/netns/a",7]}}"#).unwrap();
    std::fs::write(dir.path().join("dns-namespaces.json"), r#"{"netns:7":"/run/netns/a"}"#).unwrap();
    let r = Registry::load(dir.path());
    assert_eq!(r.get("web"), Some((PathBuf::from("/run/netns/a"), 7)));
    assert_eq!(r.dns_served().len(), 1);
    assert!(LEGACY_FILES.iter().all(|f| !dir.path().join(f).exists()));
    assert_eq!(Registry::load(dir.path()).get("web"), Some((PathBuf::from("/run/netns/a"), 7)));
}

/// A write that failed (a full disk: here a directory where the file's
/// temporary copy goes) is tried again by the sweep until it succeeds: what
/// changed meanwhile was not saved until another change wrote the file
/// (found by a review, 2026-12-06).
#[test]
fn a_failed_save_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let names = Registry::load(dir.path());
    let blocker = dir.path().join("containers.tmp").join("in-the-way");
    std::fs::create_dir_all(&blocker).unwrap();
    names.remember("web", dir.path().join("a"), 7, None, false);
    assert!(!dir.path().join(FILE).exists(), "saved through the blocker?");
    names.save_if_unsaved();
    assert!(!dir.path().join(FILE).exists());
    std::fs::remove_dir_all(blocker.parent().unwrap()).unwrap();
    names.save_if_unsaved();
    let saved = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
    assert!(saved.contains("\"web\""), "{saved}");
    assert_eq!(Registry::load(dir.path()).get("web").map(|(_, ino)| ino), Some(7));
}
