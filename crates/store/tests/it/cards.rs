//! Cards: dedup, paging, delete, re-wrap, concurrency, group commit.

use std::time::Instant;

use strongroom_store::{
    CardRewrap, InsertCard, KeyPurpose, ListCards, ListEvents, Mode, Store, StoreError, VaultStore,
};

use crate::{T0, account, both, card, event, fp, sqlite_cfg};

fn created_events(limit: i64) -> ListEvents {
    ListEvents {
        event_type: Some("card.created".into()),
        limit,
        ..Default::default()
    }
}

both!(insert_card_dedups);
async fn insert_card_dedups(store: Store) {
    let a = account(&store).await;
    let f = fp(1);
    let first = card(&a, Mode::Test, T0 + 1, &f);
    let ev = [event(&a, Mode::Test, "card.created", T0 + 1)];
    let r = store
        .insert_card(&first, &[(1, f.clone())], &ev)
        .await
        .unwrap();
    assert_eq!(r, InsertCard::Created(first.clone()));

    // Same PAN again: the existing card, no write, no event.
    let second = card(&a, Mode::Test, T0 + 2, &f);
    let ev2 = [event(&a, Mode::Test, "card.created", T0 + 2)];
    let r = store
        .insert_card(&second, &[(1, f.clone())], &ev2)
        .await
        .unwrap();
    assert_eq!(r, InsertCard::Existing(first.clone()));
    assert_eq!(
        store.get_card(&a, Mode::Test, &second.id).await.unwrap(),
        None
    );
    let evts = store
        .list_events(&a, Mode::Test, &created_events(10))
        .await
        .unwrap();
    assert_eq!(evts.iter().map(|e| &e.id).collect::<Vec<_>>(), [&ev[0].id]);

    // After a fingerprint-key rotation the new card's fingerprint differs, but the
    // old version's fingerprint is among the dedup pairs.
    let mut rotated = card(&a, Mode::Test, T0 + 3, &fp(2));
    rotated.fp_version = 2;
    let dedup = [(2, rotated.fingerprint.clone()), (1, f.clone())];
    let r = store.insert_card(&rotated, &dedup, &[]).await.unwrap();
    assert_eq!(r, InsertCard::Existing(first.clone()));
    // A pair with the wrong version does not match.
    let dedup = [(2, rotated.fingerprint.clone()), (3, f.clone())];
    let r = store.insert_card(&rotated, &dedup, &[]).await.unwrap();
    assert_eq!(r, InsertCard::Created(rotated.clone()));

    // Modes are separate vaults.
    let live = card(&a, Mode::Live, T0 + 4, &f);
    let r = store
        .insert_card(&live, &[(1, f.clone())], &[])
        .await
        .unwrap();
    assert_eq!(r, InsertCard::Created(live.clone()));

    // Same card id twice: a conflict, not a silent dedup.
    let mut same_id = card(&a, Mode::Test, T0 + 5, &fp(3));
    same_id.id = first.id.clone();
    let r = store.insert_card(&same_id, &[], &[]).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
}

both!(list_get_delete);
async fn list_get_delete(store: Store) {
    let a = account(&store).await;
    let mut cards = Vec::new();
    for i in 0..5 {
        let c = card(&a, Mode::Test, T0 + 10 * i, &fp(i as u64));
        store.insert_card(&c, &[], &[]).await.unwrap();
        cards.push(c);
    }
    let other = card(&a, Mode::Live, T0 + 100, &fp(9));
    store.insert_card(&other, &[], &[]).await.unwrap();

    let page = |after: Option<&str>, limit| ListCards {
        fingerprint: None,
        starting_after: after.map(str::to_owned),
        limit,
    };
    let ids =
        |v: Vec<strongroom_store::CardRecord>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let p1 = ids(store
        .list_cards(&a, Mode::Test, &page(None, 2))
        .await
        .unwrap());
    assert_eq!(p1, [cards[4].id.clone(), cards[3].id.clone()]);
    let p2 = ids(store
        .list_cards(&a, Mode::Test, &page(Some(&p1[1]), 2))
        .await
        .unwrap());
    assert_eq!(p2, [cards[2].id.clone(), cards[1].id.clone()]);
    let p3 = ids(store
        .list_cards(&a, Mode::Test, &page(Some(&p2[1]), 3))
        .await
        .unwrap());
    assert_eq!(p3, [cards[0].id.clone()]);
    assert_eq!(
        store
            .list_cards(&a, Mode::Live, &page(None, 10))
            .await
            .unwrap(),
        [other]
    );

    // By fingerprint, with and without a cursor.
    let by_fp = |after: Option<&str>| ListCards {
        fingerprint: Some(cards[2].fingerprint.clone()),
        starting_after: after.map(str::to_owned),
        limit: 10,
    };
    assert_eq!(
        store
            .list_cards(&a, Mode::Test, &by_fp(None))
            .await
            .unwrap(),
        [cards[2].clone()]
    );
    assert!(
        store
            .list_cards(&a, Mode::Test, &by_fp(Some(&cards[1].id)))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .list_cards(&a, Mode::Test, &by_fp(Some(&cards[3].id)))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .list_cards(&a, Mode::Live, &by_fp(None))
            .await
            .unwrap()
            .is_empty()
    );

    // Get is scoped by account and mode.
    assert_eq!(
        store.get_card(&a, Mode::Test, &cards[0].id).await.unwrap(),
        Some(cards[0].clone())
    );
    assert_eq!(
        store.get_card(&a, Mode::Live, &cards[0].id).await.unwrap(),
        None
    );

    // Delete: gone, with its event; a second delete changes nothing.
    let ev = event(&a, Mode::Test, "card.deleted", T0 + 200);
    assert!(
        !store
            .delete_card(&a, Mode::Live, &cards[0].id, &[])
            .await
            .unwrap()
    );
    assert!(
        store
            .delete_card(&a, Mode::Test, &cards[0].id, std::slice::from_ref(&ev))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_card(&a, Mode::Test, &cards[0].id).await.unwrap(),
        None
    );
    assert_eq!(store.get_event(&a, &ev.id).await.unwrap(), Some(ev.clone()));
    let ev2 = event(&a, Mode::Test, "card.deleted", T0 + 201);
    assert!(
        !store
            .delete_card(&a, Mode::Test, &cards[0].id, std::slice::from_ref(&ev2))
            .await
            .unwrap()
    );
    assert_eq!(store.get_event(&a, &ev2.id).await.unwrap(), None);
}

both!(rewrap);
async fn rewrap(store: Store) {
    let a = account(&store).await;
    let mut cards = Vec::new();
    for i in 0..4 {
        let mut c = card(&a, Mode::Test, T0 + i, &fp(i as u64));
        c.key_version = if i == 3 { 2 } else { 1 };
        store.insert_card(&c, &[], &[]).await.unwrap();
        cards.push(c);
    }
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Cards).await.unwrap(),
        [(1, 3), (2, 1)]
    );
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Fingerprint).await.unwrap(),
        [(1, 4)]
    );

    let stale = store
        .cards_for_rewrap(&a, KeyPurpose::Cards, 2, 10)
        .await
        .unwrap();
    assert_eq!(stale, cards[..3]);
    assert_eq!(
        store
            .cards_for_rewrap(&a, KeyPurpose::Cards, 2, 2)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store
            .cards_for_rewrap(&a, KeyPurpose::Fingerprint, 2, 10)
            .await
            .unwrap()
            .len(),
        4
    );
    assert!(
        store
            .cards_for_rewrap(&a, KeyPurpose::Fingerprint, 1, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let to_v2 = |c: &strongroom_store::CardRecord, expect_key_version| CardRewrap {
        id: c.id.clone(),
        expect_key_version,
        expect_fp_version: 1,
        sealed: vec![9; 64],
        key_version: 2,
        fingerprint: c.fingerprint.clone(),
        fp_version: 1,
    };
    // The second expectation is stale (a concurrent re-wrap won): skipped.
    let updates = [
        to_v2(&cards[0], 1),
        to_v2(&cards[1], 5),
        to_v2(&cards[2], 1),
    ];
    assert_eq!(store.rewrap_cards(&updates).await.unwrap(), 2);
    let got = store
        .get_card(&a, Mode::Test, &cards[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.key_version, got.sealed), (2, vec![9; 64]));
    let untouched = store
        .get_card(&a, Mode::Test, &cards[1].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(untouched, cards[1]);
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Cards).await.unwrap(),
        [(1, 1), (2, 3)]
    );

    // Fingerprint re-wrap moves the dedup key too.
    let mut fp2 = to_v2(&cards[1], 1);
    fp2.key_version = 1;
    fp2.fingerprint = fp(42);
    fp2.fp_version = 2;
    fp2.sealed = cards[1].sealed.clone();
    assert_eq!(store.rewrap_cards(&[fp2.clone()]).await.unwrap(), 1);
    let dup = card(&a, Mode::Test, T0 + 50, &fp2.fingerprint);
    let r = store
        .insert_card(&dup, &[(2, fp2.fingerprint.clone())], &[])
        .await
        .unwrap();
    assert!(matches!(r, InsertCard::Existing(c) if c.id == cards[1].id));
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Fingerprint).await.unwrap(),
        [(1, 3), (2, 1)]
    );
}

both!(concurrent_same_fingerprint);
async fn concurrent_same_fingerprint(store: Store) {
    let a = account(&store).await;
    let f = fp(77);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (store, a, f) = (store.clone(), a.clone(), f.clone());
        tasks.spawn(async move {
            let c = card(&a, Mode::Live, T0 + i, &f);
            let ev = [event(&a, Mode::Live, "card.created", T0 + i)];
            store.insert_card(&c, &[(1, f)], &ev).await.unwrap()
        });
    }
    let results = tasks.join_all().await;
    let created: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            InsertCard::Created(c) => Some(c.id.clone()),
            InsertCard::Existing(_) => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "exactly one insert wins");
    for r in &results {
        if let InsertCard::Existing(c) = r {
            assert_eq!(c.id, created[0]);
        }
    }
    let evts = store
        .list_events(&a, Mode::Live, &created_events(100))
        .await
        .unwrap();
    assert_eq!(evts.len(), 1);
    let q = ListCards {
        limit: 100,
        ..Default::default()
    };
    let all = store.list_cards(&a, Mode::Live, &q);
    assert_eq!(all.await.unwrap().len(), 1);
}

/// Many concurrent writers through the SQLite group commit; one bad write in the crowd
/// fails alone; everything acknowledged is there after reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commit_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let store = Store::connect(&sqlite_cfg(&path)).await.unwrap();
    let a = account(&store).await;
    let dup_id = card(&a, Mode::Test, T0, &fp(1_000_000));
    store.insert_card(&dup_id, &[], &[]).await.unwrap();

    let n = 500;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (store, a) = (store.clone(), a.clone());
        let mut c = card(&a, Mode::Test, T0 + 1 + i, &fp(i as u64));
        if i == 250 {
            c.id = dup_id.id.clone(); // fails: the id exists
        }
        tasks.spawn(async move {
            let ev = [event(&a, Mode::Test, "card.created", c.created_ms)];
            store
                .insert_card(&c, &[(1, c.fingerprint.clone())], &ev)
                .await
        });
    }
    let results = tasks.join_all().await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 1, "only the bad write fails");
    assert!(
        results
            .iter()
            .flatten()
            .all(|r| matches!(r, InsertCard::Created(_)))
    );
    store.close().await;
    drop(store);

    let store = Store::connect(&sqlite_cfg(&path)).await.unwrap();
    let q = ListCards {
        limit: 1000,
        ..Default::default()
    };
    let all = store.list_cards(&a, Mode::Test, &q);
    assert_eq!(all.await.unwrap().len(), n as usize);
    let evts = store
        .list_events(&a, Mode::Test, &created_events(1000))
        .await
        .unwrap();
    assert_eq!(evts.len(), n as usize - 1);
    store.close().await;
}

/// Throughput of durable inserts through the group commit (run with `--ignored
/// --nocapture`, in release for real figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn sqlite_insert_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&sqlite_cfg(&dir.path().join("vault.db")))
        .await
        .unwrap();
    let a = account(&store).await;
    let total: i64 = 20_000;
    let writers: i64 = 256;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (store, a) = (store.clone(), a.clone());
        tasks.spawn(async move {
            for i in (w..total).step_by(writers as usize) {
                let c = card(&a, Mode::Live, T0 + i, &fp(i as u64));
                let ev = [event(&a, Mode::Live, "card.created", T0 + i)];
                store
                    .insert_card(&c, &[(1, c.fingerprint.clone())], &ev)
                    .await
                    .unwrap();
            }
        });
    }
    tasks.join_all().await;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{total} durable card inserts (+ events) in {secs:.2}s: {:.0}/s",
        total as f64 / secs
    );
    store.close().await;
}
