//! The agent runtime: registration, the assignment feed, claims, heartbeats, the lease, and
//! shutdown. One actor ([`Runtime`]) owns all state; everything else (registration, the watch
//! stream, heartbeat calls, the reporter, running attempts) is a task that sends it
//! [`Event`]s. Events carry the registration generation they belong to, so that the answers
//! of an older incarnation are ignored.
//!
//! # The life of an attempt on the agent
//!
//! 1. `WatchAssignments` delivers an `Assignment` the agent does not know yet.
//! 2. **Claim**: the agent queues a STARTED report. It spawns nothing until a master answers
//!    `accepted` (or `duplicate`, a retry of an accepted claim); on `stale` or `invalid` it
//!    forgets the attempt. An attempt moved or fenced before its claim is applied never runs.
//! 3. **Run**: [`Executor::run`] runs it.
//! 4. **Report**: the FINISHED report is queued and retried until acknowledged.
//!
//! At any time a `stop` entry (feed or heartbeat answer) or a `stale` verdict kills the
//! attempt at once and forgets it without a report: the masters have already moved on.
//!
//! # Fencing
//!
//! Only an acknowledged heartbeat (or registration) renews the [`Lease`], counted from when it
//! was sent. When the lease runs out the agent kills every attempt, forgets them without
//! reporting, and registers again for a fresh epoch. Being told to re-register (feed or
//! heartbeat answer) does the same.
//!
//! Every renewal is also passed to the executor, which tells each attempt's supervisor: the
//! supervisors kill their attempts at the deadline themselves, even when this actor cannot run
//! (the process is paused). An attempt that ends that way means the lease ran out: the agent
//! fences itself as above.
//!
//! # Shutdown
//!
//! When the `shutdown` future completes the agent tells the masters it is draining (so the
//! scheduler gives it no new work), stops claiming, lets running attempts go on for
//! `drain_timeout` (0: not at all), kills what is left (SIGTERM, SIGKILL after `kill_grace`;
//! the attempt is reported `killed` with "the agent's drain deadline passed"), reports how each
//! attempt ended, and waits up to `report_flush_timeout` for the reports to be acknowledged.
//! Heartbeats go on meanwhile, so the lease still holds.
//!
//! A heartbeat answer with `exit` (an operator ran `taurus agent drain ID --exit`; the masters
//! have marked the agent draining already) starts the same sequence, with the deadline the
//! answer gives (or `drain_timeout`), and [`run`] returns `Ok` once it is done, as after a
//! signal.

use std::collections::HashMap;
use std::collections::HashSet;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use taurus_protocol::v1;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::AgentConfig;
use crate::config::ResolvedConfig;
use crate::error::AgentError;
use crate::exec::End;
use crate::exec::ExecRequest;
use crate::exec::Executor;
use crate::exec::KillSwitch;
use crate::exec::Outcome;
use crate::exec::StopReason;
use crate::lease::Lease;
use crate::lease::LoadAverage;
use crate::lease::utilisation;
use crate::masters::Masters;
use crate::masters::RpcError;
use crate::masters::backoff;
use crate::metrics::Metrics;
use crate::reporter::Acked;
use crate::reporter::Reporter;
use crate::reporter::ReporterSettings;
use crate::reporter::Verdict;

/// Back-off bounds between registration attempts and between assignment-stream reconnects.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Window of the load average sent in heartbeats.
const LOAD_WINDOW: Duration = Duration::from_secs(60);
/// Finished or dropped attempts are remembered (so that a replayed assignment is not run
/// again) for at least this long...
const DONE_KEEP: Duration = Duration::from_secs(600);
/// ...or, whatever their age, while there are fewer than this many...
const DONE_MIN: usize = 4096;
/// ...but never more than this many.
const DONE_MAX: usize = 1_000_000;
/// How long the HTTP port may take to finish its requests at shutdown.
const HTTP_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs an agent until `shutdown` completes: resolves the configuration, kills what a previous
/// incarnation left running, registers, and serves assignments. Returns `Ok` after a graceful
/// shutdown; an error only when the agent cannot work at all (configuration, work directory,
/// registration refused).
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let settings = config.resolve()?;
    run_resolved(settings, shutdown).await
}

/// The environment variable of the deliberately unsafe escape hatch that disables self-fencing
/// (see `unsafe_no_fence_from_env`).
pub const UNSAFE_NO_FENCE_ENV: &str = "TAURUS_AGENT_UNSAFE_NO_FENCE";

/// Reads `TAURUS_AGENT_UNSAFE_NO_FENCE` once, at agent start. **Never set it in production.**
///
/// It exists only to prove that the failure-injection suite (`jepsen-tests`, `--inject-bug
/// no-fence`) catches a broken agent. When it is `1`, the agent disables self-fencing: it does
/// not kill its attempts when its lease expires, and it tells the task supervisors no lease
/// deadline, so they do not kill at the deadline either. A cut-off agent then keeps running
/// tasks the leader has given to another agent: tasks may run twice at once. Everything else
/// (epoch fencing after re-registration, the leader's stop lists, kills on cancel) is
/// unchanged. Any other value, or no variable, leaves the agent safe; a loud warning is logged
/// at every start while it is set.
fn unsafe_no_fence_from_env() -> bool {
    let on = std::env::var_os(UNSAFE_NO_FENCE_ENV).is_some_and(|v| v == "1");
    if on {
        tracing::warn!(
            env = UNSAFE_NO_FENCE_ENV,
            "UNSAFE: self-fencing disabled; tasks may run twice"
        );
    }
    on
}

/// Says at every start how tasks are confined, and warns when a root agent runs them as root.
fn warn_about_exec_settings(exec: &crate::sandbox::ExecSettings, executor: &Executor) {
    use crate::sandbox::TaskUser;
    let limits = if executor.uses_cgroups() {
        "cgroup v2"
    } else {
        "rlimits (no CPU limit)"
    };
    match exec.user {
        // SAFETY: geteuid has no preconditions.
        TaskUser::Agent if unsafe { libc::geteuid() } == 0 => tracing::warn!(
            limits,
            "tasks run as root, like the agent: set exec.dynamic_uids (one uid per task) or \
             exec.user in the agent configuration"
        ),
        TaskUser::Agent => tracing::info!(
            limits,
            "tasks run as the agent's user: they can read each other's files and the agent's"
        ),
        TaskUser::Fixed { uid, gid } => tracing::info!(
            uid,
            gid,
            limits,
            "tasks run as one user: they can read each other's files"
        ),
        TaskUser::Dynamic { first, last } => {
            tracing::info!(first, last, limits, "every task runs with a uid of its own")
        }
    }
}

/// [`run`] for a configuration resolved already. The HTTP port, if configured
/// (`http.listen`), is bound here.
pub async fn run_resolved(
    settings: ResolvedConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let http = match settings.http_listen {
        Some(addr) => Some(crate::http::bind(addr).await?),
        None => None,
    };
    run_with_http(settings, http, shutdown).await
}

/// [`run_resolved`] with the HTTP port's listener bound already (tests bind port 0 first);
/// `None`: no HTTP port, whatever `http_listen` says.
pub async fn run_with_http(
    settings: ResolvedConfig,
    http: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let span = tracing::info_span!("agent", agent = %settings.id);
    if settings.insecure_remote {
        tracing::warn!(
            masters = ?settings.masters,
            "INSECURE: talking to remote masters without TLS (--insecure); commands, outputs and \
             tokens cross the network in clear text and anyone can pose as a master"
        );
    }
    async move {
        let mut executor = Executor::new(
            &settings.work_dir,
            settings.output_tail_bytes,
            settings.kill_grace,
        )?
        .with_exec_settings(settings.exec.clone())?;
        warn_about_exec_settings(&settings.exec, &executor);
        if let Some(program) = &settings.supervisor {
            if !program.exists() {
                return Err(AgentError::Config(format!(
                    "supervisor: {} does not exist",
                    program.display()
                )));
            }
            executor = executor.with_supervisor(program);
        } else {
            tracing::warn!(
                "no task supervisor: a task's background processes outlive a SIGKILLed agent \
                 (until it starts again), and a paused agent's tasks run on past its lease"
            );
        }
        let executor = Arc::new(executor);
        // Held until the agent stops: a second agent on this directory would kill our tasks
        // as "leftovers".
        let _lock = lock_work_dir(&settings.work_dir)?;
        // Before registering: nothing of an older incarnation may run under the new epoch.
        let exec = executor.clone();
        let killed = tokio::task::spawn_blocking(move || exec.kill_leftovers())
            .await
            .map_err(|e| AgentError::io("killing leftover process groups", std::io::Error::other(e)))??;
        if !killed.is_empty() {
            tracing::warn!(groups = ?killed, "killed process groups left by a previous incarnation");
        }
        let tls = match &settings.tls {
            Some(files) => Some(
                files
                    .client_config()
                    .map_err(|e| AgentError::Config(format!("tls.{e}")))?,
            ),
            None => None,
        };
        let masters = Arc::new(Masters::new(
            &settings.masters,
            tls.as_ref(),
            settings.token.as_deref(),
            settings.connect_timeout,
            settings.rpc_timeout,
        )?);
        tracing::info!(
            masters = ?settings.masters,
            work_dir = %settings.work_dir.display(),
            cpu_millis = settings.cpu_millis,
            memory_mb = settings.memory_mb,
            disk_mb = settings.disk_mb,
            max_tasks = settings.max_tasks,
            "agent starting"
        );
        let unsafe_no_fence = unsafe_no_fence_from_env();
        let metrics = Arc::new(Metrics::new(settings.max_tasks, executor.clone()));
        let http = http.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(http = %addr, "serving /metrics and /healthz");
            }
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(crate::http::serve(listener, metrics.clone(), async {
                let _ = stopped.await;
            }));
            (stop, task)
        });
        let mut runtime = Runtime::new(settings, masters, executor, metrics);
        runtime.unsafe_no_fence = unsafe_no_fence;
        let result = runtime.run(shutdown).await;
        if let Some((stop, mut task)) = http {
            let _ = stop.send(());
            match tokio::time::timeout(HTTP_STOP_TIMEOUT, &mut task).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "http server"),
                Ok(_) => {}
                Err(_) => task.abort(),
            }
        }
        result
    }
    .instrument(span)
    .await
}

/// What the runtime hears from its tasks.
enum Event {
    Registered {
        generation: u64,
        epoch: u64,
        sent_at: Instant,
        lost: Vec<String>,
    },
    RegisterRejected(AgentError),
    Batch {
        generation: u64,
        batch: v1::AssignmentBatch,
    },
    Heartbeat {
        generation: u64,
        answer: Result<(Instant, v1::HeartbeatResponse), RpcError>,
    },
    Acked(Vec<Acked>),
    Finished {
        task_id: String,
        run: u64,
        outcome: Outcome,
    },
}

/// An attempt the agent holds.
struct Slot {
    token: u64,
    attempt: u32,
    demand: v1::Resources,
    /// W3C `traceparent` of the task (empty: untraced); the run's span is its child.
    trace_parent: String,
    /// Identifies one execution, so that the end of a killed-and-forgotten run is ignored.
    run: u64,
    state: SlotState,
}

enum SlotState {
    /// STARTED sent, waiting for the verdict.
    Claiming(ExecRequest),
    Running(KillSwitch),
}

struct Runtime {
    s: Arc<ResolvedConfig>,
    masters: Arc<Masters>,
    exec: Arc<Executor>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    reporter: Reporter,
    /// Bumped by every (re)registration.
    generation: u64,
    /// The current epoch; `None` while registering.
    epoch: Option<u64>,
    last_registration: Option<Instant>,
    register_task: Option<JoinHandle<()>>,
    watch_task: Option<JoinHandle<()>>,
    heartbeat_in_flight: bool,
    lease: Lease,
    load: LoadAverage,
    /// Attempts held, by task id.
    slots: HashMap<String, Slot>,
    done: RecentlyDone,
    next_run: u64,
    shutting_down: bool,
    drain_deadline: Option<Instant>,
    /// [`UNSAFE_NO_FENCE_ENV`] is set: never fence on lease expiry, never tell supervisors the
    /// lease. `false` unless that variable is `1`.
    unsafe_no_fence: bool,
    metrics: Arc<Metrics>,
}

impl Runtime {
    fn new(s: ResolvedConfig, masters: Arc<Masters>, exec: Arc<Executor>, metrics: Arc<Metrics>) -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let acked_tx = events_tx.clone();
        let reporter = Reporter::start(
            masters.clone(),
            ReporterSettings {
                agent_id: s.id.clone(),
                batch_max: s.report_batch_max,
                backoff_min: s.report_backoff_min,
                backoff_max: s.report_backoff_max,
            },
            move |acked| {
                let _ = acked_tx.send(Event::Acked(acked));
            },
        );
        Self {
            lease: Lease::new(s.lease_timeout),
            s: Arc::new(s),
            masters,
            exec,
            events_tx,
            events_rx,
            reporter,
            generation: 0,
            epoch: None,
            last_registration: None,
            register_task: None,
            watch_task: None,
            heartbeat_in_flight: false,
            load: LoadAverage::new(LOAD_WINDOW),
            slots: HashMap::new(),
            done: RecentlyDone::default(),
            next_run: 0,
            shutting_down: false,
            drain_deadline: None,
            unsafe_no_fence: false,
            metrics,
        }
    }

    async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        self.start_registration();
        let mut heartbeat = tokio::time::interval(self.s.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            if self.shutting_down && self.slots.is_empty() {
                break Ok(());
            }
            // With the unsafe escape hatch there is no lease timer: nothing self-fences.
            let lease_end = if self.unsafe_no_fence {
                None
            } else {
                self.epoch.and(self.lease.expires_at())
            };
            tokio::select! {
                biased;
                () = &mut shutdown, if !self.shutting_down => {
                    self.tell_masters_draining();
                    self.begin_shutdown("signal", self.s.drain_timeout);
                }
                () = sleep_until(lease_end), if lease_end.is_some() => self.maybe_fence(),
                () = sleep_until(self.drain_deadline), if self.drain_deadline.is_some() => self.end_drain(),
                Some(event) = self.events_rx.recv() => {
                    if let Err(e) = self.handle(event) {
                        break Err(e);
                    }
                }
                _ = heartbeat.tick() => self.maybe_heartbeat(),
            }
            self.metrics.slots_used.set(self.slots.len() as i64);
        };
        self.stop_feed();
        if let Some(t) = self.register_task.take() {
            t.abort();
        }
        if result.is_err() {
            self.kill_all(StopReason::Fenced);
        }
        let queued = self.reporter.unacked();
        let given_up = self.reporter.flush(self.s.report_flush_timeout).await;
        if given_up > 0 {
            tracing::warn!(
                given_up,
                queued,
                "shutting down with reports no master acknowledged"
            );
        }
        tracing::info!("agent stopped");
        result
    }

    fn handle(&mut self, event: Event) -> Result<(), AgentError> {
        match event {
            Event::Registered {
                generation,
                epoch,
                sent_at,
                lost,
            } => self.on_registered(generation, epoch, sent_at, lost),
            // Retrying cannot help: stop the agent.
            Event::RegisterRejected(e) => return Err(e),
            Event::Batch { generation, batch } if generation == self.generation => self.on_batch(batch),
            // The feed of an older registration.
            Event::Batch { .. } => {}
            Event::Heartbeat { generation, answer } => self.on_heartbeat(generation, answer),
            Event::Acked(acked) => self.on_acked(acked),
            Event::Finished {
                task_id,
                run,
                outcome,
            } => self.on_finished(task_id, run, outcome),
        }
        Ok(())
    }

    // --- registration --------------------------------------------------------------------

    /// Forgets the current epoch and registers again (in the background, until a master
    /// answers). The caller has killed whatever ran under the old epoch.
    fn start_registration(&mut self) {
        self.generation += 1;
        self.epoch = None;
        self.lease.clear();
        self.stop_feed();
        if let Some(t) = self.register_task.take() {
            t.abort();
        }
        // Being told to re-register again right after registering: do not spin.
        let delay = match self.last_registration {
            Some(at) if at.elapsed() < RECONNECT_BACKOFF_MAX => {
                backoff(3, RECONNECT_BACKOFF_MIN, RECONNECT_BACKOFF_MAX)
            }
            _ => Duration::ZERO,
        };
        self.last_registration = Some(Instant::now());
        let s = &self.s;
        let request = v1::RegisterAgentRequest {
            id: s.id.clone(),
            address: s.address.clone(),
            resources: Some(v1::Resources {
                cpu_millis: s.cpu_millis,
                memory_mb: s.memory_mb,
                disk_mb: s.disk_mb,
            }),
            max_tasks: s.max_tasks,
            labels: s.labels.clone().into_iter().collect(),
            pool: s.pool.clone(),
        };
        let generation = self.generation;
        let masters = self.masters.clone();
        let tx = self.events_tx.clone();
        let task = async move {
            tokio::time::sleep(delay).await;
            let mut retry = 0u32;
            loop {
                let sent_at = Instant::now();
                let req = request.clone();
                let answer = masters
                    .call(
                        "register agent",
                        |mut c| async move { c.register_agent(req).await },
                    )
                    .await;
                let failure = match answer {
                    Ok(r) if r.epoch > 0 => {
                        let _ = tx.send(Event::Registered {
                            generation,
                            epoch: r.epoch,
                            sent_at,
                            lost: r.lost,
                        });
                        return;
                    }
                    Ok(_) => "a master answered epoch 0".to_string(),
                    Err(e) if e.is_rejection() => {
                        let _ = tx.send(Event::RegisterRejected(AgentError::Rejected {
                            op: "register agent",
                            master: e.master,
                            code: e.code.unwrap_or(tonic::Code::InvalidArgument),
                            message: e.message,
                        }));
                        return;
                    }
                    Err(e) => e.to_string(),
                };
                if retry < 3 || retry.is_multiple_of(20) {
                    tracing::warn!(error = %failure, attempts = retry + 1, "cannot register yet; retrying");
                }
                tokio::time::sleep(backoff(retry, RECONNECT_BACKOFF_MIN, RECONNECT_BACKOFF_MAX)).await;
                retry = retry.saturating_add(1);
            }
        };
        self.register_task = Some(tokio::spawn(task.in_current_span()));
    }

    fn on_registered(&mut self, generation: u64, epoch: u64, sent_at: Instant, lost: Vec<String>) {
        if generation != self.generation {
            return;
        }
        self.register_task = None;
        self.epoch = Some(epoch);
        self.metrics.epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
        self.lease.renew(sent_at, None);
        self.push_lease_deadline();
        tracing::info!(epoch, lost = lost.len(), "registered");
        if self.shutting_down {
            return;
        }
        let watch = watch_loop(
            self.masters.clone(),
            self.s.id.clone(),
            epoch,
            generation,
            self.events_tx.clone(),
        );
        self.watch_task = Some(tokio::spawn(
            watch.instrument(tracing::info_span!("watch", epoch)),
        ));
    }

    /// Kills everything and registers again.
    fn reregister(&mut self, why: &str) {
        tracing::warn!(
            epoch = ?self.epoch,
            attempts = self.slots.len(),
            why,
            "epoch no longer current: killing every attempt and registering again"
        );
        self.kill_all(StopReason::Fenced);
        self.metrics.fenced.inc();
        self.metrics.epoch.set(0);
        if self.shutting_down {
            self.epoch = None;
            self.lease.clear();
            self.stop_feed();
        } else {
            self.start_registration();
        }
    }

    fn stop_feed(&mut self) {
        if let Some(t) = self.watch_task.take() {
            t.abort();
        }
    }

    // --- assignments -----------------------------------------------------------------------

    fn on_batch(&mut self, batch: v1::AssignmentBatch) {
        if batch.reregister {
            self.reregister("the assignment feed said so");
            return;
        }
        for stop in batch.stop {
            self.maybe_drop(&stop.task_id, stop.fencing_token, "no longer assigned here");
        }
        for assignment in batch.assign {
            self.maybe_claim(assignment);
        }
    }

    /// Claims an assignment the agent does not know yet: queues its STARTED report.
    fn maybe_claim(&mut self, a: v1::Assignment) {
        let Some(spec) = a.spec else {
            tracing::warn!(token = a.fencing_token, "assignment without a task spec; ignored");
            return;
        };
        let token = a.fencing_token;
        if self.done.contains(&spec.id, token) {
            return;
        }
        if let Some(slot) = self.slots.get(&spec.id) {
            if slot.token >= token {
                return; // known already, or older than the attempt held
            }
            let old = slot.token;
            self.maybe_drop(&spec.id, old, "replaced by a newer attempt");
        }
        if self.shutting_down || !self.lease.is_held(Instant::now()) {
            return;
        }
        if self.slots.len() >= self.s.max_tasks as usize {
            tracing::warn!(
                task = %spec.id,
                held = self.slots.len(),
                max_tasks = self.s.max_tasks,
                "assigned more attempts than max_tasks; running it anyway"
            );
        }
        let request = ExecRequest {
            task_id: spec.id.clone(),
            attempt: a.attempt,
            token,
            command: spec.command,
            env: spec.env.into_iter().collect(),
            timeout: (spec.timeout_ms > 0).then(|| Duration::from_millis(spec.timeout_ms)),
            cpu_millis: spec.resources.as_ref().map_or(0, |r| r.cpu_millis),
            memory_mb: spec.resources.as_ref().map_or(0, |r| r.memory_mb),
        };
        tracing::debug!(task = %spec.id, attempt = a.attempt, token, "claiming");
        self.reporter.send(v1::TaskStatusReport {
            task_id: spec.id.clone(),
            fencing_token: token,
            kind: v1::ReportKind::Started as i32,
            ..Default::default()
        });
        self.slots.insert(
            spec.id,
            Slot {
                token,
                attempt: a.attempt,
                demand: spec.resources.unwrap_or_default(),
                trace_parent: spec.trace_parent,
                run: 0,
                state: SlotState::Claiming(request),
            },
        );
    }

    /// Starts a claimed attempt.
    fn start(&mut self, task_id: &str) {
        let Some(slot) = self.slots.get_mut(task_id) else {
            return;
        };
        let switch = KillSwitch::new();
        let SlotState::Claiming(request) =
            std::mem::replace(&mut slot.state, SlotState::Running(switch.clone()))
        else {
            return;
        };
        self.next_run += 1;
        slot.run = self.next_run;
        let run = slot.run;
        let span = if slot.trace_parent.is_empty() {
            tracing::info_span!("attempt", task = %task_id, attempt = slot.attempt, token = slot.token)
        } else {
            // A traced task: the run joins the submitter's trace (`taurus_protocol::trace`).
            let span = tracing::info_span!(
                "attempt",
                task = %task_id,
                attempt = slot.attempt,
                token = slot.token,
                otel.kind = "internal",
                otel.name = "run"
            );
            taurus_protocol::trace::set_parent(&span, &slot.trace_parent);
            span
        };
        let exec = self.exec.clone();
        let tx = self.events_tx.clone();
        let task_id = task_id.to_string();
        let metrics = self.metrics.clone();
        let task = async move {
            tracing::debug!("running");
            metrics.started.inc();
            metrics.running.inc();
            let began = Instant::now();
            let outcome = exec.run(&request, &switch).await;
            metrics.running.dec();
            metrics.attempt_ended(&outcome, began.elapsed());
            let _ = tx.send(Event::Finished {
                task_id,
                run,
                outcome,
            });
        };
        tokio::spawn(task.instrument(span));
    }

    fn on_finished(&mut self, task_id: String, run: u64, outcome: Outcome) {
        let Some(slot) = self.slots.get(&task_id) else {
            return; // killed and forgotten
        };
        if slot.run != run {
            return;
        }
        let token = slot.token;
        if outcome.lease_expired() {
            // Its supervisor saw the lease run out before we did (we were paused, or an answer
            // renewed our lease too late for it): the masters may give the task to someone
            // else, so this attempt is not reported, and whatever else runs is fenced too.
            tracing::error!(
                task = %task_id,
                attempt = slot.attempt,
                token,
                "LEASE EXPIRED: the attempt's supervisor killed it at the lease deadline"
            );
            self.reregister("a task supervisor saw the lease expire");
            return;
        }
        // Per-task events are DEBUG (thousands a second); an attempt that did not succeed is
        // worth an INFO line.
        if outcome.end == End::Succeeded {
            tracing::debug!(task = %task_id, attempt = slot.attempt, token, "finished");
        } else {
            tracing::info!(
                task = %task_id,
                attempt = slot.attempt,
                token,
                end = %outcome.end,
                exit_code = ?outcome.exit_code,
                error = %outcome.error,
                "finished"
            );
        }
        self.slots.remove(&task_id);
        self.done.insert(&task_id, token);
        self.reporter.send(v1::TaskStatusReport {
            task_id,
            fencing_token: token,
            kind: v1::ReportKind::Finished as i32,
            end: outcome.end.as_str().to_string(),
            exit_code: outcome.exit_code,
            error: outcome.error,
            stdout_tail: outcome.stdout_tail,
            stderr_tail: outcome.stderr_tail,
        });
    }

    fn on_acked(&mut self, acked: Vec<Acked>) {
        for a in acked {
            let held = self.slots.get(&a.task_id).is_some_and(|s| s.token == a.token);
            match (a.kind, &a.verdict) {
                (v1::ReportKind::Started, v) if v.is_applied() => {
                    let claiming = held
                        && matches!(
                            self.slots.get(&a.task_id).map(|s| &s.state),
                            Some(SlotState::Claiming(_))
                        );
                    if claiming && !self.shutting_down && self.lease.is_held(Instant::now()) {
                        self.start(&a.task_id);
                    } else if claiming {
                        self.maybe_drop(&a.task_id, a.token, "claimed while the agent cannot run it");
                    }
                }
                (_, Verdict::Stale) => {
                    tracing::info!(
                        task = %a.task_id,
                        token = a.token,
                        kind = a.kind.as_str_name(),
                        message = %a.message,
                        "report stale: the attempt is no longer current"
                    );
                    self.maybe_drop(&a.task_id, a.token, "stale");
                }
                (_, v) if v.is_applied() => {}
                (_, v) => {
                    tracing::error!(
                        task = %a.task_id,
                        token = a.token,
                        kind = a.kind.as_str_name(),
                        verdict = ?v,
                        message = %a.message,
                        "report rejected; dropping it"
                    );
                    self.maybe_drop(&a.task_id, a.token, "report rejected");
                }
            }
        }
    }

    /// Kills (if running) and forgets the attempt of `task_id` with `token`, if held. No report.
    fn maybe_drop(&mut self, task_id: &str, token: u64, why: &str) {
        if self.slots.get(task_id).is_none_or(|s| s.token != token) {
            return;
        }
        if let Some(slot) = self.slots.remove(task_id) {
            if let SlotState::Running(switch) = &slot.state {
                switch.kill(StopReason::Stopped);
                tracing::info!(task = %task_id, attempt = slot.attempt, token, why, "attempt killed");
            } else {
                tracing::info!(task = %task_id, attempt = slot.attempt, token, why, "claim dropped");
            }
            self.done.insert(task_id, token);
        }
    }

    /// Kills every attempt at once and forgets them all, without reports.
    fn kill_all(&mut self, reason: StopReason) {
        for (task_id, slot) in self.slots.drain() {
            if let SlotState::Running(switch) = &slot.state {
                switch.kill(reason);
            }
            self.done.insert(&task_id, slot.token);
        }
    }

    // --- heartbeats and the lease ------------------------------------------------------------

    fn maybe_heartbeat(&mut self) {
        let Some(epoch) = self.epoch else {
            return;
        };
        if self.heartbeat_in_flight {
            return;
        }
        let mut running = Vec::new();
        let (mut cpu, mut mem, mut disk) = (0u64, 0u64, 0u64);
        for (task_id, slot) in &self.slots {
            if let SlotState::Running(_) = slot.state {
                running.push(v1::RunningAttempt {
                    task_id: task_id.clone(),
                    fencing_token: slot.token,
                });
                cpu = cpu.saturating_add(u64::from(slot.demand.cpu_millis));
                mem = mem.saturating_add(slot.demand.memory_mb);
                disk = disk.saturating_add(slot.demand.disk_mb);
            }
        }
        let s = &self.s;
        let now_util = utilisation(
            [cpu as f64, mem as f64, disk as f64, running.len() as f64],
            [
                f64::from(s.cpu_millis),
                s.memory_mb as f64,
                s.disk_mb as f64,
                f64::from(s.max_tasks),
            ],
        );
        // What the machine measures counts too: tasks that use more than they declared, or
        // other work on the machine, push the load over 1.0, and the delay-guided policy then
        // moves this agent's not-yet-started work elsewhere.
        let (load_avg, mem_used_mb) = crate::machine::measured_use();
        let measured = utilisation(
            [
                load_avg.unwrap_or(0.0) * 1000.0,
                mem_used_mb.unwrap_or(0) as f64,
                0.0,
                0.0,
            ],
            [f64::from(s.cpu_millis), s.memory_mb as f64, 0.0, 0.0],
        );
        let load = self.load.sample(Instant::now(), now_util.max(measured));
        let request = v1::HeartbeatRequest {
            agent_id: s.id.clone(),
            epoch,
            running,
            used: Some(v1::Resources {
                cpu_millis: u32::try_from(cpu).unwrap_or(u32::MAX),
                memory_mb: mem,
                disk_mb: disk,
            }),
            load,
            sent_at_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        self.heartbeat_in_flight = true;
        let generation = self.generation;
        let masters = self.masters.clone();
        let tx = self.events_tx.clone();
        let task = async move {
            // One try per master at most: the next tick tries again.
            let mut last = None;
            for _ in 0..masters.len() {
                let sent_at = Instant::now();
                let req = request.clone();
                match masters
                    .call("heartbeat", |mut c| async move { c.heartbeat(req).await })
                    .await
                {
                    Ok(answer) => {
                        last = Some(Ok((sent_at, answer)));
                        break;
                    }
                    Err(e) => last = Some(Err(e)),
                }
            }
            if let Some(answer) = last {
                let _ = tx.send(Event::Heartbeat { generation, answer });
            }
        };
        tokio::spawn(task.in_current_span());
    }

    fn on_heartbeat(&mut self, generation: u64, answer: Result<(Instant, v1::HeartbeatResponse), RpcError>) {
        self.heartbeat_in_flight = false;
        if generation != self.generation || self.epoch.is_none() {
            return;
        }
        match answer {
            Ok((_, response)) if response.reregister => self.reregister("the leader said so"),
            Ok((sent_at, response)) => {
                let granted = Duration::from_millis(response.lease_ms);
                self.lease.renew(sent_at, Some(granted));
                self.push_lease_deadline();
                for stop in response.stop {
                    self.maybe_drop(
                        &stop.task_id,
                        stop.fencing_token,
                        "the leader says it is not current",
                    );
                }
                if response.exit {
                    let deadline = response
                        .exit_deadline_ms
                        .map_or(self.s.drain_timeout, Duration::from_millis);
                    self.exit_requested(deadline);
                }
            }
            Err(e) => {
                let left = self
                    .lease
                    .expires_at()
                    .map(|t| t.saturating_duration_since(Instant::now()));
                tracing::warn!(error = %e, lease_left = ?left, "heartbeat not acknowledged");
            }
        }
    }

    /// Tells every task supervisor the lease deadline (nothing with the unsafe escape hatch, so
    /// supervisors then enforce no lease).
    fn push_lease_deadline(&self) {
        if !self.unsafe_no_fence {
            self.exec.set_lease_deadline(self.lease.expires_at());
        }
    }

    /// Fences the agent if its lease has run out.
    fn maybe_fence(&mut self) {
        if self.epoch.is_none() || self.lease.is_held(Instant::now()) {
            return;
        }
        let killed: Vec<(&String, u64)> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s.state, SlotState::Running(_)))
            .map(|(id, s)| (id, s.token))
            .collect();
        tracing::error!(
            epoch = ?self.epoch,
            lease_timeout = ?self.s.lease_timeout,
            killed = ?killed,
            "LEASE EXPIRED: no heartbeat acknowledged within lease_timeout. Killing every attempt \
             and forgetting it without a report (the masters may give it to another agent), \
             then registering again"
        );
        self.reregister("self-fenced after the lease expired");
    }

    // --- shutdown ----------------------------------------------------------------------------

    /// The masters ask this agent to drain and exit (`taurus agent drain --exit`): shut down,
    /// letting running attempts go on for `deadline` (an earlier deadline already set stays).
    fn exit_requested(&mut self, deadline: Duration) {
        if !self.shutting_down {
            tracing::info!(?deadline, "the masters ask this agent to drain and exit");
            self.begin_shutdown("asked to exit by the masters", deadline);
            return;
        }
        let at = Instant::now() + deadline;
        if self.drain_deadline.is_some_and(|d| d > at) {
            tracing::info!(?deadline, "the masters set an earlier drain deadline");
            self.drain_deadline = Some(at);
        }
    }

    /// Tells the masters (in the background, best effort) that this agent is draining, so that
    /// the scheduler places nothing more on it while it finishes. Without a registration there
    /// is nothing to drain.
    fn tell_masters_draining(&self) {
        if self.epoch.is_none() {
            return;
        }
        let masters = self.masters.clone();
        let request = v1::SetAgentDrainRequest {
            id: self.s.id.clone(),
            drain: true,
            reason: "the agent is shutting down".to_string(),
            ..Default::default()
        };
        let task = async move {
            // One try per master, as for heartbeats.
            let mut last = None;
            for _ in 0..masters.len() {
                let req = request.clone();
                match masters
                    .call("drain agent", |mut c| async move { c.set_agent_drain(req).await })
                    .await
                {
                    Ok(_) => {
                        tracing::info!("the masters know this agent is draining");
                        return;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                tracing::warn!(error = %e, "cannot tell the masters this agent is draining");
            }
        };
        tokio::spawn(task.in_current_span());
    }

    /// Stops taking work and lets running attempts go on for `drain` (zero: kills them now).
    fn begin_shutdown(&mut self, why: &str, drain: Duration) {
        self.shutting_down = true;
        self.stop_feed();
        if let Some(t) = self.register_task.take() {
            t.abort();
        }
        // Claims not answered yet: never start them. If one was applied, the masters give the
        // task a new attempt once this agent is declared down.
        let claims: Vec<(String, u64)> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s.state, SlotState::Claiming(_)))
            .map(|(id, s)| (id.clone(), s.token))
            .collect();
        for (task_id, token) in claims {
            self.maybe_drop(&task_id, token, "agent shutting down");
        }
        let running = self.slots.len();
        if drain.is_zero() {
            tracing::info!(running, why, "shutting down: killing running attempts");
            self.kill_running(StopReason::Shutdown);
        } else {
            tracing::info!(running, why, ?drain, "shutting down: draining");
            self.drain_deadline = Some(Instant::now() + drain);
        }
    }

    fn end_drain(&mut self) {
        self.drain_deadline = None;
        tracing::info!(
            running = self.slots.len(),
            "drain deadline passed: killing what is left"
        );
        self.kill_running(StopReason::DrainDeadline);
    }

    /// Stops running attempts; they end as `killed` and are reported.
    fn kill_running(&mut self, reason: StopReason) {
        for slot in self.slots.values() {
            if let SlotState::Running(switch) = &slot.state {
                switch.kill(reason);
            }
        }
    }
}

/// Follows `WatchAssignments` for one epoch, from any master, until aborted. A broken or ended
/// stream is reopened on the next master after a back-off; each new stream starts with the full
/// set, which the runtime deduplicates.
async fn watch_loop(
    masters: Arc<Masters>,
    agent_id: String,
    epoch: u64,
    generation: u64,
    tx: mpsc::UnboundedSender<Event>,
) {
    let mut retry = 0u32;
    loop {
        let idx = masters.current();
        let master = masters.uri(idx).to_string();
        let request = v1::WatchAssignmentsRequest {
            agent_id: agent_id.clone(),
            epoch,
        };
        let mut client = masters.client(idx);
        match tokio::time::timeout(masters.rpc_timeout(), client.watch_assignments(request)).await {
            Ok(Ok(response)) => {
                tracing::debug!(%master, "watching assignments");
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(batch)) if batch.reregister && batch.applied_index < epoch => {
                            // This master has not applied our registration yet: it cannot judge.
                            tracing::info!(
                                %master,
                                applied_index = batch.applied_index,
                                "a lagging master says re-register; trying another master"
                            );
                            break;
                        }
                        Ok(Some(batch)) => {
                            retry = 0;
                            if tx.send(Event::Batch { generation, batch }).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            tracing::info!(%master, "assignment stream ended; reconnecting");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(%master, error = %status, "assignment stream broke; reconnecting");
                            break;
                        }
                    }
                }
            }
            Ok(Err(status)) => {
                tracing::warn!(%master, error = %status, "cannot open the assignment stream");
            }
            Err(_) => {
                tracing::warn!(%master, "no answer opening the assignment stream");
            }
        }
        masters.rotate(idx);
        tokio::time::sleep(backoff(retry, RECONNECT_BACKOFF_MIN, RECONNECT_BACKOFF_MAX)).await;
        retry = retry.saturating_add(1);
    }
}

/// Takes an exclusive `flock` on `work_dir/agent.lock`, or fails when another agent holds it.
/// The lock goes with the returned file (and with the process).
fn lock_work_dir(work_dir: &std::path::Path) -> Result<std::fs::File, AgentError> {
    use std::os::fd::AsRawFd;
    let path = work_dir.join("agent.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AgentError::io(format!("cannot open {}", path.display()), e))?;
    // SAFETY: the descriptor belongs to `file`, which is alive for the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(AgentError::Config(format!(
                "work_dir: {} is in use by another agent (give each agent its own id or work_dir)",
                work_dir.display()
            )));
        }
        return Err(AgentError::io(format!("cannot lock {}", path.display()), e));
    }
    Ok(file)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Attempts that finished or were dropped, so that an assignment replayed by a reopened feed
/// (which starts with the full set, possibly from a master that has not applied the FINISHED
/// report yet) is not claimed and run a second time.
#[derive(Default)]
struct RecentlyDone {
    order: VecDeque<(String, u64, Instant)>,
    set: HashSet<(String, u64)>,
}

impl RecentlyDone {
    fn insert(&mut self, task_id: &str, token: u64) {
        if self.set.insert((task_id.to_string(), token)) {
            self.order.push_back((task_id.to_string(), token, Instant::now()));
        }
        while self.order.len() > DONE_MAX
            || (self.order.len() > DONE_MIN && self.order.front().is_some_and(|f| f.2.elapsed() > DONE_KEEP))
        {
            if let Some((id, token, _)) = self.order.pop_front() {
                self.set.remove(&(id, token));
            }
        }
    }

    fn contains(&self, task_id: &str, token: u64) -> bool {
        self.set.contains(&(task_id.to_string(), token))
    }
}
