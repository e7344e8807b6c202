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

/// TR-31 key blocks made by psec (versions B and D, every KBPK length, with and without
/// optional blocks) unwrap to the key psec wrapped; a changed block, or another KBPK,
/// does not unwrap.
#[test]
fn tr31_blocks_from_psec_unwrap_to_their_keys() {
    use strongroom_crypto::tr31;
    let script = r#"
import json, os, psec.tr31 as t
cases = []
for version, alg, kbpk_len, key_len, usage, mode in [
    ("D", "A", 16, 16, "B0", "X"), ("D", "A", 24, 32, "P0", "E"), ("D", "A", 32, 24, "K0", "B"),
    ("D", "T", 32, 16, "B0", "X"), ("B", "T", 16, 16, "B0", "X"), ("B", "T", 24, 24, "P0", "E"),
    ("B", "T", 24, 16, "K1", "B"),
]:
    kbpk, key = os.urandom(kbpk_len), os.urandom(key_len)
    header = t.Header(version_id=version, key_usage=usage, algorithm=alg, mode_of_use=mode,
                      version_num="00", exportability="N")
    if usage == "K0":
        header.blocks["KS"] = "00604B120F9292800000"
    cases.append({"kbpk": kbpk.hex(), "key": key.hex(), "usage": usage, "algorithm": alg,
                  "block": t.wrap(kbpk, header, key)})
print(json.dumps(cases))
"#;
    let out = Command::new("python3")
        .args(["-W", "ignore", "-c", script])
        .output()
        .expect("python3 is required for the psec cross-check");
    assert!(
        out.status.success(),
        "psec TR-31 failed to run (pip install psec): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cases: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cases.len(), 7);
    for c in &cases {
        let kbpk = hex::decode(c["kbpk"].as_str().unwrap()).unwrap();
        let block = c["block"].as_str().unwrap();
        let (header, key) = tr31::unwrap(&kbpk, block).unwrap_or_else(|_| panic!("{c}"));
        assert_eq!(
            hex::encode(key.as_slice()),
            c["key"].as_str().unwrap(),
            "{c}"
        );
        assert_eq!(header.key_usage, c["usage"].as_str().unwrap());
        assert_eq!(
            header.algorithm.to_string(),
            c["algorithm"].as_str().unwrap()
        );
        assert_eq!(header.version, block.chars().next().unwrap());
        // One hex digit changed anywhere after the header, a changed header, another
        // KBPK, or a truncated block: nothing unwraps.
        let mut bad = block.to_owned().into_bytes();
        let at = bad.len() - 5;
        bad[at] = if bad[at] == b'0' { b'1' } else { b'0' };
        assert!(tr31::unwrap(&kbpk, std::str::from_utf8(&bad).unwrap()).is_err());
        let mut bad = block.to_owned().into_bytes();
        bad[11] = if bad[11] == b'N' { b'E' } else { b'N' };
        assert!(tr31::unwrap(&kbpk, std::str::from_utf8(&bad).unwrap()).is_err());
        let mut other = kbpk.clone();
        // Not the low bit: in a TDES key it is parity, which DES ignores.
        other[0] ^= 0x80;
        assert!(tr31::unwrap(&other, block).is_err());
        assert!(tr31::unwrap(&kbpk, &block[..block.len() - 2]).is_err());
    }
    assert!(tr31::unwrap(&[0u8; 16], "not a key block").is_err());
    assert!(tr31::unwrap(&[0u8; 16], "").is_err());
}
