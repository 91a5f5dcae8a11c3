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
use data_encoding::BASE32_NOPAD;
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

    /// The same invitation as [`Secret::link`] in the form a QR code holds compactly: only
    /// QR's alphanumeric characters (upper case, digits, `:/.`), so that a terminal of 80×24
    /// shows the whole code. `TRIAD:<peer>/<nameplate>/<secret>/<address>…`, the peer id and
    /// the secret in base32, each address `Q` (QUIC) or `T` (TCP), its IP and `:port`. It
    /// holds at most `addrs_max` addresses that fit the form, QUIC before TCP.
    pub fn qr_text(&self, inviter: PeerId, addrs: &[Multiaddr], addrs_max: usize) -> String {
        let secret = decode_hex(&self.password).unwrap_or_default();
        let mut text = format!(
            "{QR_PREFIX}{}/{}/{}",
            BASE32_NOPAD.encode(&inviter.to_bytes()),
            self.nameplate,
            BASE32_NOPAD.encode(&secret)
        );
        let mut compact: Vec<String> = addrs.iter().filter_map(compact_addr).collect();
        compact.sort_by_key(|a| !a.starts_with('Q'));
        for addr in compact.into_iter().take(addrs_max) {
            text.push('/');
            text.push_str(&addr);
        }
        text
    }

    /// Parses a link, in either form: the secret, the inviter and its addresses.
    pub fn parse_link(text: &str) -> Result<(Self, PeerId, Vec<Multiaddr>), CodeError> {
        let text = text.trim();
        if is_qr_text(text) {
            return Self::parse_qr_text(text);
        }
        let query = text.strip_prefix("triad://pair?").ok_or(CodeError::Link("prefix"))?;
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

    fn parse_qr_text(text: &str) -> Result<(Self, PeerId, Vec<Multiaddr>), CodeError> {
        let body = text.get(QR_PREFIX.len()..).ok_or(CodeError::Link("prefix"))?;
        let body = body.to_ascii_uppercase();
        let mut parts = body.split('/');
        let mut next = |what| parts.next().filter(|p| !p.is_empty()).ok_or(CodeError::Link(what));
        let peer = BASE32_NOPAD
            .decode(next("no peer")?.as_bytes())
            .ok()
            .and_then(|bytes| PeerId::from_bytes(&bytes).ok())
            .ok_or(CodeError::Link("peer"))?;
        let nameplate =
            next("no window number")?.parse::<u32>().map_err(|_| CodeError::Link("n"))?;
        let secret = BASE32_NOPAD
            .decode(next("no secret")?.as_bytes())
            .ok()
            .filter(|s| s.len() == 16)
            .ok_or(CodeError::Link("the secret"))?;
        let addrs = parts.map(parse_compact_addr).collect::<Result<Vec<_>, _>>()?;
        Ok((Self { nameplate, password: hex(&secret) }, peer, addrs))
    }
}

/// What starts the QR form of a link.
const QR_PREFIX: &str = "TRIAD:";

/// Whether `text` is the QR form of a link (any case: some scanners lower it).
pub fn is_qr_text(text: &str) -> bool {
    let text = text.trim();
    // `triad://pair?…` starts the same way: the QR form has no `/` after the prefix.
    text.get(..QR_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(QR_PREFIX))
        && !text[QR_PREFIX.len()..].starts_with('/')
}

/// `/ip4/192.0.2.7/udp/41641/quic-v1` → `Q192.0.2.7:41641`; `None` for any other shape.
fn compact_addr(addr: &Multiaddr) -> Option<String> {
    use libp2p::multiaddr::Protocol;
    let mut it = addr.iter();
    let ip = match it.next()? {
        Protocol::Ip4(ip) => std::net::IpAddr::V4(ip),
        Protocol::Ip6(ip) => std::net::IpAddr::V6(ip),
        _ => return None,
    };
    let (kind, port) = match (it.next()?, it.next()) {
        (Protocol::Udp(port), Some(Protocol::QuicV1)) => ('Q', port),
        (Protocol::Tcp(port), None) => ('T', port),
        _ => return None,
    };
    if it.next().is_some() {
        return None;
    }
    Some(format!("{kind}{}:{port}", ip.to_string().to_ascii_uppercase()))
}

fn parse_compact_addr(text: &str) -> Result<Multiaddr, CodeError> {
    let bad = CodeError::Link("an address");
    let (kind, rest) = (text.get(..1).ok_or(CodeError::Link("an address"))?, &text[1..]);
    let (ip, port) = rest.rsplit_once(':').ok_or(CodeError::Link("an address"))?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| CodeError::Link("an address"))?;
    let port: u16 = port.parse().map_err(|_| CodeError::Link("an address"))?;
    let ip = match ip {
        std::net::IpAddr::V4(ip) => format!("/ip4/{ip}"),
        std::net::IpAddr::V6(ip) => format!("/ip6/{ip}"),
    };
    let text = match kind {
        "Q" => format!("{ip}/udp/{port}/quic-v1"),
        "T" => format!("{ip}/tcp/{port}"),
        _ => return Err(bad),
    };
    text.parse().map_err(|_| bad)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
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

    #[test]
    fn the_qr_form_carries_the_same_invitation_in_qr_alphanumerics() {
        let strong = Secret::strong([0xa7; 16], 1042);
        let peer = PeerId::random();
        let addrs: Vec<Multiaddr> = [
            "/ip4/192.0.2.7/tcp/41641",
            "/ip6/2001:db8::7/udp/41641/quic-v1",
            "/ip4/192.0.2.7/udp/41641/quic-v1",
            "/dns4/nas.example/udp/41641/quic-v1",
        ]
        .iter()
        .map(|a| a.parse().expect("addr"))
        .collect();
        let text = strong.qr_text(peer, &addrs, 2);
        let alphanumeric =
            |c: char| c.is_ascii_digit() || c.is_ascii_uppercase() || ":/.".contains(c);
        assert!(text.chars().all(alphanumeric), "{text}");
        let (parsed, p, back) = Secret::parse_link(&text).expect("parses");
        assert_eq!((parsed, p), (strong.clone(), peer));
        // QUIC first, at most two, and only the shapes the form can hold.
        assert_eq!(back, vec![addrs[1].clone(), addrs[2].clone()]);
        let (lower, _, _) = Secret::parse_link(&text.to_lowercase()).expect("any case");
        assert_eq!(lower, strong);
        assert!(Secret::parse_link("TRIAD:AAAA/1/BBBB").is_err());
        assert!(Secret::parse_link("triad:").is_err());
        assert!(!is_qr_text(&strong.link(peer, &addrs)));
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
