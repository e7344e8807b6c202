//! The log line format: tracing-subscriber's JSON lines, with the access log's line
//! written directly.
//!
//! Every request writes one access-log line, and tracing-subscriber's JSON formatter
//! (a `serde_json` map serializer driven through `tracing-serde`, the timestamp formatted
//! into a `String` first) was a large share of a card read's instructions (BENCHMARKS.md).
//! The access event has a fixed, flat shape: a handful of strings and integers, no span.
//! For it, [`LogFormat`] writes the very same bytes by hand (the same keys in the same
//! order, the same timestamp, strings escaped as `serde_json` escapes them; a test compares
//! the two byte for byte). Every other event, and an access event inside a span, goes to
//! tracing-subscriber's formatter unchanged. Either way the line still passes the leak
//! guard ([`strongroom_server::leak_guard::Guarded`]) on its way out.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target whose events take the direct path.
const ACCESS: &str = "access";

/// See the module documentation.
#[derive(Debug)]
pub struct LogFormat {
    json: Format<Json>,
}

impl Default for LogFormat {
    fn default() -> Self {
        Self {
            json: tracing_subscriber::fmt::format().json(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for LogFormat
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
        let meta = event.metadata();
        // A span would add "span" and "spans" keys: leave those lines to the formatter.
        if meta.target() != ACCESS || event.parent().is_some() || ctx.lookup_current().is_some() {
            return self.json.format_event(ctx, writer, event);
        }
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\",\"fields\":{{", meta.level())?;
        let mut fields = Fields {
            out: &mut writer,
            first: true,
            result: Ok(()),
            scratch: String::new(),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("},\"target\":")?;
        escaped(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes an event's fields as JSON members, in the order they were recorded.
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
    /// A `Debug` value's text, before it is escaped.
    scratch: String,
}

impl Fields<'_, '_> {
    /// Writes `"name":` (after a comma unless first), then the value with `value`.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let first = std::mem::replace(&mut self.first, false);
        self.result = (|| {
            if !first {
                self.out.write_char(',')?;
            }
            escaped(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| escaped(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's float format (and `null` for NaN and infinities).
        let text = serde_json::to_string(&value).map_err(|_| fmt::Error);
        self.member(field, |w| w.write_str(&text?));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let written = write!(scratch, "{value:?}");
        self.member(field, |w| {
            written?;
            escaped(w, &scratch)
        });
        self.scratch = scratch;
    }
}

/// `s` as a JSON string, escaped exactly as `serde_json` escapes it: `"` and `\`, the
/// short forms `\b \f \n \r \t`, other control characters as `\u00XX`; everything else,
/// non-ASCII included, as is. Written by hand because `serde_json` escapes only into an
/// `io::Write` and this writes into the formatter's `fmt::Write`.
fn escaped(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    w.write_char('"')?;
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(at) = bytes.get(start..).and_then(|rest| {
        rest.iter()
            .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
    }) {
        let i = start + at;
        w.write_str(s.get(start..i).ok_or(fmt::Error)?)?;
        let b = bytes.get(i).copied().ok_or(fmt::Error)?;
        match b {
            b'"' => w.write_str("\\\"")?,
            b'\\' => w.write_str("\\\\")?,
            0x08 => w.write_str("\\b")?,
            0x0c => w.write_str("\\f")?,
            b'\n' => w.write_str("\\n")?,
            b'\r' => w.write_str("\\r")?,
            b'\t' => w.write_str("\\t")?,
            _ => write!(w, "\\u{b:04x}")?,
        }
        start = i + 1;
    }
    w.write_str(s.get(start..).ok_or(fmt::Error)?)?;
    w.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    /// The lines `emit` logs, through the stock JSON layer or through [`LogFormat`], with
    /// the timestamps cut out (the only part that differs between two runs).
    fn lines(ours: bool, emit: fn()) -> Vec<String> {
        let buf = Buf::default();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(buf.clone());
        if ours {
            let s = tracing_subscriber::registry().with(layer.event_format(LogFormat::default()));
            tracing::subscriber::with_default(s, emit);
        } else {
            let s = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(s, emit);
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let ts = v["timestamp"].as_str().unwrap().to_owned();
                // RFC 3339, UTC, microseconds: what both formatters write.
                assert_eq!(ts.len(), 27, "{ts}");
                assert!(ts.ends_with('Z'));
                l.replacen(&ts, "T", 1)
            })
            .collect()
    }

    fn access_events() {
        let method = "POST";
        tracing::info!(
            target: "access",
            request_id = "req_01a2",
            %method,
            route = "/v1/cards/{id}",
            status = 201u64,
            latency_us = 1234u64,
        );
        tracing::info!(
            target: "access",
            request_id = "req_\"quoted\"\\back\nline\ttab\u{1}\u{8}\u{c}\r é ✓",
            method = ?"GET",
            route = "/x",
            status = 404u64,
            latency_us = 0u64,
            code = "not_found",
            negative = -3i64,
            flag = true,
            ratio = 0.5f64,
        );
        tracing::warn!(target: "access", "a message, then {}", "arguments");
    }

    /// The direct path writes exactly what tracing-subscriber's JSON formatter writes.
    #[test]
    fn access_lines_match_the_stock_json_formatter_byte_for_byte() {
        let stock = lines(false, access_events);
        let ours = lines(true, access_events);
        assert_eq!(stock.len(), 3);
        assert_eq!(ours, stock);
        assert!(ours[0].contains(r#""fields":{"request_id":"req_01a2","method":"POST","#));
        assert!(ours[1].contains(r#"\"quoted\"\\back\nline\ttab\u0001\b\f\r é ✓"#));
    }

    /// Other targets, and access events inside a span, go to the stock formatter (the
    /// span keys included).
    #[test]
    fn other_lines_are_the_stock_formatter_s() {
        fn emit() {
            tracing::info!(target: "strongroom", addr = "127.0.0.1:1", "listening");
            let span = tracing::info_span!("request", id = 7);
            let _in = span.enter();
            tracing::info!(target: "access", status = 200u64);
        }
        let ours = lines(true, emit);
        assert_eq!(ours, lines(false, emit));
        assert!(
            ours[1].contains(r#""span":{"id":7,"name":"request"}"#),
            "{}",
            ours[1]
        );
    }
}
