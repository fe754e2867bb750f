//! `qeltrix._native`: the Python API on the Rust core (docs/PYTHON.md). `qeltrix/__init__.py`
//! wraps it: argument normalisation, `Container` as an `io.RawIOBase`, context managers.
//!
//! Every call that reads, seals, decrypts or waits runs without the GIL (`py.detach`); calls back
//! into Python (a file object's `read`/`write`, a progress callback) take it for that call only.

mod errors;
mod keys;
mod pyio;
mod servers;

use errors::to_py;
use keys::{key_of, recipient_of, PyKey};
use pyio::{Progress, PyReader, PyWriter, Raised};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyString};
use qeltrix::sign::{signature_status, SignatureStatus};
use qeltrix::storage::remote::{self, RemoteOptions, RemoteStorage};
use qeltrix::storage::{LocalStorage, Object, Storage};
use qeltrix::writer::{PackOptions, PackSummary, StreamPacker};
use qeltrix::{CipherId, CompressMode, Container, ContainerInfo, Error, FileMeta, UnpackOptions};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What a finished pack produced.
#[pyclass(name = "PackResult", module = "qeltrix", frozen, get_all)]
pub struct PackResult {
    /// Plaintext bytes packed.
    original_size: u64,
    /// Bytes of the container.
    container_size: u64,
    /// Blocks written.
    blocks: u64,
    /// Blocks stored compressed.
    compressed_blocks: u64,
    /// The container's random id, hex.
    container_id: String,
    /// The format version written.
    format: u16,
    /// The container's keyless root (BLAKE3), hex; `None` for format 1.
    root: Option<String>,
}

#[pymethods]
impl PackResult {
    fn __repr__(&self) -> String {
        format!(
            "PackResult(original_size={}, container_size={}, blocks={}, container_id='{}')",
            self.original_size, self.container_size, self.blocks, self.container_id
        )
    }
}

impl From<PackSummary> for PackResult {
    fn from(s: PackSummary) -> Self {
        PackResult {
            original_size: s.original_size,
            container_size: s.container_size,
            blocks: s.blocks,
            compressed_blocks: s.compressed_blocks,
            container_id: hex(&s.container_id),
            format: s.format.number(),
            root: s.root.map(|r| hex(&r)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The pack options from the keyword arguments, checked.
fn pack_options(
    block_size: u64,
    cipher: &str,
    compress: &str,
    workers: usize,
    key: &PyKey,
) -> PyResult<PackOptions> {
    let cipher = match cipher.to_ascii_lowercase().as_str() {
        "aes" | "aes-256-gcm" | "aes256gcm" => CipherId::Aes256Gcm,
        "chacha" | "chacha20-poly1305" | "chacha20poly1305" => CipherId::ChaCha20Poly1305,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown cipher {other:?}: \"aes-256-gcm\" or \"chacha20-poly1305\""
            )))
        }
    };
    let compress = match compress {
        "auto" => CompressMode::Auto,
        "never" | "none" => CompressMode::Never,
        "always" => CompressMode::Always,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown compress {other:?}: \"auto\", \"never\" or \"always\""
            )))
        }
    };
    let block_size = u32::try_from(block_size)
        .ok()
        .filter(|b| qeltrix::format::check_block_size(*b).is_ok())
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "block_size {block_size}: a multiple of 4096 from 4096 to 64 MiB"
            ))
        })?;
    let mut opts = PackOptions {
        cipher,
        block_size,
        compress,
        workers,
        ..PackOptions::default()
    };
    if let Some(iterations) = key.iterations {
        opts.kdf_iterations = iterations;
    }
    Ok(opts)
}

/// The storage holding `location` (a local path, `s3://…`, `http(s)://…`) and its path there.
fn locate(location: &Path) -> qeltrix::Result<(Arc<dyn Storage>, PathBuf)> {
    if let Some(text) = location.to_str().filter(|t| remote::is_remote(t)) {
        let (storage, path) =
            RemoteStorage::parse(text, &RemoteOptions::default()).map_err(|e| match e.kind() {
                std::io::ErrorKind::InvalidInput => Error::InvalidArgument(e.to_string()),
                _ => Error::io("opening", e).in_file(text),
            })?;
        return Ok((Arc::new(storage), path));
    }
    Ok((Arc::new(LocalStorage::anywhere()), location.to_path_buf()))
}

/// Opens the container at `location` with `key`.
fn open(location: &Path, key: &PyKey) -> qeltrix::Result<Container<Object>> {
    let (storage, path) = locate(location)?;
    Container::open_in(&*storage, &path, &key.key)
}

/// Reads a container's structure (no key): its object and what the structure says.
fn read_info(location: &Path) -> qeltrix::Result<(Object, ContainerInfo)> {
    let (storage, path) = locate(location)?;
    let name = || storage.display(&path);
    let object = storage
        .open(&path)
        .map_err(|e| Error::io("opening", e).in_file(name()))?;
    let info = ContainerInfo::read(&object).map_err(|e| e.in_file(name()))?;
    Ok((object, info))
}

/// Packs `input` into the new container `dst`: a local path or an `s3://` object, all or
/// nothing.
fn pack_into(
    dst: &Path,
    input: &mut dyn std::io::Read,
    recipients: &[qeltrix::Recipient],
    opts: &PackOptions,
    overwrite: bool,
) -> qeltrix::Result<PackSummary> {
    let (storage, path) = locate(dst)?;
    qeltrix::ops::pack_in(&*storage, input, &path, recipients, opts, overwrite)
}

/// The error to raise: what Python raised inside the call, else the library's.
fn raise(raised: &mut Raised, e: Error) -> PyErr {
    raised.take().unwrap_or_else(|| to_py(e))
}

fn compress_name(compress: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(b) = compress.extract::<bool>() {
        return Ok(if b { "auto" } else { "never" }.into());
    }
    compress
        .extract::<String>()
        .map_err(|_| PyValueError::new_err("compress is \"auto\", \"never\", \"always\", True or False"))
}

/// The options and the key slot of a pack, from the keyword arguments `pack` and `StreamPacker`
/// share (`compress` as given: a name or a bool, `None` for auto).
fn packing(
    key: &Bound<'_, PyAny>,
    block_size: u64,
    cipher: &str,
    compress: Option<&Bound<'_, PyAny>>,
    workers: usize,
) -> PyResult<(PackOptions, [qeltrix::Recipient; 1])> {
    let key = key_of(key)?;
    let compress = compress.map(compress_name).transpose()?;
    let compress = compress.as_deref().unwrap_or("auto");
    let opts = pack_options(block_size, cipher, compress, workers, &key)?;
    Ok((opts, [recipient_of(&key)?]))
}

/// Packs `src` (a path, `bytes`, or a binary file object) into the new container `dst` (a path
/// or `s3://BUCKET/KEY`), all or nothing.
#[pyfunction]
#[pyo3(signature = (src, dst, key, *, block_size=1<<20, cipher="aes-256-gcm", compress=None, workers=0, progress_cb=None, overwrite=false))]
#[allow(clippy::too_many_arguments)]
fn pack(
    py: Python<'_>,
    src: &Bound<'_, PyAny>,
    dst: PathBuf,
    key: &Bound<'_, PyAny>,
    block_size: u64,
    cipher: &str,
    compress: Option<&Bound<'_, PyAny>>,
    workers: usize,
    progress_cb: Option<Py<PyAny>>,
    overwrite: bool,
) -> PyResult<PackResult> {
    let (opts, recipients) = packing(key, block_size, cipher, compress, workers)?;
    let callback = progress_cb.as_ref();
    let mut raised = Raised::default();
    let summary = if let Ok(data) = src.cast::<PyBytes>() {
        let data: PyBackedBytes = data.clone().into();
        py.detach(|| {
            let total = data.len() as u64;
            let mut input = Progress::new(&data[..], callback, Some(total), &mut raised);
            pack_into(&dst, &mut input, &recipients, &opts, overwrite)
        })
    } else if src.hasattr("read")? {
        let file: Py<PyAny> = src.clone().unbind();
        let mut reader_raised = Raised::default();
        let result = py.detach(|| {
            let reader = PyReader {
                file: &file,
                raised: &mut reader_raised,
            };
            let mut input = Progress::new(reader, callback, None, &mut raised);
            pack_into(&dst, &mut input, &recipients, &opts, overwrite)
        });
        if let Some(e) = reader_raised.take() {
            return Err(e);
        }
        result
    } else {
        let path: PathBuf = src.extract()?;
        py.detach(|| {
            let file = File::open(&path).map_err(|e| Error::io("opening the input", e).in_file(&path))?;
            let metadata = file.metadata().ok().filter(|m| m.is_file());
            let total = metadata.as_ref().map(|m| m.len());
            // A file's name, mode and mtime go into the file record, as the CLI's pack does.
            let opts = PackOptions {
                file_meta: metadata.map(|m| FileMeta::from_file(&path, &m)),
                ..opts.clone()
            };
            let mut input = Progress::new(file, callback, total, &mut raised);
            pack_into(&dst, &mut input, &recipients, &opts, overwrite).map_err(|e| match e {
                e @ Error::Io { .. } => e.in_file(&path),
                e => e,
            })
        })
    };
    summary.map(PackResult::from).map_err(|e| raise(&mut raised, e))
}

/// Decrypts the container `src` (a path or URL) into `dst`: a path or `s3://` object (all or
/// nothing: nothing is left there on any failure) or a binary file object (written block by
/// block as each is authenticated).
#[pyfunction]
#[pyo3(signature = (src, dst, key, *, workers=0, verify=true, overwrite=false))]
fn unpack(
    py: Python<'_>,
    src: PathBuf,
    dst: &Bound<'_, PyAny>,
    key: &Bound<'_, PyAny>,
    workers: usize,
    verify: bool,
    overwrite: bool,
) -> PyResult<u64> {
    let key = key_of(key)?;
    let opts = UnpackOptions {
        verify,
        workers,
        overwrite,
    };
    if dst.hasattr("write")? && !dst.is_instance_of::<PyString>() {
        let mut out = PyWriter {
            file: dst.clone().unbind(),
            raised: Arc::default(),
        };
        let result = py.detach(|| -> qeltrix::Result<u64> {
            let container = Arc::new(open(&src, &key)?);
            let n = container
                .unpack_to(&mut out, opts.verify, opts.workers, &|_| {})
                .map_err(|e| e.in_file(&src))?;
            std::io::Write::flush(&mut out).map_err(|e| Error::io("writing the output", e))?;
            Ok(n)
        });
        return result.map_err(|e| out.take_raised().unwrap_or_else(|| to_py(e)));
    }
    let dst: PathBuf = dst.extract()?;
    py.detach(|| -> qeltrix::Result<u64> {
        let container = Arc::new(open(&src, &key)?);
        let (storage, path) = locate(&dst)?;
        qeltrix::ops::unpack_container_in(&*storage, &container, &src, &path, &opts, &|_| {})
    })
    .map_err(to_py)
}

/// Plaintext bytes `offset .. offset + length` of the container at `path` (clipped at its end),
/// decrypting only the blocks that cover them. `master_key` is the original API's name for `key`.
#[pyfunction]
#[pyo3(signature = (path, offset, length, key=None, *, master_key=None))]
fn seek_extract<'py>(
    py: Python<'py>,
    path: PathBuf,
    offset: i64,
    length: i64,
    key: Option<&Bound<'py, PyAny>>,
    master_key: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let key = match (key, master_key) {
        (Some(k), None) | (None, Some(k)) => key_of(k)?,
        (Some(_), Some(_)) => return Err(PyValueError::new_err("give key or master_key, not both")),
        (None, None) => return Err(PyValueError::new_err("seek_extract needs a key")),
    };
    let (offset, length) = non_negative(offset, length)?;
    let data = py
        .detach(|| -> qeltrix::Result<Vec<u8>> {
            let c = open(&path, &key)?;
            c.seek_extract(offset, length).map_err(|e| e.in_file(&path))
        })
        .map_err(to_py)?;
    Ok(PyBytes::new(py, &data))
}

fn non_negative(offset: i64, length: i64) -> PyResult<(u64, u64)> {
    if offset < 0 || length < 0 {
        return Err(PyValueError::new_err(format!(
            "offset {offset} and length {length} must not be negative"
        )));
    }
    Ok((offset as u64, length as u64))
}

fn info_dict<'py>(py: Python<'py>, location: &Path, info: &ContainerInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("path", location.display().to_string())?;
    d.set_item("format", info.version().number())?;
    d.set_item("cipher", cipher_name(info.header.cipher))?;
    d.set_item("block_size", info.header.block_size)?;
    d.set_item("size", info.original_size())?;
    d.set_item("blocks", info.block_count())?;
    d.set_item("container_size", info.container_size)?;
    d.set_item("root", info.root().map(|r| hex(&r)))?;
    d.set_item("container_id", hex(&info.header.container_id))?;
    Ok(d)
}

fn cipher_name(c: CipherId) -> &'static str {
    match c {
        CipherId::Aes256Gcm => "aes-256-gcm",
        CipherId::ChaCha20Poly1305 => "chacha20-poly1305",
    }
}

/// What the container at `path` is, read from its structure: no key needed.
#[pyfunction]
fn info<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let (info, signature) = py
        .detach(|| -> qeltrix::Result<_> {
            let (object, info) = read_info(&path)?;
            let signature = signature_status(&object, &info).map_err(|e| e.in_file(&path))?;
            Ok((info, signature))
        })
        .map_err(to_py)?;
    let d = info_dict(py, &path, &info)?;
    // As `qeltrix info` shows it: the signer only when the signature checks out.
    let (signer, status) = match signature {
        SignatureStatus::Unsigned => (None, "none".to_string()),
        SignatureStatus::Valid(signer) => (Some(signer.to_string()), "valid".to_string()),
        SignatureStatus::Invalid { reason, .. } => (None, format!("invalid: {reason}")),
    };
    d.set_item("signer", signer)?;
    d.set_item("signature", status)?;
    Ok(d)
}

/// Checks the whole container at `path`: with `key`, every block authenticated and hash-checked;
/// without, every stored byte against its keyless hashes (format 2 and later). Raises on any
/// damage; returns what was checked.
#[pyfunction]
#[pyo3(signature = (path, key=None, *, workers=0))]
fn verify<'py>(
    py: Python<'py>,
    path: PathBuf,
    key: Option<&Bound<'py, PyAny>>,
    workers: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let key = key.map(key_of).transpose()?;
    let (blocks, size) = py
        .detach(|| -> qeltrix::Result<(u64, u64)> {
            let (object, info) = read_info(&path)?;
            let size = info.original_size();
            match &key {
                None => {
                    let blocks = qeltrix::ops::verify_keyless(&object, &info, &|_| {})
                        .map_err(|e| e.in_file(&path))?;
                    Ok((blocks, size))
                }
                Some(key) => {
                    let c =
                        Arc::new(Container::from_info(object, info, &key.key).map_err(|e| e.in_file(&path))?);
                    c.unpack_to(&mut std::io::sink(), true, workers, &|_| {})
                        .map_err(|e| e.in_file(&path))?;
                    Ok((c.block_count(), size))
                }
            }
        })
        .map_err(to_py)?;
    let d = PyDict::new(py);
    d.set_item("path", path.display().to_string())?;
    d.set_item("blocks", blocks)?;
    d.set_item("size", size)?;
    d.set_item("keyless", key.is_none())?;
    Ok(d)
}

/// An open container: positioned reads of its plaintext (`qeltrix.Container` wraps it as a
/// file object).
#[pyclass(name = "_Container", module = "qeltrix", frozen)]
struct PyContainer {
    container: Container<Object>,
    location: PathBuf,
}

#[pymethods]
impl PyContainer {
    #[new]
    fn new(py: Python<'_>, location: PathBuf, key: &Bound<'_, PyAny>) -> PyResult<Self> {
        let key = key_of(key)?;
        let container = py.detach(|| open(&location, &key)).map_err(to_py)?;
        Ok(PyContainer { container, location })
    }

    /// Plaintext length.
    #[getter]
    fn size(&self) -> u64 {
        self.container.len()
    }

    /// Up to `length` plaintext bytes from `offset` (fewer only at the end).
    fn read_at<'py>(&self, py: Python<'py>, offset: i64, length: i64) -> PyResult<Bound<'py, PyBytes>> {
        let (offset, length) = non_negative(offset, length)?;
        let data = py
            .detach(|| self.container.seek_extract(offset, length))
            .map_err(|e| to_py(e.in_file(&self.location)))?;
        Ok(PyBytes::new(py, &data))
    }

    /// What `info()` says of this container.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        info_dict(py, &self.location, self.container.info())
    }
}

/// Packs what is written into a container on a binary file object, block by block.
#[pyclass(name = "_StreamPacker", module = "qeltrix", frozen)]
struct PyStreamPacker {
    packer: Mutex<Option<StreamPacker<PyWriter>>>,
    /// What the file object raised (its `PyWriter` holds the other handle).
    raised: Arc<Mutex<Raised>>,
}

impl PyStreamPacker {
    /// Runs `f` on the packer without the GIL; a Python exception its output raised wins.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut StreamPacker<PyWriter>) -> qeltrix::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut guard = self.packer.lock().unwrap_or_else(|p| p.into_inner());
            let packer = guard
                .as_mut()
                .ok_or_else(|| PyValueError::new_err("the StreamPacker is closed"))?;
            f(packer).map_err(|e| self.take_raised().unwrap_or_else(|| to_py(e)))
        })
    }

    fn take_raised(&self) -> Option<PyErr> {
        self.raised.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[pymethods]
impl PyStreamPacker {
    #[new]
    #[pyo3(signature = (fileobj, key, *, block_size=1<<20, cipher="aes-256-gcm", compress=None, workers=0))]
    fn new(
        py: Python<'_>,
        fileobj: Py<PyAny>,
        key: &Bound<'_, PyAny>,
        block_size: u64,
        cipher: &str,
        compress: Option<&Bound<'_, PyAny>>,
        workers: usize,
    ) -> PyResult<Self> {
        let (opts, recipients) = packing(key, block_size, cipher, compress, workers)?;
        let raised: Arc<Mutex<Raised>> = Arc::default();
        let out = PyWriter {
            file: fileobj,
            raised: Arc::clone(&raised),
        };
        let packer = py
            .detach(|| StreamPacker::new(out, &recipients, &opts))
            .map_err(to_py)?;
        Ok(PyStreamPacker {
            packer: Mutex::new(Some(packer)),
            raised,
        })
    }

    /// Packs `data`; returns its length.
    fn write(&self, py: Python<'_>, data: PyBackedBytes) -> PyResult<usize> {
        self.with(py, |p| {
            std::io::Write::write_all(p, &data).map_err(|e| Error::io("packing", e))?;
            Ok(data.len())
        })
    }

    /// Seals the partial block now and writes what is sealed (a stream that must reach its
    /// reader promptly).
    fn flush_block(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |p| p.flush_block())
    }

    /// Finishes the container (the last block, the footer) and flushes the file object; the
    /// packer is closed after.
    fn close(&self, py: Python<'_>) -> PyResult<PackResult> {
        let packer = self.packer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(packer) = packer else {
            return Err(PyValueError::new_err("the StreamPacker is closed"));
        };
        py.detach(|| match packer.finish() {
            Ok((mut out, summary)) => match std::io::Write::flush(&mut out) {
                Ok(()) => Ok(summary),
                Err(e) => Err(out
                    .take_raised()
                    .unwrap_or_else(|| to_py(Error::io("flushing the output", e)))),
            },
            Err(e) => Err(self
                .raised
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| to_py(e))),
        })
        .map(PackResult::from)
    }

    /// Drops the packer without finishing: the output is left without its footer (an
    /// incomplete container, which readers refuse).
    fn abort(&self, py: Python<'_>) {
        let packer = self.packer.lock().unwrap_or_else(|p| p.into_inner()).take();
        py.detach(|| drop(packer));
    }

    /// True once closed or aborted.
    #[getter]
    fn closed(&self) -> bool {
        self.packer.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }
}

impl Drop for PyStreamPacker {
    fn drop(&mut self) {
        // The packer's threads may call into Python (the output): drop it without the GIL.
        let packer = self.packer.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if packer.is_some() {
            Python::attach(|py| py.detach(|| drop(packer)));
        }
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<PyKey>()?;
    m.add_class::<PackResult>()?;
    m.add_class::<PyContainer>()?;
    m.add_class::<PyStreamPacker>()?;
    m.add_class::<servers::SeekServer>()?;
    m.add_class::<servers::GatewayServer>()?;
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(unpack, m)?)?;
    m.add_function(wrap_pyfunction!(seek_extract, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(keys::keygen, m)?)?;
    m.add_function(wrap_pyfunction!(keys::random_master_key, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
