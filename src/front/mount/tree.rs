//! The vault index behind the mount: which folders and containers exist under VAULT, as inodes.
//!
//! A [`Scanner`] walks VAULT through the vault layer ([`Vault::list`], with the rules every front
//! end shares) and learns each container's plaintext size from its header and footer (no key
//! needed); the vault keeps what it read by version, so a rescan only re-reads containers whose
//! file changed. [`Tree::apply`] merges a scan into the inode table and says which kernel cache entries
//! went stale.
//!
//! Inode numbers are never reused: a container that is replaced (a different file, or the same file
//! with a new size or time) gets a new inode. The kernel keeps the page cache of an inode across
//! opens (the mount asks for that), so reusing the number for new contents would serve stale pages;
//! with a new number, that cannot happen. Open files keep their old inode, and so the old contents.
//!
//! ```ignore
//! // (crate-internal: `mount::tree` is private)
//! use qeltrix::{mount::tree::{Scanner, Tree}, vault::Vault};
//! let mut scanner = Scanner::new(Vault::local("vault")?, "vault".into());
//! let mut tree = Tree::new();
//! tree.apply(scanner.scan()?);
//! let movie = tree.lookup(Tree::ROOT, "movie.mp4".as_ref());
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::storage::{Entry, Version};
use crate::vault::Vault;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The times a mounted file or folder shows: those of the container file or vault folder (the
/// storage keeps no access time: it shows the modification time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Times {
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

impl Times {
    fn of(entry: &Entry) -> Self {
        Times {
            atime: entry.modified,
            mtime: entry.modified,
            ctime: entry.changed,
        }
    }
}

/// A folder as found by a scan.
#[derive(Debug, Default)]
pub struct ScanDir {
    pub times: Option<Times>,
    pub dirs: BTreeMap<OsString, ScanDir>,
    /// By shown name (without `.qltx`).
    pub files: BTreeMap<OsString, ScanFile>,
}

impl ScanDir {
    /// Containers in this folder and below.
    pub fn container_count(&self) -> usize {
        self.files.len() + self.dirs.values().map(ScanDir::container_count).sum::<usize>()
    }
}

/// A container as found by a scan.
#[derive(Debug, Clone)]
pub struct ScanFile {
    /// Its path in the vault.
    pub path: PathBuf,
    /// Which version of it: replacing it (rename over it, or rewriting it in place) changes this.
    pub version: Version,
    pub size: u64,
    pub times: Times,
}

/// Walks a vault through its listings ([`Vault::list`]). What it learns from each container's
/// footer is kept by the vault, by path and version, so unchanged containers are not read again
/// and an unreadable one is reported once.
pub struct Scanner {
    vault: Vault,
    root: PathBuf,
    /// Problems found by the last scan, each reported once (the caller logs them).
    pub problems: Vec<String>,
}

impl Scanner {
    /// A scanner of `vault`, whose top folder is shown as `root`.
    pub fn new(vault: Vault, root: PathBuf) -> Self {
        Scanner {
            vault,
            root,
            problems: Vec::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// Scans the whole vault. Fails only if the vault folder itself cannot be read.
    pub fn scan(&mut self) -> io::Result<ScanDir> {
        let top = self.vault.stat(Path::new(""))?;
        if top.kind != crate::storage::EntryKind::Folder {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a folder"));
        }
        self.problems.clear();
        let mut dir = self.scan_dir(Path::new(""), true)?;
        dir.times = Some(Times::of(&top));
        Ok(dir)
    }

    fn scan_dir(&mut self, path: &Path, top: bool) -> io::Result<ScanDir> {
        let mut out = ScanDir::default();
        // The vault's rules, shared with `serve`: hidden entries, non-containers, linked folders
        // and links out of the vault are left out; a folder wins over a container of the same
        // shown name.
        let listing = match self.vault.list(path) {
            Ok(listing) => listing,
            Err(e) if top => return Err(e),
            Err(e) => {
                self.problems.push(format!(
                    "{}: cannot list the folder: {e}",
                    self.vault.display(path)
                ));
                return Ok(out);
            }
        };
        for folder in listing.folders {
            let mut sub = self.scan_dir(&folder.path, false)?;
            sub.times = Some(Times::of(&folder.entry));
            out.dirs.insert(folder.name, sub);
        }
        for shadowed in listing.shadowed {
            self.problems.push(format!(
                "{}: not shown, a folder has the same name",
                self.vault.display(&shadowed.path)
            ));
        }
        for c in listing.containers {
            match self.vault.info(&c.path, &c.entry) {
                Ok(info) => {
                    out.files.insert(
                        c.name,
                        ScanFile {
                            times: Times::of(&c.entry),
                            version: c.entry.version,
                            path: c.path,
                            size: info.plaintext_size,
                        },
                    );
                }
                // Reported when first met: a kept failure comes back with `fresh` false.
                Err(failure) if failure.fresh => {
                    self.problems.push(format!("not shown: {}", failure.error));
                }
                Err(_) => {}
            }
        }
        Ok(out)
    }
}

/// A container shown in the mount.
pub struct FileEntry {
    /// Its path in the vault.
    pub path: PathBuf,
    pub size: u64,
    pub times: Times,
    pub version: Version,
    /// Corrupt blocks already logged (each is logged once).
    pub bad_blocks: Mutex<std::collections::HashSet<u64>>,
    /// The packed file's permission bits and mtime from a v2 file record (read once the
    /// container is open; `None` inside: it has none, and the container file's own are shown).
    pub record: std::sync::OnceLock<Option<(u32, SystemTime)>>,
}

pub enum NodeKind {
    Dir {
        /// Its path in the vault (`""` for the top).
        path: PathBuf,
        times: Times,
        children: BTreeMap<OsString, u64>,
        subdirs: u32,
    },
    File(Arc<FileEntry>),
}

pub struct Node {
    pub parent: u64,
    pub kind: NodeKind,
    /// Kernel references (lookups not yet forgotten).
    nlookup: AtomicU64,
    /// Still in the vault. A node that left it stays until the kernel forgets it.
    live: bool,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }
}

/// Kernel cache entries made stale by [`Tree::apply`].
#[derive(Debug, Default)]
pub struct Changes {
    /// Names that now mean something else or nothing: (parent inode, name).
    pub entries: Vec<(u64, OsString)>,
    /// File inodes whose pages the kernel can drop: their container left the vault.
    pub inodes: Vec<u64>,
}

/// The inode table.
pub struct Tree {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    pub file_count: u64,
    pub total_bytes: u64,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    pub const ROOT: u64 = 1;

    /// An empty tree: just the root folder.
    pub fn new() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            Self::ROOT,
            Node {
                parent: Self::ROOT,
                kind: new_dir_kind(PathBuf::new()),
                nlookup: AtomicU64::new(0),
                live: true,
            },
        );
        Tree {
            nodes,
            next_ino: Self::ROOT + 1,
            file_count: 0,
            total_bytes: 0,
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Option<u64> {
        match &self.nodes.get(&parent)?.kind {
            NodeKind::Dir { children, .. } => children.get(name).copied(),
            NodeKind::File(_) => None,
        }
    }

    /// Counts one kernel reference to `ino` (a successful lookup reply).
    pub fn remember(&self, ino: u64) {
        if let Some(n) = self.nodes.get(&ino) {
            n.nlookup.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops `count` kernel references; a node that left the vault goes when none are left.
    /// Returns true if the caller should call [`Tree::collect`] under a write lock.
    pub fn forget(&self, ino: u64, count: u64) -> bool {
        let Some(n) = self.nodes.get(&ino) else {
            return false;
        };
        let before = n
            .nlookup
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(count))
            })
            .unwrap_or(0);
        !n.live && before <= count && ino != Self::ROOT
    }

    /// Removes a node that left the vault and has no kernel references left.
    pub fn collect(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get(&ino) {
            if !n.live && n.nlookup.load(Ordering::Relaxed) == 0 {
                self.nodes.remove(&ino);
            }
        }
    }

    /// The entries of a folder, in name order.
    pub fn children(&self, ino: u64) -> Option<Vec<(OsString, u64, bool)>> {
        match &self.nodes.get(&ino)?.kind {
            NodeKind::Dir { children, .. } => Some(
                children
                    .iter()
                    .map(|(name, &child)| (name.clone(), child, self.nodes[&child].is_dir()))
                    .collect(),
            ),
            NodeKind::File(_) => None,
        }
    }

    /// Merges a scan of the vault into the table.
    pub fn apply(&mut self, root: ScanDir) -> Changes {
        let mut changes = Changes::default();
        self.apply_dir(Self::ROOT, root, &mut changes);
        let (mut count, mut bytes) = (0, 0);
        for n in self.nodes.values() {
            if let (true, NodeKind::File(f)) = (n.live, &n.kind) {
                count += 1;
                bytes += f.size;
            }
        }
        (self.file_count, self.total_bytes) = (count, bytes);
        changes
    }

    fn apply_dir(&mut self, ino: u64, scan: ScanDir, changes: &mut Changes) {
        let (old_children, path) = match &mut self.nodes.get_mut(&ino).expect("dir exists").kind {
            NodeKind::Dir {
                children,
                times,
                path,
                ..
            } => {
                if let Some(t) = scan.times {
                    *times = t;
                }
                (std::mem::take(children), path.clone())
            }
            NodeKind::File(_) => unreachable!("apply_dir is called on folders"),
        };
        let mut old_children = old_children;
        let mut new_children = BTreeMap::new();
        let subdirs = scan.dirs.len() as u32;

        for (name, sub) in scan.dirs {
            let child = match old_children.remove(&name) {
                Some(c) if self.nodes[&c].is_dir() => c,
                other => {
                    if let Some(old) = other {
                        self.retire(old, changes);
                        changes.entries.push((ino, name.clone()));
                    }
                    self.add(ino, new_dir_kind(path.join(&name)))
                }
            };
            self.apply_dir(child, sub, changes);
            new_children.insert(name, child);
        }
        for (name, file) in scan.files {
            let same = |n: &Node| matches!(&n.kind, NodeKind::File(f) if f.version == file.version);
            let child = match old_children.remove(&name) {
                Some(c) if same(&self.nodes[&c]) => c,
                other => {
                    if let Some(old) = other {
                        self.retire(old, changes);
                        changes.entries.push((ino, name.clone()));
                    }
                    self.add(ino, NodeKind::File(Arc::new(file_entry(file))))
                }
            };
            new_children.insert(name, child);
        }
        for (name, gone) in old_children {
            self.retire(gone, changes);
            changes.entries.push((ino, name));
        }
        if let NodeKind::Dir {
            children,
            subdirs: count,
            ..
        } = &mut self.nodes.get_mut(&ino).expect("dir exists").kind
        {
            *children = new_children;
            *count = subdirs;
        }
    }

    /// The vault path of a folder.
    pub fn dir_path(&self, ino: u64) -> Option<&Path> {
        match &self.nodes.get(&ino)?.kind {
            NodeKind::Dir { path, .. } => Some(path),
            NodeKind::File(_) => None,
        }
    }

    /// Adds `name` to the folder `parent` (the read-write mount's create and mkdir). The caller
    /// has checked that the name is free.
    pub fn insert(&mut self, parent: u64, name: &OsStr, kind: NodeKind) -> u64 {
        let ino = self.add(parent, kind);
        self.link(parent, name, ino);
        ino
    }

    /// Takes `name` out of the folder `parent` (unlink, rmdir, a rename's replaced target). The
    /// node stays while the kernel knows it (an open file goes on working).
    pub fn remove(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        let ino = self.unlink(parent, name)?;
        self.retire(ino, &mut Changes::default());
        Some(ino)
    }

    /// Moves the entry `name` of `parent` to `new_name` in `new_parent`, replacing whatever was
    /// there, and gives it (and everything under a folder) its new vault paths.
    pub fn rename(&mut self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr) -> Option<u64> {
        self.lookup(parent, name)?;
        self.remove(new_parent, new_name);
        let ino = self.unlink(parent, name)?;
        self.place(new_parent, new_name, ino);
        Some(ino)
    }

    /// Swaps two entries (`RENAME_EXCHANGE`).
    pub fn exchange(&mut self, a: (u64, &OsStr), b: (u64, &OsStr)) -> Option<()> {
        self.lookup(a.0, a.1)?;
        self.lookup(b.0, b.1)?;
        let (ia, ib) = (self.unlink(a.0, a.1)?, self.unlink(b.0, b.1)?);
        self.place(a.0, a.1, ib);
        self.place(b.0, b.1, ia);
        Some(())
    }

    /// Enters `ino` as `name` in the folder `parent` (its count of subfolders kept).
    fn link(&mut self, parent: u64, name: &OsStr, ino: u64) {
        let is_dir = self.nodes.get(&ino).is_some_and(Node::is_dir);
        if let Some(NodeKind::Dir {
            children, subdirs, ..
        }) = self.nodes.get_mut(&parent).map(|n| &mut n.kind)
        {
            children.insert(name.to_os_string(), ino);
            *subdirs += u32::from(is_dir);
        }
    }

    /// Takes the entry `name` out of the folder `parent`, leaving its node as it is.
    fn unlink(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        let ino = self.lookup(parent, name)?;
        let is_dir = self.nodes.get(&ino).is_some_and(Node::is_dir);
        if let Some(NodeKind::Dir {
            children, subdirs, ..
        }) = self.nodes.get_mut(&parent).map(|n| &mut n.kind)
        {
            children.remove(name);
            *subdirs = subdirs.saturating_sub(u32::from(is_dir));
        }
        Some(ino)
    }

    /// Enters a moved node as `name` in `parent` and gives it its new vault paths.
    fn place(&mut self, parent: u64, name: &OsStr, ino: u64) {
        self.link(parent, name, ino);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.parent = parent;
        }
        let base = self.dir_path(parent).unwrap_or(Path::new("")).to_path_buf();
        self.set_paths(ino, name, &base);
    }

    /// Gives `ino`, now named `name` in the folder at `base`, its vault path (and its
    /// descendants theirs).
    fn set_paths(&mut self, ino: u64, name: &OsStr, base: &Path) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        match &mut node.kind {
            NodeKind::File(f) => {
                let path = base.join(crate::vault::naming::container_name(name));
                *f = Arc::new(f.moved(path));
            }
            NodeKind::Dir { path, children, .. } => {
                *path = base.join(name);
                let here = path.clone();
                let kids: Vec<(OsString, u64)> = children.iter().map(|(n, &i)| (n.clone(), i)).collect();
                for (n, child) in kids {
                    self.set_paths(child, &n, &here);
                }
            }
        }
    }

    /// Replaces the entry of the file `ino` (a new version committed), keeping its inode.
    pub fn replace_file(&mut self, ino: u64, entry: FileEntry) {
        if let Some(Node {
            kind: NodeKind::File(f),
            ..
        }) = self.nodes.get_mut(&ino)
        {
            *f = Arc::new(entry);
        }
    }

    /// Sets a folder's times (the read-write mount's own changes).
    pub fn touch_dir(&mut self, ino: u64, now: SystemTime) {
        if let Some(NodeKind::Dir { times, .. }) = self.nodes.get_mut(&ino).map(|n| &mut n.kind) {
            times.mtime = now;
            times.ctime = now;
        }
    }

    fn add(&mut self, parent: u64, kind: NodeKind) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                parent,
                kind,
                nlookup: AtomicU64::new(0),
                live: true,
            },
        );
        ino
    }

    /// Marks a node (and everything under it) as gone from the vault.
    fn retire(&mut self, ino: u64, changes: &mut Changes) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.live = false;
        let unreferenced = node.nlookup.load(Ordering::Relaxed) == 0;
        match &mut node.kind {
            NodeKind::Dir { children, .. } => {
                let children = std::mem::take(children);
                for (_, child) in children {
                    self.retire(child, changes);
                }
            }
            NodeKind::File(_) => changes.inodes.push(ino),
        }
        if unreferenced {
            self.nodes.remove(&ino);
        }
    }
}

pub fn new_dir_kind(path: PathBuf) -> NodeKind {
    NodeKind::Dir {
        path,
        times: Times {
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
        },
        children: BTreeMap::new(),
        subdirs: 0,
    }
}

impl FileEntry {
    /// The same file at another vault path (renamed), with what was learned of it kept.
    fn moved(&self, path: PathBuf) -> FileEntry {
        FileEntry {
            path,
            size: self.size,
            times: self.times,
            version: self.version.clone(),
            bad_blocks: Mutex::new(self.bad_blocks.lock().unwrap_or_else(|p| p.into_inner()).clone()),
            record: match self.record.get() {
                Some(r) => std::sync::OnceLock::from(*r),
                None => Default::default(),
            },
        }
    }
}

pub fn file_entry(f: ScanFile) -> FileEntry {
    FileEntry {
        path: f.path,
        size: f.size,
        times: f.times,
        version: f.version,
        bad_blocks: Mutex::new(Default::default()),
        record: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, id: u64, size: u64) -> (OsString, ScanFile) {
        let t = Times {
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
        };
        let version = Version(crate::storage::VersionInner::Local {
            dev: 1,
            ino: id,
            size,
            mtime_ns: 0,
            ctime_ns: 0,
        });
        (
            name.into(),
            ScanFile {
                path: format!("{name}.qltx").into(),
                version,
                size,
                times: t,
            },
        )
    }

    fn scan(files: Vec<(OsString, ScanFile)>, dirs: Vec<(&str, ScanDir)>) -> ScanDir {
        ScanDir {
            times: None,
            dirs: dirs.into_iter().map(|(n, d)| (n.into(), d)).collect(),
            files: files.into_iter().collect(),
        }
    }

    #[test]
    fn a_replaced_container_gets_a_new_inode_and_the_old_one_is_reported() {
        let mut t = Tree::new();
        t.apply(scan(vec![file("a", 10, 5), file("b", 11, 7)], vec![]));
        let a = t.lookup(Tree::ROOT, "a".as_ref()).unwrap();
        let b = t.lookup(Tree::ROOT, "b".as_ref()).unwrap();
        assert_eq!((t.file_count, t.total_bytes), (2, 12));

        let changes = t.apply(scan(vec![file("a", 20, 9), file("b", 11, 7)], vec![]));
        let a2 = t.lookup(Tree::ROOT, "a".as_ref()).unwrap();
        assert_ne!(a, a2, "new contents, new inode");
        assert_eq!(
            t.lookup(Tree::ROOT, "b".as_ref()),
            Some(b),
            "unchanged keeps its inode"
        );
        assert_eq!(changes.entries, vec![(Tree::ROOT, OsString::from("a"))]);
        assert_eq!(changes.inodes, vec![a]);
        assert!(t.get(a).is_none(), "unreferenced old node is dropped at once");
        assert_eq!(t.total_bytes, 16);
    }

    #[test]
    fn a_removed_node_the_kernel_still_knows_stays_until_forgotten() {
        let mut t = Tree::new();
        t.apply(scan(vec![], vec![("d", scan(vec![file("x", 1, 3)], vec![]))]));
        let d = t.lookup(Tree::ROOT, "d".as_ref()).unwrap();
        let x = t.lookup(d, "x".as_ref()).unwrap();
        t.remember(x);
        t.remember(x);
        let changes = t.apply(scan(vec![], vec![]));
        assert_eq!(changes.entries, vec![(Tree::ROOT, OsString::from("d"))]);
        assert_eq!(changes.inodes, vec![x]);
        assert!(t.get(d).is_none());
        assert!(t.get(x).is_some(), "still referenced");
        assert!(!t.forget(x, 1));
        assert!(t.forget(x, 1));
        t.collect(x);
        assert!(t.get(x).is_none());
        assert_eq!(t.file_count, 0);
    }

    #[test]
    fn a_file_turning_into_a_folder_is_a_new_node() {
        let mut t = Tree::new();
        t.apply(scan(vec![file("n", 1, 3)], vec![]));
        let n = t.lookup(Tree::ROOT, "n".as_ref()).unwrap();
        t.apply(scan(vec![], vec![("n", scan(vec![], vec![]))]));
        let n2 = t.lookup(Tree::ROOT, "n".as_ref()).unwrap();
        assert_ne!(n, n2);
        assert!(t.get(n2).unwrap().is_dir());
        let kids = t.children(Tree::ROOT).unwrap();
        assert_eq!(kids, vec![(OsString::from("n"), n2, true)]);
    }
}
