//! What differs between the two databases beyond their drivers, said once per backend.
//! The shared SQL ([`crate::sql`]) and the group commit ([`crate::group`]) ask a
//! connection's dialect ([`crate::exec::Exec::dialect`]) instead of knowing the backend.
//! Each backend implements the trait next to its connection, so this module names none.

/// The differences the shared code needs to know about.
pub(crate) trait Dialect: Send + Sync {
    /// The backend, for logs.
    fn name(&self) -> &'static str;

    /// What opens a write transaction: one statement, or on PostgreSQL a simple query of
    /// several that also locks and reads the audit head ([`crate::exec::Exec::begin`]).
    fn begin(&self) -> &'static str;

    /// Whether a card's fingerprint is checked by a lookup before its insert, because no
    /// unique index settles it (see [`crate::sql::insert_card`]).
    fn fingerprint_lookup(&self) -> bool;

    /// Whether a card's row id comes from its id, so that a read by id can go to the row
    /// directly (see [`crate::sql::get_card`]).
    fn row_id_from_id(&self) -> bool;

    /// Whether a group commit inserts its new cards, and its audit records, in one
    /// statement each (arrays through `UNNEST`: [`crate::sql::insert_cards_bulk`],
    /// [`crate::audit::append`]): worth it where each statement is a round trip.
    fn bulk_insert(&self) -> bool;
}
