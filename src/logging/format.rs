//! The log line of this crate's own events, written directly.
//!
//! tracing-subscriber's formatters cost about 15k (text) and 21k (JSON)
//! instructions for the per-review line (callgrind on the server,
//! docs/benchmarks.md): every field goes through `fmt::Debug`, and JSON
//! through serde_json over an `io::Write` adaptor in small writes. [`Fast`]
//! writes the same bytes for the events of this crate (values that are
//! strings, booleans, integers, or `Debug`/`Display` values without an error
//! source) and hands everything else to tracing-subscriber's formatter:
//! events of other crates (rustls, kube, hyper), colours on a terminal,
//! spans, floats, errors with sources. A test checks both formats byte for
//! byte against tracing-subscriber's own.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::mutation::patch::escape_json_str_contents;
use crate::mutation::view::plain_len;

/// The target prefix of the events [`Fast`] writes itself.
const OURS: &str = "prom_mtls_webhook";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// tracing-subscriber's `Full` format without colours.
    Text,
    /// Its JSON format, fields flattened, no spans.
    Json,
}

/// Writes this crate's events as `fallback` would, faster; everything else
/// through `fallback`.
pub struct Fast<F, T> {
    pub style: Style,
    /// The timer of `fallback` too.
    pub timer: T,
    pub fallback: F,
}

thread_local! {
    /// The line being written, reused: a field that cannot be written fast
    /// is found only on the way, and the line then goes to the fallback.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<S, N, F, T> FormatEvent<S, N> for Fast<F, T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ours = event.metadata().target().starts_with(OURS)
            && !writer.has_ansi_escapes()
            && ctx.lookup_current().is_none();
        if ours {
            let written = LINE.with(|line| {
                let mut line = line.borrow_mut();
                line.clear();
                match write_line(&mut line, self.style, &self.timer, event) {
                    Ok(true) => {
                        #[cfg(test)]
                        tests::FAST_LINES.with(|n| n.set(n.get() + 1));
                        writer.write_str(&line).map(|()| true)
                    }
                    Ok(false) => Ok(false),
                    Err(error) => Err(error),
                }
            })?;
            if written {
                return Ok(());
            }
        }
        self.fallback.format_event(ctx, writer, event)
    }
}

/// The whole line into `out`; `false` when a field needs the fallback.
fn write_line(
    out: &mut String,
    style: Style,
    timer: &impl FormatTime,
    event: &Event<'_>,
) -> Result<bool, fmt::Error> {
    let meta = event.metadata();
    // Before the fields. The time goes straight into the line: a timer's
    // text (RFC 3339) needs no JSON escape, and is escaped if it ever does.
    match style {
        Style::Text => {
            timer.format_time(&mut Writer::new(out))?;
            out.push(' ');
            out.push_str(text_level(meta.level()));
            out.push(' ');
            out.push_str(meta.target());
            out.push_str(": ");
        }
        Style::Json => {
            out.push_str("{\"timestamp\":\"");
            let start = out.len();
            timer.format_time(&mut Writer::new(out))?;
            if out
                .get(start..)
                .is_some_and(|time| plain_len(time.as_bytes()) < time.len())
            {
                let time = out.split_off(start);
                out.pop();
                json_str(out, &time);
            } else {
                out.push('"');
            }
            out.push_str(",\"level\":");
            json_str(out, meta.level().as_str());
        }
    }
    let mut fields = Fields {
        out: &mut *out,
        style,
        first: true,
        result: Ok(true),
    };
    event.record(&mut fields);
    if !fields.result? {
        return Ok(false);
    }
    // After them.
    match style {
        Style::Text => out.push('\n'),
        Style::Json => {
            out.push_str(",\"target\":");
            json_str(out, meta.target());
            out.push_str("}\n");
        }
    }
    Ok(true)
}

fn text_level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// A field name the fast path writes as it is (the formatters treat `log.`
/// and `r#` names specially).
fn plain_name(field: &Field) -> bool {
    !field.name().starts_with("log.") && !field.name().starts_with("r#")
}

/// The fields as tracing-subscriber writes them. Text (`DefaultVisitor`):
/// `message` as it is, then `name=value` with strings as Rust literals,
/// space-separated. JSON (tracing-serde's `SerdeMapVisitor`, flattened):
/// `,"name":value`, strings and `Debug`/`Display` values as JSON strings.
struct Fields<'a> {
    out: &'a mut String,
    style: Style,
    first: bool,
    /// `Ok(false)` once a field needs the fallback.
    result: Result<bool, fmt::Error>,
}

impl Fields<'_> {
    fn give_up(&mut self) {
        self.result = self.result.map(|_| false);
    }

    fn field(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if !matches!(self.result, Ok(true)) {
            return;
        }
        if !plain_name(field) {
            self.give_up();
            return;
        }
        match self.style {
            Style::Text => {
                if !std::mem::take(&mut self.first) {
                    self.out.push(' ');
                }
                if field.name() != "message" {
                    self.out.push_str(field.name());
                    self.out.push('=');
                }
            }
            Style::Json => {
                self.out.push(',');
                json_str(self.out, field.name());
                self.out.push(':');
            }
        }
        if let Err(error) = value(self.out) {
            self.result = Err(error);
        }
    }

    /// A value written through `Display` or `Debug`: as it is in text, as a
    /// JSON string in JSON.
    fn formatted(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let style = self.style;
        self.field(field, |out| match style {
            Style::Text => out.write_fmt(value),
            Style::Json => {
                json_str(out, &fmt::format(value));
                Ok(())
            }
        });
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let style = self.style;
        self.field(field, |out| match style {
            Style::Text if field.name() == "message" => {
                out.push_str(value);
                Ok(())
            }
            Style::Text => debug_str(out, value),
            Style::Json => {
                json_str(out, value);
                Ok(())
            }
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| {
            out.push_str(if value { "true" } else { "false" });
            Ok(())
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| {
            out.push_str(itoa::Buffer::new().format(value));
            Ok(())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| {
            out.push_str(itoa::Buffer::new().format(value));
            Ok(())
        });
    }

    /// Floats are left to serde_json's and Rust's own formatting.
    fn record_f64(&mut self, _field: &Field, _value: f64) {
        self.give_up();
    }

    /// Text lists an error's sources after it; JSON writes its `Display`.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.style == Style::Text && value.source().is_some() {
            self.give_up();
        } else {
            self.formatted(field, format_args!("{value}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.formatted(field, format_args!("{value:?}"));
    }
}

/// A string as `{:?}` writes it: quoted, escaped. Printable ASCII other
/// than `"` and `\` is written as it is; anything else through `Debug`.
fn debug_str(out: &mut String, value: &str) -> fmt::Result {
    let plain = value
        .bytes()
        .all(|byte| (0x20..0x7f).contains(&byte) && byte != b'"' && byte != b'\\');
    if plain {
        out.push('"');
        out.push_str(value);
        out.push('"');
        Ok(())
    } else {
        write!(out, "{value:?}")
    }
}

/// A JSON string as serde_json writes it (and the patch writes its own).
fn json_str(out: &mut String, value: &str) {
    out.push('"');
    if plain_len(value.as_bytes()) == value.len() {
        // The usual case: nothing to escape, no piece to check.
        out.push_str(value);
    } else {
        escape_json_str_contents(value, |piece| {
            // Cut at ASCII bytes of a `str`: never invalid.
            out.push_str(std::str::from_utf8(piece).unwrap_or_default());
        });
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::{Arc, Mutex, PoisonError};

    use tracing::{error, info, warn};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    thread_local! {
        /// Lines the fast path wrote on this thread.
        pub static FAST_LINES: Cell<usize> = const { Cell::new(0) };
    }

    /// A timer that always writes this text.
    #[derive(Clone, Copy)]
    struct Fixed(&'static str);

    const AT: Fixed = Fixed("2026-12-04T22:32:39.000042Z");

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str(self.0)
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Events of every shape the webhook logs, and some it hands over.
    fn events() {
        let hostile = "prometheus-0\n2026-12-04T00:00:00Z ERROR forged \"q\" \\ é \u{7f} \u{1} \u{200b} \t\r\u{8}\u{c}";
        let warnings = vec!["a \"quoted\" warning".to_owned()];
        info!(
            uid = "fe9b3ce8",
            kind = "Pod",
            namespace = "default",
            name = hostile,
            operation = "CREATE",
            dry_run = false,
            patch_ops = 8u64,
            warnings = ?warnings,
            outcome = "patched",
            duration_us = 41u64,
            "review"
        );
        let error = std::io::Error::other("connection reset");
        warn!(%error, status = 400u16, offset = -3i64, "cannot read the body of {} bytes", 7);
        info!(listen = %"127.0.0.1:8443", ready = true);
        error!(
            error = &Outer(std::io::Error::other("inner")) as &(dyn std::error::Error + 'static),
            "with a source"
        );
        info!(ratio = 0.5f64, "a float");
        info!(target: "rustls::server", "another crate's {}", "line");
    }

    fn lines(style: Style, fast: bool) -> (String, usize) {
        lines_at(AT, style, fast)
    }

    fn lines_at(timer: Fixed, style: Style, fast: bool) -> (String, usize) {
        let out = Captured::default();
        let text = tracing_subscriber::fmt::format().with_timer(timer);
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false);
        let before = FAST_LINES.with(Cell::get);
        match (style, fast) {
            (Style::Text, false) => {
                tracing::subscriber::with_default(builder.event_format(text).finish(), events)
            }
            (Style::Text, true) => tracing::subscriber::with_default(
                builder
                    .event_format(Fast {
                        style,
                        timer,
                        fallback: text,
                    })
                    .finish(),
                events,
            ),
            (Style::Json, fast) => {
                let json = text
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false);
                let builder = builder.json();
                if fast {
                    let format = Fast {
                        style,
                        timer,
                        fallback: json,
                    };
                    tracing::subscriber::with_default(builder.event_format(format).finish(), events)
                } else {
                    tracing::subscriber::with_default(builder.event_format(json).finish(), events)
                }
            }
        }
        (out.text(), FAST_LINES.with(Cell::get) - before)
    }

    #[test]
    fn writes_what_tracing_subscriber_writes_byte_for_byte() {
        for style in [Style::Text, Style::Json] {
            let (expected, _) = lines(style, false);
            let (written, fast) = lines(style, true);
            pretty_assertions::assert_eq!(written, expected, "{style:?}");
            assert_eq!(expected.lines().count(), 6, "{expected}");
            // The review, the warning and the plain one; not the float or
            // rustls's line, nor in text the error with a source (JSON
            // writes only its Display, as tracing-serde does).
            let expected_fast = if style == Style::Json { 4 } else { 3 };
            assert_eq!(fast, expected_fast, "{style:?}");
        }
    }

    #[test]
    fn a_timer_text_that_needs_escapes_is_escaped_as_tracing_subscriber_does() {
        let odd = Fixed("at \"noon\"\\\t");
        let (expected, _) = lines_at(odd, Style::Json, false);
        let (written, fast) = lines_at(odd, Style::Json, true);
        pretty_assertions::assert_eq!(written, expected);
        assert!(
            expected.starts_with(r#"{"timestamp":"at \"noon\"\\\t","#),
            "{expected}"
        );
        assert_eq!(fast, 4);
    }

    #[test]
    fn a_newline_in_a_value_stays_on_its_line() {
        for style in [Style::Text, Style::Json] {
            let (written, _) = lines(style, true);
            let review = written.lines().next().unwrap();
            assert!(
                review.contains(r"prometheus-0\n2026-12-04T00:00:00Z ERROR forged"),
                "{review}"
            );
            assert!(
                !written
                    .lines()
                    .any(|line| line.starts_with("2026-12-04T00:00:00Z"))
            );
        }
    }
}
