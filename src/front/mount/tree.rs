//! The vault index behind the mount: which folders and containers exist under VAULT, as inodes.
//!
//! A [`Scanner`] walks VAULT and reads each container's header and footer (no key needed) to learn
//! its plaintext size; it remembers what it read, so a rescan only re-reads containers whose file
//! changed. [`Tree::apply`] merges a scan into the inode table and says which kernel cache entries
//! went stale.
//!
//! Inode numbers are never reused: a container that is replaced (a different file, or the same file
//! with a new size or time) gets a new inode. The kernel keeps the page cache of an inode across
//! opens (the mount asks for that), so reusing the number for new contents would serve stale pages;
//! with a new number, that cannot happen. Open files keep their old inode, and so the old contents.
//!
//! ```no_run
//! use qeltrix::mount::tree::{Scanner, Tree};
//! let mut scanner = Scanner::new("vault".into());
//! let mut tree = Tree::new();
//! tree.apply(scanner.scan()?);
//! let movie = tree.lookup(Tree::ROOT, "movie.mp4".as_ref());
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::container::cache::CachedContainer;
use crate::container::reader::ContainerInfo;
use crate::vault::rules as vault_rules;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The file name extension of a container; `NAME.qltx` is shown as `NAME`.
pub const CONTAINER_EXT: &str = "qltx";

/// The times a mounted file or folder shows: those of the container file or vault folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Times {
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

impl Times {
    fn of(meta: &Metadata) -> Self {
        let at = |secs: i64, nsecs: i64| {
            let nanos = Duration::from_nanos(nsecs.clamp(0, 999_999_999) as u64);
            if secs >= 0 {
                UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
            } else {
                UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
            }
        };
        Times {
            atime: at(meta.atime(), meta.atime_nsec()),
            mtime: at(meta.mtime(), meta.mtime_nsec()),
            ctime: at(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// What makes a container file "the same" between two scans. Replacing it (rename over it, or
/// rewriting it in place) changes at least one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Identity {
    fn of(meta: &Metadata) -> Self {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
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
    pub path: PathBuf,
    pub identity: Identity,
    pub size: u64,
    pub times: Times,
}

/// Walks a vault. Keeps what it learned from each container's footer, by path and identity, so
/// that unchanged containers are not read again, and so that an unreadable one is reported once.
pub struct Scanner {
    root: PathBuf,
    known: HashMap<PathBuf, (Identity, Option<u64>)>,
    /// Problems found by the last scan, each reported once (the caller logs them).
    pub problems: Vec<String>,
}

impl Scanner {
    pub fn new(root: PathBuf) -> Self {
        Scanner {
            root,
            known: HashMap::new(),
            problems: Vec::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Scans the whole vault. Fails only if the vault folder itself cannot be read.
    pub fn scan(&mut self) -> io::Result<ScanDir> {
        let meta = std::fs::metadata(&self.root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a folder"));
        }
        let mut seen = HashMap::with_capacity(self.known.len());
        self.problems.clear();
        // Walked from its canonical path, so that the vault rule can tell inside from outside.
        let root = std::fs::canonicalize(&self.root)?;
        let mut dir = self.scan_dir(&root, &root, &mut seen, true)?;
        dir.times = Some(Times::of(&meta));
        self.known = seen;
        Ok(dir)
    }

    fn scan_dir(
        &mut self,
        root: &Path,
        path: &Path,
        seen: &mut HashMap<PathBuf, (Identity, Option<u64>)>,
        top: bool,
    ) -> io::Result<ScanDir> {
        let mut out = ScanDir::default();
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(e) if top => return Err(e),
            Err(e) => {
                self.problems
                    .push(format!("{}: cannot list the folder: {e}", path.display()));
                return Ok(out);
            }
        };
        let mut containers = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            // The vault rule, shared with `serve`: no hidden entries, no symlink out of the vault.
            if vault_rules::is_hidden(name.as_bytes()) {
                continue;
            }
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let Some(child) = vault_rules::entry_target(root, &entry.path(), file_type) else {
                continue;
            };
            if file_type.is_dir() {
                // Symlinked folders are not followed: a link loop must not hang the scan.
                let Ok(meta) = entry.metadata() else { continue };
                let mut sub = self.scan_dir(root, &child, seen, false)?;
                sub.times = Some(Times::of(&meta));
                out.dirs.insert(name, sub);
            } else if let Some(shown) = shown_name(&name) {
                containers.push((shown, child));
            }
        }
        for (shown, child) in containers {
            if out.dirs.contains_key(&shown) {
                self.problems.push(format!(
                    "{}: not shown, a folder has the same name",
                    child.display()
                ));
                continue;
            }
            // Follows a symlink to a container inside the vault (`child` is then its target);
            // skips anything that is not a regular file.
            let Ok(meta) = std::fs::metadata(&child) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let identity = Identity::of(&meta);
            let size = match self.known.get(&child) {
                Some((id, size)) if *id == identity => *size,
                _ => {
                    let size = read_size(&child);
                    if let Err(e) = &size {
                        self.problems.push(format!("{}: not shown: {e}", child.display()));
                    }
                    size.ok()
                }
            };
            seen.insert(child.clone(), (identity, size));
            if let Some(size) = size {
                out.files.insert(
                    shown,
                    ScanFile {
                        path: child,
                        identity,
                        size,
                        times: Times::of(&meta),
                    },
                );
            }
        }
        Ok(out)
    }
}

/// `NAME.qltx` → `NAME`; anything else → None.
fn shown_name(name: &OsStr) -> Option<OsString> {
    let path = Path::new(name);
    if path.extension()? != CONTAINER_EXT {
        return None;
    }
    let stem = path.file_stem()?;
    (!stem.is_empty() && stem != OsStr::new(".")).then(|| stem.to_os_string())
}

/// The plaintext size of a container, from its header and footer (no key).
fn read_size(path: &Path) -> crate::Result<u64> {
    let file = File::open(path).map_err(|e| crate::Error::io("opening", e))?;
    Ok(ContainerInfo::read(&file)?.original_size())
}

/// What an open of a container ended in; kept so that the key is unwrapped (and a failure
/// logged) once per container for the life of the mount.
pub enum OpenState {
    NotYet,
    Open(Arc<CachedContainer>),
    /// The errno every later open gets.
    Failed(i32),
}

/// A container shown in the mount.
pub struct FileEntry {
    pub path: PathBuf,
    pub size: u64,
    pub times: Times,
    identity: Identity,
    pub state: Mutex<OpenState>,
    /// Corrupt blocks already logged (each is logged once).
    pub bad_blocks: Mutex<std::collections::HashSet<u64>>,
}

pub enum NodeKind {
    Dir {
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
                kind: new_dir_kind(),
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
        let old_children = match &mut self.nodes.get_mut(&ino).expect("dir exists").kind {
            NodeKind::Dir { children, times, .. } => {
                if let Some(t) = scan.times {
                    *times = t;
                }
                std::mem::take(children)
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
                    self.add(ino, new_dir_kind())
                }
            };
            self.apply_dir(child, sub, changes);
            new_children.insert(name, child);
        }
        for (name, file) in scan.files {
            let same = |n: &Node| matches!(&n.kind, NodeKind::File(f) if f.identity == file.identity);
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

fn new_dir_kind() -> NodeKind {
    NodeKind::Dir {
        times: Times {
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
        },
        children: BTreeMap::new(),
        subdirs: 0,
    }
}

fn file_entry(f: ScanFile) -> FileEntry {
    FileEntry {
        path: f.path,
        size: f.size,
        times: f.times,
        identity: f.identity,
        state: Mutex::new(OpenState::NotYet),
        bad_blocks: Mutex::new(Default::default()),
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
        let identity = Identity {
            dev: 1,
            ino: id,
            len: size,
            mtime_ns: 0,
            ctime_ns: 0,
        };
        (
            name.into(),
            ScanFile {
                path: format!("/v/{name}.qltx").into(),
                identity,
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

    #[test]
    fn shown_names_drop_the_extension_and_skip_other_files() {
        assert_eq!(shown_name("movie.mp4.qltx".as_ref()), Some("movie.mp4".into()));
        assert_eq!(shown_name("a.qltx".as_ref()), Some("a".into()));
        assert_eq!(shown_name("notes.txt".as_ref()), None);
        assert_eq!(shown_name(".qltx".as_ref()), None);
        assert_eq!(shown_name("qltx".as_ref()), None);
    }
}
