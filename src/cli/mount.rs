//! `qeltrix mount` and `qeltrix umount`: the process side of a mount (signals, detaching, logging).
//! The filesystem itself is [`qeltrix::mount`].
//!
//! In the foreground the mount lives until Ctrl-C or SIGTERM, which unmount it (lazily, if files
//! are still open) and end the process. With `--daemon` the process forks; the parent waits until
//! the child's mount is in place (or has failed) and exits with that outcome, so that a script
//! can use the mount as soon as the command returns.

use super::KeyArgs;
use anyhow::{Context, Result};
use qeltrix::mount::{self, log, MountOptions, Mountable};
use qeltrix::sys::process::{self, Forked, StdStream};
use qeltrix::sys::signal::BlockedSignals;
use qeltrix::Error;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Folder of containers; every NAME.qltx under it (recursively) appears as NAME.
    #[arg(value_name = "VAULT")]
    pub vault_dir: PathBuf,
    /// Folder to mount the plaintext view on.
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Memory for decrypted blocks in MiB, shared by all files.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    pub cache_size: usize,
    /// Most blocks decrypted ahead of a sequential reader: the window starts at one block,
    /// doubles while reads stay sequential and starts over after a seek (default: 4, and 32
    /// for a remote vault, whose blocks come in parallel ranged GETs).
    #[arg(long, value_name = "BLOCKS")]
    pub readahead: Option<u64>,
    /// Let other users read the mount (without it the kernel refuses them). Non-root users need
    /// `user_allow_other` in /etc/fuse.conf.
    #[arg(long)]
    pub allow_other: bool,
    /// Go to the background once the mount is ready.
    #[arg(long)]
    pub daemon: bool,
    /// Append the mount's messages (unreadable containers, corrupt blocks) to this file. Without
    /// it they go to stderr, and are dropped with --daemon.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Threads answering reads (0: twice the cores, at least 4).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// The kernel's readahead window for this mount in KiB, set when run as root; 0 keeps the
    /// kernel's default (128 KiB).
    #[arg(long, value_name = "KIB", default_value_t = 4096)]
    pub kernel_readahead: u32,
    /// Seconds between full rescans of the vault: a remote vault is listed again this often
    /// (default 30); a local one is watched with inotify and rescanned as a safety net (default
    /// 60), or polled (default 0.5) where inotify is not available.
    #[arg(long, value_name = "SECS")]
    pub rescan_interval: Option<f64>,
    /// Mount read-write: files can be created, written, renamed and removed, each saved as a
    /// container when closed or synced (docs/MOUNT.md, "Read-write"). On an object store, each
    /// file is uploaded whole when closed. One read-write mount per vault.
    #[arg(long, short = 'w')]
    pub read_write: bool,
    /// With --read-write: also seal new files to this X25519 public key (repeatable). New files
    /// are always sealed to the mount's own key: the vault's keyring, a key file or identity.
    #[arg(long, value_name = "PUBKEY", requires = "read_write")]
    pub recipient: Vec<qeltrix::crypto::RecipientKey>,
    /// With --read-write: memory in MiB for the edits of files being written, shared by all of
    /// them; a file over its share is written out to a scratch container.
    #[arg(long, value_name = "MIB", default_value_t = 256, requires = "read_write")]
    pub write_memory: usize,
}

#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// The folder a `qeltrix mount` is mounted on.
    pub mountpoint: PathBuf,
    /// Detach now even if files are open; the mount goes away when they are closed.
    #[arg(long, short)]
    pub lazy: bool,
}

pub fn umount(a: UmountArgs) -> Result<()> {
    mount::unmount(&a.mountpoint, a.lazy)?;
    Ok(())
}

/// Readahead window limits in blocks: local, and remote (each block a ranged GET, sent in
/// parallel; the window grows only while reading stays sequential).
const LOCAL_READAHEAD: u64 = 4;
const REMOTE_READAHEAD: u64 = 32;
/// How often a remote vault is listed again (each listing is a LIST request per folder).
const REMOTE_RESCAN: std::time::Duration = std::time::Duration::from_secs(30);

pub fn mount(a: MountArgs) -> Result<()> {
    limit_malloc_arenas();
    let rescan = match a.rescan_interval.map(std::time::Duration::try_from_secs_f64) {
        None => None,
        Some(Ok(every)) if !every.is_zero() => Some(every),
        Some(_) => {
            let problem = "--rescan-interval takes a number of seconds above 0 and below 2^64";
            return Err(Error::InvalidArgument(problem.into()).into());
        }
    };
    // Everything that can be checked without the key first, so a typo costs no passphrase prompt.
    mount::check_fuse()?;
    mount::check_mountpoint(&a.mountpoint)?;
    if std::fs::read_dir(&a.mountpoint).is_ok_and(|mut entries| entries.next().is_some()) {
        eprintln!(
            "warning: {} is not empty: what is in it stays hidden while the vault is mounted there",
            a.mountpoint.display()
        );
    }
    // A remote vault is scanned once signals are blocked (below): its network threads must
    // inherit the mask, and a daemon must fork before it starts any.
    let remote = super::location::is_remote(&a.vault_dir);
    let vault = match (remote, a.read_write) {
        (true, _) => None,
        (false, false) => Some(Mountable::scan(&a.vault_dir)?),
        (false, true) => Some(Mountable::scan_writable(&a.vault_dir)?),
    };
    let key = a
        .keys
        .for_reading_at(Some(&a.vault_dir))
        .map_err(|e| in_vault(e, a.keys.vault.as_deref().unwrap_or(&a.vault_dir)))?;
    qeltrix::harden::lock_key(&key);
    let mut opts = MountOptions {
        cache_bytes: a.cache_size.saturating_mul(1 << 20),
        readahead_blocks: a
            .readahead
            .unwrap_or(if remote { REMOTE_READAHEAD } else { LOCAL_READAHEAD }),
        allow_other: a.allow_other,
        workers: a.workers,
        kernel_readahead_kib: a.kernel_readahead,
        ..MountOptions::default()
    };
    if a.read_write {
        opts.read_write = Some(mount::ReadWrite {
            recipients: sealing_keys(&key, &a.recipient, &a.vault_dir),
            memory: a.write_memory.saturating_mul(1 << 20),
            ..mount::ReadWrite::default()
        });
    }
    if let Some(every) = rescan.or(remote.then_some(REMOTE_RESCAN)) {
        (opts.rescan_interval, opts.safety_rescan_interval) = (every, every);
    }
    let log_file = match &a.log_file {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(p)
                .with_context(|| format!("{}: opening the log file", p.display()))?,
        ),
        None => None,
    };
    let vault_dir = a.vault_dir.clone();
    let read_write = a.read_write;
    let scan = move || match vault {
        Some(v) => Ok(v),
        None => {
            let (v, shown) = super::location::vault(&vault_dir)?;
            if read_write {
                Mountable::scan_vault_writable(v, shown)
            } else {
                Mountable::scan_vault(v, shown)
            }
        }
    };

    if a.daemon {
        // The check starts threads, and a process forks only while it has one: the child checks.
        let shown = &a.vault_dir;
        return daemonize(scan, shown, &a.mountpoint, key, &opts, log_file);
    }
    // Blocked before any thread starts (the key check starts some), so that every thread
    // inherits the mask and only the signal thread sees them.
    let mounted_at = spawn_signal_thread(block_signals());
    let vault = scan()?;
    let what = described(&vault);
    // The check's words on the terminal, like the daemon's, even with --log-file.
    let shown = &a.vault_dir;
    let mounted = vault.mount_with_key_check(&a.mountpoint, key, &opts, |check| {
        report_key_check(check, shown, "qeltrix::mount")
    })?;
    if let Some(f) = &log_file {
        redirect(f, StdStream::Stderr);
    }
    let mp = mounted.mountpoint().to_path_buf();
    eprintln!(
        "qeltrix: mounted {what} at {}; Ctrl-C or `qeltrix umount {}` unmounts it",
        mp.display(),
        mp.display()
    );
    *lock(&mounted_at) = Some(mp);
    mounted.run()?;
    Ok(())
}

/// What a read-write mount seals new files to: the vault's keyring key if the mount's key has
/// it, else the key's own recipient (key file, identity, passphrase), and every `--recipient`.
fn sealing_keys(
    key: &qeltrix::Key,
    extra: &[qeltrix::crypto::RecipientKey],
    vault: &Path,
) -> Vec<qeltrix::Recipient> {
    let simple: Vec<&qeltrix::Key> = match key {
        qeltrix::Key::FirstOf(keys) => keys.iter().collect(),
        k => vec![k],
    };
    let own = simple
        .iter()
        .find(|k| matches!(k, qeltrix::Key::Vault(_)))
        .or_else(|| simple.first())
        .and_then(|k| qeltrix::Recipient::try_from(*k).ok());
    if let Some(qeltrix::Recipient::Passphrase(_)) = &own {
        eprintln!(
            "warning: vault {} has no keyring: each new file is sealed to the passphrase, which \
             costs a PBKDF2 run per file; `qeltrix init` gives the vault a keyring whose slots cost nothing",
            vault.display()
        );
    }
    own.into_iter()
        .chain(extra.iter().cloned().map(qeltrix::Recipient::X25519))
        .collect()
}

/// How the mount's first line names the vault: where it is and how many containers it holds.
fn described(vault: &Mountable) -> String {
    let count = vault.container_count();
    let plural = if count == 1 { "" } else { "s" };
    format!("{} ({count} container{plural})", vault.root().display())
}

/// Forks; the child scans (if the vault was not scanned yet), mounts and serves; the parent
/// reports whether the mount came up.
fn daemonize(
    scan: impl FnOnce() -> qeltrix::Result<Mountable>,
    shown: &Path,
    mountpoint: &Path,
    key: qeltrix::Key,
    opts: &MountOptions,
    log_file: Option<std::fs::File>,
) -> Result<()> {
    // Close-on-exec, like every descriptor std opens.
    let (mut from_child, mut to_parent) = std::io::pipe().map_err(|e| Error::io("creating a pipe", e))?;
    // No thread has been started yet (scanning and reading the key are single-threaded), so
    // the child is a complete copy of this process (`fork` checks it).
    match process::fork().map_err(|e| Error::io("forking", e))? {
        Forked::Child => {
            drop(from_child);
            let _ = process::new_session();
            let mounted_at = spawn_signal_thread(block_signals());
            let mut what = String::new();
            let mounted = match scan().map_err(anyhow::Error::from).and_then(|vault| {
                what = described(&vault);
                vault.mount_with_key_check(mountpoint, key, opts, |check| {
                    report_key_check(check, shown, "qeltrix::mount")
                })
            }) {
                Ok(m) => m,
                Err(e) => {
                    let lib = e.chain().find_map(|c| c.downcast_ref::<Error>());
                    let code = super::exit_code(lib);
                    let _ = write!(to_parent, "{code} {}", super::error_text(&e));
                    std::process::exit(code.into());
                }
            };
            let mp = mounted.mountpoint().to_path_buf();
            let _ = write!(to_parent, "0 {} {what}", std::process::id());
            drop(to_parent);
            detach_stdio(log_file.as_ref());
            *lock(&mounted_at) = Some(mp);
            if let Err(e) = mounted.run() {
                log(&format!("{e}"));
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        Forked::Parent(child) => {
            drop(to_parent);
            let mut answer = String::new();
            let _ = from_child.read_to_string(&mut answer);
            let (code, rest) = answer
                .split_once(' ')
                .unwrap_or(("1", "the mount process ended early"));
            if code == "0" {
                let (pid, what) = rest.split_once(' ').unwrap_or((rest, "the vault"));
                eprintln!(
                    "qeltrix: mounted {what} at {} (pid {pid}); `qeltrix umount {}` unmounts it",
                    mountpoint.display(),
                    mountpoint.display()
                );
                return Ok(());
            }
            let _ = process::wait_child(child);
            eprintln!("qeltrix: error: {rest}");
            std::process::exit(code.parse().unwrap_or(1));
        }
    }
}

/// How many failures are logged one by one; the rest are counted.
const FAILURES_LOGGED: usize = 10;

/// What `mount` and `serve` say about a [`qeltrix::vault::KeyCheck`] of the vault at `root`,
/// logging under `target`. Each failed container's reason is logged once, here. The key opens
/// none of the containers: the error is "vault DIR: wrong key: the key opens 0 of N containers"
/// (exit 3). It opens some: a warning with the counts.
pub(super) fn report_key_check(check: qeltrix::vault::KeyCheck, root: &Path, target: &str) -> Result<()> {
    let (opened, total) = (check.opened, check.containers);
    // The check went through the front end's own registry, which remembers these failures: a
    // later read of such a container fails without logging its reason again. So the reasons
    // are logged here, once.
    for (_, failure) in check.failures.iter().take(FAILURES_LOGGED) {
        log_failure(target, &format!("cannot open {}", failure.error));
    }
    if check.failures.len() > FAILURES_LOGGED {
        let more = check.failures.len() - FAILURES_LOGGED;
        log_failure(target, &format!("… and {more} more containers that do not open"));
    }
    let check = check.require_any().map_err(|e| in_vault(e.into(), root))?;
    if !check.failures.is_empty() {
        eprintln!(
            "warning: vault {}: the key opens {opened} of {total} containers; the others will fail to read",
            root.display()
        );
    }
    Ok(())
}

fn log_failure(target: &str, msg: &str) {
    // The tracing macros take a constant target.
    match target {
        "qeltrix::serve" => tracing::warn!(target: "qeltrix::serve", "{msg}"),
        _ => tracing::warn!(target: "qeltrix::mount", "{msg}"),
    }
}

/// A wrong key at the start of `mount` or `serve`, worded the same whether the vault passphrase
/// did not open the keyring or the key opens none of the containers: "vault DIR: wrong key: …"
/// (exit 3). Other errors are left as they are.
pub(super) fn in_vault(e: anyhow::Error, root: &Path) -> anyhow::Error {
    // The keyring's own path is the vault's business: the vault is named instead. A container
    // served alone keeps its name.
    let in_keyring = |path: &Path| {
        path.components()
            .any(|c| c.as_os_str() == qeltrix::vault::keyring::VAULT_DIR)
    };
    let e = match e.downcast::<Error>() {
        Ok(Error::InFile { path, inner }) if inner.is_wrong_key() && in_keyring(&path) => {
            anyhow::Error::from(*inner)
        }
        Ok(lib) => anyhow::Error::from(lib),
        Err(e) => e,
    };
    let lib = e.chain().find_map(|c| c.downcast_ref::<Error>());
    // A vault passphrase that does not open the keyring names its vault already.
    let names_vault = lib.is_some_and(|l| {
        matches!(
            l.root(),
            Error::WrongKey {
                lock: qeltrix::Lock::Vault { .. },
                ..
            }
        )
    });
    if lib.is_some_and(Error::is_wrong_key) && !names_vault {
        e.context(format!("vault {}", root.display()))
    } else {
        e
    }
}

/// One malloc arena for the whole process. Decrypted blocks are allocated on one thread and freed
/// on another when the cache evicts them; with glibc's default of one arena per thread (up to 8
/// per core) each arena kept its own freed blocks, and the mount's RSS grew to about twice the
/// cache size (measured: 492 MiB with a 256 MiB cache; 264 MiB with one arena). Called before
/// any thread starts.
fn limit_malloc_arenas() {
    process::limit_malloc_arenas(1);
}

/// Points the standard stream `to` at `from`. Best effort: the streams stay as they were if it
/// fails.
fn redirect(from: impl std::os::fd::AsFd, to: StdStream) {
    let _ = process::redirect_stdio(from, to);
}

/// Points stdin and stdout at /dev/null and stderr at the log file (or /dev/null), and leaves
/// the current folder so the daemon does not keep it busy.
fn detach_stdio(log_file: Option<&std::fs::File>) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        redirect(&null, StdStream::Stdin);
        redirect(&null, StdStream::Stdout);
        redirect(log_file.unwrap_or(&null), StdStream::Stderr);
    }
    let _ = std::env::set_current_dir("/");
}

fn block_signals() -> Option<BlockedSignals> {
    match BlockedSignals::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]) {
        Ok(set) => Some(set),
        Err(e) => {
            log(&format!("cannot watch for Ctrl-C: {e}"));
            None
        }
    }
}

type MountedAt = Arc<Mutex<Option<PathBuf>>>;

fn lock(m: &MountedAt) -> std::sync::MutexGuard<'_, Option<PathBuf>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Handles Ctrl-C / SIGTERM / SIGHUP from before the mount exists (then it just ends the
/// process) until the end. Once mounted (the returned slot holds the mount point), the first
/// signal unmounts, lazily if files are open (the process ends when they are closed); a second
/// one ends the process at once.
fn spawn_signal_thread(set: Option<BlockedSignals>) -> MountedAt {
    let mounted_at: MountedAt = Arc::default();
    let Some(set) = set else {
        return mounted_at;
    };
    let slot = Arc::clone(&mounted_at);
    let run = move || {
        let mut first = true;
        loop {
            if set.wait().is_err() {
                return;
            }
            let Some(mountpoint) = lock(&slot).clone() else {
                log("interrupted before the mount was ready");
                std::process::exit(130);
            };
            if !first {
                log("second signal: exiting now; open files under the mount will fail");
                std::process::exit(130);
            }
            first = false;
            match mount::try_unmount(&mountpoint, false) {
                Ok(true) => {}
                Ok(false) => {
                    log(&format!(
                        "{} is busy: detaching it now; this process ends when the open files are closed \
                         (signal again to end it at once)",
                        mountpoint.display()
                    ));
                    if let Err(e) = mount::unmount(&mountpoint, true) {
                        log(&format!("{e}"));
                    }
                }
                Err(e) => log(&format!("{e}")),
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("qeltrix-signals".into())
        .spawn(run)
    {
        log(&format!("cannot watch for Ctrl-C: {e}"));
    }
    mounted_at
}
