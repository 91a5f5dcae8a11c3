//! `triad devices` says how each device is reached (on this network, direct, or relayed), the
//! round trip, what went each way and how fast, and the last push that failed.

use serde_json::Value;
use triad_e2e::{Device, paired_nas, start_agent, text, write_noise, write_photos};

/// The row of `name` in `d`'s `devices --json`.
fn row(d: &Device, name: &str) -> Value {
    let out: Value = serde_json::from_str(&d.ok(&["devices", "--json"])).expect("JSON");
    out["devices"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name}: {out}"))
}

#[test]
fn devices_shows_the_path_the_round_trip_the_bytes_each_way_and_the_last_error() {
    let laptop = Device::new();
    write_photos(&laptop.folder, 4, 1 << 20);
    laptop.backup();
    let _agent = start_agent(&laptop);
    let (nas, nas_agent) = paired_nas(&laptop, &[]);
    laptop.ok(&["sync", "nas"]);

    let seen = row(&laptop, "nas");
    assert_eq!(seen["path"], "lan", "{seen}");
    assert!(seen["rtt_ms"].is_u64(), "{seen}");
    assert!(seen["sent_bytes"].as_u64().unwrap_or(0) >= 4 << 20, "{seen}");
    assert!(seen["send_rate"].as_u64().unwrap_or(0) > 0, "{seen}");
    assert!(seen["last_error"].is_null(), "{seen}");
    let from = row(&nas, "laptop");
    assert!(from["received_bytes"].as_u64().unwrap_or(0) >= 4 << 20, "{from}");
    assert!(from["receive_rate"].as_u64().unwrap_or(0) > 0, "{from}");
    let said = text(&laptop.run(&["devices"]));
    assert!(said.contains("path: on this network, round trip"), "{said}");

    // The NAS goes away: the push that fails is named, with when.
    drop(nas_agent);
    write_noise(&laptop.folder.join("IMG_0100.CR3"), 1 << 20, 100);
    laptop.backup();
    let out = laptop.run(&["sync", "nas", "--timeout", "5s"]);
    assert!(!out.status.success(), "{}", text(&out));
    let gone = row(&laptop, "nas");
    assert!(gone["path"].is_null() && gone["online"] == false, "{gone}");
    assert!(gone["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{gone}");
    let at = gone["last_error_at"].as_str().expect("a time");
    assert!(at.ends_with('Z') && at.contains('T'), "RFC 3339: {at}");
    let said = text(&laptop.run(&["devices"]));
    assert!(said.contains("last error ("), "{said}");
}
