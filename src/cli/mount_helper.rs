//! `mount.fuse.qeltrix`: the mount helper that lets `mount -t fuse.qeltrix` (and so a line in
//! /etc/fstab) mount a vault. util-linux runs `/sbin/mount.fuse.qeltrix SRC DIR [-sfnv] [-o OPTS]`;
//! the `qeltrix` binary installed (or linked) under that name turns the mount options into a
//! `qeltrix mount SRC DIR --daemon …` command line and runs it in its place, so the helper
//! returns once the mount is live, as `mount` expects, and with `qeltrix mount`'s exit code.
//!
//! Key sources are files named by options (`key_file=`, `passphrase_file=`, `identity=`,
//! `vault=`); a passphrase itself is refused as an option, since mount options are visible to
//! every user (in /etc/fstab, /proc/self/mountinfo, `ps`). Options `mount` passes for its own
//! use (`rw`, `defaults`, `noauto`, `nofail`, `x-systemd.*`, `comment=…`, …) are ignored, and an
//! unknown one is refused, unless `-s` (sloppy) asks to ignore it too.
//!
//! ```text
//! /srv/vault  /mnt/plain  fuse.qeltrix  key_file=/etc/qeltrix/vault.key,allow_other,nofail  0 0
//! ```

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// The name the binary answers to as a mount helper.
pub const HELPER_NAME: &str = "mount.fuse.qeltrix";

/// Options that take a value, and the `qeltrix mount` flag each becomes.
const VALUE_OPTIONS: &[(&str, &str)] = &[
    ("key_file", "--key-file"),
    ("passphrase_file", "--passphrase-file"),
    ("identity", "--identity"),
    ("vault", "--vault"),
    ("max_kdf_iterations", "--max-kdf-iterations"),
    ("cache_size", "--cache-size"),
    ("readahead", "--readahead"),
    ("workers", "--workers"),
    ("kernel_readahead", "--kernel-readahead"),
    ("log_file", "--log-file"),
];

/// Options without a value, and the flag each becomes.
const FLAG_OPTIONS: &[(&str, &str)] = &[("allow_other", "--allow-other")];

/// Generic options `mount` and fstab use for themselves: a qeltrix mount is always read-only,
/// nodev and nosuid, whatever they say.
const IGNORED: &[&str] = &[
    "rw",
    "ro",
    "defaults",
    "auto",
    "noauto",
    "_netdev",
    "nofail",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "async",
    "sync",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
];

/// Generic options with a value or a family prefix, ignored the same way.
const IGNORED_PREFIXES: &[&str] = &[
    "x-",
    "comment=",
    "user=",
    "users=",
    "context=",
    "fscontext=",
    "defcontext=",
    "rootcontext=",
];

/// What the helper was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Run `qeltrix` with these arguments (after the program name).
    Mount(Vec<OsString>),
    /// `-f` (fake): everything checked, nothing to do.
    Fake,
}

/// True when the program was started as the mount helper (by its name, not its path).
pub fn invoked_as_helper(argv0: &OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|name| name == HELPER_NAME)
}

/// Turns the helper's arguments (after the program name) into `qeltrix mount`'s. The error is
/// the message for the user.
pub fn plan(args: &[OsString]) -> Result<Plan, String> {
    let mut positional = Vec::new();
    let mut options: Vec<u8> = Vec::new();
    let (mut sloppy, mut fake, mut verbose) = (false, false, false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let bytes = arg.as_bytes();
        match bytes {
            b"-o" => {
                let value = it.next().ok_or("-o needs a list of options")?;
                push_options(&mut options, value.as_bytes());
            }
            b"-t" => {
                let kind = it.next().ok_or("-t needs a type")?;
                if kind != "fuse.qeltrix" && kind != "qeltrix" {
                    return Err(format!(
                        "{HELPER_NAME} mounts fuse.qeltrix, not {}",
                        kind.to_string_lossy()
                    ));
                }
            }
            [b'-', b'o', rest @ ..] => push_options(&mut options, rest),
            [b'-', flags @ ..] if !flags.is_empty() && flags.iter().all(|f| b"sfnvi".contains(f)) => {
                sloppy |= flags.contains(&b's');
                fake |= flags.contains(&b'f');
                verbose |= flags.contains(&b'v');
            }
            [b'-', ..] => return Err(format!("unknown argument {}", arg.to_string_lossy())),
            _ => positional.push(arg.clone()),
        }
    }
    let [source, dir] = <[OsString; 2]>::try_from(positional)
        .map_err(|_| format!("usage: {HELPER_NAME} VAULT MOUNTPOINT [-o OPTIONS] [-snfv]"))?;
    let mut out: Vec<OsString> = vec!["mount".into(), source, dir, "--daemon".into()];
    if verbose {
        out.push("-v".into());
    }
    for option in split_options(&options) {
        let text = OsStr::from_bytes(option);
        let (name, value) = match option.iter().position(|b| *b == b'=') {
            Some(i) => (&option[..i], Some(OsStr::from_bytes(unquote(&option[i + 1..])))),
            None => (option, None),
        };
        let name = std::str::from_utf8(name).unwrap_or("");
        if name == "passphrase" {
            return Err(
                "a passphrase is never a mount option (every user can read those): put it \
                        in a file readable by root only and give passphrase_file=FILE"
                    .into(),
            );
        }
        if let Some((_, flag)) = VALUE_OPTIONS.iter().find(|(o, _)| *o == name) {
            match value {
                Some(v) if !v.is_empty() => out.extend([OsString::from(flag), v.to_os_string()]),
                _ => return Err(format!("mount option {name} needs a value: {name}=...")),
            }
        } else if let Some((_, flag)) = FLAG_OPTIONS.iter().find(|(o, _)| *o == name) {
            if value.is_some() {
                return Err(format!("mount option {name} takes no value"));
            }
            out.push(flag.into());
        } else if IGNORED.contains(&name) && value.is_none()
            || IGNORED_PREFIXES.iter().any(|p| option.starts_with(p.as_bytes()))
            || sloppy
        {
            continue;
        } else {
            let known: Vec<String> = VALUE_OPTIONS
                .iter()
                .map(|(o, _)| format!("{o}="))
                .chain(FLAG_OPTIONS.iter().map(|(o, _)| o.to_string()))
                .collect();
            return Err(format!(
                "unknown mount option {} (qeltrix takes {})",
                text.to_string_lossy(),
                known.join(", ")
            ));
        }
    }
    Ok(if fake { Plan::Fake } else { Plan::Mount(out) })
}

/// The options of a list, split at the commas outside double quotes (libmount's rule: a value
/// with a comma is written `key_file="/a,b"`).
fn split_options(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    list.split(move |b| {
        if *b == b'"' {
            quoted = !quoted;
        }
        *b == b',' && !quoted
    })
    .filter(|o| !o.is_empty())
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        v => v,
    }
}

fn push_options(options: &mut Vec<u8>, more: &[u8]) {
    if !options.is_empty() {
        options.push(b',');
    }
    options.extend_from_slice(more);
}

/// Runs as the mount helper: `qeltrix mount … --daemon` takes this process's place (exec), so
/// its exit code and messages are the helper's. Returns only on failure.
pub fn run(args: Vec<OsString>) -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    let args = match plan(&args) {
        Ok(Plan::Mount(args)) => args,
        Ok(Plan::Fake) => return std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{HELPER_NAME}: error: {message}");
            return std::process::ExitCode::from(crate::cli::EXIT_USAGE);
        }
    };
    // This very binary, under its own name: the helper is usually a link to it.
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let error = std::process::Command::new(&exe).arg0("qeltrix").args(args).exec();
    eprintln!("{HELPER_NAME}: error: running {}: {error}", exe.display());
    std::process::ExitCode::from(crate::cli::EXIT_FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    fn planned(line: &str) -> Result<String, String> {
        plan(&args(line)).map(|p| match p {
            Plan::Mount(a) => a.join(OsStr::new(" ")).to_string_lossy().into_owned(),
            Plan::Fake => "fake".into(),
        })
    }

    #[test]
    fn mount_options_become_qeltrix_mount_flags() {
        assert_eq!(
            planned("/srv/v /mnt -o rw,key_file=/k,allow_other,cache_size=64,nofail,x-systemd.automount,_netdev,comment=x=y").unwrap(),
            "mount /srv/v /mnt --daemon --key-file /k --allow-other --cache-size 64"
        );
        assert_eq!(
            planned("/srv/v /mnt -n -v -opassphrase_file=/p -o log_file=/l").unwrap(),
            "mount /srv/v /mnt --daemon -v --passphrase-file /p --log-file /l"
        );
        assert_eq!(planned("/srv/v /mnt -f -o key_file=/k").unwrap(), "fake");
        assert_eq!(
            planned(r#"/srv/v /mnt -o key_file="/keys/a,b",ro"#).unwrap(),
            "mount /srv/v /mnt --daemon --key-file /keys/a,b",
            "a quoted value keeps its comma"
        );
        assert_eq!(
            planned("/srv/v /mnt -t fuse.qeltrix").unwrap(),
            "mount /srv/v /mnt --daemon"
        );
    }

    #[test]
    fn unknown_options_and_passphrases_are_refused_with_a_reason() {
        let e = planned("/v /m -o key_file=/k,colour=blue").unwrap_err();
        assert!(
            e.contains("unknown mount option colour=blue") && e.contains("key_file="),
            "{e}"
        );
        assert_eq!(
            planned("/v /m -s -o key_file=/k,colour=blue").unwrap(),
            "mount /v /m --daemon --key-file /k",
            "-s: sloppy"
        );
        let e = planned("/v /m -o passphrase=hunter2").unwrap_err();
        assert!(e.contains("passphrase_file") && !e.contains("hunter2"), "{e}");
        assert!(planned("/v /m -o key_file")
            .unwrap_err()
            .contains("needs a value"));
        assert!(planned("/v /m -o key_file=")
            .unwrap_err()
            .contains("needs a value"));
        assert!(planned("/v /m -o allow_other=1")
            .unwrap_err()
            .contains("no value"));
        assert!(planned("/v").unwrap_err().starts_with("usage"));
        assert!(planned("/v /m /x").unwrap_err().starts_with("usage"));
        assert!(planned("/v /m -o").unwrap_err().contains("-o needs"));
        assert!(planned("/v /m -t ext4").unwrap_err().contains("not ext4"));
        assert!(planned("/v /m -N 5").unwrap_err().contains("unknown argument -N"));
    }

    #[test]
    fn the_helper_is_known_by_its_name() {
        assert!(invoked_as_helper(OsStr::new("/usr/sbin/mount.fuse.qeltrix")));
        assert!(invoked_as_helper(OsStr::new("mount.fuse.qeltrix")));
        assert!(!invoked_as_helper(OsStr::new("/usr/bin/qeltrix")));
    }
}
