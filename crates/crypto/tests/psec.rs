//! Cross-check of our ISO 9564-1 format 4 PIN blocks against psec (Python), an
//! independent implementation: blocks we produce, psec deciphers to the same PIN, and
//! blocks psec produces, we decipher to the same PIN. Needs `python3` with `psec`
//! (`scripts/test` installs it); a missing tool fails the test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::process::Command;
use strongroom_crypto::pin::{self, Pin, PinBlock, PinKey};
use strongroom_crypto::random;

#[test]
fn blocks_agree_with_psec_both_ways() {
    let pans = [
        "4242424242424242",
        "378282246310005",
        "6011111111111117",
        "123456789",
        "5555555555554444123",
    ];
    let pins = ["1234", "58031", "730291", "00000000", "987654321098"];
    let mut cases = Vec::new();
    for (i, (pan, p)) in pans.iter().zip(pins).enumerate() {
        // AES-256 as the vault uses it, and AES-128 as in the published vector.
        let key: Vec<u8> = if i % 2 == 0 {
            random::bytes::<32>().unwrap().to_vec()
        } else {
            random::bytes::<16>().unwrap().to_vec()
        };
        let k = PinKey::from_bytes(&key).unwrap();
        let block = pin::encipher(&k, &Pin::new(p).unwrap(), pan).unwrap();
        cases.push(serde_json::json!({
            "key": hex::encode(&key),
            "pan": pan,
            "pin": p,
            "block": hex::encode(block.expose_bytes()),
        }));
    }
    let dir = std::env::temp_dir().join(format!(
        "strongroom-psec-{}",
        hex::encode(random::bytes::<8>().unwrap())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (src, dst) = (dir.join("in.json"), dir.join("out.json"));
    std::fs::write(&src, serde_json::to_vec(&cases).unwrap()).unwrap();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/pin/psec_cross.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&src)
        .arg(&dst)
        .output()
        .expect("python3 is required for the psec cross-check");
    assert!(
        out.status.success(),
        "psec cross-check failed to run (pip install psec): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&dst).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(results.len(), cases.len());
    for (case, r) in cases.iter().zip(&results) {
        // Ours -> psec.
        assert_eq!(r["deciphered"], case["pin"], "psec read our block");
        // psec -> ours.
        let key = PinKey::from_bytes(&hex::decode(case["key"].as_str().unwrap()).unwrap()).unwrap();
        let theirs =
            PinBlock::from_bytes(&hex::decode(r["psec_block"].as_str().unwrap()).unwrap()).unwrap();
        let pin = pin::decipher(&key, &theirs, case["pan"].as_str().unwrap()).unwrap();
        assert_eq!(
            pin.expose_digits(),
            case["pin"].as_str().unwrap(),
            "we read psec's block"
        );
        assert_ne!(
            r["psec_block"].as_str().unwrap(),
            case["block"].as_str().unwrap(),
            "random fill differs"
        );
    }
}
