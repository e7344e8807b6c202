//! The `pkcs11` root-key provider: an HSM holds a non-extractable AES-256 key, and the
//! root key exists only wrapped by it (AES-GCM done inside the HSM), in the vault's
//! record of its root key. At start the HSM unwraps it into memory; without the HSM (and
//! its PIN) the database opens nothing. Tested against SoftHSM2.
//!
//! The calls go through the maintained `cryptoki` crate. They block, so they run on the
//! blocking pool.

use crate::custody::Provider;
use crate::startup::StartError;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use strongroom_crypto::{KEY_LEN, RootKey, random};
use strongroom_store::{CustodyStore, RootKeyRecord, Store};
use zeroize::Zeroizing;

pub use crate::config::Pkcs11Config;

/// What the GCM of the root key's wrapping binds.
const AAD: &[u8] = b"strongroom/root-key/pkcs11/v1";
const IV_LEN: usize = 12;

fn hsm(what: &str, e: impl std::fmt::Display) -> StartError {
    StartError::Custody(format!("HSM: {what}: {e}"))
}

/// The root key from the HSM: unwrapped from the vault's record, or, on the first start,
/// made, wrapped by a new non-extractable key in the HSM and recorded.
pub async fn open_root(
    store: &Store,
    cfg: &Pkcs11Config,
    now_ms: i64,
) -> Result<RootKey, StartError> {
    let record = store.root_key().await?;
    if let Some(r) = &record
        && r.provider != Provider::Pkcs11.as_str()
    {
        return Err(StartError::Custody(format!(
            "this vault's root key is kept by the `{}` provider, not `pkcs11`",
            r.provider
        )));
    }
    let wrapped = record.as_ref().and_then(|r| r.wrapped_root.clone());
    let c = cfg.clone();
    let made = tokio::task::spawn_blocking(move || in_hsm(&c, wrapped.as_deref()))
        .await
        .map_err(|e| hsm("task", e))??;
    let (bytes, new_wrapping) = made;
    let root = RootKey::from_bytes(bytes.as_slice()).map_err(|e| hsm("root key", e))?;
    if let Some(wrapped_root) = new_wrapping {
        let rec = RootKeyRecord {
            generation: 1,
            provider: Provider::Pkcs11.as_str().to_owned(),
            verifier: root.verifier().to_vec(),
            threshold: None,
            shares: None,
            share_digests: Vec::new(),
            created_ms: now_ms,
            wrapped_root: Some(wrapped_root),
            ..RootKeyRecord::default()
        };
        #[allow(
            clippy::disallowed_methods,
            reason = "the root key's first record is written at start, before any request"
        )]
        let stored = store.unaudited().init_root_key(rec).await?;
        if !stored {
            return Err(StartError::Custody(
                "another node made the root key at the same time; start again".into(),
            ));
        }
    }
    Ok(root)
}

/// A new root key for a rotation, and its wrapping by the HSM's key (made on the token
/// if it is not there yet).
pub async fn make_root(
    cfg: &Pkcs11Config,
) -> Result<(Zeroizing<[u8; KEY_LEN]>, Vec<u8>), StartError> {
    let c = cfg.clone();
    let (bytes, wrapping) = tokio::task::spawn_blocking(move || in_hsm(&c, None))
        .await
        .map_err(|e| hsm("task", e))??;
    let wrapping = wrapping.ok_or_else(|| hsm("the new root key", "not wrapped"))?;
    Ok((bytes, wrapping))
}

/// The root key's bytes, and its wrapping when it was just made (to record).
type Unwrapped = (Zeroizing<[u8; KEY_LEN]>, Option<Vec<u8>>);

/// In the HSM: unwraps `wrapped`, or makes a root key and wraps it (returning the
/// wrapping to record).
fn in_hsm(cfg: &Pkcs11Config, wrapped: Option<&[u8]>) -> Result<Unwrapped, StartError> {
    let ctx = Pkcs11::new(&cfg.module).map_err(|e| hsm("cannot load the module", e))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| hsm("initialize", e))?;
    let slot = ctx
        .get_slots_with_token()
        .map_err(|e| hsm("slots", e))?
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .is_ok_and(|t| t.label().trim_end() == cfg.token_label)
        })
        .ok_or_else(|| hsm("no token labelled", &cfg.token_label))?;
    let session = ctx.open_rw_session(slot).map_err(|e| hsm("session", e))?;
    let pin = AuthPin::from(cfg.pin.as_str());
    session
        .login(UserType::User, Some(&pin))
        .map_err(|e| hsm("login (check the PIN)", e))?;
    let key = find_key(&session, &cfg.key_label)?;
    let out = match (wrapped, key) {
        (Some(w), Some(key)) => (unwrap_root(&session, key, w)?, None),
        (Some(_), None) => {
            return Err(hsm(
                "the key that wraps this vault's root key is not on the token",
                &cfg.key_label,
            ));
        }
        (None, key) => {
            let key = match key {
                Some(k) => k,
                None => make_key(&session, &cfg.key_label)?,
            };
            let root = Zeroizing::new(random::bytes::<KEY_LEN>().map_err(|e| hsm("random", e))?);
            let wrapping = wrap_root(&session, key, root.as_slice())?;
            (root, Some(wrapping))
        }
    };
    session.logout().ok();
    Ok(out)
}

fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, StartError> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| hsm("find the key", e))?;
    Ok(found.into_iter().next())
}

/// A new AES-256 key on the token: sensitive and never extractable, for encrypting and
/// decrypting only.
fn make_key(session: &Session, label: &str) -> Result<ObjectHandle, StartError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|e| hsm("make the wrapping key", e))
}

/// `iv ‖ ciphertext ‖ tag` of the root key under the HSM's key.
fn wrap_root(session: &Session, key: ObjectHandle, root: &[u8]) -> Result<Vec<u8>, StartError> {
    let iv0 = random::bytes::<IV_LEN>().map_err(|e| hsm("random", e))?;
    let mut iv = iv0;
    let params = GcmParams::new(&mut iv, AAD, 128.into()).map_err(|e| hsm("GCM", e))?;
    let sealed = session
        .encrypt(&Mechanism::AesGcm(params), key, root)
        .map_err(|e| hsm("wrap the root key", e))?;
    let mut out = iv0.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn unwrap_root(
    session: &Session,
    key: ObjectHandle,
    wrapped: &[u8],
) -> Result<Zeroizing<[u8; KEY_LEN]>, StartError> {
    let (iv, sealed) = wrapped
        .split_at_checked(IV_LEN)
        .ok_or_else(|| hsm("the recorded wrapping", "too short"))?;
    let mut iv: [u8; IV_LEN] = iv
        .try_into()
        .map_err(|_| hsm("the recorded wrapping", "IV"))?;
    let params = GcmParams::new(&mut iv, AAD, 128.into()).map_err(|e| hsm("GCM", e))?;
    let plain = Zeroizing::new(
        session
            .decrypt(&Mechanism::AesGcm(params), key, sealed)
            .map_err(|e| hsm("unwrap the root key", e))?,
    );
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if plain.len() != KEY_LEN {
        return Err(hsm("the unwrapped root key", "wrong length"));
    }
    out.copy_from_slice(plain.as_slice());
    Ok(out)
}
