//! The audit scope: records ride on the writes made inside it, in the same transaction.

use std::hash::{BuildHasher, Hasher};

use strongroom_core::IdKind;
use strongroom_store::{
    AuditCheckpoint, AuditRecord, AuditScope, AuditStore, CheckpointLink, Mode, OtpRecord, Store,
};

use crate::{T0, account, id, store_test, writes};

/// A stand-in for SHA-256 (the store never imports the crypto crate): deterministic and
/// order-sensitive, enough to test chaining.
pub(crate) fn test_hash(prev: &[u8; 32], rec: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .build_hasher();
        h.write_usize(i);
        h.write(prev);
        h.write(rec);
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    out
}

pub(crate) fn rec(action: &str) -> AuditRecord {
    AuditRecord {
        time_ms: T0,
        request_id: "req_1".into(),
        actor: "key_1".into(),
        action: action.into(),
        ..AuditRecord::default()
    }
}

fn otp(account_id: &str) -> OtpRecord {
    OtpRecord {
        id: id(IdKind::Otp, T0),
        account_id: account_id.to_owned(),
        mode: Mode::Test,
        purpose: "card.reveal".into(),
        card_id: None,
        api_key_id: "key_0".into(),
        code_digest: vec![5; 32],
        created_ms: T0,
        expires_ms: T0 + 300_000,
        attempts: 0,
        used_ms: None,
    }
}

store_test!(records_ride_on_writes);
async fn records_ride_on_writes(store: Store) {
    let a = account(&store).await; // outside any scope: not audited
    assert_eq!(store.audit_head().await.unwrap().0, 0);

    // A write in a scope carries the request record (marked success) and queued events.
    let scope = AuditScope::new(test_hash, Some(rec("otp.create")));
    scope.event(rec("something.happened"));
    let o = otp(&a);
    store.audited(&scope).insert_otp(&o, &[]).await.unwrap();
    assert!(scope.committed());
    assert_eq!(scope.head(), Some(2));
    let rows = store.audit_range(0, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].action, "something.happened");
    assert_eq!(rows[1].action, "otp.create");
    assert_eq!(rows[1].outcome, "success");
    assert_eq!(
        rows[1].hash,
        test_hash(
            &rows[0].hash.clone().try_into().unwrap(),
            &rows[1].canonical(2)
        )
    );
    // Nothing is left for the final append; a second write carries nothing more.
    assert!(scope.take_pending(|_| {}).is_empty());
    store.audited(&scope).otp_fail(&o.id).await.unwrap();
    assert_eq!(store.audit_head().await.unwrap().0, 2);

    // A write that finds nothing leaves the request record pending (events still go).
    let scope = AuditScope::new(test_hash, Some(rec("card.delete")));
    scope.event(rec("otp.failed"));
    let gone = store
        .audited(&scope)
        .delete_card(&a, Mode::Test, "card_nope", &[])
        .await
        .unwrap();
    assert!(!gone);
    assert!(!scope.committed());
    assert_eq!(store.audit_head().await.unwrap().0, 3);
    let pending = scope.take_pending(|r| r.outcome = "failure".into());
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].action, "card.delete");
    assert_eq!(store.append_audit(pending, test_hash).await.unwrap(), 4);

    // A failed write commits no record and keeps everything pending.
    let scope = AuditScope::new(test_hash, Some(rec("otp.create")));
    scope.event(rec("queued"));
    assert!(store.audited(&scope).insert_otp(&o, &[]).await.is_err()); // same id again
    assert!(!scope.committed());
    assert_eq!(store.audit_head().await.unwrap().0, 4);
    let pending = scope.take_pending(|_| {});
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].action, "queued");

    // Readiness probe leaves nothing behind; checkpoints are kept once per seq.
    store.audit_writable().await.unwrap();
    assert_eq!(store.audit_range(0, 100).await.unwrap().len(), 4);
}

store_test!(a_large_append_is_chained_in_order);
/// One append of 45 records goes in as multi-row inserts (32 + 8 + 5 × 1): every record
/// keeps its place, its sequence number and its chain hash, and the head is the last.
async fn a_large_append_is_chained_in_order(store: Store) {
    let first = store
        .append_audit(vec![rec("before")], test_hash)
        .await
        .unwrap();
    assert_eq!(first, 1);
    let batch: Vec<AuditRecord> = (0..45).map(|i| rec(&format!("bulk.{i}"))).collect();
    assert_eq!(store.append_audit(batch, test_hash).await.unwrap(), 46);
    let rows = store.audit_range(0, 100).await.unwrap();
    assert_eq!(rows.len(), 46);
    let mut prev = [0u8; 32];
    for (i, r) in rows.iter().enumerate() {
        let seq = i64::try_from(i).unwrap() + 1;
        assert_eq!(r.seq, seq);
        let want = if i == 0 {
            "before".to_owned()
        } else {
            format!("bulk.{}", i - 1)
        };
        assert_eq!(r.action, want);
        prev = test_hash(&prev, &r.canonical(seq));
        assert_eq!(r.hash, prev, "hash of record {seq}");
    }
    let (head_seq, head_hash) = store.audit_head().await.unwrap();
    assert_eq!(head_seq, 46);
    assert_eq!(head_hash, prev);
}

store_test!(records_in_any_text_chain_as_the_server_hashes);
/// Fields with multi-byte UTF-8, empty fields, a long one and a negative time: stored and
/// read back as they were, chained over [`AuditRecord::canonical`] (one `UNNEST` statement
/// on PostgreSQL, multi-row inserts on SQLite).
async fn records_in_any_text_chain_as_the_server_hashes(store: Store) {
    let mut odd = rec("card.read");
    odd.resource = "café 漢字 ✓".into();
    odd.route = String::new();
    odd.code = "x".repeat(5000);
    odd.time_ms = -1;
    let mut empty = rec("");
    empty.request_id = String::new();
    empty.account_id = String::new();
    assert_eq!(
        store
            .append_audit(vec![odd, empty], test_hash)
            .await
            .unwrap(),
        2
    );
    let rows = store.audit_range(0, 10).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].resource, "café 漢字 ✓");
    assert_eq!(rows[0].time_ms, -1);
    let mut prev = [0u8; 32];
    for r in &rows {
        prev = test_hash(&prev, &r.canonical(r.seq));
        assert_eq!(r.hash, prev.to_vec(), "record {}", r.seq);
    }
    assert_eq!(store.audit_head().await.unwrap(), (2, prev.to_vec()));
}

store_test!(concurrent_writes_share_one_append_per_batch);
/// Writes queued together are group-committed, and their records appended together at
/// the end of the batch: each scope still learns the head right after its own records,
/// the chain is whole and in order, and a write that fails inside a batch commits no
/// record while the others do.
async fn concurrent_writes_share_one_append_per_batch(store: Store) {
    let a = account(&store).await;
    let dup = otp(&a);
    writes(&store).insert_otp(&dup, &[]).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40_i64 {
        let (store, a, dup) = (store.clone(), a.clone(), dup.clone());
        tasks.push(tokio::spawn(async move {
            let mut r = rec("otp.create");
            r.request_id = format!("req_{i}");
            let scope = AuditScope::new(test_hash, Some(r));
            let mut ev = rec("event");
            ev.request_id = format!("req_{i}");
            scope.event(ev);
            let o = if i == 17 {
                dup // refused: the id exists
            } else {
                OtpRecord {
                    id: id(IdKind::Otp, T0 + 1 + i),
                    ..otp(&a)
                }
            };
            let ok = store.audited(&scope).insert_otp(&o, &[]).await.is_ok();
            if i % 5 == 0 {
                // A standalone append in the same stream of writes.
                let mut extra = rec("read");
                extra.request_id = format!("req_{i}_read");
                store.append_audit(vec![extra], test_hash).await.unwrap();
            }
            (i, ok, scope.head())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let rows = store.audit_range(0, 1000).await.unwrap();
    // 39 writes x 2 records, 8 standalone reads; nothing of the refused write.
    assert_eq!(rows.len(), 39 * 2 + 8);
    let mut prev = [0u8; 32];
    for (n, r) in rows.iter().enumerate() {
        let seq = i64::try_from(n).unwrap() + 1;
        assert_eq!(r.seq, seq);
        prev = test_hash(&prev, &r.canonical(seq));
        assert_eq!(r.hash, prev, "hash of record {seq}");
    }
    for (i, ok, head) in results {
        let rid = format!("req_{i}");
        let mine: Vec<&AuditRecord> = rows.iter().filter(|r| r.request_id == rid).collect();
        if i == 17 {
            assert!(!ok);
            assert!(mine.is_empty());
            assert_eq!(head, None);
            continue;
        }
        assert!(ok, "write {i}");
        // The event, then the request's record, back to back; the head is the latter.
        assert_eq!(mine.len(), 2, "records of {rid}");
        assert_eq!(mine[0].action, "event");
        assert_eq!(mine[1].action, "otp.create");
        assert_eq!(mine[1].seq, mine[0].seq + 1);
        assert_eq!(head, Some(mine[1].seq), "head of {rid}");
    }
    assert_eq!(store.audit_head().await.unwrap().0, rows.len() as i64);
}

store_test!(checkpoints_keep_their_links_and_cannot_fork);
/// A chained checkpoint keeps its link to the one before it; one made before chaining
/// reads back without one; a second checkpoint naming the same predecessor (two nodes
/// checkpointing at once) is refused, as is a second one at the same seq.
async fn checkpoints_keep_their_links_and_cannot_fork(store: Store) {
    let cp = |seq: i64, link: Option<CheckpointLink>| AuditCheckpoint {
        seq,
        hash: vec![u8::try_from(seq).unwrap(); 32],
        time_ms: T0 + seq,
        public_key: vec![1; 32],
        signature: vec![2; 64],
        link,
    };
    let link = |prev: u8, count: i64| {
        Some(CheckpointLink {
            prev: vec![prev; 32],
            count,
        })
    };
    assert_eq!(store.checkpoint_count().await.unwrap(), 0);
    assert!(store.insert_checkpoint(&cp(2, None)).await.unwrap());
    assert!(store.insert_checkpoint(&cp(3, None)).await.unwrap());
    assert!(store.insert_checkpoint(&cp(5, link(7, 3))).await.unwrap());
    assert!(store.insert_checkpoint(&cp(9, link(8, 4))).await.unwrap());
    // A fork: another checkpoint after the one named 7.
    assert!(!store.insert_checkpoint(&cp(10, link(7, 3))).await.unwrap());
    // The same seq again, even with a fresh link.
    assert!(!store.insert_checkpoint(&cp(9, link(6, 4))).await.unwrap());
    let all = store.checkpoints().await.unwrap();
    assert_eq!(
        all,
        vec![
            cp(2, None),
            cp(3, None),
            cp(5, link(7, 3)),
            cp(9, link(8, 4))
        ]
    );
    assert_eq!(store.checkpoint_count().await.unwrap(), 4);
    assert_eq!(
        store.latest_checkpoint().await.unwrap(),
        Some(cp(9, link(8, 4)))
    );
}
