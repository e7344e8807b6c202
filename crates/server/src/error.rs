//! The one place where errors become HTTP. Every error body is
//! `{"error": {"type", "code", "message", "request_id"}}`; a message never echoes
//! input and never names internals. 5xx details go to the log with their call site.

use crate::service::ServiceError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::panic::Location;
use strongroom_core::DomainError;
use strongroom_crypto::CryptoError;
use strongroom_store::StoreError;

/// An error a handler returns. Rendered to JSON by the request-id middleware, which
/// knows the request id.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine code.
    pub code: &'static str,
    /// Human message; constant text, never input.
    pub message: &'static str,
    /// Seconds until a retry can succeed (`Retry-After`): set for a suspension.
    pub retry_after: Option<u64>,
    /// Which part of an operator's configuration was refused, and why (a rule set's
    /// rule id and problem): text the operator wrote, never request secrets.
    pub detail: Option<Box<Refused>>,
}

/// What of a refused configuration was wrong (`rule`, `problem` in the error body).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refused {
    /// The rule (its id, or `rules[i]`); absent when the whole set is at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The 1-based line of an uploaded file at fault; absent when no one line is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// What is wrong, in words.
    pub problem: String,
}

/// Marker placed in a response's extensions so the outer middleware renders the body.
#[derive(Debug, Clone)]
pub struct ErrorBody(pub ApiError);

impl ApiError {
    const fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self {
            status,
            code,
            message,
            retry_after: None,
            detail: None,
        }
    }

    /// The same error, telling the client when to retry (`Retry-After`).
    pub fn retry_after(self, secs: u64) -> Self {
        Self {
            retry_after: Some(secs),
            ..self
        }
    }

    /// The error `type`, derived from the status.
    pub fn error_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            409 | 422 | 423 => "conflict_error",
            429 => "rate_limit_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// A 500 whose detail is logged with its call site, never returned.
    #[track_caller]
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        log_failure(&codes::INTERNAL, detail, Location::caller());
        codes::INTERNAL
    }

    /// 503 when the store cannot be reached.
    #[track_caller]
    pub fn unavailable(detail: &dyn std::fmt::Display) -> Self {
        log_failure(&codes::SERVICE_UNAVAILABLE, detail, Location::caller());
        codes::SERVICE_UNAVAILABLE
    }
}

/// Logs a 5xx's detail with the place it arose.
fn log_failure(err: &ApiError, detail: &dyn std::fmt::Display, at: &Location<'_>) {
    if err.status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::error!(file = at.file(), line = at.line(), error = %detail, "store unavailable");
    } else {
        tracing::error!(file = at.file(), line = at.line(), error = %detail, "internal error");
    }
}

/// Every stable error this API returns, with its status. Documented in the OpenAPI spec.
pub mod codes {
    use super::ApiError;
    use axum::http::StatusCode as S;

    macro_rules! codes {
        ($($name:ident = ($status:ident, $code:literal, $msg:literal);)*) => {
            $(
                #[doc = $msg]
                pub const $name: ApiError = ApiError::new(S::$status, $code, $msg);
            )*
            /// All codes, for the docs.
            pub const ALL: &[ApiError] = &[$($name),*];
        };
    }

    codes! {
        INVALID_REQUEST = (BAD_REQUEST, "invalid_request", "The request body or parameters are malformed.");
        UNKNOWN_FIELD = (BAD_REQUEST, "unknown_field", "The request contains a field that is not allowed.");
        MISSING_FIELD = (BAD_REQUEST, "missing_field", "A required field is missing.");
        INVALID_PARAMETER = (BAD_REQUEST, "invalid_parameter", "A parameter has an invalid value.");
        BODY_TOO_LARGE = (PAYLOAD_TOO_LARGE, "body_too_large", "The request body is too large.");
        UNSUPPORTED_MEDIA_TYPE = (UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "The request body's Content-Type is not the one this endpoint takes: application/json, unless the endpoint's documentation names another.");
        AUTHENTICATION_REQUIRED = (UNAUTHORIZED, "authentication_required", "An API key is required: Authorization: Bearer <key>.");
        INVALID_API_KEY = (UNAUTHORIZED, "invalid_api_key", "The API key is invalid.");
        API_KEY_REVOKED = (UNAUTHORIZED, "api_key_revoked", "The API key has been revoked.");
        PERMISSION_DENIED = (FORBIDDEN, "permission_denied", "The API key does not have permission for this request.");
        LIVE_MODE_REQUIRED = (FORBIDDEN, "live_mode_required", "The account's security settings protect live traffic and can only be changed with a live-mode key.");
        OTP_INVALID = (FORBIDDEN, "otp_invalid", "The one-time password is invalid, expired or used.");
        NOT_FOUND = (NOT_FOUND, "not_found", "No such resource.");
        CARD_TOKEN_INVALID = (NOT_FOUND, "card_token_invalid", "The card token is malformed, expired, or from another account or mode.");
        METHOD_NOT_ALLOWED = (METHOD_NOT_ALLOWED, "method_not_allowed", "The method is not allowed for this resource.");
        CONFLICT = (CONFLICT, "conflict", "The request conflicts with the current state; retry.");
        LIMIT_REACHED = (CONFLICT, "limit_reached", "The account already has as many of these as it may have; delete or revoke one first.");
        KEY_IN_USE = (CONFLICT, "key_in_use", "The key version still protects records or is the active writer.");
        OTP_DELIVERY_NOT_CONFIGURED = (CONFLICT, "otp_delivery_not_configured", "The account has no OTP delivery URL for live mode.");
        LAST_ADMIN_KEY = (CONFLICT, "last_admin_key", "This is the last admin key that is not revoked; create another first.");
        ALLOWLIST_EXCLUDES_CALLER = (BAD_REQUEST, "allowlist_excludes_caller", "The allowlist would refuse the admin key making this request from its current address.");
        CARD_NUMBER_INVALID = (BAD_REQUEST, "card_number_invalid", "The card number is not a valid card number.");
        CARD_NUMBER_LUHN = (BAD_REQUEST, "card_number_luhn", "The card number failed its check digit.");
        CARD_BRAND_UNKNOWN = (BAD_REQUEST, "card_brand_unknown", "The card number does not belong to a supported card brand.");
        EXPIRY_INVALID = (BAD_REQUEST, "expiry_invalid", "The expiry month or year is invalid.");
        CARD_EXPIRED = (BAD_REQUEST, "card_expired", "The card has expired.");
        CVC_INVALID = (BAD_REQUEST, "cvc_invalid", "The CVC must be 3 digits (4 for American Express).");
        TEST_CARD_IN_LIVE_MODE = (BAD_REQUEST, "test_card_in_live_mode", "Test card numbers cannot be used in live mode.");
        LIVE_CARD_IN_TEST_MODE = (BAD_REQUEST, "live_card_in_test_mode", "Only test card numbers are accepted in test mode.");
        SCOPE_UNKNOWN = (BAD_REQUEST, "scope_unknown", "A requested scope is unknown.");
        SCOPES_REQUIRED = (BAD_REQUEST, "scopes_required", "Restricted keys must name at least one scope.");
        SCOPES_NOT_ALLOWED = (BAD_REQUEST, "scopes_not_allowed", "Only restricted keys take explicit scopes.");
        INTERNAL = (INTERNAL_SERVER_ERROR, "internal_error", "An internal error occurred.");
        SERVICE_UNAVAILABLE = (SERVICE_UNAVAILABLE, "service_unavailable", "The service is temporarily unavailable.");
        TIMEOUT = (REQUEST_TIMEOUT, "request_timeout", "The request took too long.");
        SIGNATURE_MISSING = (UNAUTHORIZED, "signature_missing", "This account requires signed requests (Signature-Input and Signature headers).");
        SIGNATURE_INVALID = (UNAUTHORIZED, "signature_invalid", "The request signature is invalid, stale, replayed, or does not cover what it must.");
        SIGNATURE_EXPIRED = (UNAUTHORIZED, "signature_expired", "The request signature was created outside the accepted time window.");
        CONTENT_DIGEST_MISMATCH = (UNAUTHORIZED, "content_digest_mismatch", "The Content-Digest header is missing, unsupported or does not match the body.");
        IP_NOT_ALLOWED = (FORBIDDEN, "ip_not_allowed", "Requests from this address are not allowed for this account or key.");
        SEALED = (SERVICE_UNAVAILABLE, "sealed", "The vault is sealed: its keys are not in memory. It opens when enough unseal shares are in (POST /v1/sys/unseal), or, with a file or HSM root key, when the server restarts.");
        SHARE_INVALID = (BAD_REQUEST, "share_invalid", "The unseal share is malformed or is not a share of this vault's root key.");
        SHARE_DUPLICATE = (CONFLICT, "share_duplicate", "This unseal share has already been given.");
        KCV_MISMATCH = (BAD_REQUEST, "kcv_mismatch", "The key component does not have the check value given with it.");
        CUSTODIAN_REPEATED = (CONFLICT, "custodian_repeated", "This admin key already gave a component to this import: each component comes from a different custodian.");
        KEY_BLOCK_INVALID = (BAD_REQUEST, "key_block_invalid", "The TR-31 key block does not unwrap under the key-encryption key: malformed, altered, of an unsupported version (B and D are), or under another key.");
        KEY_BLOCK_USAGE = (BAD_REQUEST, "key_block_usage", "The TR-31 key block's key usage or algorithm is not that of the kind of key imported (B0 for a BDK, P0 for a zone PIN key, K0 or K1 for a KEK).");
        BDK_UNKNOWN = (BAD_REQUEST, "bdk_unknown", "The bdk is not a base derivation key imported into this account (POST /v1/admin/key_imports, kind bdk).");
        BDK_UNSUPPORTED = (BAD_REQUEST, "bdk_unsupported", "DUKPT does not derive from this base derivation key's algorithm: AES-DUKPT takes AES-128, AES-192 or AES-256 BDKs, TDES-DUKPT (ANSI X9.24-1) double-length TDES ones.");
        ZONE_KEY_UNKNOWN = (BAD_REQUEST, "zone_key_unknown", "The zone_key is not a zone PIN key imported into this account (POST /v1/admin/key_imports, kind zone_pin_key).");
        TERMINAL_EXISTS = (CONFLICT, "terminal_exists", "A terminal with this Initial Key ID or initial key serial number is already registered under this base derivation key.");
        TERMINAL_DISABLED = (CONFLICT, "terminal_disabled", "The terminal is disabled; what it sends is refused.");
        KSN_INVALID = (BAD_REQUEST, "ksn_invalid", "The key serial number is malformed (AES-DUKPT: 24 hex digits; TDES-DUKPT: 20), or its transaction counter is one a terminal never uses (0, or more than 16 one bits for AES-DUKPT, 10 for TDES-DUKPT).");
        KSN_REPLAYED = (CONFLICT, "ksn_replayed", "The key serial number's transaction counter is not above the highest this terminal has sent: a transaction is accepted once.");
        DECRYPTION_FAILED = (UNPROCESSABLE_ENTITY, "decryption_failed", "The data did not decipher to card data of the kind named under this terminal's key for this key serial number.");
        INTEGRITY_APPLICATION_INVALID = (BAD_REQUEST, "integrity_application_invalid", "The application (applicationid header, or applicationId) is not registered for this account, or the token was requested by another package.");
        INTEGRITY_HASH_INVALID = (BAD_REQUEST, "integrity_hash_invalid", "The hash is unknown, used, expired, another caller's or another application's, or not the one the token was requested with: get a new one (GET /v1/integrity/app).");
        INTEGRITY_TOKEN_INVALID = (BAD_REQUEST, "integrity_token_invalid", "The integrity token is malformed, does not decrypt with the application's decryption key, or is not signed by its verification key.");
        INTEGRITY_TOKEN_EXPIRED = (BAD_REQUEST, "integrity_token_expired", "The integrity token is older than the application's max_token_age_s, or dated in the future.");
        INTEGRITY_APP_UNRECOGNIZED = (FORBIDDEN, "integrity_app_unrecognized", "Google Play does not recognize the app (appRecognitionVerdict is not PLAY_RECOGNIZED), or its package name or signing certificate is not the registered one.");
        INTEGRITY_APP_VERSION = (FORBIDDEN, "integrity_app_version", "The app's versionCode is below the application's min_version_code.");
        INTEGRITY_DEVICE = (FORBIDDEN, "integrity_device", "The device verdicts lack one the application requires (required_device_verdicts).");
        INTEGRITY_LICENSING = (FORBIDDEN, "integrity_licensing", "The application requires a licensed install (require_licensed) and the verdict is not LICENSED.");
        INTEGRITY_APP_EXISTS = (CONFLICT, "integrity_app_exists", "This application is already registered for the account: update it (PATCH) instead.");
        ATTESTATION_REQUIRED = (FORBIDDEN, "attestation_required", "This account requires a device attestation for this step-up: send the Strongroom-Attestation header with one from POST /v1/integrity/app.");
        ATTESTATION_INVALID = (FORBIDDEN, "attestation_invalid", "The Strongroom-Attestation is unknown, expired, already used, or was earned by another caller or application.");
        ROTATION_RUNNING = (CONFLICT, "rotation_running", "A root-key rotation is already running (GET /v1/sys/rotate_root shows its progress).");
        ROTATION_PENDING = (CONFLICT, "rotation_pending", "An interrupted root-key rotation to another provider is pending: run it again with that provider (GET /v1/sys/rotate_root shows which).");
        ROOT_PROVIDER_DOWNGRADE = (BAD_REQUEST, "root_provider_downgrade", "A root key may move to an HSM (pkcs11), or from a file to Shamir shares, but never to a weaker provider.");
        PROVIDER_NOT_CONFIGURED = (CONFLICT, "provider_not_configured", "The server has no configuration for that root-key provider (the [pkcs11] section, or a root key file).");
        UNSEAL_BY_RESTART = (CONFLICT, "unseal_by_restart", "This vault's root key comes from a file or an HSM, which opens it at start: restart the server to unseal it.");
        RATE_LIMITED = (TOO_MANY_REQUESTS, "rate_limited", "Too many requests; retry after the number of seconds in Retry-After.");
        IDEMPOTENCY_KEY_INVALID = (BAD_REQUEST, "idempotency_key_invalid", "The Idempotency-Key header must be 1 to 255 printable ASCII characters.");
        IDEMPOTENCY_NOT_SUPPORTED = (BAD_REQUEST, "idempotency_not_supported", "This endpoint does not accept an Idempotency-Key because its response carries a secret.");
        IDEMPOTENCY_KEY_REUSED = (UNPROCESSABLE_ENTITY, "idempotency_key_reused", "The Idempotency-Key was already used with a different request.");
        IDEMPOTENCY_IN_PROGRESS = (CONFLICT, "idempotency_in_progress", "A request with this Idempotency-Key is still in progress; retry later.");
        PIN_PAYLOAD_INVALID = (BAD_REQUEST, "pin_payload_invalid", "The encrypted PIN could not be read: malformed, for an unknown or expired key, or not decryptable.");
        PIN_PAYLOAD_UNSUPPORTED = (BAD_REQUEST, "pin_payload_unsupported", "The encrypted PIN must be a compact JWE with alg RSA-OAEP-256 and enc A256GCM.");
        PIN_PAYLOAD_CARD_MISMATCH = (BAD_REQUEST, "pin_payload_card_mismatch", "The encrypted PIN was made for another card.");
        PIN_PAYLOAD_STALE = (BAD_REQUEST, "pin_payload_stale", "The encrypted PIN's iat is older than 5 minutes or in the future.");
        PIN_PAYLOAD_REPLAYED = (CONFLICT, "pin_payload_replayed", "The encrypted PIN's jti has been used before.");
        PIN_LENGTH = (BAD_REQUEST, "pin_length", "A PIN must be 4 to 12 digits.");
        PIN_TOO_WEAK = (BAD_REQUEST, "pin_too_weak", "The PIN is too easy to guess.");
        PIN_INCORRECT = (FORBIDDEN, "pin_incorrect", "The current PIN is incorrect.");
        PIN_LOCKED = (LOCKED, "pin_locked", "The PIN is locked after too many failed attempts; reset it with an OTP or ask an operator to unlock it.");
        PIN_NOT_SET = (CONFLICT, "pin_not_set", "The card has no PIN.");
        PIN_ALREADY_SET = (CONFLICT, "pin_already_set", "The card already has a PIN; change it, or reset it with a pin.reset OTP.");
        AUDIT_UNAVAILABLE = (SERVICE_UNAVAILABLE, "audit_unavailable", "The request could not be recorded in the audit log, so it was not performed.");
        TOKEN_INVALID = (UNAUTHORIZED, "token_invalid", "The bearer token is invalid.");
        TOKEN_EXPIRED = (UNAUTHORIZED, "token_expired", "The bearer token has expired; request a new one.");
        TOKEN_REVOKED = (UNAUTHORIZED, "token_revoked", "The bearer token has been revoked.");
        INVALID_SCOPE = (BAD_REQUEST, "invalid_scope", "The requested scope is empty, unknown or not held by the API key.");
        URL_NOT_ALLOWED = (BAD_REQUEST, "url_not_allowed", "The URL must use HTTPS and reach a public address.");
        ENDPOINT_DISABLED = (CONFLICT, "endpoint_disabled", "The webhook endpoint is disabled; enable it first.");
        DESTINATION_INVALID = (BAD_REQUEST, "destination_invalid", "A relay destination is malformed or repeated: the host must be a DNS name or IP literal (no scheme, credentials, port or path), the port 1-65535, the path prefix an absolute path, and ca_cert_pem PEM certificates only.");
        DESTINATION_NOT_PUBLIC = (BAD_REQUEST, "destination_not_public", "A relay destination is, or resolves to, a loopback, private, link-local or metadata address.");
        TOO_MANY_DESTINATIONS = (BAD_REQUEST, "too_many_destinations", "An account may have at most 50 relay destinations.");
        DESTINATION_NOT_APPROVED = (FORBIDDEN, "destination_not_approved", "The URL is not HTTPS to a relay destination approved for this account and mode.");
        DESTINATION_UNREACHABLE = (BAD_GATEWAY, "destination_unreachable", "The relay destination's host name does not resolve.");
        INBOUND_ROUTE_INVALID = (BAD_REQUEST, "inbound_route_invalid", "An inbound route is malformed: forward_to must be an approved HTTPS destination without query or fragment, path an absolute path prefix, each tokenize rule a JSON pointer or an object with number and either exp_month and exp_year or expiry, and description at most 200 characters.");
        TOO_MANY_INBOUND_ROUTES = (BAD_REQUEST, "too_many_inbound_routes", "An account may have at most 100 inbound routes in each mode.");
        INBOUND_CARD_INVALID = (UNPROCESSABLE_ENTITY, "inbound_card_invalid", "A field the inbound route tokenizes does not hold a valid card number with a valid, unexpired expiry; nothing was forwarded.");
        CLIENT_SESSION_INVALID = (FORBIDDEN, "client_session_invalid", "The client secret is wrong, or its session belongs to another account or mode.");
        CLIENT_SESSION_EXPIRED = (BAD_REQUEST, "client_session_expired", "The client session has expired; the merchant must create a new one.");
        CLIENT_SESSION_USED = (CONFLICT, "client_session_used", "The client session has already collected all the cards it may.");
        ORIGIN_INVALID = (BAD_REQUEST, "origin_invalid", "Each allowed origin must be scheme://host[:port] exactly (lowercase, no path or trailing slash): HTTPS, or plain HTTP to a loopback host in test mode; 1 to 10 of them.");
        RISK_BLOCKED = (FORBIDDEN, "risk_blocked", "The request was refused.");
        SUSPENDED = (FORBIDDEN, "suspended", "The request was refused; retry after the number of seconds in Retry-After.");
        API_KEY_SUSPENDED = (FORBIDDEN, "api_key_suspended", "This API key is suspended; retry after the number of seconds in Retry-After, or ask the account's owner.");
        ACCOUNT_SUSPENDED = (FORBIDDEN, "account_suspended", "This account is suspended; retry after the number of seconds in Retry-After, or contact the operator.");
        RULES_INVALID = (BAD_REQUEST, "rules_invalid", "The rule set was refused whole: `rule` names the rule and `problem` says what is wrong with it.");
        RULES_VERSION_CONFLICT = (CONFLICT, "rules_version_conflict", "The rules in force are no longer the version `replaces` names; read them again.");
        BIN_TABLE_INVALID = (BAD_REQUEST, "bin_table_invalid", "The BIN table was refused whole: `line` names the line at fault (when one is) and `problem` says what is wrong; the table in force is unchanged.");
        IP_DATABASE_INVALID = (BAD_REQUEST, "ip_database_invalid", "The IP database was refused: `problem` says why (not a readable MaxMind DB file, or one without country codes); the database in force is unchanged.");
        LIST_ENTRY_INVALID = (BAD_REQUEST, "list_entry_invalid", "The list entry's value is malformed for its type: a card id or fingerprint of this account and mode, an IP address or CIDR, an email address, a BIN of 6 digits, or a device id of 1 to 200 characters.");
        LIST_ENTRY_EXISTS = (CONFLICT, "list_entry_exists", "The list already holds this subject in an entry that has not expired or been deleted.");
        SUSPENSION_TARGET_INVALID = (BAD_REQUEST, "suspension_target_invalid", "The suspension's target is malformed or unknown: a card id or fingerprint of this account and mode, an IP address or CIDR, an email address, a device id of 1 to 200 characters, or a key id of this account.");
        BROWSER_NOT_ALLOWED = (FORBIDDEN, "browser_not_allowed", "This endpoint is for servers; browsers may only reach the hosted fields, strongroom.js and the client session card route.");
        RELAY_EXPRESSION_INVALID = (BAD_REQUEST, "relay_expression_invalid", "A relay expression is malformed: it must be {{card_<id>:<field>}}, inside a string in a JSON body, and a cvc must not touch a digit or another expression.");
        RELAY_FIELD_NOT_OFFERED = (BAD_REQUEST, "relay_field_not_offered", "A relay expression asks for a field the relay does not offer: number, exp_month, exp_year, exp_year2, cardholder_name or cvc.");
        PIN_BLOCK_UNAVAILABLE = (CONFLICT, "pin_block_unavailable", "The translated PIN block is not held for this card: it was translated for another card, used by an earlier relay, expired after 60 seconds, or lost in a restart.");
        CVC_UNAVAILABLE = (CONFLICT, "cvc_unavailable", "The card's CVC is not held: it was never given, was used by an earlier relay, expired after 10 minutes, or was lost in a restart.");
        RELAY_VALUE_UNAVAILABLE = (CONFLICT, "relay_value_unavailable", "A card named in the relay request has no such value (no cardholder name on file).");
        RELAY_VALUE_NOT_ALLOWED = (BAD_REQUEST, "relay_value_not_allowed", "A card's value holds a character that cannot be placed where the expression is (a control character in a header).");
        RELAY_POINTER_INVALID = (BAD_REQUEST, "relay_pointer_invalid", "A field in tokenize_response_fields is not a valid JSON pointer, or there are more than 20.");
        RELAY_CARD_UNKNOWN = (BAD_REQUEST, "relay_card_unknown", "A card named in the relay request does not exist in this account and mode, or was deleted.");
        RELAY_HEADER_INVALID = (BAD_REQUEST, "relay_header_invalid", "A relay header is malformed, one the relay sets itself (Host, Content-Length, hop-by-hop, Accept-Encoding, Strongroom-*), or one of more than 50.");
        RELAY_UPSTREAM_FAILED = (BAD_GATEWAY, "relay_upstream_failed", "The relay could not reach the destination, or the connection failed (TLS verification included).");
        RELAY_UPSTREAM_TIMEOUT = (GATEWAY_TIMEOUT, "relay_upstream_timeout", "The destination did not answer in time.");
        RELAY_RESPONSE_TOO_LARGE = (BAD_GATEWAY, "relay_response_too_large", "The destination's answer is larger than the relay reads.");
        RELAY_RESPONSE_ENCODED = (BAD_GATEWAY, "relay_response_encoded", "The destination's answer is compressed; the relay asks for and only returns uncompressed answers, which it can clean.");
    }
}

/// The one mapping from what a service says went wrong to what the client sees. Pure:
/// it logs nothing, so the audit log can name a refusal's code too.
fn mapped(e: &ServiceError) -> ApiError {
    use ServiceError as E;
    use codes::*;
    match e {
        E::InvalidParameter => INVALID_PARAMETER,
        E::MissingField => MISSING_FIELD,
        E::NotFound => NOT_FOUND,
        E::Conflict => CONFLICT,
        E::LimitReached => LIMIT_REACHED,
        E::PermissionDenied => PERMISSION_DENIED,
        E::IpNotAllowed => IP_NOT_ALLOWED,
        E::InvalidScope => INVALID_SCOPE,
        E::CvcInvalid => CVC_INVALID,
        E::CardTokenInvalid => CARD_TOKEN_INVALID,
        E::OtpInvalid => OTP_INVALID,
        E::KcvMismatch => KCV_MISMATCH,
        E::CustodianRepeated => CUSTODIAN_REPEATED,
        E::KeyBlockInvalid => KEY_BLOCK_INVALID,
        E::KeyBlockUsage => KEY_BLOCK_USAGE,
        E::BdkUnknown => BDK_UNKNOWN,
        E::BdkUnsupported => BDK_UNSUPPORTED,
        E::TerminalExists => TERMINAL_EXISTS,
        E::ZoneKeyUnknown => ZONE_KEY_UNKNOWN,
        E::TerminalDisabled => TERMINAL_DISABLED,
        E::KsnInvalid => KSN_INVALID,
        E::KsnReplayed => KSN_REPLAYED,
        E::DecryptionFailed => DECRYPTION_FAILED,
        E::IntegrityApplicationInvalid => INTEGRITY_APPLICATION_INVALID,
        E::IntegrityHashInvalid => INTEGRITY_HASH_INVALID,
        E::IntegrityTokenInvalid => INTEGRITY_TOKEN_INVALID,
        E::IntegrityTokenExpired => INTEGRITY_TOKEN_EXPIRED,
        E::IntegrityAppUnrecognized => INTEGRITY_APP_UNRECOGNIZED,
        E::IntegrityAppVersion => INTEGRITY_APP_VERSION,
        E::IntegrityDevice => INTEGRITY_DEVICE,
        E::IntegrityLicensing => INTEGRITY_LICENSING,
        E::IntegrityAppExists => INTEGRITY_APP_EXISTS,
        E::AttestationRequired => ATTESTATION_REQUIRED,
        E::AttestationInvalid => ATTESTATION_INVALID,
        E::OtpDeliveryNotConfigured => OTP_DELIVERY_NOT_CONFIGURED,
        E::PinPayloadInvalid => PIN_PAYLOAD_INVALID,
        E::PinPayloadUnsupported => PIN_PAYLOAD_UNSUPPORTED,
        E::PinPayloadCardMismatch => PIN_PAYLOAD_CARD_MISMATCH,
        E::PinPayloadStale => PIN_PAYLOAD_STALE,
        E::PinPayloadReplayed => PIN_PAYLOAD_REPLAYED,
        E::PinLength => PIN_LENGTH,
        E::PinTooWeak => PIN_TOO_WEAK,
        E::PinIncorrect => PIN_INCORRECT,
        E::PinLocked => PIN_LOCKED,
        E::PinNotSet => PIN_NOT_SET,
        E::PinAlreadySet => PIN_ALREADY_SET,
        E::TokenInvalid => TOKEN_INVALID,
        E::TokenExpired => TOKEN_EXPIRED,
        E::TokenRevoked => TOKEN_REVOKED,
        E::UrlNotAllowed => URL_NOT_ALLOWED,
        E::DestinationInvalid => DESTINATION_INVALID,
        E::DestinationNotPublic => DESTINATION_NOT_PUBLIC,
        E::TooManyDestinations => TOO_MANY_DESTINATIONS,
        E::DestinationNotApproved => DESTINATION_NOT_APPROVED,
        E::DestinationUnreachable => DESTINATION_UNREACHABLE,
        E::Relay(r) => {
            use strongroom_core::relay::{Field, RelayError as R};
            match r {
                R::ExpressionInvalid { .. } => RELAY_EXPRESSION_INVALID,
                R::FieldNotOffered { .. } => RELAY_FIELD_NOT_OFFERED,
                R::ValueUnavailable { field: Field::Cvc } => CVC_UNAVAILABLE,
                R::ValueUnavailable {
                    field: Field::PinBlock,
                } => PIN_BLOCK_UNAVAILABLE,
                R::ValueUnavailable { .. } => RELAY_VALUE_UNAVAILABLE,
                R::ValueNotAllowed { .. } => RELAY_VALUE_NOT_ALLOWED,
                R::PointerInvalid => RELAY_POINTER_INVALID,
            }
        }
        E::RelayCardUnknown => RELAY_CARD_UNKNOWN,
        E::InboundRouteInvalid => INBOUND_ROUTE_INVALID,
        E::TooManyInboundRoutes => TOO_MANY_INBOUND_ROUTES,
        E::InboundCardInvalid => INBOUND_CARD_INVALID,
        E::ClientSessionInvalid => CLIENT_SESSION_INVALID,
        E::ClientSessionExpired => CLIENT_SESSION_EXPIRED,
        E::ClientSessionUsed => CLIENT_SESSION_USED,
        E::OriginInvalid => ORIGIN_INVALID,
        E::Suspended { .. } => SUSPENDED,
        E::RiskBlocked => RISK_BLOCKED,
        E::SuspensionTargetInvalid => SUSPENSION_TARGET_INVALID,
        E::BinTableInvalid { .. } => BIN_TABLE_INVALID,
        E::IpDatabaseInvalid { .. } => IP_DATABASE_INVALID,
        E::ListEntryInvalid => LIST_ENTRY_INVALID,
        E::ListEntryExists => LIST_ENTRY_EXISTS,
        E::RulesInvalid(_) => RULES_INVALID,
        E::RulesVersionConflict => RULES_VERSION_CONFLICT,
        E::RelayHeaderInvalid => RELAY_HEADER_INVALID,
        E::RelayUpstreamFailed => RELAY_UPSTREAM_FAILED,
        E::RelayUpstreamTimeout => RELAY_UPSTREAM_TIMEOUT,
        E::RelayResponseTooLarge => RELAY_RESPONSE_TOO_LARGE,
        E::RelayResponseEncoded => RELAY_RESPONSE_ENCODED,
        E::Domain(d) => match d {
            DomainError::CardNumberInvalid => CARD_NUMBER_INVALID,
            DomainError::CardNumberLuhn => CARD_NUMBER_LUHN,
            DomainError::CardBrandUnknown => CARD_BRAND_UNKNOWN,
            DomainError::ExpiryInvalid => EXPIRY_INVALID,
            DomainError::CardExpired => CARD_EXPIRED,
            DomainError::TestCardInLiveMode => TEST_CARD_IN_LIVE_MODE,
            DomainError::LiveCardInTestMode => LIVE_CARD_IN_TEST_MODE,
            DomainError::ScopeUnknown => SCOPE_UNKNOWN,
            DomainError::ScopesRequired => SCOPES_REQUIRED,
            DomainError::ScopesNotAllowed => SCOPES_NOT_ALLOWED,
            DomainError::NotFound => NOT_FOUND,
        },
        E::Store { source, .. } => match source {
            StoreError::Conflict(_) => CONFLICT,
            StoreError::Unavailable(_) => SERVICE_UNAVAILABLE,
            StoreError::Corrupt(_) => INTERNAL,
        },
        E::Crypto { .. } | E::Internal { .. } => INTERNAL,
    }
}

impl From<ServiceError> for ApiError {
    /// Maps, and logs a 5xx's detail with the place the service met it.
    fn from(e: ServiceError) -> Self {
        let mut err = mapped(&e);
        if let ServiceError::Suspended { retry_after } = e {
            err = err.retry_after(retry_after);
        }
        match &e {
            ServiceError::RulesInvalid(r) => {
                err.detail = Some(Box::new(Refused {
                    rule: r.rule.clone(),
                    line: None,
                    problem: r.problem.clone(),
                }));
            }
            ServiceError::BinTableInvalid { line, problem } => {
                err.detail = Some(Box::new(Refused {
                    rule: None,
                    line: *line,
                    problem: problem.clone(),
                }));
            }
            ServiceError::IpDatabaseInvalid { problem } => {
                err.detail = Some(Box::new(Refused {
                    rule: None,
                    line: None,
                    problem: problem.clone(),
                }));
            }
            _ => {}
        }
        if let Some((detail, at)) = e.failure()
            && err.status.is_server_error()
        {
            log_failure(&err, detail, at);
        }
        err
    }
}

/// The stable code of a service error, for the audit log (nothing is logged).
pub fn code_of(e: &ServiceError) -> &'static str {
    mapped(e).code
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<StoreError> for ApiError {
    #[track_caller]
    fn from(e: StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl From<CryptoError> for ApiError {
    #[track_caller]
    fn from(e: CryptoError) -> Self {
        ServiceError::from(e).into()
    }
}

/// The `Retry-After` of a 503 that names no other.
pub const UNAVAILABLE_RETRY_SECS: u64 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        // A 503 is a passing state (a database failing over, a store unreachable, a sealed
        // vault): every one tells the client when to try again.
        let retry_after = self.retry_after.or_else(|| {
            (self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(UNAVAILABLE_RETRY_SECS)
        });
        if let Some(secs) = retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res.extensions_mut().insert(ErrorBody(self));
        res
    }
}

/// The error envelope as written (`openapi::ErrorResponse` documents it).
#[derive(serde::Serialize)]
struct Envelope<'a> {
    error: Detail<'a>,
}

/// Inside the envelope. Fields in alphabetical order, as the body has always had them.
#[derive(serde::Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(flatten)]
    refused: Option<&'a Refused>,
    request_id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

/// Renders the error body with the request id.
pub fn render(err: &ApiError, request_id: &str) -> Vec<u8> {
    serde_json::to_vec(&Envelope {
        error: Detail {
            code: err.code,
            message: err.message,
            refused: err.detail.as_deref(),
            request_id,
            kind: err.error_type(),
        },
    })
    .unwrap_or_default()
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed envelope writes the bytes the `json!` map (sorted keys) wrote.
    #[test]
    fn render_keeps_its_json() {
        for err in [codes::INTERNAL, codes::PIN_PAYLOAD_INVALID] {
            let before = serde_json::to_vec(&serde_json::json!({
                "error": {
                    "type": err.error_type(),
                    "code": err.code,
                    "message": err.message,
                    "request_id": "req_1",
                }
            }))
            .unwrap();
            assert_eq!(render(&err, "req_1"), before);
        }
    }
}
