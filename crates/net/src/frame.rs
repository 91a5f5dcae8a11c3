//! Frames on a stream: a 4-byte big-endian length, then one record of the one codec.
//!
//! A frame over the caller's limit is refused before anything is allocated for it; a stream
//! that ends inside a frame is truncated. Either is an error, and the caller closes the stream.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use triad_core::BlobId;
use triad_core::codec::DecodeError;
use triad_proto::wire::{self, BLOB_FRAME_MAX, BlobFrame, FRAME_HEADER_LEN};

/// A frame could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream failed.
    #[error("stream failed")]
    Io(#[from] io::Error),
    /// The peer announced a frame over the protocol's limit.
    #[error("a {what} frame of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// What was expected.
        what: &'static str,
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("the stream ended inside a {what} frame")]
    Truncated {
        /// What was expected.
        what: &'static str,
    },
    /// The stream ended where a frame was expected.
    #[error("the stream ended before a {what} frame")]
    Closed {
        /// What was expected.
        what: &'static str,
    },
    /// The frame is not a valid message.
    #[error("malformed {what} frame")]
    Decode {
        /// What was expected.
        what: &'static str,
        /// Why it does not decode.
        #[source]
        source: DecodeError,
    },
}

/// Reads one frame and decodes it as a `what`; at most `max` bytes of record.
pub async fn read<T, R>(io: &mut R, what: &'static str, max: usize) -> Result<T, FrameError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let len = read_len(io, what, max).await?;
    // Grown as the bytes arrive: announcing a large frame costs the sender as much as us.
    let mut record = Vec::with_capacity(len.min(64 * 1024));
    let got = io.take(len as u64).read_to_end(&mut record).await?;
    if got < len {
        return Err(FrameError::Truncated { what });
    }
    wire::decode(what, &record).map_err(|source| FrameError::Decode { what, source })
}

/// Reads one frame of a blob stream. A blob's bytes are read straight into their own buffer
/// (no copy through the codec); anything else takes the general path, with its errors.
pub async fn read_blob<R>(io: &mut R) -> Result<BlobFrame, FrameError>
where
    R: AsyncRead + Unpin,
{
    const WHAT: &str = "blob frame";
    let len = read_len(io, WHAT, BLOB_FRAME_MAX).await?;
    // version, variant, id, and the varint tag of the length
    let mut head = vec![0u8; len.min(2 + 32 + 1)];
    read_exact(io, &mut head, WHAT).await?;
    let fast = head.len() == 35 && head[0] == wire::WIRE_VERSION && head[1] == 0;
    if fast {
        let extra = match head[34] {
            0..=250 => 0,
            0xfb => 2,
            0xfc => 4,
            0xfd => 8,
            // Not a length a writer emits: the general path refuses it properly.
            _ => len + 1,
        };
        let mut tail = [0u8; 8];
        let prefix = 35 + extra;
        if prefix <= len {
            read_exact(io, &mut tail[..extra], WHAT).await?;
            let value = match extra {
                0 => u64::from(head[34]),
                2 => u64::from(u16::from_le_bytes([tail[0], tail[1]])),
                4 => u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes"))),
                _ => u64::from_le_bytes(tail),
            };
            if value == (len - prefix) as u64 {
                let id = BlobId::from_bytes(head[2..34].try_into().expect("32 bytes"));
                let mut bytes = vec![0u8; len - prefix];
                read_exact(io, &mut bytes, WHAT).await?;
                return Ok(BlobFrame::Blob { id, bytes });
            }
            head.extend_from_slice(&tail[..extra]);
        }
    }
    let mut record = head;
    let at = record.len();
    record.resize(len, 0);
    read_exact(io, &mut record[at..], WHAT).await?;
    wire::decode(WHAT, &record).map_err(|source| FrameError::Decode { what: WHAT, source })
}

async fn read_len<R: AsyncRead + Unpin>(
    io: &mut R,
    what: &'static str,
    max: usize,
) -> Result<usize, FrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut filled = 0;
    while filled < header.len() {
        match io.read(&mut header[filled..]).await? {
            0 if filled == 0 => return Err(FrameError::Closed { what }),
            0 => return Err(FrameError::Truncated { what }),
            n => filled += n,
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { what, len, max });
    }
    Ok(len)
}

async fn read_exact<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), FrameError> {
    io.read_exact(buf).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated { what },
        _ => FrameError::Io(e),
    })
}

/// Writes a blob's frame from its parts, without copying the blob; not flushed.
pub async fn write_blob<W>(io: &mut W, id: &BlobId, bytes: &[u8]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    io.write_all(&wire::blob_frame_prefix(id, bytes.len())).await?;
    io.write_all(bytes).await
}

/// Writes one message as a frame and flushes it.
pub async fn write<T, W>(io: &mut W, message: &T) -> io::Result<()>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    io.write_all(&wire::frame(message)).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use triad_proto::wire::{CONTROL_FRAME_MAX, Request, Response};

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn a_written_frame_reads_back() {
        let mut buf = Cursor::new(Vec::new());
        block_on(write(&mut buf, &Request::Hello)).expect("write");
        let mut input = Cursor::new(buf.into_inner());
        let got: Request = block_on(read(&mut input, "request", CONTROL_FRAME_MAX)).expect("read");
        assert_eq!(got, Request::Hello);
        let end = block_on(read::<Request, _>(&mut input, "request", CONTROL_FRAME_MAX));
        assert!(matches!(end, Err(FrameError::Closed { .. })));
    }

    #[test]
    fn blob_frames_read_fast_or_slow_alike() {
        for len in [0usize, 7, 250, 251, 70_000] {
            let bytes = vec![9u8; len];
            let id = BlobId::of(&bytes);
            let mut buf = Cursor::new(Vec::new());
            block_on(write_blob(&mut buf, &id, &bytes)).expect("write");
            block_on(write(&mut buf, &BlobFrame::Commit)).expect("write");
            let mut input = Cursor::new(buf.into_inner());
            let got = block_on(read_blob(&mut input)).expect("blob");
            assert_eq!(got, BlobFrame::Blob { id, bytes: bytes.clone() });
            assert_eq!(block_on(read_blob(&mut input)).expect("commit"), BlobFrame::Commit);
        }
        // A length that disagrees with the frame, a wrong version, garbage: errors.
        let mut lying = wire::blob_frame_prefix(&BlobId::of(b"x"), 5);
        lying.extend_from_slice(b"abcdef");
        let len = (lying.len() - 4) as u32;
        lying[..4].copy_from_slice(&len.to_be_bytes());
        assert!(block_on(read_blob(&mut Cursor::new(lying))).is_err());
        let mut versioned = wire::frame(&BlobFrame::Commit);
        versioned[4] = 9;
        assert!(block_on(read_blob(&mut Cursor::new(versioned))).is_err());
        let truncated = wire::blob_frame_prefix(&BlobId::of(b"x"), 100);
        assert!(matches!(
            block_on(read_blob(&mut Cursor::new(truncated))),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn oversized_truncated_and_garbage_frames_are_errors() {
        let huge = (CONTROL_FRAME_MAX as u32 + 1).to_be_bytes().to_vec();
        let got =
            block_on(read::<Request, _>(&mut Cursor::new(huge), "request", CONTROL_FRAME_MAX));
        assert!(matches!(got, Err(FrameError::TooLarge { .. })), "{got:?}");

        let mut framed = wire::frame(&Response::Done);
        framed.pop();
        let got = block_on(read::<Response, _>(&mut Cursor::new(framed), "r", CONTROL_FRAME_MAX));
        assert!(matches!(got, Err(FrameError::Truncated { .. })), "{got:?}");

        let got = block_on(read::<Response, _>(&mut Cursor::new(vec![0, 0]), "r", 100));
        assert!(matches!(got, Err(FrameError::Truncated { .. })), "{got:?}");

        let garbage = [0, 0, 0, 3, wire::WIRE_VERSION, 0xff, 0xff].to_vec();
        let got = block_on(read::<Response, _>(&mut Cursor::new(garbage), "r", 100));
        assert!(matches!(got, Err(FrameError::Decode { .. })), "{got:?}");
    }
}
