//! What of a vault folder is shown, by the mount and by `serve` alike: one rule, so that the two
//! front ends never disagree on what a vault exposes.
//!
//! - Hidden entries (a name starting with `.`, such as the `.qeltrix` keyring folder) are never
//!   shown, nor anything below them.
//! - No symlink is followed out of the vault: an entry is shown only if its canonical path (all
//!   symlinks resolved) is inside the vault's canonical path. A symlink to a container elsewhere
//!   in the vault is followed; one pointing outside it is skipped.

use std::fs::FileType;
use std::path::{Path, PathBuf};

/// True for a name that is never shown: `.`, `..` and every hidden name.
pub fn is_hidden(name: &[u8]) -> bool {
    name.first() == Some(&b'.')
}

/// The canonical form of `candidate` if it exists and is inside `root` (itself canonical).
pub fn inside(root: &Path, candidate: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(candidate).ok()?;
    real.starts_with(root).then_some(real)
}

/// The path to use for a directory entry found while walking the vault from its canonical `root`
/// (entry `path` of type `file_type`), or `None` if the entry leaves the vault. Only a symlink can:
/// anything else under a folder reached through real folders from the root is inside already.
pub fn entry_target(root: &Path, path: &Path, file_type: FileType) -> Option<PathBuf> {
    if file_type.is_symlink() {
        inside(root, path)
    } else {
        Some(path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_names_and_escaping_symlinks_are_refused() {
        assert!(is_hidden(b".qeltrix") && is_hidden(b".") && is_hidden(b".."));
        assert!(!is_hidden(b"a.qltx") && !is_hidden(b""));

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vault");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.qltx"), b"x").unwrap();
        std::fs::write(dir.path().join("out.qltx"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("out.qltx"), root.join("out.qltx")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/a.qltx"), root.join("in.qltx")).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        let target = |name: &str| {
            let path = root.join(name);
            let ft = std::fs::symlink_metadata(&path).unwrap().file_type();
            entry_target(&root, &path, ft)
        };
        assert_eq!(target("out.qltx"), None, "leaves the vault");
        assert_eq!(target("in.qltx"), Some(root.join("sub/a.qltx")), "stays inside");
        assert_eq!(target("sub"), Some(root.join("sub")));
    }
}
