//! The library's error type.
//!
//! Rules for errors, project-wide:
//! - A caller can match on the kind: a wrong key ([`Error::WrongKey`]) is not a missing slot
//!   ([`Error::NoSlot`]), a refused KDF cost ([`Error::SlotsRefused`], [`Error::KdfTooCostly`]),
//!   a corrupt container ([`Error::Corrupt`]) or an I/O failure ([`Error::Io`]).
//! - Every error about container bytes says where: the block index and/or the byte offset in the
//!   container. The file name is added by whoever knows it (the CLI, `Container::open`).
//! - Nothing read from a container is trusted before it is checked, so malformed input is an
//!   error value, never a panic.
//! - An error's `Display` is complete: it includes the text of its cause. [`Error::Io`] and
//!   [`Error::InFile`] also return their cause from `source()`, for code that inspects it (the
//!   `io::ErrorKind`, the inner error), so a printer shows a `qeltrix::Error` with `{}` and does
//!   not walk its chain further.
//! - The library states facts; it does not word advice for a front end (no command names or
//!   flags: the CLI adds "use --force", "`qeltrix repair`" where it prints).

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::core::format::SlotKind;

/// A result whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How [`Error::NotAContainer`] begins for a format version this build does not read.
pub(crate) const UNSUPPORTED_VERSION: &str = "unsupported format version";

/// Every error the library returns. Match on the kind; `Display` includes the cause, and errors
/// about container bytes name the block and/or container offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed; `context` says what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done ("opening", "writing stdout").
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The bytes are not a Qeltrix container at all (bad magic, unknown version or cipher).
    #[error("not a Qeltrix container: {0}")]
    NotAContainer(String),

    /// A key slot of a kind the key could open exists, but the key opens none of them (or, for
    /// [`Lock::Vault`], the passphrase does not open that vault's keyring).
    #[error("wrong key: {}", wrong_key(tried, lock))]
    WrongKey {
        /// The slot kinds the key could open.
        tried: Vec<SlotKind>,
        /// What the key was tried on.
        lock: Lock,
    },

    /// The container has no key slot of any kind the key could open.
    #[error(
        "wrong key: the container has no {} slot (its slots: {}){}",
        kinds(tried, " or "),
        kinds(present, ", "),
        keyring_hint(tried, present)
    )]
    NoSlot {
        /// The slot kinds the key could open.
        tried: Vec<SlotKind>,
        /// The slot kinds the container has.
        present: Vec<SlotKind>,
    },

    /// No slot opened, and some were not tried: their KDF cost is above the reader's limit, or
    /// they are past the number of passphrase slots a reader tries.
    #[error("wrong key: no key slot opened; {}", refusals(refused))]
    SlotsRefused {
        /// The slots not tried, and why.
        refused: Vec<SlotRefusal>,
    },

    /// A passphrase-protected object (`what`: "the keyring") asks for more PBKDF2 iterations
    /// than this reader allows ([`crate::crypto::KdfLimits`]).
    #[error("wrong key: {}", too_costly(what, *iterations, *limit))]
    KdfTooCostly {
        /// What asks for the cost ("the keyring").
        what: String,
        /// PBKDF2 iterations asked for.
        iterations: u32,
        /// The most iterations this reader allows.
        limit: u32,
    },

    /// A front end's key opens none of the `containers` of a vault (checked at start, see
    /// [`crate::vault::KeyCheck`]); each container's own error says why.
    #[error("wrong key: the key opens 0 of {containers} {}", if *containers == 1 { "container" } else { "containers" })]
    KeyOpensNone {
        /// Containers the key was tried on.
        containers: usize,
    },

    /// Authentication or a structural check failed: the container was modified or damaged.
    #[error("corrupt container: {what}{}", location(*block, *offset))]
    Corrupt {
        /// What is wrong.
        what: String,
        /// The index of the block concerned, if any.
        block: Option<u64>,
        /// The container offset concerned, if any.
        offset: Option<u64>,
    },

    /// The container's signature does not prove what was asked: it is unsigned, signed by
    /// another key, or its signature does not match its bytes (`verify --signer`).
    #[error("signature check failed: {0}")]
    Signature(String),

    /// The container is cut short (a stream that ended, a file shorter than its header).
    #[error("incomplete container: {0}")]
    Incomplete(String),

    /// The file ends without a valid trailer: a cut stream or an interrupted writer. The blocks
    /// that arrived whole can be recovered (`container::repair`).
    #[error("incomplete container: no valid trailer at the end of the file (a cut stream or an interrupted write)")]
    NoTrailer,

    /// A caller passed an option outside what the format allows.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The output exists and the caller did not ask to replace it.
    #[error("{} exists", path.display())]
    Exists {
        /// The existing output.
        path: PathBuf,
    },

    /// Key material that does not parse (a key file, an identity, a recipient).
    #[error(transparent)]
    KeyFormat(#[from] crate::core::crypto::KeyFormatError),

    /// A bug: code that should never fail panicked while handling this block or request. The
    /// panic was caught so that it fails this one request, not the process.
    #[error("internal error: {what}{}", location(*block, None))]
    Internal {
        /// What failed (for a caught panic, its message).
        what: String,
        /// The index of the block being handled, if any.
        block: Option<u64>,
    },

    /// A folder used as a vault has no keyring (`keyring` is where it was looked for).
    #[error("not an initialised vault: {} does not exist", keyring.display())]
    NotAVault {
        /// The keyring file that is missing.
        keyring: PathBuf,
    },

    /// Something is in the way of mounting at, or unmounting, `path`.
    #[error("{}", mount_problem(path, problem))]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// What is in the way.
        problem: MountProblem,
    },

    /// A rekey put the new key slots in force, but clearing the old slot area failed (it may
    /// still hold removed slots until it is scrubbed).
    #[error("the new key slots are in force, but clearing the old ones failed: {source}")]
    ScrubFailed {
        /// The write or sync that failed.
        source: io::Error,
    },

    /// Context added to another error: the file it happened in.
    #[error("{}: {inner}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The error that happened in it.
        #[source]
        inner: Box<Error>,
    },
}

/// What a key was tried on, in [`Error::WrongKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lock {
    /// A container's key slots.
    Container,
    /// The keyring of the vault folder `vault` (opened by the vault passphrase). The vault is
    /// named because a container inside a vault may be tried with the vault passphrase: a
    /// failure must say it was the vault that did not open, not the container.
    Vault {
        /// The vault folder.
        vault: PathBuf,
    },
}

/// A key slot that was not tried, in [`Error::SlotsRefused`]. `slot` is its number in the slot
/// area.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotRefusal {
    /// Its PBKDF2 cost (`iterations`, read from unauthenticated bytes) is above `limit`.
    TooCostly {
        /// The slot's number in the slot area.
        slot: usize,
        /// PBKDF2 iterations the slot asks for.
        iterations: u32,
        /// The most iterations this reader allows.
        limit: u32,
    },
    /// More passphrase slots came before it than a reader tries (`max_slots`).
    NotTried {
        /// The slot's number in the slot area.
        slot: usize,
        /// The most passphrase slots a reader tries.
        max_slots: usize,
    },
}

impl fmt::Display for SlotRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotRefusal::TooCostly {
                slot,
                iterations,
                limit,
            } => f.write_str(&too_costly(&format!("key slot #{slot}"), *iterations, *limit)),
            SlotRefusal::NotTried { slot, max_slots } => write!(
                f,
                "key slot #{slot} was not tried: at most {max_slots} passphrase slots are tried per container"
            ),
        }
    }
}

fn wrong_key(tried: &[SlotKind], lock: &Lock) -> String {
    match lock {
        Lock::Container => format!("the {} given does not open any key slot", kinds(tried, " or ")),
        Lock::Vault { vault } => format!("the passphrase does not open vault {}", vault.display()),
    }
}

fn kinds(kinds: &[SlotKind], sep: &str) -> String {
    kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(sep)
}

fn keyring_hint(tried: &[SlotKind], present: &[SlotKind]) -> &'static str {
    if present.contains(&SlotKind::Keyring) && !tried.contains(&SlotKind::Keyring) {
        "; its keyring slot needs the passphrase of the vault it was packed into"
    } else {
        ""
    }
}

fn refusals(refused: &[SlotRefusal]) -> String {
    refused
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn too_costly(what: &str, iterations: u32, limit: u32) -> String {
    format!("{what} asks for {iterations} PBKDF2 iterations, more than this reader's limit of {limit}")
}

/// What stands in the way of a mount point, in [`Error::MountPoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MountProblem {
    /// A FUSE mount whose process is gone (every access fails with ENOTCONN).
    Stale,
    /// Something else is mounted there already (`fstype`).
    Mounted {
        /// The file system type of what is mounted.
        fstype: String,
    },
    /// Files under the mount are open, so it cannot be unmounted (unless lazily).
    FilesOpen,
    /// The mount point does not exist.
    Missing,
    /// The mount point is not a folder.
    NotAFolder,
}

fn mount_problem(path: &std::path::Path, problem: &MountProblem) -> String {
    let shown = path.display();
    match problem {
        MountProblem::Stale => format!("{shown} is a stale mount (its filesystem process is gone)"),
        MountProblem::Mounted { fstype } => {
            format!("{shown} is busy: something ({fstype}) is already mounted there; unmount it first")
        }
        MountProblem::FilesOpen => format!("{shown} is busy: files under it are open"),
        MountProblem::Missing => {
            format!("mount point {shown} does not exist: create the folder first (mkdir {shown})")
        }
        MountProblem::NotAFolder => format!("mount point {shown} is not a folder"),
    }
}

fn location(block: Option<u64>, offset: Option<u64>) -> String {
    match (block, offset) {
        (Some(b), Some(o)) => format!(" (block {b}, container offset {o})"),
        (Some(b), None) => format!(" (block {b})"),
        (None, Some(o)) => format!(" (container offset {o})"),
        (None, None) => String::new(),
    }
}

impl Error {
    /// An [`Error::Corrupt`] with no location.
    pub fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            block: None,
            offset: None,
        }
    }

    /// An [`Error::Corrupt`] at block `block`, container offset `offset`.
    pub fn corrupt_block(block: u64, offset: u64, what: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            block: Some(block),
            offset: Some(offset),
        }
    }

    /// The error for a caught panic (`payload` as given by `catch_unwind`) while working on
    /// `block`, if the work was about one block.
    pub fn panicked(block: Option<u64>, payload: &(dyn std::any::Any + Send)) -> Self {
        Error::Internal {
            what: format!("a worker panicked: {}", panic_message(payload)),
            block,
        }
    }

    /// An [`Error::Io`]: `source` happened while doing `context`.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Attach the file the error happened in (once: an error that already names a file keeps it).
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            e @ (Error::InFile { .. } | Error::Exists { .. }) => e,
            e => Error::InFile {
                path: path.into(),
                inner: Box::new(e),
            },
        }
    }

    /// The error with any file context removed: what kind of failure it is.
    pub fn root(&self) -> &Error {
        match self {
            Error::InFile { inner, .. } => inner.root(),
            e => e,
        }
    }

    /// The file the error names, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::InFile { path, .. } | Error::Exists { path } => Some(path),
            _ => None,
        }
    }

    /// True when the key given does not open it: a wrong key, no slot of its kind, or slots
    /// refused for their KDF cost.
    pub fn is_wrong_key(&self) -> bool {
        matches!(
            self.root(),
            Error::WrongKey { .. }
                | Error::NoSlot { .. }
                | Error::SlotsRefused { .. }
                | Error::KdfTooCostly { .. }
                | Error::KeyOpensNone { .. }
        )
    }

    /// True when the failure means "this key does not open it" or "these bytes are not authentic":
    /// the CLI's exit code 3.
    pub fn is_auth_failure(&self) -> bool {
        self.is_wrong_key()
            || matches!(
                self.root(),
                Error::Corrupt { .. } | Error::Incomplete(_) | Error::NoTrailer | Error::Signature(_)
            )
    }

    /// True when the bytes are not a Qeltrix container at all (another kind of file): the CLI's
    /// exit code 4, distinct from a wrong key or a container that fails authentication.
    pub fn is_not_a_container(&self) -> bool {
        matches!(self.root(), Error::NotAContainer(_))
    }

    /// True for a container of a format version this build does not read (a newer writer's):
    /// a kind of [`Error::NotAContainer`], told apart for embedders (the Python package raises
    /// `UnsupportedVersionError`).
    pub fn is_unsupported_version(&self) -> bool {
        matches!(self.root(), Error::NotAContainer(m) if m.starts_with(UNSUPPORTED_VERSION))
    }

    /// True for a broken pipe on output (`qeltrix seek ... | head`), which is not an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self.root(), Error::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// The message of a panic payload (`panic!` with a literal or a formatted string), or a
/// placeholder for other payloads.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs `f`, turning a panic into [`Error::Internal`] for `block`: one bad block fails one
/// request instead of unwinding through (or aborting) the thread that serves many.
pub fn catch_panic<T>(block: Option<u64>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(Error::panicked(block, payload.as_ref())))
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match e.root() {
            Error::Io { source, .. } => source.kind(),
            e if e.is_wrong_key() => io::ErrorKind::PermissionDenied,
            Error::InvalidArgument(_) | Error::KeyFormat(_) => io::ErrorKind::InvalidInput,
            Error::Exists { .. } => io::ErrorKind::AlreadyExists,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn io_gives_its_cause_as_source_and_says_it_once() {
        let e = Error::io(
            "reading the footer",
            io::Error::from(io::ErrorKind::UnexpectedEof),
        )
        .in_file("c.qltx");
        let io = e
            .source()
            .and_then(|s| s.source())
            .and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(io.map(io::Error::kind), Some(io::ErrorKind::UnexpectedEof));
        let text = e.to_string();
        assert!(text.starts_with("c.qltx: reading the footer: "), "{text}");
        assert_eq!(text.matches("end of file").count(), 1, "{text}");
    }

    #[test]
    fn key_failures_say_what_was_tried_and_what_exists() {
        use SlotKind::*;
        let wrong = Error::WrongKey {
            tried: vec![KeyFile, Recipient],
            lock: Lock::Container,
        };
        assert_eq!(
            wrong.to_string(),
            "wrong key: the key-file or recipient given does not open any key slot"
        );
        let vault = Error::WrongKey {
            tried: vec![Passphrase],
            lock: Lock::Vault {
                vault: "photos".into(),
            },
        };
        assert_eq!(
            vault.to_string(),
            "wrong key: the passphrase does not open vault photos"
        );
        let none = Error::NoSlot {
            tried: vec![Passphrase],
            present: vec![KeyFile, Keyring],
        };
        assert_eq!(
            none.to_string(),
            "wrong key: the container has no passphrase slot (its slots: key-file, keyring); \
             its keyring slot needs the passphrase of the vault it was packed into"
        );
        let refused = Error::SlotsRefused {
            refused: vec![
                SlotRefusal::TooCostly {
                    slot: 0,
                    iterations: 5000,
                    limit: 4000,
                },
                SlotRefusal::NotTried {
                    slot: 5,
                    max_slots: 4,
                },
            ],
        };
        let text = refused.to_string();
        assert!(
            text.starts_with("wrong key: no key slot opened; key slot #0 asks for 5000 PBKDF2 iterations")
                && text.ends_with(
                    "; key slot #5 was not tried: at most 4 passphrase slots are tried per container"
                ),
            "{text}"
        );
        for e in [wrong, vault, none, refused] {
            assert!(e.is_wrong_key() && e.is_auth_failure(), "{e}");
        }
        assert!(Error::NoTrailer.is_auth_failure() && !Error::NoTrailer.is_wrong_key());
    }

    #[test]
    fn an_error_naming_its_file_is_not_wrapped_again() {
        let e = Error::Exists { path: "out".into() }.in_file("in");
        assert!(
            matches!(&e, Error::Exists { path } if path.as_os_str() == "out"),
            "{e}"
        );
        assert_eq!(e.to_string(), "out exists");
    }
}
