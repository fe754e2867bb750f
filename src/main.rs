//! The `qeltrix` command line. Private to the binary: the library knows nothing of it.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
