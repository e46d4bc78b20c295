//! The names registered with `attach --name`: name -> the namespace (path and
//! inode) it was given to, kept in the data dir so that a restarted agent
//! still finds `detach web`. A name is the container's IPAM key, so it
//! belongs to one live namespace at a time: handing it to another would hand
//! over that one's addresses.
use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use serde::{Deserialize, Serialize};

/// The file's shape.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    /// name -> (netns path, netns inode)
    names: BTreeMap<String, (PathBuf, u64)>,
}

pub(super) struct Names {
    file: PathBuf,
    saved: Mutex<Saved>,
}

impl Names {
    /// The names saved in `file` (none if it is missing or unreadable).
    pub(super) fn load(file: PathBuf) -> Self {
        let saved = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Self { file, saved: Mutex::new(saved) }
    }

    fn saved(&self) -> MutexGuard<'_, Saved> {
        // A panic while holding it cannot leave the map half-written.
        self.saved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where `name` was registered: (netns path, netns inode).
    pub(super) fn get(&self, name: &str) -> Option<(PathBuf, u64)> {
        self.saved().names.get(name).cloned()
    }

    /// The name of the live namespace `inode`. Namespace inodes are reused
    /// once a namespace dies, so the registered path must still lead to it.
    pub(super) fn of(&self, inode: u64) -> Option<String> {
        self.saved().names.iter().find(|(_, (path, ino))| *ino == inode && alive(path, *ino)).map(|(n, _)| n.clone())
    }

    /// Like [`Names::of`] for a namespace the caller passed as a descriptor
    /// (alive: it is open) by `path`, which the agent may not see: the name
    /// given to that inode under that same path.
    pub(super) fn of_passed(&self, inode: u64, path: &Path) -> Option<String> {
        self.saved()
            .names
            .iter()
            .find(|(_, (p, ino))| *ino == inode && (p == path || alive(p, *ino)))
            .map(|(n, _)| n.clone())
    }

    /// `attach --name n` for `container` (namespace `inode`): refuses a name
    /// another live namespace holds, or a second name for a named namespace.
    /// Returns the inode of a dead namespace that held the name (to retire).
    pub(super) fn check(&self, n: &str, container: &str, inode: u64) -> Result<Option<u64>, String> {
        let saved = self.saved();
        if let Some((path, holder)) = saved.names.get(n)
            && *holder != inode
        {
            if alive(path, *holder) {
                return Err(format!(
                    "name '{n}' is already in use by another container ({}): weavectl detach {n} first",
                    path.display()
                ));
            }
            return Ok(Some(*holder));
        }
        if let Some((other, _)) =
            saved.names.iter().find(|(m, (path, ino))| m.as_str() != n && *ino == inode && alive(path, *ino))
        {
            return Err(format!(
                "container '{container}' is already attached as '{other}': weavectl detach {other} first"
            ));
        }
        Ok(None)
    }

    pub(super) fn remember(&self, name: &str, path: PathBuf, inode: u64) {
        let mut saved = self.saved();
        saved.names.insert(name.to_string(), (path, inode));
        self.write(&saved);
    }

    pub(super) fn forget(&self, name: &str) {
        let mut saved = self.saved();
        if saved.names.remove(name).is_some() {
            self.write(&saved);
        }
    }

    /// Replaces the file whole (a crash leaves the old or the new one).
    fn write(&self, saved: &Saved) {
        let tmp = self.file.with_extension("tmp");
        let written = serde_json::to_vec(saved)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = written {
            tracing::warn!(path = %self.file.display(), error = %e, "cannot save the container names");
        }
    }
}

/// The namespace at `path` is still the one with `inode`.
fn alive(path: &Path, inode: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.ino() == inode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_belongs_to_one_live_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("names.json");
        // Two "namespaces": any files, told apart by inode.
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        let (ia, ib) = (ino(&a), ino(&b));
        let names = Names::load(file.clone());
        assert_eq!(names.check("web", "a", ia), Ok(None));
        names.remember("web", a.clone(), ia);
        assert_eq!(names.check("web", "a", ia), Ok(None), "same name, same namespace");
        let e = names.check("web", "b", ib).unwrap_err();
        assert!(e.contains("already in use") && e.contains("weavectl detach web"), "{e}");
        let e = names.check("db", "a", ia).unwrap_err();
        assert!(e.contains("already attached as 'web'"), "{e}");
        assert_eq!(names.of(ia).as_deref(), Some("web"));
        // Passed by descriptor under a path the agent cannot see.
        let unseen = Path::new("/nowhere/a");
        names.remember("hid", unseen.to_path_buf(), ib);
        assert_eq!(names.of(ib), None, "not alive by path");
        assert_eq!(names.of_passed(ib, unseen).as_deref(), Some("hid"));
        assert_eq!(names.of_passed(ib, Path::new("/nowhere/b")), None, "another path: a reused inode");
        names.forget("hid");
        // Saved across restarts.
        let names = Names::load(file.clone());
        assert_eq!(names.get("web"), Some((a.clone(), ia)));
        // a dies: its name is free, and its inode (reusable) names nothing.
        std::fs::remove_file(&a).unwrap();
        assert_eq!(names.check("web", "b", ib), Ok(Some(ia)));
        assert_eq!(names.of(ia), None);
        assert_eq!(names.check("db", "a", ia), Ok(None));
        names.forget("web");
        assert_eq!(Names::load(file).get("web"), None);
    }
}
