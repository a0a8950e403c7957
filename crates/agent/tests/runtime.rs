//! The agent runtime against an in-process fake `AgentService` on 127.0.0.1:0: claims before
//! spawning, report retries, stops, re-registration, self-fencing when heartbeats go
//! unanswered, and graceful shutdown.

use std::collections::HashSet;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use taurus_agent::AgentConfig;
use taurus_agent::AgentError;
use taurus_agent::pgroup;
use taurus_protocol::v1;
use taurus_protocol::v1::agent_service_server::AgentService;
use taurus_protocol::v1::agent_service_server::AgentServiceServer;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Request;
use tonic::Response;
use tonic::Status;

const LEASE: Duration = Duration::from_millis(1000);
const HEARTBEAT: Duration = Duration::from_millis(50);
const WAIT: Duration = Duration::from_secs(15);

/// What the fake master saw.
#[derive(Debug)]
enum Seen {
    Registered(u64),
    Heartbeat(v1::HeartbeatRequest),
    Report(v1::TaskStatusReport),
    Watch(u64),
    /// A `SetAgentDrain` call.
    Drain(v1::SetAgentDrainRequest),
    /// A heartbeat was answered `exit`.
    ExitSent,
}

type BatchTx = mpsc::UnboundedSender<Result<v1::AssignmentBatch, Status>>;

struct Fake {
    epoch: AtomicU64,
    heartbeats_fail: AtomicBool,
    report_calls_to_fail: AtomicU32,
    /// STARTED reports for these (task, token) are answered `stale`.
    stale: Mutex<HashSet<(String, u64)>>,
    applied: Mutex<HashSet<(String, u64, i32)>>,
    seen: mpsc::UnboundedSender<Seen>,
    watch: Mutex<Option<BatchTx>>,
    /// `Some(deadline_ms)`: heartbeats are answered "drain and exit" with that deadline.
    exit: Mutex<Option<Option<u64>>>,
}

#[tonic::async_trait]
impl AgentService for Fake {
    async fn register_agent(
        &self,
        request: Request<v1::RegisterAgentRequest>,
    ) -> Result<Response<v1::RegisterAgentResponse>, Status> {
        let r = request.into_inner();
        assert_eq!(r.id, "agent-under-test");
        assert_eq!(r.resources.map(|r| r.cpu_millis), Some(4000));
        let epoch = self.epoch.fetch_add(10, Ordering::SeqCst) + 10;
        let _ = self.seen.send(Seen::Registered(epoch));
        Ok(Response::new(v1::RegisterAgentResponse {
            epoch,
            lost: vec![],
            log_index: epoch,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        if self.heartbeats_fail.load(Ordering::SeqCst) {
            return Err(Status::unavailable("no leader"));
        }
        let r = request.into_inner();
        let reregister = r.epoch != self.epoch.load(Ordering::SeqCst);
        let _ = self.seen.send(Seen::Heartbeat(r));
        let exit = *self.exit.lock().expect("lock");
        if exit.is_some() {
            let _ = self.seen.send(Seen::ExitSent);
        }
        Ok(Response::new(v1::HeartbeatResponse {
            reregister,
            stop: vec![],
            leader: 1,
            lease_ms: 0,
            exit: exit.is_some(),
            exit_deadline_ms: exit.flatten(),
        }))
    }

    type WatchAssignmentsStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::AssignmentBatch, Status>> + Send + 'static>>;

    async fn watch_assignments(
        &self,
        request: Request<v1::WatchAssignmentsRequest>,
    ) -> Result<Response<Self::WatchAssignmentsStream>, Status> {
        let epoch = request.into_inner().epoch;
        let (tx, rx) = mpsc::unbounded_channel();
        // The full set first: empty.
        let _ = tx.send(Ok(v1::AssignmentBatch {
            applied_index: self.epoch.load(Ordering::SeqCst),
            ..Default::default()
        }));
        *self.watch.lock().expect("lock") = Some(tx);
        let _ = self.seen.send(Seen::Watch(epoch));
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn report_task_status(
        &self,
        request: Request<v1::ReportTaskStatusRequest>,
    ) -> Result<Response<v1::ReportTaskStatusResponse>, Status> {
        if self
            .report_calls_to_fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Status::unavailable("not now"));
        }
        let r = request.into_inner();
        assert_eq!(r.agent_id, "agent-under-test");
        let mut results = Vec::new();
        for report in r.reports {
            let key = (report.task_id.clone(), report.fencing_token);
            let outcome = if report.kind == v1::ReportKind::Started as i32
                && self.stale.lock().expect("lock").contains(&key)
            {
                "stale"
            } else if self
                .applied
                .lock()
                .expect("lock")
                .insert((key.0, key.1, report.kind))
            {
                "accepted"
            } else {
                "duplicate"
            };
            results.push(v1::ReportResult {
                task_id: report.task_id.clone(),
                outcome: outcome.into(),
                message: String::new(),
            });
            let _ = self.seen.send(Seen::Report(report));
        }
        Ok(Response::new(v1::ReportTaskStatusResponse {
            results,
            log_index: 1,
        }))
    }

    async fn list_agents(
        &self,
        _: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_agent(
        &self,
        _: Request<v1::GetAgentRequest>,
    ) -> Result<Response<v1::GetAgentResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn set_agent_drain(
        &self,
        request: Request<v1::SetAgentDrainRequest>,
    ) -> Result<Response<v1::AgentInfo>, Status> {
        let r = request.into_inner();
        let id = r.id.clone();
        let _ = self.seen.send(Seen::Drain(r));
        Ok(Response::new(v1::AgentInfo {
            id,
            state: v1::AgentState::Draining as i32,
            ..Default::default()
        }))
    }
}

struct Harness {
    fake: Arc<Fake>,
    seen: mpsc::UnboundedReceiver<Seen>,
    reports: Vec<v1::TaskStatusReport>,
    work_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    agent: tokio::task::JoinHandle<Result<(), AgentError>>,
}

impl Harness {
    async fn start(tweak: impl FnOnce(&mut AgentConfig)) -> Self {
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let fake = Arc::new(Fake {
            epoch: AtomicU64::new(0),
            heartbeats_fail: AtomicBool::new(false),
            report_calls_to_fail: AtomicU32::new(0),
            stale: Mutex::new(HashSet::new()),
            applied: Mutex::new(HashSet::new()),
            seen: seen_tx,
            watch: Mutex::new(None),
            exit: Mutex::new(None),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = AgentServiceServer::from_arc(fake.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let work_dir = tempfile::tempdir().expect("tempdir");
        let mut config = AgentConfig {
            id: Some("agent-under-test".into()),
            masters: vec![addr.to_string()],
            work_dir: Some(work_dir.path().to_path_buf()),
            cpu_millis: Some(4000),
            memory_mb: Some(1024),
            disk_mb: Some(1024),
            heartbeat_interval: HEARTBEAT,
            lease_timeout: LEASE,
            rpc_timeout: Some(Duration::from_millis(300)),
            connect_timeout: Duration::from_millis(300),
            report_backoff_min: Duration::from_millis(10),
            report_backoff_max: Duration::from_millis(50),
            report_flush_timeout: Duration::from_secs(3),
            kill_grace: Duration::ZERO,
            ..Default::default()
        };
        tweak(&mut config);
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let agent = tokio::spawn(taurus_agent::run(config, async move {
            let _ = shutdown_rx.await;
        }));
        let mut h = Self {
            fake,
            seen,
            reports: Vec::new(),
            work_dir,
            shutdown: Some(shutdown_tx),
            agent,
        };
        h.wait_for("first registration", |s| matches!(s, Seen::Registered(10)))
            .await;
        h.wait_for("the assignment stream", |s| matches!(s, Seen::Watch(10)))
            .await;
        h
    }

    /// Waits for something the fake sees, recording every report on the way.
    async fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&Seen) -> bool) -> Seen {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let seen = match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(s)) => s,
                Ok(None) => panic!("the fake master stopped while waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; reports so far: {:#?}",
                    self.reports
                ),
            };
            if let Seen::Report(r) = &seen {
                self.reports.push(r.clone());
            }
            if pred(&seen) {
                return seen;
            }
        }
    }

    async fn wait_report(&mut self, task: &str, kind: v1::ReportKind) -> v1::TaskStatusReport {
        let what = format!("{kind:?} report of {task}");
        match self
            .wait_for(
                &what,
                |s| matches!(s, Seen::Report(r) if r.task_id == task && r.kind == kind as i32),
            )
            .await
        {
            Seen::Report(r) => r,
            _ => unreachable!(),
        }
    }

    fn push(&self, batch: v1::AssignmentBatch) {
        let watch = self.fake.watch.lock().expect("lock");
        let tx = watch.as_ref().expect("the agent watches");
        tx.send(Ok(batch)).expect("stream open");
    }

    fn assign(&self, task: &str, token: u64, command: &[&str]) {
        let resources = v1::Resources {
            cpu_millis: 1000,
            memory_mb: 10,
            disk_mb: 0,
        };
        self.push(self.assignment(task, token, command, Some(resources)));
    }

    /// A batch assigning attempt 1 of `task` with fencing token `token`, at the fake's applied
    /// index.
    fn assignment(
        &self,
        task: &str,
        token: u64,
        command: &[&str],
        resources: Option<v1::Resources>,
    ) -> v1::AssignmentBatch {
        v1::AssignmentBatch {
            assign: vec![v1::Assignment {
                spec: Some(v1::TaskSpec {
                    id: task.into(),
                    command: command.iter().map(|s| s.to_string()).collect(),
                    resources,
                    ..Default::default()
                }),
                attempt: 1,
                fencing_token: token,
            }],
            applied_index: self.fake.epoch.load(Ordering::SeqCst),
            ..Default::default()
        }
    }

    /// The process group of the (only) running task, from `running.pgids`.
    async fn running_pgid(&self) -> i32 {
        let path = self.work_dir.path().join(pgroup::PGID_FILE);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(pgid) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.lines().filter_map(|l| l.parse::<i32>().ok()).next())
            {
                return pgid;
            }
            assert!(Instant::now() < deadline, "no task process group appeared");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn finished_of(&self, task: &str) -> Vec<&v1::TaskStatusReport> {
        self.reports
            .iter()
            .filter(|r| r.task_id == task && r.kind == v1::ReportKind::Finished as i32)
            .collect()
    }

    fn finished_reports_of(&self, task: &str) -> usize {
        self.finished_of(task).len()
    }

    /// Sends the shutdown signal (once).
    fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    async fn shutdown(mut self) -> Self {
        self.signal_shutdown();
        self.stopped("the agent stops").await
    }

    /// Waits for the agent task to end (`what`: how it should) and returns the harness with every
    /// report seen on the way.
    async fn stopped(mut self, what: &str) -> Self {
        let result = tokio::time::timeout(WAIT, &mut self.agent)
            .await
            .expect(what)
            .expect("joins");
        assert!(result.is_ok(), "{result:?}");
        // Collect what was reported during the shutdown.
        while let Ok(seen) = self.seen.try_recv() {
            if let Seen::Report(r) = seen {
                self.reports.push(r);
            }
        }
        self
    }

    /// Assigns `task` and waits until it runs; returns its process group.
    async fn start_running(&mut self, task: &str, token: u64, command: &[&str]) -> i32 {
        self.assign(task, token, command);
        self.wait_report(task, v1::ReportKind::Started).await;
        self.running_pgid().await
    }

    /// Waits for a heartbeat that lists a running attempt.
    async fn wait_busy_heartbeat(&mut self, task: &str) {
        self.wait_for(
            &format!("a heartbeat listing {task}"),
            |s| matches!(s, Seen::Heartbeat(hb) if !hb.running.is_empty()),
        )
        .await;
    }

    /// The one FINISHED report of `task` (asserting there is exactly one).
    fn only_finished(&self, task: &str) -> &v1::TaskStatusReport {
        let finished = self.finished_of(task);
        assert_eq!(finished.len(), 1, "{:?}", self.reports);
        finished[0]
    }
}

async fn wait_gone(pgid: i32) {
    let deadline = Instant::now() + WAIT;
    while pgroup::group_has_live_members(pgid) {
        assert!(Instant::now() < deadline, "process group {pgid} still alive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn sleeping_marker(dir: &Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("touch {}/ran; sleep 30", dir.display()),
    ]
}

#[tokio::test]
async fn an_assignment_is_claimed_then_run_then_reported_with_retries() {
    let mut h = Harness::start(|_| {}).await;
    h.fake.report_calls_to_fail.store(3, Ordering::SeqCst);
    h.assign("t1", 11, &["sh", "-c", "echo hi; echo oops >&2; exit 4"]);
    let started = h.wait_report("t1", v1::ReportKind::Started).await;
    assert_eq!(started.fencing_token, 11);
    let finished = h.wait_report("t1", v1::ReportKind::Finished).await;
    assert_eq!(finished.fencing_token, 11);
    assert_eq!(finished.end, "failed");
    assert_eq!(finished.exit_code, Some(4));
    assert_eq!(finished.stdout_tail, "hi\n");
    assert_eq!(finished.stderr_tail, "oops\n");

    // The same assignment replayed (a reopened feed starts with the full set) is not run again.
    h.assign("t1", 11, &["sh", "-c", "exit 0"]);
    h.assign("t2", 12, &["taurus:noop"]);
    let t2 = h.wait_report("t2", v1::ReportKind::Finished).await;
    assert_eq!(t2.end, "succeeded");
    assert_eq!(h.finished_reports_of("t1"), 1);
    let h = h.shutdown().await;
    assert_eq!(h.finished_reports_of("t1"), 1);
}

#[tokio::test]
async fn a_stale_claim_never_runs() {
    let mut h = Harness::start(|_| {}).await;
    h.fake.stale.lock().expect("lock").insert(("t1".into(), 21));
    let marker_dir = h.work_dir.path().to_path_buf();
    let command = sleeping_marker(&marker_dir);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    h.assign("t1", 21, &command);
    h.wait_report("t1", v1::ReportKind::Started).await;
    // Reports are sent in order: once a later task has finished, the stale verdict was handled.
    h.assign("t2", 22, &["taurus:noop"]);
    h.wait_report("t2", v1::ReportKind::Finished).await;
    let heartbeat = h
        .wait_for("a heartbeat", |s| matches!(s, Seen::Heartbeat(_)))
        .await;
    let Seen::Heartbeat(hb) = heartbeat else {
        unreachable!()
    };
    assert!(hb.running.is_empty(), "{:?}", hb.running);
    assert!(!marker_dir.join("ran").exists(), "a stale claim must not run");
    let h = h.shutdown().await;
    assert_eq!(h.finished_reports_of("t1"), 0);
}

#[tokio::test]
async fn a_stop_kills_the_attempt_without_a_report() {
    let mut h = Harness::start(|_| {}).await;
    let pgid = h
        .start_running("t1", 31, &["sh", "-c", "sleep 30 & sleep 30"])
        .await;
    h.wait_for("a heartbeat listing t1", |s| {
        matches!(s, Seen::Heartbeat(hb) if hb.running.iter().any(|r| r.task_id == "t1" && r.fencing_token == 31)
            && hb.used.as_ref().is_some_and(|u| u.cpu_millis == 1000))
    })
    .await;
    h.push(v1::AssignmentBatch {
        stop: vec![v1::RunningAttempt {
            task_id: "t1".into(),
            fencing_token: 31,
        }],
        applied_index: 10,
        ..Default::default()
    });
    wait_gone(pgid).await;
    let h = h.shutdown().await;
    assert_eq!(
        h.finished_reports_of("t1"),
        0,
        "a stopped attempt is not reported"
    );
}

#[tokio::test]
async fn the_agent_fences_itself_when_heartbeats_go_unanswered() {
    let mut h = Harness::start(|_| {}).await;
    let pgid = h
        .start_running("t1", 41, &["sh", "-c", "sleep 30 & sleep 30"])
        .await;
    h.wait_busy_heartbeat("t1").await;

    h.fake.heartbeats_fail.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    wait_gone(pgid).await;
    let killed_after = cut.elapsed();
    // The lease counts from the send time of the last acknowledged heartbeat, at most one
    // heartbeat period (plus scheduling slack) before the cut.
    assert!(
        killed_after + HEARTBEAT + Duration::from_millis(100) >= LEASE,
        "killed too early: {killed_after:?}"
    );
    assert!(
        killed_after < LEASE + Duration::from_secs(3),
        "killed too late: {killed_after:?}"
    );

    // After fencing the agent always registers again, for a fresh epoch and a fresh feed.
    h.wait_for("a second registration", |s| matches!(s, Seen::Registered(20)))
        .await;
    h.fake.heartbeats_fail.store(false, Ordering::SeqCst);
    h.wait_for("the feed of the new epoch", |s| matches!(s, Seen::Watch(20)))
        .await;
    h.wait_for(
        "a heartbeat of the new epoch",
        |s| matches!(s, Seen::Heartbeat(hb) if hb.epoch == 20 && hb.running.is_empty()),
    )
    .await;
    let h = h.shutdown().await;
    assert_eq!(h.finished_reports_of("t1"), 0, "a fenced attempt is not reported");
}

#[tokio::test]
async fn told_to_reregister_the_agent_kills_everything_and_registers_again() {
    let mut h = Harness::start(|_| {}).await;
    let pgid = h.start_running("t1", 51, &["sh", "-c", "sleep 30"]).await;
    // A master that has not applied the registration (applied index below the epoch) cannot
    // judge: the agent reconnects instead of re-registering.
    h.push(v1::AssignmentBatch {
        reregister: true,
        applied_index: 5,
        ..Default::default()
    });
    h.wait_for("a reconnected feed", |s| matches!(s, Seen::Watch(10)))
        .await;
    assert!(pgroup::group_has_live_members(pgid), "still running");
    h.push(v1::AssignmentBatch {
        reregister: true,
        applied_index: 10,
        ..Default::default()
    });
    wait_gone(pgid).await;
    h.wait_for("a second registration", |s| matches!(s, Seen::Registered(20)))
        .await;
    let h = h.shutdown().await;
    assert_eq!(h.finished_reports_of("t1"), 0);
}

#[tokio::test]
async fn shutdown_kills_running_attempts_and_reports_them() {
    let mut h = Harness::start(|c| c.drain_timeout = Duration::ZERO).await;
    let pgid = h
        .start_running("t1", 61, &["sh", "-c", "sleep 30 & sleep 30"])
        .await;
    let h = h.shutdown().await;
    assert!(!pgroup::group_has_live_members(pgid));
    let finished = h.only_finished("t1");
    assert_eq!(finished.end, "killed");
    assert_eq!(finished.error, "killed: the agent is shutting down");
}

#[tokio::test]
async fn shutdown_with_a_drain_timeout_lets_short_attempts_finish() {
    let mut h = Harness::start(|c| c.drain_timeout = Duration::from_secs(10)).await;
    h.assign("t1", 71, &["taurus:sleep", "300"]);
    h.wait_busy_heartbeat("t1").await;
    let h = h.shutdown().await;
    assert_eq!(h.only_finished("t1").end, "succeeded");
}

#[tokio::test]
async fn a_second_agent_on_the_same_work_dir_is_refused() {
    let h = Harness::start(|_| {}).await;
    let config = AgentConfig {
        id: Some("agent-under-test".into()),
        masters: vec!["127.0.0.1:1".into()],
        work_dir: Some(h.work_dir.path().to_path_buf()),
        cpu_millis: Some(1000),
        memory_mb: Some(1),
        disk_mb: Some(1),
        ..Default::default()
    };
    let second = tokio::time::timeout(WAIT, taurus_agent::run(config, std::future::pending()))
        .await
        .expect("fails at once");
    let err = second.expect_err("refused");
    assert!(err.to_string().contains("in use by another agent"), "{err}");
    h.shutdown().await;
}

#[tokio::test]
async fn a_signal_tells_the_masters_the_agent_is_draining() {
    let mut h = Harness::start(|c| c.drain_timeout = Duration::from_secs(10)).await;
    h.assign("t1", 81, &["taurus:sleep", "300"]);
    h.wait_busy_heartbeat("t1").await;
    h.signal_shutdown();
    let Seen::Drain(drain) = h
        .wait_for("a drain request", |s| matches!(s, Seen::Drain(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!(drain.id, "agent-under-test");
    assert!(drain.drain && !drain.exit, "{drain:?}");
    let h = h.stopped("the agent stops by itself").await;
    assert_eq!(h.only_finished("t1").end, "succeeded");
}

#[tokio::test]
async fn an_exit_request_drains_running_work_takes_no_new_work_and_stops() {
    // The agent's own drain_timeout would kill at once: the request's deadline wins.
    let mut h = Harness::start(|c| c.drain_timeout = Duration::ZERO).await;
    h.assign("t1", 91, &["taurus:sleep", "2000"]);
    h.wait_busy_heartbeat("t1").await;
    *h.fake.exit.lock().expect("lock") = Some(Some(10_000));
    h.wait_for("an exit answer", |s| matches!(s, Seen::ExitSent))
        .await;
    // The heartbeat after the exit answer comes only once the agent has handled it.
    h.wait_for("a heartbeat after the exit answer", |s| {
        matches!(s, Seen::Heartbeat(_))
    })
    .await;
    // Work offered now is not taken (the feed is closed; a master would not offer it anyway).
    let late = h.assignment("t2", 92, &["taurus:noop"], None);
    if let Some(tx) = h.fake.watch.lock().expect("lock").as_ref() {
        let _ = tx.send(Ok(late));
    }
    let h = h.stopped("the agent stops by itself").await;
    let t1 = h.only_finished("t1");
    assert_eq!(t1.end, "succeeded", "{t1:?}");
    assert!(
        !h.reports.iter().any(|r| r.task_id == "t2"),
        "a draining agent claimed new work: {:?}",
        h.reports
    );
}

#[tokio::test]
async fn the_exit_deadline_kills_an_overlong_attempt_with_a_clear_reason() {
    let mut h = Harness::start(|c| c.drain_timeout = Duration::from_secs(60)).await;
    let pgid = h
        .start_running("t1", 101, &["sh", "-c", "sleep 30 & sleep 30"])
        .await;
    *h.fake.exit.lock().expect("lock") = Some(Some(300));
    let h = h.stopped("the agent stops by itself").await;
    assert!(!pgroup::group_has_live_members(pgid));
    let finished = h.only_finished("t1");
    assert_eq!(finished.end, "killed");
    assert_eq!(
        finished.error,
        "killed: the agent's drain deadline passed while shutting down"
    );
}
