//! Listing a vault folder: through the storage, with the naming rule applied.

use super::naming;
use super::Vault;
use crate::storage::{Entry, EntryKind};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// One entry a vault shows.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Item {
    /// What it is shown as: a folder's name, a container's plaintext name.
    pub name: OsString,
    /// Where it is in the vault's storage (a container's ends in `.qltx`).
    pub path: PathBuf,
    /// What the storage's listing said about it (its size, times and [`Version`](crate::storage::Version)).
    pub entry: Entry,
}

/// What a vault folder shows, each list in name order.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Listing {
    /// Folders, by shown name.
    pub folders: Vec<Item>,
    /// Containers, by shown name.
    pub containers: Vec<Item>,
    /// Containers not shown because a folder has the same shown name (`x/` and `x.qltx`): the
    /// folder wins, in every front end.
    pub shadowed: Vec<Item>,
}

impl Vault {
    /// The folders and containers directly inside the folder `dir` (`""` for the top), through
    /// [`Storage::list`](crate::storage::Storage::list): hidden names and files that are not
    /// containers are left out, and so are folders reached through a link and whatever the
    /// storage refuses to show (a link leading out of a local folder).
    pub fn list(&self, dir: &Path) -> io::Result<Listing> {
        super::check_shown(dir, self.dot_names())?;
        let top = dir.as_os_str().is_empty() || dir == Path::new(".");
        let mut out = Listing::default();
        for entry in self.storage.list(dir)? {
            let path = dir.join(&entry.name);
            match entry.kind {
                // A linked folder is not shown: a link loop must not hang a walk of the vault,
                // and the mount never showed them. (A path through one still resolves, inside
                // the storage: that is the storage's rule.)
                EntryKind::Folder
                    if naming::is_shown_in(&entry.name, self.dot_names(), top) && !entry.link =>
                {
                    out.folders.push(Item {
                        name: entry.name.clone(),
                        path,
                        entry,
                    })
                }
                EntryKind::Object => {
                    if let Some(name) = naming::plaintext_name_in(&entry.name, self.dot_names(), top) {
                        out.containers.push(Item {
                            name: name.to_os_string(),
                            path,
                            entry,
                        });
                    }
                }
                _ => {}
            }
        }
        out.folders.sort_by(|a, b| a.name.cmp(&b.name));
        out.containers.sort_by(|a, b| a.name.cmp(&b.name));
        let (shown, shadowed) = std::mem::take(&mut out.containers)
            .into_iter()
            .partition(|c| out.folders.binary_search_by(|f| f.name.cmp(&c.name)).is_err());
        (out.containers, out.shadowed) = (shown, shadowed);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn names(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.name.to_str().unwrap()).collect()
    }

    #[test]
    fn a_listing_shows_folders_and_containers_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vault");
        fs::create_dir_all(root.join(".qeltrix")).unwrap();
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::create_dir_all(root.join("x")).unwrap();
        fs::create_dir_all(root.join("back\\slash")).unwrap();
        for name in [
            "b.mp4.qltx",
            "a.txt.qltx",
            ".hidden.qltx",
            ".qltx",
            "plain.txt",
            "x.qltx",
            "c\\d.qltx",
        ] {
            fs::write(root.join(name), b"x").unwrap();
        }
        fs::write(root.join("sub/in.qltx"), b"x").unwrap();
        fs::write(dir.path().join("out.qltx"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("out.qltx"), root.join("link.qltx")).unwrap();
        std::os::unix::fs::symlink(root.join("a.txt.qltx"), root.join("alias.qltx")).unwrap();
        std::os::unix::fs::symlink(root.join("sub"), root.join("linked")).unwrap();
        std::os::unix::fs::symlink(&root, root.join("sub/loop")).unwrap();
        let vault = Vault::local(&root).unwrap();

        let top = vault.list(Path::new("")).unwrap();
        assert_eq!(names(&top.folders), ["sub", "x"]);
        assert_eq!(names(&top.containers), ["a.txt", "alias", "b.mp4"]);
        assert_eq!(names(&top.shadowed), ["x"], "the folder x wins over x.qltx");
        assert_eq!(top.containers[0].path, Path::new("a.txt.qltx"));

        let sub = vault.list(Path::new("sub")).unwrap();
        assert_eq!(names(&sub.containers), ["in"]);
        assert_eq!(sub.containers[0].path, Path::new("sub/in.qltx"));

        assert!(
            vault.list(Path::new(".qeltrix")).is_err(),
            "hidden folders cannot be listed"
        );
        assert!(
            vault.stat(Path::new(".hidden.qltx")).is_err(),
            "nor hidden files reached"
        );
        assert!(
            vault.stat(Path::new("link.qltx")).is_err(),
            "nor links out of the vault"
        );
        assert!(vault.stat(Path::new("sub/in.qltx")).is_ok());
        assert!(
            sub.folders.is_empty(),
            "a linked folder (here a loop) is not listed"
        );
        assert!(
            vault.stat(Path::new("linked/in.qltx")).is_ok(),
            "but a path through it resolves"
        );
    }
}
