//! A vault read by the long-running readers (serve, mount) with ONE passphrase prompt on a real
//! terminal: `script` gives the process a pty, the test answers the prompt, then reads several
//! containers through the reader and counts the prompts. A wrong vault passphrase exits 3.

mod common;

use common::{fuse_available, qeltrix, random_bytes, wait_exit, wait_for_output, wait_for_text, Captured};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const PASS: &str = "vault readers passphrase";

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("qeltrix")
}

fn run(args: &[&str]) -> std::process::Output {
    qeltrix().args(args).output().unwrap()
}

/// A vault with three containers (keyring slots) and their plaintexts.
struct Vault {
    dir: tempfile::TempDir,
    files: Vec<(String, Vec<u8>)>,
}

impl Vault {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, format!("{PASS}\n")).unwrap();
        let root = dir.path().join("vault");
        let out = run(&[
            "init",
            root.to_str().unwrap(),
            "--passphrase-file",
            pw.to_str().unwrap(),
            "--kdf-iterations",
            "1000",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let mut files = Vec::new();
        for (i, name) in ["a.txt", "sub/b.bin", "c.bin"].iter().enumerate() {
            let plain = random_bytes(5000 + i * 70_000, i as u64);
            let src = dir.path().join(format!("plain{i}"));
            std::fs::write(&src, &plain).unwrap();
            let dest = root.join(format!("{name}.qltx"));
            let out = run(&[
                "pack",
                src.to_str().unwrap(),
                dest.to_str().unwrap(),
                "--passphrase-file",
                pw.to_str().unwrap(),
                "--block-size",
                "16",
                "-q",
            ]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let info = run(&["info", dest.to_str().unwrap()]);
            assert!(
                String::from_utf8_lossy(&info.stdout).contains("keyring"),
                "packed into the vault: keyring slot"
            );
            files.push((name.to_string(), plain));
        }
        Vault { dir, files }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("vault")
    }
}

/// A command running on a pseudo-terminal (through `script`), its output collected as it comes.
struct OnTerminal {
    child: Child,
    output: Captured,
}

impl OnTerminal {
    fn start(args: &[&str]) -> Self {
        let command = std::iter::once(bin().to_str().unwrap().to_string())
            .chain(args.iter().map(|a| a.to_string()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .env_remove("QELTRIX_PASSPHRASE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script (util-linux) runs the command on a pty");
        let output = Captured::start(child.stdout.take().unwrap());
        OnTerminal { child, output }
    }

    fn text(&self) -> String {
        common::OutputSource::text(&self.output)
    }

    /// Waits until the output contains `needle`; returns the output.
    fn wait_for(&mut self, needle: &str) -> String {
        wait_for_text(&mut self.child, &self.output, needle)
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn wait_exit(&mut self) -> i32 {
        wait_exit(&mut self.child, &self.output).code().unwrap_or(-1)
    }

    fn prompts(&self) -> usize {
        self.text().to_lowercase().matches("passphrase:").count()
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        // Killing `script` closes the pty, and the reader on it gets SIGHUP.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `http://127.0.0.1:PORT/` base URL a server printed.
fn url_in(text: &str) -> String {
    const PREFIX: &str = "http://127.0.0.1:";
    let start = text.find(PREFIX).expect("a URL") + PREFIX.len();
    let port: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
    format!("{PREFIX}{port}/")
}

#[test]
fn serve_reads_a_vault_after_one_passphrase_prompt() {
    let v = Vault::new();
    let root = v.root();
    let mut serve = OnTerminal::start(&["serve", root.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    serve.wait_for("assphrase:");
    serve.type_line(PASS);
    let text = serve.wait_for("http://127.0.0.1:");
    let base = url_in(&text);
    for (name, plain) in &v.files {
        let body = ureq::get(&format!("{base}{name}"))
            .call()
            .unwrap()
            .into_body()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .unwrap();
        assert!(body == *plain, "{name} served byte-exact");
    }
    assert_eq!(
        serve.prompts(),
        1,
        "one prompt for the whole vault:\n{}",
        serve.text()
    );
}

#[test]
fn serve_with_a_wrong_vault_passphrase_exits_3() {
    let v = Vault::new();
    let root = v.root();
    let mut serve = OnTerminal::start(&["serve", root.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    serve.wait_for("assphrase:");
    serve.type_line("not the passphrase");
    assert_eq!(serve.wait_exit(), 3, "{}", serve.text());
    assert!(serve.text().contains("wrong key"), "{}", serve.text());
}

/// Unmounts on drop (also when the test fails), after the pty's process is gone.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new(bin()).arg("umount").arg(&self.0).output();
    }
}

#[test]
fn mount_reads_a_vault_after_one_passphrase_prompt() {
    if !fuse_available() {
        return;
    }
    let v = Vault::new();
    let (root, mnt) = (v.root(), v.dir.path().join("mnt"));
    std::fs::create_dir(&mnt).unwrap();
    let _unmount = Unmount(mnt.clone());
    let mut mount = OnTerminal::start(&["mount", root.to_str().unwrap(), mnt.to_str().unwrap()]);
    mount.wait_for("assphrase:");
    mount.type_line(PASS);
    let first = mnt.join(&v.files[0].0);
    wait_for_output("the vault to be mounted", &mut mount.child, &mount.output, |_| {
        first.exists().then_some(())
    });
    for (name, plain) in &v.files {
        assert!(
            std::fs::read(mnt.join(name)).unwrap() == *plain,
            "{name} reads byte-exact through the mount"
        );
    }
    assert_eq!(
        mount.prompts(),
        1,
        "one prompt for the whole vault:\n{}",
        mount.text()
    );
}
