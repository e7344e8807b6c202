//! The gateway's headers in the OpenAPI document: request headers (`Idempotency-Key`,
//! `Signature-Input`, `Signature`, `Content-Digest`) as parameters, and the response
//! headers (`RateLimit-*`, `Retry-After`, `Idempotent-Replayed`) on every response of
//! every limited operation, plus the 429 response; and a 401 response with its
//! `WWW-Authenticate` challenge on every operation that takes a credential.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, codes};

/// What an admin route can answer with 401: admin routes take an admin key only, never a
/// bearer token, and verify no request signature.
const ADMIN_401: &[ApiError] = &[
    codes::AUTHENTICATION_REQUIRED,
    codes::INVALID_API_KEY,
    codes::API_KEY_REVOKED,
];

/// The 401 codes among `errors`, comma-separated, in their order in `codes::ALL`.
fn unauthorized(errors: &[ApiError]) -> String {
    errors
        .iter()
        .filter(|e| e.status == StatusCode::UNAUTHORIZED)
        .map(|e| e.code)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Routes that are not rate limited and take no credential.
const OPEN: &[&str] = &["/healthz", "/readyz", "/v1/openapi.json"];

fn header(description: &str, schema: Value) -> Value {
    json!({"description": description, "schema": schema})
}

fn param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "header", "required": false, "description": description, "schema": {"type": "string"}})
}

fn href(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

fn pref(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

/// Adds the headers to `doc` (the document as JSON).
pub fn document_headers(doc: &mut Value) {
    let int = json!({"type": "integer", "minimum": 0});
    let headers = json!({
        "RateLimit-Limit": header("Requests per minute of the quota that applies (also the burst).", int.clone()),
        "RateLimit-Remaining": header("Requests that may be made right now.", int.clone()),
        "RateLimit-Reset": header("Seconds until the quota is full again.", int.clone()),
        "Retry-After": header("On 429: seconds until one request is allowed.", int),
        "WWW-Authenticate": header("On every 401: `Bearer realm=\"strongroom\"`, with `, error=\"invalid_token\"` added when a bearer token was rejected (token_invalid, token_expired, token_revoked; RFC 6750 §3).", json!({"type": "string"})),
        "Idempotent-Replayed": header("`true` when the response is the stored response of an earlier request with the same Idempotency-Key.", json!({"type": "string", "enum": ["true"]})),
    });
    let params = json!({
        "Idempotency-Key": param("Idempotency-Key", "POST only: 1–255 printable ASCII characters. The first 2xx response is stored for 24 h per account, mode and key and replayed to a retry with the same request; a different request gets 422 idempotency_key_reused, a retry during the first 409 idempotency_in_progress."),
        "Signature-Input": param("Signature-Input", "RFC 9421 signature parameters: must cover @method, @target-uri (or @authority + @path [+ @query]) and content-digest when there is a body; created and keyid required; alg=ed25519 optional; nonce optional (single use)."),
        "Signature": param("Signature", "RFC 9421 Ed25519 signature, `label=:base64:`. Always verified when present; required when the account has require_signed_requests."),
        "Content-Digest": param("Content-Digest", "RFC 9530 digest of the body, `sha-256=:base64:`; required (and covered) on signed requests with a body."),
    });
    let Some(root) = doc.as_object_mut() else {
        return;
    };
    if let Some(components) = root
        .entry("components")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    {
        components.insert("headers".into(), headers);
        components.insert("parameters".into(), params);
    }
    let Some(paths) = root.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if OPEN.contains(&path.as_str()) {
            continue;
        }
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            add_to_operation(path, method, op);
        }
    }
}

fn add_to_operation(path: &str, method: &str, op: &mut Map<String, Value>) {
    let mut wanted = Vec::new();
    if !path.starts_with("/v1/admin/") {
        wanted.extend(["Signature-Input", "Signature", "Content-Digest"]);
    }
    if method == "post" && !super::IDEMPOTENCY_EXCLUDED.contains(&path) {
        wanted.push("Idempotency-Key");
    }
    if let Some(list) = op
        .entry("parameters")
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        list.extend(wanted.iter().map(|p| pref(p)));
    }
    let takes_credential = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    let Some(responses) = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    else {
        return;
    };
    if takes_credential {
        // Set here for every operation, never in a handler's annotation: a hand-written list
        // there replaced this one, and four of them had fallen behind (no token or
        // signature codes).
        let codes = if path.starts_with("/v1/admin/") {
            unauthorized(ADMIN_401)
        } else {
            unauthorized(codes::ALL)
        };
        responses.insert(
            "401".into(),
            json!({"description": codes, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}),
        );
    }
    responses.entry("429").or_insert_with(
        || json!({"description": "rate_limited", "headers": {"Retry-After": href("Retry-After")}}),
    );
    for (status, resp) in responses.iter_mut() {
        let Some(h) = resp
            .as_object_mut()
            .map(|r| r.entry("headers").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for name in ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"] {
            h.insert(name.into(), href(name));
        }
        if status == "401" {
            h.insert("WWW-Authenticate".into(), href("WWW-Authenticate"));
        }
        if method == "post" && status.starts_with('2') {
            h.insert("Idempotent-Replayed".into(), href("Idempotent-Replayed"));
        }
    }
}
