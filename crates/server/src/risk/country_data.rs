//! The country data in force (docs/risk.md, "Country data"): the BIN table and the IP
//! database each come from the operator's last upload (kept in the store, so every node
//! loads it), or else from the file the configuration names, or are absent.
//!
//! An upload is checked whole before it is stored, then swapped in on the node that took
//! it; every node checks the stored versions every few seconds and swaps in a newer one.
//! Lookups in flight keep the data they started with ([`Geo`] holds each part behind an
//! `Arc`), so a swap never waits for them and they never see half a table.

use crate::risk::geo::{BinTable, Geo, GeoError, IpCountryDb};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use strongroom_store::{RiskDataInfo, RiskDataStore, Store, StoreResult};

/// How often a node looks for an upload another node took.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Which data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The BIN table.
    BinTable,
    /// The IP country database.
    IpDatabase,
}

impl Part {
    /// Its name in the store and the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Self::BinTable => "bin_table",
            Self::IpDatabase => "ip_database",
        }
    }
}

/// Where a part in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An upload (the store's current one).
    Upload,
    /// The file the configuration names.
    Config,
    /// Nowhere: the signals that need it are absent.
    None,
}

/// What is in force for one part.
#[derive(Debug, Clone)]
pub struct InForce {
    /// Where it came from.
    pub source: Source,
    /// The upload, when it came from one.
    pub upload: Option<RiskDataInfo>,
    /// When this node swapped it in (ms).
    pub loaded_ms: i64,
}

/// A parsed upload, ready to swap in.
pub enum Parsed {
    /// A BIN table.
    Bins(Arc<BinTable>),
    /// An IP database.
    Ips(Arc<IpCountryDb>),
}

/// Parses an upload's bytes as `part` (on the blocking pool: a large IP database takes a
/// while to verify).
pub async fn parse(part: Part, bytes: Vec<u8>) -> Result<Parsed, GeoError> {
    let job = move || match part {
        Part::BinTable => BinTable::parse_csv(&bytes).map(|t| Parsed::Bins(Arc::new(t))),
        Part::IpDatabase => IpCountryDb::from_bytes(bytes).map(|d| Parsed::Ips(Arc::new(d))),
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(r) => r,
        // The parser panicked (a bug): the data is refused, unchecked.
        Err(_) => Err(GeoError::Unchecked),
    }
}

/// The country data in force, swappable.
pub struct CountryData {
    geo: RwLock<Arc<Geo>>,
    parts: Mutex<PerPart<InForce>>,
    /// Upload versions that failed to load here (a later build refusing older data):
    /// not retried on every check.
    refused: Mutex<PerPart<Option<i64>>>,
}

/// One of a thing for each part.
#[derive(Debug, Default)]
struct PerPart<T> {
    bins: T,
    ips: T,
}

impl<T> PerPart<T> {
    fn get(&self, part: Part) -> &T {
        match part {
            Part::BinTable => &self.bins,
            Part::IpDatabase => &self.ips,
        }
    }

    fn of(&mut self, part: Part) -> &mut T {
        match part {
            Part::BinTable => &mut self.bins,
            Part::IpDatabase => &mut self.ips,
        }
    }
}

impl CountryData {
    /// The data the configuration's files gave, at `now_ms`.
    pub fn new(config: Geo, now_ms: i64) -> Self {
        let from = |present: bool| InForce {
            source: if present {
                Source::Config
            } else {
                Source::None
            },
            upload: None,
            loaded_ms: now_ms,
        };
        let parts = PerPart {
            bins: from(config.bins().is_some()),
            ips: from(config.ips().is_some()),
        };
        Self {
            geo: RwLock::new(Arc::new(config)),
            parts: Mutex::new(parts),
            refused: Mutex::new(PerPart::default()),
        }
    }

    /// The data in force now.
    pub fn geo(&self) -> Arc<Geo> {
        self.geo
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// What is in force for `part`.
    pub fn in_force(&self, part: Part) -> InForce {
        let parts = self
            .parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        parts.get(part).clone()
    }

    /// Swaps in an upload unless one as new or newer is in force already (two nodes'
    /// uploads racing end, on every node, with the higher version).
    pub fn install(&self, parsed: Parsed, info: RiskDataInfo, now_ms: i64) {
        let part = match parsed {
            Parsed::Bins(_) => Part::BinTable,
            Parsed::Ips(_) => Part::IpDatabase,
        };
        let mut parts = self
            .parts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = parts.of(part);
        if current
            .upload
            .as_ref()
            .is_some_and(|u| u.version >= info.version)
        {
            return;
        }
        {
            let mut geo = self
                .geo
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let next = match parsed {
                Parsed::Bins(t) => geo.with_bins(Some(t)),
                Parsed::Ips(d) => geo.with_ips(Some(d)),
            };
            *geo = Arc::new(next);
        }
        *current = InForce {
            source: Source::Upload,
            upload: Some(info),
            loaded_ms: now_ms,
        };
    }

    /// Loads any upload newer than what is in force (at start, and on each check).
    pub async fn follow(&self, store: &Store, now_ms: i64) -> StoreResult<()> {
        for part in [Part::BinTable, Part::IpDatabase] {
            let Some(info) = store.risk_data_info(part.name()).await? else {
                continue;
            };
            let have = self.in_force(part).upload.map_or(0, |u| u.version);
            let refused = *self
                .refused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(part);
            if info.version <= have || refused == Some(info.version) {
                continue;
            }
            let Some((info, bytes)) = store.risk_data(part.name()).await? else {
                continue;
            };
            match parse(part, bytes.0).await {
                Ok(parsed) => {
                    tracing::info!(
                        data = part.name(),
                        version = info.version,
                        "loaded the uploaded risk country data"
                    );
                    self.install(parsed, info, now_ms);
                }
                Err(e) => {
                    tracing::warn!(
                        data = part.name(),
                        version = info.version,
                        error = %e,
                        "the uploaded risk country data does not load; keeping what is in force"
                    );
                    *self
                        .refused
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .of(part) = Some(info.version);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: i64) -> RiskDataInfo {
        RiskDataInfo {
            name: "bin_table".into(),
            version,
            sha256: String::new(),
            size_bytes: 0,
            created_by: "admin:key_x".into(),
            created_ms: 0,
        }
    }

    fn bins(csv: &str) -> Parsed {
        Parsed::Bins(Arc::new(BinTable::parse_csv(csv.as_bytes()).unwrap()))
    }

    #[test]
    fn an_upload_wins_over_the_config_and_only_a_newer_one_replaces_it() {
        let config = Geo::new(
            Some(Arc::new(BinTable::parse_csv(b"4242,US\n").unwrap())),
            None,
        );
        let data = CountryData::new(config, 1);
        assert_eq!(data.in_force(Part::BinTable).source, Source::Config);
        assert_eq!(data.in_force(Part::IpDatabase).source, Source::None);
        let held = data.geo();
        data.install(bins("4242,GB\n"), info(2), 5);
        assert_eq!(data.geo().bins().unwrap().country("424242"), Some("GB"));
        // A lookup that started before the swap keeps its table.
        assert_eq!(held.bins().unwrap().country("424242"), Some("US"));
        let now = data.in_force(Part::BinTable);
        assert_eq!((now.source, now.loaded_ms), (Source::Upload, 5));
        // An older version (a slower node's) does not replace it.
        data.install(bins("4242,FR\n"), info(1), 6);
        assert_eq!(data.geo().bins().unwrap().country("424242"), Some("GB"));
        data.install(bins("4242,FR\n"), info(3), 7);
        assert_eq!(data.geo().bins().unwrap().country("424242"), Some("FR"));
    }
}
