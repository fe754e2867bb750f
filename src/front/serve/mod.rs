//! `qeltrix serve`: an HTTP/1.1 server for one container or a whole vault of them, decrypting
//! only the blocks each request needs.
//!
//! The stack is hyper on tokio. The async workers only move bytes: opening containers (key
//! derivation), file-system lookups and block decryption run on blocking threads or on the block
//! cache's workers, and every block goes through the one process-wide [`BlockCache`], so
//! concurrent clients of one file decrypt each block once.
//!
//! ```no_run
//! use qeltrix::serve::{SeekServer, ServeOptions};
//! use qeltrix::{crypto::Passphrase, Key};
//! let key = Key::Passphrase(Passphrase::new("pw"));
//! let server = SeekServer::bind("vault/", "127.0.0.1:7621".parse().unwrap(), key, ServeOptions::default())?;
//! server.run(|addr| eprintln!("listening on http://{addr}/"))?; // until SIGTERM or Ctrl-C
//! # Ok::<(), qeltrix::Error>(())
//! ```
//!
//! Limits that keep one client from holding the server: request headers must arrive within
//! [`ServeOptions::header_timeout`] and fit in [`MAX_HEADER_BYTES`]; a connection on which no
//! byte moves either way for [`ServeOptions::idle_timeout`] is closed (a client that stops
//! reading a response, or an idle keep-alive), and so is one whose client takes a response more
//! slowly than [`ServeOptions::min_rate`]; at most [`ServeOptions::max_connections`] are served
//! at once, and at the cap a new connection replaces the one idle the longest. The blocks held
//! by all responses together (outside the cache) never exceed [`ServeOptions::inflight_bytes`],
//! so memory stays within the cache, that budget and a fixed cost per connection, however many
//! clients stall (docs/SERVE.md gives the bound).
//!
//! With [`ServeOptions::uploads`] the server also takes containers packed elsewhere, checked
//! keylessly before they are stored (`upload`, docs/UPLOAD.md); [`SeekServer::bind_uploads_only`]
//! binds such a server without any key.

mod auth;
mod body;
mod caps;
mod conditional;
mod conn;
mod containers;
mod handler;
mod paths;
mod range;
mod upload;

pub use auth::BearerToken;
pub use caps::RevocationSource;
pub use upload::UploadOptions;

use crate::container::cache::BlockCache;
use crate::{Error, Key, Result};
use conn::{Activity, Closed, MinRate, Table, Watched};
use containers::Containers;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use paths::Root;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// The default listening address (the seeds' port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7621";
/// Request line and headers together may not exceed this (hyper answers 431).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// At most this many request header fields.
pub const MAX_HEADERS: usize = 64;
/// Read-ahead for a streaming response, at most (and at most an eighth of the cache).
pub const READAHEAD_BYTES: u64 = 8 << 20;
/// hyper's per-connection buffer limit: its read buffer, and the bytes it queues for writing
/// before it asks the body for more. Part of the fixed cost of a connection.
pub const CONNECTION_BUFFER_BYTES: usize = 64 * 1024;
/// The fixed memory one open connection may hold outside the cache and the in-flight budget
/// (hyper's buffers, copied small slices, the multipart part headers, task state): an upper
/// estimate used in the documented bound.
pub const CONNECTION_FIXED_BYTES: usize = 256 * 1024;

/// How the server runs. `Default` gives the CLI's defaults.
#[derive(Debug)]
pub struct ServeOptions {
    /// Bytes of decrypted blocks kept in the cache.
    pub cache_bytes: usize,
    /// Decryption threads (0: one per core): the cache's read-ahead workers, and the bound on
    /// requests decrypting at once.
    pub workers: usize,
    /// Require `Authorization: Bearer` with this token (except for `/health`).
    pub token: Option<BearerToken>,
    /// Require a capability token signed by this root that allows each request's path and
    /// operation (`docs/CAPABILITIES.md`); excludes [`ServeOptions::token`].
    pub caps: Option<crate::capability::CapRoot>,
    /// The signed revocation list to load at start, reload periodically and on SIGHUP, and
    /// publish at `/revocations.json` (needs [`ServeOptions::caps`]).
    pub revocations: Option<RevocationSource>,
    /// Signs the vault's `/index.json` (the registry view) with this key.
    pub index_key: Option<crate::crypto::SignerKey>,
    /// Close a connection on which nothing moved for this long.
    pub idle_timeout: Duration,
    /// The whole request head must arrive within this time.
    pub header_timeout: Duration,
    /// On shutdown, how long in-flight responses may take to finish.
    pub shutdown_grace: Duration,
    /// Connections served at once; at the cap, a new one replaces the one idle the longest.
    pub max_connections: usize,
    /// Bytes of blocks that all response bodies together may hold outside the cache.
    pub inflight_bytes: usize,
    /// A client must take at least this many bytes per second (measured over
    /// [`ServeOptions::min_rate_window`]) while a response waits on it; 0 turns it off.
    pub min_rate: u64,
    /// The window over which [`ServeOptions::min_rate`] is measured.
    pub min_rate_window: Duration,
    /// Take containers packed elsewhere (`POST /upload`, `PUT /chunks/ID`, `POST /commit`;
    /// docs/UPLOAD.md): a vault only, and only with [`ServeOptions::token`] or
    /// [`ServeOptions::caps`] (each upload then needs a token allowing `upload` on its path).
    pub uploads: Option<UploadOptions>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            cache_bytes: 256 << 20,
            workers: 0,
            token: None,
            caps: None,
            revocations: None,
            index_key: None,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            max_connections: 256,
            inflight_bytes: 64 << 20,
            min_rate: 4096,
            min_rate_window: Duration::from_secs(20),
            uploads: None,
        }
    }
}

/// What every request handler shares.
pub(crate) struct State {
    root: Root,
    /// `None` on an upload-only server, which holds no key.
    containers: Option<Containers>,
    uploads: Option<Arc<upload::Uploads>>,
    /// Bounds concurrent request-driven decryptions.
    limiter: Arc<Semaphore>,
    token: Option<BearerToken>,
    caps: Option<crate::capability::CapRoot>,
    revocations: Option<RevocationSource>,
    index_key: Option<crate::crypto::SignerKey>,
    /// What `/index.json` read of each container, kept while the container is unchanged.
    index_cache: crate::registry::IndexCache,
    /// Wakes the revocation reloader (SIGHUP).
    reload: Arc<tokio::sync::Notify>,
    readahead_bytes: u64,
    /// The in-flight budget: one permit per byte of block held by a response body.
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    stats: Arc<HealthStats>,
    connections: Arc<Table>,
}

/// Counters shown by `/health` (with the token, when one is set).
#[derive(Default)]
pub(crate) struct HealthStats {
    /// Plaintext bytes of the blocks pulled for responses (each block a response needed, cached
    /// or decrypted): what the range amplification rule bounds.
    pub pulled_bytes: AtomicU64,
    /// Responses waiting for room in the in-flight budget.
    pub waiting: AtomicUsize,
}

impl State {
    fn readahead_blocks(&self, block_size: u64) -> u64 {
        (self.readahead_bytes / block_size.max(1)).min(64)
    }

    /// `/health`: only the status for a client without the token (when one is required), the
    /// details for everyone else.
    fn health_json(&self, details: bool) -> String {
        if !details {
            return "{\"status\":\"ok\"}\n".to_string();
        }
        let mut health = serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "serving": match (&self.root, &self.containers) {
                (_, None) => "uploads",
                (Root::Single { .. }, _) => "container",
                (Root::Vault { .. }, _) => "vault",
            },
            "connections": self.connections.len(),
            "inflight_bytes": self.budget_bytes - self.budget.available_permits(),
            "inflight_capacity": self.budget_bytes,
            "inflight_waiting": self.stats.waiting.load(Ordering::Relaxed),
            "pulled_bytes": self.stats.pulled_bytes.load(Ordering::Relaxed),
        });
        if let Some(containers) = &self.containers {
            let cache = containers.cache();
            health["open_containers"] = containers.open_count().into();
            health["cache_bytes"] = cache.bytes().into();
            health["cache_capacity"] = cache.capacity().into();
        }
        if let Some(uploads) = &self.uploads {
            health["uploads"] = uploads.health();
        }
        health.to_string() + "\n"
    }
}

/// An HTTP server over one container or a vault folder, bound and ready to run.
pub struct SeekServer {
    listener: std::net::TcpListener,
    state: Arc<State>,
    opts: ServeOptions,
}

impl SeekServer {
    /// Binds `addr` for `path` (a container or a folder). A single container is opened now, so
    /// a wrong key or a damaged file is an error here rather than on the first request.
    pub fn bind(path: impl AsRef<Path>, addr: SocketAddr, key: Key, opts: ServeOptions) -> Result<Self> {
        let path = path.as_ref();
        let root = Root::new(path).map_err(|e| Error::io("opening", e).in_file(path))?;
        SeekServer::bind_root(root, addr, Some(key), opts)
    }

    /// Binds `addr` for a vault on any storage (an object store, say): the whole vault, or with
    /// `file`, that one container of it. A single container is opened now, as with
    /// [`SeekServer::bind`].
    pub fn bind_vault(
        vault: crate::vault::Vault,
        file: Option<&Path>,
        addr: SocketAddr,
        key: Key,
        opts: ServeOptions,
    ) -> Result<Self> {
        let root = match file {
            None => Root::Vault { vault },
            Some(file) => {
                let name = file.file_name().unwrap_or(file.as_os_str());
                let name = crate::vault::naming::plaintext_name(name).unwrap_or(name);
                Root::Single {
                    vault,
                    name: name.to_string_lossy().into_owned(),
                    file: file.to_path_buf(),
                }
            }
        };
        SeekServer::bind_root(root, addr, Some(key), opts)
    }

    /// Binds `addr` for an upload-only server over `vault`: it holds no key, takes containers
    /// (`opts.uploads`, which must be set, as must `opts.token` or `opts.caps`) and refuses every
    /// read with 403.
    pub fn bind_uploads_only(
        vault: crate::vault::Vault,
        addr: SocketAddr,
        opts: ServeOptions,
    ) -> Result<Self> {
        if opts.uploads.is_none() {
            return Err(Error::InvalidArgument(
                "a server without a key serves nothing but uploads: turn them on".into(),
            ));
        }
        SeekServer::bind_root(Root::Vault { vault }, addr, None, opts)
    }

    fn bind_root(root: Root, addr: SocketAddr, key: Option<Key>, mut opts: ServeOptions) -> Result<Self> {
        let workers = match opts.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        if opts.token.is_some() && opts.caps.is_some() {
            return Err(Error::InvalidArgument(
                "either a bearer token (--token-file) or capability tokens (--cap-root), not both".into(),
            ));
        }
        if let Some(source) = &opts.revocations {
            let caps = opts.caps.as_ref().ok_or_else(|| {
                Error::InvalidArgument("a revocation list needs capability tokens (--cap-root)".into())
            })?;
            let sequence = caps
                .load_revocations(&source.read()?)
                .map_err(|e| e.in_file(source.display()))?;
            info!(target: "qeltrix::serve", "revocations: loaded sequence {sequence} from {}", source.display());
        }
        let uploads = match opts.uploads.take() {
            None => None,
            Some(_) if opts.token.is_none() && opts.caps.is_none() => {
                return Err(Error::InvalidArgument(
                    "uploads need a bearer token (--token-file) or capability tokens (--cap-root): \
                     anyone could fill the vault otherwise"
                        .into(),
                ))
            }
            Some(_) if matches!(root, Root::Single { .. }) => {
                return Err(Error::InvalidArgument(
                    "uploads need a vault folder to store containers in, not a single container".into(),
                ))
            }
            Some(u) => Some(upload::Uploads::start(Arc::clone(root.vault().storage()), u)?),
        };
        let containers = match key {
            Some(key) => {
                let cache = Arc::new(BlockCache::new(opts.cache_bytes, workers));
                let containers = Containers::new(root.vault(), key, cache);
                if let Root::Single { file, .. } = &root {
                    containers.preload(file)?;
                }
                Some(containers)
            }
            None => None,
        };
        // At least one permit, and no more than a semaphore can count.
        let budget_bytes = opts.inflight_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let listener =
            std::net::TcpListener::bind(addr).map_err(|e| Error::io(format!("listening on {addr}"), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("configuring the listener", e))?;
        let state = State {
            root,
            containers,
            uploads,
            limiter: Arc::new(Semaphore::new(workers)),
            token: opts.token.take(),
            caps: opts.caps.take(),
            revocations: opts.revocations.take(),
            index_key: opts.index_key.take(),
            index_cache: crate::registry::IndexCache::new(),
            reload: Arc::default(),
            readahead_bytes: READAHEAD_BYTES.min(opts.cache_bytes as u64 / 8),
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            stats: Arc::default(),
            connections: Arc::default(),
        };
        Ok(SeekServer {
            listener,
            state: Arc::new(state),
            opts,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("reading the listening address", e))
    }

    /// Tries the key on every container served, now, before the server runs: those it opens stay
    /// open for the first requests, and those it does not are remembered (see
    /// [`crate::vault::KeyCheck`]). Serving one container, that one was opened by
    /// [`SeekServer::bind`] already.
    pub fn check_key(&self) -> Result<crate::vault::KeyCheck> {
        match (&self.state.root, &self.state.containers) {
            (Root::Vault { .. }, Some(containers)) => containers.check_key(),
            (Root::Vault { .. }, None) => Ok(crate::vault::KeyCheck {
                containers: 0,
                opened: 0,
                failures: Vec::new(),
            }),
            (Root::Single { .. }, _) => Ok(crate::vault::KeyCheck {
                containers: 1,
                opened: 1,
                failures: Vec::new(),
            }),
        }
    }

    /// True when serving a folder rather than one container.
    pub fn is_vault(&self) -> bool {
        matches!(self.state.root, Root::Vault { .. })
    }

    /// Runs on its own tokio runtime until SIGTERM or Ctrl-C, then shuts down gracefully.
    /// `ready` is called once the signal handlers are in place and connections are accepted.
    pub fn run(self, ready: impl FnOnce(SocketAddr)) -> Result<()> {
        let addr = self.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("qeltrix-serve")
            .build()
            .map_err(|e| Error::io("starting the async runtime", e))?;
        let result = runtime.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate())
                .map_err(|e| Error::io("installing the SIGTERM handler", e))?;
            let mut int =
                signal(SignalKind::interrupt()).map_err(|e| Error::io("installing the SIGINT handler", e))?;
            // With a revocation list, SIGHUP reloads it now (as daemons reload their
            // configuration). Without one, SIGHUP keeps its default: a server started on a
            // terminal ends with the terminal.
            if self.state.revocations.is_some() {
                let mut hup = signal(SignalKind::hangup())
                    .map_err(|e| Error::io("installing the SIGHUP handler", e))?;
                let reload = Arc::clone(&self.state.reload);
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        reload.notify_one();
                    }
                });
            }
            ready(addr);
            self.run_until(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            })
            .await
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight responses finish
    /// for up to the grace period, and returns. Must run inside a tokio runtime.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .map_err(|e| Error::io("registering the listener", e))?;
        let graceful = GracefulShutdown::new();
        let table = Arc::clone(&self.state.connections);
        let max = self.opts.max_connections.max(1);
        let rate = MinRate {
            bytes_per_sec: self.opts.min_rate,
            window: self.opts.min_rate_window,
        };
        tokio::pin!(shutdown);
        let reloader = self
            .state
            .revocations
            .is_some()
            .then(|| tokio::spawn(caps::reload_periodically(Arc::clone(&self.state))));
        let sweeper = self
            .state
            .uploads
            .as_ref()
            .map(|uploads| tokio::spawn(Arc::clone(uploads).sweep_periodically()));
        loop {
            // Accept first, then make room: at the cap the longest-idle connection is shed, so a
            // flood of idle sockets cannot keep new clients waiting in the listen queue. Only
            // when every connection is answering a request does the new one wait.
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: say so, and back off a little
                        // instead of spinning on the same error.
                        warn!(target: "qeltrix::serve", "accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            tokio::select! {
                _ = table.make_room(max) => {}
                _ = &mut shutdown => break,
            }
            let _ = stream.set_nodelay(true);
            let activity = Arc::new(Activity::new());
            let entry = table.insert(Arc::clone(&activity));
            let io = TokioIo::new(Watched::new(stream, Arc::clone(&activity)));
            let state = Arc::clone(&self.state);
            let watch = Arc::clone(&activity);
            let service =
                service_fn(move |req| handler::handle(req, Arc::clone(&state), remote, Arc::clone(&watch)));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.opts.header_timeout)
                .max_header_size(MAX_HEADER_BYTES)
                .max_headers(MAX_HEADERS)
                .max_buf_size(CONNECTION_BUFFER_BYTES)
                .serve_connection(io, service);
            let conn = graceful.watch(conn);
            let idle = self.opts.idle_timeout;
            tokio::spawn(async move {
                tokio::select! {
                    result = conn => {
                        if let Err(e) = result {
                            if e.is_timeout() || e.is_parse() || e.is_parse_too_large() {
                                info!(target: "qeltrix::serve", %remote, "{remote}: connection closed: {e}");
                            }
                        }
                    }
                    closed = activity.watch(idle, rate) => match closed {
                        Closed::Idle => info!(
                            target: "qeltrix::serve",
                            %remote,
                            "{remote}: connection closed: nothing moved for {} s",
                            idle.as_secs_f64()
                        ),
                        Closed::TooSlow { bytes, window } => info!(
                            target: "qeltrix::serve",
                            %remote,
                            bytes,
                            "{remote}: connection closed: below the minimum rate ({bytes} bytes taken in {} s, {} B/s required)",
                            window.as_secs_f64(),
                            rate.bytes_per_sec
                        ),
                        Closed::Shed => info!(
                            target: "qeltrix::serve",
                            %remote,
                            "{remote}: connection closed: idle the longest at the connection cap ({max})"
                        ),
                    },
                }
                drop(entry);
            });
        }
        drop(listener);
        if let Some(sweeper) = sweeper {
            sweeper.abort();
        }
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        let grace = self.opts.shutdown_grace;
        info!(
            target: "qeltrix::serve",
            "shutting down (in-flight responses get {} s to finish)",
            grace.as_secs_f64()
        );
        if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
            warn!(target: "qeltrix::serve", "grace period over, closing the remaining connections");
        }
        Ok(())
    }
}
