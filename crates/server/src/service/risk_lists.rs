//! Allow and block lists (docs/risk.md, "Lists"): card numbers (by fingerprint),
//! addresses and networks, emails (as keyed digests), BIN prefixes and device ids that an
//! account's assessments always block, or allow whatever their score (a suspension or a
//! block-list entry still blocks). An entry matches from the moment it is stored, on
//! every node (its cache is dropped), until it expires or is deleted.

use crate::auth::Principal;
use crate::service::suspensions::{card_fingerprint, email_subject, printable};
use crate::service::{List, ModeName, Result, ServiceError, secs};
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use strongroom_core::{IdKind, Mode, Scope};
use strongroom_risk::lists::parse_network;
use strongroom_store::risk_lists::Reply;
use strongroom_store::{ListEntryRecord, RiskListStore};
use utoipa::ToSchema;

/// Shortest life of an entry that ends by itself, in seconds.
pub const MIN_EXPIRES_S: i64 = 60;
/// Longest life of an entry that ends by itself, in seconds (10 years; leave
/// `expires_in` out for an entry that lasts until deleted).
pub const MAX_EXPIRES_S: i64 = 10 * 365 * 24 * 3600;
/// Longest note, in characters.
pub const NOTE_MAX: usize = 200;
/// Longest device id, in characters.
const DEVICE_MAX: usize = 200;

crate::service::object_name!(
    /// `risk_list_entry`.
    EntryObject = "risk_list_entry"
);

/// Which list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListName {
    /// Uses that match are allowed whatever their score, and no rule suspends anything
    /// for them; a suspension or a block-list entry still blocks.
    Allow,
    /// Uses that match are blocked (reason `block_listed`).
    Block,
}

impl ListName {
    /// As stored and in paths.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Block => "block",
        }
    }

    /// The list a path names; `None` for anything else (answered `404`).
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Allow, Self::Block]
            .into_iter()
            .find(|l| l.as_str() == s)
    }
}

/// What an entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    /// A card number: `value` is a card id (`card_…`) or a fingerprint as the card object
    /// shows it; stored as the fingerprint.
    Card,
    /// An IP address or network (CIDR; IPv4 or IPv6).
    Ip,
    /// An email address (kept only as a keyed digest).
    Email,
    /// A BIN: the first 6 digits of card numbers (what the vault keeps of a card
    /// besides its last four, so an entry matches stored cards as well as new ones).
    Bin,
    /// A device id, as the merchant's app names it.
    Device,
}

impl EntryType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Ip => "ip",
            Self::Email => "email",
            Self::Bin => "bin",
            Self::Device => "device",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Card, Self::Ip, Self::Email, Self::Bin, Self::Device]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// Body of `POST /v1/risk/lists/{list}/entries`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewListEntry {
    /// What the entry matches.
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// The subject: a card id or fingerprint, an address or CIDR, an email address, 6
    /// digits, a device id.
    #[schema(min_length = 1, max_length = 320)]
    pub value: String,
    /// Why it is listed: 1 to 200 characters, no control characters. Never put a card
    /// number or an email address here.
    #[schema(min_length = 1, max_length = 200)]
    pub note: Option<String>,
    /// Seconds from now until it stops matching: 60 to 315 360 000 (10 years). Leave it
    /// out for an entry that lasts until deleted.
    #[serde(default, deserialize_with = "crate::extract::integer_opt")]
    #[schema(minimum = 60, maximum = 315_360_000)]
    pub expires_in: Option<i64>,
}

/// An entry of an allow or block list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListEntryView {
    /// `rle_…`
    pub id: String,
    /// Always `risk_list_entry`.
    pub object: EntryObject,
    /// `allow` or `block`.
    pub list: ListName,
    /// `test` or `live`.
    pub mode: ModeName,
    /// What it matches.
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// The subject as stored: a card's fingerprint (not the card id), a network in CIDR
    /// form, an email's keyed digest (hex), the BIN prefix, the device id.
    pub value: String,
    /// Why it is listed.
    pub note: Option<String>,
    /// `key:<id>`: the key that listed it.
    pub created_by: String,
    /// `active`, `expired` or `deleted`.
    pub status: &'static str,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds: it stops matching then; null: it lasts until deleted.
    pub expires_at: Option<i64>,
    /// Unix seconds: when it was deleted; null unless deleted.
    pub deleted_at: Option<i64>,
    /// Who deleted it; null unless deleted.
    pub deleted_by: Option<String>,
}

impl ListEntryView {
    /// The view of a stored entry at `now_ms`.
    pub fn new(r: &ListEntryRecord, now_ms: i64) -> Self {
        let status = if r.deleted_ms.is_some() {
            "deleted"
        } else if r.live(now_ms) {
            "active"
        } else {
            "expired"
        };
        Self {
            id: r.id.clone(),
            object: EntryObject::Value,
            list: ListName::parse(&r.list).unwrap_or(ListName::Block),
            mode: r.mode.into(),
            kind: EntryType::parse(&r.kind).unwrap_or(EntryType::Device),
            value: r.value.clone(),
            note: r.note.clone(),
            created_by: r.created_by.clone(),
            status,
            created: secs(r.created_ms),
            expires_at: r.expires_ms.map(secs),
            deleted_at: r.deleted_ms.map(secs),
            deleted_by: r.deleted_by.clone(),
        }
    }
}

/// The stored form of an entry's subject: checked, normalized, an email digested, a card
/// id turned into its fingerprint.
async fn stored_value(
    state: &AppState,
    account_id: &str,
    mode: Mode,
    kind: EntryType,
    value: &str,
) -> Result<String> {
    let bad = || ServiceError::ListEntryInvalid;
    let v = value.trim();
    Ok(match kind {
        EntryType::Card => card_fingerprint(state, account_id, mode, v)
            .await?
            .ok_or_else(bad)?,
        EntryType::Ip => parse_network(v).ok_or_else(bad)?.to_string(),
        EntryType::Email => email_subject(state, account_id, v).ok_or_else(bad)?,
        EntryType::Bin if v.len() == 6 && v.bytes().all(|b| b.is_ascii_digit()) => v.to_owned(),
        EntryType::Bin => return Err(bad()),
        EntryType::Device if printable(v, DEVICE_MAX) => v.to_owned(),
        EntryType::Device => return Err(bad()),
    })
}

/// The list a path names, or `404`.
fn list_of(s: &str) -> Result<ListName> {
    ListName::parse(s).ok_or(ServiceError::NotFound)
}

/// Adds an entry to one of the caller's lists, in its mode (`risk:write`). The same
/// subject live on the same list is `409 list_entry_exists`.
pub async fn create(
    state: &AppState,
    who: &Principal,
    list: &str,
    new: &NewListEntry,
) -> Result<ListEntryView> {
    who.require(Scope::RiskWrite)?;
    let list = list_of(list)?;
    if new.note.as_deref().is_some_and(|n| !printable(n, NOTE_MAX)) {
        return Err(ServiceError::InvalidParameter);
    }
    if new
        .expires_in
        .is_some_and(|s| !(MIN_EXPIRES_S..=MAX_EXPIRES_S).contains(&s))
    {
        return Err(ServiceError::InvalidParameter);
    }
    let value = stored_value(state, &who.account_id, who.mode, new.kind, &new.value).await?;
    let now = state.now_ms();
    let record = ListEntryRecord {
        id: state.new_id(IdKind::RiskListEntry)?,
        account_id: who.account_id.clone(),
        mode: who.mode,
        list: list.as_str().to_owned(),
        kind: new.kind.as_str().to_owned(),
        value,
        note: new.note.clone(),
        created_by: format!("key:{}", who.key_id),
        created_ms: now,
        expires_ms: new
            .expires_in
            .map(|s| now.saturating_add(s.saturating_mul(1000))),
        deleted_ms: None,
        deleted_by: None,
    };
    // Named before the write, which commits the request's audit record with it.
    crate::audit::set_resource(&who.audit, "risk_list_entry", &record.id);
    let reply = state
        .store()
        .audited(&who.audit)
        .insert_list_entry(&record)
        .await?;
    match reply {
        Reply::Inserted => {}
        Reply::Exists(existing) => {
            crate::audit::set_resource(&who.audit, "risk_list_entry", &existing);
            return Err(ServiceError::ListEntryExists);
        }
        Reply::Full => {
            who.audit.update(|r| r.resource.clear());
            return Err(ServiceError::LimitReached);
        }
        Reply::Deleted(_) => return Err(ServiceError::internal("list insert answered a delete")),
    }
    state.forget_risk_lists(&who.account_id, who.mode);
    Ok(ListEntryView::new(&record, now))
}

/// The caller's entry `id` on `list`, in its mode.
async fn find(
    state: &AppState,
    who: &Principal,
    list: ListName,
    id: &str,
) -> Result<ListEntryRecord> {
    if strongroom_core::parse_id(IdKind::RiskListEntry, id).is_err() {
        return Err(ServiceError::NotFound);
    }
    state
        .store()
        .list_entry(&who.account_id, id)
        .await?
        .filter(|r| r.mode == who.mode && r.list == list.as_str())
        .ok_or(ServiceError::NotFound)
}

/// One entry of the caller's list, in its mode (`risk:read`).
pub async fn get(state: &AppState, who: &Principal, list: &str, id: &str) -> Result<ListEntryView> {
    who.require(Scope::RiskRead)?;
    let r = find(state, who, list_of(list)?, id).await?;
    Ok(ListEntryView::new(&r, state.now_ms()))
}

/// A page of the caller's list in its mode, newest first: active, expired and deleted
/// entries (`risk:read`).
pub async fn list(
    state: &AppState,
    who: &Principal,
    list: &str,
    starting_after: Option<String>,
    limit: i64,
) -> Result<List<ListEntryView>> {
    who.require(Scope::RiskRead)?;
    let list = list_of(list)?;
    if !(1..=100).contains(&limit) {
        return Err(ServiceError::InvalidParameter);
    }
    if let Some(after) = &starting_after {
        strongroom_core::parse_id(IdKind::RiskListEntry, after)
            .map_err(|_| ServiceError::InvalidParameter)?;
    }
    let mut rows = state
        .store()
        .list_entries(
            &who.account_id,
            who.mode,
            list.as_str(),
            starting_after.as_deref(),
            limit.saturating_add(1),
        )
        .await?;
    let has_more = crate::extract::page(&mut rows, limit);
    let now = state.now_ms();
    let views = rows.iter().map(|r| ListEntryView::new(r, now)).collect();
    Ok(List::page(views, has_more))
}

/// Deletes an entry of the caller's list now (`risk:write`); it stops matching at once.
/// One deleted already is answered as it is.
pub async fn delete(
    state: &AppState,
    who: &Principal,
    list: &str,
    id: &str,
) -> Result<ListEntryView> {
    who.require(Scope::RiskWrite)?;
    let r = find(state, who, list_of(list)?, id).await?;
    crate::audit::set_resource(&who.audit, "risk_list_entry", id);
    let now = state.now_ms();
    if r.deleted_ms.is_some() {
        return Ok(ListEntryView::new(&r, now));
    }
    let by = format!("key:{}", who.key_id);
    let deleted = state
        .store()
        .audited(&who.audit)
        .delete_list_entry(&who.account_id, id, now, &by)
        .await?;
    state.forget_risk_lists(&who.account_id, who.mode);
    Ok(ListEntryView::new(deleted.as_ref().unwrap_or(&r), now))
}
