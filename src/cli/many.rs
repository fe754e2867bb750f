//! Commands over many files: `pack -r` (a folder tree packed in parallel into a mirrored tree of
//! containers) and `info` / `verify` of several containers or whole vault folders. One item's
//! failure is reported, naming its file, and the others go on; the exit code is then the highest
//! of the failures' codes ([`Failed`]).
//!
//! Output shapes, for scripts:
//! - text: one line per item, then a summary line;
//! - `--json`: one compact JSON object per item, one per line (JSON lines), in the order the items
//!   were given and, inside a folder, in name order. A failed item is an object with an `error`
//!   (its message) and an `exit_code`. One container given as a file keeps the single-file output:
//!   `info --json` its pretty-printed object, as before.

use super::commands::{open_object, pack_json, slots_json};
use super::progress::{bar, size, speed};
use super::*;
use anyhow::{Context, Result};
use qeltrix::crypto::SignerPublic;
use qeltrix::format::{FLAG_NO_VERIFY, FLAG_STREAMING};
use qeltrix::reader::{Container, ContainerInfo};
use qeltrix::sign::SignatureStatus;
use qeltrix::vault::{naming, Vault};
use qeltrix::writer::{PackOptions, PackSummary};
use qeltrix::{Error, Key};
use rayon::prelude::*;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The exit code of one item's failure, by the contract of [`exit_code`].
fn code_of(e: &anyhow::Error) -> u8 {
    exit_code(e.chain().find_map(|c| c.downcast_ref::<qeltrix::Error>()))
}

/// An item's failure as one line: the error's text, which names the file; prefixed with `path`
/// where it does not (a key that could not be read, say).
fn failure_text(path: &Path, e: &anyhow::Error) -> String {
    let text = error_text(e);
    let shown = path.display().to_string();
    if text.starts_with(&shown) {
        text
    } else {
        format!("{shown}: {text}")
    }
}

fn warn(quiet: bool, text: std::fmt::Arguments<'_>) {
    if !quiet {
        eprintln!("warning: {text}");
    }
}

/// The items' failures so far, the worst exit code among them, and the first failure.
#[derive(Default)]
struct Tally {
    failed: usize,
    code: u8,
    first: Option<anyhow::Error>,
}

impl Tally {
    fn add(&mut self, e: anyhow::Error) {
        self.failed += 1;
        self.code = self.code.max(code_of(&e));
        self.first.get_or_insert(e);
    }

    /// As [`Tally::finish`], but when the arguments came to one item and it failed, its own
    /// error: a folder holding one bad container, or none, fails as a single file would.
    fn finish_or_only(mut self, total: usize, items: &'static str) -> Result<()> {
        match self.first.take() {
            Some(only) if total == 1 => Err(only),
            first => {
                self.first = first;
                self.finish(total, items)
            }
        }
    }

    fn finish(self, total: usize, items: &'static str) -> Result<()> {
        if self.failed == 0 {
            return Ok(());
        }
        Err(Failed {
            failed: self.failed,
            total,
            items,
            code: self.code.max(EXIT_FAILURE),
        }
        .into())
    }
}

// ---------------------------------------------------------------------------------------------
// pack -r

/// One regular file of the tree and the container it becomes.
struct Job {
    input: PathBuf,
    output: PathBuf,
    size: u64,
}

/// `pack -r DIR VAULT`: every regular file DIR/a/b becomes VAULT/a/b.qltx (the vault's naming
/// rule), packed in parallel, each all or nothing. Links are not followed, and special files and
/// hidden names (which no vault front end would show) are skipped, each with a warning. Existing
/// outputs are refused before anything is written (`--force` replaces them).
pub(super) fn pack_tree(a: PackArgs) -> Result<()> {
    let bad = |text: String| -> Result<()> { Err(Error::InvalidArgument(text).into()) };
    let Some(dest) = a.output.clone() else {
        return bad("pack -r needs an OUTPUT folder to mirror the input folder into".into());
    };
    if dest.as_os_str() == "-" {
        return bad("pack -r writes a folder of containers: OUTPUT cannot be stdout (-)".into());
    }
    if a.flush_after.is_some() {
        return bad("--flush-after applies to a stream on stdin (`pack -`), not to pack -r".into());
    }
    if !a.input.is_dir() {
        return bad(format!(
            "{}: not a folder (pack -r packs the files under a folder)",
            a.input.display()
        ));
    }
    if dest.exists() && !dest.is_dir() {
        return bad(format!("{}: not a folder", dest.display()));
    }
    let opts = PackOptions {
        no_verify_hint: a.no_verify,
        signer: a.sign.as_deref().map(super::keys::read_signer_key).transpose()?,
        ..a.packing.options()?
    };

    let mut walk = Walk {
        root: &a.input,
        dest: &dest,
        // Packing a folder into a vault inside it must not pack the vault itself.
        skip: fs::metadata(&dest).ok().map(|m| (m.dev(), m.ino())),
        quiet: a.quiet,
        jobs: Vec::new(),
        unlisted: Vec::new(),
    };
    walk.folder(Path::new(""));
    let Walk { jobs, unlisted, .. } = walk;

    if !a.force {
        let existing: Vec<String> = jobs
            .iter()
            .filter(|j| fs::symlink_metadata(&j.output).is_ok())
            .map(|j| j.output.display().to_string())
            .collect();
        if !existing.is_empty() {
            const SHOWN: usize = 10;
            let more = if existing.len() > SHOWN {
                format!(" and {} more", existing.len() - SHOWN)
            } else {
                String::new()
            };
            return bad(format!(
                "{} output{} exist{}: {}{more}; use --force to overwrite them (nothing was written)",
                existing.len(),
                if existing.len() == 1 { "" } else { "s" },
                if existing.len() == 1 { "s" } else { "" },
                existing[..existing.len().min(SHOWN)].join(", ")
            ));
        }
    }

    let keys = a.keys.for_packing(false, Some(&dest), &a.packing.recipients)?;
    super::keys::warn_kdf_cost_for(&keys, a.packing.kdf_iterations);
    fs::create_dir_all(&dest).map_err(|e| Error::io("creating the folder", e).in_file(&dest))?;

    // Files run in parallel, each sealing its blocks on its share of the threads, so the total
    // stays near --workers (or the core count) instead of growing to cores × files.
    let threads = match a.packing.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let parallel_files = threads.min(jobs.len()).max(1);
    let opts = PackOptions {
        workers: (threads / parallel_files).max(1),
        ..opts
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(parallel_files)
        .thread_name(|i| format!("pack-file-{i}"))
        .panic_handler(qeltrix::pipeline::pool_panic_handler)
        .build()
        .context("starting the packing threads")?;

    let pb = bar(Some(jobs.iter().map(|j| j.size).sum()), a.quiet);
    pb.set_message(format!("{} files", jobs.len()));
    let started = Instant::now();
    let results: Vec<Result<(PackSummary, Instant)>> = pool.install(|| {
        jobs.par_iter()
            .map(|job| {
                let started = Instant::now();
                let result = pack_file(job, &keys, &opts, a.force, &pb).map(|s| (s, started));
                if let Err(e) = &result {
                    pb.suspend(|| eprintln!("qeltrix: error: {}", failure_text(&job.input, e)));
                }
                result
            })
            .collect()
    });
    pb.finish_and_clear();

    let mut tally = Tally::default();
    let (mut plain, mut packed) = (0u64, 0u64);
    let total = jobs.len() + unlisted.len();
    for (path, e) in unlisted {
        if a.json {
            outln!("{}", failure_json("input", &path, &e));
        }
        tally.add(e);
    }
    for (job, result) in jobs.iter().zip(results) {
        match result {
            Ok((summary, file_started)) => {
                plain += summary.original_size;
                packed += summary.container_size;
                if a.json {
                    outln!("{}", pack_json(&job.input, &job.output, &summary, file_started));
                }
            }
            Err(e) => {
                if a.json {
                    let mut doc = failure_json("input", &job.input, &e);
                    doc["output"] = job.output.display().to_string().into();
                    outln!("{doc}");
                }
                tally.add(e);
            }
        }
    }
    if !a.quiet && !a.json {
        eprintln!(
            "Packed {} of {} files from {} into {}: {} -> {} in {:.2} s ({})",
            total - tally.failed,
            total,
            a.input.display(),
            dest.display(),
            size(plain),
            size(packed),
            started.elapsed().as_secs_f64(),
            speed(plain, started.elapsed()),
        );
    }
    tally.finish(total, "files")
}

/// The walk of the input tree: the files to pack, and the folders that could not be listed.
struct Walk<'a> {
    root: &'a Path,
    dest: &'a Path,
    skip: Option<(u64, u64)>,
    quiet: bool,
    jobs: Vec<Job>,
    unlisted: Vec<(PathBuf, anyhow::Error)>,
}

impl Walk<'_> {
    /// The folder `rel` (relative to the root), in name order.
    fn folder(&mut self, rel: &Path) {
        let dir = self.root.join(rel);
        let mut entries = match fs::read_dir(&dir).and_then(|d| d.collect::<io::Result<Vec<_>>>()) {
            Ok(entries) => entries,
            Err(e) => {
                let e = anyhow::Error::from(Error::io("listing the folder", e).in_file(&dir));
                eprintln!("qeltrix: error: {}", error_text(&e));
                self.unlisted.push((dir, e));
                return;
            }
        };
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let path = entry.path();
            if !naming::is_shown(&name) {
                warn(
                    self.quiet,
                    format_args!(
                        "skipping {}: a hidden name (or one with a backslash), which a vault never shows",
                        path.display()
                    ),
                );
                continue;
            }
            // The entry itself, not what a link points to.
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    let e = anyhow::Error::from(Error::io("reading the metadata", e).in_file(&path));
                    eprintln!("qeltrix: error: {}", error_text(&e));
                    self.unlisted.push((path, e));
                    continue;
                }
            };
            let kind = meta.file_type();
            if self.skip == Some((meta.dev(), meta.ino())) {
                warn(
                    self.quiet,
                    format_args!("skipping {}: it is the output folder", path.display()),
                );
            } else if kind.is_dir() {
                self.folder(&rel.join(&name));
            } else if kind.is_file() {
                self.jobs.push(Job {
                    input: path,
                    output: self.dest.join(rel).join(naming::container_name(&name)),
                    size: meta.len(),
                });
            } else if kind.is_symlink() {
                warn(
                    self.quiet,
                    format_args!("skipping {}: a symbolic link (not followed)", path.display()),
                );
            } else {
                warn(
                    self.quiet,
                    format_args!("skipping {}: not a regular file", path.display()),
                );
            }
        }
    }
}

/// Packs one file of the tree, creating its folder first.
fn pack_file(
    job: &Job,
    keys: &[qeltrix::Recipient],
    opts: &PackOptions,
    force: bool,
    pb: &indicatif::ProgressBar,
) -> Result<PackSummary> {
    if let Some(parent) = job.output.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("creating the folder", e).in_file(parent))?;
    }
    let file = File::open(&job.input).map_err(|e| Error::io("opening the input", e).in_file(&job.input))?;
    // Each file's name, mode and mtime go into its file record.
    let opts = &PackOptions {
        file_meta: file
            .metadata()
            .ok()
            .map(|m| qeltrix::file_record::FileMeta::from_file(&job.input, &m)),
        ..opts.clone()
    };
    let mut input = pb.wrap_read(file);
    qeltrix::pack_reader(&mut input, &job.output, keys, opts, force).map_err(|e| {
        // Errors about the output already name it; the rest are about reading the input.
        match e {
            Error::InFile { .. } | Error::Exists { .. } | Error::InvalidArgument(_) => e.into(),
            e => e.in_file(&job.input).into(),
        }
    })
}

/// A failed item as a JSON object: `{KEY: path, "error": text, "exit_code": n}`.
fn failure_json(key: &str, path: &Path, e: &anyhow::Error) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "error": failure_text(path, e),
        "exit_code": code_of(e),
    });
    doc[key] = path.display().to_string().into();
    doc
}

// ---------------------------------------------------------------------------------------------
// info and verify of many containers

/// The containers the arguments name: a file as given; a folder, every container the vault scan
/// finds in it and its subfolders (name order, a folder's containers before its subfolders), and
/// also those a same-named folder hides from the front ends. A folder that cannot be listed, or
/// that holds no container, is an `Err` item naming it.
fn containers(inputs: &[PathBuf]) -> Vec<(PathBuf, Result<()>)> {
    let mut out = Vec::new();
    for input in inputs {
        if !is_folder(input) {
            out.push((input.clone(), Ok(())));
            continue;
        }
        let before = out.len();
        let vault = if super::location::is_remote(input) {
            super::location::vault(input).map(|(vault, _)| vault)
        } else {
            Vault::local(input).map_err(|e| Error::io("opening the folder", e).in_file(input))
        };
        // Every container of the vault, dot-named ones included (the mount shows and makes them).
        let vault = match vault {
            Ok(v) => v.with_dot_names(),
            Err(e) => {
                out.push((input.clone(), Err(e.into())));
                continue;
            }
        };
        let mut folders = vec![PathBuf::new()];
        while let Some(folder) = folders.pop() {
            match vault.list(&folder) {
                Ok(listing) => {
                    let mut found: Vec<_> = listing.containers.iter().chain(&listing.shadowed).collect();
                    found.sort_by(|x, y| x.path.cmp(&y.path));
                    out.extend(found.into_iter().map(|c| (input.join(&c.path), Ok(()))));
                    folders.extend(listing.folders.into_iter().rev().map(|f| f.path));
                }
                Err(e) => {
                    let path = input.join(&folder);
                    let e = Error::io("listing the folder", e).in_file(&path);
                    out.push((path, Err(e.into())));
                }
            }
        }
        if out.len() == before {
            // Nothing to show or verify is not success: most likely the wrong folder.
            let e = Error::io(
                "no container in this folder or below it",
                io::Error::from(io::ErrorKind::IsADirectory),
            );
            out.push((input.clone(), Err(e.in_file(input).into())));
        }
    }
    out
}

/// True when the arguments are one container file: the single-file output, as before.
fn single_file(inputs: &[PathBuf]) -> bool {
    inputs.len() == 1 && !is_folder(&inputs[0])
}

/// A local folder, or a remote prefix (ending in `/`, or with objects under it). A remote
/// location that cannot be reached counts as a container, whose opening then says why.
fn is_folder(path: &Path) -> bool {
    super::location::is_folder(path).unwrap_or(false)
}

/// A container's structure (no key needed).
fn read_info(path: &Path) -> Result<(qeltrix::storage::Object, ContainerInfo)> {
    let object = open_object(path)?;
    let info = ContainerInfo::read(&object).map_err(|e| e.in_file(path))?;
    Ok((object, info))
}

pub(super) fn info(a: InfoArgs) -> Result<()> {
    if single_file(&a.inputs) {
        let path = &a.inputs[0];
        let (object, info) = read_info(path)?;
        let sig = signature_status(path, &object, &info)?;
        if a.json {
            outln!(
                "{}",
                serde_json::to_string_pretty(&info_json(path, &info, &sig)).expect("JSON values serialize")
            );
        } else {
            out!("{}", info_text(path, &info, &sig));
        }
        return Ok(());
    }
    let found = containers(&a.inputs);
    let total = found.len();
    let mut tally = Tally::default();
    let (mut plain, mut stored) = (0u64, 0u64);
    for (path, listed) in found {
        let read = listed.and_then(|()| {
            let (object, info) = read_info(&path)?;
            let sig = signature_status(&path, &object, &info)?;
            Ok((info, sig))
        });
        match read {
            Ok((info, sig)) => {
                plain += info.original_size();
                stored += info.container_size;
                if a.json {
                    outln!("{}", info_json(&path, &info, &sig));
                } else {
                    outln!("{}", info_line(&path, &info, &sig));
                }
            }
            Err(e) => {
                if a.json {
                    outln!("{}", failure_json("file", &path, &e));
                } else {
                    outln!("FAILED: {}", failure_text(&path, &e));
                }
                tally.add(e);
            }
        }
    }
    if !a.json {
        outln!(
            "{} containers: {} of plaintext in {}{}",
            total - tally.failed,
            size(plain),
            size(stored),
            if tally.failed > 0 {
                format!("; {} could not be read", tally.failed)
            } else {
                String::new()
            }
        );
    }
    tally.finish_or_only(total, "containers")
}

/// The flags a container's header sets, by name.
fn flag_names(info: &ContainerInfo) -> Vec<&'static str> {
    let mut flags = Vec::new();
    if info.header.flags & FLAG_STREAMING != 0 {
        flags.push("streaming");
    }
    if info.header.flags & FLAG_NO_VERIFY != 0 {
        flags.push("no-verify");
    }
    flags
}

fn compressed_blocks(info: &ContainerInfo) -> usize {
    info.footer
        .entries
        .iter()
        .filter(|e| e.len < e.plain_size + qeltrix::format::BLOCK_OVERHEAD)
        .count()
}

fn overhead(info: &ContainerInfo) -> i128 {
    info.container_size as i128 - info.original_size() as i128
}

/// What a container's signature says (reading its footer again).
fn signature_status(
    path: &Path,
    object: &qeltrix::storage::Object,
    info: &ContainerInfo,
) -> Result<SignatureStatus> {
    Ok(qeltrix::sign::signature_status(object, info).map_err(|e| e.in_file(path))?)
}

/// `info --json`'s signature fields: `signature` ("valid", "invalid" or "none"), `signer` (the
/// key a valid or invalid record names) and `signature_problem`.
fn signature_json(sig: &SignatureStatus) -> (&'static str, Option<String>, Option<String>) {
    match sig {
        SignatureStatus::Unsigned => ("none", None, None),
        SignatureStatus::Valid(k) => ("valid", Some(k.to_string()), None),
        SignatureStatus::Invalid { signer, reason } => {
            ("invalid", signer.map(|k| k.to_string()), Some(reason.clone()))
        }
    }
}

/// `info --json` of one container.
fn info_json(path: &Path, info: &ContainerInfo, sig: &SignatureStatus) -> serde_json::Value {
    let h = &info.header;
    let (signature, signer, signature_problem) = signature_json(sig);
    serde_json::json!({
        "file": path.display().to_string(),
        "format_version": info.version().number(),
        "root": info.root().map(hex::encode),
        "signature": signature,
        "signer": signer,
        "signature_problem": signature_problem,
        "flags": flag_names(info),
        "cipher": h.cipher.name(),
        "block_size": h.block_size,
        "blocks": info.block_count(),
        "compressed_blocks": compressed_blocks(info),
        "original_size": info.original_size(),
        "container_size": info.container_size,
        "footer_offset": info.trailer.footer_offset,
        "footer_size": info.trailer.footer_size,
        "overhead_bytes": overhead(info),
        "container_id": hex::encode(h.container_id),
        "key_slot_area_sequence": info.slots.sequence,
        "key_slots": slots_json(info),
        "stale_key_slot_area": h.has_stale_slot_area(),
        "generation": generation(info),
        "superseded_bytes": superseded(info),
        "patches": info.chain.as_ref().map(|c| c.patches.len()),
        "patched_pages": info.chain.as_ref().map(|c| c.overlay.len()),
    })
}

/// A version-3 or -4 container's current generation.
fn generation(info: &ContainerInfo) -> Option<u64> {
    info.generation()
}

/// A version-3 or -4 container's bytes that no current block, unit or footer holds:
/// superseded block versions and units, earlier footers, a torn tail.
fn superseded(info: &ContainerInfo) -> Option<u64> {
    let tip = info.tip()?;
    Some(info.superseded_bytes() + info.container_size.saturating_sub(tip.end))
}

/// A container's key slots in words: `#0 key-file`, `#1 passphrase (…)`.
fn slot_words(info: &ContainerInfo) -> Vec<String> {
    info.slots
        .slots
        .iter()
        .enumerate()
        .map(|(i, s)| match s.kind {
            qeltrix::format::SlotKind::Passphrase => {
                format!("#{i} passphrase (PBKDF2-HMAC-SHA256, {} iterations)", s.param)
            }
            _ => format!("#{i} {}", s.kind.name()),
        })
        .collect()
}

/// `info` of one container, in full.
fn info_text(path: &Path, info: &ContainerInfo, sig: &SignatureStatus) -> String {
    let h = &info.header;
    let flags = flag_names(info);
    let overhead = overhead(info);
    let pct = if info.original_size() > 0 {
        format!(
            " ({:+.3}%)",
            overhead as f64 * 100.0 / info.original_size() as f64
        )
    } else {
        String::new()
    };
    let mut text = format!(
        "File:           {}\nFormat:         Qeltrix container v{}{}\n{}{}Cipher:         {}\nBlock size:     {}\nBlocks:         {} ({} compressed)\nOriginal size:  {} ({} bytes)\nContainer size: {} ({} bytes)\nOverhead:       {} bytes{pct}\nFooter:         {} bytes at offset {}\nContainer id:   {}\nKey slots:      {}\n",
        path.display(),
        info.version().number(),
        if flags.is_empty() { String::new() } else { format!(" [{}]", flags.join(", ")) },
        match info.root() {
            Some(root) => format!("Root:           {}\n", hex::encode(root)),
            None => String::new(),
        },
        match sig {
            SignatureStatus::Unsigned => String::new(),
            SignatureStatus::Valid(k) => format!("Signed by:      {k} (signature valid)\n"),
            SignatureStatus::Invalid { signer: Some(k), reason } => {
                format!("Signature:      INVALID, names {k}: {reason}\n")
            }
            SignatureStatus::Invalid { signer: None, reason } => format!("Signature:      INVALID: {reason}\n"),
        },
        h.cipher.name(),
        size(h.block_size as u64),
        info.block_count(),
        compressed_blocks(info),
        size(info.original_size()),
        info.original_size(),
        size(info.container_size),
        info.container_size,
        overhead,
        info.trailer.footer_size,
        info.trailer.footer_offset,
        hex::encode(h.container_id),
        slot_words(info).join(", "),
    );
    if let (Some(g), Some(old)) = (generation(info), superseded(info)) {
        text.push_str(&format!(
            "Generation:     {g} (edited in place; {} in superseded versions, which `qeltrix compact` reclaims)\n",
            size(old)
        ));
    }
    if let Some(chain) = info.chain.as_ref().filter(|c| !c.patches.is_empty()) {
        text.push_str(&format!(
            "Patches:        {} over the footer above, overriding {} pages of 4 KiB\n",
            chain.patches.len(),
            chain.overlay.len()
        ));
    }
    if h.has_stale_slot_area() {
        text.push_str(&format!(
            "Warning:        the inactive key-slot area still holds older slots (an interrupted rekey, \
             or one by an earlier build); `qeltrix rekey {} --scrub` clears them\n",
            path.display()
        ));
    }
    text
}

/// `info` of one of many containers: one line.
fn info_line(path: &Path, info: &ContainerInfo, sig: &SignatureStatus) -> String {
    let flags = flag_names(info);
    format!(
        "{}: {} in {} blocks of {}, {} stored, format v{}, {}, key slots {}{}{}{}",
        path.display(),
        size(info.original_size()),
        info.block_count(),
        size(info.header.block_size as u64),
        size(info.container_size),
        info.version().number(),
        info.header.cipher.name(),
        slot_words(info).join(", "),
        if flags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", flags.join(", "))
        },
        if info.header.has_stale_slot_area() {
            " (stale key-slot area: `qeltrix rekey --scrub`)"
        } else {
            ""
        },
        match sig {
            SignatureStatus::Unsigned => String::new(),
            SignatureStatus::Valid(k) => format!(", signed by {k}"),
            SignatureStatus::Invalid { .. } =>
                ", INVALID signature (`qeltrix info` of the file says why)".into(),
        },
    )
}

/// The keys to open containers with, looked up once per vault (a keyring unlock is a KDF run)
/// and once for the containers outside any vault.
struct KeyCache<'a> {
    args: &'a KeyArgs,
    found: Vec<(Option<PathBuf>, Key)>,
}

impl KeyCache<'_> {
    fn for_container(&mut self, path: &Path) -> Result<&Key> {
        let vault = qeltrix::keyring::find_vault(path);
        let i = match self.found.iter().position(|(v, _)| *v == vault) {
            Some(i) => i,
            None => {
                let key = self.args.for_reading_at(Some(path))?;
                self.found.push((vault, key));
                self.found.len() - 1
            }
        };
        Ok(&self.found[i].1)
    }
}

/// What verifying one container found.
struct Verified {
    blocks: u64,
    bytes: u64,
    elapsed: std::time::Duration,
    /// Checked without a key (`--no-key`): the root every stored byte was checked against.
    keyless_root: Option<[u8; 32]>,
    /// `--signer`: the signer whose valid signature the container carries.
    signer: Option<SignerPublic>,
    /// `--index`: the path the index lists the container under.
    listed: Option<String>,
}

/// The path `index` lists a container with this root and size under; an
/// [`Error::Signature`] if none.
fn listed_in(index: &qeltrix::registry::Index, info: &ContainerInfo) -> qeltrix::Result<String> {
    let Some(root) = info.root() else {
        return Err(Error::Signature(
            "format version 1 has no root to look up in an index".into(),
        ));
    };
    match index.by_root(&root) {
        None => Err(Error::Signature(format!(
            "root {} is not in the index: not the container the index lists (changed, or another one)",
            hex::encode(root)
        ))),
        Some(e) if e.size != info.container_size => Err(Error::Signature(format!(
            "the index lists it as {} with {} bytes, but it has {}",
            e.path, e.size, info.container_size
        ))),
        Some(e) => Ok(e.path.clone()),
    }
}

/// `verify --no-key` of one container: every stored byte of a format-2 container (trailer,
/// footer, root, and each block's hash, prefix and metadata copy) checked without any key, one
/// block at a time (memory: one block). It proves the file is intact as written, not who wrote
/// it nor that the plaintext is right (that needs the key). Format 1 has no keyless hashes.
fn verify_keyless_one(
    path: &Path,
    object: qeltrix::storage::Object,
    info: ContainerInfo,
    quiet: bool,
) -> Result<Verified> {
    // Reading the structure decoded a v2 footer and checked its root; the blocks are left.
    let Some(root) = info.root() else {
        anyhow::bail!(Error::InvalidArgument(format!(
            "{}: format version 1 has no keyless hashes, so it cannot be checked without a key; \
             verify it with its key, or upgrade it with `qeltrix reencrypt {} NEW.qltx` (writes \
             version 2)",
            path.display(),
            path.display()
        )));
    };
    let pb = bar(Some(info.container_size), quiet);
    pb.set_message(format!("{} blocks", info.block_count()));
    let started = Instant::now();
    let blocks = qeltrix::ops::verify_keyless(&object, &info, &|n| pb.inc(n)).map_err(|e| e.in_file(path))?;
    pb.finish_and_clear();
    Ok(Verified {
        blocks,
        bytes: info.original_size(),
        elapsed: started.elapsed(),
        keyless_root: Some(root),
        signer: None,
        listed: None,
    })
}

fn verify_one(
    path: &Path,
    object: qeltrix::storage::Object,
    info: ContainerInfo,
    keys: &mut KeyCache<'_>,
    workers: usize,
    quiet: bool,
) -> Result<Verified> {
    let key = keys.for_container(path)?;
    let container = Arc::new(Container::from_info(object, info, key).map_err(|e| e.in_file(path))?);
    let pb = bar(Some(container.len()), quiet);
    pb.set_message(format!("{} blocks", container.block_count()));
    let started = Instant::now();
    let bytes = container
        .unpack_to(
            &mut io::sink(),
            true,
            super::location::workers_for(path, workers),
            &|n| pb.inc(n),
        )
        .map_err(|e| e.in_file(path))?;
    pb.finish_and_clear();
    Ok(Verified {
        blocks: container.block_count(),
        bytes,
        elapsed: started.elapsed(),
        keyless_root: None,
        signer: None,
        listed: None,
    })
}

fn verified_line(path: &Path, v: &Verified) -> String {
    let signed = match (&v.signer, &v.listed) {
        (Some(k), Some(p)) => format!("listed in the index as {p}, signed by {k}; "),
        (Some(k), None) => format!("signed by {k}; "),
        (None, Some(p)) => format!("listed in the index as {p}; "),
        (None, None) => String::new(),
    };
    match v.keyless_root {
        Some(root) => format!(
            "OK: {}: {signed}{} blocks ({} of plaintext) intact, checked without a key against root {} ({})",
            path.display(),
            v.blocks,
            size(v.bytes),
            hex::encode(root),
            speed(v.bytes, v.elapsed)
        ),
        None => format!(
            "OK: {}: {signed}{} blocks, {} authenticated and hash-checked ({})",
            path.display(),
            v.blocks,
            size(v.bytes),
            speed(v.bytes, v.elapsed)
        ),
    }
}

fn verified_json(path: &Path, v: &Verified) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "file": path.display().to_string(),
        "ok": true,
        "blocks": v.blocks,
        "original_size": v.bytes,
        "seconds": v.elapsed.as_secs_f64(),
    });
    if let Some(root) = v.keyless_root {
        doc["keyless"] = true.into();
        doc["root"] = hex::encode(root).into();
    }
    if let Some(k) = &v.signer {
        doc["signer"] = k.to_string().into();
    }
    if let Some(p) = &v.listed {
        doc["index_path"] = p.clone().into();
    }
    doc
}

fn verify_failure_json(path: &Path, e: &anyhow::Error) -> serde_json::Value {
    let mut doc = failure_json("file", path, e);
    doc["ok"] = false.into();
    doc
}

pub(super) fn verify(a: VerifyArgs) -> Result<()> {
    let mut keys = KeyCache {
        args: &a.keys,
        found: Vec::new(),
    };
    let signer = a.signer.as_deref().map(super::keys::signer_public).transpose()?;
    let index = match &a.index {
        Some(path) => {
            let index_signer = a
                .index_signer
                .as_deref()
                .map(super::keys::signer_public)
                .transpose()?;
            let text =
                fs::read_to_string(path).with_context(|| format!("{}: reading the index", path.display()))?;
            Some(qeltrix::registry::Index::parse(&text, index_signer.as_ref()).map_err(|e| e.in_file(path))?)
        }
        None => None,
    };
    // `--no-key` never looks for a key, so it never prompts; nor do `--signer` and `--index`
    // without a key option.
    let keyless = a.no_key || ((signer.is_some() || index.is_some()) && !a.keys.any_given());
    let mut verify_one = |path: &Path| {
        // The structure first, so a truncated or foreign file is reported before a prompt; then
        // the signature, which reads only the header and the footer.
        let (object, info) = read_info(path)?;
        if let Some(expected) = &signer {
            qeltrix::sign::check_signer(&object, &info, expected).map_err(|e| e.in_file(path))?;
        }
        let listed = match &index {
            Some(index) => Some(listed_in(index, &info).map_err(|e| e.in_file(path))?),
            None => None,
        };
        let mut v = if keyless {
            verify_keyless_one(path, object, info, a.quiet)
        } else {
            verify_one(path, object, info, &mut keys, a.workers, a.quiet)
        }?;
        v.signer = signer;
        v.listed = listed;
        Ok::<_, anyhow::Error>(v)
    };
    if single_file(&a.inputs) {
        // One container: its line, or the error as every single-file command reports it.
        let path = &a.inputs[0];
        match verify_one(path) {
            Ok(v) if a.json => outln!("{}", verified_json(path, &v)),
            Ok(v) => outln!("{}", verified_line(path, &v)),
            Err(e) => {
                if a.json {
                    outln!("{}", verify_failure_json(path, &e));
                }
                return Err(e);
            }
        }
        return Ok(());
    }
    let found = containers(&a.inputs);
    let total = found.len();
    let mut tally = Tally::default();
    for (path, listed) in found {
        match listed.and_then(|()| verify_one(&path)) {
            Ok(v) if a.json => outln!("{}", verified_json(&path, &v)),
            Ok(v) => outln!("{}", verified_line(&path, &v)),
            Err(e) => {
                if a.json {
                    outln!("{}", verify_failure_json(&path, &e));
                } else {
                    outln!("FAILED: {}", failure_text(&path, &e));
                }
                tally.add(e);
            }
        }
    }
    if !a.json {
        outln!(
            "Verified {} containers: {} OK, {} failed",
            total,
            total - tally.failed,
            tally.failed
        );
    }
    tally.finish_or_only(total, "containers")
}

/// `qeltrix sign`: each container signed in place ([`qeltrix::sign::sign_in_place`]).
pub(super) fn sign(a: SignArgs) -> Result<()> {
    let key = super::keys::read_signer_key(&a.key)?;
    let one = |path: &Path| -> Result<()> {
        if location::is_remote(path) {
            anyhow::bail!(Error::InvalidArgument(format!(
                "{}: signing writes the header in place, which an object store cannot do: sign the \
                 container before uploading it, or pack it with --sign",
                path.display()
            )));
        }
        refuse_if_mounted_read_write(path)?;
        qeltrix::sign::sign_in_place(path, &key)?;
        Ok(())
    };
    let public = key.public();
    each_container(&a.inputs, a.quiet, one, |path, ()| {
        format!("signed: {} by {public}", path.display())
    })
}

/// Runs `one` on a single container (its error is the command's), or on each container of
/// several inputs and vault folders (a `FAILED:` line for each that fails, then the worst exit
/// code), printing `line` for each success unless `quiet`.
fn each_container<T>(
    inputs: &[PathBuf],
    quiet: bool,
    mut one: impl FnMut(&Path) -> Result<T>,
    line: impl Fn(&Path, &T) -> String,
) -> Result<()> {
    if single_file(inputs) {
        let done = one(&inputs[0])?;
        if !quiet {
            outln!("{}", line(&inputs[0], &done));
        }
        return Ok(());
    }
    let found = containers(inputs);
    let total = found.len();
    let mut tally = Tally::default();
    for (path, listed) in found {
        match listed.and_then(|()| one(&path)) {
            Ok(done) if !quiet => outln!("{}", line(&path, &done)),
            Ok(_) => {}
            Err(e) => {
                outln!("FAILED: {}", failure_text(&path, &e));
                tally.add(e);
            }
        }
    }
    tally.finish_or_only(total, "containers")
}

/// `qeltrix compact`: each version-3 container rewritten as version 2 (see
/// [`qeltrix::compact::compact`]); others are reported as already compact.
pub(super) fn compact(a: CompactArgs) -> Result<()> {
    let mut keys = KeyCache {
        args: &a.keys,
        found: Vec::new(),
    };
    let one = |path: &Path| -> Result<qeltrix::compact::Compacted> {
        refuse_if_mounted_read_write(path)?;
        let key = keys.for_container(path)?;
        Ok(qeltrix::compact::compact(path, key)?)
    };
    let line = |path: &Path, c: &qeltrix::compact::Compacted| {
        if c.rewritten {
            format!("compacted: {}: {} -> {} bytes", path.display(), c.before, c.after)
        } else {
            format!("already compact: {}", path.display())
        }
    };
    each_container(&a.inputs, a.quiet, one, line)
}

/// A vault mounted read-write has one writer, the mount: compacting under it would replace a
/// file the mount appends to.
fn refuse_if_mounted_read_write(path: &Path) -> Result<()> {
    let full = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    for folder in full.ancestors().skip(1) {
        let lock_path = folder.join(".qeltrix/mount.lock");
        let Ok(lock) = std::fs::File::open(&lock_path) else {
            continue;
        };
        if let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock_shared() {
            anyhow::bail!(
                "{} is in a vault mounted read-write ({} is held): unmount it first",
                path.display(),
                lock_path.display()
            );
        }
    }
    Ok(())
}
