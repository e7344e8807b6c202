//! Cards: their SQL, reads, inserts (one at a time, or a batch's in one statement on
//! PostgreSQL), expiry renewals, deletes and re-wraps.

use crate::exec::{Arg, Exec, RowGet, args};
use crate::sql::events::insert_events;
use crate::sql::rows::{many, one};
use crate::{
    CardRecord, CardRewrap, EventRecord, InsertCard, KeyPurpose, ListCards, Mode, RewrapQuery,
    StoreError, StoreResult,
};

/// The leading bytes of a fingerprint, which SQLite indexes instead of the whole
/// fingerprint (`cards_fp_prefix`, migration 0009). Every lookup by fingerprint says it
/// beside the full comparison, so SQLite finds the card through that index; PostgreSQL
/// finds it through its unique index and checks the prefix on the one row.
macro_rules! fp_prefix {
    ($p:literal) => {
        concat!("substr(fingerprint, 1, 8) = substr(", $p, ", 1, 8)")
    };
}
const CARD_BY_FP_VERSION: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE ",
    fp_prefix!("$3"),
    " AND account_id = $1 AND mode = $2 AND fingerprint = $3 AND fp_version = $4"
);
const CARD_BY_FP: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE ",
    fp_prefix!("$3"),
    " AND account_id = $1 AND mode = $2 AND fingerprint = $3"
);
/// SQLite: the insert after the lookup ([`insert_card`]), under the row id its id gives
/// ([`strongroom_core::row_hint`], `$14`) unless that is taken or missing, when SQLite
/// picks one. A read by id then finds the card in the table itself ([`GET_CARD_AT`]).
const INSERT_CARD_VALUES: &str = concat!(
    "INSERT INTO cards (rowid, ",
    card_cols!(),
    ") VALUES (CASE WHEN $14 IS NULL OR EXISTS (SELECT 1 FROM cards WHERE rowid = $14) \
     THEN NULL ELSE $14 END, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
);
/// SQLite: a new card's count, right after [`INSERT_CARD_VALUES`] (a trigger on PostgreSQL).
const COUNT_CARD_INSERT: &str = "INSERT INTO card_key_counts \
     (account_id, key_version, fp_version, cards) VALUES ($1, $2, $3, 1) \
     ON CONFLICT (account_id, key_version, fp_version) DO UPDATE SET cards = cards + 1";
/// PostgreSQL: the unique index settles the fingerprint.
const INSERT_CARD: &str = concat!(
    "INSERT INTO cards (",
    card_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (account_id, mode, fingerprint) DO NOTHING RETURNING id"
);
/// PostgreSQL: a batch's new cards in one statement, with their events and the events'
/// webhook deliveries, from parallel arrays (`UNNEST`). Every statement costs the
/// database as much again as the rows it writes, and the writer waits for each, so three
/// statements per card became one per batch. Events go in only for the cards that were
/// inserted (`$14`, the card each event belongs to); the ids returned are those cards.
const INSERT_CARDS_BULK: &str = concat!(
    "WITH n AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], \
     $5::int8[], $6::int8[], $7::bytea[], $8::text[], $9::text[], $10::text[], $11::int8[], \
     $12::int8[], $13::int8[]) WITH ORDINALITY AS n (",
    card_cols!(),
    ", ord)), c AS (INSERT INTO cards (",
    card_cols!(),
    ") SELECT ",
    card_cols!(),
    " FROM n ORDER BY ord ON CONFLICT (account_id, mode, fingerprint) DO NOTHING RETURNING id), \
     v AS (INSERT INTO events (",
    event_cols!(),
    ") SELECT x.id, x.account_id, x.mode, x.event_type, x.created_ms, x.data \
     FROM UNNEST($14::text[], $15::text[], $16::text[], $17::text[], $18::text[], \
     $19::int8[], $20::text[]) WITH ORDINALITY \
     AS x (card_id, id, account_id, mode, event_type, created_ms, data, ord) \
     JOIN c ON c.id = x.card_id ORDER BY x.ord \
     RETURNING id, account_id, mode, event_type, created_ms), \
     w AS (",
    crate::sql::delivery_insert!(),
    "SELECT v.id || ':' || e.id, v.id, e.id, v.account_id, 'pending', 0, v.created_ms, \
     v.created_ms FROM v JOIN webhook_endpoints e ON ",
    crate::sql::fan_out_match!("v.account_id", "v.mode", "v.event_type"),
    ") SELECT id FROM c"
);
const GET_CARD: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 AND id = $3"
);
/// SQLite: [`GET_CARD`] at the row id the card's id gives (`$4`), one B-tree walk instead
/// of two; no row when the card is elsewhere (made before row ids came from ids, or its
/// row id was taken), and then [`GET_CARD`] finds it.
pub(crate) const GET_CARD_AT: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE rowid = $4 AND account_id = $1 AND mode = $2 AND id = $3"
);
/// PostgreSQL: many cards by id, of any account and mode (the caller matches each to
/// its own): the coalesced reads of [`crate::postgres`].
pub(crate) const GET_CARDS_BY_ID: &str =
    concat!("SELECT ", card_cols!(), " FROM cards WHERE id = ANY($1)");
const LIST_CARDS: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 ORDER BY id DESC LIMIT $3"
);
const LIST_CARDS_AFTER: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 AND id < $4 ORDER BY id DESC LIMIT $3"
);
// The fingerprint is unique per account and mode, so this finds at most one row; it has
// no `ORDER BY id`, which would lead SQLite to walk the account's cards along `cards_list`
// (in order) instead of looking the fingerprint up.
const LIST_CARDS_FP: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE ",
    fp_prefix!("$5"),
    " AND account_id = $1 AND mode = $2 AND fingerprint = $5 \
     AND ($4 IS NULL OR id < $4) LIMIT $3"
);
/// The statements that find cards by fingerprint (their query plans are checked).
#[cfg(test)]
pub(crate) const FINGERPRINT_LOOKUPS: [&str; 3] = [CARD_BY_FP, CARD_BY_FP_VERSION, LIST_CARDS_FP];

const DELETE_CARD: &str = "DELETE FROM cards WHERE account_id = $1 AND mode = $2 AND id = $3";
const RENEW_CARD_EXPIRY: &str = concat!(
    "UPDATE cards SET exp_month = $4, exp_year = $5 \
     WHERE account_id = $1 AND mode = $2 AND id = $3 \
     AND exp_year * 100 + exp_month < $5 * 100 + $4 RETURNING ",
    card_cols!()
);
// One mode at a time along `cards_list`, after a cursor: a whole pass reads each card of
// the account once, however many are stale.
const REWRAP_CARDS: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 AND id > $3 AND key_version < $4 \
     ORDER BY id LIMIT $5"
);
const REWRAP_FINGERPRINTS: &str = concat!(
    "SELECT ",
    card_cols!(),
    " FROM cards WHERE account_id = $1 AND mode = $2 AND id > $3 AND fp_version < $4 \
     ORDER BY id LIMIT $5"
);
const REWRAP_CARD: &str = "UPDATE cards SET sealed = $2, key_version = $3, fingerprint = $4, \
     fp_version = $5 WHERE id = $1 AND key_version = $6 AND fp_version = $7";

pub(crate) async fn get_card<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    id: &str,
) -> StoreResult<Option<CardRecord>> {
    let mode = mode.as_str();
    if let Some(rowid) = strongroom_core::row_hint(id).filter(|_| c.dialect().row_id_from_id())
        && let Some(card) = one(c, GET_CARD_AT, args![account_id, mode, id, rowid]).await?
    {
        return Ok(Some(card));
    }
    one(c, GET_CARD, args![account_id, mode, id]).await
}

pub(crate) async fn list_cards<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    q: &ListCards,
) -> StoreResult<Vec<CardRecord>> {
    let after = q.starting_after.as_deref();
    let fp = q.fingerprint.as_deref();
    let a = args![account_id, mode.as_str(), q.limit.max(0), after, fp];
    // PostgreSQL wants exactly as many values as the text has parameters.
    let (sql, n) = match (fp, after) {
        (Some(_), _) => (LIST_CARDS_FP, 5),
        (None, Some(_)) => (LIST_CARDS_AFTER, 4),
        (None, None) => (LIST_CARDS, 3),
    };
    many(c, sql, a.get(..n).unwrap_or(a)).await
}

pub(crate) async fn cards_for_rewrap<C: Exec>(
    c: &mut C,
    account_id: &str,
    purpose: KeyPurpose,
    q: &RewrapQuery<'_>,
) -> StoreResult<Vec<CardRecord>> {
    let sql = match purpose {
        KeyPurpose::Cards => REWRAP_CARDS,
        KeyPurpose::Fingerprint => REWRAP_FINGERPRINTS,
        // PINs are not cards: see `PinStore::pins_for_rewrap`.
        KeyPurpose::Pin => return Ok(Vec::new()),
    };
    let args = args![
        account_id,
        q.mode.as_str(),
        q.after,
        q.below_version,
        q.limit.max(0)
    ];
    many(c, sql, args).await
}

pub(crate) async fn insert_card<C: Exec>(
    c: &mut C,
    bulk: Option<InsertCard>,
    card: &CardRecord,
    dedup: &[(i64, Vec<u8>)],
    events: &[EventRecord],
) -> StoreResult<InsertCard> {
    if let Some(done) = bulk {
        return Ok(done);
    }
    let mode = card.mode.as_str();
    // Fingerprints under other key versions: only a lookup can find them. The card's
    // own fingerprint is settled below: on PostgreSQL by the unique index, which is
    // race-free across concurrent transactions and nodes; on SQLite by a lookup inside
    // the one write transaction SQLite allows at a time.
    for (version, fp) in dedup.iter().filter(|(_, fp)| *fp != card.fingerprint) {
        let a = args![&card.account_id, mode, fp, *version];
        if let Some(existing) = one(c, CARD_BY_FP_VERSION, a).await? {
            return Ok(InsertCard::Existing(existing));
        }
    }
    let args = args![
        &card.id,
        &card.account_id,
        mode,
        &card.fingerprint,
        card.fp_version,
        card.key_version,
        &card.sealed,
        &card.brand,
        &card.bin,
        &card.last4,
        card.exp_month,
        card.exp_year,
        card.created_ms,
        strongroom_core::row_hint(&card.id)
    ];
    let by_fp = args![&card.account_id, mode, &card.fingerprint];
    if c.dialect().fingerprint_lookup() {
        // SQLite indexes a prefix of the fingerprint, not unique (migration 0009): a
        // fifth of the size, so fewer pages for each group commit to write and for
        // the checkpoint to copy. The lookup and the insert run in the writer's one
        // transaction, and SQLite lets one write transaction run at a time (`BEGIN
        // IMMEDIATE`, across processes too), so nothing can come between them.
        if let Some(existing) = one(c, CARD_BY_FP, by_fp).await? {
            return Ok(InsertCard::Existing(existing));
        }
        c.exec(INSERT_CARD_VALUES, args).await?;
        let count = args![&card.account_id, card.key_version, card.fp_version];
        c.exec(COUNT_CARD_INSERT, count).await?;
        insert_events(c, events).await?;
        return Ok(InsertCard::Created(card.clone()));
    }
    // PostgreSQL wants exactly as many values as the text has parameters.
    if c.opt(INSERT_CARD, args.get(..13).unwrap_or(args))
        .await?
        .is_some()
    {
        insert_events(c, events).await?;
        return Ok(InsertCard::Created(card.clone()));
    }
    match one(c, CARD_BY_FP, by_fp).await? {
        Some(existing) => Ok(InsertCard::Existing(existing)),
        // The holder of the fingerprint was deleted between our insert and this read.
        None => Err(StoreError::Conflict("card changed concurrently; retry")),
    }
}

/// Deletes a card; its events are written only if it was there.
pub(crate) async fn delete_card<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    id: &str,
    events: &[EventRecord],
) -> StoreResult<bool> {
    let n = c
        .exec(DELETE_CARD, args![account_id, mode.as_str(), id])
        .await?;
    if n > 0 {
        insert_events(c, events).await?;
    }
    Ok(n > 0)
}

/// Moves a card's expiry later ([`RENEW_CARD_EXPIRY`]); its events are written only then.
pub(crate) async fn renew_card_expiry<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    id: &str,
    (exp_month, exp_year): (i64, i64),
    events: &[EventRecord],
) -> StoreResult<Option<CardRecord>> {
    let a = args![account_id, mode.as_str(), id, exp_month, exp_year];
    let card: Option<CardRecord> = one(c, RENEW_CARD_EXPIRY, a).await?;
    if card.is_some() {
        insert_events(c, events).await?;
    }
    Ok(card)
}

/// Applies re-wraps whose rows still have the expected versions; returns how many did.
pub(crate) async fn rewrap_cards<C: Exec>(c: &mut C, updates: &[CardRewrap]) -> StoreResult<u64> {
    let mut applied: u64 = 0;
    for u in updates {
        let args = args![
            &u.id,
            &u.sealed,
            u.key_version,
            &u.fingerprint,
            u.fp_version,
            u.expect_key_version,
            u.expect_fp_version
        ];
        applied = applied.saturating_add(c.exec(REWRAP_CARD, args).await?);
    }
    Ok(applied)
}

/// A card to insert, with its events.
pub(crate) type NewCard<'o> = (&'o CardRecord, &'o [EventRecord]);

/// PostgreSQL: inserts the batch's eligible cards ([`crate::sql::ops`]'s `bulk_cards`), their events and
/// webhook deliveries in one statement, inside the batch's transaction. Returns each
/// write's outcome by batch index (empty when nothing was eligible); the writer hands
/// them out as it applies the writes in order (`Batch::bulk_card`). A card whose
/// fingerprint was there already (or came twice in this batch) is read back, as
/// [`insert_card`] does.
pub(crate) async fn insert_cards_bulk<'o, C: Exec>(
    c: &mut C,
    slots: Option<Vec<Option<NewCard<'o>>>>,
) -> StoreResult<Vec<Option<InsertCard>>> {
    let Some(slots) = slots else {
        return Ok(Vec::new());
    };
    let cards: Vec<&CardRecord> = slots.iter().flatten().map(|(card, _)| *card).collect();
    if cards.is_empty() {
        return Ok(Vec::new());
    }
    let text = |f: fn(&CardRecord) -> &str| cards.iter().map(|c| f(c)).collect::<Vec<&str>>();
    let int = |f: fn(&CardRecord) -> i64| cards.iter().map(|c| f(c)).collect::<Vec<i64>>();
    let blob = |f: fn(&CardRecord) -> &[u8]| cards.iter().map(|c| f(c)).collect::<Vec<&[u8]>>();
    let (ids, accounts, modes) = (
        text(|c| &c.id),
        text(|c| &c.account_id),
        text(|c| c.mode.as_str()),
    );
    let (fps, sealed) = (blob(|c| &c.fingerprint), blob(|c| &c.sealed));
    let (fp_versions, key_versions) = (int(|c| c.fp_version), int(|c| c.key_version));
    let (brands, bins, last4s) = (text(|c| &c.brand), text(|c| &c.bin), text(|c| &c.last4));
    let (months, years, created) = (
        int(|c| c.exp_month),
        int(|c| c.exp_year),
        int(|c| c.created_ms),
    );
    let events: Vec<(&'o str, &'o EventRecord)> = slots
        .iter()
        .flatten()
        .flat_map(|(card, evs)| evs.iter().map(|e| (card.id.as_str(), e)))
        .collect();
    let ev_text =
        |f: fn(&(&'o str, &'o EventRecord)) -> &'o str| events.iter().map(f).collect::<Vec<&str>>();
    let ev_cards = ev_text(|(card, _)| card);
    let (ev_ids, ev_accounts) = (ev_text(|(_, e)| &e.id), ev_text(|(_, e)| &e.account_id));
    let (ev_modes, ev_types) = (
        ev_text(|(_, e)| e.mode.as_str()),
        ev_text(|(_, e)| &e.event_type),
    );
    let ev_data = ev_text(|(_, e)| &e.data);
    let ev_created: Vec<i64> = events.iter().map(|(_, e)| e.created_ms).collect();
    let args = [
        Arg::Texts(&ids),
        Arg::Texts(&accounts),
        Arg::Texts(&modes),
        Arg::Blobs(&fps),
        Arg::Ints(&fp_versions),
        Arg::Ints(&key_versions),
        Arg::Blobs(&sealed),
        Arg::Texts(&brands),
        Arg::Texts(&bins),
        Arg::Texts(&last4s),
        Arg::Ints(&months),
        Arg::Ints(&years),
        Arg::Ints(&created),
        Arg::Texts(&ev_cards),
        Arg::Texts(&ev_ids),
        Arg::Texts(&ev_accounts),
        Arg::Texts(&ev_modes),
        Arg::Texts(&ev_types),
        Arg::Ints(&ev_created),
        Arg::Texts(&ev_data),
    ];
    let rows = c.all(INSERT_CARDS_BULK, &args).await?;
    let inserted = rows
        .iter()
        .map(|r| r.text(0))
        .collect::<StoreResult<std::collections::HashSet<String>>>()?;
    let mut out = Vec::with_capacity(slots.len());
    for slot in slots {
        out.push(match slot {
            None => None,
            Some((card, _)) if inserted.contains(&card.id) => {
                Some(InsertCard::Created(card.clone()))
            }
            Some((card, _)) => {
                let a = args![&card.account_id, card.mode.as_str(), &card.fingerprint];
                match one(c, CARD_BY_FP, a).await? {
                    Some(existing) => Some(InsertCard::Existing(existing)),
                    None => return Err(StoreError::Conflict("card changed concurrently; retry")),
                }
            }
        });
    }
    Ok(out)
}
