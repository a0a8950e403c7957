//! The client workload: concurrent logical clients submitting, reading and cancelling tasks.
//!
//! Each of `clients` workers loops until the time limit. Every operation goes to one master
//! chosen at random (a [`Client`] that knows only that master, with a short deadline), and is
//! recorded as invoke / ok / fail / info ([`crate::history`] conventions):
//! * `ok`: the master answered;
//! * `fail`: a rejection that certainly had no effect (`INVALID_ARGUMENT`, `NOT_FOUND`,
//!   `ALREADY_EXISTS`, `FAILED_PRECONDITION`), and any error of a read (reads have no effect);
//! * `info`: anything else (a timeout, `UNAVAILABLE` after sending, ...). The worker then
//!   continues under a fresh process id, as Jepsen's crashed-process convention requires.
//!
//! The mix: submits (most run a short `sh -c` script that logs its execution, see
//! [`task_script`]; some depend on an earlier acknowledged task; some fail with `exit 1` and
//! `max_attempts = 2`), reads of task states, and cancels of earlier tasks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use taurus_client::Client;
use taurus_client::ClientError;
use taurus_client::v1;
use tonic::Code;

use crate::history::CancelValue;
use crate::history::EventType;
use crate::history::OpValue;
use crate::history::ReadValue;
use crate::history::SubmitValue;
use crate::history::SubmittedTask;
use crate::history::TaskId;
use crate::history::TaskState;
use crate::recorder::Recorder;

/// Settings of one workload run.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Client addresses of the masters.
    pub masters: Vec<String>,
    /// Concurrent workers.
    pub clients: usize,
    /// How long workers keep issuing operations.
    pub time_limit: Duration,
    pub seed: u64,
    /// The directory of the execution logs: each task appends to `<dir>/<agent>.log`.
    pub exec_log: PathBuf,
    /// Deadline of one client call.
    pub deadline: Duration,
    /// When set, every task runs this long (instead of 0.1 s or 0.5 s) and logs progress
    /// lines every [`LONG_TICK`] ([`task_script`]): long enough to be caught running during a fault.
    pub task_duration: Option<Duration>,
    /// Whether clients cancel tasks (the bug-injection proof turns this off, so the tasks the
    /// nemesis strands are rerun rather than cancelled).
    pub cancels: bool,
    /// TLS files and token of a secured cluster (`--secure`); `None`: plain.
    pub security: Option<ClientSecurity>,
}

/// What the workload touched, for the final snapshot.
#[derive(Debug, Default)]
pub struct WorkloadOutcome {
    /// Every task id some submit was invoked for.
    pub submitted: Vec<TaskId>,
    /// Operations recorded per outcome.
    pub counts: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
struct Shared {
    /// Ids of every invoked submit, in order.
    invoked: Vec<TaskId>,
    /// Ids of acknowledged submits (candidates for dependencies).
    acked: Vec<TaskId>,
    counts: BTreeMap<&'static str, u64>,
}

/// Progress tick of the short tasks (0.1 s and 0.5 s long).
pub const SHORT_TICK: Duration = Duration::from_millis(100);

/// Progress tick of the long tasks (`--task-duration`).
pub const LONG_TICK: Duration = Duration::from_millis(500);

/// The shell script of a logging task that runs about `duration`: it appends, in the
/// [`crate::execlog`] format, to its agent's log `$TJ_LOG/<agent>.log`, a start line, a progress
/// line (`end_ns` = now, no `success`) every `tick`, and an end line with `success` (then exits 0,
/// or 1 when `fail`). Every line says `"ticks":true`, so a task killed midway ends, for the
/// checkers, when it was last seen alive (never later than its real end; an overlap shorter
/// than a tick can be missed). Times are the wall clock minus `$TJ_ORIGIN` (the recorder's
/// origin), so they are on the history's clock. The agent id is the name of the agent's work
/// directory (the task runs in `WORK_DIR/tasks/ID-TOKEN`).
pub fn task_script(duration: Duration, tick: Duration, fail: bool) -> String {
    let (success, code) = if fail { ("false", 1) } else { ("true", 0) };
    let tick_ms = tick.as_millis().max(1);
    let ticks = duration.as_millis().div_ceil(tick_ms).max(1);
    let sleep = format!("{}.{:03}", tick_ms / 1000, tick_ms % 1000);
    format!(
        r#"A="${{PWD%/tasks/*}}"; A="${{A##*/}}"
S=$(( $(date +%s%N) - TJ_ORIGIN ))
L="\"task\":\"$TAURUS_TASK_ID\",\"attempt\":$TAURUS_ATTEMPT,\"token\":$TAURUS_FENCING_TOKEN,\"agent\":\"$A\",\"start_ns\":$S,\"ticks\":true"
echo "{{$L}}" >> "$TJ_LOG/$A.log"
i=0
while [ $i -lt {ticks} ]; do
  sleep {sleep}
  i=$((i + 1))
  P=$(( $(date +%s%N) - TJ_ORIGIN ))
  echo "{{$L,\"end_ns\":$P}}" >> "$TJ_LOG/$A.log"
done
E=$(( $(date +%s%N) - TJ_ORIGIN ))
echo "{{$L,\"end_ns\":$E,\"success\":{success}}}" >> "$TJ_LOG/$A.log"
exit {code}"#
    )
}

/// Converts a wire task state.
pub fn task_state(state: i32) -> Option<TaskState> {
    match v1::TaskState::try_from(state).ok()? {
        v1::TaskState::Pending => Some(TaskState::Pending),
        v1::TaskState::Assigned => Some(TaskState::Assigned),
        v1::TaskState::Running => Some(TaskState::Running),
        v1::TaskState::Succeeded => Some(TaskState::Succeeded),
        v1::TaskState::Failed => Some(TaskState::Failed),
        v1::TaskState::Cancelled => Some(TaskState::Cancelled),
        v1::TaskState::TimedOut => Some(TaskState::TimedOut),
        v1::TaskState::Unspecified => None,
    }
}

/// Whether an error certainly means the operation had no effect.
pub fn is_definite_failure(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Rejected {
            code: Code::InvalidArgument | Code::NotFound | Code::AlreadyExists | Code::FailedPrecondition,
            ..
        }
    )
}

/// How clients reach a secured cluster (`--secure`): mutual TLS with these files and a bearer
/// token. `None` in [`connect`]: plain HTTP/2 without credentials.
#[derive(Clone, Debug)]
pub struct ClientSecurity {
    pub tls: taurus_protocol::tls::TlsFiles,
    pub token: String,
}

/// A client of `masters`, over TLS with the token when `security` is given.
pub fn connect(masters: Vec<String>, security: Option<&ClientSecurity>) -> Result<Client, ClientError> {
    match security {
        None => Client::new(masters),
        Some(s) => Client::with_tls(masters, &s.tls)?.with_token(&s.token),
    }
}

/// Runs the workload; returns when every worker has passed the time limit and finished its
/// current operation.
pub async fn run(cfg: WorkloadConfig, recorder: Arc<Recorder>) -> WorkloadOutcome {
    let clients: Vec<Client> = cfg
        .masters
        .iter()
        .map(|m| {
            connect(vec![m.clone()], cfg.security.as_ref())
                .expect("a valid master address and TLS files")
                .with_deadline(cfg.deadline)
                .with_attempt_timeout(cfg.deadline)
        })
        .collect();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let next_process = Arc::new(AtomicU64::new(cfg.clients as u64));
    let next_task = Arc::new(AtomicU64::new(1));
    let stop_at = Instant::now() + cfg.time_limit;
    let mut workers = Vec::new();
    for w in 0..cfg.clients {
        let worker = Worker {
            process: w as u64,
            rng: StdRng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(w as u64)),
            clients: clients.clone(),
            shared: shared.clone(),
            recorder: recorder.clone(),
            next_process: next_process.clone(),
            next_task: next_task.clone(),
            exec_log: cfg.exec_log.display().to_string(),
            origin: recorder.origin_wall_ns().to_string(),
            task_duration: cfg.task_duration,
            cancels: cfg.cancels,
        };
        workers.push(tokio::spawn(worker.run(stop_at)));
    }
    for w in workers {
        let _ = w.await;
    }
    let shared = std::mem::take(&mut *shared.lock().unwrap_or_else(PoisonError::into_inner));
    WorkloadOutcome {
        submitted: shared.invoked,
        counts: shared.counts,
    }
}

struct Worker {
    process: u64,
    rng: StdRng,
    clients: Vec<Client>,
    shared: Arc<Mutex<Shared>>,
    recorder: Arc<Recorder>,
    next_process: Arc<AtomicU64>,
    next_task: Arc<AtomicU64>,
    exec_log: String,
    origin: String,
    task_duration: Option<Duration>,
    cancels: bool,
}

impl Worker {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a completion; after `info`, moves to a fresh process id.
    fn complete(&mut self, kind: EventType, value: OpValue) {
        self.recorder.record(self.process, kind, value);
        let name = match kind {
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
            EventType::Invoke => "invoke",
        };
        *self.shared().counts.entry(name).or_default() += 1;
        if kind == EventType::Info {
            self.process = self.next_process.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn client(&mut self) -> Client {
        let i = self.rng.random_range(0..self.clients.len());
        self.clients[i].clone()
    }

    fn pick(&mut self, acked: bool) -> Option<TaskId> {
        let ids = {
            let s = self.shared();
            if acked { s.acked.clone() } else { s.invoked.clone() }
        };
        if ids.is_empty() {
            return None;
        }
        // Favour recent tasks: they are the ones still changing.
        let from = ids.len().saturating_sub(20);
        let i = self.rng.random_range(from..ids.len());
        Some(ids[i].clone())
    }

    async fn run(mut self, stop_at: Instant) {
        while Instant::now() < stop_at {
            let roll = self.rng.random_range(0..100);
            if roll < 50 {
                self.submit().await;
            } else if roll < 85 || !self.cancels {
                self.read().await;
            } else {
                self.cancel().await;
            }
            let pause = self.rng.random_range(20..120);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    async fn submit(&mut self) {
        let id = format!("t{}", self.next_task.fetch_add(1, Ordering::SeqCst));
        let roll = self.rng.random_range(0..100);
        let fail = roll < 15;
        let dep = if (15..40).contains(&roll) {
            self.pick(true)
        } else {
            None
        };
        let sleep_ms = if self.rng.random_bool(0.5) { 100 } else { 500 };
        let mut spec = v1::TaskSpec {
            id: id.clone(),
            command: vec![
                "sh".into(),
                "-c".into(),
                match self.task_duration {
                    Some(d) => task_script(d, LONG_TICK, fail),
                    None => task_script(Duration::from_millis(sleep_ms), SHORT_TICK, fail),
                },
            ],
            max_attempts: if fail { 2 } else { 3 },
            depends_on: dep.iter().cloned().collect(),
            ..Default::default()
        };
        spec.env.insert("TJ_LOG".into(), self.exec_log.clone());
        spec.env.insert("TJ_ORIGIN".into(), self.origin.clone());
        let invoke = SubmitValue {
            tasks: vec![SubmittedTask {
                id: id.clone(),
                deps: dep.into_iter().collect(),
                created: None,
            }],
        };
        self.shared().invoked.push(id.clone());
        self.recorder
            .record(self.process, EventType::Invoke, OpValue::Submit(invoke.clone()));
        let client = self.client();
        match client.submit(vec![spec]).await {
            Ok(resp) => {
                let tasks = resp
                    .results
                    .iter()
                    .map(|r| SubmittedTask {
                        id: r.id.clone(),
                        deps: Vec::new(),
                        created: Some(r.created),
                    })
                    .collect();
                self.shared().acked.push(id);
                self.complete(EventType::Ok, OpValue::Submit(SubmitValue { tasks }));
            }
            Err(e) if is_definite_failure(&e) => self.complete(EventType::Fail, OpValue::Submit(invoke)),
            Err(_) => self.complete(EventType::Info, OpValue::Submit(invoke)),
        }
    }

    async fn read(&mut self) {
        let acked = self.rng.random_bool(0.8);
        let Some(id) = self.pick(acked) else {
            return;
        };
        let invoke = ReadValue {
            ids: vec![id.clone()],
            states: BTreeMap::new(),
            served_by: None,
            applied_index: None,
        };
        self.recorder
            .record(self.process, EventType::Invoke, OpValue::Read(invoke.clone()));
        let client = self.client();
        match client.get_task(&id, false).await {
            Ok(resp) => {
                let state = resp.task.as_ref().and_then(|t| task_state(t.state));
                let Some(state) = state else {
                    self.complete(EventType::Fail, OpValue::Read(invoke));
                    return;
                };
                let mut done = invoke;
                done.states.insert(id, Some(state));
                done.served_by = resp.read.as_ref().map(|r| r.served_by);
                done.applied_index = resp.read.as_ref().map(|r| r.applied_index);
                self.complete(EventType::Ok, OpValue::Read(done));
            }
            Err(e) if e.code() == Some(Code::NotFound) && matches!(e, ClientError::Rejected { .. }) => {
                let mut done = invoke;
                done.states.insert(id, None);
                self.complete(EventType::Ok, OpValue::Read(done));
            }
            // A read has no effect: any error is a certain failure.
            Err(_) => self.complete(EventType::Fail, OpValue::Read(invoke)),
        }
    }

    async fn cancel(&mut self) {
        let Some(id) = self.pick(true) else {
            return;
        };
        let invoke = CancelValue {
            id: id.clone(),
            cancelled: None,
            state: None,
            log_index: None,
        };
        self.recorder
            .record(self.process, EventType::Invoke, OpValue::Cancel(invoke.clone()));
        let client = self.client();
        match client.cancel_task(&id, "jepsen workload").await {
            Ok(resp) => {
                let done = CancelValue {
                    id,
                    cancelled: Some(resp.cancelled),
                    state: task_state(resp.state),
                    log_index: Some(resp.log_index),
                };
                self.complete(EventType::Ok, OpValue::Cancel(done));
            }
            Err(e) if is_definite_failure(&e) => self.complete(EventType::Fail, OpValue::Cancel(invoke)),
            Err(_) => self.complete(EventType::Info, OpValue::Cancel(invoke)),
        }
    }
}
