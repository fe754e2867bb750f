//! `qeltrix cap`: capability tokens (docs/CAPABILITIES.md). Tokens are credentials: they are
//! read from files or stdin, never from the command line, and written to stdout or a 0600 file.

use super::keys::{read_signer_key, signer_public};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use qeltrix::capability::{self, Caveats, Operation, PathRule};
use qeltrix::Error;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use zeroize::Zeroizing;

#[derive(Args, Debug)]
pub struct CapArgs {
    #[command(subcommand)]
    pub command: CapCommand,
}

#[derive(Subcommand, Debug)]
pub enum CapCommand {
    /// Issue a new token signed by the root key, with the caveats given (none: full access).
    Issue(IssueArgs),
    /// Narrow a token offline: append caveats (the result allows at most what the token did).
    Attenuate(AttenuateArgs),
    /// Show what a token allows, block by block, in plain words.
    Inspect(InspectArgs),
    /// Revoke a token and every token narrowed from it: add it to the signed revocation list
    /// (a file or s3:// object) under the next sequence number.
    Revoke(RevokeArgs),
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The file holding the token to revoke, or `-` for stdin.
    #[arg(value_name = "TOKEN_FILE")]
    pub token: PathBuf,
    /// The root signing key (the list is signed with it, and only its tokens are revoked).
    #[arg(long, value_name = "FILE")]
    pub root: PathBuf,
    /// The revocation list to update (created if missing): a file or an s3:// object.
    #[arg(long, value_name = "LIST")]
    pub list: PathBuf,
}

/// The caveats of one block.
#[derive(Args, Debug)]
pub struct CaveatArgs {
    /// Allow only this path (repeatable: any of them): `/a/b.mp4` exactly (`/a`: listing the
    /// folder, not its files), `/a/` the folder and everything under it, or a glob (`/a/*.mp4`;
    /// `**` crosses folders).
    #[arg(long, value_name = "PATH")]
    pub path: Vec<String>,
    /// Allow only this method (repeatable): read, list or upload.
    #[arg(long, value_name = "METHOD")]
    pub method: Vec<String>,
    /// Allow only on the server of this name (`serve --cap-audience NAME`; repeatable).
    #[arg(long, value_name = "NAME")]
    pub audience: Vec<String>,
    /// Expire after this long (`1h`, `24h`, `7d`) or at this time (`2026-12-31T00:00:00Z`).
    #[arg(long, value_name = "WHEN")]
    pub expires: Option<String>,
}

impl CaveatArgs {
    fn caveats(&self) -> Result<Caveats> {
        Ok(Caveats {
            paths: self
                .path
                .iter()
                .map(|p| PathRule::parse(p))
                .collect::<qeltrix::Result<_>>()?,
            operations: self
                .method
                .iter()
                .map(|m| Operation::parse(m))
                .collect::<qeltrix::Result<_>>()?,
            audiences: self.audience.clone(),
            expires: self.expires.as_deref().map(expiry).transpose()?,
        })
    }
}

/// `1h` from now, or an RFC 3339 time.
fn expiry(when: &str) -> Result<SystemTime> {
    if let Ok(d) = humantime::parse_duration(when) {
        return Ok(SystemTime::now() + d);
    }
    humantime::parse_rfc3339_weak(when).map_err(|_| {
        Error::InvalidArgument(format!(
            "--expires {when:?}: a duration (1h, 7d) or a time (2026-12-31T00:00:00Z)"
        ))
        .into()
    })
}

#[derive(Args, Debug)]
pub struct IssueArgs {
    /// The root signing key (from `qeltrix keygen --ed25519`); servers trust its public key
    /// (`serve --cap-root`).
    #[arg(long, value_name = "FILE")]
    pub root: PathBuf,
    #[command(flatten)]
    pub caveats: CaveatArgs,
    /// Write the token to this file (mode 0600) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AttenuateArgs {
    /// The file holding the token to narrow, or `-` for stdin.
    #[arg(value_name = "TOKEN_FILE")]
    pub token: PathBuf,
    #[command(flatten)]
    pub caveats: CaveatArgs,
    /// Write the new token to this file (mode 0600) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The file holding the token, or `-` for stdin.
    #[arg(value_name = "TOKEN_FILE")]
    pub token: PathBuf,
    /// Also check that the token is signed by this root (a qeltrix-ed25519: string or a file
    /// holding one).
    #[arg(long, value_name = "ROOT")]
    pub root: Option<String>,
}

pub fn run(a: CapArgs) -> Result<()> {
    match a.command {
        CapCommand::Issue(a) => {
            let root = read_signer_key(&a.root)?;
            let caveats = a.caveats.caveats()?;
            if caveats.is_empty() {
                eprintln!(
                    "warning: a token without caveats allows everything on every server trusting this root"
                );
            }
            let token = Zeroizing::new(capability::issue(&root, &caveats)?);
            write_token(a.output.as_deref(), &token)
        }
        CapCommand::Attenuate(a) => {
            let token = read_token(&a.token)?;
            let narrowed = Zeroizing::new(capability::attenuate(&token, &a.caveats.caveats()?)?);
            write_token(a.output.as_deref(), &narrowed)
        }
        CapCommand::Revoke(a) => {
            let root = read_signer_key(&a.root)?;
            let token = read_token(&a.token)?;
            let root_ok = capability::inspect(&token, Some(&root.public()))?.root_ok;
            if root_ok != Some(true) {
                anyhow::bail!(Error::InvalidArgument(format!(
                    "the token is not signed by the root {}: it cannot be revoked by this key",
                    root.public()
                )));
            }
            let id = capability::revocation_id(&token)?;
            let (storage, path) = super::location::object(&a.list)?;
            // The list is read as the server reads it (whole, bounded), or starts empty.
            let source = qeltrix::serve::RevocationSource {
                storage: std::sync::Arc::clone(&storage),
                path: path.clone(),
                every: std::time::Duration::ZERO,
            };
            let mut list = match storage.stat(&path) {
                Ok(_) => capability::Revocations::parse(&source.read()?, &root.public())
                    .map_err(|e| e.in_file(&a.list))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => capability::Revocations::default(),
                Err(e) => {
                    return Err(Error::io("opening the revocation list", e)
                        .in_file(&a.list)
                        .into())
                }
            };
            let newly = list.ids.insert(id.clone());
            list.sequence += 1;
            storage.put(
                &path,
                list.to_signed_json(&root).as_bytes(),
                qeltrix::storage::WriteOptions::overwrite(true),
            )?;
            outln!(
                "{} {} (revocation id {}…): {} holds {} ids at sequence {}",
                if newly { "revoked" } else { "already revoked" },
                a.token.display(),
                &hex::encode(&id)[..16],
                a.list.display(),
                list.ids.len(),
                list.sequence
            );
            Ok(())
        }
        CapCommand::Inspect(a) => {
            let token = read_token(&a.token)?;
            let root = a.root.as_deref().map(signer_public).transpose()?;
            let i = capability::inspect(&token, root.as_ref())?;
            match i.root_ok {
                Some(true) => outln!("Signed by the root {}", root.expect("checked")),
                Some(false) => {
                    anyhow::bail!(Error::InvalidArgument(format!(
                        "the token is not signed by {} (or was altered)",
                        root.expect("checked")
                    )))
                }
                None => outln!("Signature not checked (give --root to check it)"),
            }
            for (n, (block, id)) in i.blocks.iter().zip(&i.revocation_ids).enumerate() {
                let who = if n == 0 { "issuer" } else { "attenuation" };
                outln!("Block {n} ({who}), revocation id {id}:");
                let lines = capability::describe(block, SystemTime::now());
                if lines.is_empty() {
                    outln!("  no caveats");
                }
                for l in lines {
                    outln!("  {l}");
                }
            }
            outln!("A request is allowed only if every caveat of every block allows it.");
            Ok(())
        }
    }
}

/// The token in `path` (first non-empty line), or on stdin for `-`.
fn read_token(path: &Path) -> Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(capability::MAX_TOKEN_LEN as u64 + 2)
            .read_to_string(&mut text)
            .context("reading the token from stdin")?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| {
                f.take(capability::MAX_TOKEN_LEN as u64 + 2)
                    .read_to_string(&mut text)
            })
            .with_context(|| format!("{}: reading the token", path.display()))?;
    }
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    Ok(Zeroizing::new(line.to_string()))
}

fn write_token(output: Option<&Path>, token: &str) -> Result<()> {
    match output {
        Some(path) => {
            super::commands::write_secret_file(path, format!("{token}\n").as_bytes(), true)?;
            eprintln!("Wrote the token to {} (mode 0600).", path.display());
        }
        None => outln!("{token}"),
    }
    Ok(())
}
