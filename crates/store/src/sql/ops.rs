//! The writes: what a store method sends its writer ([`WriteOp`]), what comes back
//! ([`WriteReply`]), and [`apply`], which runs one inside a group commit.

use crate::exec::Exec;
use crate::group::Batch;
use crate::sql::{accounts, cards, otps};
use crate::unexpected;
use crate::{
    AccountRecord, ApiKeyRecord, CardRecord, CardRewrap, DataKeyRecord, EventRecord, InsertCard,
    KeyPurpose, Mode, OtpRecord, RetireOutcome, StoreResult,
};

/// A write, owned so that it can travel to the SQLite writer task. Applied by
/// [`apply`] inside a transaction (SQLite: a savepoint of a group commit).
#[derive(Debug)]
pub(crate) enum WriteOp {
    CreateAccount {
        account: AccountRecord,
        data_keys: Vec<DataKeyRecord>,
        events: Vec<EventRecord>,
    },
    UpdateAccount {
        account: AccountRecord,
    },
    InsertApiKey {
        key: ApiKeyRecord,
        events: Vec<EventRecord>,
    },
    RevokeApiKey {
        account_id: Option<String>,
        key_id: String,
        now_ms: i64,
        events: Vec<EventRecord>,
    },
    RotateDataKey {
        new_key: DataKeyRecord,
        events: Vec<EventRecord>,
    },
    RetireDataKey {
        account_id: String,
        purpose: KeyPurpose,
        version: i64,
        now_ms: i64,
    },
    InsertCard {
        card: CardRecord,
        dedup: Vec<(i64, Vec<u8>)>,
        events: Vec<EventRecord>,
    },
    DeleteCard {
        account_id: String,
        mode: Mode,
        id: String,
        events: Vec<EventRecord>,
    },
    RenewCardExpiry {
        account_id: String,
        mode: Mode,
        id: String,
        exp_month: i64,
        exp_year: i64,
        events: Vec<EventRecord>,
    },
    RewrapCards {
        updates: Vec<CardRewrap>,
    },
    InsertOtp {
        otp: OtpRecord,
        events: Vec<EventRecord>,
    },
    OtpFail {
        id: String,
    },
    OtpConsume {
        id: String,
        now_ms: i64,
        max_attempts: i64,
        events: Vec<EventRecord>,
    },
    Controls(crate::controls::Op),
    Pin(crate::pin::Op),
    Audit(crate::audit::Op),
    Tokens(crate::tokens::Op),
    Webhook(crate::webhooks::Op),
}

/// What a [`WriteOp`] returns.
#[derive(Debug)]
pub(crate) enum WriteReply {
    Done,
    Flag(bool),
    Count(i64),
    ApiKey(Option<ApiKeyRecord>),
    Card(InsertCard),
    Renewed(Option<CardRecord>),
    Retire(RetireOutcome),
    Controls(crate::controls::Reply),
    Pin(crate::pin::Reply),
    Audit(crate::audit::Reply),
    Webhook(crate::webhooks::Reply),
}

impl WriteReply {
    pub(crate) fn done(self) -> StoreResult<()> {
        match self {
            Self::Done => Ok(()),
            _ => Err(unexpected()),
        }
    }
    pub(crate) fn flag(self) -> StoreResult<bool> {
        match self {
            Self::Flag(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
    pub(crate) fn count(self) -> StoreResult<i64> {
        match self {
            Self::Count(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
    pub(crate) fn api_key(self) -> StoreResult<Option<ApiKeyRecord>> {
        match self {
            Self::ApiKey(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
    pub(crate) fn card(self) -> StoreResult<InsertCard> {
        match self {
            Self::Card(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
    pub(crate) fn renewed(self) -> StoreResult<Option<CardRecord>> {
        match self {
            Self::Renewed(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
    pub(crate) fn retire(self) -> StoreResult<RetireOutcome> {
        match self {
            Self::Retire(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }
}

/// Applies one write of the group commit `b` on a connection that is inside the batch's
/// transaction. On error the caller rolls back (the transaction, or the op's savepoint).
pub(crate) async fn apply<C: Exec>(
    c: &mut C,
    b: &mut Batch,
    op: &WriteOp,
) -> StoreResult<WriteReply> {
    Ok(match op {
        WriteOp::CreateAccount {
            account,
            data_keys,
            events,
        } => {
            accounts::create_account(c, account, data_keys, events).await?;
            WriteReply::Done
        }
        WriteOp::UpdateAccount { account } => {
            WriteReply::Flag(accounts::update_account(c, account).await?)
        }
        WriteOp::InsertApiKey { key, events } => {
            accounts::insert_api_key(c, key, events).await?;
            WriteReply::Done
        }
        WriteOp::RevokeApiKey {
            account_id,
            key_id,
            now_ms,
            events,
        } => WriteReply::ApiKey(
            accounts::revoke_api_key(c, account_id.as_deref(), key_id, *now_ms, events).await?,
        ),
        WriteOp::RotateDataKey { new_key, events } => {
            accounts::rotate_data_key(c, new_key, events).await?;
            WriteReply::Done
        }
        WriteOp::RetireDataKey {
            account_id,
            purpose,
            version,
            now_ms,
        } => WriteReply::Retire(
            accounts::retire_data_key(c, account_id, *purpose, *version, *now_ms).await?,
        ),
        WriteOp::InsertCard {
            card,
            dedup,
            events,
        } => WriteReply::Card(cards::insert_card(c, b, card, dedup, events).await?),
        WriteOp::DeleteCard {
            account_id,
            mode,
            id,
            events,
        } => WriteReply::Flag(cards::delete_card(c, account_id, *mode, id, events).await?),
        WriteOp::RenewCardExpiry {
            account_id,
            mode,
            id,
            exp_month,
            exp_year,
            events,
        } => {
            let expiry = (*exp_month, *exp_year);
            WriteReply::Renewed(
                cards::renew_card_expiry(c, account_id, *mode, id, expiry, events).await?,
            )
        }
        WriteOp::RewrapCards { updates } => {
            let applied = cards::rewrap_cards(c, updates).await?;
            WriteReply::Count(i64::try_from(applied).unwrap_or(i64::MAX))
        }
        WriteOp::InsertOtp { otp, events } => {
            otps::insert_otp(c, otp, events).await?;
            WriteReply::Done
        }
        WriteOp::OtpFail { id } => WriteReply::Count(otps::otp_fail(c, id).await?),
        WriteOp::OtpConsume {
            id,
            now_ms,
            max_attempts,
            events,
        } => WriteReply::Flag(otps::otp_consume(c, id, *now_ms, *max_attempts, events).await?),
        WriteOp::Controls(op) => WriteReply::Controls(crate::controls::apply(c, op).await?),
        WriteOp::Pin(op) => WriteReply::Pin(crate::pin::apply(c, op).await?),
        WriteOp::Audit(op) => crate::audit::apply(c, b, op).await?,
        WriteOp::Tokens(op) => crate::tokens::apply(c, op)
            .await?
            .map_or(WriteReply::Done, WriteReply::Count),
        WriteOp::Webhook(op) => WriteReply::Webhook(crate::webhooks::apply(c, op).await?),
    })
}
