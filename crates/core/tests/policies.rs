//! The scheduling policies (`taurus_core::schedule`): one table per policy for the choice that
//! sets it apart, then the rules every policy shares, checked for all four.
//!
//! Placements are written `task->agent`, and `task->agent (from N)` for a move of work assigned
//! under fencing token `N`.

use std::collections::BTreeMap;
use std::collections::HashSet;

use taurus_core::command::Placement;
use taurus_core::schedule::AgentView;
use taurus_core::schedule::Candidate;
use taurus_core::schedule::PolicyKind;
use taurus_core::schedule::REFERENCE_LATENCY_MS;
use taurus_core::schedule::Unstarted;
use taurus_core::schedule::View;
use taurus_core::types::Resources;

const NOW: u64 = 1_700_000_000_000;

/// An alive agent in the default pool, epoch 7, with 4 slots, 4 cores, 8 GiB and 10 GiB of disk.
fn agent(id: &str) -> AgentView {
    AgentView {
        id: id.to_string(),
        epoch: 7,
        pool: String::new(),
        labels: BTreeMap::new(),
        total: Resources {
            cpu_millis: 4000,
            memory_mb: 8192,
            disk_mb: 10_240,
        },
        max_tasks: 4,
        used: Resources::default(),
        tasks: 0,
        alive: true,
        load: None,
        start_latency_ms: None,
        unstarted: Vec::new(),
    }
}

/// `agent(id)` already running `tasks` tasks of one core and 1 GiB each.
fn busy(id: &str, tasks: u32) -> AgentView {
    AgentView {
        tasks,
        used: Resources {
            cpu_millis: 1000 * tasks,
            memory_mb: 1024 * tasks as u64,
            disk_mb: 0,
        },
        ..agent(id)
    }
}

/// A task of one core and 1 GiB at `priority`, queued now; `seq` is taken from its position in
/// the view (see [`view`]).
fn task(id: &str, priority: i32) -> Candidate {
    Candidate {
        id: id.to_string(),
        priority,
        seq: 0,
        queued_at_ms: NOW,
        resources: Resources {
            cpu_millis: 1000,
            memory_mb: 1024,
            disk_mb: 0,
        },
        pool: String::new(),
        constraints: BTreeMap::new(),
    }
}

fn sized(id: &str, cpu_millis: u32, memory_mb: u64, disk_mb: u64) -> Candidate {
    Candidate {
        resources: Resources {
            cpu_millis,
            memory_mb,
            disk_mb,
        },
        ..task(id, 0)
    }
}

/// A view at `NOW`, no ageing, a budget of 100; candidates get `seq` in the order given.
fn view(candidates: Vec<Candidate>, agents: Vec<AgentView>) -> View {
    View {
        now_ms: NOW,
        candidates: candidates
            .into_iter()
            .enumerate()
            .map(|(i, c)| Candidate {
                seq: i as u64 + 1,
                ..c
            })
            .collect(),
        agents,
        ageing_ms_per_point: 0,
        max_placements: 100,
    }
}

fn show(placements: &[Placement]) -> Vec<String> {
    placements
        .iter()
        .map(|p| match p.move_from {
            None => format!("{}->{}", p.task_id, p.agent_id),
            Some(token) => format!("{}->{} (from {token})", p.task_id, p.agent_id),
        })
        .collect()
}

/// Runs `policy` on `view`, checks the shared rules hold, and returns the placements shown.
#[track_caller]
fn run(kind: PolicyKind, view: &View) -> Vec<String> {
    let placements = kind.build().place(view);
    check_rules(kind, view, &placements);
    show(&placements)
}

/// Replays `placements` on a copy of the view's agents and checks every shared rule: the budget,
/// each task at most once, the agent's epoch, eligibility (alive, pool, constraints, slot and
/// resources) as booked so far, and moves only of unstarted work, away from its agent.
#[track_caller]
fn check_rules(kind: PolicyKind, view: &View, placements: &[Placement]) {
    assert!(placements.len() <= view.max_placements, "{kind}: over budget");
    let mut agents: BTreeMap<&str, AgentView> =
        view.agents.iter().map(|a| (a.id.as_str(), a.clone())).collect();
    let mut seen = HashSet::new();
    for p in placements {
        assert!(
            seen.insert(p.task_id.clone()),
            "{kind}: {} placed twice",
            p.task_id
        );
        let task = match p.move_from {
            None => view
                .candidates
                .iter()
                .find(|c| c.id == p.task_id)
                .unwrap_or_else(|| panic!("{kind}: {} is not a candidate", p.task_id))
                .clone(),
            Some(token) => {
                let (source, moved) = view
                    .agents
                    .iter()
                    .find_map(|a| {
                        let u = a
                            .unstarted
                            .iter()
                            .find(|u| u.task.id == p.task_id && u.token == token)?;
                        Some((a.id.as_str(), u.task.clone()))
                    })
                    .unwrap_or_else(|| panic!("{kind}: {} is not unstarted under {token}", p.task_id));
                assert_ne!(source, p.agent_id, "{kind}: {} moved to where it is", p.task_id);
                assert_eq!(kind, PolicyKind::DelayGuided, "only delay-guided moves work");
                agents.get_mut(source).unwrap().give_back(&moved.resources);
                moved
            }
        };
        let agent = agents
            .get_mut(p.agent_id.as_str())
            .expect("placement on an unknown agent");
        assert_eq!(p.agent_epoch, agent.epoch, "{kind}: wrong epoch");
        assert!(
            agent.eligible(&task),
            "{kind}: {} on ineligible {}",
            task.id,
            agent.id
        );
        agent.take(&task.resources);
    }
}

#[derive(Debug)]
struct Case {
    name: &'static str,
    view: View,
    want: &'static [&'static str],
}

#[track_caller]
fn run_table(kind: PolicyKind, cases: Vec<Case>) {
    for case in cases {
        assert_eq!(run(kind, &case.view), case.want, "{kind}: {}", case.name);
    }
}

// ---------------------------------------------------------------------------------------------
// What sets each policy apart.
// ---------------------------------------------------------------------------------------------

#[test]
fn greedy_places_by_priority_round_robin() {
    run_table(
        PolicyKind::Greedy,
        vec![
            Case {
                name: "strict priority order, first come first served among equals",
                view: view(
                    vec![task("low", 1), task("high", 9), task("mid", 5), task("mid2", 5)],
                    vec![agent("a")],
                ),
                want: &["high->a", "mid->a", "mid2->a", "low->a"],
            },
            Case {
                name: "scarce capacity goes to the highest priority",
                view: view(
                    vec![task("low", 1), task("high", 9), task("mid", 5)],
                    vec![busy("a", 2)],
                ),
                want: &["high->a", "mid->a"],
            },
            Case {
                name: "equal agents take turns",
                view: view(
                    vec![task("t1", 0), task("t2", 0), task("t3", 0), task("t4", 0)],
                    vec![agent("a"), agent("b"), agent("c")],
                ),
                want: &["t1->a", "t2->b", "t3->c", "t4->a"],
            },
            Case {
                name: "the cursor skips a full agent and wraps around",
                view: view(
                    vec![task("t1", 0), task("t2", 0), task("t3", 0)],
                    vec![agent("a"), busy("b", 4), agent("c")],
                ),
                want: &["t1->a", "t2->c", "t3->a"],
            },
            Case {
                name: "greedy does not prefer the emptier agent",
                view: view(vec![task("t1", 0)], vec![busy("a", 3), agent("b")]),
                want: &["t1->a"],
            },
        ],
    );
}

#[test]
fn binpack_fills_the_fullest_agent() {
    run_table(
        PolicyKind::Binpack,
        vec![
            Case {
                name: "the fuller agent",
                view: view(vec![task("t1", 0)], vec![agent("a"), busy("b", 2)]),
                want: &["t1->b"],
            },
            Case {
                name: "one agent fills up before the next is used",
                view: view(
                    vec![
                        task("t1", 0),
                        task("t2", 0),
                        task("t3", 0),
                        task("t4", 0),
                        task("t5", 0),
                    ],
                    vec![agent("a"), agent("b")],
                ),
                want: &["t1->a", "t2->a", "t3->a", "t4->a", "t5->b"],
            },
            Case {
                name: "best fit: where the task leaves the least room",
                view: view(
                    vec![sized("big", 1000, 3000, 0)],
                    vec![
                        agent("a"),
                        AgentView {
                            total: Resources {
                                memory_mb: 4096,
                                ..agent("b").total
                            },
                            ..agent("b")
                        },
                    ],
                ),
                want: &["big->b"],
            },
        ],
    );
}

#[test]
fn spread_picks_the_emptiest_agent() {
    let small = |id: &str| AgentView {
        max_tasks: 2,
        ..agent(id)
    };
    let large = |id: &str| AgentView {
        max_tasks: 8,
        total: Resources {
            cpu_millis: 16_000,
            memory_mb: 32_768,
            disk_mb: 10_240,
        },
        ..agent(id)
    };
    run_table(
        PolicyKind::Spread,
        vec![
            Case {
                name: "the emptier agent",
                view: view(vec![task("t1", 0)], vec![busy("a", 2), agent("b")]),
                want: &["t1->b"],
            },
            Case {
                name: "equal agents alternate",
                view: view(
                    vec![task("t1", 0), task("t2", 0), task("t3", 0), task("t4", 0)],
                    vec![agent("a"), agent("b")],
                ),
                want: &["t1->a", "t2->b", "t3->a", "t4->b"],
            },
            Case {
                name: "in proportion to capacity",
                view: view(
                    vec![
                        task("t1", 0),
                        task("t2", 0),
                        task("t3", 0),
                        task("t4", 0),
                        task("t5", 0),
                    ],
                    vec![small("a"), large("b")],
                ),
                // b (8 slots) reaches a's 1/2 only after 4 tasks.
                want: &["t1->b", "t2->b", "t3->b", "t4->a", "t5->b"],
            },
            Case {
                name: "equally full after placing: the one with fewer tasks",
                view: view(vec![task("t1", 0)], vec![busy("a", 1), small("b")]),
                want: &["t1->b"],
            },
        ],
    );
}

#[test]
fn delay_guided_balances_load_and_start_latency() {
    let slow = |id: &str, latency_ms: f64| AgentView {
        start_latency_ms: Some(latency_ms),
        ..agent(id)
    };
    let loaded = |id: &str, load: f64| AgentView {
        load: Some(load),
        ..agent(id)
    };
    run_table(
        PolicyKind::DelayGuided,
        vec![
            Case {
                name: "avoids a slow-starting agent",
                view: view(vec![task("t1", 0)], vec![slow("a", 2000.0), slow("b", 20.0)]),
                want: &["t1->b"],
            },
            Case {
                name: "avoids a loaded agent, by reported load",
                view: view(vec![task("t1", 0)], vec![loaded("a", 0.7), loaded("b", 0.2)]),
                want: &["t1->b"],
            },
            Case {
                name: "no report yet: booked utilisation stands in for load",
                view: view(vec![task("t1", 0)], vec![busy("a", 2), agent("b")]),
                want: &["t1->b"],
            },
            Case {
                name: "a round's placements raise the estimate, so they spread",
                view: view(
                    vec![task("t1", 0), task("t2", 0), task("t3", 0)],
                    vec![loaded("a", 0.0), loaded("b", 0.3)],
                ),
                // a: 0.25, 0.5 with t1, t2; b: 0.3 + 0.25 = 0.55 loses to a's 0.5 for t2.
                want: &["t1->a", "t2->a", "t3->b"],
            },
            Case {
                name: "latency weighs load: a lightly loaded slow agent loses to a busier fast one",
                view: view(
                    vec![task("t1", 0)],
                    vec![
                        AgentView {
                            load: Some(0.2),
                            start_latency_ms: Some(2.0 * REFERENCE_LATENCY_MS),
                            ..agent("a")
                        },
                        loaded("b", 0.5),
                    ],
                ),
                // a: (0.2 + 0.25) × 3 = 1.35; b: 0.75.
                want: &["t1->b"],
            },
            Case {
                name: "an agent over its limits takes no new work",
                view: view(vec![task("t1", 0)], vec![loaded("a", 1.2)]),
                want: &[],
            },
        ],
    );
}

#[test]
fn delay_guided_relieves_agents_over_their_limits() {
    // `a` reports 1.5 and holds two unstarted tasks, oldest first.
    let overloaded = |id: &str, load: f64, unstarted: &[(&str, u64)]| {
        let mut a = busy(id, unstarted.len() as u32);
        a.load = Some(load);
        a.unstarted = unstarted
            .iter()
            .map(|&(t, token)| Unstarted {
                task: task(t, 0),
                token,
            })
            .collect();
        a
    };
    let loaded = |id: &str, load: f64| AgentView {
        load: Some(load),
        ..agent(id)
    };
    run_table(
        PolicyKind::DelayGuided,
        vec![
            Case {
                name: "unstarted work moves, oldest first, to the best other agent",
                view: view(
                    vec![],
                    vec![
                        overloaded("a", 1.5, &[("u1", 11), ("u2", 12)]),
                        loaded("b", 0.5),
                        agent("c"),
                    ],
                ),
                want: &["u1->c (from 11)", "u2->c (from 12)"],
            },
            Case {
                name: "relief before new work, within the same budget",
                view: View {
                    max_placements: 2,
                    ..view(
                        vec![task("new", 9)],
                        vec![overloaded("a", 1.5, &[("u1", 11), ("u2", 12)]), agent("b")],
                    )
                },
                want: &["u1->b (from 11)", "u2->b (from 12)"],
            },
            Case {
                name: "the most overloaded agent first",
                view: View {
                    max_placements: 1,
                    ..view(
                        vec![],
                        vec![
                            overloaded("a", 1.2, &[("u1", 11)]),
                            overloaded("b", 1.8, &[("u2", 12)]),
                            agent("c"),
                        ],
                    )
                },
                want: &["u2->c (from 12)"],
            },
            Case {
                name: "not to an agent that the task would push over its limits",
                view: view(
                    vec![],
                    vec![overloaded("a", 1.5, &[("u1", 11)]), loaded("b", 0.9)],
                ),
                want: &[],
            },
            Case {
                name: "not to an agent that scores worse (slow to start)",
                view: view(
                    vec![],
                    vec![
                        overloaded("a", 1.1, &[("u1", 11)]),
                        AgentView {
                            start_latency_ms: Some(10.0 * REFERENCE_LATENCY_MS),
                            ..agent("b")
                        },
                    ],
                ),
                want: &[],
            },
            Case {
                name: "not from an agent within its limits",
                view: view(vec![], vec![overloaded("a", 1.0, &[("u1", 11)]), agent("b")]),
                want: &[],
            },
            Case {
                name: "not to another overloaded agent",
                view: view(
                    vec![],
                    vec![overloaded("a", 1.5, &[("u1", 11)]), overloaded("b", 1.1, &[])],
                ),
                want: &[],
            },
            Case {
                name: "moved work respects the task's pool",
                view: view(
                    vec![],
                    vec![
                        AgentView {
                            pool: "gpu".into(),
                            ..overloaded("a", 1.5, &[("u1", 11)])
                        },
                        {
                            let mut u = overloaded("x", 1.5, &[]);
                            u.unstarted = vec![Unstarted {
                                task: Candidate {
                                    pool: "gpu".into(),
                                    ..task("g1", 0)
                                },
                                token: 13,
                            }];
                            u.pool = "gpu".into();
                            u
                        },
                        agent("b"),
                        AgentView {
                            pool: "gpu".into(),
                            ..agent("c")
                        },
                    ],
                ),
                want: &["u1->b (from 11)", "g1->c (from 13)"],
            },
        ],
    );
}

#[test]
fn one_view_four_answers() {
    // a: first in id order, half full after placing, a little slow to start.
    // b: fullest. c: emptiest but very slow to start. d: empty by bookings but reports load.
    let v = view(
        vec![task("t1", 0)],
        vec![
            AgentView {
                start_latency_ms: Some(REFERENCE_LATENCY_MS),
                ..busy("a", 1)
            },
            busy("b", 3),
            AgentView {
                start_latency_ms: Some(3.0 * REFERENCE_LATENCY_MS),
                ..agent("c")
            },
            AgentView {
                load: Some(0.6),
                ..agent("d")
            },
        ],
    );
    // Scores for delay-guided: a 0.5 × 2 = 1.0, b 1.0, c 0.25 × 4 = 1.0, d 0.6 + 0.25 = 0.85.
    for (kind, want) in [
        (PolicyKind::Greedy, "t1->a"),
        (PolicyKind::Binpack, "t1->b"),
        (PolicyKind::Spread, "t1->c"),
        (PolicyKind::DelayGuided, "t1->d"),
    ] {
        assert_eq!(run(kind, &v), [want], "{kind}");
    }
}

// ---------------------------------------------------------------------------------------------
// Rules every policy shares.
// ---------------------------------------------------------------------------------------------

/// Runs `view` through every policy and checks each places exactly `want` (in any order) —
/// these cases leave every policy a single acceptable choice.
#[track_caller]
fn all_policies(name: &str, view: &View, want: &[&str]) {
    for kind in PolicyKind::ALL {
        let mut got = run(kind, view);
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{kind}: {name}");
    }
}

#[test]
fn every_policy_respects_pools_and_constraints() {
    let labelled = |id: &str, zone: &str| AgentView {
        labels: BTreeMap::from([("zone".to_string(), zone.to_string())]),
        ..agent(id)
    };
    let in_pool = |id: &str, pool: &str| AgentView {
        pool: pool.to_string(),
        ..agent(id)
    };
    let wants_pool = |id: &str, pool: &str| Candidate {
        pool: pool.to_string(),
        ..task(id, 0)
    };
    let wants_zone = |id: &str, zone: &str| Candidate {
        constraints: BTreeMap::from([("zone".to_string(), zone.to_string())]),
        ..task(id, 0)
    };
    all_policies(
        "pool",
        &view(
            vec![wants_pool("t1", "gpu")],
            vec![in_pool("a", "cpu"), in_pool("b", "gpu")],
        ),
        &["t1->b"],
    );
    all_policies(
        "no agent in the pool",
        &view(
            vec![wants_pool("t1", "tpu")],
            vec![in_pool("a", "cpu"), in_pool("b", "gpu")],
        ),
        &[],
    );
    all_policies(
        "constraint",
        &view(
            vec![wants_zone("t1", "eu")],
            vec![labelled("a", "us"), agent("b"), labelled("c", "eu")],
        ),
        &["t1->c"],
    );
    all_policies(
        "every constraint must match",
        &view(
            vec![Candidate {
                constraints: BTreeMap::from([
                    ("zone".to_string(), "eu".to_string()),
                    ("disk".to_string(), "ssd".to_string()),
                ]),
                ..task("t1", 0)
            }],
            vec![labelled("a", "eu"), {
                let mut b = labelled("b", "eu");
                b.labels.insert("disk".into(), "ssd".into());
                b
            }],
        ),
        &["t1->b"],
    );
}

#[test]
fn every_policy_respects_resources_and_slots() {
    let with_free = |id: &str, free: Resources| {
        let total = agent(id).total;
        AgentView {
            used: Resources {
                cpu_millis: total.cpu_millis - free.cpu_millis,
                memory_mb: total.memory_mb - free.memory_mb,
                disk_mb: total.disk_mb - free.disk_mb,
            },
            tasks: 1,
            ..agent(id)
        }
    };
    let plenty = Resources {
        cpu_millis: 3000,
        memory_mb: 4096,
        disk_mb: 4096,
    };
    // `a` lacks exactly one dimension; `b` has room; the task needs 2 cores, 2 GiB, 2 GiB.
    let need = sized("t1", 2000, 2048, 2048);
    for (dimension, short) in [
        (
            "cpu",
            Resources {
                cpu_millis: 1999,
                ..plenty
            },
        ),
        (
            "memory",
            Resources {
                memory_mb: 2047,
                ..plenty
            },
        ),
        (
            "disk",
            Resources {
                disk_mb: 2047,
                ..plenty
            },
        ),
    ] {
        all_policies(
            dimension,
            &view(
                vec![need.clone()],
                vec![with_free("a", short), with_free("b", plenty)],
            ),
            &["t1->b"],
        );
    }
    all_policies(
        "slots",
        &view(vec![task("t1", 0)], vec![busy("a", 4), with_free("b", plenty)]),
        &["t1->b"],
    );
    all_policies(
        "exactly fits",
        &view(vec![sized("t1", 4000, 8192, 10_240)], vec![agent("a")]),
        &["t1->a"],
    );
    all_policies(
        "capacity booked within the round: two 3-core tasks need two agents",
        &view(
            vec![sized("t1", 3000, 0, 0), sized("t2", 3000, 0, 0)],
            vec![agent("a"), agent("b")],
        ),
        &["t1->a", "t2->b"],
    );
    all_policies(
        "slots booked within the round",
        &view(
            vec![sized("t1", 0, 0, 0), sized("t2", 0, 0, 0), sized("t3", 0, 0, 0)],
            vec![busy("a", 3), busy("b", 3)],
        ),
        &["t1->a", "t2->b"],
    );
    all_policies(
        "a huge high-priority task is skipped, a smaller one still placed",
        &view(
            vec![
                Candidate {
                    priority: 10,
                    ..sized("huge", 64_000, 1024, 0)
                },
                task("small", 1),
            ],
            vec![agent("a")],
        ),
        &["small->a"],
    );
}

#[test]
fn every_policy_gives_draining_agents_nothing() {
    let draining = |id: &str| AgentView {
        alive: false,
        ..agent(id)
    };
    all_policies(
        "only a draining agent",
        &view(vec![task("t1", 0), task("t2", 0)], vec![draining("a")]),
        &[],
    );
    all_policies(
        "draining next to an alive one",
        &view(
            vec![task("t1", 0)],
            vec![draining("a"), busy("b", 3), draining("c")],
        ),
        &["t1->b"],
    );
}

#[test]
fn every_policy_respects_the_budget() {
    let many: Vec<Candidate> = (0..10).map(|i| task(&format!("t{i}"), 0)).collect();
    let agents = vec![agent("a"), agent("b"), agent("c")];
    for (max, want) in [(0, 0), (1, 1), (5, 5), (100, 10)] {
        let v = View {
            max_placements: max,
            ..view(many.clone(), agents.clone())
        };
        for kind in PolicyKind::ALL {
            assert_eq!(run(kind, &v).len(), want, "{kind}: max_placements {max}");
        }
    }
    // With a budget, the highest priorities are the ones placed.
    let v = View {
        max_placements: 2,
        ..view(vec![task("p1", 1), task("p3", 3), task("p2", 2)], agents)
    };
    for kind in PolicyKind::ALL {
        let mut got: Vec<String> = run(kind, &v).iter().map(|p| p[..2].to_string()).collect();
        got.sort();
        assert_eq!(got, ["p2", "p3"], "{kind}");
    }
}

#[test]
fn every_policy_lets_aged_work_overtake() {
    // One slot. `old` (priority 0) has waited 100 s; with one point per 10 s it ranks 10 and
    // beats `new` (priority 5). Without ageing, `new` wins.
    let candidates = vec![
        Candidate {
            queued_at_ms: NOW - 100_000,
            ..task("old", 0)
        },
        task("new", 5),
    ];
    let aged = View {
        ageing_ms_per_point: 10_000,
        ..view(candidates.clone(), vec![busy("a", 3)])
    };
    all_policies("ageing", &aged, &["old->a"]);
    let slow_ageing = View {
        ageing_ms_per_point: 50_000,
        ..aged.clone()
    };
    all_policies("not aged enough", &slow_ageing, &["new->a"]);
    let no_ageing = View {
        ageing_ms_per_point: 0,
        ..aged
    };
    all_policies("no ageing", &no_ageing, &["new->a"]);
}

#[test]
fn every_policy_places_each_task_once() {
    // The same id twice in the window (a leader bug, or a window built across two reads).
    let v = view(
        vec![task("t1", 0), task("t1", 0), task("t2", 0)],
        vec![agent("a"), agent("b")],
    );
    for kind in PolicyKind::ALL {
        let got = run(kind, &v);
        assert_eq!(got.len(), 2, "{kind}: {got:?}");
    }
    // A task both unstarted on an overloaded agent and (wrongly) a candidate moves once.
    let mut a = busy("a", 1);
    a.load = Some(1.5);
    a.unstarted = vec![Unstarted {
        task: task("t1", 0),
        token: 11,
    }];
    let v = view(vec![task("t1", 0)], vec![a, agent("b")]);
    assert_eq!(run(PolicyKind::DelayGuided, &v), ["t1->b (from 11)"]);
}

#[test]
fn every_policy_uses_the_agents_epoch() {
    let v = view(
        vec![task("t1", 0)],
        vec![AgentView {
            epoch: 42,
            ..agent("a")
        }],
    );
    for kind in PolicyKind::ALL {
        let placements = kind.build().place(&v);
        assert_eq!(placements.len(), 1);
        assert_eq!(placements[0].agent_epoch, 42, "{kind}");
        assert_eq!(placements[0].move_from, None, "{kind}");
    }
}

/// A deterministic pseudo-random generator (xorshift64*), so the mixed views below are the same
/// on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A busy, mixed view: pools, labels, uneven capacity, draining agents, reported load and
/// latency, overloaded agents with unstarted work, and more candidates than room.
fn mixed_view(seed: u64) -> View {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let pools = ["", "gpu"];
    let zones = ["eu", "us"];
    let mut token = 100;
    let mut agents = Vec::new();
    for i in 0..12 {
        let mut a = agent(&format!("agent-{i:02}"));
        a.pool = pools[rng.below(2) as usize].to_string();
        a.labels
            .insert("zone".into(), zones[rng.below(2) as usize].into());
        a.max_tasks = 1 + rng.below(8) as u32;
        a.total.cpu_millis = 1000 * (1 + rng.below(8) as u32);
        a.total.memory_mb = 1024 * (1 + rng.below(8));
        a.tasks = rng.below(a.max_tasks as u64) as u32;
        a.used.cpu_millis = rng.below(a.total.cpu_millis as u64 / 2) as u32;
        a.used.memory_mb = rng.below(a.total.memory_mb / 2);
        a.alive = rng.below(6) != 0;
        a.load = (rng.below(3) != 0).then(|| rng.below(160) as f64 / 100.0);
        a.start_latency_ms = (rng.below(2) == 0).then(|| rng.below(3000) as f64);
        if a.load.is_some_and(|l| l > 1.0) {
            for _ in 0..rng.below(4) {
                token += 1;
                let t = sized(&format!("moved-{token}"), 500, 512, 0);
                a.take(&t.resources);
                a.unstarted.push(Unstarted { task: t, token });
            }
        }
        agents.push(a);
    }
    let candidates = (0..200)
        .map(|i| {
            let mut c = sized(
                &format!("task-{i:03}"),
                250 * (1 + rng.below(12) as u32),
                256 * (1 + rng.below(16)),
                0,
            );
            c.priority = rng.below(10) as i32;
            c.queued_at_ms = NOW - rng.below(600_000);
            if rng.below(4) == 0 {
                c.pool = pools[rng.below(2) as usize].to_string();
            }
            if rng.below(4) == 0 {
                c.constraints
                    .insert("zone".into(), zones[rng.below(2) as usize].into());
            }
            c
        })
        .collect();
    View {
        ageing_ms_per_point: 30_000,
        max_placements: 40,
        ..view(candidates, agents)
    }
}

#[test]
fn every_policy_keeps_the_rules_on_mixed_views() {
    let mut moves = 0;
    for seed in 0..50 {
        let v = mixed_view(seed);
        for kind in PolicyKind::ALL {
            // `run` checks every placement against the rules.
            let got = run(kind, &v);
            assert!(!got.is_empty(), "{kind}: seed {seed} placed nothing");
            assert!(got.len() <= v.max_placements);
            moves += got.iter().filter(|p| p.contains("(from")).count();
        }
    }
    // The views do exercise relief.
    assert!(moves > 10, "only {moves} moves");
}

#[test]
fn every_policy_is_deterministic() {
    for seed in 0..20 {
        let v = mixed_view(seed);
        let mut shuffled = v.clone();
        shuffled.agents.reverse();
        shuffled.candidates.reverse();
        for kind in PolicyKind::ALL {
            let policy = kind.build();
            let first = policy.place(&v);
            assert_eq!(first, policy.place(&v.clone()), "{kind}: seed {seed}");
            assert_eq!(first, kind.build().place(&v), "{kind}: seed {seed}");
            // Neither the agents' nor the candidates' order in the view matters.
            assert_eq!(first, policy.place(&shuffled), "{kind}: seed {seed}, shuffled");
        }
    }
}

#[test]
fn policy_kinds_build_their_policy() {
    for kind in PolicyKind::ALL {
        assert_eq!(kind.build().name(), kind.as_str());
        assert_eq!(PolicyKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(PolicyKind::default(), PolicyKind::Greedy);
    assert_eq!(PolicyKind::parse("fifo"), None);
}

#[test]
fn utilisation_with_matches_take() {
    for seed in 0..10 {
        let v = mixed_view(seed);
        for a in &v.agents {
            for c in v.candidates.iter().take(20) {
                let mut booked = a.clone();
                booked.take(&c.resources);
                assert_eq!(a.utilisation_with(&c.resources), booked.utilisation());
            }
        }
    }
}
