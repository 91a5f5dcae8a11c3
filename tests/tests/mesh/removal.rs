//! A removal reaches every device, also one that was off when it was made, and any trusted
//! device can remove any other, also one that joined by recovery through a third device.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use triad_e2e::{Device, WAIT, joined, start_agent, text};

/// The names of the devices `d` lists.
fn names(d: &Device) -> Vec<String> {
    triad_e2e::device_names(d, false)
}

/// Waits until `d` lists `name` (or, if `listed` is false, no longer does); returns how long
/// it took. Panics after `WAIT`.
fn until_listed(d: &Device, name: &str, listed: bool) -> Duration {
    let start = Instant::now();
    loop {
        let seen = names(d);
        if seen.iter().any(|n| n == name) == listed {
            return start.elapsed();
        }
        assert!(start.elapsed() < WAIT, "{name} listed: {seen:?}, wanted {listed}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn with_store(d: &Device, media: &str) {
    d.ok(&["store", "add", d.store.to_str().expect("utf-8"), "--media", media]);
}

#[test]
fn the_laptop_removes_a_device_that_recovered_through_the_nas_and_the_pi_hears_when_back() {
    let mut laptop = Device::bare();
    let out = laptop.ok(&["init", "--name", "laptop", "--site", "home", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).expect("init --json prints JSON");
    laptop.phrase = v["phrase"].as_str().expect("phrase").to_owned();
    with_store(&laptop, "ssd");
    let _laptop_agent = start_agent(&laptop);
    let nas = joined(&laptop, &[], "nas", "studio");
    with_store(&nas, "raid");
    let nas_agent = start_agent(&nas);
    let pi = joined(&laptop, &["--storage-only"], "pi", "parents");
    with_store(&pi, "usb-hdd");
    let pi_agent = start_agent(&pi);

    // A new computer proves the phrase to the NAS; the laptop never meets it.
    let fresh = Device::bare();
    let store = fresh.store.to_str().expect("utf-8");
    let started = Instant::now();
    let mut child = fresh
        .command(&["recover", "--peer", &nas_agent.addr, "--store", store, "--media", "ssd"])
        .args(["--name", "laptop2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("recover runs");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), laptop.phrase.as_bytes())
        .expect("the phrase");
    let out = child.wait_with_output().expect("recover ends");
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("recovered through the NAS in {:?}", started.elapsed());
    let _fresh_agent = start_agent(&fresh);

    // Every device hears of it; then the Pi is switched off.
    for d in [&laptop, &nas, &pi] {
        until_listed(d, "laptop2", true);
    }
    drop(pi_agent);

    // The laptop, which only heard of laptop2 from others, removes it.
    let said = laptop.ok(&["devices", "remove", "laptop2"]);
    assert!(said.contains("Removed laptop2. Told now: laptop2"), "told first: {said}");
    assert!(!names(&laptop).contains(&"laptop2".to_owned()));
    let took = until_listed(&nas, "laptop2", false);
    eprintln!("the NAS heard of the removal in {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");

    // The Pi, back, hears of the removal within 30 s and keeps the others.
    let _pi_agent = start_agent(&pi);
    let took = until_listed(&pi, "laptop2", false);
    eprintln!("the Pi, back, heard of the removal in {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let mut left = names(&pi);
    left.sort();
    assert_eq!(left, ["laptop", "nas", "pi"]);
    // And laptop2 itself knows it is out: the others take nothing from it.
    let out = fresh.run(&["sync", "nas"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("removed"), "{}", text(&out));
}
