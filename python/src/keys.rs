//! `qeltrix.Key`: what opens and seals containers, never shown in a repr or an error.

use crate::errors::to_py;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use qeltrix::crypto::{KeyFileKey, Passphrase, SystemEntropy};
use qeltrix::storage::{LocalStorage, Storage, WriteOptions};
use qeltrix::{Error, Key, Recipient};
use std::io::Write;
use std::path::PathBuf;

/// A key: a 32-byte key-file key, or a passphrase (with the PBKDF2 iterations its slots get
/// when packing).
#[pyclass(name = "Key", module = "qeltrix", frozen)]
#[derive(Clone)]
pub struct PyKey {
    pub key: Key,
    pub iterations: Option<u32>,
}

#[pymethods]
impl PyKey {
    /// A new random key-file key.
    #[staticmethod]
    fn generate() -> Self {
        PyKey {
            key: Key::KeyFile(KeyFileKey::generate(&SystemEntropy)),
            iterations: None,
        }
    }

    /// A key-file key from its 32 raw bytes.
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        let bytes: [u8; 32] = data
            .try_into()
            .map_err(|_| PyValueError::new_err(format!("a key is 32 bytes, not {}", data.len())))?;
        Ok(PyKey {
            key: Key::KeyFile(KeyFileKey::from_bytes(bytes)),
            iterations: None,
        })
    }

    /// A passphrase. `iterations`: PBKDF2 iterations of the slots packed with it (the CLI's
    /// default when not given); opening reads them from the container.
    #[staticmethod]
    #[pyo3(signature = (passphrase, *, iterations=None))]
    fn from_passphrase(passphrase: String, iterations: Option<u32>) -> PyResult<Self> {
        if passphrase.is_empty() {
            return Err(PyValueError::new_err("the passphrase is empty"));
        }
        Ok(PyKey {
            key: Key::Passphrase(Passphrase::new(passphrase)),
            iterations,
        })
    }

    /// Reads a key file: 64 hex digits (what `qeltrix keygen` and `Key.save` write) or 32 raw
    /// bytes.
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let key = py
            .detach(|| {
                let contents =
                    std::fs::read(&path).map_err(|e| Error::io("reading the key file", e).in_file(&path))?;
                KeyFileKey::parse(&contents).map_err(|e| Error::from(e).in_file(&path))
            })
            .map_err(to_py)?;
        Ok(PyKey {
            key: Key::KeyFile(key),
            iterations: None,
        })
    }

    /// Writes this key-file key to a new file `path` (mode 0600, all or nothing);
    /// `FileExistsError` if it exists.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let Key::KeyFile(k) = &self.key else {
            return Err(PyValueError::new_err(
                "only a key-file key can be saved; a passphrase is remembered, not stored",
            ));
        };
        let text = k.to_file_text();
        py.detach(|| -> qeltrix::Result<()> {
            let storage = LocalStorage::anywhere();
            // Refuses an existing file; mode 0600.
            let mut out = storage.create(&path, WriteOptions::default())?;
            out.write_all(text.as_bytes())
                .map_err(|e| Error::io("writing the key file", e).in_file(&path))?;
            out.commit().map_err(|e| e.in_file(&path))
        })
        .map_err(to_py)
    }

    /// `"key-file"` or `"passphrase"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.key {
            Key::Passphrase(_) => "passphrase",
            _ => "key-file",
        }
    }

    fn __repr__(&self) -> String {
        format!("<qeltrix.Key {} (secret not shown)>", self.kind())
    }
}

/// The key a Python argument gives: a `Key`, or 32 raw bytes (a key-file key, as the original
/// API's `random_master_key()` returns).
pub fn key_of(obj: &Bound<'_, PyAny>) -> PyResult<PyKey> {
    if let Ok(k) = obj.cast::<PyKey>() {
        return Ok(k.get().clone());
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return PyKey::from_bytes(b.as_bytes());
    }
    Err(PyTypeError::new_err(
        "a key is a qeltrix.Key or 32 bytes (see qeltrix.keygen and qeltrix.random_master_key)",
    ))
}

/// The recipient (key slot) a key packs to.
pub fn recipient_of(key: &PyKey) -> PyResult<Recipient> {
    Recipient::try_from(&key.key).map_err(to_py)
}

/// 32 random bytes: a key-file key, usable wherever a key is taken (the original API's name).
#[pyfunction]
pub fn random_master_key(py: Python<'_>) -> Bound<'_, PyBytes> {
    let k = KeyFileKey::generate(&SystemEntropy);
    PyBytes::new(py, k.as_bytes())
}

/// A new random key-file key; with `path`, also saved there (mode 0600).
#[pyfunction]
#[pyo3(signature = (path=None))]
pub fn keygen(py: Python<'_>, path: Option<PathBuf>) -> PyResult<PyKey> {
    let key = PyKey::generate();
    if let Some(path) = path {
        key.save(py, path)?;
    }
    Ok(key)
}
