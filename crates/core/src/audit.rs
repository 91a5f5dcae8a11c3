//! Audits: proof that a peer still holds the bytes of blobs, checked by a device that needs no
//! copy of them.
//!
//! The auditor names ranges of blobs it expects the peer to hold; the peer answers each with a
//! BLAKE3 verified slice (the Bao slice format: the range's 1 KiB chunks with the hash-tree
//! nodes that link them to the root). A blob's address is the BLAKE3 hash of its bytes, so the
//! auditor checks the slice against the address alone. A slice that does not verify, or a
//! range left unanswered, is a failed audit. Ranges are drawn from a random seed the auditor
//! passes in, so a peer cannot know in advance which bytes it will be asked for.
//!
//! Nothing here does I/O: the seed, the blobs and the bytes are passed in.

use std::io::{Cursor, Read};

use crate::BlobId;

/// Bytes asked for in each range (four BLAKE3 chunks).
pub const SLICE_LEN: u32 = 4096;
/// Ranges start below this offset; past a blob's end, the slice proves its last chunk.
pub const START_MAX: u64 = 1 << 20;

/// One range of one blob to prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The blob.
    pub blob: BlobId,
    /// The first byte.
    pub start: u64,
    /// How many bytes.
    pub len: u32,
}

/// Ranges of `n` distinct blobs of `blobs` (all of them if there are no more than `n`), one
/// range each, drawn from `seed`.
pub fn challenge(seed: [u8; 32], blobs: &[BlobId], n: usize) -> Vec<Range> {
    let mut draws = blake3::Hasher::new_keyed(&seed).finalize_xof();
    let mut next = || {
        let mut word = [0u8; 8];
        draws.fill(&mut word);
        u64::from_le_bytes(word)
    };
    // A partial Fisher-Yates shuffle: the first `n` places hold the sample.
    let mut order: Vec<usize> = (0..blobs.len()).collect();
    let n = n.min(blobs.len());
    for i in 0..n {
        let left = (order.len() - i) as u64;
        let j = i + usize::try_from(next() % left).unwrap_or(0);
        order.swap(i, j);
    }
    order[..n]
        .iter()
        .map(|&i| {
            let start = next() % START_MAX / 1024 * 1024;
            Range { blob: blobs[i], start, len: SLICE_LEN }
        })
        .collect()
}

/// The peer's side: the verified slice of `range` of `bytes` (the blob's sealed bytes).
pub fn slice(bytes: &[u8], range: Range) -> Vec<u8> {
    let (outboard, _) = bao::encode::outboard(bytes);
    let mut extractor = bao::encode::SliceExtractor::new_outboard(
        Cursor::new(bytes),
        Cursor::new(&outboard),
        range.start,
        u64::from(range.len),
    );
    let mut out = Vec::new();
    // Reading from memory cannot fail; a failure would make a slice that does not verify.
    let _ = extractor.read_to_end(&mut out);
    out
}

/// The auditor's side: whether `slice` proves `range` of the blob at its address.
pub fn check(range: Range, slice: &[u8]) -> bool {
    let hash = bao::Hash::from(*range.blob.as_bytes());
    let mut decoder =
        bao::decode::SliceDecoder::new(slice, &hash, range.start, u64::from(range.len));
    let mut out = Vec::new();
    decoder.read_to_end(&mut out).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(len: usize, seed: u8) -> (BlobId, Vec<u8>) {
        let mut bytes = vec![0u8; len];
        blake3::Hasher::new_keyed(&[seed; 32]).finalize_xof().fill(&mut bytes);
        (BlobId::of(&bytes), bytes)
    }

    #[test]
    fn a_true_slice_verifies_and_a_false_one_does_not() {
        let (id, bytes) = blob(300_000, 1);
        let (other, other_bytes) = blob(300_000, 2);
        for range in challenge([7; 32], &[id], 20) {
            let proof = slice(&bytes, range);
            assert!(check(range, &proof), "{range:?}");
            assert!(proof.len() < 6000, "a slice is small: {}", proof.len());
            // The same range of other bytes, or a flipped bit, does not prove this blob.
            assert!(!check(range, &slice(&other_bytes, range)));
            let mut bad = proof.clone();
            let at = bad.len() / 2;
            bad[at] ^= 1;
            assert!(!check(range, &bad));
            assert!(!check(range, &[]));
            assert!(!check(Range { blob: other, ..range }, &proof));
        }
    }

    #[test]
    fn ranges_past_the_end_prove_the_last_chunk_and_small_blobs_work() {
        let (id, bytes) = blob(1500, 3);
        let range = Range { blob: id, start: 900_000, len: SLICE_LEN };
        assert!(check(range, &slice(&bytes, range)));
        let (empty, none) = blob(0, 4);
        let range = Range { blob: empty, start: 0, len: SLICE_LEN };
        assert!(check(range, &slice(&none, range)));
    }

    #[test]
    fn a_challenge_depends_on_its_seed_only() {
        let ids: Vec<BlobId> = (0..50u8).map(|i| blob(10, i).0).collect();
        assert_eq!(challenge([1; 32], &ids, 8), challenge([1; 32], &ids, 8));
        assert_ne!(challenge([1; 32], &ids, 8), challenge([2; 32], &ids, 8));
        assert!(challenge([1; 32], &[], 8).is_empty());
        // A small set is audited whole, each blob once.
        let mut all: Vec<BlobId> =
            challenge([3; 32], &ids[..5], 8).iter().map(|r| r.blob).collect();
        all.sort_unstable();
        let mut expected = ids[..5].to_vec();
        expected.sort_unstable();
        assert_eq!(all, expected);
    }
}
