//! One view of the vault from any device: the NAS shows the laptop's folders as the laptop
//! last judged them, its exit code follows them, and the storage-only Pi shows what it holds
//! without a name.

use serde_json::Value;
use triad_e2e::{
    Device, paired_nas, paired_pi, start_agent, status, text, wait_for_status, write_noise,
};

fn laptop_in(answer: &Value) -> Option<Value> {
    answer["vault"].as_array()?.iter().find(|d| d["device"] == "laptop").cloned()
}

#[test]
fn the_nas_shows_the_laptops_folders_and_the_pi_sees_no_name() {
    // A device that protects nothing and holds nothing says so.
    let bare = Device::bare();
    bare.ok(&["init", "--name", "laptop", "--site", "home"]);
    let _bare_agent = start_agent(&bare);
    let said = text(&bare.run(&["status"]));
    assert!(said.contains("protects no folder and keeps no copy yet"), "{said}");

    let laptop = Device::new();
    for i in 0..3 {
        write_noise(&laptop.folder.join(format!("IMG_{i:04}.CR3")), 200 << 10, i);
    }
    let _laptop_agent = start_agent(&laptop);
    let (nas, _nas_agent) = paired_nas(&laptop, &[]);
    let (pi, _pi_agent) = paired_pi(&laptop);
    // Never backed up: the laptop judges its folder AT-RISK.
    let (laptop_code, mine) = status(&laptop, &[]);
    assert_eq!(mine["worst"], "AT-RISK", "{mine}");
    let path = laptop.folder.to_str().expect("utf-8");

    // The NAS, which has no folder of its own, shows it, and exits as the vault stands.
    let answer = wait_for_status(&nas, "the laptop's verdict on the NAS", |a| {
        laptop_in(a).is_some_and(|d| d["folders"][0]["folder"] == path)
    });
    let seen = laptop_in(&answer).expect("listed");
    assert_eq!(seen["worst"], "AT-RISK", "{answer}");
    assert_eq!(seen["reachable"], true, "{answer}");
    let (nas_code, answer) = status(&nas, &[]);
    assert_eq!(nas_code, laptop_code, "the NAS exits as the vault's worst folder: {answer}");
    let said = text(&nas.run(&["status"]));
    assert!(said.contains(path) && said.contains("laptop (home), reachable"), "{said}");

    // The Pi keeps copies it cannot read, and sees no folder name, ever.
    laptop.backup();
    laptop.ok(&["sync", "pi"]);
    laptop.ok(&["sync", "nas"]);
    let answer = wait_for_status(&pi, "the Pi holds copies", |a| {
        a["holds"]["blobs"].as_u64().is_some_and(|n| n > 0)
    });
    assert_eq!(answer["vault"], Value::Array(Vec::new()), "{answer}");
    assert!(!answer.to_string().contains(path), "{answer}");
    let said = text(&pi.run(&["status"]));
    assert!(said.contains("of the other devices' copies") && !said.contains(path), "{said}");
}
