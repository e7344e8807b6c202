//! The writes: what a store method sends its writer ([`WriteOp`]), what comes back
//! ([`WriteReply`]), and [`apply`], which runs one inside a group commit. Here too,
//! because they are part of one write: the audit wrapper that carries a write's records
//! ([`AuditOp`], [`attach`], [`flush_audit`]) and what a write shares with its group
//! commit ([`Batch`]). The group commit ([`crate::group`]) runs them; the records, their
//! SQL and the request scope stay in [`crate::audit`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::audit::{
    AuditCheckpoint, AuditRecord, AuditScope, HashFn, Head, INSERT_CHECKPOINT, PROBE, append,
};
use crate::exec::{Exec, args};
use crate::sql::cards::NewCard;
use crate::sql::{accounts, cards, otps};
use crate::{
    AccountRecord, ApiKeyRecord, CardRecord, CardRewrap, DataKeyRecord, EventRecord, InsertCard,
    KeyPurpose, Mode, OtpRecord, RetireOutcome, StoreError, StoreResult,
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
    Relay(crate::relay::Op),
    InboundRoute(crate::inbound_routes::Op),
    Terminal(crate::terminals::Op),
    Integrity(crate::integrity::Op),
    TerminalCard(crate::terminals::CardOp),
    ClientSession(crate::client_sessions::Op),
    Suspension(crate::suspensions::Op),
    RiskList(crate::risk_lists::Op),
    RiskData(crate::risk_data::Op),
    Custody(crate::custody::Op),
    KeyImport(crate::key_imports::Op),
    Velocity(crate::velocity::Op),
    Risk(crate::risk::Op),
    Audit(AuditOp),
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
    Collected(Option<crate::Collected>),
    Suspension(Option<crate::SuspensionRecord>),
    RiskList(crate::risk_lists::Reply),
    Renewed(Option<CardRecord>),
    Retire(RetireOutcome),
    Controls(crate::controls::Reply),
    Pin(crate::pin::Reply),
    Audit(AuditReply),
    Webhook(crate::webhooks::Reply),
}

/// A write together with the type of its reply: [`crate::Store::write`] returns that type,
/// so each write says once, here, which kind of [`WriteReply`] it answers with.
pub(crate) struct Write<R> {
    op: WriteOp,
    reply: fn(WriteReply) -> Option<R>,
}

impl<R> Write<R> {
    fn new(op: WriteOp, reply: fn(WriteReply) -> Option<R>) -> Self {
        Self { op, reply }
    }

    /// The op to send, and what reads its reply: a reply of another kind is a bug of
    /// this module, reported here and nowhere else.
    pub(crate) fn split(self) -> (WriteOp, impl FnOnce(WriteReply) -> StoreResult<R>) {
        let reply = self.reply;
        (self.op, move |r| reply(r).ok_or_else(unexpected))
    }
}

/// The writer answered with a reply of another kind than the write asked for: a bug of
/// the constructors below, never a database state.
fn unexpected() -> StoreError {
    StoreError::Corrupt("unexpected reply from the writer".into())
}

fn done(r: WriteReply) -> Option<()> {
    matches!(r, WriteReply::Done).then_some(())
}
fn flag(r: WriteReply) -> Option<bool> {
    match r {
        WriteReply::Flag(v) => Some(v),
        _ => None,
    }
}
fn count(r: WriteReply) -> Option<i64> {
    match r {
        WriteReply::Count(v) => Some(v),
        _ => None,
    }
}

impl Write<()> {
    pub(crate) fn create_account(
        account: AccountRecord,
        data_keys: Vec<DataKeyRecord>,
        events: Vec<EventRecord>,
    ) -> Self {
        let op = WriteOp::CreateAccount {
            account,
            data_keys,
            events,
        };
        Self::new(op, done)
    }
    pub(crate) fn insert_api_key(key: ApiKeyRecord, events: Vec<EventRecord>) -> Self {
        Self::new(WriteOp::InsertApiKey { key, events }, done)
    }
    pub(crate) fn rotate_data_key(new_key: DataKeyRecord, events: Vec<EventRecord>) -> Self {
        Self::new(WriteOp::RotateDataKey { new_key, events }, done)
    }
    pub(crate) fn relay_done(op: crate::relay::Op) -> Self {
        Self::new(WriteOp::Relay(op), done)
    }
    pub(crate) fn insert_otp(otp: OtpRecord, events: Vec<EventRecord>) -> Self {
        Self::new(WriteOp::InsertOtp { otp, events }, done)
    }
    pub(crate) fn insert_jwt_key(key: crate::tokens::JwtKeyRecord, erase_below: i64) -> Self {
        let op = crate::tokens::Op::InsertJwtKey { key, erase_below };
        Self::new(WriteOp::Tokens(op), done)
    }
}

impl Write<bool> {
    pub(crate) fn inbound_route(op: crate::inbound_routes::Op) -> Self {
        Self::new(WriteOp::InboundRoute(op), flag)
    }
    pub(crate) fn terminal(op: crate::terminals::Op) -> Self {
        Self::new(WriteOp::Terminal(op), flag)
    }
    pub(crate) fn integrity(op: crate::integrity::Op) -> Self {
        Self::new(WriteOp::Integrity(op), flag)
    }
    pub(crate) fn update_account(account: AccountRecord) -> Self {
        Self::new(WriteOp::UpdateAccount { account }, flag)
    }
    pub(crate) fn delete_card(
        account_id: String,
        mode: Mode,
        id: String,
        events: Vec<EventRecord>,
    ) -> Self {
        let op = WriteOp::DeleteCard {
            account_id,
            mode,
            id,
            events,
        };
        Self::new(op, flag)
    }
    pub(crate) fn otp_consume(
        id: String,
        now_ms: i64,
        max_attempts: i64,
        events: Vec<EventRecord>,
    ) -> Self {
        let op = WriteOp::OtpConsume {
            id,
            now_ms,
            max_attempts,
            events,
        };
        Self::new(op, flag)
    }
}

impl Write<i64> {
    pub(crate) fn rewrap_cards(updates: Vec<CardRewrap>) -> Self {
        Self::new(WriteOp::RewrapCards { updates }, count)
    }
    pub(crate) fn otp_fail(id: String) -> Self {
        Self::new(WriteOp::OtpFail { id }, count)
    }
    /// The count of revoked keys, or -1 when the account is unknown.
    pub(crate) fn revoke_all_api_keys(
        account_id: String,
        now_ms: i64,
        events: Vec<EventRecord>,
    ) -> Self {
        let op = crate::tokens::Op::RevokeAll {
            account_id,
            now_ms,
            events,
        };
        Self::new(WriteOp::Tokens(op), count)
    }
}

impl Write<Option<ApiKeyRecord>> {
    pub(crate) fn revoke_api_key(
        account_id: Option<String>,
        key_id: String,
        now_ms: i64,
        events: Vec<EventRecord>,
    ) -> Self {
        let op = WriteOp::RevokeApiKey {
            account_id,
            key_id,
            now_ms,
            events,
        };
        Self::new(op, |r| match r {
            WriteReply::ApiKey(v) => Some(v),
            _ => None,
        })
    }
}

impl Write<RetireOutcome> {
    pub(crate) fn retire_data_key(
        account_id: String,
        purpose: KeyPurpose,
        version: i64,
        now_ms: i64,
    ) -> Self {
        let op = WriteOp::RetireDataKey {
            account_id,
            purpose,
            version,
            now_ms,
        };
        Self::new(op, |r| match r {
            WriteReply::Retire(v) => Some(v),
            _ => None,
        })
    }
}

impl Write<InsertCard> {
    pub(crate) fn insert_card(
        card: CardRecord,
        dedup: Vec<(i64, Vec<u8>)>,
        events: Vec<EventRecord>,
    ) -> Self {
        let op = WriteOp::InsertCard {
            card,
            dedup,
            events,
        };
        Self::new(op, |r| match r {
            WriteReply::Card(v) => Some(v),
            _ => None,
        })
    }
}

impl Write<i64> {
    pub(crate) fn risk(op: crate::risk::Op) -> Self {
        Self::new(WriteOp::Risk(op), count)
    }
}

impl Write<Option<crate::SuspensionRecord>> {
    pub(crate) fn suspension(op: crate::suspensions::Op) -> Self {
        Self::new(WriteOp::Suspension(op), |r| match r {
            WriteReply::Suspension(v) => Some(v),
            _ => None,
        })
    }
}

impl Write<bool> {
    pub(crate) fn risk_data(op: crate::risk_data::Op) -> Self {
        Self::new(WriteOp::RiskData(op), |r| match r {
            WriteReply::Flag(v) => Some(v),
            _ => None,
        })
    }
}

impl Write<bool> {
    pub(crate) fn custody(op: crate::custody::Op) -> Self {
        Self::new(WriteOp::Custody(op), |r| match r {
            WriteReply::Count(v) => Some(v > 0),
            _ => None,
        })
    }
}

impl Write<u64> {
    pub(crate) fn key_import(op: crate::key_imports::Op) -> Self {
        Self::new(WriteOp::KeyImport(op), |r| match r {
            WriteReply::Count(v) => u64::try_from(v).ok(),
            _ => None,
        })
    }

    pub(crate) fn custody_count(op: crate::custody::Op) -> Self {
        Self::new(WriteOp::Custody(op), |r| match r {
            WriteReply::Count(v) => u64::try_from(v).ok(),
            _ => None,
        })
    }
}

impl Write<()> {
    pub(crate) fn velocity(op: crate::velocity::Op) -> Self {
        Self::new(WriteOp::Velocity(op), |r| match r {
            WriteReply::Done => Some(()),
            _ => None,
        })
    }
}

impl Write<crate::risk_lists::Reply> {
    pub(crate) fn risk_list(op: crate::risk_lists::Op) -> Self {
        Self::new(WriteOp::RiskList(op), |r| match r {
            WriteReply::RiskList(v) => Some(v),
            _ => None,
        })
    }
}

impl Write<Option<crate::Collected>> {
    pub(crate) fn client_session(op: crate::client_sessions::Op) -> Self {
        Self::new(WriteOp::ClientSession(op), |r| match r {
            WriteReply::Collected(v) => Some(v),
            _ => None,
        })
    }

    pub(crate) fn terminal_card(op: crate::terminals::CardOp) -> Self {
        Self::new(WriteOp::TerminalCard(op), |r| match r {
            WriteReply::Collected(v) => Some(v),
            _ => None,
        })
    }
}

impl Write<Option<CardRecord>> {
    pub(crate) fn renew_card_expiry(
        account_id: String,
        mode: Mode,
        id: String,
        (exp_month, exp_year): (i64, i64),
        events: Vec<EventRecord>,
    ) -> Self {
        let op = WriteOp::RenewCardExpiry {
            account_id,
            mode,
            id,
            exp_month,
            exp_year,
            events,
        };
        Self::new(op, |r| match r {
            WriteReply::Renewed(v) => Some(v),
            _ => None,
        })
    }
}

// The domain modules' writes answer with their own reply enums: one constructor per
// kind of reply, named `DOMAIN_KIND`.
macro_rules! domain_writes {
    ($($name:ident: $variant:ident($op:ty) -> $r:ty = $reply:pat => $val:expr;)*) => {
        $(impl Write<$r> {
            pub(crate) fn $name(op: $op) -> Self {
                Self::new(WriteOp::$variant(op), |r| match r {
                    WriteReply::$variant($reply) => Some($val),
                    _ => None,
                })
            }
        })*
    };
}

use crate::controls::Reply as C;
use crate::pin::Reply as P;
use crate::webhooks::Reply as W;

domain_writes! {
    controls_done: Controls(crate::controls::Op) -> () = C::Done => ();
    controls_flag: Controls(crate::controls::Op) -> bool = C::Flag(v) => v;
    controls_controls: Controls(crate::controls::Op) -> crate::AccountControls = C::Controls(v) => v;
    controls_signing_key: Controls(crate::controls::Op) -> Option<crate::SigningKeyRecord> =
        C::SigningKey(v) => v;
    controls_idem: Controls(crate::controls::Op) -> crate::IdempotencyBegin = C::Idem(v) => v;
    pin_done: Pin(crate::pin::Op) -> () = P::Done => ();
    pin_flag: Pin(crate::pin::Op) -> bool = P::Flag(v) => v;
    pin_count: Pin(crate::pin::Op) -> u64 = P::Count(v) => v;
    pin_outcome: Pin(crate::pin::Op) -> crate::PinOutcome = P::Outcome(v) => v;
    audit_head: Audit(AuditOp) -> i64 = AuditReply::Head(v) => v;
    audit_stored: Audit(AuditOp) -> bool = AuditReply::Stored(v) => v;
    webhook_done: Webhook(crate::webhooks::Op) -> () = W::Done => ();
    webhook_flag: Webhook(crate::webhooks::Op) -> bool = W::Flag(v) => v;
    webhook_count: Webhook(crate::webhooks::Op) -> u64 = W::Count(v) => v;
    webhook_deliveries: Webhook(crate::webhooks::Op) -> Vec<crate::webhooks::DeliveryRecord> =
        W::Deliveries(v) => v;
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
        } => WriteReply::Card(cards::insert_card(c, b.bulk_card(), card, dedup, events).await?),
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
        WriteOp::Relay(op) => {
            crate::relay::apply(c, op).await?;
            WriteReply::Done
        }
        WriteOp::InboundRoute(op) => WriteReply::Flag(crate::inbound_routes::apply(c, op).await?),
        WriteOp::Terminal(op) => WriteReply::Flag(crate::terminals::apply(c, op).await?),
        WriteOp::Integrity(op) => WriteReply::Flag(crate::integrity::apply(c, op).await?),
        WriteOp::TerminalCard(op) => {
            WriteReply::Collected(Some(crate::terminals::tokenize(c, op).await?))
        }
        WriteOp::Risk(op) => {
            let n = crate::risk::apply(c, op).await?;
            WriteReply::Count(i64::try_from(n).unwrap_or(i64::MAX))
        }
        WriteOp::Suspension(op) => WriteReply::Suspension(crate::suspensions::apply(c, op).await?),
        WriteOp::RiskList(op) => WriteReply::RiskList(crate::risk_lists::apply(c, op).await?),
        WriteOp::RiskData(op) => WriteReply::Flag(crate::risk_data::apply(c, op).await?),
        WriteOp::KeyImport(op) => {
            let n = crate::key_imports::apply(c, op).await?;
            WriteReply::Count(i64::try_from(n).unwrap_or(i64::MAX))
        }
        WriteOp::Custody(op) => {
            let n = crate::custody::apply(c, op).await?;
            WriteReply::Count(i64::try_from(n).unwrap_or(i64::MAX))
        }
        WriteOp::Velocity(op) => {
            crate::velocity::apply(c, op).await?;
            WriteReply::Done
        }
        WriteOp::ClientSession(op) => {
            WriteReply::Collected(crate::client_sessions::apply(c, op).await?)
        }
        WriteOp::Audit(op) => apply_audit(c, b, op).await?,
        WriteOp::Tokens(op) => crate::tokens::apply(c, op)
            .await?
            .map_or(WriteReply::Done, WriteReply::Count),
        WriteOp::Webhook(op) => WriteReply::Webhook(crate::webhooks::apply(c, op).await?),
    })
}

/// What the write being applied shares with the rest of its group commit: the audit
/// records that wait for the batch's one append ([`flush_audit`]), and the outcomes of
/// card inserts already made for the whole batch in one statement.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Index in the batch of the write being applied.
    pub(crate) current: usize,
    pub(crate) deferred: Vec<Deferred>,
    /// The outcomes of the card inserts made in one statement, by batch index.
    pub(crate) cards: Vec<Option<InsertCard>>,
    /// The audit head, where opening the transaction read it ([`Exec::begin`]).
    pub(crate) head: Option<Head>,
}

impl Batch {
    /// Leaves the audit records of the write being applied to the batch, which appends
    /// every write's records at once before `COMMIT`. `carry`: whether the request's own
    /// record goes too.
    pub(crate) fn defer_audit(&mut self, carry: bool) {
        self.deferred.push(Deferred {
            op: self.current,
            carry,
        });
    }

    /// The outcome of the write being applied, if it is a card insert made with the
    /// batch's others in one statement ([`insert_cards_bulk`]).
    pub(crate) fn bulk_card(&mut self) -> Option<InsertCard> {
        self.cards.get_mut(self.current).and_then(Option::take)
    }
}

/// The card inserts of a batch that can share one statement, by batch index: a card
/// insert (bare or under its audit wrapper) whose only fingerprint is the card's own
/// (during a fingerprint-key rotation, lookups under older versions come first, one by
/// one). `None` when another write of the batch changes cards (a delete, a re-wrap):
/// then the batch applies its writes one at a time, in order.
fn bulk_cards<'o>(ops: impl Iterator<Item = &'o WriteOp>) -> Option<Vec<Option<NewCard<'o>>>> {
    let mut out = Vec::new();
    for op in ops {
        out.push(match inner(op) {
            WriteOp::InsertCard {
                card,
                dedup,
                events,
            } if dedup.iter().all(|(_, fp)| *fp == card.fingerprint) => {
                Some((card, events.as_slice()))
            }
            WriteOp::DeleteCard { .. } | WriteOp::RewrapCards { .. } => return None,
            _ => None,
        });
    }
    Some(out)
}

/// PostgreSQL: the batch's card inserts in one statement ([`cards::insert_cards_bulk`]).
pub(crate) async fn insert_cards_bulk<'o, C: Exec>(
    c: &mut C,
    ops: impl Iterator<Item = &'o WriteOp>,
) -> StoreResult<Vec<Option<InsertCard>>> {
    cards::insert_cards_bulk(c, bulk_cards(ops)).await
}

// ---- the audit writes: records that commit with a write, or alone ----

/// An audit write (one variant of the writer's [`WriteOp`]).
#[derive(Debug)]
pub(crate) enum AuditOp {
    /// Another write, with the records that commit with it.
    Wrap(Box<Wrapped>),
    /// Records alone.
    Append {
        records: Vec<AuditRecord>,
        hash: HashFn,
    },
    /// A signed checkpoint.
    Checkpoint(AuditCheckpoint),
    /// Inserts a row in a savepoint and rolls it back: readiness.
    Probe,
}

#[derive(Debug)]
pub(crate) struct Wrapped {
    op: WriteOp,
    /// The request's own record; appended only if `op` took effect.
    request: Option<AuditRecord>,
    /// Security events; appended whenever `op` succeeds.
    events: Vec<AuditRecord>,
    hash: HashFn,
    /// Set by the writer when the append (not the wrapped op) failed.
    failed: Arc<AtomicBool>,
}

impl Wrapped {
    /// The records that commit with the wrapped write.
    fn records(&self, carry: bool) -> impl Iterator<Item = (&AuditRecord, HashFn)> {
        self.events
            .iter()
            .chain(self.request.iter().filter(move |_| carry))
            .map(|r| (r, self.hash))
    }
}

/// Whether `op` changes nothing but the audit trail (records appended alone, a signed
/// checkpoint, the readiness probe that rolls itself back): a batch of only these leaves
/// the snapshots that SQLite readers keep for other reads in use.
pub(crate) fn audit_only(op: &WriteOp) -> bool {
    matches!(
        op,
        WriteOp::Audit(AuditOp::Append { .. } | AuditOp::Checkpoint(_) | AuditOp::Probe)
    )
}

/// The write itself: `op`, or the write an audit wrapper carries.
pub(crate) fn inner(op: &WriteOp) -> &WriteOp {
    match op {
        WriteOp::Audit(AuditOp::Wrap(w)) => &w.op,
        other => other,
    }
}

/// A write of a group commit whose audit records wait for [`flush_audit`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deferred {
    /// Index of the write in its batch.
    pub(crate) op: usize,
    /// Whether the request's own record goes with it.
    pub(crate) carry: bool,
}

/// Appends the audit records of a batch's deferred writes in one go, in batch order,
/// inside the batch's transaction, and puts the head after each write's records into
/// its reply. One head lock and a few multi-row inserts per batch instead of per write:
/// on PostgreSQL each statement is a network round trip, and the writer is serial.
/// If the append fails, every deferred wrapped write is marked failed (fail closed)
/// and the batch must roll back.
pub(crate) async fn flush_audit<'o, C: Exec>(
    c: &mut C,
    head: Option<Head>,
    op_at: impl Fn(usize) -> Option<&'o WriteOp>,
    deferred: &[Deferred],
    results: &mut [StoreResult<WriteReply>],
) -> StoreResult<()> {
    if deferred.is_empty() {
        return Ok(());
    }
    let mut recs: Vec<(&AuditRecord, HashFn)> = Vec::with_capacity(deferred.len() * 2);
    let mut ends: Vec<usize> = Vec::with_capacity(deferred.len());
    for d in deferred {
        match op_at(d.op) {
            Some(WriteOp::Audit(AuditOp::Wrap(w))) => recs.extend(w.records(d.carry)),
            Some(WriteOp::Audit(AuditOp::Append { records, hash })) => {
                recs.extend(records.iter().map(|r| (r, *hash)));
            }
            _ => {
                return Err(StoreError::Corrupt(
                    "deferred audit of a plain write".into(),
                ));
            }
        }
        ends.push(recs.len());
    }
    let head = match append(c, head, recs.into_iter()).await {
        Ok(h) => h,
        Err(e) => {
            for d in deferred {
                if let Some(WriteOp::Audit(AuditOp::Wrap(w))) = op_at(d.op) {
                    w.failed.store(true, Ordering::SeqCst);
                }
            }
            return Err(e);
        }
    };
    let total = ends.last().copied().unwrap_or(0);
    let start = head.saturating_sub(i64::try_from(total).unwrap_or(i64::MAX));
    for (d, end) in deferred.iter().zip(ends) {
        let at = start.saturating_add(i64::try_from(end).unwrap_or(i64::MAX));
        match results.get_mut(d.op) {
            Some(Ok(WriteReply::Audit(AuditReply::Wrapped(_, _, h) | AuditReply::Head(h)))) => {
                *h = at
            }
            _ => return Err(StoreError::Corrupt("deferred audit reply missing".into())),
        }
    }
    Ok(())
}

/// What an audit write returns.
#[derive(Debug)]
pub(crate) enum AuditReply {
    /// The wrapped write's reply; whether the request record went with it; the head.
    Wrapped(Box<WriteReply>, bool, i64),
    /// The head after an append.
    Head(i64),
    /// A checkpoint was stored (false: one at that seq existed).
    Stored(bool),
}

const PROBE_SAVEPOINT: &str = "SAVEPOINT audit_probe";
const PROBE_ROLLBACK: &str = "ROLLBACK TO SAVEPOINT audit_probe";
const PROBE_RELEASE: &str = "RELEASE SAVEPOINT audit_probe";

/// Applies an audit op of the group commit `b` inside its transaction. The audit records
/// of a wrapped write and of an append are left to the batch, which appends them all at
/// once ([`flush_audit`]). Boxed: it runs [`crate::sql::apply`] for the wrapped op, which
/// itself lands here.
pub(crate) fn apply_audit<'a, C: Exec>(
    c: &'a mut C,
    b: &'a mut Batch,
    op: &'a AuditOp,
) -> Pin<Box<dyn Future<Output = StoreResult<WriteReply>> + Send + 'a>> {
    Box::pin(async move {
        match op {
            AuditOp::Wrap(w) => {
                let reply = apply(c, b, &w.op).await?;
                let carry = w.request.is_some() && took_effect(&w.op, &reply);
                b.defer_audit(carry);
                // The head is filled in by `flush_audit`.
                Ok(WriteReply::Audit(AuditReply::Wrapped(
                    Box::new(reply),
                    carry,
                    0,
                )))
            }
            AuditOp::Append { .. } => {
                b.defer_audit(false);
                Ok(WriteReply::Audit(AuditReply::Head(0)))
            }
            AuditOp::Checkpoint(cp) => {
                let link = cp.link.as_ref();
                let a = args![
                    cp.seq,
                    &cp.hash,
                    cp.time_ms,
                    &cp.public_key,
                    &cp.signature,
                    link.map(|l| l.prev.as_slice()),
                    link.map(|l| l.count)
                ];
                let n = c.exec(INSERT_CHECKPOINT, a).await?;
                Ok(WriteReply::Audit(AuditReply::Stored(n > 0)))
            }
            AuditOp::Probe => {
                // Inside its own savepoint, rolled back: the batch it shares is untouched.
                let zero: &[u8] = &[0u8; 32];
                c.exec(PROBE_SAVEPOINT, &[]).await?;
                let probe = c.exec(PROBE, args![zero]).await;
                c.exec(PROBE_ROLLBACK, &[]).await?;
                c.exec(PROBE_RELEASE, &[]).await?;
                probe.map(|_| WriteReply::Audit(AuditReply::Stored(false)))
            }
        }
    })
}

/// Whether a write changed something, so the request's record belongs with it. A write
/// that found nothing (or counted a wrong OTP code) leaves the request record to the
/// standalone append after the handler, which knows the final status.
fn took_effect(op: &WriteOp, reply: &WriteReply) -> bool {
    if matches!(op, WriteOp::OtpFail { .. }) {
        return false;
    }
    if let WriteReply::RiskList(r) = reply {
        return r.took_effect();
    }
    !matches!(
        reply,
        WriteReply::Flag(false)
            | WriteReply::ApiKey(None)
            | WriteReply::Card(crate::InsertCard::Existing(_))
            | WriteReply::Collected(Some(crate::Collected::Refused))
            | WriteReply::Suspension(None)
            | WriteReply::Renewed(None)
            | WriteReply::Retire(
                RetireOutcome::NotFound | RetireOutcome::Active | RetireOutcome::InUse(_)
            )
    )
}

/// What [`attach`] took from a scope, to settle after the write.
pub(crate) struct Attached<'s> {
    scope: &'s AuditScope,
    request: Option<AuditRecord>,
    events: Vec<AuditRecord>,
}

/// Wraps `op` with the pending records of `scope` (the one the caller's
/// [`crate::Writes`] handle names), if there is one and the op is not itself an audit
/// write.
pub(crate) fn attach(op: WriteOp, scope: Option<&AuditScope>) -> (WriteOp, Option<Attached<'_>>) {
    if matches!(op, WriteOp::Audit(_)) {
        return (op, None);
    }
    let Some(scope) = scope else {
        return (op, None);
    };
    let (request, events) = {
        let mut s = scope.lock();
        // Carried by a write, the request's record says the action succeeded.
        let request = if s.committed {
            None
        } else {
            s.request.clone().map(|mut r| {
                if r.outcome.is_empty() {
                    r.outcome = "success".into();
                }
                r
            })
        };
        (request, std::mem::take(&mut s.events))
    };
    if request.is_none() && events.is_empty() {
        return (op, None);
    }
    let wrapped = WriteOp::Audit(AuditOp::Wrap(Box::new(Wrapped {
        op,
        request: request.clone(),
        events: events.clone(),
        hash: scope.hash,
        failed: scope.failed.clone(),
    })));
    (
        wrapped,
        Some(Attached {
            scope,
            request,
            events,
        }),
    )
}

/// Unwraps a wrapped write's reply and tells the scope what was committed.
pub(crate) fn settle(
    att: Option<Attached<'_>>,
    result: StoreResult<WriteReply>,
) -> StoreResult<WriteReply> {
    let Some(att) = att else {
        return result;
    };
    match result {
        Ok(WriteReply::Audit(AuditReply::Wrapped(inner, carried, head))) => {
            let mut s = att.scope.lock();
            if carried {
                s.committed = true;
            }
            s.head = Some(head);
            Ok(*inner)
        }
        Ok(other) => Ok(other),
        Err(e) => {
            att.scope.restore(att.request, Vec::new());
            // The events did not commit: queue them again.
            let mut s = att.scope.lock();
            let later = std::mem::replace(&mut s.events, att.events);
            s.events.extend(later);
            drop(s);
            Err(e)
        }
    }
}
