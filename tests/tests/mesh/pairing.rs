//! Whatever the order people pair in, every device learns every device and where it is, with
//! no address typed and no restart: a star from the laptop, a star from the NAS, a chain, and
//! a device that was off while the others paired.

use std::time::{Duration, Instant};

use triad_e2e::{Agent, Device, WAIT, joined, start_agent};

/// A device with a vault of its own, named `name` at `site`, with a store.
fn founder(name: &str, site: &str) -> Device {
    let d = Device::bare();
    d.ok(&["init", "--name", name, "--site", site]);
    d.ok(&["store", "add", d.store.to_str().expect("utf-8"), "--media", "raid"]);
    d
}

/// `name` joined through `inviter` (whose agent runs), with a store and its agent running.
fn join_through(inviter: &Device, extra: &[&str], name: &str, site: &str) -> (Device, Agent) {
    let d = joined(inviter, extra, name, site);
    d.ok(&["store", "add", d.store.to_str().expect("utf-8"), "--media", "usb-hdd"]);
    let agent = start_agent(&d);
    (d, agent)
}

/// The devices `d` lists as online, by name.
fn online(d: &Device) -> Vec<String> {
    triad_e2e::device_names(d, true)
}

/// Waits until each of `devices` lists every name of `names` as online; returns how long it
/// took. Panics after `WAIT`. A look at a device that is not reachable yet takes the agent's
/// probe timeout (4 s), so a look starts every 250 ms without waiting for the last to end:
/// the time is that of the first look that found every device, not of the probe's timeout.
fn converged(devices: &[(&str, &Device)], names: &[&str]) -> Duration {
    use std::sync::Mutex;
    let start = Instant::now();
    let done: Mutex<Option<Duration>> = Mutex::new(None);
    let lagging: Mutex<Vec<(String, Vec<String>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        while done.lock().expect("lock").is_none() {
            assert!(start.elapsed() < WAIT, "not converged: {:?}", lagging.lock().expect("lock"));
            scope.spawn(|| {
                let behind: Vec<(String, Vec<String>)> = devices
                    .iter()
                    .map(|(me, d)| (me.to_string(), online(d)))
                    .filter(|(me, seen)| {
                        names.iter().any(|n| n != me && !seen.iter().any(|s| s == n))
                    })
                    .collect();
                if behind.is_empty() {
                    let mut done = done.lock().expect("lock");
                    done.get_or_insert(start.elapsed());
                } else {
                    *lagging.lock().expect("lock") = behind;
                }
            });
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    done.into_inner().expect("lock").expect("converged")
}

const ALL: [&str; 3] = ["laptop", "nas", "pi"];

#[test]
fn a_star_from_the_laptop_converges() {
    let laptop = founder("laptop", "home");
    let _laptop_agent = start_agent(&laptop);
    let (nas, _nas_agent) = join_through(&laptop, &[], "nas", "studio");
    let (pi, _pi_agent) = join_through(&laptop, &["--storage-only"], "pi", "parents");
    // The NAS and the Pi never met: each learns the other from the laptop.
    let took = converged(&[("laptop", &laptop), ("nas", &nas), ("pi", &pi)], &ALL);
    eprintln!("star from the laptop converged in {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn a_star_from_the_nas_the_laptop_learns_the_pi_and_syncs_to_it() {
    let nas = founder("nas", "studio");
    let _nas_agent = start_agent(&nas);
    let (laptop, _laptop_agent) = join_through(&nas, &[], "laptop", "home");
    laptop.ok(&["folder", "add", laptop.folder.to_str().expect("utf-8"), "--media", "ssd"]);
    triad_e2e::write_noise(&laptop.folder.join("IMG_0001.CR3"), 200 << 10, 1);
    laptop.backup();
    let (pi, _pi_agent) = join_through(&nas, &["--storage-only"], "pi", "parents");
    let took = converged(&[("laptop", &laptop), ("nas", &nas), ("pi", &pi)], &ALL);
    eprintln!("star from the NAS converged in {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    // The laptop reaches the Pi at the address it learnt from the NAS.
    let said = laptop.ok(&["sync", "pi", "--json"]);
    assert!(said.contains("\"done\":true"), "{said}");
}

#[test]
fn a_chain_laptop_to_nas_to_pi_converges() {
    let laptop = founder("laptop", "home");
    let _laptop_agent = start_agent(&laptop);
    let (nas, _nas_agent) = join_through(&laptop, &[], "nas", "studio");
    let (pi, _pi_agent) = join_through(&nas, &["--storage-only"], "pi", "parents");
    let took = converged(&[("laptop", &laptop), ("nas", &nas), ("pi", &pi)], &ALL);
    eprintln!("chain converged in {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn a_device_that_was_off_while_the_others_paired_catches_up() {
    let nas = founder("nas", "studio");
    let _nas_agent = start_agent(&nas);
    let (laptop, laptop_agent) = join_through(&nas, &[], "laptop", "home");
    // The laptop is closed while the Pi joins.
    drop(laptop_agent);
    let (pi, _pi_agent) = join_through(&nas, &["--storage-only"], "pi", "parents");
    let _laptop_agent = start_agent(&laptop);
    let took = converged(&[("laptop", &laptop), ("nas", &nas), ("pi", &pi)], &ALL);
    eprintln!("a device back after the others paired caught up in {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}
