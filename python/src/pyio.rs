//! Python file objects as Rust readers and writers, and a progress-reporting reader. Each call
//! into Python takes the GIL for that call only: the heavy work around them runs without it.

use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyBytes;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

/// Bytes asked of a Python file object per `read` call.
const READ_CHUNK: usize = 1 << 20;

/// Plaintext bytes between two calls of a progress callback.
const PROGRESS_STEP: u64 = 4 << 20;

/// The first Python exception raised inside a Rust call, re-raised when the call returns (the
/// Rust side sees an I/O error in its place).
#[derive(Default)]
pub struct Raised(Option<PyErr>);

impl Raised {
    fn keep(&mut self, e: PyErr) -> io::Error {
        let shown = e.to_string();
        if self.0.is_none() {
            self.0 = Some(e);
        }
        io::Error::other(format!("Python raised {shown}"))
    }

    /// The exception to raise instead of the library's error, if Python raised one.
    pub fn take(&mut self) -> Option<PyErr> {
        self.0.take()
    }
}

/// A binary file-like object with `read(n)`, as a `Read`.
pub struct PyReader<'a> {
    pub file: &'a Py<PyAny>,
    pub raised: &'a mut Raised,
}

impl Read for PyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min(READ_CHUNK);
        let got = Python::attach(|py| -> PyResult<Option<PyBackedBytes>> {
            let data = self.file.call_method1(py, "read", (want,))?;
            if data.is_none(py) {
                return Ok(None);
            }
            Ok(Some(data.extract::<PyBackedBytes>(py)?))
        });
        match got {
            Ok(Some(data)) if data.len() <= want => {
                buf[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            }
            Ok(Some(data)) => Err(io::Error::other(format!(
                "the source's read({want}) returned {} bytes",
                data.len()
            ))),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the source's read() returned None (a non-blocking file with no data)",
            )),
            Err(e) => Err(self.raised.keep(e)),
        }
    }
}

/// A binary file-like object with `write(b)`, as a `Write`. `raised` is shared with the owner
/// of the writer (a packer may hold it).
pub struct PyWriter {
    pub file: Py<PyAny>,
    pub raised: Arc<Mutex<Raised>>,
}

impl PyWriter {
    fn keep(&self, e: PyErr) -> io::Error {
        self.raised.lock().unwrap_or_else(|p| p.into_inner()).keep(e)
    }

    /// The exception its file object raised, if any.
    pub fn take_raised(&self) -> Option<PyErr> {
        self.raised.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Write for PyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let wrote = Python::attach(|py| -> PyResult<usize> {
            let n = self.file.call_method1(py, "write", (PyBytes::new(py, buf),))?;
            // Raw files may write less and say so; buffered ones return None or the length.
            Ok(if n.is_none(py) {
                buf.len()
            } else {
                n.extract::<usize>(py)?
            })
        });
        match wrote {
            Ok(0) if !buf.is_empty() => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the output took no bytes",
            )),
            Ok(n) => Ok(n.min(buf.len())),
            Err(e) => Err(self.keep(e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let flushed = Python::attach(|py| -> PyResult<()> {
            if self.file.bind(py).hasattr("flush")? {
                self.file.call_method0(py, "flush")?;
            }
            Ok(())
        });
        flushed.map_err(|e| self.keep(e))
    }
}

/// A reader that calls `callback(done, total)` every few MiB and once at the end of its input,
/// and lets Python handle signals as often.
pub struct Progress<'a, R> {
    pub inner: R,
    pub callback: Option<&'a Py<PyAny>>,
    pub total: Option<u64>,
    pub done: u64,
    reported: Option<u64>,
    pub raised: &'a mut Raised,
}

impl<'a, R> Progress<'a, R> {
    pub fn new(
        inner: R,
        callback: Option<&'a Py<PyAny>>,
        total: Option<u64>,
        raised: &'a mut Raised,
    ) -> Self {
        Progress {
            inner,
            callback,
            total,
            done: 0,
            reported: None,
            raised,
        }
    }

    /// Runs the signal handlers (Ctrl-C in the main thread raises `KeyboardInterrupt`, which
    /// stops the pack: nothing is left at its output), then the callback.
    fn report(&mut self) -> io::Result<()> {
        self.reported = Some(self.done);
        let (done, total, callback) = (self.done, self.total, self.callback);
        Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            if let Some(callback) = callback {
                callback.call1(py, (done, total))?;
            }
            Ok(())
        })
        .map_err(|e| self.raised.keep(e))
    }
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        let due = match self.reported {
            None => n == 0 || self.done >= PROGRESS_STEP,
            Some(at) => (n == 0 && at != self.done) || self.done - at >= PROGRESS_STEP,
        };
        if due {
            self.report()?;
        }
        Ok(n)
    }
}
