//! A second reader, written from `proto/README.md` alone (a hand-written varint decoder,
//! BLAKE3, XChaCha20-Poly1305 and the byte-by-byte chunking rule), checked against the code.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use triad_core::chunk::Chunker;
use triad_core::keys::{self, DeviceKey};
use triad_core::seal::{self, ObjectKind};
use triad_core::snapshot::Object;
use triad_proto::store::{EntryHeader, PackHeader};

use crate::fixtures;
use crate::vectors::text_vector;

/// Reads the encoding described in the README, panicking on anything unexpected.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A record: checks the version byte, then reads what follows it.
    fn record(bytes: &'a [u8], version: u8) -> Self {
        assert_eq!(bytes[0], version, "version byte");
        Self { bytes, at: 1 }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        out
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        self.take(N).try_into().expect("N bytes")
    }

    fn byte(&mut self) -> u8 {
        self.take(1)[0]
    }

    fn varint(&mut self) -> u64 {
        match self.byte() {
            b @ 0..=250 => u64::from(b),
            251 => u64::from(u16::from_le_bytes(self.array())),
            252 => u64::from(u32::from_le_bytes(self.array())),
            253 => u64::from_le_bytes(self.array()),
            b => panic!("varint tag {b} does not fit in 64 bits"),
        }
    }

    fn signed(&mut self) -> i64 {
        let v = self.varint();
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }

    fn bytes(&mut self) -> &'a [u8] {
        let len = usize::try_from(self.varint()).expect("a length");
        self.take(len)
    }

    fn string(&mut self) -> &'a str {
        std::str::from_utf8(self.bytes()).expect("UTF-8")
    }

    fn timestamp(&mut self) -> (i64, u64) {
        (self.signed(), self.varint())
    }

    fn option(&mut self) -> bool {
        match self.byte() {
            0 => false,
            1 => true,
            b => panic!("option tag {b}"),
        }
    }

    fn finish(&self) {
        assert_eq!(self.at, self.bytes.len(), "no trailing bytes");
    }
}

#[test]
fn file_entry() {
    let bytes = fixtures::file_entry().encode();
    let mut r = Reader::record(&bytes, 1);
    assert_eq!(r.varint(), 3_000_000);
    assert_eq!(r.timestamp(), (1_767_225_600, 123_456_789));
    assert_eq!(r.varint(), 0o644);
    assert_eq!(r.array::<32>(), [0x48; 32]);
    assert_eq!(r.varint(), 2);
    assert_eq!((r.array::<32>(), r.varint()), ([0xc1; 32], 1_048_576));
    assert_eq!((r.array::<32>(), r.varint()), ([0xc2; 32], 1_951_424));
    r.finish();
}

#[test]
fn tree() {
    let bytes = fixtures::tree().encode();
    let mut r = Reader::record(&bytes, 1);
    assert_eq!(r.varint(), 3);
    assert_eq!(r.bytes(), b"caf\xe9.cr3");
    assert_eq!((r.varint(), r.array::<32>()), (0, [0xe1; 32]));
    assert_eq!(r.varint(), 0o644);
    assert_eq!(r.timestamp(), (1_767_225_600, 123_456_789));
    assert_eq!(r.bytes(), b"edits");
    assert_eq!((r.varint(), r.array::<32>()), (1, [0xd1; 32]));
    assert_eq!(r.varint(), 0o755);
    assert_eq!(r.timestamp(), (1_767_225_700, 0));
    assert_eq!(r.bytes(), b"latest");
    assert_eq!((r.varint(), r.bytes()), (2, &b"edits/caf\xe9.jpg"[..]));
    assert_eq!(r.varint(), 0o777);
    assert_eq!(r.timestamp(), (-1, 500_000_000));
    r.finish();
}

#[test]
fn snapshot() {
    let bytes = fixtures::snapshot().encode();
    let mut r = Reader::record(&bytes, 1);
    assert_eq!(r.array::<16>(), fixtures::FOLDER);
    assert_eq!(r.string(), "2026-11-wedding");
    assert_eq!(r.bytes(), b"/home/ana/Pictures/2026-11-wedding");
    assert_eq!(r.array::<32>(), [0xde; 32]);
    assert_eq!(r.string(), "laptop");
    assert_eq!(r.varint(), 7);
    assert_eq!(r.timestamp(), (1_795_000_000, 0));
    assert!(r.option());
    assert_eq!(r.array::<32>(), [0xa0; 32]);
    assert_eq!(r.array::<32>(), [0xa1; 32]);
    assert_eq!((r.varint(), r.varint(), r.varint()), (1200, 14, 30_000_000_000));
    r.finish();
}

#[test]
fn signed_head() {
    let bytes = fixtures::signed_head().encode();
    let mut r = Reader::record(&bytes, 1);
    let vault = r.array::<32>();
    let device = r.array::<32>();
    let folder = r.array::<16>();
    assert_eq!(vault, *fixtures::vault().as_bytes());
    assert_eq!(device, *fixtures::laptop().device_id().as_bytes());
    assert_eq!(folder, fixtures::FOLDER);
    assert_eq!(r.varint(), 7);
    assert_eq!(r.array::<32>(), [0xa2; 32]);
    assert_eq!(r.timestamp(), (1_795_000_000, 0));
    // The signed message: the domain, the vault id, the folder id, then the record of the
    // head alone, which is the signed head's record up to the signature.
    let head_record = &bytes[..r.at];
    let signature: [u8; 64] = r.bytes().try_into().expect("64 signature bytes");
    r.finish();
    let mut message = b"triad/head/v1".to_vec();
    message.extend_from_slice(&vault);
    message.extend_from_slice(&folder);
    message.extend_from_slice(head_record);
    assert!(keys::verify_signature(&device, &message, &signature));
}

#[test]
fn roster() {
    let bytes = fixtures::roster().encode();
    let mut r = Reader::record(&bytes, 3);
    let vault = r.array::<32>();
    let recovery_public = r.array::<32>();
    assert_eq!(blake3::derive_key("triad 2026-11 vault id v1", &recovery_public), vault);
    assert_eq!(r.varint(), 0, "no legacy entries");
    assert_eq!(r.varint(), 0, "no legacy removals");
    assert_eq!(r.varint(), 2, "two changes");
    let mut trusted: Vec<[u8; 32]> = Vec::new();
    let mut names = Vec::new();
    let mut ids: Vec<[u8; 32]> = Vec::new();
    for _ in 0..2 {
        let start = r.at;
        let parents: Vec<[u8; 32]> = (0..r.varint()).map(|_| r.array::<32>()).collect();
        assert_eq!(parents, ids, "each change follows the one before");
        assert_eq!(r.varint(), 0, "an admission");
        let device = r.array::<32>();
        let name = r.string();
        let site = r.string();
        let role = r.varint();
        let signer = match r.varint() {
            0 => recovery_public,
            1 => r.array::<32>(),
            v => panic!("signer variant {v}"),
        };
        let mut message = b"triad/roster-change/v3".to_vec();
        message.extend_from_slice(&vault);
        message.push(3);
        message.extend_from_slice(&bytes[start..r.at]);
        let signature: [u8; 64] = r.bytes().try_into().expect("64 signature bytes");
        assert!(signer == recovery_public || trusted.contains(&signer));
        assert!(keys::verify_signature(&signer, &message, &signature));
        if role == 0 {
            trusted.push(device);
        }
        names.push((name, site, role));
        message.extend_from_slice(&signature);
        ids = vec![*blake3::hash(&message).as_bytes()];
    }
    r.finish();
    assert_eq!(names, [("laptop", "home", 0), ("pi", "parents", 1)]);
}

#[test]
fn store_framing() {
    let bytes = fixtures::marker().encode();
    assert_eq!(&bytes[..8], b"TRIADSTO");
    let mut r = Reader::record(&bytes[8..], 1);
    assert_eq!(r.array::<16>(), fixtures::STORE);
    assert_eq!(r.array::<32>(), *fixtures::vault().as_bytes());
    assert_eq!(r.varint(), 4, "usb-hdd is media variant 4");
    assert_eq!(r.timestamp(), (1_795_000_000, 5));
    r.finish();

    let store = triad_core::StoreId::from_bytes(fixtures::STORE);
    let pack = PackHeader { store, seq: 0x0102_0304 }.encode();
    let mut expected = b"TRIADPAK\x02\0\0\0".to_vec();
    expected.extend_from_slice(&fixtures::STORE);
    expected.extend_from_slice(&[4, 3, 2, 1]);
    assert_eq!(pack.as_slice(), expected);

    let blob = triad_core::BlobId::from_bytes([0xc1; 32]);
    let entry = EntryHeader::blob(blob, 0x0a0b0c).encode();
    let mut expected = b"TRBE\x01\0\0\0\x0c\x0b\x0a\0".to_vec();
    expected.extend_from_slice(&[0xc1; 32]);
    let check = blake3::hash(&expected);
    expected.extend_from_slice(&check.as_bytes()[..4]);
    assert_eq!(entry.as_slice(), expected);
}

/// The key-derivation contexts of the README, per object kind: (kind, id key, sealing key).
const CONTEXTS: [(ObjectKind, &str, &str); 4] = [
    (ObjectKind::Chunk, "triad 2026-11 chunk id v1", "triad 2026-11 seal chunk v1"),
    (ObjectKind::FileEntry, "triad 2026-11 file entry id v1", "triad 2026-11 seal file entry v1"),
    (ObjectKind::Tree, "triad 2026-11 tree id v1", "triad 2026-11 seal tree v1"),
    (ObjectKind::Snapshot, "triad 2026-11 snapshot id v1", "triad 2026-11 seal snapshot v1"),
];
const NONCE_CONTEXT: &str = "triad 2026-11 nonce v1";

#[test]
fn data_keys_open_every_kind() {
    let secret = fixtures::SECRET;
    let nonce_key = blake3::derive_key(NONCE_CONTEXT, &secret);
    let mut text = String::from(
        "# The data keys of the vault secret [0x11; 32]: BLAKE3 derive_key(context, secret).\n\
         # One line per key: the context string, then \" = \", then the key in hex.\n",
    );
    for (kind, id_context, seal_context) in CONTEXTS {
        let id_key = blake3::derive_key(id_context, &secret);
        let seal_key = blake3::derive_key(seal_context, &secret);
        text.push_str(&format!("{id_context} = {}\n", hex::encode(id_key)));
        text.push_str(&format!("{seal_context} = {}\n", hex::encode(seal_key)));

        let plaintext = match kind {
            ObjectKind::Chunk => fixtures::CHUNK_PLAINTEXT.to_vec(),
            ObjectKind::FileEntry => fixtures::file_entry().encode(),
            ObjectKind::Tree => fixtures::tree().encode(),
            ObjectKind::Snapshot => fixtures::snapshot().encode(),
        };
        let blob = seal::seal(&fixtures::keys(), kind, &plaintext);
        let bytes = blob.as_bytes();
        assert_eq!(*blake3::hash(bytes).as_bytes(), *blob.id().as_bytes(), "address");
        assert_eq!(bytes[0], 1, "seal version");
        assert_eq!(bytes[1], kind as u8);
        let object_id = blake3::keyed_hash(&id_key, &plaintext);
        let mut nonce_input = vec![1, kind as u8];
        nonce_input.extend_from_slice(object_id.as_bytes());
        let nonce = blake3::keyed_hash(&nonce_key, &nonce_input);
        assert_eq!(&bytes[2..26], &nonce.as_bytes()[..24], "nonce");
        let mut aad = b"triad/blob/v1".to_vec();
        aad.extend_from_slice(&[1, kind as u8]);
        let cipher = XChaCha20Poly1305::new(&seal_key.into());
        let opened = cipher
            .decrypt(
                &XNonce::from(<[u8; 24]>::try_from(&bytes[2..26]).expect("24 bytes")),
                Payload { msg: &bytes[26..], aad: &aad },
            )
            .expect("opens with the key derived from the README");
        assert_eq!(opened, plaintext);
    }
    text.push_str(&format!("{NONCE_CONTEXT} = {}\n", hex::encode(nonce_key)));
    text_vector("data_keys.txt", &text);
}

#[test]
fn phrase_derivations() {
    let phrase = fixtures::phrase();
    let secret = blake3::derive_key("triad 2026-11 vault secret v1", &fixtures::ENTROPY);
    assert_eq!(&secret, phrase.vault_secret().as_bytes());
    // The recovery key is the ed25519 key whose 32-byte secret (seed) is derived from the
    // entropy; DeviceKey::from_bytes is the same ed25519 construction.
    let seed = blake3::derive_key("triad 2026-11 recovery key v1", &fixtures::ENTROPY);
    let public = *DeviceKey::from_bytes(&seed).device_id().as_bytes();
    assert_eq!(public, phrase.recovery_key().public());
    assert_eq!(
        blake3::derive_key("triad 2026-11 vault id v1", &public),
        *phrase.vault_id().as_bytes()
    );
}

const CHUNK_MIN: usize = 256 * 1024;
const CHUNK_AVG: usize = 1024 * 1024;
const CHUNK_MAX: usize = 4 * 1024 * 1024;
const MASK_S: u64 = 0x0000_d917_6753_7000;
const MASK_L: u64 = 0x0000_d917_0753_7000;

/// The length of the first chunk of `buf` (all that is left of a file), byte by byte as the
/// README describes it.
fn readme_cut(gear: &[u64], buf: &[u8]) -> usize {
    let r = buf.len();
    if r <= CHUNK_MIN {
        return r;
    }
    let n = r.min(CHUNK_MAX);
    let c = CHUNK_AVG.min(n);
    let mut h: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(n).skip(CHUNK_MIN) {
        h = (h << 1).wrapping_add(gear[usize::from(byte)]);
        let mask = if i < 2 * (c / 2) { MASK_S } else { MASK_L };
        if i < 2 * (n / 2) && h & mask == 0 {
            return i;
        }
    }
    n
}

#[test]
fn chunking_byte_by_byte() {
    let (gear, _) = fastcdc::v2020::get_gear_with_seed(0);
    assert_eq!((gear[0], gear[1]), (0x3b5d_3c7d_207e_37dc, 0x784d_68ba_9112_3086));
    let masks = fastcdc::v2020::select_masks(CHUNK_AVG, fastcdc::v2020::Normalization::Level1);
    assert_eq!(masks, (MASK_S, MASK_L));
    assert_eq!((MASK_S.count_ones(), MASK_L.count_ones()), (21, 19));

    let mut data = vec![0u8; 8 * 1024 * 1024];
    blake3::Hasher::new_keyed(&[0x09; 32]).finalize_xof().fill(&mut data);
    let mut rest = &data[..];
    let mut lengths = Vec::new();
    while !rest.is_empty() {
        let len = readme_cut(&gear, rest);
        lengths.push(len);
        rest = &rest[len..];
    }
    assert_eq!(lengths, Chunker::DEFAULT.lengths(&data));

    // Final windows of odd and even lengths on both sides of the average.
    for start in [0, 1, 77_777] {
        for len in [CHUNK_MIN, CHUNK_MIN + 1, 700_001, CHUNK_AVG + 1, 2_500_000, CHUNK_MAX - 1] {
            let window = &data[start..start + len];
            let expected = Chunker::DEFAULT.cut(window, true).expect("a non-empty window cuts");
            assert_eq!(readme_cut(&gear, window), expected, "window {start}+{len}");
        }
    }
}
