//! Domain types for Strongroom. No I/O, no HTTP, no SQL.
//!
//! Everything that carries cardholder data or key material is a type here whose
//! `Debug`/`Display` print a mask and whose memory is zeroized on drop; the plaintext
//! is reachable only through a method named `expose_*`, so every place that touches it
//! is easy to find with grep.

pub mod clock;
pub mod error;
pub mod ids;
pub mod mode;
pub mod pan;
pub mod relay;
pub mod secret;
pub mod track;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::DomainError;
pub use ids::{IdKind, new_id, next_id, parse_id, row_hint};
pub use mode::{KeyKind, Mode, Scope, Scopes};
pub use pan::{Brand, Expiry, Pan};
pub use secret::Sensitive;
