//! The agent as a service on a NAS or a Pi: it tells the service manager when it is ready and
//! when it stops, stops cleanly on SIGTERM (in the middle of receiving a push too, losing
//! nothing), logs JSON lines when asked, and the files in `deploy/` hold what the README says.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use triad_e2e::{
    Device, Running, WAIT, agent_of, dialable, paired_nas, start_agent, sync_under_way,
    write_photos,
};

fn deploy(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn sigterm_stops_the_agent_cleanly_and_the_service_manager_hears_ready_then_stopping() {
    let d = Device::new();
    d.set_option("protect", "auto", "false");
    let manager_dir = tempfile::tempdir().expect("a temporary folder");
    let notify = manager_dir.path().join("notify");
    let manager = UnixDatagram::bind(&notify).expect("the service manager's socket");
    manager.set_read_timeout(Some(WAIT)).expect("a timeout");
    let mut cmd =
        d.command(&["agent", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--no-mdns", "--json"]);
    cmd.env("NOTIFY_SOCKET", &notify).env("TRIAD_LOG", "info").env("TRIAD_LOG_FORMAT", "json");
    let log = d.root().join("agent.log");
    let agent = agent_of(Running::spawn(cmd, &log));
    let mut buf = [0u8; 512];
    let n = manager.recv(&mut buf).expect("the agent says it is ready");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    // Ready means it answers its control socket.
    let status = d.run(&["status", "--json"]);
    assert_ne!(status.status.code(), Some(3), "the agent is not running?");

    agent.process.signal("TERM");
    let n = manager.recv(&mut buf).expect("the agent says it stops");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let (exit, _) = agent.process.finish();
    assert!(exit.success(), "a clean stop exits 0: {exit:?}");
    assert!(!d.home.join("agent.sock").exists(), "the control socket is removed");
    // Its log is one JSON object per line.
    let logged = fs::read_to_string(&log).expect("the log");
    let lines: Vec<Value> = logged
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["fields"]["message"] == "agent stopped"), "{logged}");
}

#[test]
fn an_agent_stopped_while_it_receives_a_push_loses_nothing_and_the_push_ends_later() {
    let laptop = Device::new();
    write_photos(&laptop.folder, 24, 4 << 20);
    laptop.backup();
    let _agent = start_agent(&laptop);
    let (nas, nas_agent) = paired_nas(&laptop, &[]);
    let (sync, _) = sync_under_way(&laptop, "nas");
    nas_agent.process.signal("TERM");
    let (exit, _) = nas_agent.process.finish();
    assert!(exit.success(), "the NAS stopped cleanly: {exit:?}");
    let _ = sync.finish();
    // What the NAS holds is whole.
    nas.code(&["verify", "--read-data"], 0);

    // Back, it takes the rest, and the laptop's files come back whole from it alone.
    let nas_agent = start_agent(&nas);
    laptop.ok(&["devices", "addr", "nas", dialable(&nas_agent.addr)]);
    laptop.ok(&["sync", "nas"]);
    nas.code(&["verify", "--read-data"], 0);
}

#[test]
fn the_unit_files_say_what_the_readme_says_and_systemd_accepts_them() {
    let system = deploy("triad.service");
    for line in [
        "Type=notify",
        "User=triad",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/triad",
        "Restart=on-failure",
        "NoNewPrivileges=true",
        "KillSignal=SIGTERM",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(system.lines().any(|l| l == line), "triad.service lacks {line}");
    }
    let user = deploy("triad-user.service");
    assert!(user.lines().any(|l| l == "Type=notify") && user.contains("WantedBy=default.target"));

    // systemd's own check, with ExecStart pointing at this build's binary.
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIPPED systemd-analyze verify: systemd-analyze is not installed here");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("a temporary folder");
    let bin = triad_e2e::triad_bin();
    for (name, text, exec) in [
        ("triad.service", &system, "/usr/local/bin/triad"),
        ("triad-user.service", &user, "%h/.cargo/bin/triad"),
    ] {
        let path = dir.path().join(name);
        fs::write(&path, text.replace(exec, bin)).expect("write");
        let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("runs");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.trim().is_empty(), "{name}: {said}");
    }
}

#[test]
fn the_container_runs_the_agent_unprivileged_on_the_hosts_network() {
    let file = deploy("Containerfile");
    let user = file.lines().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(!user.starts_with("root") && !user.starts_with("0"), "USER {user}");
    assert!(file.lines().any(|l| l == "STOPSIGNAL SIGTERM"));
    assert!(file.contains(r#"CMD ["agent"]"#) && file.contains("cargo build --release --locked"));
    let compose = deploy("compose.yaml");
    assert!(compose.contains("network_mode: host"), "mDNS and QUIC need the host's network");
    assert!(
        compose.contains("user: \"10001:10001\"")
            && compose.contains("dockerfile: deploy/Containerfile")
    );
}
