//! The admin API: accounts and API keys.

use crate::harness::*;
use serde_json::json;

#[tokio::test]
async fn accounts_and_keys_lifecycle() {
    let srv = TestServer::start().await;
    let a = srv
        .post(
            "/v1/admin/accounts",
            &srv.admin_key,
            json!({"name": "Acme"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let acct = a.body["id"].as_str().unwrap().to_owned();
    assert!(acct.starts_with("acct_"));
    assert_eq!(a.body["name"], "Acme");
    // One schema for every account response: the rate limit is always there.
    assert!(a.body["rate_limit_per_minute"].is_null());
    assert!(a.body.get("otp_signing_secret").is_none());
    let got = srv
        .get(&format!("/v1/admin/accounts/{acct}"), &srv.admin_key)
        .await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert!(
        got.body
            .as_object()
            .unwrap()
            .contains_key("rate_limit_per_minute")
    );
    assert_eq!(got.body["object"], "account");

    let path = format!("/v1/admin/accounts/{acct}/api_keys");
    let sk = srv
        .post(
            &path,
            &srv.admin_key,
            json!({"kind": "secret", "mode": "test"}),
        )
        .await;
    assert_eq!(sk.status, 201, "{}", sk.text);
    let secret = sk.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk_test_") && secret.len() > 40);
    assert!(secret.starts_with(sk.body["prefix"].as_str().unwrap()));
    assert_eq!(sk.body["kind"], "secret");
    assert_eq!(sk.body["mode"], "test");
    assert_eq!(
        sk.body["scopes"],
        json!([
            "cards:write",
            "cards:read",
            "cards:delete",
            "pins:write",
            "pins:verify",
            "account:read",
            "account:write",
            "signing_keys:write",
            "events:read",
            "webhooks:read",
            "webhooks:write",
            "cards:relay",
            "risk:read",
            "risk:write",
            "terminals:write",
            "terminals:use"
        ])
    );

    let pk = srv
        .post(
            &path,
            &srv.admin_key,
            json!({"kind": "publishable", "mode": "live"}),
        )
        .await;
    assert!(pk.body["secret"].as_str().unwrap().starts_with("pk_live_"));
    assert_eq!(pk.body["scopes"], json!(["cards:write"]));
    let rk = srv
        .post(
            &path,
            &srv.admin_key,
            json!({"kind": "restricted", "mode": "test", "scopes": ["cards:read"]}),
        )
        .await;
    assert!(rk.body["secret"].as_str().unwrap().starts_with("rk_test_"));
    assert_eq!(rk.body["scopes"], json!(["cards:read"]));

    // Bad key requests.
    srv.post(
        &path,
        &srv.admin_key,
        json!({"kind": "restricted", "mode": "test"}),
    )
    .await
    .assert_error(400, "scopes_required");
    srv.post(
        &path,
        &srv.admin_key,
        json!({"kind": "restricted", "mode": "test", "scopes": ["cards:all"]}),
    )
    .await
    .assert_error(400, "scope_unknown");
    srv.post(
        &path,
        &srv.admin_key,
        json!({"kind": "secret", "mode": "test", "scopes": ["cards:reveal"]}),
    )
    .await
    .assert_error(400, "scopes_not_allowed");
    // More names than there are scopes (the schema's maxItems).
    srv.post(
        &path,
        &srv.admin_key,
        json!({"kind": "restricted", "mode": "test", "scopes": vec!["cards:read"; strongroom_core::Scope::ALL.len() + 1]}),
    )
    .await
    .assert_error(400, "invalid_parameter");
    srv.post(
        &path,
        &srv.admin_key,
        json!({"kind": "root", "mode": "test"}),
    )
    .await
    .assert_error(400, "invalid_parameter");
    srv.post(
        &path,
        &srv.admin_key,
        json!({"kind": "secret", "mode": "prod"}),
    )
    .await
    .assert_error(400, "invalid_parameter");
    srv.post(
        "/v1/admin/accounts/acct_00000000000000000000000000000000/api_keys",
        &srv.admin_key,
        json!({"kind": "secret", "mode": "test"}),
    )
    .await
    .assert_error(404, "not_found");

    // The list shows prefixes and metadata, never secrets.
    let list = srv.get(&path, &srv.admin_key).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["data"].as_array().unwrap().len(), 3);
    assert!(!list.text.contains(&secret));
    assert!(list.body["data"][0].get("secret").is_none());

    // The new key works, then is revoked.
    assert_eq!(srv.get("/v1/cards", &secret).await.status, 200);
    let kid = sk.body["id"].as_str().unwrap();
    let r = srv.delete(&format!("{path}/{kid}"), &srv.admin_key).await;
    assert_eq!(r.status, 200);
    srv.get("/v1/cards", &secret)
        .await
        .assert_error(401, "api_key_revoked");
    srv.delete(
        &format!("{path}/key_00000000000000000000000000000000"),
        &srv.admin_key,
    )
    .await
    .assert_error(404, "not_found");

    // Account keys cannot use the admin API; the admin key cannot use the account API.
    srv.get(&path, &srv.sk_test)
        .await
        .assert_error(403, "permission_denied");
    srv.get("/v1/cards", &srv.admin_key)
        .await
        .assert_error(401, "invalid_api_key");
    srv.call(reqwest::Method::GET, &path, None, None)
        .await
        .assert_error(401, "authentication_required");

    // Account read and update.
    let got = srv
        .get(&format!("/v1/admin/accounts/{acct}"), &srv.admin_key)
        .await;
    assert_eq!(got.body["name"], "Acme");
    let up = srv
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/admin/accounts/{acct}"),
            Some(&srv.admin_key),
            Some(json!({"name": "Acme Ltd"})),
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.text);
    assert_eq!(up.body["name"], "Acme Ltd");
    srv.post("/v1/admin/accounts", &srv.admin_key, json!({"name": ""}))
        .await
        .assert_error(400, "invalid_parameter");
    srv.post(
        "/v1/admin/accounts",
        &srv.admin_key,
        json!({"name": "x", "otp_delivery_url": "http://example.com/otp"}),
    )
    .await
    .assert_error(400, "url_not_allowed");
    assert_not_logged(&[&secret, &srv.admin_key]);
}

#[tokio::test]
async fn openapi_is_served_and_matches_the_committed_copy() {
    let srv = TestServer::start().await;
    let r = srv
        .call(reqwest::Method::GET, "/v1/openapi.json", None, None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body["paths"]["/v1/cards"]["post"].is_object());
    assert!(r.body["paths"]["/v1/cards/{id}/reveal"]["post"].is_object());
    let codes: Vec<&str> = r.body["x-error-codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    for c in [
        "card_number_invalid",
        "card_number_luhn",
        "card_brand_unknown",
        "expiry_invalid",
        "card_expired",
        "test_card_in_live_mode",
        "unknown_field",
        "body_too_large",
        "unsupported_media_type",
        "authentication_required",
        "invalid_api_key",
        "api_key_revoked",
        "permission_denied",
        "otp_invalid",
        "not_found",
    ] {
        assert!(codes.contains(&c), "{c}");
    }
    // Every operation that takes a credential lists every 401 it can give: all of them, or
    // for an admin route (admin key only) the key's three.
    let all_401: std::collections::BTreeSet<&str> = r.body["x-error-codes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == 401)
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert!(all_401.contains("token_expired") && all_401.contains("signature_invalid"));
    let admin_401: std::collections::BTreeSet<&str> = [
        "authentication_required",
        "invalid_api_key",
        "api_key_revoked",
    ]
    .into();
    let mut secured = 0;
    for (path, item) in r.body["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["security"].as_array().is_none_or(|s| s.is_empty()) {
                continue;
            }
            secured += 1;
            let listed: std::collections::BTreeSet<&str> = op["responses"]["401"]["description"]
                .as_str()
                .unwrap_or_default()
                .split(", ")
                .collect();
            let want = if path.starts_with("/v1/admin/") {
                &admin_401
            } else {
                &all_401
            };
            assert_eq!(&listed, want, "401 of {method} {path}");
        }
    }
    assert!(secured > 40, "{secured} operations take a credential");
    let committed_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = serde_json::to_string_pretty(&r.body).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&committed_path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test -p strongroom-server --test it openapi` and commit it"
    );
}

#[tokio::test]
async fn admin_keys_are_created_restricted_by_ip_and_revoked() {
    let srv = TestServer::start().await;
    let account = format!("/v1/admin/accounts/{}", srv.account);
    for bad in ["", "  ", "a\u{7}b", &"x".repeat(101)] {
        srv.post("/v1/admin/admin_keys", &srv.admin_key, json!({"name": bad}))
            .await
            .assert_error(400, "invalid_parameter");
    }
    let created = srv
        .post(
            "/v1/admin/admin_keys",
            &srv.admin_key,
            json!({"name": " Ada Custodian "}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["name"], "Ada Custodian");
    let second = created.body["secret"].as_str().unwrap().to_owned();
    let second_id = created.body["id"].as_str().unwrap().to_owned();
    assert!(second.starts_with("sk_admin_"));
    assert_eq!(created.body["kind"], "admin");
    assert_eq!(srv.get(&account, &second).await.status, 200);

    let list = srv.get("/v1/admin/admin_keys", &second).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let keys = list.body["data"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let named: Vec<_> = keys.iter().filter_map(|k| k["name"].as_str()).collect();
    assert_eq!(named, ["Ada Custodian"], "{}", list.text);
    let first_id = keys.iter().find(|k| k["id"] != second_id.as_str()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Restricted to another network: refused from here, before the handler.
    let allow = |key_id: &str| format!("/v1/admin/admin_keys/{key_id}/ip_allowlist");
    let r = srv
        .call(
            reqwest::Method::PUT,
            &allow(&second_id),
            Some(&srv.admin_key),
            Some(json!({"cidrs": ["10.0.0.0/8", "2001:db8::/32"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["ip_allowlist"],
        json!(["10.0.0.0/8", "2001:db8::/32"])
    );
    srv.get(&account, &second)
        .await
        .assert_error(403, "ip_not_allowed");
    // The first key still works, and a key cannot shut itself out.
    assert_eq!(srv.get(&account, &srv.admin_key).await.status, 200);
    srv.call(
        reqwest::Method::PUT,
        &allow(&first_id),
        Some(&srv.admin_key),
        Some(json!({"cidrs": ["10.0.0.0/8"]})),
    )
    .await
    .assert_error(400, "allowlist_excludes_caller");
    let own = srv
        .call(
            reqwest::Method::PUT,
            &allow(&first_id),
            Some(&srv.admin_key),
            Some(json!({"cidrs": ["127.0.0.1/32"]})),
        )
        .await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(srv.get(&account, &srv.admin_key).await.status, 200);
    // Lifted again: usable from here.
    let r = srv
        .call(
            reqwest::Method::PUT,
            &allow(&second_id),
            Some(&srv.admin_key),
            Some(json!({"cidrs": []})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(srv.get(&account, &second).await.status, 200);

    // Revoked: refused on the next request. The last one cannot go.
    let r = srv
        .delete(&format!("/v1/admin/admin_keys/{second_id}"), &srv.admin_key)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["revoked"], true);
    srv.get(&account, &second)
        .await
        .assert_error(401, "api_key_revoked");
    srv.delete(&format!("/v1/admin/admin_keys/{first_id}"), &srv.admin_key)
        .await
        .assert_error(409, "last_admin_key");
    // Account keys are not admin keys, and cannot manage them.
    srv.get("/v1/admin/admin_keys", &srv.sk_test)
        .await
        .assert_error(403, "permission_denied");
    let account_key = srv
        .get(&format!("{account}/api_keys"), &srv.admin_key)
        .await;
    let account_key_id = account_key.body["data"][0]["id"].as_str().unwrap();
    srv.delete(
        &format!("/v1/admin/admin_keys/{account_key_id}"),
        &srv.admin_key,
    )
    .await
    .assert_error(404, "not_found");
}
