//! W3C trace context (`traceparent`) across Taurus calls and tasks.
//!
//! A submit carries its caller's trace context in the gRPC metadata key [`TRACEPARENT_HEADER`];
//! the master records it in the task (`TaskSpec::trace_parent`), assignments carry the spec to
//! the agent, and the agent makes its run of the task a child of it, so one trace goes from the
//! submitting client through scheduling to the process on the agent.
//!
//! The functions here bridge `traceparent` strings and `tracing` spans through
//! `tracing-opentelemetry`. They do nothing (and allocate nothing) unless the process installed
//! an OpenTelemetry layer (the `taurus` binary does when `OTEL_EXPORTER_OTLP_ENDPOINT` is set)
//! and the span is enabled.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

use opentelemetry::Context;
use opentelemetry::trace::SpanContext;
use opentelemetry::trace::SpanId;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::trace::TraceFlags;
use opentelemetry::trace::TraceId;
use opentelemetry::trace::TraceState;
use serde::Deserialize;
use serde::Serialize;
use taurus_core::validate::is_trace_parent;
use tonic::metadata::MetadataMap;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The gRPC metadata key (HTTP/2 header) of W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Output format of a master's or an agent's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event for people (`2026-01-01T00:00:00Z  INFO master{node=1}: ...`).
    #[default]
    Human,
    /// One JSON object per line, with the event's fields and its spans' fields (`node`,
    /// `term`, `task`, `attempt`, `agent`, ...).
    Json,
}

/// `[log]` of master and agent configuration files (flags and environment variables win; the
/// `taurus` binary documents the order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` (the default) or `json`.
    pub format: LogFormat,
    /// What is logged, as a `RUST_LOG`-style filter (`info`, `debug`,
    /// `info,taurus_master=debug`, ...). Absent: `info,openraft=warn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// Whether this process exports traces (set once by whoever installs the OpenTelemetry layer).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Records that this process exports traces: work done only for traces (looking up a task's
/// `trace_parent` for a span) is skipped unless it does.
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// See [`set_exporting`].
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The request's `traceparent`, when it has a valid one (an invalid one is ignored, as the W3C
/// recommendation says).
pub fn from_metadata(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get(TRACEPARENT_HEADER)?
        .to_str()
        .ok()
        .filter(|s| is_trace_parent(s))
}

/// [`from_metadata`] on raw HTTP headers (a tonic server's `trace_fn` sees those).
pub fn from_headers(headers: &tonic::codegen::http::HeaderMap) -> Option<&str> {
    headers
        .get(TRACEPARENT_HEADER)?
        .to_str()
        .ok()
        .filter(|s| is_trace_parent(s))
}

/// The remote span a valid `traceparent` names.
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    if !is_trace_parent(traceparent) {
        return None;
    }
    let trace_id = TraceId::from_hex(&traceparent[3..35]).ok()?;
    let span_id = SpanId::from_hex(&traceparent[36..52]).ok()?;
    let flags = u8::from_str_radix(&traceparent[53..55], 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// Makes `span` (just created, not yet entered) a child of the remote span `traceparent`
/// names. Does nothing when the span is disabled, no OpenTelemetry layer is installed or the
/// string is not a valid `traceparent`.
pub fn set_parent(span: &Span, traceparent: &str) {
    if span.is_disabled() {
        return;
    }
    if let Some(remote) = span_context(traceparent) {
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
}

/// Links `span` to the remote span `traceparent` names (a cause that is not its parent).
pub fn add_link(span: &Span, traceparent: &str) {
    if span.is_disabled() {
        return;
    }
    if let Some(remote) = span_context(traceparent) {
        span.add_link(remote);
    }
}

/// The `traceparent` that names `span`, when it is exported through OpenTelemetry (`None`
/// without an OpenTelemetry layer or when the span is disabled).
pub fn of(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_valid_trace_parents_only() {
        let sc = span_context(TP).expect("valid");
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled());
        assert!(sc.is_remote());
        assert!(span_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7").is_none());
        assert!(span_context("").is_none());
    }

    #[test]
    fn metadata_with_an_invalid_trace_parent_is_ignored() {
        let mut md = MetadataMap::new();
        assert_eq!(from_metadata(&md), None);
        md.insert(TRACEPARENT_HEADER, "bogus".parse().expect("ascii"));
        assert_eq!(from_metadata(&md), None);
        md.insert(TRACEPARENT_HEADER, TP.parse().expect("ascii"));
        assert_eq!(from_metadata(&md), Some(TP));
    }

    #[test]
    fn without_an_opentelemetry_layer_spans_have_no_trace_parent() {
        let span = tracing::info_span!("x");
        set_parent(&span, TP);
        assert_eq!(of(&span), None);
        assert_eq!(of(&Span::none()), None);
    }
}
