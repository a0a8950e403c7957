//! A real single-node openraft `Raft` on the sled store: client writes get their responses,
//! snapshots purge the log, and after a restart the state is rebuilt from the persisted snapshot
//! plus openraft's re-apply of the committed log tail, before the node serves anything.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::Config;
use openraft::RaftNetworkFactory;
use openraft::RaftNetworkV2;
use openraft::ServerState;
use openraft::SnapshotPolicy;
use openraft::alias::SnapshotOf;
use openraft::alias::VoteOf;
use openraft::error::RPCError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::storage::RaftStateMachine;
use openraft::type_config::TypeConfigExt;
use taurus_core::Command;
use taurus_core::Response;
use taurus_core::TaskSpec;
use taurus_core::command::SubmitRequest;
use taurus_store::NodeId;
use taurus_store::Raft;
use taurus_store::StateMachineStore;
use taurus_store::TypeConfig;
use taurus_store::log_store::open;
use tempfile::TempDir;

const ID: NodeId = 1;
const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// A single-node cluster never talks to anyone.
struct NoNetwork;

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoNetwork;

    async fn new_client(&mut self, _target: NodeId, _node: &BasicNode) -> NoNetwork {
        NoNetwork
    }
}

fn unreachable() -> Unreachable<TypeConfig> {
    Unreachable::from_string("single-node test: there is no network")
}

impl RaftNetworkV2<TypeConfig> for NoNetwork {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: VoteOf<TypeConfig>,
        _snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(unreachable()))
    }
}

fn config() -> Arc<Config> {
    let c = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        // Snapshots only when the test asks, and purge everything a snapshot covers.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Config::default()
    };
    Arc::new(c.validate().expect("valid raft config"))
}

async fn start(dir: &std::path::Path) -> (Raft, StateMachineStore) {
    let (log, sm) = open(dir).expect("open store");
    let raft = Raft::new(ID, config(), NoNetwork, log, sm.clone())
        .await
        .expect("raft starts");
    (raft, sm)
}

fn submit(id: &str) -> Command {
    Command::SubmitTasks {
        requests: vec![SubmitRequest {
            request_id: String::new(),
            queue_limit: None,
            submitted_by: String::new(),
            tasks: vec![TaskSpec {
                id: id.to_string(),
                command: vec!["true".into()],
                max_attempts: 1,
                ..TaskSpec::default()
            }],
        }],
        now_ms: 1_700_000_000_000,
    }
}

/// Submits one task and returns (log index, created).
async fn write(raft: &Raft, id: &str) -> (u64, bool) {
    let resp = raft.client_write(submit(id)).await.expect("client write");
    match resp.data {
        Response::Submit(results) => match results.as_slice() {
            [Ok(items)] if items.len() == 1 => (resp.log_id.index, items[0].created),
            other => panic!("unexpected submit result {other:?}"),
        },
        other => panic!("unexpected response {other:?}"),
    }
}

fn tasks(sm: &StateMachineStore) -> Vec<String> {
    sm.read(|s| {
        s.list(&[], None, 1000)
            .tasks
            .iter()
            .map(|t| t.spec.id.clone())
            .collect()
    })
}

#[test]
fn state_survives_restart_via_snapshot_and_reapplied_log() {
    TypeConfig::run(async {
        let dir = TempDir::new().unwrap();
        let last;
        {
            let (raft, sm) = start(dir.path()).await;
            let nodes: BTreeMap<NodeId, BasicNode> =
                [(ID, BasicNode::new("127.0.0.1:1"))].into_iter().collect();
            raft.initialize(nodes).await.expect("initialize");
            raft.wait(WAIT)
                .state(ServerState::Leader, "single node leads")
                .await
                .unwrap();

            let mut applied = sm.subscribe();
            let (i_a, created) = write(&raft, "a").await;
            assert!(created);
            assert!(
                *applied.borrow_and_update() >= i_a,
                "applied index published before the response"
            );
            let (i_b, _) = write(&raft, "b").await;
            assert_eq!(sm.applied_index(), i_b);

            raft.trigger().snapshot().await.unwrap();
            let m = raft
                .wait(WAIT)
                .metrics(|m| m.snapshot.is_some(), "snapshot built")
                .await
                .unwrap();
            let snap = m.snapshot.unwrap();
            assert_eq!(snap.index, i_b);
            raft.wait(WAIT)
                .metrics(|m| m.purged.as_ref().map(|p| p.index) == Some(i_b), "log purged")
                .await
                .unwrap();

            // After the snapshot: carried only by the log.
            let (_, _) = write(&raft, "c").await;
            let (i_d, _) = write(&raft, "d").await;
            last = i_d;
            assert_eq!(tasks(&sm), ["a", "b", "c", "d"]);
            raft.shutdown().await.unwrap();
        }

        let (raft, mut sm) = start(dir.path()).await;
        // Rebuilt inside Raft::new: snapshot (a, b) + re-applied committed log (c, d).
        assert_eq!(tasks(&sm), ["a", "b", "c", "d"]);
        assert_eq!(sm.applied_index(), last);
        assert!(sm.get_current_snapshot().await.unwrap().is_some());

        raft.wait(WAIT)
            .state(ServerState::Leader, "leads again")
            .await
            .unwrap();
        let (_, created) = write(&raft, "a").await;
        assert!(!created, "resubmitting an existing id returns the existing task");
        let (i_e, created) = write(&raft, "e").await;
        assert!(created && i_e > last);
        raft.shutdown().await.unwrap();
    });
}
