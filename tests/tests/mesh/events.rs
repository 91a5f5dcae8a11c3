//! The agent works when what it waits for happens, not at its next retry: a device the policy
//! needs that comes back starts the push at once.

use std::time::{Duration, Instant};

use triad_e2e::{Agent, Device, Running, agent_of, paired_nas, start_agent_as_is, status};

/// Starts `d`'s agent listening at `addr` (as it listened before), without mDNS.
fn agent_at(d: &Device, addr: &str) -> Agent {
    let addr = triad_e2e::dialable(addr);
    let cmd = d.command(&["agent", "--listen", addr, "--no-mdns", "--json"]);
    agent_of(Running::spawn(cmd, &d.root().join("agent-again.log")))
}

#[test]
fn a_needed_device_that_comes_back_is_pushed_to_at_once_not_at_the_next_retry() {
    let laptop = Device::new();
    // Its own work on, and a retry far beyond this test's patience: only the NAS's return can
    // start the push in time.
    laptop.set_option("protect", "auto", "true");
    laptop.set_option("protect", "retry_secs", "3600");
    let _laptop_agent = start_agent_as_is(&laptop);
    let (nas, nas_agent) = paired_nas(&laptop, &[]);
    let nas_addr = nas_agent.addr.clone();
    drop(nas_agent);

    // A card is copied in while the NAS (the only copy off the laptop's site) is off.
    triad_e2e::make_shoot(&laptop.folder, 3);
    let waiting = Instant::now();
    loop {
        let (_, v) = status(&laptop, &[]);
        // Backed up, the NAS found away, and the next round set for the retry.
        let what = v["doing"]["what"].as_str().unwrap_or("");
        if what.contains("nas") && v["doing"]["next"].is_string() {
            break;
        }
        assert!(waiting.elapsed() < triad_e2e::WAIT, "the round never ended: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The NAS comes back where it was.
    let back = Instant::now();
    let _nas_agent = agent_at(&nas, &nas_addr);
    loop {
        let (_, v) = status(&laptop, &[]);
        if v["own_worst"] == "PROTECTED" {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(60), "still not protected: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = back.elapsed();
    eprintln!("protected {took:?} after the NAS came back");
    assert!(took < Duration::from_secs(30), "{took:?}");
}
