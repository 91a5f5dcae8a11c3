//! A backup killed with SIGKILL at any point leaves a store that verifies, and the next
//! backup completes.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::Value;

use crate::support::{Device, make_shoot};

#[test]
fn sigkill_at_many_points_never_breaks_the_store() {
    let d = Device::new();
    make_shoot(&d.folder, 6);
    // Commit often, so kills land between commits, inside them and between files.
    d.set_backup_option("commit_bytes", "1048576");

    // Count the progress events of a full run on a copy of the device, to spread the kills.
    let mut kills = 0;
    for k in [1usize, 2, 3, 5, 8, 13, 21, 34] {
        let mut child = d
            .command(&["backup", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn backup");
        let stdout = child.stdout.take().expect("piped");
        let mut seen = 0;
        let mut finished = false;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            let event: Value = serde_json::from_str(&line).expect("json event");
            if event["event"] == "summary" {
                finished = true;
                break;
            }
            seen += 1;
            if seen == k {
                break;
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        if !finished {
            kills += 1;
        }
        // After every kill: the store verifies, data included.
        let text = d.code(&["verify", "--read-data"], 0);
        assert!(text.contains("Everything is intact."), "after a kill at event {k}: {text}");
        if finished {
            break;
        }
        // Start over from the same state for the next kill point: a later kill must also be
        // survivable when earlier runs left blobs behind.
    }
    assert!(kills >= 3, "the backup finished before enough kills ({kills})");

    // The next backup completes and everything restores.
    let s = d.backup();
    assert_eq!(s["files"], 18);
    assert_eq!(d.intact_and_restores(), 18);
}
