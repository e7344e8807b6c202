//! JWT signing keys, API keys by id, and revoke-all.

use strongroom_core::IdKind;
use strongroom_store::{
    ApiKeyRecord, JwtKeyRecord, ListEvents, Mode, Store, StoreError, TokenStore, VaultStore,
};

use crate::{T0, account, event, id, store_test, writes};

fn jwt_key(generation: i64, wrapped: &[u8]) -> JwtKeyRecord {
    JwtKeyRecord {
        kid: format!("kid-{generation}"),
        generation,
        alg: "EdDSA".into(),
        wrapped: wrapped.to_vec(),
        public_jwk: format!("{{\"kid\":\"kid-{generation}\"}}"),
        created_ms: T0 + generation,
        active_from_ms: T0 + generation * 1000,
    }
}

store_test!(jwt_keys_by_generation);
async fn jwt_keys_by_generation(store: Store) {
    assert!(store.jwt_keys().await.unwrap().is_empty());
    writes(&store)
        .insert_jwt_key(&jwt_key(1, b"w1"), 0)
        .await
        .unwrap();
    writes(&store)
        .insert_jwt_key(&jwt_key(2, b"w2"), 1)
        .await
        .unwrap();
    // A concurrent rotation that lost: same generation, refused, nothing written.
    let mut dup = jwt_key(2, b"other");
    dup.kid = "kid-other".into();
    let e = writes(&store).insert_jwt_key(&dup, 2).await;
    assert!(matches!(e, Err(StoreError::Conflict(_))), "{e:?}");
    let keys = store.jwt_keys().await.unwrap();
    assert_eq!(keys, vec![jwt_key(1, b"w1"), jwt_key(2, b"w2")]);
    // The next generation erases private halves below the current signer's generation.
    writes(&store)
        .insert_jwt_key(&jwt_key(3, b"w3"), 2)
        .await
        .unwrap();
    let keys = store.jwt_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.wrapped.clone()).collect::<Vec<_>>(),
        vec![b"".to_vec(), b"w2".to_vec(), b"w3".to_vec()]
    );
    assert_eq!(keys[0].public_jwk, jwt_key(1, b"").public_jwk);
}

fn api_key(account: &str, n: u8, revoked_ms: Option<i64>) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id(IdKind::ApiKey, T0 + i64::from(n)),
        account_id: Some(account.to_owned()),
        kind: "secret".into(),
        mode: Mode::Test,
        prefix: "sk_test_abcd".into(),
        digest: vec![n; 32],
        scopes: "cards:read".into(),
        created_ms: T0,
        revoked_ms,
        name: None,
    }
}

store_test!(revoke_all_and_key_by_id);
async fn revoke_all_and_key_by_id(store: Store) {
    let a = account(&store).await;
    let b = account(&store).await;
    let k1 = api_key(&a, 1, None);
    let k2 = api_key(&a, 2, Some(T0 + 5));
    let k3 = api_key(&b, 3, None);
    for k in [&k1, &k2, &k3] {
        writes(&store).insert_api_key(k, &[]).await.unwrap();
    }
    assert_eq!(store.api_key_by_id(&k1.id).await.unwrap(), Some(k1.clone()));
    assert_eq!(store.api_key_by_id("key_nope").await.unwrap(), None);

    let events = [event(&a, Mode::Test, "account.keys_revoked", T0 + 10)];
    let n = writes(&store)
        .revoke_all_api_keys(&a, T0 + 10, &events)
        .await
        .unwrap();
    assert_eq!(n, Some(1), "only the unrevoked key");
    let got = store.api_key_by_id(&k1.id).await.unwrap().unwrap();
    assert_eq!(got.revoked_ms, Some(T0 + 10));
    // An earlier revocation keeps its time; other accounts are untouched.
    let got = store.api_key_by_id(&k2.id).await.unwrap().unwrap();
    assert_eq!(got.revoked_ms, Some(T0 + 5));
    let got = store.api_key_by_id(&k3.id).await.unwrap().unwrap();
    assert_eq!(got.revoked_ms, None);
    let list = store
        .list_events(
            &a,
            Mode::Test,
            &ListEvents {
                limit: 10,
                event_type: Some("account.keys_revoked".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    // No such account: nothing written, not even the event.
    let ev = [event(&a, Mode::Test, "account.keys_revoked", T0 + 20)];
    let none = writes(&store)
        .revoke_all_api_keys("acct_missing", T0 + 20, &ev)
        .await
        .unwrap();
    assert_eq!(none, None);
    assert!(store.get_event(&a, &ev[0].id).await.unwrap().is_none());
}
