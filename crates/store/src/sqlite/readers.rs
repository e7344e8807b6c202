//! The read connections: a pool of read-only connections that keep their snapshots while
//! nothing a read must see has been committed since.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::conn::{Counts, MustSee, Role, SyncConn};
use crate::StoreResult;
use crate::group;

/// How long a reader keeps one read transaction at most, unless the writer has lately
/// looked for other connections' commits ([`DATA_SNAPSHOT_AGE`]). The writer's counts of
/// commits ([`Readers::commits`]) decide whether a kept snapshot holds every write this
/// store acknowledged; this bounds how long a write by anything other than this store's
/// writer (another server on the same file, the audit tamper tests) can go unseen.
pub(super) const SNAPSHOT_AGE: Duration = Duration::from_millis(2);
/// How long a read other than the audit trail's ([`MustSee::Data`]) may keep its snapshot
/// while the writer looks for other connections' commits after every batch
/// ([`Readers::looked`]) and last did so less than [`SNAPSHOT_AGE`] ago: a write by
/// another server then still goes unseen for [`SNAPSHOT_AGE`] at most. Under load the
/// writer commits about a thousand batches a second, nearly all of read records alone,
/// so a snapshot lives until the next data write or this age. The age alone, without the
/// writer's look, let a node miss the other's new transport key in the two-node tests.
/// Figures: BENCHMARKS.md, "SQLite settings".
pub(super) const DATA_SNAPSHOT_AGE: Duration = Duration::from_millis(100);

/// The read connections: opened on demand, kept for reuse, dropped on close.
///
/// Each keeps its read transaction (its snapshot) from one use to the next while the
/// writer has committed nothing since it began that the read must see ([`MustSee`],
/// [`Readers::commits`]), for at most [`SNAPSHOT_AGE`], or [`DATA_SNAPSHOT_AGE`] for
/// data reads while the writer keeps looking for other connections' commits
/// ([`Readers::age`]). SQLite empties a reader's page cache when it begins a transaction
/// after another connection's commit, and under load the writer commits about a thousand
/// times a second (every request's audit record is a write): with a new transaction per
/// read, a get read all seven of its B-tree pages again at a million cards. A kept
/// snapshot keeps the pages that successive lookups share (figures: BENCHMARKS.md,
/// "SQLite settings").
#[derive(Debug)]
pub(super) struct Readers {
    pub(super) path: PathBuf,
    pub(super) idle: Mutex<Vec<SyncConn>>,
    /// Idle connections kept for reuse. Reads never wait inside a connection (they run
    /// to the end synchronously), so no more are open at once than threads reading;
    /// this bounds what a burst of blocking threads leaves behind.
    pub(super) max_idle: usize,
    pub(super) closed: AtomicBool,
    /// Batches the writer has committed. Bumped after `COMMIT` and before any of the
    /// batch's writes is answered, so a reader whose snapshot began at the current count
    /// sees every acknowledged write.
    pub(super) commits: AtomicU64,
    /// Of those, the batches that held more than audit records appended alone; bumped
    /// with (and before) `commits`.
    pub(super) data: AtomicU64,
    /// How long a reader keeps one snapshot at most ([`SNAPSHOT_AGE`]).
    pub(super) max_age: Duration,
    /// How long a data read keeps one while the writer looks ([`DATA_SNAPSHOT_AGE`]).
    pub(super) data_age: Duration,
    /// When the writer last began to look for other connections' commits, in
    /// microseconds since `epoch`, plus one (0: never). Any it found were counted as data
    /// commits before this was stored.
    pub(super) looked_at: AtomicU64,
    pub(super) epoch: Instant,
}

impl Readers {
    /// A pool for the database at `path` (which must exist), with one reader open, whose
    /// snapshots serve for at most `max_age`, or `data_age` for data reads while the
    /// writer looks for other connections' commits.
    pub(super) fn new(
        path: &Path,
        max_idle: usize,
        max_age: Duration,
        data_age: Duration,
    ) -> StoreResult<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            idle: Mutex::new(vec![SyncConn::open(path, Role::Reader)?]),
            max_idle: max_idle.max(1),
            closed: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            data: AtomicU64::new(0),
            max_age,
            data_age: data_age.max(max_age),
            looked_at: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Microseconds since `epoch`.
    pub(super) fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// How long a read which `sees` may keep a snapshot now. Read before the counts, so
    /// that a data commit the writer found in its last look is in them.
    pub(super) fn age(&self, sees: MustSee) -> Duration {
        let looked = self.looked_at.load(Ordering::Acquire);
        let recent = looked != 0
            && u128::from(self.now_us().saturating_sub(looked - 1)) < self.max_age.as_micros();
        match sees {
            MustSee::Data if recent => self.data_age,
            _ => self.max_age,
        }
    }

    /// The writer began at `at` (from [`Self::now_us`]) to look for other connections'
    /// commits and found some (`found`) or none: every commit before `at` is now counted.
    pub(super) fn looked(&self, at: u64, found: bool) {
        if found {
            self.committed(true);
        }
        self.looked_at
            .store(at.saturating_add(1), Ordering::Release);
    }

    /// The counts as of now. Read before a snapshot begins, they undercount at worst (a
    /// commit counted in one and not yet in the other), which only ends a snapshot early.
    pub(super) fn counts(&self) -> Counts {
        Counts {
            all: self.commits.load(Ordering::Acquire),
            data: self.data.load(Ordering::Acquire),
        }
    }

    /// A read-only connection (an idle one, or a new one) inside a read transaction that
    /// holds every acknowledged write that a read which `sees` must see.
    pub(super) fn get(&self, sees: MustSee) -> StoreResult<Reader<'_>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(group::closed());
        }
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match idle {
            Some(c) => c,
            None => SyncConn::open(&self.path, Role::Reader)?,
        };
        let age = self.age(sees);
        conn.hold(self.counts(), sees, age)?;
        Ok(Reader {
            conn: Some(conn),
            pool: self,
        })
    }

    /// Ends the read transactions that idle readers keep from before the last commit (of
    /// any kind), so that they hold back neither the checkpoint nor the WAL's restart.
    pub(super) fn sweep(&self) {
        let now = self.counts();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain_mut(|c| !c.stale(now, MustSee::All) || c.release().is_ok());
    }

    /// Counts a commit: every snapshot kept from before it is stale for the audit trail's
    /// reads and, if it held more than audit records appended alone (`data`), for all.
    pub(super) fn committed(&self, data: bool) {
        if data {
            self.data.fetch_add(1, Ordering::AcqRel);
        }
        self.commits.fetch_add(1, Ordering::AcqRel);
    }

    /// Makes every kept snapshot stale, as a data commit would, and ends the idle ones.
    pub(super) fn expire(&self) {
        self.committed(true);
        self.sweep();
    }
}

/// A read connection, back to the pool when dropped.
pub(crate) struct Reader<'a> {
    pub(super) conn: Option<SyncConn>,
    pub(super) pool: &'a Readers,
}

impl std::ops::Deref for Reader<'_> {
    type Target = SyncConn;
    fn deref(&self) -> &SyncConn {
        // Taken only by `drop`.
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("reader used after drop"))
    }
}

impl std::ops::DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut SyncConn {
        self.conn
            .as_mut()
            .unwrap_or_else(|| unreachable!("reader used after drop"))
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.pool.closed.load(Ordering::Acquire) {
            return;
        }
        // A snapshot from before the last data commit is of no further use: let it go now
        // rather than hold back the checkpoint while idle. (One that missed only audit
        // records is kept for the next read; the checkpointer's sweep ends it if it is
        // still idle then.) A reader that cannot end its transaction is not reused.
        if conn.stale(self.pool.counts(), MustSee::Data) && conn.release().is_err() {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.pool.max_idle {
            idle.push(conn);
        }
    }
}
