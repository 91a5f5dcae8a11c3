//! Reading, comparing and (with `TRIAD_UPDATE_VECTORS=1`) rewriting the vector files.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

/// The environment variable that makes the tests write the vector files.
const UPDATE_VAR: &str = "TRIAD_UPDATE_VECTORS";
/// Bytes per line of a hex vector file.
const BYTES_PER_LINE: usize = 32;

/// The directory of the vector files.
pub(crate) fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/vectors")
}

fn updating() -> bool {
    std::env::var(UPDATE_VAR).is_ok_and(|value| value == "1")
}

/// Renders a hex vector: each comment as a `# ` line, then the bytes as lower-case hex,
/// 32 bytes a line.
pub(crate) fn render_hex(comments: &[String], bytes: &[u8]) -> String {
    let mut text = String::new();
    for comment in comments {
        writeln!(text, "# {comment}").expect("writing to a String");
    }
    for line in bytes.chunks(BYTES_PER_LINE) {
        writeln!(text, "{}", hex::encode(line)).expect("writing to a String");
    }
    text
}

/// Parses a hex vector: lines starting with `#` are comments, white space is ignored.
pub(crate) fn parse_hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    hex::decode(&digits).expect("a vector file holds hexadecimal digits")
}

/// Compares the text file `name` with `expected`, or writes it when updating. Returns the
/// file's text.
pub(crate) fn text_vector(name: &str, expected: &str) -> String {
    let found = read_or_write(name, expected);
    assert_eq!(
        found, expected,
        "proto/vectors/{name} differs from what this build writes; a format change needs a \
         version bump, new vectors (TRIAD_UPDATE_VECTORS=1) and a changelog line"
    );
    found
}

/// Compares the hex file `name` with `bytes` (and the comment lines), or writes it when
/// updating. Returns the bytes parsed from the file, for the decoding half of the test.
pub(crate) fn hex_vector(name: &str, comments: &[String], bytes: &[u8]) -> Vec<u8> {
    let expected = render_hex(comments, bytes);
    let found = read_or_write(name, &expected);
    let parsed = parse_hex(&found);
    assert_eq!(
        hex::encode(&parsed),
        hex::encode(bytes),
        "proto/vectors/{name}: this build encodes other bytes; a format change needs a version \
         bump, new vectors (TRIAD_UPDATE_VECTORS=1) and a changelog line"
    );
    assert_eq!(found, expected, "proto/vectors/{name}: the bytes match, the comments do not");
    parsed
}

fn read_or_write(name: &str, expected: &str) -> String {
    let path = dir().join(name);
    if updating() {
        fs::create_dir_all(dir()).expect("create proto/vectors");
        fs::write(&path, expected)
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
        return expected.to_owned();
    }
    fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read {}: {err} (run `TRIAD_UPDATE_VECTORS=1 cargo test -p triad-proto` to \
             write it)",
            path.display()
        )
    })
}

#[test]
fn hex_files_round_trip() {
    let bytes: Vec<u8> = (0..=70).collect();
    let text = render_hex(&["a comment".to_owned()], &bytes);
    assert!(text.starts_with("# a comment\n"));
    assert_eq!(text.lines().count(), 1 + 3);
    assert_eq!(parse_hex(&text), bytes);
}
