//! `qeltrix watch INBOX --vault VAULT`: arguments and the glue to [`qeltrix::watch::Watch`]:
//! keys, the destination (a local vault, `s3://`, or a server's upload API), the state's place,
//! and the event lines (text on stderr through the log, or `--json` lines on stdout).

use super::{location, KeyArgs, PackingArgs};
use anyhow::{Context, Result};
use qeltrix::storage::{LocalStorage, Storage};
use qeltrix::token::Token;
use qeltrix::watch::{Destination, Event, OnDelete, Report, StateStore, UploadClient, Watch, WatchOptions};
use qeltrix::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDeleteArg {
    /// Leave the container (the watcher never destroys data unless told to).
    Keep,
    /// Remove the container.
    Remove,
    /// Move the container to VAULT/.qeltrix/trash/, at the same relative path.
    Trash,
}

#[derive(clap::Args, Debug)]
#[command(mut_arg("vault", |a| a
    .required(true)
    .value_name("VAULT")
    .help("Where the containers go: a folder, s3://BUCKET/PREFIX, or the URL of a `qeltrix serve \
           --accept-uploads` server. A folder's keyring (`qeltrix init`) adds a slot when its \
           passphrase is given")))]
#[command(
    after_help = "The vault (--vault) is a local folder, s3://BUCKET/PREFIX, or the URL of a \
    `qeltrix serve --accept-uploads` server.\n\nExamples:\n  \
    qeltrix watch ~/inbox --vault /srv/vault --recipient qeltrix-x25519:...\n  \
    qeltrix watch ~/inbox --vault s3://media/vault --recipient qeltrix-x25519:... --on-delete trash\n  \
    qeltrix watch ~/inbox --vault https://vault.example/ --token-file upload.token --recipient qeltrix-x25519:..."
)]
pub struct WatchArgs {
    /// The folder to watch; every regular file under it, at any depth, is packed.
    pub inbox: PathBuf,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub packing: PackingArgs,
    /// Quiet time after a file is closed (or renamed in) before it is packed, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub settle: u64,
    /// Pack a file that is never closed (a log held open) this many seconds after its first
    /// change, with what it holds then.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_wait: u64,
    /// Skip names matching this shell pattern (repeatable; matched against the name and the
    /// path under INBOX). Hidden names are always skipped. Without it: *.part, *.tmp, *.swp,
    /// .#*, *~.
    #[arg(long, value_name = "GLOB")]
    pub ignore: Vec<String>,
    /// On an update, keep the previous N containers as NAME.qltx.~1~, ~2~, ... (the highest
    /// number is the newest).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_versions: u32,
    /// What to do with a container when its file is deleted from INBOX.
    #[arg(long, value_enum, default_value = "keep")]
    pub on_delete: OnDeleteArg,
    /// Files packed at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub jobs: u64,
    /// Scan INBOX, pack what is new or changed, and exit (for cron and CI).
    #[arg(long)]
    pub once: bool,
    /// Where inotify cannot watch INBOX (the kernel's watch limit), rescan it this often, in
    /// seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_interval: u64,
    /// Print one JSON object per event on stdout.
    #[arg(long)]
    pub json: bool,
    /// Keep the state here instead of VAULT/.qeltrix/watch-state.json (the default for a
    /// server's URL is under $XDG_STATE_HOME/qeltrix/watch/).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// With a server's URL: present `Authorization: Bearer TOKEN`, TOKEN being the first line of
    /// this file.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Set from the global `-q`.
    #[arg(skip)]
    pub quiet: bool,
}

/// Where this user's watcher files live: `$XDG_STATE_HOME/qeltrix` or `~/.local/state/qeltrix`.
fn state_home() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("qeltrix"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            Error::InvalidArgument("neither XDG_STATE_HOME nor HOME is set: give --state FILE".into())
        })?;
    Ok(PathBuf::from(home).join(".local/state/qeltrix"))
}

fn is_url(p: &Path) -> bool {
    p.to_str()
        .is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"))
}

pub fn run(a: WatchArgs) -> Result<()> {
    let Some(vault) = a.keys.vault.clone() else {
        anyhow::bail!(Error::InvalidArgument(
            "give the destination: --vault DIR, --vault s3://BUCKET/PREFIX or --vault https://SERVER/".into()
        ));
    };
    let inbox = std::fs::canonicalize(&a.inbox)
        .with_context(|| format!("{}: opening the inbox", a.inbox.display()))?;
    if let Some(state) = &a.state {
        // The state (and a server's spool beside it) inside the inbox would be packed too.
        let parent = state
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if std::fs::canonicalize(parent).is_ok_and(|dir| dir.starts_with(&inbox)) {
            anyhow::bail!(Error::InvalidArgument(format!(
                "--state {}: must not be inside the inbox {}",
                state.display(),
                inbox.display()
            )));
        }
    }
    let (dest, state) = if is_url(&vault) {
        let url = vault.to_string_lossy().into_owned();
        if a.keep_versions > 0 || a.on_delete != OnDeleteArg::Keep {
            anyhow::bail!(Error::InvalidArgument(
                "a server's upload API stores containers only: --keep-versions and --on-delete \
                 remove|trash need a vault the watcher reaches directly (a folder or s3://)"
                    .into()
            ));
        }
        let token = a.token_file.as_deref().map(Token::bearer_from_file).transpose()?;
        let client = UploadClient::new(&url, token)?;
        let id = blake3::hash(format!("{url}\n{}", inbox.display()).as_bytes()).to_hex();
        let state_file = match &a.state {
            Some(f) => f.clone(),
            None => state_home()?.join("watch").join(format!("{}.json", &id[..16])),
        };
        let mut spool = state_file.clone().into_os_string();
        spool.push(".spool");
        let spool = PathBuf::from(spool);
        std::fs::create_dir_all(&spool)
            .with_context(|| format!("{}: creating the spool", spool.display()))?;
        // What a stopped watcher left in its spool (ciphertext only) is sent as it is if its
        // file has not changed since; the rest is cleared.
        qeltrix::watch::ingest::clean_spool(&spool, &inbox);
        (
            Destination::Server { client, spool },
            StateStore::local(&state_file),
        )
    } else {
        if a.token_file.is_some() {
            anyhow::bail!(Error::InvalidArgument(
                "--token-file is for a server's URL (--vault https://...)".into()
            ));
        }
        let storage: Arc<dyn Storage> = if location::is_remote(&vault) {
            let (v, _) = location::vault(&vault)?;
            Arc::clone(v.storage())
        } else {
            let dir = std::fs::canonicalize(&vault)
                .with_context(|| format!("{}: opening the vault (make the folder first)", vault.display()))?;
            if dir.starts_with(&inbox) || inbox.starts_with(&dir) {
                anyhow::bail!(Error::InvalidArgument(format!(
                    "the vault {} and the inbox {} must not contain each other",
                    dir.display(),
                    inbox.display()
                )));
            }
            Arc::new(LocalStorage::new(&dir)?)
        };
        let state = match &a.state {
            Some(f) => StateStore::local(f),
            None => StateStore::new(Arc::clone(&storage), qeltrix::watch::state::VAULT_STATE),
        };
        (Destination::Vault(storage), state)
    };
    // The key of the state's content hashes: beside a --state file, or this user's.
    let key_file = match &a.state {
        Some(f) => {
            let mut k = f.clone().into_os_string();
            k.push(".key");
            PathBuf::from(k)
        }
        None => state_home()?.join("watch.key"),
    };
    let hash_key = qeltrix::watch::state::hash_key(&key_file)?;
    let keys = a.keys.for_watching(&a.packing.recipients)?;
    super::keys::warn_kdf_cost_for(&keys, a.packing.kdf_iterations);
    let patterns: Vec<String> = if a.ignore.is_empty() {
        qeltrix::watch::DEFAULT_IGNORE
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        a.ignore.clone()
    };
    let ignore = patterns
        .iter()
        .map(|p| glob::Pattern::new(p).map_err(|e| Error::InvalidArgument(format!("--ignore {p}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = WatchOptions {
        settle: Duration::from_millis(a.settle),
        max_wait: Duration::from_secs(a.max_wait),
        ignore,
        keep_versions: a.keep_versions,
        on_delete: match a.on_delete {
            OnDeleteArg::Keep => OnDelete::Keep,
            OnDeleteArg::Remove => OnDelete::Remove,
            OnDeleteArg::Trash => OnDelete::Trash,
        },
        jobs: a.jobs as usize,
        once: a.once,
        pack: a.packing.options()?,
        poll: Duration::from_secs(a.poll_interval),
    };
    let watch = Watch::new(&inbox, dest, state, keys, hash_key, opts)?;
    let report = Lines { json: a.json };
    let stop = stop_on_signals()?;
    let summary = watch.run(&report, &stop)?;
    if stopped_by() != 0 {
        anyhow::bail!(super::Stopped(stopped_by()));
    }
    if a.once && summary.failed > 0 {
        anyhow::bail!(super::Failed {
            failed: summary.failed as usize,
            total: (summary.packed + summary.failed) as usize,
            items: "files",
            code: 1,
        });
    }
    Ok(())
}

/// SIGINT or SIGTERM: no new file is started, the files being packed are finished and the state
/// saved, then the exit code is 128 + the signal. A second one ends the process at once, and the
/// files being packed are abandoned (nothing partial appears: their outputs were never named).
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    qeltrix::atomic::caller_handles_stop_signals();
    let stop = Arc::new(AtomicBool::new(false));
    let by = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for signal in [SIGINT, SIGTERM] {
        // In this order: the second signal sees the flag the first one set, and the signal's
        // number is there before the loop can see the flag.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&stop))
            .context("handling signals")?;
        signal_hook::flag::register_usize(signal, Arc::clone(&by), signal as usize)
            .context("handling signals")?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("handling signals")?;
    }
    BY.set(by).ok();
    Ok(stop)
}

static BY: std::sync::OnceLock<Arc<std::sync::atomic::AtomicUsize>> = std::sync::OnceLock::new();

fn stopped_by() -> i32 {
    BY.get()
        .map_or(0, |b| b.load(std::sync::atomic::Ordering::SeqCst) as i32)
}

/// The event lines.
struct Lines {
    json: bool,
}

impl Report for Lines {
    fn event(&self, e: Event) {
        if self.json {
            let mut line = serde_json::json!({
                "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                "event": e.kind,
            });
            let fields = [
                ("path", e.path.clone().map(Into::into)),
                ("container", e.container.clone().map(Into::into)),
                ("size", e.size.map(Into::into)),
                ("stored", e.stored.map(Into::into)),
                ("ms", e.millis.map(Into::into)),
                ("message", e.message.clone().map(Into::into)),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    line[k] = v;
                }
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        let mut text = e.kind.to_string();
        if let Some(p) = &e.path {
            text.push_str(&format!(" {p}"));
        }
        if let Some(c) = &e.container {
            text.push_str(&format!(" -> {c}"));
        }
        if let (Some(size), Some(stored)) = (e.size, e.stored) {
            text.push_str(&format!(" ({size} bytes, {stored} stored"));
            if let Some(ms) = e.millis {
                text.push_str(&format!(", {ms} ms"));
            }
            text.push(')');
        }
        if let Some(m) = &e.message {
            text.push_str(&format!(": {m}"));
        }
        match e.kind {
            "failed" | "degraded" => tracing::warn!(target: "qeltrix::watch", "{text}"),
            "unchanged" => tracing::debug!(target: "qeltrix::watch", "{text}"),
            _ => tracing::info!(target: "qeltrix::watch", "{text}"),
        }
    }
}
