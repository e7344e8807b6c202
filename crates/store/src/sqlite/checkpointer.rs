//! The checkpointer: copies the WAL back into the database file on a thread of its own,
//! off the writer's path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use super::conn::SyncConn;
use super::readers::Readers;
use crate::StoreResult;

/// How often the checkpointer runs while writes come in. A page written many times
/// between two runs is copied and flushed once, so a longer interval means fewer random
/// writes into the database file, which compete with the WAL's `fsync` on the same disk.
/// Much longer, and the checkpoint the writer finishes has more to copy, which shows in
/// the tail latency. Figures: BENCHMARKS.md, "SQLite settings".
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(400);

/// When the checkpointer asks the writer to finish a checkpoint (see [`checkpointer`] and
/// [`round`]). A checkpoint in the writer pauses every write for its copy and sync, so it
/// should be rare and short.
#[derive(Debug, Clone, Copy)]
pub(super) struct FinishAt {
    /// WAL frames (4 KiB pages) beyond which the WAL should start over. Lower, and the
    /// writer pauses so often that the tail latency of writes rises (BENCHMARKS.md,
    /// "SQLite settings").
    pub(super) frames: i64,
    /// Frames copied by the checkpointer's last round below which the writer is asked.
    pub(super) left: i64,
    /// Copy-and-flush rounds at most in one run. Each round copies what landed during the
    /// last one's flush, about half as much at full load with a million cards.
    pub(super) rounds: usize,
}

pub(super) const FINISH_AT: FinishAt = FinishAt {
    frames: 16_000,
    left: 512,
    rounds: 6,
};

/// Shared by the writer and the checkpointer.
#[derive(Debug, Default)]
pub(super) struct CheckpointState {
    /// Set by the checkpointer: the WAL is long and nearly all copied; the writer
    /// should finish the copy between two batches.
    pub(super) finish: AtomicBool,
    /// Set by the writer when it wakes the checkpointer, cleared by the checkpointer as a
    /// run starts: while it is set, a run is coming that will copy what the writer commits
    /// meanwhile, so the writer sends no wake-up ([`CheckpointState::wanted`]).
    pub(super) woken: AtomicBool,
}

impl CheckpointState {
    /// Whether the writer's batch should wake the checkpointer: only when no run is
    /// coming already. Every batch used to send one, and during the checkpointer's wait
    /// between runs each woke its thread only to wait again: a futex wake on the writer
    /// and a context switch on the shared cores per batch, ~3% of the writer's CPU.
    pub(super) fn wanted(&self) -> bool {
        !self.woken.swap(true, Ordering::AcqRel)
    }
}

/// Checkpoints run on a thread of their own, not in the writer after a commit (SQLite's
/// automatic checkpoint), where copying pages back into the database file and syncing
/// it takes the writer's time, and the writer is what tokenizations queue on.
/// Wakes after batches, at most every [`CHECKPOINT_EVERY`]; stops when the writer does,
/// after a last checkpoint. The writer wakes it only when no run is coming
/// ([`CheckpointState::wanted`]).
///
/// A passive checkpoint that cannot copy the whole WAL (batches keep landing) leaves the
/// pages it copied dirty in the OS cache: SQLite syncs the database file only when a
/// checkpoint completes, and that is the one the writer finishes between two batches. With
/// a million cards those pages are scattered across a large file, and flushing them all in
/// that final sync held the writer (and every tokenization queued on it) for a long pause.
/// So the checkpointer flushes what it copied itself, off the writer's path, after each run
/// that copied something; the final sync is then left with a few hundred pages.
pub(super) fn checkpointer(
    conn: SyncConn,
    db_file: &std::fs::File,
    wake: std_mpsc::Receiver<()>,
    state: Arc<CheckpointState>,
    readers: Arc<Readers>,
) {
    let mut last: Option<Instant> = None;
    let mut flush = Flush::new(db_file);
    let mut open = true;
    while open {
        if wake.recv().is_err() {
            break;
        }
        if let Some(deadline) = last.map(|t| t + CHECKPOINT_EVERY) {
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match wake.recv_timeout(left) {
                    Ok(()) => {}
                    Err(std_mpsc::RecvTimeoutError::Timeout) => break,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
        }
        // From here, a batch wakes the next run: this one may start copying before it lands.
        state.woken.store(false, Ordering::Release);
        // Idle readers' snapshots from before the last commit would stop the copy short.
        readers.sweep();
        if let Err(e) = round(&conn, &mut flush, &state, FINISH_AT) {
            tracing::warn!(error = %e, "SQLite checkpoint failed");
        }
        last = Some(Instant::now());
    }
    // The writer has stopped: idle readers' snapshots from before its last commit would
    // leave the end of the WAL uncopied.
    readers.sweep();
    if let Err(e) = conn.checkpoint() {
        tracing::warn!(error = %e, "SQLite checkpoint at close failed");
    }
    tracing::debug!(flushes = flush.flushes, "SQLite checkpointer stopped");
}

/// One run of the checkpointer: copy what the WAL holds, and flush it. Once the WAL is past
/// `at.frames`, copy and flush again what landed meanwhile, each round shorter than the
/// last, and ask the writer to finish only after a round that copied (and flushed) fewer
/// than `at.left` frames: what the writer then copies and syncs while every write waits is
/// only what landed during that last, short flush. Asked right after one copy, it was left
/// enough scattered pages to sync that every write paused for milliseconds, more than once
/// a second at full load (BENCHMARKS.md, "SQLite settings").
pub(super) fn round(
    conn: &SyncConn,
    flush: &mut Flush<'_>,
    state: &CheckpointState,
    at: FinishAt,
) -> StoreResult<()> {
    let (mut frames, mut copied) = conn.checkpoint()?;
    flush.after(copied);
    // The first round copied whatever landed since the last run; only a later round of
    // this run measures what lands during one flush.
    for _ in 1..at.rounds {
        if frames <= at.frames {
            return Ok(());
        }
        let before = copied;
        (frames, copied) = conn.checkpoint()?;
        flush.after(copied);
        if frames > at.frames && copied.saturating_sub(before) < at.left {
            state.finish.store(true, Ordering::Release);
            return Ok(());
        }
    }
    // A disk slower than the writes never gives a short round: past four times the
    // threshold, the writer finishes anyway (a longer pause) rather than let the WAL grow
    // without bound.
    if frames > at.frames.saturating_mul(4) {
        state.finish.store(true, Ordering::Release);
    }
    Ok(())
}

/// The checkpointer's flush of the database file (see [`checkpointer`]).
pub(super) struct Flush<'a> {
    pub(super) file: &'a std::fs::File,
    /// WAL frames already copied, as of the last flush.
    pub(super) copied: i64,
    /// A failure is reported once, not on every run, until a flush succeeds again.
    pub(super) warned: bool,
    /// Flushes that succeeded (logged when the checkpointer stops).
    pub(super) flushes: u64,
}

impl<'a> Flush<'a> {
    pub(super) fn new(file: &'a std::fs::File) -> Self {
        Self {
            file,
            copied: 0,
            warned: false,
            flushes: 0,
        }
    }

    /// Flushes the file if the checkpoint copied anything since the last flush (`copied`
    /// starts again from zero when the WAL does).
    pub(super) fn after(&mut self, copied: i64) {
        if copied == self.copied {
            return;
        }
        self.copied = copied;
        match self.file.sync_data() {
            Ok(()) => {
                self.warned = false;
                self.flushes += 1;
            }
            Err(e) if !self.warned => {
                self.warned = true;
                tracing::warn!(error = %e, "flushing the SQLite database file failed; the checkpoint that completes will sync it");
            }
            Err(_) => {}
        }
    }
}
