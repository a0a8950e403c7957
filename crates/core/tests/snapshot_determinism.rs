//! Snapshots (`image` / `from_image`), determinism of `apply`, and state-wide invariants under a
//! pseudo-random workload.

mod common;

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::collections::HashMap;

use common::*;
use taurus_core::Command;
use taurus_core::CoreError;
use taurus_core::Response;
use taurus_core::State;
use taurus_core::Task;
use taurus_core::TaskSpec;
use taurus_core::TaskState;
use taurus_core::state::StateImage;

fn image_json(st: &State) -> String {
    serde_json::to_string(&st.image()).unwrap()
}

/// Snapshot round trip through JSON, as a follower installing a snapshot would do it.
fn round_trip(st: &State) -> State {
    let image: StateImage = serde_json::from_str(&image_json(st)).unwrap();
    State::from_image(image).unwrap()
}

/// Asserts two states answer every query identically.
#[track_caller]
fn assert_same(a: &State, b: &State) {
    assert_eq!(a.len(), b.len());
    let all_a = all_tasks(a);
    assert_eq!(all_a, all_tasks(b));
    for t in &all_a {
        assert_eq!(a.get(&t.spec.id), b.get(&t.spec.id));
    }
    assert_eq!(runnable(a), runnable(b));
    for s in TaskState::ALL {
        assert_eq!(a.count(s), b.count(s), "count({s})");
        assert_eq!(list_all(a, &[s], 4), list_all(b, &[s], 4), "list({s})");
    }
    let multi = [TaskState::Cancelled, TaskState::Pending];
    assert_eq!(list_all(a, &multi, 3), list_all(b, &multi, 3));
    assert_eq!(image_json(a), image_json(b));
}

/// Checks everything that must hold between the task map and the derived indexes.
#[track_caller]
fn check_invariants(st: &State) {
    let all = all_tasks(st);
    assert_eq!(all.len(), st.len());
    assert!(
        all.windows(2).all(|w| w[0].spec.id < w[1].spec.id),
        "list is not in strict id order"
    );
    let one_page = st.list(&[], None, all.len() + 1);
    assert_eq!(one_page.tasks.len(), all.len());
    assert!(one_page.next_after.is_none());

    let mut total = 0;
    for s in TaskState::ALL {
        let expected: Vec<&Task> = all.iter().filter(|t| t.state == s).collect();
        let listed = list_all(st, &[s], 5);
        assert_eq!(listed.iter().collect::<Vec<_>>(), expected, "list({s})");
        assert_eq!(st.count(s), expected.len(), "count({s})");
        total += st.count(s);
    }
    assert_eq!(total, st.len(), "counts do not add up");
    let multi = list_all(
        st,
        &[TaskState::Pending, TaskState::Cancelled, TaskState::Running],
        3,
    );
    let expected: Vec<Task> = all
        .iter()
        .filter(|t| {
            matches!(
                t.state,
                TaskState::Pending | TaskState::Cancelled | TaskState::Running
            )
        })
        .cloned()
        .collect();
    assert_eq!(multi, expected);

    let mut queue: Vec<&Task> = all
        .iter()
        .filter(|t| t.state == TaskState::Pending && t.unmet_deps == 0)
        .collect();
    queue.sort_by_key(|t| (Reverse(t.spec.priority), t.seq));
    assert_eq!(
        runnable(st),
        queue.iter().map(|t| t.spec.id.clone()).collect::<Vec<_>>()
    );

    let seqs: BTreeSet<u64> = all.iter().map(|t| t.seq).collect();
    assert_eq!(seqs.len(), all.len(), "sequence numbers repeat");
    assert_eq!(
        st.image().next_seq,
        all.len() as u64,
        "every created task consumes exactly one seq"
    );

    for t in &all {
        assert!(t.created_index <= t.log_index, "{}", t.spec.id);
        for dep in &t.spec.depends_on {
            let d = st
                .get(dep)
                .unwrap_or_else(|| panic!("{} depends on missing {dep}", t.spec.id));
            assert!(d.seq < t.seq, "{dep} inserted after its dependent {}", t.spec.id);
        }
        match t.state {
            TaskState::Pending => {
                // Nothing can succeed yet, so every dependency is unmet and none is cancelled.
                assert_eq!(t.unmet_deps as usize, t.spec.depends_on.len(), "{}", t.spec.id);
                for dep in &t.spec.depends_on {
                    assert_eq!(
                        st.get(dep).unwrap().state,
                        TaskState::Pending,
                        "{} survived {dep}",
                        t.spec.id
                    );
                }
            }
            TaskState::Cancelled => {
                assert!(!t.reason.is_empty());
                if let Some(dep) = t
                    .reason
                    .strip_prefix("dependency ")
                    .and_then(|r| r.strip_suffix(" was cancelled"))
                {
                    assert!(
                        t.spec.depends_on.iter().any(|d| d == dep),
                        "{} blames non-dependency {dep}",
                        t.spec.id
                    );
                    assert_eq!(st.get(dep).unwrap().state, TaskState::Cancelled);
                }
            }
            other => panic!("no command reaches {other}"),
        }
    }
}

/// Generates a pseudo-random but reproducible stream of commands: valid and invalid submissions
/// (resubmissions, repeated ids, dependencies earlier and later in a request, cycles, unknown
/// ids) and cancels. It is told each response, so it mostly refers to tasks that exist.
struct Workload {
    rng: Rng,
    /// Ids generated so far (whether or not they were accepted).
    created: u64,
    /// Ids the state machine reported as created.
    known: Vec<String>,
    /// The dependencies each generated id was first submitted with.
    deps_of: HashMap<String, Vec<String>>,
    index: u64,
}

impl Workload {
    fn new(seed: u64) -> Self {
        Workload {
            rng: Rng::new(seed),
            created: 0,
            known: Vec::new(),
            deps_of: HashMap::new(),
            index: 0,
        }
    }

    /// Id of the n-th generated task; id order deliberately differs from creation order.
    fn id(n: u64) -> String {
        format!("{}{n}", (b'a' + ((n * 7919) % 26) as u8) as char)
    }

    /// Mostly an id that exists (often a recent one, so dependency graphs get dense and diamonds
    /// form), sometimes one that was generated but rejected.
    fn old_id(&mut self) -> String {
        let n = self.known.len() as u64;
        if n > 0 && self.rng.chance(85) {
            let back = if self.rng.chance(50) {
                self.rng.below(n.min(6))
            } else {
                self.rng.below(n)
            };
            self.known[(n - 1 - back) as usize].clone()
        } else {
            Self::id(1 + self.rng.below(self.created.max(1)))
        }
    }

    /// Learns which tasks the last command created.
    fn observe(&mut self, resp: &Response) {
        if let Response::Submit(results) = resp {
            for out in results.iter().flatten().flatten() {
                if out.created {
                    self.known.push(out.id.clone());
                }
            }
        }
    }

    fn next(&mut self) -> (u64, Command) {
        self.index += 1;
        let now_ms = now_for(self.index);
        let cmd = if self.created == 0 || self.rng.chance(65) {
            let requests = (0..1 + self.rng.below(3)).map(|_| self.request()).collect();
            submit_cmd(requests, now_ms)
        } else {
            let id = match self.rng.below(20) {
                0 => "unknown-task".to_string(),
                1 => String::new(),
                _ => self.old_id(),
            };
            let reason = ["", "r", "because"][self.rng.below(3) as usize];
            cancel_cmd(&id, reason, now_ms)
        };
        (self.index, cmd)
    }

    fn request(&mut self) -> Vec<TaskSpec> {
        let n = 1 + self.rng.below(4) as usize;
        let ids: Vec<String> = (0..n)
            .map(|_| {
                if self.created > 0 && self.rng.chance(15) {
                    self.old_id()
                } else {
                    self.created += 1;
                    Self::id(self.created)
                }
            })
            .collect();
        (0..n)
            .map(|i| {
                let mut deps = Vec::new();
                for _ in 0..self.rng.below(4) {
                    let dep = match self.rng.below(100) {
                        0..=1 => format!("ghost{}", self.rng.below(5)),
                        2..=14 => ids[self.rng.below(n as u64) as usize].clone(),
                        _ => self.old_id(),
                    };
                    // Mostly well-formed lists; now and then a self or repeated dependency.
                    if self.rng.chance(97) && (dep == ids[i] || deps.contains(&dep)) {
                        continue;
                    }
                    deps.push(dep);
                }
                // Often also depend on a dependency of a dependency: diamonds, where a cancel
                // reaches a task along two paths.
                if let Some(first) = deps.first()
                    && self.rng.chance(50)
                    && let Some(grand) = self.deps_of.get(first).filter(|g| !g.is_empty())
                {
                    let g = grand[self.rng.below(grand.len() as u64) as usize].clone();
                    if g != ids[i] && !deps.contains(&g) {
                        deps.push(g);
                    }
                }
                self.deps_of.entry(ids[i].clone()).or_insert_with(|| deps.clone());
                let mut spec = TaskSpec {
                    priority: self.rng.below(5) as i32 - 2,
                    depends_on: deps,
                    ..spec(&ids[i])
                };
                if self.rng.chance(3) {
                    spec.command.clear();
                }
                spec
            })
            .collect()
    }
}

fn submit_outcomes(resp: &Response) -> (usize, usize) {
    match resp {
        Response::Submit(results) => {
            let ok = results.iter().filter(|r| r.is_ok()).count();
            (ok, results.len() - ok)
        }
        _ => (0, 0),
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots

#[test]
fn snapshot_of_an_empty_state() {
    let st = State::new();
    let restored = round_trip(&st);
    assert!(restored.is_empty());
    assert_same(&st, &restored);
}

fn varied_state() -> State {
    let mut st = State::new();
    let mut labelled = spec_prio("lab", 4);
    labelled.labels.insert("team".into(), "infra".into());
    labelled.env.insert("K".into(), "V=1".into());
    labelled.resources.cpu_millis = 1500;
    labelled.timeout_ms = 60_000;
    labelled.max_attempts = 3;
    submit(
        &mut st,
        1,
        vec![
            vec![
                spec("root"),
                spec_prio("hi", 9),
                labelled,
                spec_deps("kid", &["root"]),
            ],
            vec![
                spec_deps("grandkid", &["kid", "hi"]),
                spec("doomed"),
                spec_deps("doomed-kid", &["doomed"]),
            ],
        ],
    );
    cancel(&mut st, 2, "doomed", "no").unwrap();
    submit_one(
        &mut st,
        3,
        vec![spec_deps("late", &["doomed"]), spec_prio("lo", -1)],
    )
    .unwrap();
    st
}

#[test]
fn snapshot_round_trip_answers_identically() {
    let st = varied_state();
    let restored = round_trip(&st);
    assert_same(&st, &restored);
    assert_eq!(runnable(&restored), ["hi", "lab", "root", "lo"]);
    assert_eq!(restored.count(TaskState::Cancelled), 3);
    assert_eq!(restored.get("grandkid").unwrap().unmet_deps, 2);
    assert_eq!(
        restored.get("late").unwrap().reason,
        "dependency doomed was cancelled"
    );
}

#[test]
fn restored_state_continues_applying_identically() {
    let mut live = varied_state();
    let mut restored = round_trip(&live);
    let further = vec![
        submit_cmd(
            vec![vec![
                spec("lab"),
                spec_deps("new", &["grandkid"]),
                spec_prio("hi2", 9),
            ]],
            now_for(4),
        ),
        cancel_cmd("hi", "stop", now_for(5)),
        cancel_cmd("hi", "again", now_for(6)),
        submit_cmd(
            vec![
                vec![spec_deps("after", &["new"])],
                vec![spec_deps("x", &["missing"])],
            ],
            now_for(7),
        ),
        cancel_cmd("root", "", now_for(8)),
        cancel_cmd("nope", "", now_for(9)),
        submit_cmd(vec![vec![spec("z1"), spec("z2")]], now_for(10)),
    ];
    for (i, cmd) in further.into_iter().enumerate() {
        let index = 4 + i as u64;
        let a = live.apply(index, cmd.clone());
        let b = restored.apply(index, cmd);
        assert_eq!(a, b, "responses differ at {index}");
        assert_same(&live, &restored);
    }
    // The workload really did something.
    assert_eq!(live.get("after").unwrap().state, TaskState::Cancelled);
    assert_eq!(
        live.get("z2").unwrap().seq,
        live.len() as u64 - 1,
        "numbering continues after restore"
    );
    assert_eq!(runnable(&live), ["hi2", "lab", "z1", "z2", "lo"]);
}

#[test]
fn restored_state_cancels_a_diamond_like_the_original() {
    // `b` depends on `a` and on `c`, and `c` depends on `a`; id order (a, b, c) differs from
    // creation order (a, c, b). Cancelling `a` must leave the same reasons on every replica,
    // whether it replayed the log or installed a snapshot.
    let mut live = State::new();
    submit_one(
        &mut live,
        1,
        vec![spec("a"), spec_deps("b", &["a", "c"]), spec_deps("c", &["a"])],
    )
    .unwrap();
    submit_one(
        &mut live,
        2,
        vec![spec_deps("d", &["b", "a"]), spec_deps("e", &["c"])],
    )
    .unwrap();
    let mut restored = round_trip(&live);
    assert_same(&live, &restored);
    let cmd = cancel_cmd("a", "", now_for(3));
    assert_eq!(live.apply(3, cmd.clone()), restored.apply(3, cmd));
    for id in ["b", "c", "d", "e"] {
        assert_eq!(live.get(id).unwrap().state, TaskState::Cancelled, "{id}");
        assert_eq!(
            live.get(id).unwrap().reason,
            restored.get(id).unwrap().reason,
            "reason of {id}"
        );
    }
    assert_same(&live, &restored);
}

#[test]
fn from_image_rejects_a_duplicated_task() {
    let st = varied_state();
    let mut image: StateImage = serde_json::from_str(&image_json(&st)).unwrap();
    let dup = image.tasks.iter().find(|t| t.spec.id == "kid").unwrap().clone();
    image.tasks.push(dup);
    match State::from_image(image) {
        Err(CoreError::CorruptSnapshot(msg)) => {
            assert!(msg.contains("kid") && msg.contains("twice"), "{msg}")
        }
        other => panic!("duplicate accepted: {other:?}"),
    }
}

#[test]
fn from_image_rejects_a_seq_at_or_beyond_next_seq() {
    let st = varied_state();
    let image: StateImage = serde_json::from_str(&image_json(&st)).unwrap();
    let next_seq = image.next_seq;
    assert_eq!(next_seq, st.len() as u64);

    // next_seq too small by one: the newest task's seq equals it.
    let short = StateImage {
        next_seq: next_seq - 1,
        tasks: image.tasks.clone(),
        agents: Vec::new(),
        acl: Default::default(),
    };
    match State::from_image(short) {
        Err(CoreError::CorruptSnapshot(msg)) => assert!(msg.contains("seq"), "{msg}"),
        other => panic!("seq == next_seq accepted: {other:?}"),
    }
    // A task with a seq far beyond.
    let mut tasks = image.tasks.clone();
    tasks[0].seq = u64::MAX;
    assert!(matches!(
        State::from_image(StateImage {
            next_seq,
            tasks,
            agents: Vec::new(),
            acl: Default::default(),
        }),
        Err(CoreError::CorruptSnapshot(_))
    ));
    // The unmodified image loads, and a larger next_seq is fine too.
    State::from_image(StateImage {
        next_seq,
        tasks: image.tasks.clone(),
        agents: Vec::new(),
        acl: Default::default(),
    })
    .unwrap();
    let mut roomy = State::from_image(StateImage {
        next_seq: next_seq + 10,
        tasks: image.tasks,
        agents: Vec::new(),
        acl: Default::default(),
    })
    .unwrap();
    submit_one(&mut roomy, 9, vec![spec("fresh")]).unwrap();
    assert_eq!(roomy.get("fresh").unwrap().seq, next_seq + 10);
}

#[test]
fn from_image_applies_serde_defaults() {
    // Optional fields may be missing from older snapshots.
    let json = r#"{"next_seq": 2, "tasks": [
        {"spec": {"id": "a", "command": ["/bin/true"]}, "state": "pending", "created_index": 1,
         "log_index": 1, "submitted_at_ms": 5, "updated_at_ms": 5, "seq": 0},
        {"spec": {"id": "b", "command": ["/bin/true"], "depends_on": ["a"]}, "state": "pending",
         "created_index": 2, "log_index": 2, "submitted_at_ms": 6, "updated_at_ms": 6, "seq": 1, "unmet_deps": 1}
    ]}"#;
    let mut st = State::from_image(serde_json::from_str(json).unwrap()).unwrap();
    let a = st.get("a").unwrap();
    assert_eq!(a.spec.max_attempts, 1);
    assert_eq!((a.unmet_deps, a.reason.as_str(), a.attempts.len()), (0, "", 0));
    assert_eq!(runnable(&st), ["a"]);
    cancel(&mut st, 3, "a", "").unwrap();
    assert_eq!(
        st.get("b").unwrap().state,
        TaskState::Cancelled,
        "dependency edges were rebuilt"
    );
    assert_eq!(st.get("b").unwrap().log_index, 3);
}

#[test]
fn random_workload_snapshots_continue_identically() {
    for seed in [1u64, 2, 3] {
        let mut work = Workload::new(seed);
        let mut live = State::new();
        let mut copies: Vec<(u64, State)> = Vec::new();
        for step in 1..=400u64 {
            if step % 40 == 0 {
                copies.push((step, round_trip(&live)));
            }
            let (index, cmd) = work.next();
            let expected = live.apply(index, cmd.clone());
            work.observe(&expected);
            for (from, copy) in copies.iter_mut() {
                let got = copy.apply(index, cmd.clone());
                assert_eq!(
                    got, expected,
                    "seed {seed}: copy restored at {from} answers differently at {index}"
                );
            }
        }
        for (from, copy) in &copies {
            assert_eq!(
                all_tasks(copy),
                all_tasks(&live),
                "seed {seed}: copy restored at {from} diverged"
            );
            assert_same(copy, &live);
        }
        assert!(
            live.count(TaskState::Cancelled) > 20,
            "seed {seed}: workload cancels too little"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Determinism and invariants

#[test]
fn same_commands_give_identical_states() {
    for seed in [11u64, 12, 13, 14] {
        // Generate the log against a scratch replica first, then feed it to two fresh ones.
        let commands: Vec<(u64, Command)> = {
            let mut work = Workload::new(seed);
            let mut scratch = State::new();
            (0..300)
                .map(|_| {
                    let (index, cmd) = work.next();
                    work.observe(&scratch.apply(index, cmd.clone()));
                    (index, cmd)
                })
                .collect()
        };
        let mut a = State::new();
        let mut b = State::new();
        let (mut accepted, mut rejected) = (0, 0);
        for (index, cmd) in &commands {
            // The second replica reads each command back from its log encoding.
            let decoded: Command = serde_json::from_str(&serde_json::to_string(cmd).unwrap()).unwrap();
            assert_eq!(&decoded, cmd);
            let ra = a.apply(*index, cmd.clone());
            let rb = b.apply(*index, decoded);
            assert_eq!(ra, rb, "seed {seed}: responses differ at {index}");
            let (ok, bad) = submit_outcomes(&ra);
            accepted += ok;
            rejected += bad;
        }
        assert_eq!(all_tasks(&a), all_tasks(&b));
        assert_same(&a, &b);
        assert!(
            accepted > 50 && rejected > 10,
            "seed {seed}: workload too one-sided ({accepted}/{rejected})"
        );
    }
}

#[test]
fn counts_and_indexes_stay_consistent_under_a_random_workload() {
    for seed in [21u64, 22] {
        let mut work = Workload::new(seed);
        let mut st = State::new();
        for _ in 0..350 {
            let (index, cmd) = work.next();
            let resp = st.apply(index, cmd);
            work.observe(&resp);
            check_invariants(&st);
        }
        assert!(st.count(TaskState::Pending) > 10, "seed {seed}");
        assert!(st.count(TaskState::Cancelled) > 10, "seed {seed}");
        assert!(st.runnable().count() > 0, "seed {seed}");
        assert!(
            st.count(TaskState::Pending) > st.runnable().count(),
            "seed {seed}: no blocked tasks"
        );
    }
}
