//! Completes the document with what every operation shares and no handler annotates: the
//! refusals of the layers around the handlers (request context, gateway, extractors),
//! each response's `x-error-codes`, the headers every response carries, and the rules a
//! request is checked against beyond its schema (`x-refused-beyond-schema`).
//!
//! A handler's annotation names the codes particular to it, in its response
//! descriptions; they are read from there, so that the list a reader sees and the list
//! a client generator sees cannot differ.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, codes};
use crate::gateway::IDEMPOTENCY_EXCLUDED;

/// The routes outside the rate limiter (see `gateway::buckets`).
const UNLIMITED: &[&str] = &["/healthz"];

/// What an admin route can answer with 401: the admin key's own three (a bearer token is
/// refused as an invalid key; no request signature is verified there).
const ADMIN_401: &[ApiError] = &[
    codes::AUTHENTICATION_REQUIRED,
    codes::INVALID_API_KEY,
    codes::API_KEY_REVOKED,
];

/// `(code, rule)`: a refusal and the rule it enforces.
type Rules = &'static [(&'static str, &'static str)];

/// Rules a schema-valid request is still refused by, because JSON Schema cannot state
/// them: `(method, path, [(code, rule)])`. Named in the operation's description and in
/// `x-refused-beyond-schema`, which the API fuzzer reads (`tests/fuzz/hooks.py`).
const BEYOND_SCHEMA: &[(&str, &str, Rules)] = &[
    ("post", "/v1/cards", CARD_RULES),
    (
        "post",
        "/v1/auth/token",
        &[(
            "invalid_scope",
            "every requested scope must be held by the API key",
        )],
    ),
    ("post", "/v1/admin/accounts", OTP_URL_RULES),
    (
        "post",
        "/v1/sys/unseal",
        &[(
            "share_invalid",
            "the share must be one of this vault's: its digest is checked as it is handed in",
        )],
    ),
    ("patch", "/v1/admin/accounts/{id}", OTP_URL_RULES),
    (
        "post",
        "/v1/admin/accounts/{id}/api_keys",
        &[
            (
                "scopes_required",
                "a restricted key must name at least one scope",
            ),
            ("scopes_not_allowed", "only a restricted key names scopes"),
            CIDR_RULE,
        ],
    ),
    ("post", "/v1/admin/admin_keys", ADMIN_ALLOWLIST_RULES),
    ("post", "/v1/admin/key_imports", KEY_IMPORT_RULES),
    (
        "post",
        "/v1/admin/key_imports/{id}/components",
        KEY_COMPONENT_RULES,
    ),
    (
        "put",
        "/v1/admin/admin_keys/{key_id}/ip_allowlist",
        ADMIN_ALLOWLIST_RULES,
    ),
    ("put", "/v1/ip_allowlist", &[CIDR_RULE]),
    (
        "put",
        "/v1/admin/accounts/{id}/relay_destinations",
        RELAY_DESTINATION_RULES,
    ),
    (
        "post",
        "/v1/signing_keys",
        &[(
            "invalid_parameter",
            "the PEM's base64 must decode to an Ed25519 SubjectPublicKeyInfo",
        )],
    ),
    ("post", "/v1/webhook_endpoints", WEBHOOK_URL_RULES),
    ("patch", "/v1/webhook_endpoints/{id}", WEBHOOK_URL_RULES),
    ("put", "/v1/cards/{id}/pin", PIN_RULES),
    ("post", "/v1/cards/{id}/pin/verify", PIN_VERIFY_RULES),
    ("post", "/v1/cards/{id}/pin/change", PIN_RULES),
    ("post", "/v1/relay", RELAY_RULES),
    ("post", "/v1/inbound_routes", INBOUND_ROUTE_RULES),
    ("post", "/v1/client_sessions", CLIENT_SESSION_RULES),
    ("post", "/v1/suspensions", SUSPENSION_RULES),
    ("post", "/v1/risk/lists/{list}/entries", LIST_ENTRY_RULES),
    (
        "put",
        "/v1/admin/risk/bin_table",
        &[(
            "bin_table_invalid",
            "each line is bin_prefix,country (1 to 11 digits, two letters), no prefix with two countries, at least one row",
        )],
    ),
    (
        "put",
        "/v1/admin/risk/ip_database",
        &[(
            "ip_database_invalid",
            "the bytes are a well-formed MaxMind DB file whose records carry country codes",
        )],
    ),
    (
        "post",
        "/v1/risk/feedback",
        &[
            ("missing_field", "assessment or card is required"),
            ("invalid_parameter", "assessment or card, not both"),
        ],
    ),
    (
        "patch",
        "/v1/account",
        &[(
            "invalid_parameter",
            "time_zone is an IANA time zone name (Europe/Paris, UTC), not an offset",
        )],
    ),
    (
        "post",
        "/v1/risk/card_failures",
        &[
            ("missing_field", "card or fingerprint is required"),
            (
                "invalid_parameter",
                "card or fingerprint, not both; at within the last day",
            ),
        ],
    ),
    (
        "post",
        "/v1/risk/assessments",
        &[(
            "invalid_parameter",
            "card or fingerprint, not both; amount and currency together; an IP address; an email with @",
        )],
    ),
    (
        "post",
        "/v1/admin/accounts/{id}/suspensions",
        SUSPENSION_RULES,
    ),
    (
        "put",
        "/v1/risk/rules",
        &[(
            "rules_invalid",
            "each rule has the documented fields; each condition parses, reads only known signals, calls only allowed functions and yields a boolean; ids are unique; review_at is below block_at",
        )],
    ),
    ("post", "/v1/client_sessions/{id}/cards", CARD_RULES),
    ("post", "/v1/terminals", TERMINAL_RULES),
    ("post", "/v1/terminals/{id}/cards", TERMINAL_CARD_RULES),
    ("post", "/v1/terminals/{id}/cards", CARD_RULES),
    (
        "post",
        "/v1/terminals/{id}/pin_translations",
        PIN_TRANSLATION_RULES,
    ),
    (
        "post",
        "/v1/client_sessions/{id}/cards",
        CLIENT_SESSION_CARD_RULES,
    ),
    ("get", "/v1/integrity/app", &[INTEGRITY_APP_RULE]),
    (
        "post",
        "/v1/admin/accounts/{id}/integrity_apps",
        INTEGRITY_APP_SETTINGS_RULES,
    ),
    (
        "patch",
        "/v1/admin/accounts/{id}/integrity_apps/{app_id}",
        INTEGRITY_APP_SETTINGS_RULES,
    ),
    ("post", "/v1/integrity/app", INTEGRITY_RULES),
];

/// What an application's settings are refused for beyond their schema.
const INTEGRITY_APP_SETTINGS_RULES: &[(&str, &str)] = &[(
    "invalid_parameter",
    "decryption_key must be base64 of 32 bytes and verification_key base64 of a DER P-256 public key; each certificate digest 32 bytes (hex or base64url); device verdicts among the four Play gives; application_id, decryption_key, verification_key and allowed_certificate_sha256 given when registering, and application_id unchanged in an update",
)];

/// The application must be one the operator registered (docs/device-integrity.md).
const INTEGRITY_APP_RULE: (&str, &str) = (
    "integrity_application_invalid",
    "the application must be registered for the account (POST /v1/admin/accounts/{id}/integrity_apps), and the token requested by that package",
);

/// What an integrity token is refused for beyond its schema (docs/device-integrity.md).
const INTEGRITY_RULES: &[(&str, &str)] = &[
    INTEGRITY_APP_RULE,
    (
        "integrity_hash_invalid",
        "the hash must be a live one from GET /v1/integrity/app, of this caller and application, and the one the token was requested with",
    ),
    (
        "integrity_token_invalid",
        "the token must decrypt under the application's decryption key (A256KW, A256GCM) and verify under its verification key (ES256)",
    ),
    (
        "integrity_token_expired",
        "the token's timestamp must be within the application's max_token_age_s",
    ),
];

/// What a new terminal is refused for beyond its schema (docs/card-present.md).
const TERMINAL_RULES: &[(&str, &str)] = &[
    (
        "invalid_parameter",
        "exactly one identity, the one the BDK's algorithm takes (initial_key_id for AES, ksn_prefix for TDES); a serial and location that are not blank and hold no control characters",
    ),
    (
        "bdk_unknown",
        "bdk must name a base derivation key imported into this account",
    ),
    (
        "bdk_unsupported",
        "the BDK must be AES or double-length TDES (X9.24-1 derives from nothing else)",
    ),
];

/// What a terminal's card data is refused for beyond its schema, before it is
/// deciphered (docs/card-present.md).
const TERMINAL_CARD_RULES: &[(&str, &str)] = &[
    (
        "invalid_parameter",
        "the cipher must be the terminal's (aes-cbc for AES-DUKPT, tdes-cbc for TDES-DUKPT); encrypted_data must be hex or base64",
    ),
    (
        "ksn_invalid",
        "the KSN must have the terminal's length, and a counter a terminal uses (not 0; at most 16 one bits for AES-DUKPT, 10 for TDES-DUKPT)",
    ),
];

/// What a PIN translation is refused for beyond its schema (docs/card-present.md).
const PIN_TRANSLATION_RULES: &[(&str, &str)] = &[
    (
        "invalid_parameter",
        "format must be the terminal's (iso0 for TDES-DUKPT, iso4 for AES-DUKPT) and to.format the zone key's; the block must have that format's length",
    ),
    (
        "ksn_invalid",
        "the KSN must have the terminal's length, and a counter a terminal uses",
    ),
    (
        "zone_key_unknown",
        "zone_key must name a zone PIN key imported into this account",
    ),
];

/// What a new list entry is refused for beyond its schema (docs/risk.md, "Lists").
const LIST_ENTRY_RULES: &[(&str, &str)] = &[
    (
        "list_entry_invalid",
        "the value must fit its type: a card id or fingerprint of the account and mode, an IP address or CIDR, an email address, a BIN of 6 digits, or a device id",
    ),
    ("invalid_parameter", "the note holds no control characters"),
];

/// What a new suspension is refused for beyond its schema (docs/risk.md).
const SUSPENSION_RULES: &[(&str, &str)] = &[
    (
        "suspension_target_invalid",
        "the target must be a card id or fingerprint of the account and mode, an IP address or CIDR, an email address, a device id, or a key id of the account",
    ),
    (
        "invalid_parameter",
        "the reason holds no control characters; the mode is given on the operators' route only",
    ),
    ("missing_field", "the operators' route needs a mode"),
];

/// What `POST /v1/client_sessions` refuses beyond its schema (docs/client-side.md).
const CLIENT_SESSION_RULES: &[(&str, &str)] = &[
    (
        "origin_invalid",
        "each allowed origin must be exactly scheme://host[:port] as browsers send it, HTTPS (plain HTTP only to loopback in test mode), none repeated",
    ),
    ("missing_field", "an amount needs a currency"),
    (
        "invalid_parameter",
        "metadata has at most 20 keys of 1 to 40 characters and values of at most 500; order id and metadata hold no control characters",
    ),
];

/// What `POST /v1/client_sessions/{id}/cards` refuses beyond its schema, besides the
/// card rules (docs/client-side.md).
const CLIENT_SESSION_CARD_RULES: &[(&str, &str)] = &[
    (
        "client_session_expired",
        "the session must not have expired",
    ),
    (
        "missing_field",
        "the CVC is required when the session collects it",
    ),
    (
        "invalid_parameter",
        "a CVC is refused when the session does not collect it",
    ),
];

/// What `POST /v1/inbound_routes` refuses beyond its schema (docs/relay.md, "Inbound
/// routes").
const INBOUND_ROUTE_RULES: &[(&str, &str)] = &[
    (
        "inbound_route_invalid",
        "each rule needs an expiry (exp_month and exp_year, or expiry, not both); forward_to has no query or fragment; path has no dot segments, `//`, `%`, `?`, `#` or `\\`",
    ),
    (
        "relay_pointer_invalid",
        "every pointer must be an RFC 6901 JSON pointer",
    ),
    (
        "destination_not_public",
        "forward_to must resolve to allowed addresses only",
    ),
    CIDR_RULE,
];

/// What `POST /v1/relay` refuses beyond its schema (docs/relay.md, "Codes").
const RELAY_RULES: &[(&str, &str)] = &[
    (
        "destination_not_public",
        "the destination must resolve to allowed addresses only",
    ),
    (
        "relay_expression_invalid",
        "every {{…}} must be a well-formed card expression, inside a string in a JSON body",
    ),
    (
        "relay_field_not_offered",
        "an expression's field must be one the relay offers",
    ),
    (
        "relay_card_unknown",
        "every card named must be the account's, in the key's mode",
    ),
    (
        "relay_header_invalid",
        "header names must be valid and not ones the relay sets itself",
    ),
    (
        "relay_value_not_allowed",
        "a value must be placeable where its expression is",
    ),
    (
        "relay_pointer_invalid",
        "each tokenize_response_fields entry must be a JSON pointer",
    ),
    (
        "invalid_parameter",
        "body must be a string, an object or an array",
    ),
];

const CARD_RULES: &[(&str, &str)] = &[
    (
        "card_number_luhn",
        "the card number's Luhn check digit must be right",
    ),
    (
        "card_brand_unknown",
        "the number's leading digits must belong to a supported brand",
    ),
    (
        "card_number_invalid",
        "the number's length must be one its brand issues",
    ),
    (
        "expiry_invalid",
        "the expiry month and year must form a date",
    ),
    ("card_expired", "the expiry must not be in the past"),
    (
        "test_card_in_live_mode",
        "a test card number is refused with a live key",
    ),
    (
        "live_card_in_test_mode",
        "only test card numbers are accepted with a test key",
    ),
    (
        "cvc_invalid",
        "a CVC must have 4 digits on an American Express card and 3 on any other",
    ),
];

const RELAY_DESTINATION_RULES: &[(&str, &str)] = &[
    (
        "destination_invalid",
        "a host must be a DNS name or IP literal, a path prefix free of ?, #, %, \\, // and dot segments, ca_cert_pem PEM certificates only, and no destination repeated",
    ),
    (
        "destination_not_public",
        "a destination must not be, or resolve to, a loopback, private, link-local or metadata address (loopback: test-only destinations and dev servers)",
    ),
];

const OTP_URL_RULES: &[(&str, &str)] = &[(
    "url_not_allowed",
    "the OTP delivery URL must reach a public address and carry no credentials",
)];

const WEBHOOK_URL_RULES: &[(&str, &str)] = &[(
    "url_not_allowed",
    "the endpoint URL must reach a public address and carry no credentials",
)];

const CIDR_RULE: (&str, &str) = (
    "invalid_parameter",
    "each entry must be an IPv4 or IPv6 address or network in CIDR notation",
);

const ADMIN_ALLOWLIST_RULES: &[(&str, &str)] = &[
    CIDR_RULE,
    (
        "allowlist_excludes_caller",
        "the allowlist must admit the address of the admin key making the request",
    ),
    (
        "invalid_parameter",
        "a custodian's name must have a character that is not blank, and no control characters",
    ),
];

/// A dual-control key import: what the schema cannot say of its body.
const KEY_IMPORT_RULES: &[(&str, &str)] = &[
    (
        "invalid_parameter",
        "either algorithm and components, or tr31 and kbpk, but not both; a name that is not blank",
    ),
    (
        "key_block_invalid",
        "a TR-31 block must unwrap under the named KEK (its MAC is checked)",
    ),
    (
        "key_block_usage",
        "a TR-31 block's key usage and algorithm must be those of the kind imported",
    ),
];

/// A key component: what the schema cannot say of it.
const KEY_COMPONENT_RULES: &[(&str, &str)] = &[
    (
        "invalid_parameter",
        "a component has the import's key length, and the components must not cancel out",
    ),
    (
        "kcv_mismatch",
        "the check value must be the component's own (it is computed and compared)",
    ),
];

/// Verifying checks the payload and the length, not the strength of the PIN.
const PIN_VERIFY_RULES: &[(&str, &str)] = &[
    (
        "pin_payload_unsupported",
        "the encrypted PIN must be a compact JWE with alg RSA-OAEP-256 and enc A256GCM",
    ),
    (
        "pin_payload_invalid",
        "the encrypted PIN must decrypt with a current PIN encryption key",
    ),
    (
        "pin_payload_card_mismatch",
        "the encrypted PIN must be made for this card",
    ),
    (
        "pin_payload_stale",
        "the encrypted PIN's iat must be within the last 5 minutes",
    ),
    ("pin_length", "the PIN inside must be 4 to 12 digits"),
];

const PIN_RULES: &[(&str, &str)] = &[
    (
        "pin_payload_unsupported",
        "the encrypted PIN must be a compact JWE with alg RSA-OAEP-256 and enc A256GCM",
    ),
    (
        "pin_payload_invalid",
        "the encrypted PIN must decrypt with a current PIN encryption key",
    ),
    (
        "pin_payload_card_mismatch",
        "the encrypted PIN must be made for this card",
    ),
    (
        "pin_payload_stale",
        "the encrypted PIN's iat must be within the last 5 minutes",
    ),
    ("pin_length", "the PIN inside must be 4 to 12 digits"),
    ("pin_too_weak", "the PIN inside must not be easy to guess"),
];

/// Request bodies that take exactly one of several optional fields (null counts as
/// absent): `(schema, [(field, its JSON type)])`. utoipa has no attribute for a struct's
/// `oneOf`, so it is added here.
const EXACTLY_ONE_OF: &[(&str, &[(&str, &str)])] = &[(
    "CreateSigningKeyBody",
    &[("jwk", "object"), ("pem", "string")],
)];

/// Adds to each schema of [`EXACTLY_ONE_OF`] a `oneOf` with one branch per field that
/// requires it and not null: two given match two branches, none matches none.
fn exactly_one_of(root: &mut Map<String, Value>) {
    let Some(schemas) = root
        .get_mut("components")
        .and_then(|c| c.get_mut("schemas"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (name, fields) in EXACTLY_ONE_OF {
        let Some(schema) = schemas.get_mut(*name).and_then(Value::as_object_mut) else {
            continue;
        };
        let branches: Vec<Value> = fields
            .iter()
            .map(|(field, kind)| json!({"required": [field], "properties": {*field: {"type": kind}}}))
            .collect();
        schema.insert("oneOf".into(), Value::Array(branches));
    }
}

/// What the layers around an operation's handler make it able to answer.
struct Operation<'a> {
    path: &'a str,
    method: &'a str,
    /// Takes a credential.
    secured: bool,
    /// An operator route: admin key only.
    admin: bool,
    /// Declares a request body.
    body: bool,
    /// Declares query parameters.
    query: bool,
    /// Declares path parameters.
    path_params: bool,
    /// Accepts an `Idempotency-Key`.
    idempotent: bool,
}

impl Operation<'_> {
    /// The refusals every such operation can meet before or around its handler.
    fn shared_errors(&self) -> Vec<ApiError> {
        let mut out = vec![codes::INTERNAL, codes::TIMEOUT, codes::AUDIT_UNAVAILABLE];
        if !UNLIMITED.contains(&self.path) {
            out.push(codes::RATE_LIMITED);
        }
        if self.secured {
            let unauthorized = if self.admin { ADMIN_401 } else { codes::ALL };
            out.extend(
                unauthorized
                    .iter()
                    .filter(|e| e.status == StatusCode::UNAUTHORIZED)
                    .cloned(),
            );
            // An account key on an operator route, or a key without the scope.
            out.extend([
                codes::IP_NOT_ALLOWED,
                codes::PERMISSION_DENIED,
                // The credential could not be looked up.
                codes::SERVICE_UNAVAILABLE,
            ]);
        }
        if self.body {
            out.extend([
                codes::INVALID_REQUEST,
                codes::UNKNOWN_FIELD,
                codes::MISSING_FIELD,
                codes::UNSUPPORTED_MEDIA_TYPE,
            ]);
        }
        // A body is read whole by the gateway when it is signed or idempotent.
        if self.body || self.idempotent || (self.secured && !self.admin) {
            out.push(codes::BODY_TOO_LARGE);
        }
        if self.query {
            out.extend([codes::INVALID_PARAMETER, codes::UNKNOWN_FIELD]);
        }
        if self.path_params {
            out.push(codes::NOT_FOUND);
        }
        if self.idempotent {
            out.extend([
                codes::IDEMPOTENCY_KEY_INVALID,
                codes::IDEMPOTENCY_IN_PROGRESS,
                codes::IDEMPOTENCY_KEY_REUSED,
            ]);
        } else if self.secured && self.method == "post" {
            out.push(codes::IDEMPOTENCY_NOT_SUPPORTED);
        }
        out
    }
}

/// Adds the shared responses, codes, headers and rules to every operation of `doc`.
pub fn complete(doc: &mut Value) {
    let Some(root) = doc.as_object_mut() else {
        return;
    };
    exactly_one_of(root);
    if let Some(headers) = root
        .entry("components")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .and_then(|c| {
            c.entry("headers")
                .or_insert_with(|| json!({}))
                .as_object_mut()
        })
    {
        for (name, description, value) in ALWAYS {
            headers.insert(
                (*name).into(),
                json!({"description": description, "required": true,
                       "schema": {"type": "string", "examples": [value]}}),
            );
        }
    }
    // The header's rule (`gateway::idempotency::key_of`), stated where a client sees it.
    if let Some(p) = root
        .get_mut("components")
        .and_then(|c| c.get_mut("parameters"))
        .and_then(|p| p.get_mut("Idempotency-Key"))
        .and_then(Value::as_object_mut)
    {
        p.insert(
            "schema".into(),
            json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"}),
        );
    }
    let Some(paths) = root.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if let Some(op) = op.as_object_mut() {
                complete_operation(path, method, op);
            }
        }
    }
}

/// The quota headers, on every response of a limited operation that reached the limiter
/// (defined by `gateway::openapi`).
const RATE_HEADERS: &[&str] = &["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"];

/// The headers on every response, errors included (set by the request context).
const ALWAYS: &[(&str, &str, &str)] = &[
    (
        "Request-Id",
        "The request's id, also in every error body and the access log.",
        "req_…",
    ),
    (
        "Strict-Transport-Security",
        "HSTS.",
        "max-age=63072000; includeSubDomains; preload",
    ),
    (
        "Cache-Control",
        "Nothing from the vault is cached.",
        "no-store",
    ),
    ("X-Content-Type-Options", "No content sniffing.", "nosniff"),
];

fn complete_operation(path: &str, method: &str, op: &mut Map<String, Value>) {
    query_parameters(path, op);
    let params = op.get("parameters").and_then(Value::as_array);
    let param_in = |place: &str| {
        params.is_some_and(|ps| {
            ps.iter()
                .any(|p| p.get("in").and_then(Value::as_str) == Some(place))
        })
    };
    let idempotent = params.is_some_and(|ps| {
        ps.iter().any(|p| {
            p.get("$ref").and_then(Value::as_str) == Some("#/components/parameters/Idempotency-Key")
        })
    });
    let shape = Operation {
        path,
        method,
        secured: op
            .get("security")
            .and_then(Value::as_array)
            .is_some_and(|s| !s.is_empty()),
        admin: path.starts_with("/v1/admin/"),
        body: op.contains_key("requestBody"),
        query: param_in("query"),
        path_params: param_in("path"),
        idempotent: idempotent && !IDEMPOTENCY_EXCLUDED.contains(&path),
    };
    let mut shared = shape.shared_errors();
    // A rule enforced beyond the schema is a refusal the operation can give.
    // An operation may have several entries (the card rules, then its own).
    let rules: Vec<&(&str, &str)> = BEYOND_SCHEMA
        .iter()
        .filter(|(m, p, _)| *m == method && *p == path)
        .flat_map(|(_, _, rules)| rules.iter())
        .collect();
    shared.extend(
        rules
            .iter()
            .filter_map(|(code, _)| codes::ALL.iter().find(|e| e.code == *code).cloned()),
    );
    let Some(responses) = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    else {
        return;
    };
    // Status → codes, starting with the codes each declared response names.
    let mut by_status: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for (status, resp) in responses.iter() {
        let Ok(n) = status.parse::<u16>() else {
            continue;
        };
        if n < 400 {
            continue;
        }
        let text = resp
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        by_status.insert(status.clone(), named_codes(text, n));
    }
    for e in &shared {
        let list = by_status.entry(e.status.as_str().to_owned()).or_default();
        if !list.contains(&e.code) {
            list.push(e.code);
        }
    }
    for (status, mut list) in by_status {
        list.sort_by_key(|c| codes::ALL.iter().position(|e| e.code == *c));
        let resp = responses
            .entry(status)
            .or_insert_with(|| json!({"description": list.join(", ")}));
        let Some(resp) = resp.as_object_mut() else {
            continue;
        };
        resp.insert(
            "content".into(),
            json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}),
        );
        resp.insert("x-error-codes".into(), json!(list));
    }
    for resp in responses.values_mut() {
        let Some(h) = resp
            .as_object_mut()
            .map(|r| r.entry("headers").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let limited = !UNLIMITED.contains(&path);
        let names = ALWAYS
            .iter()
            .map(|(name, _, _)| *name)
            .chain(RATE_HEADERS.iter().copied().filter(|_| limited));
        for name in names {
            h.insert(
                name.into(),
                json!({"$ref": format!("#/components/headers/{name}")}),
            );
        }
    }
    // The credential could not be looked up: retry after a second.
    if shape.secured
        && let Some(h) = responses
            .get_mut("503")
            .and_then(|r| r.get_mut("headers"))
            .and_then(Value::as_object_mut)
    {
        h.insert(
            "Retry-After".into(),
            json!({"$ref": "#/components/headers/Retry-After"}),
        );
    }
    if !rules.is_empty() {
        let list: Vec<Value> = rules
            .iter()
            .map(|(code, rule)| json!({"code": code, "rule": rule}))
            .collect();
        let named: Vec<String> = rules
            .iter()
            .map(|(code, rule)| format!("{rule} (`{code}`)"))
            .collect();
        let text = format!(
            "Refused beyond the schema, by rules JSON Schema cannot state: {}.",
            named.join("; ")
        );
        let description = match op.get("description").and_then(Value::as_str) {
            Some(d) if !d.is_empty() => format!("{d}\n\n{text}"),
            _ => text,
        };
        op.insert("description".into(), Value::String(description));
        op.insert("x-refused-beyond-schema".into(), Value::Array(list));
    }
}

/// Moves the parameters that utoipa placed in the path but the path does not name to the
/// query. utoipa infers a parameter's place from the extractor only for its own axum
/// types, and `ApiQuery` is not one, so a query struct's fields come out as required path
/// parameters. A parameter named in no `{…}` of the path can only be a query parameter;
/// it is required only when its type does not admit null, and null (which a query string
/// cannot carry) is taken out of its type.
fn query_parameters(path: &str, op: &mut Map<String, Value>) {
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    for p in params.iter_mut().filter_map(Value::as_object_mut) {
        let named = p
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| path.contains(&format!("{{{n}}}")));
        if p.get("in").and_then(Value::as_str) != Some("path") || named {
            continue;
        }
        p.insert("in".into(), json!("query"));
        let mut optional = false;
        if let Some(Value::Array(types)) = p.get_mut("schema").and_then(|s| s.get_mut("type")) {
            optional = types.iter().any(|t| t == "null");
            types.retain(|t| t != "null");
            if let [only] = types.as_slice() {
                let only = only.clone();
                if let Some(schema) = p.get_mut("schema").and_then(Value::as_object_mut) {
                    schema.insert("type".into(), only);
                }
            }
        }
        p.insert("required".into(), Value::Bool(!optional));
    }
}

/// The codes of `status` that a response description names, in any order and wording;
/// `prefix_*` names every code that starts with `prefix_`.
fn named_codes(text: &str, status: u16) -> Vec<&'static str> {
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '*'))
        .filter(|w| !w.is_empty())
        .collect();
    codes::ALL
        .iter()
        .filter(|e| e.status.as_u16() == status)
        .filter(|e| {
            words.iter().any(|w| match w.strip_suffix('*') {
                Some(prefix) => e.code.starts_with(prefix),
                None => *w == e.code,
            })
        })
        .map(|e| e.code)
        .fold(Vec::new(), |mut acc, c| {
            if !acc.contains(&c) {
                acc.push(c);
            }
            acc
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_from_descriptions() {
        assert_eq!(
            named_codes("pin_payload_*, pin_length (4 to 12)", 400),
            vec![
                "pin_payload_invalid",
                "pin_payload_unsupported",
                "pin_payload_card_mismatch",
                "pin_payload_stale",
                "pin_length"
            ]
        );
        // A code of another status is not this response's.
        assert!(named_codes("pin_payload_replayed", 400).is_empty());
        assert_eq!(named_codes("conflict: retry", 409), vec!["conflict"]);
    }

    #[test]
    fn every_rule_names_a_real_code() {
        for (_, _, rules) in BEYOND_SCHEMA {
            for (code, _) in *rules {
                assert!(codes::ALL.iter().any(|e| e.code == *code), "{code}");
            }
        }
    }
}
