//! Fuzz target bodies for what this crate reads from peers (see `triad_core::fuzz`): frames on
//! a stream, and the pairing exchange. Each must return without panicking on any bytes.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use futures::io::Cursor;
use futures::{AsyncRead, AsyncWrite};
use libp2p::PeerId;
use triad_proto::wire::{
    self, BLOB_FRAME_MAX, BlobFrame, CONTROL_FRAME_MAX, FRAME_HEADER_LEN, Joiner, Offer,
    PairMessage, PairRole, RecoverMessage, Request, Response, Welcome,
};

use crate::frame::{self, FrameError};
use crate::pair::{self, Secret};

/// Frames: the first byte picks the reader (control request, response, pairing or recovery
/// message, blob frame), the rest is the stream, read frame after frame until an error.
pub fn frame(data: &[u8]) {
    let Some((&which, stream)) = data.split_first() else {
        return;
    };
    let mut io = Cursor::new(stream);
    // Each frame read consumes its 4-byte header at least, so this ends.
    for _ in 0..=stream.len() / FRAME_HEADER_LEN {
        let ended = match which % 5 {
            0 => read::<Request>(&mut io, CONTROL_FRAME_MAX),
            1 => read::<Response>(&mut io, CONTROL_FRAME_MAX),
            2 => read::<PairMessage>(&mut io, CONTROL_FRAME_MAX),
            3 => read::<RecoverMessage>(&mut io, 1024),
            _ => read_blob(&mut io),
        };
        if ended {
            return;
        }
    }
    unreachable!("every frame consumes bytes");
}

/// Reads one frame; whether the stream is done (an error).
fn read<T: serde::de::DeserializeOwned>(io: &mut Cursor<&[u8]>, max: usize) -> bool {
    let at = io.position();
    let result = futures::executor::block_on(frame::read::<T, _>(io, "fuzzed", max));
    assert!(io.position() > at || result.is_err(), "a frame consumed no bytes");
    result.is_err()
}

/// Reads one blob frame, and checks that its fast path agrees with the codec.
fn read_blob(io: &mut Cursor<&[u8]>) -> bool {
    let at = usize::try_from(io.position()).expect("in memory");
    let rest = &io.get_ref()[at..];
    let result = futures::executor::block_on(frame::read_blob(io));
    let record = rest.get(..FRAME_HEADER_LEN).and_then(|header| {
        let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
        (len <= BLOB_FRAME_MAX).then(|| rest.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len))?
    });
    match (&result, record) {
        (Ok(read), Some(record)) => {
            let decoded: BlobFrame = wire::decode("blob frame", record).expect("the codec agrees");
            assert_eq!(&decoded, read, "the fast path and the codec agree");
        }
        (Err(FrameError::Decode { .. }), Some(record)) => {
            assert!(wire::decode::<BlobFrame>("blob frame", record).is_err());
        }
        (Ok(_), None) => panic!("a blob frame read past the end of the stream"),
        (Err(_), _) => {}
    }
    result.is_err()
}

/// The inviter's side of pairing against a joiner that sends `stream`, and the joiner's
/// decoders: the first byte picks the part.
///
/// - 0: a typed pairing code; 1: a pairing link (text from a QR code);
/// - 2: the inviter's exchange, with the window of nameplate 7 open;
/// - 3: sealed offers, joiners and welcomes that open (as a peer that knows the code sends);
/// - 4: a peer id and the device it names.
pub fn pair(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(secret) = Secret::parse_code(&String::from_utf8_lossy(rest)) {
                assert_eq!(Secret::parse_code(&secret.code()).ok(), Some(secret));
            }
        }
        1 => {
            if let Ok((secret, peer, addrs)) = Secret::parse_link(&String::from_utf8_lossy(rest)) {
                let again = Secret::parse_link(&secret.link(peer, &addrs)).expect("parses back");
                assert_eq!(again, (secret, peer, addrs));
            }
        }
        2 => invite(rest),
        3 => {
            let key = [9u8; 32];
            let sealed = XChaCha20Poly1305::new(&Key::from(key))
                .encrypt(&XNonce::default(), rest)
                .expect("small messages seal");
            let _ = pair::open::<Offer>(&key, "offer", &sealed);
            let _ = pair::open::<Joiner>(&key, "joiner", &sealed);
            let _ = pair::open::<Welcome>(&key, "welcome", &sealed);
            assert!(pair::open::<Offer>(&key, "offer", rest).is_err(), "random bytes opened");
        }
        _ => {
            if let Ok(peer) = PeerId::from_bytes(rest)
                && let Some(device) = crate::device_id(&peer)
            {
                assert_eq!(crate::peer_id(device), peer);
            }
        }
    }
}

fn invite(stream: &[u8]) {
    static PEERS: OnceLock<(PeerId, PeerId)> = OnceLock::new();
    let (inviter, joiner) = *PEERS.get_or_init(|| {
        (
            crate::keypair(&[1; 32]).public().to_peer_id(),
            crate::keypair(&[2; 32]).public().to_peer_id(),
        )
    });
    let secrets = [Secret::strong([3; 16], 7)];
    let offer = Offer { name: "nas".into(), site: "studio".into(), role: PairRole::Trusted };
    let mut io = Scripted(Cursor::new(stream));
    let result = futures::executor::block_on(pair::invite(
        &mut io,
        &secrets,
        inviter,
        joiner,
        &offer,
        async |_| Some(Welcome { roster: Vec::new(), vault_secret: None, addresses: Vec::new() }),
    ));
    assert!(result.is_err(), "a joiner without the secret paired");
}

/// A stream whose reads come from a script and whose writes go nowhere.
struct Scripted<'a>(Cursor<&'a [u8]>);

impl AsyncRead for Scripted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Scripted<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
