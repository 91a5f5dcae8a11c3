//! The phrase: its 24 words for a fixed entropy, and the vault secret, recovery key and vault
//! id derived from it.

use triad_core::keys::{Phrase, vault_id_of};

use crate::fixtures;
use crate::vectors::text_vector;

/// The value of the line `name = value` in a key-value vector.
fn value<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.trim_start().strip_prefix('='))
        .map(str::trim)
        .unwrap_or_else(|| panic!("the vector has no line for {name}"))
}

fn render(phrase: &Phrase) -> String {
    let recovery = phrase.recovery_key();
    format!(
        "# Phrase::from_entropy([0x2a; 32]): its BIP-39 English words and what triad derives\n\
         # from the entropy (vault secret, recovery public key) and from that key (vault id).\n\
         entropy = {}\n\
         words = {}\n\
         vault_secret = {}\n\
         recovery_public = {}\n\
         vault_id = {}\n",
        hex::encode(fixtures::ENTROPY),
        phrase.words().join(" "),
        hex::encode(phrase.vault_secret().as_bytes()),
        hex::encode(recovery.public()),
        phrase.vault_id(),
    )
}

#[test]
fn phrase_words_and_derivations() {
    let text = text_vector("phrase.txt", &render(&fixtures::phrase()));
    // Decode: the words as a person would type them give the same phrase.
    let words = value(&text, "words");
    assert_eq!(words.split(' ').count(), 24);
    let parsed = Phrase::parse(&words.to_uppercase()).expect("the vector's words parse");
    assert_eq!(parsed.words().join(" "), words);
    assert_eq!(render(&parsed), text);
    let recovery_public: [u8; 32] =
        hex::decode(value(&text, "recovery_public")).expect("hex").try_into().expect("32 bytes");
    assert_eq!(vault_id_of(&recovery_public).to_string(), value(&text, "vault_id"));
}
