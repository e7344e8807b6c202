//! What differs between the two databases beyond their drivers, said once per backend.
//! The shared SQL ([`crate::sql`]) and the group commit ([`crate::group`]) ask a
//! connection's dialect ([`crate::exec::Exec::dialect`]) instead of knowing the backend.

/// The differences the shared code needs to know about.
pub(crate) trait Dialect: Send + Sync {
    /// The backend, for logs.
    fn name(&self) -> &'static str;

    /// The statements that open a write transaction, in order.
    fn begin(&self) -> &'static [&'static str];

    /// Whether a card's fingerprint is checked by a lookup before its insert, because no
    /// unique index settles it (see [`crate::sql::insert_card`]).
    fn fingerprint_lookup(&self) -> bool;

    /// Whether a card's row id comes from its id, so that a read by id can go to the row
    /// directly (see [`crate::sql::get_card`]).
    fn row_id_from_id(&self) -> bool;

    /// Whether a group commit inserts its new cards in one statement
    /// ([`crate::sql::insert_cards_bulk`]): worth it where each statement is a round trip.
    fn bulk_card_insert(&self) -> bool;
}

/// SQLite, driven in-process through rusqlite.
pub(crate) struct Sqlite;

impl Dialect for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn begin(&self) -> &'static [&'static str] {
        crate::sqlite::BEGIN
    }
    fn fingerprint_lookup(&self) -> bool {
        true
    }
    fn row_id_from_id(&self) -> bool {
        true
    }
    // Statements run in place (no round trip), so one statement gains nothing.
    fn bulk_card_insert(&self) -> bool {
        false
    }
}

/// PostgreSQL, over the network through sqlx.
pub(crate) struct Postgres;

impl Dialect for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }
    fn begin(&self) -> &'static [&'static str] {
        crate::postgres::BEGIN
    }
    fn fingerprint_lookup(&self) -> bool {
        false
    }
    fn row_id_from_id(&self) -> bool {
        false
    }
    fn bulk_card_insert(&self) -> bool {
        true
    }
}
