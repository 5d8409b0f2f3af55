//! Log lines on stderr: text for people, JSON (one object per line, fields at
//! the top level) for log pipelines. stdout stays free for command output.
//!
//! Lines are formatted on the serving thread and written by a background one
//! through a buffer, which it flushes whenever it has caught up: under load
//! many lines share one `write(2)` instead of one each (a review's log line
//! would otherwise cost about a tenth of its time). The writer never drops a
//! line; if stderr cannot keep up, logging waits for it once 4,096 lines are
//! queued (about 1 MiB), so a slow log pipe slows reviews down instead of
//! growing memory. tracing-appender's default queue is 128,000 lines,
//! allocated up front: 4 MiB of resident memory for nothing.

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::config::LogConfig;

/// Lines formatted but not yet written before logging waits for stderr.
const LINES_QUEUED: usize = 4096;

/// Installs the global subscriber. Fails if one is already installed. Keep
/// the guard until the end: dropping it flushes what is left.
pub fn init(config: &LogConfig) -> anyhow::Result<WorkerGuard> {
    let filter = EnvFilter::try_new(&config.filter)?;
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LINES_QUEUED)
        .thread_name("log-writer")
        .finish(BufWriter::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match config.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))?;
    Ok(guard)
}
