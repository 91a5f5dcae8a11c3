//! Every `--json` output is an object with named fields, versioned by `format`, with its
//! times in RFC 3339 (docs/JSON.md).

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::support::{Device, make_shoot, start_agent, status, text};

/// Each line of `out`, parsed: an object that carries `"format": 1`.
fn objects(out: &str) -> Vec<Value> {
    out.lines()
        .map(|line| {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            assert!(v.is_object(), "not an object: {line}");
            assert_eq!(v["format"], 1, "no format: {line}");
            v
        })
        .collect()
}

/// The one object `out` holds.
fn object(out: &str) -> Value {
    let mut lines = objects(out);
    assert_eq!(lines.len(), 1, "{out}");
    lines.remove(0)
}

fn rfc_3339(v: &Value) -> SystemTime {
    let text = v.as_str().unwrap_or_else(|| panic!("not an RFC 3339 time: {v}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn json_outputs_are_versioned_objects_and_their_times_are_rfc_3339() {
    let d = Device::new();
    make_shoot(&d.folder, 1);
    let backup = objects(&d.ok(&["backup", "--json"]));
    assert!(backup.iter().any(|v| v["event"] == "summary"), "{backup:?}");

    // The lists are named fields of one object, not bare arrays.
    let snapshots = object(&d.ok(&["snapshots", "--json"]));
    rfc_3339(&snapshots["snapshots"][0]["time"]);
    let entries = object(&d.ok(&["ls", "latest", "--json"]));
    rfc_3339(&entries["entries"][0]["mtime"]);
    assert_eq!(object(&d.ok(&["folder", "list", "--json"]))["folders"][0]["media"], "ssd");
    assert_eq!(object(&d.ok(&["store", "list", "--json"]))["stores"][0]["media"], "usb-ssd");
    for args in [&["verify", "--json"][..], &["policy", "show", "--json"], &["devices", "--json"]] {
        object(&d.ok(args));
    }

    // What the agent answers in seconds since the epoch is printed as RFC 3339.
    let _agent = start_agent(&d);
    let (_, answer) = status(&d, &[]);
    assert_eq!(answer["format"], 1, "{answer}");
    let since = rfc_3339(&answer["doing"]["since"]);
    let age = SystemTime::now().duration_since(since).expect("since is past");
    assert!(age < Duration::from_secs(600), "{answer}");
    let folder = &answer["folders"][0];
    rfc_3339(&folder["snapshot"]["time"]);
    assert!(folder["snapshot"]["id"].is_string(), "{answer}");
    assert!(folder["reasons"][0]["state"].is_string(), "reasons are named: {answer}");
    assert!(answer.get("done").is_none(), "{answer}");
    let audit = object(&d.ok(&["audit", "--json"]));
    assert_eq!(audit["devices"], Value::Array(Vec::new()), "{audit}");
    let out = d.run(&["check", d.folder.to_str().expect("utf-8"), "--json"]);
    let check = object(&String::from_utf8_lossy(&out.stdout));
    assert!(check["files"].as_u64().is_some_and(|n| n > 0), "{}", text(&out));
}
