//! Content-defined chunking (FastCDC 2020) over a streaming buffer.
//!
//! The caller reads a file into a buffer and asks [`Chunker::cut`] where the next chunk
//! ends. The answer depends only on the bytes, never on how they were read, so an insertion
//! in the middle of a file moves the boundaries near it and no others. Cut points are part
//! of the format: golden cut-point tests pin them.

use fastcdc::v2020::{FastCDC, Normalization};

/// Chunk sizes. Minimum, average and maximum must be even; powers of two are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunker {
    min_len: usize,
    avg_len: usize,
    max_len: usize,
}

impl Chunker {
    /// The sizes triad uses for file data: 256 KiB, 1 MiB, 4 MiB.
    pub const DEFAULT: Chunker =
        Chunker { min_len: 256 * 1024, avg_len: 1024 * 1024, max_len: 4 * 1024 * 1024 };

    /// Sizes for tests: small enough to make many chunks from little data.
    ///
    /// # Panics
    /// If the sizes are out of FastCDC's range (64 B ≤ min, 256 B ≤ avg, 1 KiB ≤ max,
    /// min ≤ avg ≤ max) or odd.
    pub fn with_sizes(min_len: usize, avg_len: usize, max_len: usize) -> Self {
        assert!(min_len >= 64 && avg_len >= 256 && max_len >= 1024, "sizes below FastCDC's range");
        assert!(min_len <= avg_len && avg_len <= max_len, "sizes out of order");
        assert!(
            min_len.is_multiple_of(2) && avg_len.is_multiple_of(2) && max_len.is_multiple_of(2),
            "sizes must be even"
        );
        Self { min_len, avg_len, max_len }
    }

    /// The largest chunk this chunker makes: buffers hold at least this much.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Where the first chunk of `buf` ends, or `None` if more bytes are needed to know.
    ///
    /// `eof` says that `buf` holds everything left of the file. With `eof`, an empty buffer
    /// gives `None` and a non-empty one always gives a cut.
    pub fn cut(&self, buf: &[u8], eof: bool) -> Option<usize> {
        if buf.is_empty() || (!eof && buf.len() < self.max_len) {
            return None;
        }
        if buf.len() <= self.min_len {
            return Some(buf.len());
        }
        let window = &buf[..buf.len().min(self.max_len)];
        let mut cdc = FastCDC::with_level(
            window,
            self.min_len,
            self.avg_len,
            self.max_len,
            Normalization::Level1,
        );
        let chunk = cdc.next().expect("a non-empty window has a first chunk");
        Some(chunk.length)
    }

    /// Every chunk length of a whole in-memory buffer, for tests and small objects.
    pub fn lengths(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(len) = self.cut(data, true) {
            out.push(len);
            data = &data[len..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn noise(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new_keyed(&[seed; 32]).finalize_xof().fill(&mut out);
        out
    }

    fn small() -> Chunker {
        Chunker::with_sizes(256, 1024, 4096)
    }

    fn boundaries(chunker: &Chunker, data: &[u8]) -> Vec<usize> {
        let mut at = 0;
        chunker
            .lengths(data)
            .into_iter()
            .map(|len| {
                at += len;
                at
            })
            .collect()
    }

    #[test]
    fn streaming_matches_whole_buffer() {
        let c = small();
        let data = noise(100_000, 1);
        // Feed the chunker as a reader would: never more than max_len at a time past eof.
        let mut lens = Vec::new();
        let mut start = 0;
        while start < data.len() {
            let end = (start + c.max_len()).min(data.len());
            let eof = end == data.len();
            let len = c.cut(&data[start..end], eof).expect("full window cuts");
            lens.push(len);
            start += len;
        }
        assert_eq!(lens, c.lengths(&data));
        assert!(lens.iter().all(|&l| l <= 4096));
        assert_eq!(lens.iter().sum::<usize>(), data.len());
    }

    #[test]
    fn golden_cut_points() {
        // Pinned: cut points are part of the format. Changing them changes every chunk id.
        let data = noise(1 << 20, 7);
        let lens = small().lengths(&data);
        let first: Vec<usize> = lens.iter().copied().take(8).collect();
        assert_eq!(first, [2281, 1201, 1300, 1392, 1040, 1060, 2159, 1577]);
        assert_eq!(lens.len(), 850);
        let big = Chunker::DEFAULT.lengths(&noise(8 << 20, 9));
        assert_eq!(big, [1138545, 1241293, 1117557, 1180539, 1553320, 764082, 293429, 1099843]);
    }

    proptest! {
        #[test]
        fn boundaries_resynchronise_after_an_insertion(
            seed: u8,
            at in 0usize..60_000,
            inserted in proptest::collection::vec(any::<u8>(), 1..600),
        ) {
            let c = small();
            let data = noise(64_000, seed);
            let mut edited = data[..at].to_vec();
            edited.extend_from_slice(&inserted);
            edited.extend_from_slice(&data[at..]);
            let before = boundaries(&c, &data);
            let after: Vec<usize> = boundaries(&c, &edited)
                .into_iter()
                .map(|b| b - inserted.len().min(b))
                .collect();
            // Once one boundary after the edit is found again (shifted by the insertion), every
            // later one is too, since a cut depends only on the bytes after the previous cut;
            // and that happens within a few maximum-size chunks of the edit.
            let sync = *before
                .iter()
                .find(|&&b| b > at && after.contains(&b))
                .expect("the end of the data is always a boundary of both");
            let limit = at + 8 * 4096;
            prop_assert!(sync <= limit || data.len() <= limit, "re-synchronised only at {} (edit at {})", sync, at);
            for b in before.iter().filter(|&&b| b >= sync) {
                prop_assert!(after.contains(b), "boundary {} lost after re-synchronising", b);
            }
        }

        #[test]
        fn lengths_cover_the_input(len in 0usize..20_000, seed: u8) {
            let data = noise(len, seed);
            let lens = small().lengths(&data);
            prop_assert_eq!(lens.iter().sum::<usize>(), len);
            prop_assert!(lens.iter().all(|&l| l > 0 && l <= 4096));
        }
    }
}
