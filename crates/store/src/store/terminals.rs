//! [`crate::terminals`]'s trait, implemented for [`Store`], and its writes on [`Writes`].

use crate::StoreResult;
use crate::sql::Write;
use crate::store::{Store, Writes};
use crate::terminals::*;
use strongroom_core::Mode;

impl TerminalStore for Store {
    async fn terminal(&self, id: &str) -> StoreResult<Option<TerminalRecord>> {
        terminal(&mut self.reader().await?, id).await
    }

    async fn terminals(&self, account_id: &str, mode: Mode) -> StoreResult<Vec<TerminalRecord>> {
        terminals(&mut self.reader().await?, account_id, mode).await
    }

    async fn terminal_with_bdk(
        &self,
        id: &str,
    ) -> StoreResult<Option<(TerminalRecord, crate::ImportedKeyRecord)>> {
        terminal_with_bdk(&mut self.reader().await?, id).await
    }
}

impl Writes<'_> {
    /// Registers a terminal; `Conflict` when its device is already registered under the
    /// same BDK.
    pub async fn insert_terminal(self, terminal: &TerminalRecord) -> StoreResult<()> {
        let op = Op::Insert(terminal.clone());
        self.write(Write::terminal(op)).await.map(drop)
    }

    /// Disables a terminal; `false` if it was already disabled.
    pub async fn disable_terminal(self, id: &str, now_ms: i64) -> StoreResult<bool> {
        let op = Op::Disable {
            id: id.to_owned(),
            now_ms,
        };
        self.write(Write::terminal(op)).await
    }

    /// Moves the terminal's card-data counter to `counter` and inserts `card` (or finds
    /// it, as [`Writes::insert_card`] does) in one transaction: `Refused`, and nothing
    /// written, when the counter does not move forward or the terminal is disabled.
    pub async fn tokenize_at_terminal(
        self,
        id: &str,
        counter: i64,
        card: &crate::CardRecord,
        dedup: &[(i64, Vec<u8>)],
        events: &[crate::EventRecord],
    ) -> StoreResult<crate::Collected> {
        let op = CardOp {
            id: id.to_owned(),
            counter,
            card: card.clone(),
            dedup: dedup.to_vec(),
            events: events.to_vec(),
        };
        self.write(Write::terminal_card(op))
            .await?
            .ok_or_else(|| crate::StoreError::Corrupt("terminal card write replied nothing".into()))
    }

    /// Accepts `counter` for the terminal's card data, or its PIN blocks (`pin`):
    /// `false` when it does not move forward (a replay) or the terminal is disabled, and
    /// nothing was written.
    pub async fn advance_terminal(self, id: &str, counter: i64, pin: bool) -> StoreResult<bool> {
        let op = Op::Advance {
            id: id.to_owned(),
            counter,
            pin,
        };
        self.write(Write::terminal(op)).await
    }
}
