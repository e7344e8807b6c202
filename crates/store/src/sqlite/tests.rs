//! Tests of the SQLite backend's parts.

use super::checkpointer::*;
use super::conn::*;
use super::readers::*;
use super::writer::*;
use super::*;
use crate::dialect::Dialect;
use crate::exec::args;
use crate::exec::{Exec, RowGet};
use rusqlite::Connection;

/// Long enough that only a counted commit ends a snapshot in a test.
const HOUR: Duration = Duration::from_secs(3600);

fn memory() -> SyncConn {
    SyncConn::new(Connection::open_in_memory().unwrap())
}

/// The shared SQL relies on this: `$N` binds argument N wherever it appears.
#[tokio::test]
async fn dollar_n_placeholders_bind_by_number() {
    let mut c = memory();
    let row = c
        .opt("SELECT $2, $1, $2 || $1", args!["one", "two"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.text(0).unwrap(), "two");
    assert_eq!(row.text(1).unwrap(), "one");
    assert_eq!(row.text(2).unwrap(), "twoone");
    // Too few arguments is an error, not a NULL.
    assert!(c.opt("SELECT $1, $2", args!["one"]).await.is_err());
}

#[tokio::test]
async fn values_round_trip_and_types_are_checked() {
    let mut c = memory();
    c.exec("CREATE TABLE t (a TEXT, b INTEGER, c BLOB, d TEXT)", &[])
        .await
        .unwrap();
    let n = c
        .exec(
            "INSERT INTO t VALUES ($1, $2, $3, $4)",
            args!["x", 7_i64, &b"\x00\xff"[..], None::<&str>],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let rows = c.all("SELECT a, b, c, d FROM t", &[]).await.unwrap();
    let r = &rows[0];
    assert_eq!(r.text(0).unwrap(), "x");
    assert_eq!(r.int(1).unwrap(), 7);
    assert_eq!(r.blob(2).unwrap(), vec![0, 0xff]);
    assert_eq!(r.opt_text(3).unwrap(), None);
    assert!(matches!(r.text(3), Err(StoreError::Corrupt(_))));
    assert!(matches!(r.int(0), Err(StoreError::Corrupt(_))));
    assert!(matches!(r.text(9), Err(StoreError::Corrupt(_))));
    // RETURNING through exec still counts the change.
    let n = c
        .exec("UPDATE t SET b = b + 1 RETURNING b", &[])
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(
        c.opt("SELECT a FROM t WHERE b = 99", &[])
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn constraint_errors_map_to_conflicts() {
    let mut c = memory();
    c.exec(
        "CREATE TABLE u (k TEXT PRIMARY KEY, v TEXT NOT NULL UNIQUE)",
        &[],
    )
    .await
    .unwrap();
    c.exec("INSERT INTO u VALUES ('a', 'b')", &[])
        .await
        .unwrap();
    let dup = c.exec("INSERT INTO u VALUES ('a', 'c')", &[]).await;
    assert!(matches!(dup, Err(StoreError::Conflict("already exists"))));
    let dup = c.exec("INSERT INTO u VALUES ('z', 'b')", &[]).await;
    assert!(matches!(dup, Err(StoreError::Conflict("already exists"))));
    let null = c.exec("INSERT INTO u VALUES ('y', NULL)", &[]).await;
    assert!(matches!(
        null,
        Err(StoreError::Conflict("violates a table constraint"))
    ));
    let bad = c.exec("SELECT * FROM missing_table", &[]).await;
    assert!(matches!(bad, Err(StoreError::Unavailable(_))));
}

/// Every lookup by fingerprint goes through the prefix index (migration 0009), never
/// along an account's cards, which would read a million rows per tokenization and
/// still pass every other test.
#[tokio::test]
async fn card_lookups_use_the_prefix_index_or_the_row_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let store = SqliteStore::open(&path, 1).await.unwrap();
    store.close().await;
    let c = Connection::open(&path).unwrap();
    for sql in crate::sql::FINGERPRINT_LOOKUPS {
        let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = std::iter::repeat_n(rusqlite::types::Null, st.parameter_count());
        let plan: Vec<String> = st
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            plan.first().map(String::as_str),
            Some("SEARCH cards USING INDEX cards_fp_prefix (<expr>=?)"),
            "{sql}: {plan:?}"
        );
        assert!(plan.iter().all(|l| !l.starts_with("SCAN")), "{plan:?}");
    }
    // A read by id at the row id the id gives walks the table alone.
    let sql = format!("EXPLAIN QUERY PLAN {}", crate::sql::GET_CARD_AT);
    let plan: String = c
        .query_row(&sql, rusqlite::params![1, 2, 3, 4], |r| r.get(3))
        .unwrap();
    assert_eq!(plan, "SEARCH cards USING INTEGER PRIMARY KEY (rowid=?)");
}

/// A database at `path` in WAL mode with one table `t (x BLOB)`, and a writer on it.
fn wal_writer(path: &Path) -> SyncConn {
    Connection::open(path)
        .unwrap()
        .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x BLOB);")
        .unwrap();
    SyncConn::open(path, Role::Writer).unwrap()
}

/// The writer keeps statement journals (and any temporary table) in memory, never in
/// a temporary file (2 = `MEMORY`).
#[test]
fn the_writer_journals_statements_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let w = wal_writer(&dir.path().join("t.db"));
    let mode: i64 = w
        .conn
        .query_row("PRAGMA temp_store", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 2);
    let r = SyncConn::open(&dir.path().join("t.db"), Role::Reader).unwrap();
    let mode: i64 = r
        .conn
        .query_row("PRAGMA temp_store", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 0, "readers keep the default");
}

/// The writer's cache is small while the database is small, and grows once it passes
/// the threshold, noticed at the next periodic look.
#[tokio::test]
async fn the_writer_cache_grows_with_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut w = wal_writer(&path);
    let mut cache = WriterCache {
        threshold: 64 * 4096,
        ..WriterCache::default()
    };
    cache.set(&w.conn);
    assert_eq!(WriterCache::kib(&w.conn), WRITER_CACHE_SMALL_KIB);
    let page = vec![7u8; 4000];
    for _ in 0..100 {
        w.exec("INSERT INTO t VALUES ($1)", args![&page])
            .await
            .unwrap();
    }
    // Looked at every WRITER_CACHE_CHECK_EVERY batches only.
    for _ in 1..WRITER_CACHE_CHECK_EVERY {
        cache.after_batch(&w.conn);
    }
    assert_eq!(WriterCache::kib(&w.conn), WRITER_CACHE_SMALL_KIB);
    cache.after_batch(&w.conn);
    assert!(cache.large);
    assert_eq!(WriterCache::kib(&w.conn), WRITER_CACHE_LARGE_KIB);
    // And it stays large.
    cache.set(&w.conn);
    assert_eq!(WriterCache::kib(&w.conn), WRITER_CACHE_LARGE_KIB);
}

/// Background checkpoints copy the WAL without the writer; the writer's finishing
/// checkpoint lets the next write start the WAL over, so it does not grow.
#[tokio::test]
async fn the_wal_is_checkpointed_off_the_writer_and_starts_over() {
    use group::WriterConn as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let wal = dir.path().join("t.db-wal");
    let mut w = wal_writer(&path);
    let page = vec![7u8; 4000];
    for _ in 0..200 {
        w.exec("INSERT INTO t VALUES ($1)", args![&page])
            .await
            .unwrap();
    }
    // Nothing copied by the writer itself.
    assert!(size(&wal) > 200 * 4096, "autocheckpoint is not off");
    assert!(size(&path) < 100 * 4096);

    let state = Arc::new(CheckpointState::default());
    let (wake, woken) = std_mpsc::sync_channel(1);
    let ck = SyncConn::open(&path, Role::Checkpointer).unwrap();
    let st = state.clone();
    let db_file = std::fs::File::open(&path).unwrap();
    let readers = Arc::new(Readers::new(&path, 4, SNAPSHOT_AGE, SNAPSHOT_AGE).unwrap());
    let rd = readers.clone();
    let t = std::thread::spawn(move || checkpointer(ck, &db_file, woken, st, rd));
    let mut owned = SqliteWriter {
        conn: w,
        ckpt: state.clone(),
        wake,
        cache: WriterCache::default(),
        readers: readers.clone(),
        version: None,
    };
    owned.done(); // wakes the checkpointer
    // Stop it (it checkpoints on the way out), keeping the writer.
    let SqliteWriter {
        mut conn,
        ckpt,
        wake,
        ..
    } = owned;
    drop(wake);
    t.join().unwrap();
    assert!(size(&path) > 200 * 4000, "the checkpointer copied nothing");

    // Copied, so the writer's next write starts the WAL over.
    conn.exec("INSERT INTO t VALUES ($1)", args![&page])
        .await
        .unwrap();
    let probe = SyncConn::open(&path, Role::Checkpointer).unwrap();
    let (frames, _) = probe.checkpoint().unwrap();
    assert!(frames < 10, "the WAL did not start over: {frames} frames");

    // The finish flag: the writer copies the rest itself between batches, although
    // idle readers keep snapshots: one from before the batch (which would stop the
    // copy short) and one from after it (which would stop the WAL starting over).
    for _ in 0..5 {
        conn.exec("INSERT INTO t VALUES ($1)", args![&page])
            .await
            .unwrap();
    }
    let count = "SELECT count(*) FROM t";
    let (mut a, mut b) = (
        readers.get(MustSee::Data).unwrap(),
        readers.get(MustSee::Data).unwrap(),
    );
    a.opt(count, &[]).await.unwrap();
    b.opt(count, &[]).await.unwrap();
    drop((a, b));
    for _ in 0..50 {
        conn.exec("INSERT INTO t VALUES ($1)", args![&page])
            .await
            .unwrap();
    }
    let (wake, _woken) = std_mpsc::sync_channel(1);
    let mut owned = SqliteWriter {
        conn,
        ckpt: ckpt.clone(),
        wake,
        cache: WriterCache::default(),
        readers: readers.clone(),
        version: None,
    };
    owned.committed(true); // as the group commit does
    readers
        .get(MustSee::Data)
        .unwrap()
        .opt(count, &[])
        .await
        .unwrap();
    let kept = |r: &Readers| {
        let idle = r.idle.lock().unwrap();
        idle.iter().filter(|c| c.snapshot.is_some()).count()
    };
    assert_eq!(
        kept(&readers),
        2,
        "idle readers do not keep their snapshots"
    );
    let before = size(&path);
    ckpt.finish.store(true, Ordering::Release);
    owned.done();
    assert!(!ckpt.finish.load(Ordering::Acquire));
    assert_eq!(kept(&readers), 0, "the writer left readers' snapshots open");
    let SqliteWriter { mut conn, .. } = owned;
    conn.exec("INSERT INTO t VALUES ($1)", args![&page])
        .await
        .unwrap();
    let (frames, _) = probe.checkpoint().unwrap();
    assert!(frames < 10, "the WAL did not start over: {frames} frames");
    assert!(
        size(&path) >= before + 50 * 4000,
        "the writer did not checkpoint"
    );
}

/// The writer wakes the checkpointer once per run, not once per batch: batches that land
/// while a run is coming send nothing, and the run copies them; a batch after the run
/// has started wakes the next one.
#[tokio::test]
async fn the_writer_wakes_the_checkpointer_once_per_run() {
    use group::WriterConn as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let conn = wal_writer(&path);
    let state = Arc::new(CheckpointState::default());
    let (wake, woken) = std_mpsc::sync_channel(1);
    let readers = Arc::new(Readers::new(&path, 4, SNAPSHOT_AGE, SNAPSHOT_AGE).unwrap());
    let mut owned = SqliteWriter {
        conn,
        ckpt: state.clone(),
        wake,
        cache: WriterCache::default(),
        readers: readers.clone(),
        version: None,
    };
    let page = vec![7u8; 4000];
    async fn insert(w: &mut SqliteWriter, page: &[u8], rows: usize) {
        for _ in 0..rows {
            let sql = "INSERT INTO t VALUES ($1)";
            w.conn.exec(sql, args![page]).await.unwrap();
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let until = async |what: &str, ok: &dyn Fn() -> bool| {
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    // No checkpointer yet: the first batch sends the one wake-up, the rest find a run
    // coming and send none (a second send would find the channel full and be lost, so
    // the count of queued wake-ups cannot tell; the flag can).
    for i in 0..100 {
        insert(&mut owned, &page, 1).await;
        owned.done();
        assert!(
            state.woken.load(Ordering::Acquire),
            "batch {i}: no run is coming"
        );
    }
    assert!(woken.try_recv().is_ok(), "the first batch sent no wake-up");
    assert!(woken.try_recv().is_err());
    owned.wake.try_send(()).unwrap(); // the wake-up, as the checkpointer would find it

    let ck = SyncConn::open(&path, Role::Checkpointer).unwrap();
    let db_file = std::fs::File::open(&path).unwrap();
    let (st, rd) = (state.clone(), readers.clone());
    let t = std::thread::spawn(move || checkpointer(ck, &db_file, woken, st, rd));
    // The run copies the batches that sent nothing.
    until("nothing was copied", &|| size(&path) >= 100 * 4000).await;
    // The run has started, so the next batch wakes the next run, which copies it.
    let started = || !state.woken.load(Ordering::Acquire);
    until("the run never started", &started).await;
    let copied = size(&path);
    insert(&mut owned, &page, 50).await;
    owned.done();
    assert!(state.woken.load(Ordering::Acquire));
    let again = || size(&path) >= copied + 50 * 4000;
    until("a batch after the run woke nothing", &again).await;
    drop(owned);
    t.join().unwrap();
}

/// Past the WAL threshold, the checkpointer copies and flushes again until a round
/// copies little, and only then asks the writer to finish; below it, never.
#[tokio::test]
async fn a_write_is_seen_once_answered_by_a_reader_that_kept_its_snapshot() {
    use crate::VaultStore as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = SqliteStore::start(&path, 2, HOUR).await.unwrap();
    let store = crate::Store::Sqlite(s.clone());
    let mut acct = crate::AccountRecord {
        id: "acct_1".into(),
        name: "A".into(),
        otp_delivery_url: None,
        created_ms: 1,
    };
    assert!(store.get_account(&acct.id).await.unwrap().is_none());
    #[allow(clippy::disallowed_methods)] // a store test: no request, no audit scope
    store
        .unaudited()
        .create_account(&acct, &[], &[])
        .await
        .unwrap();
    let name = |a: Option<crate::AccountRecord>| a.map(|a| a.name);
    assert_eq!(
        name(store.get_account(&acct.id).await.unwrap()).as_deref(),
        Some("A")
    );
    async fn renamed(
        store: &crate::Store,
        acct: &mut crate::AccountRecord,
        to: &str,
    ) -> Option<String> {
        acct.name = to.into();
        #[allow(clippy::disallowed_methods)] // a store test: no request, no audit scope
        let renamed = store.unaudited().update_account(acct).await.unwrap();
        assert!(renamed);
        store.get_account(&acct.id).await.unwrap().map(|a| a.name)
    }
    assert_eq!(
        renamed(&store, &mut acct, "B").await.as_deref(),
        Some("B"),
        "a reader's kept snapshot hid an answered write"
    );

    // An audit record appended alone leaves the data readers' snapshots in use, but
    // the audit trail's reads see it as soon as it is answered.
    use crate::AuditStore as _;
    fn chain(prev: &[u8; 32], rec: &[u8]) -> [u8; 32] {
        let mut h = *prev;
        h[0] = h[0].wrapping_add(u8::try_from(rec.len() % 251).unwrap());
        h
    }
    let rec = crate::AuditRecord {
        action: "card.get".into(),
        ..Default::default()
    };
    let (before, _) = store.audit_head().await.unwrap();
    let head = store.append_audit(vec![rec.clone()], chain).await.unwrap();
    assert_eq!(head, before + 1);
    assert_eq!(
        store.audit_head().await.unwrap().0,
        head,
        "an audit read missed an answered audit append"
    );
    let listed = store
        .list_audit(&crate::AuditQuery {
            after_seq: Some(before),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].action, "card.get");
    // A data write after audit appends is seen by the next read.
    store.append_audit(vec![rec], chain).await.unwrap();
    assert_eq!(
        renamed(&store, &mut acct, "C").await.as_deref(),
        Some("C"),
        "a reader's kept snapshot hid an answered write after an audit append"
    );
    s.close().await;
}

/// Two servers on one database file, with the ages `strongroom dev` uses: a data read
/// on one keeps its snapshot across its own writer's commits of audit records alone,
/// but not past the other's data write, which its writer finds when it next looks.
#[tokio::test]
async fn a_kept_snapshot_ends_when_the_writer_finds_another_servers_write() {
    use crate::{AuditStore as _, VaultStore as _};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let a = SqliteStore::open(&path, 2).await.unwrap();
    let b = SqliteStore::open(&path, 2).await.unwrap();
    let (store_a, store_b) = (
        crate::Store::Sqlite(a.clone()),
        crate::Store::Sqlite(b.clone()),
    );
    let mut acct = crate::AccountRecord {
        id: "acct_1".into(),
        name: "A".into(),
        otp_delivery_url: None,
        created_ms: 1,
    };
    #[allow(clippy::disallowed_methods)] // a store test: no request, no audit scope
    store_a
        .unaudited()
        .create_account(&acct, &[], &[])
        .await
        .unwrap();
    let rec = crate::AuditRecord {
        action: "account.get".into(),
        ..Default::default()
    };
    fn chain(prev: &[u8; 32], _rec: &[u8]) -> [u8; 32] {
        *prev
    }
    let name = |a: Option<crate::AccountRecord>| a.map(|a| a.name);
    // b's writer looks once (its first look counts as a find), then b's reader takes a
    // snapshot that holds a's account.
    store_b
        .append_audit(vec![rec.clone()], chain)
        .await
        .unwrap();
    assert_eq!(
        name(store_b.get_account(&acct.id).await.unwrap()).as_deref(),
        Some("A")
    );
    // b's own audit-only commits, and its looks that find nothing, leave the data count
    // (so the snapshot) alone.
    let data = b.readers.counts().data;
    store_b
        .append_audit(vec![rec.clone()], chain)
        .await
        .unwrap();
    assert_eq!(
        b.readers.counts().data,
        data,
        "a look found a write nobody made"
    );
    assert!(
        b.readers.looked_at.load(Ordering::Acquire) > 0,
        "the writer never looked"
    );

    acct.name = "B".into();
    #[allow(clippy::disallowed_methods)] // a store test: no request, no audit scope
    let renamed = store_a.unaudited().update_account(&acct).await.unwrap();
    assert!(renamed);
    store_b.append_audit(vec![rec], chain).await.unwrap();
    assert!(
        b.readers.counts().data > data,
        "b's writer did not find a's write"
    );
    assert_eq!(
        name(store_b.get_account(&acct.id).await.unwrap()).as_deref(),
        Some("B"),
        "b's reader kept a snapshot from before a's answered write"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn a_reader_keeps_its_snapshot_until_the_writer_counts_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut w = wal_writer(&path);
    // Long enough that only a counted commit ends a snapshot in this test.
    let mut readers = Readers::new(&path, 4, HOUR, HOUR).unwrap();
    async fn rows(readers: &Readers, sees: MustSee) -> i64 {
        let mut r = readers.get(sees).unwrap();
        let row = r.opt("SELECT count(*) FROM t", &[]).await.unwrap();
        row.unwrap().int(0).unwrap()
    }
    assert_eq!(rows(&readers, MustSee::Data).await, 0);
    let insert = "INSERT INTO t VALUES (x'00')";
    w.exec(insert, &[]).await.unwrap();
    // Not counted yet (its writes are not answered yet): the kept snapshot serves.
    assert_eq!(
        rows(&readers, MustSee::Data).await,
        0,
        "the reader did not keep its snapshot"
    );
    readers.committed(true);
    assert_eq!(
        rows(&readers, MustSee::Data).await,
        1,
        "a counted commit is not seen"
    );
    // A stale idle snapshot is ended by a sweep, a current one kept.
    w.exec(insert, &[]).await.unwrap();
    readers.sweep();
    assert!(readers.idle.lock().unwrap()[0].snapshot.is_some());
    readers.committed(true);
    readers.sweep();
    assert!(readers.idle.lock().unwrap()[0].snapshot.is_none());
    assert_eq!(rows(&readers, MustSee::Data).await, 2);

    // A commit of audit records alone: other reads keep their snapshot (and its page
    // cache), the audit trail's reads see it at once, and so does a sweep.
    w.exec(insert, &[]).await.unwrap();
    readers.committed(false);
    assert_eq!(
        rows(&readers, MustSee::Data).await,
        2,
        "an audit-only commit ended a data read's snapshot"
    );
    assert!(
        readers.idle.lock().unwrap()[0].snapshot.is_some(),
        "a snapshot that missed only audit records was not kept while idle"
    );
    assert_eq!(
        rows(&readers, MustSee::All).await,
        3,
        "an audit read did not see an audit-only commit"
    );
    w.exec(insert, &[]).await.unwrap();
    readers.committed(false);
    readers.sweep();
    assert!(
        readers.idle.lock().unwrap()[0].snapshot.is_none(),
        "a sweep left a snapshot from before an audit-only commit"
    );
    assert_eq!(rows(&readers, MustSee::Data).await, 4);
    // A data commit after audit-only ones is seen by both.
    w.exec(insert, &[]).await.unwrap();
    readers.committed(true);
    assert_eq!(rows(&readers, MustSee::Data).await, 5);
    w.exec(insert, &[]).await.unwrap();
    readers.committed(true);
    assert_eq!(rows(&readers, MustSee::All).await, 6);

    // And past its age a snapshot is not reused, counted or not.
    readers.max_age = Duration::ZERO;
    w.exec(insert, &[]).await.unwrap();
    assert_eq!(
        rows(&readers, MustSee::All).await,
        7,
        "a snapshot outlived its age"
    );
    w.exec(insert, &[]).await.unwrap();
    assert_eq!(
        rows(&readers, MustSee::Data).await,
        8,
        "a snapshot outlived its age"
    );
}

#[tokio::test]
async fn the_checkpointer_asks_the_writer_to_finish_only_after_a_short_round() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut w = wal_writer(&path);
    let page = vec![7u8; 4000];
    // 300 rows, each its own commit: 300–600 WAL frames. Each fill follows a complete
    // copy, so the WAL starts over.
    let mut fill = async || {
        for _ in 0..300 {
            w.exec("INSERT INTO t VALUES ($1)", args![&page])
                .await
                .unwrap();
        }
    };
    let ck = SyncConn::open(&path, Role::Checkpointer).unwrap();
    let db_file = std::fs::File::open(&path).unwrap();
    let state = CheckpointState::default();
    let mut flush = Flush::new(&db_file);
    let at = |frames, left, rounds| FinishAt {
        frames,
        left,
        rounds,
    };
    let asked = || state.finish.swap(false, Ordering::AcqRel);

    // A short WAL: copied and flushed, the writer left alone.
    fill().await;
    round(&ck, &mut flush, &state, at(10_000, 512, FINISH_AT.rounds)).unwrap();
    assert!(flush.copied >= 300, "copied {}", flush.copied);
    assert_eq!(flush.flushes, 1, "the copied pages are flushed once");
    assert!(!asked());
    // Nothing copied since: no flush.
    flush.after(flush.copied);
    assert_eq!(flush.flushes, 1);

    // A long WAL whose first round copies more than `left`: a second round copies
    // nothing new, and that short round asks the writer.
    fill().await;
    round(&ck, &mut flush, &state, at(100, 100, FINISH_AT.rounds)).unwrap();
    assert!(flush.copied >= 300, "copied {}", flush.copied);
    assert_eq!(flush.flushes, 2, "the new WAL's copy is flushed");
    assert!(asked());

    // With a single round, a long first copy does not ask the writer yet...
    fill().await;
    round(&ck, &mut flush, &state, at(250, 100, 1)).unwrap();
    assert!(!asked());

    // ...unless the WAL is past four times the threshold.
    fill().await;
    round(&ck, &mut flush, &state, at(50, 100, 1)).unwrap();
    assert!(asked());
}

/// A batch is answered before the writer turns to what `done` does between batches
/// (at times its own checkpoint, milliseconds long): a durable write does not wait.
#[tokio::test]
async fn a_batch_is_answered_before_the_writer_moves_on() {
    struct Gate {
        conn: SyncConn,
        held: std_mpsc::Receiver<()>,
    }
    impl group::WriterConn for Gate {
        type C = SyncConn;
        async fn get(&mut self) -> StoreResult<&mut SyncConn> {
            Ok(&mut self.conn)
        }
        fn done(&mut self) {
            // Held until the test has its answer (or gave up waiting).
            self.held.recv_timeout(Duration::from_secs(30)).ok();
        }
        fn dialect(&self) -> &'static dyn Dialect {
            &super::conn::Sqlite
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    SqliteStore::open(&path, 1).await.unwrap().close().await;
    let conn = SyncConn::open(&path, Role::Writer).unwrap();
    let (release, held) = std_mpsc::channel();
    let (tx, rx) = mpsc::channel(8);
    let writer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(group::writer(Gate { conn, held }, rx));
    });
    let op = WriteOp::RevokeApiKey {
        account_id: None,
        key_id: "key_missing".into(),
        now_ms: 1,
        events: Vec::new(),
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), group::write(&tx, op)).await;
    release.send(()).unwrap();
    drop(tx);
    writer.join().unwrap();
    assert!(
        matches!(answer, Ok(Ok(WriteReply::ApiKey(None)))),
        "no answer while the writer was held after the batch"
    );
}

/// `close` returns only when the writer's connection is closed: a writer that takes its
/// time closing still has closed when the store's `close` answers. (The writer used to
/// answer first and close after, so the last connection's close, which removes the WAL
/// file, could land after `close` had returned, under a caller reading the files.)
#[tokio::test]
async fn close_returns_after_the_writer_has_closed() {
    struct Slow {
        conn: SyncConn,
        closed: Arc<std::sync::atomic::AtomicBool>,
    }
    impl group::WriterConn for Slow {
        type C = SyncConn;
        async fn get(&mut self) -> StoreResult<&mut SyncConn> {
            Ok(&mut self.conn)
        }
        fn dialect(&self) -> &'static dyn Dialect {
            &super::conn::Sqlite
        }
        async fn close(self) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.conn.conn.close().ok();
            self.closed.store(true, Ordering::SeqCst);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    SqliteStore::open(&path, 1).await.unwrap().close().await;
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let conn = SyncConn::open(&path, Role::Writer).unwrap();
    let (tx, rx) = mpsc::channel(8);
    let slow = Slow {
        conn,
        closed: closed.clone(),
    };
    group::spawn_thread("slow-writer", group::writer(slow, rx)).unwrap();
    group::stop(&tx).await;
    assert!(closed.load(Ordering::SeqCst), "answered before closing");

    // And the store's own: after a write and `close`, no connection is left open, so
    // the WAL file is gone.
    let store = SqliteStore::open(&path, 4).await.unwrap();
    let op = WriteOp::RevokeApiKey {
        account_id: None,
        key_id: "key_missing".into(),
        now_ms: 1,
        events: Vec::new(),
    };
    group::write(&store.writer, op).await.unwrap();
    assert!(dir.path().join("t.db-wal").exists());
    store.close().await;
    assert!(
        !dir.path().join("t.db-wal").exists(),
        "a connection is still open"
    );
}
