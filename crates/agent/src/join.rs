//! Joining a vault: a new device pairs with a device that opened a pairing window, and its
//! home is written from what the pairing gave it. No agent needs to run on the new device.

use std::path::Path;
use std::time::Duration;

use triad_core::keys::VaultSecret;
use triad_core::roster::{Role, Roster};
use triad_net::pair::{self, PairError, Secret};
use triad_net::{Multiaddr, Node, NodeConfig, PeerId};
use triad_proto::wire::{Joiner, Offer, PAIR_PROTOCOL};

use crate::home::{Home, HomeError, NewDevice};
use crate::peers::Book;

/// Where the inviter is.
#[derive(Debug, Clone)]
pub enum Target {
    /// A typed code; the inviter is at `peer` if given, else found by mDNS on the LAN.
    Code {
        /// The code.
        secret: Secret,
        /// An address of the inviter.
        peer: Option<Multiaddr>,
    },
    /// A link (what the QR code carries): the inviter and its addresses are in it.
    Link {
        /// The secret.
        secret: Secret,
        /// The inviter.
        inviter: PeerId,
        /// Its addresses.
        addrs: Vec<Multiaddr>,
    },
}

/// What joining did.
#[derive(Debug)]
pub struct Joined {
    /// The inviter's offer: its name, site, and the role this device got.
    pub offer: Offer,
    /// The new home.
    pub home: Home,
}

/// Joining failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// This home already holds a vault.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The network could not start.
    #[error(transparent)]
    Net(#[from] triad_net::NetError),
    /// The inviter could not be reached or found.
    #[error("cannot reach the inviting device: {0}")]
    Unreachable(String),
    /// Pairing failed.
    #[error(transparent)]
    Pair(#[from] PairError),
    /// The other device refused the recovery proof, or the exchange failed.
    #[error("recovery refused: {0}")]
    Recovery(String),
    /// The inviter ended the pairing without a word: its code was used (one try per code) or
    /// expired, or its agent stopped.
    #[error(
        "the inviting device did not go on with this code: it was used or has expired. Start a \
         new `triad pair` there and join with its new code"
    )]
    CodeSpent,
    /// The inviter sent a roster that does not hold this device, or does not verify.
    #[error("the inviting device sent an unusable roster: {0}")]
    Roster(String),
}

/// Joins the vault of the device at `target` as `name` at `site`. `device_seed` is the new
/// device key's seed; `decide` sees the inviter's offer (its name, site, and the role given).
pub async fn join(
    home_path: &Path,
    target: Target,
    name: &str,
    site: &str,
    device_seed: [u8; 32],
    wait: Duration,
    decide: impl FnOnce(&Offer) -> bool,
) -> Result<Joined, JoinError> {
    if Home::exists(home_path) {
        let existing = Home::open(home_path).map(|h| h.identity().name.clone()).unwrap_or_default();
        return Err(HomeError::AlreadyInitialised { path: home_path.into(), name: existing }.into());
    }
    let keypair = triad_net::keypair(&device_seed);
    let mdns = matches!(target, Target::Code { peer: None, .. });
    let listen = vec!["/ip4/0.0.0.0/udp/0/quic-v1".parse().expect("a valid multiaddress")];
    let node = Node::start(keypair, NodeConfig::new(listen, mdns)).await?;
    node.admission().set_joining(true);
    let result = pair_with(&node, home_path, target, name, site, device_seed, wait, decide).await;
    // Tell the inviter this connection is over: this process is about to exit.
    node.close_all().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn pair_with(
    node: &Node,
    home_path: &Path,
    target: Target,
    name: &str,
    site: &str,
    device_seed: [u8; 32],
    wait: Duration,
    decide: impl FnOnce(&Offer) -> bool,
) -> Result<Joined, JoinError> {
    let me = node.peer_id();
    let who = Joiner { name: name.to_owned(), site: site.to_owned() };

    let (secret, candidates, mut dialled): (Secret, Vec<PeerId>, Vec<Multiaddr>) = match target {
        Target::Link { secret, inviter, addrs } => {
            for addr in &addrs {
                node.add_address(inviter, addr.clone()).await?;
            }
            (secret, vec![inviter], addrs)
        }
        Target::Code { secret, peer: Some(addr) } => {
            let inviter = tokio::time::timeout(wait, node.dial(addr.clone()))
                .await
                .map_err(|_| JoinError::Unreachable(format!("no answer from {addr}")))?
                .map_err(|e| JoinError::Unreachable(e.to_string()))?;
            (secret, vec![inviter], vec![addr])
        }
        Target::Code { secret, peer: None } => {
            let found = discover(node, wait).await?;
            (secret, found, Vec::new())
        }
    };

    let mut last = JoinError::Unreachable("no device with an open pairing window found".into());
    let mut decide = Some(decide);
    for inviter in candidates {
        let mut stream = match node.open(inviter, PAIR_PROTOCOL).await {
            Ok(stream) => stream,
            // It answered, and would not let this device in: no pairing window is open there.
            Err(triad_net::NetError::Closed { .. }) => return Err(JoinError::CodeSpent),
            Err(e) => {
                last = JoinError::Unreachable(e.to_string());
                continue;
            }
        };
        let mut chosen = None;
        let decide_once = |offer: &Offer| {
            chosen = Some(offer.clone());
            decide.take().is_some_and(|d| d(offer))
        };
        match pair::join(&mut stream, &secret, inviter, me, &who, decide_once).await {
            Ok((offer, welcome)) => {
                let roster = Roster::decode(&welcome.roster)
                    .map_err(|e| JoinError::Roster(e.to_string()))?;
                let device = triad_core::keys::DeviceKey::from_bytes(&device_seed).device_id();
                let Some(entry) = roster.device(device) else {
                    return Err(JoinError::Roster("this device is not on it".into()));
                };
                let secret = match (entry.role, welcome.vault_secret) {
                    (Role::Trusted, Some(bytes)) => Some(VaultSecret::from_bytes(bytes)),
                    (Role::StorageOnly, None) => None,
                    _ => return Err(JoinError::Roster("the role and the keys disagree".into())),
                };
                let home = Home::join(
                    home_path,
                    NewDevice { name, site, device_seed },
                    &roster,
                    secret.as_ref(),
                )?;
                let mut book = Book::default();
                if let Some(inviter_device) = triad_net::device_id(&inviter) {
                    dialled.extend(welcome.addresses.iter().filter_map(|a| a.parse().ok()));
                    let via = node.connected(&inviter);
                    // A loopback address only if the inviter is on this host: on another, it
                    // would name this one.
                    dialled.retain(|a| triad_net::addr::worth_keeping(a, via.as_ref()));
                    if let Some(addr) = via {
                        dialled.insert(0, addr);
                    }
                    for addr in dialled.iter().rev() {
                        book.add(inviter_device, &addr.to_string());
                    }
                }
                book.save(home_path)?;
                return Ok(Joined { offer, home });
            }
            Err(PairError::WrongWindow(_)) => {
                last = JoinError::Unreachable("no device with this pairing window".into());
            }
            // The inviter closed the exchange unread: no window is open there any more.
            Err(e @ (PairError::Frame(_) | PairError::Io(_))) => {
                tracing::debug!(error = %e, "the pairing stream ended");
                return Err(JoinError::CodeSpent);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last)
}

/// Waits up to `wait` for devices on the LAN, by mDNS.
async fn discover(node: &Node, wait: Duration) -> Result<Vec<PeerId>, JoinError> {
    let mut found = node.discovered();
    let first = tokio::time::timeout(wait, found.wait_for(|peers| !peers.is_empty())).await;
    match first {
        Ok(Ok(peers)) => Ok(peers.clone()),
        _ => Err(JoinError::Unreachable(
            "no device found on this network; give its address with --peer".into(),
        )),
    }
}

/// Proves the recovery phrase to `verifier` (a device of the vault, which needs not know this
/// one) and gets `entry` (this device) admitted to its roster, signed by the recovery key.
/// Returns the roster as the verifier keeps it now.
pub async fn prove_recovery(
    node: &Node,
    verifier: PeerId,
    phrase: &triad_core::keys::Phrase,
    entry: triad_core::roster::Entry,
) -> Result<Roster, JoinError> {
    use triad_net::frame;
    use triad_proto::wire::{self, CONTROL_FRAME_MAX, RECOVER_PROTOCOL, RecoverMessage};

    let failed = |e: &dyn std::fmt::Display| JoinError::Recovery(e.to_string());
    let mut stream = node.open(verifier, RECOVER_PROTOCOL).await.map_err(|e| failed(&e))?;
    let vault = phrase.vault_id();
    frame::write(&mut stream, &RecoverMessage::Hello { vault }).await.map_err(|e| failed(&e))?;
    let next = async |stream: &mut triad_net::Stream| match frame::read::<RecoverMessage, _>(
        stream,
        "recovery message",
        CONTROL_FRAME_MAX,
    )
    .await
    {
        Ok(RecoverMessage::Refused { reason }) => Err(JoinError::Recovery(reason)),
        Ok(message) => Ok(message),
        Err(e) => Err(failed(&e)),
    };
    let (nonce, heads) = match next(&mut stream).await? {
        RecoverMessage::ChallengeHeads { nonce, heads } => (nonce, heads),
        RecoverMessage::Challenge { .. } => {
            return Err(JoinError::Recovery(
                "that device runs an older triad; update it and try again".into(),
            ));
        }
        _ => return Err(JoinError::Recovery("unexpected message".into())),
    };
    let recovery = phrase.recovery_key();
    let heads = heads.into_iter().map(triad_core::roster::ChangeId).collect();
    let change = Roster::recovery_admission(&recovery, heads, entry);
    let msg = wire::recovery_proof_message(
        &vault,
        &verifier.to_bytes(),
        &node.peer_id().to_bytes(),
        &nonce,
    );
    let proof = RecoverMessage::ProofChange {
        signature: recovery.sign(&msg).to_vec(),
        change: change.encode(),
    };
    frame::write(&mut stream, &proof).await.map_err(|e| failed(&e))?;
    let RecoverMessage::Welcome { roster } = next(&mut stream).await? else {
        return Err(JoinError::Recovery("unexpected message".into()));
    };
    let roster = Roster::decode(&roster).map_err(|e| JoinError::Roster(e.to_string()))?;
    if roster.vault != vault {
        return Err(JoinError::Roster("it is another vault's".into()));
    }
    Ok(roster)
}
