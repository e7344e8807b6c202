//! A loopback HTTPS "processor" with its own CA, for relay tests: it records every
//! request it receives and answers with a JSON echo of it (method, path, headers, body),
//! or with what a test told it to answer.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One request the processor received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

/// A canned answer: status, content type, body, one extra header.
type Canned = (u16, String, String, Option<(String, String)>);

#[derive(Clone, Default)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    /// When set, answered instead of the echo: (status, content type, body, extra header).
    canned: Arc<Mutex<Option<Canned>>>,
}

pub struct Echo {
    pub addr: SocketAddr,
    /// The processor's own CA (PEM): the destination's `ca_cert_pem`.
    pub ca_pem: String,
    shared: Shared,
    handle: axum_server::Handle<SocketAddr>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

async fn answer(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    s.received.lock().unwrap().push(Received {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        headers: headers.clone(),
        body: body.clone(),
    });
    if let Some((status, ct, text, extra)) = s.canned.lock().unwrap().clone() {
        let mut r = (
            StatusCode::from_u16(status).unwrap(),
            [("content-type", ct)],
            text,
        )
            .into_response();
        if let Some((n, v)) = extra {
            r.headers_mut().insert(
                axum::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        return r;
    }
    let hdrs: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), json!(v.to_str().unwrap_or(""))))
        .collect();
    let echo =
        json!({"method": method.as_str(), "path": uri.path(), "headers": hdrs, "body": body});
    (
        [
            ("content-type", "application/json"),
            ("set-cookie", "session=abc"),
        ],
        echo.to_string(),
    )
        .into_response()
}

/// A certificate authority and a leaf for `localhost` and 127.0.0.1 signed by it.
fn pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "echo processor CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    (ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem())
}

impl Echo {
    pub async fn start() -> Self {
        let (ca_pem, cert, key) = pki();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs = rustls_pemfile::certs(&mut cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut key.as_bytes())
            .unwrap()
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
        let shared = Shared::default();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let handle = axum_server::Handle::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = axum_server::from_tcp_rustls(listener, tls)
            .unwrap()
            .handle(handle.clone());
        tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        Self {
            addr,
            ca_pem,
            shared,
            handle,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Answers with this from now on instead of the echo.
    pub fn answer_with(
        &self,
        status: u16,
        content_type: &str,
        body: &str,
        header: Option<(&str, &str)>,
    ) {
        *self.shared.canned.lock().unwrap() = Some((
            status,
            content_type.to_owned(),
            body.to_owned(),
            header.map(|(n, v)| (n.to_owned(), v.to_owned())),
        ));
    }
}
