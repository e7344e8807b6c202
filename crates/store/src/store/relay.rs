//! [`crate::relay`]'s trait, implemented for [`Store`], and the relay writes on [`Writes`].

use crate::StoreResult;
use crate::relay::*;
use crate::sql::Write;
use crate::store::{Store, Writes};

impl RelayStore for Store {
    async fn relay_destinations(
        &self,
        account_id: &str,
    ) -> StoreResult<Vec<RelayDestinationRecord>> {
        relay_destinations(&mut self.reader().await?, account_id).await
    }
}

impl Writes<'_> {
    /// Replaces the account's relay destinations with `destinations` (each naming
    /// `account_id`), in one transaction: a reader sees the old list or the new one.
    pub async fn set_relay_destinations(
        self,
        account_id: &str,
        destinations: &[RelayDestinationRecord],
    ) -> StoreResult<()> {
        let op = Op::SetDestinations {
            account_id: account_id.to_owned(),
            destinations: destinations.to_vec(),
        };
        self.write(Write::relay_done(op)).await
    }

    /// Records a relay or an inbound route's forward that ended: its events, and with
    /// them the request's audit record.
    pub async fn record_relay(self, events: Vec<crate::EventRecord>) -> StoreResult<()> {
        let op = Op::Relayed { events };
        self.write(Write::relay_done(op)).await
    }
}
