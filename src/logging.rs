//! Logging setup: human-readable text, or one JSON object per line in the shape Cloud Logging
//! parses from a container's output (`severity`, `message`, `time`,
//! `logging.googleapis.com/labels`, and every event field as a top-level `jsonPayload` field).
//!
//! Logs go to stderr; stdout is kept for command output (plans, `export` lines, and the audit
//! events that `apply` writes in JSON mode). Nothing here knows about secrets: callers never put
//! one in an event (secret-bearing types redact their `Debug`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use clap::ValueEnum;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Whether to colour output to a stream: only a terminal gets ANSI colours, and never when
/// `NO_COLOR` is set to a non-empty value (https://no-color.org). Files, pipes and CI logs get
/// plain text.
pub fn colour(stream_is_terminal: bool) -> bool {
    colour_given(stream_is_terminal, std::env::var_os("NO_COLOR").as_deref())
}

fn colour_given(stream_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stream_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Whether a status line (the progress line) is drawn on stderr now; every log line and
/// change line clears it first ([`clear_status_line`]) so that they never run into it.
static STATUS_LINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Records that a status line was drawn on stderr (true) or cleared (false).
pub fn set_status_line(drawn: bool) {
    STATUS_LINE.store(drawn, std::sync::atomic::Ordering::Relaxed);
}

/// Erases the status line, when one is drawn, so that the next line starts on a clean line
/// (the progress line redraws itself below it at its next tick).
pub fn clear_status_line() {
    if STATUS_LINE.swap(false, std::sync::atomic::Ordering::Relaxed) {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

/// The log writer: stderr, after clearing the status line.
fn log_writer() -> std::io::Stderr {
    clear_status_line();
    std::io::stderr()
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_level` (e.g. `info`).
pub fn init(format: LogFormat, default_level: &str) {
    // gcp_auth logs every internal retry as a warning; runwarden reports the outcome itself.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},gcp_auth=error")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(log_writer);
    let _ = match format {
        LogFormat::Text => {
            use std::io::IsTerminal;
            let ansi = colour(std::io::stderr().is_terminal());
            builder.with_target(false).with_ansi(ansi).try_init()
        }
        LogFormat::Json => builder.event_format(CloudLogging::default()).try_init(),
    };
}

/// Formats events as Cloud Logging structured JSON lines.
#[derive(Debug, Clone)]
pub struct CloudLogging {
    /// Labels attached to every entry (`logging.googleapis.com/labels`).
    pub labels: BTreeMap<String, String>,
}

impl Default for CloudLogging {
    fn default() -> Self {
        let labels = BTreeMap::from([("app".to_string(), "runwarden".to_string())]);
        CloudLogging { labels }
    }
}

/// Cloud Logging's name for a tracing level.
pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut entry = self.entry(event);
        // Fields of the enclosing spans (e.g. `service`, `pass`) give an event its context.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                    if !fields.is_empty() {
                        entry
                            .entry(format!("span.{}", span.name()))
                            .or_insert_with(|| Value::String(fields.to_string()));
                    }
                }
            }
        }
        let line = serde_json::to_string(&entry).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

impl CloudLogging {
    /// The JSON object for one event, without span context.
    pub fn entry(&self, event: &Event<'_>) -> Map<String, Value> {
        let meta = event.metadata();
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        let mut entry = Map::new();
        entry.insert("severity".into(), severity(meta.level()).into());
        entry.insert("message".into(), visitor.message.unwrap_or_default().into());
        entry.insert("time".into(), rfc3339(SystemTime::now()).into());
        entry.insert("target".into(), meta.target().into());
        entry.insert(
            "logging.googleapis.com/labels".into(),
            serde_json::to_value(&self.labels).unwrap_or_default(),
        );
        for (key, value) in visitor.fields {
            entry.entry(key).or_insert(value);
        }
        entry
    }
}

/// Collects an event's fields as JSON values; `message` is kept apart.
#[derive(Default)]
struct JsonVisitor {
    message: Option<String>,
    fields: Map<String, Value>,
}

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

impl JsonVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

/// Formats a time as RFC 3339 UTC with millisecond precision, e.g. `2026-11-29T02:24:13.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    crate::time::format_rfc3339(time, crate::time::Fraction::Millis)
}

#[cfg(test)]
mod tests {

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color_set() {
        use std::ffi::OsStr;
        assert!(colour_given(true, None));
        assert!(!colour_given(false, None), "a file, pipe or CI log gets plain text");
        assert!(!colour_given(true, Some(OsStr::new("1"))), "NO_COLOR=1 turns colour off");
        assert!(colour_given(true, Some(OsStr::new(""))), "an empty NO_COLOR does not (no-color.org)");
    }
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_known_instants() {
        let at = |secs: u64, ms: u64| {
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_801_353_600, 0), "2027-01-31T00:00:00.000Z");
    }

    /// A writer that appends to a shared buffer, so a test can read what was logged.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_carry_cloud_logging_fields() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .event_format(CloudLogging::default())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("pass", revision = "abc123");
            let _guard = span.enter();
            tracing::warn!(service = "acme-prod/europe-west1/billing-api", removed = 2u64, "guard tripped");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON object per line");
        assert_eq!(line["severity"], "WARNING");
        assert_eq!(line["message"], "guard tripped");
        assert_eq!(line["service"], "acme-prod/europe-west1/billing-api");
        assert_eq!(line["removed"], 2);
        assert_eq!(line["logging.googleapis.com/labels"]["app"], "runwarden");
        assert!(line["span.pass"].as_str().unwrap().contains("abc123"));
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
}
