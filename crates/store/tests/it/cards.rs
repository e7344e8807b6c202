//! Cards: dedup, paging, delete, re-wrap, concurrency, group commit.

use std::time::Instant;

use strongroom_core::IdKind;
use strongroom_store::webhooks::{WebhookEndpointRecord, WebhookStore};
use strongroom_store::{
    AuditScope, AuditStore, CardRewrap, InsertCard, KeyPurpose, ListCards, ListEvents, Mode,
    RewrapQuery, Store, StoreError, VaultStore,
};

use crate::audit::{rec, test_hash};
use crate::{T0, account, card, event, fp, id, random_u64, sqlite_cfg, store_test, writes};

fn created_events(limit: i64) -> ListEvents {
    ListEvents {
        event_type: Some("card.created".into()),
        limit,
        ..Default::default()
    }
}

store_test!(cards_and_events_of_a_missing_account_are_refused);
/// A card, or a card's event, that names an account the store does not hold is refused as
/// a conflict and nothing of its write is kept, while a write beside it in the same group
/// commit goes through (a foreign key on SQLite; a check per statement on PostgreSQL).
async fn cards_and_events_of_a_missing_account_are_refused(store: Store) {
    let a = account(&store).await;
    let missing = id(IdKind::Account, T0);
    let good = card(&a, Mode::Test, T0 + 1, &fp(1));
    let orphan = card(&missing, Mode::Test, T0 + 2, &fp(2));
    let stray = card(&a, Mode::Test, T0 + 3, &fp(3));
    let good_ev = [event(&a, Mode::Test, "card.created", T0 + 1)];
    let orphan_ev = [event(&missing, Mode::Test, "card.created", T0 + 2)];
    let w = writes(&store);
    let dedup = [[(1, fp(1))], [(1, fp(2))], [(1, fp(3))]];
    let (g, o, s) = tokio::join!(
        w.insert_card(&good, &dedup[0], &good_ev),
        w.insert_card(&orphan, &dedup[1], &orphan_ev),
        // The card's account exists; its event's does not.
        w.insert_card(&stray, &dedup[2], &orphan_ev),
    );
    assert_eq!(g.unwrap(), InsertCard::Created(good.clone()));
    for r in [o, s] {
        assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    }
    assert_eq!(
        store.get_card(&a, Mode::Test, &good.id).await.unwrap(),
        Some(good)
    );
    assert_eq!(
        store.get_card(&a, Mode::Test, &stray.id).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .get_card(&missing, Mode::Test, &orphan.id)
            .await
            .unwrap(),
        None
    );
    let evts = store
        .list_events(&a, Mode::Test, &created_events(10))
        .await
        .unwrap();
    assert_eq!(
        evts.iter().map(|e| &e.id).collect::<Vec<_>>(),
        [&good_ev[0].id]
    );
    let none = store
        .list_events(&missing, Mode::Test, &created_events(10))
        .await
        .unwrap();
    assert!(none.is_empty());
}

store_test!(insert_card_dedups);
async fn insert_card_dedups(store: Store) {
    let a = account(&store).await;
    let f = fp(1);
    let first = card(&a, Mode::Test, T0 + 1, &f);
    let ev = [event(&a, Mode::Test, "card.created", T0 + 1)];
    let r = writes(&store)
        .insert_card(&first, &[(1, f.clone())], &ev)
        .await
        .unwrap();
    assert_eq!(r, InsertCard::Created(first.clone()));

    // Same PAN again: the existing card, no write, no event.
    let second = card(&a, Mode::Test, T0 + 2, &f);
    let ev2 = [event(&a, Mode::Test, "card.created", T0 + 2)];
    let r = writes(&store)
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
    let r = writes(&store)
        .insert_card(&rotated, &dedup, &[])
        .await
        .unwrap();
    assert_eq!(r, InsertCard::Existing(first.clone()));
    // A pair with the wrong version does not match.
    let dedup = [(2, rotated.fingerprint.clone()), (3, f.clone())];
    let r = writes(&store)
        .insert_card(&rotated, &dedup, &[])
        .await
        .unwrap();
    assert_eq!(r, InsertCard::Created(rotated.clone()));

    // Modes are separate vaults.
    let live = card(&a, Mode::Live, T0 + 4, &f);
    let r = writes(&store)
        .insert_card(&live, &[(1, f.clone())], &[])
        .await
        .unwrap();
    assert_eq!(r, InsertCard::Created(live.clone()));

    // Fingerprints that share their first 8 bytes (all SQLite indexes of them) are
    // different cards, each found by its own.
    let twin = card(&a, Mode::Test, T0 + 6, &fp(1));
    assert_ne!(twin.fingerprint, f);
    let own = [(1, twin.fingerprint.clone())];
    let r = writes(&store).insert_card(&twin, &own, &[]).await.unwrap();
    assert_eq!(r, InsertCard::Created(twin.clone()));
    let again = card(&a, Mode::Test, T0 + 7, &twin.fingerprint);
    let r = writes(&store).insert_card(&again, &own, &[]).await.unwrap();
    assert_eq!(r, InsertCard::Existing(twin.clone()));
    // Another account's card with the same fingerprint is that account's own.
    let b = account(&store).await;
    let other = card(&b, Mode::Test, T0 + 8, &f);
    let r = writes(&store)
        .insert_card(&other, &[(1, f.clone())], &[])
        .await;
    assert_eq!(r.unwrap(), InsertCard::Created(other.clone()));

    // Same card id twice: a conflict, not a silent dedup.
    let mut same_id = card(&a, Mode::Test, T0 + 5, &fp(3));
    same_id.id = first.id.clone();
    let r = writes(&store).insert_card(&same_id, &[], &[]).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
}

store_test!(cards_sharing_a_row_hint_are_each_found);
/// On SQLite a card is stored under the row id its id gives (`row_hint`) when that is
/// free, and read there first: cards whose ids give the same row id, or the one SQLite
/// picked for another, are each found under their own id, and never another's.
async fn cards_sharing_a_row_hint_are_each_found(store: Store) {
    let a = account(&store).await;
    let base = id(IdKind::Card, T0);
    let hint = strongroom_core::row_hint(&base).unwrap();
    let with_hint = |h: i64, n: u64| {
        let mut c = card(&a, Mode::Test, T0, &fp(9000 + n));
        c.id = format!("card_{h:016x}{:016x}", random_u64());
        c
    };
    // Two with the same hint (the second gets another row id, likely hint + 1), then one
    // whose hint is hint + 1, then one whose hint nobody took.
    let cards = [
        with_hint(hint, 1),
        with_hint(hint, 2),
        with_hint(hint + 1, 3),
        with_hint(hint + 7, 4),
    ];
    for c in &cards {
        let r = writes(&store)
            .insert_card(c, &[(1, c.fingerprint.clone())], &[])
            .await
            .unwrap();
        assert!(matches!(r, InsertCard::Created(_)));
    }
    for c in &cards {
        let got = store.get_card(&a, Mode::Test, &c.id).await.unwrap();
        assert_eq!(
            got.map(|g| g.fingerprint),
            Some(c.fingerprint.clone()),
            "{}",
            c.id
        );
        // The same row id, another card's id: not found.
        let other = with_hint(strongroom_core::row_hint(&c.id).unwrap(), 99);
        assert!(
            store
                .get_card(&a, Mode::Test, &other.id)
                .await
                .unwrap()
                .is_none()
        );
        // Right row id and id, wrong mode or account: not found.
        assert!(
            store
                .get_card(&a, Mode::Live, &c.id)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .get_card("acct_none", Mode::Test, &c.id)
                .await
                .unwrap()
                .is_none()
        );
    }
    // Each is deleted alone.
    assert!(
        writes(&store)
            .delete_card(&a, Mode::Test, &cards[0].id, &[])
            .await
            .unwrap()
    );
    assert!(
        store
            .get_card(&a, Mode::Test, &cards[0].id)
            .await
            .unwrap()
            .is_none()
    );
    for c in &cards[1..] {
        assert!(
            store
                .get_card(&a, Mode::Test, &c.id)
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// On SQLite a card is stored under the row id its id gives, unless another card has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cards_are_stored_under_the_row_id_their_id_gives() {
    if !crate::runs_on(
        crate::Backend::Sqlite,
        "sqlite_cards_are_stored_under_the_row_id_their_id_gives",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let store = Store::connect(&sqlite_cfg(&path)).await.unwrap();
    let a = account(&store).await;
    let ids = [
        strongroom_core::next_id(IdKind::Card, T0, [3; 10]),
        strongroom_core::next_id(IdKind::Card, T0, [3; 10]),
    ];
    // The third shares the first's row id: SQLite picks another for it.
    let twin = format!("{}{}", &ids[0][..21], "00000000000000ff");
    for (n, id) in ids.iter().chain([&twin]).enumerate() {
        let mut c = card(&a, Mode::Test, T0, &fp(9100 + n as u64));
        c.id = id.clone();
        writes(&store).insert_card(&c, &[], &[]).await.unwrap();
    }
    store.close().await;
    drop(store);
    let c = rusqlite::Connection::open(&path).unwrap();
    let rowid = |id: &str| -> i64 {
        c.query_row("SELECT rowid FROM cards WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    };
    for id in &ids {
        assert_eq!(Some(rowid(id)), strongroom_core::row_hint(id), "{id}");
    }
    assert_ne!(Some(rowid(&twin)), strongroom_core::row_hint(&twin));
}

store_test!(list_get_delete);
async fn list_get_delete(store: Store) {
    let a = account(&store).await;
    let mut cards = Vec::new();
    for i in 0..5 {
        let c = card(&a, Mode::Test, T0 + 10 * i, &fp(i as u64));
        writes(&store).insert_card(&c, &[], &[]).await.unwrap();
        cards.push(c);
    }
    let other = card(&a, Mode::Live, T0 + 100, &fp(9));
    writes(&store).insert_card(&other, &[], &[]).await.unwrap();

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
        !writes(&store)
            .delete_card(&a, Mode::Live, &cards[0].id, &[])
            .await
            .unwrap()
    );
    assert!(
        writes(&store)
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
        !writes(&store)
            .delete_card(&a, Mode::Test, &cards[0].id, std::slice::from_ref(&ev2))
            .await
            .unwrap()
    );
    assert_eq!(store.get_event(&a, &ev2.id).await.unwrap(), None);
}

store_test!(rewrap);
async fn rewrap(store: Store) {
    let a = account(&store).await;
    let mut cards = Vec::new();
    for i in 0..4 {
        let mut c = card(&a, Mode::Test, T0 + i, &fp(i as u64));
        c.key_version = if i == 3 { 2 } else { 1 };
        writes(&store).insert_card(&c, &[], &[]).await.unwrap();
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

    // A live card of the same account: counted, but read in its own mode's pass.
    let live = card(&a, Mode::Live, T0 + 10, &fp(10));
    writes(&store).insert_card(&live, &[], &[]).await.unwrap();
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Cards).await.unwrap(),
        [(1, 4), (2, 1)]
    );

    let stale = |purpose, mode, after, below_version, limit| {
        let store = &store;
        let a = &a;
        async move {
            let q = RewrapQuery {
                mode,
                after,
                below_version,
                limit,
            };
            store.cards_for_rewrap(a, purpose, &q).await.unwrap()
        }
    };
    assert_eq!(
        stale(KeyPurpose::Cards, Mode::Test, "", 2, 10).await,
        cards[..3]
    );
    // A batch at a time, after a cursor.
    let first = stale(KeyPurpose::Cards, Mode::Test, "", 2, 2).await;
    assert_eq!(first, cards[..2]);
    let rest = stale(KeyPurpose::Cards, Mode::Test, &first[1].id, 2, 2).await;
    assert_eq!(rest, cards[2..3]);
    assert!(
        stale(KeyPurpose::Cards, Mode::Test, &cards[2].id, 2, 2)
            .await
            .is_empty()
    );
    assert_eq!(
        stale(KeyPurpose::Cards, Mode::Live, "", 2, 10).await,
        std::slice::from_ref(&live)
    );
    assert_eq!(
        stale(KeyPurpose::Fingerprint, Mode::Test, "", 2, 10)
            .await
            .len(),
        4
    );
    assert!(
        stale(KeyPurpose::Fingerprint, Mode::Test, "", 1, 10)
            .await
            .is_empty()
    );
    assert!(
        writes(&store)
            .delete_card(&a, Mode::Live, &live.id, &[])
            .await
            .unwrap()
    );
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Cards).await.unwrap(),
        [(1, 3), (2, 1)]
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
    assert_eq!(writes(&store).rewrap_cards(&updates).await.unwrap(), 2);
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
    assert_eq!(
        writes(&store).rewrap_cards(&[fp2.clone()]).await.unwrap(),
        1
    );
    let dup = card(&a, Mode::Test, T0 + 50, &fp2.fingerprint);
    let r = writes(&store)
        .insert_card(&dup, &[(2, fp2.fingerprint.clone())], &[])
        .await
        .unwrap();
    assert!(matches!(r, InsertCard::Existing(c) if c.id == cards[1].id));
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Fingerprint).await.unwrap(),
        [(1, 3), (2, 1)]
    );
}

store_test!(concurrent_reads_each_get_their_own_card);
/// Many reads at once (on PostgreSQL they share statements, `postgres::card_reads`):
/// each gets its own card, and only in its own account and mode; an id of another
/// account, another mode or no card reads as none, whatever else shares its statement.
async fn concurrent_reads_each_get_their_own_card(store: Store) {
    let (a, b) = (account(&store).await, account(&store).await);
    let mut cards = Vec::new();
    for (i, (acct, mode)) in [(&a, Mode::Test), (&b, Mode::Test), (&a, Mode::Live)]
        .into_iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        let n = u64::try_from(i).unwrap();
        let c = card(acct, mode, T0 + i64::try_from(i).unwrap(), &fp(5000 + n));
        let r = writes(&store)
            .insert_card(&c, &[(1, c.fingerprint.clone())], &[])
            .await
            .unwrap();
        assert!(matches!(r, InsertCard::Created(_)));
        cards.push(c);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..4 {
        for c in &cards {
            let (store, c) = (store.clone(), c.clone());
            let (a, b) = (a.clone(), b.clone());
            tasks.spawn(async move {
                let other_mode = match c.mode {
                    Mode::Test => Mode::Live,
                    Mode::Live => Mode::Test,
                };
                let other_account = if c.account_id == a { b } else { a };
                let (acct, mode) = match round {
                    0 | 1 => (c.account_id.clone(), c.mode),
                    2 => (other_account, c.mode),
                    _ => (c.account_id.clone(), other_mode),
                };
                let got = store.get_card(&acct, mode, &c.id).await.unwrap();
                (round, c, got)
            });
        }
        let none = id(IdKind::Card, T0 + 999);
        let store = store.clone();
        let a = a.clone();
        tasks.spawn(async move {
            let got = store.get_card(&a, Mode::Test, &none).await.unwrap();
            assert!(got.is_none(), "no such card");
            (9, card(&a, Mode::Test, T0, &fp(1)), None)
        });
    }
    for (round, c, got) in tasks.join_all().await {
        match round {
            0 | 1 => assert_eq!(got.as_ref(), Some(&c), "{}", c.id),
            _ => assert!(got.is_none(), "round {round}: {} read elsewhere", c.id),
        }
    }
}

store_test!(concurrent_same_fingerprint);
async fn concurrent_same_fingerprint(store: Store) {
    let a = account(&store).await;
    let f = fp(77);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (store, a, f) = (store.clone(), a.clone(), f.clone());
        tasks.spawn(async move {
            let c = card(&a, Mode::Live, T0 + i, &f);
            let ev = [event(&a, Mode::Live, "card.created", T0 + i)];
            writes(&store)
                .insert_card(&c, &[(1, f)], &ev)
                .await
                .unwrap()
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
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Fingerprint).await.unwrap(),
        [(1, 1)]
    );
}

/// Many concurrent writers through the SQLite group commit; one bad write in the crowd
/// fails alone; everything acknowledged is there after reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_group_commit_survives_reopen() {
    if !crate::runs_on(
        crate::Backend::Sqlite,
        "sqlite_group_commit_survives_reopen",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let store = Store::connect(&sqlite_cfg(&path)).await.unwrap();
    let a = account(&store).await;
    let dup_id = card(&a, Mode::Test, T0, &fp(1_000_000));
    writes(&store).insert_card(&dup_id, &[], &[]).await.unwrap();

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
            writes(&store)
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
    // The failed write's batch was rolled back and run again: it counted once per card.
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Cards).await.unwrap(),
        [(1, n)]
    );
    store.close().await;
}

/// Throughput of durable inserts through the group commit (run with `--ignored
/// --nocapture`, in release for real figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn sqlite_insert_throughput() {
    if !crate::runs_on(crate::Backend::Sqlite, "sqlite_insert_throughput") {
        return;
    }
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
                writes(&store)
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

fn endpoint(a: &str, mode: Mode, ms: i64, types: &[&str], disabled: bool) -> WebhookEndpointRecord {
    WebhookEndpointRecord {
        id: id(IdKind::WebhookEndpoint, ms),
        account_id: a.to_owned(),
        mode,
        url: "https://127.0.0.1:9/hook".into(),
        signing: "hmac-sha256".into(),
        description: None,
        secret_wrapped: vec![1; 48],
        secret_version: 1,
        old_wrapped: None,
        old_version: None,
        old_expires_ms: None,
        disabled_ms: disabled.then_some(ms),
        disabled_reason: disabled.then(|| "manual".into()),
        failing_since_ms: None,
        created_ms: ms,
        enabled_events: types.iter().map(|t| (*t).to_owned()).collect(),
        kind: "webhook".into(),
    }
}

store_test!(concurrent_new_cards_with_events_and_deliveries);
/// Many tokenizations at once share group commits (on PostgreSQL, one statement inserts
/// a batch's cards, events and webhook deliveries): every new card gets its event and one
/// delivery per matching endpoint, repeated fingerprints in the crowd get the one card,
/// audited writes carry their records, and deletes in the same stream take effect.
async fn concurrent_new_cards_with_events_and_deliveries(store: Store) {
    let a = account(&store).await;
    let wanted = [
        endpoint(&a, Mode::Test, T0 + 1, &["card.created"], false),
        endpoint(&a, Mode::Test, T0 + 2, &["*"], false),
    ];
    let unwanted = [
        endpoint(&a, Mode::Test, T0 + 3, &["card.deleted"], false),
        endpoint(&a, Mode::Live, T0 + 4, &["*"], false),
        endpoint(&a, Mode::Test, T0 + 5, &["*"], true),
    ];
    for ep in wanted.iter().chain(&unwanted) {
        assert!(writes(&store).insert_endpoint(ep, None).await.unwrap());
    }
    // `fp` is random beyond its number: one fingerprint per number, made once.
    let fps: Vec<Vec<u8>> = (0..60).map(fp).collect();
    let insert = |i: i64, f: usize| {
        let (store, a, fpr) = (store.clone(), a.clone(), fps[f].clone());
        async move {
            let c = card(&a, Mode::Test, T0 + 100 + i, &fpr);
            let ev = [event(&a, Mode::Test, "card.created", T0 + 100 + i)];
            let dedup = [(1, fpr)];
            if i % 3 == 0 {
                let mut r = rec("card.tokenize");
                r.request_id = format!("req_{i}");
                let scope = AuditScope::new(test_hash, Some(r));
                let out = store.audited(&scope).insert_card(&c, &dedup, &ev).await;
                (i, f, out.unwrap(), scope.head())
            } else {
                (
                    i,
                    f,
                    writes(&store).insert_card(&c, &dedup, &ev).await.unwrap(),
                    None,
                )
            }
        }
    };
    // 60 writes, 40 distinct cards.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        tasks.spawn(insert(i, usize::try_from(i % 40).unwrap()));
    }
    let results = tasks.join_all().await;
    let mut by_fp = std::collections::HashMap::new();
    for (_, f, r, _) in &results {
        if let InsertCard::Created(c) = r {
            assert!(
                by_fp.insert(*f, c.id.clone()).is_none(),
                "fingerprint {f} twice"
            );
        }
    }
    assert_eq!(by_fp.len(), 40);
    let audit = store.audit_range(0, 1000).await.unwrap();
    for (i, f, r, head) in &results {
        let id = match r {
            InsertCard::Created(c) | InsertCard::Existing(c) => &c.id,
        };
        assert_eq!(Some(id), by_fp.get(f), "write {i}");
        let created = matches!(r, InsertCard::Created(_));
        if i % 3 == 0 {
            let rid = format!("req_{i}");
            let mine = audit.iter().filter(|r| r.request_id == rid).count();
            assert_eq!(mine, usize::from(created), "records of {rid}");
            assert!(head.is_some() || !created, "head of {rid}");
        }
    }
    let q = ListCards {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        store.list_cards(&a, Mode::Test, &q).await.unwrap().len(),
        40
    );
    let evts = store
        .list_events(&a, Mode::Test, &created_events(100))
        .await
        .unwrap();
    assert_eq!(evts.len(), 40);
    for e in &evts {
        let mut to: Vec<String> = store
            .event_deliveries(&a, &e.id)
            .await
            .unwrap()
            .into_iter()
            .map(|d| {
                assert_eq!((d.state.as_str(), d.next_ms), ("pending", e.created_ms));
                d.endpoint_id
            })
            .collect();
        to.sort();
        assert_eq!(to, [wanted[0].id.clone(), wanted[1].id.clone()]);
    }

    // Deletes in the same stream: the cards inserted in one statement must not be
    // moved before them, so a batch with a delete inserts one by one.
    let (mut deletes, mut inserts) = (tokio::task::JoinSet::new(), tokio::task::JoinSet::new());
    let doomed: Vec<String> = (0..10).filter_map(|f| by_fp.get(&f).cloned()).collect();
    for (n, victim) in doomed.iter().enumerate() {
        let (store, a, victim) = (store.clone(), a.clone(), victim.clone());
        let n = i64::try_from(n).unwrap();
        deletes.spawn(async move {
            let ev = [event(&a, Mode::Test, "card.deleted", T0 + 500 + n)];
            writes(&store)
                .delete_card(&a, Mode::Test, &victim, &ev)
                .await
                .unwrap()
        });
        inserts.spawn(insert(200 + n, 40 + usize::try_from(n).unwrap()));
    }
    assert_eq!(deletes.join_all().await, [true; 10]);
    for (i, _, r, _) in inserts.join_all().await {
        assert!(matches!(r, InsertCard::Created(_)), "write {i}: {r:?}");
    }
    for victim in &doomed {
        assert_eq!(store.get_card(&a, Mode::Test, victim).await.unwrap(), None);
    }
    assert_eq!(
        store.list_cards(&a, Mode::Test, &q).await.unwrap().len(),
        40
    );
    // The per-version counts (kept by triggers, and on SQLite by the insert's own
    // statement) followed every insert of the batches, none of the repeats, and the
    // deletes.
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Cards).await.unwrap(),
        [(1, 40)]
    );
}

/// A database made before the per-version counts (migration 8) gets them from its cards
/// when it is opened, and they are kept from then on (migration 10 included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_card_counts_are_backfilled() {
    if !crate::runs_on(crate::Backend::Sqlite, "sqlite_card_counts_are_backfilled") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let store = Store::connect(&sqlite_cfg(&path)).await.unwrap();
    let a = account(&store).await;
    for i in 0..5 {
        let mut c = card(&a, Mode::Test, T0 + i, &fp(i as u64));
        c.key_version = 1 + i % 2;
        writes(&store).insert_card(&c, &[], &[]).await.unwrap();
    }
    store.close().await;
    drop(store);

    // Back to the schema before migration 8, cards kept.
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "DROP TRIGGER cards_count_delete; \
         DROP TRIGGER cards_count_update; DROP TABLE card_key_counts; \
         CREATE INDEX cards_key_version ON cards (account_id, key_version); \
         CREATE INDEX cards_fp_version ON cards (account_id, fp_version); \
         DELETE FROM _sqlx_migrations WHERE version IN (8, 10);",
    )
    .unwrap();
    drop(c);

    let store = Store::connect(&sqlite_cfg(&path)).await.unwrap();
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Cards).await.unwrap(),
        [(1, 3), (2, 2)]
    );
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Fingerprint).await.unwrap(),
        [(1, 5)]
    );
    let c = card(&a, Mode::Live, T0 + 9, &fp(9));
    writes(&store).insert_card(&c, &[], &[]).await.unwrap();
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Cards).await.unwrap(),
        [(1, 4), (2, 2)]
    );
    store.close().await;
}

/// A database made before the fingerprint-prefix index (migration 9) gets it in place of
/// the unique index when it is opened, and its cards are still found by fingerprint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fingerprint_index_is_replaced() {
    if !crate::runs_on(
        crate::Backend::Sqlite,
        "sqlite_fingerprint_index_is_replaced",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vault.db");
    let store = Store::connect(&sqlite_cfg(&path)).await.unwrap();
    let a = account(&store).await;
    let old: Vec<_> = (0..3)
        .map(|i| card(&a, Mode::Test, T0 + i, &fp(i as u64)))
        .collect();
    for c in &old {
        writes(&store).insert_card(c, &[], &[]).await.unwrap();
    }
    store.close().await;
    drop(store);

    // Back to the schema before migration 9, cards kept.
    let indexes = |path: &std::path::Path| -> Vec<String> {
        let c = rusqlite::Connection::open(path).unwrap();
        let mut st = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'cards' ORDER BY name")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "DROP INDEX cards_fp_prefix; \
         CREATE UNIQUE INDEX cards_fingerprint ON cards (account_id, mode, fingerprint); \
         DELETE FROM _sqlx_migrations WHERE version = 9;",
    )
    .unwrap();
    drop(c);
    assert!(indexes(&path).contains(&"cards_fingerprint".to_string()));

    let store = Store::connect(&sqlite_cfg(&path)).await.unwrap();
    let now = indexes(&path);
    assert!(now.contains(&"cards_fp_prefix".to_string()), "{now:?}");
    assert!(!now.contains(&"cards_fingerprint".to_string()), "{now:?}");
    for (i, c) in old.iter().enumerate() {
        let again = card(&a, Mode::Test, T0 + 10 + i as i64, &c.fingerprint);
        let r = writes(&store).insert_card(&again, &[], &[]).await.unwrap();
        assert_eq!(r, InsertCard::Existing(c.clone()));
    }
    let new = card(&a, Mode::Test, T0 + 20, &fp(0));
    let r = writes(&store).insert_card(&new, &[], &[]).await.unwrap();
    assert_eq!(r, InsertCard::Created(new.clone()));
    store.close().await;
}
