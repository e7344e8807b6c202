//! What the relay scenarios need before they are measured: the echo processor, approved
//! as a test-only destination of the bench's account through the admin API, a card to
//! relay, and the two request bodies, each tried once.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use crate::conn::{Conn, Target};
use crate::echo::{EchoProcessor, EchoThread};
use crate::load::RelayPlan;

/// Threads of the echo processor's runtime: as many as the load generator's, so that
/// the echo does not cap `relay-direct` below what the client can send.
pub const ECHO_THREADS: usize = 2;

/// The processor's path.
const PATH: &str = "/v1/charges";

/// A payment request of about 300 bytes with one card's number and expiry, `ID` standing
/// for the card's id.
const TEMPLATE: &str = r#"{"amount":2599,"currency":"EUR","reference":"bench-relay-000001","capture":true,"card":{"number":"{{ID:number}}","exp_month":"{{ID:exp_month}}","exp_year":"{{ID:exp_year}}"},"billing":{"name":"Bench Customer","line1":"1 Example Street","city":"Example City","postal_code":"12345","country":"DE"},"metadata":{"order":"000001","channel":"bench"}}"#;

const EXP_MONTH: u8 = 12;
const EXP_YEAR: u16 = 2030;

/// The admin key and the account whose relay destinations the bench sets.
pub struct Admin {
    pub key: HeaderValue,
    pub account: String,
}

/// The echo processor, the requests, and the account's destinations as they were
/// before (put back by [`Relay::restore`]).
pub struct Relay {
    pub echo: EchoThread,
    pub plan: RelayPlan,
    before: Vec<Value>,
}

pub(crate) async fn call(
    target: &Arc<Target>,
    method: Method,
    path: &str,
    auth: &HeaderValue,
    body: Option<Value>,
) -> Result<(StatusCode, Bytes)> {
    let req = target
        .request(
            method.clone(),
            path,
            Some(auth),
            body.map(|b| Bytes::from(b.to_string())),
        )
        .map_err(|e| anyhow::anyhow!(e))?;
    Conn::new(target.clone())
        .send(req)
        .await
        .map_err(|e| anyhow::anyhow!("{method} {path}: {e}"))
}

pub(crate) fn expect(
    what: &str,
    status: StatusCode,
    body: &[u8],
    want: &[StatusCode],
) -> Result<Value> {
    if !want.contains(&status) {
        bail!(
            "{what} answered {status}: {}",
            String::from_utf8_lossy(body)
                .chars()
                .take(300)
                .collect::<String>()
        );
    }
    serde_json::from_slice(body).with_context(|| format!("{what}: not JSON"))
}

/// A destination as the admin API lists it, as the admin API takes it back.
fn as_input(listed: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["host", "port", "path_prefix", "ca_cert_pem", "test_only"] {
        if let Some(v) = listed.get(k).filter(|v| !v.is_null()) {
            out.insert(k.to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

impl Relay {
    /// Starts the echo processor, adds it to the account's destinations (test-only, its
    /// own CA), tokenizes `pan`, and sends one request of each scenario to check that the
    /// processor gets the card's values and the caller only a mask.
    pub async fn setup(
        target: &Arc<Target>,
        auth: &HeaderValue,
        admin: &Admin,
        pan: &str,
        http2: bool,
    ) -> Result<Self> {
        let echo = EchoProcessor::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?
            .spawn_thread(ECHO_THREADS)?;
        let port = echo.addr.port();
        let path = format!("/v1/admin/accounts/{}/relay_destinations", admin.account);
        let (status, body) = call(target, Method::GET, &path, &admin.key, None).await?;
        let listed = expect("GET relay_destinations", status, &body, &[StatusCode::OK])?;
        let before: Vec<Value> = listed
            .get("data")
            .and_then(Value::as_array)
            .map(|d| d.iter().map(as_input).collect())
            .unwrap_or_default();
        let mut list = before.clone();
        list.push(
            json!({"host": "127.0.0.1", "port": port, "path_prefix": PATH,
            "ca_cert_pem": echo.ca_pem, "test_only": true}),
        );
        let (status, body) = call(
            target,
            Method::PUT,
            &path,
            &admin.key,
            Some(json!({ "destinations": list })),
        )
        .await?;
        expect("PUT relay_destinations", status, &body, &[StatusCode::OK])?;

        let card = json!({"number": pan, "exp_month": EXP_MONTH, "exp_year": EXP_YEAR});
        let (status, body) = call(target, Method::POST, "/v1/cards", auth, Some(card)).await?;
        let card = expect(
            "POST /v1/cards",
            status,
            &body,
            &[StatusCode::CREATED, StatusCode::OK],
        )?;
        let id = card
            .get("id")
            .and_then(Value::as_str)
            .context("POST /v1/cards: no id")?;

        let template: Value =
            serde_json::from_str(&TEMPLATE.replace("{{ID:", &format!("{{{{{id}:")))
                .context("the relay template")?;
        let relay_body = json!({
            "destination": format!("https://127.0.0.1:{port}{PATH}"),
            "body": template,
        })
        .to_string();
        let direct_body = TEMPLATE
            .replace("{{ID:number}}", pan)
            .replace("{{ID:exp_month}}", &format!("{EXP_MONTH:02}"))
            .replace("{{ID:exp_year}}", &format!("{EXP_YEAR:04}"));
        let url = format!("https://127.0.0.1:{port}");
        let plan = RelayPlan {
            echo: Arc::new(Target::with_ca_pem(&url, &echo.ca_pem, http2).await?),
            path: PATH.to_owned(),
            relay_body: Bytes::from(relay_body),
            direct_body: Bytes::from(direct_body),
        };
        let relay = Self { echo, plan, before };
        relay.check(target, auth, pan).await?;
        Ok(relay)
    }

    /// One request of each kind: the processor receives the number, the caller a mask.
    async fn check(&self, target: &Arc<Target>, auth: &HeaderValue, pan: &str) -> Result<()> {
        let last4 = pan.get(pan.len().saturating_sub(4)..).unwrap_or_default();
        let req = target
            .request(
                Method::POST,
                "/v1/relay",
                Some(auth),
                Some(self.plan.relay_body.clone()),
            )
            .map_err(|e| anyhow::anyhow!(e))?;
        let (status, body) = Conn::new(target.clone())
            .send(req)
            .await
            .map_err(|e| anyhow::anyhow!("POST /v1/relay: {e}"))?;
        let echoed = expect("POST /v1/relay", status, &body, &[StatusCode::OK])?;
        let sent = echoed.get("body").and_then(Value::as_str).unwrap_or("");
        if String::from_utf8_lossy(&body).contains(pan) {
            bail!("POST /v1/relay returned the card number");
        }
        if !sent.contains(&format!("XXXX{last4}")) || !sent.contains(r#""exp_year":"2030""#) {
            bail!("the echo processor did not receive the card's values: {sent}");
        }
        let req = self
            .plan
            .echo
            .request(
                Method::POST,
                &self.plan.path,
                None,
                Some(self.plan.direct_body.clone()),
            )
            .map_err(|e| anyhow::anyhow!(e))?;
        let (status, body) = Conn::new(self.plan.echo.clone())
            .send(req)
            .await
            .map_err(|e| anyhow::anyhow!("POST to the echo processor: {e}"))?;
        let echoed = expect("the echo processor", status, &body, &[StatusCode::OK])?;
        let sent = echoed.get("body").and_then(Value::as_str).unwrap_or("");
        if !sent.contains(pan) {
            bail!("the echo processor did not echo the direct request: {sent}");
        }
        Ok(())
    }

    /// Puts the account's destinations back as they were.
    pub async fn restore(&self, target: &Arc<Target>, admin: &Admin) -> Result<()> {
        let path = format!("/v1/admin/accounts/{}/relay_destinations", admin.account);
        let (status, body) = call(
            target,
            Method::PUT,
            &path,
            &admin.key,
            Some(json!({ "destinations": self.before })),
        )
        .await?;
        expect("PUT relay_destinations", status, &body, &[StatusCode::OK])?;
        Ok(())
    }
}
