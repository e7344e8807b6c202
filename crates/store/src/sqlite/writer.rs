//! The writer's connection: owned by the writer thread for the life of the store; it
//! counts commits for the readers, sizes its page cache and finishes checkpoints.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;

use rusqlite::Connection;

use super::checkpointer::CheckpointState;
use super::conn::{SyncConn, sq_err};
use super::readers::Readers;
use crate::StoreResult;
use crate::dialect::Dialect;
use crate::group;

/// The writer's one connection, owned for the life of the store, and its line to the
/// checkpointer.
pub(super) struct SqliteWriter {
    pub(super) conn: SyncConn,
    pub(super) ckpt: Arc<CheckpointState>,
    pub(super) wake: std_mpsc::SyncSender<()>,
    pub(super) cache: WriterCache,
    pub(super) readers: Arc<Readers>,
    /// `PRAGMA data_version` at the writer's last look ([`SqliteWriter::look`]).
    pub(super) version: Option<i64>,
}

impl SqliteWriter {
    /// Looks for commits by other connections to the file (another server sharing it)
    /// since the last look, and tells the readers: `PRAGMA data_version` changes on the
    /// writer's connection when, and only when, another connection has committed. The
    /// first look counts as finding some, since nothing before it was looked at. Costs a
    /// microsecond or two (no I/O: the WAL index is in shared memory).
    pub(super) fn look(&mut self) {
        // Inside a transaction (a batch whose end failed) it would answer as of its start.
        if !self.conn.conn.is_autocommit() {
            return;
        }
        let at = self.readers.now_us();
        let version = self
            .conn
            .conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)));
        match version {
            Ok(v) => {
                let found = self.version.replace(v) != Some(v);
                self.readers.looked(at, found);
            }
            // Without a look the readers keep to the short age.
            Err(e) => tracing::warn!(error = %e, "SQLite data_version failed"),
        }
    }
}

/// The writer's page-cache size, which depends on the database's size because of a SQLite
/// quirk.
///
/// When a B-tree rebalance puts sibling pages in order (`balance_nonroot`), SQLite swaps
/// page numbers through the pending-byte page, the page at 1 GiB (262,145 with 4 KiB
/// pages). The page cache then believes it holds a page past the end of the database, and
/// the truncate at the end of that transaction (`pcache1TruncateUnsafe`) walks every page
/// in the writer's cache, a cache miss each. Inserts into the fingerprint index land on
/// random leaves, so almost every group commit rebalances somewhere, and with a large
/// cache the walk became a large share of the writer's CPU during tokenize. Once the
/// database is larger than 1 GiB the swap page lies inside it and the walk never happens.
///
/// So the cache is 4 MiB while the database is under 1 GiB: enough for the B-tree
/// interiors, the append points of every table and a batch's dirty pages; the
/// fingerprint-index leaves come from the OS page cache, a `pread` each, and the walk is
/// short. Beyond 1 GiB it is 128 MiB, which holds the fingerprint index of a million
/// cards, so tokenize slows less as the vault grows. Figures: BENCHMARKS.md, "SQLite
/// settings".
#[derive(Debug)]
pub(super) struct WriterCache {
    pub(super) large: bool,
    pub(super) batches: u32,
    /// Bytes past which the cache is large: [`PENDING_BYTE`] (smaller in tests).
    pub(super) threshold: i64,
}

impl Default for WriterCache {
    fn default() -> Self {
        Self {
            large: false,
            batches: 0,
            threshold: PENDING_BYTE,
        }
    }
}

/// The cache while the database is under 1 GiB, and beyond (KiB, as `cache_size` takes).
pub(super) const WRITER_CACHE_SMALL_KIB: i64 = 4 * 1024;
pub(super) const WRITER_CACHE_LARGE_KIB: i64 = 128 * 1024;
/// SQLite's pending byte: the page holding it is the one `balance_nonroot` swaps through.
pub(super) const PENDING_BYTE: i64 = 0x4000_0000;
/// Batches between two looks at the database's size (a batch adds at most a few hundred
/// pages, so the large cache comes at most a few hundred MiB late).
pub(super) const WRITER_CACHE_CHECK_EVERY: u32 = 1024;

impl WriterCache {
    /// Counts a batch; every [`WRITER_CACHE_CHECK_EVERY`] batches, sizes the cache again.
    pub(super) fn after_batch(&mut self, conn: &Connection) {
        self.batches = self.batches.wrapping_add(1);
        if self.batches.is_multiple_of(WRITER_CACHE_CHECK_EVERY) {
            self.set(conn);
        }
    }

    /// Sizes the cache for the database as it is now (once large, it stays large).
    pub(super) fn set(&mut self, conn: &Connection) {
        if self.large {
            return;
        }
        let size = conn.query_row(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            [],
            |r| r.get::<_, i64>(0),
        );
        let large = match size {
            Ok(bytes) => bytes > self.threshold,
            Err(e) => {
                tracing::warn!(error = %sq_err(e), "cannot read the database's size");
                false
            }
        };
        let kib = if large {
            WRITER_CACHE_LARGE_KIB
        } else {
            WRITER_CACHE_SMALL_KIB
        };
        match conn.execute_batch(&format!("PRAGMA cache_size = -{kib}")) {
            Ok(()) if large => {
                self.large = true;
                tracing::info!(
                    cache_kib = kib,
                    "the database is past 1 GiB: the writer's page cache is now large"
                );
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %sq_err(e), "cannot size the writer's page cache"),
        }
    }

    /// The cache size now, in KiB (for tests).
    #[cfg(test)]
    pub(super) fn kib(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA cache_size", [], |r| r.get::<_, i64>(0))
            .map(|n| -n)
            .unwrap_or(0)
    }
}

impl group::WriterConn for SqliteWriter {
    type C = SyncConn;
    async fn get(&mut self) -> StoreResult<&mut SyncConn> {
        Ok(&mut self.conn)
    }
    fn committed(&mut self, data: bool) {
        self.readers.committed(data);
        // Before the answers, so that a write answered by this store was looked for by
        // the time its answer arrives (a microsecond or two).
        self.look();
    }
    fn done(&mut self) {
        self.cache.after_batch(&self.conn.conn);
        if self.ckpt.finish.swap(false, Ordering::AcqRel) {
            // The checkpointer has copied most of the WAL but cannot catch up while
            // batches keep landing: copy the rest now, between batches, so the next
            // batch starts the WAL over instead of growing it. Readers' snapshots from
            // before the last commit would stop the copy short; those from after it use
            // the WAL too, and would stop it starting over, so they are expired after it.
            self.readers.sweep();
            if let Err(e) = self.conn.checkpoint() {
                tracing::warn!(error = %e, "SQLite checkpoint failed");
            }
            self.readers.expire();
        }
        // A full channel means the checkpointer has a wake-up pending already.
        if self.ckpt.wanted() {
            self.wake.try_send(()).ok();
        }
    }
    async fn close(self) {
        let Self { conn, wake, .. } = self;
        // Tells the checkpointer to stop (after a last checkpoint).
        drop(wake);
        if let Err((_, e)) = conn.conn.close() {
            tracing::warn!(error = %sq_err(e), "closing the SQLite writer connection failed");
        }
    }
    fn dialect(&self) -> &'static dyn Dialect {
        &super::conn::Sqlite
    }
}
