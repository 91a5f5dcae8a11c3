//! Getting a vault back from one surviving device: a new device that holds only the recovery
//! phrase proves it to the peer (the recovery proof, [`crate::join::prove_recovery`]), is
//! signed onto the roster by the recovery key, and copies every blob and signed head the
//! peer holds into a new local store, each blob checked against its address on arrival.
//! The files are then restored from that store like from any other.

use std::collections::BTreeSet;
use std::path::Path;

use triad_core::head::SignedHead;
use triad_core::keys::{DeviceKey, Phrase};
use triad_core::roster::{Entry, Role, Signer};
use triad_core::seal::SealedBlob;
use triad_core::{BlobId, Media, StoreId, Timestamp};
use triad_net::frame;
use triad_net::{Multiaddr, Node, NodeConfig, PeerId};
use triad_proto::wire::{
    self, BlobFrame, CONTROL_FRAME_MAX, CONTROL_PROTOCOL, FETCH_PROTOCOL, Fetch, MISSING_BATCH_MAX,
    Response,
};
use triad_store::Store;

use crate::catalog::Catalog;
use crate::config::{Config, StoreConfig};
use crate::home::{Home, NewDevice};

/// Blobs asked for in one batch.
const FETCH_BATCH: usize = 1024;
/// How long the peer may stay silent in the middle of a batch.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a recovery from a peer needs.
pub struct FromPeer<'a> {
    /// The new device's home (must not exist yet).
    pub home: &'a Path,
    /// The recovery phrase.
    pub phrase: &'a Phrase,
    /// The surviving device's address (with or without `/p2p/<peer id>`).
    pub peer: Multiaddr,
    /// The new device's name and site.
    pub name: &'a str,
    /// Its site.
    pub site: &'a str,
    /// 32 fresh random bytes for the new device's key.
    pub device_seed: [u8; 32],
    /// Where to make the new store, its id, and its media.
    pub store: (&'a Path, StoreId, Media),
    /// Now (the store's creation time).
    pub now: Timestamp,
}

/// What a recovery from a peer did.
#[derive(Debug)]
pub struct Recovered {
    /// The new device's home.
    pub home: Home,
    /// Its settings (the new store in them).
    pub config: Config,
    /// Blobs copied.
    pub blobs: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Signed heads copied.
    pub heads: usize,
    /// Blobs the peer holds but could not read: the files that need them cannot be restored
    /// from this copy (`triad verify` names them).
    pub unreadable: Vec<BlobId>,
    /// Files, in any snapshot, that cannot be restored from this copy: (folder, path). Some of
    /// their data could not be read, or was never on the peer (a version whose file changed
    /// before a device without a store could send it).
    pub incomplete: Vec<(String, String)>,
}

/// Recovers the vault from one peer into a new home and store. `progress(blobs, bytes)` is
/// called after every batch.
pub async fn from_peer(
    r: FromPeer<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Recovered, String> {
    let key = DeviceKey::from_bytes(&r.device_seed);
    let keypair = triad_net::keypair(&key.to_bytes());
    let listen = vec!["/ip4/0.0.0.0/udp/0/quic-v1".parse().expect("a valid multiaddress")];
    let node = Node::start(keypair, NodeConfig::new(listen, false))
        .await
        .map_err(|e| format!("cannot start the network: {e}"))?;
    // Connecting out to a device this one does not know yet; the handshake authenticates it,
    // and the proof below shows it holds the vault.
    node.admission().set_joining(true);
    let peer =
        node.dial(r.peer.clone()).await.map_err(|e| format!("cannot reach {}: {e}", r.peer))?;
    // The peer knows nothing of this device yet: it admits it after the proof.
    let entry = Entry {
        device: key.device_id(),
        name: r.name.to_owned(),
        site: r.site.to_owned(),
        role: Role::Trusted,
        signer: Signer::Recovery,
    };
    let roster = crate::join::prove_recovery(&node, peer, r.phrase, entry)
        .await
        .map_err(|e| format!("the peer refused the recovery: {e}"))?;
    node.admission().set_members([peer]);
    node.admission().set_joining(false);

    let vault = r.phrase.vault_id();
    let (path, id, media) = r.store;
    let mut config = Config::default();
    let mut store = Store::create(path, vault, media, id, r.now, &config.store)
        .map_err(|e| format!("cannot make the store {}: {e}", path.display()))?;
    config.stores.push(StoreConfig {
        id,
        path: path.to_path_buf(),
        media,
        quota: None,
        catalog: false,
    });

    let Response::Heads { heads } = ask(&node, peer, &wire::Request::ListHeads).await? else {
        return Err("the peer answered something else than its heads".into());
    };
    let mut wanted = Vec::new();
    let mut after = None;
    loop {
        let Response::Inventory { blobs, more } =
            ask(&node, peer, &wire::Request::Inventory { after }).await?
        else {
            return Err("the peer answered something else than its inventory".into());
        };
        after = blobs.last().copied();
        wanted.extend(blobs);
        if !more || after.is_none() {
            break;
        }
    }
    let (blobs, bytes, unreadable) =
        copy_blobs(&node, peer, &mut store, &wanted, progress).await.map_err(|e| {
            format!(
                "{e}; the store {} holds a partial copy: remove it and recover again",
                path.display()
            )
        })?;

    let mut copied = 0;
    for bytes in &heads {
        let head = SignedHead::decode(bytes, vault).map_err(|e| format!("a head refused: {e}"))?;
        if roster.device(head.head.device).is_none() {
            continue; // Not a device of the vault (or a removed one).
        }
        store.write_head(&head).map_err(|e| e.to_string())?;
        copied += 1;
    }
    // Everything is here: only now does this device get a home (a failed copy leaves none).
    let device = NewDevice { name: r.name, site: r.site, device_seed: r.device_seed };
    let (home, roster) =
        Home::recover(r.home, r.phrase, roster, device).map_err(|e| e.to_string())?;
    // The device it recovered through is the one it knows where to find: the agent starts
    // there, and learns every other device and address from it.
    if let Some(through) = triad_net::device_id(&peer) {
        let mut book = crate::peers::Book::load(r.home);
        let addr = node.connected(&peer).unwrap_or_else(|| r.peer.clone());
        book.add(through, &addr.to_string());
        book.save(r.home).map_err(|e| e.to_string())?;
    }
    store.write_roster(&roster).map_err(|e| e.to_string())?;
    // What the copy can give back: every snapshot checked for blobs that are not here.
    let incomplete = tokio::task::block_in_place(|| {
        let keys = home.keys().map_err(|e| e.to_string())?;
        let catalog = Catalog::new(keys, std::slice::from_ref(&store));
        let report = crate::verify::verify(&catalog, &crate::verify::Options::default(), &|_| {})
            .map_err(|e| e.to_string())?;
        let files: BTreeSet<(String, String)> = report
            .problems
            .iter()
            .flat_map(|p| p.used_by.iter().map(|(folder, path, _)| (folder.clone(), path.clone())))
            .collect();
        Ok::<_, String>(files.into_iter().collect())
    })?;
    drop(store);
    node.close_all().await;
    Ok(Recovered { home, config, blobs, bytes, heads: copied, unreadable, incomplete })
}

async fn ask(node: &Node, peer: PeerId, request: &wire::Request) -> Result<Response, String> {
    let failed = |e: &dyn std::fmt::Display| format!("the peer did not answer: {e}");
    let mut stream = node.open(peer, CONTROL_PROTOCOL).await.map_err(|e| failed(&e))?;
    frame::write(&mut stream, request).await.map_err(|e| failed(&e))?;
    match frame::read::<Response, _>(&mut stream, "control response", CONTROL_FRAME_MAX).await {
        Ok(Response::Refused { reason, .. }) => Err(format!("the peer refused: {reason}")),
        Ok(response) => Ok(response),
        Err(e) => Err(failed(&e)),
    }
}

/// Copies `wanted` from `peer` into `store`, batch by batch, each blob checked against its
/// address and committed before the next batch is asked for. The peer sends each batch in
/// order and stops at a blob it cannot read; that one is set aside (returned) and the copy goes
/// on with the rest, so that one bad blob costs the files that need it, not the recovery.
async fn copy_blobs(
    node: &Node,
    peer: PeerId,
    store: &mut Store,
    wanted: &[BlobId],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(u64, u64, Vec<BlobId>), String> {
    let failed = |e: &dyn std::fmt::Display| format!("the copy from the peer broke off: {e}");
    let mut stream = node.open(peer, FETCH_PROTOCOL).await.map_err(|e| e.to_string())?;
    let (mut blobs, mut bytes) = (0u64, 0u64);
    let mut unreadable = Vec::new();
    let mut queue = wanted;
    while !queue.is_empty() {
        let batch = &queue[..queue.len().min(FETCH_BATCH.min(MISSING_BATCH_MAX))];
        frame::write(&mut stream, &Fetch { blobs: batch.to_vec() })
            .await
            .map_err(|e| failed(&e))?;
        let mut got = 0;
        // Blobs in the order asked, until the `Commit` that ends the batch.
        loop {
            let frame = tokio::time::timeout(READ_TIMEOUT, frame::read_blob(&mut stream))
                .await
                .map_err(|_| failed(&"the peer went quiet"))?
                .map_err(|e| failed(&e))?;
            let BlobFrame::Blob { id, bytes: sealed } = frame else { break };
            if batch.get(got) != Some(&id) {
                return Err(format!("the peer sent blob {id}, which was not asked for there"));
            }
            let len = sealed.len() as u64;
            let blob = SealedBlob::verify(id, sealed)
                .map_err(|e| format!("the peer sent a damaged blob: {e}"))?;
            tokio::task::block_in_place(|| store.put(&blob)).map_err(|e| e.to_string())?;
            got += 1;
            bytes += len;
        }
        tokio::task::block_in_place(|| store.commit()).map_err(|e| e.to_string())?;
        blobs += got as u64;
        progress(blobs, bytes);
        if got < batch.len() {
            tracing::warn!(blob = %batch[got], "the peer cannot read this blob; going on without it");
            unreadable.push(batch[got]);
            queue = &queue[got + 1..];
        } else {
            queue = &queue[got..];
        }
    }
    let _ = futures::AsyncWriteExt::close(&mut stream).await;
    Ok((blobs, bytes, unreadable))
}

/// How one batch asked of a device ended.
#[derive(Debug)]
pub enum BatchEnd {
    /// Every blob asked came.
    Whole,
    /// The device does not hold (or cannot read) the blob after the last one that came.
    NotHeld,
    /// The device stopped answering or broke the stream; why.
    Broken(String),
}

/// The blobs of one batch that came, in the order asked, each checked against its address.
#[derive(Debug)]
pub struct Batch {
    /// The blobs that came, in order.
    pub blobs: Vec<SealedBlob>,
    /// How the batch ended.
    pub end: BatchEnd,
}

/// Asks for `ids` (at most [`MISSING_BATCH_MAX`]) on an open `/triad/fetch/1` stream and
/// reads the answer, each frame within `deadline` of the one before. A device that stops
/// answering, or sends anything wrong, ends the batch as [`BatchEnd::Broken`]: what came
/// before is kept, and the stream must not be used again.
pub async fn fetch_batch(
    stream: &mut triad_net::Stream,
    ids: &[BlobId],
    deadline: std::time::Duration,
) -> Batch {
    let mut blobs = Vec::with_capacity(ids.len());
    let broken = |blobs, why: String| Batch { blobs, end: BatchEnd::Broken(why) };
    let ask = Fetch { blobs: ids.to_vec() };
    match tokio::time::timeout(deadline, frame::write(stream, &ask)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return broken(blobs, e.to_string()),
        Err(_) => return broken(blobs, format!("no answer for {} s", deadline.as_secs())),
    }
    loop {
        let next = match tokio::time::timeout(deadline, frame::read_blob(stream)).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => return broken(blobs, e.to_string()),
            Err(_) => return broken(blobs, format!("no answer for {} s", deadline.as_secs())),
        };
        let BlobFrame::Blob { id, bytes } = next else {
            let end = if blobs.len() == ids.len() { BatchEnd::Whole } else { BatchEnd::NotHeld };
            return Batch { blobs, end };
        };
        if ids.get(blobs.len()) != Some(&id) {
            return broken(blobs, format!("it sent blob {id}, which was not asked for there"));
        }
        match SealedBlob::verify(id, bytes) {
            Ok(blob) => blobs.push(blob),
            Err(e) => return broken(blobs, format!("it sent a damaged blob: {e}")),
        }
    }
}

/// Asks `peer` for `ids` on one `/triad/fetch/1` stream and returns them in order, each checked
/// against its address (a test restore reads a file back this way).
pub async fn fetch_blobs(
    node: &Node,
    peer: PeerId,
    ids: &[BlobId],
) -> Result<Vec<SealedBlob>, String> {
    let failed = |e: &dyn std::fmt::Display| format!("the copy from the peer broke off: {e}");
    let mut stream = node.open(peer, FETCH_PROTOCOL).await.map_err(|e| failed(&e))?;
    let mut out = Vec::with_capacity(ids.len());
    for batch in ids.chunks(FETCH_BATCH) {
        frame::write(&mut stream, &Fetch { blobs: batch.to_vec() })
            .await
            .map_err(|e| failed(&e))?;
        for want in batch {
            let frame = tokio::time::timeout(READ_TIMEOUT, frame::read_blob(&mut stream))
                .await
                .map_err(|_| failed(&"the peer went quiet"))?
                .map_err(|e| failed(&e))?;
            let BlobFrame::Blob { id, bytes } = frame else {
                return Err(format!("the peer does not hold blob {want}"));
            };
            if id != *want {
                return Err(format!("the peer sent blob {id} for {want}"));
            }
            out.push(
                SealedBlob::verify(id, bytes)
                    .map_err(|e| format!("the peer sent a damaged blob: {e}"))?,
            );
        }
        let end = tokio::time::timeout(READ_TIMEOUT, frame::read_blob(&mut stream))
            .await
            .map_err(|_| failed(&"the peer went quiet"))?
            .map_err(|e| failed(&e))?;
        if !matches!(end, BlobFrame::Commit) {
            return Err("the peer sent more than was asked for".into());
        }
    }
    let _ = futures::AsyncWriteExt::close(&mut stream).await;
    Ok(out)
}
