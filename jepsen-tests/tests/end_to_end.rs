//! A small run, from JSON-lines text to every checker's verdict.

use std::collections::BTreeMap;

use taurus_jepsen::CheckInput;
use taurus_jepsen::Checker;
use taurus_jepsen::History;
use taurus_jepsen::Valid;
use taurus_jepsen::checker::AnomalyKind;
use taurus_jepsen::checker::FinalTask;
use taurus_jepsen::checker::all_checkers;
use taurus_jepsen::checker::check_all;
use taurus_jepsen::execlog::merge_executions;
use taurus_jepsen::execlog::parse_execution_log;

const HISTORY: &str = r#"
{"process":1,"type":"invoke","f":"submit","value":{"tasks":[{"id":"a"},{"id":"b","deps":["a"]}]},"time_ns":100}
{"process":1,"type":"ok","f":"submit","value":{"tasks":[{"id":"a","created":true},{"id":"b","created":true}]},"time_ns":200}
{"process":2,"type":"invoke","f":"read","value":{"ids":["a","b"]},"time_ns":300}
{"process":2,"type":"ok","f":"read","value":{"ids":["a","b"],"states":{"a":"running","b":"pending"}},"time_ns":400}
{"process":3,"type":"invoke","f":"submit","value":{"tasks":[{"id":"c"}]},"time_ns":450}
{"process":3,"type":"info","f":"submit","value":{"tasks":[{"id":"c"}]},"time_ns":900}
{"process":9,"type":"invoke","f":"partition","value":{"isolate":["m1"]},"time_ns":500}
{"process":9,"type":"info","f":"partition","value":{"isolate":["m1"]},"time_ns":510}
{"process":9,"type":"invoke","f":"heal","value":null,"time_ns":1000}
{"process":9,"type":"info","f":"heal","value":null,"time_ns":1010}
{"process":2,"type":"invoke","f":"read","value":{"ids":["a","b"]},"time_ns":2000}
{"process":2,"type":"ok","f":"read","value":{"ids":["a","b"],"states":{"a":"succeeded","b":"succeeded"}},"time_ns":2100}
"#;

const AGENT_LOG: &str = r#"
{"task":"a","attempt":1,"token":10,"agent":"a1","start_ns":350}
{"task":"a","attempt":1,"token":10,"agent":"a1","start_ns":350,"end_ns":800,"success":true}
{"task":"b","attempt":1,"token":12,"agent":"a1","start_ns":900,"end_ns":1500,"success":true}
"#;

fn final_tasks(b_state: &str) -> BTreeMap<String, FinalTask> {
    serde_json::from_str(&format!(
        r#"{{"a":{{"state":"succeeded","attempts":[{{"number":1,"token":10,"agent":"a1","accepted":"succeeded"}}]}},
            "b":{{"state":"{b_state}","attempts":[{{"number":1,"token":12,"agent":"a1","accepted":"succeeded"}}]}}}}"#
    ))
    .unwrap()
}

#[test]
fn a_clean_run_passes_every_checker() {
    let ops = History::parse(HISTORY).unwrap().ops().unwrap();
    let executions = merge_executions(parse_execution_log(AGENT_LOG, "a1.log").unwrap());
    let finals = final_tasks("succeeded");
    let input = CheckInput {
        ops: &ops,
        executions: &executions,
        final_tasks: &finals,
    };
    let checkers = all_checkers();
    let refs: Vec<&dyn Checker> = checkers.iter().map(|c| c.as_ref()).collect();
    let (valid, verdicts) = check_all(&refs, &input);
    for (name, v) in &verdicts {
        assert_eq!(v.valid, Valid::True, "{name}: {v:?}");
    }
    assert_eq!(valid, Valid::True);
    assert_eq!(verdicts.len(), 9);
}

#[test]
fn a_changed_final_state_fails_the_run() {
    let ops = History::parse(HISTORY).unwrap().ops().unwrap();
    let executions = merge_executions(parse_execution_log(AGENT_LOG, "a1.log").unwrap());
    let finals = final_tasks("running");
    let input = CheckInput {
        ops: &ops,
        executions: &executions,
        final_tasks: &finals,
    };
    let checkers = all_checkers();
    let refs: Vec<&dyn Checker> = checkers.iter().map(|c| c.as_ref()).collect();
    let (valid, verdicts) = check_all(&refs, &input);
    assert_eq!(valid, Valid::False);
    let failed: Vec<(&str, AnomalyKind)> = verdicts
        .iter()
        .flat_map(|(name, v)| v.anomalies.iter().map(move |a| (*name, a.kind)))
        .collect();
    assert!(
        failed.contains(&("terminal-after-quiet", AnomalyKind::NotTerminal)),
        "{failed:?}"
    );
    assert!(
        failed.contains(&("terminal-stable", AnomalyKind::TerminalChanged)),
        "{failed:?}"
    );
}
