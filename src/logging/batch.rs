//! Log lines gathered in memory and written out in batches by a thread of
//! their own.
//!
//! A line is appended to a shared buffer under a lock held for the copy; it
//! wakes the writer only when it is the first since the last batch. The
//! writer then lets lines gather for [`GATHER`] and writes them with one
//! `write(2)`. So a busy webhook pays a copy per line, and the process a
//! wake-up and a system call per batch, where handing each line to a
//! channel cost a wake-up, a system call and two context switches per line
//! (eight percent of the throughput at the default log level,
//! docs/benchmarks.md).
//!
//! Nothing that serves ever waits for the sink: when it cannot keep up (a
//! container log pipe under pressure) and [`QUEUED_BYTES`] are waiting,
//! further lines are dropped and counted ([`BatchWriter::dropped`]).

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// What may wait for the sink before lines are dropped: about 12,000
/// review lines, more than half a second of them at full load.
pub const QUEUED_BYTES: usize = 4 << 20;
/// How long lines gather before they are written: a line reaches the sink
/// at most this late.
pub const GATHER: Duration = Duration::from_millis(25);
/// How long the end waits for the last batch to be written: a sink that
/// takes nothing (a log pipe nobody reads) must not keep the process from
/// exiting.
pub const FINISH_WAIT: Duration = Duration::from_secs(1);

/// The logger's side: a `MakeWriter` whose writers append to the batch.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when the first line of a batch arrives, and at the end.
    arrived: Condvar,
    dropped: AtomicU64,
    limit: usize,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// No more batches: write what is left and stop.
    closing: bool,
    /// The writer has written its last batch.
    finished: bool,
}

/// The writer thread; dropping it (or [`Self::finish`]) writes what is
/// queued and stops the thread.
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// A writer into `sink`, and the guard of its thread.
    pub fn spawn<W: Write + Send + 'static>(sink: W) -> io::Result<(Self, WriterGuard)> {
        Self::spawn_with(sink, QUEUED_BYTES, GATHER)
    }

    fn spawn_with<W: Write + Send + 'static>(
        mut sink: W,
        limit: usize,
        gather: Duration,
    ) -> io::Result<(Self, WriterGuard)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            arrived: Condvar::new(),
            dropped: AtomicU64::new(0),
            limit,
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.run(&mut sink, gather))?;
        Ok((
            Self {
                shared: shared.clone(),
            },
            WriterGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Lines dropped because the sink could not keep up.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while the lock was held left whole lines behind: go on.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one line (tracing-subscriber writes each event whole).
    fn push(&self, line: &[u8]) {
        let mut pending = self.lock();
        if pending.closing || pending.lines.len() + line.len() > self.limit {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = pending.lines.is_empty();
        pending.lines.extend_from_slice(line);
        drop(pending);
        if first {
            self.arrived.notify_one();
        }
    }

    /// The writer thread: a batch per wake-up, until closing.
    fn run(&self, sink: &mut dyn Write, gather: Duration) {
        let mut batch = Vec::new();
        loop {
            let mut pending = self.lock();
            while pending.lines.is_empty() && !pending.closing {
                pending = self
                    .arrived
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            // Let the lines of the next moments join this one (the end
            // cuts it short).
            let deadline = Instant::now() + gather;
            while !pending.closing {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                pending = self
                    .arrived
                    .wait_timeout(pending, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut batch, &mut pending.lines);
            let closing = pending.closing;
            drop(pending);
            // A sink that fails loses this batch; the next may succeed.
            let _ = sink.write_all(&batch).and_then(|()| sink.flush());
            batch.clear();
            if closing {
                self.lock().finished = true;
                self.arrived.notify_all();
                return;
            }
        }
    }
}

impl WriterGuard {
    /// Writes out what is queued and stops the thread, waiting at most
    /// [`FINISH_WAIT`] for the sink. Later lines are dropped (and counted).
    pub fn finish(&mut self) {
        self.finish_within(FINISH_WAIT);
    }

    fn finish_within(&mut self, wait: Duration) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let mut pending = self.shared.lock();
        pending.closing = true;
        // The writer may be waiting for lines, or gathering them.
        self.shared.arrived.notify_all();
        let (pending, _) = self
            .shared
            .arrived
            .wait_timeout_while(pending, wait, |pending| !pending.finished)
            .unwrap_or_else(PoisonError::into_inner);
        if pending.finished {
            drop(pending);
            let _ = thread.join();
        }
        // Otherwise the thread is left to the sink, and to the exit.
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One event's writer.
pub struct LineWriter<'a>(&'a Shared);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A sink that hands each write to the test, and can be held shut.
    struct Probe {
        writes: mpsc::Sender<Vec<u8>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Probe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.writes.send(buf.to_vec()).unwrap();
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// One event's line, written whole as tracing-subscriber writes it.
    fn line(writer: &BatchWriter, text: &str) {
        writer.make_writer().write_all(text.as_bytes()).unwrap();
    }

    fn probe() -> (Probe, mpsc::Receiver<Vec<u8>>, Arc<Mutex<()>>) {
        let (writes, received) = mpsc::channel();
        let gate = Arc::new(Mutex::new(()));
        (
            Probe {
                writes,
                gate: gate.clone(),
            },
            received,
            gate,
        )
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_in_one_write_per_batch() {
        let (sink, received, _gate) = probe();
        let (writer, mut guard) =
            BatchWriter::spawn_with(sink, 1 << 20, Duration::from_millis(200)).unwrap();
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let writer = writer.clone();
                scope.spawn(move || {
                    for number in 0..100 {
                        line(&writer, &format!("thread {thread} line {number}\n"));
                    }
                });
            }
        });
        let started = Instant::now();
        let first = received.recv_timeout(Duration::from_secs(5)).unwrap();
        // The 400 lines came within the gathering time: one write.
        let text = String::from_utf8(first).unwrap();
        assert_eq!(text.lines().count(), 400, "{text}");
        for thread in 0..4 {
            let own: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("thread {thread} ")))
                .collect();
            let expected: Vec<String> = (0..100)
                .map(|line| format!("thread {thread} line {line}"))
                .collect();
            assert_eq!(own, expected, "each thread's lines, in order");
        }
        assert!(received.try_recv().is_err());
        // The next line starts a batch of its own, written a gathering
        // time later.
        line(&writer, "later\n");
        assert_eq!(
            received.recv_timeout(Duration::from_secs(5)).unwrap(),
            b"later\n"
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        guard.finish();
        assert_eq!(writer.dropped(), 0);
    }

    #[test]
    fn a_stuck_sink_drops_and_counts_lines_without_blocking_loggers() {
        let (sink, received, gate) = probe();
        let (writer, mut guard) =
            BatchWriter::spawn_with(sink, 100, Duration::from_millis(1)).unwrap();
        let held = gate.lock().unwrap();
        line(&writer, &format!("{}\n", "a".repeat(59)));
        // Taken by the writer thread, which now waits on the sink.
        std::thread::sleep(Duration::from_millis(100));
        let started = Instant::now();
        for _ in 0..3 {
            line(&writer, &format!("{}\n", "b".repeat(39)));
        }
        assert!(started.elapsed() < Duration::from_secs(1), "never waits");
        // 40 + 40 fit in the 100 queued bytes, the third does not.
        assert_eq!(writer.dropped(), 1);
        drop(held);
        guard.finish();
        let written: Vec<u8> = received.try_iter().flatten().collect();
        assert_eq!(
            written,
            format!(
                "{}\n{}\n{}\n",
                "a".repeat(59),
                "b".repeat(39),
                "b".repeat(39)
            )
            .as_bytes()
        );
        // After the end, lines are dropped too.
        line(&writer, "late\n");
        assert_eq!(writer.dropped(), 2);
    }

    #[test]
    fn finishing_gives_up_on_a_sink_that_takes_nothing() {
        let (sink, received, gate) = probe();
        let (writer, mut guard) =
            BatchWriter::spawn_with(sink, 1 << 20, Duration::from_millis(1)).unwrap();
        let held = gate.lock().unwrap();
        line(&writer, "stuck\n");
        // Finishing in a thread of its own, so that one that waited for
        // the sink for good fails this test instead of hanging it.
        let (finished, waited) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let started = Instant::now();
            guard.finish_within(Duration::from_millis(200));
            let _ = finished.send(started.elapsed());
        });
        let waited = waited
            .recv_timeout(Duration::from_secs(30))
            .expect("finishing waited for a sink that takes nothing");
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        drop(held);
        // The line reaches the sink once it takes it again.
        assert_eq!(
            received.recv_timeout(Duration::from_secs(5)).unwrap(),
            b"stuck\n"
        );
    }

    #[test]
    fn finishing_writes_what_is_queued_at_once() {
        let (sink, received, _gate) = probe();
        let (writer, mut guard) =
            BatchWriter::spawn_with(sink, 1 << 20, Duration::from_secs(3600)).unwrap();
        line(&writer, "queued\n");
        let started = Instant::now();
        guard.finish();
        assert!(started.elapsed() < Duration::from_secs(60));
        let written: Vec<u8> = received.try_iter().flatten().collect();
        assert_eq!(written, b"queued\n");
    }
}
