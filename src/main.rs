//! The `qeltrix` command line. Private to the binary: the library knows nothing of it.
//!
//! Installed (or linked) as `mount.fuse.qeltrix`, the same binary is the mount helper that
//! `mount -t fuse.qeltrix` and /etc/fstab run ([`cli::mount_helper`]), chosen by the program's name before
//! any argument is parsed.

#![forbid(unsafe_code)]

mod cli;

use cli::mount_helper;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os();
    if args
        .next()
        .is_some_and(|argv0| mount_helper::invoked_as_helper(&argv0))
    {
        return mount_helper::run(args.collect());
    }
    cli::main()
}
