//! The service layer: where a key meets a record. Handlers parse and authorise;
//! these functions do the work.

pub mod accounts;
pub mod assessments;
pub mod audit;
pub mod cards;
pub mod client_sessions;
pub mod controls;
pub mod cvc;
pub mod data_keys;
pub mod egress;
pub mod error;
pub mod events;
pub mod inbound;
pub mod integrity;
pub mod key_imports;
pub mod key_inventory;
pub mod otp;
pub mod otp_code;
pub mod pin;
pub mod relay;
pub mod rewrap;
pub mod risk_data;
pub mod risk_failures;
pub mod risk_lists;
pub mod risk_rules;
pub mod session_params;
pub mod suspensions;
pub mod terminals;
pub mod tokens;
pub mod webhooks;

pub use error::{Result, ServiceError};

/// The `object` of every list: always `"list"`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListObject {
    /// A page of items.
    #[default]
    List,
}

/// The one list envelope: `{object: "list", data, has_more}`. Every listing returns it;
/// `has_more` says whether another page follows (`starting_after` = the last `id`).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct List<T> {
    /// Always `list`.
    pub object: ListObject,
    /// The items of this page, in the listing's order.
    pub data: Vec<T>,
    /// Whether more items follow this page.
    pub has_more: bool,
}

impl<T> List<T> {
    /// A page, with whether more follow.
    pub fn page(data: Vec<T>, has_more: bool) -> Self {
        Self {
            object: ListObject::List,
            data,
            has_more,
        }
    }

    /// A complete listing (nothing more to page through).
    pub fn all(data: Vec<T>) -> Self {
        Self::page(data, false)
    }
}

/// A name people give (a custodian, an imported key): 1 to 100 characters once trimmed,
/// none a control character.
pub fn display_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ServiceError::InvalidParameter);
    }
    Ok(name.to_owned())
}

/// Unix seconds from milliseconds.
pub fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// Declares a one-value enum that names what a view is (`"object": "api_key"`): in the
/// schema it is a string with that single value.
macro_rules! object_name {
    ($(#[$doc:meta])* $name:ident = $value:tt) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            #[doc = concat!("`", $value, "`")]
            #[default]
            #[serde(rename = $value)]
            Value,
        }
    };
}
pub(crate) use object_name;

/// `test` or `live`, in views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    /// Test mode.
    Test,
    /// Live mode.
    Live,
}

impl From<strongroom_core::Mode> for ModeName {
    fn from(m: strongroom_core::Mode) -> Self {
        match m {
            strongroom_core::Mode::Test => Self::Test,
            strongroom_core::Mode::Live => Self::Live,
        }
    }
}
