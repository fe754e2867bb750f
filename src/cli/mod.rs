//! The command line: argument definitions, dispatch, and the exit-code contract
//! (0 success, 2 usage, 3 wrong key or failed authentication, 4 not a Qeltrix container,
//! 128 + N stopped by signal N after finishing cleanly, 1 anything else).

/// `println!` for the command's output: a failed write (the reader of stdout went away) returns
/// from the enclosing function as an I/O error, which `main` ends quietly on (broken pipe) or
/// reports, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            return Err(qeltrix::Error::io("writing to stdout", e).into());
        }
    }};
}

/// `print!` for the command's output, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            return Err(qeltrix::Error::io("writing to stdout", e).into());
        }
    }};
}

mod cap;
mod commands;
mod generate;
mod key_commands;
mod keys;
mod location;
mod logging;
mod many;
mod mount;
pub mod mount_helper;
mod net;
mod progress;
mod serve;
mod watch;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

pub use keys::{KeyArgs, PASSPHRASE_ENV};

#[derive(Parser, Debug)]
#[command(
    name = "qeltrix",
    version,
    about = "Seekable encrypted containers",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log detail on stderr: -v debug, -vv trace (RUST_LOG adds per-target levels).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print errors only: no progress bar, summary or informational log lines.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// The S3 endpoint for s3:// locations (Garage, MinIO, Ceph: e.g. http://127.0.0.1:3900);
    /// default: AWS_ENDPOINT_URL, the profile's endpoint_url, else AWS itself. Credentials come
    /// from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials, never from a flag.
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Encrypt a file or stdin (`-`) into a container.
    Pack(PackArgs),
    /// Decrypt a whole container, verifying every block; no output is left behind on failure.
    Unpack(UnpackArgs),
    /// Decrypt one byte range, touching only the blocks it needs.
    Seek(SeekArgs),
    /// Show a container's header, index and key slots (needs no key).
    Info(InfoArgs),
    /// Authenticate every block and the index without writing plaintext.
    Verify(VerifyArgs),
    /// Sign containers in place with an Ed25519 key: only the header's signature record is
    /// written (no block, no data key needed).
    Sign(SignArgs),
    /// Capability tokens: issue, narrow (attenuate) and inspect them (docs/CAPABILITIES.md).
    Cap(cap::CapArgs),
    /// Write a new random 32-byte key file, an X25519 identity, or an Ed25519 signing key
    /// (mode 0600).
    Keygen(KeygenArgs),
    /// Make a folder a vault: a keyring whose one passphrase unlocks every container in it.
    Init(key_commands::InitArgs),
    /// Change a vault's passphrase (rewrites only the keyring; no container is touched).
    Passwd(key_commands::PasswdArgs),
    /// List, add or remove a container's key slots, crash-safely; block data is never rewritten.
    Rekey(key_commands::RekeyArgs),
    /// Copy a container under a new data key and fresh block keys (if its key may be compromised).
    Reencrypt(key_commands::ReencryptArgs),
    /// TCP gateway: a byte stream in, a container stream out (reflected or forwarded);
    /// `--decrypt` for the receiving side.
    Gateway(net::GatewayArgs),
    /// Save each incoming container stream as a file (needs no key).
    Sink(net::SinkArgs),
    /// Rebuild the footer of an incomplete container from the blocks that arrived whole.
    Repair(net::RepairArgs),
    /// Reclaim the space of superseded block versions: rewrite each version-3 container (one a
    /// read-write mount edited in place) as version 2, copying its current blocks unopened.
    Compact(CompactArgs),
    /// Serve a container or a vault folder over HTTP, with Range requests.
    Serve(serve::ServeArgs),
    /// Watch a folder: pack every file into a vault (local, s3:// or a server) once it is
    /// finished, and again when it changes.
    Watch(watch::WatchArgs),
    /// Mount a vault of containers as a plaintext filesystem (FUSE): read-only, or with
    /// `--read-write` writable, each file committed to the vault as a container.
    Mount(mount::MountArgs),
    /// Unmount a `qeltrix mount`.
    Umount(mount::UmountArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    Completions(CompletionsArgs),
    /// Print the manual page, or write one page per command into a folder.
    Man(ManArgs),
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Install, for example:\n  \
    qeltrix completions bash > ~/.local/share/bash-completion/completions/qeltrix\n  \
    qeltrix completions zsh > ~/.zfunc/_qeltrix\n  \
    qeltrix completions fish > ~/.config/fish/completions/qeltrix.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Read it with `qeltrix man | man -l -`, or install the pages:\n  \
    qeltrix man --dir /usr/local/share/man/man1"
)]
pub struct ManArgs {
    /// Write qeltrix.1 and one qeltrix-COMMAND.1 per command into this folder instead of
    /// printing qeltrix.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CipherArg {
    Aes,
    Chacha,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressArg {
    /// zstd where a sample of the block says it pays (deflate with --format 1).
    Auto,
    /// Store every block as it is.
    Never,
    /// Compress every block with the format's compressor (zstd; deflate with --format 1).
    Always,
    /// Compress every block with zstd (format 2 only).
    Zstd,
    /// Deflate where a sample of the block says it pays: for users of the original format.
    Deflate,
}

impl From<CipherArg> for qeltrix::format::CipherId {
    fn from(c: CipherArg) -> Self {
        match c {
            CipherArg::Aes => qeltrix::format::CipherId::Aes256Gcm,
            CipherArg::Chacha => qeltrix::format::CipherId::ChaCha20Poly1305,
        }
    }
}

impl CompressArg {
    /// When to compress and with what, for a container of format `format`. Version 1 knows only
    /// deflate: asking it for zstd is an error rather than a silent change of compressor.
    pub fn mode(
        self,
        format: qeltrix::format::FormatVersion,
    ) -> Result<(qeltrix::CompressMode, qeltrix::compress::Codec), qeltrix::Error> {
        use qeltrix::compress::Codec;
        use qeltrix::format::FormatVersion;
        use qeltrix::CompressMode;
        let v1 = format == FormatVersion::V1;
        let default_codec = if v1 { Codec::Deflate } else { Codec::Zstd };
        Ok(match self {
            CompressArg::Auto => (CompressMode::Auto, default_codec),
            CompressArg::Never => (CompressMode::Never, default_codec),
            CompressArg::Always => (CompressMode::Always, default_codec),
            CompressArg::Deflate => (CompressMode::Auto, Codec::Deflate),
            CompressArg::Zstd if v1 => {
                return Err(qeltrix::Error::InvalidArgument(
                    "--format 1 compresses only with deflate: drop --compress zstd, or use \
                     --compress deflate (or auto), or write format 2"
                        .into(),
                ))
            }
            CompressArg::Zstd => (CompressMode::Always, Codec::Zstd),
        })
    }
}

/// The `--format` number as the library's version.
pub fn format_version(n: u16) -> qeltrix::format::FormatVersion {
    qeltrix::format::FormatVersion::from_u16(n).unwrap_or_default()
}

/// How new containers are packed: the options `pack` and `gateway` share.
#[derive(clap::Args, Debug)]
pub struct PackingArgs {
    /// Also wrap the data key to this X25519 recipient (`qeltrix-x25519:...`; repeatable). A
    /// packer holding only recipients can encrypt but never decrypt what it wrote.
    #[arg(long = "recipient", value_name = "RECIPIENT")]
    pub recipients: Vec<qeltrix::crypto::RecipientKey>,
    /// Cipher for the blocks.
    #[arg(long, value_enum, default_value = "aes")]
    pub cipher: CipherArg,
    /// Block size in KiB: a multiple of 4 from 4 to 65536.
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    pub block_size: u32,
    /// Container format: 2 (zstd, keyless integrity check, the file's name, mode and time), or
    /// 1 for readers of the original format (deflate only, no file record).
    #[arg(long, value_name = "VERSION", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=2))]
    pub format: u16,
    /// When and how to compress blocks: auto, always, never, zstd or deflate.
    #[arg(long, value_enum, default_value = "auto")]
    pub compress: CompressArg,
    /// Compression level, 0-9 (fast to small), for both zstd and deflate.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub level: u32,
    /// Worker threads (0: one per core; a gateway shares them among its connections).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// PBKDF2-HMAC-SHA256 iterations for a passphrase slot (a gateway pays them once per
    /// connection: prefer a key file or a recipient there).
    #[arg(long, value_name = "N", default_value_t = qeltrix::crypto::DEFAULT_KDF_ITERATIONS)]
    pub kdf_iterations: u32,
}

impl PackingArgs {
    /// The library's options, with the block size checked.
    pub fn options(&self) -> Result<qeltrix::PackOptions, qeltrix::Error> {
        let block_size = self
            .block_size
            .checked_mul(1024)
            .filter(|b| qeltrix::format::check_block_size(*b).is_ok())
            .ok_or_else(|| {
                qeltrix::Error::InvalidArgument(format!(
                    "block size {} KiB: must be a multiple of 4 from 4 to 65536",
                    self.block_size
                ))
            })?;
        let format = format_version(self.format);
        let (compress, codec) = self.compress.mode(format)?;
        Ok(qeltrix::PackOptions {
            format,
            cipher: self.cipher.into(),
            block_size,
            compress,
            codec,
            level: self.level,
            workers: self.workers,
            kdf_iterations: self.kdf_iterations,
            ..qeltrix::PackOptions::default()
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct PackArgs {
    /// Input file, `-` for stdin, an http:// or https:// URL to download, or with -r a folder.
    pub input: PathBuf,
    /// Output container, a folder to write it into, or `-` for stdout (default: INPUT.qltx).
    /// With -r, the folder to mirror INPUT into.
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub output_flag: OutputFlag,
    /// Pack every regular file under the folder INPUT, in parallel, into the folder OUTPUT with
    /// the same relative paths (INPUT/a/b.txt -> OUTPUT/a/b.txt.qltx). Links, special files and
    /// hidden names (which a vault never shows) are skipped with a warning.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Print the result as JSON on stdout (with -r, one line per file); refused when the
    /// container itself goes to stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub packing: PackingArgs,
    /// Mark the container so readers may skip plaintext hash checks (AEAD is always checked).
    #[arg(long)]
    pub no_verify: bool,
    /// Sign the container with this Ed25519 signing key file (from `qeltrix keygen --ed25519`):
    /// `verify --signer` then proves who made it, without the data key. Needs a local output
    /// file (the signature goes into the header last).
    #[arg(long, value_name = "FILE")]
    pub sign: Option<PathBuf>,
    /// Reading stdin: seal a partial block after this many milliseconds without input, so a slow
    /// stream (a log) reaches OUTPUT in bounded time. Ctrl-C (SIGINT) or SIGTERM ends such a
    /// stream cleanly: what has arrived is sealed into a complete container, then the exit code
    /// is 130 or 143.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_after: Option<u64>,
    /// Overwrite OUTPUT if it exists.
    #[arg(long, short)]
    pub force: bool,
    /// Set from the global `-q`.
    #[arg(skip)]
    pub quiet: bool,
}

/// `-o/--output`: the positional OUTPUT of a command, as an option (the two conflict).
#[derive(clap::Args, Debug)]
pub struct OutputFlag {
    /// OUTPUT as an option.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "OUTPUT",
        conflicts_with = "output"
    )]
    output_flag: Option<PathBuf>,
}

impl OutputFlag {
    /// The output named either way.
    pub fn or(&mut self, positional: Option<PathBuf>) -> Option<PathBuf> {
        positional.or(self.output_flag.take())
    }
}

/// A command that finished its work after SIGINT or SIGTERM asked it to stop (`pack -` seals
/// the stream so far): the exit code is 128 + the signal, with no error message.
#[derive(Debug)]
pub struct Stopped(pub i32);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by signal {}", self.0)
    }
}

impl std::error::Error for Stopped {}

/// Some of the items of a command over many (files packed by `pack -r`, containers verified or
/// shown) failed. Each failure was reported as it happened; the exit code is the highest of
/// theirs, so an authentication failure (3) outranks a usage error (2) and an I/O error (1).
#[derive(Debug)]
pub struct Failed {
    pub failed: usize,
    pub total: usize,
    /// What the items are, in the plural ("files", "containers").
    pub items: &'static str,
    pub code: u8,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} {} failed", self.failed, self.total, self.items)
    }
}

impl std::error::Error for Failed {}

#[derive(clap::Args, Debug)]
pub struct UnpackArgs {
    /// The container to decrypt.
    pub input: PathBuf,
    /// Output file, a folder to write it into, or `-` for stdout (default: INPUT without `.qltx`).
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub output_flag: OutputFlag,
    /// Print the result as JSON on stdout (refused when the plaintext goes to stdout).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Skip the content-hash check (SHA-256 or BLAKE3) of each block's plaintext (the AEAD is never skipped).
    #[arg(long)]
    pub no_verify: bool,
    /// Threads decrypting blocks (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Overwrite OUTPUT if it exists.
    #[arg(long, short)]
    pub force: bool,
    /// Set from the global `-q`.
    #[arg(skip)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct SeekArgs {
    /// The container to read from.
    pub input: PathBuf,
    /// First plaintext byte.
    #[arg(long)]
    pub offset: u64,
    /// Number of bytes; a range past the end gives what exists.
    #[arg(long)]
    pub length: u64,
    /// Write the bytes here (`-`: stdout) instead of showing a hex dump of the first 64.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Overwrite the --output file if it exists.
    #[arg(long, short)]
    pub force: bool,
}

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Containers, and folders (vaults) whose every container is shown.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Machine-readable output: one JSON object per container (one file: pretty-printed as
    /// before; several: one compact object per line).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Containers, and folders (vaults) whose every container is verified.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Check every stored byte of a format-2 container without any key (never asks for one):
    /// proves the file is intact as it was written, not the plaintext nor who wrote it.
    /// Format 1 has no keyless hashes (`qeltrix reencrypt` upgrades it).
    #[arg(long)]
    pub no_key: bool,
    /// Also prove who made each container: it must carry a valid signature by this signer (a
    /// qeltrix-ed25519: string, or a file holding one). Needs no key: the blocks are then checked
    /// as with --no-key, unless a key option is given.
    #[arg(long, value_name = "SIGNER")]
    pub signer: Option<String>,
    /// Check each container against this registry index (a server's /index.json, saved): its
    /// root and size must be listed there, then its blocks are checked as with --no-key. With
    /// --index-signer, the index must carry a valid signature by that key.
    #[arg(long, value_name = "INDEX")]
    pub index: Option<PathBuf>,
    /// The key the index must be signed by (a qeltrix-ed25519: string or a file holding one).
    #[arg(long, value_name = "SIGNER", requires = "index")]
    pub index_signer: Option<String>,
    /// Threads authenticating blocks (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Print one JSON object per container, one per line, instead of text.
    #[arg(long)]
    pub json: bool,
    /// Set from the global `-q`.
    #[arg(skip)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct CompactArgs {
    /// Containers, and folders (vaults) whose every container is compacted.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Set from the global `-q`.
    #[arg(skip)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// Containers, and folders (vaults) whose every container is signed. Local files only: an
    /// object store cannot change bytes in place.
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// The Ed25519 signing key file (from `qeltrix keygen --ed25519`).
    #[arg(long, short = 'k', value_name = "FILE")]
    pub key: PathBuf,
    /// Set from the global `-q`.
    #[arg(skip)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the key file (mode 0600), or `-` for stdout (then an identity's public
    /// recipient goes to stderr).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Write an X25519 identity instead, and print its public recipient string.
    #[arg(long)]
    pub x25519: bool,
    /// Write an Ed25519 signing key instead (for `pack --sign`, `qeltrix sign`), and print its
    /// public signer string.
    #[arg(long, conflicts_with = "x25519")]
    pub ed25519: bool,
    /// Overwrite the output file if it exists.
    #[arg(long, short)]
    pub force: bool,
}

/// Exit codes.
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_AUTH: u8 = 3;
pub const EXIT_NOT_A_CONTAINER: u8 = 4;

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    keys::take_env_passphrase();
    let mut cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    logging::init(cli.verbose, cli.quiet);
    let mut remote = qeltrix::storage::RemoteOptions::default();
    remote.s3_endpoint = cli.s3_endpoint.take();
    location::set_options(remote);
    match &mut cli.command {
        Command::Pack(a) => a.quiet = cli.quiet,
        Command::Watch(a) => a.quiet = cli.quiet,
        Command::Unpack(a) => a.quiet = cli.quiet,
        Command::Verify(a) => a.quiet = cli.quiet,
        Command::Sign(a) => a.quiet = cli.quiet,
        Command::Reencrypt(a) => a.quiet = cli.quiet,
        _ => {}
    }
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(Stopped(signal)) = e.downcast_ref::<Stopped>() {
                return ExitCode::from(128u8.saturating_add(*signal as u8));
            }
            if let Some(failed) = e.downcast_ref::<Failed>() {
                eprintln!("qeltrix: error: {failed}");
                return ExitCode::from(failed.code);
            }
            let lib = e.chain().find_map(|c| c.downcast_ref::<qeltrix::Error>());
            if lib.is_some_and(|l| l.is_broken_pipe()) {
                return ExitCode::SUCCESS;
            }
            eprintln!("qeltrix: error: {}", error_text(&e));
            ExitCode::from(exit_code(lib))
        }
    }
}

/// The text of a failure: each context the CLI added, then the library's error in the CLI's
/// words ([`describe`]). A library error's text already includes its cause, so the chain is not
/// followed past it.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        if let Some(lib) = cause.downcast_ref::<qeltrix::Error>() {
            parts.push(describe(lib));
            break;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}

/// A library error as the CLI words it: the library states what happened; the advice that names
/// a command or a flag is added here.
pub fn describe(e: &qeltrix::Error) -> String {
    use qeltrix::Error;
    match e {
        Error::InFile { path, inner } => format!("{}: {}", path.display(), describe(inner)),
        Error::Exists { path } => format!(
            "invalid argument: {} exists; use --force to overwrite it",
            path.display()
        ),
        Error::NotAVault { .. } => format!("{e} (run `qeltrix init` first)"),
        Error::ScrubFailed { .. } => format!("{e}; run `qeltrix rekey --scrub` again"),
        Error::MountPoint { path, problem } => {
            let shown = path.display();
            match problem {
                qeltrix::MountProblem::Stale => format!("{e}: run `qeltrix umount {shown}` first"),
                qeltrix::MountProblem::Mounted { .. } => format!("{e} (`qeltrix umount {shown}`)"),
                qeltrix::MountProblem::FilesOpen => {
                    format!("{e}; close them, or use `qeltrix umount --lazy {shown}`")
                }
                _ => e.to_string(),
            }
        }
        // The library states which slots exist; the option that opens one is the CLI's.
        Error::NoSlot { present, .. } => match keys::options_for(present) {
            Some(options) => format!("{e}; it needs {options}"),
            None => e.to_string(),
        },
        // The library states the limit; how to raise it is the CLI's flag.
        Error::KdfTooCostly { iterations, .. } => format!("{e}{}", raise_kdf_limit(*iterations)),
        Error::SlotsRefused { refused } => {
            let reasons: Vec<String> = refused
                .iter()
                .map(|r| match r {
                    qeltrix::SlotRefusal::TooCostly { iterations, .. } => {
                        format!("{r}{}", raise_kdf_limit(*iterations))
                    }
                    r => r.to_string(),
                })
                .collect();
            format!("wrong key: no key slot opened; {}", reasons.join("; "))
        }
        Error::NoTrailer => {
            "incomplete container: no valid trailer at the end of the file (a cut stream or an \
                             interrupted write; `qeltrix repair` can recover the complete blocks)"
                .into()
        }
        e => e.to_string(),
    }
}

fn raise_kdf_limit(iterations: u32) -> String {
    format!("; if you made it with that cost, pass --max-kdf-iterations {iterations}")
}

/// The exit code for a failure, by the library error behind it (if any).
pub fn exit_code(err: Option<&qeltrix::Error>) -> u8 {
    match err {
        Some(e) if e.is_auth_failure() => EXIT_AUTH,
        Some(e) if e.is_not_a_container() => EXIT_NOT_A_CONTAINER,
        Some(e)
            if matches!(
                e.root(),
                qeltrix::Error::InvalidArgument(_)
                    | qeltrix::Error::Exists { .. }
                    | qeltrix::Error::MountPoint { .. }
            ) =>
        {
            EXIT_USAGE
        }
        _ => EXIT_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn argument_definitions_are_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// Every option and argument of every command says what it is for in `--help`, in words a
    /// user knows (no internal jargon), and every command has an about line.
    #[test]
    fn every_flag_has_help_text_without_jargon() {
        use clap::CommandFactory;
        let cli = super::Cli::command();
        let mut missing = Vec::new();
        let mut commands = vec![cli.clone()];
        commands.extend(cli.get_subcommands().cloned());
        for command in &commands {
            if command.get_about().is_none() {
                missing.push(format!("{}: no about", command.get_name()));
            }
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                match arg.get_help().map(|h| h.to_string()) {
                    None => missing.push(format!("{} {id}: no help", command.get_name())),
                    Some(h) if ["seed", "TODO", "XXX"].iter().any(|j| h.contains(j)) => {
                        missing.push(format!("{} {id}: jargon in {h:?}", command.get_name()))
                    }
                    Some(_) => {}
                }
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    /// The library states the fact; the CLI's words for it are what users and scripts saw before
    /// the library stopped naming flags and commands.
    #[test]
    fn cli_words_the_advice() {
        use qeltrix::Error;
        let exists = anyhow::Error::from(Error::Exists {
            path: "c.qltx".into(),
        });
        assert_eq!(
            super::error_text(&exists),
            "invalid argument: c.qltx exists; use --force to overwrite it"
        );
        assert_eq!(super::exit_code(exists.downcast_ref()), super::EXIT_USAGE);
        let cut = anyhow::Error::from(Error::NoTrailer.in_file("cut.qltx"));
        assert_eq!(
            super::error_text(&cut),
            "cut.qltx: incomplete container: no valid trailer at the end of the file (a cut stream or \
             an interrupted write; `qeltrix repair` can recover the complete blocks)"
        );
        assert_eq!(super::exit_code(cut.downcast_ref()), super::EXIT_AUTH);
        // The io cause is printed once, with the contexts the CLI added before it.
        let io = Error::io("reading", std::io::Error::other("disk on fire"));
        let e = anyhow::Error::from(io).context("k.key");
        assert_eq!(super::error_text(&e), "k.key: reading: disk on fire");
    }
}
