//! The network subcommands and `repair`: `gateway`, `sink` and `repair`. Arguments and wiring
//! only; the servers live in `qeltrix::gateway`, the recovery in `qeltrix::repair`.

use super::progress::size;
use super::{KeyArgs, OutputFlag, PackingArgs};
use anyhow::{bail, Result};
use qeltrix::gateway::{
    spawn_reporter, Direction, GatewayConfig, GatewayServer, Limits, SinkConfig, SinkServer, Token,
    DEFAULT_MAX_CONNECTIONS,
};
use qeltrix::Error;
use std::path::PathBuf;
use std::time::Duration;

/// The gateway's default address (loopback only).
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
    /// Skip the content-hash check (SHA-256 or BLAKE3) of each block's plaintext (decrypting; the AEAD is never skipped).
    #[arg(long)]
    pub no_verify: bool,
    /// Print counters every S seconds (0: never).
    #[arg(long, value_name = "S", default_value_t = 5)]
    pub stats_interval: u64,
    /// Print the counters as JSON lines on stdout instead of log lines on stderr.
    #[arg(long)]
    pub stats_json: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Send the token in the first line of FILE to the destination before the output (for a
    /// sink or gateway with --token-file).
    #[arg(long, value_name = "FILE")]
    pub to_token_file: Option<PathBuf>,
}

/// The bounds shared by the gateway and the sink (docs/GATEWAY.md, "Limits").
#[derive(clap::Args, Debug)]
pub struct LimitArgs {
    /// Connections served at once; beyond it new ones are reset at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Close a connection that moves no byte for S seconds (0: never).
    #[arg(long, value_name = "S", default_value_t = 300)]
    pub idle_timeout: u64,
    /// Seconds for the token line (and, for the sink, the container header) to arrive.
    #[arg(long, value_name = "S", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
    /// Most MiB one connection may send; a larger stream is cut (0: no cap).
    #[arg(long, value_name = "MIB", default_value_t = 65536)]
    pub max_size: u64,
    /// Require clients to send the token in the first line of FILE first (see docs/GATEWAY.md).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl LimitArgs {
    fn limits(&self) -> Result<Limits> {
        Ok(Limits {
            max_connections: self.max_connections as usize,
            idle_timeout: (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout)),
            header_timeout: Duration::from_secs(self.header_timeout),
            max_size: mib("--max-size", self.max_size)?,
            token: self.token_file.as_deref().map(Token::from_file).transpose()?,
        })
    }
}

/// MiB to bytes; 0 is `None` (no limit).
fn mib(option: &str, n: u64) -> Result<Option<u64>> {
    if n == 0 {
        return Ok(None);
    }
    match n.checked_mul(1 << 20) {
        Some(b) => Ok(Some(b)),
        None => bail!(Error::InvalidArgument(format!("{option} {n} MiB is too large"))),
    }
}

/// Warns when a server anyone on the network can reach accepts streams without a token.
fn warn_if_open(name: &str, addr: std::net::SocketAddr, limits: &Limits) {
    if !addr.ip().is_loopback() && limits.token.is_none() {
        eprintln!(
            "qeltrix {name}: warning: listening on {addr} without --token-file: anyone who can reach it can send streams"
        );
    }
}

#[derive(clap::Args, Debug)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Folder for the received containers.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Most MiB the folder may hold: its files plus the streams in progress. A stream that
    /// would pass it is cut and its part removed.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub quota: Option<u64>,
    /// Print counters every S seconds (0: never).
    #[arg(long, value_name = "S", default_value_t = 5)]
    pub stats_interval: u64,
    /// Print the counters as JSON lines on stdout instead of log lines on stderr.
    #[arg(long)]
    pub stats_json: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
}

#[derive(clap::Args, Debug)]
pub struct RepairArgs {
    /// The incomplete container.
    pub input: PathBuf,
    /// Where to write the repaired container (default: INPUT without its `.part` suffix, or
    /// INPUT itself, replaced atomically). Not `-`: the header is written last, so the output
    /// must be a file.
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub output_flag: OutputFlag,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Overwrite OUTPUT if it exists.
    #[arg(long, short)]
    pub force: bool,
}

/// `--listen`, with `--host`/`--port` replacing its parts.
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
    if a.to_token_file.is_some() && forward_to.is_none() {
        bail!(Error::InvalidArgument(
            "--to-token-file needs a destination (--to, or --dest-host and --dest-port)".into()
        ));
    }
    let config = GatewayConfig {
        direction,
        forward_to,
        forward_token: a.to_token_file.as_deref().map(Token::from_file).transpose()?,
        workers: a.packing.workers,
        limits: a.limits.limits()?,
    };
    let mode = match (&config.direction, &config.forward_to) {
        (Direction::Encrypt { .. }, None) => "encrypt, reflect".to_string(),
        (Direction::Encrypt { .. }, Some(to)) => format!("encrypt, forward to {to}"),
        (Direction::Decrypt { .. }, None) => "decrypt, reflect".to_string(),
        (Direction::Decrypt { .. }, Some(to)) => format!("decrypt, forward to {to}"),
    };
    let limits = config.limits.clone();
    let server = GatewayServer::bind(listen.as_str(), config).map_err(|e| with_addr(e, &listen))?;
    let bound = server.local_addr()?;
    eprintln!(
        "qeltrix gateway: listening on {bound} ({mode}; {} workers; {})",
        server.workers(),
        describe_limits(&limits)
    );
    warn_if_open("gateway", bound, &limits);
    report("gateway", server.stats(), a.stats_interval, a.stats_json)?;
    server.run()?;
    Ok(())
}

/// Prints the server's counters every `interval` seconds (0: never), as text or JSON lines.
fn report(
    name: &'static str,
    stats: std::sync::Arc<qeltrix::gateway::Stats>,
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
        Error::Io { context, source } => Error::Io {
            context: format!("{context} {addr}"),
            source,
        },
        e => e,
    }
}

/// The limits in force, for the "listening" line (never the token itself).
fn describe_limits(l: &Limits) -> String {
    let opt = |v: Option<u64>, unit: &str| v.map_or("none".to_string(), |v| format!("{v} {unit}"));
    format!(
        "max {} connections, idle timeout {}, max size {}, token {}",
        l.max_connections,
        opt(l.idle_timeout.map(|d| d.as_secs()), "s"),
        opt(l.max_size, "bytes"),
        if l.token.is_some() { "required" } else { "none" }
    )
}

pub fn sink(a: SinkArgs) -> Result<()> {
    if super::location::is_remote(&a.out_dir) {
        return sink_remote(a);
    }
    let config = SinkConfig {
        out_dir: a.out_dir.clone(),
        limits: a.limits.limits()?,
        quota: a.quota.map(|q| mib("--quota", q)).transpose()?.flatten(),
    };
    let limits = config.limits.clone();
    let quota = config.quota;
    let server = SinkServer::bind(a.listen.as_str(), config).map_err(|e| with_addr(e, &a.listen))?;
    let bound = server.local_addr()?;
    eprintln!(
        "qeltrix sink: listening on {bound}, saving to {} ({}, quota {})",
        a.out_dir.display(),
        describe_limits(&limits),
        quota.map_or("none".to_string(), |q| format!("{q} bytes"))
    );
    warn_if_open("sink", bound, &limits);
    report("sink", server.stats(), a.stats_interval, a.stats_json)?;
    server.run()?;
    Ok(())
}

/// `sink --out-dir s3://BUCKET/PREFIX`: each complete stream is uploaded as it arrives.
fn sink_remote(a: SinkArgs) -> Result<()> {
    if a.quota.is_some() {
        anyhow::bail!(Error::InvalidArgument(
            "--quota applies to a local folder; an object store has its own quotas".into()
        ));
    }
    let (vault, shown) = super::location::vault(&a.out_dir)?;
    let limits = a.limits.limits()?;
    let storage = std::sync::Arc::clone(vault.storage());
    let server = SinkServer::bind_storage(a.listen.as_str(), storage, limits.clone())
        .map_err(|e| with_addr(e, &a.listen))?;
    let bound = server.local_addr()?;
    eprintln!(
        "qeltrix sink: listening on {bound}, uploading to {} ({})",
        shown.display(),
        describe_limits(&limits)
    );
    warn_if_open("sink", bound, &limits);
    report("sink", server.stats(), a.stats_interval, a.stats_json)?;
    server.run()?;
    Ok(())
}

pub fn repair(mut a: RepairArgs) -> Result<()> {
    a.output = a.output_flag.or(a.output.take());
    if a.output.as_deref().is_some_and(|o| o.as_os_str() == "-") {
        bail!(Error::InvalidArgument(
            "repair writes the container's header last, so its output must be a file, not stdout (-)".into()
        ));
    }
    let (output, in_place) = match &a.output {
        Some(o) => (o.clone(), false),
        None => match a
            .input
            .to_str()
            .and_then(|s| s.strip_suffix(qeltrix::gateway::PART_SUFFIX))
        {
            Some(stem) if !stem.is_empty() => (PathBuf::from(stem), false),
            _ => (a.input.clone(), true),
        },
    };
    let key = a.keys.for_reading()?;
    let report = qeltrix::repair::repair(&a.input, &output, &key, a.force || in_place)?;
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
