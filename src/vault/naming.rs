//! The naming rule of a vault, the same for every front end (mount, serve, the CLI, the gateway
//! sink): which names are shown, and how a container's file name and its plaintext name map.
//!
//! - Hidden entries (a name starting with `.`, such as the `.qeltrix` keyring folder, and `.`,
//!   `..`) are not shown, nor anything below them, except by a vault that shows dot names
//!   ([`Vault::with_dot_names`](super::Vault::with_dot_names): the mount, a file system where
//!   `.git` and `.profile` must work). Even there the *reserved* names ([`is_reserved`]: `.`,
//!   `..`, the writers' temporary names `.qeltrix-*`, and `.qeltrix` in the vault's top folder,
//!   the vault's own folder) are never shown and never created.
//! - A name holding a backslash is never shown either: a URL cannot name it safely (serve refuses
//!   `\` in a request path), so showing it in one front end only would make them disagree.
//! - A container file `NAME.qltx` is shown as `NAME`; a bare `.qltx` (hidden anyway) and any
//!   other file are not shown.
//!
//! What a link may reach is not a naming matter: the storage confines it
//! ([`LocalStorage`](crate::storage::LocalStorage) never follows one out of its root).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// The file name extension of containers.
pub const CONTAINER_EXT: &str = "qltx";

/// `.` and the extension: what a container's file name ends with.
pub const CONTAINER_SUFFIX: &str = ".qltx";

/// True for a name that is never shown because it is hidden: `.`, `..` and every dot name.
pub fn is_hidden(name: &[u8]) -> bool {
    name.first() == Some(&b'.')
}

/// The vault's own folder (keyring, state, scratch files), in its top folder.
pub const VAULT_DIR: &str = ".qeltrix";

/// True for a name the vault keeps for itself in a folder (`top`: the vault's top folder): `.`,
/// `..`, the `.qeltrix-*` temporary names of writers, and in the top folder `.qeltrix`.
pub fn is_reserved(name: &[u8], top: bool) -> bool {
    name == b"." || name == b".." || name.starts_with(b".qeltrix-") || (top && name == VAULT_DIR.as_bytes())
}

/// [`is_shown`], or, with `dot_names`, any name but the reserved ones (in the top folder when
/// `top`), empty ones and those with a backslash.
pub fn is_shown_in(name: &OsStr, dot_names: bool, top: bool) -> bool {
    let bytes = name.as_bytes();
    match dot_names {
        false => is_shown(name),
        true => !bytes.is_empty() && !is_reserved(bytes, top) && !bytes.contains(&b'\\'),
    }
}

/// [`plaintext_name`] under [`is_shown_in`]'s rule.
pub fn plaintext_name_in(file_name: &OsStr, dot_names: bool, top: bool) -> Option<&OsStr> {
    if !is_shown_in(file_name, dot_names, top) {
        return None;
    }
    let stem = file_name
        .as_bytes()
        .strip_suffix(CONTAINER_SUFFIX.as_bytes())
        .filter(|s| !s.is_empty())?;
    Some(OsStr::from_bytes(stem))
}

/// True for a name a vault may show (a folder's, or a container's file name): not hidden, no
/// backslash, not empty.
pub fn is_shown(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty() && !is_hidden(bytes) && !bytes.contains(&b'\\')
}

/// The plaintext name a container file is shown as (`movie.mp4.qltx` → `movie.mp4`), or `None`
/// for a name that is not shown or not a container's.
pub fn plaintext_name(file_name: &OsStr) -> Option<&OsStr> {
    plaintext_name_in(file_name, false, false)
}

/// [`plaintext_name`] for a UTF-8 name.
pub fn plaintext_str(file_name: &str) -> Option<&str> {
    plaintext_name(OsStr::new(file_name)).and_then(OsStr::to_str)
}

/// The file name of the container holding `plaintext` (`movie.mp4` → `movie.mp4.qltx`): pack's
/// default output, the gateway sink's saved streams, serve's lookup of a requested name.
pub fn container_name(plaintext: impl AsRef<OsStr>) -> OsString {
    let mut name = plaintext.as_ref().to_os_string();
    name.push(CONTAINER_SUFFIX);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(name: &str) -> Option<&str> {
        plaintext_name(OsStr::new(name)).map(|s| s.to_str().unwrap())
    }

    #[test]
    fn hidden_names_are_never_shown() {
        assert!(is_hidden(b".qeltrix") && is_hidden(b".") && is_hidden(b".."));
        assert!(!is_hidden(b"a.qltx") && !is_hidden(b""));
        for name in [".qeltrix", ".", "..", "", "a\\b", ".hidden.qltx"] {
            assert!(!is_shown(OsStr::new(name)), "{name:?}");
        }
        assert!(is_shown(OsStr::new("sub dir")) && is_shown(OsStr::new("a.qltx")));
    }

    #[test]
    fn a_vault_showing_dot_names_still_keeps_the_reserved_ones() {
        for name in [".git", ".profile", ".x.qltx", "...", ".qeltrixx"] {
            assert!(is_shown_in(OsStr::new(name), true, true), "{name:?}");
            assert!(!is_shown_in(OsStr::new(name), false, true), "{name:?}");
        }
        for name in [".", "..", ".qeltrix", ".qeltrix-0123.part", "", "a\\b"] {
            assert!(!is_shown_in(OsStr::new(name), true, true), "{name:?}");
        }
        // A nested `.qeltrix` (a vault inside a copied tree) is an ordinary folder.
        assert!(is_shown_in(OsStr::new(".qeltrix"), true, false));
        assert!(!is_shown_in(OsStr::new(".qeltrix-1.part"), true, false));
        assert_eq!(
            plaintext_name_in(OsStr::new(".bashrc.qltx"), true, false),
            Some(OsStr::new(".bashrc"))
        );
        assert_eq!(plaintext_name_in(OsStr::new(".qltx"), true, false), None);
    }

    #[test]
    fn plaintext_names_drop_the_extension_and_skip_other_files() {
        assert_eq!(shown("movie.mp4.qltx"), Some("movie.mp4"));
        assert_eq!(shown("a.qltx"), Some("a"));
        assert_eq!(shown("b c.mp4.qltx"), Some("b c.mp4"));
        assert_eq!(
            shown("x..qltx"),
            Some("x."),
            "as before, in mount and serve alike"
        );
        for name in [
            "notes.txt",
            ".qltx",
            "qltx",
            "..qltx",
            ".hidden.qltx",
            "a\\b.qltx",
            "a.QLTX",
            "a.qltx.part",
        ] {
            assert_eq!(shown(name), None, "{name:?}");
        }
        assert_eq!(plaintext_str("movie.mp4.qltx"), Some("movie.mp4"));
        // Not UTF-8: shown all the same, as bytes.
        let raw = OsStr::from_bytes(b"\xff.qltx");
        assert_eq!(plaintext_name(raw).map(OsStr::as_bytes), Some(&b"\xff"[..]));
    }

    #[test]
    fn container_names_add_the_extension_and_round_trip() {
        assert_eq!(container_name("movie.mp4"), "movie.mp4.qltx");
        assert_eq!(container_name("0a1b"), "0a1b.qltx");
        for plain in ["movie.mp4", "a", "x.", "b c"] {
            assert_eq!(shown(container_name(plain).to_str().unwrap()), Some(plain));
        }
    }
}
