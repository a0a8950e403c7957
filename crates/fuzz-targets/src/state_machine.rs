//! The state machine target: random but interacting command sequences, invariants after every
//! command, determinism and snapshot round trips at the end.
//!
//! The bytes drive a small hand-written generator ([`CommandGen`]) rather than a derived
//! `Arbitrary` on [`Command`]: ids come from small pools so commands meet (dependencies on tasks
//! that exist, placements of pending tasks on registered agents, reports with the current fencing
//! token or a stale one), and the generator peeks at the state for tokens and epochs so that
//! most commands get past the first check. Time moves forward, sometimes far, sometimes
//! backward, sometimes to the ends of the `u64` range.
//!
//! A new [`Command`] variant is one more arm in [`CommandGen::command`]; the checks look at
//! responses with `if let`, never with an exhaustive `match`, so new variants compile here
//! without changes.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;

use arbitrary::Unstructured;
use serde::Serialize;
use taurus_core::Command;
use taurus_core::Response;
use taurus_core::State;
use taurus_core::Task;
use taurus_core::TaskSpec;
use taurus_core::TaskState;
use taurus_core::acl::NewToken;
use taurus_core::acl::Role;
use taurus_core::command::Placement;
use taurus_core::command::ReportEvent;
use taurus_core::command::ReportOutcome;
use taurus_core::command::SubmitRequest;
use taurus_core::command::TaskReport;
use taurus_core::state::StateImage;
use taurus_core::types::AgentInfo;
use taurus_core::types::AgentState;
use taurus_core::types::AttemptEnd;
use taurus_core::types::LogIndex;
use taurus_core::types::Resources;
use taurus_store::codec;

/// Task ids commands draw from (small, so that commands interact).
pub const TASK_IDS: [&str; 8] = ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"];
/// Agent ids commands draw from.
pub const AGENT_IDS: [&str; 3] = ["a0", "a1", "a2"];
/// Ids that must be rejected (empty, bad characters, too long) or that name nothing.
const ODD_IDS: [&str; 4] = ["", "bad id", "ghost", "x"];
const POOLS: [&str; 3] = ["", "gpu", "batch"];
/// Most commands one input makes (keeps one execution short).
const MAX_COMMANDS: usize = 200;
/// Where the clock starts.
const EPOCH_MS: u64 = 1_700_000_000_000;

/// Fuzz target: never panics on any input, and panics (a finding) when an invariant breaks.
pub fn fuzz_state_machine(data: &[u8]) {
    let mut u = Unstructured::new(data);
    // Where a snapshot is taken and restored into a second replica.
    let snapshot_at = usize::from(u.arbitrary::<u8>().unwrap_or(0));
    let mut generator = CommandGen::new(u);
    let mut state = State::new();
    let mut history = History::default();
    let mut log: Vec<(LogIndex, Command, Response)> = Vec::new();
    let mut snapshot: Option<(usize, State)> = None;

    while log.len() < MAX_COMMANDS && !generator.u.is_empty() {
        if log.len() == snapshot_at {
            snapshot = Some((log.len(), state.clone()));
        }
        let (index, cmd) = generator.command(&state);
        let before = state.clone();
        let resp = state.apply(index, cmd.clone());
        check_response(&before, &state, index, &cmd, &resp);
        check_state(&state, index);
        history.check_and_update(&state, index, matches!(cmd, Command::PurgeFinished { .. }));
        log.push((index, cmd, resp));
    }
    let last_index = log.last().map_or(0, |(i, _, _)| *i);

    // Determinism: a fresh replica applying the same log answers and ends identically.
    let mut replica = State::new();
    for (index, cmd, resp) in &log {
        let again = replica.apply(*index, cmd.clone());
        assert_eq!(
            &again, resp,
            "a second replica answered entry {index} differently"
        );
    }
    assert_eq!(
        image_bytes(&replica),
        image_bytes(&state),
        "two replicas applying the same log differ"
    );

    // A replica restored from a snapshot taken part way continues identically.
    if let Some((at, snap)) = snapshot {
        let mut restored = round_trip(&snap);
        check_state(&restored, log.get(at).map_or(last_index, |(i, _, _)| *i));
        for (index, cmd, resp) in &log[at..] {
            let again = restored.apply(*index, cmd.clone());
            assert_eq!(
                &again, resp,
                "a replica restored from the snapshot before entry {index} answered it differently"
            );
        }
        assert_eq!(
            image_bytes(&restored),
            image_bytes(&state),
            "a replica restored from a snapshot ends differently"
        );
    }

    // Snapshot round trip of the final state: same image, same invariants.
    let restored = round_trip(&state);
    assert_eq!(image_bytes(&restored), image_bytes(&state));
    check_state(&restored, last_index);
}

/// The snapshot encoding of a state's image (MessagePack with named fields, as the store
/// writes it).
fn image_bytes(state: &State) -> Vec<u8> {
    codec::encode(&state.image()).expect("a state image encodes")
}

/// Encodes a state's image, decodes it and rebuilds a state from it, as a follower installing
/// a snapshot does.
fn round_trip(state: &State) -> State {
    let image: StateImage = codec::decode(&image_bytes(state)).expect("a state image decodes");
    State::from_image(image).expect("a state's own image is accepted")
}

// ---------------------------------------------------------------------------------------------
// The generator

/// Turns bytes into commands. Once the bytes run out, every choice takes its first option.
pub struct CommandGen<'a> {
    pub u: Unstructured<'a>,
    index: LogIndex,
    now_ms: u64,
}

/// The commands the generator makes, with the fields it sets. It has the serde shape of
/// [`Command`] and becomes one through the store's codec ([`Gen::into_command`]), so a field
/// added to a command later (with `#[serde(default)]`, as every field of a logged command must
/// be) takes its default here instead of breaking this crate. A new command kind is one more
/// variant here and one more arm in [`CommandGen::command`].
#[derive(Serialize)]
pub(crate) enum Gen {
    SubmitTasks {
        requests: Vec<SubmitRequest>,
        now_ms: u64,
    },
    CancelTask {
        id: String,
        reason: String,
        now_ms: u64,
        by: String,
        only_own: bool,
    },
    RegisterAgent {
        agent: AgentInfo,
        now_ms: u64,
    },
    SetAgentState {
        id: String,
        epoch: Option<LogIndex>,
        state: AgentState,
        reason: String,
        now_ms: u64,
    },
    RequestAgentExit {
        id: String,
        deadline_ms: Option<u64>,
        reason: String,
        now_ms: u64,
    },
    Assign {
        placements: Vec<Placement>,
        now_ms: u64,
    },
    Report {
        reports: Vec<TaskReport>,
        now_ms: u64,
    },
    Tick {
        now_ms: u64,
    },
    AclBootstrap {
        token: NewToken,
        now_ms: u64,
    },
    CreateToken {
        token: NewToken,
        now_ms: u64,
    },
    RevokeToken {
        id: String,
        now_ms: u64,
    },
    PurgeFinished {
        finished_before_ms: u64,
        keep_finished: u64,
        max: u32,
    },
}

impl Gen {
    pub(crate) fn into_command(self) -> Command {
        let bytes = codec::encode(&self).expect("a generated command encodes");
        codec::decode(&bytes).expect("a generated command is a Command")
    }
}

impl<'a> CommandGen<'a> {
    pub fn new(u: Unstructured<'a>) -> Self {
        Self {
            u,
            index: 0,
            now_ms: EPOCH_MS,
        }
    }

    /// A number in `0..n` (`n >= 1`).
    fn below(&mut self, n: usize) -> usize {
        self.u.int_in_range(0..=n.saturating_sub(1)).unwrap_or(0)
    }

    /// True with probability about `percent` / 100.
    fn chance(&mut self, percent: u8) -> bool {
        self.u.ratio(percent.min(100), 100).unwrap_or(false)
    }

    fn pick<T: Copy>(&mut self, options: &[T]) -> T {
        options[self.below(options.len())]
    }

    /// The next log index (gaps stand for blank and membership entries) and command.
    pub fn command(&mut self, state: &State) -> (LogIndex, Command) {
        self.index += 1 + self.below(3) as u64;
        self.advance_clock();
        let now_ms = self.now_ms;
        // One arm per command kind; weights by repetition.
        let cmd = match self.below(20) {
            0..=3 => Gen::SubmitTasks {
                requests: (0..1 + self.below(3)).map(|_| self.request()).collect(),
                now_ms,
            },
            4 => Gen::CancelTask {
                id: self.task_id(),
                reason: self.text(),
                now_ms,
                by: self.pick(&["", "alice", "bob"]).to_string(),
                only_own: self.chance(30),
            },
            5 | 6 => Gen::RegisterAgent {
                agent: self.agent_info(),
                now_ms,
            },
            7 => {
                let id = self.agent_id();
                let epoch = match self.below(4) {
                    0 => None,
                    1 => Some(self.u.arbitrary().unwrap_or(0)),
                    _ => state.agent(&id).map(|a| a.epoch),
                };
                Gen::SetAgentState {
                    id,
                    epoch,
                    state: self.pick(&AgentState::ALL),
                    reason: self.text(),
                    now_ms,
                }
            }
            8..=10 => Gen::Assign {
                placements: (0..1 + self.below(4)).map(|_| self.placement(state)).collect(),
                now_ms,
            },
            11..=13 => Gen::Report {
                reports: (0..1 + self.below(3)).map(|_| self.report(state)).collect(),
                now_ms,
            },
            14 => Gen::RequestAgentExit {
                id: self.agent_id(),
                deadline_ms: self.pick(&[None, Some(0), Some(1_000), Some(u64::MAX)]),
                reason: self.text(),
                now_ms,
            },
            16 => Gen::PurgeFinished {
                finished_before_ms: match self.below(3) {
                    0 => now_ms.saturating_sub(self.below(5_000) as u64),
                    1 => self.u.arbitrary().unwrap_or(0),
                    _ => now_ms,
                },
                keep_finished: self.pick(&[0, 1, 3, u64::MAX]),
                max: self.pick(&[0, 1, 2, 100]),
            },
            17 => {
                let token = self.new_token();
                if self.chance(50) {
                    Gen::AclBootstrap { token, now_ms }
                } else {
                    Gen::CreateToken { token, now_ms }
                }
            }
            18 => Gen::RevokeToken {
                id: self.pick(&["acl-1", "acl-2", "acl-3", "", "acl-x"]).to_string(),
                now_ms,
            },
            _ => Gen::Tick { now_ms },
        };
        (self.index, cmd.into_command())
    }

    /// Mostly a little forward; sometimes far forward, backward, or to an extreme.
    fn advance_clock(&mut self) {
        self.now_ms = match self.below(20) {
            0..=11 => self.now_ms.saturating_add(self.below(2_000) as u64),
            12..=14 => {
                self.now_ms
                    .saturating_add(self.pick(&[10_000u64, 3_600_000, 86_400_000, 40 * 86_400_000]))
            }
            15..=17 => self.now_ms.saturating_sub(self.below(20_000) as u64),
            18 => self.pick(&[0, 1, EPOCH_MS, u64::MAX - 1, u64::MAX]),
            _ => self.now_ms,
        };
    }

    fn task_id(&mut self) -> String {
        if self.chance(95) {
            self.pick(&TASK_IDS).to_string()
        } else {
            self.odd_id()
        }
    }

    fn agent_id(&mut self) -> String {
        if self.chance(95) {
            self.pick(&AGENT_IDS).to_string()
        } else {
            self.odd_id()
        }
    }

    fn odd_id(&mut self) -> String {
        match self.below(ODD_IDS.len() + 1) {
            0 => "i".repeat(200),
            n => ODD_IDS[n - 1].to_string(),
        }
    }

    /// Free text: mostly short, sometimes arbitrary, now and then longer than any limit (and
    /// multi-byte, so truncation must cut on a char boundary).
    fn text(&mut self) -> String {
        match self.below(10) {
            0..=5 => self.pick(&["", "r", "because", "é"]).to_string(),
            6..=8 => self.u.arbitrary::<&str>().unwrap_or("").to_string(),
            _ => "é€".repeat(1 + self.below(5_000)),
        }
    }

    fn request(&mut self) -> SubmitRequest {
        SubmitRequest {
            tasks: (0..1 + self.below(3)).map(|_| self.spec()).collect(),
            request_id: self.pick(&["", "", "req-1", "req-2"]).to_string(),
            queue_limit: self.pick(&[None, None, None, Some(0), Some(3), Some(6)]),
            submitted_by: self.pick(&["", "alice", "bob"]).to_string(),
        }
    }

    /// A token to create: roles, agents, hashes (repeating, so duplicates are tried) and
    /// expiries drawn from small pools.
    fn new_token(&mut self) -> NewToken {
        let role = self.pick(&[Role::Read, Role::Submit, Role::Operator, Role::Admin, Role::Agent]);
        NewToken {
            name: self.pick(&["", "ci", "ops", "é"]).to_string(),
            role,
            agent: match self.below(3) {
                0 => None,
                _ => Some(self.agent_id()),
            },
            secret_sha256: self
                .pick(&[
                    "00".repeat(32).as_str(),
                    "ab".repeat(32).as_str(),
                    "cd".repeat(32).as_str(),
                    "xyz",
                ])
                .to_string(),
            created_by: "fuzz".to_string(),
            expires_at_ms: self.pick(&[None, Some(0), Some(self.now_ms.saturating_add(1_000))]),
            rate_per_sec: self.pick(&[None, Some(0), Some(10)]),
        }
    }

    fn spec(&mut self) -> TaskSpec {
        let mut spec = TaskSpec {
            id: self.task_id(),
            command: vec!["/bin/true".to_string()],
            priority: self.below(5) as i32 - 2,
            resources: Resources {
                cpu_millis: self.pick(&[0, 500, 1_000, 3_000]),
                memory_mb: self.pick(&[0, 256, 1_024]),
                disk_mb: self.pick(&[0, 0, 10]),
            },
            timeout_ms: self.pick(&[0, 0, 100, 60_000]),
            max_attempts: self.pick(&[1, 1, 2, 3, 0]),
            backoff_ms: self.pick(&[1_000, 0, 10, 3_600_000]),
            pool: self.pick(&POOLS).to_string(),
            deadline_ms: self.pick(&[0, 0, 0, 50, 1_000, 60_000]),
            ..TaskSpec::default()
        };
        for _ in 0..self.below(3) {
            let dep = self.task_id();
            spec.depends_on.push(dep);
        }
        if self.chance(10) {
            spec.constraints.insert("zone".into(), "a".into());
        }
        if self.chance(3) {
            spec.command.clear();
        }
        spec
    }

    fn agent_info(&mut self) -> AgentInfo {
        let mut info = AgentInfo {
            id: self.agent_id(),
            address: "host".to_string(),
            resources: Resources {
                cpu_millis: self.pick(&[4_000, 1_000, 0]),
                memory_mb: self.pick(&[8_192, 1_024, 0]),
                disk_mb: self.pick(&[100, 0]),
            },
            max_tasks: self.pick(&[2, 1, 4, 0]),
            pool: self.pick(&POOLS).to_string(),
            ..AgentInfo::default()
        };
        if self.chance(50) {
            info.labels.insert("zone".into(), "a".into());
        }
        info
    }

    fn placement(&mut self, state: &State) -> Placement {
        let task_id = self.task_id();
        let agent_id = self.agent_id();
        let epoch = state.agent(&agent_id).map_or(0, |a| a.epoch);
        let agent_epoch = match self.below(8) {
            0 => epoch.saturating_sub(1),
            1 => self.u.arbitrary().unwrap_or(0),
            _ => epoch,
        };
        let token = state.get(&task_id).and_then(Task::current_token);
        let move_from = match self.below(8) {
            0 | 1 => token,
            2 => Some(self.u.arbitrary().unwrap_or(0)),
            _ => None,
        };
        Placement {
            task_id,
            agent_id,
            agent_epoch,
            move_from,
        }
    }

    fn report(&mut self, state: &State) -> TaskReport {
        let task_id = self.task_id();
        let task = state.get(&task_id);
        let current = task.and_then(|t| t.attempts.last());
        let (mut agent_id, mut token) = current.map_or_else(
            || (AGENT_IDS[0].to_string(), 0),
            |a| (a.agent_id.clone(), a.fencing_token),
        );
        match self.below(8) {
            // An older attempt's token (a zombie), or any token.
            0 => {
                if let Some(t) = task.filter(|t| !t.attempts.is_empty()) {
                    let i = self.below(t.attempts.len());
                    token = t.attempts[i].fencing_token;
                }
            }
            1 => token = self.u.arbitrary().unwrap_or(0),
            // The right token from the wrong agent.
            2 => agent_id = self.agent_id(),
            _ => {}
        }
        let event = if self.chance(40) {
            ReportEvent::Started
        } else {
            let end = match self.below(12) {
                0..=4 => AttemptEnd::Succeeded,
                5..=7 => AttemptEnd::Failed,
                8 => AttemptEnd::TimedOut,
                9 => AttemptEnd::Killed,
                // Ends only the state machine decides: an agent reporting them is invalid.
                _ => self.pick(&[AttemptEnd::Cancelled, AttemptEnd::Lost, AttemptEnd::Moved]),
            };
            ReportEvent::Finished {
                end,
                exit_code: self.pick(&[None, Some(0), Some(1), Some(-9), Some(i32::MIN)]),
                error: self.text(),
                stdout_tail: self.text(),
                stderr_tail: self.text(),
            }
        };
        TaskReport {
            task_id,
            agent_id,
            token,
            event,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Invariants

/// What one command's answer must say, given the state before and after it.
fn check_response(before: &State, after: &State, index: LogIndex, cmd: &Command, resp: &Response) {
    if let (
        Command::PurgeFinished {
            finished_before_ms,
            keep_finished,
            max,
        },
        Response::Purged(n),
    ) = (cmd, resp)
    {
        let gone: Vec<&Task> = before
            .list(&[], None, usize::MAX)
            .tasks
            .into_iter()
            .filter(|t| after.get(&t.spec.id).is_none())
            .collect();
        assert_eq!(gone.len() as u64, *n, "purge count");
        assert!(*n <= u64::from(*max), "purged more than max");
        for t in &gone {
            assert!(
                t.state.is_terminal(),
                "{}: an unfinished task was purged",
                t.spec.id
            );
        }
        // Oldest first: nothing kept finished before anything purged.
        if let Some(newest_gone) = gone.iter().map(|t| (t.updated_at_ms, t.spec.id.clone())).max() {
            for t in after.list(&[], None, usize::MAX).tasks {
                if t.state.is_terminal() {
                    assert!(
                        (t.updated_at_ms, t.spec.id.clone()) > newest_gone,
                        "{}: kept while a newer finished task was purged",
                        t.spec.id
                    );
                }
            }
        }
        if *n < u64::from(*max) {
            assert!(
                !after.purge_due(*finished_before_ms, *keep_finished),
                "a purge under its max left purgeable tasks"
            );
        }
    }

    if let (Command::SubmitTasks { requests, .. }, Response::Submit(results)) = (cmd, resp) {
        assert_eq!(results.len(), requests.len(), "one result per request");
        // Ids created by an earlier request of the same entry.
        let mut seen = BTreeSet::new();
        for (req, result) in requests.iter().zip(results) {
            if let Ok(submitted) = result {
                assert_eq!(submitted.len(), req.tasks.len(), "one answer per task");
                for (spec, s) in req.tasks.iter().zip(submitted) {
                    assert_eq!(s.id, spec.id);
                    let task = after.get(&s.id).expect("a submitted task exists");
                    if before.get(&s.id).is_none() && seen.insert(s.id.clone()) {
                        assert!(s.created, "{}: a new task is reported created", s.id);
                        assert_eq!(task.created_index, index);
                    }
                }
            }
        }
    }
    if let (Command::Assign { placements, .. }, Response::Assigned(results)) = (cmd, resp) {
        assert_eq!(results.len(), placements.len(), "one result per placement");
        for (p, result) in placements.iter().zip(results) {
            if result.is_err() {
                continue;
            }
            let agent = before.agent(&p.agent_id).expect("placed on a known agent");
            assert_eq!(
                agent.state,
                AgentState::Alive,
                "placed on a {} agent",
                agent.state
            );
            assert_eq!(agent.epoch, p.agent_epoch, "placed under a stale epoch");
            let task = after.get(&p.task_id).expect("a placed task exists");
            let attempt = task
                .current_attempt()
                .expect("a placed task has a current attempt");
            assert_eq!(task.state, TaskState::Assigned);
            assert_eq!(
                attempt.fencing_token, index,
                "the token is the Assign entry's index"
            );
            assert_eq!(attempt.agent_id, p.agent_id);
        }
    }
    if let (Command::Report { reports, .. }, Response::Reported(outcomes)) = (cmd, resp) {
        assert_eq!(outcomes.len(), reports.len(), "one outcome per report");
        for (r, outcome) in reports.iter().zip(outcomes) {
            if *outcome != ReportOutcome::Accepted {
                continue;
            }
            // Fencing: only the current token from the agent holding it is accepted.
            let task = before
                .get(&r.task_id)
                .expect("a report is accepted for a known task");
            let current = task
                .current_attempt()
                .expect("a report is accepted only for a current attempt");
            assert_eq!(
                current.fencing_token, r.token,
                "{}: accepted a stale token",
                r.task_id
            );
            assert_eq!(
                current.agent_id, r.agent_id,
                "{}: accepted another agent's report",
                r.task_id
            );
            if let ReportEvent::Finished { end, .. } = &r.event {
                let task = after.get(&r.task_id).expect("tasks are never removed");
                let attempt = task
                    .attempts
                    .iter()
                    .find(|a| a.fencing_token == r.token)
                    .expect("the reported attempt is kept");
                assert_eq!(
                    attempt.end,
                    Some(*end),
                    "{}: the accepted end is recorded",
                    r.task_id
                );
            }
        }
    }
}

/// Everything that must hold between the tasks, the agents and the indexes, at any time.
pub fn check_state(st: &State, index: LogIndex) {
    let terminal = st
        .list(&[], None, usize::MAX)
        .tasks
        .iter()
        .filter(|t| t.state.is_terminal())
        .count();
    assert_eq!(
        st.finished_len(),
        terminal,
        "the finished index disagrees with the tasks"
    );
    assert_eq!(
        st.unfinished() + terminal,
        st.len(),
        "unfinished + finished != all tasks"
    );

    let tasks: Vec<&Task> = st.list(&[], None, usize::MAX).tasks;
    assert_eq!(tasks.len(), st.len(), "listing sees every task");
    // Each created task takes one seq; purged ones keep theirs used.
    assert!(
        st.image().next_seq >= tasks.len() as u64,
        "each created task takes one seq"
    );
    let mut seqs = BTreeSet::new();
    let mut per_state = [0usize; 7];
    // What each agent should hold, derived from the tasks: task -> token, and the sum of needs.
    let mut held: BTreeMap<String, (BTreeMap<String, LogIndex>, Resources)> = BTreeMap::new();
    let mut runnable_expected: Vec<(String, Reverse<i32>, u64, String)> = Vec::new();
    let mut delayed = 0usize;
    let mut due: Option<u64> = None;

    for t in &tasks {
        let id = &t.spec.id;
        assert!(seqs.insert(t.seq), "{id}: seq {} repeats", t.seq);
        per_state[t.state.index()] += 1;
        assert!(
            t.created_index <= t.log_index && t.log_index <= index,
            "{id}: created {} / changed {} / now {index}",
            t.created_index,
            t.log_index
        );
        assert!(
            t.attempts_used() <= t.spec.max_attempts,
            "{id}: more attempts than allowed"
        );

        // Attempts: numbered 1.., tokens strictly increasing and not from the future, all but
        // the current one ended.
        for (i, a) in t.attempts.iter().enumerate() {
            assert_eq!(a.number as usize, i + 1, "{id}: attempt numbering");
            assert!(a.fencing_token <= index, "{id}: token from the future");
            if i > 0 {
                assert!(
                    t.attempts[i - 1].fencing_token < a.fencing_token,
                    "{id}: fencing tokens must increase"
                );
            }
            if i + 1 < t.attempts.len() {
                assert!(
                    a.end.is_some(),
                    "{id}: attempt {} is open but not the last",
                    a.number
                );
            }
        }
        // A dependency may be gone only when it was purged, which takes finished tasks only:
        // it had succeeded (a failed or cancelled one would have ended this task too). A task
        // created later under a purged id is not this task's dependency.
        let deps: Vec<&Task> = t
            .spec
            .depends_on
            .iter()
            .filter_map(|d| st.get(d))
            .filter(|d| d.created_index <= t.created_index)
            .collect();
        match t.state {
            TaskState::Assigned | TaskState::Running => {
                let a = t.attempts.last().expect("an assigned task has an attempt");
                assert!(a.end.is_none(), "{id}: {} with an ended attempt", t.state);
                assert_eq!(
                    a.started_at_ms.is_some(),
                    t.state == TaskState::Running,
                    "{id}: running exactly when started"
                );
                let agent = st
                    .agent(&a.agent_id)
                    .unwrap_or_else(|| panic!("{id} is on unknown agent {}", a.agent_id));
                assert_ne!(agent.state, AgentState::Down, "{id} is on a down agent");
                assert!(
                    a.fencing_token > agent.epoch,
                    "{id}: placed before its agent's epoch"
                );
                let book = held.entry(a.agent_id.clone()).or_default();
                book.0.insert(id.clone(), a.fencing_token);
                book.1 = plus(book.1, &t.spec.resources);
            }
            _ => {
                if let Some(a) = t.attempts.last() {
                    assert!(a.end.is_some(), "{id}: {} with an open attempt", t.state);
                }
            }
        }
        // Dependencies: nothing starts before all its dependencies succeeded.
        if matches!(
            t.state,
            TaskState::Assigned | TaskState::Running | TaskState::Succeeded
        ) {
            for d in &deps {
                assert_eq!(d.state, TaskState::Succeeded, "{id} ran before {}", d.spec.id);
            }
        }
        if t.state == TaskState::Pending {
            let unmet = deps.iter().filter(|d| d.state != TaskState::Succeeded).count();
            assert_eq!(t.unmet_deps as usize, unmet, "{id}: unmet dependency count");
            for d in &deps {
                assert!(
                    matches!(
                        d.state,
                        TaskState::Succeeded | TaskState::Pending | TaskState::Assigned | TaskState::Running
                    ),
                    "{id} is pending on {} which is {}",
                    d.spec.id,
                    d.state
                );
            }
            if t.unmet_deps == 0 {
                if t.not_before_ms == 0 {
                    runnable_expected.push((
                        t.spec.pool.clone(),
                        Reverse(t.spec.priority),
                        t.seq,
                        id.clone(),
                    ));
                } else {
                    delayed += 1;
                    due = Some(due.map_or(t.not_before_ms, |d| d.min(t.not_before_ms)));
                }
            }
        }
        if !t.state.is_terminal()
            && let Some(at) = t.deadline_at_ms()
        {
            due = Some(due.map_or(at, |d| d.min(at)));
        }
    }
    assert!(seqs.iter().all(|s| *s < st.image().next_seq));

    for s in TaskState::ALL {
        assert_eq!(st.count(s), per_state[s.index()], "count({s})");
        let listed = st.list(&[s], None, usize::MAX).tasks;
        assert_eq!(listed.len(), per_state[s.index()], "list({s})");
        assert!(
            listed.iter().all(|t| t.state == s),
            "list({s}) holds another state"
        );
    }

    // The queue: exactly the pending tasks with no unmet dependency and no back-off, in pool,
    // priority, submission order; the same tasks oldest first; the delayed ones apart.
    runnable_expected.sort();
    let runnable: Vec<&String> = st.runnable().collect();
    assert_eq!(
        runnable,
        runnable_expected.iter().map(|k| &k.3).collect::<Vec<_>>(),
        "runnable queue"
    );
    assert_eq!(st.runnable_len(), runnable_expected.len());
    let mut by_seq: Vec<(String, u64)> = runnable_expected.iter().map(|k| (k.0.clone(), k.2)).collect();
    by_seq.sort();
    let oldest: Vec<(String, u64)> = st
        .runnable_oldest()
        .map(|t| (t.spec.pool.clone(), t.seq))
        .collect();
    assert_eq!(oldest, by_seq, "runnable queue, oldest first");
    assert_eq!(st.delayed_len(), delayed, "delayed tasks");
    assert_eq!(st.next_due_ms(), due, "next due time");

    // Agents' books equal what their tasks say; a down agent holds nothing; nothing is over
    // committed.
    for agent in st.agents() {
        let id = &agent.info.id;
        assert!(agent.epoch <= index, "{id}: epoch from the future");
        let (tasks, used) = held.remove(id).unwrap_or_default();
        let listed: BTreeMap<String, LogIndex> =
            st.agent_tasks(id).map(|(t, tok)| (t.clone(), tok)).collect();
        assert_eq!(listed, tasks, "{id}: assigned tasks index");
        assert_eq!(agent.tasks as usize, tasks.len(), "{id}: task count");
        assert_eq!(agent.used, used, "{id}: resources in use");
        if agent.state == AgentState::Down {
            assert!(tasks.is_empty(), "{id} is down but holds tasks");
        }
        assert!(agent.tasks <= agent.info.max_tasks, "{id}: over its slots");
        let (have, cap) = (agent.used, agent.info.resources);
        assert!(
            have.cpu_millis <= cap.cpu_millis
                && have.memory_mb <= cap.memory_mb
                && have.disk_mb <= cap.disk_mb,
            "{id}: over its resources"
        );
    }
    assert!(held.is_empty(), "tasks on agents that do not exist: {held:?}");
    for id in AGENT_IDS.iter().chain(ODD_IDS.iter()) {
        if st.agent(id).is_none() {
            assert_eq!(st.agent_tasks(id).count(), 0, "{id}: unknown agent holds tasks");
        }
    }
}

fn plus(a: Resources, b: &Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis.saturating_add(b.cpu_millis),
        memory_mb: a.memory_mb.saturating_add(b.memory_mb),
        disk_mb: a.disk_mb.saturating_add(b.disk_mb),
    }
}

/// What must hold between successive states: ids are never lost or re-created, terminal tasks
/// and ended attempts never change, log indexes and epochs never go back.
#[derive(Default)]
struct History {
    tasks: HashMap<String, Task>,
    epochs: HashMap<String, LogIndex>,
}

impl History {
    fn check_and_update(&mut self, st: &State, index: LogIndex, purge: bool) {
        // Only a purge forgets tasks, and only finished ones; a forgotten id may come back new.
        self.tasks.retain(|id, old| {
            if st.get(id).is_some() {
                return true;
            }
            assert!(purge && old.state.is_terminal(), "task {id} disappeared");
            false
        });
        for (id, old) in &self.tasks {
            let Some(t) = st.get(id) else { continue };
            assert_eq!(t.spec, old.spec, "{id}: spec changed");
            assert_eq!(t.seq, old.seq, "{id}: seq changed");
            assert_eq!(t.created_index, old.created_index, "{id}: re-created");
            assert_eq!(t.request_id, old.request_id, "{id}: request id changed");
            if old.state.is_terminal() {
                assert_eq!(t, old, "{id}: a terminal task changed");
            }
            assert!(t.log_index >= old.log_index, "{id}: log index went back");
            assert!(t.attempts.len() >= old.attempts.len(), "{id}: attempts lost");
            for (a, b) in old.attempts.iter().zip(&t.attempts) {
                if a.end.is_some() {
                    assert_eq!(a, b, "{id}: an ended attempt changed");
                }
            }
            // A change is stamped with the entry that made it.
            if t != old {
                assert_eq!(
                    t.log_index,
                    index,
                    "{id}: changed without its log index: {}",
                    changed_fields(old, t)
                );
            }
        }
        for agent in st.agents() {
            let id = &agent.info.id;
            if let Some(old) = self.epochs.get(id) {
                assert!(agent.epoch >= *old, "{id}: epoch went back");
            }
            self.epochs.insert(id.clone(), agent.epoch);
        }
        assert!(self.epochs.len() == st.agents().count(), "an agent disappeared");
        for t in st.list(&[], None, usize::MAX).tasks {
            self.tasks.insert(t.spec.id.clone(), t.clone());
        }
    }
}

/// The fields that differ between two versions of a task, for messages.
fn changed_fields(a: &Task, b: &Task) -> String {
    let mut out = Vec::new();
    let fields: [(&str, bool); 8] = [
        ("state", a.state != b.state),
        ("attempts", a.attempts != b.attempts),
        ("reason", a.reason != b.reason),
        ("unmet_deps", a.unmet_deps != b.unmet_deps),
        ("not_before_ms", a.not_before_ms != b.not_before_ms),
        ("queued_at_ms", a.queued_at_ms != b.queued_at_ms),
        ("updated_at_ms", a.updated_at_ms != b.updated_at_ms),
        ("log_index", a.log_index != b.log_index),
    ];
    for (name, differs) in fields {
        if differs {
            out.push(name);
        }
    }
    out.join(", ")
}
