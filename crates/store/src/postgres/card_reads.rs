//! Card reads by id, coalesced. A card read is most of what `GET /v1/cards/{id}` (and a
//! reveal, and each card a relay sends) asks of the database, and on PostgreSQL each read
//! is a round trip: a send that wakes a database backend, a statement, an answer. Under
//! load, most of that is fixed cost per statement, not per row. So reads queue here, and
//! one lane takes whatever is queued when it is free (up to [`MAX_BATCH`]) and reads it
//! with one statement (`WHERE id = ANY($1)`). Nothing waits for a batch to fill: a read
//! that finds the lane free goes at once, alone; reads gather only while the lane is
//! busy, which is when gathering them pays. One lane beat two and four where the
//! database shares the server's cores (BENCHMARKS.md).
//!
//! The statement runs in the lane's task, never in the caller's: a request that gives up
//! (its client went away) does not cut a statement short, so the connection stays
//! usable. A failed statement fails every read of its batch (`503` to each request), as
//! each would have failed on its own connection.

use std::sync::Arc;

use strongroom_core::Mode;
use tokio::sync::{mpsc, oneshot};

use super::readers::Readers;
use crate::exec::{Arg, Exec};
use crate::model::CardRecord;
use crate::sql::FromRow;
use crate::{StoreError, StoreResult};

/// The most reads one statement answers.
const MAX_BATCH: usize = 64;
/// Reads that may wait for the lane before a caller waits to queue.
const QUEUE: usize = 4096;

/// One read: the card `id` of `account_id` in `mode`, and where its answer goes.
struct Ask {
    account_id: String,
    mode: Mode,
    id: String,
    reply: oneshot::Sender<StoreResult<Option<CardRecord>>>,
}

/// The queue the lane reads from.
#[derive(Debug, Clone)]
pub(crate) struct CardReads {
    tx: mpsc::Sender<Ask>,
}

fn closed() -> StoreError {
    StoreError::Unavailable("pool closed".into())
}

impl CardReads {
    /// Starts the lane, reading through `readers` (it holds one of their connections
    /// while it reads). It stops when the last handle to the queue is dropped.
    pub(crate) fn start(readers: Arc<Readers>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(lane(readers, rx));
        Self { tx }
    }

    /// The card `id` of `account_id` in `mode`, if there is one.
    pub(crate) async fn get(
        &self,
        account_id: &str,
        mode: Mode,
        id: &str,
    ) -> StoreResult<Option<CardRecord>> {
        let (reply, answer) = oneshot::channel();
        let ask = Ask {
            account_id: account_id.to_owned(),
            mode,
            id: id.to_owned(),
            reply,
        };
        self.tx.send(ask).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// Takes what is queued when it is free, reads it, answers it; until the queue closes.
async fn lane(readers: Arc<Readers>, mut rx: mpsc::Receiver<Ask>) {
    let mut batch: Vec<Ask> = Vec::with_capacity(MAX_BATCH);
    while let Some(ask) = rx.recv().await {
        batch.push(ask);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(ask) => batch.push(ask),
                Err(_) => break,
            }
        }
        // Asks whose caller gave up are dropped unread.
        batch.retain(|a| !a.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let read = read(&readers, &batch).await;
        for ask in batch.drain(..) {
            let own = |c: &&CardRecord| {
                c.id == ask.id && c.account_id == ask.account_id && c.mode == ask.mode
            };
            let answer = match &read {
                Ok(cards) => Ok(cards.iter().find(own).cloned()),
                Err(e) => Err(e.clone()),
            };
            // The caller may have gone since: nothing to answer then.
            drop(ask.reply.send(answer));
        }
    }
}

/// The cards of `batch`'s ids (of any account: each ask is matched to its own after).
async fn read(readers: &Arc<Readers>, batch: &[Ask]) -> StoreResult<Vec<CardRecord>> {
    let ids: Vec<&str> = batch.iter().map(|a| a.id.as_str()).collect();
    let mut conn = readers.acquire().await?;
    let rows = conn
        .all(crate::sql::GET_CARDS_BY_ID, &[Arg::Texts(&ids)])
        .await?;
    rows.iter().map(CardRecord::from_row).collect()
}
