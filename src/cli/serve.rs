//! `qeltrix serve PATH`: arguments and the thin glue to [`qeltrix::serve::SeekServer`].

use super::KeyArgs;
use anyhow::Result;
use qeltrix::serve::{BearerToken, SeekServer, ServeOptions, UploadOptions, DEFAULT_LISTEN};
use qeltrix::Error;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A container, or a vault folder whose containers are all served.
    pub path: PathBuf,
    /// Address to listen on, HOST:PORT [default: 127.0.0.1:7621, this machine only].
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["host", "port"])]
    pub listen: Option<String>,
    /// Host to listen on, with --port (another way to give --listen).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Port to listen on, with --host (0: any free port) [default: 7621].
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Decrypted-block cache, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub cache_size: usize,
    /// Decryption threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Require `Authorization: Bearer TOKEN`, TOKEN being the first line of this file.
    #[arg(long, value_name = "FILE", conflicts_with = "cap_root")]
    pub token_file: Option<PathBuf>,
    /// Require a capability token (`qeltrix cap issue`) signed by this root (a qeltrix-ed25519:
    /// string or a file holding one) that allows each request's path, method and time; it comes
    /// as `Authorization: Bearer TOKEN` or `?cap=TOKEN` (docs/CAPABILITIES.md).
    #[arg(long, value_name = "ROOT")]
    pub cap_root: Option<String>,
    /// This server's name, for tokens limited to some servers (`cap issue --audience NAME`).
    #[arg(long, value_name = "NAME", requires = "cap_root")]
    pub cap_audience: Option<String>,
    /// The signed revocation list (`qeltrix cap revoke`), a file or s3:// object: loaded at
    /// start, reloaded every --cap-reload seconds and on SIGHUP, published at /revocations.json.
    #[arg(long, value_name = "LIST", requires = "cap_root")]
    pub cap_revocations: Option<PathBuf>,
    /// Sign the vault's /index.json (each container's path, size, root and signer) with this
    /// Ed25519 signing key, so clients can check containers from any mirror against it.
    #[arg(long, value_name = "FILE")]
    pub index_key: Option<PathBuf>,
    /// Reload the revocation list every this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, requires = "cap_revocations")]
    pub cap_reload: u64,
    /// Close a connection on which no byte moved for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub idle_timeout: u64,
    /// On SIGTERM or Ctrl-C, give in-flight responses this many seconds to finish.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub shutdown_grace: u64,
    /// Serve at most this many connections at once; at the cap, a new one replaces the one
    /// idle the longest.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// A request head must arrive within this many seconds (and within --idle-timeout).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub header_timeout: u64,
    /// Decrypted blocks that all responses together may hold outside the cache, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub inflight_size: usize,
    /// Close a connection whose client takes a response more slowly than this many bytes per
    /// second over --min-rate-window (0: no minimum).
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub min_rate: u64,
    /// The window over which --min-rate is measured, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub min_rate_window: u64,
    /// Take containers packed elsewhere into the vault (POST /upload, PUT /chunks/ID,
    /// POST /commit; docs/UPLOAD.md). Needs --token-file, or --cap-root (then each upload needs
    /// a token allowing `upload` on its path). With no key source given, the server is
    /// upload-only: it asks for no key and refuses reads.
    #[arg(long)]
    pub accept_uploads: bool,
    /// Hold no key, even if QELTRIX_KEY_FILE or QELTRIX_PASSPHRASE is set: an upload-only
    /// server (needs --accept-uploads).
    #[arg(long, requires = "accept_uploads",
          conflicts_with_all = ["passphrase_file", "identity", "vault", "passphrase"])]
    pub no_key: bool,
    /// Bytes all staged upload chunks may hold together.
    #[arg(long, value_name = "BYTES", default_value_t = UploadOptions::default().quota_bytes)]
    pub upload_quota: u64,
    /// The largest upload chunk accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = UploadOptions::default().max_chunk_size,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_chunk_size: u64,
    /// The most chunks one POST /upload may ask about.
    #[arg(long, value_name = "N", default_value_t = UploadOptions::default().max_chunks_per_request,
          value_parser = parse_at_least_one)]
    pub max_chunks_per_request: usize,
    /// Remove staged upload chunks not committed within this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = UploadOptions::default().expiry.as_secs())]
    pub upload_expiry: u64,
}

fn parse_at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text:?}: expected a whole number, at least 1")),
    }
}

pub fn run(a: ServeArgs) -> Result<()> {
    let addr = listen_addr(&a)?;
    // --key-file may come from QELTRIX_KEY_FILE, which --no-key overrides; given as a flag, it
    // contradicts it.
    let key_file_from_env = std::env::var_os("QELTRIX_KEY_FILE").map(PathBuf::from) == a.keys.key_file;
    if a.no_key && !key_file_from_env {
        anyhow::bail!(Error::InvalidArgument(
            "--no-key and --key-file contradict each other: an upload-only server holds no key".into()
        ));
    }
    if a.accept_uploads && a.token_file.is_none() && a.cap_root.is_none() {
        anyhow::bail!(Error::InvalidArgument(
            "--accept-uploads needs --token-file or --cap-root: without a token anyone who can reach the server could fill the vault".into()
        ));
    }
    let token = a.token_file.as_deref().map(BearerToken::from_file).transpose()?;
    let has_token = token.is_some() || a.cap_root.is_some();
    let caps = match &a.cap_root {
        Some(root) => Some(qeltrix::capability::CapRoot::new(
            &super::keys::signer_public(root)?,
            a.cap_audience.clone(),
        )?),
        None => None,
    };
    let opts = ServeOptions {
        cache_bytes: a.cache_size.checked_mul(1 << 20).ok_or_else(|| {
            Error::InvalidArgument(format!("--cache-size {} MiB is too large", a.cache_size))
        })?,
        workers: a.workers,
        token,
        caps,
        index_key: a
            .index_key
            .as_deref()
            .map(super::keys::read_signer_key)
            .transpose()?,
        revocations: match &a.cap_revocations {
            Some(list) => {
                let (storage, path) = super::location::object(list)?;
                Some(qeltrix::serve::RevocationSource {
                    storage,
                    path,
                    every: Duration::from_secs(a.cap_reload.max(1)),
                })
            }
            None => None,
        },
        idle_timeout: Duration::from_secs(a.idle_timeout.max(1)),
        header_timeout: Duration::from_secs(a.header_timeout.clamp(1, a.idle_timeout.max(1))),
        shutdown_grace: Duration::from_secs(a.shutdown_grace),
        max_connections: a.max_connections.max(1),
        inflight_bytes: a.inflight_size.checked_mul(1 << 20).ok_or_else(|| {
            Error::InvalidArgument(format!("--inflight-size {} MiB is too large", a.inflight_size))
        })?,
        min_rate: a.min_rate,
        min_rate_window: Duration::from_secs(a.min_rate_window.max(1)),
        uploads: a.accept_uploads.then(|| UploadOptions {
            quota_bytes: a.upload_quota,
            max_chunk_size: a.max_chunk_size,
            max_chunks_per_request: a.max_chunks_per_request,
            expiry: Duration::from_secs(a.upload_expiry),
        }),
    };
    let remote = super::location::is_remote(&a.path);
    // The OS's own words ("No such file or directory"), not std's bare "entity not found".
    if let Err(e) = std::fs::metadata(&a.path)
        .map(drop)
        .or_else(|e| if remote { Ok(()) } else { Err(e) })
    {
        anyhow::bail!(Error::io("opening", e).in_file(&a.path));
    }
    if a.accept_uploads && (a.no_key || !a.keys.any_given()) {
        return run_uploads_only(&a, addr, opts, remote);
    }
    let key = a
        .keys
        .for_reading_at(Some(&a.path))
        .map_err(|e| super::mount::in_vault(e, a.keys.vault.as_deref().unwrap_or(&a.path)))?;
    qeltrix::harden::lock_key(&key);
    limit_malloc_arenas();
    let server = if remote {
        bind_remote(&a.path, addr, key, opts)?
    } else {
        SeekServer::bind(&a.path, addr, key, opts)?
    };
    let what = if server.is_vault() { "vault" } else { "container" };
    // Before serving: a key that opens nothing is an error now, not a 403 on every request.
    let check = server.check_key()?;
    super::mount::report_key_check(check, &a.path, "qeltrix::serve")?;
    server.run(|bound| {
        if !bound.ip().is_loopback() && !has_token {
            eprintln!(
                "warning: listening on {bound} without --token-file: anyone who can reach it can read the plaintext"
            );
        }
        eprintln!(
            "qeltrix serve: serving {what} {} on http://{bound}/ (Ctrl-C or SIGTERM to stop)",
            a.path.display()
        );
    })?;
    eprintln!("qeltrix serve: stopped");
    Ok(())
}

/// `serve VAULT --accept-uploads` with no key: nothing is asked for, nothing can be read.
fn run_uploads_only(a: &ServeArgs, addr: SocketAddr, opts: ServeOptions, remote: bool) -> Result<()> {
    let not_a_vault = || {
        Error::InvalidArgument(format!(
            "{}: uploads need a vault folder to store containers in",
            a.path.display()
        ))
    };
    let vault = if remote {
        if !a.path.to_str().is_some_and(|p| p.starts_with("s3://")) {
            anyhow::bail!(Error::InvalidArgument(format!(
                "{}: a web server location is read-only; uploads need a folder or s3://BUCKET/PREFIX",
                a.path.display()
            )));
        }
        // A prefix with nothing under it yet is a new vault (object stores have no folders);
        // only an object is refused.
        match super::location::remote_kind(&a.path)? {
            Some(false) => anyhow::bail!(not_a_vault()),
            _ => super::location::vault(&a.path)?.0,
        }
    } else {
        if !a.path.is_dir() {
            anyhow::bail!(not_a_vault());
        }
        qeltrix::vault::Vault::local(&a.path).map_err(|e| Error::io("opening", e).in_file(&a.path))?
    };
    limit_malloc_arenas();
    let server = SeekServer::bind_uploads_only(vault, addr, opts)?;
    server.run(|bound| {
        eprintln!(
            "qeltrix serve: taking uploads into {} on http://{bound}/ (no key: reads are refused; Ctrl-C or SIGTERM to stop)",
            a.path.display()
        );
    })?;
    eprintln!("qeltrix serve: stopped");
    Ok(())
}

/// Serves a remote location: a container (an object, or an http(s) URL) or a vault (a prefix
/// with containers under it).
fn bind_remote(
    path: &std::path::Path,
    addr: SocketAddr,
    key: qeltrix::Key,
    opts: ServeOptions,
) -> Result<SeekServer> {
    use super::location;
    Ok(match location::remote_kind(path)? {
        Some(false) => {
            let (vault, file) = location::container_in_vault(path)?;
            SeekServer::bind_vault(vault, Some(&file), addr, key, opts)?
        }
        Some(true) => {
            let (vault, _) = location::vault(path)?;
            SeekServer::bind_vault(vault, None, addr, key, opts)?
        }
        None => anyhow::bail!(
            Error::io("opening", std::io::Error::from(std::io::ErrorKind::NotFound)).in_file(path)
        ),
    })
}

/// glibc gives each thread that allocates its own malloc arena, and 1 MiB blocks allocated on
/// one thread (a decrypting worker) and freed on another (the cache evicting) leave every arena
/// holding freed memory it does not return: measured here, a full GET of a large container
/// peaked near twice the cache size. One arena keeps the peak at the cache size plus a few
/// blocks, with no measurable cost in throughput (a few large allocations per millisecond do not
/// contend). Process-wide, so it is set by the command, not by the library.
fn limit_malloc_arenas() {
    // Before the server's threads start.
    qeltrix::sys::process::limit_malloc_arenas(1);
}

fn listen_addr(a: &ServeArgs) -> Result<SocketAddr> {
    let text = match (&a.listen, &a.host, a.port) {
        (Some(l), _, _) => l.clone(),
        (None, None, None) => DEFAULT_LISTEN.to_string(),
        (None, host, port) => {
            let (default_host, default_port) = DEFAULT_LISTEN.rsplit_once(':').expect("host:port");
            let host = host.as_deref().unwrap_or(default_host);
            let port = port.map_or(default_port.to_string(), |p| p.to_string());
            if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        }
    };
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "cannot listen on {text:?}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}"
            ))
            .into()
        })
}
