//! One-time passwords and events.

use strongroom_core::IdKind;
use strongroom_store::{ListEvents, Mode, OtpRecord, Store, StoreConfig, VaultStore};

use crate::{T0, account, event, id, store_test, writes};

fn otp(account_id: &str, ms: i64) -> OtpRecord {
    OtpRecord {
        id: id(IdKind::Otp, ms),
        account_id: account_id.to_owned(),
        mode: Mode::Test,
        purpose: "card.reveal".into(),
        card_id: None,
        api_key_id: "key_0".into(),
        code_digest: vec![5; 32],
        created_ms: ms,
        expires_ms: ms + 300_000,
        attempts: 0,
        used_ms: None,
    }
}

store_test!(otps);
async fn otps(store: Store) {
    let a = account(&store).await;
    let o = otp(&a, T0);
    writes(&store)
        .insert_otp(&o, &[event(&a, Mode::Test, "otp.created", T0)])
        .await
        .unwrap();
    assert_eq!(store.get_otp(&a, &o.id).await.unwrap(), Some(o.clone()));
    assert_eq!(store.get_otp("acct_other", &o.id).await.unwrap(), None);

    assert_eq!(writes(&store).otp_fail(&o.id).await.unwrap(), 1);
    assert_eq!(writes(&store).otp_fail(&o.id).await.unwrap(), 2);
    // Too many attempts: refused.
    assert!(
        !writes(&store)
            .otp_consume(&o.id, T0 + 1, 2, &[])
            .await
            .unwrap()
    );
    // Expired: refused.
    assert!(
        !writes(&store)
            .otp_consume(&o.id, o.expires_ms, 5, &[])
            .await
            .unwrap()
    );
    // Consumed once only.
    assert!(
        writes(&store)
            .otp_consume(&o.id, T0 + 2, 5, &[])
            .await
            .unwrap()
    );
    assert!(
        !writes(&store)
            .otp_consume(&o.id, T0 + 3, 5, &[])
            .await
            .unwrap()
    );
    let got = store.get_otp(&a, &o.id).await.unwrap().unwrap();
    assert_eq!((got.attempts, got.used_ms), (2, Some(T0 + 2)));
    assert_eq!(writes(&store).otp_fail("otp_missing").await.unwrap(), 0);

    // Concurrent consumers: exactly one wins.
    let mut bound = otp(&a, T0 + 10);
    bound.card_id = Some("card_x".into());
    writes(&store).insert_otp(&bound, &[]).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (store, id) = (store.clone(), bound.id.clone());
        tasks.spawn(async move {
            writes(&store)
                .otp_consume(&id, T0 + 11, 5, &[])
                .await
                .unwrap()
        });
    }
    let wins = tasks.join_all().await.into_iter().filter(|w| *w).count();
    assert_eq!(wins, 1);
}

store_test!(events);
async fn events(store: Store) {
    let a = account(&store).await;
    let mut all = Vec::new();
    for i in 0..6 {
        let t = if i % 2 == 0 {
            "card.created"
        } else {
            "card.deleted"
        };
        let e = event(&a, Mode::Test, t, T0 + 1000 + i);
        writes(&store)
            .insert_otp(&otp(&a, T0 + i), std::slice::from_ref(&e))
            .await
            .unwrap();
        all.push(e);
    }
    let list = |q: ListEvents| {
        let store = store.clone();
        let a = a.clone();
        async move {
            store
                .list_events(&a, Mode::Test, &q)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    let ids = |ix: &[usize]| ix.iter().map(|&i| all[i].id.clone()).collect::<Vec<_>>();
    assert_eq!(
        list(ListEvents {
            limit: 3,
            ..Default::default()
        })
        .await,
        ids(&[5, 4, 3])
    );
    let after = Some(all[3].id.clone());
    assert_eq!(
        list(ListEvents {
            limit: 10,
            starting_after: after.clone(),
            ..Default::default()
        })
        .await,
        ids(&[2, 1, 0])
    );
    let created = Some("card.created".to_owned());
    assert_eq!(
        list(ListEvents {
            limit: 10,
            event_type: created.clone(),
            ..Default::default()
        })
        .await,
        ids(&[4, 2, 0])
    );
    assert_eq!(
        list(ListEvents {
            limit: 10,
            event_type: created,
            starting_after: after,
            ..Default::default()
        })
        .await,
        ids(&[2, 0])
    );
    let range = ListEvents {
        limit: 10,
        created_gte: Some(T0 + 1001),
        created_lt: Some(T0 + 1004),
        ..Default::default()
    };
    assert_eq!(list(range).await, ids(&[3, 2, 1]));
    // Other mode: the account's creation event only (live).
    assert!(
        store
            .list_events(
                &a,
                Mode::Live,
                &ListEvents {
                    event_type: Some("card.created".into()),
                    limit: 10,
                    ..Default::default()
                }
            )
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.get_event(&a, &all[0].id).await.unwrap(),
        Some(all[0].clone())
    );
    assert_eq!(
        store.get_event("acct_other", &all[0].id).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn bad_urls_and_schemas_are_refused() {
    let cfg = |url: &str, schema: Option<&str>| StoreConfig {
        url: url.to_owned(),
        schema: schema.map(str::to_owned),
        max_connections: 1,
    };
    assert!(Store::connect(&cfg("mysql://x", None)).await.is_err());
    assert!(Store::connect(&cfg("sqlite://", None)).await.is_err());
    let evil = Some("x; DROP TABLE cards");
    assert!(Store::connect(&cfg(&crate::pg_url(), evil)).await.is_err());
    assert!(
        Store::connect(&cfg(&crate::pg_url(), Some("1abc")))
            .await
            .is_err()
    );
}

/// The PostgreSQL writer takes a pooled connection per group commit and gives it back:
/// with a pool of one, reads and writes from many tasks still all finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_pool_of_one_serves_reads_and_writes() {
    let name = "a_postgres_pool_of_one_serves_reads_and_writes";
    let Some((store, schema)) = pg_only(name, "pool1", "", 1).await else {
        return;
    };
    let a = account(&store).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (store, a) = (store.clone(), a.clone());
            tokio::spawn(async move {
                let o = otp(&a, T0 + i);
                writes(&store).insert_otp(&o, &[]).await.unwrap();
                assert!(store.get_account(&a).await.unwrap().is_some());
            })
        })
        .collect();
    let all = join_all(tasks);
    tokio::time::timeout(std::time::Duration::from_secs(30), all)
        .await
        .expect("reads and writes on a pool of one finished");
    store.close().await;
    drop_schema(&mut admin().await, &schema).await;
}

/// Connections the server cuts (a restart, a failover, an administrator) fail the one
/// request that finds them, with `Unavailable` (the API's 503 and `Retry-After`), and are
/// replaced: reads and writes work again at once, and nothing was half-written.
#[tokio::test]
async fn postgres_connections_cut_by_the_server_fail_once_then_recover() {
    let name = "postgres_connections_cut_by_the_server_fail_once_then_recover";
    let app = format!("strongroom_cut_{}", std::process::id());
    let args = format!("application_name={app}");
    let Some((store, schema)) = pg_only(name, "cut", &args, 1).await else {
        return;
    };
    let a = account(&store).await;
    writes(&store).insert_otp(&otp(&a, T0), &[]).await.unwrap();
    assert!(store.get_account(&a).await.unwrap().is_some());

    let mut admin = admin().await;
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&app)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    // The reader, the writer and the cache listener.
    assert!(cut.len() >= 2, "{cut:?}");

    let read = store.get_account(&a).await;
    assert!(
        matches!(read, Err(strongroom_store::StoreError::Unavailable(_))),
        "{read:?}"
    );
    assert!(store.get_account(&a).await.unwrap().is_some());
    let o = otp(&a, T0 + 1);
    let write = writes(&store).insert_otp(&o, &[]).await;
    unavailable_and_unwritten(&store, &o, write).await;
    writes(&store).insert_otp(&o, &[]).await.unwrap();
    assert!(store.get_otp(&a, &o.id).await.unwrap().is_some());

    store.close().await;
    drop_schema(&mut admin, &schema).await;
}

/// A session that holds the audit chain's head row lock and neither commits nor goes away
/// (a node killed behind a proxy that keeps its connection open) does not stall writes
/// for good: after the writer's `lock_timeout` the batch fails as
/// unavailable, nothing of it is written, and writes go through once the lock is free.
/// The writer's default timeout (5 s), not one the URL sets: this test takes that long.
#[tokio::test]
async fn a_held_audit_head_lock_fails_writes_after_the_lock_timeout() {
    let name = "a_held_audit_head_lock_fails_writes_after_the_lock_timeout";
    let Some((store, schema)) = pg_only(name, "lock", "", 2).await else {
        return;
    };
    let a = account(&store).await;

    let mut admin = admin().await;
    let mut held = sqlx::Connection::begin(&mut admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "UPDATE {schema}.audit_head SET seq = seq WHERE id = 1"
    )))
    .execute(&mut *held)
    .await
    .unwrap();

    let o = otp(&a, T0);
    let write = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        writes(&store).insert_otp(&o, &[]),
    )
    .await
    .expect("the write waited for the lock past its timeout");
    unavailable_and_unwritten(&store, &o, write).await;

    held.rollback().await.unwrap();
    writes(&store).insert_otp(&o, &[]).await.unwrap();
    assert!(store.get_otp(&a, &o.id).await.unwrap().is_some());

    store.close().await;
    drop_schema(&mut admin, &schema).await;
}

/// PostgreSQL keeps cards and events to accounts that exist whoever writes (the foreign
/// keys, bound to their tables whatever a session's `search_path`): a row moved to another
/// account, an account deleted while rows name it, an event of a missing account.
#[tokio::test]
async fn postgres_keeps_cards_and_events_to_existing_accounts() {
    let name = "postgres_keeps_cards_and_events_to_existing_accounts";
    let Some((store, schema)) = pg_only(name, "fk", "", 2).await else {
        return;
    };
    let a = account(&store).await;
    let c = crate::card(&a, Mode::Test, T0, &crate::fp(1));
    writes(&store)
        .insert_card(&c, &[(1, crate::fp(1))], &[])
        .await
        .unwrap();
    store.close().await;

    let mut admin = admin().await;
    let refused = [
        format!("UPDATE {schema}.cards SET account_id = 'acct_other'"),
        format!("UPDATE {schema}.events SET account_id = 'acct_other'"),
        format!("DELETE FROM {schema}.accounts"),
        format!(
            "INSERT INTO {schema}.events (id, account_id, mode, event_type, created_ms, data) \
             VALUES ('evt_x', 'acct_other', 'test', 'card.created', 1, '{{}}')"
        ),
    ];
    for sql in refused {
        let e = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut admin)
            .await
            .expect_err(&sql);
        let code = e
            .as_database_error()
            .and_then(|d| d.code())
            .unwrap_or_default();
        assert_eq!(code, "23503", "{sql}: {e}");
    }
    let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {schema}.cards WHERE account_id = $1"
    )))
    .bind(&a)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(left, 1);
    drop_schema(&mut admin, &schema).await;
}

/// For a PostgreSQL-only test `name`: a store in a fresh schema `t_<tag>_<pid>`, its URL
/// `url_args` added, with a pool of `max`; `None` (the test skipped) on SQLite.
async fn pg_only(name: &str, tag: &str, url_args: &str, max: u32) -> Option<(Store, String)> {
    if !crate::runs_on(crate::Backend::Postgres, name) {
        return None;
    }
    let schema = format!("t_{tag}_{}", std::process::id());
    let url = crate::pg_url();
    let url = match (url_args, url.contains('?')) {
        ("", _) => url,
        (args, true) => format!("{url}&{args}"),
        (args, false) => format!("{url}?{args}"),
    };
    let store = Store::connect(&StoreConfig {
        url,
        schema: Some(schema.clone()),
        max_connections: max,
    })
    .await
    .unwrap();
    Some((store, schema))
}

/// The write of `o` failed as unavailable (the API's 503) and left nothing behind.
async fn unavailable_and_unwritten(
    store: &Store,
    o: &OtpRecord,
    write: strongroom_store::StoreResult<()>,
) {
    assert!(
        matches!(write, Err(strongroom_store::StoreError::Unavailable(_))),
        "{write:?}"
    );
    assert!(store.get_otp(&o.account_id, &o.id).await.unwrap().is_none());
}

/// A connection to the test database outside any store (its default `search_path`).
async fn admin() -> sqlx::PgConnection {
    <sqlx::PgConnection as sqlx::Connection>::connect(&crate::pg_url())
        .await
        .unwrap()
}

async fn drop_schema(admin: &mut sqlx::PgConnection, schema: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(admin)
        .await
        .unwrap();
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        t.await.unwrap();
    }
}

fn assessment(account_id: &str, ms: i64) -> strongroom_store::AssessmentRecord {
    strongroom_store::AssessmentRecord {
        id: id(IdKind::RiskAssessment, ms),
        account_id: account_id.to_owned(),
        mode: Mode::Test,
        action: "payment".into(),
        score: 0,
        decision: "allow".into(),
        reasons: "[]".into(),
        features: "[1]".into(),
        rules_version: "builtin-1".into(),
        model_version: None,
        fingerprint: None,
        ip: None,
        email_digest: None,
        device_id: None,
        key_id: None,
        suspension_id: None,
        label: None,
        label_ms: None,
        created_ms: ms,
    }
}

store_test!(assessments_page_newest_first_across_equal_times);
async fn assessments_page_newest_first_across_equal_times(store: Store) {
    use strongroom_store::RiskStore;
    let a = account(&store).await;
    // Seven rows, three of them in one millisecond, one before the window.
    let mut made = Vec::new();
    for ms in [T0 - 1, T0, T0 + 1, T0 + 1, T0 + 1, T0 + 2, T0 + 3] {
        let r = assessment(&a, ms);
        writes(&store).insert_assessment(&r).await.unwrap();
        made.push(r);
    }
    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut before: Option<(i64, String)> = None;
    loop {
        let cursor = before.as_ref().map(|(t, i)| (*t, i.as_str()));
        let page = store
            .assessments_since(&a, Mode::Test, T0, cursor, 2)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|r| (r.created_ms, r.id.clone())));
        before = page.last().map(|r| (r.created_ms, r.id.clone()));
        if page.len() < 2 {
            break;
        }
    }
    // Every row in the window once, newest first (ties by id, descending).
    let mut want: Vec<(i64, String)> = made
        .iter()
        .filter(|r| r.created_ms >= T0)
        .map(|r| (r.created_ms, r.id.clone()))
        .collect();
    want.sort();
    want.reverse();
    assert_eq!(seen, want);
    // Another mode's rows are not an account's test rows.
    let live = store
        .assessments_since(&a, Mode::Live, T0, None, 10)
        .await
        .unwrap();
    assert!(live.is_empty());
}
