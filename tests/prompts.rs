//! Prompts that look at the container first (issue "The first hour": prompts ignore the
//! container's slots). A passphrase is asked for only when a slot could take it, on the
//! controlling terminal even when stdin carries the data, and a wrong vault passphrase is named
//! as such. Terminals are real: `script` (util-linux) runs the command on a pseudo-terminal and
//! the test types at its prompts; `setsid` runs a command with no controlling terminal at all.
//! Passphrases reach the processes through files, the environment or the terminal, never argv.

mod common;

use common::*;
use qeltrix::cli::PASSPHRASE_ENV;
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};

const PASS: &str = "prompts test passphrase";
const WRONG: &str = "not the passphrase";

/// A working folder with `plain.bin`, a key file `key`, passphrase files `pass` and `wrong`, and
/// `kf.qltx`, a container with a key-file slot only.
fn work() -> (Work, Vec<u8>) {
    let w = Work::with_key();
    let plain = random_bytes(100_000, 3);
    w.write("plain.bin", &plain);
    w.write("pass", format!("{PASS}\n").as_bytes());
    w.write("wrong", format!("{WRONG}\n").as_bytes());
    w.ok("pack plain.bin kf.qltx --key-file key --block-size 16 -q");
    (w, plain)
}

/// Makes `V` a vault (passphrase `PASS`) holding `V/c.qltx`, whose only slot is a keyring slot.
fn vault(w: &Work) {
    w.ok("init V --passphrase-file pass --kdf-iterations 1000");
    w.ok("pack plain.bin V/c.qltx --passphrase-file pass -q");
    let slots = w.ok("rekey V/c.qltx --list");
    assert!(
        slots.contains("#0 keyring") && !slots.contains("passphrase"),
        "{slots}"
    );
}

/// A shell command line run on a pseudo-terminal (through `script`) in `w`'s folder: the
/// terminal's output collected as it comes, what is typed written to `script`'s stdin.
struct OnTerminal {
    child: Child,
    output: Captured,
}

impl OnTerminal {
    /// Runs `shell_line`, in which `QELTRIX` stands for the binary under test.
    fn start(w: &Work, shell_line: &str) -> Self {
        let line = shell_line.replace("QELTRIX", &format!("'{}'", env!("CARGO_BIN_EXE_qeltrix")));
        let mut script = Command::new("script");
        script
            .args(["-qfec", &line, "/dev/null"])
            .current_dir(w.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for var in HERMETIC_ENV {
            script.env_remove(var);
        }
        let mut child = script
            .spawn()
            .expect("script (util-linux) runs the command on a pty");
        let output = Captured::start(child.stdout.take().unwrap());
        OnTerminal { child, output }
    }

    fn text(&self) -> String {
        OutputSource::text(&self.output)
    }

    /// Waits for `prompt` on the terminal (a new one, after those answered), then types `line`.
    fn answer(&mut self, prompt: &str, line: &str) {
        let seen = self.text().matches(prompt).count();
        wait_for_output(prompt, &mut self.child, &self.output, |t| {
            (t.matches(prompt).count() > seen).then_some(())
        });
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until the command has ended or asks for a passphrase: its exit code, or `None`
    /// when it is waiting at a prompt.
    fn exit_or_prompt(&mut self) -> Option<i32> {
        let mut exited = None;
        wait_until("an exit or a passphrase prompt", || {
            if self.output.text().contains("assphrase:") {
                return true;
            }
            exited = self.child.try_wait().unwrap();
            exited.is_some()
        });
        let status = exited?;
        wait_until("the end of the terminal's output", || self.output.complete());
        Some(status.code().unwrap_or(-1))
    }

    fn wait_exit(&mut self) -> i32 {
        wait_exit(&mut self.child, &self.output).code().unwrap_or(-1)
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        // Killing `script` closes the pty, and the command on it gets SIGHUP.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `qeltrix LINE` in `w`'s folder with no controlling terminal (`setsid`), stdin from the file
/// `stdin` (or empty).
fn without_terminal(w: &Work, line: &str, stdin: Option<&str>) -> Command {
    let mut cmd = Command::new("setsid");
    cmd.arg("--wait")
        .arg(env!("CARGO_BIN_EXE_qeltrix"))
        .args(line.split_whitespace())
        .current_dir(w.dir.path())
        .stdin(match stdin {
            Some(f) => Stdio::from(std::fs::File::open(w.path(f)).unwrap()),
            None => Stdio::null(),
        });
    for var in HERMETIC_ENV {
        cmd.env_remove(var);
    }
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().expect("setsid (util-linux) runs")
}

#[test]
fn a_container_without_a_passphrase_slot_names_its_key_instead_of_prompting() {
    let (w, plain) = work();
    let recipient = w.ok("keygen --x25519 -o id").trim().to_string();
    w.ok(&format!("pack plain.bin x.qltx --recipient {recipient} -q"));
    let commands = [
        "unpack C out.bin",
        "seek C --offset 0 --length 10 -o out.bin",
        "verify C",
        "rekey C --scrub",
        "rekey C --add-passphrase",
        "reencrypt C out.bin",
        "serve C --listen 127.0.0.1:0",
    ];
    for (container, needs) in [("kf.qltx", "--key-file"), ("x.qltx", "--identity")] {
        let said = format!("{container} has no passphrase slot: it needs {needs}");
        for command in commands {
            let line = command.replace('C', container);
            let mut terminal = OnTerminal::start(&w, &format!("QELTRIX {line}"));
            let code = terminal.exit_or_prompt();
            let text = terminal.text();
            // No key was given: a usage error (2), like a passphrase with no terminal to ask on.
            assert_eq!(code, Some(2), "{line} (None: it prompted): {text}");
            assert!(text.contains(&said), "{line}: {text}");
            assert!(!w.exists("out.bin"), "{line} left output");
        }
        // Without a terminal, the same answer rather than "no terminal".
        let out = run(without_terminal(&w, &format!("unpack {container} out.bin"), None));
        assert_code(&out, 2, "unpack without a terminal");
        assert!(stderr_of(&out).contains(&said), "{}", stderr_of(&out));
    }
    // A passphrase given anyway is a wrong key (3), with the same advice.
    let out = w
        .cmd("unpack kf.qltx out.bin")
        .env(PASSPHRASE_ENV, PASS)
        .output()
        .unwrap();
    assert_code(&out, 3, "unpack kf.qltx with a passphrase");
    let err = stderr_of(&out);
    assert!(
        err.contains("no passphrase slot") && err.contains("it needs --key-file"),
        "{err}"
    );
    // The options named do open them.
    w.ok("unpack kf.qltx out.bin --key-file key -q");
    assert!(w.read("out.bin") == plain);
    w.ok("verify x.qltx --identity id -q");
}

#[test]
fn piped_data_and_the_passphrase_from_the_terminal() {
    let (w, plain) = work();
    let mut terminal = OnTerminal::start(
        &w,
        "cat plain.bin | QELTRIX pack - piped.qltx --kdf-iterations 1000 -q",
    );
    terminal.answer("Passphrase:", PASS);
    terminal.answer("Again:", PASS);
    assert_eq!(terminal.wait_exit(), 0, "{}", terminal.text());
    let out = w
        .cmd("unpack piped.qltx out.bin -q")
        .env(PASSPHRASE_ENV, PASS)
        .output()
        .unwrap();
    assert_code(&out, 0, "unpack piped.qltx");
    assert!(
        w.read("out.bin") == plain,
        "the piped data, under the typed passphrase"
    );

    // Reading with stdin redirected asks on the terminal too.
    std::fs::remove_file(w.path("out.bin")).unwrap();
    let mut terminal = OnTerminal::start(&w, "QELTRIX unpack piped.qltx out.bin -q < /dev/null");
    terminal.answer("Passphrase:", PASS);
    assert_eq!(terminal.wait_exit(), 0, "{}", terminal.text());
    assert!(w.read("out.bin") == plain);
}

#[test]
fn with_no_terminal_the_error_says_how_to_give_the_passphrase() {
    let (w, plain) = work();
    let how = "--passphrase-file or QELTRIX_PASSPHRASE";
    let out = run(without_terminal(&w, "pack - new.qltx", Some("plain.bin")));
    assert_code(&out, 2, "pack - with no terminal");
    let err = stderr_of(&out);
    assert!(
        err.contains("Passphrase needed and there is no terminal to ask on") && err.contains(how),
        "{err}"
    );
    assert!(!w.exists("new.qltx"));

    w.ok("pack plain.bin pp.qltx --passphrase-file pass --kdf-iterations 1000 -q");
    let out = run(without_terminal(&w, "unpack pp.qltx out.bin", None));
    assert_code(&out, 2, "unpack with no terminal");
    assert!(stderr_of(&out).contains(how), "{}", stderr_of(&out));
    assert!(!w.exists("out.bin"));

    // The environment needs no terminal.
    let mut cmd = without_terminal(&w, "pack - env.qltx --kdf-iterations 1000 -q", Some("plain.bin"));
    cmd.env(PASSPHRASE_ENV, PASS);
    assert_code(&run(cmd), 0, "pack - with QELTRIX_PASSPHRASE");
    let mut cmd = without_terminal(&w, "unpack env.qltx out.bin -q", None);
    cmd.env(PASSPHRASE_ENV, PASS);
    assert_code(&run(cmd), 0, "unpack with QELTRIX_PASSPHRASE");
    assert!(w.read("out.bin") == plain);
}

#[test]
fn a_wrong_vault_passphrase_says_it_does_not_open_the_vault() {
    let (w, plain) = work();
    vault(&w);
    let found = std::fs::canonicalize(w.path("V")).unwrap();
    let in_container = format!(
        "V/c.qltx: wrong key: the passphrase does not open vault {}",
        found.display()
    );
    let lines = [
        (
            "unpack V/c.qltx out.bin --passphrase-file wrong",
            in_container.clone(),
        ),
        (
            "seek V/c.qltx --offset 0 --length 10 -o out.bin --passphrase-file wrong",
            in_container.clone(),
        ),
        ("verify V/c.qltx --passphrase-file wrong", in_container.clone()),
        (
            "serve V/c.qltx --listen 127.0.0.1:0 --passphrase-file wrong",
            in_container.clone(),
        ),
        (
            "serve V --listen 127.0.0.1:0 --passphrase-file wrong",
            format!(
                "wrong key: the passphrase does not open vault {}",
                found.display()
            ),
        ),
        (
            "passwd V --passphrase-file wrong --new-passphrase-file pass",
            "wrong key: the passphrase does not open vault V".into(),
        ),
    ];
    for (line, said) in lines {
        let err = w.fails(line, 3);
        assert!(err.contains(&said), "{line}: {err}");
        assert!(!err.contains("no passphrase slot"), "{line}: {err}");
    }
    let out = w
        .cmd("unpack V/c.qltx out.bin")
        .env(PASSPHRASE_ENV, WRONG)
        .output()
        .unwrap();
    assert_code(&out, 3, "unpack V/c.qltx with a wrong QELTRIX_PASSPHRASE");
    assert!(stderr_of(&out).contains(&in_container), "{}", stderr_of(&out));

    // A key file given with --vault: the vault passphrase is still asked for, and the key file
    // opens a container with no slot for it.
    w.ok("pack plain.bin V/kf.qltx --key-file key -q");
    let mut terminal = OnTerminal::start(&w, "QELTRIX unpack V/kf.qltx kf.bin --key-file key --vault V -q");
    terminal.answer("Vault passphrase:", PASS);
    assert_eq!(terminal.wait_exit(), 0, "{}", terminal.text());
    assert!(w.read("kf.bin") == plain);

    // With another key given that opens the container, a wrong vault passphrase is no error.
    w.ok("pack plain.bin V/both.qltx --key-file key --passphrase-file pass -q");
    w.ok("unpack V/both.qltx both.bin --key-file key --passphrase-file wrong -q");
    assert!(w.read("both.bin") == plain);

    // Typed at the prompt, which asks for the vault's passphrase.
    let mut terminal = OnTerminal::start(&w, "QELTRIX unpack V/c.qltx out.bin -q");
    terminal.answer("Vault passphrase:", WRONG);
    assert_eq!(terminal.wait_exit(), 3, "{}", terminal.text());
    assert!(terminal.text().contains(&in_container), "{}", terminal.text());
    assert!(!w.exists("out.bin"));
    let mut terminal = OnTerminal::start(&w, "QELTRIX unpack V/c.qltx out.bin -q");
    terminal.answer("Vault passphrase:", PASS);
    assert_eq!(terminal.wait_exit(), 0, "{}", terminal.text());
    assert!(w.read("out.bin") == plain);

    // Outside its vault, a keyring slot needs the vault named, and nothing is asked.
    std::fs::copy(w.path("V/c.qltx"), w.path("lone.qltx")).unwrap();
    let mut terminal = OnTerminal::start(&w, "QELTRIX verify lone.qltx");
    assert_eq!(terminal.exit_or_prompt(), Some(2), "{}", terminal.text());
    assert!(
        terminal
            .text()
            .contains("lone.qltx has no passphrase slot: it needs --vault"),
        "{}",
        terminal.text()
    );
    w.ok("verify lone.qltx --vault V --passphrase-file pass -q");
}
