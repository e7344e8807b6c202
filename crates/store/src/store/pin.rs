//! [`crate::pin`]'s trait, implemented for [`Store`], and the PIN writes on [`Writes`].

use crate::sql::Write;
use crate::store::{Store, Writes};
use crate::{EventRecord, Mode, StoreResult};

use crate::pin::*;

impl PinStore for Store {
    async fn pin_transport_keys(&self) -> StoreResult<Vec<TransportKeyRecord>> {
        pin_transport_keys(&mut self.reader().await?).await
    }

    async fn get_pin(
        &self,
        account_id: &str,
        mode: Mode,
        card_id: &str,
    ) -> StoreResult<Option<PinRecord>> {
        get_pin(&mut self.reader().await?, account_id, mode, card_id).await
    }

    async fn pin_owner(&self, card_id: &str) -> StoreResult<Option<(String, Mode)>> {
        pin_owner(&mut self.reader().await?, card_id).await
    }

    async fn pin_max_failures(&self, account_id: &str) -> StoreResult<Option<i64>> {
        pin_max_failures(&mut self.reader().await?, account_id).await
    }

    async fn pins_for_rewrap(
        &self,
        account_id: &str,
        below_version: i64,
        limit: i64,
    ) -> StoreResult<Vec<PinRecord>> {
        pins_for_rewrap(&mut self.reader().await?, account_id, below_version, limit).await
    }
}

impl Writes<'_> {
    /// Adds a transport key; every older key still without an end (or ending later)
    /// now ends at `retire_others_after_ms`.
    pub async fn insert_pin_transport_key(
        self,
        key: &TransportKeyRecord,
        retire_others_after_ms: i64,
    ) -> StoreResult<()> {
        self.write(Write::pin_done(Op::InsertTransportKey {
            key: key.clone(),
            retire_others_after_ms,
        }))
        .await
    }

    /// Sets the account's lockout threshold.
    pub async fn set_pin_max_failures(
        self,
        account_id: &str,
        max_failures: i64,
    ) -> StoreResult<()> {
        self.write(Write::pin_done(Op::SetMaxFailures {
            account_id: account_id.to_owned(),
            max_failures,
        }))
        .await
    }

    /// Records a payload id as spent until `expires_ms` (and forgets ids expired at
    /// `now_ms`). False if it was already spent.
    pub async fn spend_pin_jti(
        self,
        account_id: &str,
        jti: &str,
        expires_ms: i64,
        now_ms: i64,
    ) -> StoreResult<bool> {
        self.write(Write::pin_flag(Op::SpendJti {
            account_id: account_id.to_owned(),
            jti: jti.to_owned(),
            expires_ms,
            now_ms,
        }))
        .await
    }

    /// Spends the OTP and sets the PIN in one transaction. `events` are written when it
    /// is done; `unlocked_event` too when a reset unlocked a locked PIN.
    pub async fn set_pin(
        self,
        pin: &PinRecord,
        kind: SetKind,
        otp: &SpendOtp,
        events: &[EventRecord],
        unlocked_event: Option<&EventRecord>,
    ) -> StoreResult<PinOutcome> {
        self.write(Write::pin_outcome(Op::Set {
            pin: pin.clone(),
            kind,
            otp: otp.clone(),
            events: events.to_vec(),
            unlocked_event: unlocked_event.cloned(),
        }))
        .await
    }

    /// Records the outcome of a comparison against the stored PIN `seen` (read before the
    /// comparison). Success resets the counter; failure counts one, writes `failed_events`
    /// and, if it reaches `max_failures`, locks and writes `locked_event` too. Refused
    /// with `Locked` if the PIN was locked meanwhile, `Changed` if it changed.
    pub async fn record_pin_attempt(
        self,
        seen: &PinRecord,
        success: bool,
        max_failures: i64,
        failed_events: &[EventRecord],
        locked_event: Option<&EventRecord>,
    ) -> StoreResult<PinOutcome> {
        self.write(Write::pin_outcome(Op::Attempt {
            seen: seen.clone(),
            success,
            max_failures,
            failed_events: failed_events.to_vec(),
            locked_event: locked_event.cloned(),
        }))
        .await
    }

    /// Spends the OTP and replaces the PIN `seen` (unchanged and unlocked) with `new`, in
    /// one transaction, writing `events`.
    pub async fn change_pin(
        self,
        seen: &PinRecord,
        new: &PinRecord,
        otp: &SpendOtp,
        events: &[EventRecord],
    ) -> StoreResult<PinOutcome> {
        self.write(Write::pin_outcome(Op::Change {
            seen: seen.clone(),
            new: new.clone(),
            otp: otp.clone(),
            events: events.to_vec(),
        }))
        .await
    }

    /// Clears the lock and the counter. `Done` with the event written if it was locked,
    /// `Changed` if it was not locked (nothing written), `Missing` if there is no PIN.
    pub async fn unlock_pin(
        self,
        account_id: &str,
        mode: Mode,
        card_id: &str,
        now_ms: i64,
        events: &[EventRecord],
    ) -> StoreResult<PinOutcome> {
        self.write(Write::pin_outcome(Op::Unlock {
            account_id: account_id.to_owned(),
            mode,
            card_id: card_id.to_owned(),
            now_ms,
            events: events.to_vec(),
        }))
        .await
    }

    /// Applies re-encipherments in one transaction; each only if the row is unchanged.
    pub async fn rewrap_pins(self, updates: &[PinRewrap]) -> StoreResult<u64> {
        self.write(Write::pin_count(Op::Rewrap {
            updates: updates.to_vec(),
        }))
        .await
    }
}
