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
use cryptoki::mechanism::ekdf::AesCbcDeriveParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use strongroom_crypto::components::KeyAlgorithm;
use strongroom_crypto::dukpt::AesStep;
use strongroom_crypto::pin::{BLOCK_LEN, PinCipher};
use strongroom_crypto::{CryptoError, KEY_LEN, RootKey, random};
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

/// The root key's bytes, and its wrapping when it was just made (to record).
type Unwrapped = (Zeroizing<[u8; KEY_LEN]>, Option<Vec<u8>>);

/// A logged-in session on the token `cfg` names. Another user of the module in this
/// process (the vault's [`Hsm`]) may have initialised it and logged in already: the
/// login state belongs to the process, so that is no error, and nothing here logs out.
fn logged_in(cfg: &Pkcs11Config) -> Result<(Pkcs11, Session), StartError> {
    use cryptoki::error::{Error, RvError};
    let ctx = Pkcs11::new(&cfg.module).map_err(|e| hsm("cannot load the module", e))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(hsm("initialize", e)),
    }
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
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(hsm("login (check the PIN)", e)),
    }
    Ok((ctx, session))
}

/// In the HSM: unwraps `wrapped`, or makes a root key and wraps it (returning the
/// wrapping to record).
fn in_hsm(cfg: &Pkcs11Config, wrapped: Option<&[u8]>) -> Result<Unwrapped, StartError> {
    let (_ctx, session) = logged_in(cfg)?;
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
            let (root, wrapping) = new_root(&session, key)?;
            (root, Some(wrapping))
        }
    };
    Ok(out)
}

/// A random root key and its wrapping under the HSM's `key`.
fn new_root(session: &Session, key: ObjectHandle) -> Result<NewRoot, StartError> {
    let root = Zeroizing::new(random::bytes::<KEY_LEN>().map_err(|e| hsm("random", e))?);
    let wrapping = wrap_root(session, key, root.as_slice())?;
    Ok((root, wrapping))
}

/// A root key's bytes and its wrapping.
type NewRoot = (Zeroizing<[u8; KEY_LEN]>, Vec<u8>);

fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, StartError> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| hsm("find the key", e))?;
    Ok(found.into_iter().next())
}

/// The template of a secret key kept on the token, labelled `label`: sensitive, not
/// extractable, never wrapping, unwrapping, signing or verifying, and usable for what
/// `[encrypt, decrypt, derive]` allows.
fn token_key(
    label: &str,
    key_type: KeyType,
    [encrypt, decrypt, derive]: [bool; 3],
) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(encrypt),
        Attribute::Decrypt(decrypt),
        Attribute::Derive(derive),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        // The label as its id too: tools such as OpenSC's pkcs11-tool pick keys by id.
        Attribute::Id(label.as_bytes().to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// A new AES-256 key on the token: sensitive and never extractable, for encrypting and
/// decrypting only (the root key's wrapping key, and each PIN-block key).
fn make_key(session: &Session, label: &str) -> Result<ObjectHandle, StartError> {
    let mut template = token_key(label, KeyType::AES, [true, true, false]);
    template.push(Attribute::ValueLen(32.into()));
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

/// What a key in the HSM is: a marker where a wrapped key would be, in the data-key
/// record of an account's `pin` purpose (the key labelled [`Hsm::pin_key_label`]) or in
/// the record of an imported BDK or zone PIN key ([`Hsm::import_key`]). Nothing of the key
/// is in the database.
pub const HSM_KEY: &[u8] = b"strongroom/hsm-key/v1";

/// The HSM while the vault is open: one logged-in session, for the PIN-block keys that
/// live on the token (each account's `pin` versions, made there and never extractable),
/// and for the next root key of a rotation. The calls block for as long as the HSM takes
/// to encrypt one AES block (microseconds for SoftHSM2, a round trip for a network HSM).
pub struct Hsm {
    _ctx: Pkcs11,
    session: std::sync::Mutex<Session>,
    cfg: Pkcs11Config,
    handles: std::sync::Mutex<std::collections::HashMap<String, ObjectHandle>>,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm").field("cfg", &self.cfg).finish()
    }
}

impl Hsm {
    /// Logs in to the token `cfg` names.
    pub async fn open(cfg: &Pkcs11Config) -> Result<std::sync::Arc<Self>, StartError> {
        let c = cfg.clone();
        let (ctx, session) = tokio::task::spawn_blocking(move || logged_in(&c))
            .await
            .map_err(|e| hsm("task", e))??;
        Ok(std::sync::Arc::new(Self {
            _ctx: ctx,
            session: std::sync::Mutex::new(session),
            cfg: cfg.clone(),
            handles: std::sync::Mutex::new(std::collections::HashMap::new()),
        }))
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The label of an account's PIN-block key `version` on the token.
    pub fn pin_key_label(&self, account_id: &str, version: i64) -> String {
        format!("{}/pin/{account_id}/{version}", self.cfg.key_label)
    }

    /// Makes an account's PIN-block key `version` on the token (AES-256, sensitive,
    /// never extractable). One left by an earlier attempt that was never recorded is
    /// taken as it is: it has enciphered nothing.
    pub fn make_pin_key(&self, account_id: &str, version: i64) -> Result<(), CryptoError> {
        let label = self.pin_key_label(account_id, version);
        let session = self.session();
        let existing = find_key(&session, &label).map_err(|_| CryptoError::Operation)?;
        let handle = match existing {
            Some(h) => h,
            None => make_key(&session, &label).map_err(|e| {
                tracing::error!(error = %e, "the HSM could not make a PIN-block key");
                CryptoError::Operation
            })?,
        };
        drop(session);
        self.remember(label, handle);
        Ok(())
    }

    fn remember(&self, label: String, handle: ObjectHandle) {
        if let Ok(mut h) = self.handles.lock() {
            h.insert(label, handle);
        }
    }

    fn handle(&self, label: &str) -> Result<ObjectHandle, CryptoError> {
        if let Some(h) = self.handles.lock().ok().and_then(|h| h.get(label).copied()) {
            return Ok(h);
        }
        let found = find_key(&self.session(), label).map_err(|_| CryptoError::Operation)?;
        let handle = found.ok_or_else(|| {
            tracing::error!(label, "a PIN-block key is not on the token");
            CryptoError::Operation
        })?;
        self.remember(label.to_owned(), handle);
        Ok(handle)
    }

    /// AES-ECB on one block with the key labelled `label`, in the HSM.
    fn ecb(
        &self,
        label: &str,
        block: &mut [u8; BLOCK_LEN],
        encrypt: bool,
    ) -> Result<(), CryptoError> {
        let key = self.handle(label)?;
        self.cipher(key, &Mechanism::AesEcb, block, encrypt)
    }

    /// `data` enciphered or deciphered in place with `mechanism` (no padding) under the
    /// key `key`, in the HSM.
    fn cipher(
        &self,
        key: ObjectHandle,
        mechanism: &Mechanism,
        data: &mut [u8],
        encrypt: bool,
    ) -> Result<(), CryptoError> {
        let session = self.session();
        let out = if encrypt {
            session.encrypt(mechanism, key, data)
        } else {
            session.decrypt(mechanism, key, data)
        };
        let out = Zeroizing::new(out.map_err(|_| CryptoError::Decrypt)?);
        if out.len() != data.len() {
            return Err(CryptoError::Operation);
        }
        data.copy_from_slice(&out);
        Ok(())
    }

    /// Whether an imported key of `kind` and `alg` is kept on the token: AES-128 BDKs
    /// (their DUKPT derivations run in the HSM) and zone PIN keys of every algorithm
    /// (PIN blocks are enciphered under them there). AES-256 and TDES BDKs stay wrapped by
    /// the root key and derive in the vault's memory: AES-256 DUKPT derives each key from
    /// two ECB blocks, which the `cryptoki` crate cannot ask of a token (it offers only
    /// `CKM_AES_CBC_ENCRYPT_DATA`), and TDES-DUKPT's non-reversible step XORs key halves
    /// into the data, which no standard PKCS#11 mechanism does. KEKs unwrap TR-31 blocks
    /// in the vault, so they stay wrapped as well.
    pub fn holds(kind: &str, alg: KeyAlgorithm) -> bool {
        match kind {
            "bdk" => alg == KeyAlgorithm::Aes128,
            "zone_pin_key" => alg != KeyAlgorithm::Aes192,
            _ => false,
        }
    }

    /// The label of an imported key on the token.
    fn imported_label(&self, key_id: &str) -> String {
        format!("{}/imported/{key_id}", self.cfg.key_label)
    }

    /// Places an imported key (see [`Hsm::holds`]) on the token, sensitive and never
    /// extractable: a BDK for deriving only, a zone PIN key for enciphering only. Key ids
    /// are new for each import; an object under the same label (left by an attempt whose
    /// record was never written) is replaced.
    pub fn import_key(
        &self,
        key_id: &str,
        kind: &str,
        alg: KeyAlgorithm,
        value: &[u8],
    ) -> Result<(), CryptoError> {
        if !Self::holds(kind, alg) || value.len() != alg.key_len() {
            return Err(CryptoError::Operation);
        }
        let label = self.imported_label(key_id);
        let key_type = match alg {
            KeyAlgorithm::Tdes2 => KeyType::DES2,
            KeyAlgorithm::Tdes3 => KeyType::DES3,
            _ => KeyType::AES,
        };
        let bdk = kind == "bdk";
        let mut template = token_key(&label, key_type, [!bdk, false, bdk]);
        template.push(Attribute::Value(value.to_vec()));
        let session = self.session();
        if let Some(old) = find_key(&session, &label).map_err(|_| CryptoError::Operation)? {
            session
                .destroy_object(old)
                .map_err(|_| CryptoError::Operation)?;
        }
        let made = session.create_object(&template).map_err(|e| {
            tracing::error!(error = %e, "the HSM could not take an imported key");
            CryptoError::Operation
        });
        // The clear value the template held.
        for a in template {
            if let Attribute::Value(v) = a {
                drop(Zeroizing::new(v));
            }
        }
        let handle = made?;
        drop(session);
        self.remember(label, handle);
        Ok(())
    }

    /// An imported key on the token, of algorithm `alg`.
    pub fn imported(
        self: &std::sync::Arc<Self>,
        key_id: &str,
        alg: KeyAlgorithm,
    ) -> Result<TokenKey, CryptoError> {
        Ok(TokenKey {
            hsm: self.clone(),
            handle: self.handle(&self.imported_label(key_id))?,
            alg,
            derived: false,
        })
    }

    /// The AES-128 DUKPT working key at the end of `path` (`dukpt::aes_path`), derived on
    /// the token from the BDK `bdk_id`: each step is `CKM_AES_CBC_ENCRYPT_DATA` with a zero
    /// IV over one block, which is the X9.24-3 derivation of a 128-bit key (one ECB block).
    /// Every key on the way is a session object, sensitive, never extractable, destroyed
    /// when the next is made; the working key is destroyed when dropped.
    pub fn aes128_dukpt(
        self: &std::sync::Arc<Self>,
        bdk_id: &str,
        path: &[AesStep],
    ) -> Result<TokenKey, CryptoError> {
        let mut key = self.imported(bdk_id, KeyAlgorithm::Aes128)?;
        for (i, step) in path.iter().enumerate() {
            if step.alg != KeyAlgorithm::Aes128 {
                return Err(CryptoError::Operation);
            }
            let working = i + 1 == path.len();
            let template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(16.into()),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Derive(!working),
                Attribute::Encrypt(working),
                Attribute::Decrypt(working),
            ];
            let params = AesCbcDeriveParams::new([0u8; 16], &step.data);
            let handle = self
                .session()
                .derive_key(&Mechanism::AesCbcEncryptData(params), key.handle, &template)
                .map_err(|e| {
                    tracing::error!(error = %e, "the HSM could not derive a DUKPT key");
                    CryptoError::Operation
                })?;
            // The key before is dropped (and destroyed, unless it is the BDK).
            key = TokenKey {
                hsm: self.clone(),
                handle,
                alg: KeyAlgorithm::Aes128,
                derived: true,
            };
        }
        Ok(key)
    }

    /// The key check value of an account's PIN-block key `version`: AES of a zero
    /// block, first three bytes, computed by the HSM.
    pub fn pin_key_check_value(
        &self,
        account_id: &str,
        version: i64,
    ) -> Result<[u8; 3], CryptoError> {
        let mut block = [0u8; BLOCK_LEN];
        self.ecb(&self.pin_key_label(account_id, version), &mut block, true)?;
        let [a, b, c, ..] = block;
        Ok([a, b, c])
    }

    /// An account's PIN-block key `version`, to encipher with.
    pub fn pin_key(self: &std::sync::Arc<Self>, account_id: &str, version: i64) -> HsmPinKey {
        HsmPinKey {
            hsm: self.clone(),
            label: self.pin_key_label(account_id, version),
        }
    }

    /// A new root key for a rotation, wrapped by the token's root wrapping key (made if
    /// it is not there yet).
    pub fn make_root(&self) -> Result<(Zeroizing<[u8; KEY_LEN]>, Vec<u8>), StartError> {
        let session = self.session();
        let key = match find_key(&session, &self.cfg.key_label)? {
            Some(k) => k,
            None => make_key(&session, &self.cfg.key_label)?,
        };
        new_root(&session, key)
    }
}

/// A PIN-block key on the token: [`PinCipher`] through the HSM.
pub struct HsmPinKey {
    hsm: std::sync::Arc<Hsm>,
    label: String,
}

impl PinCipher for HsmPinKey {
    fn encrypt_block(&self, block: &mut [u8; BLOCK_LEN]) -> Result<(), CryptoError> {
        self.hsm.ecb(&self.label, block, true)
    }

    fn decrypt_block(&self, block: &mut [u8; BLOCK_LEN]) -> Result<(), CryptoError> {
        self.hsm.ecb(&self.label, block, false)
    }
}

/// A key on the token the vault enciphers with: an imported zone PIN key, or a DUKPT
/// working key derived for one transaction (a session object, destroyed when dropped).
pub struct TokenKey {
    hsm: std::sync::Arc<Hsm>,
    handle: ObjectHandle,
    alg: KeyAlgorithm,
    derived: bool,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").field("alg", &self.alg).finish()
    }
}

impl TokenKey {
    /// Deciphers `data` (whole blocks) in CBC mode with a zero IV, in the HSM.
    pub fn decipher_cbc(&self, data: &mut [u8]) -> Result<(), CryptoError> {
        let mechanism = match self.alg {
            KeyAlgorithm::Tdes2 | KeyAlgorithm::Tdes3 => Mechanism::Des3Cbc([0u8; 8]),
            _ => Mechanism::AesCbc([0u8; 16]),
        };
        self.hsm.cipher(self.handle, &mechanism, data, false)
    }

    /// Enciphers one 8-byte block (a format 0 PIN block) under a TDES key, in the HSM.
    pub fn encipher_tdes(&self, block: &mut [u8; 8]) -> Result<(), CryptoError> {
        self.hsm
            .cipher(self.handle, &Mechanism::Des3Ecb, block, true)
    }
}

impl PinCipher for TokenKey {
    fn encrypt_block(&self, block: &mut [u8; BLOCK_LEN]) -> Result<(), CryptoError> {
        self.hsm
            .cipher(self.handle, &Mechanism::AesEcb, block, true)
    }

    fn decrypt_block(&self, block: &mut [u8; BLOCK_LEN]) -> Result<(), CryptoError> {
        self.hsm
            .cipher(self.handle, &Mechanism::AesEcb, block, false)
    }
}

impl Drop for TokenKey {
    fn drop(&mut self) {
        if self.derived
            && let Err(e) = self.hsm.session().destroy_object(self.handle)
        {
            tracing::warn!(error = %e, "the HSM kept a derived key it was asked to destroy");
        }
    }
}
