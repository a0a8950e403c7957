//! The spans a master opens, the fields they carry, and which ones join distributed traces.
//!
//! - `master{node}` wraps everything a master runs: start-up, the batchers, the leader duties
//!   (events logged there carry the master's id);
//! - `leader{term}` (inside `master`) wraps the leader duties of one term;
//! - `rpc{node}` wraps every gRPC call the master serves. A call that carries W3C trace context
//!   (metadata `traceparent`) gets an exported span instead (`otel.kind = server`, named after
//!   the method), a child of the caller's span; the tasks it submits record that span as their
//!   `trace_parent` (see [`trace_parent_for_tasks`]);
//! - `assign{task, attempt, agent}`: the placement of a traced task, a child of its
//!   `trace_parent`, lasting while the `Assign` entry commits.
//!
//! Only spans declared with an `otel.kind` field are exported to OpenTelemetry (the `taurus`
//! binary filters on it): long-lived context spans such as `master` and `leader` stay out of
//! traces, and calls without trace context (heartbeats, reports, benchmarks) add no traces.

use taurus_protocol::trace;
use tonic::codegen::http;
use tracing::Span;

/// The span of one served call (tonic's `trace_fn`).
pub fn rpc_span(node: u64) -> impl Fn(&http::Request<()>) -> Span + Send + Sync + 'static {
    move |req| match trace::from_headers(req.headers()) {
        Some(traceparent) => {
            let span = tracing::info_span!("rpc", node, otel.kind = "server", otel.name = req.uri().path());
            trace::set_parent(&span, traceparent);
            span
        }
        None => tracing::info_span!("rpc", node),
    }
}

/// The `trace_parent` tasks submitted by a call with this metadata get when they have none:
/// the call's exported span when this master exports traces, else the caller's `traceparent`
/// as is (so the agent's run still joins the caller's trace). `None` (and no allocation) for a
/// call without trace context.
pub fn trace_parent_for_tasks(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    let incoming = trace::from_metadata(metadata)?;
    Some(trace::of(&Span::current()).unwrap_or_else(|| incoming.to_string()))
}

/// Fills in `trace_parent` of the tasks that have none.
pub fn stamp<'a>(tasks: impl Iterator<Item = &'a mut taurus_protocol::v1::TaskSpec>, traceparent: &str) {
    for t in tasks.filter(|t| t.trace_parent.is_empty()) {
        t.trace_parent = traceparent.to_string();
    }
}
