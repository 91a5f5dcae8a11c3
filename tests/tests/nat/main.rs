//! Devices in homes behind NAT routers, in network namespaces the tests make (root, `ip`,
//! `nft`; each test skips, saying why, elsewhere): the studio NAS has a public address, the
//! laptop and the parents' Pi each sit behind a router of their own, and nobody types an
//! address.

use std::time::{Duration, Instant};

use serde_json::Value;
use triad_e2e::netns::{Host, Nat, World};
use triad_e2e::{Agent, Device, Running, agent_of, join, open_pairing, status, text, write_photos};

/// How long the mesh may take to find its paths and protect the folder.
const PROTECTED_WITHIN: Duration = Duration::from_secs(120);

/// The agent of `d`, listening on every interface of its host at triad's port (each host is a
/// namespace of its own), logging what the network does.
fn agent_on(d: &Device) -> Agent {
    let mut cmd = d.command(&[
        "agent",
        "--listen",
        "/ip4/0.0.0.0/udp/41641/quic-v1",
        "--no-mdns",
        "--no-upnp",
        "--json",
    ]);
    cmd.env(
        "TRIAD_LOG",
        "info,triad_agent=debug,triad_net=debug,libp2p_dcutr=debug,libp2p_relay=debug",
    );
    agent_of(Running::spawn(cmd, &d.root().join("agent.log")))
}

/// The vault of the three: the NAS founds it on the internet; the laptop and the Pi join it
/// from their homes by its links. The laptop's folder wants two copies off its site, so it
/// needs both the NAS and the Pi. Returns the devices and their agents, the laptop's last.
struct Vault {
    nas: Device,
    laptop: Device,
    pi: Device,
    agents: Vec<Agent>,
}

/// The NAS on the internet founds the vault, with a store; its agent runs, its own work off.
fn founding_nas(host: &Host) -> (Device, Agent) {
    let nas = Device::bare_on(host);
    nas.ok(&["init", "--name", "nas", "--site", "studio", "--json"]);
    nas.ok(&["store", "add", nas.store.to_str().expect("utf-8"), "--media", "raid"]);
    nas.set_option("protect", "auto", "false");
    let agent = agent_on(&nas);
    (nas, agent)
}

/// A laptop joined from its home by the NAS's link, with a store and a folder (its agent not
/// started).
fn joined_laptop(nas: &Device, host: &Host) -> Device {
    let laptop = Device::bare_on(host);
    let (pairing, first) = open_pairing(nas, &[]);
    let out = join(&laptop, first["link"].as_str().expect("link"), "laptop", "home", None);
    assert!(out.status.success(), "{}", text(&out));
    drop(pairing);
    laptop.ok(&["store", "add", laptop.store.to_str().expect("utf-8"), "--media", "usb-ssd"]);
    laptop.ok(&["folder", "add", laptop.folder.to_str().expect("utf-8"), "--media", "ssd"]);
    laptop
}

fn vault(nas_host: &Host, laptop_host: &Host, pi_host: &Host) -> Vault {
    let (nas, nas_agent) = founding_nas(nas_host);
    let laptop = joined_laptop(&nas, laptop_host);
    laptop.ok(&["policy", "set", "copies=3", "media=2", "offsite=2"]);
    write_photos(&laptop.folder, 4, 8 << 20);

    let pi = Device::bare_on(pi_host);
    let (pairing, first) = open_pairing(&nas, &["--storage-only"]);
    let out = join(&pi, first["link"].as_str().expect("link"), "pi", "parents", None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(pairing.finish().0.success());
    pi.ok(&["store", "add", pi.store.to_str().expect("utf-8"), "--media", "usb-hdd"]);
    let pi_agent = agent_on(&pi);
    let laptop_agent = agent_on(&laptop);
    Vault { nas, laptop, pi, agents: vec![nas_agent, pi_agent, laptop_agent] }
}

/// Waits until the laptop's folder is PROTECTED; returns how long it took.
fn protected(laptop: &Device, logs: &[&Device]) -> Duration {
    let start = Instant::now();
    loop {
        let (_, v) = status(laptop, &[]);
        if v["worst"] == "PROTECTED" {
            return start.elapsed();
        }
        if start.elapsed() > PROTECTED_WITHIN {
            print_logs(logs);
            panic!("not PROTECTED within {PROTECTED_WITHIN:?}: {v}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Prints the agents' logs of `devices`, to see why a test failed.
fn print_logs(devices: &[&Device]) {
    for d in devices {
        let log = std::fs::read_to_string(d.root().join("agent.log")).unwrap_or_default();
        eprintln!("--- {}\n{log}", d.root().display());
    }
}

/// The row of `name` in the laptop's `devices --json`.
fn device(laptop: &Device, name: &str) -> Value {
    let out = laptop.ok(&["devices", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).expect("JSON");
    v["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

/// Waits until the laptop's connection to `name` goes `path`; returns the row.
fn path_becomes(laptop: &Device, name: &str, path: &str) -> Value {
    let start = Instant::now();
    loop {
        let row = device(laptop, name);
        if row["path"] == path {
            return row;
        }
        assert!(
            start.elapsed() < PROTECTED_WITHIN,
            "the path to {name} never became {path}: {row}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn two_homes_behind_cone_nats_punch_a_hole_and_protect_with_no_address_typed() {
    let Some(mut world) = World::new() else { return };
    let nas_host = world.public("nas");
    let laptop_host = world.home("laptop", Nat::Cone);
    let pi_host = world.home("pi", Nat::Cone);
    let v = vault(&nas_host, &laptop_host, &pi_host);

    let took = protected(&v.laptop, &[&v.laptop, &v.pi, &v.nas]);
    eprintln!("PROTECTED across two NATed homes (direct) in {:.2} s", took.as_secs_f64());
    // The Pi's copy went over a hole punched through both routers, not through the NAS.
    let pi = path_becomes(&v.laptop, "pi", "direct");
    assert!(pi["relay"].is_null(), "{pi}");
    eprintln!(
        "pushed to the Pi directly at {} MB/s",
        pi["send_rate"].as_u64().unwrap_or(0) / 1_000_000
    );
    assert!(pi["address"].as_str().is_some_and(|a| !a.contains("p2p-circuit")), "{pi}");
    v.pi.code(&["verify", "--read-data"], 0);
    drop(v.agents);
}

#[test]
fn a_home_behind_a_symmetric_nat_is_reached_through_the_nas_and_protected() {
    let Some(mut world) = World::new() else { return };
    let nas_host = world.public("nas");
    let laptop_host = world.home("laptop", Nat::Cone);
    let pi_host = world.home("pi", Nat::Symmetric);
    let v = vault(&nas_host, &laptop_host, &pi_host);

    let took = protected(&v.laptop, &[&v.laptop, &v.pi, &v.nas]);
    eprintln!("PROTECTED across two NATed homes (relayed) in {:.2} s", took.as_secs_f64());
    let pi = path_becomes(&v.laptop, "pi", "relayed");
    assert_eq!(pi["relay"], "nas", "{pi}");
    eprintln!(
        "pushed to the Pi through the NAS at {} MB/s",
        pi["send_rate"].as_u64().unwrap_or(0) / 1_000_000
    );
    let shown = v.laptop.ok(&["devices"]);
    assert!(shown.contains("relayed through nas"), "{shown}");

    // The NAS (the relay, and a copy) goes off; a new photo cannot be protected, and status
    // says why.
    let mut v = v;
    drop(v.agents.remove(0));
    write_photos(&v.laptop.folder.join("day2"), 1, 1 << 20);
    let start = Instant::now();
    let degraded = loop {
        let (_, s) = status(&v.laptop, &[]);
        let reasons = &s["folders"][0]["reasons"];
        if s["worst"] != "PROTECTED" && reasons.as_array().is_some_and(|r| !r.is_empty()) {
            break s;
        }
        assert!(start.elapsed() < PROTECTED_WITHIN, "the new photo never showed unprotected: {s}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        ["AT-RISK", "DEGRADED", "PENDING-OFFSITE"]
            .contains(&degraded["worst"].as_str().unwrap_or("")),
        "{degraded}"
    );
    eprintln!("with the NAS off: {}", degraded["folders"][0]["reasons"]);
    // It comes back at the same address: the Pi takes a slot there again, and the new photo
    // reaches both.
    v.agents.push(agent_on(&v.nas));
    let took = protected(&v.laptop, &[&v.laptop, &v.pi, &v.nas]);
    eprintln!("PROTECTED again {:.2} s after the NAS came back", took.as_secs_f64());
    let pi = path_becomes(&v.laptop, "pi", "relayed");
    assert_eq!(pi["relay"], "nas", "{pi}");
}

#[test]
fn the_laptop_changing_networks_mid_transfer_resumes_without_starting_over() {
    let Some(mut world) = World::new() else { return };
    let nas_host = world.public("nas");
    let laptop_host = world.home("laptop", Nat::Cone);
    let (nas, _nas_agent) = founding_nas(&nas_host);
    let laptop = joined_laptop(&nas, &laptop_host);
    laptop.ok(&["policy", "set", "copies=2", "media=1", "offsite=1"]);
    // 96 MiB at 16 MB/s, committed every 8 MiB: the move comes in the middle, and what was
    // committed before it stays.
    const MIB: u64 = 1 << 20;
    laptop.set_option("sync", "limit_bytes_per_sec", "16000000");
    laptop.set_option("sync", "commit_bytes", &(8 * MIB).to_string());
    write_photos(&laptop.folder, 12, 8 << 20);
    let _laptop_agent = agent_on(&laptop);

    // The laptop's own work pushes to the NAS; once a third is committed there, the laptop's
    // home gets another public address (off the home Wi-Fi, onto a phone's hotspot).
    let start = Instant::now();
    let committed = || -> u64 {
        triad_e2e::packs(&nas.store)
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    };
    while committed() < 32 * MIB {
        assert!(start.elapsed() < PROTECTED_WITHIN, "the push never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    let at_move = committed();
    let moved_to = world.move_home(&laptop_host, 77);
    let took = protected(&laptop, &[&laptop, &nas]);
    eprintln!(
        "moved with {} MiB committed; PROTECTED {:.1} s later",
        at_move / MIB,
        took.as_secs_f64()
    );

    // The NAS knows the laptop at its new address, and the push that completed sent what was
    // not committed at the move, not everything again.
    let row = device(&nas, "laptop");
    assert!(row["address"].as_str().is_some_and(|a| a.contains(&moved_to)), "{row}");
    let total = 96 * MIB + MIB; // the photos, sealed, and the snapshot's own blobs
    let sent = device(&laptop, "nas")["sent_bytes"].as_u64().expect("sent");
    assert!(
        sent <= total - at_move + 16 * MIB,
        "sent {} MiB after the move, with {} of {} MiB committed before it",
        sent / MIB,
        at_move / MIB,
        total / MIB
    );
    nas.code(&["verify", "--read-data"], 0);
}

#[test]
fn a_20_mbit_uplink_with_loss_is_used_to_at_least_80_percent() {
    let Some(mut world) = World::new() else { return };
    let nas_host = world.public("nas");
    let laptop_host = world.home("laptop", Nat::Cone);
    let (nas, _nas_agent) = founding_nas(&nas_host);
    let laptop = joined_laptop(&nas, &laptop_host);
    laptop.set_option("protect", "auto", "false");
    write_photos(&laptop.folder, 6, 8 << 20);
    laptop.backup();
    let _laptop_agent = agent_on(&laptop);
    // Connected before the link is shaped: the measure is the transfer's.
    laptop.ok(&["devices"]);
    const MBIT: u32 = 20;
    world.uplink(&laptop_host, MBIT, 1);

    let start = Instant::now();
    let out = laptop.run(&["sync", "nas", "--json"]);
    let took = start.elapsed();
    if !out.status.success() {
        print_logs(&[&laptop, &nas]);
        panic!("the sync failed: {}", text(&out));
    }
    let out = String::from_utf8_lossy(&out.stdout);
    let summary: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &Value| l["bytes_sent"].is_u64())
        .expect("a summary line");
    let bytes = summary["bytes_sent"].as_u64().expect("bytes") as f64;
    let link = f64::from(MBIT) * 1e6 / 8.0;
    let used = bytes / took.as_secs_f64() / link;
    eprintln!(
        "{:.1} MiB over a {MBIT} Mbit/s uplink losing 1 % in {:.1} s: {:.0} % of the link",
        bytes / 1048576.0,
        took.as_secs_f64(),
        used * 100.0
    );
    assert!(used >= 0.8, "only {:.0} % of the link used", used * 100.0);
}
