//! Where keys come from on the command line: key file, X25519 identity, vault keyring, passphrase
//! file, environment, prompt, and (discouraged, with a warning) the command line itself. Secrets
//! are never logged.

use anyhow::{bail, Context, Result};
use clap::Args;
use qeltrix::crypto::{IdentityKey, KdfLimits, Key, KeyFileKey, Passphrase, Recipient, RecipientKey};
use qeltrix::format::SlotKind;
use qeltrix::keyring;
use qeltrix::ContainerInfo;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use zeroize::Zeroizing;

pub const PASSPHRASE_ENV: &str = "QELTRIX_PASSPHRASE";

/// The passphrase taken out of the environment at start (see [`take_env_passphrase`]).
static ENV_PASSPHRASE: OnceLock<Option<Zeroizing<String>>> = OnceLock::new();

/// Moves `QELTRIX_PASSPHRASE` out of the environment into this process's memory: its bytes in the
/// original environment block (what `/proc/PID/environ` shows other processes of the same user)
/// are overwritten with zeros, and the variable is removed, so neither a daemon's environ nor a
/// child process ever sees it. Call first thing in `main`, before any thread starts.
pub fn take_env_passphrase() {
    let value = std::env::var(PASSPHRASE_ENV).ok().map(Zeroizing::new);
    if value.is_some() {
        // Single-threaded at this point (called before any thread starts), which the scrub
        // needs; if it were refused, the variable is at least removed.
        if qeltrix::sys::process::scrub_env_var(PASSPHRASE_ENV).is_err() {
            std::env::remove_var(PASSPHRASE_ENV);
        }
    }
    let _ = ENV_PASSPHRASE.set(value);
}

/// `QELTRIX_PASSPHRASE` as it was at start (or now, if [`take_env_passphrase`] never ran).
fn env_value() -> Option<Zeroizing<String>> {
    match ENV_PASSPHRASE.get() {
        Some(v) => v.clone(),
        None => std::env::var(PASSPHRASE_ENV).ok().map(Zeroizing::new),
    }
}

#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// Read the passphrase from this file (first line; a trailing newline is dropped).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Use a 32-byte key file (raw, or 64 hex digits), e.g. one made by `qeltrix keygen`.
    #[arg(long, value_name = "FILE", env = "QELTRIX_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Open recipient slots with this X25519 identity (from `qeltrix keygen --x25519`).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Unlock through this vault's keyring (found automatically for paths inside a vault).
    #[arg(long, value_name = "DIR")]
    pub vault: Option<PathBuf>,
    /// The passphrase itself. Visible to other users (ps, shell history): prefer the options above
    /// or the QELTRIX_PASSPHRASE environment variable.
    #[arg(long, value_name = "PASSPHRASE")]
    pub passphrase: Option<String>,
    /// Refuse key slots and keyrings asking for more PBKDF2 iterations than this: the count is
    /// read before anything is authenticated, so an edited or planted container could otherwise
    /// make opening it burn minutes of CPU. Raise it for containers you made with a higher cost.
    #[arg(long, value_name = "N", env = "QELTRIX_MAX_KDF_ITERATIONS",
          default_value_t = qeltrix::crypto::DEFAULT_MAX_KDF_ITERATIONS)]
    pub max_kdf_iterations: u32,
}

impl KeyArgs {
    /// True if any key source is given: a flag, the key file or passphrase in the environment.
    /// Without one, a command that can do without a key (an upload-only `serve`) asks for none.
    pub fn any_given(&self) -> bool {
        self.passphrase_file.is_some()
            || self.key_file.is_some()
            || self.identity.is_some()
            || self.vault.is_some()
            || self.passphrase.is_some()
            || env_value().is_some_and(|p| !p.is_empty())
    }

    /// The keys for a new container written to `output`: every key source given becomes a key
    /// slot. Inside an initialised vault (or with `--vault`), a keyring slot is made instead of a
    /// passphrase slot; with other keys given and a vault only found, not named, the vault
    /// passphrase is used if given or in the environment, and never asked for. With nothing
    /// given: the environment, then a prompt (asked twice).
    pub fn for_packing(
        &self,
        stdin_is_data: bool,
        output: Option<&Path>,
        recipients: &[RecipientKey],
    ) -> Result<Vec<Recipient>> {
        let mut keys: Vec<Recipient> = recipients.iter().cloned().map(Recipient::X25519).collect();
        if let Some(k) = self.key_file()? {
            keys.push(Recipient::try_from(k)?);
        }
        if let Some(k) = self.identity()? {
            keys.push(Recipient::try_from(k)?);
        }
        let vault = self
            .vault
            .clone()
            .or_else(|| output.and_then(keyring::find_vault));
        if let Some(vault) = vault {
            // A vault that was only found, when other keys were given, is not a reason to ask:
            // a write-only packer (recipients, a key file) must not need the vault passphrase.
            let must_ask = self.vault.is_some() || keys.is_empty();
            let pass = match self.explicit_passphrase()? {
                Some(p) => Some(p),
                None if must_ask => {
                    Some(self.ambient_passphrase(false, stdin_is_data, "Vault passphrase: ")?)
                }
                None => env_passphrase(),
            };
            match pass {
                Some(pass) => keys.push(Recipient::Vault(keyring::unlock(&vault, &pass)?)),
                None => eprintln!(
                    "note: {} is inside vault {}, but no vault passphrase was given, so it gets no \
                     keyring slot (add one later with `qeltrix rekey --add-keyring`)",
                    output.map_or(String::new(), |o| o.display().to_string()),
                    vault.display()
                ),
            }
        } else if let Some(p) = self.explicit_passphrase()? {
            keys.push(Recipient::Passphrase(p));
        } else if keys.is_empty() {
            keys.push(Recipient::Passphrase(self.ambient_passphrase(
                true,
                stdin_is_data,
                "Passphrase: ",
            )?));
        }
        Ok(keys)
    }

    /// The keys `watch` seals every container to, `--vault` being its destination. Recipients
    /// (and key files, identities) are enough alone: the usual watcher holds only a recipient and
    /// cannot decrypt what it stores. A local vault's keyring adds a slot when its passphrase is
    /// given, or asked for when nothing else was given.
    pub fn for_watching(&self, recipients: &[RecipientKey]) -> Result<Vec<Recipient>> {
        let mut keys: Vec<Recipient> = recipients.iter().cloned().map(Recipient::X25519).collect();
        if let Some(k) = self.key_file()? {
            keys.push(Recipient::try_from(k)?);
        }
        if let Some(k) = self.identity()? {
            keys.push(Recipient::try_from(k)?);
        }
        let keyring_vault = self.vault.as_ref().filter(|v| keyring::keyring_path(v).is_file());
        let explicit = self.explicit_passphrase()?;
        match keyring_vault {
            Some(vault) => {
                let pass = match explicit {
                    Some(p) => Some(p),
                    None if keys.is_empty() => {
                        Some(self.ambient_passphrase(false, false, "Vault passphrase: ")?)
                    }
                    None => env_passphrase(),
                };
                if let Some(pass) = pass {
                    keys.push(Recipient::Vault(keyring::unlock(vault, &pass)?));
                }
            }
            None => {
                if let Some(p) = explicit {
                    keys.push(Recipient::Passphrase(p));
                }
            }
        }
        if keys.is_empty() {
            anyhow::bail!(qeltrix::Error::InvalidArgument(
                "no key to seal the containers to: give --recipient (the watcher then cannot decrypt \
                 what it stores), --key-file, or a passphrase for a vault with a keyring \
                 (`qeltrix init VAULT`)"
                    .into()
            ));
        }
        Ok(keys)
    }

    /// The key to open containers with, without a vault unless `--vault` is given.
    pub fn for_reading(&self) -> Result<Key> {
        self.for_reading_at(None)
    }

    /// The key to open containers at or under `target` with. Key files and identities need no
    /// prompt; otherwise the passphrase (given, from the environment, or asked) unlocks the vault
    /// keyring if `target` is inside a vault, and is also tried as a container passphrase.
    ///
    /// When `target` is one container, its key slots (readable without a key) decide two things:
    /// a passphrase is not asked for when no slot could take it (the error names the option the
    /// container needs instead), and a vault passphrase that fails on a container with no
    /// passphrase slot of its own is reported as not opening the vault.
    pub fn for_reading_at(&self, target: Option<&Path>) -> Result<Key> {
        let mut keys = Vec::new();
        if let Some(k) = self.identity()? {
            keys.push(k);
        }
        if let Some(k) = self.key_file()? {
            keys.push(k);
        }
        let wants_passphrase =
            self.passphrase_file.is_some() || self.passphrase.is_some() || self.vault.is_some();
        if keys.is_empty() || wants_passphrase {
            let vault = self
                .vault
                .clone()
                .or_else(|| target.and_then(keyring::find_vault));
            // Read only when needed (before a prompt, after a failed vault passphrase); a vault
            // folder (mount, serve) has no slots of its own.
            let container = target.filter(|t| t.is_file());
            let slots = || container.map(slot_kinds).transpose();
            let prompt = if vault.is_some() {
                "Vault passphrase: "
            } else {
                "Passphrase: "
            };
            let pass = match self.explicit_passphrase()? {
                Some(p) => p,
                None => {
                    // Nothing given: the passphrase would be the only key.
                    let only_key = keys.is_empty() && env_value().is_none();
                    if let (true, Some(c), Some(present)) = (only_key, container, slots()?) {
                        check_askable(c, &present, vault.is_some())?;
                    }
                    self.ambient_passphrase(false, false, prompt)?
                }
            };
            // Named with --vault, or given as the vault folder itself (mount, serve): a wrong
            // vault passphrase is an error at once. A vault merely found above a container may
            // also hold containers with plain passphrase slots, so the passphrase is tried there
            // too, unless it was the only key given and this container has no passphrase slot
            // for it to open.
            let strict = self.vault.is_some() || target.is_some_and(|t| keyring::keyring_path(t).is_file());
            if let Some(v) = vault {
                match keyring::unlock(&v, &pass) {
                    Ok(vault_key) => keys.push(Key::Vault(vault_key)),
                    Err(e) if strict => return Err(in_container(e, container).into()),
                    Err(e)
                        if keys.is_empty()
                            && !slots()?.is_some_and(|p| p.contains(&SlotKind::Passphrase)) =>
                    {
                        return Err(in_container(e, container).into())
                    }
                    Err(_) => {}
                }
            }
            keys.push(Key::Passphrase(pass));
        }
        Ok(if keys.len() == 1 {
            keys.remove(0)
        } else {
            Key::FirstOf(keys)
        })
    }

    /// For a command that asks for something else before the key (rekey's new passphrase):
    /// refuses at once, as [`KeyArgs::for_reading_at`] would after that prompt, when no key is
    /// given and `container` has no slot the passphrase to be asked for could open.
    pub fn check_before_prompt(&self, container: &Path) -> Result<()> {
        let given = self.identity.is_some()
            || self.key_file.is_some()
            || self.passphrase_file.is_some()
            || self.passphrase.is_some()
            || env_value().is_some();
        if given || !container.is_file() {
            return Ok(());
        }
        let vault = self.vault.clone().or_else(|| keyring::find_vault(container));
        check_askable(container, &slot_kinds(container)?, vault.is_some())
    }

    fn key_file(&self) -> Result<Option<Key>> {
        let Some(path) = &self.key_file else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(
            std::fs::read(path).with_context(|| format!("{}: reading the key file", path.display()))?,
        );
        let key = KeyFileKey::parse(&bytes)
            .map_err(|e| qeltrix::Error::InvalidArgument(format!("{}: {e}", path.display())))?;
        Ok(Some(Key::KeyFile(key)))
    }

    fn identity(&self) -> Result<Option<Key>> {
        let Some(path) = &self.identity else {
            return Ok(None);
        };
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("{}: reading the identity file", path.display()))?,
        );
        let id = IdentityKey::parse(&text)
            .map_err(|e| qeltrix::Error::InvalidArgument(format!("{}: {e}", path.display())))?;
        Ok(Some(Key::Identity(id)))
    }

    /// A passphrase given explicitly: `--passphrase-file`, then `--passphrase` (with a warning).
    pub fn explicit_passphrase(&self) -> Result<Option<Passphrase>> {
        if let Some(path) = &self.passphrase_file {
            return Ok(Some(read_passphrase_file(path)?.with_limits(self.kdf_limits())));
        }
        if let Some(p) = &self.passphrase {
            eprintln!(
                "warning: --passphrase is visible to other users of this machine (ps, shell history); \
                 prefer --passphrase-file or {PASSPHRASE_ENV}"
            );
            return Ok(Some(
                passphrase(p.clone(), "--passphrase")?.with_limits(self.kdf_limits()),
            ));
        }
        Ok(None)
    }

    /// The passphrase from the environment, or asked on the terminal (twice when `confirm`).
    pub fn ambient_passphrase(&self, confirm: bool, stdin_is_data: bool, prompt: &str) -> Result<Passphrase> {
        if let Some(p) = env_value() {
            return Ok(passphrase(p.to_string(), PASSPHRASE_ENV)?.with_limits(self.kdf_limits()));
        }
        let how = format!("--passphrase-file or {PASSPHRASE_ENV} (or use --key-file or --identity)");
        Ok(prompt_passphrase(confirm, stdin_is_data, prompt, &how)?.with_limits(self.kdf_limits()))
    }

    /// The KDF work this reader allows per container.
    pub fn kdf_limits(&self) -> KdfLimits {
        KdfLimits {
            max_iterations: self.max_kdf_iterations,
            ..KdfLimits::default()
        }
    }
}

/// Warns on stderr when a new passphrase slot or keyring gets a KDF cost below the safe floor, or
/// above what readers accept without `--max-kdf-iterations`.
pub fn warn_kdf_cost(iterations: u32) {
    use qeltrix::crypto::{DEFAULT_MAX_KDF_ITERATIONS, KDF_ITERATIONS_FLOOR};
    if iterations < KDF_ITERATIONS_FLOOR {
        eprintln!(
            "warning: {iterations} PBKDF2 iterations make the passphrase cheap to guess; \
             use at least {KDF_ITERATIONS_FLOOR} (the default is {})",
            qeltrix::crypto::DEFAULT_KDF_ITERATIONS
        );
    } else if iterations > DEFAULT_MAX_KDF_ITERATIONS {
        eprintln!(
            "warning: readers refuse more than {DEFAULT_MAX_KDF_ITERATIONS} PBKDF2 iterations unless \
             given --max-kdf-iterations {iterations} (or QELTRIX_MAX_KDF_ITERATIONS)"
        );
    }
}

/// Warns about the KDF cost if `keys` make a passphrase slot.
pub fn warn_kdf_cost_for(keys: &[Recipient], iterations: u32) {
    if keys.iter().any(|k| matches!(k, Recipient::Passphrase(_))) {
        warn_kdf_cost(iterations);
    }
}

/// The passphrase in the environment, if set and not empty.
pub fn env_passphrase() -> Option<Passphrase> {
    env_value()
        .filter(|p| !p.is_empty())
        .map(|p| Passphrase::new(p.to_string()))
}

/// Reads a passphrase file's first line.
pub fn read_passphrase_file(path: &Path) -> Result<Passphrase> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("{}: reading the passphrase file", path.display()))?,
    );
    let line = text.lines().next().unwrap_or("");
    passphrase(line.to_string(), &path.display().to_string())
}

/// Asks for a passphrase on the controlling terminal, `/dev/tty` (twice when `confirm`), as age
/// and gpg do: stdin may carry the data (`cat f | qeltrix pack - c.qltx`) or be redirected, and
/// the prompt still reaches the person at the terminal. Without a controlling terminal (a
/// service, `setsid`, a cron job), the error names what was wanted and `how` to give it instead;
/// `stdin_is_data` only adds to its wording.
pub fn prompt_passphrase(confirm: bool, stdin_is_data: bool, prompt: &str, how: &str) -> Result<Passphrase> {
    if !has_terminal() {
        bail!(qeltrix::Error::InvalidArgument(format!(
            "{} needed and there is no terminal to ask on{}: give it with {how}",
            prompt.trim_end_matches([':', ' ']),
            if stdin_is_data { " (stdin is the data)" } else { "" }
        )));
    }
    let first = Zeroizing::new(rpassword::prompt_password(prompt).context("reading the passphrase")?);
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("Again: ").context("reading the passphrase")?);
        if *first != *again {
            bail!(qeltrix::Error::InvalidArgument(
                "the two passphrases differ".into()
            ));
        }
    }
    passphrase(first.to_string(), "the prompt")
}

/// Whether this process has a controlling terminal to prompt on: `/dev/tty` opens for reading and
/// writing (without one, the open fails with ENXIO). rpassword prompts and reads there.
fn has_terminal() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// The kinds of `container`'s active key slots, read without a key.
fn slot_kinds(container: &Path) -> qeltrix::Result<Vec<SlotKind>> {
    let object = super::commands::open_object(container)?;
    let info = ContainerInfo::read(&object).map_err(|e| e.in_file(container))?;
    Ok(info.slots.slots.iter().map(|s| s.kind).collect())
}

/// Refuses to ask for a passphrase that no slot of the container could take (`in_vault`: a vault
/// was found or named, so a keyring slot takes the vault passphrase): the error says up front
/// which option the container needs. No key was given, so this is a usage error, not a wrong key.
fn check_askable(container: &Path, present: &[SlotKind], in_vault: bool) -> Result<()> {
    let askable =
        present.contains(&SlotKind::Passphrase) || (in_vault && present.contains(&SlotKind::Keyring));
    match options_for(present) {
        Some(options) if !askable => bail!(qeltrix::Error::InvalidArgument(format!(
            "{} has no passphrase slot: it needs {options} (its slots: {})",
            container.display(),
            kind_names(present)
        ))),
        _ => Ok(()),
    }
}

/// The options that give a key for the slot kinds `present`, as advice ("--key-file or
/// --identity"); `None` when there are none.
pub(super) fn options_for(present: &[SlotKind]) -> Option<String> {
    let mut options: Vec<&str> = Vec::new();
    for kind in present {
        let option = match kind {
            SlotKind::Passphrase => "--passphrase-file",
            SlotKind::KeyFile => "--key-file",
            SlotKind::Recipient => "--identity",
            SlotKind::Keyring => "--vault",
        };
        if !options.contains(&option) {
            options.push(option);
        }
    }
    (!options.is_empty()).then(|| options.join(" or "))
}

fn kind_names(kinds: &[SlotKind]) -> String {
    kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

/// Names the container a vault failure happened on, when there is one (a vault folder itself
/// is named by the error).
fn in_container(e: qeltrix::Error, container: Option<&Path>) -> qeltrix::Error {
    match container {
        Some(c) => e.in_file(c),
        None => e,
    }
}

fn passphrase(p: String, from: &str) -> Result<Passphrase> {
    if p.is_empty() {
        bail!(qeltrix::Error::InvalidArgument(format!(
            "empty passphrase from {from}"
        )));
    }
    Ok(Passphrase::new(p))
}

/// The Ed25519 signing key in the file `path` (from `qeltrix keygen --ed25519`).
pub fn read_signer_key(path: &Path) -> Result<qeltrix::crypto::SignerKey> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("{}: reading the signing key file", path.display()))?,
    );
    qeltrix::crypto::SignerKey::parse(&text)
        .map_err(|e| qeltrix::Error::InvalidArgument(format!("{}: {e}", path.display())).into())
}

/// The signer named by `arg`: a `qeltrix-ed25519:` string, or a file holding one (a signing key
/// file names its public key in a comment; a `.pub` file holds only the string).
pub fn signer_public(arg: &str) -> Result<qeltrix::crypto::SignerPublic> {
    use qeltrix::crypto::SignerPublic;
    if let Ok(public) = arg.parse::<SignerPublic>() {
        return Ok(public);
    }
    let path = Path::new(arg);
    if arg.starts_with("qeltrix-") || !path.is_file() {
        bail!(qeltrix::Error::InvalidArgument(format!(
            "--signer {arg:?}: neither a signer string (qeltrix-ed25519: and 64 hex digits) nor a \
             file holding one"
        )));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("{}: reading the signer", path.display()))?,
    );
    if let Ok(key) = qeltrix::crypto::SignerKey::parse(&text) {
        return Ok(key.public());
    }
    text.split_whitespace()
        .find_map(|word| word.parse::<SignerPublic>().ok())
        .ok_or_else(|| {
            qeltrix::Error::InvalidArgument(format!(
                "{}: holds no signer string (qeltrix-ed25519: and 64 hex digits)",
                path.display()
            ))
            .into()
        })
}
