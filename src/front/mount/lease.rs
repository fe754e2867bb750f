//! The lock of a read-write mount of an object store: a lease object that the mount renews.
//!
//! An object store has no file locks, and Garage no conditional write, so this is a lease, not a
//! lock: `VAULT/.qeltrix/mount.lock` names its holder and is written again every [`RENEW`]. A
//! mount finds a lease renewed less than [`EXPIRES`] ago and refuses to start; one it finds
//! older (its holder was killed) it takes over. Two mounts started within one round trip of each
//! other can both take it: the check and the write are two requests. The lease is removed when
//! the mount ends cleanly.

use crate::storage::{Storage, WriteOptions};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// How often the holder writes its lease again.
pub const RENEW: Duration = Duration::from_secs(20);
/// A lease not renewed for this long is taken over: its holder is gone.
pub const EXPIRES: Duration = Duration::from_secs(90);

/// A lease held on a vault; dropped, it stops renewing and removes the lease object.
pub struct Lease {
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl Lease {
    /// Takes the lease at `path` of `storage`, or fails naming its holder.
    pub fn take(storage: Arc<dyn Storage>, path: &Path) -> Result<Lease> {
        let shown = storage.display(path);
        match storage.stat_now(path) {
            Ok(held) => {
                let age = SystemTime::now()
                    .duration_since(held.modified)
                    .unwrap_or(Duration::ZERO);
                if age < EXPIRES {
                    let holder = holder_of(&*storage, path).unwrap_or_else(|| "another mount".into());
                    return Err(Error::InvalidArgument(format!(
                        "{shown}: the vault is mounted read-write by {holder} (its lease was renewed {}s \
                         ago): one writer per vault; a lease not renewed for {}s is taken over",
                        age.as_secs(),
                        EXPIRES.as_secs()
                    )));
                }
                tracing::warn!(
                    target: "qeltrix::mount",
                    "{shown}: taking over a lease not renewed for {}s (its mount was stopped without unmounting)",
                    age.as_secs()
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("reading the mount lease", e).in_file(&shown)),
        }
        let body = holder_text();
        write(&*storage, path, &body)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let path: PathBuf = path.to_path_buf();
        let renewer = std::thread::Builder::new()
            .name("qeltrix-lease".into())
            .spawn(move || loop {
                match stopped.recv_timeout(RENEW) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(e) = write(&*storage, &path, &body) {
                            tracing::warn!(target: "qeltrix::mount", "renewing the mount lease: {e}");
                        }
                    }
                    // Dropped: the mount is ending.
                    _ => {
                        if let Err(e) = storage.remove(&path) {
                            tracing::warn!(
                                target: "qeltrix::mount",
                                "{}: removing the mount lease: {e}",
                                storage.display(&path)
                            );
                        }
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("starting the lease renewer", e))?;
        Ok(Lease {
            stop: Some(stop),
            renewer: Some(renewer),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
    }
}

fn write(storage: &dyn Storage, path: &Path, body: &str) -> Result<()> {
    storage.put(path, body.as_bytes(), WriteOptions::overwrite(true))
}

/// Who holds a lease, for the refusal: the first line of the object, if it reads.
fn holder_of(storage: &dyn Storage, path: &Path) -> Option<String> {
    let object = storage.open(path).ok()?;
    let len = object.size().ok()?.min(512) as usize;
    let mut buf = vec![0u8; len];
    object.read_exact_at(&mut buf, 0).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().next()?.trim();
    (!line.is_empty() && line.chars().all(|c| !c.is_control())).then(|| line.to_string())
}

/// What the lease says of its holder: host and process.
fn holder_text() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let host = if host.is_empty() { "unknown host" } else { host };
    format!("qeltrix mount, pid {} on {host}\n", std::process::id())
}
