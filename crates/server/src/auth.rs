//! Authentication and authorisation rules: who a credential is (a [`Principal`] of an
//! account, an operator's [`Admin`] key) and what it may do (scopes, key kinds, live
//! mode). The bearer credential is an API key, or (on account routes) a JWT from
//! `POST /v1/auth/token`, told apart by the JWT's dots, which an API key never
//! contains. The gateway resolves it once per request (`gateway::layer::authenticate`);
//! the extractors here only read its answer.

use crate::error::{ApiError, ApiResult, codes};
use crate::service::ServiceError;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::sync::Arc;
use strongroom_core::{KeyKind, Mode, Scope, Scopes};
use strongroom_store::{ApiKeyRecord, AuditScope};

/// Digest domain for API secrets.
pub const API_KEY_DIGEST: &str = "api_key";
/// The secret prefix of admin keys.
pub const ADMIN_PREFIX: &str = "sk_admin_";
/// The `kind` of admin keys in storage.
pub const ADMIN_KIND: &str = "admin";

/// The header that names the calling application on `GET /v1/integrity/app` (and, on a
/// step-up, the application its attestation must be of).
pub const APPLICATION_HEADER: &str = "applicationid";
/// The header a step-up carries its device attestation in (docs/device-integrity.md).
pub const ATTESTATION_HEADER: &str = "strongroom-attestation";

/// An authenticated account credential.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The API key's id.
    pub key_id: String,
    /// The account it belongs to.
    pub account_id: String,
    /// Test or live: it sees only that mode's data.
    pub mode: Mode,
    /// Secret, publishable or restricted.
    pub kind: KeyKind,
    /// What it may do.
    pub scopes: Scopes,
    /// The token id (`jti`) when the request carried a bearer JWT rather than the key.
    pub token_id: Option<String>,
    /// The device attestation the request carries (`Strongroom-Attestation`), unchecked:
    /// a step-up that needs one checks it.
    pub attestation: Option<String>,
    /// The application the request names (`applicationid`), unchecked.
    pub application: Option<String>,
    /// The request's audit scope: the writes made for this caller carry it
    /// (`store.audited(&who.audit)`).
    pub audit: Arc<AuditScope>,
}

impl Principal {
    /// Refuses with `permission_denied` unless the key carries `scope`.
    pub fn require(&self, scope: Scope) -> crate::service::Result<()> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(ServiceError::PermissionDenied)
        }
    }

    /// Refuses unless the key carries `scope` and is a live-mode key. The account's
    /// security settings (IP allowlist, signature requirement, signing keys) protect
    /// live traffic, so a test key, which lives in CI and on laptops, cannot change
    /// them.
    pub fn require_live(&self, scope: Scope) -> ApiResult<()> {
        self.require(scope)?;
        if self.mode == Mode::Live {
            Ok(())
        } else {
            Err(codes::LIVE_MODE_REQUIRED)
        }
    }

    /// Refuses with `permission_denied` unless the credential may issue bearer tokens:
    /// an API key, not a token, and not a publishable key (it lives in browsers).
    pub fn require_token_issuer(&self) -> ApiResult<()> {
        if self.token_id.is_some() || self.kind == KeyKind::Publishable {
            Err(codes::PERMISSION_DENIED)
        } else {
            Ok(())
        }
    }

    /// The scopes a token issued to this credential carries: all it holds, or the
    /// requested subset. Refuses an empty request, or one beyond what it holds, with
    /// `invalid_scope`.
    pub fn token_scopes(&self, requested: Option<Scopes>) -> crate::service::Result<Scopes> {
        let Some(r) = requested else {
            return Ok(self.scopes);
        };
        let within = Scope::ALL
            .into_iter()
            .all(|s| !r.contains(s) || self.scopes.contains(s));
        if r.is_empty() || !within {
            return Err(ServiceError::InvalidScope);
        }
        Ok(r)
    }

    /// The principal of an account's API key (not an admin key), acting in the request
    /// whose audit scope is `audit`.
    pub fn of_key(key: &ApiKeyRecord, audit: Arc<AuditScope>) -> ApiResult<Self> {
        let kind = KeyKind::parse(&key.kind).ok_or(codes::INVALID_API_KEY)?;
        let account_id = key.account_id.clone().ok_or(codes::INVALID_API_KEY)?;
        Ok(Principal {
            key_id: key.id.clone(),
            account_id,
            mode: key.mode,
            kind,
            scopes: kind.held_scopes(&key.scopes),
            token_id: None,
            attestation: None,
            application: None,
            audit,
        })
    }
}

/// The scopes a bearer token grants: those it names, never more than its key (of
/// `kind`, holding `key_scopes` in storage form) holds now.
pub fn token_grants(kind: KeyKind, key_scopes: &str, claimed: &str) -> Scopes {
    let held = kind.held_scopes(key_scopes);
    let mut scopes = Scopes::default();
    for s in Scopes::from_storage(claimed).names() {
        if let Some(s) = Scope::parse(s).filter(|s| held.contains(*s)) {
            scopes.insert(s);
        }
    }
    scopes
}

/// Refuses a revoked key with `api_key_revoked`.
pub fn check_not_revoked(key: &ApiKeyRecord) -> ApiResult<()> {
    if key.revoked_ms.is_some() {
        Err(codes::API_KEY_REVOKED)
    } else {
        Ok(())
    }
}

/// An authenticated operator (admin key).
#[derive(Debug, Clone)]
pub struct Admin {
    /// The admin key's id.
    pub key_id: String,
    /// The request's audit scope: the writes made for this operator carry it.
    pub audit: Arc<AuditScope>,
}

impl Admin {
    /// The operator an API key stands for: an admin key has the admin kind and no
    /// account; any other key is refused with `permission_denied`.
    pub fn of_key(key: &ApiKeyRecord, audit: Arc<AuditScope>) -> ApiResult<Self> {
        if key.kind != ADMIN_KIND || key.account_id.is_some() {
            return Err(codes::PERMISSION_DENIED);
        }
        Ok(Admin {
            key_id: key.id.clone(),
            audit,
        })
    }
}

/// Longest bearer JWT we look at (an RS256 token is about 700 bytes).
const MAX_JWT_LEN: usize = 4096;

/// The bearer credential if it is shaped like a JWT (three base64url parts).
pub(crate) fn bearer_jwt(parts: &Parts) -> ApiResult<Option<&str>> {
    let Some(value) = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
    else {
        return Ok(None);
    };
    if !token.contains('.') {
        return Ok(None);
    }
    let shaped = token.len() <= MAX_JWT_LEN
        && token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if shaped {
        Ok(Some(token))
    } else {
        Err(codes::TOKEN_INVALID)
    }
}

/// The bearer credential of a request, checked for shape only.
pub(crate) fn bearer(parts: &Parts) -> ApiResult<&str> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(codes::AUTHENTICATION_REQUIRED)?
        .to_str()
        .map_err(|_| codes::INVALID_API_KEY)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(codes::AUTHENTICATION_REQUIRED)?
        .trim();
    if token.is_empty() {
        return Err(codes::AUTHENTICATION_REQUIRED);
    }
    if token.len() > 128
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(codes::INVALID_API_KEY);
    }
    Ok(token)
}

/// What the gateway found out about a request's credential. It is resolved once, by
/// `gateway::layer::authenticate`; the extractors only read it, so a handler never resolves a
/// credential again and cannot reach a different answer (a token expiring between two
/// checks, a store error on one of two lookups).
#[derive(Debug, Clone)]
pub enum Caller {
    /// No `Authorization` header.
    Anonymous,
    /// An account's API key or bearer token.
    Account(Principal),
    /// An operator's admin key.
    Admin(Admin),
    /// A credential that is not valid: what account routes and admin routes answer.
    Refused {
        /// The error of account routes.
        account: ApiError,
        /// The error of admin routes.
        admin: ApiError,
    },
}

impl Caller {
    /// The request's audit scope, carried by a resolved credential.
    pub fn audit(&self) -> Option<&Arc<AuditScope>> {
        match self {
            Self::Account(p) => Some(&p.audit),
            Self::Admin(a) => Some(&a.audit),
            Self::Anonymous | Self::Refused { .. } => None,
        }
    }
}

/// A credential's refusal (a 4xx) as it is; any other failure becomes 503.
pub(crate) fn unless_unavailable(e: ApiError) -> ApiResult<ApiError> {
    if e.status.is_client_error() {
        Ok(e)
    } else {
        Err(codes::SERVICE_UNAVAILABLE)
    }
}

/// Arms the request's audit record with the credential that authenticated.
pub(crate) fn arm_actor(parts: &Parts, actor: &str, account: &str) {
    let t = parts.extensions.get::<crate::audit::RequestAudit>();
    crate::audit::arm(t, actor, account, None);
}

/// Arms the request's audit record as a failed authentication, with the code the
/// response carries.
pub(crate) fn arm_failure(parts: &Parts, e: &ApiError) {
    let t = parts.extensions.get::<crate::audit::RequestAudit>();
    crate::audit::arm(t, "anonymous", "", Some(e.code));
}

/// The gateway's answer about the credential; a route outside the gateway has none,
/// and is refused rather than resolved here.
fn caller(parts: &Parts) -> ApiResult<&Caller> {
    parts
        .extensions
        .get::<Caller>()
        .ok_or_else(|| ApiError::internal(&"credential not resolved by the gateway"))
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let e = match caller(parts)? {
            Caller::Account(p) => {
                let header = |name: &str| {
                    parts
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.trim().to_owned())
                        .filter(|v| !v.is_empty() && v.len() <= 255)
                };
                let mut who = p.clone();
                who.attestation = header(ATTESTATION_HEADER);
                who.application = header(APPLICATION_HEADER);
                return Ok(who);
            }
            Caller::Anonymous => codes::AUTHENTICATION_REQUIRED,
            // An admin key has no account.
            Caller::Admin(_) => codes::INVALID_API_KEY,
            Caller::Refused { account, .. } => account.clone(),
        };
        arm_failure(parts, &e);
        Err(e)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let e = match caller(parts)? {
            Caller::Admin(a) => return Ok(a.clone()),
            Caller::Anonymous => codes::AUTHENTICATION_REQUIRED,
            // A bearer token is not an admin credential at all; an account's key is a
            // key without the permission.
            Caller::Account(p) if p.token_id.is_some() => codes::INVALID_API_KEY,
            Caller::Account(_) => codes::PERMISSION_DENIED,
            Caller::Refused { admin, .. } => admin.clone(),
        };
        arm_failure(parts, &e);
        Err(e)
    }
}
