//! Log lines on stderr: text for people, JSON (one object per line, fields at
//! the top level) for log pipelines. stdout stays free for command output.
//!
//! Lines are formatted on the serving thread and appended to a shared
//! buffer; a background thread writes that buffer out in one `write(2)`
//! once it holds [`Limits::flush_bytes`], or every [`Limits::interval`]
//! whatever it holds. Under load a review's line then costs a copy into
//! memory, and the writer wakes a few dozen times a second instead of for
//! every line: with the server on one CPU, a writer thread woken per line
//! (tracing-appender's design) was runnable most of the time and took its
//! time slices from the reviews (measured in `docs/benchmarks.md`).
//!
//! No line is ever dropped. If stderr cannot keep up (a container log pipe
//! under pressure), logging waits once [`Limits::max_pending`] bytes are
//! queued: a slow pipe slows reviews down instead of growing memory. Lines
//! logged after the writer stopped go straight to the sink.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::LogFormat;
use crate::config::LogConfig;

/// When the writer thread writes the buffer out, and when logging waits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Write out as soon as this much is buffered.
    pub flush_bytes: usize,
    /// Write out at least this often, however little is buffered.
    pub interval: Duration,
    /// Logging waits while this much is buffered (the writer is behind).
    pub max_pending: usize,
}

impl Default for Limits {
    /// 512 KiB per write (about 1,700 review lines), at least every 100 ms
    /// (a line is visible promptly when the webhook is quiet), at most 4 MiB
    /// queued (about 14,000 lines). At 45,000 reviews a second the writer
    /// wakes about 30 times a second.
    fn default() -> Self {
        Self {
            flush_bytes: 512 * 1024,
            interval: Duration::from_millis(100),
            max_pending: 4 * 1024 * 1024,
        }
    }
}

struct Pending {
    bytes: Vec<u8>,
    /// The writer was told the buffer is full; told once per fill, since a
    /// `notify` is a system call even when nobody waits.
    told_full: bool,
    /// The writer is asked to write everything out and stop.
    closing: bool,
    /// The writer has stopped: lines go straight to the sink.
    stopped: bool,
}

struct Shared<W> {
    pending: Mutex<Pending>,
    /// Wakes the writer before its interval: a full buffer, or the end.
    wake: Condvar,
    /// Wakes loggers waiting for room.
    room: Condvar,
    sink: Mutex<W>,
    limits: Limits,
}

impl<W: Write> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock cannot leave `Pending` half-changed
        // in a way that matters: keep logging.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_to_sink(&self, bytes: &[u8]) {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        // Nowhere to report a failing stderr; the next write tries again.
        let _ = sink.write_all(bytes);
        let _ = sink.flush();
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.lock();
        while pending.bytes.len() >= self.limits.max_pending && !pending.stopped {
            pending = self
                .room
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.stopped {
            // Under the lock, so that late lines keep their order.
            self.write_to_sink(line);
            return;
        }
        pending.bytes.extend_from_slice(line);
        let full = pending.bytes.len() >= self.limits.flush_bytes && !pending.told_full;
        if full {
            pending.told_full = true;
            drop(pending);
            self.wake.notify_one();
        }
    }

    /// The writer thread: takes the whole buffer when it is full or the
    /// interval has passed, and writes it outside the lock. Until told to
    /// stop. A quiet process costs it one wake-up per interval; a busy one
    /// no more than that plus one per `flush_bytes`.
    fn run(&self) {
        let mut taken = Vec::with_capacity(self.limits.flush_bytes);
        loop {
            let mut pending = self.lock();
            if pending.bytes.len() < self.limits.flush_bytes && !pending.closing {
                // Woken early (full, closing, or spuriously): written early.
                pending = self
                    .wake
                    .wait_timeout(pending, self.limits.interval)
                    .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
            }
            std::mem::swap(&mut pending.bytes, &mut taken);
            pending.told_full = false;
            let closing = pending.closing;
            drop(pending);
            self.room.notify_all();
            if !taken.is_empty() {
                self.write_to_sink(&taken);
                taken.clear();
            }
            if closing {
                let mut pending = self.lock();
                let rest = std::mem::take(&mut pending.bytes);
                if !rest.is_empty() {
                    self.write_to_sink(&rest);
                }
                pending.stopped = true;
                drop(pending);
                self.room.notify_all();
                return;
            }
        }
    }

    fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_one();
    }
}

/// The subscriber's writer: appends each formatted line to the buffer.
pub struct BatchWriter<W> {
    shared: Arc<Shared<W>>,
}

impl<W> Clone for BatchWriter<W> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<W: Write> Write for &BatchWriter<W> {
    /// tracing's fmt layer writes each line with one `write_all`: it is
    /// appended whole, never interleaved with another thread's line.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.shared.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for BatchWriter<W> {
    type Writer = &'a BatchWriter<W>;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// Stops the writer thread when dropped, after it wrote everything buffered.
pub struct WriterGuard {
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl WriterGuard {
    /// Writes out everything buffered and stops the writer; later lines go
    /// straight to the sink. Idempotent.
    pub fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Starts the writer thread over `sink`.
pub fn batch_writer<W: Write + Send + 'static>(
    sink: W,
    limits: Limits,
) -> io::Result<(BatchWriter<W>, WriterGuard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            bytes: Vec::with_capacity(limits.flush_bytes),
            told_full: false,
            closing: false,
            stopped: false,
        }),
        wake: Condvar::new(),
        room: Condvar::new(),
        sink: Mutex::new(sink),
        limits,
    });
    let thread: JoinHandle<()> = std::thread::Builder::new()
        .name("log-writer".to_owned())
        .spawn({
            let shared = shared.clone();
            move || shared.run()
        })?;
    let stop = {
        let shared = shared.clone();
        move || {
            shared.close();
            let _ = thread.join();
        }
    };
    Ok((
        BatchWriter { shared },
        WriterGuard {
            stop: Some(Box::new(stop)),
        },
    ))
}

/// The process's writer guard, for [`flush_before_exit`].
static PROCESS_WRITER: OnceLock<Mutex<Option<WriterGuard>>> = OnceLock::new();

/// Writes out every buffered line; for `std::process::exit`, which runs no
/// destructors. Later lines are written unbuffered.
pub fn flush_before_exit() {
    if let Some(guard) = PROCESS_WRITER.get() {
        let mut guard = guard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(mut guard) = guard.take() {
            guard.finish();
        }
    }
}

/// Flushes the process's log buffer when dropped (the end of `main`).
pub struct FlushOnDrop(());

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        flush_before_exit();
    }
}

/// Installs the global subscriber. Fails if one is already installed. Keep
/// the returned value until the end: dropping it writes what is left.
pub fn init(config: &LogConfig) -> anyhow::Result<FlushOnDrop> {
    let filter = EnvFilter::try_new(&config.filter)?;
    let (writer, guard) = batch_writer(io::stderr(), Limits::default())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match config.format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    result.map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))?;
    if PROCESS_WRITER.set(Mutex::new(Some(guard))).is_err() {
        anyhow::bail!("the log writer is already installed");
    }
    Ok(FlushOnDrop(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    /// A sink the test can read, and hold up.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.bytes.lock().unwrap().extend_from_slice(buf);
            *self.writes.lock().unwrap() += 1;
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }
    }

    fn log(writer: &BatchWriter<Sink>, line: &str) {
        let mut handle = writer.make_writer();
        handle.write_all(line.as_bytes()).unwrap();
    }

    const SLOW: Duration = Duration::from_secs(3600);

    #[test]
    fn lines_from_many_threads_are_all_written_whole_and_in_order_per_thread() {
        let sink = Sink::default();
        let limits = Limits {
            flush_bytes: 512,
            interval: SLOW,
            max_pending: 4096,
        };
        let (writer, mut guard) = batch_writer(sink.clone(), limits).unwrap();
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let writer = writer.clone();
                scope.spawn(move || {
                    for i in 0..2000 {
                        log(&writer, &format!("thread {thread} line {i}\n"));
                    }
                });
            }
        });
        guard.finish();
        let text = sink.text();
        for thread in 0..4 {
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("thread {thread} ")))
                .collect();
            let expected: Vec<String> = (0..2000)
                .map(|i| format!("thread {thread} line {i}"))
                .collect();
            assert_eq!(lines, expected);
        }
        assert_eq!(text.lines().count(), 8000);
        // Batched: far fewer writes than lines.
        assert!(*sink.writes.lock().unwrap() < 1000);
    }

    #[test]
    fn a_quiet_logger_is_written_within_the_interval() {
        let sink = Sink::default();
        let limits = Limits {
            flush_bytes: 1 << 20,
            interval: Duration::from_millis(20),
            max_pending: 1 << 21,
        };
        let (writer, _guard) = batch_writer(sink.clone(), limits).unwrap();
        log(&writer, "one line\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.text().is_empty() {
            assert!(Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.text(), "one line\n");
    }

    #[test]
    fn a_stuck_sink_makes_logging_wait_instead_of_queueing_without_bound() {
        let sink = Sink::default();
        let limits = Limits {
            flush_bytes: 10,
            interval: Duration::from_millis(1),
            max_pending: 100,
        };
        let (writer, mut guard) = batch_writer(sink.clone(), limits).unwrap();
        let held = sink.gate.lock().unwrap();
        let (done, finished) = mpsc::channel();
        let logger = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    log(&writer, &format!("line {i:04}\n"));
                }
                done.send(()).unwrap();
            })
        };
        // The writer is stuck in the sink: the logger fills the buffer and waits.
        assert!(
            finished.recv_timeout(Duration::from_millis(300)).is_err(),
            "10,000 bytes logged with the sink stuck and 100 allowed in memory"
        );
        let queued = writer.shared.lock().bytes.len();
        assert!(queued <= 100 + 10, "{queued} bytes queued");
        drop(held);
        finished.recv_timeout(Duration::from_secs(10)).unwrap();
        logger.join().unwrap();
        guard.finish();
        assert_eq!(sink.text().lines().count(), 1000);
    }

    #[test]
    fn lines_after_the_end_go_straight_to_the_sink() {
        let sink = Sink::default();
        let (writer, mut guard) = batch_writer(
            sink.clone(),
            Limits {
                interval: SLOW,
                ..Limits::default()
            },
        )
        .unwrap();
        log(&writer, "buffered\n");
        guard.finish();
        assert_eq!(sink.text(), "buffered\n");
        log(&writer, "late\n");
        assert_eq!(sink.text(), "buffered\nlate\n");
    }
}
