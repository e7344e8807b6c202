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

use crate::cache::{Cache, CacheSync};
use crate::config::RelayConfig;
use crate::service::egress;
use crate::service::{Result, ServiceError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
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

/// Accounts whose destination lists are kept at most.
const MAX_ACCOUNTS: usize = 10_000;

/// An approved destination as the relay keeps it between sends: its record, and the
/// client it sends with once the first send has looked it up (a clone of the
/// client, which shares its connection pool).
#[derive(Debug)]
pub struct Destination {
    /// The destination as stored.
    pub record: RelayDestinationRecord,
    client: OnceLock<reqwest::Client>,
}

impl std::ops::Deref for Destination {
    type Target = RelayDestinationRecord;

    fn deref(&self) -> &RelayDestinationRecord {
        &self.record
    }
}

/// The relay's clients, by destination, and each account's destinations: read on every
/// send, so kept in memory like the gateway's account controls, lapsing with the same
/// [`CacheSync`] generation (a change on any node moves it on PostgreSQL; on SQLite the
/// node that changes a list forgets it).
pub struct RelayClients {
    clients: Mutex<HashMap<Key, reqwest::Client>>,
    destinations: Cache<String, Arc<Vec<Arc<Destination>>>>,
}

impl RelayClients {
    /// Destination lists live at most `ttl` (zero: not cached).
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            destinations: Cache::new(ttl, MAX_ACCOUNTS),
        }
    }

    /// The account's destinations, from memory or else from `load` (the store).
    pub async fn destinations<F>(
        &self,
        sync: &CacheSync,
        account_id: &str,
        now_ms: i64,
        load: F,
    ) -> Result<Arc<Vec<Arc<Destination>>>>
    where
        F: std::future::Future<Output = Result<Vec<RelayDestinationRecord>>>,
    {
        if let Some(list) = self.destinations.get(sync, account_id, now_ms) {
            return Ok(list);
        }
        let epoch = self.destinations.epoch(sync);
        let list: Arc<Vec<Arc<Destination>>> = Arc::new(
            load.await?
                .into_iter()
                .map(|record| {
                    Arc::new(Destination {
                        record,
                        client: OnceLock::new(),
                    })
                })
                .collect(),
        );
        self.destinations
            .put(sync, account_id.to_owned(), list.clone(), now_ms, epoch);
        Ok(list)
    }

    /// Forgets the account's destinations after this node changed them.
    pub fn forget_destinations(&self, sync: &CacheSync, account_id: &str) {
        self.destinations.forget(sync, account_id);
    }

    /// The client of a destination: the one it already holds, or the shared one for
    /// its host, port, trust anchors and loopback allowance (built on first use).
    pub fn client_of(
        &self,
        config: &RelayConfig,
        destination: &Destination,
        loopback: bool,
    ) -> Result<reqwest::Client> {
        if let Some(c) = destination.client.get() {
            return Ok(c.clone());
        }
        let c = self.get(config, &destination.record, loopback)?;
        Ok(destination.client.get_or_init(|| c).clone())
    }

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
