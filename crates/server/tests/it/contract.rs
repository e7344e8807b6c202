//! The API contract: a walk over every operation of `docs/openapi.json` (requests that
//! succeed and requests that are refused) checks each response against what the document
//! says for that operation and status: the status is documented, the body matches its
//! schema, an error's code is one of the response's `x-error-codes`, and the headers
//! every response must carry are there.
//!
//! Operations whose handlers do not yet answer with typed views are in [`KNOWN_GAPS`].
//! The list may only shrink: the test fails when a listed operation is clean, so that it
//! is taken off, and when an unlisted one breaks its contract.

use crate::harness::{Resp, TestServer};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// `METHOD /template` of operations whose responses do not match the document yet.
const KNOWN_GAPS: &[&str] = &[];

/// The committed document: what SDKs are generated from.
fn document() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The walk's findings, per operation.
struct Contract {
    doc: Value,
    findings: BTreeMap<String, Vec<String>>,
    seen: BTreeSet<String>,
}

impl Contract {
    fn new() -> Self {
        Self {
            doc: document(),
            findings: BTreeMap::new(),
            seen: BTreeSet::new(),
        }
    }

    /// Checks one response of `method template` against the document.
    fn check(&mut self, method: &Method, template: &str, r: &Resp) {
        let name = format!("{method} {template}");
        self.seen.insert(name.clone());
        let mut errs = Vec::new();
        let status = r.status.as_u16().to_string();
        let op = &self.doc["paths"][template][method.as_str().to_lowercase()];
        if !op.is_object() {
            errs.push("operation not in the document".to_owned());
        } else if let Some(resp) = op["responses"]
            .get(&status)
            .or_else(|| op["responses"].get("default"))
        {
            let resp = resolve(&self.doc, resp);
            let schema = &resp["content"]["application/json"]["schema"];
            if schema.is_null() {
                if !r.text.is_empty()
                    && r.headers
                        .get("content-type")
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
                {
                    errs.push(format!("{status}: JSON body, but no schema documented"));
                }
            } else {
                let mut v = Vec::new();
                validate(&self.doc, schema, &r.body, "$", &mut v);
                errs.extend(v.into_iter().map(|e| format!("{status}: {e}")));
            }
            if r.status.as_u16() >= 400 {
                let code = r.body["error"]["code"].as_str().unwrap_or_default();
                let listed = resp["x-error-codes"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|c| c == code));
                if !listed {
                    errs.push(format!("{status}: code {code:?} not in x-error-codes"));
                }
            }
            for (h, def) in resp["headers"].as_object().into_iter().flatten() {
                let def = resolve(&self.doc, def);
                if def["required"] == true && r.headers.get(h.as_str()).is_none() {
                    errs.push(format!("{status}: required header {h} missing"));
                }
            }
        } else {
            errs.push(format!("status {status} not documented ({})", r.body));
        }
        if !errs.is_empty() {
            let seen = self.findings.entry(name).or_default();
            for e in errs {
                if !seen.contains(&e) {
                    seen.push(e);
                }
            }
        }
    }

    /// Every operation was walked; findings match [`KNOWN_GAPS`] exactly.
    fn finish(self) {
        let mut all = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                all.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        let unwalked: Vec<_> = all.difference(&self.seen).collect();
        assert!(
            unwalked.is_empty(),
            "operations the walk misses: {unwalked:?}"
        );
        let gaps: BTreeSet<String> = KNOWN_GAPS.iter().map(|s| (*s).to_owned()).collect();
        let broken: BTreeSet<String> = self.findings.keys().cloned().collect();
        let new: Vec<_> = broken.difference(&gaps).collect();
        let fixed: Vec<_> = gaps.difference(&broken).collect();
        let report: Vec<String> = self
            .findings
            .iter()
            .filter(|(op, _)| !gaps.contains(*op))
            .map(|(op, errs)| format!("{op}:\n    {}", errs.join("\n    ")))
            .collect();
        assert!(
            new.is_empty(),
            "responses that break the document:\n{}",
            report.join("\n")
        );
        assert!(
            fixed.is_empty(),
            "now clean, take them off KNOWN_GAPS in tests/it/contract.rs: {fixed:?}"
        );
    }
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str().and_then(|r| r.strip_prefix("#/")) {
        Some(path) => path.split('/').fold(doc, |at, part| &at[part]),
        None => v,
    }
}

/// A validator for the JSON Schema that utoipa emits: `$ref`, `type` (one or a list,
/// `nullable`), `enum`, `const`, `properties`, `required`, `additionalProperties`,
/// `items`, `allOf`/`oneOf`/`anyOf`, and the length and range bounds. `format` and
/// `pattern` are not checked.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    let Some(s) = schema.as_object() else {
        return;
    };
    if s.get("nullable") == Some(&Value::Bool(true)) && v.is_null() {
        return;
    }
    for sub in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        validate(doc, sub, v, at, errs);
    }
    for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(subs) = s.get(key).and_then(Value::as_array) {
            let ok = subs
                .iter()
                .filter(|sub| {
                    let mut e = Vec::new();
                    validate(doc, sub, v, at, &mut e);
                    e.is_empty()
                })
                .count();
            if ok == 0 || (exactly_one && ok > 1) {
                errs.push(format!("{at}: matches {ok} of the {key} alternatives"));
            }
        }
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.iter().any(|t| is_type(v, t)) {
            errs.push(format!("{at}: {} is not {}", kind(v), types.join(" or ")));
            return;
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errs.push(format!("{at}: {v} not in enum {e:?}"));
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        errs.push(format!("{at}: {v} is not {c}"));
    }
    let bound = |k: &str| s.get(k).and_then(Value::as_f64);
    match v {
        Value::String(text) => {
            let n = text.chars().count() as f64;
            if bound("minLength").is_some_and(|m| n < m)
                || bound("maxLength").is_some_and(|m| n > m)
            {
                errs.push(format!("{at}: length {n} out of bounds"));
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or_default();
            if bound("minimum").is_some_and(|m| n < m) || bound("maximum").is_some_and(|m| n > m) {
                errs.push(format!("{at}: {n} out of range"));
            }
        }
        Value::Array(items) => {
            let n = items.len() as f64;
            if bound("minItems").is_some_and(|m| n < m) || bound("maxItems").is_some_and(|m| n > m)
            {
                errs.push(format!("{at}: {n} items out of bounds"));
            }
            if let Some(item) = s.get("items") {
                for (i, x) in items.iter().enumerate() {
                    validate(doc, item, x, &format!("{at}[{i}]"), errs);
                }
            }
        }
        Value::Object(fields) => {
            for r in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = r.as_str()
                    && !fields.contains_key(r)
                {
                    errs.push(format!("{at}: required field {r} missing"));
                }
            }
            let props = s.get("properties").and_then(Value::as_object);
            for (k, x) in fields {
                let here = format!("{at}.{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(p) => validate(doc, p, x, &here, errs),
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errs.push(format!("{here}: field not in the schema"));
                        }
                        Some(extra @ Value::Object(_)) => validate(doc, extra, x, &here, errs),
                        _ => {}
                    },
                }
            }
        }
        _ => {}
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[test]
fn the_validator_checks_what_utoipa_emits() {
    let doc = json!({"components": {"schemas": {"A": {
        "type": "object", "additionalProperties": false, "required": ["n"],
        "properties": {"n": {"type": "integer", "minimum": 0}, "s": {"type": ["string", "null"]},
                       "e": {"type": "string", "enum": ["x"]},
                       "l": {"type": "array", "items": {"$ref": "#/components/schemas/B"}}}},
        "B": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}});
    let a = json!({"$ref": "#/components/schemas/A"});
    let errors = |v: Value| {
        let mut e = Vec::new();
        validate(&doc, &a, &v, "$", &mut e);
        e
    };
    assert!(errors(json!({"n": 1, "s": null, "e": "x", "l": ["a", 2]})).is_empty());
    assert_eq!(errors(json!({"n": -1})).len(), 1);
    assert_eq!(errors(json!({"s": "a"})).len(), 1);
    assert_eq!(errors(json!({"n": 1, "x": 1})).len(), 1);
    assert_eq!(errors(json!({"n": 1, "e": "y"})).len(), 1);
    assert_eq!(errors(json!({"n": 1, "l": [true]})).len(), 1);
    assert_eq!(errors(json!({"n": "1"})).len(), 1);
}

/// One request of the walk.
async fn send(
    srv: &TestServer,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Resp {
    srv.call(method, path, key, body).await
}

#[tokio::test]
async fn every_response_matches_the_document() {
    let srv = TestServer::start().await;
    let mut c = Contract::new();
    let (test, live, admin, acct) = (
        srv.sk_test.as_str(),
        srv.sk_live.as_str(),
        srv.admin_key.as_str(),
        srv.account.clone(),
    );
    macro_rules! walk {
        ($method:ident $template:literal, $path:expr, $key:expr, $body:expr) => {{
            let r = send(&srv, Method::$method, &$path, $key, $body).await;
            c.check(&Method::$method, $template, &r);
            r
        }};
    }

    // Refusals every operation can meet: no credential, an unknown id.
    let doc = document();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let path = template
                .replace("{id}", "x_0")
                .replace("{key_id}", "x_0")
                .replace("{source}", "x_0");
            let body = matches!(method.as_str(), "post" | "put" | "patch").then(|| json!({}));
            let r = send(&srv, m.clone(), &path, None, body.clone()).await;
            c.check(&m, template, &r);
            let key = if template.starts_with("/v1/admin/") {
                admin
            } else {
                test
            };
            let r = send(&srv, m.clone(), &path, Some(key), body).await;
            c.check(&m, template, &r);
        }
    }

    // Meta.
    walk!(GET "/healthz", "/healthz", None, None);
    walk!(GET "/readyz", "/readyz", None, None);
    walk!(GET "/v1/openapi.json", "/v1/openapi.json", None, None);
    walk!(GET "/.well-known/jwks.json", "/.well-known/jwks.json", None, None);

    // Cards.
    let card = walk!(POST "/v1/cards", "/v1/cards", Some(test),
        Some(json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2040})));
    let card_id = card.body["id"].as_str().unwrap_or("card_x").to_owned();
    walk!(POST "/v1/cards", "/v1/cards", Some(test),
        Some(json!({"number": "4242424242424242", "exp_month": 12, "exp_year": 2040})));
    walk!(POST "/v1/cards", "/v1/cards", Some(test),
        Some(json!({"number": "4242424242424241", "exp_month": 12, "exp_year": 2040})));
    walk!(POST "/v1/cards", "/v1/cards", Some(test), Some(json!({"number": "4242424242424242"})));
    let tokenized = walk!(POST "/v1/cards", "/v1/cards", Some(srv.pk_test.as_str()),
        Some(json!({"number": "4000056655665556", "exp_month": 1, "exp_year": 2039})));
    let token = tokenized.body["token"]
        .as_str()
        .unwrap_or("tok_x")
        .to_owned();
    walk!(POST "/v1/card_tokens/redeem", "/v1/card_tokens/redeem", Some(test),
        Some(json!({"token": token})));
    walk!(GET "/v1/cards", "/v1/cards", Some(test), None);
    walk!(GET "/v1/cards", "/v1/cards?limit=1&fingerprint=x", Some(test), None);
    walk!(GET "/v1/cards", "/v1/cards?limit=0", Some(test), None);
    walk!(GET "/v1/cards", "/v1/cards?nope=1", Some(test), None);
    walk!(GET "/v1/cards/{id}", format!("/v1/cards/{card_id}"), Some(test), None);
    let otp = walk!(POST "/v1/otp", "/v1/otp", Some(test),
        Some(json!({"purpose": "card.reveal", "card": card_id})));
    let (otp_id, code) = (
        otp.body["id"].as_str().unwrap_or_default().to_owned(),
        otp.body["test_code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    walk!(POST "/v1/cards/{id}/reveal", format!("/v1/cards/{card_id}/reveal"), Some(test),
        Some(json!({"otp": otp_id, "code": code})));
    walk!(POST "/v1/cards/{id}/reveal", format!("/v1/cards/{card_id}/reveal"), Some(test),
        Some(json!({"otp": otp_id, "code": "000000"})));

    // PIN.
    walk!(GET "/v1/pin/encryption_key", "/v1/pin/encryption_key", Some(test), None);
    walk!(PUT "/v1/cards/{id}/pin", format!("/v1/cards/{card_id}/pin"), Some(test),
        Some(json!({"encrypted_pin": "a.b.c.d.e", "otp": "otp_x", "code": "000000"})));
    walk!(POST "/v1/cards/{id}/pin/verify", format!("/v1/cards/{card_id}/pin/verify"), Some(test),
        Some(json!({"encrypted_pin": "a.b.c.d.e"})));
    walk!(POST "/v1/cards/{id}/pin/change", format!("/v1/cards/{card_id}/pin/change"), Some(test),
        Some(json!({"encrypted_current_pin": "a.b.c.d.e", "encrypted_new_pin": "a.b.c.d.e",
                    "otp": "otp_x", "code": "000000"})));
    walk!(POST "/v1/admin/cards/{id}/pin/unlock", format!("/v1/admin/cards/{card_id}/pin/unlock"),
        Some(admin), None);
    walk!(POST "/v1/admin/pin/encryption_key/rotate", "/v1/admin/pin/encryption_key/rotate",
        Some(admin), None);
    walk!(GET "/v1/admin/accounts/{id}/pin_settings",
        format!("/v1/admin/accounts/{acct}/pin_settings"), Some(admin), None);
    walk!(POST "/v1/admin/accounts/{id}/pin_settings",
        format!("/v1/admin/accounts/{acct}/pin_settings"), Some(admin),
        Some(json!({"max_failures": 5})));

    // Tokens.
    walk!(POST "/v1/auth/token", "/v1/auth/token", Some(test), Some(json!({})));
    walk!(POST "/v1/auth/token", "/v1/auth/token", Some(test), Some(json!({"scope": "nope"})));
    walk!(GET "/v1/admin/jwt_keys", "/v1/admin/jwt_keys", Some(admin), None);
    walk!(POST "/v1/admin/jwt_keys/rotate", "/v1/admin/jwt_keys/rotate", Some(admin), None);

    // Account controls (live key).
    walk!(GET "/v1/account", "/v1/account", Some(live), None);
    walk!(PATCH "/v1/account", "/v1/account", Some(live),
        Some(json!({"require_signed_requests": false})));
    walk!(PATCH "/v1/account", "/v1/account", Some(test),
        Some(json!({"require_signed_requests": false})));
    walk!(GET "/v1/ip_allowlist", "/v1/ip_allowlist", Some(live), None);
    walk!(PUT "/v1/ip_allowlist", "/v1/ip_allowlist", Some(live), Some(json!({"cidrs": []})));
    walk!(PUT "/v1/ip_allowlist", "/v1/ip_allowlist", Some(live), Some(json!({"cidrs": ["x"]})));
    // RFC 8037 A.2's public key.
    let jwk =
        json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    let sk =
        walk!(POST "/v1/signing_keys", "/v1/signing_keys", Some(live), Some(json!({"jwk": jwk})));
    let sk_id = sk.body["id"].as_str().unwrap_or("x_0").to_owned();
    walk!(GET "/v1/signing_keys", "/v1/signing_keys", Some(live), None);
    walk!(DELETE "/v1/signing_keys/{id}", format!("/v1/signing_keys/{sk_id}"), Some(live), None);

    // Admin.
    let other = walk!(POST "/v1/admin/accounts", "/v1/admin/accounts", Some(admin),
        Some(json!({"name": "Contract"})));
    let other = other.body["id"].as_str().unwrap_or("x_0").to_owned();
    walk!(GET "/v1/admin/accounts/{id}", format!("/v1/admin/accounts/{other}"), Some(admin), None);
    walk!(PATCH "/v1/admin/accounts/{id}", format!("/v1/admin/accounts/{other}"), Some(admin),
        Some(json!({"name": "Contract 2", "rate_limit_per_minute": 1000})));
    let key = walk!(POST "/v1/admin/accounts/{id}/api_keys",
        format!("/v1/admin/accounts/{other}/api_keys"), Some(admin),
        Some(json!({"kind": "restricted", "mode": "test", "scopes": ["cards:read"]})));
    let key_id = key.body["id"].as_str().unwrap_or("x_0").to_owned();
    walk!(POST "/v1/admin/accounts/{id}/api_keys", format!("/v1/admin/accounts/{other}/api_keys"),
        Some(admin), Some(json!({"kind": "restricted", "mode": "test"})));
    walk!(GET "/v1/admin/accounts/{id}/api_keys", format!("/v1/admin/accounts/{other}/api_keys"),
        Some(admin), None);
    walk!(DELETE "/v1/admin/accounts/{id}/api_keys/{key_id}",
        format!("/v1/admin/accounts/{other}/api_keys/{key_id}"), Some(admin), None);
    walk!(GET "/v1/admin/accounts/{id}/keys", format!("/v1/admin/accounts/{acct}/keys"),
        Some(admin), None);
    walk!(POST "/v1/admin/accounts/{id}/keys/rotate",
        format!("/v1/admin/accounts/{acct}/keys/rotate"), Some(admin),
        Some(json!({"purpose": "pan"})));
    walk!(POST "/v1/admin/accounts/{id}/keys/retire",
        format!("/v1/admin/accounts/{acct}/keys/retire"), Some(admin),
        Some(json!({"purpose": "pan", "version": 1})));
    walk!(POST "/v1/admin/accounts/{id}/otp_signing_secret/rotate",
        format!("/v1/admin/accounts/{other}/otp_signing_secret/rotate"), Some(admin), None);
    walk!(POST "/v1/admin/accounts/{id}/revoke_all",
        format!("/v1/admin/accounts/{other}/revoke_all"), Some(admin), None);
    let ak = walk!(POST "/v1/admin/admin_keys", "/v1/admin/admin_keys", Some(admin),
        Some(json!({"ip_allowlist": ["127.0.0.1"]})));
    let ak_id = ak.body["id"].as_str().unwrap_or("x_0").to_owned();
    walk!(GET "/v1/admin/admin_keys", "/v1/admin/admin_keys", Some(admin), None);
    walk!(PUT "/v1/admin/admin_keys/{key_id}/ip_allowlist",
        format!("/v1/admin/admin_keys/{ak_id}/ip_allowlist"), Some(admin),
        Some(json!({"cidrs": ["127.0.0.0/8"]})));
    walk!(DELETE "/v1/admin/admin_keys/{key_id}", format!("/v1/admin/admin_keys/{ak_id}"),
        Some(admin), None);
    walk!(GET "/v1/admin/audit", "/v1/admin/audit?limit=5", Some(admin), None);
    walk!(GET "/v1/admin/audit", "/v1/admin/audit?limit=500", Some(admin), None);
    walk!(GET "/v1/cards", "/v1/cards", Some(admin), None);
    walk!(GET "/v1/admin/audit", "/v1/admin/audit", Some(test), None);

    // Webhooks.
    let ep = walk!(POST "/v1/webhook_endpoints", "/v1/webhook_endpoints", Some(test),
        Some(json!({"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"]})));
    let ep_id = ep.body["id"].as_str().unwrap_or("x_0").to_owned();
    walk!(POST "/v1/webhook_endpoints", "/v1/webhook_endpoints", Some(test),
        Some(json!({"url": "https://10.0.0.1/hook", "enabled_events": ["*"]})));
    walk!(GET "/v1/webhook_endpoints", "/v1/webhook_endpoints", Some(test), None);
    walk!(GET "/v1/webhook_endpoints/{id}", format!("/v1/webhook_endpoints/{ep_id}"), Some(test), None);
    walk!(PATCH "/v1/webhook_endpoints/{id}", format!("/v1/webhook_endpoints/{ep_id}"), Some(test),
        Some(json!({"description": "contract"})));
    walk!(POST "/v1/webhook_endpoints/{id}/disable",
        format!("/v1/webhook_endpoints/{ep_id}/disable"), Some(test), None);
    walk!(POST "/v1/webhook_endpoints/{id}/enable",
        format!("/v1/webhook_endpoints/{ep_id}/enable"), Some(test), None);
    walk!(POST "/v1/webhook_endpoints/{id}/rotate_secret",
        format!("/v1/webhook_endpoints/{ep_id}/rotate_secret"), Some(test), None);
    walk!(POST "/v1/webhook_endpoints/{id}/recover",
        format!("/v1/webhook_endpoints/{ep_id}/recover"), Some(test), Some(json!({"since": 0})));
    walk!(GET "/v1/webhook_endpoints/{id}/attempts",
        format!("/v1/webhook_endpoints/{ep_id}/attempts"), Some(test), None);
    // The card made above emitted an event.
    walk!(DELETE "/v1/cards/{id}", format!("/v1/cards/{card_id}"), Some(test), None);
    let events = walk!(GET "/v1/events", "/v1/events?limit=5", Some(test), None);
    walk!(GET "/v1/events", "/v1/events?type=x&nope=1", Some(test), None);
    let ev_id = events.body["data"][0]["id"]
        .as_str()
        .unwrap_or("x_0")
        .to_owned();
    walk!(GET "/v1/events/{id}", format!("/v1/events/{ev_id}"), Some(test), None);
    walk!(GET "/v1/events/{id}/deliveries", format!("/v1/events/{ev_id}/deliveries"), Some(test), None);
    walk!(POST "/v1/events/{id}/redeliver", format!("/v1/events/{ev_id}/redeliver"), Some(test),
        Some(json!({})));
    walk!(DELETE "/v1/webhook_endpoints/{id}", format!("/v1/webhook_endpoints/{ep_id}"),
        Some(test), None);
    walk!(POST "/v1/inbound/{source}", "/v1/inbound/nope", None, Some(json!({})));

    c.finish();
}

/// The document says what its post-processing promises: every error response has the
/// error schema and codes of its own status, every path parameter is in its path, and
/// every rule refused beyond the schema is one of the operation's 400 codes.
#[test]
fn the_document_is_consistent() {
    let doc = document();
    let status_of: BTreeMap<&str, u64> = doc["x-error-codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["code"].as_str().unwrap(), e["status"].as_u64().unwrap()))
        .collect();
    let mut problems = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let name = format!("{} {path}", method.to_uppercase());
            for p in op["parameters"].as_array().into_iter().flatten() {
                let p = resolve(&doc, p);
                let in_path = path.contains(&format!("{{{}}}", p["name"].as_str().unwrap()));
                if (p["in"] == "path") != in_path {
                    problems.push(format!("{name}: parameter {} in {}", p["name"], p["in"]));
                }
            }
            for (status, resp) in op["responses"].as_object().unwrap() {
                let n: u64 = status.parse().unwrap();
                if n < 400 {
                    continue;
                }
                let schema = &resp["content"]["application/json"]["schema"]["$ref"];
                if schema != "#/components/schemas/ErrorResponse" {
                    problems.push(format!("{name} {status}: not the error schema"));
                }
                let listed = resp["x-error-codes"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if listed.is_empty() {
                    problems.push(format!("{name} {status}: no x-error-codes"));
                }
                for c in listed {
                    let c = c.as_str().unwrap();
                    if status_of.get(c) != Some(&n) {
                        problems.push(format!("{name} {status}: {c} is not a {status} code"));
                    }
                }
            }
            for rule in op["x-refused-beyond-schema"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let code = &rule["code"];
                let in_400 = op["responses"]["400"]["x-error-codes"]
                    .as_array()
                    .is_some_and(|l| l.contains(code));
                if !in_400
                    || !op["description"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(code.as_str().unwrap())
                {
                    problems.push(format!(
                        "{name}: rule {code} not among the 400 codes or not described"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
