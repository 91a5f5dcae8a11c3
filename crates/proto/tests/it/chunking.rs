//! Chunk cut points: the lengths the default chunker gives for fixed pseudo-random data.

use triad_core::chunk::Chunker;

use crate::vectors::text_vector;

const DATA_LEN: usize = 8 * 1024 * 1024;
const DATA_KEY: [u8; 32] = [0x09; 32];

/// 8 MiB of BLAKE3 output: the XOF of the empty input, keyed with [0x09; 32].
fn data() -> Vec<u8> {
    let mut out = vec![0u8; DATA_LEN];
    blake3::Hasher::new_keyed(&DATA_KEY).finalize_xof().fill(&mut out);
    out
}

fn render(lengths: &[usize]) -> String {
    let mut text = String::from(
        "# Chunker::DEFAULT (FastCDC 2020, min 262144, avg 1048576, max 4194304, normalization 1)\n\
         # over 8388608 bytes: the BLAKE3 XOF output of the empty input keyed with [0x09; 32].\n\
         # One chunk length a line, in order.\n",
    );
    for len in lengths {
        text.push_str(&format!("{len}\n"));
    }
    text
}

#[test]
fn default_chunker_lengths() {
    let data = data();
    let lengths = Chunker::DEFAULT.lengths(&data);
    let text = text_vector("chunk_lengths.txt", &render(&lengths));
    let from_file: Vec<usize> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.parse().expect("a length"))
        .collect();
    assert_eq!(from_file, lengths);
    assert_eq!(from_file.iter().sum::<usize>(), data.len());

    // The streaming rule: a window of at most max_len bytes, or all that is left at the end
    // of the file, gives the same cut points as the whole buffer.
    let chunker = Chunker::DEFAULT;
    let mut streamed = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let end = (start + chunker.max_len()).min(data.len());
        let len = chunker.cut(&data[start..end], end == data.len()).expect("a full window cuts");
        streamed.push(len);
        start += len;
    }
    assert_eq!(streamed, from_file);
}
