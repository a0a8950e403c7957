//! Static validation of task specs and agent declarations: everything that can be checked
//! without the state.
//!
//! The service boundary runs this to answer bad input fast with `INVALID_ARGUMENT`; apply runs
//! it again (with the same limits, which are constants so every replica agrees) because a command
//! in the log must never be trusted to have passed through a particular service.

use std::collections::BTreeMap;

use crate::error::Rejection;
use crate::types::AgentInfo;
use crate::types::TaskSpec;

/// Longest task id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest task name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Most argv elements.
pub const MAX_ARGS: usize = 1024;
/// Largest total argv size, in bytes.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Largest total env size (keys plus values), in bytes.
pub const MAX_ENV_BYTES: usize = 64 * 1024;
/// Most labels on a task.
pub const MAX_LABELS: usize = 64;
/// Longest label key or value, in bytes.
pub const MAX_LABEL_LEN: usize = 256;
/// Most dependencies of one task.
pub const MAX_DEPENDENCIES: usize = 256;
/// Most tasks in one submit request.
pub const MAX_BATCH: usize = 10_000;
/// Largest `max_attempts`.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest timeout: 7 days.
pub const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// Largest CPU demand: 1024 cores.
pub const MAX_CPU_MILLIS: u32 = 1024 * 1000;
/// Largest memory or disk demand: 1 PiB in MiB.
pub const MAX_MB: u64 = 1 << 30;
/// Longest cancel reason, in bytes.
pub const MAX_REASON_LEN: usize = 1024;
/// Longest drain deadline an agent can be asked to exit by (`taurus agent drain --exit
/// --deadline`): 7 days, in milliseconds.
pub const MAX_EXIT_DEADLINE_MS: u64 = 7 * 24 * 3600 * 1000;
/// Longest retry back-off (first delay, and the cap of its doubling): 1 hour.
pub const MAX_BACKOFF_MS: u64 = 3600 * 1000;
/// Longest hard deadline: 30 days.
pub const MAX_DEADLINE_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most bytes of stdout (and, separately, of stderr) an attempt keeps: the tail.
pub const MAX_OUTPUT_TAIL: usize = 16 * 1024;
/// Longest pool name, in bytes.
pub const MAX_POOL_LEN: usize = 128;
/// Most tasks one agent may declare it runs at once.
pub const MAX_AGENT_TASKS: u32 = 100_000;
/// Longest agent address, in bytes.
pub const MAX_ADDRESS_LEN: usize = 256;
/// Longest submit `request_id` (idempotency key), in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Checks a task id: 1..=128 bytes of `[A-Za-z0-9._:-]`.
pub fn validate_id(id: &str) -> Result<(), Rejection> {
    if id.is_empty() {
        return Err(Rejection::invalid("id", "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Rejection::invalid(
            "id",
            format!("longer than {MAX_ID_LEN} bytes (limit max_id_len)"),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(Rejection::invalid(
            "id",
            format!("character {c:?} not allowed (use A-Z a-z 0-9 . _ : -)"),
        ));
    }
    Ok(())
}

/// Checks one spec against the static limits. Field names in errors are relative to the spec
/// (`command`, `depends_on[2]`, ...); callers prefix them with `tasks[i]`.
pub fn validate_spec(spec: &TaskSpec) -> Result<(), Rejection> {
    validate_id(&spec.id)?;
    if spec.name.len() > MAX_NAME_LEN {
        return Err(Rejection::invalid(
            "name",
            format!("longer than {MAX_NAME_LEN} bytes (limit max_name_len)"),
        ));
    }
    if spec.command.is_empty() {
        return Err(Rejection::invalid("command", "must not be empty"));
    }
    if spec.command[0].is_empty() {
        return Err(Rejection::invalid("command[0]", "program must not be empty"));
    }
    if spec.command.len() > MAX_ARGS {
        return Err(Rejection::invalid(
            "command",
            format!("more than {MAX_ARGS} arguments (limit max_args)"),
        ));
    }
    let argv_bytes: usize = spec.command.iter().map(String::len).sum();
    if argv_bytes > MAX_COMMAND_BYTES {
        return Err(Rejection::invalid(
            "command",
            format!("larger than {MAX_COMMAND_BYTES} bytes in all (limit max_command_bytes)"),
        ));
    }
    if let Some((i, _)) = spec.command.iter().enumerate().find(|(_, a)| a.contains('\0')) {
        return Err(Rejection::invalid(format!("command[{i}]"), "contains a NUL byte"));
    }
    validate_env(&spec.env)?;
    if spec.max_attempts == 0 || spec.max_attempts > MAX_ATTEMPTS {
        return Err(Rejection::invalid(
            "max_attempts",
            format!("must be between 1 and {MAX_ATTEMPTS} (limit max_attempts)"),
        ));
    }
    if spec.timeout_ms > MAX_TIMEOUT_MS {
        return Err(Rejection::invalid(
            "timeout",
            "longer than 7 days (limit max_timeout)",
        ));
    }
    if spec.resources.cpu_millis > MAX_CPU_MILLIS {
        return Err(Rejection::invalid(
            "resources.cpu_millis",
            "more than 1024 cores (limit max_cpu_millis)",
        ));
    }
    if spec.resources.memory_mb > MAX_MB {
        return Err(Rejection::invalid(
            "resources.memory_mb",
            "more than 1 PiB (limit max_mb)",
        ));
    }
    if spec.resources.disk_mb > MAX_MB {
        return Err(Rejection::invalid(
            "resources.disk_mb",
            "more than 1 PiB (limit max_mb)",
        ));
    }
    if spec.depends_on.len() > MAX_DEPENDENCIES {
        return Err(Rejection::invalid(
            "depends_on",
            format!("more than {MAX_DEPENDENCIES} dependencies (limit max_dependencies)"),
        ));
    }
    for (i, dep) in spec.depends_on.iter().enumerate() {
        validate_id(dep).map_err(|e| e.within(&format!("depends_on[{i}]")).unnest_id())?;
        if *dep == spec.id {
            return Err(Rejection::invalid(
                format!("depends_on[{i}]"),
                "a task cannot depend on itself",
            ));
        }
        if spec.depends_on[..i].contains(dep) {
            return Err(Rejection::invalid(
                format!("depends_on[{i}]"),
                format!("duplicate dependency {dep:?}"),
            ));
        }
    }
    validate_labels("labels", &spec.labels)?;
    if spec.backoff_ms > MAX_BACKOFF_MS {
        return Err(Rejection::invalid(
            "backoff_ms",
            format!("longer than {MAX_BACKOFF_MS} ms, 1 hour (limit max_backoff)"),
        ));
    }
    validate_pool(&spec.pool)?;
    validate_labels("constraints", &spec.constraints)?;
    if spec.deadline_ms > MAX_DEADLINE_MS {
        return Err(Rejection::invalid(
            "deadline_ms",
            format!("longer than {MAX_DEADLINE_MS} ms, 30 days (limit max_deadline)"),
        ));
    }
    if !spec.trace_parent.is_empty() && !is_trace_parent(&spec.trace_parent) {
        return Err(Rejection::invalid(
            "trace_parent",
            "not a W3C traceparent (00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, \
             lowercase, ids not all zero)",
        ));
    }
    Ok(())
}

/// Whether `s` is a version-00 W3C `traceparent`: `00-` 32 hex digits (trace id) `-` 16 hex
/// digits (parent span id) `-` 2 hex digits (flags), lowercase, neither id all zeros.
pub fn is_trace_parent(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |r: std::ops::Range<usize>| b[r].iter().all(|&c| c == b'0');
    b.len() == 55
        && b.starts_with(b"00-")
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(3..35)
        && hex(36..52)
        && hex(53..55)
        && !zero(3..35)
        && !zero(36..52)
}

/// Checks what an agent declares when it registers. Field names are relative to the
/// [`AgentInfo`] (`id`, `max_tasks`, `labels["k"]`, `pool`, `address`).
pub fn validate_agent(info: &AgentInfo) -> Result<(), Rejection> {
    validate_id(&info.id)?;
    if info.max_tasks == 0 || info.max_tasks > MAX_AGENT_TASKS {
        return Err(Rejection::invalid(
            "max_tasks",
            format!("must be between 1 and {MAX_AGENT_TASKS} (limit max_agent_tasks)"),
        ));
    }
    validate_labels("labels", &info.labels)?;
    validate_pool(&info.pool)?;
    if info.address.len() > MAX_ADDRESS_LEN {
        return Err(Rejection::invalid(
            "address",
            format!("longer than {MAX_ADDRESS_LEN} bytes (limit max_address_len)"),
        ));
    }
    Ok(())
}

fn validate_pool(pool: &str) -> Result<(), Rejection> {
    if pool.len() > MAX_POOL_LEN {
        return Err(Rejection::invalid(
            "pool",
            format!("longer than {MAX_POOL_LEN} bytes (limit max_pool_len)"),
        ));
    }
    Ok(())
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), Rejection> {
    let mut total = 0;
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(Rejection::invalid(
                format!("env[{k:?}]"),
                "keys must be non-empty without '=' or NUL",
            ));
        }
        total += k.len() + v.len();
    }
    if total > MAX_ENV_BYTES {
        return Err(Rejection::invalid(
            "env",
            format!("larger than {MAX_ENV_BYTES} bytes in all (limit max_env_bytes)"),
        ));
    }
    Ok(())
}

/// Checks a label-like map (`labels`, `constraints`): at most [`MAX_LABELS`] entries, keys
/// 1..=[`MAX_LABEL_LEN`] bytes, values at most [`MAX_LABEL_LEN`]. `field` names the map.
fn validate_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), Rejection> {
    if labels.len() > MAX_LABELS {
        return Err(Rejection::invalid(
            field,
            format!("more than {MAX_LABELS} {field} (limit max_labels)"),
        ));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN {
            return Err(Rejection::invalid(
                format!("{field}[{k:?}]"),
                format!(
                    "keys must be 1..={MAX_LABEL_LEN} bytes, values at most {MAX_LABEL_LEN} (limit max_label_len)"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a whole request: its size, each spec, and ids repeated within it.
pub fn validate_request(tasks: &[TaskSpec]) -> Result<(), Rejection> {
    if tasks.is_empty() {
        return Err(Rejection::invalid("tasks", "must contain at least one task"));
    }
    if tasks.len() > MAX_BATCH {
        return Err(Rejection::invalid(
            "tasks",
            format!("more than {MAX_BATCH} tasks in one request (limit max_batch)"),
        ));
    }
    let mut seen = std::collections::HashMap::with_capacity(tasks.len());
    for (i, spec) in tasks.iter().enumerate() {
        validate_spec(spec).map_err(|e| e.within(&format!("tasks[{i}]")))?;
        if let Some(first) = seen.insert(spec.id.as_str(), i) {
            return Err(Rejection::invalid(
                format!("tasks[{i}].id"),
                format!("repeats tasks[{first}].id"),
            ));
        }
    }
    Ok(())
}

/// Checks a submit request's idempotency key: opaque, at most [`MAX_REQUEST_ID_LEN`] bytes,
/// empty allowed (no key).
pub fn validate_request_id(request_id: &str) -> Result<(), Rejection> {
    if request_id.len() > MAX_REQUEST_ID_LEN {
        return Err(Rejection::invalid(
            "request_id",
            format!("longer than {MAX_REQUEST_ID_LEN} bytes (limit max_request_id_len)"),
        ));
    }
    Ok(())
}

impl Rejection {
    /// `depends_on[0].id` reads badly; a nested id check names the element itself.
    fn unnest_id(mut self) -> Self {
        if let Some(stripped) = self.field.strip_suffix(".id") {
            self.field = stripped.to_string();
        }
        self
    }
}
