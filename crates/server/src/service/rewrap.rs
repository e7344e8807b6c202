//! The background re-wrap worker: after a rotation, moves every card to the newest
//! cards and fingerprint key versions, a batch per transaction, without stopping
//! traffic. Progress shows in `GET /v1/admin/accounts/{id}/keys`.

use crate::keyring::AccountKeys;
use crate::service::Result;
use crate::service::cards;
use crate::state::AppState;
use strongroom_store::{KeyPurpose, KeyState, Mode, RewrapQuery, VaultStore};

/// Starts the worker on the runtime.
pub fn spawn(state: AppState) {
    state.clone().spawn_worker(async move {
        loop {
            if let Err(e) = run_once(&state).await {
                tracing::warn!(error = %e, "re-wrap pass failed; will retry");
            }
            let interval = state.config().rewrap_interval;
            tokio::select! {
                () = state.rewrap_wake().notified() => {}
                () = tokio::time::sleep(interval) => {}
            }
        }
    });
}

/// One pass over every account with a non-writer version still in use. Returns how
/// many cards moved.
pub async fn run_once(state: &AppState) -> Result<u64> {
    let mut moved = 0;
    for account in state.store().list_accounts().await? {
        let records = state.store().data_keys(&account.id).await?;
        let stale = records.iter().any(|r| r.state == KeyState::DecryptOnly);
        if !stale {
            continue;
        }
        moved += rewrap_account(state, &account.id).await?;
    }
    Ok(moved)
}

/// One pass over the account's cards of one mode, a batch at a time in id order. The
/// cursor always moves on: a card changed under us (deleted, or re-wrapped by another
/// node) is skipped, and one that is still stale is picked up by the next pass. Cards
/// created during the pass are sealed under the writer version already.
async fn rewrap_mode(
    state: &AppState,
    keys: &AccountKeys,
    account_id: &str,
    purpose: KeyPurpose,
    mode: Mode,
    writer: i64,
    batch: i64,
) -> Result<u64> {
    let mut moved = 0;
    let mut after = String::new();
    loop {
        let q = RewrapQuery {
            mode,
            after: &after,
            below_version: writer,
            limit: batch,
        };
        let cards = state
            .store()
            .cards_for_rewrap(account_id, purpose, &q)
            .await?;
        let Some(last) = cards.last() else {
            return Ok(moved);
        };
        after.clone_from(&last.id);
        let updates = cards
            .iter()
            .map(|c| cards::reseal(keys, c))
            .collect::<Result<Vec<_>>>()?;
        // The re-wrap worker's own write, outside any request: it carries no record.
        #[allow(clippy::disallowed_methods)]
        let applied = state.store().unaudited().rewrap_cards(&updates).await?;
        moved += applied;
        state.metrics().rewrapped(applied);
        if cards.len() < usize::try_from(batch).unwrap_or(usize::MAX) {
            return Ok(moved);
        }
    }
}

async fn rewrap_account(state: &AppState, account_id: &str) -> Result<u64> {
    let keys = state.keyring().reload(account_id).await?;
    let batch = state.config().rewrap_batch.max(1);
    let mut moved = 0;
    for purpose in KeyPurpose::ALL {
        if purpose == KeyPurpose::Pin {
            moved += crate::service::pin::rewrap(state, &keys, account_id, batch).await?;
            continue;
        }
        let (writer, _) = keys.writer(purpose)?;
        let usage = state.store().key_usage(account_id, purpose).await?;
        if !usage.iter().any(|&(v, n)| v < writer && n > 0) {
            continue;
        }
        for mode in Mode::ALL {
            moved += rewrap_mode(state, &keys, account_id, purpose, mode, writer, batch).await?;
        }
    }
    if moved > 0 {
        tracing::info!(
            account = account_id,
            moved,
            "re-wrap moved records to the newest key versions"
        );
    }
    Ok(moved)
}
