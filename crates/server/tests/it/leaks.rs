//! Nothing sensitive reaches disk or logs in clear.

use crate::harness::*;
use serde_json::json;

const PANS: &[&str] = &[
    "4242424242424242",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
];

#[tokio::test]
async fn no_pan_in_clear_on_disk_or_in_logs() {
    let srv = TestServer::start().await;
    for pan in PANS {
        let c = srv.tokenize(pan).await;
        let id = c["id"].as_str().unwrap();
        assert_eq!(srv.reveal(&srv.rk_reveal, id).await.body["number"], *pan);
    }
    // A CVC is held in memory, never written: for a new card and a vaulted one.
    for (pan, cvc) in [("5105105105105100", "739"), ("378282246310005", "7319")] {
        let r = srv
            .post(
                "/v1/cards",
                &srv.sk_test,
                json!({"number": pan, "exp_month": 12, "exp_year": 2030, "cvc": cvc}),
            )
            .await;
        assert_eq!(r.body["cvc_available"], true, "{}", r.text);
    }
    // Refused input is not written or logged either.
    srv.post(
        "/v1/cards",
        &srv.sk_test,
        json!({"number": "4242424242424241", "exp_month": 12, "exp_year": 2030}),
    )
    .await
    .assert_error(400, "card_number_luhn");
    let keys = [
        srv.sk_test.clone(),
        srv.rk_reveal.clone(),
        srv.admin_key.clone(),
        srv.pk_test.clone(),
    ];
    let backend = backend();
    let store = srv.data.store.clone();
    let data = srv.stop().await;

    let mut needles: Vec<&str> = PANS.to_vec();
    needles.push("4242424242424241");
    needles.extend(keys.iter().map(String::as_str));
    let cvcs: Vec<String> = ["739", "7319"]
        .iter()
        .flat_map(|c| cvc_spellings(c))
        .collect();
    needles.extend(cvcs.iter().map(String::as_str));
    if backend == "postgres" {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::PgConnection::connect(&store.url).await.unwrap();
        let schema = store.schema.unwrap();
        let tables: Vec<String> = sqlx::query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
        )
        .bind(&schema)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
        assert!(tables.iter().any(|t| t == "cards"), "{tables:?}");
        for t in tables {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT t::text FROM \"{schema}\".\"{t}\" t"
            )))
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for r in rows {
                let text: String = r.get(0);
                for n in &needles {
                    assert!(!text.contains(n), "a secret appeared in clear in table {t}");
                }
            }
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{schema}\" CASCADE"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    } else {
        let files = data.sqlite_files();
        assert!(!files.is_empty());
        for f in files {
            assert_not_in_file(&f, &needles);
        }
    }
    assert_not_logged(&needles);
}
