//! Key management commands: `init`, `passwd`, `rekey`, `reencrypt`.

use super::keys::{prompt_passphrase, read_passphrase_file, KeyArgs};
use super::progress::print_pack_summary;
use super::{CipherArg, OutputFlag};
use anyhow::{Context, Result};
use qeltrix::crypto::{Key, KeyFileKey, Recipient, RecipientKey, SystemEntropy, DEFAULT_KDF_ITERATIONS};
use qeltrix::format::{CipherId, SlotKind};
use qeltrix::keyring;
use qeltrix::rekey::SlotChange;
use qeltrix::writer::PackOptions;
use qeltrix::{ContainerInfo, Error};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// The folder to make a vault (created if missing).
    #[arg(value_name = "VAULT")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// PBKDF2-HMAC-SHA256 iterations for the vault passphrase.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KDF_ITERATIONS)]
    pub kdf_iterations: u32,
}

#[derive(clap::Args, Debug)]
pub struct PasswdArgs {
    /// The vault whose passphrase to change.
    #[arg(value_name = "VAULT")]
    pub dir: PathBuf,
    /// The current passphrase comes from the usual key options (or a prompt).
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Read the new passphrase from this file (default: ask twice).
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// PBKDF2-HMAC-SHA256 iterations for the new passphrase.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KDF_ITERATIONS)]
    pub kdf_iterations: u32,
}

#[derive(clap::Args, Debug)]
pub struct RekeyArgs {
    /// The container whose key slots to list or change.
    pub container: PathBuf,
    /// The key that opens the container now comes from the usual key options.
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Only list the slots (needs no key).
    #[arg(long)]
    pub list: bool,
    /// Add a passphrase slot (the new passphrase from --new-passphrase-file or a prompt).
    #[arg(long)]
    pub add_passphrase: bool,
    /// Add a slot for this key file.
    #[arg(long, value_name = "FILE")]
    pub add_key_file: Option<PathBuf>,
    /// Add a slot for this X25519 recipient.
    #[arg(long, value_name = "RECIPIENT")]
    pub add_recipient: Vec<RecipientKey>,
    /// Add a keyring slot for this vault (unlocked with --new-passphrase-file or a prompt).
    #[arg(long, value_name = "VAULT")]
    pub add_keyring: Option<PathBuf>,
    /// Remove the slot with this number (see --list). Never the last one.
    #[arg(long, value_name = "N")]
    pub remove_slot: Vec<usize>,
    /// Rewrite both slot areas with the slots in force, clearing any slot an interrupted rekey
    /// left in the inactive area (every rekey does this too).
    #[arg(long)]
    pub scrub: bool,
    /// Read the passphrase for --add-passphrase from this file (default: ask twice).
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// PBKDF2-HMAC-SHA256 iterations for an added passphrase slot.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KDF_ITERATIONS)]
    pub kdf_iterations: u32,
    /// Print the slots (with --list, or after the change) as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ReencryptArgs {
    /// The container to copy under a new data key.
    pub input: PathBuf,
    /// The new container, or `-` for stdout (a stream).
    #[arg(required_unless_present = "output_flag")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub output_flag: OutputFlag,
    /// Opens the input, and gets a slot in the output unless --new-key-file or
    /// --new-passphrase-file name other keys.
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Key file for the new container.
    #[arg(long, value_name = "FILE")]
    pub new_key_file: Option<PathBuf>,
    /// Passphrase file for the new container.
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Cipher for the new container (default: the input's).
    #[arg(long, value_enum)]
    pub cipher: Option<CipherArg>,
    /// PBKDF2-HMAC-SHA256 iterations for the new passphrase slot.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KDF_ITERATIONS)]
    pub kdf_iterations: u32,
    /// Format of the new container: 2 (the default: a version 1 input is upgraded, keeping
    /// nothing of the old format), or 1 for readers of the original format (deflate only).
    #[arg(long, value_name = "VERSION", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=2))]
    pub format: u16,
    /// Overwrite OUTPUT if it exists.
    #[arg(long, short)]
    pub force: bool,
    /// Set from the global `-q`.
    #[arg(skip)]
    pub quiet: bool,
}

pub fn init(a: InitArgs) -> Result<()> {
    let pass = match a.keys.explicit_passphrase()? {
        Some(p) => p,
        None => match super::keys::env_passphrase() {
            Some(p) => p,
            None => prompt_passphrase(
                true,
                false,
                "New vault passphrase: ",
                &format!("--passphrase-file or {}", super::PASSPHRASE_ENV),
            )?,
        },
    };
    super::keys::warn_kdf_cost(a.kdf_iterations);
    keyring::init(&a.dir, &pass, a.kdf_iterations, &SystemEntropy)?;
    eprintln!(
        "Initialised vault {}: containers packed into it get a keyring slot, and one passphrase opens them all.",
        a.dir.display()
    );
    Ok(())
}

fn new_passphrase(file: &Option<PathBuf>, prompt: &str) -> Result<qeltrix::crypto::Passphrase> {
    match file {
        Some(f) => read_passphrase_file(f),
        None => prompt_passphrase(true, false, prompt, "--new-passphrase-file"),
    }
}

pub fn passwd(a: PasswdArgs) -> Result<()> {
    let old = match a.keys.explicit_passphrase()? {
        Some(p) => p,
        None => a
            .keys
            .ambient_passphrase(false, false, "Current vault passphrase: ")?,
    };
    let new = new_passphrase(&a.new_passphrase_file, "New vault passphrase: ")?;
    super::keys::warn_kdf_cost(a.kdf_iterations);
    let started = Instant::now();
    keyring::change_passphrase(&a.dir, &old, &new, a.kdf_iterations, &SystemEntropy)?;
    eprintln!(
        "Changed the passphrase of vault {} in {:.2} s; no container was rewritten.",
        a.dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn list_slots(path: &Path, json: bool) -> Result<()> {
    let object = super::commands::open_object(path)?;
    let info = ContainerInfo::read(&object).map_err(|e| e.in_file(path))?;
    if json {
        let doc = serde_json::json!({
            "file": path.display().to_string(),
            "key_slot_area_sequence": info.slots.sequence,
            "stale_key_slot_area": info.header.has_stale_slot_area(),
            "key_slots": super::commands::slots_json(&info),
        });
        outln!("{doc}");
        return Ok(());
    }
    outln!(
        "{}: key-slot area sequence {}",
        path.display(),
        info.slots.sequence
    );
    if info.header.has_stale_slot_area() {
        outln!(
            "  warning: the inactive slot area still holds older slots (an interrupted rekey); \
             `qeltrix rekey --scrub` clears them"
        );
    }
    for (i, s) in info.slots.slots.iter().enumerate() {
        match s.kind {
            SlotKind::Passphrase => {
                outln!("  #{i} passphrase (PBKDF2-HMAC-SHA256, {} iterations)", s.param)
            }
            k => outln!("  #{i} {}", k.name()),
        }
    }
    Ok(())
}

pub fn rekey(a: RekeyArgs) -> Result<()> {
    if a.list {
        return list_slots(&a.container, a.json);
    }
    a.keys.check_before_prompt(&a.container)?;
    let mut changes = Vec::new();
    if a.add_passphrase {
        let key = Recipient::Passphrase(new_passphrase(&a.new_passphrase_file, "New passphrase: ")?);
        changes.push(SlotChange::Add {
            key,
            iterations: a.kdf_iterations,
        });
        super::keys::warn_kdf_cost(a.kdf_iterations);
    }
    if let Some(f) = &a.add_key_file {
        let bytes =
            zeroize::Zeroizing::new(std::fs::read(f).with_context(|| format!("{}: reading", f.display()))?);
        let key =
            KeyFileKey::parse(&bytes).map_err(|e| Error::InvalidArgument(format!("{}: {e}", f.display())))?;
        changes.push(SlotChange::Add {
            key: Recipient::KeyFile(key),
            iterations: 0,
        });
    }
    for r in &a.add_recipient {
        changes.push(SlotChange::Add {
            key: Recipient::X25519(r.clone()),
            iterations: 0,
        });
    }
    if let Some(v) = &a.add_keyring {
        let pass = new_passphrase(&a.new_passphrase_file, "Vault passphrase: ")?;
        changes.push(SlotChange::Add {
            key: Recipient::Vault(keyring::unlock(v, &pass)?),
            iterations: 0,
        });
    }
    // Remove from the highest number down, so earlier removals do not renumber later ones.
    let mut removals = a.remove_slot.clone();
    removals.sort_unstable_by(|x, y| y.cmp(x));
    removals.dedup();
    changes.extend(removals.into_iter().map(SlotChange::Remove));
    if changes.is_empty() && !a.scrub {
        anyhow::bail!(Error::InvalidArgument(
            "nothing to do: give --list, --add-passphrase, --add-key-file, --add-recipient, --add-keyring, --remove-slot or --scrub"
                .into()
        ));
    }
    let key = a.keys.for_reading_at(Some(&a.container))?;
    if super::location::is_remote(&a.container) {
        // An object store: the object is rewritten whole with the new slots (docs/REMOTE.md).
        let (storage, path) = super::location::object(&a.container)?;
        qeltrix::rekey::rekey_in(&*storage, &path, &key, &changes, &SystemEntropy)?;
    } else {
        qeltrix::rekey::rekey(&a.container, &key, &changes, &SystemEntropy)?;
    }
    list_slots(&a.container, a.json)
}

pub fn reencrypt(mut a: ReencryptArgs) -> Result<()> {
    let Some(output) = a.output_flag.or(a.output.take()) else {
        anyhow::bail!(Error::InvalidArgument("reencrypt needs an OUTPUT".into()));
    };
    let to_stdout = super::commands::is_dash(&output);
    if to_stdout && std::io::stdout().is_terminal() {
        anyhow::bail!(Error::InvalidArgument(
            "refusing to write a container to a terminal".into()
        ));
    }
    let object = super::commands::open_object(&a.input)?;
    let info = ContainerInfo::read(&object).map_err(|e| e.in_file(&a.input))?;
    let header = info.header.clone();
    let open_key = a.keys.for_reading_at(Some(&a.input))?;
    let mut new_keys = Vec::new();
    if let Some(f) = &a.new_key_file {
        let bytes =
            zeroize::Zeroizing::new(std::fs::read(f).with_context(|| format!("{}: reading", f.display()))?);
        let key =
            KeyFileKey::parse(&bytes).map_err(|e| Error::InvalidArgument(format!("{}: {e}", f.display())))?;
        new_keys.push(Recipient::KeyFile(key));
    }
    if let Some(f) = &a.new_passphrase_file {
        new_keys.push(Recipient::Passphrase(read_passphrase_file(f)?));
    }
    if new_keys.is_empty() {
        // The keys that opened the input. A vault key gives a keyring slot again, and then the
        // vault passphrase (also tried as a container passphrase) does not get a slot of its own.
        let alternatives = open_key.alternatives();
        let in_vault = alternatives.iter().any(|k| matches!(k, Key::Vault(_)));
        new_keys = alternatives
            .into_iter()
            .filter(|k| !(in_vault && matches!(k, Key::Passphrase(_))))
            .map(Recipient::try_from)
            .collect::<qeltrix::Result<_>>()?;
    }
    let format = super::format_version(a.format);
    let (compress, codec) = super::CompressArg::Auto.mode(format)?;
    let opts = PackOptions {
        cipher: match a.cipher {
            Some(CipherArg::Aes) => CipherId::Aes256Gcm,
            Some(CipherArg::Chacha) => CipherId::ChaCha20Poly1305,
            None => header.cipher,
        },
        block_size: header.block_size,
        kdf_iterations: a.kdf_iterations,
        format,
        compress,
        codec,
        ..PackOptions::default()
    };
    super::keys::warn_kdf_cost_for(&new_keys, a.kdf_iterations);
    let started = Instant::now();
    let summary = if to_stdout {
        // A stream, as `pack - -` writes it: block by block, the header never patched.
        let in_file = |e: Error| e.in_file(&a.input);
        let container = qeltrix::Container::from_info(object, info, &open_key).map_err(in_file)?;
        // The file record (name, mode, mtime) goes along, as `qeltrix::reencrypt` keeps it.
        let opts = PackOptions {
            file_meta: container.file_meta().map_err(in_file)?,
            ..opts
        };
        let mut packer = super::commands::stdout_packer(&new_keys, &opts)?;
        container
            .write_range(0, container.len(), &mut packer)
            .map_err(in_file)?;
        let (mut out, summary) = packer.finish()?;
        out.flush().map_err(|e| Error::io("writing stdout", e))?;
        summary
    } else {
        let (from, input) = super::location::object(&a.input)?;
        let (to, out) = super::location::object(&output)?;
        qeltrix::ops::reencrypt_between(
            (&*from, &input),
            (&*to, &out),
            &open_key,
            &new_keys,
            &opts,
            a.force,
        )?
    };
    if !a.quiet {
        print_pack_summary(&a.input, &output, &summary, started);
    }
    Ok(())
}
