//! The Raft codec target: MessagePack bytes as a master receives them from a peer (Raft RPCs
//! and their replies, the snapshot header) or reads them back from sled (log entries, votes,
//! snapshots), decoded with `taurus_store::codec`.
//!
//! The first byte picks the type; the rest is its encoding. Decoding arbitrary bytes must be an
//! error, never a panic or an unbounded allocation (the fuzzer runs with a malloc limit), and a
//! value that decodes must encode, and its encoding decode and encode to the same bytes.

use openraft::alias::EntryOf;
use openraft::alias::LogIdOf;
use openraft::alias::SnapshotMetaOf;
use openraft::alias::StoredMembershipOf;
use openraft::alias::VoteOf;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use taurus_core::Command;
use taurus_core::Response;
use taurus_core::State;
use taurus_core::state::StateImage;
use taurus_store::TypeConfig;
use taurus_store::codec;

type C = TypeConfig;

/// Fuzz target: never panics on any input.
pub fn fuzz_raft_codec(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 15 {
        0 => round_trip::<Command>(bytes),
        1 => round_trip::<Response>(bytes),
        2 => round_trip::<EntryOf<C>>(bytes),
        3 => round_trip::<VoteOf<C>>(bytes),
        4 => round_trip::<LogIdOf<C>>(bytes),
        5 => round_trip::<StoredMembershipOf<C>>(bytes),
        6 => round_trip::<AppendEntriesRequest<C>>(bytes),
        7 => round_trip::<AppendEntriesResponse<C>>(bytes),
        8 => round_trip::<VoteRequest<C>>(bytes),
        9 => round_trip::<VoteResponse<C>>(bytes),
        10 => round_trip::<TransferLeaderRequest<C>>(bytes),
        11 => round_trip::<TransferLeaderResponse<C>>(bytes),
        12 => round_trip::<SnapshotResponse<C>>(bytes),
        13 => round_trip::<(VoteOf<C>, SnapshotMetaOf<C>)>(bytes),
        _ => snapshot(bytes),
    }
}

/// Decodes `T`; when it decodes, re-encoding is stable.
fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    let Ok(v) = codec::decode::<T>(bytes) else {
        return;
    };
    let once = codec::encode(&v).expect("a decoded value encodes");
    let again: T = codec::decode(&once).expect("a decoded value's encoding decodes");
    let twice = codec::encode(&again).expect("encodes again");
    assert_eq!(once, twice, "encode/decode round trip is not stable");
}

/// The snapshot body as the store reads it (`state_machine.rs`: schema version, then the
/// state's image), rebuilt into a state as a follower installing it does.
#[derive(Deserialize)]
struct SnapshotImage {
    #[allow(dead_code)]
    schema: u32,
    state: StateImage,
}

fn snapshot(bytes: &[u8]) {
    let Ok(image) = codec::decode::<SnapshotImage>(bytes) else {
        return;
    };
    let Ok(state) = State::from_image(image.state) else {
        return;
    };
    // An accepted image is stable: the state's own image rebuilds to the same image.
    let once = codec::encode(&state.image()).expect("an image encodes");
    let image: StateImage = codec::decode(&once).expect("an image decodes");
    let again = State::from_image(image).expect("a state's own image is accepted");
    let twice = codec::encode(&again.image()).expect("an image encodes");
    assert_eq!(once, twice, "snapshot image round trip is not stable");
}
