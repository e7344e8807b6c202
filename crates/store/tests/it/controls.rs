//! Gateway controls: account settings, key allowlists, signing keys, nonces,
//! idempotency records.

use std::sync::Arc;

use strongroom_store::{
    AccountControls, ControlStore, ControlsUpdate, IdempotencyBegin, IdempotencyClaim,
    IdempotencyRecord, Mode, SigningKeyRecord, Store, VaultStore,
};

use crate::{T0, account, event, store_test, writes};

store_test!(account_settings_and_key_allowlists);
async fn account_settings_and_key_allowlists(store: Store) {
    let a = account(&store).await;
    assert_eq!(
        store.account_controls(&a).await.unwrap(),
        AccountControls::defaults(&a)
    );
    let c = AccountControls {
        account_id: a.clone(),
        require_signed_requests: true,
        ip_allowlist: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
        rate_limit_per_minute: Some(250),
        risk_mode: None,
        time_zone: Some("Europe/Paris".into()),
        require_attestation: vec!["card.reveal".into(), "relay".into()],
        updated_ms: T0,
    };
    writes(&store).set_account_controls(&c).await.unwrap();
    assert_eq!(store.account_controls(&a).await.unwrap(), c);
    let c2 = AccountControls {
        ip_allowlist: vec![],
        rate_limit_per_minute: None,
        risk_mode: None,
        updated_ms: T0 + 1,
        ..c
    };
    writes(&store).set_account_controls(&c2).await.unwrap();
    assert_eq!(store.account_controls(&a).await.unwrap(), c2);
    // An unknown account cannot get settings (foreign key).
    assert!(
        writes(&store)
            .set_account_controls(&AccountControls::defaults("acct_missing"))
            .await
            .is_err()
    );

    assert!(store.key_ip_allowlist("key_x").await.unwrap().is_empty());

    // Partial updates touch only what they name.
    let b = account(&store).await;
    let u = |f: &dyn Fn(&mut ControlsUpdate)| {
        let mut u = ControlsUpdate {
            account_id: b.clone(),
            now_ms: T0 + 7,
            ..Default::default()
        };
        f(&mut u);
        u
    };
    let got = writes(&store)
        .update_account_controls(&u(&|u| u.rate_limit_per_minute = Some(30)))
        .await
        .unwrap();
    assert_eq!(got.rate_limit_per_minute, Some(30));
    assert!(!got.require_signed_requests && got.ip_allowlist.is_empty());
    writes(&store)
        .update_account_controls(&u(&|u| u.ip_allowlist = Some(vec!["192.0.2.0/24".into()])))
        .await
        .unwrap();
    let got = writes(&store)
        .update_account_controls(&u(&|u| u.require_signed_requests = Some(true)))
        .await
        .unwrap();
    assert_eq!(
        got,
        AccountControls {
            account_id: b.clone(),
            require_signed_requests: true,
            ip_allowlist: vec!["192.0.2.0/24".into()],
            rate_limit_per_minute: Some(30),
            risk_mode: None,
            time_zone: None,
            require_attestation: Vec::new(),
            updated_ms: T0 + 7,
        }
    );
    assert_eq!(store.account_controls(&b).await.unwrap(), got);
}

store_test!(signing_keys_and_nonces);
async fn signing_keys_and_nonces(store: Store) {
    let a = account(&store).await;
    let k = SigningKeyRecord {
        id: "sigk_0192aaaa".into(),
        account_id: a.clone(),
        public_key: vec![9; 32],
        created_ms: T0,
        revoked_ms: None,
    };
    assert!(
        writes(&store)
            .insert_signing_key(
                &k,
                Some(1),
                &[event(&a, Mode::Test, "signing_key.created", T0)]
            )
            .await
            .unwrap()
    );
    // The cap counts unrevoked keys: a second one is refused and nothing is written.
    let k2 = SigningKeyRecord {
        id: "sigk_2".into(),
        ..k.clone()
    };
    assert!(
        !writes(&store)
            .insert_signing_key(&k2, Some(1), &[])
            .await
            .unwrap()
    );
    assert_eq!(store.signing_key(&a, &k.id).await.unwrap(), Some(k.clone()));
    assert_eq!(store.signing_key("acct_other", &k.id).await.unwrap(), None);
    assert_eq!(
        store.list_signing_keys(&a, None, 10).await.unwrap(),
        vec![k.clone()]
    );
    assert!(
        store
            .list_signing_keys(&a, Some(&k.id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let revoked = writes(&store)
        .revoke_signing_key(&a, &k.id, T0 + 5, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_ms, Some(T0 + 5));
    // A second revocation keeps the first time; an unknown key is None.
    let again = writes(&store)
        .revoke_signing_key(&a, &k.id, T0 + 9, &[])
        .await
        .unwrap();
    assert_eq!(again.unwrap().revoked_ms, Some(T0 + 5));
    assert!(
        writes(&store)
            .revoke_signing_key(&a, "sigk_no", T0, &[])
            .await
            .unwrap()
            .is_none()
    );
    // A revoked key no longer counts against the cap; the listing pages after a cursor.
    assert!(
        writes(&store)
            .insert_signing_key(&k2, Some(1), &[])
            .await
            .unwrap()
    );
    let page = store.list_signing_keys(&a, Some(&k.id), 10).await.unwrap();
    assert_eq!(page, vec![k2.clone()]);
    assert_eq!(store.list_signing_keys(&a, None, 1).await.unwrap().len(), 1);

    // A nonce is usable once until it expires, then again.
    assert!(
        writes(&store)
            .use_nonce(&k.id, "n1", T0, T0 + 100, false)
            .await
            .unwrap()
    );
    assert!(
        !writes(&store)
            .use_nonce(&k.id, "n1", T0 + 50, T0 + 150, false)
            .await
            .unwrap()
    );
    assert!(
        writes(&store)
            .use_nonce("sigk_other", "n1", T0, T0 + 100, false)
            .await
            .unwrap()
    );
    assert!(
        writes(&store)
            .use_nonce(&k.id, "n1", T0 + 100, T0 + 200, true)
            .await
            .unwrap()
    );
}

fn claim(key: &str, hash: u8, now: i64) -> IdempotencyClaim {
    IdempotencyClaim {
        scope: "acct_1:test".into(),
        key: key.into(),
        request_hash: vec![hash; 32],
        now_ms: now,
        expires_ms: now + 1_000,
        stale_before_ms: now - 100,
        purge_expired: false,
    }
}

store_test!(idempotency_records);
async fn idempotency_records(store: Store) {
    let s = "acct_1:test";
    assert_eq!(
        writes(&store)
            .idempotency_begin(&claim("k", 1, T0))
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
    // In progress: the record without a response.
    assert_eq!(
        writes(&store)
            .idempotency_begin(&claim("k", 2, T0 + 10))
            .await
            .unwrap(),
        IdempotencyBegin::Existing(IdempotencyRecord {
            request_hash: vec![1; 32],
            response: None
        })
    );
    writes(&store)
        .idempotency_finish(s, "k", 201, b"sealed")
        .await
        .unwrap();
    assert_eq!(
        writes(&store)
            .idempotency_begin(&claim("k", 1, T0 + 20))
            .await
            .unwrap(),
        IdempotencyBegin::Existing(IdempotencyRecord {
            request_hash: vec![1; 32],
            response: Some((201, b"sealed".to_vec()))
        })
    );
    // Expired: claimable again.
    assert_eq!(
        writes(&store)
            .idempotency_begin(&claim("k", 3, T0 + 1_000))
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
    // Abort releases an in-progress claim.
    writes(&store).idempotency_abort(s, "k").await.unwrap();
    assert_eq!(
        writes(&store)
            .idempotency_begin(&claim("k", 4, T0 + 1_001))
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
    // A claim abandoned for longer than the stale limit is taken over.
    assert_eq!(
        writes(&store)
            .idempotency_begin(&claim("k", 5, T0 + 1_200))
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
    // The sweep removes expired records of other keys too.
    assert_eq!(
        writes(&store)
            .idempotency_begin(&claim("other", 1, T0 + 1_300))
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
    let mut sweep = claim("third", 1, T0 + 9_000);
    sweep.purge_expired = true;
    assert_eq!(
        writes(&store).idempotency_begin(&sweep).await.unwrap(),
        IdempotencyBegin::Started
    );

    // Concurrent claims of one key: exactly one winner.
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            writes(&store)
                .idempotency_begin(&claim("race", 7, T0 + 20_000))
                .await
                .unwrap()
        }));
    }
    let mut started = 0;
    for t in tasks {
        if t.await.unwrap() == IdempotencyBegin::Started {
            started += 1;
        }
    }
    assert_eq!(started, 1);
    let _ = store.ping().await;
}

store_test!(integrity_apps_challenges_and_attestations);
async fn integrity_apps_challenges_and_attestations(store: Store) {
    use strongroom_store::{
        AttestationRecord, ChallengeRecord, IntegrityAppRecord, IntegrityStore,
    };
    let a = account(&store).await;
    let app = IntegrityAppRecord {
        id: "iapp_1".into(),
        account_id: a.clone(),
        application_id: "com.example.pay".into(),
        decryption_key: vec![1; 40],
        verification_key: vec![2; 90],
        allowed_certificates: vec!["ab".repeat(32)],
        min_version_code: Some(42),
        required_device_verdicts: vec!["MEETS_DEVICE_INTEGRITY".into()],
        require_licensed: true,
        max_token_age_s: 120,
        attestation_ttl_s: 600,
        reusable_attestations: false,
        created_ms: T0,
        updated_ms: T0,
    };
    writes(&store).insert_integrity_app(&app).await.unwrap();
    // One registration per application and account.
    assert!(writes(&store).insert_integrity_app(&app).await.is_err());
    let got = store.integrity_app(&a, "com.example.pay").await.unwrap();
    assert_eq!(got.as_ref(), Some(&app));
    let changed = IntegrityAppRecord {
        min_version_code: None,
        required_device_verdicts: vec![],
        reusable_attestations: true,
        updated_ms: T0 + 1,
        ..app.clone()
    };
    assert!(writes(&store).update_integrity_app(&changed).await.unwrap());
    assert_eq!(store.integrity_apps(&a).await.unwrap(), vec![changed]);

    // A challenge is taken once, by its caller and application, while live.
    let h = ChallengeRecord {
        digest: vec![7; 32],
        account_id: a.clone(),
        subject: "key_1".into(),
        application_id: "com.example.pay".into(),
        expires_ms: T0 + 300_000,
    };
    assert!(
        writes(&store)
            .insert_integrity_challenge(&h, T0)
            .await
            .unwrap()
    );
    let other = ChallengeRecord {
        subject: "key_2".into(),
        ..h.clone()
    };
    let w = || writes(&store);
    assert!(!w().consume_integrity_challenge(&other, T0).await.unwrap());
    assert!(
        !w().consume_integrity_challenge(&h, T0 + 300_000)
            .await
            .unwrap()
    );
    assert!(w().consume_integrity_challenge(&h, T0 + 1).await.unwrap());
    assert!(!w().consume_integrity_challenge(&h, T0 + 2).await.unwrap());

    // An attestation: its caller's, once unless reusable, until it expires.
    let att = AttestationRecord {
        id: "att_1".into(),
        account_id: a.clone(),
        subject: "key_1".into(),
        application_id: "com.example.pay".into(),
        reusable: false,
        created_ms: T0,
        expires_ms: T0 + 600_000,
    };
    assert!(w().insert_attestation(&att).await.unwrap());
    let app_id = Some("com.example.pay");
    assert!(
        !w().use_attestation("att_1", &a, "key_2", None, T0)
            .await
            .unwrap()
    );
    assert!(
        !w().use_attestation("att_1", &a, "key_1", Some("com.other"), T0)
            .await
            .unwrap()
    );
    assert!(
        w().use_attestation("att_1", &a, "key_1", app_id, T0)
            .await
            .unwrap()
    );
    assert!(
        !w().use_attestation("att_1", &a, "key_1", None, T0)
            .await
            .unwrap()
    );
    let again = AttestationRecord {
        id: "att_2".into(),
        reusable: true,
        ..att
    };
    assert!(w().insert_attestation(&again).await.unwrap());
    assert!(
        w().use_attestation("att_2", &a, "key_1", None, T0)
            .await
            .unwrap()
    );
    assert!(
        w().use_attestation("att_2", &a, "key_1", None, T0 + 1)
            .await
            .unwrap()
    );
    assert!(
        !w().use_attestation("att_2", &a, "key_1", None, T0 + 600_000)
            .await
            .unwrap()
    );
    assert!(
        writes(&store)
            .delete_integrity_app(&a, "iapp_1")
            .await
            .unwrap()
    );
    assert!(store.integrity_apps(&a).await.unwrap().is_empty());
}
