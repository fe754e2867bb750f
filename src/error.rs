//! The library's error type.
//!
//! Rules for errors, project-wide:
//! - A caller can match on the kind: a wrong key ([`Error::WrongKey`]) is not a corrupt container
//!   ([`Error::Corrupt`]), and neither is an I/O failure ([`Error::Io`]).
//! - Every error about container bytes says where: the block index and/or the byte offset in the
//!   container. The file name is added by whoever knows it (the CLI, `Container::open`).
//! - Nothing read from a container is trusted before it is checked, so malformed input is an
//!   error value, never a panic.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The cause is part of the message rather than a `source()`, so printing the error chain
    // does not repeat it.
    #[error("{context}: {cause}")]
    Io { context: String, cause: io::Error },

    /// The bytes are not a Qeltrix container at all (bad magic, unknown version or cipher).
    #[error("not a Qeltrix container: {0}")]
    NotAContainer(String),

    /// No key slot accepted the key we were given.
    #[error("wrong key: {0}")]
    WrongKey(String),

    /// Authentication or a structural check failed: the container was modified or damaged.
    #[error("corrupt container: {what}{}", location(*block, *offset))]
    Corrupt {
        what: String,
        block: Option<u64>,
        offset: Option<u64>,
    },

    /// The container has no valid trailer: a cut stream or an interrupted writer.
    #[error("incomplete container: {0}")]
    Incomplete(String),

    /// A caller passed an option outside what the format allows.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A bug: code that should never fail panicked while handling this block or request. The
    /// panic was caught so that it fails this one request, not the process.
    #[error("internal error: {what}{}", location(*block, None))]
    Internal { what: String, block: Option<u64> },

    /// Context added to another error: the file it happened in.
    #[error("{}: {inner}", path.display())]
    InFile { path: PathBuf, inner: Box<Error> },
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
    pub fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            block: None,
            offset: None,
        }
    }

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

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause: source,
        }
    }

    /// Attach the file the error happened in (once: an error that already names a file keeps it).
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            e @ Error::InFile { .. } => e,
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

    /// True when the failure means "this key does not open it" or "these bytes are not authentic":
    /// the CLI's exit code 3.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self.root(),
            Error::WrongKey(_) | Error::Corrupt { .. } | Error::Incomplete(_) | Error::NotAContainer(_)
        )
    }

    /// True for a broken pipe on output (`qeltrix seek ... | head`), which is not an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self.root(), Error::Io { cause, .. } if cause.kind() == io::ErrorKind::BrokenPipe)
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
            Error::Io { cause, .. } => cause.kind(),
            Error::WrongKey(_) => io::ErrorKind::PermissionDenied,
            Error::InvalidArgument(_) => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}
