//! Fuzz target bodies for the records of this crate (see `triad_core::fuzz`): wire messages
//! and the store's framing records. Each must return without panicking on any bytes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{EntryHeader, Marker, PackHeader};
use crate::wire::{
    self, BlobAck, BlobFrame, Fetch, Joiner, Offer, PairMessage, RecoverMessage, Request, Response,
    Welcome,
};

/// Every wire message: `data` as a record of each kind.
pub fn wire(data: &[u8]) {
    round_trip::<Request>(data);
    round_trip::<Response>(data);
    round_trip::<Fetch>(data);
    round_trip::<BlobAck>(data);
    round_trip::<PairMessage>(data);
    round_trip::<Offer>(data);
    round_trip::<Joiner>(data);
    round_trip::<Welcome>(data);
    round_trip::<RecoverMessage>(data);
    if let Some(BlobFrame::Blob { id, bytes }) = round_trip::<BlobFrame>(data) {
        // The prefix a sender writes is the frame before the bytes.
        let mut framed = wire::blob_frame_prefix(&id, bytes.len());
        framed.extend_from_slice(&bytes);
        assert_eq!(framed, wire::frame(&BlobFrame::Blob { id, bytes }));
    }
}

/// Decodes `data` as a `T`; what decodes encodes to a record that decodes to the same value.
fn round_trip<T>(data: &[u8]) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let value: T = wire::decode("fuzzed", data).ok()?;
    let again: T = wire::decode("fuzzed", &wire::encode(&value)).expect("an encoding decodes");
    assert_eq!(again, value);
    Some(value)
}

/// The store's framing records: the marker file, a pack header, and entry headers at every
/// offset of `data` (as a pack walk tries them).
pub fn store_records(data: &[u8]) {
    if let Ok(marker) = Marker::decode(data) {
        assert_eq!(Marker::decode(&marker.encode()).ok(), Some(marker));
    }
    if let Some(bytes) = data.get(..PackHeader::LEN)
        && let Ok(header) = PackHeader::decode(bytes)
    {
        // An older pack's header reads as the same header, written at today's version.
        let mut current = bytes.to_vec();
        current[8] = crate::store::PACK_VERSION;
        assert_eq!(header.encode()[..], current[..], "a pack header has one encoding");
    }
    let _ = PackHeader::decode(data);
    let _ = EntryHeader::decode(data);
    for at in 0..data.len().saturating_sub(EntryHeader::LEN - 1) {
        let bytes = &data[at..at + EntryHeader::LEN];
        if let Ok(header) = EntryHeader::decode(bytes) {
            assert_eq!(header.encode()[..], bytes[..], "an entry header has one encoding");
            assert!(header.entry_len() <= (EntryHeader::LEN + crate::limits::BLOB_LEN_MAX) as u64);
        }
    }
}
