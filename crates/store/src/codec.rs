//! Encoding of openraft and state-machine values (MessagePack via rmp-serde).
//!
//! Everything this crate stores in sled, and everything the Raft transport sends, goes through
//! these two functions. Structs are encoded as maps with field names (`to_vec_named`), not as
//! positional arrays: openraft's serde types use `skip`/`default` attributes and gain fields
//! between releases, and our own types add fields with `#[serde(default)]`; both only round-trip
//! with a self-describing, named layout.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;

/// Encodes `v` as MessagePack with named fields.
pub fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(v).map_err(StoreError::Encode)
}

/// Decodes MessagePack produced by [`encode`].
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(b).map_err(StoreError::Decode)
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;
    use openraft::Membership;
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderIdExt;
    use taurus_core::Command;
    use taurus_core::TaskSpec;
    use taurus_core::command::SubmitRequest;

    use super::*;
    use crate::TypeConfig;

    type Entry = openraft::alias::EntryOf<TypeConfig>;
    type LogId = openraft::alias::LogIdOf<TypeConfig>;
    type Vote = openraft::alias::VoteOf<TypeConfig>;

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(
            openraft::alias::LeaderIdOf::<TypeConfig>::new_committed(term, node),
            index,
        )
    }

    fn submit() -> Command {
        Command::SubmitTasks {
            requests: vec![SubmitRequest {
                request_id: String::new(),
                queue_limit: None,
                submitted_by: String::new(),
                tasks: vec![TaskSpec {
                    id: "t-1".into(),
                    command: vec!["echo".into(), "hi".into()],
                    max_attempts: 1,
                    ..TaskSpec::default()
                }],
            }],
            now_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn command_round_trips() {
        let cmd = submit();
        let back: Command = decode(&encode(&cmd).unwrap()).unwrap();
        assert_eq!(cmd, back);
        let cancel = Command::CancelTask {
            id: "t-1".into(),
            reason: "no".into(),
            now_ms: 5,
            by: "alice".into(),
            only_own: true,
        };
        assert_eq!(cancel, decode::<Command>(&encode(&cancel).unwrap()).unwrap());
    }

    #[test]
    fn entries_round_trip() {
        let normal = Entry::new_normal(log_id(3, 1, 7), submit());
        let blank = Entry::new_blank(log_id(3, 1, 8));
        let members = Membership::new_with_defaults(vec![[1u64, 2, 3].into_iter().collect()], []);
        let membership = Entry::new_membership(log_id(4, 2, 9), members);
        for e in [normal, blank, membership] {
            let back: Entry = decode(&encode(&e).unwrap()).unwrap();
            assert_eq!(e, back);
        }
        let e = Entry::new_normal(log_id(1, 1, 1), submit());
        let back: Entry = decode(&encode(&e).unwrap()).unwrap();
        assert!(matches!(
            back.payload,
            EntryPayload::Normal(Command::SubmitTasks { .. })
        ));
    }

    #[test]
    fn votes_round_trip() {
        let uncommitted = Vote::new(5, 2);
        let committed = Vote::new_committed(6, 3);
        for v in [uncommitted, committed] {
            let back: Vote = decode(&encode(&v).unwrap()).unwrap();
            assert_eq!(v, back);
        }
    }

    #[test]
    fn trace_parent_is_absent_from_untraced_specs_and_round_trips_otherwise() {
        let untraced = TaskSpec {
            id: "t-1".into(),
            command: vec!["true".into()],
            ..TaskSpec::default()
        };
        let bytes = encode(&untraced).unwrap();
        // Untraced specs encode exactly as before the field existed, so older data decodes and
        // older binaries read newer entries of untraced tasks.
        assert!(!bytes.windows(12).any(|w| w == b"trace_parent"));
        assert_eq!(decode::<TaskSpec>(&bytes).unwrap(), untraced);
        let traced = TaskSpec {
            trace_parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            ..untraced
        };
        assert_eq!(decode::<TaskSpec>(&encode(&traced).unwrap()).unwrap(), traced);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode::<Entry>(b"\xc1 definitely not msgpack").is_err());
        assert!(decode::<Vote>(&[]).is_err());
    }
}
