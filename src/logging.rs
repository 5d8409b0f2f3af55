//! Log lines on stderr: text for people, JSON (one object per line, fields at
//! the top level) for log pipelines. stdout stays free for command output.
//!
//! Lines are handed to tracing-appender's non-blocking writer: a bounded
//! queue and a thread that writes them out. Nothing that serves (a review,
//! `/healthz`) ever waits for log I/O: when stderr cannot keep up (a
//! container log pipe under pressure) and the queue is full, lines are
//! dropped and counted ([`dropped_lines`], exported on `/metrics`). The
//! writer thread drains the queue into a buffer and writes it with one
//! `write(2)` per batch, so a busy webhook does not pay a system call per line.
//!
//! Values that come from the request (an object's name, its namespace, the
//! uid) are logged through [`Escaped`], so that a newline in a name cannot
//! forge a log line in the text format (mutating admission runs before the
//! API server validates names).

use std::fmt;
use std::io::{self, BufWriter, IsTerminal};
use std::sync::{Mutex, OnceLock, PoisonError};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::LogFormat;
use crate::config::LogConfig;

/// Lines queued at most: about 2.5 MiB of review lines.
const QUEUED_LINES: usize = 8192;
/// What the writer thread gathers into one `write(2)`.
const WRITE_BUFFER: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();
static GUARD: OnceLock<Mutex<Option<WorkerGuard>>> = OnceLock::new();

/// Lines dropped because the log sink could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
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
    let sink = BufWriter::with_capacity(WRITE_BUFFER, io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(sink);
    let dropped = writer.error_counter();
    let builder = tracing_subscriber::fmt().with_writer(writer);
    let result = match config.format {
        LogFormat::Text => builder
            .with_ansi(io::stderr().is_terminal())
            .finish()
            .with(filter)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .finish()
            .with(filter)
            .try_init(),
    };
    result.map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))?;
    if DROPPED.set(dropped).is_err() || GUARD.set(Mutex::new(Some(guard))).is_err() {
        anyhow::bail!("the log writer is already installed");
    }
    Ok(FlushOnDrop(()))
}

/// A value from the request, shown on one line: control characters are
/// written as escapes (`\n`, `\u{7f}`), everything else as it is.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.chars().any(char::is_control) {
            return f.write_str(self.0);
        }
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_request_values_are_escaped() {
        assert_eq!(Escaped("prometheus-0").to_string(), "prometheus-0");
        assert_eq!(
            Escaped("x\nlevel=ERROR forged\r\t\u{7f}").to_string(),
            "x\\nlevel=ERROR forged\\r\\t\\u{7f}"
        );
        assert_eq!(Escaped("ünïcode").to_string(), "ünïcode");
    }
}
