//! Regression tests for what fuzzing found in the agent's configuration checks (`fuzz/`, target
//! `config`; the reproducers are in `fuzz/corpus/config/regression-*`).

use taurus_agent::AgentConfig;

fn resolve(extra: &str) -> String {
    let text = format!("id = \"w\"\nmasters = [\"127.0.0.1:7101\"]\nmemory_mb = 1\ndisk_mb = 1\n{extra}");
    AgentConfig::from_toml(&text)
        .expect("parses")
        .resolve()
        .expect_err("an absurd duration is refused")
        .to_string()
}

/// `heartbeat_interval * 2` overflowed and panicked in `resolve`; it is an error naming the key.
#[test]
fn a_huge_heartbeat_interval_is_an_error_not_a_panic() {
    let e =
        resolve("heartbeat_interval = \"9223372036854775808s\"\nlease_timeout = \"18446744073709551615s\"\n");
    assert!(e.contains("heartbeat_interval"), "{e}");
}

/// `lease_timeout.mul_f64(10/9)` panicked when the product was no `Duration`; it is an error
/// naming the key.
#[test]
fn a_huge_lease_timeout_is_an_error_not_a_panic() {
    let e = resolve("lease_timeout = \"18446744073709551615s\"\n");
    assert!(e.contains("lease_timeout"), "{e}");
}
