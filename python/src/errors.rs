//! The package's exceptions: one class per kind of failure, each carrying the file, block and
//! offset the library's error names.

use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyFileExistsError, PyFileNotFoundError, PyOSError, PyPermissionError, PyValueError,
};
use pyo3::prelude::*;
use qeltrix::Error;
use std::io;

create_exception!(
    qeltrix,
    QeltrixError,
    PyException,
    "Any failure of the qeltrix core. `path`, `block` and `offset` name where, when known."
);
create_exception!(
    qeltrix,
    WrongKeyError,
    QeltrixError,
    "The key opens none of the container's key slots."
);
create_exception!(
    qeltrix,
    CorruptContainerError,
    QeltrixError,
    "The container failed authentication or a structural check, or is cut short: it was \
     modified, damaged or truncated. No data from the failing part is returned."
);
create_exception!(
    qeltrix,
    UnsupportedVersionError,
    QeltrixError,
    "A container of a format version this build does not read (written by a newer Qeltrix)."
);
create_exception!(
    qeltrix,
    NotAContainerError,
    QeltrixError,
    "The bytes are not a Qeltrix container at all."
);

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("QeltrixError", py.get_type::<QeltrixError>())?;
    m.add("WrongKeyError", py.get_type::<WrongKeyError>())?;
    m.add("CorruptContainerError", py.get_type::<CorruptContainerError>())?;
    m.add(
        "UnsupportedVersionError",
        py.get_type::<UnsupportedVersionError>(),
    )?;
    m.add("NotAContainerError", py.get_type::<NotAContainerError>())?;
    Ok(())
}

/// The Python exception for a library error: a qeltrix class with `path`, `block` and `offset`
/// set, or the OS error (`FileNotFoundError`, `FileExistsError`, …) and `ValueError` Python code
/// expects for files and arguments.
pub fn to_py(e: Error) -> PyErr {
    let message = e.to_string();
    let path = e.path().map(|p| p.display().to_string());
    let root = e.root();
    let (block, offset) = match root {
        Error::Corrupt { block, offset, .. } => (*block, *offset),
        Error::Internal { block, .. } => (*block, None),
        _ => (None, None),
    };
    let err = if e.is_wrong_key() {
        WrongKeyError::new_err(message)
    } else if e.is_unsupported_version() {
        UnsupportedVersionError::new_err(message)
    } else if e.is_not_a_container() {
        NotAContainerError::new_err(message)
    } else {
        match root {
            Error::Corrupt { .. } | Error::Incomplete(_) | Error::NoTrailer => {
                CorruptContainerError::new_err(message)
            }
            Error::Io { source, .. } => return os_error(source, message, path),
            Error::Exists { path } => {
                return PyFileExistsError::new_err((
                    libc_errno(io::ErrorKind::AlreadyExists),
                    message,
                    path.display().to_string(),
                ))
            }
            Error::InvalidArgument(_) | Error::KeyFormat(_) => return PyValueError::new_err(message),
            _ => QeltrixError::new_err(message),
        }
    };
    Python::attach(|py| {
        let value = err.value(py);
        let _ = value.setattr("path", path);
        let _ = value.setattr("block", block);
        let _ = value.setattr("offset", offset);
    });
    err
}

/// The errno for an error that carries none (a remote store's), from its kind; EIO otherwise.
fn libc_errno(kind: io::ErrorKind) -> i32 {
    match kind {
        io::ErrorKind::NotFound => libc::ENOENT,
        io::ErrorKind::PermissionDenied => libc::EACCES,
        io::ErrorKind::AlreadyExists => libc::EEXIST,
        io::ErrorKind::Unsupported => libc::EOPNOTSUPP,
        io::ErrorKind::ReadOnlyFilesystem => libc::EROFS,
        io::ErrorKind::TimedOut => libc::ETIMEDOUT,
        io::ErrorKind::ConnectionRefused => libc::ECONNREFUSED,
        io::ErrorKind::StorageFull => libc::ENOSPC,
        io::ErrorKind::InvalidInput => libc::EINVAL,
        _ => libc::EIO,
    }
}

/// An OS error with its errno, the whole message, and the file it concerns (`filename`).
fn os_error(source: &io::Error, message: String, path: Option<String>) -> PyErr {
    let errno = source.raw_os_error().unwrap_or_else(|| libc_errno(source.kind()));
    let args = (errno, message, path);
    match source.kind() {
        io::ErrorKind::NotFound => PyFileNotFoundError::new_err(args),
        io::ErrorKind::PermissionDenied => PyPermissionError::new_err(args),
        io::ErrorKind::AlreadyExists => PyFileExistsError::new_err(args),
        _ => PyOSError::new_err(args),
    }
}
