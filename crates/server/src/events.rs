//! Ids and outbox event rows: what every write that tells the account about itself
//! needs, built from the clock alone.

use crate::service::events::{EventData, EventJson, EventObject, EventType};
use crate::service::{Result, ServiceError};
use strongroom_core::{Clock, IdKind, Mode, next_id};
use strongroom_crypto::random;
use strongroom_store::EventRecord;

/// A new id of this kind, after every other this process made ([`next_id`]): a
/// card's then serves as its SQLite row id (`strongroom_core::row_hint`).
pub fn new_id(clock: &dyn Clock, kind: IdKind) -> Result<String> {
    Ok(next_id(kind, clock.now_ms(), random::bytes::<10>()?))
}

/// An event row for the outbox, its object serialized straight into the event's
/// JSON: no `serde_json::Value` tree is built (a card event is on the tokenize path).
pub fn event_of<T: serde::Serialize>(
    clock: &dyn Clock,
    account_id: &str,
    mode: Mode,
    event_type: EventType,
    object: &T,
) -> Result<EventRecord> {
    let id = new_id(clock, IdKind::Event)?;
    let created_ms = clock.now_ms();
    let data = serde_json::to_string(&EventJson {
        created: created_ms / 1000,
        data: EventData { object },
        id: &id,
        mode: mode.as_str(),
        object: EventObject::Event,
        event_type,
    })
    .map_err(|e| ServiceError::internal(e))?;
    Ok(EventRecord {
        id,
        account_id: account_id.to_owned(),
        mode,
        event_type: event_type.as_str().to_owned(),
        created_ms,
        data,
    })
}
