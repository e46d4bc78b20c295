//! The names registered with `attach --name`: name -> the namespace (path and
//! inode) it was given to, kept in the data dir so that a restarted agent
//! still finds `detach web`. A name is the container's IPAM key, so it
//! belongs to one live namespace at a time: handing it to another would hand
//! over that one's addresses.
use std::{
    collections::{BTreeMap, BTreeSet},
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
    /// Names of namespaces passed by descriptor under a path the agent
    /// cannot see: their death does not show at the path.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    unseen: BTreeSet<String>,
}

pub struct Names {
    file: PathBuf,
    saved: Mutex<Saved>,
}

impl Names {
    /// The names saved in `file` (none if it is missing or unreadable).
    pub fn load(file: PathBuf) -> Self {
        let saved = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        Self { file, saved: Mutex::new(saved) }
    }

    fn saved(&self) -> MutexGuard<'_, Saved> {
        // A panic while holding it cannot leave the map half-written.
        self.saved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where `name` was registered: (netns path, netns inode).
    pub fn get(&self, name: &str) -> Option<(PathBuf, u64)> {
        self.saved().names.get(name).cloned()
    }

    /// The name of the live namespace `inode`. Namespace inodes are reused
    /// once a namespace dies, so the registered path must still lead to it.
    pub fn of(&self, inode: u64) -> Option<String> {
        self.saved().names.iter().find(|(_, (path, ino))| *ino == inode && alive(path, *ino)).map(|(n, _)| n.clone())
    }

    /// `name` was given to a namespace the agent cannot see by path.
    pub fn unseen(&self, name: &str) -> bool {
        self.saved().unseen.contains(name)
    }

    /// Like [`Names::of`] for a namespace the caller passed as a descriptor
    /// (alive: it is open) by `path`, which the agent may not see: the name
    /// given to that inode under that same path.
    pub fn of_passed(&self, inode: u64, path: &Path) -> Option<String> {
        self.saved()
            .names
            .iter()
            .find(|(_, (p, ino))| *ino == inode && (p == path || alive(p, *ino)))
            .map(|(n, _)| n.clone())
    }

    /// `attach --name n` for `container` (namespace `inode`; `passed`: its
    /// path as the caller gave it, when it came as a descriptor): refuses a name another live namespace
    /// holds, or a second name for a named namespace. `holder_plugged`: the
    /// name's holder, dead by its path, still has veths (a namespace passed
    /// by descriptor under a path the agent cannot see). Returns the inode of
    /// a dead namespace that held the name (to retire).
    pub fn check(
        &self,
        n: &str,
        container: &str,
        inode: u64,
        passed: Option<&Path>,
        holder_plugged: bool,
    ) -> Result<Option<u64>, String> {
        let saved = self.saved();
        if let Some((path, holder)) = saved.names.get(n)
            && *holder != inode
        {
            if holder_plugged || alive(path, *holder) {
                return Err(format!(
                    "name '{n}' is already in use by another container ({}): weavectl detach {n} first",
                    path.display()
                ));
            }
            return Ok(Some(*holder));
        }
        // A passed namespace is alive (it is open): a name given to its inode
        // under the same path is its own, though the agent cannot see that path.
        if let Some((other, _)) = saved.names.iter().find(|(m, (path, ino))| {
            m.as_str() != n && *ino == inode && (passed == Some(path.as_path()) || alive(path, *ino))
        }) {
            return Err(format!(
                "container '{container}' is already attached as '{other}': weavectl detach {other} first"
            ));
        }
        Ok(None)
    }

    /// Gives `name` to namespace `inode` at `path`; `unseen`: the agent
    /// cannot see that path (the namespace came as a descriptor).
    pub fn remember(&self, name: &str, path: PathBuf, inode: u64, unseen: bool) {
        let mut saved = self.saved();
        saved.names.insert(name.to_string(), (path, inode));
        if unseen {
            saved.unseen.insert(name.to_string());
        } else {
            saved.unseen.remove(name);
        }
        self.write(&saved);
    }

    pub fn forget(&self, name: &str) {
        let mut saved = self.saved();
        saved.unseen.remove(name);
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
pub fn alive(path: &Path, inode: u64) -> bool {
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
        assert_eq!(names.check("web", "a", ia, None, false), Ok(None));
        names.remember("web", a.clone(), ia, false);
        assert_eq!(names.check("web", "a", ia, None, false), Ok(None), "same name, same namespace");
        let e = names.check("web", "b", ib, None, false).unwrap_err();
        assert!(e.contains("already in use") && e.contains("weavectl detach web"), "{e}");
        let e = names.check("db", "a", ia, None, false).unwrap_err();
        assert!(e.contains("already attached as 'web'"), "{e}");
        assert_eq!(names.of(ia).as_deref(), Some("web"));
        // Passed by descriptor under a path the agent cannot see.
        let unseen = Path::new("/nowhere/a");
        names.remember("hid", unseen.to_path_buf(), ib, true);
        assert!(names.unseen("hid") && !names.unseen("web"));
        assert_eq!(names.of(ib), None, "not alive by path");
        assert_eq!(names.of_passed(ib, unseen).as_deref(), Some("hid"));
        assert_eq!(names.of_passed(ib, Path::new("/nowhere/b")), None, "another path: a reused inode");
        // Its name stays its own while its veths live, and it cannot take a second one.
        let e = names.check("hid", "a", ia, None, true).unwrap_err();
        assert!(e.contains("already in use"), "{e}");
        assert_eq!(names.check("hid", "a", ia, None, false), Ok(Some(ib)), "no veths: dead");
        let e = names.check("other", "/nowhere/a", ib, Some(unseen), false).unwrap_err();
        assert!(e.contains("already attached as 'hid'"), "{e}");
        names.forget("hid");
        // Saved across restarts.
        let names = Names::load(file.clone());
        assert_eq!(names.get("web"), Some((a.clone(), ia)));
        // a dies: its name is free, and its inode (reusable) names nothing.
        std::fs::remove_file(&a).unwrap();
        assert_eq!(names.check("web", "b", ib, None, false), Ok(Some(ia)));
        assert_eq!(names.of(ia), None);
        assert_eq!(names.check("db", "a", ia, None, false), Ok(None));
        names.forget("web");
        assert_eq!(Names::load(file).get("web"), None);
    }
}
