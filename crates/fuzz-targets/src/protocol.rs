//! The protocol target: protobuf bytes as a master (or an agent, or a client) receives them,
//! decoded with prost, converted with `taurus_protocol::convert`, validated with
//! `taurus_core::validate` the way the services do, and applied to a small state.
//!
//! The first byte picks the message type; the rest is its encoding. Decoding may fail (that is
//! an answer); nothing may panic, and a message that decodes must encode and decode again to the
//! same message.

use std::sync::OnceLock;

use prost::Message;
use taurus_core::Response;
use taurus_core::State;
use taurus_core::TaskSpec;
use taurus_core::TaskState;
use taurus_core::command::Placement;
use taurus_core::command::SubmitRequest;
use taurus_core::types::AgentInfo;
use taurus_core::types::AgentState;
use taurus_core::types::Resources;
use taurus_core::validate;
use taurus_protocol::convert;
use taurus_protocol::internal;
use taurus_protocol::v1;

use crate::raft_codec;
use crate::state_machine::Gen;

/// Message types, in selector order.
const KINDS: u8 = 34;

/// Fuzz target: never panics on any input.
pub fn fuzz_protocol(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % KINDS {
        // Requests a master serves (public API).
        0 => {
            if let Some(m) = decode::<v1::SubmitTasksRequest>(bytes) {
                submit(&[m]);
            }
        }
        1 => {
            if let Some(m) = decode::<v1::SubmitManyRequest>(bytes) {
                submit(&m.requests);
            }
        }
        2 => {
            if let Some(m) = decode::<v1::RegisterAgentRequest>(bytes) {
                register(m);
            }
        }
        3 => {
            if let Some(m) = decode::<v1::ReportTaskStatusRequest>(bytes) {
                report(m);
            }
        }
        4 => {
            if let Some(mut m) = decode::<v1::HeartbeatRequest>(bytes) {
                let _ = validate::validate_id(&m.agent_id);
                for r in &m.running {
                    let _ = validate::validate_id(&r.task_id);
                }
                // NaN is not equal to itself: compare the rest.
                let again = decode::<v1::HeartbeatRequest>(&m.encode_to_vec()).expect("re-decodes");
                m.load = 0.0;
                assert_eq!(m, v1::HeartbeatRequest { load: 0.0, ..again });
            }
        }
        5 => {
            if let Some(m) = decode::<v1::ListTasksRequest>(bytes) {
                list(m);
            }
        }
        6 => {
            if let Some(m) = decode::<v1::CancelTaskRequest>(bytes) {
                cancel(m);
            }
        }
        7 => {
            if let Some(m) = decode::<v1::GetTaskRequest>(bytes)
                && validate::validate_id(&m.id).is_ok()
            {
                let _ = base().get(&m.id).map(v1::Task::from);
            }
        }
        8 => {
            if let Some(m) = decode::<v1::WatchTaskRequest>(bytes) {
                let _ = validate::validate_id(&m.id);
            }
        }
        9 => {
            if let Some(m) = decode::<v1::WatchAssignmentsRequest>(bytes)
                && validate::validate_id(&m.agent_id).is_ok()
            {
                let _ = base().agent_tasks(&m.agent_id).count();
            }
        }
        10 => {
            if let Some(m) = decode::<v1::SetAgentDrainRequest>(bytes) {
                drain(m);
            }
        }
        11 => {
            if let Some(m) = decode::<v1::GetAgentRequest>(bytes)
                && validate::validate_id(&m.id).is_ok()
            {
                let _ = base().agent(&m.id).map(v1::AgentInfo::from);
            }
        }
        12 => drop(decode::<v1::ListAgentsRequest>(bytes)),
        13 => drop(decode::<v1::ClusterStatusRequest>(bytes)),
        14 => drop(decode::<v1::AddMasterRequest>(bytes)),
        15 => drop(decode::<v1::RemoveMasterRequest>(bytes)),
        16 => drop(decode::<v1::TransferLeaderRequest>(bytes)),
        // Replies agents and clients decode.
        17 => drop(decode::<v1::SubmitTasksResponse>(bytes)),
        18 => drop(decode::<v1::SubmitManyResponse>(bytes)),
        19 => drop(decode::<v1::GetTaskResponse>(bytes)),
        20 => drop(decode::<v1::ListTasksResponse>(bytes)),
        21 => drop(decode::<v1::CancelTaskResponse>(bytes)),
        22 => drop(decode::<v1::WatchTaskEvent>(bytes)),
        23 => drop(decode::<v1::RegisterAgentResponse>(bytes)),
        24 => drop(decode::<v1::HeartbeatResponse>(bytes)),
        25 => {
            // An agent turns each assignment's spec into a domain spec.
            if let Some(m) = decode::<v1::AssignmentBatch>(bytes) {
                for a in m.assign {
                    let spec = TaskSpec::from(a.spec.unwrap_or_default());
                    let _ = validate::validate_spec(&spec);
                }
            }
        }
        26 => drop(decode::<v1::ReportTaskStatusResponse>(bytes)),
        27 => drop(decode::<v1::ListAgentsResponse>(bytes)),
        28 => drop(decode::<v1::GetAgentResponse>(bytes)),
        29 => drop(decode::<v1::ClusterStatus>(bytes)),
        // Master-to-master: the envelope, then its MessagePack payload.
        30 => {
            if let Some(m) = decode::<internal::RaftMessage>(bytes) {
                raft_codec::fuzz_raft_codec(&m.data);
            }
        }
        31 => {
            if let Some(m) = decode::<internal::SnapshotChunk>(bytes) {
                raft_codec::fuzz_raft_codec(&m.data);
            }
        }
        32 => drop(decode::<internal::ReadIndexResponse>(bytes)),
        _ => drop(decode::<internal::NodeInfoResponse>(bytes)),
    }
}

/// Decodes a message; when it decodes, its encoding must decode to the same message.
fn decode<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let m = M::decode(bytes).ok()?;
    let encoded = m.encode_to_vec();
    let again = M::decode(encoded.as_slice()).expect("a decoded message's encoding decodes");
    // Floats (NaN) aside, which callers compare themselves.
    if format!("{m:?}").contains("NaN") {
        return Some(m);
    }
    assert_eq!(again, m, "encode/decode round trip");
    Some(m)
}

/// A small state the requests act on: agent `a0` (epoch 1) holding `t0` (token 3), `t1`
/// pending, `t2` succeeded.
fn base() -> &'static State {
    static BASE: OnceLock<State> = OnceLock::new();
    BASE.get_or_init(|| {
        let now_ms = 1_700_000_000_000;
        let mut st = State::new();
        let agent = AgentInfo {
            id: "a0".into(),
            resources: Resources {
                cpu_millis: 4_000,
                memory_mb: 4_096,
                disk_mb: 1_000,
            },
            max_tasks: 4,
            ..AgentInfo::default()
        };
        apply(&mut st, 1, Gen::RegisterAgent { agent, now_ms });
        let spec = |id: &str| TaskSpec {
            id: id.into(),
            command: vec!["/bin/true".into()],
            ..TaskSpec::default()
        };
        apply(
            &mut st,
            2,
            Gen::SubmitTasks {
                requests: vec![SubmitRequest {
                    tasks: vec![spec("t0"), spec("t1"), spec("t2")],
                    ..SubmitRequest::default()
                }],
                now_ms,
            },
        );
        let place = |id: &str| Placement {
            task_id: id.into(),
            agent_id: "a0".into(),
            agent_epoch: 1,
            move_from: None,
        };
        apply(
            &mut st,
            3,
            Gen::Assign {
                placements: vec![place("t0"), place("t2")],
                now_ms,
            },
        );
        let done = taurus_core::command::TaskReport {
            task_id: "t2".into(),
            agent_id: "a0".into(),
            token: 3,
            event: taurus_core::command::ReportEvent::Finished {
                end: taurus_core::types::AttemptEnd::Succeeded,
                exit_code: Some(0),
                error: String::new(),
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            },
        };
        apply(
            &mut st,
            4,
            Gen::Report {
                reports: vec![done],
                now_ms,
            },
        );
        st
    })
}

const INDEX: u64 = 10;

fn apply(st: &mut State, index: u64, cmd: Gen) -> Response {
    st.apply(index, cmd.into_command())
}
const NOW_MS: u64 = 1_700_000_001_000;

/// What `TaskService::SubmitTasks`/`SubmitMany` do with requests: convert, validate, apply.
fn submit(requests: &[v1::SubmitTasksRequest]) {
    let mut accepted = Vec::new();
    for msg in requests {
        let tasks: Vec<TaskSpec> = msg.tasks.iter().cloned().map(TaskSpec::from).collect();
        for spec in &tasks {
            // The domain spec survives a trip over the wire and back.
            assert_eq!(&TaskSpec::from(v1::TaskSpec::from(spec)), spec, "spec round trip");
        }
        if validate::validate_request_id(&msg.request_id).is_err()
            || validate::validate_request(&tasks).is_err()
        {
            continue;
        }
        accepted.push(SubmitRequest {
            tasks,
            request_id: msg.request_id.clone(),
            ..SubmitRequest::default()
        });
    }
    if accepted.is_empty() {
        return;
    }
    let mut st = base().clone();
    let resp = apply(
        &mut st,
        INDEX,
        Gen::SubmitTasks {
            requests: accepted,
            now_ms: NOW_MS,
        },
    );
    if let Response::Submit(results) = resp {
        for s in results.into_iter().flatten().flatten() {
            let task = st.get(&s.id).expect("a submitted task exists");
            let _ = v1::Task::from(task).encode_to_vec();
        }
    }
}

/// What `AgentService::RegisterAgent` does.
fn register(msg: v1::RegisterAgentRequest) {
    let info = convert::agent_info_from_register(msg);
    if validate::validate_agent(&info).is_err() {
        return;
    }
    let mut st = base().clone();
    let id = info.id.clone();
    apply(
        &mut st,
        INDEX,
        Gen::RegisterAgent {
            agent: info,
            now_ms: NOW_MS,
        },
    );
    let agent = st.agent(&id).expect("a registered agent exists");
    let _ = v1::AgentInfo::from(agent).encode_to_vec();
}

/// What `AgentService::ReportTaskStatus` does.
fn report(msg: v1::ReportTaskStatusRequest) {
    if validate::validate_id(&msg.agent_id).is_err() {
        return;
    }
    let reports: Result<Vec<_>, _> = msg
        .reports
        .iter()
        .enumerate()
        .map(|(i, r)| convert::task_report(&msg.agent_id, r.clone(), &format!("reports[{i}]")))
        .collect();
    let Ok(reports) = reports else { return };
    let ids: Vec<String> = reports.iter().map(|r| r.task_id.clone()).collect();
    let mut st = base().clone();
    let resp = apply(
        &mut st,
        INDEX,
        Gen::Report {
            reports,
            now_ms: NOW_MS,
        },
    );
    if let Response::Reported(outcomes) = resp {
        assert_eq!(outcomes.len(), ids.len());
        for (id, o) in ids.into_iter().zip(outcomes) {
            let _ = convert::report_result(id, o).encode_to_vec();
        }
    }
}

/// What `TaskService::ListTasks` does with the filter and the page.
fn list(msg: v1::ListTasksRequest) {
    let states: Result<Vec<TaskState>, _> = msg
        .states
        .iter()
        .enumerate()
        .map(|(i, s)| convert::task_state_from_i32(*s, &format!("states[{i}]")))
        .collect();
    let Ok(states) = states else { return };
    let after = (!msg.page_token.is_empty()).then_some(msg.page_token.as_str());
    let limit = if msg.page_size == 0 {
        100
    } else {
        msg.page_size.min(1000) as usize
    };
    let page = base().list(&states, after, limit);
    for t in page.tasks {
        let _ = v1::Task::from(t);
    }
}

/// What `TaskService::CancelTask` does.
fn cancel(msg: v1::CancelTaskRequest) {
    if validate::validate_id(&msg.id).is_err() || msg.reason.len() > validate::MAX_REASON_LEN {
        return;
    }
    apply(
        &mut base().clone(),
        INDEX,
        Gen::CancelTask {
            id: msg.id,
            reason: msg.reason,
            now_ms: NOW_MS,
            by: "fuzz".into(),
            only_own: true,
        },
    );
}

/// What `AgentService::SetAgentDrain` does.
fn drain(msg: v1::SetAgentDrainRequest) {
    if validate::validate_id(&msg.id).is_err() || msg.reason.len() > validate::MAX_REASON_LEN {
        return;
    }
    apply(
        &mut base().clone(),
        INDEX,
        Gen::SetAgentState {
            id: msg.id,
            epoch: None,
            state: if msg.drain {
                AgentState::Draining
            } else {
                AgentState::Alive
            },
            reason: msg.reason,
            now_ms: NOW_MS,
        },
    );
}
