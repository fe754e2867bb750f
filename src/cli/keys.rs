//! Where keys come from on the command line: key file, passphrase file, environment, prompt, and
//! (discouraged, with a warning) the command line itself. Secrets are never logged.

use crate::crypto::{Key, KeyFileKey, Passphrase};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use zeroize::Zeroizing;

pub const PASSPHRASE_ENV: &str = "QELTRIX_PASSPHRASE";

#[derive(Args, Debug, Default)]
pub struct KeyArgs {
    /// Read the passphrase from this file (first line; a trailing newline is dropped).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Use a 32-byte key file (raw, or 64 hex digits), e.g. one made by `qeltrix keygen`.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The passphrase itself. Visible to other users (ps, shell history): prefer the options above
    /// or the QELTRIX_PASSPHRASE environment variable.
    #[arg(long, value_name = "PASSPHRASE")]
    pub passphrase: Option<String>,
}

impl KeyArgs {
    /// The keys for a new container: every source given becomes a key slot. With none given, the
    /// environment, then a prompt (asked twice).
    pub fn for_packing(&self, stdin_is_data: bool) -> Result<Vec<Key>> {
        let mut keys = Vec::new();
        if let Some(k) = self.key_file()? {
            keys.push(k);
        }
        if let Some(p) = self.explicit_passphrase()? {
            keys.push(p);
        }
        if keys.is_empty() {
            keys.push(self.ambient_passphrase(true, stdin_is_data)?);
        }
        Ok(keys)
    }

    /// The key to open a container with: key file, passphrase file, `--passphrase`, environment,
    /// prompt — the first that is given.
    pub fn for_reading(&self) -> Result<Key> {
        if let Some(k) = self.key_file()? {
            return Ok(k);
        }
        if let Some(p) = self.explicit_passphrase()? {
            return Ok(p);
        }
        self.ambient_passphrase(false, false)
    }

    fn key_file(&self) -> Result<Option<Key>> {
        let Some(path) = &self.key_file else {
            return Ok(None);
        };
        let bytes = Zeroizing::new(
            std::fs::read(path).with_context(|| format!("{}: reading the key file", path.display()))?,
        );
        let key = KeyFileKey::parse(&bytes)
            .map_err(|e| crate::Error::InvalidArgument(format!("{}: {e}", path.display())))?;
        Ok(Some(Key::KeyFile(key)))
    }

    fn explicit_passphrase(&self) -> Result<Option<Key>> {
        if let Some(path) = &self.passphrase_file {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("{}: reading the passphrase file", path.display()))?,
            );
            let line = text.lines().next().unwrap_or("");
            return Ok(Some(passphrase(line.to_string(), &path.display().to_string())?));
        }
        if let Some(p) = &self.passphrase {
            eprintln!(
                "warning: --passphrase is visible to other users of this machine (ps, shell history); \
                 prefer --passphrase-file or {PASSPHRASE_ENV}"
            );
            return Ok(Some(passphrase(p.clone(), "--passphrase")?));
        }
        Ok(None)
    }

    fn ambient_passphrase(&self, confirm: bool, stdin_is_data: bool) -> Result<Key> {
        if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
            return passphrase(p, PASSPHRASE_ENV);
        }
        if stdin_is_data || !std::io::stdin().is_terminal() {
            bail!(crate::Error::InvalidArgument(format!(
                "no key given: use --key-file, --passphrase-file or {PASSPHRASE_ENV} (no terminal to ask on)"
            )));
        }
        let first =
            Zeroizing::new(rpassword::prompt_password("Passphrase: ").context("reading the passphrase")?);
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("Passphrase (again): ").context("reading the passphrase")?,
            );
            if *first != *again {
                bail!(crate::Error::InvalidArgument("the two passphrases differ".into()));
            }
        }
        passphrase(first.to_string(), "the prompt")
    }
}

fn passphrase(p: String, from: &str) -> Result<Key> {
    if p.is_empty() {
        bail!(crate::Error::InvalidArgument(format!(
            "empty passphrase from {from}"
        )));
    }
    Ok(Key::Passphrase(Passphrase::new(p)))
}
