//! `triad demo`, the README's first command, end to end.

use std::process::Command;

use crate::support::triad_bin;

#[test]
fn the_demo_protects_a_shoot_repairs_bit_rot_and_recovers_from_the_pi_alone() {
    let out =
        Command::new(triad_bin()).arg("demo").env_remove("TRIAD_HOME").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "36 PROTECTED",
        "survives losing any one site: yes",
        "ranges not proven",
        "every device passes",
        "every byte identical",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
}
