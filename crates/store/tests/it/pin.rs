//! PIN storage: the lockout counter under concurrency, single-use payload ids, OTP and
//! PIN written together, cascade on card delete, transport keys.

use strongroom_core::IdKind;
use strongroom_store::{
    EventRecord, InsertCard, ListEvents, Mode, OtpRecord, PinOutcome, PinRecord, PinStore, SetKind,
    SpendOtp, Store, TransportKeyRecord, VaultStore,
};

use crate::{T0, account, card, event, fp, id, store_test, writes};

fn pin(card: &str, account: &str, block: u8) -> PinRecord {
    PinRecord {
        card_id: card.to_owned(),
        account_id: account.to_owned(),
        mode: Mode::Test,
        key_version: 1,
        block: vec![block; 16],
        failures: 0,
        locked: false,
        updated_ms: T0,
    }
}

async fn otp(store: &Store, account: &str, card: &str, purpose: &str) -> SpendOtp {
    let o = OtpRecord {
        id: id(IdKind::Otp, T0),
        account_id: account.to_owned(),
        mode: Mode::Test,
        purpose: purpose.to_owned(),
        card_id: Some(card.to_owned()),
        api_key_id: "key_0".into(),
        code_digest: vec![5; 32],
        created_ms: T0,
        expires_ms: T0 + 300_000,
        attempts: 0,
        used_ms: None,
    };
    writes(store).insert_otp(&o, &[]).await.unwrap();
    SpendOtp {
        id: o.id,
        purpose: purpose.to_owned(),
        now_ms: T0 + 1,
        max_attempts: 3,
    }
}

async fn pin_events(store: &Store, account: &str) -> Vec<String> {
    let q = ListEvents {
        limit: 1000,
        ..Default::default()
    };
    let mut v: Vec<String> = store
        .list_events(account, Mode::Test, &q)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .filter(|t| t.starts_with("pin."))
        .collect();
    v.sort();
    v
}

async fn new_card(store: &Store, a: &str) -> String {
    let c = card(a, Mode::Test, T0, &fp(1));
    match writes(store).insert_card(&c, &[], &[]).await.unwrap() {
        InsertCard::Created(c) => c.id,
        InsertCard::Existing(_) => panic!("fresh fingerprint"),
    }
}

store_test!(set_and_lockout_under_concurrency);
async fn set_and_lockout_under_concurrency(store: Store) {
    let a = account(&store).await;
    let c = new_card(&store, &a).await;
    let p = pin(&c, &a, 1);
    let ev = |t: &str| event(&a, Mode::Test, t, T0 + 2);

    // An OTP of another purpose does not set it, and nothing is written.
    let wrong = otp(&store, &a, &c, "pin.change").await;
    let wrong = SpendOtp {
        purpose: "pin.set".into(),
        ..wrong
    };
    assert_eq!(
        writes(&store)
            .set_pin(&p, SetKind::Initial, &wrong, &[ev("pin.set")], None)
            .await
            .unwrap(),
        PinOutcome::OtpInvalid
    );
    assert_eq!(store.get_pin(&a, Mode::Test, &c).await.unwrap(), None);

    let o = otp(&store, &a, &c, "pin.set").await;
    assert_eq!(
        writes(&store)
            .set_pin(&p, SetKind::Initial, &o, &[ev("pin.set")], None)
            .await
            .unwrap(),
        PinOutcome::Done
    );
    // The OTP is spent: a second set with it fails even after the PIN is gone.
    let got = store.get_pin(&a, Mode::Test, &c).await.unwrap().unwrap();
    assert_eq!(got, p);
    assert_eq!(store.get_pin(&a, Mode::Live, &c).await.unwrap(), None);
    let o2 = otp(&store, &a, &c, "pin.set").await;
    assert_eq!(
        writes(&store)
            .set_pin(&p, SetKind::Initial, &o2, &[], None)
            .await
            .unwrap(),
        PinOutcome::AlreadySet
    );

    // 12 concurrent wrong guesses with a threshold of 3: exactly 3 are counted, the
    // third locks, every other one is told "locked", and the events say so once each.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (store, seen) = (store.clone(), got.clone());
        let failed = vec![ev("pin.verification_failed")];
        let locked = ev("pin.locked");
        tasks.push(tokio::spawn(async move {
            writes(&store)
                .record_pin_attempt(&seen, false, 3, &failed, Some(&locked))
                .await
                .unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, PinOutcome::Failed { .. }))
        .collect();
    assert_eq!(failed.len(), 3, "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, PinOutcome::Failed { locked: true, .. }))
            .count(),
        1
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PinOutcome::Failed { .. } | PinOutcome::Locked))
    );
    // Locked: even a success is refused, and a first-set too.
    assert_eq!(
        writes(&store)
            .record_pin_attempt(&got, true, 3, &[], None)
            .await
            .unwrap(),
        PinOutcome::Locked
    );
    let now = store.get_pin(&a, Mode::Test, &c).await.unwrap().unwrap();
    assert!(now.locked);
    assert_eq!(now.failures, 3);

    // A reset with its OTP replaces the block, clears the lock, and announces both.
    let r = otp(&store, &a, &c, "pin.reset").await;
    let unlocked: EventRecord = ev("pin.unlocked");
    assert_eq!(
        writes(&store)
            .set_pin(
                &pin(&c, &a, 2),
                SetKind::Reset,
                &r,
                &[ev("pin.set")],
                Some(&unlocked)
            )
            .await
            .unwrap(),
        PinOutcome::Done
    );
    let now = store.get_pin(&a, Mode::Test, &c).await.unwrap().unwrap();
    assert!(!now.locked);
    assert_eq!(now.failures, 0);
    assert_eq!(now.block, vec![2; 16]);
    // The stale view (old block) can no longer be counted against.
    assert_eq!(
        writes(&store)
            .record_pin_attempt(&got, false, 3, &[], None)
            .await
            .unwrap(),
        PinOutcome::Changed
    );
    assert_eq!(
        pin_events(&store, &a).await,
        [
            "pin.locked",
            "pin.set",
            "pin.set",
            "pin.unlocked",
            "pin.verification_failed",
            "pin.verification_failed",
            "pin.verification_failed"
        ]
    );

    // Change: spends its OTP; a stale view rolls everything back.
    let ch = otp(&store, &a, &c, "pin.change").await;
    let next = pin(&c, &a, 3);
    assert!(matches!(
        writes(&store)
            .change_pin(&got, &next, &ch, &[ev("pin.changed")])
            .await,
        Err(strongroom_store::StoreError::Conflict(_))
    ));
    assert_eq!(
        writes(&store)
            .change_pin(&now, &next, &ch, &[ev("pin.changed")])
            .await
            .unwrap(),
        PinOutcome::Done
    );
    assert_eq!(
        store
            .get_pin(&a, Mode::Test, &c)
            .await
            .unwrap()
            .unwrap()
            .block,
        vec![3; 16]
    );

    // Operator unlock: only a locked PIN is announced.
    assert_eq!(
        writes(&store)
            .unlock_pin(&a, Mode::Test, &c, T0 + 5, &[ev("pin.unlocked")])
            .await
            .unwrap(),
        PinOutcome::Changed
    );
    assert_eq!(
        store.pin_owner(&c).await.unwrap(),
        Some((a.clone(), Mode::Test))
    );
    assert_eq!(
        writes(&store)
            .unlock_pin(&a, Mode::Test, "card_none", T0 + 5, &[])
            .await
            .unwrap(),
        PinOutcome::Missing
    );

    // Deleting the card deletes its PIN.
    assert!(
        writes(&store)
            .delete_card(&a, Mode::Test, &c, &[])
            .await
            .unwrap()
    );
    assert_eq!(store.get_pin(&a, Mode::Test, &c).await.unwrap(), None);
    assert_eq!(store.pin_owner(&c).await.unwrap(), None);
}

store_test!(jtis_and_settings_and_transport_keys);
async fn jtis_and_settings_and_transport_keys(store: Store) {
    let a = account(&store).await;
    // Concurrent spends of one jti: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, a) = (store.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            writes(&store)
                .spend_pin_jti(&a, "jti-1", T0 + 1000, T0)
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1);
    // Per account.
    assert!(
        writes(&store)
            .spend_pin_jti("acct_b", "jti-1", T0 + 1000, T0)
            .await
            .unwrap()
    );
    // Expired ids are purged (the payload would be refused as stale by then anyway).
    assert!(
        writes(&store)
            .spend_pin_jti(&a, "jti-1", T0 + 5000, T0 + 2000)
            .await
            .unwrap()
    );

    assert_eq!(store.pin_max_failures(&a).await.unwrap(), None);
    writes(&store).set_pin_max_failures(&a, 5).await.unwrap();
    writes(&store).set_pin_max_failures(&a, 7).await.unwrap();
    assert_eq!(store.pin_max_failures(&a).await.unwrap(), Some(7));

    let k = |kid: &str, ms| TransportKeyRecord {
        kid: kid.to_owned(),
        wrapped: vec![1; 40],
        created_ms: ms,
        retire_after_ms: None,
    };
    writes(&store)
        .insert_pin_transport_key(&k("ptk_a", T0), T0)
        .await
        .unwrap();
    writes(&store)
        .insert_pin_transport_key(&k("ptk_b", T0 + 10), T0 + 10 + 600)
        .await
        .unwrap();
    let keys = store.pin_transport_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].kid, "ptk_a");
    assert_eq!(keys[0].retire_after_ms, Some(T0 + 610));
    assert_eq!(keys[1].retire_after_ms, None);
    // Debug never prints the wrapped key or a block.
    assert!(!format!("{:?}", keys[0]).contains("[1, 1"));
    assert!(!format!("{:?}", pin("card_x", &a, 9)).contains("[9, 9"));
}
