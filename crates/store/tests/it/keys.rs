//! Accounts, API keys, data keys.

use strongroom_core::IdKind;
use strongroom_store::{
    AccountRecord, ApiKeyRecord, CardRewrap, KeyPurpose, KeyState, ListEvents, Mode, RetireOutcome,
    Store, StoreError, VaultStore,
};

use crate::{T0, account, card, data_key, event, fp, id, store_test, writes};

store_test!(accounts_and_data_keys);
async fn accounts_and_data_keys(store: Store) {
    store.ping().await.unwrap();
    let a = account(&store).await;
    let got = store.get_account(&a).await.unwrap().unwrap();
    assert_eq!(got.name, "Acme");
    assert_eq!(got.otp_delivery_url, None);

    let b = AccountRecord {
        id: id(IdKind::Account, T0 + 5),
        name: "Beta".into(),
        otp_delivery_url: Some("https://otp.example/hook".into()),
        created_ms: T0 + 5,
    };
    writes(&store).create_account(&b, &[], &[]).await.unwrap();
    let all = store.list_accounts().await.unwrap();
    assert_eq!(
        all.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        [a.as_str(), b.id.as_str()]
    );
    assert_eq!(all[1], b);

    // Same id again: refused, nothing half-written.
    let again = writes(&store)
        .create_account(&b, &[data_key(&b.id, KeyPurpose::Cards, 1)], &[])
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert!(store.data_keys(&b.id).await.unwrap().is_empty());

    let mut renamed = b.clone();
    renamed.name = "Beta 2".into();
    renamed.otp_delivery_url = None;
    assert!(writes(&store).update_account(&renamed).await.unwrap());
    assert_eq!(store.get_account(&b.id).await.unwrap().unwrap(), renamed);
    renamed.id = id(IdKind::Account, T0 + 6);
    assert!(!writes(&store).update_account(&renamed).await.unwrap());
    assert_eq!(store.get_account(&renamed.id).await.unwrap(), None);

    let keys = store.data_keys(&a).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter()
            .all(|k| k.state == KeyState::Active && k.version == 1)
    );
    assert_eq!(keys[0], data_key(&a, keys[0].purpose, 1));

    // The account's creation event is in the same transaction.
    let q = ListEvents {
        limit: 10,
        ..Default::default()
    };
    let evts = store.list_events(&a, Mode::Live, &q);
    assert_eq!(evts.await.unwrap().len(), 1);
}

fn api_key(account_id: Option<&str>, ms: i64, digest: u8) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id(IdKind::ApiKey, ms),
        account_id: account_id.map(str::to_owned),
        kind: if account_id.is_some() {
            "secret"
        } else {
            "admin"
        }
        .into(),
        mode: Mode::Test,
        prefix: "sk_test_4f3a".into(),
        digest: vec![digest; 32],
        scopes: "cards:write cards:read".into(),
        created_ms: ms,
        revoked_ms: None,
        name: None,
    }
}

store_test!(api_keys);
async fn api_keys(store: Store) {
    let a = account(&store).await;
    let k1 = api_key(Some(&a), T0 + 1, 1);
    let k2 = api_key(Some(&a), T0 + 2, 2);
    let admin = api_key(None, T0 + 3, 3);
    for k in [&k1, &k2, &admin] {
        writes(&store)
            .insert_api_key(k, &[event(&a, Mode::Test, "api_key.created", k.created_ms)])
            .await
            .unwrap();
    }
    // Digest is unique.
    let mut dup = api_key(Some(&a), T0 + 4, 1);
    dup.id = id(IdKind::ApiKey, T0 + 4);
    assert!(matches!(
        writes(&store).insert_api_key(&dup, &[]).await,
        Err(StoreError::Conflict(_))
    ));

    assert_eq!(
        store.api_key_by_digest(&[2; 32]).await.unwrap(),
        Some(k2.clone())
    );
    assert_eq!(store.api_key_by_digest(&[9; 32]).await.unwrap(), None);
    assert_eq!(
        store.list_api_keys(Some(&a)).await.unwrap(),
        [k1.clone(), k2.clone()]
    );
    assert_eq!(
        store.list_api_keys(None).await.unwrap(),
        std::slice::from_ref(&admin)
    );

    // Another account's key, or an admin key named with an account: not found.
    assert_eq!(
        writes(&store)
            .revoke_api_key(None, &k1.id, T0 + 10, &[])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        writes(&store)
            .revoke_api_key(Some(&a), &admin.id, T0 + 10, &[])
            .await
            .unwrap(),
        None
    );

    let revoked = writes(&store)
        .revoke_api_key(Some(&a), &k1.id, T0 + 10, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_ms, Some(T0 + 10));
    // Revoking again keeps the first time.
    let again = writes(&store)
        .revoke_api_key(Some(&a), &k1.id, T0 + 20, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_ms, Some(T0 + 10));
    assert_eq!(
        store
            .api_key_by_digest(&[1; 32])
            .await
            .unwrap()
            .unwrap()
            .revoked_ms,
        Some(T0 + 10)
    );

    // The last admin key that is not revoked stays.
    assert_eq!(
        writes(&store)
            .revoke_api_key(None, &admin.id, T0 + 30, &[])
            .await
            .unwrap(),
        None
    );
    let admin2 = api_key(None, T0 + 31, 4);
    writes(&store).insert_api_key(&admin2, &[]).await.unwrap();
    let ev = event(&a, Mode::Test, "api_key.revoked", T0 + 32);
    let admin_revoked =
        writes(&store).revoke_api_key(None, &admin.id, T0 + 32, std::slice::from_ref(&ev));
    assert_eq!(
        admin_revoked.await.unwrap().unwrap().revoked_ms,
        Some(T0 + 32)
    );
    assert_eq!(store.get_event(&a, &ev.id).await.unwrap(), Some(ev));
    assert_eq!(
        writes(&store)
            .revoke_api_key(None, &admin2.id, T0 + 33, &[])
            .await
            .unwrap(),
        None
    );

    // Two revocations racing for the last two admin keys: one of them wins.
    let admin3 = api_key(None, T0 + 34, 5);
    writes(&store).insert_api_key(&admin3, &[]).await.unwrap();
    let (x, y) = tokio::join!(
        writes(&store).revoke_api_key(None, &admin2.id, T0 + 35, &[]),
        writes(&store).revoke_api_key(None, &admin3.id, T0 + 35, &[]),
    );
    let won = [x.unwrap(), y.unwrap()]
        .iter()
        .filter(|r| r.is_some())
        .count();
    assert_eq!(won, 1, "both or neither of the last two admin keys revoked");
    let live = store.list_api_keys(None).await.unwrap();
    assert_eq!(live.iter().filter(|k| k.revoked_ms.is_none()).count(), 1);
}

store_test!(rotate_and_retire);
async fn rotate_and_retire(store: Store) {
    let a = account(&store).await;
    let c = card(&a, Mode::Test, T0 + 1, &fp(1));
    writes(&store)
        .insert_card(&c, &[(1, c.fingerprint.clone())], &[])
        .await
        .unwrap();

    let v2 = data_key(&a, KeyPurpose::Cards, 2);
    writes(&store)
        .rotate_data_key(&v2, &[event(&a, Mode::Live, "key.rotated", T0 + 2)])
        .await
        .unwrap();
    let keys = store.data_keys(&a).await.unwrap();
    let state = |p: KeyPurpose, v: i64| {
        keys.iter()
            .find(|k| k.purpose == p && k.version == v)
            .map(|k| k.state)
    };
    assert_eq!(state(KeyPurpose::Cards, 1), Some(KeyState::DecryptOnly));
    assert_eq!(state(KeyPurpose::Cards, 2), Some(KeyState::Active));
    assert_eq!(state(KeyPurpose::Fingerprint, 1), Some(KeyState::Active));

    // A concurrent rotation that lost: conflict, and nothing changed.
    let mut lost = data_key(&a, KeyPurpose::Cards, 2);
    lost.wrapped = vec![0xee; 40];
    let r = writes(&store)
        .rotate_data_key(&lost, &[event(&a, Mode::Live, "key.rotated", T0 + 3)])
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(store.data_keys(&a).await.unwrap(), keys);
    let q = ListEvents {
        event_type: Some("key.rotated".into()),
        limit: 10,
        ..Default::default()
    };
    let evts = store.list_events(&a, Mode::Live, &q);
    assert_eq!(evts.await.unwrap().len(), 1);

    // Usage: the card still uses cards v1.
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Cards).await.unwrap(),
        [(1, 1)]
    );
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Fingerprint).await.unwrap(),
        [(1, 1)]
    );

    let retire = |p, v| writes(&store).retire_data_key(&a, p, v, T0 + 50);
    assert_eq!(
        retire(KeyPurpose::Cards, 1).await.unwrap(),
        RetireOutcome::InUse(1)
    );
    assert_eq!(
        retire(KeyPurpose::Cards, 2).await.unwrap(),
        RetireOutcome::Active
    );
    assert_eq!(
        retire(KeyPurpose::Cards, 9).await.unwrap(),
        RetireOutcome::NotFound
    );
    assert_eq!(
        retire(KeyPurpose::Fingerprint, 1).await.unwrap(),
        RetireOutcome::Active
    );

    // Re-wrap the card to v2; then v1 protects nothing and can go.
    let moved = CardRewrap {
        id: c.id.clone(),
        expect_key_version: 1,
        expect_fp_version: 1,
        sealed: vec![8; 64],
        key_version: 2,
        fingerprint: c.fingerprint.clone(),
        fp_version: 1,
    };
    assert_eq!(writes(&store).rewrap_cards(&[moved]).await.unwrap(), 1);
    assert_eq!(
        store.key_usage(&a, KeyPurpose::Cards).await.unwrap(),
        [(2, 1)]
    );
    assert_eq!(
        retire(KeyPurpose::Cards, 1).await.unwrap(),
        RetireOutcome::Retired
    );
    let v1 = store
        .data_keys(&a)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.purpose == KeyPurpose::Cards && k.version == 1)
        .unwrap();
    assert_eq!(v1.state, KeyState::Retired);
    assert!(v1.wrapped.is_empty());
    assert_eq!(v1.retired_ms, Some(T0 + 50));
    // Already retired: still Retired, first time kept.
    let again = writes(&store)
        .retire_data_key(&a, KeyPurpose::Cards, 1, T0 + 60)
        .await
        .unwrap();
    assert_eq!(again, RetireOutcome::Retired);
    let v1 = store
        .data_keys(&a)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.purpose == KeyPurpose::Cards && k.version == 1)
        .unwrap();
    assert_eq!(v1.retired_ms, Some(T0 + 50));
}

store_test!(a_key_with_its_controls_in_one_read);
/// The gateway's one read per request when nothing is cached: the key, its account's
/// controls (defaults when never set) and its own allowlist, each as the separate reads
/// give them.
async fn a_key_with_its_controls_in_one_read(store: Store) {
    use strongroom_store::{AccountControls, ControlStore};
    let a = account(&store).await;
    let k = api_key(Some(&a), T0 + 1, 11);
    let admin = api_key(None, T0 + 2, 12);
    writes(&store).insert_api_key(&k, &[]).await.unwrap();
    writes(&store).insert_api_key(&admin, &[]).await.unwrap();
    assert!(store.key_with_controls(&[99; 32]).await.unwrap().is_none());

    // Nothing set: default controls, no allowlist.
    let got = store.key_with_controls(&k.digest).await.unwrap().unwrap();
    assert_eq!(got.key, k);
    assert_eq!(got.controls, Some(AccountControls::defaults(&a)));
    assert!(got.key_allowlist.is_empty());

    let c = AccountControls {
        account_id: a.clone(),
        require_signed_requests: true,
        ip_allowlist: vec!["10.0.0.0/8".into()],
        rate_limit_per_minute: Some(250),
        // Every column set, so that a read that shifts one shows.
        risk_mode: Some("shadow".into()),
        time_zone: Some("Asia/Tokyo".into()),
        require_attestation: vec!["pin.set".into()],
        updated_ms: T0,
    };
    writes(&store).set_account_controls(&c).await.unwrap();
    let list = vec!["192.0.2.0/24".to_owned(), "2001:db8::/32".to_owned()];
    writes(&store)
        .set_key_ip_allowlist(&k.id, &list)
        .await
        .unwrap();
    let got = store.key_with_controls(&k.digest).await.unwrap().unwrap();
    assert_eq!(got.controls.as_ref(), Some(&c));
    assert_eq!(
        got.controls,
        Some(store.account_controls(&a).await.unwrap())
    );
    assert_eq!(got.key_allowlist, list);
    assert_eq!(
        got.key_allowlist,
        store.key_ip_allowlist(&k.id).await.unwrap()
    );

    // A revoked key is still returned (the caller refuses it, with its own code).
    writes(&store)
        .revoke_api_key(Some(&a), &k.id, T0 + 5, &[])
        .await
        .unwrap();
    let got = store.key_with_controls(&k.digest).await.unwrap().unwrap();
    assert_eq!(got.key.revoked_ms, Some(T0 + 5));

    // A key without an account has no account controls.
    let got = store
        .key_with_controls(&admin.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.key, admin);
    assert_eq!(got.controls, None);
}
