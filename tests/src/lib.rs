//! Devices in temporary folders, driven through the real `triad` binary.
//!
//! The tests under `tests/` in this package and the CLI package's own tests share these
//! helpers. The binary is built once per test process with the same cargo that runs the
//! tests, into the same target directory, and found beside the test executable.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod netns;

/// The binary under test, built first if this process has not built it yet.
///
/// # Panics
/// If the binary cannot be built: no test can run without it.
pub fn triad_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable has a path");
        // A test executable lives in `<target>/<profile>/deps/`; the binary in `<profile>/`.
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable is inside a target directory");
        let bin = profile_dir.join("triad");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target_dir = profile_dir.parent().expect("a target directory");
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "triad-cli", "--bin", "triad"]);
        build.arg("--target-dir").arg(target_dir);
        // What cargo set for this test alone: a build script that reads it (ring's reads
        // CARGO_MANIFEST_DIR) would run again, and the next `cargo test` rebuild everything
        // above it once more.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
                || ["CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"].contains(&&*name)
            {
                build.env_remove(&*name);
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the triad binary failed");
        bin.to_str().expect("a UTF-8 target path").to_owned()
    })
}

/// One device: a home, a store and a folder under one temporary directory.
pub struct Device {
    /// The temporary directory everything lives in; removed when the device is dropped.
    pub dir: tempfile::TempDir,
    /// `TRIAD_HOME`.
    pub home: PathBuf,
    /// Where its store goes, if it gets one.
    pub store: PathBuf,
    /// Its protected folder, `Pictures/shoot`.
    pub folder: PathBuf,
    /// Its recovery phrase, once it made a vault.
    pub phrase: String,
    /// The host of a [`netns::World`] it runs on; `None`: this machine's own network.
    pub host: Option<netns::Host>,
}

impl Device {
    /// A device with no vault yet.
    pub fn bare() -> Device {
        let dir = tempfile::Builder::new().prefix("triad-e2e-").tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let folder = root.join("Pictures").join("shoot");
        fs::create_dir_all(&folder).expect("mkdir");
        Device {
            home: root.join("home"),
            store: root.join("disk").join("triad"),
            folder,
            dir,
            phrase: String::new(),
            host: None,
        }
    }

    /// A device with no vault yet, on `host` of a small internet: every `triad` it runs runs in
    /// the host's network namespace.
    pub fn bare_on(host: &netns::Host) -> Device {
        Device { host: Some(host.clone()), ..Device::bare() }
    }

    /// A device with a vault, a store and a (still empty) protected folder.
    #[allow(clippy::new_without_default)] // it runs `triad`: not a default value
    pub fn new() -> Device {
        let mut d = Device::bare();
        let out = d.ok(&["init", "--name", "laptop", "--site", "home", "--json"]);
        let v: Value = serde_json::from_str(out.trim()).expect("init --json prints JSON");
        d.phrase = v["phrase"].as_str().expect("phrase").to_owned();
        d.ok(&["store", "add", d.store.to_str().expect("utf-8"), "--media", "usb-ssd"]);
        d.ok(&["folder", "add", d.folder.to_str().expect("utf-8"), "--media", "ssd"]);
        d
    }

    /// A laptop with a vault and a protected folder but no store: it keeps its catalog in its
    /// home and sends its files from the folder.
    pub fn storeless() -> Device {
        let mut d = Device::bare();
        let out = d.ok(&["init", "--name", "laptop", "--site", "home", "--json"]);
        let v: Value = serde_json::from_str(out.trim()).expect("init --json prints JSON");
        d.phrase = v["phrase"].as_str().expect("phrase").to_owned();
        let said = d.ok(&["folder", "add", d.folder.to_str().expect("utf-8"), "--media", "ssd"]);
        assert!(said.contains("no store"), "{said}");
        d
    }

    /// The temporary directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `triad ARGS` for this device, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.host {
            Some(host) => host.command(triad_bin()),
            None => Command::new(triad_bin()),
        };
        cmd.args(args).env("TRIAD_HOME", &self.home).env_remove("TRIAD_LOG").stdin(Stdio::null());
        cmd
    }

    /// Runs `triad ARGS` for this device to the end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("triad runs")
    }

    /// Runs and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "triad {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs and asserts the exit code; returns stdout + stderr.
    pub fn code(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "triad {args:?}: {text}");
        text
    }

    /// `triad backup --json`, returning the summary object.
    pub fn backup(&self) -> Value {
        let out = self.ok(&["backup", "--json"]);
        summary(&out)
    }

    /// Checks that every blob of every store re-hashes intact (`verify --read-data` exits 0),
    /// restores the latest snapshot of the folder into `restored/`, and checks it against
    /// the folder; returns how many files were compared.
    pub fn intact_and_restores(&self) -> usize {
        self.code(&["verify", "--read-data"], 0);
        let to = self.root().join("restored");
        self.ok(&["restore", "latest", "--to", to.to_str().expect("utf-8")]);
        assert_same_tree(&self.folder, &to.join("shoot"))
    }

    /// Sets a `[backup]` key in the device's config.toml.
    pub fn set_backup_option(&self, key: &str, value: &str) {
        self.set_option("backup", key, value);
    }

    /// Sets a key of a section in the device's config.toml.
    pub fn set_option(&self, section: &str, key: &str, value: &str) {
        let path = self.home.join("config.toml");
        let text = fs::read_to_string(&path).expect("config");
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let header = format!("[{section}]");
        let at = lines.iter().position(|l| l.trim() == header).expect("the section");
        let end = lines[at + 1..]
            .iter()
            .position(|l| l.starts_with('['))
            .map_or(lines.len(), |n| at + 1 + n);
        let prefix = format!("{key} =");
        if let Some(old) = lines[at + 1..end].iter().position(|l| l.starts_with(&prefix)) {
            lines.remove(at + 1 + old);
        }
        lines.insert(at + 1, format!("{key} = {value}"));
        fs::write(&path, lines.join("\n") + "\n").expect("write config");
    }
}

/// The summary line of `backup --json` output.
pub fn summary(out: &str) -> Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary in {out}"))
}

/// `n` incompressible photos of `len` bytes each in `folder` (`IMG_0000.CR3`, …, seeded by
/// their number).
pub fn write_photos(folder: &Path, n: u64, len: usize) {
    for i in 0..n {
        write_noise(&folder.join(format!("IMG_{i:04}.CR3")), len, i);
    }
}

/// `triad sync NAME --json` started on `d`, once the first blobs are acknowledged (the
/// receiver is in the middle of it): the process, and that progress line.
pub fn sync_under_way(d: &Device, name: &str) -> (Running, Value) {
    let sync = Running::spawn(d.command(&["sync", name, "--json"]), &d.root().join("sync.log"));
    let progress = sync.line();
    assert_eq!(progress["event"], "progress", "the push is under way: {progress}");
    (sync, progress)
}

/// Writes `len` deterministic incompressible bytes.
pub fn write_noise(path: &Path, len: usize, seed: u64) {
    let mut bytes = vec![0u8; len];
    let key = blake3::hash(&seed.to_le_bytes());
    blake3::Hasher::new_keyed(key.as_bytes()).finalize_xof().fill(&mut bytes);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("mkdir");
    }
    fs::write(path, bytes).expect("write");
}

/// A small shoot: raw-like files of several chunks, JPEG-like files, and XMP sidecars.
pub fn make_shoot(folder: &Path, frames: usize) {
    for i in 0..frames {
        let day = if i % 2 == 0 { "day1" } else { "day2" };
        write_noise(
            &folder.join(format!("{day}/raw/IMG_{i:04}.CR3")),
            2_500_000 + i * 1000,
            i as u64,
        );
        write_noise(
            &folder.join(format!("{day}/jpg/IMG_{i:04}.JPG")),
            300_000 + i,
            1000 + i as u64,
        );
        fs::write(folder.join(format!("{day}/raw/IMG_{i:04}.xmp")), sidecar(i, 3)).expect("write");
    }
}

/// An XMP sidecar with a rating.
pub fn sidecar(i: usize, rating: u32) -> String {
    format!(
        "<x:xmpmeta><rdf:Description xmp:Label=\"IMG_{i:04}\" xmp:Rating=\"{rating}\"/></x:xmpmeta>\n"
    )
}

/// Asserts two trees hold the same files: content, mode and mtime; links by target.
pub fn assert_same_tree(original: &Path, restored: &Path) -> usize {
    let mut count = 0;
    let mut names: Vec<_> =
        fs::read_dir(original).expect("list").map(|e| e.expect("entry").file_name()).collect();
    names.sort();
    for name in names {
        let (a, b) = (original.join(&name), restored.join(&name));
        let ma = fs::symlink_metadata(&a).expect("stat original");
        let mb =
            fs::symlink_metadata(&b).unwrap_or_else(|_| panic!("{} was not restored", b.display()));
        if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&a).expect("link"), fs::read_link(&b).expect("link"));
            continue;
        }
        assert_eq!(
            ma.permissions().mode() & 0o7777,
            mb.permissions().mode() & 0o7777,
            "mode of {}",
            b.display()
        );
        if ma.is_dir() {
            count += assert_same_tree(&a, &b);
            continue;
        }
        assert!(
            fs::read(&a).expect("read") == fs::read(&b).expect("read"),
            "{} differs",
            b.display()
        );
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {}",
            b.display()
        );
        count += 1;
    }
    count
}

/// `triad status --json` on `d` with `extra` arguments: its exit code and its answer (null if
/// it printed none).
pub fn status(d: &Device, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["status", "--json"];
    args.extend_from_slice(extra);
    let out = d.run(&args);
    let code = out.status.code().expect("an exit code");
    (code, serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

/// The names of the devices `d` lists in `devices --json` (only those online, if
/// `online_only`).
pub fn device_names(d: &Device, online_only: bool) -> Vec<String> {
    let out = d.run(&["devices", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| !online_only || d["online"] == true)
        .filter_map(|d| d["name"].as_str().map(str::to_owned))
        .collect()
}

/// Asks `status` until `done` holds for its answer, or panics after `WAIT`.
pub fn wait_for_status(d: &Device, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + WAIT;
    loop {
        let (_, answer) = status(d, &[]);
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < until, "{what}: still {answer}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A code with the nameplate of `code` and words that are not its own: a wrong guess.
pub fn wrong_guess(code: &str) -> String {
    let nameplate = code.split('-').next().expect("a nameplate");
    let words = if code.ends_with("abandon-ability") { "able-about" } else { "abandon-ability" };
    format!("{nameplate}-{words}")
}

/// Every pack file of a store, sorted.
pub fn packs(store: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(store.join("packs"))
        .expect("packs dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    out.sort();
    out
}

/// Whether this process may make mount namespaces (root, with `unshare`).
pub fn can_unshare() -> bool {
    let ok = Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: this test needs root and `unshare -m` to mount a file system");
    }
    ok
}

/// How long a test waits for a line, a state or an answer.
/// How long a test waits for a line, a state or an answer.
pub const WAIT: Duration = Duration::from_secs(60);

/// A `triad` process whose JSON lines on stdout are read as they come.
pub struct Running {
    child: Child,
    lines: Receiver<String>,
}

impl Running {
    /// Starts `cmd`, its standard error into the file `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Running {
        let log = fs::File::create(log).expect("log file");
        let mut child = cmd.stdout(Stdio::piped()).stderr(log).spawn().expect("triad starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = sync_channel(1024);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    /// The next JSON line, waiting for it.
    pub fn line(&self) -> Value {
        let line = self.lines.recv_timeout(WAIT).expect("a line in time");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"))
    }

    /// The next line as it is, waiting for it.
    pub fn text_line(&self) -> String {
        self.lines.recv_timeout(WAIT).expect("a line in time")
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends the signal `name` (`STOP`, `CONT`, `TERM`, …) to the process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name}");
    }

    /// Waits for the process to end; returns its status and its remaining lines.
    pub fn finish(mut self) -> (ExitStatus, Vec<Value>) {
        let mut rest = Vec::new();
        // The reader thread ends when the process closes stdout, which it does at exit.
        while let Ok(line) = self.lines.recv_timeout(WAIT) {
            rest.push(serde_json::from_str(&line).unwrap_or(Value::String(line)));
        }
        let status = self.child.wait().expect("wait");
        (status, rest)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A stopped process dies of SIGKILL all the same; let it run for its last moment.
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running agent and its first address.
pub struct Agent {
    /// Killed (SIGKILL) when dropped.
    pub process: Running,
    /// The first address it listens on.
    pub addr: String,
}

/// Starts the agent with its own backups and pushes off: the test says when to push.
pub fn start_agent(d: &Device) -> Agent {
    d.set_option("protect", "auto", "false");
    start_agent_as_is(d)
}

/// Starts the agent with the device's settings as they are, on loopback QUIC without mDNS.
pub fn start_agent_as_is(d: &Device) -> Agent {
    let cmd =
        d.command(&["agent", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--no-mdns", "--json"]);
    agent_of(Running::spawn(cmd, &d.root().join("agent.log")))
}

/// The agent that `process` (`triad agent --json`) is, once it says where it listens.
pub fn agent_of(process: Running) -> Agent {
    let ready = process.line();
    assert_eq!(ready["event"], "listening", "{ready}");
    let addr = ready["addrs"][0].as_str().expect("an address").to_owned();
    Agent { process, addr }
}

/// Starts `triad pair --json --yes` on `inviter`; returns the process and its first line.
pub fn open_pairing(inviter: &Device, extra: &[&str]) -> (Running, Value) {
    let mut args = vec!["pair", "--json", "--yes"];
    args.extend_from_slice(extra);
    let process = Running::spawn(inviter.command(&args), &inviter.root().join("pair.log"));
    let first = process.line();
    assert!(first["code"].is_string() && first["link"].is_string(), "{first}");
    (process, first)
}

/// A NAS paired to `laptop` (whose agent runs) by the link, with a store (`store_args` added
/// to `store add`) and its agent running; the laptop knows its address.
pub fn paired_nas(laptop: &Device, store_args: &[&str]) -> (Device, Agent) {
    let nas = Device::bare();
    let (pairing, first) = open_pairing(laptop, &[]);
    let out = join(&nas, first["link"].as_str().expect("link"), "nas", "studio", None);
    assert!(out.status.success(), "{}", text(&out));
    drop(pairing);
    let mut args = vec!["store", "add", nas.store.to_str().expect("utf-8"), "--media", "raid"];
    args.extend_from_slice(store_args);
    nas.ok(&args);
    let agent = start_agent(&nas);
    laptop.ok(&["devices", "addr", "nas", dialable(&agent.addr)]);
    (nas, agent)
}

/// The parents' Pi paired to `laptop` (whose agent runs) as storage-only, with a usb-hdd store
/// and its agent running; the laptop knows its address.
pub fn paired_pi(laptop: &Device) -> (Device, Agent) {
    let pi = Device::bare();
    let (pairing, first) = open_pairing(laptop, &["--storage-only"]);
    let out = join(&pi, first["link"].as_str().expect("link"), "pi", "parents", None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(pairing.finish().0.success());
    pi.ok(&["store", "add", pi.store.to_str().expect("utf-8"), "--media", "usb-hdd"]);
    let agent = start_agent(&pi);
    laptop.ok(&["devices", "addr", "pi", dialable(&agent.addr)]);
    (pi, agent)
}

/// A new device joined to `inviter` (whose agent runs) by the link, as `name` at `site`.
pub fn joined(inviter: &Device, extra: &[&str], name: &str, site: &str) -> Device {
    let d = Device::bare();
    let (pairing, first) = open_pairing(inviter, extra);
    let out = join(&d, first["link"].as_str().expect("link"), name, site, None);
    assert!(out.status.success(), "{}", text(&out));
    drop(pairing);
    d
}

/// `triad join CODE --name NAME --site SITE --yes`, waiting up to 20 s, through `peer` if given.
pub fn join(
    d: &Device,
    code: &str,
    name: &str,
    site: &str,
    peer: Option<&str>,
) -> std::process::Output {
    let mut args = vec!["join", code, "--name", name, "--site", site, "--yes", "--wait", "20s"];
    if let Some(peer) = peer {
        args.extend_from_slice(&["--peer", peer]);
    }
    d.run(&args)
}

/// What a finished command printed, stdout then stderr.
pub fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Strips `/p2p/<peer>` so the address can be given to `devices addr`.
pub fn dialable(addr: &str) -> &str {
    addr.split("/p2p/").next().expect("an address")
}
