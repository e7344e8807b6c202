//! The relay's HTTPS clients: one per destination (host, port, trust anchors, loopback
//! allowance), kept so that connections to a destination are reused (HTTP/1.1
//! keep-alive, HTTP/2 when the destination offers it through ALPN).
//!
//! Every client: TLS 1.2 or 1.3, the certificate verified against the destination's
//! `ca_cert_pem` only, or else the system roots (there is no switch to turn verification
//! off); no redirects; no proxy (the environment's proxy variables are ignored: a proxy
//! would see the card data's destination and the address checks would see the proxy);
//! no cookies; the connect and total timeouts of [`RelayConfig`]. Names are resolved by
//! [`egress::CheckedResolver`] each time a connection is opened, and only checked
//! addresses are handed to the connector, so a connection goes to an address that was
//! checked when it was made.

use crate::config::RelayConfig;
use crate::service::egress;
use crate::service::{Result, ServiceError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use strongroom_store::RelayDestinationRecord;

/// Clients kept at most; past it the cache starts over (connections are reopened).
const MAX_CLIENTS: usize = 1024;

/// What makes two destinations share a client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    host: String,
    port: i64,
    ca_cert_pem: Option<String>,
    loopback: bool,
}

/// The relay's clients, by destination.
#[derive(Default)]
pub struct RelayClients {
    clients: Mutex<HashMap<Key, reqwest::Client>>,
}

impl RelayClients {
    /// The client for `destination` (built on first use).
    pub fn get(
        &self,
        config: &RelayConfig,
        destination: &RelayDestinationRecord,
        loopback: bool,
    ) -> Result<reqwest::Client> {
        let key = Key {
            host: destination.host.clone(),
            port: destination.port,
            ca_cert_pem: destination.ca_cert_pem.clone(),
            loopback,
        };
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let client = build(config, destination.ca_cert_pem.as_deref(), loopback)?;
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }
}

fn build(
    config: &RelayConfig,
    ca_cert_pem: Option<&str>,
    loopback: bool,
) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .no_proxy()
        .https_only(true)
        .tls_version_min(reqwest::tls::Version::TLS_1_2)
        .connect_timeout(config.connect_timeout)
        .timeout(config.timeout)
        .pool_idle_timeout(config.pool_idle_timeout)
        .user_agent("Strongroom-Relay/1")
        .dns_resolver(Arc::new(egress::CheckedResolver { loopback }));
    if let Some(pem) = ca_cert_pem {
        // Checked when the destination was set (`check_ca`): certificates only.
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|_| ServiceError::internal("stored relay CA is not PEM certificates"))?;
        b = b.tls_certs_only(certs);
    }
    b.build()
        .map_err(|e| ServiceError::internal(format_args!("relay client: {e}")))
}
