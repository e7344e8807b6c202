//! Client sessions (docs/client-side.md): a merchant's back end fixes the parameters of
//! a browser's card collection (`params`), and the browser presents only the client
//! secret, kept here as a keyed digest. Each session collects at most `max_cards` cards
//! before `expires_ms`; the slot is claimed in the same write as the card.
//!
//! Reads run on a pooled connection; writes go through the one writer as
//! [`crate::sql::WriteOp::ClientSession`].

use crate::exec::{Exec, RowGet, args};
use crate::sql::{self, FromRow};
use crate::{CardRecord, EventRecord, InsertCard, StoreResult};
use strongroom_core::Mode;

/// One client session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSessionRecord {
    /// `cs_…`
    pub id: String,
    /// The account it collects cards for.
    pub account_id: String,
    /// The mode (the creating key's).
    pub mode: Mode,
    /// Keyed digest of the client secret.
    pub secret_digest: Vec<u8>,
    /// The fixed parameters, as the server's JSON. Nothing secret.
    pub params: String,
    /// How many cards it may collect.
    pub max_cards: i64,
    /// How many it has collected.
    pub cards_collected: i64,
    /// It collects nothing from this time on.
    pub expires_ms: i64,
    /// When it was made.
    pub created_ms: i64,
}

/// The client sessions' storage reads.
#[allow(async_fn_in_trait)]
pub trait ClientSessionStore: Send + Sync {
    /// A session by id, whatever its account.
    async fn client_session(&self, id: &str) -> StoreResult<Option<ClientSessionRecord>>;
    /// The cards a session collected, in the order it collected them.
    async fn client_session_cards(&self, id: &str) -> StoreResult<Vec<String>>;
}

/// What collecting a card through a session did.
// Made once per collected card and moved once to its caller: boxing would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Collected {
    /// The session took the card (new or already vaulted), and counts it.
    Card(InsertCard),
    /// The session had expired or collected all its cards before this write: nothing
    /// was written.
    Refused,
}

// ---- SQL ----

const GET: &str = "SELECT id, account_id, mode, secret_digest, params, max_cards, \
     cards_collected, expires_ms, created_ms FROM client_sessions WHERE id = $1";
const CARDS: &str =
    "SELECT card_id FROM client_session_cards WHERE session_id = $1 ORDER BY created_ms, card_id";
const INSERT: &str = "INSERT INTO client_sessions (id, account_id, mode, secret_digest, params, \
     max_cards, cards_collected, expires_ms, created_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
/// Sessions are kept for a while after they expire, so that a back end can still read
/// what one collected; then each new session's write removes a few of the oldest.
const PURGE_CARDS: &str = "DELETE FROM client_session_cards WHERE session_id IN \
     (SELECT id FROM client_sessions WHERE expires_ms < $1 ORDER BY expires_ms LIMIT 16)";
const PURGE: &str = "DELETE FROM client_sessions WHERE id IN \
     (SELECT id FROM client_sessions WHERE expires_ms < $1 ORDER BY expires_ms LIMIT 16)";
/// Claims one of the session's slots, if it is still open.
const CLAIM: &str = "UPDATE client_sessions SET cards_collected = cards_collected + 1 \
     WHERE id = $1 AND account_id = $2 AND mode = $3 AND cards_collected < max_cards \
     AND expires_ms > $4";
const LINK: &str = "INSERT INTO client_session_cards (session_id, card_id, created_ms) \
     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

/// How long a session is kept after it expires.
pub const RETAIN_MS: i64 = 30 * 24 * 60 * 60 * 1000;

impl FromRow for ClientSessionRecord {
    fn from_row<R: RowGet>(r: &R) -> StoreResult<Self> {
        Ok(Self {
            id: r.text(0)?,
            account_id: r.text(1)?,
            mode: sql::mode(&r.text(2)?)?,
            secret_digest: r.blob(3)?,
            params: r.text(4)?,
            max_cards: r.int(5)?,
            cards_collected: r.int(6)?,
            expires_ms: r.int(7)?,
            created_ms: r.int(8)?,
        })
    }
}

pub(crate) async fn client_session<C: Exec>(
    c: &mut C,
    id: &str,
) -> StoreResult<Option<ClientSessionRecord>> {
    sql::one(c, GET, args![id]).await
}

pub(crate) async fn client_session_cards<C: Exec>(c: &mut C, id: &str) -> StoreResult<Vec<String>> {
    let rows = c.all(CARDS, args![id]).await?;
    rows.iter().map(|r| r.text(0)).collect()
}

// ---- writes ----

/// A client session write, applied by the one writer.
#[derive(Debug)]
pub(crate) enum Op {
    /// A new session (and the purge of a few long-expired ones).
    Insert(ClientSessionRecord),
    /// A card collected through a session: the slot, the card (or the vaulted one its
    /// number matches) and the link, in one transaction.
    Collect {
        session_id: String,
        now_ms: i64,
        card: CardRecord,
        dedup: Vec<(i64, Vec<u8>)>,
        events: Vec<EventRecord>,
    },
}

/// Applies `op`.
pub(crate) async fn apply<C: Exec>(c: &mut C, op: &Op) -> StoreResult<Option<Collected>> {
    match op {
        Op::Insert(r) => {
            let horizon = r.created_ms.saturating_sub(RETAIN_MS);
            c.exec(PURGE_CARDS, args![horizon]).await?;
            c.exec(PURGE, args![horizon]).await?;
            let a = args![
                &r.id,
                &r.account_id,
                r.mode.as_str(),
                &r.secret_digest,
                &r.params,
                r.max_cards,
                r.cards_collected,
                r.expires_ms,
                r.created_ms
            ];
            c.exec(INSERT, a).await?;
            Ok(None)
        }
        Op::Collect {
            session_id,
            now_ms,
            card,
            dedup,
            events,
        } => {
            let claim = args![session_id, &card.account_id, card.mode.as_str(), *now_ms];
            if c.exec(CLAIM, claim).await? == 0 {
                return Ok(Some(Collected::Refused));
            }
            let outcome = sql::insert_card(c, None, card, dedup, events).await?;
            let card_id = match &outcome {
                InsertCard::Created(k) | InsertCard::Existing(k) => &k.id,
            };
            c.exec(LINK, args![session_id, card_id, *now_ms]).await?;
            Ok(Some(Collected::Card(outcome)))
        }
    }
}
