//! The `[pin]` section of the configuration file (PIN service, docs/pin.md).
//!
//! ```toml
//! [pin]
//! max_failures = 3                  # failures before a PIN locks, for accounts that set none (1-10)
//! deny_list = ["1212", "2580"]      # replaces the built-in list of PINs refused as too weak
//! transport_grace_secs = 86400      # how long a replaced transport key still decrypts
//! ```

use anyhow::{Result, bail};
use serde::Deserialize;
use std::time::Duration;
use strongroom_server::ServerConfig;

/// `[pin]`. Unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinSection {
    pub max_failures: Option<i64>,
    pub deny_list: Option<Vec<String>>,
    pub transport_grace_secs: Option<u64>,
}

impl PinSection {
    /// Checks the section and applies it to the server's configuration.
    pub fn apply(&self, server: &mut ServerConfig) -> Result<()> {
        if let Some(n) = self.max_failures {
            if !(1..=10).contains(&n) {
                bail!("[pin] max_failures must be between 1 and 10");
            }
            server.pin_max_failures = n;
        }
        if let Some(list) = &self.deny_list {
            if list
                .iter()
                .any(|p| !(4..=12).contains(&p.len()) || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                bail!("[pin] deny_list entries must be 4 to 12 digits");
            }
            server.pin_deny_list = list.clone();
        }
        if let Some(s) = self.transport_grace_secs {
            server.pin_transport_grace = Duration::from_secs(s);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::server;

    #[test]
    fn applies_and_validates() {
        let mut s = server();
        let sec: PinSection =
            toml::from_str("max_failures = 5\ndeny_list = [\"2580\"]\ntransport_grace_secs = 60")
                .unwrap();
        sec.apply(&mut s).unwrap();
        assert_eq!(s.pin_max_failures, 5);
        assert_eq!(s.pin_deny_list, vec!["2580".to_owned()]);
        assert_eq!(s.pin_transport_grace, Duration::from_secs(60));
        for bad in [
            "max_failures = 0",
            "max_failures = 11",
            "deny_list = [\"12a4\"]",
            "deny_list = [\"123\"]",
        ] {
            let sec: PinSection = toml::from_str(bad).unwrap();
            assert!(sec.apply(&mut server()).is_err(), "{bad}");
        }
        assert!(toml::from_str::<PinSection>("lockout = 3").is_err());
    }
}
