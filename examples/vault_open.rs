//! Makes and opens many small containers through the library, for `scripts/bench-keys.sh`: the
//! cost of opening N containers of a vault (one PBKDF2 to unlock the keyring, then one HKDF per
//! container) against N containers with their own passphrase slot (one PBKDF2 each).
//!
//! ```text
//! QELTRIX_PASSPHRASE=pw vault_open make-vault VAULT N           # N containers with a keyring slot
//! QELTRIX_PASSPHRASE=pw vault_open make-passphrase DIR N ITERS  # N with a passphrase slot each
//! QELTRIX_PASSPHRASE=pw vault_open open-vault VAULT             # unlock once, open and read all
//! QELTRIX_PASSPHRASE=pw vault_open open-passphrase DIR          # open and read all, one by one
//! ```
//! The open commands print `<containers> <seconds>` on stdout.

use qeltrix::crypto::Passphrase;
use qeltrix::{keyring, CompressMode, Container, Key, PackOptions};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault_open: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let pass = Passphrase::new(std::env::var("QELTRIX_PASSPHRASE").map_err(|_| "set QELTRIX_PASSPHRASE")?);
    let arg = |i: usize| args.get(i).ok_or("missing argument (see the file's doc comment)");
    let dir = PathBuf::from(arg(1)?);
    match arg(0)?.as_str() {
        "make-vault" => {
            let key = Key::Vault(keyring::unlock(&dir, &pass)?);
            make(&dir, arg(2)?.parse()?, &key, 1)
        }
        "make-passphrase" => make(&dir, arg(2)?.parse()?, &Key::Passphrase(pass), arg(3)?.parse()?),
        "open-vault" => {
            let started = Instant::now();
            let key = Key::Vault(keyring::unlock(&dir, &pass)?);
            let n = open_all(&dir, &key)?;
            println!("{n} {:.4}", started.elapsed().as_secs_f64());
            Ok(())
        }
        "open-passphrase" => {
            let started = Instant::now();
            let n = open_all(&dir, &Key::Passphrase(pass))?;
            println!("{n} {:.4}", started.elapsed().as_secs_f64());
            Ok(())
        }
        other => Err(format!("unknown command {other}").into()),
    }
}

/// Packs `n` containers of a few bytes each into `dir`, in parallel (setup, not measured).
fn make(dir: &Path, n: usize, key: &Key, iterations: u32) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let opts = PackOptions {
        block_size: 4096,
        compress: CompressMode::Never,
        workers: 1,
        kdf_iterations: iterations,
        ..PackOptions::default()
    };
    (0..n).into_par_iter().try_for_each(|i| {
        let bytes = format!("container {i}\n");
        let out = dir.join(format!("c{i:06}.qltx"));
        qeltrix::pack_reader(
            &mut bytes.as_bytes(),
            &out,
            &[qeltrix::Recipient::try_from(key)?],
            &opts,
            false,
        )
        .map(drop)
    })?;
    Ok(())
}

/// Opens every `*.qltx` in `dir` with `key`, one after another, and reads it whole.
fn open_all(dir: &Path, key: &Key) -> Result<usize, Box<dyn std::error::Error>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| p.extension().is_some_and(|x| x == "qltx"));
    paths.sort();
    for p in &paths {
        let c = Container::open(p, key)?;
        let plain = c.seek_extract(0, c.len())?;
        if !plain.starts_with(b"container ") {
            return Err(format!("{}: unexpected plaintext", p.display()).into());
        }
    }
    Ok(paths.len())
}
