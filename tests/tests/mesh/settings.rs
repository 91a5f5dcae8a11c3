//! `folder add|remove`, `store add|remove`, `policy set` and a hand edit of `config.toml`
//! (with SIGHUP) reach the running agent at once: no restart, and `status` never says a device
//! has no folder when it has one.

use std::fs;

use serde_json::Value;
use triad_e2e::{Device, packs, start_agent_as_is, status, text, wait_for_status, write_noise};

/// A device with a vault and a store but no folder yet.
fn without_folder() -> Device {
    let d = Device::bare();
    d.ok(&["init", "--name", "laptop", "--site", "home"]);
    d.ok(&["store", "add", d.store.to_str().expect("utf-8"), "--media", "usb-ssd"]);
    d
}

fn folders(answer: &Value) -> Vec<Value> {
    answer["folders"].as_array().cloned().unwrap_or_default()
}

#[test]
fn settings_changed_while_the_agent_runs_take_effect_at_once() {
    let d = without_folder();
    d.set_option("protect", "settle_ms", "200");
    d.set_option("protect", "retry_secs", "1");
    // Rounds an hour apart: only the change itself can start the work.
    d.set_option("protect", "rescan_secs", "3600");
    let agent = start_agent_as_is(&d);
    let (_, answer) = status(&d, &[]);
    assert_eq!(folders(&answer).len(), 0, "{answer}");

    // A folder added while the agent runs: status shows it at once, at risk, and the agent
    // backs it up with no command typed.
    write_noise(&d.folder.join("IMG_0001.CR3"), 300 << 10, 1);
    let said = d.ok(&["folder", "add", d.folder.to_str().expect("utf-8"), "--media", "ssd"]);
    assert!(said.contains("The agent backs it up now"), "{said}");
    let (code, answer) = status(&d, &[]);
    assert_eq!(folders(&answer).len(), 1, "the folder is there at once: {answer}");
    assert_ne!(code, 0, "a folder never backed up is not protected: {answer}");
    assert_eq!(answer["worst"], "AT-RISK", "{answer}");
    let said = d.run(&["status"]);
    assert!(!text(&said).contains("No folders yet"), "{}", text(&said));
    wait_for_status(&d, "the new folder backed up by the agent", |a| {
        folders(a).first().is_some_and(|f| !f["snapshot"].is_null())
    });

    // A second store added while it runs takes the next backup too.
    let second = d.root().join("usb2").join("triad");
    let said = d.ok(&["store", "add", second.to_str().expect("utf-8"), "--media", "usb-hdd"]);
    assert!(said.contains("running agent keeps copies in it"), "{said}");
    write_noise(&d.folder.join("IMG_0002.CR3"), 300 << 10, 2);
    let until = std::time::Instant::now() + triad_e2e::WAIT;
    while packs(&second).is_empty() {
        assert!(std::time::Instant::now() < until, "the new store never got a pack");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // A policy set while it runs is the one status judges by, at once.
    let said = d.ok(&["policy", "set", "copies=2", "media=1", "offsite=0"]);
    assert!(said.contains("works by it from now on"), "{said}");
    let (_, answer) = status(&d, &[]);
    assert_eq!(folders(&answer)[0]["policy"], "copies=2 media=1 offsite=0", "{answer}");

    // A hand edit of config.toml, then SIGHUP: the agent stops its own work as told.
    d.set_option("protect", "auto", "false");
    agent.process.signal("HUP");
    wait_for_status(&d, "auto off after SIGHUP", |a| {
        a["doing"]["what"].as_str().is_some_and(|w| w.contains("auto = false"))
    });

    // A folder removed while it runs is gone from status at once.
    let said = d.ok(&["folder", "remove", d.folder.to_str().expect("utf-8")]);
    assert!(said.contains("no longer watches it"), "{said}");
    let (_, answer) = status(&d, &[]);
    assert_eq!(folders(&answer).len(), 0, "{answer}");

    // A broken hand edit is refused by name, and the agent keeps the settings it had.
    let config = d.home.join("config.toml");
    let good = fs::read_to_string(&config).expect("config");
    fs::write(&config, format!("{good}\nnot valid toml [")).expect("edit");
    agent.process.signal("HUP");
    let said = d.run(&["folder", "add", d.folder.to_str().expect("utf-8"), "--media", "ssd"]);
    assert!(!said.status.success(), "{}", text(&said));
    fs::write(&config, good).expect("restore");
    let (_, answer) = status(&d, &[]);
    assert!(answer["worst"].is_string(), "the agent still answers: {answer}");
}
