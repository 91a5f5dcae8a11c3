//! Frames on a stream: a 4-byte big-endian length, then one record of the one codec.
//!
//! A frame over the caller's limit is refused before anything is allocated for it; a stream
//! that ends inside a frame is truncated. Either is an error, and the caller closes the stream.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use triad_core::codec::DecodeError;
use triad_proto::wire::{self, FRAME_HEADER_LEN};

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
    let mut record = vec![0u8; len];
    io.read_exact(&mut record).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Truncated { what },
        _ => FrameError::Io(e),
    })?;
    wire::decode(what, &record).map_err(|source| FrameError::Decode { what, source })
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
