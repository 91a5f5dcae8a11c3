//! A real agent on loopback QUIC, probed by real libp2p nodes: one on the roster that sends
//! malformed, oversized and truncated frames on every protocol, and a stranger with a valid
//! identity that is not on the roster.

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use triad_agent::config::{Config, StoreConfig};
use triad_agent::control::{Client, Request as ControlRequest};
use triad_agent::daemon::{self, Options};
use triad_agent::home::{Home, NewDevice};
use triad_agent::join::prove_recovery;
use triad_core::keys::{DeviceKey, Phrase};
use triad_core::roster::{Entry, Role, Signer};
use triad_core::seal::{ObjectKind, seal};
use triad_core::{BlobId, Media, StoreId, Timestamp};
use triad_net::gate::PROBATION_RATE;
use triad_net::{Multiaddr, Node, NodeConfig, Stream};
use triad_proto::wire::{
    self, BLOBS_PROTOCOL, BlobAck, BlobFrame, CONTROL_FRAME_MAX, CONTROL_PROTOCOL, PAIR_PROTOCOL,
    RECOVER_PROTOCOL, Request, Response,
};
use triad_store::Store;

const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    _dir: tempfile::TempDir,
    home: std::path::PathBuf,
    agent: Multiaddr,
    member_seed: [u8; 32],
}

/// A vault with one store, a second device on its roster, and the agent running.
async fn start() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let home_path = dir.path().join("home");
    let phrase = Phrase::from_entropy([3; 32]);
    let device = NewDevice { name: "nas", site: "studio", device_seed: [4; 32] };
    let (home, mut roster) = Home::init(&home_path, &phrase, device).expect("init");
    let member_seed = [5; 32];
    roster.admit_with_device(
        home.device_key(),
        Entry {
            device: DeviceKey::from_bytes(&member_seed).device_id(),
            name: "laptop".into(),
            site: "home".into(),
            role: Role::Trusted,
            signer: Signer::Recovery,
        },
    );
    home.write_roster(&roster).expect("roster");
    let store_path = dir.path().join("store");
    let id = StoreId::from_bytes([6; 16]);
    let store_config = triad_store::Config::default();
    Store::create(&store_path, home.vault(), Media::Raid, id, Timestamp::new(1, 0), &store_config)
        .expect("store");
    let config = Config {
        stores: vec![StoreConfig {
            id,
            path: store_path,
            media: Media::Raid,
            quota: None,
            catalog: false,
        }],
        ..Config::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let options = Options {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")],
        mdns: false,
        relay: false,
        upnp: false,
    };
    let (path, cfg) = (home_path.clone(), config);
    tokio::spawn(async move {
        let mut tx = Some(tx);
        daemon::run(&path, cfg, options, |ready| {
            let _ = tx.take().expect("ready once").send(ready.addrs[0].clone());
        })
        .await
        .expect("agent runs");
    });
    let agent = tokio::time::timeout(WAIT, rx).await.expect("agent ready in time").expect("addr");
    Setup { _dir: dir, home: home_path, agent, member_seed }
}

fn peer_of(addr: &Multiaddr) -> triad_net::PeerId {
    addr.iter()
        .find_map(|p| match p {
            triad_net::node::Protocol::P2p(peer) => Some(peer),
            _ => None,
        })
        .expect("the address ends in /p2p/")
}

async fn node(seed: [u8; 32]) -> Node {
    let listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr")];
    Node::start(triad_net::keypair(&seed), NodeConfig::new(listen, false)).await.expect("node")
}

/// What the agent says after `bytes` on a new stream: `None` if it closes without a frame.
async fn probe(
    node: &Node,
    peer: triad_net::PeerId,
    protocol: &'static str,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    let stream = node.open(peer, protocol).await.expect("stream opens");
    exchange(stream, bytes).await
}

/// As [`probe`] for a peer the agent may refuse outright: a stream that does not even open
/// is no answer either.
async fn probe_refused(
    node: &Node,
    peer: triad_net::PeerId,
    protocol: &'static str,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    let opened = tokio::time::timeout(WAIT, node.open(peer, protocol)).await;
    match opened.expect("gives up in time") {
        Ok(stream) => exchange(stream, bytes).await,
        Err(_) => None,
    }
}

async fn exchange(mut stream: Stream, bytes: &[u8]) -> Option<Vec<u8>> {
    // The agent may close the stream before reading all of it: that is an answer too.
    let _ = stream.write_all(bytes).await;
    let _ = stream.close().await;
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.expect("closes in time");
    match read {
        Ok(_) if !answer.is_empty() => Some(answer),
        _ => None,
    }
}

async fn hello(node: &Node, peer: triad_net::PeerId) -> Response {
    let answer =
        probe(node, peer, CONTROL_PROTOCOL, &wire::frame(&Request::Hello)).await.expect("answer");
    wire::decode("response", &answer[4..]).expect("a response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_the_stream_and_the_agent_serves_on() {
    let setup = start().await;
    let member = node(setup.member_seed).await;
    member.admission().set_members([peer_of(&setup.agent)]);
    let agent = member.dial(setup.agent.clone()).await.expect("a member connects");

    let Response::Hello { name, .. } = hello(&member, agent).await else { panic!("not a hello") };
    assert_eq!(name, "nas");

    let oversized = ((CONTROL_FRAME_MAX as u32) + 1).to_be_bytes();
    let mut truncated = wire::frame(&Request::Hello);
    truncated.truncate(truncated.len() - 1);
    let mut wrong_version = wire::frame(&Request::Hello);
    wrong_version[4] = wire::WIRE_VERSION + 1;
    let garbage = [0, 0, 0, 4, wire::WIRE_VERSION, 0xff, 0xff, 0xff];
    for (what, bytes) in [
        ("oversized", &oversized[..]),
        ("truncated", &truncated[..]),
        ("wrong version", &wrong_version[..]),
        ("garbage", &garbage[..]),
        ("empty", &[][..]),
    ] {
        for protocol in [CONTROL_PROTOCOL, BLOBS_PROTOCOL, PAIR_PROTOCOL] {
            assert_eq!(probe(&member, agent, protocol, bytes).await, None, "{what} on {protocol}");
        }
    }

    // A blob whose bytes do not match its address is refused, and nothing is stored.
    let keys = Home::open(&setup.home).expect("home");
    let blob = seal(keys.keys().expect("keys"), ObjectKind::Chunk, b"some chunk");
    let lie = BlobId::of(b"something else");
    let mut push = wire::frame(&BlobFrame::Blob { id: lie, bytes: blob.as_bytes().to_vec() });
    push.extend(wire::frame(&BlobFrame::Commit));
    assert_eq!(probe(&member, agent, BLOBS_PROTOCOL, &push).await, None, "lying blob");

    // A true blob is acknowledged after the commit, and is then in the store.
    let mut push = wire::frame(&BlobFrame::Blob { id: blob.id(), bytes: blob.as_bytes().to_vec() });
    push.extend(wire::frame(&BlobFrame::Commit));
    let ack = probe(&member, agent, BLOBS_PROTOCOL, &push).await.expect("an acknowledgement");
    let ack: BlobAck = wire::decode("ack", &ack[4..]).expect("an ack");
    assert_eq!(ack, BlobAck::Committed { count: 1 });

    // Still serving after all that.
    assert!(matches!(hello(&member, agent).await, Response::Hello { .. }));
    // The agent holds its stores open; it says what they lack: the lie, not the blob.
    let ask = wire::frame(&Request::Missing { blobs: vec![blob.id(), lie] });
    let answer = probe(&member, agent, CONTROL_PROTOCOL, &ask).await.expect("answer");
    let missing: Response = wire::decode("response", &answer[4..]).expect("a response");
    assert_eq!(missing, Response::Missing { blobs: vec![lie] });

    // Removed from the roster, the device is cut off and refused from then on.
    let home = setup.home.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let mut client = Client::connect(&home).expect("the control socket");
        client.send(&ControlRequest::RemoveDevice { device: "laptop".into() }).expect("send");
        client.receive().expect("answer")
    })
    .await
    .expect("joined");
    assert_eq!(removed["done"], true, "{removed}");
    // Whatever its connection was doing, it gets no answer (the gate refuses a removed device
    // any new connection: see triad-net's gate tests).
    if let Ok(Ok(mut stream)) =
        tokio::time::timeout(WAIT, member.open(agent, CONTROL_PROTOCOL)).await
    {
        let _ = stream.write_all(&wire::frame(&Request::Hello)).await;
        let _ = stream.close().await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
        assert!(answer.is_empty(), "a removed device got an answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_not_on_the_roster_gets_nothing_but_the_recovery_proof() {
    let setup = start().await;
    let stranger = node([77; 32]).await;
    // Its own side lets it connect anywhere: what it gets is the agent's decision.
    stranger.admission().set_joining(true);
    let agent = stranger.dial(setup.agent.clone()).await.expect("admitted for the proof only");
    for protocol in [CONTROL_PROTOCOL, BLOBS_PROTOCOL, PAIR_PROTOCOL] {
        let answer = probe_refused(&stranger, agent, protocol, &wire::frame(&Request::Hello)).await;
        assert_eq!(answer, None, "a stranger got an answer on {protocol}");
    }

    // A failed recovery proof (another vault's phrase) is refused and admits nothing.
    let entry = |seed: [u8; 32]| Entry {
        device: DeviceKey::from_bytes(&seed).device_id(),
        name: "new".into(),
        site: "here".into(),
        role: Role::Trusted,
        signer: Signer::Recovery,
    };
    let wrong = Phrase::from_entropy([9; 32]);
    let refused = prove_recovery(&stranger, agent, &wrong, entry([77; 32])).await;
    assert!(refused.is_err(), "a wrong phrase was accepted");
    let answer =
        probe_refused(&stranger, agent, CONTROL_PROTOCOL, &wire::frame(&Request::Hello)).await;
    assert_eq!(answer, None, "a failed prover got an answer");

    // The right phrase admits the prover, signed by the recovery key, bound to its peer id.
    let prover = node([78; 32]).await;
    prover.admission().set_joining(true);
    let agent = prover.dial(setup.agent.clone()).await.expect("admitted for the proof only");
    let phrase = Phrase::from_entropy([3; 32]);
    let roster = prove_recovery(&prover, agent, &phrase, entry([78; 32])).await.expect("admitted");
    assert!(roster.device(DeviceKey::from_bytes(&[78; 32]).device_id()).is_some());
    prover.admission().set_members([agent]);
    assert!(matches!(hello(&prover, agent).await, Response::Hello { .. }));

    // Unknown peers are admitted a few a minute at most.
    let mut admitted = 0;
    for seed in 100..100 + PROBATION_RATE as u8 + 2 {
        let peer = node([seed; 32]).await;
        peer.admission().set_joining(true);
        if let Ok(agent) = peer.dial(setup.agent.clone()).await {
            let opened = tokio::time::timeout(WAIT, peer.open(agent, RECOVER_PROTOCOL)).await;
            admitted += usize::from(opened.expect("in time").is_ok());
        }
    }
    assert!(admitted < PROBATION_RATE, "{admitted} unknown peers admitted in a minute");
}
