//! The audit trail: what is recorded, tamper evidence, fail-closed behaviour.

use crate::harness::*;
use serde_json::{Value, json};
use std::str::FromStr;
use std::time::Duration;
use strongroom_crypto::RootKey;
use strongroom_crypto::audit::AuditSigner;
use strongroom_server::audit::{
    Broken, HASH, anchor, body, checkpoint_store, verify, verify_anchored,
};
use strongroom_store::{AuditCheckpoint, AuditStore, Store, StoreConfig};

/// A direct connection to the test server's database, as an intruder would have.
pub(crate) enum Db {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

impl Db {
    pub(crate) async fn open(store: &StoreConfig) -> Self {
        use sqlx::Connection;
        if store.url.starts_with("sqlite:") {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&store.url)
                .unwrap()
                .busy_timeout(std::time::Duration::from_secs(10));
            Db::Sqlite(sqlx::SqliteConnection::connect_with(&opts).await.unwrap())
        } else {
            let opts = sqlx::postgres::PgConnectOptions::from_str(&store.url)
                .unwrap()
                .options([("search_path", store.schema.clone().unwrap())]);
            Db::Pg(sqlx::PgConnection::connect_with(&opts).await.unwrap())
        }
    }

    pub(crate) async fn exec(&mut self, sql: &str) {
        let q = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Db::Sqlite(c) => sqlx::raw_sql(q).execute(&mut *c).await.map(drop),
            Db::Pg(c) => sqlx::raw_sql(q).execute(&mut *c).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        // The server's SQLite readers keep a read transaction for the audit trail's reads
        // for up to 2 ms while the server commits nothing itself; a change made behind its
        // back, as here, is seen once they have let it go. (Every edit here is to the
        // audit tables, and only the audit trail's reads read them.)
        if !self.pg() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn pg(&self) -> bool {
        matches!(self, Db::Pg(_))
    }

    /// Makes inserts into the audit log fail, as a full or read-only store would.
    async fn break_audit(&mut self) {
        if self.pg() {
            self.exec(
                "CREATE FUNCTION audit_block() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'audit log is read-only'; END $$; \
                 CREATE TRIGGER audit_block BEFORE INSERT ON audit_log \
                 FOR EACH ROW EXECUTE FUNCTION audit_block();",
            )
            .await;
        } else {
            self.exec(
                "CREATE TRIGGER audit_block BEFORE INSERT ON audit_log \
                 BEGIN SELECT RAISE(ABORT, 'audit log is read-only'); END;",
            )
            .await;
        }
    }

    async fn restore_audit(&mut self) {
        if self.pg() {
            self.exec("DROP TRIGGER audit_block ON audit_log; DROP FUNCTION audit_block();")
                .await;
        } else {
            self.exec("DROP TRIGGER audit_block;").await;
        }
    }
}

async fn audit_log(srv: &TestServer, query: &str) -> Vec<Value> {
    let r = srv
        .get(
            &format!("/v1/admin/audit?limit=1000{query}"),
            &srv.admin_key,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"].as_array().unwrap().clone()
}

fn find<'a>(log: &'a [Value], action: &str) -> Vec<&'a Value> {
    log.iter().filter(|r| r["action"] == action).collect()
}

#[tokio::test]
async fn requests_and_security_events_are_recorded_without_secrets() {
    let srv = TestServer::start().await;
    let pan = "5555555555554444";
    let card = srv.tokenize(pan).await;
    let id = card["id"].as_str().unwrap();
    srv.get(&format!("/v1/cards/{id}"), &srv.sk_test).await;
    // A wrong code, then the right one.
    let otp = srv
        .post(
            "/v1/otp",
            &srv.rk_reveal,
            json!({"purpose": "card.reveal", "card": id}),
        )
        .await;
    let otp_id = otp.body["id"].as_str().unwrap();
    let code = otp.body["test_code"].as_str().unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    srv.post(
        &format!("/v1/cards/{id}/reveal"),
        &srv.rk_reveal,
        json!({"otp": otp_id, "code": wrong}),
    )
    .await
    .assert_error(403, "otp_invalid");
    let ok = srv
        .post(
            &format!("/v1/cards/{id}/reveal"),
            &srv.rk_reveal,
            json!({"otp": otp_id, "code": code}),
        )
        .await;
    assert_eq!(ok.body["number"], pan);
    // Failed authentication, and a number pasted into a URL.
    srv.get("/v1/cards", "sk_test_nope")
        .await
        .assert_error(401, "invalid_api_key");
    srv.get(&format!("/v1/cards/card_{pan}"), &srv.sk_test)
        .await
        .assert_error(404, "not_found");

    // Three wrong codes exhaust an OTP: one event.
    let otp2 = srv
        .post(
            "/v1/otp",
            &srv.rk_reveal,
            json!({"purpose": "card.reveal", "card": id}),
        )
        .await;
    let otp2_id = otp2.body["id"].as_str().unwrap();
    let wrong2 = if otp2.body["test_code"] == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..3 {
        srv.post(
            &format!("/v1/cards/{id}/reveal"),
            &srv.rk_reveal,
            json!({"otp": otp2_id, "code": wrong2}),
        )
        .await
        .assert_error(403, "otp_invalid");
    }

    let log = audit_log(&srv, "").await;
    let rid = ok.headers["request-id"].to_str().unwrap();
    let reveal = find(&log, "card.reveal");
    let success: Vec<_> = reveal
        .iter()
        .filter(|r| r["outcome"] == "success")
        .collect();
    assert_eq!(success.len(), 1, "{reveal:?}");
    let r = success[0];
    assert_eq!(r["request_id"], rid);
    assert_eq!(r["account"], srv.account.as_str());
    assert_eq!(r["resource"], format!("card:{id}"));
    assert_eq!(r["route"], "/v1/cards/{id}/reveal");
    assert_eq!(r["method"], "POST");
    assert_eq!(r["client_ip"], "127.0.0.1");
    assert!(r["actor"].as_str().unwrap().starts_with("key_"));
    assert!(r["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        reveal
            .iter()
            .any(|r| r["outcome"] == "failure" && r["code"] == "otp_invalid"),
        "{reveal:?}"
    );
    assert_eq!(find(&log, "otp.failed").len(), 4);
    let exhausted = find(&log, "otp.exhausted");
    assert_eq!(exhausted.len(), 1);
    assert_eq!(exhausted[0]["resource"], format!("otp:{otp2_id}"));
    assert_eq!(find(&log, "otp.create").len(), 2);
    let created = find(&log, "card.create");
    assert_eq!(created[0]["resource"], format!("card:{id}"));
    assert_eq!(created[0]["outcome"], "success");
    assert_eq!(find(&log, "card.retrieve")[0]["code"], "200");
    let auth = find(&log, "auth.failed");
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0]["code"], "invalid_api_key");
    assert_eq!(auth[0]["actor"], "anonymous");
    assert!(!find(&log, "service.start").is_empty());
    // System provisioning (the harness's keys) is recorded too.
    assert!(find(&log, "api_key.create").len() >= 5);
    // The pasted number is not recorded as a resource, nor anywhere else.
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(pan));
    for k in [&srv.sk_test, &srv.rk_reveal, &srv.admin_key, &srv.pk_test] {
        assert!(!text.contains(k.as_str()));
    }
    // Sequence numbers are contiguous, oldest first; filters and paging work.
    for (i, r) in log.iter().enumerate() {
        assert_eq!(r["seq"].as_i64().unwrap(), i as i64 + 1);
    }
    let only = audit_log(&srv, "&action=otp.failed").await;
    assert_eq!(only.len(), 4);
    let page = srv
        .get("/v1/admin/audit?limit=2&starting_after=1", &srv.admin_key)
        .await;
    assert_eq!(page.body["data"][0]["seq"], 2);
    assert_eq!(page.body["has_more"], true);
    srv.get("/v1/admin/audit?limit=0", &srv.admin_key)
        .await
        .assert_error(400, "invalid_parameter");
    srv.get("/v1/admin/audit", &srv.sk_test)
        .await
        .assert_error(403, "permission_denied");
    // Admin actions on an account are found by that account.
    srv.get(
        &format!("/v1/admin/accounts/{}/keys", srv.account),
        &srv.admin_key,
    )
    .await;
    let by_account = audit_log(&srv, &format!("&account={}", srv.account)).await;
    let admin = find(&by_account, "data_key.list");
    assert_eq!(admin.len(), 1);
    assert!(
        admin[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin:key_")
    );
    assert_eq!(admin[0]["resource"], format!("account:{}", srv.account));
    // Unauthenticated health checks are not audit events.
    let n = audit_log(&srv, "").await.len();
    assert_eq!(
        srv.client
            .get(format!("{}/healthz", srv.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(audit_log(&srv, "").await.len(), n + 1); // only the audit query itself

    let data = srv.data.clone();
    srv.stop().await;
    let store = Store::connect(&data.store).await.unwrap();
    let pk = AuditSigner::derive(&RootKey::from_bytes(&data.root).unwrap())
        .unwrap()
        .public_key();
    let v = verify(&store, Some(&pk)).await.unwrap();
    assert_eq!(v.broken, None);
    assert!(v.checkpoints >= 2, "start and stop checkpoints");
    let (head, _) = store.audit_head().await.unwrap();
    assert_eq!(v.records, head);
    store.close().await;
}

#[tokio::test]
async fn records_behind_a_trusted_proxy_hold_the_clients_address() {
    // The test client on loopback plays a trusted proxy that forwards for 203.0.113.5.
    let proxied = TestServer::start_on(std::sync::Arc::new(Data::new()), |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    // Not behind one: the same header is the client's own claim and must not count.
    let direct = TestServer::start().await;
    let send = |srv: &TestServer, method: reqwest::Method, path: &str, key: &str| {
        let req = srv
            .client
            .request(method, format!("{}{path}", srv.url))
            .bearer_auth(key)
            .header("x-forwarded-for", "198.51.100.1, 203.0.113.5, 127.0.0.1");
        async move { Resp::from(req.send().await.unwrap()).await }
    };
    for (srv, expected) in [(&proxied, "203.0.113.5"), (&direct, "127.0.0.1")] {
        // A read (recorded after the handler), a refusal (anonymous) and a write (its
        // record commits with the change).
        assert_eq!(
            send(srv, reqwest::Method::GET, "/v1/cards", &srv.sk_test)
                .await
                .status,
            200
        );
        send(srv, reqwest::Method::GET, "/v1/cards", "sk_test_nope")
            .await
            .assert_error(401, "invalid_api_key");
        let r = srv
            .client
            .post(format!("{}/v1/cards", srv.url))
            .bearer_auth(&srv.sk_test)
            .header("x-forwarded-for", "203.0.113.5")
            .json(&json!({"number": test_pan(5150), "exp_month": 12, "exp_year": 2030}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let log = audit_log(srv, "").await;
        for action in ["card.list", "auth.failed", "card.create"] {
            let recs = find(&log, action);
            assert_eq!(recs.len(), 1, "{action}: {recs:?}");
            assert_eq!(recs[0]["client_ip"], expected, "{action}");
        }
    }
}

#[tokio::test]
async fn tampering_is_located_at_the_first_broken_record() {
    let srv = TestServer::start().await;
    for i in 0..6 {
        srv.tokenize(&test_pan(9000 + i)).await;
    }
    let data = srv.data.clone();
    srv.stop().await;
    let store = Store::connect(&data.store).await.unwrap();
    let pk = AuditSigner::derive(&RootKey::from_bytes(&data.root).unwrap())
        .unwrap()
        .public_key();
    let (head, _) = store.audit_head().await.unwrap();
    assert!(head > 12, "{head}");
    assert_eq!(verify(&store, Some(&pk)).await.unwrap().broken, None);

    let mut db = Db::open(&data.store).await;
    db.exec("CREATE TABLE audit_backup AS SELECT * FROM audit_log")
        .await;
    let restore = "DELETE FROM audit_log; INSERT INTO audit_log SELECT * FROM audit_backup";
    let cols = "time_ms, request_id, account_id, actor, action, resource, outcome, code, \
                client_ip, method, route, hash";
    type Expect = Box<dyn Fn(&Broken) -> bool>;
    let cases: Vec<(String, Expect, i64)> = vec![
        (
            "UPDATE audit_log SET outcome = 'failure' WHERE seq = 5".into(),
            Box::new(|b| matches!(b, Broken::Hash(5))),
            5,
        ),
        (
            "DELETE FROM audit_log WHERE seq = 4".into(),
            Box::new(|b| {
                matches!(
                    b,
                    Broken::Gap {
                        expected: 4,
                        found: 5
                    }
                )
            }),
            4,
        ),
        (
            "UPDATE audit_log SET seq = -1 WHERE seq = 7; \
             UPDATE audit_log SET seq = 7 WHERE seq = 8; \
             UPDATE audit_log SET seq = 8 WHERE seq = -1"
                .into(),
            Box::new(|b| matches!(b, Broken::Hash(7))),
            7,
        ),
        (
            format!(
                "UPDATE audit_log SET seq = seq + 1000000 WHERE seq >= 6; \
                 UPDATE audit_log SET seq = seq - 999999 WHERE seq >= 1000000; \
                 INSERT INTO audit_log (seq, {cols}) SELECT 6, {cols} FROM audit_backup WHERE seq = 3"
            ),
            Box::new(|b| matches!(b, Broken::Hash(6))),
            6,
        ),
        (
            format!("DELETE FROM audit_log WHERE seq > {}", head - 3),
            Box::new(
                move |b| matches!(b, Broken::Truncated { end, checkpoint } if *end == head - 3 && *checkpoint == head),
            ),
            head - 2,
        ),
    ];
    for (sql, expect, position) in cases {
        db.exec(&sql).await;
        let v = verify(&store, Some(&pk)).await.unwrap();
        let broken = v.broken.unwrap_or_else(|| panic!("not detected: {sql}"));
        assert!(expect(&broken), "{sql}: {broken:?}");
        assert_eq!(broken.position(), position, "{sql}");
        assert!(
            broken.to_string().contains(&format!("record {position}")),
            "{broken}"
        );
        db.exec(restore).await;
        assert_eq!(verify(&store, Some(&pk)).await.unwrap().broken, None);
    }

    // A forger who rewrites a record and recomputes every later hash (SHA-256 is not
    // keyed) is caught by the signed checkpoint at the head.
    let rows = store.audit_range(0, 10_000).await.unwrap();
    let mut prev = rows[3].hash.clone();
    for r in rows.iter().skip(4) {
        let mut r = r.clone();
        if r.seq == 5 {
            r.actor = "forged".into();
            db.exec("UPDATE audit_log SET actor = 'forged' WHERE seq = 5")
                .await;
        }
        let h = strongroom_crypto::audit::chain_hash(
            &prev.clone().try_into().unwrap(),
            &r.canonical(r.seq),
        );
        db.exec(&format!(
            "UPDATE audit_log SET hash = {} WHERE seq = {}",
            hex_literal(&h, db.pg()),
            r.seq
        ))
        .await;
        prev = h.to_vec();
    }
    let v = verify(&store, Some(&pk)).await.unwrap();
    assert_eq!(v.broken, Some(Broken::CheckpointMismatch(head)), "{v:?}");
    db.exec(restore).await;
    // A checkpoint whose signature does not verify (here: moved in time), or one signed
    // by another key.
    db.exec("UPDATE audit_checkpoints SET time_ms = time_ms + 1 WHERE seq = 1")
        .await;
    assert_eq!(
        verify(&store, Some(&pk)).await.unwrap().broken,
        Some(Broken::BadSignature(1))
    );
    db.exec("UPDATE audit_checkpoints SET time_ms = time_ms - 1 WHERE seq = 1")
        .await;
    let other = AuditSigner::derive(&RootKey::from_bytes(&[9u8; 32]).unwrap())
        .unwrap()
        .public_key();
    assert!(matches!(
        verify(&store, Some(&other)).await.unwrap().broken,
        Some(Broken::BadSignature(_))
    ));
    assert_eq!(verify(&store, Some(&pk)).await.unwrap().broken, None);
    store.close().await;
}

#[tokio::test]
async fn a_tail_cut_with_its_checkpoints_is_caught_by_the_anchor() {
    let srv = TestServer::start().await;
    for i in 0..4 {
        srv.tokenize(&test_pan(9100 + i)).await;
    }
    // Checkpoints at start and at shutdown, twice: the second run goes on from the first.
    let data = srv.stop().await;
    let data = TestServer::start_on(data, |_| {}).await.stop().await;
    let store = Store::connect(&data.store).await.unwrap();
    let pk = AuditSigner::derive(&RootKey::from_bytes(&data.root).unwrap())
        .unwrap()
        .public_key();
    let read_anchor = || anchor::read(&data.anchor()).unwrap();
    let cps = store.checkpoints().await.unwrap();
    assert_eq!(cps.len(), 4, "{cps:?}");
    // Every checkpoint is chained and anchored, in order.
    for (i, cp) in cps.iter().enumerate() {
        assert_eq!(cp.link.as_ref().unwrap().count, i as i64 + 1);
    }
    let anchored: Vec<_> = read_anchor()
        .entries
        .into_iter()
        .map(|e| e.checkpoint.unwrap())
        .collect();
    assert_eq!(anchored, cps);
    let v = verify_anchored(&store, Some(&pk), Some(&read_anchor()))
        .await
        .unwrap();
    assert_eq!(v.broken, None, "{v:?}");
    assert_eq!(v.anchored, Some(cps.len()));
    assert_eq!(v.newest.as_ref(), cps.last());

    // The intruder keeps the log up to the first checkpoint: deletes the later records
    // and checkpoints and resets the head. The database alone still verifies...
    let (first, last) = (cps[0].seq, cps.last().unwrap().seq);
    let mut db = Db::open(&data.store).await;
    db.exec(
        "CREATE TABLE log_backup AS SELECT * FROM audit_log; \
             CREATE TABLE cp_backup AS SELECT * FROM audit_checkpoints; \
             CREATE TABLE head_backup AS SELECT * FROM audit_head",
    )
    .await;
    let restore = "DELETE FROM audit_log; INSERT INTO audit_log SELECT * FROM log_backup; \
                   DELETE FROM audit_checkpoints; \
                   INSERT INTO audit_checkpoints SELECT * FROM cp_backup; \
                   DELETE FROM audit_head; INSERT INTO audit_head SELECT * FROM head_backup";
    db.exec(&format!(
        "DELETE FROM audit_log WHERE seq > {first}; \
         DELETE FROM audit_checkpoints WHERE seq > {first}; \
         UPDATE audit_head SET seq = {first}, hash = {} WHERE id = 1",
        hex_literal(&cps[0].hash, db.pg())
    ))
    .await;
    assert_eq!(verify(&store, Some(&pk)).await.unwrap().broken, None);
    // ...but not against the anchor.
    let v = verify_anchored(&store, Some(&pk), Some(&read_anchor()))
        .await
        .unwrap();
    let count = cps.len() as i64;
    assert_eq!(
        v.broken,
        Some(Broken::AnchorTruncated {
            end: first,
            count,
            seq: last
        })
    );
    assert_eq!(v.newest_anchored.as_ref(), cps.last());
    db.exec(restore).await;

    // Only the newest checkpoint deleted (records kept): missing from the database.
    db.exec(&format!("DELETE FROM audit_checkpoints WHERE seq = {last}"))
        .await;
    assert_eq!(verify(&store, Some(&pk)).await.unwrap().broken, None);
    assert_eq!(
        verify_anchored(&store, Some(&pk), Some(&read_anchor()))
            .await
            .unwrap()
            .broken,
        Some(Broken::AnchorDisagrees {
            count,
            seq: last,
            missing: true
        })
    );
    db.exec(restore).await;
    // A checkpoint in the middle deleted: the next one no longer follows.
    db.exec(&format!(
        "DELETE FROM audit_checkpoints WHERE seq = {}",
        cps[1].seq
    ))
    .await;
    assert_eq!(
        verify(&store, Some(&pk)).await.unwrap().broken,
        Some(Broken::CheckpointChain(cps[2].seq))
    );
    db.exec(restore).await;

    // An anchor line edited by hand (a later time) no longer verifies.
    let text = std::fs::read_to_string(data.anchor()).unwrap();
    let t = cps[0].time_ms.to_string();
    let edited = text.replacen(&t, &(cps[0].time_ms + 1).to_string(), 1);
    assert_ne!(edited, text);
    std::fs::write(data.anchor(), &edited).unwrap();
    assert_eq!(
        verify_anchored(&store, Some(&pk), Some(&read_anchor()))
            .await
            .unwrap()
            .broken,
        Some(Broken::BadAnchorLine(1))
    );
    std::fs::write(data.anchor(), &text).unwrap();
    assert_eq!(
        verify_anchored(&store, Some(&pk), Some(&read_anchor()))
            .await
            .unwrap()
            .broken,
        None
    );
    store.close().await;
}

#[tokio::test]
async fn unchained_checkpoints_still_verify_and_the_chain_goes_on_from_them() {
    let data = Data::new();
    let a = Store::connect(&data.store).await.unwrap();
    let b = Store::connect(&data.store).await.unwrap();
    let signer = AuditSigner::derive(&RootKey::from_bytes(&data.root).unwrap()).unwrap();
    let pk = signer.public_key();
    let rec = |i: i64| strongroom_store::AuditRecord {
        time_ms: 1,
        actor: "system".into(),
        action: format!("test.{i}"),
        outcome: "success".into(),
        ..Default::default()
    };
    // Two checkpoints as they were made before chaining.
    for i in 0..2 {
        a.append_audit(vec![rec(i)], HASH).await.unwrap();
        let (seq, h) = a.audit_head().await.unwrap();
        a.insert_checkpoint(&AuditCheckpoint {
            seq,
            hash: h.clone(),
            time_ms: 10 + i,
            public_key: pk.clone(),
            signature: signer.sign_checkpoint(seq, &h, 10 + i),
            link: None,
        })
        .await
        .unwrap();
    }
    assert_eq!(verify(&a, Some(&pk)).await.unwrap().broken, None);
    // Two nodes checkpoint at once, again and again: one chain, no fork.
    let path = data.anchor();
    let mut tasks = Vec::new();
    for i in 0..12_i64 {
        let (s, path) = (if i % 2 == 0 { a.clone() } else { b.clone() }, path.clone());
        let signer = AuditSigner::derive(&RootKey::from_bytes(&data.root).unwrap()).unwrap();
        tasks.push(tokio::spawn(async move {
            s.append_audit(vec![rec(100 + i)], HASH).await.unwrap();
            checkpoint_store(&s, &signer, 1000 + i, Some(&path))
                .await
                .unwrap()
        }));
    }
    let mut made = 0;
    for t in tasks {
        made += usize::from(t.await.unwrap().new.is_some());
    }
    assert!(made >= 1);
    // Node A's readers may keep a snapshot from before node B's last commit for up to
    // 2 ms (the bound for another server's writes on one SQLite file).
    eventually("node A sees every checkpoint", || async {
        a.checkpoints().await.unwrap().len() == 2 + made
    })
    .await;
    let cps = a.checkpoints().await.unwrap();
    assert_eq!(cps.len(), 2 + made);
    let first = cps[2].link.as_ref().unwrap();
    assert_eq!(
        first.count, 3,
        "the first chained checkpoint counts the older ones"
    );
    assert_eq!(first.prev, body(&cps[1]).digest().to_vec());
    let anchored = anchor::read(&path).unwrap();
    assert_eq!(anchored.entries.len(), made);
    let v = verify_anchored(&a, Some(&pk), Some(&anchored))
        .await
        .unwrap();
    assert_eq!(v.broken, None, "{v:?}");
    assert_eq!((v.checkpoints, v.chained), (2 + made, made));
    // An unchained checkpoint after chained ones is out of place.
    a.append_audit(vec![rec(999)], HASH).await.unwrap();
    let (seq, h) = a.audit_head().await.unwrap();
    a.insert_checkpoint(&AuditCheckpoint {
        seq,
        hash: h.clone(),
        time_ms: 5000,
        public_key: pk.clone(),
        signature: signer.sign_checkpoint(seq, &h, 5000),
        link: None,
    })
    .await
    .unwrap();
    assert_eq!(
        verify(&a, Some(&pk)).await.unwrap().broken,
        Some(Broken::CheckpointChain(seq))
    );
    a.close().await;
    b.close().await;
}

fn hex_literal(b: &[u8], pg: bool) -> String {
    if pg {
        format!("decode('{}', 'hex')", hex::encode(b))
    } else {
        format!("X'{}'", hex::encode(b))
    }
}

#[tokio::test]
async fn an_unwritable_audit_log_stops_reveals_and_nothing_leaks() {
    let srv = TestServer::start().await;
    let pan = "4111111111111111";
    let id = srv.tokenize(pan).await["id"].as_str().unwrap().to_owned();
    let otp = srv
        .post(
            "/v1/otp",
            &srv.rk_reveal,
            json!({"purpose": "card.reveal", "card": id}),
        )
        .await;
    let otp_id = otp.body["id"].as_str().unwrap().to_owned();
    let code = otp.body["test_code"].as_str().unwrap().to_owned();
    let path = format!("/v1/cards/{id}/reveal");
    let reveal = || srv.post(&path, &srv.rk_reveal, json!({"otp": otp_id, "code": code}));
    let before = audit_log(&srv, "").await.len() as i64;

    let mut db = Db::open(&srv.data.store).await;
    db.break_audit().await;
    let r = reveal().await;
    r.assert_error(503, "audit_unavailable");
    assert!(!r.text.contains(pan), "the number left without a record");
    assert!(r.body.get("number").is_none());
    // Reads, writes and readiness all refuse; nothing is half-written.
    srv.get(&format!("/v1/cards/{id}"), &srv.sk_test)
        .await
        .assert_error(503, "audit_unavailable");
    srv.post(
        "/v1/cards",
        &srv.sk_test,
        json!({"number": test_pan(77), "exp_month": 12, "exp_year": 2030}),
    )
    .await
    .assert_error(503, "audit_unavailable");
    let list = srv.get("/v1/cards?limit=100", &srv.sk_test).await;
    list.assert_error(503, "audit_unavailable");
    let ready = srv
        .client
        .get(format!("{}/readyz", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["error"]["code"], "audit_unavailable");

    db.restore_audit().await;
    // The readiness answer is reused for a second.
    srv.clock.advance(Duration::from_secs(2));
    let ready = srv
        .client
        .get(format!("{}/readyz", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // The OTP was not spent by the refused reveal: it works now, and is recorded.
    let r = reveal().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["number"], pan);
    let list = srv.get("/v1/cards?limit=100", &srv.sk_test).await;
    assert_eq!(
        list.body["data"].as_array().unwrap().len(),
        1,
        "the refused tokenize wrote nothing"
    );
    let log = audit_log(&srv, "&action=card.reveal").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["outcome"], "success");
    assert!(log[0]["seq"].as_i64().unwrap() > before);
    let data = srv.data.clone();
    srv.stop().await;
    let store = Store::connect(&data.store).await.unwrap();
    assert_eq!(verify(&store, None).await.unwrap().broken, None);
    store.close().await;
}

#[tokio::test]
async fn concurrent_appends_from_two_nodes_keep_one_chain() {
    // Two stores on one database stand for two nodes: the head row serialises them.
    let data = Data::new();
    let a = Store::connect(&data.store).await.unwrap();
    let b = Store::connect(&data.store).await.unwrap();
    let rec = |i: usize| strongroom_store::AuditRecord {
        time_ms: 1,
        actor: "system".into(),
        action: format!("test.{i}"),
        outcome: "success".into(),
        ..Default::default()
    };
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            s.append_audit(vec![rec(i), rec(i + 100)], strongroom_server::audit::HASH)
                .await
                .unwrap()
        }));
    }
    let mut heads = Vec::new();
    for t in tasks {
        heads.push(t.await.unwrap());
    }
    heads.sort_unstable();
    heads.dedup();
    assert_eq!(heads.len(), 40, "every append got its own head");
    let v = verify(&a, None).await.unwrap();
    assert_eq!(v.broken, None);
    assert_eq!(v.records, 80);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn the_head_is_checkpointed_at_intervals() {
    let srv = TestServer::start_on(std::sync::Arc::new(Data::new()), |c| {
        c.audit_checkpoint_interval = std::time::Duration::from_millis(50);
    })
    .await;
    srv.tokenize(&test_pan(4242)).await;
    let store = srv.running.state().unwrap().store().clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (head, _) = store.audit_head().await.unwrap();
        let cp = store.latest_checkpoint().await.unwrap().unwrap();
        if cp.seq >= head && cp.seq > 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint at the head"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    srv.stop().await;
}

/// A sprayer of bad keys: its first failure is recorded as itself, the rest as one
/// count per network and code when the window is over, never a record each.
#[tokio::test]
async fn repeated_auth_failures_are_counted_not_written_each() {
    let srv = TestServer::start().await;
    let bogus = format!("sk_test_{}", "x".repeat(40));
    for _ in 0..25 {
        srv.get("/v1/cards", &bogus)
            .await
            .assert_error(401, "invalid_api_key");
    }
    srv.get("/v1/cards", &bogus)
        .await
        .assert_error(401, "invalid_api_key");
    let failed = audit_log(&srv, "&action=auth.failed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["code"], "invalid_api_key");
    assert_eq!(failed[0]["actor"], "anonymous");
    assert_eq!(failed[0]["client_ip"], "127.0.0.1");
    assert!(
        audit_log(&srv, "&action=auth.failed.repeated")
            .await
            .is_empty()
    );

    // Once the window is over, the next recorded request carries the count.
    srv.clock.advance(Duration::from_secs(61));
    assert_eq!(srv.get("/v1/cards", &srv.sk_test).await.status, 200);
    let repeated = audit_log(&srv, "&action=auth.failed.repeated").await;
    assert_eq!(repeated.len(), 1, "{repeated:?}");
    assert_eq!(repeated[0]["resource"], "repeats:25");
    assert_eq!(repeated[0]["code"], "invalid_api_key");
    assert_eq!(repeated[0]["client_ip"], "127.0.0.1");
    assert_eq!(repeated[0]["outcome"], "failure");
    assert_eq!(repeated[0]["request_id"], failed[0]["request_id"]);
    // A new window: the next failure is written again.
    srv.get("/v1/cards", &bogus)
        .await
        .assert_error(401, "invalid_api_key");
    assert_eq!(audit_log(&srv, "&action=auth.failed").await.len(), 2);
}

/// `/readyz` goes through the single writer: it answers from a one-second cache, and
/// is limited per client address.
#[tokio::test]
async fn readiness_is_cached_for_a_second_and_limited_per_address() {
    let srv = TestServer::start_on(std::sync::Arc::new(Data::new()), |c| {
        c.rate_limit.ip_per_minute = 3;
    })
    .await;
    let ready = || async {
        let r = srv
            .client
            .get(format!("{}/readyz", srv.url))
            .send()
            .await
            .unwrap();
        Resp::from(r).await
    };
    assert_eq!(ready().await.status, 200);
    let mut db = Db::open(&srv.data.store).await;
    db.break_audit().await;
    // Within the second: the cached answer, no probe through the writer.
    assert_eq!(ready().await.status, 200);
    srv.clock.advance(Duration::from_secs(2));
    ready().await.assert_error(503, "audit_unavailable");
    db.restore_audit().await;
    // The address has spent its three: refused before any check.
    let r = ready().await;
    r.assert_error(429, "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
}
