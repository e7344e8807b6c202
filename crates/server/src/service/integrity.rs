//! Device integrity (docs/device-integrity.md): an account registers the mobile
//! applications whose Google Play Integrity tokens it accepts; the app asks for a
//! single-use `hash` (`GET /v1/integrity/app`), has Play make a token over it, and sends the
//! token back (`POST /v1/integrity/app`). The token is decrypted and verified here, with the
//! keys from the Play Console ("decrypt and verify locally": Google is never called), and
//! its verdicts are checked against what the application requires. A good token earns an
//! attestation (`att_…`), which the step-ups an account names (`require_attestation`) need.
//!
//! Each failing check has its own code. The token is never stored, logged or audited; the
//! verdicts are (as the audit event's code), so that an operator sees why devices fail.

use crate::auth::Principal;
use crate::service::{List, Result, ServiceError, object_name, secs};
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use strongroom_core::{IdKind, Sensitive};
use strongroom_crypto::integrity::{self, DecryptionKey, VerificationKey};
use strongroom_store::{
    AttestationRecord, ChallengeRecord, ControlStore, IntegrityAppRecord, IntegrityStore,
};
use utoipa::ToSchema;

pub use crate::auth::{APPLICATION_HEADER, ATTESTATION_HEADER};
/// How long a hash is accepted.
pub const HASH_TTL_MS: i64 = 5 * 60_000;
/// A token's default maximum age, seconds.
pub const DEFAULT_MAX_TOKEN_AGE_S: i64 = 120;
/// An attestation's default lifetime, seconds.
pub const DEFAULT_ATTESTATION_TTL_S: i64 = 600;
/// How far in the future a token's timestamp may be (clock skew), milliseconds.
const SKEW_MS: i64 = 60_000;
/// Most applications per account.
const MAX_APPS: usize = 50;
/// Most allowed certificate digests per application.
const MAX_CERTIFICATES: usize = 10;

/// The step-ups an account may make need an attestation.
pub const ACTIONS: [&str; 5] = [
    "card.reveal",
    "pin.set",
    "pin.change",
    "relay",
    "otp.create",
];
/// The device verdicts Play gives.
pub const DEVICE_VERDICTS: [&str; 4] = [
    "MEETS_BASIC_INTEGRITY",
    "MEETS_DEVICE_INTEGRITY",
    "MEETS_STRONG_INTEGRITY",
    "MEETS_VIRTUAL_INTEGRITY",
];

/// What the root key wraps an application's keys under.
fn wrap_context(app_id: &str, which: &str) -> String {
    format!("integrity-app/{app_id}/{which}")
}

/// Whether `s` is an Android package name (`com.example.app`).
pub fn valid_application_id(s: &str) -> bool {
    s.len() <= 255
        && s.split('.').count() >= 2
        && s.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// A SHA-256 certificate digest as Play shows it (hex, with or without colons) or as
/// tokens carry it (base64url): lowercase hex.
fn certificate_digest(s: &str) -> Option<String> {
    use base64::Engine as _;
    let hexed: String = s.trim().chars().filter(|c| *c != ':').collect();
    if hexed.len() == 64 && hexed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(hexed.to_ascii_lowercase());
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim().trim_end_matches('='))
        .ok()?;
    (raw.len() == 32).then(|| hex::encode(raw))
}

/// Body of `POST /v1/admin/accounts/{id}/integrity_apps` and of `PATCH` on one: in a
/// `PATCH` each field is optional and only those given change.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrityAppSettings {
    /// The Android package name (`com.example.wallet`). Required when registering; it
    /// cannot change.
    #[schema(
        max_length = 255,
        pattern = "^[A-Za-z][A-Za-z0-9_]*(\\.[A-Za-z][A-Za-z0-9_]*)+$"
    )]
    pub application_id: Option<String>,
    /// The token decryption key from the Play Console, base64 (AES-256, 32 bytes).
    /// Required when registering. Stored wrapped; never shown again.
    #[schema(value_type = Option<String>, max_length = 64)]
    pub decryption_key: Option<Sensitive<String>>,
    /// The token verification key from the Play Console, base64 DER (an EC P-256
    /// public key). Required when registering.
    #[schema(max_length = 512)]
    pub verification_key: Option<String>,
    /// SHA-256 digests of the app's signing certificates (hex, colons allowed, or
    /// base64url), 1–10. Required when registering.
    #[schema(min_items = 1, max_items = 10)]
    pub allowed_certificate_sha256: Option<Vec<String>>,
    /// The lowest `versionCode` accepted; 0: any.
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 0, maximum = 2_147_483_647)]
    pub min_version_code: Option<i64>,
    /// Device verdicts a token must carry, each (`MEETS_BASIC_INTEGRITY`,
    /// `MEETS_DEVICE_INTEGRITY`, `MEETS_STRONG_INTEGRITY`, `MEETS_VIRTUAL_INTEGRITY`);
    /// default `["MEETS_DEVICE_INTEGRITY"]`.
    #[schema(max_items = 4)]
    pub required_device_verdicts: Option<Vec<String>>,
    /// Whether the install must be `LICENSED`; default false.
    pub require_licensed: Option<bool>,
    /// How old a token may be, seconds (10–3600); default 120.
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 10, maximum = 3600)]
    pub max_token_age_s: Option<i64>,
    /// How long an attestation lasts, seconds (60–3600); default 600.
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 60, maximum = 3600)]
    pub attestation_ttl_s: Option<i64>,
    /// Whether an attestation may be used more than once before it expires; default
    /// false (each step-up needs a fresh one).
    pub reusable_attestations: Option<bool>,
}

/// Applies `s` to `r`, checking each value; the keys are wrapped under `r.id`.
fn apply(state: &AppState, r: &mut IntegrityAppRecord, s: IntegrityAppSettings) -> Result<()> {
    let bad = || ServiceError::InvalidParameter;
    if let Some(k) = s.decryption_key {
        let key = DecryptionKey::from_base64(k.expose().trim()).map_err(|_| bad())?;
        r.decryption_key = state
            .root()
            .wrap_bytes(key.expose_bytes(), &wrap_context(&r.id, "decryption"))?;
    }
    if let Some(k) = s.verification_key {
        let key = VerificationKey::from_base64(k.trim()).map_err(|_| bad())?;
        r.verification_key = state
            .root()
            .wrap_bytes(key.der(), &wrap_context(&r.id, "verification"))?;
    }
    if let Some(certs) = s.allowed_certificate_sha256 {
        if certs.is_empty() || certs.len() > MAX_CERTIFICATES {
            return Err(bad());
        }
        let mut digests = Vec::with_capacity(certs.len());
        for c in &certs {
            let d = certificate_digest(c).ok_or_else(bad)?;
            if !digests.contains(&d) {
                digests.push(d);
            }
        }
        r.allowed_certificates = digests;
    }
    if let Some(v) = s.min_version_code {
        if !(0..=i64::from(i32::MAX)).contains(&v) {
            return Err(bad());
        }
        r.min_version_code = (v > 0).then_some(v);
    }
    if let Some(v) = s.required_device_verdicts {
        if v.iter().any(|x| !DEVICE_VERDICTS.contains(&x.as_str())) {
            return Err(bad());
        }
        let mut out: Vec<String> = Vec::new();
        for x in v {
            if !out.contains(&x) {
                out.push(x);
            }
        }
        r.required_device_verdicts = out;
    }
    if let Some(v) = s.require_licensed {
        r.require_licensed = v;
    }
    if let Some(v) = s.max_token_age_s {
        if !(10..=3600).contains(&v) {
            return Err(bad());
        }
        r.max_token_age_s = v;
    }
    if let Some(v) = s.attestation_ttl_s {
        if !(60..=3600).contains(&v) {
            return Err(bad());
        }
        r.attestation_ttl_s = v;
    }
    if let Some(v) = s.reusable_attestations {
        r.reusable_attestations = v;
    }
    Ok(())
}

object_name!(
    /// `integrity_app`.
    IntegrityAppObject = "integrity_app"
);

/// An application whose Play Integrity tokens the account accepts. Its keys are never
/// shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IntegrityAppView {
    /// `iapp_…`
    #[schema(pattern = "^iapp_[0-9a-f]{32}$")]
    pub id: String,
    /// Always `integrity_app`.
    pub object: IntegrityAppObject,
    /// The account (`acct_…`).
    pub account: String,
    /// The Android package name.
    pub application_id: String,
    /// SHA-256 digests of the signing certificates accepted, lowercase hex.
    pub allowed_certificate_sha256: Vec<String>,
    /// The lowest `versionCode` accepted, or `null`.
    #[schema(required = true)]
    pub min_version_code: Option<i64>,
    /// Device verdicts a token must carry, each.
    pub required_device_verdicts: Vec<String>,
    /// Whether the app must be `LICENSED`.
    pub require_licensed: bool,
    /// How old a token may be, seconds.
    pub max_token_age_s: i64,
    /// How long an attestation lasts, seconds.
    pub attestation_ttl_s: i64,
    /// Whether an attestation may be used more than once before it expires.
    pub reusable_attestations: bool,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds.
    pub updated: i64,
}

impl IntegrityAppView {
    fn new(r: &IntegrityAppRecord) -> Self {
        Self {
            id: r.id.clone(),
            object: IntegrityAppObject::default(),
            account: r.account_id.clone(),
            application_id: r.application_id.clone(),
            allowed_certificate_sha256: r.allowed_certificates.clone(),
            min_version_code: r.min_version_code,
            required_device_verdicts: r.required_device_verdicts.clone(),
            require_licensed: r.require_licensed,
            max_token_age_s: r.max_token_age_s,
            attestation_ttl_s: r.attestation_ttl_s,
            reusable_attestations: r.reusable_attestations,
            created: secs(r.created_ms),
            updated: secs(r.updated_ms),
        }
    }
}

/// Operator: registers an application for `account` (both keys are required).
pub async fn create_app(
    state: &AppState,
    audit: &strongroom_store::AuditScope,
    account: &str,
    settings: IntegrityAppSettings,
) -> Result<IntegrityAppView> {
    let application_id = match settings.application_id.as_deref() {
        Some(a) => a.to_owned(),
        None => return Err(ServiceError::InvalidParameter),
    };
    strongroom_core::parse_id(IdKind::Account, account)?;
    state.accounts().get(account).await?;
    if !valid_application_id(&application_id) {
        return Err(ServiceError::InvalidParameter);
    }
    if settings.decryption_key.is_none()
        || settings.verification_key.is_none()
        || settings.allowed_certificate_sha256.is_none()
    {
        return Err(ServiceError::InvalidParameter);
    }
    if state.store().integrity_apps(account).await?.len() >= MAX_APPS {
        return Err(ServiceError::LimitReached);
    }
    let now = state.now_ms();
    let mut r = IntegrityAppRecord {
        id: state.new_id(IdKind::IntegrityApp)?,
        account_id: account.to_owned(),
        application_id,
        decryption_key: Vec::new(),
        verification_key: Vec::new(),
        allowed_certificates: Vec::new(),
        min_version_code: None,
        required_device_verdicts: vec!["MEETS_DEVICE_INTEGRITY".to_owned()],
        require_licensed: false,
        max_token_age_s: DEFAULT_MAX_TOKEN_AGE_S,
        attestation_ttl_s: DEFAULT_ATTESTATION_TTL_S,
        reusable_attestations: false,
        created_ms: now,
        updated_ms: now,
    };
    apply(state, &mut r, settings)?;
    crate::audit::set_resource(audit, "integrity_app", &r.id);
    match state.store().audited(audit).insert_integrity_app(&r).await {
        Err(strongroom_store::StoreError::Conflict(_)) => Err(ServiceError::IntegrityAppExists),
        other => other.map_err(ServiceError::from),
    }?;
    Ok(IntegrityAppView::new(&r))
}

/// The account's application `id`.
async fn app_by_id(state: &AppState, account: &str, id: &str) -> Result<IntegrityAppRecord> {
    strongroom_core::parse_id(IdKind::Account, account)?;
    strongroom_core::parse_id(IdKind::IntegrityApp, id)?;
    state
        .store()
        .integrity_apps(account)
        .await?
        .into_iter()
        .find(|a| a.id == id)
        .ok_or(ServiceError::NotFound)
}

/// Operator: the account's applications.
pub async fn list_apps(state: &AppState, account: &str) -> Result<List<IntegrityAppView>> {
    strongroom_core::parse_id(IdKind::Account, account)?;
    state.accounts().get(account).await?;
    let apps = state.store().integrity_apps(account).await?;
    Ok(List::page(
        apps.iter().map(IntegrityAppView::new).collect(),
        false,
    ))
}

/// Operator: one application.
pub async fn get_app(state: &AppState, account: &str, id: &str) -> Result<IntegrityAppView> {
    Ok(IntegrityAppView::new(&app_by_id(state, account, id).await?))
}

/// Operator: changes an application's settings or keys.
pub async fn update_app(
    state: &AppState,
    audit: &strongroom_store::AuditScope,
    account: &str,
    id: &str,
    settings: IntegrityAppSettings,
) -> Result<IntegrityAppView> {
    let mut r = app_by_id(state, account, id).await?;
    crate::audit::set_resource(audit, "integrity_app", &r.id);
    if settings
        .application_id
        .as_ref()
        .is_some_and(|a| *a != r.application_id)
    {
        return Err(ServiceError::InvalidParameter);
    }
    apply(state, &mut r, settings)?;
    r.updated_ms = state.now_ms();
    if !state
        .store()
        .audited(audit)
        .update_integrity_app(&r)
        .await?
    {
        return Err(ServiceError::NotFound);
    }
    Ok(IntegrityAppView::new(&r))
}

/// Operator: removes an application; its hashes and attestations stop working.
pub async fn delete_app(
    state: &AppState,
    audit: &strongroom_store::AuditScope,
    account: &str,
    id: &str,
) -> Result<IntegrityAppView> {
    let r = app_by_id(state, account, id).await?;
    crate::audit::set_resource(audit, "integrity_app", &r.id);
    if !state
        .store()
        .audited(audit)
        .delete_integrity_app(account, &r.id)
        .await?
    {
        return Err(ServiceError::NotFound);
    }
    Ok(IntegrityAppView::new(&r))
}

/// The caller's account's application `application_id`.
async fn callers_app(
    state: &AppState,
    who: &Principal,
    application_id: &str,
) -> Result<IntegrityAppRecord> {
    if !valid_application_id(application_id) {
        return Err(ServiceError::IntegrityApplicationInvalid);
    }
    state
        .store()
        .integrity_app(&who.account_id, application_id)
        .await?
        .ok_or(ServiceError::IntegrityApplicationInvalid)
}

/// The digest a hash is kept as: keyed, so the database alone cannot confirm a guess.
fn hash_digest(state: &AppState, hash: &str) -> Vec<u8> {
    state
        .root()
        .digest("integrity-hash", hash.as_bytes())
        .to_vec()
}

/// A new hash for the app to request a token over.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IntegrityHashView {
    /// The value to pass as the Play Integrity request hash (43 base64url characters).
    pub hash: String,
    /// When it stops being accepted (Unix seconds): 5 minutes.
    pub expires_at: i64,
}

/// `GET /v1/integrity/app`: a single-use hash for the caller and `application_id`.
pub async fn new_hash(
    state: &AppState,
    who: &Principal,
    application_id: &str,
) -> Result<IntegrityHashView> {
    use base64::Engine as _;
    let app = callers_app(state, who, application_id).await?;
    crate::audit::set_resource(&who.audit, "integrity_app", &app.id);
    let raw = strongroom_crypto::random::bytes::<32>()?;
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let now = state.now_ms();
    let challenge = ChallengeRecord {
        digest: hash_digest(state, &hash),
        account_id: who.account_id.clone(),
        subject: who.key_id.clone(),
        application_id: app.application_id,
        expires_ms: now + HASH_TTL_MS,
    };
    state
        .store()
        .audited(&who.audit)
        .insert_integrity_challenge(&challenge, now)
        .await?;
    Ok(IntegrityHashView {
        hash,
        expires_at: secs(now + HASH_TTL_MS),
    })
}

object_name!(
    /// `attestation`.
    AttestationObject = "attestation"
);

/// What a good token earns.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttestationView {
    /// `att_…`: send it as `Strongroom-Attestation` with a step-up.
    #[schema(pattern = "^att_[0-9a-f]{32}$")]
    pub attestation: String,
    /// Always `attestation`.
    pub object: AttestationObject,
    /// The application it was earned by.
    pub application_id: String,
    /// When it stops being accepted (Unix seconds).
    pub expires_at: i64,
    /// Whether it may be used more than once before then.
    pub reusable: bool,
}

/// What `POST /v1/integrity/app` carries.
pub struct Submitted<'a> {
    /// The hash from `GET /v1/integrity/app`.
    pub hash: &'a str,
    /// The package name.
    pub application_id: &'a str,
    /// The Play Integrity token (compact JWE).
    pub token: &'a Sensitive<String>,
}

/// A string field of the verdict, or a number written as one (Play writes numbers as
/// strings).
fn number(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// The verdicts, for the audit log: Play's enum names only, `+`-joined.
fn verdict_summary(v: &Value) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if let Some(s) = v
        .pointer("/appIntegrity/appRecognitionVerdict")
        .and_then(Value::as_str)
    {
        parts.push(s);
    }
    if let Some(list) = v
        .pointer("/deviceIntegrity/deviceRecognitionVerdict")
        .and_then(Value::as_array)
    {
        parts.extend(list.iter().filter_map(Value::as_str));
    }
    if let Some(s) = v
        .pointer("/accountDetails/appLicensingVerdict")
        .and_then(Value::as_str)
    {
        parts.push(s);
    }
    let clean: Vec<&str> = parts
        .into_iter()
        .filter(|p| {
            !p.is_empty() && p.len() <= 40 && p.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        })
        .collect();
    if clean.is_empty() {
        "NO_VERDICT".to_owned()
    } else {
        clean.join("+")
    }
}

/// Checks a verdict against the app's requirements, in the order the codes are
/// documented.
fn check(app: &IntegrityAppRecord, v: &Value, hash: &str, now_ms: i64) -> Result<()> {
    let text = |p: &str| v.pointer(p).and_then(Value::as_str);
    if text("/requestDetails/requestPackageName") != Some(app.application_id.as_str()) {
        return Err(ServiceError::IntegrityApplicationInvalid);
    }
    let bound = text("/requestDetails/requestHash").or_else(|| text("/requestDetails/nonce"));
    if !bound.is_some_and(|b| strongroom_crypto::ct_eq(b.as_bytes(), hash.as_bytes())) {
        return Err(ServiceError::IntegrityHashInvalid);
    }
    let at = v
        .pointer("/requestDetails/timestampMillis")
        .and_then(number)
        .ok_or(ServiceError::IntegrityTokenExpired)?;
    if now_ms.saturating_sub(at) > app.max_token_age_s * 1000 || at > now_ms + SKEW_MS {
        return Err(ServiceError::IntegrityTokenExpired);
    }
    if text("/appIntegrity/appRecognitionVerdict") != Some("PLAY_RECOGNIZED")
        || text("/appIntegrity/packageName") != Some(app.application_id.as_str())
    {
        return Err(ServiceError::IntegrityAppUnrecognized);
    }
    let certs = v
        .pointer("/appIntegrity/certificateSha256Digest")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .filter_map(certificate_digest)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !certs.iter().any(|c| app.allowed_certificates.contains(c)) {
        return Err(ServiceError::IntegrityAppUnrecognized);
    }
    if let Some(min) = app.min_version_code {
        let version = v.pointer("/appIntegrity/versionCode").and_then(number);
        if version.is_none_or(|n| n < min) {
            return Err(ServiceError::IntegrityAppVersion);
        }
    }
    let device: Vec<&str> = v
        .pointer("/deviceIntegrity/deviceRecognitionVerdict")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !app
        .required_device_verdicts
        .iter()
        .all(|r| device.contains(&r.as_str()))
    {
        return Err(ServiceError::IntegrityDevice);
    }
    if app.require_licensed && text("/accountDetails/appLicensingVerdict") != Some("LICENSED") {
        return Err(ServiceError::IntegrityLicensing);
    }
    Ok(())
}

/// `POST /v1/integrity/app`: the hash is taken (once, whatever follows), the token
/// decrypted, verified and checked; a good one earns an attestation.
pub async fn attest(
    state: &AppState,
    who: &Principal,
    sent: Submitted<'_>,
) -> Result<AttestationView> {
    let app = callers_app(state, who, sent.application_id).await?;
    crate::audit::set_resource(&who.audit, "integrity_app", &app.id);
    let now = state.now_ms();
    let challenge = ChallengeRecord {
        digest: hash_digest(state, sent.hash),
        account_id: who.account_id.clone(),
        subject: who.key_id.clone(),
        application_id: app.application_id.clone(),
        expires_ms: 0,
    };
    if sent.hash.is_empty()
        || sent.hash.len() > 500
        || !state
            .store()
            .audited(&who.audit)
            .consume_integrity_challenge(&challenge, now)
            .await?
    {
        return Err(ServiceError::IntegrityHashInvalid);
    }
    let root = state.root();
    let dk = root.unwrap_bytes(&app.decryption_key, &wrap_context(&app.id, "decryption"))?;
    let vk = root.unwrap_bytes(
        &app.verification_key,
        &wrap_context(&app.id, "verification"),
    )?;
    let dk = DecryptionKey::from_bytes(&dk)?;
    let vk = VerificationKey::from_der(&vk)?;
    let payload = integrity::open(sent.token.expose().trim(), &dk, &vk).map_err(|e| {
        tracing::info!(reason = ?e, application = %app.application_id, "integrity token refused");
        ServiceError::IntegrityTokenInvalid
    })?;
    let verdict: Value =
        serde_json::from_slice(&payload).map_err(|_| ServiceError::IntegrityTokenInvalid)?;
    drop(payload);
    let summary = verdict_summary(&verdict);
    let outcome = check(&app, &verdict, sent.hash, now);
    let resource = format!("integrity_app:{}", app.id);
    let (result, code) = match &outcome {
        Ok(()) => ("success", summary),
        Err(e) => ("failure", format!("{}:{summary}", crate::audit::code_of(e))),
    };
    crate::audit::event(&who.audit, "integrity.verdict", &resource, result, &code);
    outcome?;
    let expires = now + app.attestation_ttl_s * 1000;
    let record = AttestationRecord {
        id: state.new_id(IdKind::Attestation)?,
        account_id: who.account_id.clone(),
        subject: who.key_id.clone(),
        application_id: app.application_id.clone(),
        reusable: app.reusable_attestations,
        created_ms: now,
        expires_ms: expires,
    };
    state
        .store()
        .audited(&who.audit)
        .insert_attestation(&record)
        .await?;
    Ok(AttestationView {
        attestation: record.id,
        object: AttestationObject::default(),
        application_id: record.application_id,
        expires_at: secs(expires),
        reusable: record.reusable,
    })
}

/// Refuses a step-up `action` (one of [`ACTIONS`]) the caller's account requires an
/// attestation for, unless the request carries a live one of the caller (and of the
/// application it names in `applicationid`, if it does): `attestation_required` without
/// one, `attestation_invalid` with one that is not good. A good one is used up (unless its
/// application makes attestations reusable).
pub async fn require(state: &AppState, who: &Principal, action: &str) -> Result<()> {
    // The gateway's cached controls (forgotten on every node when they change); the
    // store answers when the cache cannot.
    let controls = match state.gateway().account_controls(&who.account_id).await {
        Ok(c) => c,
        Err(_) => std::sync::Arc::new(state.store().account_controls(&who.account_id).await?),
    };
    if !controls.require_attestation.iter().any(|a| a == action) {
        return Ok(());
    }
    let Some(att) = who.attestation.as_deref() else {
        return Err(ServiceError::AttestationRequired);
    };
    if strongroom_core::parse_id(IdKind::Attestation, att).is_err() {
        return Err(ServiceError::AttestationInvalid);
    }
    let used = state
        .store()
        .audited(&who.audit)
        .use_attestation(
            att,
            &who.account_id,
            &who.key_id,
            who.application.as_deref(),
            state.now_ms(),
        )
        .await?;
    if used {
        Ok(())
    } else {
        Err(ServiceError::AttestationInvalid)
    }
}

/// Operator: the step-ups of `account` that need an attestation (`Some`: replaced).
/// Returns the list in force.
pub async fn set_required(
    state: &AppState,
    audit: &strongroom_store::AuditScope,
    account: &str,
    actions: Option<Vec<String>>,
) -> Result<Vec<String>> {
    let Some(actions) = actions else {
        return Ok(state
            .store()
            .account_controls(account)
            .await?
            .require_attestation);
    };
    let c = state
        .store()
        .audited(audit)
        .update_account_controls(&strongroom_store::ControlsUpdate {
            account_id: account.to_owned(),
            require_attestation: Some(actions),
            now_ms: state.now_ms(),
            ..Default::default()
        })
        .await?;
    state.gateway().forget_account(account);
    Ok(c.require_attestation)
}

/// Checks a `require_attestation` list: known actions, each once.
pub fn checked_actions(list: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for a in list {
        if !ACTIONS.contains(&a.as_str()) {
            return Err(ServiceError::InvalidParameter);
        }
        if !out.contains(a) {
            out.push(a.clone());
        }
    }
    Ok(out)
}
