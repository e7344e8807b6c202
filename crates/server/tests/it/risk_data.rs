//! Country data loaded at run time (docs/risk.md, "Country data"): a BIN table uploaded
//! as CSV and an IP database uploaded as a `.mmdb` made by an independent writer
//! (mmdb-writer) turn the mismatch signals on at once; a bad upload is refused whole
//! with the line at fault and leaves the data in force; an upload wins over the
//! configuration's file after a restart, and another node takes it within seconds.

use crate::harness::{Data, Resp, TestServer, eventually};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

/// A small country database by mmdb-writer (`country` or `asn`).
fn mmdb(kind: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.mmdb");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new("python3")
        .arg(root.join("tests/interop/geo/make_mmdb.py"))
        .arg(&path)
        .arg(kind)
        .output()
        .unwrap_or_else(|e| panic!("python3 is required: {e}"));
    assert!(
        out.status.success(),
        "make_mmdb.py failed: pip install -r tests/interop/requirements.txt\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(path).unwrap()
}

async fn upload(srv: &TestServer, path: &str, content_type: &str, body: Vec<u8>) -> Resp {
    let r = srv
        .client
        .put(format!("{}{path}", srv.url))
        .bearer_auth(&srv.admin_key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    Resp::from(r).await
}

async fn put_bins(srv: &TestServer, csv: &str) -> Resp {
    upload(srv, "/v1/admin/risk/bin_table", "text/csv", csv.into()).await
}

/// The mismatch reasons of a US card (4242…) used from a British address, billed to Sweden.
async fn mismatches(srv: &TestServer) -> Vec<String> {
    let card = srv.tokenize("4242424242424242").await;
    let r = srv
        .post(
            "/v1/risk/assessments",
            &srv.sk_test,
            json!({"action": "payment", "card": card["id"], "ip": "81.2.69.5", "billing_country": "SE"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_str().unwrap().to_owned())
        .filter(|c| c.ends_with("country_mismatch"))
        .collect()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(strongroom_crypto::httpsig::sha256(b))
}

#[tokio::test]
async fn uploaded_country_data_turns_the_mismatch_signals_on_at_once() {
    let srv = TestServer::start().await;
    let none = srv.get("/v1/admin/risk/bin_table", &srv.admin_key).await;
    assert_eq!(none.status, 200, "{}", none.text);
    assert_eq!(
        (&none.body["source"], &none.body["prefixes"]),
        (&json!("none"), &json!(0))
    );
    assert_eq!(none.body["upload"], Value::Null);
    let none = srv.get("/v1/admin/risk/ip_database", &srv.admin_key).await;
    assert_eq!(none.body["source"], "none", "{}", none.text);
    assert_eq!(mismatches(&srv).await, Vec::<String>::new());

    let csv = "bin_prefix,country\n4242,US\n555555,GB\n";
    let r = put_bins(&srv, csv).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "risk_bin_table");
    assert_eq!(
        (&r.body["source"], &r.body["prefixes"]),
        (&json!("upload"), &json!(2))
    );
    assert_eq!(r.body["upload"]["version"], 1);
    assert_eq!(r.body["upload"]["sha256"], sha256_hex(csv.as_bytes()));
    assert_eq!(r.body["upload"]["size_bytes"], csv.len());
    assert!(
        r.body["upload"]["uploaded_by"]
            .as_str()
            .unwrap()
            .starts_with("admin:key_")
    );
    // The card's country is known now; the address's is not yet.
    assert_eq!(mismatches(&srv).await, ["bin_billing_country_mismatch"]);

    let db = mmdb("country");
    let r = upload(
        &srv,
        "/v1/admin/risk/ip_database",
        "application/octet-stream",
        db.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "risk_ip_database");
    assert_eq!(r.body["database_type"], "GeoLite2-Country");
    assert_eq!(r.body["ip_version"], 6);
    assert!(r.body["built_at"].as_i64().unwrap() > 1_600_000_000);
    assert_eq!(r.body["upload"]["sha256"], sha256_hex(&db));
    let mut got = mismatches(&srv).await;
    got.sort();
    assert_eq!(
        got,
        [
            "bin_billing_country_mismatch",
            "bin_ip_country_mismatch",
            "ip_billing_country_mismatch"
        ]
    );

    // A second table replaces the first whole: version 2.
    let r = put_bins(&srv, "4242,SE\n").await;
    assert_eq!(r.body["upload"]["version"], 2, "{}", r.text);
    let mut got = mismatches(&srv).await;
    got.sort();
    assert_eq!(
        got,
        ["bin_ip_country_mismatch", "ip_billing_country_mismatch"]
    );

    // Each upload is in the audit log with its version.
    let audit = srv
        .get(
            "/v1/admin/audit?action=risk_bin_table.update",
            &srv.admin_key,
        )
        .await;
    let resources: Vec<&str> = audit.body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", audit.text))
        .iter()
        .filter_map(|r| r["resource"].as_str())
        .collect();
    assert!(resources.contains(&"risk_bin_table:v2"), "{}", audit.text);
}

#[tokio::test]
async fn a_bad_upload_is_refused_whole_and_the_data_in_force_stays() {
    let srv = TestServer::start().await;
    assert_eq!(put_bins(&srv, "4242,US\n").await.status, 200);

    let r = put_bins(&srv, "bin_prefix,country\n4242,US\n41x1,GB\n").await;
    r.assert_error(400, "bin_table_invalid");
    assert_eq!(r.body["error"]["line"], 3, "{}", r.text);
    assert!(
        r.body["error"]["problem"]
            .as_str()
            .unwrap()
            .contains("digits")
    );
    assert!(
        !r.text.contains("41x1"),
        "the data is never echoed: {}",
        r.text
    );
    let r = put_bins(&srv, "4242,US\n4242,GB\n").await;
    r.assert_error(400, "bin_table_invalid");
    assert_eq!(r.body["error"]["line"], 2, "{}", r.text);
    put_bins(&srv, "# nothing but a comment\n")
        .await
        .assert_error(400, "bin_table_invalid");
    let now = srv.get("/v1/admin/risk/bin_table", &srv.admin_key).await;
    assert_eq!(now.body["upload"]["version"], 1, "{}", now.text);
    assert_eq!(mismatches(&srv).await, ["bin_billing_country_mismatch"]);

    let ip = "/v1/admin/risk/ip_database";
    let r = upload(
        &srv,
        ip,
        "application/octet-stream",
        b"not a database".to_vec(),
    )
    .await;
    r.assert_error(400, "ip_database_invalid");
    assert!(r.body["error"]["problem"].as_str().is_some(), "{}", r.text);
    // A well-formed database without countries (an ASN one) is refused too.
    upload(&srv, ip, "application/octet-stream", mmdb("asn"))
        .await
        .assert_error(400, "ip_database_invalid");
    let now = srv.get(ip, &srv.admin_key).await;
    assert_eq!(now.body["source"], "none", "{}", now.text);

    // The media type is the route's, and the size its limit.
    upload(
        &srv,
        "/v1/admin/risk/bin_table",
        "application/json",
        b"{}".to_vec(),
    )
    .await
    .assert_error(415, "unsupported_media_type");
    upload(&srv, ip, "text/csv", b"4242,US".to_vec())
        .await
        .assert_error(415, "unsupported_media_type");
    let big = vec![b'#'; 16 * 1024 * 1024 + 1];
    upload(&srv, "/v1/admin/risk/bin_table", "text/csv", big)
        .await
        .assert_error(413, "body_too_large");
    // Operators only.
    srv.client
        .put(format!("{}/v1/admin/risk/bin_table", srv.url))
        .bearer_auth(&srv.sk_test)
        .header("content-type", "text/csv")
        .body("4242,US\n")
        .send()
        .await
        .map(|r| assert_eq!(r.status(), 403))
        .unwrap();
}

#[tokio::test]
async fn an_upload_wins_over_the_config_file_and_reaches_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bins.csv");
    std::fs::write(&file, "4242,SE\n").unwrap();
    let config = move |c: &mut strongroom_server::ServerConfig| {
        c.risk_bin_table = Some(file.clone());
    };
    let a = TestServer::start_on(Arc::new(Data::new()), config.clone()).await;
    let r = a.get("/v1/admin/risk/bin_table", &a.admin_key).await;
    assert_eq!(
        (&r.body["source"], &r.body["prefixes"]),
        (&json!("config"), &json!(1))
    );
    // Billed to Sweden, a Swedish card: no mismatch.
    assert_eq!(mismatches(&a).await, Vec::<String>::new());

    // A second node on the same database.
    let b = TestServer::start_on(a.data.clone(), config.clone()).await;
    assert_eq!(put_bins(&a, "4242,US\n").await.status, 200);
    assert_eq!(mismatches(&a).await, ["bin_billing_country_mismatch"]);
    eventually("the other node takes the upload", || async {
        let r = b.get("/v1/admin/risk/bin_table", &b.admin_key).await;
        r.body["upload"]["version"] == 1
    })
    .await;
    assert_eq!(mismatches(&b).await, ["bin_billing_country_mismatch"]);

    // Restarted with the file still configured, the upload is in force.
    b.stop().await;
    let data = a.stop().await;
    let c = TestServer::start_on(data, config).await;
    let r = c.get("/v1/admin/risk/bin_table", &c.admin_key).await;
    assert_eq!(r.body["source"], "upload", "{}", r.text);
    assert_eq!(mismatches(&c).await, ["bin_billing_country_mismatch"]);
}
