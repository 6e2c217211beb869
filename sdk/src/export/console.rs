//! The console exporter (`OTEL_TRACES_EXPORTER=console`): one human-readable
//! line per finished span on standard output, for local development.
//!
//! ```text
//! 2024-05-01T09:30:00.123456Z checkout "GET /cart" server 12.345ms trace=4bf92f3577b34da6a3ce929d0e0e4736 span=00f067aa0ba902b7 parent=- status=ok {http.request.method="GET" items=3} events=["cache miss" +1.200ms {key="cart:7"}]
//! ```
//!
//! ```
//! use ferrotrace::export::ConsoleExporter;
//! use ferrotrace::trace::TracerProvider;
//!
//! let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
//! let provider = TracerProvider::builder()
//!     .with_simple_exporter(ConsoleExporter::with_writer(ferrotrace::export::console::SharedBuffer(out.clone())))
//!     .with_service_name("checkout")
//!     .build();
//! provider.tracer("app").start("load").end();
//! let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
//! assert!(text.contains("checkout \"load\" internal"), "{text}");
//! ```

use std::fmt::Write as _;
use std::io::Write;

use parking_lot::Mutex;

use super::{ExportError, ExportResult, SpanData, SpanExporter};
use crate::attributes::{Array, KeyValue, Value};
use crate::trace::span_data::{SpanKind, Status};

/// Writes each span as one line (see the [module docs](self)). Pair it with a
/// [`SimpleSpanProcessor`](super::SimpleSpanProcessor) (what
/// `ferrotrace::init()` does) to see spans as they end.
pub struct ConsoleExporter {
    out: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for ConsoleExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleExporter").finish()
    }
}

impl Default for ConsoleExporter {
    fn default() -> Self {
        Self::stdout()
    }
}

impl ConsoleExporter {
    /// Writes to standard output.
    pub fn stdout() -> Self {
        Self::with_writer(std::io::stdout())
    }

    /// Writes to `out` (a file, a buffer in tests).
    pub fn with_writer(out: impl Write + Send + 'static) -> Self {
        ConsoleExporter {
            out: Mutex::new(Box::new(out)),
        }
    }
}

/// A `Write` into a shared buffer (handy for tests and examples).
#[derive(Clone, Debug, Default)]
pub struct SharedBuffer(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("buffer lock poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SpanExporter for ConsoleExporter {
    fn export(&self, batch: Vec<SpanData>) -> ExportResult {
        let mut text = String::new();
        for span in &batch {
            format_span(span, &mut text);
            text.push('\n');
        }
        let mut out = self.out.lock();
        out.write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| ExportError::Failed(format!("console exporter cannot write: {e}")))
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for nanoseconds since the Unix epoch.
pub fn format_timestamp(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let micros = (ns % 1_000_000_000) / 1_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn duration(ns: u64) -> String {
    format!("{}.{:03}ms", ns / 1_000_000, (ns % 1_000_000) / 1_000)
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::I64(i) => {
            let _ = write!(out, "{i}");
        }
        Value::F64(x) => {
            let _ = write!(out, "{x}");
        }
        Value::String(s) => {
            let _ = write!(out, "{:?}", s.as_str());
        }
        Value::Array(a) => {
            let _ = match a {
                Array::Bool(v) => write!(out, "{v:?}"),
                Array::I64(v) => write!(out, "{v:?}"),
                Array::F64(v) => write!(out, "{v:?}"),
                Array::String(v) => write!(
                    out,
                    "{:?}",
                    v.iter().map(|s| s.as_str()).collect::<Vec<_>>()
                ),
            };
        }
    }
}

fn write_attrs(out: &mut String, attrs: &[KeyValue]) {
    out.push('{');
    for (i, kv) in attrs.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(kv.key.as_str());
        out.push('=');
        write_value(out, &kv.value);
    }
    out.push('}');
}

/// Formats one span as the exporter's line (without the newline).
pub fn format_span(s: &SpanData, out: &mut String) {
    let service = s
        .resource
        .get("service.name")
        .map(|v| match v {
            Value::String(s) => s.as_str().to_string(),
            other => format!("{other:?}"),
        })
        .unwrap_or_else(|| "unknown_service".into());
    let kind = match s.span_kind {
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    };
    let _ = write!(
        out,
        "{} {service} {:?} {kind} {} trace={} span={} parent={}",
        format_timestamp(s.start_time_ns),
        s.name.as_ref(),
        duration(s.end_time_ns.saturating_sub(s.start_time_ns)),
        s.span_context.trace_id(),
        s.span_context.span_id(),
        if s.parent_span_id.is_valid() {
            s.parent_span_id.to_string()
        } else {
            "-".into()
        }
    );
    match &s.status {
        Status::Unset => out.push_str(" status=unset"),
        Status::Ok => out.push_str(" status=ok"),
        Status::Error { description } => {
            let _ = write!(out, " status=error({:?})", description.as_ref());
        }
    }
    if !s.attributes.is_empty() {
        out.push(' ');
        write_attrs(out, &s.attributes);
    }
    if !s.events.is_empty() {
        out.push_str(" events=[");
        for (i, e) in s.events.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(
                out,
                "{:?} +{}",
                e.name.as_ref(),
                duration(e.timestamp_ns.saturating_sub(s.start_time_ns))
            );
            if !e.attributes.is_empty() {
                out.push(' ');
                write_attrs(out, &e.attributes);
            }
        }
        out.push(']');
    }
    if !s.links.is_empty() {
        let _ = write!(out, " links={}", s.links.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T23:59:59.123456Z
        assert_eq!(
            format_timestamp(1_709_251_199_123_456_789),
            "2024-02-29T23:59:59.123456Z"
        );
        assert_eq!(
            format_timestamp(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
