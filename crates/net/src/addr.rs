//! Which of a device's addresses another device can use: an unspecified address (`0.0.0.0`,
//! `::`) reaches nothing, and a loopback address reaches only a process on the same host.

use std::net::IpAddr;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

fn ip(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Whether `addr` is the unspecified address: it names no host.
pub fn is_unspecified(addr: &Multiaddr) -> bool {
    ip(addr).is_some_and(|ip| ip.is_unspecified())
}

/// Whether `addr` is a loopback address: it reaches this host only.
pub fn is_loopback(addr: &Multiaddr) -> bool {
    ip(addr).is_some_and(|ip| ip.is_loopback())
}

/// Whether `addr` goes through a relay (a circuit through another device).
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// Whether `addr` is worth telling others as a way to reach this device: not an unspecified
/// or loopback address, and a circuit only through a relay on the internet (not on a LAN, and
/// not a circuit through another circuit, which libp2p cannot dial).
pub fn worth_advertising(addr: &Multiaddr) -> bool {
    let circuits = addr.iter().filter(|p| matches!(p, Protocol::P2pCircuit)).count();
    !is_unspecified(addr)
        && !is_loopback(addr)
        && (circuits == 0 || (circuits == 1 && !is_lan(addr)))
}

/// The relay a circuit address goes through: the peer named just before `/p2p-circuit`.
pub fn relay_of(addr: &Multiaddr) -> Option<libp2p::PeerId> {
    let mut relay = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(peer) => relay = Some(peer),
            Protocol::P2pCircuit => return relay,
            _ => {}
        }
    }
    None
}

/// How a connection at `addr` goes: `lan` (an address of this network), `relayed` (through
/// another device), or `direct` (across the internet, no relay).
pub fn path(addr: &Multiaddr) -> &'static str {
    if is_relayed(addr) {
        "relayed"
    } else if is_lan(addr) {
        "lan"
    } else {
        "direct"
    }
}

/// Whether `addr` is on this network: private, link-local or loopback.
pub fn is_lan(addr: &Multiaddr) -> bool {
    match ip(addr) {
        Some(IpAddr::V4(ip)) => ip.is_private() || ip.is_loopback() || ip.is_link_local(),
        Some(IpAddr::V6(ip)) => {
            let first = ip.segments()[0];
            ip.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
        None => false,
    }
}

/// The addresses to give a device that may be on another host (in a pairing link, a welcome,
/// an address record): never an unspecified one, and loopback ones only when there is nothing
/// else (an agent that listens on loopback alone serves only its own host anyway).
pub fn for_others(addrs: impl IntoIterator<Item = Multiaddr>) -> Vec<Multiaddr> {
    let usable: Vec<Multiaddr> = addrs.into_iter().filter(|a| !is_unspecified(a)).collect();
    if usable.iter().all(is_loopback) {
        return usable;
    }
    usable.into_iter().filter(|a| !is_loopback(a)).collect()
}

/// Whether an address a peer gave is worth remembering, when this device reached the peer at
/// `via`: not an unspecified one, and a loopback one only if the peer was reached over
/// loopback (it runs on this host).
pub fn worth_keeping(addr: &Multiaddr, via: Option<&Multiaddr>) -> bool {
    !is_unspecified(addr) && (!is_loopback(addr) || via.is_some_and(is_loopback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_circuits_through_a_relay_on_the_internet_are_advertised() {
        let (r, s, me) =
            (libp2p::PeerId::random(), libp2p::PeerId::random(), libp2p::PeerId::random());
        let ok: Multiaddr = format!("/ip4/198.18.0.2/udp/1/quic-v1/p2p/{r}/p2p-circuit/p2p/{me}")
            .parse()
            .expect("an address");
        let lan: Multiaddr = format!("/ip4/192.168.1.2/udp/1/quic-v1/p2p/{r}/p2p-circuit")
            .parse()
            .expect("an address");
        let nested: Multiaddr =
            format!("/ip4/198.18.0.2/udp/1/quic-v1/p2p/{r}/p2p-circuit/p2p/{s}/p2p-circuit")
                .parse()
                .expect("an address");
        assert!(worth_advertising(&ok));
        assert!(!worth_advertising(&lan));
        assert!(!worth_advertising(&nested));
        assert!(worth_advertising(&"/ip4/192.168.1.2/udp/1/quic-v1".parse().expect("an address")));
        assert!(!worth_advertising(&"/ip4/127.0.0.1/udp/1/quic-v1".parse().expect("an address")));
    }

    #[test]
    fn the_relay_of_a_circuit_is_the_peer_before_it() {
        let relay = libp2p::PeerId::random();
        let target = libp2p::PeerId::random();
        let circuit: Multiaddr =
            format!("/ip4/198.18.0.2/udp/4001/quic-v1/p2p/{relay}/p2p-circuit/p2p/{target}")
                .parse()
                .expect("an address");
        assert_eq!(relay_of(&circuit), Some(relay));
        assert_eq!(path(&circuit), "relayed");
        let direct: Multiaddr =
            format!("/ip4/198.18.0.2/udp/4001/quic-v1/p2p/{target}").parse().expect("an address");
        assert_eq!(relay_of(&direct), None);
        assert_eq!(path(&direct), "direct");
    }

    fn addrs(list: &[&str]) -> Vec<Multiaddr> {
        list.iter().map(|a| a.parse().expect("an address")).collect()
    }

    #[test]
    fn others_get_no_unspecified_address_and_loopback_only_when_alone() {
        let all = addrs(&[
            "/ip4/0.0.0.0/udp/41641/quic-v1",
            "/ip4/127.0.0.1/udp/41641/quic-v1",
            "/ip4/192.168.1.20/udp/41641/quic-v1",
            "/ip6/::1/udp/41641/quic-v1",
            "/ip6/::/udp/41641/quic-v1",
            "/ip6/2001:db8::7/udp/41641/quic-v1",
        ]);
        assert_eq!(
            for_others(all),
            addrs(&["/ip4/192.168.1.20/udp/41641/quic-v1", "/ip6/2001:db8::7/udp/41641/quic-v1"])
        );
        let alone = addrs(&["/ip4/127.0.0.1/udp/4001/quic-v1", "/ip4/0.0.0.0/udp/4001/quic-v1"]);
        assert_eq!(for_others(alone), addrs(&["/ip4/127.0.0.1/udp/4001/quic-v1"]));
    }

    #[test]
    fn a_loopback_address_is_kept_only_for_a_peer_on_this_host() {
        let lo: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let lan: Multiaddr = "/ip4/192.168.1.20/udp/4001/quic-v1".parse().unwrap();
        let any: Multiaddr = "/ip4/0.0.0.0/udp/4001/quic-v1".parse().unwrap();
        assert!(worth_keeping(&lan, Some(&lan)) && worth_keeping(&lan, None));
        assert!(worth_keeping(&lo, Some(&lo)));
        assert!(!worth_keeping(&lo, Some(&lan)) && !worth_keeping(&lo, None));
        assert!(!worth_keeping(&any, Some(&lo)));
    }

    #[test]
    fn a_path_is_lan_direct_or_relayed() {
        let path_of = |a: &str| path(&a.parse().unwrap());
        assert_eq!(path_of("/ip4/192.168.1.20/udp/1/quic-v1"), "lan");
        assert_eq!(path_of("/ip4/203.0.113.9/udp/1/quic-v1"), "direct");
        let relay = "/ip4/203.0.113.9/udp/1/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit";
        assert_eq!(path_of(relay), "relayed");
    }

    #[test]
    fn lan_addresses_are_private_link_local_or_loopback() {
        for (addr, lan) in [
            ("/ip4/192.168.1.20/udp/1/quic-v1", true),
            ("/ip4/10.0.0.1/udp/1/quic-v1", true),
            ("/ip4/169.254.3.4/udp/1/quic-v1", true),
            ("/ip4/127.0.0.1/udp/1/quic-v1", true),
            ("/ip4/203.0.113.9/udp/1/quic-v1", false),
            ("/ip6/fd00::1/udp/1/quic-v1", true),
            ("/ip6/fe80::1/udp/1/quic-v1", true),
            ("/ip6/::1/udp/1/quic-v1", true),
            ("/ip6/2001:db8::1/udp/1/quic-v1", false),
        ] {
            assert_eq!(is_lan(&addr.parse().unwrap()), lan, "{addr}");
        }
    }
}
