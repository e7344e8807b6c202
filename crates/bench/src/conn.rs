//! One keep-alive HTTPS connection, driven with hyper's low-level client (`hyper::client::conn`)
//! over tokio-rustls.
//!
//! The load generator runs on the same two cores as the server it measures, so every
//! microsecond it spends is taken from the server. `reqwest` cost several times more CPU per request
//! here (its pool, redirect policy, header maps and per-request futures); a bare hyper
//! connection per worker does the same HTTP and TLS work for much less. What is not here (pooling, redirects, proxies, decompression) the bench never
//! needs: each worker owns exactly one connection and reopens it if it breaks.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where the connections go, and how: shared by every worker.
pub struct Target {
    addr: SocketAddr,
    /// `host[:port]` as given in the base URL (the `Host` header and HTTP/2 `:authority`).
    authority: HeaderValue,
    /// `https://authority` (HTTP/2 needs absolute URIs; HTTP/1.1 sends the path alone).
    origin: String,
    server_name: ServerName<'static>,
    /// `None` for plain `http://` (a TLS-terminating proxy in front of the target).
    tls: Option<TlsConnector>,
    http2: bool,
}

impl Target {
    /// Parses `base` (`https://host:port`), resolves it, and prepares a TLS client that trusts
    /// only the certificates in the file `ca_cert` (PEM), offering `h2` or `http/1.1` by ALPN.
    pub async fn new(base: &str, ca_cert: &str, http2: bool) -> Result<Self> {
        let pem = std::fs::read(ca_cert).with_context(|| format!("reading CA cert {ca_cert}"))?;
        Self::build(base, &pem, ca_cert, http2).await
    }

    /// [`Self::new`] with the CA certificates given as PEM text.
    pub async fn with_ca_pem(base: &str, ca_pem: &str, http2: bool) -> Result<Self> {
        Self::build(base, ca_pem.as_bytes(), "the CA", http2).await
    }

    async fn build(base: &str, ca_pem: &[u8], ca_name: &str, http2: bool) -> Result<Self> {
        let uri: Uri = base.parse().with_context(|| format!("bad url {base}"))?;
        let (Some(scheme), Some(auth)) = (uri.scheme_str(), uri.authority()) else {
            bail!("bad url {base}: needs a scheme and a host");
        };
        let https = match scheme {
            "https" => true,
            "http" => false,
            other => bail!("bad url {base}: unsupported scheme {other}"),
        };
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        let port = auth.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        let server_name =
            ServerName::try_from(host.to_owned()).with_context(|| format!("bad host {host}"))?;
        let tls = if https {
            Some(TlsConnector::from(Arc::new(tls_config(
                ca_pem, ca_name, http2,
            )?)))
        } else {
            None
        };
        Ok(Self {
            addr,
            authority: HeaderValue::from_str(auth.as_str()).context("bad host")?,
            origin: format!("{scheme}://{auth}"),
            server_name,
            tls,
            http2,
        })
    }

    /// A request for `path` with these headers; the body is empty unless given.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        json: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let mut b = Request::builder().method(method);
        b = if self.http2 {
            b.uri(format!("{}{path}", self.origin))
        } else {
            b.uri(path).header(HOST, self.authority.clone())
        };
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a.clone());
        }
        let body = match json {
            Some(j) => {
                b = b.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                j
            }
            None => Bytes::new(),
        };
        b.body(Full::new(body))
            .map_err(|e| format!("building a request: {e}"))
    }
}

fn tls_config(ca_pem: &[u8], ca_name: &str, http2: bool) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.with_context(|| format!("parsing CA cert {ca_name}"))?)
            .context("adding the CA cert")?;
    }
    if roots.is_empty() {
        bail!("{ca_name} holds no certificate");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(cfg)
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One connection, opened on first use and reopened after any failure.
pub struct Conn {
    target: Arc<Target>,
    sender: Option<Sender>,
}

impl Conn {
    pub fn new(target: Arc<Target>) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    async fn open(&self) -> Result<Sender, String> {
        let t = &self.target;
        let tcp = TcpStream::connect(t.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("connect: TCP_NODELAY: {e}"))?;
        match &t.tls {
            Some(tls) => {
                let io = tls
                    .connect(t.server_name.clone(), tcp)
                    .await
                    .map_err(|e| format!("connect: TLS: {e}"))?;
                self.handshake(TokioIo::new(io)).await
            }
            None => self.handshake(TokioIo::new(tcp)).await,
        }
    }

    async fn handshake<I>(&self, io: TokioIo<I>) -> Result<Sender, String>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // The connection task ends when the connection does; an error there shows up as a
        // failed request on the sender, so it is not reported twice.
        if self.target.http2 {
            let (s, c) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("connect: HTTP/2: {e}"))?;
            tokio::spawn(async move { c.await.ok() });
            Ok(Sender::H2(s))
        } else {
            let (s, c) = http1::handshake(io)
                .await
                .map_err(|e| format!("connect: HTTP/1.1: {e}"))?;
            tokio::spawn(async move { c.await.ok() });
            Ok(Sender::H1(s))
        }
    }

    /// Drops the connection (after a timeout, when a request may still be in flight).
    pub fn reset(&mut self) {
        self.sender = None;
    }

    /// Sends `req` and reads the whole response. Any failure drops the connection, so the
    /// next request opens a new one.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let r = self.try_send(req).await;
        if r.is_err() {
            self.sender = None;
        }
        r
    }

    async fn try_send(&mut self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let usable = match &self.sender {
            Some(Sender::H1(s)) => !s.is_closed(),
            Some(Sender::H2(s)) => !s.is_closed(),
            None => false,
        };
        if !usable {
            // Boxed: the connect and TLS handshake future is several times larger than the
            // rest of a request's, and inline it made every request's future that large,
            // copied as the request started (`memmove` then showed in the client's profile).
            self.sender = Some(Box::pin(self.open()).await?);
        }
        let res = match &mut self.sender {
            Some(Sender::H1(s)) => {
                s.ready().await.map_err(|e| format!("request: {e}"))?;
                s.send_request(req).await
            }
            Some(Sender::H2(s)) => {
                s.ready().await.map_err(|e| format!("request: {e}"))?;
                s.send_request(req).await
            }
            None => return Err("request: no connection".into()),
        }
        .map_err(|e| format!("request: {e}"))?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading body: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}
