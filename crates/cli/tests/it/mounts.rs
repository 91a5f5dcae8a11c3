//! A store on a read-only mount, and a store on a full disk (real mounts in a private
//! mount namespace: root ignores file modes, so chmod would prove nothing).

use std::process::Command;

use crate::support::{Device, assert_same_tree, can_unshare, make_shoot, triad_bin, write_noise};

/// Runs `script` with `sh` in a private mount namespace, with TRIAD_HOME and TRIAD set.
fn in_namespace(d: &Device, script: &str) -> String {
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .env("TRIAD_HOME", &d.home)
        .env("TRIAD", triad_bin())
        .output()
        .expect("unshare runs");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "namespace script failed: {text}");
    text
}

#[test]
fn a_read_only_store_refuses_writes_clearly_and_still_restores() {
    if !can_unshare() {
        return;
    }
    let d = Device::new();
    make_shoot(&d.folder, 2);
    d.backup();
    write_noise(&d.folder.join("late.CR3"), 400_000, 99);
    let to = d.root().join("restored");
    let script = format!(
        r#"set -u
mount --bind "{store}" "{store}" && mount -o remount,bind,ro "{store}" || exit 90
"$TRIAD" backup; echo "BACKUP_RC=$?"
"$TRIAD" verify --read-data; echo "VERIFY_RC=$?"
"$TRIAD" restore latest --to "{to}"; echo "RESTORE_RC=$?"
"#,
        store = d.store.display(),
        to = to.display()
    );
    let text = in_namespace(&d, &script);
    assert!(text.contains("BACKUP_RC=1"), "{text}");
    assert!(text.contains("read-only"), "the error names the cause: {text}");
    assert!(text.contains("VERIFY_RC=0"), "{text}");
    assert!(text.contains("RESTORE_RC=0"), "{text}");
    std::fs::remove_file(d.folder.join("late.CR3")).expect("rm");
    assert_eq!(assert_same_tree(&d.folder, &to.join("shoot")), 6);
    // Nothing was lost, and once writable again the store takes the backup.
    std::fs::create_dir_all(d.folder.join("x")).expect("mkdir");
    d.backup();
    d.code(&["verify", "--read-data"], 0);
}

#[test]
fn a_full_disk_fails_the_backup_clearly_and_keeps_what_was_stored() {
    if !can_unshare() {
        return;
    }
    let d = Device::new();
    make_shoot(&d.folder, 1);
    // A second device's home whose store lives on a 12 MiB tmpfs inside the namespace.
    let disk = d.root().join("small-disk");
    std::fs::create_dir_all(&disk).expect("mkdir");
    let big = d.root().join("big");
    write_noise(&big.join("clip.MOV"), 24 << 20, 7);
    let to = d.root().join("restored");
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=12m tmpfs "{disk}" || exit 90
export TRIAD_HOME="{disk_home}"
"$TRIAD" init --name pi --site parents --json > /dev/null || exit 91
"$TRIAD" store add "{disk}/triad" --media usb-hdd || exit 92
"$TRIAD" folder add "{folder}" || exit 93
"$TRIAD" backup; echo "FIRST_RC=$?"
"$TRIAD" folder add "{big}" || exit 94
"$TRIAD" backup; echo "FULL_RC=$?"
"$TRIAD" verify --read-data; echo "VERIFY_RC=$?"
"$TRIAD" restore latest --folder shoot --to "{to}"; echo "RESTORE_RC=$?"
"#,
        disk = disk.display(),
        disk_home = d.root().join("pi-home").display(),
        folder = d.folder.display(),
        big = big.display(),
        to = to.display(),
    );
    let text = in_namespace(&d, &script);
    assert!(text.contains("FIRST_RC=0"), "{text}");
    assert!(text.contains("FULL_RC=1"), "{text}");
    assert!(text.contains("full"), "the error names the cause: {text}");
    assert!(text.contains("VERIFY_RC=0"), "what was stored before is intact: {text}");
    assert!(text.contains("RESTORE_RC=0"), "{text}");
    assert_eq!(assert_same_tree(&d.folder, &to.join("shoot")), 3);
}
