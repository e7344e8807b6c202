//! A loopback HTTPS echo processor: a stand-in for a card processor that a relay can be
//! pointed at (`strongroom relay echo`, and the bench's `relay` scenarios).
//!
//! It makes its own certificate authority and a leaf for `localhost` and `127.0.0.1` at
//! start, so a destination approved with that CA's PEM is verified like any other. Every
//! request is answered `200 application/json` with what was received:
//! `{"method", "path", "headers": {…}, "body": "<the body as a string>"}`. It receives card
//! data in the clear, so it listens on loopback only, and it keeps nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value};
use tokio_rustls::TlsAcceptor;

/// The largest request body echoed; a larger one is answered 413.
const MAX_BODY: usize = 1 << 20;

/// The prefix of the echo's runtime threads' names when it runs on a thread of its own
/// ([`EchoProcessor::spawn_thread`]), by which [`crate::procfs`] finds their CPU time.
pub const THREAD_NAME: &str = "sr-echo";

/// A bound, not yet serving, echo processor.
pub struct EchoProcessor {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    ca_pem: String,
}

/// A CA certificate (PEM), and a leaf certificate and its key (PEM) signed by it for
/// `localhost` and `127.0.0.1`.
struct Pki {
    ca_pem: String,
    leaf_pem: String,
    key_pem: String,
}

fn pki() -> Result<Pki> {
    let ca_key = rcgen::KeyPair::generate().context("generating the echo CA key")?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Strongroom echo processor CA");
    let ca_cert = ca.self_signed(&ca_key).context("signing the echo CA")?;
    let leaf_key = rcgen::KeyPair::generate().context("generating the echo key")?;
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .context("signing the echo certificate")?;
    Ok(Pki {
        ca_pem: ca_cert.pem(),
        leaf_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

fn tls_acceptor(pki: &Pki) -> Result<TlsAcceptor> {
    let certs = CertificateDer::pem_slice_iter(pki.leaf_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the echo certificate")?;
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).context("the echo key")?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // TLS 1.2 and 1.3 (rustls' safe defaults), h2 preferred.
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the echo certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl EchoProcessor {
    /// Makes the CA and the certificate and binds `listen`, which must be a loopback
    /// address (port 0 picks a free port). Nothing is served until [`Self::run`].
    pub fn bind(listen: SocketAddr) -> Result<Self> {
        if !listen.ip().is_loopback() {
            bail!(
                "the echo processor receives card data: it listens on loopback only \
                 (127.0.0.1 or ::1), not {}",
                listen.ip()
            );
        }
        let pki = pki()?;
        let acceptor = tls_acceptor(&pki)?;
        let listener =
            std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener,
            addr,
            acceptor,
            ca_pem: pki.ca_pem,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its CA certificate (PEM): a relay destination's `ca_cert_pem`.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Serves until the future is dropped (or the listener fails). Call it inside a tokio
    /// runtime.
    pub async fn run(self) -> Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                // Out of descriptors, a connection reset before accept: keep serving.
                Err(_) => {
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service_fn(answer))
                    .await;
            });
        }
    }

    /// Serves on a runtime of its own, on `threads` threads named [`THREAD_NAME`], until
    /// the returned handle is dropped.
    pub fn spawn_thread(self, threads: usize) -> Result<EchoThread> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()
            .context("starting the echo's runtime")?;
        let addr = self.addr;
        let ca_pem = self.ca_pem.clone();
        let task = rt.spawn(self.run());
        Ok(EchoThread {
            addr,
            ca_pem,
            task,
            rt: Some(rt),
        })
    }
}

/// An echo processor serving on its own runtime; dropping it stops it.
pub struct EchoThread {
    pub addr: SocketAddr,
    pub ca_pem: String,
    task: tokio::task::JoinHandle<Result<()>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for EchoThread {
    fn drop(&mut self) {
        self.task.abort();
        // Not `shutdown_timeout`: this may be dropped inside another runtime, where
        // blocking on the echo's threads is not allowed.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Answers one request with its echo.
async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(plain(413, "request body too large or broken")),
    };
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes());
        match headers.get_mut(name.as_str()) {
            // A repeated header: its values joined, as HTTP allows.
            Some(Value::String(s)) => {
                s.push_str(", ");
                s.push_str(&v);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(v.into_owned()));
            }
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut echo = Map::new();
    echo.insert("method".into(), Value::String(parts.method.as_str().into()));
    echo.insert("path".into(), Value::String(path));
    echo.insert("headers".into(), Value::Object(headers));
    echo.insert(
        "body".into(),
        Value::String(String::from_utf8_lossy(&body).into_owned()),
    );
    let text = Value::Object(echo).to_string();
    let mut res = Response::new(Full::new(Bytes::from(text)));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(res)
}

fn plain(status: u16, text: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{Conn, Target};

    /// A client of `url` that trusts `ca` (PEM) only.
    async fn target(url: &str, ca: &str, http2: bool) -> Target {
        Target::with_ca_pem(url, ca, http2).await.unwrap()
    }

    #[test]
    fn only_loopback() {
        for bad in ["0.0.0.0:0", "10.0.0.1:9443", "[::]:0"] {
            let err = EchoProcessor::bind(bad.parse().unwrap()).err().unwrap();
            assert!(err.to_string().contains("loopback only"), "{bad}: {err}");
        }
    }

    /// A real HTTPS request, over HTTP/1.1 and HTTP/2, verified against the echo's CA.
    #[tokio::test]
    async fn echoes_a_request_over_tls() {
        let echo = EchoProcessor::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = echo.local_addr();
        let ca = echo.ca_pem().to_owned();
        assert!(ca.contains("BEGIN CERTIFICATE"));
        let server = tokio::spawn(echo.run());
        for http2 in [false, true] {
            let url = format!("https://127.0.0.1:{}", addr.port());
            let target = Arc::new(target(&url, &ca, http2).await);
            let auth = HeaderValue::from_static("Bearer x");
            let req = target
                .request(
                    http::Method::POST,
                    "/v1/charges?x=1",
                    Some(&auth),
                    Some(Bytes::from_static(br#"{"number":"4242424242424242"}"#)),
                )
                .unwrap();
            let (status, body) = Conn::new(target).send(req).await.unwrap();
            assert_eq!(status, 200);
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["method"], "POST");
            assert_eq!(v["path"], "/v1/charges?x=1");
            assert_eq!(v["body"], r#"{"number":"4242424242424242"}"#);
            assert_eq!(v["headers"]["authorization"], "Bearer x");
            assert_eq!(v["headers"]["content-type"], "application/json");
        }
        // Another CA is refused.
        let other = EchoProcessor::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let url = format!("https://127.0.0.1:{}", addr.port());
        let target = Arc::new(target(&url, other.ca_pem(), false).await);
        let req = target.request(http::Method::GET, "/", None, None).unwrap();
        let err = Conn::new(target).send(req).await.unwrap_err();
        assert!(err.contains("TLS"), "{err}");
        server.abort();
    }

    #[test]
    fn runs_on_its_own_thread() {
        let echo = EchoProcessor::bind("127.0.0.1:0".parse().unwrap())
            .unwrap()
            .spawn_thread(1)
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let url = format!("https://127.0.0.1:{}", echo.addr.port());
            let target = Arc::new(target(&url, &echo.ca_pem, false).await);
            let req = target.request(http::Method::GET, "/x", None, None).unwrap();
            let (status, body) = Conn::new(target).send(req).await.unwrap();
            assert_eq!(status, 200);
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["path"], "/x");
            assert_eq!(v["body"], "");
        });
        assert!(crate::procfs::threads_cpu_micros(THREAD_NAME).is_some());
    }
}
