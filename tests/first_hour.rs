//! The first hour with Qeltrix (issue 10): mistakes a new user makes get an answer that says
//! what is wrong, with an exit code of its own.

mod common;

use common::*;

#[test]
fn a_folder_where_a_container_is_expected_is_a_directory_error_with_exit_1() {
    let w = Work::with_key();
    std::fs::create_dir(w.path("d")).unwrap();
    for line in ["info d", "verify d --key-file key", "unpack d out --key-file key"] {
        let err = w.fails(line, 1);
        assert!(err.to_lowercase().contains("is a directory"), "{line}: {err}");
        assert!(!err.contains("incomplete"), "{line}: {err}");
    }
}

#[test]
fn unpack_names_its_output_after_the_input_and_pack_writes_into_a_folder() {
    let w = Work::with_key();
    w.write("talk.mp4", b"not really a video");
    std::fs::create_dir(w.path("vault")).unwrap();
    w.ok("pack talk.mp4 vault/ --key-file key -q");
    assert!(w.exists("vault/talk.mp4.qltx"), "pack f dir/ writes dir/f.qltx");

    std::fs::remove_file(w.path("talk.mp4")).unwrap();
    w.ok("unpack vault/talk.mp4.qltx --key-file key -q");
    assert_eq!(
        w.read("vault/talk.mp4"),
        b"not really a video",
        "INPUT without .qltx"
    );

    std::fs::create_dir(w.path("out")).unwrap();
    w.ok("unpack vault/talk.mp4.qltx out --key-file key -q");
    assert_eq!(w.read("out/talk.mp4"), b"not really a video", "into a folder");

    std::fs::copy(w.path("vault/talk.mp4.qltx"), w.path("noext")).unwrap();
    let err = w.fails("unpack noext --key-file key", 2);
    assert!(err.contains("give an OUTPUT"), "{err}");
}

#[test]
fn unpacked_files_follow_the_umask_while_containers_stay_private() {
    let w = Work::with_key();
    w.write("plain.bin", b"hello");
    // Through `sh`, so that the umask is the one set here, whatever the test runner's.
    let qeltrix = env!("CARGO_BIN_EXE_qeltrix");
    for line in [
        "pack plain.bin c.qltx --key-file key -q",
        "unpack c.qltx out.bin --key-file key -q",
    ] {
        let status = std::process::Command::new("sh")
            .current_dir(w.dir.path())
            .args(["-c", &format!("umask 022 && exec {qeltrix} {line}")])
            .env_remove(qeltrix::cli::PASSPHRASE_ENV)
            .status()
            .unwrap();
        assert!(status.success(), "{line}");
    }
    assert_eq!(
        mode_of(&w.path("out.bin")),
        0o644,
        "plaintext: 0666 minus the umask"
    );
    assert_eq!(mode_of(&w.path("c.qltx")), 0o600, "the container stays private");
}

#[test]
fn dev_null_and_a_fifo_are_written_into_and_never_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let w = Work::with_key();
    let plain = random_bytes(50_000, 4);
    w.write("plain.bin", &plain);
    w.ok("pack plain.bin c.qltx --key-file key -q");
    w.ok("seek c.qltx --offset 0 --length 100 --key-file key -o /dev/null --force");
    w.ok("unpack c.qltx /dev/null --key-file key -q --force");
    let null = std::fs::metadata("/dev/null").unwrap().file_type();
    assert!(null.is_char_device(), "/dev/null is still the device");

    let made = std::process::Command::new("mkfifo")
        .arg(w.path("pipe"))
        .status()
        .unwrap();
    assert!(made.success());
    let mut child = w
        .std_cmd("unpack c.qltx pipe --key-file key -q --force")
        .spawn()
        .unwrap();
    let got = std::fs::read(w.path("pipe")).unwrap(); // until the writer closes it
    assert!(child.wait().unwrap().success());
    assert_eq!(got, plain, "the plaintext went through the FIFO");
    let kind = std::fs::metadata(w.path("pipe")).unwrap().file_type();
    assert!(kind.is_fifo(), "the FIFO is still a FIFO");
}

#[test]
fn an_error_writing_the_output_names_the_output() {
    let w = Work::with_key();
    w.write("plain.bin", b"hello");
    let err = w.fails("pack plain.bin missing-dir/x.qltx --key-file key", 1);
    assert!(err.starts_with("qeltrix: error: missing-dir/x.qltx: "), "{err}");
    w.ok("pack plain.bin c.qltx --key-file key -q");
    let err = w.fails("unpack c.qltx missing-dir/out --key-file key", 1);
    assert!(err.starts_with("qeltrix: error: missing-dir/out: "), "{err}");
}

#[test]
fn a_key_file_can_come_from_the_environment() {
    let w = Work::with_key();
    w.write("plain.bin", b"from the environment");
    let ok = |line: &str| {
        let out = w.cmd(line).env("QELTRIX_KEY_FILE", "key").output().unwrap();
        assert!(out.status.success(), "{line}: {}", stderr_of(&out));
    };
    ok("pack plain.bin c.qltx -q");
    ok("unpack c.qltx out.bin -q");
    assert_eq!(w.read("out.bin"), b"from the environment");
    // The option still wins over the environment.
    w.write_key("other", 9);
    let out = w
        .cmd("unpack c.qltx x.bin --key-file other")
        .env("QELTRIX_KEY_FILE", "key")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
}

#[test]
fn seek_past_the_end_warns() {
    let w = Work::with_key();
    w.write("plain.bin", &[7u8; 100]);
    w.ok("pack plain.bin c.qltx --key-file key -q");
    let out = w.run("seek c.qltx --offset 500 --length 10 --key-file key");
    assert!(out.status.success());
    assert!(stderr_of(&out).contains("past the end"), "{}", stderr_of(&out));
    let out = w.run("seek c.qltx --offset 90 --length 50 --key-file key -o part.bin");
    assert!(
        stderr_of(&out).contains("10 of the 50 bytes"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(w.read("part.bin"), [7u8; 10]);
    let out = w.run("seek c.qltx --offset 0 --length 100 --key-file key -o all.bin");
    assert!(!stderr_of(&out).contains("warning"), "{}", stderr_of(&out));
}

#[test]
fn serve_of_a_missing_path_says_no_such_file() {
    let w = Work::with_key();
    let err = w.fails("serve nope --key-file key --port 0", 1);
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(!err.contains("entity not found"), "{err}");
}

#[test]
fn keygen_writes_to_stdout_with_dash() {
    let w = Work::new();
    let out = w.run("keygen -o -");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        qeltrix::crypto::KeyFileKey::parse(text.as_bytes()).is_ok(),
        "{text}"
    );
    assert!(!w.exists("-"), "no file named -");

    let out = w.run("keygen --x25519 -o -");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let identity = qeltrix::crypto::IdentityKey::parse(&text).unwrap();
    let recipient = identity.recipient().to_string();
    assert!(
        stderr_of(&out).contains(&recipient),
        "the recipient goes to stderr"
    );
}

#[test]
fn mounting_on_a_folder_that_is_not_empty_warns() {
    if !fuse_available() {
        return;
    }
    let w = Work::with_key();
    std::fs::create_dir_all(w.path("vault")).unwrap();
    w.write("plain.bin", b"in the vault");
    w.ok("pack plain.bin vault/ --key-file key -q");
    std::fs::create_dir_all(w.path("mnt")).unwrap();
    w.write("mnt/already-here.txt", b"hidden while mounted");
    let mnt = w.path("mnt").canonicalize().unwrap();
    let out = w.run("mount vault mnt --key-file key --daemon");
    let stderr = stderr_of(&out);
    let _cleanup = DaemonMount {
        mnt: mnt.clone(),
        pid: daemon_pid(&stderr),
    };
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("is not empty"), "{stderr}");
    w.ok("umount mnt");
    assert_eq!(w.read("mnt/already-here.txt"), b"hidden while mounted");
}

#[test]
fn not_a_container_has_its_own_exit_code_apart_from_a_wrong_key_or_tampering() {
    let w = Work::with_key();
    w.write(
        "notes.txt",
        b"just some text, long enough to look like a header maybe",
    );
    w.write("plain.bin", &random_bytes(64 * KIB, 7));
    w.ok("pack plain.bin c.qltx --key-file key -q");
    for line in [
        "info notes.txt",
        "verify notes.txt --key-file key",
        "unpack notes.txt out --key-file key",
        "seek notes.txt --offset 0 --length 1 --key-file key",
    ] {
        let err = w.fails(line, 4);
        assert!(
            err.contains("notes.txt: not a Qeltrix container"),
            "{line}: {err}"
        );
    }

    // A wrong key and a tampered block stay exit 3.
    write_key_file(&w.path("other.key"), 0x42);
    w.fails("verify c.qltx --key-file other.key", 3);
    let mut bytes = w.read("c.qltx");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    w.write("bad.qltx", &bytes);
    w.fails("verify bad.qltx --key-file key", 3);
}

#[test]
fn bash_completes_commands_and_flags_from_the_generated_script() {
    let w = Work::new();
    let script = w.ok("completions bash");
    w.write("qeltrix.bash", script.as_bytes());
    // Bash's own completion machinery, as a user's shell runs it on Tab.
    let complete = |words: &str, cword: usize| -> String {
        let line = format!(
            "source ./qeltrix.bash && COMP_WORDS=({words}) && COMP_CWORD={cword} && \
             COMP_LINE='{words}' && COMP_POINT=${{#COMP_LINE}} && \
             _qeltrix qeltrix \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\" && \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = std::process::Command::new("bash")
            .current_dir(w.dir.path())
            .args(["--norc", "-c", &line])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let commands = complete("qeltrix pa", 1);
    assert!(commands.lines().any(|l| l == "pack"), "{commands}");
    assert!(commands.lines().any(|l| l == "passwd"), "{commands}");
    let flags = complete("qeltrix mount --key", 2);
    assert!(flags.lines().any(|l| l == "--key-file"), "{flags}");

    for shell in ["zsh", "fish"] {
        let script = w.ok(&format!("completions {shell}"));
        assert!(script.contains("flush-after"), "{shell}: {script}");
    }
    let err = w.fails("completions tcsh", 2);
    assert!(err.contains("possible values"), "{err}");
}

#[test]
fn the_manual_pages_render_without_warnings_and_cover_every_command() {
    let w = Work::new();
    let page = w.ok("man");
    w.write("qeltrix.1", page.as_bytes());
    let render = |file: &str| -> String {
        let out = std::process::Command::new("groff")
            .current_dir(w.dir.path())
            .args(["-man", "-Tutf8", "-P-cbou", "-ww", file])
            .output()
            .expect("groff (Debian: groff-base; scripts/test.sh installs it)");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && warnings.is_empty(), "{file}: {warnings}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = render("qeltrix.1");
    assert!(text.contains("Seekable encrypted containers"), "{text}");

    std::fs::create_dir(w.path("man1")).unwrap();
    w.ok("man --dir man1");
    for command in [
        "pack",
        "unpack",
        "seek",
        "info",
        "verify",
        "mount",
        "serve",
        "completions",
    ] {
        let file = format!("man1/qeltrix-{command}.1");
        assert!(w.exists(&file), "{file}");
        let text = render(&file);
        assert!(text.contains(&format!("qeltrix-{command}")), "{file}: {text}");
    }
    assert!(render("man1/qeltrix-pack.1").contains("--flush-after"));
    let err = w.fails("man --dir qeltrix.1", 2);
    assert!(err.contains("not a folder"), "{err}");
}

/// An RFC 3339 UTC timestamp at the start of a log line: `2026-11-30T01:09:49.147843Z `.
fn starts_with_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    digits(0..4)
        && b.get(4) == Some(&b'-')
        && b.get(10) == Some(&b'T')
        && digits(11..13)
        && line.split_once(' ').is_some_and(|(t, _)| t.ends_with('Z'))
}

#[test]
fn log_lines_of_mount_gateway_and_sink_carry_a_timestamp() {
    let w = Work::with_key();
    let key = w.path("key");
    let mut gateway = Server::start(&[
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        key.to_str().unwrap(),
        "--stats-interval",
        "0",
    ]);
    drop(connect(gateway.addr));
    let line = gateway.wait_for_line(|l| l.contains("#1 "));
    assert!(starts_with_timestamp(&line), "{line}");

    std::fs::create_dir(w.path("out")).unwrap();
    let out = w.path("out");
    let mut sink = Server::start(&[
        "sink",
        "--listen",
        "127.0.0.1:0",
        "--out-dir",
        out.to_str().unwrap(),
        "--stats-interval",
        "0",
    ]);
    drop(connect(sink.addr));
    let line = sink.wait_for_line(|l| l.contains("#1 "));
    assert!(starts_with_timestamp(&line), "{line}");

    if !fuse_available() {
        return;
    }
    std::fs::create_dir_all(w.path("vault")).unwrap();
    std::fs::create_dir_all(w.path("mnt")).unwrap();
    w.write("vault/bad.qltx", b"garbage");
    w.write("plain.bin", b"readable");
    w.ok("pack plain.bin vault/ --key-file key -q");
    let mnt = w.path("mnt").canonicalize().unwrap();
    // The scan warns before the mount detaches: on the terminal's stderr.
    let out = w.run("mount vault mnt --key-file key --daemon");
    let stderr = stderr_of(&out);
    let _cleanup = DaemonMount {
        mnt,
        pid: daemon_pid(&stderr),
    };
    assert!(out.status.success(), "{stderr}");
    w.ok("umount mnt");
    let line = stderr
        .lines()
        .find(|l| l.contains("bad.qltx"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(starts_with_timestamp(line), "{line}");
}

#[test]
fn every_command_takes_quiet_and_verbose() {
    let w = Work::new();
    let help = w.ok("--help");
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 17, "{commands:?}");
    for command in commands {
        let text = w.ok(&format!("help {command}"));
        assert!(text.contains("-q, --quiet"), "{command}: {text}");
        assert!(text.contains("-v, --verbose"), "{command}: {text}");
    }
}

#[test]
fn serve_and_gateway_show_their_default_addresses_in_help() {
    let w = Work::new();
    let serve = w.ok("serve --help");
    assert!(serve.contains("[default: 127.0.0.1:7621"), "{serve}");
    let gateway = w.ok("gateway --help");
    assert!(gateway.contains("[default: 127.0.0.1:7620]"), "{gateway}");
    // Words a user has met: no internal jargon.
    for help in [&serve, &gateway] {
        assert!(!help.to_lowercase().contains("seed"), "{help}");
    }
}
