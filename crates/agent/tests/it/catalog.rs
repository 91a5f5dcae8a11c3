//! The catalog believes only heads of devices on the roster.

use triad_agent::catalog::Catalog;
use triad_agent::home::{Home, NewDevice};
use triad_core::head::Head;
use triad_core::keys::{DeviceKey, Phrase};
use triad_core::snapshot::{Object, Snapshot, Stats, Tree};
use triad_core::{FolderId, Media, StoreId, Timestamp};
use triad_store::{Config, Store};

#[test]
fn a_head_signed_by_a_device_not_on_the_roster_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let phrase = Phrase::from_entropy([3; 32]);
    let device = NewDevice { name: "laptop", site: "home", device_seed: [4; 32] };
    let (home, roster) = Home::init(&dir.path().join("home"), &phrase, device).expect("init");
    let mut store = Store::create(
        &dir.path().join("store"),
        home.vault(),
        Media::Ssd,
        StoreId::from_bytes([5; 16]),
        Timestamp::new(1, 0),
        &Config::default(),
    )
    .expect("store");
    store.write_roster(&roster).expect("roster");

    // A stranger with the vault keys' help (say, a stolen snapshot) but no roster entry.
    let stranger = DeviceKey::from_bytes(&[9; 32]);
    let root = Tree::default().seal(home.keys().expect("trusted"));
    let snapshot = Snapshot {
        folder: FolderId::from_bytes([1; 16]),
        folder_name: "planted".into(),
        folder_path: b"/planted".to_vec(),
        device: stranger.device_id(),
        device_name: "stranger".into(),
        sequence: 1,
        time: Timestamp::new(2, 0),
        parent: None,
        root: root.id(),
        stats: Stats::default(),
    }
    .seal(home.keys().expect("trusted"));
    store.put(&root).expect("put");
    store.put(&snapshot).expect("put");
    store.commit().expect("commit");
    let head = Head {
        vault: home.vault(),
        device: stranger.device_id(),
        folder: FolderId::from_bytes([1; 16]),
        sequence: 1,
        snapshot: snapshot.id(),
        time: Timestamp::new(2, 0),
    }
    .sign(&stranger);
    assert!(store.write_head(&head).expect("the store checks only the signature"));

    let mut stores = vec![store];
    let catalog = Catalog::new(home.keys().expect("trusted"), &stores);
    assert!(catalog.heads().expect("heads").is_empty(), "the planted head is ignored");

    // The same head from a device on the roster is believed.
    let laptop_head =
        Head { device: home.device_id(), ..head.head.clone() }.sign(home.device_key());
    assert!(stores[0].write_head(&laptop_head).expect("write"));
    let catalog = Catalog::new(home.keys().expect("trusted"), &stores);
    assert_eq!(catalog.heads().expect("heads").len(), 1);
}
