//! TLS hardening: protocol versions and suites checked with OpenSSL's `s_client`, plain
//! HTTP refused (never redirected), slow clients cut off, security headers everywhere.

use crate::harness::*;
use reqwest::Method;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `openssl s_client` against the server with extra arguments; returns (handshake
/// succeeded, combined output).
fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-servername")
        .arg("localhost")
        .arg("-CAfile")
        .arg(ca_pem_path())
        .args(args)
        .stdin(Stdio::null());
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("openssl is required for the TLS tests (scripts/test installs it with apt): {e}")
    });
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let negotiated = text.contains("Verify return code: 0 (ok)")
        && !text.contains("Cipher is (NONE)")
        && !text.contains("Cipher    : 0000");
    (out.status.success() && negotiated, text)
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_with_ecdhe_aead_suites() {
    let srv = TestServer::start().await;
    let port = srv.running.local_addr.port();
    tokio::task::spawn_blocking(move || {
        // Succeed: TLS 1.3 and 1.2 (ECDHE + AEAD).
        let (ok, out) = s_client(port, &["-tls1_3"]);
        assert!(ok, "TLS 1.3 must work: {out}");
        assert!(out.contains("TLSv1.3"), "{out}");
        let (ok, out) = s_client(port, &["-tls1_2"]);
        assert!(ok, "TLS 1.2 must work: {out}");
        assert!(out.contains("TLSv1.2") && out.contains("ECDHE"), "{out}");
        for suite in [
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
        ] {
            let (ok, out) = s_client(port, &["-tls1_2", "-cipher", suite]);
            assert!(ok, "{suite} must work: {out}");
        }
        // Fail: TLS 1.0 and 1.1, even from a client willing to use them (security level
        // 0 lets OpenSSL offer them), and TLS 1.2 without ECDHE or without an AEAD.
        for (args, what) in [
            (&["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"][..], "TLS 1.0"),
            (
                &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"][..],
                "TLS 1.1",
            ),
            (
                &[
                    "-tls1_2",
                    "-cipher",
                    "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384",
                ][..],
                "ECDHE with CBC",
            ),
            (
                &["-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-GCM-SHA384"][..],
                "static RSA key exchange",
            ),
        ] {
            let (ok, out) = s_client(port, args);
            assert!(!ok, "{what} must be refused: {out}");
            // The refusal came from the server, not from the client's own settings.
            assert!(
                out.contains("alert")
                    || out.contains("no shared cipher")
                    || out.contains("handshake failure"),
                "{what}: expected a handshake alert: {out}"
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_refused_not_redirected() {
    let srv = TestServer::start().await;
    let addr = srv.running.local_addr;
    let reply = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(
        !text.starts_with("HTTP/"),
        "the TLS port answered plain HTTP: {text}"
    );
    assert!(!text.to_ascii_lowercase().contains("location:"));
    // What did come back (if anything) is a TLS alert record (content type 21).
    assert!(
        reply.is_empty() || reply[0] == 21,
        "unexpected bytes: {reply:?}"
    );
    // The server is still fine.
    let r = srv.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_client_that_sends_headers_too_slowly_is_cut_off() {
    let srv = TestServer::start_on(std::sync::Arc::new(Data::new()), |c| {
        c.header_read_timeout = Duration::from_secs(1)
    })
    .await;
    let addr = srv.running.local_addr;
    let ca = std::fs::read(ca_pem_path()).unwrap();
    let elapsed = tokio::task::spawn_blocking(move || {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        // Headers begun but never finished (no blank line).
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        match tls.read(&mut buf) {
            // Closed (with or without close_notify) or reset by the server: cut off.
            Ok(_) => {}
            Err(e)
                if e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("the server kept the slow connection open: {e}"),
        }
        started.elapsed()
    })
    .await
    .unwrap();
    // Closed, or answered with an error, by the server well before our own 20 s limit.
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
}

#[tokio::test]
async fn security_headers_on_success_401_404_and_405() {
    let srv = TestServer::start().await;
    let cases = [
        (srv.call(Method::GET, "/healthz", None, None).await, 200),
        (srv.get("/v1/cards?limit=1", &srv.sk_test).await, 200),
        (
            srv.call(Method::GET, "/v1/cards?limit=1", None, None).await,
            401,
        ),
        (srv.get("/v1/cards?limit=1", "sk_test_nope").await, 401),
        (srv.get("/v1/cards?limit=1", "a.b.c").await, 401),
        (srv.call(Method::GET, "/nope", None, None).await, 404),
        (srv.call(Method::PUT, "/healthz", None, None).await, 405),
        (
            srv.call(Method::GET, "/.well-known/jwks.json", None, None)
                .await,
            200,
        ),
    ];
    for (r, status) in cases {
        assert_eq!(r.status.as_u16(), status, "{}", r.text);
        assert_eq!(
            r.headers["strict-transport-security"],
            "max-age=63072000; includeSubDomains; preload"
        );
        assert_eq!(r.headers["cache-control"], "no-store");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        let challenge = r.headers.get("www-authenticate");
        // Missing credential and unknown API key: the bare challenge; a malformed token
        // names the error too.
        match status {
            401 if r.body["error"]["code"] == "token_invalid" => assert_eq!(
                challenge.unwrap(),
                r#"Bearer realm="strongroom", error="invalid_token""#
            ),
            401 => assert_eq!(challenge.unwrap(), r#"Bearer realm="strongroom""#),
            _ => assert!(challenge.is_none(), "{status}"),
        }
    }
}

/// The server's suite order wins over the client's (what scanners report as "has server
/// cipher order"): a client that prefers ChaCha20 still gets AES-256-GCM.
#[tokio::test]
async fn the_server_picks_the_suite_by_its_own_order() {
    let srv = TestServer::start().await;
    let port = srv.running.local_addr.port();
    tokio::task::spawn_blocking(move || {
        let (ok, out) = s_client(
            port,
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
            ],
        );
        assert!(ok, "{out}");
        assert!(out.contains("ECDHE-ECDSA-AES256-GCM-SHA384"), "{out}");
        let (ok, out) = s_client(
            port,
            &[
                "-tls1_3",
                "-ciphersuites",
                "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384",
            ],
        );
        assert!(ok, "{out}");
        assert!(out.contains("TLS_AES_256_GCM_SHA384"), "{out}");
    })
    .await
    .unwrap();
}
