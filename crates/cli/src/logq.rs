//! The log queue: request threads append formatted lines to a shared buffer, and one
//! background thread writes them out a batch at a time.
//!
//! Written by hand because the crate used before does one thing we cannot afford: the
//! access log is one line per request, and `tracing-appender`'s non-blocking writer sent
//! every line through a channel and woke its thread for each one (a futex wake on the
//! request thread, a context switch on the other, for every request: a visible share of
//! the server's CPU in a profile of `get`). Here a request thread only locks, copies
//! its line and unlocks; it wakes the writer thread only when the buffer goes from empty
//! to not empty, or passes [`HIGH`]. The writer thread then lets lines gather for
//! [`GATHER`] before it writes them all with one `write` per output, so under load it
//! wakes about 1 / `GATHER` times a second. A line reaches its outputs within `GATHER`
//! (plus the write); an idle server does not wake at all.
//!
//! Lossless, like the channel it replaces: past [`CAP`] bytes waiting, a request thread
//! waits for the writer rather than drop a line. Dropping the [`LogGuard`] writes out
//! everything queued and stops the thread.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer thread lets lines gather after the first one arrives.
const GATHER: Duration = Duration::from_millis(10);
/// Bytes waiting that wake the writer thread at once.
const HIGH: usize = 256 * 1024;
/// Bytes waiting past which request threads wait for the writer thread.
const CAP: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The writer thread waits on this for lines (or for `closed`).
    ready: Condvar,
    /// Request threads wait on this for room below `CAP`.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves whole lines or none: still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writing end, cheap to clone: one per event (`MakeWriter`).
#[derive(Clone)]
pub struct LogQueue(Arc<Shared>);

impl Write for LogQueue {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let shared = &*self.0;
        let mut s = shared.lock();
        while s.lines.len() >= CAP && !s.closed {
            s = shared.room.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if s.closed {
            // After shutdown (a late event on another thread): straight to stderr.
            drop(s);
            return std::io::stderr().write(buf);
        }
        let was_empty = s.lines.is_empty();
        s.lines.extend_from_slice(buf);
        let wake = was_empty || s.lines.len() >= HIGH;
        drop(s);
        if wake {
            shared.ready.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stops the writer thread when dropped, after it has written out everything queued.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
        self.shared.room.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the writer thread (named `log-writer`) over `out`.
pub fn start<W: Write + Send + 'static>(out: W) -> std::io::Result<(LogQueue, LogGuard)> {
    let shared = Arc::new(Shared::default());
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn({
            let shared = Arc::clone(&shared);
            move || run(&shared, out)
        })?;
    Ok((
        LogQueue(Arc::clone(&shared)),
        LogGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn run<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let mut s = shared.lock();
        while s.lines.is_empty() && !s.closed {
            s = shared.ready.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if !s.closed && s.lines.len() < HIGH {
            // Let more lines gather; `HIGH` bytes or shutdown cut the wait short.
            s = shared
                .ready
                .wait_timeout_while(s, GATHER, |s| !s.closed && s.lines.len() < HIGH)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut s.lines, &mut batch);
        let closed = s.closed;
        drop(s);
        shared.room.notify_all();
        // A failed write (stderr closed, disk full) cannot be logged anywhere: the next
        // batch tries again.
        let _ = out.write_all(&batch);
        let _ = out.flush();
        batch.clear();
        if closed && shared.lock().lines.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read while the writer thread holds it.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(buf);
            *self.writes.lock().unwrap() += 1;
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn line(t: usize, i: usize) -> String {
        format!("{{\"thread\":{t},\"line\":{i}}}\n")
    }

    /// Lines from many threads all arrive, whole and each thread's in order, and far
    /// fewer writes than lines reach the output.
    #[test]
    fn every_line_arrives_whole_in_few_writes() {
        let sink = Sink::default();
        let (q, guard) = start(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        q.write_all(line(t, i).as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let bytes = sink.bytes.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let mut next = [0usize; 4];
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let t = usize::try_from(v["thread"].as_u64().unwrap()).unwrap();
            assert_eq!(v["line"].as_u64().unwrap() as usize, next[t], "thread {t}");
            next[t] += 1;
        }
        assert_eq!(next, [5_000; 4]);
        let writes = *sink.writes.lock().unwrap();
        assert!(writes < 20_000 / 10, "{writes} writes for 20,000 lines");
    }

    /// A line shows up without the guard being dropped: the writer thread does not wait
    /// for more.
    #[test]
    fn a_lone_line_is_written_soon() {
        let sink = Sink::default();
        let (mut q, _guard) = start(sink.clone()).unwrap();
        q.write_all(b"one\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.bytes.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::yield_now();
        }
        assert_eq!(*sink.bytes.lock().unwrap(), b"one\n");
    }

    /// A writer slower than the producers holds them back at `CAP` instead of dropping
    /// lines or growing without bound.
    #[test]
    fn producers_wait_for_a_slow_output() {
        struct Slow(Sink);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let (lock, cv) = (Mutex::new(()), Condvar::new());
                let g = lock.lock().unwrap();
                drop(cv.wait_timeout(g, Duration::from_millis(20)).unwrap());
                self.0.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let (mut q, guard) = start(Slow(sink.clone())).unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..(3 * CAP / chunk.len()) {
            q.write_all(&chunk).unwrap();
            assert!(q.0.lock().lines.len() <= CAP + chunk.len());
        }
        drop(guard);
        assert_eq!(sink.bytes.lock().unwrap().len(), 3 * CAP);
    }
}
