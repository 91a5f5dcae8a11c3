//! Pairing: a one-time secret, SPAKE2 bound to both peer ids, key confirmation both ways,
//! and everything after it sealed under the shared key.
//!
//! The secret is either typed (`7-guitar-orbit`: the window's nameplate and two words, one
//! online guess, then burnt by the inviter) or carried in a link or QR code (128 random bits).
//! Both run the same exchange ([`triad_proto::wire::PairMessage`]): the joiner starts, the
//! inviter answers with its key confirmation and its sealed [`Offer`], the joiner checks the
//! confirmation, decides, and answers with its own confirmation and who it is, the inviter
//! decides and sends the sealed [`Welcome`]. A peer that does not know the secret learns
//! nothing but that it was wrong; a relay in the middle cannot complete either side because
//! the key depends on both peer ids.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::{Multiaddr, PeerId};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use triad_proto::wire::{self, CONTROL_FRAME_MAX, Joiner, Offer, PairMessage, Welcome};

use crate::frame::{self, FrameError};

/// A pairing secret: the window's nameplate and the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// Which pairing window (several may be open on one LAN).
    pub nameplate: u32,
    password: String,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret").field("nameplate", &self.nameplate).finish_non_exhaustive()
    }
}

/// A code or link that is not one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    /// Not of the form `7-guitar-orbit`.
    #[error("a pairing code looks like 7-guitar-orbit (a number and two words)")]
    Shape,
    /// A word that is not in the list.
    #[error("\"{0}\" is not a word of pairing codes; check the spelling")]
    Word(String),
    /// Not a `triad://pair?...` link, or one missing a part.
    #[error("not a pairing link: {0}")]
    Link(&'static str),
}

fn words() -> &'static [&'static str; 2048] {
    bip39::Language::English.word_list()
}

impl Secret {
    /// A typed code from 4 random bytes: nameplate 1..=99 and two of 2048 words.
    pub fn typed(random: [u8; 4]) -> Self {
        let n = u32::from_le_bytes(random);
        let nameplate = 1 + n % 99;
        let a = words()[((n >> 8) % 2048) as usize];
        let b = words()[((n >> 19) % 2048) as usize];
        Self { nameplate, password: format!("{a}-{b}") }
    }

    /// A link secret from 16 random bytes (128 bits) and a random nameplate.
    pub fn strong(random: [u8; 16], nameplate: u32) -> Self {
        Self { nameplate, password: hex(&random) }
    }

    /// The typed form, `7-guitar-orbit`.
    pub fn code(&self) -> String {
        format!("{}-{}", self.nameplate, self.password)
    }

    /// Parses a typed code, forgiving case and spaces.
    pub fn parse_code(text: &str) -> Result<Self, CodeError> {
        let text = text.trim().to_lowercase().replace(' ', "-");
        let mut parts = text.split('-');
        let nameplate = parts.next().and_then(|n| n.parse::<u32>().ok()).ok_or(CodeError::Shape)?;
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CodeError::Shape);
        };
        for word in [a, b] {
            if !words().contains(&word) {
                return Err(CodeError::Word(word.to_owned()));
            }
        }
        Ok(Self { nameplate, password: format!("{a}-{b}") })
    }

    /// The link a QR code carries: `triad://pair?peer=..&n=..&s=..&addr=..`.
    pub fn link(&self, inviter: PeerId, addrs: &[Multiaddr]) -> String {
        let mut link =
            format!("triad://pair?peer={inviter}&n={}&s={}", self.nameplate, self.password);
        for addr in addrs {
            link.push_str("&addr=");
            link.push_str(&addr.to_string());
        }
        link
    }

    /// Parses a link: the secret, the inviter and its addresses.
    pub fn parse_link(text: &str) -> Result<(Self, PeerId, Vec<Multiaddr>), CodeError> {
        let query = text.trim().strip_prefix("triad://pair?").ok_or(CodeError::Link("prefix"))?;
        let (mut peer, mut nameplate, mut password, mut addrs) = (None, None, None, Vec::new());
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').ok_or(CodeError::Link("a part without ="))?;
            match key {
                "peer" => {
                    peer = Some(value.parse::<PeerId>().map_err(|_| CodeError::Link("peer"))?)
                }
                "n" => nameplate = Some(value.parse::<u32>().map_err(|_| CodeError::Link("n"))?),
                "s" if value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    password = Some(value.to_ascii_lowercase());
                }
                "s" => return Err(CodeError::Link("the secret")),
                "addr" => addrs.push(value.parse().map_err(|_| CodeError::Link("an address"))?),
                _ => {}
            }
        }
        let secret = Self {
            nameplate: nameplate.ok_or(CodeError::Link("no window number"))?,
            password: password.ok_or(CodeError::Link("no secret"))?,
        };
        Ok((secret, peer.ok_or(CodeError::Link("no peer"))?, addrs))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Pairing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairError {
    /// The other side does not know the same secret (a wrong code, or an attacker).
    #[error("the pairing code is wrong")]
    WrongSecret,
    /// The joiner named another window.
    #[error("no pairing window {0} here")]
    WrongWindow(u32),
    /// The other side declined or gave up.
    #[error("the other device refused: {0}")]
    Refused(String),
    /// This side declined.
    #[error("declined")]
    Declined,
    /// The stream failed or carried something else.
    #[error("pairing stream failed")]
    Frame(#[from] FrameError),
    /// The stream could not be written.
    #[error("pairing stream failed")]
    Io(#[from] std::io::Error),
    /// A sealed part did not open or decode.
    #[error("a sealed pairing message is malformed")]
    Sealed,
    /// The message came out of order.
    #[error("unexpected pairing message")]
    Unexpected,
}

struct Keys {
    confirm_inviter: [u8; 32],
    confirm_joiner: [u8; 32],
    offer: [u8; 32],
    joiner: [u8; 32],
    welcome: [u8; 32],
}

impl Keys {
    fn derive(shared: &[u8]) -> Self {
        let k = |context: &str| blake3::derive_key(context, shared);
        Self {
            confirm_inviter: k("triad 2026-11 pairing confirm inviter v1"),
            confirm_joiner: k("triad 2026-11 pairing confirm joiner v1"),
            offer: k("triad 2026-11 pairing seal offer v1"),
            joiner: k("triad 2026-11 pairing seal joiner v1"),
            welcome: k("triad 2026-11 pairing seal welcome v1"),
        }
    }
}

/// Each key seals exactly one message, so a fixed nonce is safe.
fn seal<T: serde::Serialize>(key: &[u8; 32], value: &T) -> Vec<u8> {
    XChaCha20Poly1305::new(&Key::from(*key))
        .encrypt(&XNonce::default(), wire::encode(value).as_slice())
        .expect("encryption of a small message cannot fail")
}

pub(crate) fn open<T: serde::de::DeserializeOwned>(
    key: &[u8; 32],
    what: &'static str,
    sealed: &[u8],
) -> Result<T, PairError> {
    let plain = XChaCha20Poly1305::new(&Key::from(*key))
        .decrypt(&XNonce::default(), sealed)
        .map_err(|_| PairError::Sealed)?;
    wire::decode(what, &plain).map_err(|_| PairError::Sealed)
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    // Constant time.
    blake3::Hash::from(*a) == blake3::Hash::from(*b)
}

async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<PairMessage, PairError> {
    match frame::read(stream, "pairing message", CONTROL_FRAME_MAX).await? {
        PairMessage::Refused { reason } => Err(PairError::Refused(reason)),
        message => Ok(message),
    }
}

async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, reason: &str) {
    let _ = frame::write(stream, &PairMessage::Refused { reason: reason.to_owned() }).await;
}

/// The inviter's side, on a stream the joiner opened, for the window of any of `secrets`
/// (a typed code and a link may open one window). `decide` sees who the joiner says it is
/// and returns the [`Welcome`] to send, or `None` to decline. Any error after the joiner
/// named this window means the secret must be burnt.
pub async fn invite<S, F>(
    stream: &mut S,
    secrets: &[Secret],
    inviter: PeerId,
    joiner: PeerId,
    offer: &Offer,
    decide: F,
) -> Result<Joiner, PairError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: AsyncFnOnce(&Joiner) -> Option<Welcome>,
{
    let PairMessage::Start { nameplate, pake } = read(stream).await? else {
        return Err(PairError::Unexpected);
    };
    let Some(secret) = secrets.iter().find(|s| s.nameplate == nameplate) else {
        refuse(stream, "no such pairing window").await;
        return Err(PairError::WrongWindow(nameplate));
    };
    let (state, ours) = Spake2::<Ed25519Group>::start_a(
        &Password::new(secret.password.as_bytes()),
        &Identity::new(&inviter.to_bytes()),
        &Identity::new(&joiner.to_bytes()),
    );
    let Ok(shared) = state.finish(&pake) else {
        refuse(stream, "malformed pairing message").await;
        return Err(PairError::Sealed);
    };
    let keys = Keys::derive(&shared);
    let reply = PairMessage::Reply {
        pake: ours,
        confirm: keys.confirm_inviter,
        sealed: seal(&keys.offer, offer),
    };
    frame::write(stream, &reply).await?;
    let PairMessage::Accept { confirm, sealed } = read(stream).await? else {
        return Err(PairError::Unexpected);
    };
    if !same(&confirm, &keys.confirm_joiner) {
        refuse(stream, "wrong pairing code").await;
        return Err(PairError::WrongSecret);
    }
    let who: Joiner = open(&keys.joiner, "joiner", &sealed)?;
    let Some(welcome) = decide(&who).await else {
        refuse(stream, "declined by the inviting device").await;
        return Err(PairError::Declined);
    };
    frame::write(stream, &PairMessage::Welcome { sealed: seal(&keys.welcome, &welcome) }).await?;
    Ok(who)
}

/// The joiner's side, on a stream it opened to the inviter. `decide` sees the inviter's offer
/// and says whether to go on.
pub async fn join<S, F>(
    stream: &mut S,
    secret: &Secret,
    inviter: PeerId,
    joiner: PeerId,
    who: &Joiner,
    decide: F,
) -> Result<(Offer, Welcome), PairError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Offer) -> bool,
{
    let (state, ours) = Spake2::<Ed25519Group>::start_b(
        &Password::new(secret.password.as_bytes()),
        &Identity::new(&inviter.to_bytes()),
        &Identity::new(&joiner.to_bytes()),
    );
    frame::write(stream, &PairMessage::Start { nameplate: secret.nameplate, pake: ours }).await?;
    let PairMessage::Reply { pake, confirm, sealed } = read(stream).await? else {
        return Err(PairError::Unexpected);
    };
    let Ok(shared) = state.finish(&pake) else {
        refuse(stream, "malformed pairing message").await;
        return Err(PairError::Sealed);
    };
    let keys = Keys::derive(&shared);
    if !same(&confirm, &keys.confirm_inviter) {
        // Tell the inviter, so that it burns the code at once.
        frame::write(stream, &PairMessage::Accept { confirm: [0; 32], sealed: Vec::new() }).await?;
        let _ = stream.close().await;
        return Err(PairError::WrongSecret);
    }
    let offer: Offer = open(&keys.offer, "offer", &sealed)?;
    if !decide(&offer) {
        refuse(stream, "declined by the joining device").await;
        return Err(PairError::Declined);
    }
    let accept =
        PairMessage::Accept { confirm: keys.confirm_joiner, sealed: seal(&keys.joiner, who) };
    frame::write(stream, &accept).await?;
    let PairMessage::Welcome { sealed } = read(stream).await? else {
        return Err(PairError::Unexpected);
    };
    let welcome: Welcome = open(&keys.welcome, "welcome", &sealed)?;
    Ok((offer, welcome))
}

#[cfg(test)]
mod tests {
    use triad_proto::wire::PairRole;

    use super::*;

    #[test]
    fn codes_and_links_parse_back() {
        let secret = Secret::typed([1, 2, 3, 4]);
        let code = secret.code();
        assert_eq!(Secret::parse_code(&code).expect("parses"), secret);
        assert_eq!(
            Secret::parse_code(&code.to_uppercase().replace('-', " ")).expect("parses"),
            secret
        );
        assert!(matches!(Secret::parse_code("7-guitar-orbitz"), Err(CodeError::Word(_))));
        assert!(matches!(Secret::parse_code("guitar-orbit"), Err(CodeError::Shape)));

        let strong = Secret::strong([7; 16], 42);
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().expect("addr");
        let (parsed, p, addrs) =
            Secret::parse_link(&strong.link(peer, std::slice::from_ref(&addr))).expect("parses");
        assert_eq!((parsed, p, addrs), (strong, peer, vec![addr]));
        assert!(Secret::parse_link("triad://pair?peer=x").is_err());
    }

    fn run(
        inviter_secret: &Secret,
        joiner_secret: &Secret,
    ) -> (Result<Joiner, PairError>, Result<(Offer, Welcome), PairError>) {
        let (a, b) = (PeerId::random(), PeerId::random());
        let (mut left, mut right) = duplex();
        let offer = Offer { name: "nas".into(), site: "studio".into(), role: PairRole::Trusted };
        let who = Joiner { name: "laptop".into(), site: "home".into() };
        let welcome =
            Welcome { roster: vec![1, 2, 3], vault_secret: Some([5; 32]), addresses: vec![] };
        futures::executor::block_on(async {
            futures::join!(
                invite(&mut left, std::slice::from_ref(inviter_secret), a, b, &offer, async |_| {
                    Some(welcome.clone())
                }),
                join(&mut right, joiner_secret, a, b, &who, |_| true),
            )
        })
    }

    #[test]
    fn the_same_secret_pairs_and_a_wrong_one_fails_on_both_sides() {
        let secret = Secret::typed([9, 9, 9, 9]);
        let (inviter, joiner) = run(&secret, &secret);
        assert_eq!(inviter.expect("inviter").name, "laptop");
        let (offer, welcome) = joiner.expect("joiner");
        assert_eq!((offer.name.as_str(), welcome.vault_secret), ("nas", Some([5; 32])));

        let wrong = Secret { nameplate: secret.nameplate, password: "abandon-ability".into() };
        let (inviter, joiner) = run(&secret, &wrong);
        assert!(matches!(inviter, Err(PairError::WrongSecret)), "{inviter:?}");
        assert!(matches!(joiner, Err(PairError::WrongSecret)), "{joiner:?}");
    }

    /// An in-memory pair of connected streams.
    fn duplex() -> (Duplex, Duplex) {
        let (a_tx, a_rx) = futures::channel::mpsc::channel::<Vec<u8>>(64);
        let (b_tx, b_rx) = futures::channel::mpsc::channel::<Vec<u8>>(64);
        (Duplex::new(a_tx, b_rx), Duplex::new(b_tx, a_rx))
    }

    type Incoming = futures::stream::IntoAsyncRead<
        futures::stream::Map<
            futures::channel::mpsc::Receiver<Vec<u8>>,
            fn(Vec<u8>) -> std::io::Result<Vec<u8>>,
        >,
    >;

    struct Duplex {
        tx: futures::channel::mpsc::Sender<Vec<u8>>,
        rx: Incoming,
    }

    impl Duplex {
        fn new(
            tx: futures::channel::mpsc::Sender<Vec<u8>>,
            rx: futures::channel::mpsc::Receiver<Vec<u8>>,
        ) -> Self {
            use futures::TryStreamExt;
            let ok: fn(Vec<u8>) -> std::io::Result<Vec<u8>> = Ok;
            Self { tx, rx: futures::StreamExt::map(rx, ok).into_async_read() }
        }
    }

    impl AsyncRead for Duplex {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.rx).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Duplex {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let _ = self.tx.try_send(buf.to_vec());
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_close(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.tx.close_channel();
            std::task::Poll::Ready(Ok(()))
        }
    }
}
