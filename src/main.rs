//! The `qeltrix` command line. Private to the binary: the library knows nothing of it.

#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
