//! A single node's velocity counters across a restart (docs/risk.md, "Assessments"): on
//! the embedded SQLite store one node serves, and its counters live in its memory; they
//! are written to the store at shutdown and read back (and cleared) at start, so a
//! restart does not hand a card tester fresh windows. Several nodes share Redis instead,
//! which outlives any of them; a crash loses what a node held since it started (the
//! suspensions its rules made are in the store either way).

use crate::risk::velocity::{KeptTrail, Velocity};
use crate::state::AppState;
use strongroom_store::{KeptRow, Store, VelocitySnapshotStore};

/// Bytes of one entry: its time and its card or amount, little-endian.
const ENTRY: usize = 16;

fn encode(entries: &[(i64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY);
    for (at, v) in entries {
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> Vec<(i64, u64)> {
    bytes
        .chunks_exact(ENTRY)
        .filter_map(|c| {
            let (at, v) = c.split_at(8);
            Some((
                i64::from_le_bytes(at.try_into().ok()?),
                u64::from_le_bytes(v.try_into().ok()?),
            ))
        })
        .collect()
}

/// The node's in-memory counters when it is the one node of a SQLite store.
fn memory(state: &AppState) -> Option<&crate::risk::velocity::MemoryVelocity> {
    match (state.store(), state.velocity()) {
        (Store::Sqlite(_), Velocity::Memory(m)) => Some(m),
        _ => None,
    }
}

/// Reads the kept counters back into memory and clears them (at start).
pub async fn restore(state: &AppState) {
    let Some(m) = memory(state) else { return };
    let rows = match state.store().velocity_snapshot().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "the kept risk counters were not read");
            return;
        }
    };
    if rows.is_empty() {
        return;
    }
    let n = rows.len();
    m.restore(
        rows.into_iter()
            .map(|r| KeptTrail {
                table: r.table,
                subject: r.subject,
                entries: decode(&r.entries),
            })
            .collect(),
    );
    if let Err(e) = write(state, Vec::new()).await {
        tracing::warn!(error = %e, "the kept risk counters were not cleared");
    }
    tracing::info!(subjects = n, "risk counters restored from the store");
}

/// Writes the counters to the store (at shutdown).
pub async fn keep(state: &AppState) {
    let Some(m) = memory(state) else { return };
    let rows: Vec<KeptRow> = m
        .snapshot(state.now_ms())
        .into_iter()
        .map(|t| KeptRow {
            table: t.table,
            subject: t.subject,
            entries: encode(&t.entries),
        })
        .collect();
    let n = rows.len();
    match write(state, rows).await {
        Ok(()) => tracing::info!(subjects = n, "risk counters kept in the store"),
        Err(e) => tracing::warn!(error = %e, "the risk counters were not kept"),
    }
}

async fn write(state: &AppState, rows: Vec<KeptRow>) -> strongroom_store::StoreResult<()> {
    #[allow(
        clippy::disallowed_methods,
        reason = "start-up and shutdown work, outside any request"
    )]
    let writes = state.store().unaudited();
    writes.keep_velocity(rows).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_torn_tail_is_dropped() {
        let e = vec![(1_767_225_600_000, 42), (-5, u64::MAX)];
        let mut bytes = encode(&e);
        assert_eq!(decode(&bytes), e);
        bytes.push(7);
        assert_eq!(decode(&bytes), e);
    }
}
