//! [`crate::inbound_routes`]'s trait, implemented for [`Store`], and its writes on
//! [`Writes`].

use crate::StoreResult;
use crate::inbound_routes::*;
use crate::sql::Write;
use crate::store::{Store, Writes};
use strongroom_core::Mode;

impl InboundRouteStore for Store {
    async fn inbound_route(&self, id: &str) -> StoreResult<Option<InboundRouteRecord>> {
        inbound_route(&mut self.reader().await?, id).await
    }

    async fn inbound_routes(
        &self,
        account_id: &str,
        mode: Mode,
    ) -> StoreResult<Vec<InboundRouteRecord>> {
        inbound_routes(&mut self.reader().await?, account_id, mode).await
    }
}

impl Writes<'_> {
    /// Stores a new inbound route.
    pub async fn insert_inbound_route(self, route: &InboundRouteRecord) -> StoreResult<()> {
        let op = Op::Insert(route.clone());
        self.write(Write::inbound_route(op)).await.map(|_| ())
    }

    /// Deletes the account's route in this mode; `false` if it has none by that id.
    pub async fn delete_inbound_route(
        self,
        id: &str,
        account_id: &str,
        mode: Mode,
    ) -> StoreResult<bool> {
        let op = Op::Delete {
            id: id.to_owned(),
            account_id: account_id.to_owned(),
            mode,
        };
        self.write(Write::inbound_route(op)).await
    }
}
