//! What browsers may reach (docs/client-side.md): the hosted fields, strongroom.js and
//! the client session card route, nothing else. A request a browser makes from a page
//! says so (`Sec-Fetch-Site`, or an `Origin`); on any other route it is refused before
//! authentication, so a page cannot even probe the API with a key a shopper pasted.
//! CORS on the card route answers only the origins the session allows.

use crate::routes::client_sessions::CARDS_ROUTE;
use crate::service::client_sessions;
use crate::state::AppState;
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ORIGIN, VARY,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::Response;

/// The routes of the hosted field pages and scripts (answered without a key).
pub const PAGE_ROUTES: &[&str] = &[
    "/elements/v1/{field}",
    "/elements/v1/elements.js",
    "/js/v1/strongroom.js",
    "/js/v1/strongroom.d.ts",
];

/// The scripts: the same bytes for everyone, so no per-address quota.
pub const STATIC_ROUTES: &[&str] = &[
    "/elements/v1/elements.js",
    "/js/v1/strongroom.js",
    "/js/v1/strongroom.d.ts",
];

/// Whether browsers may reach `route`.
pub fn reachable(route: &str) -> bool {
    route == CARDS_ROUTE || PAGE_ROUTES.contains(&route)
}

/// Whether a page in a browser made the request: fetch metadata says so (a navigation
/// the user typed is `Sec-Fetch-Site: none` and passes), or it carries an `Origin`,
/// which browsers send on every cross-origin request and every POST.
pub fn from_page(headers: &HeaderMap) -> bool {
    let site = headers
        .get("sec-fetch-site")
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    matches!(site, b"same-origin" | b"same-site" | b"cross-site") || headers.contains_key(ORIGIN)
}

/// The session id in a card route's path (`/v1/client_sessions/{id}/cards`).
pub fn session_of(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/client_sessions/")?
        .strip_suffix("/cards")
        .filter(|id| !id.contains('/'))
}

/// What the gateway keeps of a card route request for its CORS answer.
pub struct Cors {
    origin: HeaderValue,
    session: String,
    preflight: bool,
}

impl Cors {
    /// The CORS context of a request, if it is a cross-origin one to the card route.
    pub fn of(route: &str, parts: &Parts) -> Option<Self> {
        if route != CARDS_ROUTE {
            return None;
        }
        Some(Self {
            origin: parts.headers.get(ORIGIN)?.clone(),
            session: session_of(parts.uri.path())?.to_owned(),
            preflight: parts.method == Method::OPTIONS,
        })
    }

    /// Adds the `Access-Control-*` headers to `res` when the session allows the origin
    /// (errors included, so that a page reads a `429` or `409` rather than a network
    /// error). Anything else, a store that cannot answer included, gets none, and the
    /// browser keeps the answer from the page.
    pub async fn answer(self, state: &AppState, res: &mut Response) {
        res.headers_mut()
            .append(VARY, HeaderValue::from_static("Origin"));
        let Ok(origin) = self.origin.to_str() else {
            return;
        };
        let allowed = matches!(
            client_sessions::find(state, &self.session).await,
            Ok(Some(s)) if s.allows_origin(origin)
        );
        if !allowed {
            return;
        }
        let h = res.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.origin);
        if self.preflight {
            h.insert(
                ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST"),
            );
            h.insert(
                ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, idempotency-key"),
            );
            h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        } else {
            h.insert(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(
                    "request-id, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset",
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_comes_only_from_a_card_route_path() {
        let id = "cs_0190f3a4b5c6d7e8f9a0b1c2d3e4f5a6";
        assert_eq!(
            session_of(&format!("/v1/client_sessions/{id}/cards")),
            Some(id)
        );
        assert_eq!(session_of(&format!("/v1/client_sessions/{id}")), None);
        assert_eq!(session_of("/v1/client_sessions/a/b/cards"), None);
    }

    #[test]
    fn pages_are_told_apart_from_servers() {
        let mut h = HeaderMap::new();
        assert!(!from_page(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("none"));
        assert!(!from_page(&h), "a typed navigation is no page's request");
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(from_page(&h));
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_static("https://shop.example"));
        assert!(from_page(&h));
    }
}
