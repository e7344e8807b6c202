//! What a client session fixed (docs/client-side.md), as the card object shows it:
//! shared by [`super::client_sessions`], which makes sessions, and [`super::cards`],
//! whose card objects and `card.created` events carry them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// What a client session is for. Only card collection today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionPurpose {
    /// Collect card(s) into the vault.
    Tokenize,
}

/// A session's fixed parameters: set by the back end, never sent by the browser.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct SessionParams {
    /// Always `tokenize`.
    pub purpose: SessionPurpose,
    /// The origins that may embed the fields and post cards.
    pub allowed_origins: Vec<String>,
    /// In minor units; null when none was set.
    pub amount: Option<i64>,
    /// Lowercase ISO 4217 code; null when none was set.
    pub currency: Option<String>,
    /// The merchant's order reference; null when none was set.
    pub order_id: Option<String>,
    /// The merchant's metadata (empty when none was set).
    pub metadata: BTreeMap<String, String>,
    /// Whether the fields ask for (and the route requires) the CVC.
    pub collect_cvc: bool,
}

/// The session a card was collected through, as the card object and `card.created`
/// show it: its id and the parameters the back end fixed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CardSession {
    /// `cs_…`
    pub id: String,
    /// The fixed parameters.
    #[serde(flatten)]
    pub params: SessionParams,
}
