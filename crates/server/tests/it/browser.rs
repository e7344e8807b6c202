//! The hosted card fields and strongroom.js in a real browser: Debian's headless
//! Chromium, driven by `tests/browser/elements.py` (Selenium), against this server.
//! Merchant pages are served from other loopback origins; the report says what the
//! browser saw, and the assertions here check it, then check through the API what the
//! vault stored.

use crate::harness::{TestServer, assert_not_logged, ca_pem_path};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A free loopback port (bound, then released for the script to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Makes a session allowing `origin`; returns its client secret.
async fn session(srv: &TestServer, origin: &str, extra: Value) -> String {
    let mut body = json!({
        "purpose": "tokenize",
        "allowed_origins": [origin],
        "amount": 4999,
        "currency": "EUR",
        "order_id": "order-browser-1",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = srv.post("/v1/client_sessions", &srv.sk_test, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["client_secret"].as_str().unwrap().to_owned()
}

/// Redeems a card token with the secret key; the card.
async fn redeem(srv: &TestServer, token: &Value) -> Value {
    let token = token
        .as_str()
        .unwrap_or_else(|| panic!("no token: {token}"));
    let r = srv
        .post(
            "/v1/card_tokens/redeem",
            &srv.sk_test,
            json!({ "token": token }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

#[tokio::test]
async fn a_merchant_page_tokenizes_through_the_hosted_fields_in_chromium() {
    let srv = TestServer::start().await;
    let (allowed_port, other_port) = (free_port(), free_port());
    let origin = format!("http://127.0.0.1:{allowed_port}");

    // Used: its one card is already collected. Expired: made first, then the clock
    // moves past its end; the others are made after.
    let used = session(&srv, &origin, json!({})).await;
    let id = used.split("_secret_").next().unwrap();
    let r = srv
        .post(
            &format!("/v1/client_sessions/{id}/cards"),
            &srv.pk_test,
            json!({"client_secret": used, "number": "4000056655665556",
                   "exp_month": 1, "exp_year": 2033, "cvc": "321"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let expired = session(&srv, &origin, json!({"expires_in": 60})).await;
    srv.clock.advance(Duration::from_secs(61));
    let mut sessions = serde_json::Map::new();
    sessions.insert("used".into(), used.into());
    sessions.insert("expired".into(), expired.into());
    for name in ["ok", "split", "direct", "keyboard", "other_origin"] {
        sessions.insert(name.into(), session(&srv, &origin, json!({})).await.into());
    }
    let shots = std::env::var_os("STRONGROOM_SCREENSHOTS");
    let config = json!({
        "vault": srv.url,
        "pk": srv.pk_test,
        "sk": srv.sk_test,
        "ca": ca_pem_path(),
        "allowed_port": allowed_port,
        "other_port": other_port,
        "sessions": sessions,
        "screenshots": shots.as_ref().map(|s| s.to_string_lossy().into_owned()),
        "chromium": "/usr/bin/chromium",
        "chromedriver": "/usr/bin/chromedriver",
    });
    let report = tokio::task::spawn_blocking(move || run_script(&config))
        .await
        .unwrap();

    assert_eq!(report["vault_reachable"], true, "{report}");
    assert_eq!(report["failures"], json!({}), "{report}");

    // The card element: a token that the back end redeems for the card, with the
    // session's fixed amount and order id; the number never reached the parent page.
    let ok = &report["ok"];
    let card = redeem(&srv, &ok["token"]).await;
    assert_eq!(card["last4"], "4242", "{card}");
    assert_eq!(card["exp_month"], 12);
    assert_eq!(card["exp_year"], 2034);
    assert_eq!(card["cvc_available"], true);
    assert_eq!(card["client_session"]["amount"], 4999);
    assert_eq!(card["client_session"]["currency"], "eur");
    assert_eq!(card["client_session"]["order_id"], "order-browser-1");
    for check in [
        "parent_dom_clean",
        "globals_clean",
        "console_clean",
        "inputs_cleared",
    ] {
        assert_eq!(ok[check], true, "{check}: {report}");
    }
    assert_eq!(report["console_clean_all"], true, "{report}");
    assert_eq!(report["console_frames_covered"], true, "{report}");

    // Split fields and direct mode (SAQ A-EP): the same card, through other routes.
    for mode in ["split", "direct"] {
        let card = redeem(&srv, &report[mode]["token"]).await;
        assert_eq!(card["last4"], "4242", "{mode}: {card}");
        assert_eq!(card["client_session"]["order_id"], "order-browser-1");
    }

    // Keyboard only: Tab reaches the number field, the error is announced and tied to
    // the field, Enter submits.
    let kb = &report["keyboard"];
    assert_eq!(kb["focus_reached"], true, "{report}");
    assert_eq!(kb["aria_invalid"], "true", "{report}");
    assert_eq!(kb["error_referenced"], true, "{report}");
    assert_eq!(kb["error_role"], "alert", "{report}");
    assert_eq!(kb["aria_invalid_cleared"], true, "{report}");
    assert_eq!(kb["expiry_formatted"], "12 / 34", "{report}");
    redeem(&srv, &kb["token"]).await;

    // A spent or expired session: a clear message, no fields, the code in tokenize().
    for (name, code, words) in [
        ("used", "client_session_used", "already been used"),
        ("expired", "client_session_expired", "expired"),
    ] {
        let r = &report[name];
        assert_eq!(r["fields_shown"], false, "{name}: {report}");
        assert_eq!(r["tokenize_error"], code, "{name}: {report}");
        let msg = r["message"].as_str().unwrap_or_default();
        assert!(msg.contains(words), "{name}: {msg}");
    }

    // An origin the session does not allow cannot frame the fields.
    let other = &report["other_origin"];
    assert_eq!(other["number_input_usable"], false, "{report}");
    assert_eq!(other["element_unavailable"], true, "{report}");
    assert_eq!(other["frame_ancestors_refused"], true, "{report}");

    assert_not_logged(&["4242424242424242", "4242 4242 4242 4242"]);
}

fn run_script(config: &Value) -> Value {
    let script = repo_root().join("tests/browser/elements.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 is required for the browser test: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser did not start (scripts/test installs chromium, chromium-driver and selenium): {stderr}"
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("report {e}: {stdout}\n{stderr}"))
}
