//! Helpers for hand-made histories in unit tests.

use std::collections::BTreeMap;

use crate::checker::CheckInput;
use crate::checker::Checker;
use crate::checker::FinalTask;
use crate::checker::Verdict;
use crate::execlog::Execution;
use crate::history::CancelValue;
use crate::history::EventType;
use crate::history::History;
use crate::history::Op;
use crate::history::OpValue;
use crate::history::ReadValue;
use crate::history::SubmitValue;
use crate::history::SubmittedTask;
use crate::history::TaskState;

/// A submit request: (id, deps) pairs.
pub fn submit(tasks: &[(&str, &[&str])]) -> OpValue {
    OpValue::Submit(SubmitValue {
        tasks: tasks
            .iter()
            .map(|(id, deps)| SubmittedTask {
                id: id.to_string(),
                deps: deps.iter().map(|d| d.to_string()).collect(),
                created: None,
            })
            .collect(),
    })
}

/// A submit response: (id, created) pairs.
pub fn submit_created(tasks: &[(&str, bool)]) -> OpValue {
    OpValue::Submit(SubmitValue {
        tasks: tasks
            .iter()
            .map(|(id, created)| SubmittedTask {
                id: id.to_string(),
                deps: Vec::new(),
                created: Some(*created),
            })
            .collect(),
    })
}

pub fn read(id: &str) -> OpValue {
    OpValue::Read(ReadValue {
        ids: vec![id.to_string()],
        states: BTreeMap::new(),
        served_by: None,
        applied_index: None,
    })
}

pub fn read_ok(id: &str, state: Option<TaskState>) -> OpValue {
    OpValue::Read(ReadValue {
        ids: vec![id.to_string()],
        states: [(id.to_string(), state)].into_iter().collect(),
        served_by: None,
        applied_index: None,
    })
}

pub fn cancel(id: &str) -> OpValue {
    OpValue::Cancel(CancelValue {
        id: id.to_string(),
        cancelled: None,
        state: None,
        log_index: None,
    })
}

pub fn cancel_ok(id: &str, cancelled: bool, state: TaskState) -> OpValue {
    OpValue::Cancel(CancelValue {
        id: id.to_string(),
        cancelled: Some(cancelled),
        state: Some(state),
        log_index: None,
    })
}

pub fn exec(task: &str, token: u64, start_ns: u64, end_ns: Option<u64>) -> Execution {
    Execution {
        task: task.to_string(),
        attempt: 1,
        token,
        agent: "a1".to_string(),
        start_ns,
        end_ns,
        success: end_ns.map(|_| true),
        ticks: false,
    }
}

/// A run under construction: history + execution log + final snapshot.
#[derive(Default)]
pub struct Run {
    pub history: History,
    pub executions: Vec<Execution>,
    pub final_tasks: BTreeMap<String, FinalTask>,
}

impl Run {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records invoke at `t0` and completion of `kind` at `t1` (no completion if `t1` is None).
    pub fn op(
        &mut self,
        p: u64,
        req: OpValue,
        t0: u64,
        kind: EventType,
        resp: OpValue,
        t1: Option<u64>,
    ) -> &mut Self {
        self.history.push(p, EventType::Invoke, req, t0);
        if let Some(t1) = t1 {
            self.history.push(p, kind, resp, t1);
        }
        self
    }

    pub fn ok(&mut self, p: u64, req: OpValue, t0: u64, resp: OpValue, t1: u64) -> &mut Self {
        self.op(p, req, t0, EventType::Ok, resp, Some(t1))
    }

    pub fn submit_ok(
        &mut self,
        p: u64,
        id: &str,
        deps: &[&str],
        created: bool,
        t0: u64,
        t1: u64,
    ) -> &mut Self {
        self.ok(p, submit(&[(id, deps)]), t0, submit_created(&[(id, created)]), t1)
    }

    pub fn read_ok(&mut self, p: u64, id: &str, state: Option<TaskState>, t0: u64, t1: u64) -> &mut Self {
        self.ok(p, read(id), t0, read_ok(id, state), t1)
    }

    pub fn final_state(&mut self, id: &str, state: TaskState) -> &mut Self {
        self.final_tasks
            .insert(id.to_string(), FinalTask::in_state(state));
        self
    }

    pub fn ops(&self) -> Vec<Op> {
        self.history.ops().unwrap()
    }

    pub fn check(&self, checker: &dyn Checker) -> Verdict {
        let ops = self.ops();
        let input = CheckInput {
            ops: &ops,
            executions: &self.executions,
            final_tasks: &self.final_tasks,
        };
        checker.check(&input)
    }
}
