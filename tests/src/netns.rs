//! A small internet in network namespaces: a bridge as the internet, hosts on it with public
//! addresses, and homes behind NAT routers (nftables masquerade), each a namespace of its own.
//! Made by the test that needs it and removed when it is dropped.
//!
//! Addresses: the internet is 198.18.0.0/24 (a range for tests, not a private one, so the agents
//! take it for the internet); home `k` is 192.168.k.0/24 behind its router.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// How a home router maps a device's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// The mapping keeps the device's port for every destination, and only a destination the
    /// device sent to may answer (a port-restricted cone: what most home routers do).
    Cone,
    /// A new random port for each destination (symmetric): no hole can be punched.
    Symmetric,
}

/// A host of the small internet: the namespace it lives in and its own address.
#[derive(Debug, Clone)]
pub struct Host {
    /// The network namespace.
    pub ns: String,
    /// Its address (public, or in its home).
    pub ip: String,
    /// Its home router's namespace, if it is behind one.
    pub router: Option<String>,
    /// The address the internet sees it at: its own, or its router's.
    pub public: String,
}

impl Host {
    /// `program ARGS` run inside the host's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, program]);
        cmd
    }

    /// Cuts the host off the internet (its link to the internet or its router goes down) or
    /// puts it back.
    pub fn set_online(&self, online: bool) {
        let state = if online { "up" } else { "down" };
        ip(&["-n", &self.ns, "link", "set", "eth0", state]);
    }
}

/// The small internet; every namespace it made goes when it is dropped.
pub struct World {
    tag: String,
    namespaces: Vec<String>,
    next_host: usize,
}

impl World {
    /// A new internet, or `None` (saying why) where the machine does not allow it: it needs
    /// root, `ip` and `nft`.
    pub fn new() -> Option<World> {
        let missing: Vec<&str> = [("ip", "iproute2"), ("nft", "nftables")]
            .into_iter()
            .filter(|(tool, _)| !works(Command::new(tool).arg("-V")))
            .map(|(_, package)| package)
            .collect();
        if !missing.is_empty() {
            eprintln!("SKIPPED: this test needs {} (apt-get install them)", missing.join(", "));
            return None;
        }
        static WORLDS: AtomicUsize = AtomicUsize::new(0);
        let tag = format!("t{}-{}", std::process::id(), WORLDS.fetch_add(1, Ordering::SeqCst));
        let net = format!("{tag}-net");
        if !works(Command::new("ip").args(["netns", "add", &net])) {
            eprintln!("SKIPPED: this test needs root to make network namespaces (`ip netns add`)");
            return None;
        }
        let world = World { tag, namespaces: vec![net.clone()], next_host: 0 };
        // The kernel's nftables, not only the command: a table made and dropped.
        let nft = |args: &[&str]| {
            works(Command::new("ip").args(["netns", "exec", &net, "nft"]).args(args))
        };
        if !nft(&["add", "table", "ip", "probe"]) || !nft(&["delete", "table", "ip", "probe"]) {
            eprintln!("SKIPPED: this test needs the kernel's nftables (nf_tables) for NAT");
            return None;
        }
        ip(&["-n", &net, "link", "set", "lo", "up"]);
        ip(&["-n", &net, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &net, "link", "set", "br0", "up"]);
        Some(world)
    }

    fn namespace(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.tag);
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        self.namespaces.push(ns.clone());
        ns
    }

    /// Plugs `ns` into the internet as `eth0` with the next public address; returns it.
    fn plug(&mut self, ns: &str) -> String {
        self.next_host += 1;
        let k = self.next_host;
        let net = &self.namespaces[0];
        let port = format!("h{k}");
        ip(&[
            "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", &port, "netns", net,
        ]);
        ip(&["-n", net, "link", "set", &port, "master", "br0"]);
        ip(&["-n", net, "link", "set", &port, "up"]);
        let public = format!("198.18.0.{}", k + 1);
        ip(&["-n", ns, "addr", "add", &format!("{public}/24"), "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        public
    }

    /// A host with a public address (a studio NAS with its own address, a relay box).
    pub fn public(&mut self, name: &str) -> Host {
        let ns = self.namespace(name);
        let ip = self.plug(&ns);
        Host { ns, public: ip.clone(), ip, router: None }
    }

    /// A host in a home of its own, behind a router that does `nat`.
    pub fn home(&mut self, name: &str, nat: Nat) -> Host {
        let router = self.namespace(&format!("{name}-gw"));
        let public = self.plug(&router);
        let k = self.next_host;
        let ns = self.namespace(name);
        ip(&[
            "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", "eth1", "netns",
            &router,
        ]);
        let (gateway, address) = (format!("192.168.{k}.1"), format!("192.168.{k}.2"));
        ip(&["-n", &router, "addr", "add", &format!("{gateway}/24"), "dev", "eth1"]);
        ip(&["-n", &router, "link", "set", "eth1", "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "route", "add", "default", "via", &gateway]);
        run(Command::new("ip").args([
            "netns",
            "exec",
            &router,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ]));
        let masquerade = match nat {
            Nat::Cone => "masquerade",
            Nat::Symmetric => "masquerade fully-random",
        };
        let rules = format!(
            "table ip nat {{
                chain post {{
                    type nat hook postrouting priority srcnat; policy accept;
                    oifname \"eth0\" {masquerade}
                }}
            }}
            table ip filter {{
                chain input {{
                    type filter hook input priority filter; policy drop;
                    iifname \"lo\" accept
                    iifname \"eth1\" accept
                    ct state established,related accept
                }}
                chain forward {{
                    type filter hook forward priority filter; policy drop;
                    ct state established,related accept
                    iifname \"eth1\" oifname \"eth0\" accept
                }}
            }}"
        );
        let mut nft = Command::new("ip");
        nft.args(["netns", "exec", &router, "nft", "-f", "-"]).stdin(Stdio::piped());
        let mut child = nft.spawn().expect("nft runs");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), rules.as_bytes())
            .expect("rules written");
        drop(child.stdin.take());
        assert!(child.wait().expect("nft ends").success(), "nft took the router's rules");
        Host { ns, ip: address, router: Some(router), public }
    }

    /// The uplink of `host`'s home: at most `mbit` Mbit/s out (tc tbf on the router's side of
    /// the internet) and `loss_percent` of the packets leaving lost at random (nftables).
    pub fn uplink(&self, host: &Host, mbit: u32, loss_percent: u32) {
        let router = host.router.as_deref().expect("a host behind a router");
        let rate = format!("{mbit}mbit");
        ip(&["-n", router, "link", "set", "eth0", "txqueuelen", "1000"]);
        run(Command::new("ip").args([
            "netns", "exec", router, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate",
            &rate, "burst", "64kb", "latency", "200ms",
        ]));
        if loss_percent > 0 {
            run(Command::new("ip").args([
                "netns",
                "exec",
                router,
                "nft",
                "insert",
                "rule",
                "ip",
                "filter",
                "forward",
                "oifname",
                "eth0",
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                &loss_percent.to_string(),
                "drop",
            ]));
        }
    }

    /// The home of `host` gets another public address (the laptop moved from the home's
    /// Wi-Fi to a phone's hotspot): its router's connections are forgotten, and whatever the
    /// host sends next leaves from `198.18.0.<last>`. Returns the new address.
    pub fn move_home(&self, host: &Host, last: u8) -> String {
        let router = host.router.as_deref().expect("a host behind a router");
        let new = format!("198.18.0.{last}");
        ip(&["-n", router, "addr", "del", &format!("{}/24", host.public), "dev", "eth0"]);
        ip(&["-n", router, "addr", "add", &format!("{new}/24"), "dev", "eth0"]);
        new
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn works(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}
