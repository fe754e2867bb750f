//! The network subcommands and `repair`: `gateway`, `sink` and `repair`. Arguments and wiring
//! only; the servers live in `crate::gateway`, the recovery in `crate::repair`.

use super::progress::size;
use super::{KeyArgs, PackingArgs};
use crate::gateway::{spawn_reporter, Direction, GatewayConfig, GatewayServer, SinkServer};
use crate::Error;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Duration;

/// The seeds' default gateway port.
pub const DEFAULT_GATEWAY_ADDR: &str = "127.0.0.1:7620";

#[derive(clap::Args, Debug)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_GATEWAY_ADDR)]
    pub listen: String,
    /// Host to listen on (replaces the host of --listen).
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on (replaces the port of --listen).
    #[arg(long)]
    pub port: Option<u16>,
    /// Forward the output to HOST:PORT instead of reflecting it back to the client.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["dest_host", "dest_port"])]
    pub to: Option<String>,
    /// Destination host (with --dest-port: the same as --to HOST:PORT).
    #[arg(long, requires = "dest_port")]
    pub dest_host: Option<String>,
    /// Destination port.
    #[arg(long, requires = "dest_host")]
    pub dest_port: Option<u16>,
    /// Receiving side: a container stream in, its verified plaintext out.
    #[arg(long)]
    pub decrypt: bool,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub packing: PackingArgs,
    /// Seal a partial block after MS milliseconds without input, so a trickling stream reaches
    /// the destination promptly (encrypting).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_after: Option<u64>,
    /// Skip the SHA-256 check of each block's plaintext (decrypting; the AEAD is never skipped).
    #[arg(long)]
    pub no_verify: bool,
    /// Print counters every S seconds (0: never).
    #[arg(long, value_name = "S", default_value_t = 5)]
    pub stats_interval: u64,
    /// Print the counters as JSON lines on stdout instead of log lines on stderr.
    #[arg(long)]
    pub stats_json: bool,
}

#[derive(clap::Args, Debug)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Folder for the received containers.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Print counters every S seconds (0: never).
    #[arg(long, value_name = "S", default_value_t = 5)]
    pub stats_interval: u64,
    /// Print the counters as JSON lines on stdout instead of log lines on stderr.
    #[arg(long)]
    pub stats_json: bool,
}

#[derive(clap::Args, Debug)]
pub struct RepairArgs {
    /// The incomplete container.
    pub input: PathBuf,
    /// Where to write the repaired container (default: INPUT without its `.part` suffix, or
    /// INPUT itself, replaced atomically).
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Overwrite OUTPUT if it exists.
    #[arg(long, short)]
    pub force: bool,
}

/// `--listen`, with the seeds' `--host`/`--port` replacing its parts.
fn listen_addr(listen: &str, host: Option<&str>, port: Option<u16>) -> Result<String> {
    let (h, p) = listen
        .rsplit_once(':')
        .ok_or_else(|| Error::InvalidArgument(format!("--listen {listen}: expected HOST:PORT")))?;
    let port = match port {
        Some(p) => p.to_string(),
        None => p.to_string(),
    };
    Ok(format!("{}:{port}", host.unwrap_or(h)))
}

pub fn gateway(a: GatewayArgs) -> Result<()> {
    let listen = listen_addr(&a.listen, a.host.as_deref(), a.port)?;
    let forward_to = match (&a.to, &a.dest_host, a.dest_port) {
        (Some(to), _, _) => Some(to.clone()),
        (None, Some(h), Some(p)) => Some(format!("{h}:{p}")),
        _ => None,
    };
    let direction = if a.decrypt {
        if a.flush_after.is_some() {
            bail!(Error::InvalidArgument(
                "--flush-after applies to the encrypting side; a decrypting gateway passes each block on as it arrives".into()
            ));
        }
        Direction::Decrypt {
            key: a.keys.for_reading()?,
            verify: !a.no_verify,
        }
    } else {
        let keys = a.keys.for_packing(false, None, &a.packing.recipients)?;
        super::keys::warn_kdf_cost_for(&keys, a.packing.kdf_iterations);
        Direction::Encrypt {
            keys,
            pack: a.packing.options()?,
            flush_after: a.flush_after.map(Duration::from_millis),
        }
    };
    let config = GatewayConfig {
        direction,
        forward_to,
        workers: a.packing.workers,
    };
    let mode = match (&config.direction, &config.forward_to) {
        (Direction::Encrypt { .. }, None) => "encrypt, reflect".to_string(),
        (Direction::Encrypt { .. }, Some(to)) => format!("encrypt, forward to {to}"),
        (Direction::Decrypt { .. }, None) => "decrypt, reflect".to_string(),
        (Direction::Decrypt { .. }, Some(to)) => format!("decrypt, forward to {to}"),
    };
    let server = GatewayServer::bind(listen.as_str(), config).map_err(|e| with_addr(e, &listen))?;
    eprintln!(
        "qeltrix gateway: listening on {} ({mode}; {} workers)",
        server.local_addr()?,
        server.workers()
    );
    report("gateway", server.stats(), a.stats_interval, a.stats_json)?;
    server.run()?;
    Ok(())
}

/// Prints the server's counters every `interval` seconds (0: never), as text or JSON lines.
fn report(
    name: &'static str,
    stats: std::sync::Arc<crate::gateway::Stats>,
    interval: u64,
    json: bool,
) -> Result<()> {
    if interval > 0 {
        spawn_reporter(name, stats, Duration::from_secs(interval), json)?;
    }
    Ok(())
}

fn with_addr(e: Error, addr: &str) -> Error {
    match e {
        Error::Io { context, cause } => Error::Io {
            context: format!("{context} {addr}"),
            cause,
        },
        e => e,
    }
}

pub fn sink(a: SinkArgs) -> Result<()> {
    let server = SinkServer::bind(a.listen.as_str(), &a.out_dir).map_err(|e| with_addr(e, &a.listen))?;
    eprintln!(
        "qeltrix sink: listening on {}, saving to {}",
        server.local_addr()?,
        a.out_dir.display()
    );
    report("sink", server.stats(), a.stats_interval, a.stats_json)?;
    server.run()?;
    Ok(())
}

pub fn repair(a: RepairArgs) -> Result<()> {
    let (output, in_place) = match &a.output {
        Some(o) => (o.clone(), false),
        None => match a
            .input
            .to_str()
            .and_then(|s| s.strip_suffix(crate::gateway::PART_SUFFIX))
        {
            Some(stem) if !stem.is_empty() => (PathBuf::from(stem), false),
            _ => (a.input.clone(), true),
        },
    };
    let key = a.keys.for_reading()?;
    let report = crate::repair::repair(&a.input, &output, &key, a.force || in_place)?;
    if report.already_complete {
        eprintln!(
            "{}: already a complete, authentic container; nothing to repair",
            a.input.display()
        );
        return Ok(());
    }
    eprintln!(
        "Repaired {} -> {}\n  recovered: {} blocks, {} ({} bytes) of plaintext\n  container: {} ({} input bytes not kept)\n  stopped:   {}",
        a.input.display(),
        output.display(),
        report.blocks,
        size(report.plain_bytes),
        report.plain_bytes,
        size(report.output_size),
        report.discarded_bytes,
        report.stopped_by.as_deref().unwrap_or("at the footer (only the footer or trailer was damaged)"),
    );
    Ok(())
}
