//! Every SQL text and every operation, written once for both backends.
//!
//! Parameters are `$1, $2 …` (PostgreSQL's syntax; SQLite reads `$N` as a named
//! parameter and sqlx binds it by number). Only portable SQL is used: `ON CONFLICT …
//! DO NOTHING`, `RETURNING`, `IS NOT DISTINCT FROM`, partial indexes.
//!
//! By domain: [`rows`] (column lists and decoding), [`accounts`] (accounts, API keys,
//! data keys), [`cards`], [`otps`], [`events`]; [`ops`] holds the writes and applies them.
//! The other domains (audit, controls, PINs, tokens, webhooks) keep their SQL in their
//! own modules.

#[macro_use]
mod rows;
mod accounts;
mod cards;
mod events;
mod ops;
mod otps;

use crate::StoreResult;
use crate::exec::Exec;

pub(crate) use accounts::{
    API_KEY_COLS, KEY_WITH_CONTROLS, api_key_by_digest, data_keys, get_account, key_usage,
    list_accounts, list_api_keys,
};
#[cfg(test)]
pub(crate) use cards::{FINGERPRINT_LOOKUPS, GET_CARD_AT};
pub(crate) use cards::{GET_CARDS_BY_ID, cards_for_rewrap, get_card, insert_card, list_cards};
pub(crate) use events::{delivery_insert, fan_out_match, get_event, insert_events, list_events};
pub(crate) use ops::{
    AuditOp, Batch, Write, WriteOp, WriteReply, apply, attach, audit_only, flush_audit,
    insert_cards_bulk, settle,
};
pub(crate) use otps::get_otp;
pub(crate) use rows::{FromRow, many, mode, one};

pub(crate) const PING: &str = "SELECT 1";

pub(crate) async fn ping<C: Exec>(c: &mut C) -> StoreResult<()> {
    c.all(PING, &[]).await.map(drop)
}
