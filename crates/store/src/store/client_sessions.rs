//! [`crate::client_sessions`]'s trait, implemented for [`Store`], and its writes on
//! [`Writes`].

use crate::client_sessions::*;
use crate::sql::Write;
use crate::store::{Store, Writes};
use crate::{CardRecord, EventRecord, StoreError, StoreResult};

impl ClientSessionStore for Store {
    async fn client_session(&self, id: &str) -> StoreResult<Option<ClientSessionRecord>> {
        client_session(&mut self.reader().await?, id).await
    }

    async fn client_session_cards(&self, id: &str) -> StoreResult<Vec<String>> {
        client_session_cards(&mut self.reader().await?, id).await
    }
}

/// A reply of another kind than the write asked for: a bug of this module.
fn unexpected() -> StoreError {
    StoreError::Corrupt("unexpected reply to a client session write".into())
}

impl Writes<'_> {
    /// Stores a new client session.
    pub async fn insert_client_session(self, session: &ClientSessionRecord) -> StoreResult<()> {
        let op = Op::Insert(session.clone());
        self.write(Write::client_session(op)).await.map(drop)
    }

    /// Collects a card through a session, if it is still open at `now_ms`: claims one of
    /// its slots, inserts the card as [`Writes::insert_card`] does (with its events), and
    /// links the card (new or vaulted before) to the session, all in one transaction.
    pub async fn collect_card(
        self,
        session_id: &str,
        now_ms: i64,
        card: &CardRecord,
        dedup: &[(i64, Vec<u8>)],
        events: &[EventRecord],
    ) -> StoreResult<Collected> {
        let op = Op::Collect {
            session_id: session_id.to_owned(),
            now_ms,
            card: card.clone(),
            dedup: dedup.to_vec(),
            events: events.to_vec(),
        };
        self.write(Write::client_session(op))
            .await?
            .ok_or_else(unexpected)
    }
}
