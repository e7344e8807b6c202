//! The background re-wrap worker: after a rotation, moves every card to the newest
//! cards and fingerprint key versions, a batch per transaction, without stopping
//! traffic. Progress shows in `GET /v1/admin/accounts/{id}/keys`.

use crate::error::ApiResult;
use crate::service::cards;
use crate::state::AppState;
use strongroom_store::{KeyPurpose, KeyState, VaultStore};

/// Starts the worker on the runtime.
pub fn spawn(state: AppState) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = run_once(&state).await {
                tracing::warn!(code = e.code, "re-wrap pass failed; will retry");
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
pub async fn run_once(state: &AppState) -> ApiResult<u64> {
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

async fn rewrap_account(state: &AppState, account_id: &str) -> ApiResult<u64> {
    let keys = state.keyring().reload(state, account_id).await?;
    let batch = state.config().rewrap_batch.max(1);
    let mut moved = 0;
    for purpose in KeyPurpose::ALL {
        if purpose == KeyPurpose::Pin {
            moved += crate::service::pin::rewrap(state, &keys, account_id, batch).await?;
            continue;
        }
        let (writer, _) = keys.writer(purpose)?;
        loop {
            let cards = state
                .store()
                .cards_for_rewrap(account_id, purpose, writer, batch)
                .await?;
            if cards.is_empty() {
                break;
            }
            let updates = cards
                .iter()
                .map(|c| cards::reseal(&keys, c))
                .collect::<ApiResult<Vec<_>>>()?;
            let applied = state.store().rewrap_cards(&updates).await?;
            moved += applied;
            state.metrics().rewrapped(applied);
            if applied == 0 && cards.len() < usize::try_from(batch).unwrap_or(usize::MAX) {
                // Everything left was changed under us (deleted or re-wrapped elsewhere).
                break;
            }
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
