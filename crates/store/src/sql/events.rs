//! Events: what accounts hear about through webhooks, written with the change they report.

use crate::exec::{Exec, args};
use crate::sql::rows::{many, one};
use crate::{EventRecord, ListEvents, Mode, StoreResult};

const INSERT_EVENT: &str = concat!(
    "INSERT INTO events (",
    event_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6)"
);
const GET_EVENT: &str = concat!(
    "SELECT ",
    event_cols!(),
    " FROM events WHERE account_id = $1 AND id = $2"
);
const LIST_EVENTS: &str = concat!(
    "SELECT ",
    event_cols!(),
    " FROM events WHERE account_id = $1 AND mode = $2 AND ($4 IS NULL OR event_type = $4) \
     AND ($5 IS NULL OR created_ms >= $5) AND ($6 IS NULL OR created_ms < $6) \
     ORDER BY id DESC LIMIT $3"
);
const LIST_EVENTS_AFTER: &str = concat!(
    "SELECT ",
    event_cols!(),
    " FROM events WHERE account_id = $1 AND mode = $2 AND ($4 IS NULL OR event_type = $4) \
     AND ($5 IS NULL OR created_ms >= $5) AND ($6 IS NULL OR created_ms < $6) \
     AND id < $7 ORDER BY id DESC LIMIT $3"
);

pub(crate) async fn get_event<C: Exec>(
    c: &mut C,
    account_id: &str,
    id: &str,
) -> StoreResult<Option<EventRecord>> {
    one(c, GET_EVENT, args![account_id, id]).await
}

pub(crate) async fn list_events<C: Exec>(
    c: &mut C,
    account_id: &str,
    mode: Mode,
    q: &ListEvents,
) -> StoreResult<Vec<EventRecord>> {
    let after = q.starting_after.as_deref();
    let a = args![
        account_id,
        mode.as_str(),
        q.limit.max(0),
        q.event_type.as_deref(),
        q.created_gte,
        q.created_lt,
        after
    ];
    let (sql, n) = if after.is_some() {
        (LIST_EVENTS_AFTER, 7)
    } else {
        (LIST_EVENTS, 6)
    };
    many(c, sql, a.get(..n).unwrap_or(a)).await
}

/// Writes events and queues their webhook deliveries, in the caller's transaction.
pub(crate) async fn insert_events<C: Exec>(c: &mut C, events: &[EventRecord]) -> StoreResult<()> {
    for e in events {
        let args = args![
            &e.id,
            &e.account_id,
            e.mode.as_str(),
            &e.event_type,
            e.created_ms,
            &e.data
        ];
        c.exec(INSERT_EVENT, args).await?;
        fan_out(c, e).await?;
    }
    Ok(())
}

// One pending delivery per enabled endpoint that wants the event (same transaction as
// the event). `*` never matches the OTP event.
/// The endpoint `e` an event is delivered to: enabled, of the event's account and mode,
/// and subscribed to its type (or to every type; `*` leaves out `otp.created`, whose
/// payload goes only to endpoints that name it). Arguments: SQL for the event's
/// account, mode and type.
macro_rules! fan_out_match {
    ($account:literal, $mode:literal, $ty:literal) => {
        concat!(
            "e.account_id = ",
            $account,
            " AND e.mode = ",
            $mode,
            " AND e.disabled_ms IS NULL AND EXISTS (SELECT 1 FROM webhook_endpoint_events t \
             WHERE t.endpoint_id = e.id AND (t.event_type = ",
            $ty,
            " OR (t.event_type = '*' AND ",
            $ty,
            " <> 'otp.created')))"
        )
    };
}
pub(crate) use fan_out_match;

/// The columns of a new delivery row.
macro_rules! delivery_insert {
    () => {
        "INSERT INTO webhook_deliveries \
         (id, event_id, endpoint_id, account_id, state, attempts, next_ms, created_ms) "
    };
}
pub(crate) use delivery_insert;

const FAN_OUT: &str = concat!(
    delivery_insert!(),
    "SELECT CAST($1 AS TEXT) || ':' || e.id, $1, e.id, e.account_id, 'pending', 0, $4, $4 \
     FROM webhook_endpoints e WHERE ",
    fan_out_match!("$2", "$3", "$5")
);

/// Called by `insert_events` for every event, in its transaction.
pub(crate) async fn fan_out<C: Exec>(c: &mut C, e: &EventRecord) -> StoreResult<()> {
    let a = args![
        &e.id,
        &e.account_id,
        e.mode.as_str(),
        e.created_ms,
        &e.event_type
    ];
    c.exec(FAN_OUT, a).await.map(drop)
}
