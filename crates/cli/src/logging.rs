//! Logs and traces of `taurus master start` and `taurus agent start`, and the traces of the other
//! commands.
//!
//! **Logs** go to stderr, one line per event:
//! - format: `--log-format` (or `TAURUS_LOG_FORMAT`; the agent's `TAURUS_AGENT_LOG_FORMAT`) >
//!   `[log] format` in the configuration file > `human`. `json` writes one object per line with
//!   `timestamp`, `level`, `target`, `fields` (the message and the event's fields), `span` (the
//!   innermost span) and `spans` (all of them, outermost first), so every line carries the
//!   fields of its spans: `node` (master id), `term`, `agent`, `task`, `attempt`.
//! - filter: `--log-level` (or `TAURUS_LOG_LEVEL` / `TAURUS_AGENT_LOG_LEVEL`) > `RUST_LOG` >
//!   `[log] level` > `info,openraft=warn`. All are `RUST_LOG`-style directives (`debug`,
//!   `info,taurus_master=debug`, ...). Per-task events are at DEBUG.
//!
//! **Traces** are exported over OTLP/gRPC only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set and `OTEL_SDK_DISABLED` is not `true`. The
//! OpenTelemetry SDK reads the other standard variables itself: `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` (the service name defaults to `taurus-master`, `taurus-agent` or
//! `taurus-cli`), `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` and `..._TIMEOUT` (only the `grpc` protocol is built
//! in, without compression).
//! Exported spans are the ones declared with an `otel.kind` field (calls that carry trace
//! context, placements and runs of traced tasks, the CLI's command); long-lived context spans
//! are for logs only (see `taurus_master::trace`). The log filter applies to traces too.
//! Spans still queued are flushed when the process stops ([`Telemetry::shutdown`]).

use std::io::IsTerminal;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use taurus_protocol::trace::LogConfig;
use taurus_protocol::trace::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::args;

/// The filter when neither flags, `RUST_LOG` nor the file set one.
pub const DEFAULT_FILTER: &str = "info,openraft=warn";

/// The `service.name` of each kind of process, unless `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const MASTER_SERVICE: &str = "taurus-master";
pub const AGENT_SERVICE: &str = "taurus-agent";
pub const CLI_SERVICE: &str = "taurus-cli";

/// How a master or agent logs, resolved from flags, environment and file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive.
    pub filter: String,
    /// Where `filter` came from, to name it when it does not parse.
    pub filter_origin: &'static str,
}

impl LogSettings {
    /// Flags (with their env fallbacks, resolved by clap) > `RUST_LOG` > the file > defaults.
    pub fn resolve(
        format_flag: Option<args::LogFormat>,
        level_flag: Option<&str>,
        rust_log: Option<&str>,
        file: &LogConfig,
    ) -> Self {
        let format = match format_flag {
            Some(args::LogFormat::Human) => LogFormat::Human,
            Some(args::LogFormat::Json) => LogFormat::Json,
            None => file.format,
        };
        let non_empty = |s: Option<&str>| s.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let (filter, filter_origin) = if let Some(f) = non_empty(level_flag) {
            (f, "--log-level")
        } else if let Some(f) = non_empty(rust_log) {
            (f, "RUST_LOG")
        } else if let Some(f) = non_empty(file.level.as_deref()) {
            (f, "log.level")
        } else {
            (DEFAULT_FILTER.to_string(), "the default filter")
        };
        Self {
            format,
            filter,
            filter_origin,
        }
    }

    /// The filter, or an error naming where the bad directive came from.
    pub fn env_filter(&self) -> anyhow::Result<EnvFilter> {
        EnvFilter::try_new(&self.filter)
            .with_context(|| format!("{}: invalid log filter {:?}", self.filter_origin, self.filter))
    }
}

/// The exporter of this process's traces; flush it with [`Telemetry::shutdown`] before exiting.
#[must_use]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued (bounded by the exporter's timeout) and stops exporting.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            // Blocking: the batch processor's thread exports through our Tokio runtime.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

/// Installs the logger (and the trace exporter, when `OTEL_*` asks for one) of a master or an
/// agent.
pub fn init(settings: &LogSettings, service: &'static str) -> anyhow::Result<Telemetry> {
    let filter = settings.env_filter()?;
    let provider = tracer_provider(service)?;
    let otel = provider.as_ref().map(|p| otel_layer(p, service));
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer(
            settings.format,
            std::io::stderr,
            std::io::stderr().is_terminal(),
        ))
        .with(otel)
        .try_init();
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    taurus_protocol::trace::set_exporting(provider.is_some());
    Ok(Telemetry { provider })
}

/// For the other commands: no logs (they print their own output), only the trace exporter, and
/// only when `OTEL_*` asks for one.
pub fn init_cli() -> anyhow::Result<Telemetry> {
    let Some(provider) = tracer_provider(CLI_SERVICE)? else {
        return Ok(Telemetry { provider: None });
    };
    let result = tracing_subscriber::registry()
        .with(EnvFilter::new("info"))
        .with(otel_layer(&provider, CLI_SERVICE))
        .try_init();
    result.map_err(|e| anyhow::anyhow!("cannot set up tracing: {e}"))?;
    taurus_protocol::trace::set_exporting(true);
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The log lines, `human` or `json`, written to `writer`.
pub fn fmt_layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Human => layer.with_ansi(ansi).boxed(),
        LogFormat::Json => layer.json().with_current_span(true).with_span_list(true).boxed(),
    }
}

/// Spans declared with `otel.kind` (and events inside them) to OpenTelemetry.
fn otel_layer<S>(provider: &SdkTracerProvider, service: &'static str) -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        .with_filter(filter_fn(|meta| {
            !meta.is_span() || meta.fields().field("otel.kind").is_some()
        }))
}

/// Whether the standard `OTEL_*` variables of `env` ask for trace export.
pub fn otel_requested(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The OTLP/gRPC trace pipeline, when the environment asks for one.
fn tracer_provider(service: &'static str) -> anyhow::Result<Option<SdkTracerProvider>> {
    if !otel_requested(|k| std::env::var(k).ok()) {
        return Ok(None);
    }
    for var in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ] {
        if let Ok(p) = std::env::var(var)
            && !p.trim().is_empty()
            && p.trim() != "grpc"
        {
            anyhow::bail!("{var}={p:?}: taurus exports traces over OTLP/gRPC only (grpc)");
        }
    }
    // Endpoint, headers, timeout: from OTEL_EXPORTER_OTLP_* as the exporter reads them.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("OTEL_EXPORTER_OTLP_ENDPOINT: cannot set up the trace exporter")?;
    let resource = Resource::builder().build();
    let named = resource
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    let resource = if named {
        resource
    } else {
        Resource::builder().with_service_name(service).build()
    };
    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG) (default: parent-based, always on).
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::Mutex;

    use super::*;

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn capture(format: LogFormat, filter: &str, emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new(filter))
            .with(fmt_layer(format, buffer.clone(), false));
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = buffer.0.lock().expect("buffer").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn json_lines_carry_the_fields_of_their_spans() {
        let out = capture(LogFormat::Json, "info", || {
            let master = tracing::info_span!("master", node = 3u64);
            let _m = master.enter();
            let leader = tracing::info_span!("leader", term = 7u64);
            let _l = leader.enter();
            let attempt = tracing::info_span!("attempt", task = "t-1", attempt = 2u32);
            attempt.in_scope(|| tracing::info!(exit_code = 0, "finished"));
            tracing::debug!("filtered out");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("one JSON object per line");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["fields"]["message"], "finished");
        assert_eq!(v["fields"]["exit_code"], 0);
        assert_eq!(v["span"]["name"], "attempt");
        assert_eq!(v["span"]["task"], "t-1");
        assert_eq!(v["span"]["attempt"], 2);
        let spans = v["spans"].as_array().expect("span list");
        assert_eq!(spans[0]["name"], "master");
        assert_eq!(spans[0]["node"], 3);
        assert_eq!(spans[1]["term"], 7);
    }

    #[test]
    fn human_lines_name_their_spans() {
        let out = capture(LogFormat::Human, "debug", || {
            let span = tracing::info_span!("agent", agent = "a1");
            span.in_scope(|| tracing::debug!(task = "t-9", "claiming"));
        });
        assert!(out.contains("agent{agent=\"a1\"}"), "{out}");
        assert!(out.contains("claiming task=\"t-9\""), "{out}");
        assert!(serde_json::from_str::<serde_json::Value>(out.trim()).is_err());
    }

    #[test]
    fn flags_beat_rust_log_which_beats_the_file() {
        let file = LogConfig {
            format: LogFormat::Json,
            level: Some("warn".into()),
        };
        let s = LogSettings::resolve(None, None, None, &file);
        assert_eq!(
            (s.format, s.filter.as_str(), s.filter_origin),
            (LogFormat::Json, "warn", "log.level")
        );
        let s = LogSettings::resolve(None, None, Some("debug"), &file);
        assert_eq!((s.filter.as_str(), s.filter_origin), ("debug", "RUST_LOG"));
        let s = LogSettings::resolve(Some(args::LogFormat::Human), Some("trace"), Some("debug"), &file);
        assert_eq!(
            (s.format, s.filter.as_str(), s.filter_origin),
            (LogFormat::Human, "trace", "--log-level")
        );
        let s = LogSettings::resolve(None, Some(" "), Some(""), &LogConfig::default());
        assert_eq!((s.format, s.filter.as_str()), (LogFormat::Human, DEFAULT_FILTER));
    }

    #[test]
    fn a_bad_filter_names_its_origin() {
        let file = LogConfig {
            level: Some("info,=[".into()),
            ..LogConfig::default()
        };
        let err = LogSettings::resolve(None, None, None, &file)
            .env_filter()
            .expect_err("invalid");
        assert!(
            err.to_string().starts_with("log.level: invalid log filter"),
            "{err}"
        );
    }

    #[test]
    fn otel_is_on_only_with_an_endpoint_and_not_disabled() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert!(!otel_requested(env(&[])));
        assert!(!otel_requested(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(otel_requested(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://c:4317"
        )])));
        assert!(otel_requested(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4317"
        )])));
        assert!(!otel_requested(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])));
        assert!(otel_requested(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "false"),
        ])));
    }
}
