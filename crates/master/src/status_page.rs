//! The status page every master serves on its HTTP port (`/`).
//!
//! One server-rendered HTML page with inline CSS and no JavaScript: it refreshes itself every
//! [`REFRESH_SECS`] seconds (`<meta http-equiv="refresh">`). It shows the Raft members and the
//! leader, agents with utilisation bars, the queue, execution efficiency, the anomalies of
//! [`crate::monitor`] and the most recently updated tasks with their attempts.
//!
//! It is served **without authentication** (like `/metrics`), read-only. It never shows a
//! task's command line, environment or output, which may hold secrets; every string that comes
//! from users or agents (task ids and names, agent ids, pools, reasons, addresses) is
//! HTML-escaped. On a follower the anomalies are that master's own view: heartbeat checks exist
//! only on the leader, whose page says so.

use std::collections::BinaryHeap;
use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use taurus_core::State;
use taurus_core::Task;
use taurus_core::TaskState;
use taurus_core::monitor::Report;
use taurus_core::types::AgentState;
use taurus_core::types::UnixMillis;
use taurus_protocol::v1;

use crate::node::Node;

/// How many tasks the page lists.
pub const RECENT_TASKS: usize = 30;
/// Seconds between refreshes.
pub const REFRESH_SECS: u32 = 2;

/// The status page's routes, merged into the master's HTTP router.
pub fn routes(node: Node) -> Router {
    Router::new().route("/", get(page)).with_state(node)
}

async fn page(AxumState(node): AxumState<Node>) -> Response {
    // Members as of the latest sample: no network round trip per view.
    let status = crate::monitor::cluster_status(&node).await;
    let built = tokio::task::spawn_blocking(move || {
        let computed = crate::monitor::report(&node);
        // An O(1) copy (persistent maps): the lock is released before the tasks are walked.
        let state = node.sm.read(|s| s.clone());
        let recent = recent_tasks(&state, RECENT_TASKS);
        render(&Page {
            served_by: node.id,
            now_ms: crate::clock::now_ms(),
            status,
            report: computed.report,
            leader_view: computed.leader_view,
            recent,
        })
    })
    .await;
    match built {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot build the status page: {e}\n"),
        )
            .into_response(),
    }
}

/// Everything the page shows.
#[derive(Clone, Debug)]
pub struct Page {
    pub served_by: u64,
    /// When the page is made (task ages are measured from it; the report may be older).
    pub now_ms: UnixMillis,
    pub status: v1::ClusterStatus,
    pub report: Arc<Report>,
    /// The report was made by the leader (heartbeat checks included).
    pub leader_view: bool,
    pub recent: Vec<Task>,
}

/// A task ordered for [`recent_tasks`]: "less" is listed first (newest update, then id).
struct Newest<'a>(&'a Task);

impl Newest<'_> {
    fn key(&self) -> (std::cmp::Reverse<UnixMillis>, &str) {
        (std::cmp::Reverse(self.0.updated_at_ms), self.0.spec.id.as_str())
    }
}

impl PartialEq for Newest<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Newest<'_> {}

impl PartialOrd for Newest<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Newest<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// The `n` most recently updated tasks among those running or assigned, the most recently
/// finished, and the first pending ones (by id), newest update first. One pass over the
/// running and assigned tasks, keeping the best `n` in a bounded heap (nothing is collected or
/// sorted beyond `n`).
pub fn recent_tasks(state: &State, n: usize) -> Vec<Task> {
    if n == 0 {
        return Vec::new();
    }
    // A max-heap: its top is the kept task listed last, the first to give way.
    let mut kept: BinaryHeap<Newest<'_>> = BinaryHeap::with_capacity(n + 1);
    let candidates = state
        .tasks_in(TaskState::Assigned)
        .chain(state.tasks_in(TaskState::Running))
        .chain(state.recently_finished().take(n))
        .chain(state.list(&[TaskState::Pending], None, n).tasks);
    for task in candidates {
        let candidate = Newest(task);
        if kept.len() < n {
            kept.push(candidate);
        } else if let Some(mut last) = kept.peek_mut()
            && candidate < *last
        {
            *last = candidate;
        }
    }
    // Ascending order is the listing order. The sources hold disjoint states, so a task
    // appears once; dedup guards the listing anyway.
    let mut tasks = kept.into_sorted_vec();
    tasks.dedup_by(|a, b| a.0.spec.id == b.0.spec.id);
    tasks.into_iter().map(|t| t.0.clone()).collect()
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct(f: f64) -> String {
    format!("{:.0}%", (f * 100.0).clamp(0.0, 100.0))
}

/// "3.2s ago" style age of `at` at `now`.
fn age(now: UnixMillis, at: UnixMillis) -> String {
    if at == 0 {
        return "-".into();
    }
    duration(now.saturating_sub(at)) + " ago"
}

fn duration(ms: u64) -> String {
    match ms {
        0..=9_999 => format!("{:.1}s", ms as f64 / 1000.0),
        10_000..=119_999 => format!("{}s", ms / 1000),
        120_000..=7_199_999 => format!("{}m", ms / 60_000),
        _ => format!("{}h", ms / 3_600_000),
    }
}

/// A utilisation bar: green, amber from 70%, red from 90%.
fn bar(f: f64) -> String {
    let f = if f.is_finite() { f.clamp(0.0, 1.0) } else { 0.0 };
    let level = if f >= 0.9 {
        "high"
    } else if f >= 0.7 {
        "mid"
    } else {
        "low"
    };
    format!(
        r#"<div class="bar" data-util="{f:.3}" title="{p}"><div class="fill {level}" style="width:{w:.1}%"></div><span>{p}</span></div>"#,
        p = pct(f),
        w = f * 100.0,
    )
}

const CSS: &str = r#"
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:20px;margin:0}
header .meta{color:#c5cad6}
header .pill{color:#1d2330}
main{padding:16px 24px;display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:16px}
section{background:#fff;border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.08);padding:12px 16px;overflow-x:auto}
section.wide{grid-column:1/-1}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e6e8ec;white-space:nowrap;vertical-align:top}
th{font-weight:600;color:#4a5263;font-size:12px;text-transform:uppercase}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{white-space:normal;min-width:220px}
.bar{position:relative;width:140px;height:16px;background:#e6e8ec;border-radius:3px;overflow:hidden}
.bar .fill{height:100%}
.bar .low{background:#3fb27f}.bar .mid{background:#e0a526}.bar .high{background:#d9534f}
.bar span{position:absolute;left:6px;top:0;font-size:11px;line-height:16px;color:#1d2330}
.pill{display:inline-block;padding:0 8px;border-radius:9px;font-size:12px;background:#e6e8ec}
.leader,.alive,.succeeded{background:#d4f1e3}.follower,.running,.assigned{background:#dde9fb}
.draining,.pending,.warning,.candidate,.learner{background:#fbeed0}
.down,.failed,.timed_out,.critical,.unreachable{background:#f8d7d6}.cancelled,.info{background:#e6e8ec}
.stats{display:flex;gap:12px 20px;flex-wrap:wrap}.stats div b{display:block;font-size:20px}
.muted{color:#6b7385}.attempt{display:block;font-size:12px}
footer{padding:0 24px 16px;color:#6b7385;font-size:12px}
"#;

/// Renders the page (pure: everything comes from `p`).
pub fn render(p: &Page) -> String {
    let now = p.now_ms;
    let mut h = String::with_capacity(32 * 1024);
    let s = &p.status;
    let role = s
        .members
        .iter()
        .find(|m| m.id == p.served_by)
        .map_or("unknown", |m| m.role.as_str());
    let leader = if s.leader == 0 {
        r#"<span id="leader" class="pill critical">none</span>"#.to_string()
    } else {
        format!(
            r#"<span id="leader" class="pill leader">master {}</span>"#,
            s.leader
        )
    };
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Taurus: master {id}</title><style>{CSS}</style></head><body>
<header><h1>Taurus</h1><span class="meta">master {id} ({role})</span><span class="meta">leader {leader}</span><span class="meta">term {term}</span></header>
<main>
"#,
        id = p.served_by,
        role = escape(role),
        term = s.term,
    );
    members(&mut h, p);
    summary(&mut h, p);
    anomalies(&mut h, p);
    agents(&mut h, p);
    tasks(&mut h, p, now);
    let _ = write!(
        h,
        r#"</main>
<footer>Read-only, served without authentication. Refreshes every {REFRESH_SECS}s. Monitoring history: {samples} samples over {span}. Task commands, environments and output are never shown here.</footer>
</body></html>
"#,
        samples = p.report.samples,
        span = duration(p.report.history_ms),
    );
    h
}

fn members(h: &mut String, p: &Page) {
    h.push_str(
        r#"<section id="members" class="wide"><h2>Masters</h2><table><tr><th>id</th><th>address</th><th>role</th><th>voter</th><th>term</th><th>last log</th><th>commit</th><th>applied</th><th>snapshot</th></tr>"#,
    );
    for m in &p.status.members {
        let role = if m.reachable {
            m.role.as_str()
        } else {
            "unreachable"
        };
        let _ = write!(
            h,
            r#"<tr class="member" data-member="{id}" data-role="{role}"><td>{id}{this}</td><td>{addr}</td><td><span class="pill {role}">{role}</span>{err}</td><td>{voter}</td><td class="num">{term}</td><td class="num">{last}</td><td class="num">{commit}</td><td class="num">{applied}</td><td class="num">{snap}</td></tr>"#,
            id = m.id,
            this = if m.id == p.served_by {
                " <span class=\"muted\">(this)</span>"
            } else {
                ""
            },
            addr = escape(&m.addr),
            role = escape(role),
            err = if m.error.is_empty() {
                String::new()
            } else {
                format!(r#" <span class="muted">{}</span>"#, escape(&m.error))
            },
            voter = if m.voter { "yes" } else { "no" },
            term = m.term,
            last = m.last_log_index,
            commit = m.commit_index,
            applied = m.applied_index,
            snap = m.snapshot_index,
        );
    }
    h.push_str("</table></section>\n");
}

fn summary(h: &mut String, p: &Page) {
    let r = &p.report;
    let c = &r.cluster;
    let q = &r.queue;
    let e = &r.efficiency;
    let count = |st: TaskState| q.by_state.iter().find(|(s, _)| *s == st).map_or(0, |(_, n)| *n);
    let _ = write!(
        h,
        r#"<section id="cluster"><h2>Cluster</h2><div class="stats">
<div>utilisation {bar}</div>
<div><b id="agents-alive">{alive}</b>agents alive</div><div><b>{draining}</b>draining</div><div><b>{down}</b>down</div>
<div><b>{used}/{total}</b>slots used</div></div>
</section>
<section id="queue"><h2>Queue</h2><div class="stats">
<div><b id="queue-depth">{pending}</b>pending</div><div><b>{runnable}</b>runnable</div><div><b>{delayed}</b>in back-off</div><div><b>{deps}</b>waiting on deps</div>
<div><b>{assigned}</b>assigned</div><div><b>{running}</b>running</div><div><b>{growth}</b>growth / min</div></div>
</section>
<section id="efficiency"><h2>Efficiency <span class="muted">(last {n} finished)</span></h2><div class="stats">
<div><b>{wait50} / {wait95}</b>queue wait p50 / p95</div><div><b>{run50} / {run95}</b>run time p50 / p95</div>
<div><b>{share}</b>time spent running</div><div><b>{lastmin}</b>finished in the last minute</div></div>
</section>
"#,
        bar = bar(c.utilisation),
        alive = c.agents_alive,
        draining = c.agents_draining,
        down = c.agents_down,
        used = c.slots_used,
        total = c.slots_total,
        pending = count(TaskState::Pending),
        runnable = q.runnable,
        delayed = q.delayed,
        deps = q.waiting_deps,
        assigned = count(TaskState::Assigned),
        running = count(TaskState::Running),
        growth = q.growth_per_min.map_or("-".into(), |g| format!("{g:+.1}")),
        n = e.tasks,
        wait50 = duration(e.queue_wait.p50_ms),
        wait95 = duration(e.queue_wait.p95_ms),
        run50 = duration(e.run_time.p50_ms),
        run95 = duration(e.run_time.p95_ms),
        share = e.run_share.map_or("-".into(), pct),
        lastmin = e.finished_last_minute,
    );
}

fn anomalies(h: &mut String, p: &Page) {
    let view = if p.leader_view {
        "the leader's view, heartbeats included".to_string()
    } else {
        format!(
            "master {}'s own view; heartbeat checks run on the leader only",
            p.served_by
        )
    };
    let _ = write!(
        h,
        r#"<section id="anomalies" class="wide"><h2>Anomalies <span class="muted">({})</span></h2>"#,
        escape(&view)
    );
    if p.report.anomalies.is_empty() {
        h.push_str(r#"<p class="muted" id="no-anomalies">None.</p></section>"#);
        h.push('\n');
        return;
    }
    h.push_str(
        "<table><tr><th>severity</th><th>kind</th><th>subject</th><th>observed</th><th>suggestion</th></tr>",
    );
    for a in &p.report.anomalies {
        let sev = a.severity.as_str();
        let _ = write!(
            h,
            r#"<tr class="anomaly" data-kind="{kind}"><td><span class="pill {sev}">{sev}</span></td><td>{kind}</td><td>{subject}</td><td class="wrap">{msg}</td><td class="wrap muted">{sugg}</td></tr>"#,
            kind = a.kind.as_str(),
            subject = escape(&a.subject),
            msg = escape(&a.message),
            sugg = escape(&a.suggestion),
        );
    }
    h.push_str("</table></section>\n");
}

fn agents(h: &mut String, p: &Page) {
    h.push_str(
        r#"<section id="agents" class="wide"><h2>Agents</h2><table><tr><th>id</th><th>state</th><th>pool</th><th>tasks</th><th>utilisation</th><th>slots</th><th>cpu</th><th>memory</th><th>disk</th><th>load</th><th>last heartbeat</th></tr>"#,
    );
    if p.report.agents.is_empty() {
        h.push_str(r#"<tr><td colspan="11" class="muted">No agents registered.</td></tr>"#);
    }
    for a in &p.report.agents {
        let state = a.state.as_str();
        let _ = write!(
            h,
            r#"<tr class="agent" data-agent="{id}"><td>{id}</td><td><span class="pill {state}">{state}</span></td><td>{pool}</td><td class="num">{tasks}/{max}</td><td>{bar}</td><td class="num">{slots}</td><td class="num">{cpu}</td><td class="num">{mem}</td><td class="num">{disk}</td><td class="num">{load}</td><td>{hb}</td></tr>"#,
            id = escape(&a.id),
            pool = if a.pool.is_empty() {
                r#"<span class="muted">default</span>"#.to_string()
            } else {
                escape(&a.pool)
            },
            tasks = a.tasks,
            max = a.max_tasks,
            bar = bar(if a.state == AgentState::Down {
                0.0
            } else {
                a.utilisation
            }),
            slots = pct(a.slots),
            cpu = pct(a.cpu),
            mem = pct(a.memory),
            disk = pct(a.disk),
            load = a.load.map_or("-".into(), |l| format!("{l:.2}")),
            hb = a
                .heartbeat_silence_ms
                .map_or("-".into(), |ms| format!("{} ago", duration(ms))),
        );
    }
    h.push_str("</table></section>\n");
}

fn tasks(h: &mut String, p: &Page, now: UnixMillis) {
    let _ = write!(
        h,
        r#"<section id="tasks" class="wide"><h2>Recent tasks <span class="muted">(up to {RECENT_TASKS}, newest update first)</span></h2><table><tr><th>id</th><th>name</th><th>state</th><th>priority</th><th>pool</th><th>updated</th><th>attempts (agent, outcome, exit)</th></tr>"#,
    );
    if p.recent.is_empty() {
        h.push_str(r#"<tr><td colspan="7" class="muted">No tasks.</td></tr>"#);
    }
    for t in &p.recent {
        let state = t.state.as_str();
        let mut attempts = String::new();
        for a in &t.attempts {
            let outcome = match a.end {
                Some(end) => end.as_str(),
                None if a.started_at_ms.is_some() => "running",
                None => "assigned",
            };
            let _ = write!(
                attempts,
                r#"<span class="attempt">#{n} {agent} <span class="pill {outcome}">{outcome}</span>{exit}</span>"#,
                n = a.number,
                agent = escape(&a.agent_id),
                exit = a.exit_code.map_or(String::new(), |c| format!(" exit {c}")),
            );
        }
        if attempts.is_empty() {
            attempts.push_str(r#"<span class="muted">none yet</span>"#);
        }
        let _ = write!(
            h,
            r#"<tr class="task" data-task="{id}"><td>{id}</td><td class="name">{name}</td><td><span class="pill {state}">{state}</span>{reason}</td><td class="num">{prio}</td><td>{pool}</td><td>{updated}</td><td>{attempts}</td></tr>"#,
            id = escape(&t.spec.id),
            name = escape(&t.spec.name),
            reason = if t.reason.is_empty() {
                String::new()
            } else {
                format!(
                    r#" <span class="muted">{}</span>"#,
                    escape(&truncate(&t.reason, 80))
                )
            },
            prio = t.spec.priority,
            pool = escape(&t.spec.pool),
            updated = age(now, t.updated_at_ms),
        );
    }
    h.push_str("</table></section>\n");
}

/// At most `max` characters, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taurus_core::monitor::Anomaly;
    use taurus_core::monitor::AnomalyKind;
    use taurus_core::monitor::History;
    use taurus_core::monitor::Observations;
    use taurus_core::monitor::Severity;
    use taurus_core::monitor::Thresholds;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            escape(r#"<script>alert("x&'y")</script>"#),
            "&lt;script&gt;alert(&quot;x&amp;&#39;y&quot;)&lt;/script&gt;"
        );
    }

    #[test]
    fn renders_hostile_strings_inert_and_never_the_environment() {
        let mut state = State::new();
        let spec = taurus_core::TaskSpec {
            id: "t1".into(),
            name: "<img src=x onerror=alert(1)>".into(),
            command: vec!["echo".into(), "topsecret-argv".into()],
            env: [("PASSWORD".to_string(), "topsecret-env".to_string())].into(),
            ..Default::default()
        };
        let submit = taurus_core::Command::SubmitTasks {
            requests: vec![taurus_core::command::SubmitRequest {
                tasks: vec![spec],
                ..Default::default()
            }],
            now_ms: 1_000,
        };
        state.apply(1, submit);
        let mut report = taurus_core::monitor::report(
            &state,
            &History::new(1),
            &Observations::default(),
            &Thresholds::default(),
            2_000,
        );
        report.anomalies.push(Anomaly {
            kind: AnomalyKind::AgentFlapping,
            subject: "agent/<marquee>".into(),
            severity: Severity::Warning,
            message: "m".into(),
            suggestion: "s".into(),
        });
        let page = Page {
            served_by: 1,
            now_ms: 2_000,
            status: v1::ClusterStatus {
                leader: 1,
                term: 3,
                members: vec![v1::Member {
                    id: 1,
                    addr: "127.0.0.1:1".into(),
                    role: "leader".into(),
                    reachable: true,
                    voter: true,
                    ..Default::default()
                }],
                served_by: 1,
            },
            report: Arc::new(report),
            leader_view: true,
            recent: recent_tasks(&state, 10),
        };
        let html = render(&page);
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(
            !html.contains("<marquee>") && html.contains("agent/&lt;marquee&gt;"),
            "{html}"
        );
        assert!(!html.contains("topsecret"), "{html}");
        assert!(html.contains(r#"id="leader" class="pill leader">master 1<"#));
        assert!(html.contains(r#"data-kind="agent_flapping""#));
    }

    /// The listing as first written: everything collected and sorted.
    fn recent_tasks_by_sorting(state: &State, n: usize) -> Vec<String> {
        let mut tasks: Vec<&Task> = state
            .list(&[TaskState::Assigned, TaskState::Running], None, usize::MAX)
            .tasks;
        tasks.extend(state.recently_finished().take(n));
        tasks.extend(state.list(&[TaskState::Pending], None, n).tasks);
        tasks.sort_by(|a, b| {
            b.updated_at_ms
                .cmp(&a.updated_at_ms)
                .then_with(|| a.spec.id.cmp(&b.spec.id))
        });
        tasks.dedup_by(|a, b| a.spec.id == b.spec.id);
        tasks.into_iter().take(n).map(|t| t.spec.id.clone()).collect()
    }

    #[test]
    fn recent_tasks_keeps_the_newest_like_a_full_sort() {
        use taurus_core::Command;
        let mut state = State::new();
        let mut index = 0;
        let mut apply = |state: &mut State, cmd: Command| {
            index += 1;
            state.apply(index, cmd);
        };
        apply(
            &mut state,
            Command::RegisterAgent {
                agent: taurus_core::types::AgentInfo {
                    id: "a".into(),
                    max_tasks: 100,
                    ..Default::default()
                },
                now_ms: 1_000,
            },
        );
        let epoch = state.agent("a").map(|a| a.epoch).expect("registered");
        // 60 tasks submitted at scrambled times (some equal, to exercise the id tie-break).
        for i in 0..60u64 {
            let spec = taurus_core::TaskSpec {
                id: format!("t{i:02}"),
                command: vec!["true".into()],
                ..Default::default()
            };
            apply(
                &mut state,
                Command::SubmitTasks {
                    requests: vec![taurus_core::command::SubmitRequest {
                        tasks: vec![spec],
                        ..Default::default()
                    }],
                    now_ms: 2_000 + (i * 37) % 23,
                },
            );
        }
        // 25 assigned and 15 cancelled, again at scrambled times.
        for i in 0..25u64 {
            apply(
                &mut state,
                Command::Assign {
                    placements: vec![taurus_core::command::Placement {
                        task_id: format!("t{i:02}"),
                        agent_id: "a".into(),
                        agent_epoch: epoch,
                        move_from: None,
                    }],
                    now_ms: 3_000 + (i * 11) % 7,
                },
            );
        }
        for i in 25..40u64 {
            apply(
                &mut state,
                Command::CancelTask {
                    id: format!("t{i:02}"),
                    reason: "test".into(),
                    now_ms: 3_000 + (i * 13) % 9,
                    by: String::new(),
                    only_own: false,
                },
            );
        }
        assert_eq!(state.count(TaskState::Assigned), 25, "placements applied");
        assert_eq!(state.count(TaskState::Cancelled), 15, "cancellations applied");
        for n in [0, 1, 5, 30, 100] {
            let ids: Vec<String> = recent_tasks(&state, n).into_iter().map(|t| t.spec.id).collect();
            assert_eq!(ids, recent_tasks_by_sorting(&state, n), "n = {n}");
        }
    }

    #[test]
    fn truncates_on_characters() {
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("ab", 2), "ab");
    }
}
