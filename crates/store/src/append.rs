//! Appending to a file (a pack, or a file being restored): buffered bytes, written in large
//! pieces, past the page cache where the file system allows it.
//!
//! A backup writes every byte once and reads none of it back soon, so copying it into the page
//! cache (and the kernel holding the writer back while it drains that cache to the disk) buys
//! nothing. Where [`Fs::open_direct`] gives a handle, whole aligned blocks are written with
//! `O_DIRECT` from an aligned buffer: the bytes of the last partial block on disk are kept at
//! the buffer's front and written again with the next block, and a write before a sync pads
//! the last block with zeros that the file is cut back from. Elsewhere writes go through the
//! page cache. Either way nothing is durable before [`File::sync`].

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::warn;

use crate::fs::{DIRECT_ALIGN, File, Fs};
use crate::index::Location;

/// A file being appended to. Its bytes are `[0, written())` in the file and
/// `[written(), end())` in memory; none are durable before [`File::sync`] of [`Appender::file`].
#[derive(Debug)]
pub struct Appender {
    path: PathBuf,
    file: Arc<dyn File>,
    /// The same file open for direct writes, where the file system allows it.
    direct: Option<Box<dyn File>>,
    written: u64,
    /// `raw[at..]` starts at an aligned address. `raw[at..at + head]` are the file's bytes
    /// `[written - head, written)` (direct writes only; under one block); after them come the
    /// buffered bytes from `written` on.
    raw: Vec<u8>,
    at: usize,
    head: usize,
}

impl Appender {
    /// Appends to `file` (open for writing at `path`) from `len`, its length.
    pub fn open(fs: &dyn Fs, path: PathBuf, file: Arc<dyn File>, len: u64) -> io::Result<Self> {
        let direct = fs.open_direct(&path)?;
        let mut this = Self { path, file, direct, written: len, raw: Vec::new(), at: 0, head: 0 };
        this.load_head()?;
        Ok(this)
    }

    /// Whether writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The file appended to.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The file appended to (for [`File::sync`]).
    pub fn file(&self) -> &Arc<dyn File> {
        &self.file
    }

    /// Bytes written to the file so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes written and buffered.
    pub fn end(&self) -> u64 {
        self.written + self.pending().len() as u64
    }

    /// The buffered bytes, from `written` on.
    fn pending(&self) -> &[u8] {
        &self.raw[self.at + self.head..]
    }

    /// Bytes buffered and not yet written.
    pub fn pending_len(&self) -> usize {
        self.pending().len()
    }

    /// Buffers `bytes` at the end.
    pub fn push(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.raw.extend_from_slice(bytes);
    }

    /// Drops buffered bytes past the first `len`.
    pub(crate) fn truncate_pending(&mut self, len: usize) {
        self.raw.truncate(self.at + self.head + len);
    }

    /// The buffered bytes at `location` (in this file), if they are still buffered.
    pub(crate) fn buffered(&self, location: Location) -> Option<&[u8]> {
        if location.offset < self.written {
            return None;
        }
        let start = usize::try_from(location.offset - self.written).ok()?;
        self.pending().get(start..start.checked_add(location.len as usize)?)
    }

    /// Writes the buffered bytes. `complete`: all of them (before a sync); otherwise direct
    /// writes keep back what does not fill a block.
    pub fn flush(&mut self, complete: bool) -> io::Result<()> {
        if self.pending().is_empty() {
            return Ok(());
        }
        if self.direct.is_some() {
            match self.flush_direct(complete) {
                Ok(()) => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::InvalidInput => {
                    // The disk wants a larger alignment than DIRECT_ALIGN.
                    warn!(path = %self.path.display(), "direct writes refused; writing through the page cache");
                    self.direct = None;
                    self.raw.drain(self.at..self.at + self.head);
                    self.head = 0;
                }
                Err(err) => return Err(err),
            }
        }
        self.file.write_all_at(self.pending(), self.written)?;
        self.written += self.pending().len() as u64;
        self.raw.truncate(self.at + self.head);
        Ok(())
    }

    fn flush_direct(&mut self, complete: bool) -> io::Result<()> {
        let start = self.written - self.head as u64;
        let total = self.raw.len() - self.at;
        let len = if complete {
            total.next_multiple_of(DIRECT_ALIGN)
        } else {
            total - total % DIRECT_ALIGN
        };
        if len == 0 {
            return Ok(());
        }
        // Pad the last block with zeros for the write, then forget them.
        self.reserve(len.saturating_sub(total));
        self.raw.resize(self.at + len.max(total), 0);
        let direct = self.direct.as_ref().expect("called for direct writers");
        let wrote = direct.write_all_at(&self.raw[self.at..self.at + len], start);
        self.raw.truncate(self.at + total);
        wrote?;
        let end = len.min(total);
        if len > total {
            self.file.set_len(start + total as u64)?;
        }
        self.written = start + end as u64;
        // The last partial block written becomes the head; what was not written follows it.
        let keep_from = end - end % DIRECT_ALIGN;
        self.raw.copy_within(self.at + keep_from.., self.at);
        self.raw.truncate(self.raw.len() - keep_from);
        self.head = end - keep_from;
        Ok(())
    }

    /// Frees the buffer of a file that takes no more bytes.
    pub(crate) fn release_memory(&mut self) {
        debug_assert!(self.pending().is_empty());
        self.raw = Vec::new();
        self.at = 0;
        self.head = 0;
    }

    /// Forgets the buffered bytes and continues at `len`, a length synced before.
    pub(crate) fn rewind_to(&mut self, len: u64) {
        self.written = len;
        self.raw.truncate(self.at);
        self.head = 0;
        if self.load_head().is_err() {
            self.direct = None;
        }
    }

    /// Reads the bytes of the partial block before `written` into the head.
    fn load_head(&mut self) -> io::Result<()> {
        if self.direct.is_none() {
            return Ok(());
        }
        let head = usize::try_from(self.written % DIRECT_ALIGN as u64).expect("under one block");
        self.reserve(head);
        let from = self.raw.len();
        self.raw.resize(from + head, 0);
        if let Err(err) = self.file.read_exact_at(&mut self.raw[from..], self.written - head as u64)
        {
            // Nothing of a failed read may stay behind as if it were data to write.
            self.raw.truncate(from);
            return Err(err);
        }
        self.head = head;
        Ok(())
    }

    /// Makes room for `more` bytes without moving the buffer (which would lose its alignment).
    fn reserve(&mut self, more: usize) {
        if self.raw.len() + more <= self.raw.capacity() {
            return;
        }
        let used = self.raw.len() - self.at;
        let want = (used + more).max(64 * 1024) * 2 + DIRECT_ALIGN;
        let mut raw: Vec<u8> = Vec::with_capacity(want);
        let at = raw.as_ptr().align_offset(DIRECT_ALIGN);
        raw.resize(at, 0);
        raw.extend_from_slice(&self.raw[self.at..]);
        self.raw = raw;
        self.at = at;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::fs::RealFs;

    /// Appends pieces of odd sizes with flushes of both kinds in between, and checks the file
    /// against the concatenation after every complete flush.
    fn check(fs: &dyn Fs, dir: &Path) {
        let path = dir.join("pack");
        let file: Arc<dyn File> = Arc::from(fs.create(&path).expect("create"));
        let mut writer = Appender::open(fs, path.clone(), file.clone(), 0).expect("open");
        let mut expected = Vec::new();
        let mut n = 0u32;
        for round in 0..40u32 {
            for _ in 0..(round % 5 + 1) {
                n += 1;
                let len = (n as usize * 7919) % 9000 + 1;
                let piece: Vec<u8> = (0..len).map(|i| (i as u32 ^ n) as u8).collect();
                writer.push(&piece);
                expected.extend_from_slice(&piece);
                if n.is_multiple_of(3) {
                    writer.flush(false).expect("flush");
                }
            }
            writer.flush(true).expect("flush");
            assert_eq!(writer.written(), expected.len() as u64);
            let mut on_disk = vec![0; expected.len()];
            file.read_exact_at(&mut on_disk, 0).expect("read");
            assert_eq!(file.len().expect("len"), expected.len() as u64, "round {round}");
            assert!(on_disk == expected, "round {round}: file differs");
            if round % 10 == 9 {
                // Continue as a new writer would after a reopen.
                writer = Appender::open(fs, path.clone(), file.clone(), expected.len() as u64)
                    .expect("reopen");
            }
        }
    }

    #[test]
    fn appends_land_byte_for_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        check(&RealFs, dir.path());
    }

    #[test]
    fn a_rewind_continues_at_the_synced_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pack");
        let file: Arc<dyn File> = Arc::from(RealFs.create(&path).expect("create"));
        let mut writer = Appender::open(&RealFs, path, file.clone(), 0).expect("open");
        writer.push(&[1; 5000]);
        writer.flush(true).expect("flush");
        writer.push(&[2; 9000]);
        writer.flush(false).expect("flush");
        writer.rewind_to(5000);
        writer.push(&[3; 100]);
        writer.flush(true).expect("flush");
        let mut on_disk = vec![0; 5100];
        file.read_exact_at(&mut on_disk, 0).expect("read");
        assert_eq!(file.len().expect("len"), 5100);
        assert!(on_disk[..5000].iter().all(|&b| b == 1));
        assert!(on_disk[5000..].iter().all(|&b| b == 3));
    }
}
