//! Pack files: their names, and walking a pack entry by entry.
//!
//! A pack is a [`PackHeader`] followed by entries, each an [`EntryHeader`] and the blob's bytes.
//! Walking a pack trusts nothing: every header is checked (magic, checksum, length limit)
//! before its length is followed, a damaged header is skipped by searching for the next valid
//! one, and an entry that runs past the end of the file is the torn tail of an interrupted
//! write.

use std::io;

use triad_core::BlobId;
use triad_proto::store::{ENTRY_MAGIC, EntryHeader, EntryKind, PackHeader};

use crate::error::Problem;
use crate::fs::File;

/// The file name of pack `seq`: eight lower-case hex digits and `.pack`.
pub(crate) fn file_name(seq: u32) -> String {
    format!("{seq:08x}.pack")
}

/// The sequence number of a pack file name, if it is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".pack")?;
    if digits.len() != 8 || !digits.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// What walking a pack found.
#[derive(Debug)]
pub(crate) enum Found {
    /// A complete entry. `problem` is set when its bytes were checked and do not match.
    Entry {
        /// The entry's header.
        header: EntryHeader,
        /// Offset of the header in the pack.
        offset: u64,
        /// What is wrong with the bytes, if they were checked.
        problem: Option<Problem>,
    },
    /// Bytes that are not a valid entry header, followed later by valid entries.
    Damaged {
        /// Offset of the damaged bytes.
        offset: u64,
    },
}

/// The end of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walked {
    /// Whether the pack header was valid and named this store and sequence number.
    pub(crate) header_ok: bool,
    /// The offset just past the last complete entry (or the header): what a committed length
    /// rebuilt from this pack would be.
    pub(crate) end: u64,
}

/// The largest read done at once while searching for the next valid header.
const SEARCH_READ: usize = 1024 * 1024;

/// Walks the pack in `file` of `len` bytes. With `check_bodies`, reads every blob and compares
/// it with its id; without, skips the bodies (one read per entry).
pub(crate) fn walk(
    file: &dyn File,
    len: u64,
    expect: PackHeader,
    check_bodies: bool,
    visit: &mut dyn FnMut(Found),
) -> io::Result<Walked> {
    let header_len = PackHeader::LEN as u64;
    let mut header = [0u8; PackHeader::LEN];
    let header_ok = len >= header_len && {
        file.read_exact_at(&mut header, 0)?;
        PackHeader::decode(&header).is_ok_and(|h| h == expect)
    };
    let mut pos = header_len.min(len);
    let mut end = pos;
    let mut entry = [0u8; EntryHeader::LEN];
    let mut body = Vec::new();
    while pos + EntryHeader::LEN as u64 <= len {
        file.read_exact_at(&mut entry, pos)?;
        let Ok(found) = EntryHeader::decode(&entry) else {
            match search(file, len, pos + 1)? {
                Some(next) => {
                    visit(Found::Damaged { offset: pos });
                    pos = next;
                    continue;
                }
                // Nothing valid follows: a torn tail, not damage.
                None => break,
            }
        };
        let entry_end = pos + found.entry_len();
        if entry_end > len {
            break;
        }
        let mut problem = None;
        if check_bodies && found.kind == EntryKind::Blob {
            body.resize(found.len as usize, 0);
            match file.read_exact_at(&mut body, pos + EntryHeader::LEN as u64) {
                Ok(()) if BlobId::of(&body) == found.blob => {}
                Ok(()) => problem = Some(Problem::Mismatch),
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    problem = Some(Problem::Short)
                }
                Err(err) => problem = Some(Problem::Unreadable(err.kind())),
            }
        }
        visit(Found::Entry { header: found, offset: pos, problem });
        pos = entry_end;
        end = entry_end;
    }
    Ok(Walked { header_ok, end })
}

/// The offset of the next valid entry header at or after `from`, if any.
fn search(file: &dyn File, len: u64, from: u64) -> io::Result<Option<u64>> {
    let header_len = EntryHeader::LEN as u64;
    let mut start = from;
    let mut buf = Vec::new();
    while start + header_len <= len {
        let take = (len - start).min(SEARCH_READ as u64) as usize;
        buf.resize(take, 0);
        file.read_exact_at(&mut buf, start)?;
        let mut i = 0;
        while i + EntryHeader::LEN <= buf.len() {
            if buf[i..i + ENTRY_MAGIC.len()] == ENTRY_MAGIC
                && EntryHeader::decode(&buf[i..i + EntryHeader::LEN]).is_ok()
            {
                return Ok(Some(start + i as u64));
            }
            i += 1;
        }
        if start + take as u64 >= len {
            break;
        }
        // Overlap by a header so that one straddling the boundary is found.
        start += (take - EntryHeader::LEN + 1) as u64;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(0x2a), "0000002a.pack");
        assert_eq!(parse_file_name("0000002a.pack"), Some(0x2a));
        assert_eq!(parse_file_name("0000002A.pack"), None);
        assert_eq!(parse_file_name("2a.pack"), None);
        assert_eq!(parse_file_name("0000002a.pack.tmp"), None);
    }
}
