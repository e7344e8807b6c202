//! Dual-control key imports: a key made of components from different admin keys, each
//! checked by its check value; no component or key in an answer, a log or the database.

use crate::harness::*;
use serde_json::{Value, json};

/// A key check value computed by OpenSSL: the first 3 bytes of a zero block under `key`.
pub(crate) fn openssl_kcv(cipher: &str, key: &[u8]) -> String {
    let block = if cipher.starts_with("des") { 8 } else { 16 };
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero");
    std::fs::write(&zero, vec![0u8; block]).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "enc",
            &format!("-{cipher}"),
            "-nopad",
            "-K",
            &hex::encode(key),
            "-in",
        ])
        .arg(&zero)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hex::encode_upper(&out.stdout[..3])
}

pub(crate) async fn admin_key(srv: &TestServer, name: &str) -> (String, String) {
    let r = srv
        .post(
            "/v1/admin/admin_keys",
            &srv.admin_key,
            json!({"name": name}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    (
        r.body["secret"].as_str().unwrap().to_owned(),
        r.body["id"].as_str().unwrap().to_owned(),
    )
}

pub(crate) async fn component(srv: &TestServer, key: &str, id: &str, c: &[u8], kcv: &str) -> Resp {
    srv.post(
        &format!("/v1/admin/key_imports/{id}/components"),
        key,
        json!({"component": hex::encode(c), "kcv": kcv}),
    )
    .await
}

/// Imports `key` of `kind` and `algorithm` into the server's account as two components
/// from two new admin keys: the imported key's id.
pub(crate) async fn import_key(
    srv: &TestServer,
    kind: &str,
    algorithm: &str,
    key: &[u8],
) -> String {
    let cipher = match algorithm {
        "tdes2" => "des-ede-ecb",
        "tdes3" => "des-ede3-ecb",
        "aes128" => "aes-128-ecb",
        "aes192" => "aes-192-ecb",
        _ => "aes-256-ecb",
    };
    let (ada, _) = admin_key(srv, "Ada").await;
    let (bob, _) = admin_key(srv, "Bob").await;
    let r = srv
        .post(
            "/v1/admin/key_imports",
            &srv.admin_key,
            json!({"account": srv.account, "kind": kind, "algorithm": algorithm,
                "components": 2, "name": format!("{kind} {algorithm}")}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let c1 = strongroom_crypto::random::bytes::<32>().unwrap()[..key.len()].to_vec();
    let c2: Vec<u8> = key.iter().zip(&c1).map(|(a, b)| a ^ b).collect();
    let r = component(srv, &ada, &id, &c1, &openssl_kcv(cipher, &c1)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = component(srv, &bob, &id, &c2, &openssl_kcv(cipher, &c2)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["key"]["kcv"], openssl_kcv(cipher, key).as_str());
    r.body["key"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_key_is_imported_from_components_of_different_custodians() {
    let srv = TestServer::start().await;
    let (ada, ada_id) = admin_key(&srv, "Ada").await;
    let (bob, bob_id) = admin_key(&srv, "Bob").await;
    let start = |body: Value| srv.post("/v1/admin/key_imports", &srv.admin_key, body);
    // The published X9.24-1 test BDK, keyed in as two components.
    let bdk = hex::decode("0123456789ABCDEFFEDCBA9876543210").unwrap();
    let c1 = strongroom_crypto::random::bytes::<16>().unwrap();
    let c2: Vec<u8> = bdk.iter().zip(c1).map(|(a, b)| a ^ b).collect();
    let (k1, k2) = (
        openssl_kcv("des-ede-ecb", &c1),
        openssl_kcv("des-ede-ecb", &c2),
    );
    let body = json!({"account": srv.account, "kind": "bdk", "algorithm": "tdes2",
        "components": 2, "name": "Lane terminals"});
    // Malformed ceremonies.
    for (patch, status, code) in [
        (json!({"components": 1}), 400, "invalid_parameter"),
        (json!({"components": 4}), 400, "invalid_parameter"),
        (json!({"name": " "}), 400, "invalid_parameter"),
        (json!({"kind": "pvk"}), 400, "invalid_request"),
        (json!({"algorithm": "des"}), 400, "invalid_request"),
        (
            json!({"account": "acct_00000000000000000000000000000000"}),
            404,
            "not_found",
        ),
    ] {
        let mut b = body.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        start(b.clone()).await.assert_error(status, code);
    }
    let r = srv
        .post("/v1/admin/key_imports", &srv.sk_test, body.clone())
        .await;
    r.assert_error(403, "permission_denied");
    let r = start(body.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["state"], "awaiting_components");
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("kimp_"));

    // Bad components are refused and count for nothing.
    component(&srv, &ada, &id, &c1, &k2)
        .await
        .assert_error(400, "kcv_mismatch");
    component(&srv, &ada, &id, &c1[..8], &k1)
        .await
        .assert_error(400, "invalid_parameter");
    let r = srv
        .post(
            &format!("/v1/admin/key_imports/{id}/components"),
            &ada,
            json!({"component": "zz", "kcv": k1}),
        )
        .await;
    r.assert_error(400, "invalid_parameter");
    // Ada's component; Ada again is refused, whatever she keys in.
    let r = component(&srv, &ada, &id, &c1, &k1).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["components_received"], 1);
    assert!(r.body.get("key").is_none());
    component(&srv, &ada, &id, &c2, &k2)
        .await
        .assert_error(409, "custodian_repeated");
    // Bob's makes the key: its check value is the published one.
    let r = component(&srv, &bob, &id, &c2, &k2).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["state"], "complete");
    assert_eq!(r.body["key"]["kcv"], "08D7B4");
    assert_eq!(r.body["custodians"], json!([ada_id, bob_id]));
    let key_id = r.body["key"]["id"].as_str().unwrap().to_owned();
    assert!(key_id.starts_with("bdk_"), "{key_id}");
    component(&srv, &srv.admin_key, &id, &c2, &k2)
        .await
        .assert_error(409, "conflict");
    let got = srv
        .get(&format!("/v1/admin/key_imports/{id}"), &srv.admin_key)
        .await;
    assert_eq!(got.body["key"]["id"], key_id.as_str());
    srv.get(
        "/v1/admin/key_imports/kimp_00000000000000000000000000000000",
        &srv.admin_key,
    )
    .await
    .assert_error(404, "not_found");
    // The inventory lists it with its check value.
    let inv = srv.get("/v1/admin/key_inventory", &srv.admin_key).await;
    let listed = inv.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["kind"], "imported_key");
    assert_eq!(listed["purpose"], "bdk");
    assert_eq!(listed["kcv"], "08D7B4");

    // An AES key of three components, each checked by OpenSSL's AES.
    let parts: Vec<[u8; 32]> = (0..3)
        .map(|_| strongroom_crypto::random::bytes::<32>().unwrap())
        .collect();
    let r = start(json!({"account": srv.account, "kind": "zone_pin_key",
        "algorithm": "aes256", "components": 3, "name": "Processor ZPK"}))
    .await;
    let zid = r.body["id"].as_str().unwrap().to_owned();
    for (key, part) in [&ada, &bob, &srv.admin_key].into_iter().zip(&parts) {
        let r = component(&srv, key, &zid, part, &openssl_kcv("aes-256-ecb", part)).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let whole: Vec<u8> = (0..32)
        .map(|i| parts[0][i] ^ parts[1][i] ^ parts[2][i])
        .collect();
    let done = srv
        .get(&format!("/v1/admin/key_imports/{zid}"), &srv.admin_key)
        .await;
    assert_eq!(
        done.body["key"]["kcv"],
        openssl_kcv("aes-256-ecb", &whole).as_str()
    );
    assert!(done.body["key"]["id"].as_str().unwrap().starts_with("zpk_"));

    // A KEK of two components; then the test BDK as one TR-31 block under it, made by
    // psec (an independent implementation), imported whole.
    let kek_parts: Vec<[u8; 32]> = (0..2)
        .map(|_| strongroom_crypto::random::bytes::<32>().unwrap())
        .collect();
    let r = start(
        json!({"account": srv.account, "kind": "kek", "algorithm": "aes256",
        "components": 2, "name": "Processor KEK"}),
    )
    .await;
    let kid = r.body["id"].as_str().unwrap().to_owned();
    let mut kek_id = String::new();
    for (key, part) in [&ada, &bob].into_iter().zip(&kek_parts) {
        let r = component(&srv, key, &kid, part, &openssl_kcv("aes-256-ecb", part)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        kek_id = r.body["key"]["id"].as_str().unwrap_or_default().to_owned();
    }
    assert!(kek_id.starts_with("kek_"), "{kek_id}");
    let kek: Vec<u8> = (0..32).map(|i| kek_parts[0][i] ^ kek_parts[1][i]).collect();
    let psec = |header: &str| {
        let script = "import sys, psec.tr31 as t; \
            print(t.wrap(bytes.fromhex(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3])))";
        let out = std::process::Command::new("python3")
            .args([
                "-W",
                "ignore",
                "-c",
                script,
                &hex::encode(&kek),
                header,
                &hex::encode(&bdk),
            ])
            .output()
            .expect("python3 with psec (scripts/test installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let block = psec("D0000B0TX00N0000");
    let import_whole = |tr31: &str, kbpk: &str, kind: &str| {
        srv.post(
            "/v1/admin/key_imports",
            &srv.admin_key,
            json!({"account": srv.account, "kind": kind, "name": "From the processor",
                "tr31": tr31, "kbpk": kbpk}),
        )
    };
    let mut tampered = block.clone().into_bytes();
    let at = tampered.len() - 3;
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    import_whole(&tampered, &kek_id, "bdk")
        .await
        .assert_error(400, "key_block_invalid");
    import_whole(&block, &kek_id, "zone_pin_key")
        .await
        .assert_error(400, "key_block_usage");
    import_whole(&block, "kek_00000000000000000000000000000000", "bdk")
        .await
        .assert_error(404, "not_found");
    let mut both = body.clone();
    both["tr31"] = json!(block);
    both["kbpk"] = json!(kek_id);
    start(both).await.assert_error(400, "invalid_parameter");
    let r = import_whole(&block, &kek_id, "bdk").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["state"], "complete");
    assert_eq!(r.body["algorithm"], "tdes2");
    assert_eq!(r.body["key"]["kcv"], "08D7B4");
    assert!(r.body["key"]["id"].as_str().unwrap().starts_with("bdk_"));

    // No component, nor either key, in the logs or the database.
    let secrets = [
        hex::encode(c1),
        hex::encode(&c2),
        hex::encode(&bdk),
        hex::encode_upper(&bdk),
        hex::encode(&whole),
        hex::encode(&kek),
    ];
    assert_not_logged(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
    let data = srv.stop().await;
    for f in data.sqlite_files() {
        let db = std::fs::read(&f).unwrap();
        for needle in [
            &bdk[..],
            &c1[..],
            &c2[..],
            &whole[..],
            &parts[0][..],
            &kek[..],
        ] {
            assert!(
                !db.windows(needle.len()).any(|w| w == needle),
                "a key in {f:?}"
            );
        }
    }
}
