//! What the `p2pe` scenario needs before it is measured (docs/card-present.md): an AES-128
//! base derivation key imported into the bench's account under dual control (two admin
//! keys made for it, one component each), and one AES-DUKPT terminal per connection, so
//! that each connection's transaction counters arrive in order. Each request is what a
//! terminal sends: a new card's track 2 enciphered under the data key of the terminal's
//! next transaction.
//!
//! The terminal side derives its keys with the vault's own `strongroom-crypto` DUKPT code:
//! the bench measures throughput; the derivation is checked against published vectors and
//! an independent implementation by the tests.

use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde_json::json;
use strongroom_crypto::components::{KeyAlgorithm, kcv};
use strongroom_crypto::dukpt::{self, AesKsn, Usage};
use zeroize::Zeroizing;

use crate::conn::Target;
use crate::relay::{Admin, call, expect};

/// One connection's terminal.
pub struct Terminal {
    /// `/v1/terminals/{id}/cards`.
    pub path: String,
    initial_key_id: [u8; 8],
    bdk: Arc<Zeroizing<Vec<u8>>>,
    counter: u32,
}

impl Terminal {
    /// The body of the terminal's next transaction, carrying `pan`'s track 2.
    pub fn next_body(&mut self, pan: &str) -> Result<Bytes, String> {
        self.counter += 1;
        while !dukpt::aes_counter_valid(self.counter) {
            self.counter += 1;
        }
        let ksn = AesKsn {
            initial_key_id: self.initial_key_id,
            counter: self.counter,
        };
        let key = dukpt::aes_working_key(
            &self.bdk,
            KeyAlgorithm::Aes128,
            &ksn,
            Usage::DataEncrypt,
            KeyAlgorithm::Aes128,
        )
        .map_err(|e| format!("derive: {e}"))?;
        let mut track = Zeroizing::new(format!(";{pan}=30121011234567890?").into_bytes());
        let pad = 16 - track.len() % 16;
        track.extend(std::iter::repeat_n(u8::try_from(pad).unwrap_or(16), pad));
        dukpt::encipher_cbc(&key, false, &mut track).map_err(|e| format!("encipher: {e}"))?;
        let mut ksn_hex = hex::encode_upper(self.initial_key_id);
        ksn_hex.push_str(&format!("{:08X}", self.counter));
        Ok(Bytes::from(format!(
            r#"{{"ksn":"{ksn_hex}","encrypted_data":"{}","data":"track2","cipher":"aes-cbc"}}"#,
            hex::encode(track.as_slice())
        )))
    }
}

/// Imports a random AES-128 BDK into `admin.account` under dual control and registers
/// `n` terminals under it.
pub async fn setup(
    target: &Arc<Target>,
    auth: &HeaderValue,
    admin: &Admin,
    n: usize,
) -> Result<Vec<Terminal>> {
    let mut custodians = Vec::new();
    for name in ["Bench custodian A", "Bench custodian B"] {
        let (status, body) = call(
            target,
            Method::POST,
            "/v1/admin/admin_keys",
            &admin.key,
            Some(json!({ "name": name })),
        )
        .await?;
        let v = expect(
            "POST /v1/admin/admin_keys",
            status,
            &body,
            &[StatusCode::CREATED],
        )?;
        let secret = v
            .get("secret")
            .and_then(|v| v.as_str())
            .context("no admin key secret")?;
        custodians.push(crate::bearer(secret)?);
    }
    let random = |n: usize| -> Result<Zeroizing<Vec<u8>>> {
        let b = strongroom_crypto::random::bytes::<32>().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Zeroizing::new(b.get(..n).unwrap_or_default().to_vec()))
    };
    let bdk = random(16)?;
    let c1 = random(16)?;
    let c2: Zeroizing<Vec<u8>> =
        Zeroizing::new(bdk.iter().zip(c1.iter()).map(|(a, b)| a ^ b).collect());
    let (status, body) = call(
        target,
        Method::POST,
        "/v1/admin/key_imports",
        &admin.key,
        Some(
            json!({"account": admin.account, "kind": "bdk", "algorithm": "aes128",
            "components": 2, "name": "Bench terminals"}),
        ),
    )
    .await?;
    let v = expect(
        "POST /v1/admin/key_imports",
        status,
        &body,
        &[StatusCode::CREATED],
    )?;
    let import = v
        .get("id")
        .and_then(|v| v.as_str())
        .context("no import id")?
        .to_owned();
    let mut bdk_id = None;
    for (custodian, c) in custodians.iter().zip([&c1, &c2]) {
        let check = kcv(KeyAlgorithm::Aes128, c).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (status, body) = call(
            target,
            Method::POST,
            &format!("/v1/admin/key_imports/{import}/components"),
            custodian,
            Some(json!({"component": hex::encode(c.as_slice()), "kcv": hex::encode_upper(check)})),
        )
        .await?;
        let v = expect("POST …/components", status, &body, &[StatusCode::OK])?;
        bdk_id = v
            .pointer("/key/id")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
    }
    let bdk_id = bdk_id.context("the import made no key")?;
    let bdk = Arc::new(bdk);
    let device = strongroom_crypto::random::bytes::<4>().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut terminals = Vec::with_capacity(n);
    for w in 0..n {
        let mut initial_key_id = [0u8; 8];
        initial_key_id[..4].copy_from_slice(&device);
        initial_key_id[4..].copy_from_slice(&u32::try_from(w).unwrap_or(u32::MAX).to_be_bytes());
        let (status, body) = call(
            target,
            Method::POST,
            "/v1/terminals",
            auth,
            Some(
                json!({"bdk": bdk_id, "initial_key_id": hex::encode_upper(initial_key_id),
                "serial": format!("BENCH-{w}")}),
            ),
        )
        .await?;
        let v = expect("POST /v1/terminals", status, &body, &[StatusCode::CREATED])?;
        let id = v
            .get("id")
            .and_then(|v| v.as_str())
            .context("no terminal id")?;
        terminals.push(Terminal {
            path: format!("/v1/terminals/{id}/cards"),
            initial_key_id,
            bdk: bdk.clone(),
            counter: 0,
        });
    }
    Ok(terminals)
}
