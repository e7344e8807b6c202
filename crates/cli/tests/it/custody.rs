//! `strongroom operator` and `dev --root-key shamir` with the real binary: init prints
//! the shares once; a Shamir dev vault restarts sealed and opens with three shares handed
//! in through `operator unseal`; `serve` refuses a root key file without the switch.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn strongroom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `strongroom operator init` on `url` with `shares` and `threshold`.
fn init(url: &str, shares: &str, threshold: &str) -> Output {
    strongroom(&[
        "operator",
        "init",
        "--database-url",
        url,
        "--shares",
        shares,
        "--threshold",
        threshold,
    ])
}

#[test]
fn operator_init_prints_the_shares_once_and_refuses_a_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("v.db").display());
    let out = init(&url, "3", "2");
    assert!(out.status.success(), "{}", text(&out));
    let shares: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .split_whitespace()
        .filter(|w| w.starts_with("srshare1_"))
        .collect();
    assert_eq!(shares.len(), 3, "{}", text(&out));
    // The database holds digests, never a share.
    let db = std::fs::read(dir.path().join("v.db")).unwrap();
    for s in &shares {
        assert!(!db.windows(20).any(|w| w == &s.as_bytes()[9..29]));
    }
    let again = strongroom(&["operator", "init", "--database-url", &url]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already has a root key"),
        "{}",
        text(&again)
    );
    // Out-of-range parameters are refused before anything is made.
    let fresh = format!("sqlite://{}", dir.path().join("w.db").display());
    let bad = strongroom(&[
        "operator",
        "init",
        "--database-url",
        &fresh,
        "--shares",
        "2",
        "--threshold",
        "3",
    ]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("threshold"), "{}", text(&bad));
}

#[test]
fn operator_init_can_print_each_share_encrypted_to_its_custodian() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("v.db").display());
    // Three custodians' age identities, made by age itself.
    let mut recipients = String::from("# one per share\n");
    let mut identities = Vec::new();
    for i in 0..3 {
        let key = dir.path().join(format!("id{i}.txt"));
        let out = Command::new("age-keygen").arg("-o").arg(&key).output();
        let out = out.expect("age is installed by scripts/test");
        assert!(out.status.success(), "{}", text(&out));
        let public = String::from_utf8_lossy(&out.stderr)
            .trim()
            .trim_start_matches("Public key: ")
            .to_owned();
        recipients.push_str(&public);
        recipients.push('\n');
        identities.push(key);
    }
    let file = dir.path().join("recipients.txt");
    let run = || {
        strongroom(&[
            "operator",
            "init",
            "--database-url",
            &url,
            "--shares",
            "3",
            "--threshold",
            "2",
            "--share-recipients",
            file.to_str().unwrap(),
        ])
    };
    let with = |extra: &str| {
        std::fs::write(&file, format!("{recipients}{extra}")).unwrap();
        run()
    };
    // One too many, or a bad key: refused before any share exists.
    let out = with("age1notakey\n");
    assert!(
        text(&out).contains("4 recipients for 3 shares"),
        "{}",
        text(&out)
    );
    std::fs::write(&file, recipients.replace("age1", "age1x")).unwrap();
    let bad = run();
    assert!(!bad.status.success());
    assert!(text(&bad).contains("age refused"), "{}", text(&bad));
    let out = with("");
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !printed.contains("srshare1_"),
        "a share in clear: {printed}"
    );
    let blocks: Vec<&str> = printed
        .split("-----BEGIN AGE ENCRYPTED FILE-----")
        .skip(1)
        .collect();
    assert_eq!(blocks.len(), 3, "{printed}");
    // Each custodian decrypts theirs with age; two of them rekey the vault.
    let mut shares = Vec::new();
    for (block, id) in blocks.iter().zip(&identities) {
        let armored = format!(
            "-----BEGIN AGE ENCRYPTED FILE-----{}-----END AGE ENCRYPTED FILE-----\n",
            block
                .split("-----END AGE ENCRYPTED FILE-----")
                .next()
                .unwrap()
        );
        let mut cmd = Command::new("age");
        cmd.arg("--decrypt").arg("-i").arg(id);
        let out = with_stdin(&mut cmd, &armored);
        assert!(out.status.success(), "{}", text(&out));
        let share = String::from_utf8(out.stdout).unwrap();
        assert!(share.starts_with("srshare1_"), "{share}");
        shares.push(share);
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strongroom"));
    cmd.args(["operator", "rekey", "--database-url", &url]);
    let out = with_stdin(&mut cmd, &format!("{}\n{}\n", shares[0], shares[2]));
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn operator_rekey_takes_the_current_shares_and_prints_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("v.db").display());
    let shares = |out: &Output| -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with("srshare1_"))
            .map(str::to_owned)
            .collect()
    };
    let init = init(&url, "3", "2");
    let old = shares(&init);
    let rekey = |given: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strongroom"));
        cmd.args(["operator", "rekey", "--database-url", &url])
            .args(["--shares", "4", "--threshold", "3"]);
        with_stdin(&mut cmd, given)
    };
    let one = rekey(&format!("{}\n", old[0]));
    assert!(!one.status.success());
    assert!(text(&one).contains("2 distinct shares"), "{}", text(&one));
    let out = rekey(&format!("{}\n\n{}\n", old[2], old[0]));
    assert!(out.status.success(), "{}", text(&out));
    let new = shares(&out);
    assert_eq!(new.len(), 4, "{}", text(&out));
    assert!(old.iter().all(|o| !new.contains(o)));
    // The old shares are spent; the new ones rekey.
    assert!(!rekey(&format!("{}\n{}\n", old[0], old[1])).status.success());
    let again = rekey(&format!("{}\n{}\n{}\n", new[0], new[1], new[3]));
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        !text(&again).contains(&new[0]),
        "the shares given are not echoed"
    );
}

#[test]
fn serve_refuses_a_root_key_file_without_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("root.key");
    let out = strongroom(&["init", "--root-key-file", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let config = dir.path().join("strongroom.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\nplaintext = true\ndatabase_url = \"sqlite://{}\"\nroot_key_file = \"{}\"\n",
            dir.path().join("s.db").display(),
            key.display()
        ),
    )
    .unwrap();
    let out = strongroom(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("--i-understand-file-root-key") && said.contains("shamir"),
        "{said}"
    );
    // A Shamir configuration names no key file.
    let mut shamir = std::fs::read_to_string(&config).unwrap();
    shamir.push_str("root_key_provider = \"shamir\"\n");
    std::fs::write(&config, shamir).unwrap();
    let out = strongroom(&["config", "check", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("root_key_file is for"),
        "{}",
        text(&out)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn dev_shamir(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["dev", "--root-key", "shamir", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn dev_json(dir: &Path) -> Option<serde_json::Value> {
    std::fs::read(dir.join("dev.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn stop(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
}

fn operator(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strongroom"));
    cmd.args(["operator"]).args(args).arg("--data-dir").arg(dir);
    with_stdin(&mut cmd, stdin)
}

/// Runs `cmd` with `stdin` as its standard input; its output.
fn with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_shamir_dev_vault_restarts_sealed_and_opens_with_three_shares() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let port = free_port();
    let child = dev_shamir(&dir, port);
    wait_for("dev.json", || dev_json(&dir).is_some());
    let dev = dev_json(&dir).unwrap();
    let shares: Vec<String> = dev["unseal_shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(shares.len(), 5);
    assert!(
        !dir.join("root.key").exists(),
        "a Shamir vault has no key file"
    );
    let status = operator(&dir, &["status"], "");
    assert!(status.status.success(), "{}", text(&status));
    assert!(
        text(&status).contains("\"sealed\": false"),
        "{}",
        text(&status)
    );
    stop(child);

    // Restarted: sealed, until three custodians have handed in their shares.
    let child = dev_shamir(&dir, port);
    wait_for("the sealed server", || {
        let out = operator(&dir, &["status"], "");
        out.status.success() && text(&out).contains("\"sealed\": true")
    });
    let out = operator(&dir, &["unseal"], &format!("{}\n", shares[4]));
    assert!(text(&out).contains("1 of 3"), "{}", text(&out));
    let out = operator(&dir, &["unseal"], &format!("{}\n", shares[4]));
    assert!(!out.status.success());
    assert!(text(&out).contains("share_duplicate"), "{}", text(&out));
    let out = operator(&dir, &["unseal"], "srshare1_nonsense\n");
    assert!(text(&out).contains("share_invalid"), "{}", text(&out));
    assert!(
        !text(&out).contains("srshare1_nonsense"),
        "the share is not echoed"
    );
    assert!(text(&operator(&dir, &["unseal"], &shares[0])).contains("2 of 3"));
    let out = operator(&dir, &["unseal"], &shares[2]);
    assert!(text(&out).contains("unsealed"), "{}", text(&out));
    let out = operator(&dir, &["status"], "");
    assert!(text(&out).contains("\"sealed\": false"), "{}", text(&out));
    // Sealing again takes the admin key dev.json holds.
    let out = operator(&dir, &["seal"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"sealed\": true"), "{}", text(&out));
    stop(child);
}

/// A fresh SoftHSM2 token labelled `<prefix>-<pid>` (user PIN 4321): its label.
fn softhsm_token(prefix: &str) -> String {
    let label = format!("{prefix}-{}", std::process::id());
    let made = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            &label,
            "--so-pin",
            "1234",
            "--pin",
            "4321",
        ])
        .output()
        .expect("softhsm2-util is installed by scripts/test");
    assert!(made.status.success(), "{}", text(&made));
    label
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

/// The AES-128 check value of a hex key, by OpenSSL: 6 upper-case hex digits.
fn aes_kcv(key: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero");
    std::fs::write(&zero, [0u8; 16]).unwrap();
    let out = Command::new("openssl")
        .args(["enc", "-aes-128-ecb", "-nopad", "-K", key, "-in"])
        .arg(&zero)
        .output()
        .expect("openssl is installed");
    assert!(out.status.success());
    out.stdout[..3].iter().map(|b| format!("{b:02X}")).collect()
}

/// `strongroom dev` on `dir` and `port` with `args` (and the HSM's PIN).
fn dev(dir: &Path, port: u16, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .arg("dev")
        .args(args)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir)
        .env("STRONGROOM_PKCS11_PIN", "4321")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn operator_rotate_root_moves_a_dev_vault_into_the_hsm_and_removes_the_key_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let label = softhsm_token("rot");
    let port = free_port();
    let hsm = ["--pkcs11-token-label", label.as_str()];
    let open = |dir: &Path| {
        wait_for("the dev vault", || {
            let out = operator(dir, &["status"], "");
            out.status.success() && text(&out).contains("\"sealed\": false")
        });
    };
    let child = dev(&dir, port, &hsm);
    open(&dir);
    let first = std::fs::read(dir.join("root.key")).unwrap();
    // A new key in the same file first, then into the HSM.
    let out = operator(&dir, &["rotate-root"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("generation 2 (file)"), "{}", text(&out));
    assert!(text(&out).contains("data_keys"), "{}", text(&out));
    assert!(
        text(&out).contains("previous one is retired"),
        "{}",
        text(&out)
    );
    let second = std::fs::read(dir.join("root.key")).unwrap();
    assert_ne!(first, second);
    assert!(second.starts_with(b"strongroom-dev-root-key:"));
    // The audit checkpoints signed before still verify with the new key file: it carries
    // the key they are signed under.
    let out = strongroom(&["audit", "verify", "--data-dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("signatures checked"), "{}", text(&out));
    let out = operator(
        &dir,
        &["rotate-root", "--to", "shamir", "--threshold", "9"],
        "",
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("invalid_parameter"), "{}", text(&out));
    let out = operator(&dir, &["rotate-root", "--to", "pkcs11"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("generation 3 (pkcs11)"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("root_key_provider = \"pkcs11\""),
        "{}",
        text(&out)
    );
    assert!(!dir.join("root.key").exists(), "the old key file is gone");
    stop(child);

    // As a file vault it no longer starts; from the HSM it does, and the dev admin key
    // (its digest made under the first root key) still works.
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("`pkcs11` provider"), "{}", text(&out));
    let child = dev(&dir, port, &["--root-key", "pkcs11", hsm[0], hsm[1]]);
    open(&dir);
    let account = dev_json(&dir).unwrap()["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strongroom"));
    cmd.args(["accounts", "get", "--account", &account, "--data-dir"])
        .arg(&dir);
    let out = with_stdin(&mut cmd, "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&account), "{}", text(&out));
    // A named custodian's admin key.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strongroom"));
    cmd.args(["admin-keys", "create", "--name", "Grace H", "--data-dir"])
        .arg(&dir);
    let out = with_stdin(&mut cmd, "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("\"name\": \"Grace H\""),
        "{}",
        text(&out)
    );
    let grace: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let grace = grace["secret"].as_str().unwrap().to_owned();
    // A KEK imported under dual control: the dev admin key and Grace's give a component
    // each, read from standard input (never an argument).
    let key_imports = |args: &[&str], admin: Option<&str>, stdin: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strongroom"));
        cmd.arg("key-imports")
            .args(args)
            .arg("--data-dir")
            .arg(&dir);
        if let Some(k) = admin {
            cmd.args(["--admin-key", k]);
        }
        with_stdin(&mut cmd, stdin)
    };
    let create = [
        "create",
        "--account",
        &account,
        "--kind",
        "kek",
        "--algorithm",
        "aes128",
    ];
    let out = key_imports(&create, None, "");
    assert!(!out.status.success(), "--name is required");
    let out = key_imports(
        &[&create[..], &["--name", "Processor KEK"]].concat(),
        None,
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let import: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let import = import["id"].as_str().unwrap().to_owned();
    let (c1, c2) = (
        "00112233445566778899aabbccddeeff",
        "0f0e0d0c0b0a09080706050403020100",
    );
    let give = ["component", "--id", &import, "--kcv"];
    let out = key_imports(&[&give[..], &[&aes_kcv(c1)]].concat(), None, c1);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(c1), "the component is not echoed");
    let out = key_imports(&[&give[..], &[&aes_kcv(c1)]].concat(), None, c1);
    assert!(text(&out).contains("custodian_repeated"), "{}", text(&out));
    let out = key_imports(&[&give[..], &[&aes_kcv(c2)]].concat(), Some(&grace), c2);
    assert!(out.status.success(), "{}", text(&out));
    let whole: String = hex_bytes(c1)
        .iter()
        .zip(hex_bytes(c2))
        .map(|(a, b)| format!("{:02x}", a ^ b))
        .collect();
    assert!(text(&out).contains(&aes_kcv(&whole)), "{}", text(&out));
    assert!(text(&out).contains("\"id\": \"kek_"), "{}", text(&out));
    stop(child);
}

#[test]
fn a_dev_vault_on_softhsm_opens_from_the_hsm_and_keeps_no_key_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev");
    let label = softhsm_token("dev");
    let port = free_port();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_strongroom"))
            .args([
                "dev",
                "--root-key",
                "pkcs11",
                "--pkcs11-token-label",
                &label,
                "--listen",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&dir)
            .env("STRONGROOM_PKCS11_PIN", "4321")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    for round in 0..2 {
        let child = start();
        wait_for("the dev vault", || {
            let out = operator(&dir, &["status"], "");
            out.status.success() && text(&out).contains("\"provider\": \"pkcs11\"")
        });
        let out = operator(&dir, &["status"], "");
        assert!(
            text(&out).contains("\"sealed\": false"),
            "round {round}: {}",
            text(&out)
        );
        assert!(!dir.join("root.key").exists());
        stop(child);
    }
    // Without the PIN it does not start.
    let out = Command::new(env!("CARGO_BIN_EXE_strongroom"))
        .args([
            "dev",
            "--root-key",
            "pkcs11",
            "--pkcs11-token-label",
            &label,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("STRONGROOM_PKCS11_PIN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("STRONGROOM_PKCS11_PIN"),
        "{}",
        text(&out)
    );
}
