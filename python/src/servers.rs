//! `serve()` and `gateway()`: the HTTP Range server and the TCP gateway, run in background
//! threads of this process until `stop()` (the Python context managers call it).

use crate::errors::to_py;
use crate::keys::{key_of, recipient_of};
use crate::pack_options;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use qeltrix::gateway::{Direction, GatewayConfig, GatewayStopper, Limits};
use qeltrix::serve::{BearerToken, ServeOptions};
use qeltrix::Error;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Mutex;
use std::thread::JoinHandle;

fn address(host: &str, port: u16) -> PyResult<SocketAddr> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| PyValueError::new_err(format!("{host}:{port}: {e}")))?
        .next()
        .ok_or_else(|| PyValueError::new_err(format!("{host}:{port} resolves to no address")))
}

/// Joins a server's thread, re-raising what ended it.
fn join(thread: Option<JoinHandle<qeltrix::Result<()>>>) -> qeltrix::Result<()> {
    match thread.map(JoinHandle::join) {
        None => Ok(()),
        Some(Ok(result)) => result,
        Some(Err(panic)) => Err(Error::Internal {
            what: format!("the server thread panicked: {}", qeltrix::panic_message(&*panic)),
            block: None,
        }),
    }
}

/// `qeltrix serve` in this process: a container or a vault folder over HTTP with Range
/// requests, on its own threads until `stop()`.
#[pyclass(name = "_SeekServer", module = "qeltrix", frozen)]
pub struct SeekServer {
    addr: SocketAddr,
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<qeltrix::Result<()>>>>,
}

#[pymethods]
impl SeekServer {
    #[new]
    #[pyo3(signature = (path, key, host="127.0.0.1", port=0, *, token=None, cache_size=256<<20, workers=0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        key: &Bound<'_, PyAny>,
        host: &str,
        port: u16,
        token: Option<String>,
        cache_size: usize,
        workers: usize,
    ) -> PyResult<Self> {
        let key = key_of(key)?;
        let addr = address(host, port)?;
        let token = token.map(|t| BearerToken::new(&t)).transpose().map_err(to_py)?;
        let opts = ServeOptions {
            cache_bytes: cache_size,
            workers,
            token,
            ..ServeOptions::default()
        };
        let server = py
            .detach(|| qeltrix::serve::SeekServer::bind(&path, addr, key.key, opts))
            .map_err(to_py)?;
        let addr = server.local_addr().map_err(to_py)?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("qeltrix-serve".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("qeltrix-serve")
                    .build()
                    .map_err(|e| Error::io("starting the async runtime", e))?;
                let result = runtime.block_on(server.run_until(async move {
                    let _ = rx.await;
                }));
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                result
            })
            .map_err(|e| to_py(Error::io("starting the server thread", e)))?;
        Ok(SeekServer {
            addr,
            shutdown: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The address served: `(host, port)`.
    #[getter]
    fn address(&self) -> (String, u16) {
        (self.addr.ip().to_string(), self.addr.port())
    }

    /// Stops accepting, lets responses in flight finish (a few seconds at most) and returns.
    /// Calling it again does nothing.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(tx) = self.shutdown.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        py.detach(|| join(thread)).map_err(to_py)
    }
}

impl Drop for SeekServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    }
}

/// `qeltrix gateway` in this process: each TCP connection's bytes sealed into a container (or a
/// container stream opened), reflected back or forwarded, on its own threads until `stop()`.
#[pyclass(name = "_GatewayServer", module = "qeltrix", frozen)]
pub struct GatewayServer {
    addr: SocketAddr,
    stopper: GatewayStopper,
    thread: Mutex<Option<JoinHandle<qeltrix::Result<()>>>>,
}

#[pymethods]
impl GatewayServer {
    #[new]
    #[pyo3(signature = (key, *, mode="encrypt", host="127.0.0.1", port=0, forward_to=None, block_size=1<<20, cipher="aes-256-gcm", compress="auto", workers=0, verify=true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        mode: &str,
        host: &str,
        port: u16,
        forward_to: Option<String>,
        block_size: u64,
        cipher: &str,
        compress: &str,
        workers: usize,
        verify: bool,
    ) -> PyResult<Self> {
        let key = key_of(key)?;
        let addr = address(host, port)?;
        let direction = match mode {
            "encrypt" => Direction::Encrypt {
                keys: vec![recipient_of(&key)?],
                pack: pack_options(block_size, cipher, compress, workers, &key)?,
                flush_after: None,
            },
            "decrypt" => Direction::Decrypt { key: key.key, verify },
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown mode {other:?}: \"encrypt\" or \"decrypt\""
                )))
            }
        };
        let config = GatewayConfig {
            direction,
            forward_to,
            forward_token: None,
            workers,
            limits: Limits::default(),
        };
        let server = py
            .detach(|| qeltrix::gateway::GatewayServer::bind(addr, config))
            .map_err(to_py)?;
        let addr = server
            .local_addr()
            .map_err(|e| to_py(Error::io("reading the gateway's address", e)))?;
        let stopper = server
            .stopper()
            .map_err(|e| to_py(Error::io("reading the gateway's address", e)))?;
        let thread = std::thread::Builder::new()
            .name("qeltrix-gateway".into())
            .spawn(move || server.run())
            .map_err(|e| to_py(Error::io("starting the gateway thread", e)))?;
        Ok(GatewayServer {
            addr,
            stopper,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The address listened on: `(host, port)`.
    #[getter]
    fn address(&self) -> (String, u16) {
        (self.addr.ip().to_string(), self.addr.port())
    }

    /// Stops accepting connections and returns (connections being served finish on their own
    /// threads). Calling it again does nothing.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if thread.is_some() {
            let stopper = self.stopper.clone();
            py.detach(|| {
                stopper.stop();
                join(thread)
            })
            .map_err(to_py)?;
        }
        Ok(())
    }
}

impl Drop for GatewayServer {
    fn drop(&mut self) {
        if self.thread.get_mut().unwrap_or_else(|p| p.into_inner()).is_some() {
            self.stopper.stop();
        }
    }
}
