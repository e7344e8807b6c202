//! Bearer tokens and incident response (docs/design/0002-tokens.md): JWT signing keys,
//! looking an API key up by id (a token names its key), and revoking every key of an
//! account at once.

use crate::exec::{Exec, RowGet, args};
use crate::sql::FromRow;
use crate::{ApiKeyRecord, EventRecord, StoreError, StoreResult};

/// A JWT signing key generation. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtKeyRecord {
    /// The `kid` published in the JWKS and put in token headers.
    pub kid: String,
    /// 1, 2, …: unique; a rotation inserts the next one.
    pub generation: i64,
    /// `EdDSA` or `RS256`.
    pub alg: String,
    /// The private key wrapped by the root key; empty once it can no longer sign.
    pub wrapped: Vec<u8>,
    /// The public key as a JWK (JSON text).
    pub public_jwk: String,
    /// When it was created (and published).
    pub created_ms: i64,
    /// When it starts signing; later generations take over at their own time.
    pub active_from_ms: i64,
}

const JWT_KEYS: &str = "SELECT kid, generation, alg, wrapped, public_jwk, created_ms, \
     active_from_ms FROM jwt_keys ORDER BY generation";
const INSERT_JWT_KEY: &str = "INSERT INTO jwt_keys (kid, generation, alg, wrapped, public_jwk, \
     created_ms, active_from_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)";
// Keys older than the current signer can never sign again: erase their private halves.
const ERASE_OLD_JWT_KEYS: &str =
    "UPDATE jwt_keys SET wrapped = $2 WHERE generation < $1 AND wrapped <> $2";
const API_KEY_BY_ID: &str = "SELECT id, account_id, kind, mode, prefix, digest, scopes, \
     created_ms, revoked_ms, name FROM api_keys WHERE id = $1";
const REVOKE_ALL: &str = "UPDATE api_keys SET revoked_ms = $2 \
     WHERE account_id = $1 AND revoked_ms IS NULL";
const ACCOUNT_EXISTS: &str = "SELECT id FROM accounts WHERE id = $1";

/// The operations of this module that go through the writer.
#[derive(Debug)]
pub(crate) enum Op {
    InsertJwtKey {
        key: JwtKeyRecord,
        erase_below: i64,
    },
    RevokeAll {
        account_id: String,
        now_ms: i64,
        events: Vec<EventRecord>,
    },
}

impl FromRow for JwtKeyRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            kid: r.text(0)?,
            generation: r.int(1)?,
            alg: r.text(2)?,
            wrapped: r.blob(3)?,
            public_jwk: r.text(4)?,
            created_ms: r.int(5)?,
            active_from_ms: r.int(6)?,
        })
    }
}

/// Applies one of this module's writes inside the writer's transaction.
/// Applies one [`Op`]: `None` for a write that counts nothing, else the count.
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<Option<i64>> {
    match op {
        Op::InsertJwtKey {
            key: k,
            erase_below,
        } => {
            let a = args![
                &k.kid,
                k.generation,
                &k.alg,
                &k.wrapped,
                &k.public_jwk,
                k.created_ms,
                k.active_from_ms
            ];
            c.exec(INSERT_JWT_KEY, a).await.map_err(|e| match e {
                StoreError::Conflict(_) => StoreError::Conflict("JWT key generation exists"),
                other => other,
            })?;
            let empty: &[u8] = &[];
            c.exec(ERASE_OLD_JWT_KEYS, args![*erase_below, empty])
                .await?;
            Ok(None)
        }
        Op::RevokeAll {
            account_id,
            now_ms,
            events,
        } => {
            if c.opt(ACCOUNT_EXISTS, args![account_id]).await?.is_none() {
                return Ok(Some(-1));
            }
            let n = c.exec(REVOKE_ALL, args![account_id, *now_ms]).await?;
            // The one event path: each event gets its webhook deliveries in this
            // transaction, like every other event.
            crate::sql::insert_events(c, events).await?;
            Ok(Some(i64::try_from(n).unwrap_or(i64::MAX)))
        }
    }
}

pub(crate) async fn jwt_keys<C: Exec>(c: &mut C) -> StoreResult<Vec<JwtKeyRecord>> {
    c.all(JWT_KEYS, &[])
        .await?
        .iter()
        .map(JwtKeyRecord::from_row)
        .collect()
}

pub(crate) async fn api_key_by_id<C: Exec>(
    c: &mut C,
    id: &str,
) -> StoreResult<Option<ApiKeyRecord>> {
    c.opt(API_KEY_BY_ID, args![id])
        .await?
        .as_ref()
        .map(ApiKeyRecord::from_row)
        .transpose()
}

/// Storage for bearer tokens and incident response.
#[allow(async_fn_in_trait)]
pub trait TokenStore {
    /// Every JWT signing key, oldest generation first.
    async fn jwt_keys(&self) -> StoreResult<Vec<JwtKeyRecord>>;
    /// One API key by id, revoked or not.
    async fn api_key_by_id(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>>;
}
