//! One function per subcommand. Each calls the library and prints what the user asked for;
//! all behaviour lives in the library.

use super::location;
use super::progress::{bar, print_pack_summary, size, speed};
use super::*;
use anyhow::{Context, Result};
use qeltrix::reader::{Container, ContainerInfo};
use qeltrix::storage::Object;
use qeltrix::vault::naming;
use qeltrix::writer::{PackOptions, StreamPacker};
use qeltrix::{AtomicOutput, Error, UnpackOptions};
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub fn run(command: Command) -> Result<()> {
    if matches!(
        command,
        Command::Gateway(_) | Command::Sink(_) | Command::Serve(_) | Command::Mount(_) | Command::Watch(_)
    ) {
        // Long-running, holding keys and plaintext: no core dumps. Before any thread starts.
        qeltrix::harden::harden_long_running_process();
    }
    match command {
        Command::Pack(a) => pack(a),
        Command::Unpack(a) => unpack(a),
        Command::Seek(a) => seek(a),
        Command::Info(a) => super::many::info(a),
        Command::Verify(a) => super::many::verify(a),
        Command::Sign(a) => super::many::sign(a),
        Command::Cap(a) => super::cap::run(a),
        Command::Keygen(a) => keygen(a),
        Command::Init(a) => super::key_commands::init(a),
        Command::Passwd(a) => super::key_commands::passwd(a),
        Command::Rekey(a) => super::key_commands::rekey(a),
        Command::Reencrypt(a) => super::key_commands::reencrypt(a),
        Command::Gateway(a) => super::net::gateway(a),
        Command::Sink(a) => super::net::sink(a),
        Command::Repair(a) => super::net::repair(a),
        Command::Compact(a) => super::many::compact(a),
        Command::Serve(a) => super::serve::run(a),
        Command::Watch(a) => super::watch::run(a),
        Command::Mount(a) => super::mount::mount(a),
        Command::Umount(a) => super::mount::umount(a),
        Command::Completions(a) => super::generate::completions(a),
        Command::Man(a) => super::generate::man(a),
    }
}

pub(super) fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// `--json` prints to stdout, so it cannot share stdout with the data a command writes there.
fn refuse_json_with_stdout(json: bool, to_stdout: bool, what: &str) -> Result<()> {
    if json && to_stdout {
        anyhow::bail!(Error::InvalidArgument(format!(
            "--json prints on stdout, where the {what} goes: give an output file (-o FILE), or leave out --json"
        )));
    }
    Ok(())
}

fn pack(mut a: PackArgs) -> Result<()> {
    a.output = a.output_flag.or(a.output.take());
    if a.recursive {
        return super::many::pack_tree(a);
    }
    let from_stdin = is_dash(&a.input);
    let url = a.input.to_str().filter(|s| qeltrix::url_input::is_url(s));
    let output = match &a.output {
        Some(o) => o.clone(),
        None if from_stdin => anyhow::bail!(Error::InvalidArgument(
            "packing stdin needs an OUTPUT (a file, or - for stdout)".into()
        )),
        None if url.is_some() => match url.and_then(qeltrix::url_input::file_name) {
            Some(name) => naming::container_name(name).into(),
            None => anyhow::bail!(Error::InvalidArgument(
                "the URL names no file: give an OUTPUT".into()
            )),
        },
        None => naming::container_name(&a.input).into(),
    };
    // `pack f dir/` writes dir/f.qltx (and `pack f s3://bucket/vault/` writes vault/f.qltx).
    let output = match (location::is_folder(&output)?, Path::new(&a.input).file_name()) {
        (true, Some(name)) if !from_stdin && url.is_none() => output.join(naming::container_name(name)),
        _ => output,
    };
    let to_stdout = is_dash(&output);
    refuse_json_with_stdout(a.json, to_stdout, "container")?;
    if to_stdout && io::stdout().is_terminal() {
        anyhow::bail!(Error::InvalidArgument(
            "refusing to write a container to a terminal".into()
        ));
    }
    let mut opts = PackOptions {
        no_verify_hint: a.no_verify,
        signer: a.sign.as_deref().map(super::keys::read_signer_key).transpose()?,
        ..a.packing.options()?
    };
    if !a.force && !to_stdout && location::exists(&output)? {
        anyhow::bail!(Error::Exists {
            path: output.to_path_buf()
        });
    }
    let (storage, output_path) = location::object(&output)?;

    if a.flush_after.is_some() && !from_stdin {
        anyhow::bail!(Error::InvalidArgument(
            "--flush-after applies to a stream on stdin (`pack -`)".into()
        ));
    }
    let (mut input, total): (Box<dyn io::Read>, Option<u64>) = if from_stdin {
        (Box::new(io::stdin().lock()), None)
    } else if let Some(url) = url {
        let download = qeltrix::url_input::open_url(url)?;
        (download.body, download.len)
    } else {
        let f = File::open(&a.input).with_context(|| format!("{}: opening the input", a.input.display()))?;
        let metadata = f.metadata().ok();
        // A file's name, mode and mtime go into the file record (stdin and URLs have none).
        opts.file_meta = metadata
            .as_ref()
            .filter(|m| m.is_file())
            .map(|m| qeltrix::file_record::FileMeta::from_file(&a.input, m));
        (Box::new(f), metadata.map(|m| m.len()))
    };
    let keys = a.keys.for_packing(
        from_stdin,
        (!to_stdout).then_some(output.as_path()),
        &a.packing.recipients,
    )?;
    super::keys::warn_kdf_cost_for(&keys, a.packing.kdf_iterations);
    let pb = bar(total, a.quiet);
    if let Some(t) = total {
        pb.set_message(format!("{} blocks", t.div_ceil(opts.block_size as u64)));
    }
    let started = Instant::now();
    let (summary, stopped) = if from_stdin {
        // A stream: fed as it arrives, sealed on SIGINT/SIGTERM, partial blocks flushed.
        let flush_after = a.flush_after.map(std::time::Duration::from_millis);
        let mut stopped = None;
        let summary = if to_stdout {
            let mut packer = stdout_packer(&keys, &opts)?;
            stopped = feed_stream(&mut packer, flush_after, &pb)?;
            packer.finish()?.1
        } else {
            let fill = |packer: &mut dyn qeltrix::ops::Packer| {
                stopped = feed_stream(packer, flush_after, &pb)?;
                Ok(())
            };
            qeltrix::ops::pack_with(&*storage, &output_path, &keys, &opts, a.force, fill)?
        };
        (summary, stopped)
    } else {
        let mut input = pb.wrap_read(&mut input);
        let summary = if to_stdout {
            let mut packer = stdout_packer(&keys, &opts)?;
            packer.pack_from(&mut input)?;
            packer.finish()?.1
        } else {
            qeltrix::ops::pack_in(&*storage, &mut input, &output_path, &keys, &opts, a.force).map_err(
                |e| {
                    // Option errors (a bad recipient, a cipher setting) are not about the input file.
                    if matches!(
                        e,
                        Error::InFile { .. } | Error::InvalidArgument(_) | Error::Exists { .. }
                    ) {
                        e
                    } else {
                        e.in_file(&a.input)
                    }
                },
            )?
        };
        (summary, None)
    };
    pb.finish_and_clear();
    if a.json {
        let mut doc = pack_json(&a.input, &output, &summary, started);
        if let Some(signal) = stopped {
            doc["stopped_by_signal"] = signal.into();
        }
        outln!("{doc}");
    } else if !a.quiet {
        print_pack_summary(&a.input, &output, &summary, started);
    }
    match stopped {
        Some(signal) => {
            if !a.quiet {
                eprintln!(
                    "Stopped by signal {signal}: the stream so far is sealed into a complete container."
                );
            }
            Err(Stopped(signal).into())
        }
        None => Ok(()),
    }
}

/// What `pack --json` prints about a container it wrote to the file `output`: the summary, and
/// the cipher, block size and key slots as the file's header states them.
pub(super) fn pack_json(
    input: &Path,
    output: &Path,
    s: &qeltrix::PackSummary,
    started: Instant,
) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "input": input.display().to_string(),
        "output": output.display().to_string(),
        "original_size": s.original_size,
        "container_size": s.container_size,
        "blocks": s.blocks,
        "compressed_blocks": s.compressed_blocks,
        "container_id": hex::encode(s.container_id),
        "seconds": started.elapsed().as_secs_f64(),
    });
    // The header was just written and committed: reading it back cannot disagree with it.
    if let Ok(info) = open_object(output).and_then(|o| ContainerInfo::read(&o)) {
        doc["cipher"] = info.header.cipher.name().into();
        doc["block_size"] = info.header.block_size.into();
        doc["key_slots"] = slots_json(&info).into();
    }
    doc
}

/// A container's key slots as `info --json` and `rekey --list --json` show them.
pub(super) fn slots_json(info: &ContainerInfo) -> Vec<serde_json::Value> {
    info.slots
        .slots
        .iter()
        .map(|s| match s.kind {
            qeltrix::format::SlotKind::Passphrase => {
                serde_json::json!({"type": s.kind.name(), "kdf": "PBKDF2-HMAC-SHA256", "iterations": s.param})
            }
            _ => serde_json::json!({"type": s.kind.name()}),
        })
        .collect()
}

/// A container's bytes, through the storage seam: a local path as given, or a remote location.
pub(super) fn open_object(path: &Path) -> std::result::Result<Object, Error> {
    let (storage, at) = location::object(path)?;
    storage
        .open(&at)
        .map_err(|e| Error::io("opening", e).in_file(path))
}

pub(super) fn open(path: &Path, keys: &KeyArgs) -> Result<Container<Object>> {
    // Check the structure first so a truncated or foreign file is reported before a prompt.
    let object = open_object(path)?;
    let info = ContainerInfo::read(&object).map_err(|e| e.in_file(path))?;
    Ok(Container::from_info(object, info, &keys.for_reading_at(Some(path))?).map_err(|e| e.in_file(path))?)
}

/// Where `unpack` writes: OUTPUT as given, the plaintext name inside OUTPUT when it is a folder,
/// and without OUTPUT the input's name without `.qltx`, beside it.
fn unpack_output(a: &UnpackArgs) -> Result<PathBuf> {
    let plain_name = || {
        a.input
            .file_name()
            .and_then(naming::plaintext_name)
            .map(std::ffi::OsStr::to_os_string)
    };
    let no_name = || {
        Error::InvalidArgument(format!(
            "{} does not end in .qltx, so there is no default output name: give an OUTPUT",
            a.input.display()
        ))
    };
    Ok(match &a.output {
        Some(o) if o.is_dir() => o.join(plain_name().ok_or_else(no_name)?),
        Some(o) => o.clone(),
        // From a remote location: into the current folder.
        None if location::is_remote(&a.input) => PathBuf::from(plain_name().ok_or_else(no_name)?),
        None => a.input.with_file_name(plain_name().ok_or_else(no_name)?),
    })
}

fn unpack(mut a: UnpackArgs) -> Result<()> {
    a.output = a.output_flag.or(a.output.take());
    let output = unpack_output(&a)?;
    let to_stdout = is_dash(&output);
    refuse_json_with_stdout(a.json, to_stdout, "plaintext")?;
    if !a.force && !to_stdout && output.exists() {
        anyhow::bail!(Error::Exists { path: output.clone() });
    }
    let container = Arc::new(open(&a.input, &a.keys)?);
    let pb = bar(Some(container.len()), a.quiet);
    pb.set_message(format!("{} blocks", container.block_count()));
    let progress = |n| pb.inc(n);
    let verify = !a.no_verify;
    let started = Instant::now();
    let written = if to_stdout {
        let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
        let n = container
            .unpack_to(
                &mut out,
                verify,
                location::workers_for(&a.input, a.workers),
                &progress,
            )
            .map_err(|e| e.in_file(&a.input))?;
        out.flush().map_err(|e| Error::io("writing stdout", e))?;
        n
    } else {
        let opts = UnpackOptions {
            verify,
            workers: location::workers_for(&a.input, a.workers),
            overwrite: a.force,
        };
        qeltrix::unpack_container(&container, &a.input, &output, &opts, &progress)?
    };
    pb.finish_and_clear();
    if a.json {
        let doc = serde_json::json!({
            "input": a.input.display().to_string(),
            "output": output.display().to_string(),
            "original_size": written,
            "blocks": container.block_count(),
            "hash_checked": verify,
            "seconds": started.elapsed().as_secs_f64(),
        });
        outln!("{doc}");
    } else if !a.quiet {
        let mut msg = io::stderr();
        let _ = writeln!(
            msg,
            "Unpacked {} -> {}: {} in {} blocks, {}\nIntegrity: OK{}",
            a.input.display(),
            output.display(),
            size(written),
            container.block_count(),
            speed(written, started.elapsed()),
            if verify {
                ""
            } else {
                " (AEAD only; content hash checks skipped)"
            }
        );
    }
    Ok(())
}

fn seek(a: SeekArgs) -> Result<()> {
    let container = open(&a.input, &a.keys)?;
    let in_file = |e: Error| e.in_file(&a.input);
    let len = container.len();
    if a.offset >= len && a.length > 0 {
        eprintln!(
            "warning: offset {} is at or past the end of {} ({len} bytes): nothing to read",
            a.offset,
            a.input.display()
        );
    } else if a.length > len - a.offset {
        eprintln!(
            "warning: {} ends {} bytes after offset {}: {} of the {} bytes asked for are read",
            a.input.display(),
            len - a.offset,
            a.offset,
            len - a.offset,
            a.length
        );
    }
    match a.output.as_deref() {
        Some(p) if is_dash(p) => {
            let mut out = BufWriter::new(io::stdout().lock());
            container
                .write_range(a.offset, a.length, &mut out)
                .map_err(in_file)?;
            out.flush().map_err(|e| Error::io("writing stdout", e))?;
        }
        Some(p) => {
            let mut out = AtomicOutput::create(p, a.force)?;
            let n = container
                .write_range(a.offset, a.length, out.file())
                .map_err(in_file)?;
            out.commit().map_err(|e| e.in_file(p))?;
            eprintln!("Wrote {n} bytes from offset {} to {}", a.offset, p.display());
        }
        None => {
            let bytes = container
                .seek_extract(a.offset, a.length.min(64))
                .map_err(in_file)?;
            let available = container.len().saturating_sub(a.offset).min(a.length);
            outln!(
                "{available} bytes at offset {} of {} (showing the first {})",
                a.offset,
                container.len(),
                bytes.len()
            );
            out!("{}", hex_dump(&bytes, a.offset));
        }
    }
    Ok(())
}

/// `offset  hex bytes  |ascii|`, 16 bytes a line.
fn hex_dump(bytes: &[u8], base: u64) -> String {
    let mut s = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = line
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        s.push_str(&format!(
            "{:08x}  {:<47}  |{ascii}|\n",
            base + i as u64 * 16,
            hex.join(" ")
        ));
    }
    s
}

fn keygen(a: KeygenArgs) -> Result<()> {
    let entropy = qeltrix::crypto::SystemEntropy;
    if is_dash(&a.output) {
        // The key itself on stdout (for a secret store or a pipe); anything else on stderr.
        if a.x25519 {
            let id = qeltrix::crypto::IdentityKey::generate(&entropy);
            out!("{}", id.to_file_text().as_str());
            eprintln!("Public recipient: {}", id.recipient());
        } else if a.ed25519 {
            let key = qeltrix::crypto::SignerKey::generate(&entropy);
            out!("{}", key.to_file_text().as_str());
            eprintln!("Public signer: {}", key.public());
        } else {
            out!(
                "{}",
                qeltrix::crypto::KeyFileKey::generate(&entropy)
                    .to_file_text()
                    .as_str()
            );
        }
        return Ok(());
    }
    if a.x25519 {
        let id = qeltrix::crypto::IdentityKey::generate(&entropy);
        write_secret_file(&a.output, id.to_file_text().as_bytes(), a.force)?;
        eprintln!(
            "Wrote a new X25519 identity to {} (mode 0600). Its public recipient:",
            a.output.display()
        );
        outln!("{}", id.recipient());
        return Ok(());
    }
    if a.ed25519 {
        let key = qeltrix::crypto::SignerKey::generate(&entropy);
        write_secret_file(&a.output, key.to_file_text().as_bytes(), a.force)?;
        eprintln!(
            "Wrote a new Ed25519 signing key to {} (mode 0600). Its public signer, for \
             `verify --signer`:",
            a.output.display()
        );
        outln!("{}", key.public());
        return Ok(());
    }
    let key = qeltrix::crypto::KeyFileKey::generate(&entropy);
    write_secret_file(&a.output, key.to_file_text().as_bytes(), a.force)?;
    eprintln!(
        "Wrote a new 256-bit key to {} (mode 0600). Keep a copy: without it the data is lost.",
        a.output.display()
    );
    Ok(())
}

/// Writes a new file with mode 0600 from the start (never briefly readable by others), all or
/// nothing: on a full disk or a signal the old file, if any, is still there.
pub(super) fn write_secret_file(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    Ok(qeltrix::atomic::write_file(path, bytes, force)?)
}

/// A packer writing its container to stdout, a stream (the header is never patched).
pub(super) fn stdout_packer(
    keys: &[qeltrix::Recipient],
    opts: &PackOptions,
) -> qeltrix::Result<StreamPacker<BufWriter<io::StdoutLock<'static>>>> {
    StreamPacker::new(BufWriter::with_capacity(1 << 20, io::stdout().lock()), keys, opts)
}

/// Most bytes taken from the pipe after a stop signal: what had arrived before it.
const MAX_DRAIN: usize = 16 << 20;

/// Feeds stdin into `packer` as it arrives, until end of input or SIGINT/SIGTERM. On a signal,
/// what is already in the pipe is taken too (it arrived before the signal), and the signal is
/// returned: the caller seals the container as usual. With `flush_after`, a partial block is
/// sealed once no input came for that long.
fn feed_stream(
    packer: &mut dyn qeltrix::ops::Packer,
    flush_after: Option<std::time::Duration>,
    progress: &indicatif::ProgressBar,
) -> qeltrix::Result<Option<i32>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    let setup = |e| Error::io("watching for SIGINT and SIGTERM", e);
    let (wake, waker) = std::os::unix::net::UnixStream::pair().map_err(setup)?;
    let (int, term) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let mut handlers = Vec::new();
    for (signal, flag) in [(SIGINT, &int), (SIGTERM, &term)] {
        handlers.push(signal_hook::flag::register(signal, Arc::clone(flag)).map_err(setup)?);
        let waker = waker.try_clone().map_err(setup)?;
        handlers.push(signal_hook::low_level::pipe::register(signal, waker).map_err(setup)?);
    }
    // A descriptor of our own: the locked `Stdin` buffers, and poll must see every byte.
    let stdin = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("reading stdin", e))?;
    let mut stdin = File::from(stdin);
    // SIGINT and SIGTERM seal the stream: the output's signal cleanup must not remove it (nor
    // abort its upload) while it is sealed and committed, however late it takes the signal.
    qeltrix::storage::atomic::caller_handles_stop_signals();
    let result = pump(packer, &mut stdin, &wake, flush_after, progress, || {
        if term.load(Ordering::SeqCst) {
            Some(SIGTERM)
        } else if int.load(Ordering::SeqCst) {
            Some(SIGINT)
        } else {
            None
        }
    });
    for handler in handlers {
        signal_hook::low_level::unregister(handler);
    }
    result
}

fn pump(
    packer: &mut dyn qeltrix::ops::Packer,
    stdin: &mut File,
    wake: &std::os::unix::net::UnixStream,
    flush_after: Option<std::time::Duration>,
    progress: &indicatif::ProgressBar,
    signalled: impl Fn() -> Option<i32>,
) -> qeltrix::Result<Option<i32>> {
    use qeltrix::sys::poll::readable;
    use std::io::Read;
    use std::os::fd::AsFd;
    let read_error = |e| Error::io("reading stdin", e);
    let mut buf = vec![0u8; 1 << 16];
    let mut pending = false;
    loop {
        let timeout = if pending { flush_after } else { None };
        let ready = readable(&[stdin.as_fd(), wake.as_fd()], timeout).map_err(read_error)?;
        if let Some(signal) = signalled() {
            let mut drained = 0;
            while drained < MAX_DRAIN
                && readable(&[stdin.as_fd()], Some(std::time::Duration::ZERO)).map_err(read_error)?[0]
            {
                let n = stdin.read(&mut buf).map_err(read_error)?;
                if n == 0 {
                    break;
                }
                packer.write_all(&buf[..n]).map_err(|e| Error::io("packing", e))?;
                progress.inc(n as u64);
                drained += n;
            }
            return Ok(Some(signal));
        }
        if ready[0] {
            let n = match stdin.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            if n == 0 {
                return Ok(None);
            }
            packer.write_all(&buf[..n]).map_err(|e| Error::io("packing", e))?;
            progress.inc(n as u64);
            pending = true;
        } else if pending && !ready[1] {
            packer.flush_block()?;
            pending = false;
        }
    }
}
