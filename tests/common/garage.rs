//! A real Garage S3 cluster on 127.0.0.1 for the remote-storage tests: three nodes with
//! `replication_factor = 3` (one zone each, `consistency_mode = "consistent"`, lmdb), or one node
//! (`--single-node`). Every node has its own ports and folders under one temporary folder; the
//! cluster is killed and the folder removed on drop, also when a test fails (and the nodes die
//! with the test process should it be killed outright: `PR_SET_PDEATHSIG`).
//!
//! The binary is `$QELTRIX_GARAGE`, else `garage` on `PATH` (`scripts/test.sh` installs 2.5.0).
//! Every wait polls a real condition (a port, `garage health`, an S3 request) up to
//! [`DEADLINE`]; none sleeps as synchronization.
//!
//! Lessons from running Garage 2.5.0 here (`/work/shared/notes/garage-cluster.md`):
//! - the nodes' ids exist only after their first start, so the configs are rewritten with
//!   `bootstrap_peers` once they are known: a node killed before it saved its peer list (Garage
//!   saves it once a minute) still finds the others when restarted;
//! - `key import` needs `--yes`, `layout apply` needs `--version`;
//! - a dead node is noticed after a few seconds, so the first requests after a kill are slow:
//!   clients need timeouts well above that;
//! - Garage sets no TCP_NODELAY, so each small request waits ~40 ms for a delayed ACK unless the
//!   tests run in a network namespace with `quickack 1` on the loopback route (`scripts/test.sh`).

use super::DEADLINE;
use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The imported S3 key: `GK` + 24 hex digits, and a 64-hex-digit secret (fixed, so that a test
/// can look for the secret in output).
pub const GARAGE_KEY_ID: &str = "GK5145c7472a9e0b1d2c3f4a5b";
pub const GARAGE_SECRET: &str = "9f1c2e3d4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
/// The bucket every cluster is created with.
pub const GARAGE_BUCKET: &str = "qeltrix-test";
/// The S3 region Garage answers for.
pub const GARAGE_REGION: &str = "garage";

/// How often the cluster waits look again (each look runs a `garage` command or a request).
const POLL: Duration = Duration::from_millis(100);

/// The Garage binary: `$QELTRIX_GARAGE`, else `garage` on `PATH`. Panics with what to do when
/// there is none.
pub fn garage_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("QELTRIX_GARAGE") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "QELTRIX_GARAGE={} is not a file", p.display());
        return p;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("garage"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "no Garage binary: set QELTRIX_GARAGE or put `garage` on PATH \
                 (cargo install garage --locked --version 2.5.0; scripts/test.sh does it)"
            )
        })
}

/// One node: its config, log, ports and (while it runs) its process.
struct Node {
    dir: PathBuf,
    s3_port: u16,
    rpc_port: u16,
    admin_port: u16,
    /// `<64 hex>@127.0.0.1:RPC`, known after the first start.
    id: String,
    child: Option<Child>,
}

impl Node {
    fn cfg(&self) -> PathBuf {
        self.dir.join("garage.toml")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("log")
    }
}

/// A running Garage cluster (see the module documentation). Nodes are numbered from 0.
pub struct Garage {
    /// Dropped last: the nodes are killed first (fields drop in order after `Drop::drop`).
    nodes: Vec<Node>,
    bin: PathBuf,
    single: bool,
    dir: TempDir,
}

impl Garage {
    /// Three nodes, `replication_factor = 3`, one zone per node, a bucket [`GARAGE_BUCKET`] and
    /// the key [`GARAGE_KEY_ID`] allowed to read and write it; returns once every node reports
    /// the cluster healthy and answers S3 requests with the key.
    pub fn cluster() -> Garage {
        Garage::start(3, false)
    }

    /// One node (`garage server --single-node`, `replication_factor = 1`) with the same bucket
    /// and key.
    pub fn single_node() -> Garage {
        Garage::start(1, true)
    }

    fn start(n: usize, single: bool) -> Garage {
        let bin = garage_binary();
        let dir = tempfile::Builder::new()
            .prefix("garage-")
            .tempdir()
            .expect("temp dir");
        // Free ports: all bound at once (so no two are the same), released just before the
        // nodes bind them.
        let listeners: Vec<TcpListener> = (0..3 * n)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let port = |i: usize| listeners[i].local_addr().unwrap().port();
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                let node_dir = dir.path().join(format!("node{i}"));
                fs::create_dir_all(node_dir.join("meta")).unwrap();
                fs::create_dir_all(node_dir.join("data")).unwrap();
                Node {
                    dir: node_dir,
                    s3_port: port(3 * i),
                    rpc_port: port(3 * i + 1),
                    admin_port: port(3 * i + 2),
                    id: String::new(),
                    child: None,
                }
            })
            .collect();
        drop(listeners);
        let replication = if single { 1 } else { 3 };
        for node in &nodes {
            write_config(node, replication, &[]);
        }
        let mut g = Garage {
            nodes,
            bin,
            single,
            dir,
        };
        for i in 0..n {
            let child = g.spawn_node(&g.nodes[i]);
            g.nodes[i].child = Some(child);
        }
        for i in 0..n {
            g.wait_node_listening(i);
        }
        for i in 0..n {
            let out = g.garage_ok(i, &["node", "id", "-q"]);
            g.nodes[i].id = out.trim().to_string();
            assert!(
                g.nodes[i].id.contains('@'),
                "unexpected `garage node id -q` output: {out}"
            );
        }
        // From now on a restarted node finds the others by itself.
        let ids: Vec<String> = g.nodes.iter().map(|n| n.id.clone()).collect();
        for node in &g.nodes {
            write_config(node, replication, &ids);
        }
        if single {
            g.wait_healthy();
        } else {
            g.form_cluster();
        }
        if !single {
            g.garage_ok(0, &["bucket", "create", GARAGE_BUCKET]);
            g.garage_ok(
                0,
                &[
                    "key",
                    "import",
                    "--yes",
                    "-n",
                    "qeltrix-test",
                    GARAGE_KEY_ID,
                    GARAGE_SECRET,
                ],
            );
            g.garage_ok(
                0,
                &[
                    "bucket",
                    "allow",
                    "--read",
                    "--write",
                    "--owner",
                    GARAGE_BUCKET,
                    "--key",
                    GARAGE_KEY_ID,
                ],
            );
        }
        for i in 0..n {
            g.wait_s3_ready(i);
        }
        g
    }

    /// Connects node 0 to the others, assigns one zone per node and applies the layout, then
    /// waits until every node sees all nodes up.
    fn form_cluster(&self) {
        for i in 1..self.nodes.len() {
            let id = self.nodes[i].id.clone();
            self.poll(&format!("node 0 to connect to node {i}"), || {
                self.garage(0, &["node", "connect", &id]).status.success()
            });
        }
        self.poll("node 0 to see every node", || {
            let out = self.garage(0, &["status"]);
            let text = String::from_utf8_lossy(&out.stdout);
            out.status.success() && self.nodes.iter().all(|node| text.contains(short_id(&node.id)))
        });
        for (i, node) in self.nodes.iter().enumerate() {
            let zone = format!("z{}", i + 1);
            self.garage_ok(
                0,
                &["layout", "assign", "-z", &zone, "-c", "1G", short_id(&node.id)],
            );
        }
        self.garage_ok(0, &["layout", "apply", "--version", "1"]);
        self.wait_healthy();
    }

    /// Waits until every running node reports the cluster HEALTHY with every storage node up.
    pub fn wait_healthy(&self) {
        let total = self.nodes.len();
        for i in self.running() {
            self.poll_why(&format!("node {i} to report the cluster healthy"), || {
                let h = self.health(i);
                if h.status == "HEALTHY" && h.storage_nodes == total && h.storage_nodes_up == total {
                    Ok(())
                } else {
                    Err(format!("{h:?}"))
                }
            });
        }
    }

    /// Waits until node `via` sees `up` storage nodes up (for instance 2 after a kill, once
    /// Garage has noticed).
    pub fn wait_storage_nodes_up(&self, via: usize, up: usize) {
        self.poll(&format!("node {via} to see {up} storage nodes up"), || {
            self.health(via).storage_nodes_up == up
        });
    }

    /// `garage health` through node `i`, parsed.
    pub fn health(&self, i: usize) -> Health {
        let out = self.garage(i, &["health"]);
        parse_health(&String::from_utf8_lossy(&out.stdout))
    }

    /// Waits until node `i`'s S3 API lists the bucket with the key (the key and the bucket have
    /// reached it).
    fn wait_s3_ready(&self, i: usize) {
        self.poll_why(&format!("node {i}'s S3 API to list the bucket"), || {
            match self.s3_get(i, &format!("/{GARAGE_BUCKET}?list-type=2")) {
                (200, _) => Ok(()),
                (status, body) => Err(format!("last answer: {status} {body}")),
            }
        });
    }

    fn spawn_node(&self, node: &Node) -> Child {
        use std::os::unix::process::CommandExt;
        let log = File::options()
            .create(true)
            .append(true)
            .open(node.log())
            .expect("node log");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(node.cfg()).arg("server");
        if self.single {
            cmd.args(["--single-node", "--default-bucket"])
                .env("GARAGE_DEFAULT_ACCESS_KEY", GARAGE_KEY_ID)
                .env("GARAGE_DEFAULT_SECRET_KEY", GARAGE_SECRET)
                .env("GARAGE_DEFAULT_BUCKET", GARAGE_BUCKET);
        }
        cmd.env("RUST_LOG", "garage=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec. The node
        // then dies with the thread that started it, even if the test process is SIGKILLed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()))
    }

    /// Waits until node `i` listens on its S3 and admin ports (not the RPC port: a bare connect
    /// there makes Garage log a handshake error).
    fn wait_node_listening(&self, i: usize) {
        let node = &self.nodes[i];
        for port in [node.s3_port, node.admin_port] {
            self.poll(&format!("node {i} to listen on port {port}"), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
    }

    /// Polls `cond` every 100 ms up to the deadline; panics naming `what`, with the nodes'
    /// logs' tails, at the deadline or if a node that should run has exited.
    fn poll(&self, what: &str, mut cond: impl FnMut() -> bool) {
        self.poll_why(what, || if cond() { Ok(()) } else { Err(String::new()) })
    }

    /// Like [`Garage::poll`], `cond` saying why not yet (shown at the deadline).
    fn poll_why(&self, what: &str, mut cond: impl FnMut() -> Result<(), String>) {
        let start = Instant::now();
        loop {
            let why = match cond() {
                Ok(()) => return,
                Err(why) => why,
            };
            for (i, node) in self.nodes.iter().enumerate() {
                if let Some(child) = &node.child {
                    // try_wait needs &mut; a zombie check through /proc does not.
                    let stat = fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
                    if stat.is_empty() || stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) {
                        panic!(
                            "garage node {i} exited while waiting for {what}; its log:\n{}",
                            tail(&node.log())
                        );
                    }
                }
            }
            if start.elapsed() > DEADLINE {
                panic!("timed out waiting for {what} ({why}); logs:\n{}", self.logs());
            }
            thread::sleep(POLL);
        }
    }

    /// The last lines of every node's log.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- node {i}:\n{}", tail(&n.log())))
            .collect()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The nodes that run now.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect()
    }

    /// `garage -c NODE_CONFIG ARGS` against node `i` (which must run).
    pub fn garage(&self, i: usize, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(self.nodes[i].cfg())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run garage")
    }

    /// Like [`Garage::garage`], requiring success; returns stdout.
    pub fn garage_ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.garage(i, args);
        assert!(
            out.status.success(),
            "garage {args:?} on node {i}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Node `i`'s S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// The S3 port of node `i`.
    pub fn s3_port(&self, i: usize) -> u16 {
        self.nodes[i].s3_port
    }

    /// The standard AWS variables for node `i`'s S3 endpoint and the test key.
    pub fn env(&self, i: usize) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", GARAGE_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", GARAGE_SECRET.to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint(i)),
            ("AWS_REGION", GARAGE_REGION.to_string()),
            ("AWS_DEFAULT_REGION", GARAGE_REGION.to_string()),
        ]
    }

    /// Gives `cmd` the variables of [`Garage::env`] for node `i`, and removes the ones that
    /// would make it depend on this machine's AWS setup (profiles, session tokens, config
    /// files). `AWS_CA_BUNDLE` is left alone on purpose: a client must ignore it for an http
    /// endpoint.
    pub fn apply_env<'c>(&self, cmd: &'c mut Command, i: usize) -> &'c mut Command {
        for var in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_ENDPOINT_URL_S3",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        for (k, v) in self.env(i) {
            cmd.env(k, v);
        }
        cmd
    }

    /// `s3://BUCKET/KEY`.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{GARAGE_BUCKET}/{key}")
    }

    /// SIGKILLs node `i` and reaps it.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i]
            .child
            .take()
            .unwrap_or_else(|| panic!("node {i} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts node `i` again on its data and waits until it listens and reports the cluster
    /// healthy with every node up.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is running");
        let child = self.spawn_node(&self.nodes[i]);
        self.nodes[i].child = Some(child);
        self.wait_node_listening(i);
        self.wait_healthy();
        self.wait_s3_ready(i);
    }

    /// A signed S3 GET (`PATH_AND_QUERY` such as `/bucket?uploads`) to node `i` through curl's
    /// SigV4: the status (0 if no answer) and the body.
    pub fn s3_get(&self, i: usize, path_and_query: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
            // Garage requires the payload hash header; curl signs it along (an empty body).
            .args([
                "-H",
                "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{GARAGE_REGION}:s3"))
            .arg("--user")
            .arg(format!("{GARAGE_KEY_ID}:{GARAGE_SECRET}"))
            .arg(format!("{}{path_and_query}", self.endpoint(i)))
            .stdin(Stdio::null())
            .output()
            .expect("run curl (apt-get install curl)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The object keys under `prefix` (ListObjectsV2 through node `i`).
    pub fn list_objects(&self, i: usize, prefix: &str) -> Vec<String> {
        let prefix = query_encode(prefix);
        let (status, body) = self.s3_get(i, &format!("/{GARAGE_BUCKET}?list-type=2&prefix={prefix}"));
        assert_eq!(status, 200, "ListObjectsV2: {body}");
        xml_values(&body, "Key")
    }

    /// The keys of the multipart uploads begun and neither completed nor aborted
    /// (ListMultipartUploads through node `i`).
    pub fn pending_uploads(&self, i: usize) -> Vec<String> {
        let (status, body) = self.s3_get(i, &format!("/{GARAGE_BUCKET}?uploads="));
        assert_eq!(status, 200, "ListMultipartUploads: {body}");
        body.split("<Upload>")
            .skip(1)
            .flat_map(|upload| xml_values(upload, "Key").into_iter().take(1))
            .collect()
    }

    /// The cluster's folder (configs, data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `garage health`, parsed.
#[derive(Debug, Default)]
pub struct Health {
    /// HEALTHY, DEGRADED or UNAVAILABLE (empty if the command failed).
    pub status: String,
    pub storage_nodes: usize,
    pub storage_nodes_up: usize,
}

fn parse_health(text: &str) -> Health {
    let mut h = Health::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "Cluster health" => h.status = v.to_string(),
            "Storage nodes" => h.storage_nodes = v.parse().unwrap_or(0),
            "Storage nodes up" => h.storage_nodes_up = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    h
}

/// `s` percent-encoded as SigV4 canonical query strings are (all but unreserved characters), so
/// that what curl signs and what Garage checks agree.
fn query_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The first 16 hex digits of a node id, as `garage status` shows them.
fn short_id(id: &str) -> &str {
    &id[..16]
}

/// The texts of every `<tag>…</tag>` in `xml`.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|s| s.split(&close).next())
        .map(str::to_string)
        .collect()
}

/// The last 40 lines of a file.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn write_config(node: &Node, replication: usize, peers: &[String]) {
    let d = node.dir.display();
    let peers = peers
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "lmdb"
# The default reserves 1 TiB of address space per node; a test cluster needs little.
lmdb_map_size = "1G"

replication_factor = {replication}
consistency_mode = "consistent"

rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "4b1f0c7e9a2d3b5c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f"
bootstrap_peers = [{peers}]

[s3_api]
api_bind_addr = "127.0.0.1:{s3}"
s3_region = "{GARAGE_REGION}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "qeltrix-test-admin-token"
"#,
        rpc = node.rpc_port,
        s3 = node.s3_port,
        admin = node.admin_port,
    );
    fs::write(node.cfg(), text).expect("write garage config");
    // Garage refuses a config (with its rpc_secret) that others can read.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(node.cfg(), fs::Permissions::from_mode(0o600)).unwrap();
}
