//! Writing containers: [`StreamPacker`] takes plaintext in (as a `Write`, or from a `Read`) and
//! writes a container to any `Write`, sealing blocks in parallel as soon as each is full. Pack,
//! stdin, and every network ingest write through it.
//!
//! On a seekable output ([`StreamPacker::new_seekable`]) the header totals are patched at the end;
//! on a stream (a pipe, a socket) they stay zero, the header says so (`FLAG_STREAMING`), and
//! readers find the index through the trailer.
//!
//! ```no_run
//! use qeltrix::{StreamPacker, PackOptions, Recipient, crypto::KeyFileKey};
//! let key = Recipient::KeyFile(KeyFileKey::from_bytes([7; 32]));
//! let out = std::fs::File::create("log.qltx")?;
//! let mut packer = StreamPacker::new_seekable(out, &[key], &PackOptions::default())?;
//! std::io::copy(&mut std::io::stdin(), &mut packer)?;
//! let (_file, summary) = packer.finish()?;
//! println!("{} blocks", summary.blocks);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::container::pipeline::{OrderedPool, WorkerPool};
use crate::core::codec::{seal_block, CompressPolicy, SealedBlock};
use crate::core::codec_v2::seal_block_v2;
use crate::core::compress::{Codec, CompressMode};
use crate::core::crypto::{
    derive_container_keys, footer_mac, footer_mac_v2, wrap_slot, ContainerKeys, DataKey, Entropy, Recipient,
    SignerKey, SystemEntropy, DEFAULT_KDF_ITERATIONS, MAX_KDF_ITERATIONS,
};
use crate::core::file_record::{seal_file_record, FileMeta};
use crate::core::format::{
    array, can_sign, check_block_size, signed_message, CipherId, CommitRecord, ContainerId, Footer,
    FooterEntry, FooterEntryV2, FooterV2, FormatVersion, Header, SignatureRecord, SlotArea, Trailer,
    BLOCK_PREFIX_LEN, COMMIT_B, DEFAULT_BLOCK_SIZE, FLAG_NO_VERIFY, FLAG_STREAMING, HEADER_LEN, MAX_SLOTS,
    META_LEN, SIGNATURE_LEN, SLOT_AREA_LEN, TAG_LEN,
};
use crate::core::integrity_v2::footer_root;
use crate::{Error, Result};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

/// How to pack.
#[derive(Clone)]
pub struct PackOptions {
    /// The format version to write: 2 unless a reader of the original format must open it.
    pub format: FormatVersion,
    /// The AEAD sealing blocks and metadata.
    pub cipher: CipherId,
    /// Plaintext bytes per block: a multiple of 4 KiB from 4 KiB to 64 MiB.
    pub block_size: u32,
    /// When to compress a block.
    pub compress: CompressMode,
    /// Compression level, 0–9 (deflate's scale; zstd levels are mapped to it).
    pub level: u32,
    /// The compressor of a v2 container: zstd, or deflate. A v1 container always deflates.
    pub codec: Codec,
    /// The packed file's name, mode and mtime, sealed into a v2 container's file record (none
    /// for a stream; ignored for v1, which has no record).
    pub file_meta: Option<FileMeta>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Seal on this shared pool instead of starting `workers` threads: a server packing many
    /// streams at once (the gateway) keeps one pool for all of them.
    pub pool: Option<WorkerPool>,
    /// PBKDF2 iterations for passphrase slots.
    pub kdf_iterations: u32,
    /// Sets the header's no-verify hint for readers.
    pub no_verify_hint: bool,
    /// Signs the container with this Ed25519 key (`docs/FORMAT.md`, "Signatures"): versions 2
    /// and 3 on a seekable output only, since the signature goes into the header once the footer
    /// is written.
    pub signer: Option<SignerKey>,
    /// Source of randomness. Only the format's test vector replaces it.
    #[doc(hidden)]
    pub entropy: Arc<dyn Entropy>,
}

impl PackOptions {
    /// How these options compress each block.
    pub fn compress_policy(&self) -> CompressPolicy {
        CompressPolicy {
            mode: self.compress,
            level: self.level,
            codec: self.codec,
        }
    }
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            format: FormatVersion::V2,
            cipher: CipherId::Aes256Gcm,
            block_size: DEFAULT_BLOCK_SIZE,
            compress: CompressMode::Auto,
            level: 1,
            codec: Codec::Zstd,
            file_meta: None,
            workers: 0,
            pool: None,
            kdf_iterations: DEFAULT_KDF_ITERATIONS,
            no_verify_hint: false,
            signer: None,
            entropy: Arc::new(SystemEntropy),
        }
    }
}

/// What a finished pack produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackSummary {
    /// Blocks written.
    pub blocks: u64,
    /// Blocks stored compressed.
    pub compressed_blocks: u64,
    /// Plaintext bytes packed.
    pub original_size: u64,
    /// Length of the container in bytes.
    pub container_size: u64,
    /// The container's random identifier.
    pub container_id: ContainerId,
    /// The format version written.
    pub format: FormatVersion,
    /// A v2 container's root: BLAKE3 over its block hashes and file record (`None` for v1).
    pub root: Option<[u8; 32]>,
}

/// Recycled block buffers kept by a packer: enough for the blocks a pool has in flight.
const SPARES: usize = 8;

type Patch<W> = fn(&mut W, &[u8]) -> io::Result<()>;

/// Streams plaintext into a container. See the module docs.
pub struct StreamPacker<W: Write> {
    out: W,
    header: Header,
    keys: Arc<ContainerKeys>,
    policy: CompressPolicy,
    entropy: Arc<dyn Entropy>,
    /// Sealed blocks in order; an `Err` only if sealing one panicked (a bug).
    pool: OrderedPool<Result<SealedBlock>>,
    block_size: usize,
    current: Vec<u8>,
    /// Written blocks' buffers, kept for the next blocks' plaintext: allocating
    /// and freeing a block-sized buffer per block made the allocator hand memory back to the
    /// kernel and fault it in again, a fifth of pack's CPU time.
    /// (Several: as many blocks are in flight, and each one that comes back without a buffer to
    /// return to would cost a block-sized allocation, zeroing and page faults.)
    spares: Vec<Vec<u8>>,
    /// v2: sealed-payload buffers of written blocks, for the next blocks' seals.
    spare_v2: Vec<Vec<u8>>,
    next_index: u64,
    entries: Vec<FooterEntry>,
    /// v2: each written block's hash and sealed metadata, for the footer.
    entries_v2: Vec<([u8; 32], [u8; META_LEN])>,
    file_meta: Option<FileMeta>,
    container_offset: u64,
    plain_offset: u64,
    /// Plaintext bytes handed to the workers, sealed or not.
    submitted: u64,
    compressed_blocks: u64,
    patch: Option<Patch<W>>,
    /// Version 3 (a container the read-write mount edits in place): the generation it is
    /// written at.
    generation: Option<u64>,
    /// Written as version 3 if it holds at least this many bytes when finished (the header is
    /// patched then, with the version; the blocks are the same in both).
    v3_from: Option<(u64, FormatVersion)>,
    /// Signs the container when the header is patched.
    signer: Option<SignerKey>,
}

impl<W: Write> StreamPacker<W> {
    /// Starts a container on a stream: writes the header (with the key slots) right away.
    pub fn new(out: W, keys: &[Recipient], opts: &PackOptions) -> Result<Self> {
        Self::start(out, keys, opts, None)
    }

    fn start(mut out: W, keys: &[Recipient], opts: &PackOptions, patch: Option<Patch<W>>) -> Result<Self> {
        check_options(opts)?;
        if keys.is_empty() || keys.len() > MAX_SLOTS {
            return Err(Error::InvalidArgument(format!(
                "a container needs 1 to {MAX_SLOTS} keys, {} given",
                keys.len()
            )));
        }
        if !(1..=MAX_KDF_ITERATIONS).contains(&opts.kdf_iterations) {
            return Err(Error::InvalidArgument(format!(
                "KDF iterations must be between 1 and {MAX_KDF_ITERATIONS}"
            )));
        }
        let entropy = Arc::clone(&opts.entropy);
        let data_key = DataKey::generate(entropy.as_ref());
        let mut container_id = [0u8; 16];
        entropy.fill(b"container id", &mut container_id);
        let slots = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                wrap_slot(
                    k,
                    &data_key,
                    &container_id,
                    opts.kdf_iterations,
                    i,
                    entropy.as_ref(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let areas = (SlotArea { sequence: 1, slots }.encode(), [0; SLOT_AREA_LEN]);
        Self::begin(&mut out, opts, patch.is_some(), container_id, areas)
            .map(|header| Self::with_header(out, header, data_key, opts, patch))?
    }

    /// Writes the header of a container with these key slots.
    fn begin(
        out: &mut W,
        opts: &PackOptions,
        seekable: bool,
        container_id: ContainerId,
        (slot_area_a, slot_area_b): ([u8; SLOT_AREA_LEN], [u8; SLOT_AREA_LEN]),
    ) -> Result<Header> {
        if opts.format.has_commits() && !seekable {
            return Err(Error::InvalidArgument(format!(
                "format version {} needs a seekable output (its header names the current footer)",
                opts.format.number()
            )));
        }
        if opts.signer.is_some() && !seekable {
            return Err(Error::InvalidArgument(
                "a signature is written into the header once the footer is known, which a stream \
                 cannot go back to: pack to a file, or sign it afterwards with `qeltrix sign`"
                    .into(),
            ));
        }
        if opts.signer.is_some() && !can_sign(opts.format) {
            return Err(Error::InvalidArgument(
                "format version 1 has no ciphertext root to sign: pack version 2".into(),
            ));
        }
        let mut flags = if seekable { 0 } else { FLAG_STREAMING };
        if opts.no_verify_hint {
            flags |= FLAG_NO_VERIFY;
        }
        let header = Header {
            version: opts.format,
            flags,
            cipher: opts.cipher,
            block_size: opts.block_size,
            total_blocks: 0,
            original_size: 0,
            footer_offset: 0,
            footer_size: 0,
            container_id,
            slot_area_a,
            slot_area_b,
            commits: [[0; crate::core::format::COMMIT_LEN]; 2],
            signature: [0; crate::core::format::SIGNATURE_LEN],
        };
        out.write_all(&header.encode())
            .map_err(|e| Error::io("writing the container header", e))?;
        Ok(header)
    }

    fn with_header(
        out: W,
        header: Header,
        data_key: DataKey,
        opts: &PackOptions,
        patch: Option<Patch<W>>,
    ) -> Result<Self> {
        let pool = match &opts.pool {
            Some(shared) => OrderedPool::on(shared),
            None => OrderedPool::new(opts.workers).map_err(|e| Error::io("starting worker threads", e))?,
        };
        Ok(StreamPacker {
            out,
            keys: Arc::new(derive_container_keys(data_key, opts.cipher, header.container_id)),
            header,
            policy: opts.compress_policy(),
            entropy: Arc::clone(&opts.entropy),
            pool,
            block_size: opts.block_size as usize,
            current: Vec::new(),
            spares: Vec::new(),
            spare_v2: Vec::new(),
            next_index: 0,
            entries: Vec::new(),
            entries_v2: Vec::new(),
            file_meta: opts.file_meta.clone().filter(|_| opts.format.has_v2_blocks()),
            container_offset: HEADER_LEN as u64,
            plain_offset: 0,
            submitted: 0,
            compressed_blocks: 0,
            patch,
            generation: None,
            v3_from: None,
            signer: opts.signer.clone(),
        })
    }

    /// Replaces the file record sealed into the footer at [`StreamPacker::finish`] (v2).
    pub(crate) fn set_file_meta(&mut self, meta: Option<FileMeta>) {
        self.file_meta = meta.filter(|_| self.header.version.has_v2_blocks());
    }

    /// The data key and header the container is being written with: what a rewrite of it
    /// ([`StreamPacker::resume_seekable`]) keeps.
    pub(crate) fn key_material(&self) -> (DataKey, Header) {
        (self.keys.data_key.clone(), self.header.clone())
    }

    /// The new container's id.
    pub fn container_id(&self) -> ContainerId {
        self.header.container_id
    }

    /// Plaintext bytes taken so far (written, being sealed, or waiting in the current block).
    pub fn bytes_in(&self) -> u64 {
        self.submitted + self.current.len() as u64
    }

    /// Container bytes written so far.
    pub fn bytes_out(&self) -> u64 {
        self.container_offset
    }

    /// Blocks written to the output so far.
    pub fn blocks_written(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Reads `input` to its end into the container, filling whole blocks straight from the reader.
    pub fn pack_from(&mut self, input: &mut dyn Read) -> Result<u64> {
        let mut total = 0u64;
        loop {
            // Read into an initialized buffer: `read_to_end` into spare capacity zeroes it first
            // for every reader without a native `read_buf` (any wrapper: progress bars, sockets
            // behind adapters), a memset of every block. A recycled buffer is initialized already.
            let filled = self.current.len();
            let mut buffer = std::mem::take(&mut self.current);
            if buffer.capacity() == 0 {
                buffer = self.spares.pop().unwrap_or_default();
            }
            if buffer.len() < self.block_size {
                buffer.reserve_exact(self.block_size + TAG_LEN - buffer.len());
                buffer.resize(self.block_size, 0);
            }
            let (n, result) = read_up_to(input, &mut buffer[filled..self.block_size]);
            buffer.truncate(filled + n);
            self.current = buffer;
            total += n as u64;
            result.map_err(|e| Error::io("reading the input", e))?;
            if self.current.len() < self.block_size {
                return Ok(total);
            }
            self.seal_current()?;
        }
    }

    /// Seals the partial block now (for a trickling stream that must reach its reader promptly).
    /// Blocks may therefore hold less than the block size; the index records each one's size.
    pub fn flush_block(&mut self) -> Result<()> {
        if !self.current.is_empty() {
            self.seal_current()?;
        }
        while let Some(block) = self.pool.next_result() {
            self.write_block(block?)?;
        }
        self.out.flush().map_err(|e| Error::io("flushing the output", e))
    }

    /// Gives the block being filled its buffer: a recycled one, or a new one with room for the
    /// AEAD tag, so sealing in place never reallocates and copies the block.
    fn ensure_buffer(&mut self) {
        if self.current.capacity() == 0 {
            self.current = match self.spares.pop() {
                Some(mut spare) => {
                    spare.clear();
                    spare
                }
                None => Vec::with_capacity(self.block_size + TAG_LEN),
            };
        }
    }

    fn seal_current(&mut self) -> Result<()> {
        // Blocks leave as soon as they are sealed, not only when the pool is full: a socket
        // reader downstream sees them without waiting for later input.
        while let Some(block) = self.pool.try_next_result() {
            self.write_block(block?)?;
        }
        while self.pool.is_full() {
            let block = self.pool.next_result().expect("a full pool has results");
            self.write_block(block?)?;
        }
        let plain = std::mem::take(&mut self.current);
        self.submitted += plain.len() as u64;
        let (keys, entropy, policy, index) = (
            Arc::clone(&self.keys),
            Arc::clone(&self.entropy),
            self.policy,
            self.next_index,
        );
        self.next_index += 1;
        match self.header.version {
            FormatVersion::V1 => self
                .pool
                .submit(move || Ok(seal_block(&keys, index, plain, policy, entropy.as_ref()))),
            FormatVersion::V2 | FormatVersion::V3 | FormatVersion::V4 => {
                let mut payload = self.spare_v2.pop().unwrap_or_default();
                let block_size = self.block_size;
                self.pool.submit(move || {
                    // Room for every segment's tag, so sealing never reallocates.
                    payload.reserve(block_size + block_size.div_ceil(1 << 14) * TAG_LEN);
                    let sealed = seal_block_v2(&keys, index, &plain, policy, entropy.as_ref(), &mut payload);
                    let mut hasher = blake3::Hasher::new();
                    hasher.update(&sealed.head);
                    hasher.update(&payload);
                    Ok(SealedBlock {
                        head: sealed.head,
                        payload,
                        plain_size: plain.len() as u64,
                        compressed: sealed.meta.compression != crate::core::format::CompressionV2::None,
                        block_hash: Some(*hasher.finalize().as_bytes()),
                        plain: Some(plain),
                    })
                })
            }
        }
        Ok(())
    }

    fn write_block(&mut self, block: SealedBlock) -> Result<()> {
        self.out
            .write_all(&block.head)
            .and_then(|()| self.out.write_all(&block.payload))
            .map_err(|e| Error::io(format!("writing block {}", self.entries.len()), e))?;
        self.entries.push(FooterEntry {
            offset: self.container_offset,
            len: block.stored_len(),
            plain_offset: self.plain_offset,
            plain_size: block.plain_size,
        });
        self.container_offset += block.stored_len();
        self.plain_offset += block.plain_size;
        self.compressed_blocks += block.compressed as u64;
        if let Some(hash) = block.block_hash {
            self.entries_v2.push((hash, array(&block.head, BLOCK_PREFIX_LEN)));
        }
        match block.plain {
            // v2: the plaintext buffer comes back for the next block, the payload buffer for the
            // next seal.
            Some(plain) => {
                self.keep_spare(plain);
                if self.spare_v2.len() < SPARES {
                    self.spare_v2.push(block.payload);
                }
            }
            // v1 seals in place. Compressed payloads are too small to hold a whole block; those
            // are dropped. The spare keeps its stale (sealed) bytes: `pack_from` overwrites them,
            // `ensure_buffer` clears them.
            None if block.payload.capacity() >= self.block_size + TAG_LEN => self.keep_spare(block.payload),
            None => {}
        }
        Ok(())
    }

    fn keep_spare(&mut self, buffer: Vec<u8>) {
        if self.spares.len() < SPARES {
            self.spares.push(buffer);
        }
    }

    /// Seals what is left, writes the footer and trailer (and patches the header if the output
    /// is seekable), and returns the output and a summary.
    pub fn finish(mut self) -> Result<(W, PackSummary)> {
        self.flush_block()?;
        if let Some((min, version)) = self.v3_from {
            if self.plain_offset >= min && self.patch.is_some() {
                self.header.version = version;
            }
        }
        let (footer, root) = self.footer();
        let trailer = Trailer {
            footer_offset: self.container_offset,
            footer_size: footer.len() as u64,
        };
        self.out
            .write_all(&footer)
            .and_then(|()| self.out.write_all(&trailer.encode()))
            .map_err(|e| Error::io("writing the footer", e))?;
        let container_size = self.container_offset + footer.len() as u64 + trailer.encode().len() as u64;
        if let Some(patch) = self.patch {
            if self.header.version.has_commits() {
                // Versions 3 and 4 have no totals: its commit record says where the footer is.
                let generation = self.generation();
                let record = CommitRecord {
                    generation,
                    footer_offset: trailer.footer_offset,
                    footer_size: trailer.footer_size,
                };
                let slot = usize::from(CommitRecord::slot_of(generation) == COMMIT_B);
                self.header.commits[slot] = record.encode();
            } else {
                self.header.total_blocks = self.entries.len() as u64;
                self.header.original_size = self.plain_offset;
                self.header.footer_offset = trailer.footer_offset;
                self.header.footer_size = trailer.footer_size;
            }
            // A header carried over from an earlier version (the editor's) loses its signature:
            // the new footer is not what was signed.
            self.header.signature = match (&self.signer, &root) {
                (Some(key), Some(root)) => {
                    sign_record(key, &self.header, trailer.footer_offset, &footer, root)
                }
                _ => [0; SIGNATURE_LEN],
            };
            patch(&mut self.out, &self.header.encode()).map_err(|e| Error::io("patching the header", e))?;
        }
        self.out
            .flush()
            .map_err(|e| Error::io("flushing the output", e))?;
        let summary = PackSummary {
            blocks: self.entries.len() as u64,
            compressed_blocks: self.compressed_blocks,
            original_size: self.plain_offset,
            container_size,
            container_id: self.header.container_id,
            format: self.header.version,
            root,
        };
        Ok((self.out, summary))
    }

    /// The footer, MAC included, and a v2 container's root.
    fn footer(&self) -> (Vec<u8>, Option<[u8; 32]>) {
        let record = self
            .file_meta
            .as_ref()
            .map(|m| seal_file_record(&self.keys, m, self.entropy.as_ref()));
        let generation = self.header.version.has_commits().then(|| self.generation());
        footer_for(
            &self.header,
            &self.keys,
            self.plain_offset,
            &self.entries,
            &self.entries_v2,
            record,
            generation,
        )
    }

    /// A version-3 container's generation: the one [`StreamPacker::resume_seekable`] was given.
    fn generation(&self) -> u64 {
        self.generation.unwrap_or(1)
    }
}

/// The footer (MAC included) of a container with `header` holding the blocks `entries`, and a v2
/// container's root. For v2, `v2` holds each block's hash and sealed metadata, and `record` the
/// sealed file record if any. For v3, every block gets `generation`, the footer's. The writer and
/// `repair` finish containers with it.
pub(crate) fn footer_for(
    header: &Header,
    keys: &ContainerKeys,
    original_size: u64,
    entries: &[FooterEntry],
    v2: &[([u8; 32], [u8; META_LEN])],
    record: Option<Vec<u8>>,
    generation: Option<u64>,
) -> (Vec<u8>, Option<[u8; 32]>) {
    let bound = header.bound_fields();
    match header.version {
        FormatVersion::V1 => {
            let mut footer = Footer::encode_unsigned(original_size, entries);
            let mac = footer_mac(keys, &bound, &footer);
            footer.extend_from_slice(&mac);
            (footer, None)
        }
        FormatVersion::V2 | FormatVersion::V3 | FormatVersion::V4 => {
            let mut footer = FooterV2 {
                original_size,
                root: [0; 32],
                file_record: record,
                entries: entries
                    .iter()
                    .zip(v2)
                    .map(|(&entry, &(block_hash, sealed_meta))| FooterEntryV2 {
                        entry,
                        block_hash,
                        sealed_meta,
                        generation: generation.unwrap_or(0),
                    })
                    .collect(),
                mac: [0; 32],
                generation,
            };
            footer.root = footer_root(&footer);
            footer.mac = footer_mac_v2(keys, &bound, &footer.encode_unsigned());
            (footer.encode(), Some(footer.root))
        }
    }
}

/// Fills `buf` from `input` until it is full or the input ends. Returns the bytes read, and the
/// error that stopped it early if any (the bytes before it are kept).
fn read_up_to(input: &mut dyn Read, buf: &mut [u8]) -> (usize, io::Result<()>) {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (got, Err(e)),
        }
    }
    (got, Ok(()))
}

impl<W: Write + Seek> StreamPacker<W> {
    /// Starts a container on a seekable output (a file), whose header totals are filled in by
    /// [`StreamPacker::finish`]. The output must be positioned at its start.
    pub fn new_seekable(out: W, keys: &[Recipient], opts: &PackOptions) -> Result<Self> {
        Self::start(out, keys, opts, Some(patch::<W>))
    }

    /// Starts a new version of an existing container on a seekable output: the same container
    /// id, data key and key-slot areas (so every key that opened the old version opens this
    /// one, recipients' slots included, with no secret but the data key), and new blocks, each
    /// sealed under fresh random salts and nonces. Format 2 whatever `template`'s version was
    /// (see [`StreamPacker::version_3_from`]); the cipher and block size are `template`'s.
    pub(crate) fn resume_seekable(
        mut out: W,
        template: &Header,
        data_key: DataKey,
        opts: &PackOptions,
    ) -> Result<Self> {
        let opts = PackOptions {
            format: FormatVersion::V2,
            cipher: template.cipher,
            block_size: template.block_size,
            ..opts.clone()
        };
        check_options(&opts)?;
        let areas = (template.slot_area_a, template.slot_area_b);
        let header = Self::begin(&mut out, &opts, true, template.container_id, areas)?;
        Self::with_header(out, header, data_key, &opts, Some(patch::<W>))
    }

    /// Writes the container as `version` (3 or 4) at `generation` (one the read-write mount
    /// edits in place) if it holds at least `min_len` plaintext bytes when finished, else as
    /// version 2.
    pub(crate) fn version_3_from(&mut self, min_len: u64, generation: u64, version: FormatVersion) {
        if self.header.version.has_v2_blocks() && version.has_commits() {
            self.v3_from = Some((min_len, version));
            self.generation = Some(generation);
        }
    }
}

/// The signature record of a container with `header` whose current footer (`footer`, with root
/// `root`) is at `footer_offset`, signed by `key`.
pub(crate) fn sign_record(
    key: &SignerKey,
    header: &Header,
    footer_offset: u64,
    footer: &[u8],
    root: &[u8; 32],
) -> [u8; SIGNATURE_LEN] {
    let public = *key.public().as_bytes();
    let message = signed_message(&header.bound_fields(), &public, footer_offset, footer, root);
    SignatureRecord {
        public,
        signature: key.sign(&message),
    }
    .encode()
}

/// The checks of [`PackOptions`] that need no key: made before any slot is wrapped.
fn check_options(opts: &PackOptions) -> Result<()> {
    check_block_size(opts.block_size)?;
    if opts.level > 9 {
        return Err(Error::InvalidArgument("compression level must be 0 to 9".into()));
    }
    if opts.format == FormatVersion::V1 && opts.codec == Codec::Zstd && opts.compress != CompressMode::Never {
        return Err(Error::InvalidArgument(
            "format version 1 compresses only with deflate".into(),
        ));
    }
    Ok(())
}

/// Rewrites the header at the start of a seekable output (the totals, once known).
fn patch<W: Write + Seek>(out: &mut W, header: &[u8]) -> io::Result<()> {
    let end = out.stream_position()?;
    out.seek(SeekFrom::Start(0))?;
    out.write_all(header)?;
    out.seek(SeekFrom::Start(end))?;
    Ok(())
}

impl<W: Write> Write for StreamPacker<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ensure_buffer();
        let n = buf.len().min(self.block_size - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == self.block_size {
            self.seal_current()?;
        }
        Ok(n)
    }

    /// Passes the flush on to the output without sealing a partial block (see [`Self::flush_block`]).
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
