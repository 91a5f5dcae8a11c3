//! The recovery phrase and every key derived from it.
//!
//! The phrase is the root. From its 256 bits of entropy, one way, come the vault secret (the
//! 32 bytes trusted devices keep) and the recovery key (an ed25519 key whose public half is
//! pinned in the roster). From the vault secret come the data keys: one per purpose and
//! object kind, each through BLAKE3 `derive_key` with its own context string. Devices keep
//! the vault secret, never the phrase or the recovery key. Secrets are zeroized on drop and
//! never printed by `Debug`.

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::id::{DeviceId, VaultId};
use crate::seal::ObjectKind;

/// Number of words in a phrase.
pub const PHRASE_WORDS: usize = 24;

/// A phrase could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhraseError {
    /// Not 24 words.
    #[error("a recovery phrase has 24 words, this one has {found}")]
    WordCount {
        /// How many words were given.
        found: usize,
    },
    /// A word is not in the BIP-39 English list.
    #[error("word {position} ({word:?}) is not a recovery-phrase word{}", suggestion_text(.suggestions))]
    UnknownWord {
        /// 1-based position of the word.
        position: usize,
        /// The word as given.
        word: String,
        /// Close words from the list, best first.
        suggestions: Vec<&'static str>,
    },
    /// Every word is valid but the checksum does not match: a word is wrong or out of order.
    #[error(
        "the words are valid but do not form a phrase (checksum mismatch): check each word and their order"
    )]
    Checksum,
}

fn suggestion_text(suggestions: &[&str]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", suggestions.join(" or "))
    }
}

/// The 24-word recovery phrase (BIP-39, English). Shown once, never stored.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Phrase {
    entropy: [u8; 32],
}

impl Phrase {
    /// The phrase for 32 bytes of fresh randomness (drawn by the caller).
    pub fn from_entropy(entropy: [u8; 32]) -> Self {
        Self { entropy }
    }

    /// Parses a phrase typed by a person: any case, any spacing. A typo gets a suggestion.
    pub fn parse(text: &str) -> Result<Self, PhraseError> {
        let lowered = Zeroizing::new(text.to_lowercase());
        let words: Vec<&str> = lowered.split_whitespace().collect();
        if words.len() != PHRASE_WORDS {
            return Err(PhraseError::WordCount { found: words.len() });
        }
        let lang = bip39::Language::English;
        for (i, word) in words.iter().enumerate() {
            if lang.find_word(word).is_none() {
                return Err(PhraseError::UnknownWord {
                    position: i + 1,
                    word: (*word).to_owned(),
                    suggestions: suggest(word),
                });
            }
        }
        let joined = Zeroizing::new(words.join(" "));
        let mnemonic = bip39::Mnemonic::parse_in_normalized(lang, &joined)
            .map_err(|_| PhraseError::Checksum)?;
        let (mut bytes, len) = mnemonic.to_entropy_array();
        let entropy = <[u8; 32]>::try_from(&bytes[..len]).map_err(|_| PhraseError::Checksum);
        bytes.zeroize();
        Ok(Self { entropy: entropy? })
    }

    /// The 24 words, in order. (The words point into the static list; what is secret is
    /// their order, which lives only as long as the returned vector.)
    pub fn words(&self) -> Vec<&'static str> {
        let mnemonic = bip39::Mnemonic::from_entropy_in(bip39::Language::English, &self.entropy)
            .expect("32 bytes of entropy is a valid BIP-39 length");
        mnemonic.words().collect()
    }

    /// The vault secret derived from this phrase.
    pub fn vault_secret(&self) -> VaultSecret {
        VaultSecret(blake3::derive_key("triad 2026-11 vault secret v1", &self.entropy))
    }

    /// The recovery key derived from this phrase.
    pub fn recovery_key(&self) -> RecoveryKey {
        let seed =
            Zeroizing::new(blake3::derive_key("triad 2026-11 recovery key v1", &self.entropy));
        RecoveryKey(SigningKey::from_bytes(&seed))
    }

    /// The vault id: public, derived from the public half of the recovery key.
    pub fn vault_id(&self) -> VaultId {
        self.recovery_key().vault_id()
    }
}

impl fmt::Debug for Phrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phrase(..)")
    }
}

/// Words from the list that are one edit away from `word`, or share its first four letters.
fn suggest(word: &str) -> Vec<&'static str> {
    let list = bip39::Language::English.word_list();
    let mut close: Vec<&'static str> =
        list.iter().copied().filter(|w| edit_distance(w, word) <= 1).collect();
    if close.is_empty() && word.len() >= 4 {
        // BIP-39 English words are unique in their first four letters.
        close = list.iter().copied().filter(|w| w.starts_with(&word[..4])).collect();
    }
    close.truncate(3);
    close
}

/// Levenshtein distance with adjacent transpositions, for short words.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The vault secret: 32 bytes that trusted devices keep (0600 in their home).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct VaultSecret([u8; 32]);

impl VaultSecret {
    /// Wraps bytes read back from a key file.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw secret, for writing the key file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for VaultSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultSecret(..)")
    }
}

/// The data keys derived from the vault secret, one per purpose and object kind.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct VaultKeys {
    id_keys: [[u8; 32]; ObjectKind::COUNT],
    seal_keys: [[u8; 32]; ObjectKind::COUNT],
    nonce_key: [u8; 32],
}

impl VaultKeys {
    /// Derives every data key from the vault secret.
    pub fn from_secret(secret: &VaultSecret) -> Self {
        let mut id_keys = [[0u8; 32]; ObjectKind::COUNT];
        let mut seal_keys = [[0u8; 32]; ObjectKind::COUNT];
        for kind in ObjectKind::ALL {
            let (id_ctx, seal_ctx) = kind.key_contexts();
            id_keys[kind.index()] = blake3::derive_key(id_ctx, &secret.0);
            seal_keys[kind.index()] = blake3::derive_key(seal_ctx, &secret.0);
        }
        Self {
            id_keys,
            seal_keys,
            nonce_key: blake3::derive_key("triad 2026-11 nonce v1", &secret.0),
        }
    }

    pub(crate) fn id_key(&self, kind: ObjectKind) -> &[u8; 32] {
        &self.id_keys[kind.index()]
    }

    pub(crate) fn seal_key(&self, kind: ObjectKind) -> &[u8; 32] {
        &self.seal_keys[kind.index()]
    }

    pub(crate) fn nonce_key(&self) -> &[u8; 32] {
        &self.nonce_key
    }
}

impl fmt::Debug for VaultKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VaultKeys(..)")
    }
}

/// The vault's recovery key. Derived from the phrase when it is typed; never stored.
pub struct RecoveryKey(SigningKey);

impl RecoveryKey {
    /// The public half, pinned in every roster.
    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// The vault id that this recovery key defines.
    pub fn vault_id(&self) -> VaultId {
        vault_id_of(&self.public())
    }

    /// Signs `message` (already domain-separated by the caller).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for RecoveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryKey(..)")
    }
}

/// The vault id for a recovery public key.
pub fn vault_id_of(recovery_public: &[u8; 32]) -> VaultId {
    VaultId::from_bytes(blake3::derive_key("triad 2026-11 vault id v1", recovery_public))
}

/// A device's ed25519 key. Its public half is the [`DeviceId`] (and later the libp2p PeerId).
pub struct DeviceKey(SigningKey);

impl DeviceKey {
    /// The key for 32 secret bytes (fresh randomness, or read back from the key file).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(bytes))
    }

    /// The secret bytes, for writing the key file.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The device's public id.
    pub fn device_id(&self) -> DeviceId {
        DeviceId::from_bytes(self.0.verifying_key().to_bytes())
    }

    /// Signs `message` (already domain-separated by the caller).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({})", self.device_id().short())
    }
}

/// Checks an ed25519 signature made by the holder of `public` (strict verification).
pub fn verify_signature(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public) else {
        return false;
    };
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phrase() -> Phrase {
        Phrase::from_entropy([42; 32])
    }

    #[test]
    fn phrase_round_trips_through_words() {
        let p = phrase();
        let text = p.words().join(" ");
        let back = Phrase::parse(&format!("  {}  ", text.to_uppercase())).expect("parses");
        assert_eq!(back.vault_id(), p.vault_id());
        assert_eq!(back.vault_secret().as_bytes(), p.vault_secret().as_bytes());
    }

    #[test]
    fn typo_is_named_with_a_suggestion() {
        let p = phrase();
        let mut words: Vec<String> = p.words().iter().map(|w| w.to_string()).collect();
        let original = words[6].clone();
        let mut typo: Vec<char> = original.chars().collect();
        typo.swap(1, 2);
        let typo: String = typo.into_iter().collect();
        if typo == original || bip39::Language::English.find_word(&typo).is_some() {
            return; // the swap happened to make another word; nothing to test with this seed
        }
        words[6] = typo;
        match Phrase::parse(&words.join(" ")) {
            Err(PhraseError::UnknownWord { position, suggestions, .. }) => {
                assert_eq!(position, 7);
                assert!(suggestions.contains(&original.as_str()), "{suggestions:?}");
            }
            other => panic!("expected an unknown word, got {other:?}"),
        }
    }

    #[test]
    fn wrong_count_and_checksum() {
        assert_eq!(
            Phrase::parse("abandon ability").err(),
            Some(PhraseError::WordCount { found: 2 })
        );
        let p = phrase();
        let mut words: Vec<&str> = p.words();
        words.swap(0, 1);
        if words[0] != words[1] {
            assert_eq!(Phrase::parse(&words.join(" ")).err(), Some(PhraseError::Checksum));
        }
    }

    #[test]
    fn derivations_are_separate() {
        let p = phrase();
        let secret = p.vault_secret();
        assert_ne!(secret.as_bytes(), &p.recovery_key().public());
        let keys = VaultKeys::from_secret(&secret);
        assert_ne!(keys.id_key(ObjectKind::Chunk), keys.seal_key(ObjectKind::Chunk));
        assert_ne!(keys.id_key(ObjectKind::Chunk), keys.id_key(ObjectKind::Tree));
        assert_ne!(Phrase::from_entropy([1; 32]).vault_id(), p.vault_id());
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let key = DeviceKey::from_bytes(&[9; 32]);
        let sig = key.sign(b"message");
        let public = *key.device_id().as_bytes();
        assert!(verify_signature(&public, b"message", &sig));
        assert!(!verify_signature(&public, b"massage", &sig));
    }
}
