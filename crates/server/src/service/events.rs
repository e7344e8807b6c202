//! Events: the types the server emits, the stored event JSON (what webhooks deliver and
//! `GET /v1/events` returns), and its view.

use crate::service::{Result, ServiceError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declares [`EventType`] and its names once, so a type cannot be emitted without being
/// listed (and accepted by filters and subscriptions).
macro_rules! event_types {
    ($($(#[$doc:meta])* $variant:ident = $name:tt,)*) => {
        /// Every event type the server emits.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        pub enum EventType {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)*
        }

        impl EventType {
            /// Every type, in declaration order.
            pub const ALL: &'static [EventType] = &[$(Self::$variant),*];

            /// The wire name, e.g. `card.created`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

event_types! {
    /// An account's controls changed.
    AccountUpdated = "account.updated",
    /// Every API key and bearer token of the account was revoked.
    AccountKeysRevoked = "account.keys_revoked",
    /// An API key was issued.
    ApiKeyCreated = "api_key.created",
    /// An API key was revoked.
    ApiKeyRevoked = "api_key.revoked",
    /// A card was stored.
    CardCreated = "card.created",
    /// A card's metadata changed.
    CardUpdated = "card.updated",
    /// A card was deleted.
    CardDeleted = "card.deleted",
    /// A card's number was revealed.
    CardRevealed = "card.revealed",
    /// A data key was rotated.
    DataKeyRotated = "data_key.rotated",
    /// A key nears the end of its life under the key-age policy (30 and 7 days before,
    /// by default): rotate it.
    KeyRotationDue = "key.rotation_due",
    /// A key passed the end of its life under the key-age policy.
    KeyExpired = "key.expired",
    /// A processor notification was received and verified.
    InboundReceived = "inbound.received",
    /// A partner's request went through an inbound route: its cards were tokenized and
    /// the cleaned request reached the merchant, who answered (any status).
    InboundRouteForwarded = "inbound_route.forwarded",
    /// A partner's request through an inbound route failed on its way to the merchant.
    InboundRouteFailed = "inbound_route.failed",
    /// A one-time password was issued (delivered only to the OTP delivery URL).
    OtpCreated = "otp.created",
    /// A PIN was set or reset.
    PinSet = "pin.set",
    /// A PIN was changed.
    PinChanged = "pin.changed",
    /// A PIN was locked after too many failures.
    PinLocked = "pin.locked",
    /// A PIN was unlocked.
    PinUnlocked = "pin.unlocked",
    /// A PIN comparison failed.
    PinVerificationFailed = "pin.verification_failed",
    /// A relay reached its destination and got an answer (any status).
    RelayCompleted = "relay.completed",
    /// A relay failed on the way: no connection, a timeout, an unreadable answer.
    RelayFailed = "relay.failed",
    /// A request-signing key was registered.
    SigningKeyCreated = "signing_key.created",
    /// A request-signing key was revoked.
    SigningKeyRevoked = "signing_key.revoked",
    /// A card, address, email, device, key or account was suspended.
    SuspensionCreated = "suspension.created",
    /// A suspension ended: lifted by someone, or at its expiry.
    SuspensionLifted = "suspension.lifted",
    /// A webhook endpoint was disabled after failing or being gone.
    WebhookEndpointDisabled = "webhook_endpoint.disabled",
}

impl EventType {
    /// The type named `s`, if the server emits it.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.as_str() == s)
    }

    /// Whether a webhook endpoint may subscribe to it: every type but the OTP event,
    /// which goes only to the account's OTP delivery endpoint.
    pub fn subscribable(self) -> bool {
        self != Self::OtpCreated
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entry of `enabled_events`, for the schema: `*` (every type but `otp.created`) or
/// one type an endpoint may subscribe to.
pub struct EventSelector;

impl utoipa::PartialSchema for EventSelector {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let names = std::iter::once("*").chain(
            EventType::ALL
                .iter()
                .filter(|t| t.subscribable())
                .map(|t| t.as_str()),
        );
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .description(Some(
                "`*` (every type but `otp.created`) or one event type.",
            ))
            .into()
    }
}

impl ToSchema for EventSelector {}

/// Checks the event types an endpoint asks for: `*` or types the server emits, never
/// `otp.created`; 1–100 of them. Sorted, without duplicates, as stored.
pub fn check_subscriptions(types: &[String]) -> Result<Vec<String>> {
    if types.is_empty() || types.len() > 100 {
        return Err(ServiceError::InvalidParameter);
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        let ok = t == "*" || EventType::parse(t).is_some_and(EventType::subscribable);
        if !ok {
            return Err(ServiceError::InvalidParameter);
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// The `object` of an event: always `event`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventObject {
    /// An event.
    #[default]
    Event,
}

/// The JSON of an event as stored and delivered. Fields in alphabetical order, as the
/// event JSON has always had them.
#[derive(Serialize)]
pub struct EventJson<'a, T: Serialize> {
    /// Unix seconds.
    pub created: i64,
    /// What it is about.
    pub data: EventData<T>,
    /// `evt_…`.
    pub id: &'a str,
    /// `test` or `live`.
    pub mode: &'a str,
    /// Always `event`.
    pub object: EventObject,
    /// The type.
    #[serde(rename = "type")]
    pub event_type: EventType,
}

/// `data` of an event: the object it is about.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventData<T> {
    /// The object the event is about (a card, an API key, an endpoint, …), as its own
    /// view at the time of the event.
    pub object: T,
}

/// An event, as `GET /v1/events` returns it: the stored JSON, less the OTP code's
/// ciphertext.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Unix seconds.
    pub created: i64,
    /// What it is about.
    #[schema(value_type = EventData<Object>)]
    pub data: EventData<serde_json::Map<String, serde_json::Value>>,
    /// `evt_…`.
    #[schema(pattern = "^evt_[0-9a-f]{32}$")]
    pub id: String,
    /// `test` or `live`.
    #[schema(value_type = crate::service::ModeName)]
    pub mode: String,
    /// Always `event`.
    pub object: EventObject,
    /// The type.
    #[serde(rename = "type")]
    #[schema(value_type = EventType)]
    pub event_type: String,
}

impl EventView {
    /// The view of a stored event. The OTP code travels only to the OTP endpoint; not
    /// even its ciphertext is shown.
    pub fn from_stored(data: &str) -> Result<Self> {
        let mut v: Self = serde_json::from_str(data).map_err(|e| ServiceError::internal(e))?;
        v.data.object.remove("sealed_code");
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_subscriptions_refuse_unknown_and_otp() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
            let json = serde_json::to_string(t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(
            check_subscriptions(&["card.created".into(), "*".into(), "card.created".into()])
                .unwrap(),
            vec!["*".to_owned(), "card.created".to_owned()]
        );
        assert!(check_subscriptions(&["otp.created".into()]).is_err());
        assert!(check_subscriptions(&["card.exploded".into()]).is_err());
        assert!(check_subscriptions(&[]).is_err());
    }
}
