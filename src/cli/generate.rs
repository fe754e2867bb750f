//! `qeltrix completions SHELL` and `qeltrix man`: shell completion scripts and manual pages,
//! generated from the same clap definitions the parser uses, so they list exactly the real
//! commands and flags.

use super::{Cli, CompletionsArgs, ManArgs};
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;

/// Writes the completion script for `a.shell` to stdout.
pub fn completions(a: CompletionsArgs) -> Result<()> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "qeltrix", &mut script);
    write_stdout(&script)
}

/// Writes `qeltrix(1)` to stdout, or with `--dir` one page per command (`qeltrix.1`,
/// `qeltrix-pack.1`, ...) into that folder, each written atomically.
pub fn man(a: ManArgs) -> Result<()> {
    let cmd = Cli::command();
    let Some(dir) = a.dir else {
        return write_stdout(&render(cmd)?);
    };
    let meta = std::fs::metadata(&dir).with_context(|| dir.display().to_string())?;
    if !meta.is_dir() {
        anyhow::bail!(qeltrix::Error::InvalidArgument(format!(
            "{}: not a folder",
            dir.display()
        )));
    }
    let storage = qeltrix::storage::LocalStorage::anywhere();
    let mut pages = vec![("qeltrix.1".to_string(), render(cmd.clone())?)];
    for sub in cmd.get_subcommands() {
        let name = format!("qeltrix-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(name.clone())
            .bin_name(name.clone())
            .version(env!("CARGO_PKG_VERSION"));
        pages.push((format!("{name}.1"), render(page)?));
    }
    for (file, page) in pages {
        let path = dir.join(&file);
        // Generated pages replace the ones an earlier version wrote.
        let mut options = qeltrix::storage::WriteOptions::overwrite(true);
        options.mode = 0o644;
        qeltrix::storage::Storage::put(&storage, &path, &page, options)?;
    }
    Ok(())
}

fn render(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .map_err(|e| qeltrix::Error::io("rendering the manual page", e))?;
    Ok(page)
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| qeltrix::Error::io("writing to stdout", e))?;
    Ok(())
}
