//! Log lines on stderr: text for people, JSON (one object per line, fields at
//! the top level) for log pipelines. stdout stays free for command output.
//!
//! Lines are gathered in memory and written out in batches by a thread of
//! their own ([`batch`]): a busy webhook pays a copy per line, and a wake-up
//! and a `write(2)` per batch. Nothing that serves (a review, `/healthz`)
//! ever waits for log I/O: when stderr cannot keep up (a container log pipe
//! under pressure) and 4 MiB are waiting, lines are dropped and counted
//! ([`dropped_lines`], exported on `/metrics`).
//!
//! Values that come from the request (an object's name, its namespace, the
//! uid) are recorded as strings, never through `Display`: the text format
//! writes a string field as a quoted, escaped literal (`name="a\nb"`) and
//! JSON as a JSON string, so a newline in a name cannot forge a log line
//! (mutating admission runs before the API server validates names). That is
//! also the cheap way: a `Display` field is formatted into a temporary
//! string first, a `&str` is written as it is.
//!
//! The lines are tracing-subscriber's formats, byte for byte; this crate's
//! own events are written by `format::Fast`, which costs a quarter of what
//! tracing-subscriber's formatters cost for the per-review line (about 7k
//! instructions instead of 25k in JSON, docs/benchmarks.md). Timestamps are
//! RFC 3339, UTC, in microseconds, with the date and time of day formatted
//! once a second per thread ([`UtcMicros`]).

mod batch;
mod format;

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::LogFormat;
use crate::config::LogConfig;
use batch::{BatchWriter, WriterGuard};
use format::{Fast, Style};

static WRITER: OnceLock<BatchWriter> = OnceLock::new();
static GUARD: OnceLock<Mutex<Option<WriterGuard>>> = OnceLock::new();

/// Lines dropped because the log sink could not keep up.
pub fn dropped_lines() -> u64 {
    WRITER.get().map_or(0, BatchWriter::dropped)
}

/// Writes out what is queued; for `std::process::exit`, which runs no
/// destructors. Later lines are dropped.
pub fn flush_before_exit() {
    if let Some(guard) = GUARD.get() {
        drop(guard.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

/// Writes out what is queued when dropped (the end of `main`).
pub struct FlushOnDrop(());

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        flush_before_exit();
    }
}

/// Installs the global subscriber. Fails if one is already installed. Keep
/// the returned value until the end: dropping it writes what is left.
pub fn init(config: &LogConfig) -> anyhow::Result<FlushOnDrop> {
    let filter: Targets = config.filter.parse()?;
    let (writer, guard) = BatchWriter::spawn(io::stderr())?;
    let builder = tracing_subscriber::fmt().with_writer(writer.clone());
    let text = tracing_subscriber::fmt::format().with_timer(UtcMicros);
    let result = match config.format {
        LogFormat::Text => builder
            .with_ansi(io::stderr().is_terminal())
            .event_format(Fast {
                style: Style::Text,
                timer: UtcMicros,
                fallback: text,
            })
            .finish()
            .with(filter)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .event_format(Fast {
                style: Style::Json,
                timer: UtcMicros,
                fallback: text
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            })
            .finish()
            .with(filter)
            .try_init(),
    };
    result.map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))?;
    if WRITER.set(writer).is_err() || GUARD.set(Mutex::new(Some(guard))).is_err() {
        anyhow::bail!("the log writer is already installed");
    }
    Ok(FlushOnDrop(()))
}

/// `2026-12-04T22:32:39.445596Z`, as tracing-subscriber's default timer
/// writes it (RFC 3339, UTC, microseconds).
pub struct UtcMicros;

thread_local! {
    /// The second last written on this thread, the last timestamp's text,
    /// and the length of its part up to the `.` (the second's).
    static SECOND: RefCell<(u64, String, usize)> =
        const { RefCell::new((u64::MAX, String::new(), 0)) };
}

impl FormatTime for UtcMicros {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        SECOND.with(|second| {
            let (at, text, second_len) = &mut *second.borrow_mut();
            if *at != now.as_secs() {
                text.clear();
                write_second(text, now.as_secs())?;
                *at = now.as_secs();
                *second_len = text.len();
            }
            // The second's text stays; the fraction after it is rewritten.
            text.truncate(*second_len);
            push_fraction(text, now.subsec_micros());
            w.write_str(text)
        })
    }
}

/// `.{micros:06}Z`, written by hand: the formatting machinery cost more
/// than the rest of the timestamp.
fn push_fraction(out: &mut String, micros: u32) {
    out.push('.');
    for power in [100_000, 10_000, 1_000, 100, 10, 1] {
        out.push(char::from(b'0' + (micros / power % 10) as u8));
    }
    out.push('Z');
}

/// `unix_seconds` as `YYYY-MM-DDTHH:MM:SS` in UTC.
fn write_second(out: &mut String, unix_seconds: u64) -> fmt::Result {
    let at = i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microseconds_are_six_digits_as_the_formatter_writes_them() {
        for micros in [0, 7, 42, 999, 123_456, 999_999, 100_000, 10] {
            let mut out = String::new();
            push_fraction(&mut out, micros);
            assert_eq!(out, format!(".{micros:06}Z"), "{micros}");
        }
    }

    #[test]
    fn seconds_are_written_as_rfc_3339_in_utc() {
        let mut out = String::new();
        write_second(&mut out, 0).unwrap();
        assert_eq!(out, "1970-01-01T00:00:00");
        out.clear();
        // 2026-12-04T22:32:39Z, and the last second of a leap year.
        write_second(&mut out, 1_796_423_559).unwrap();
        assert_eq!(out, "2026-12-04T22:32:39");
        out.clear();
        write_second(&mut out, 1_735_689_599).unwrap();
        assert_eq!(out, "2024-12-31T23:59:59");
    }
}
