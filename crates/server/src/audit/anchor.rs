//! The audit anchor: every checkpoint the server stores is also appended, as one JSON
//! line, to a file outside the database (`audit-anchor.jsonl` beside the SQLite database
//! or in the `strongroom dev` data directory by default; `[audit] anchor_path` for
//! another place). Someone who can write the database but not this file cannot cut the
//! log's tail together with its checkpoints unnoticed: `strongroom audit verify` holds
//! the database to every anchored checkpoint. Each line is a signed checkpoint, so an
//! edited line fails verification too.
//!
//! The file is opened for appending only, created 0600 (narrowed to 0600 at start if
//! found wider), and synced to disk before a checkpoint counts as anchored.

use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use strongroom_store::{AuditCheckpoint, CheckpointLink};

/// The anchor's file name in a data directory.
pub const FILE_NAME: &str = "audit-anchor.jsonl";

/// The default anchor for a store URL: beside an SQLite database file; none for
/// PostgreSQL, which has no directory of its own on this machine.
pub fn default_path(store_url: &str) -> Option<PathBuf> {
    let file = store_url
        .strip_prefix("sqlite://")
        .or_else(|| store_url.strip_prefix("sqlite:"))?;
    let dir = Path::new(file).parent()?;
    Some(dir.join(FILE_NAME))
}

/// One anchored checkpoint, as written: binary fields in hex.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    count: i64,
    seq: i64,
    time_ms: i64,
    hash: String,
    prev: String,
    public_key: String,
    signature: String,
}

impl Line {
    fn of(cp: &AuditCheckpoint, link: &CheckpointLink) -> Self {
        Self {
            count: link.count,
            seq: cp.seq,
            time_ms: cp.time_ms,
            hash: hex::encode(&cp.hash),
            prev: hex::encode(&link.prev),
            public_key: hex::encode(&cp.public_key),
            signature: hex::encode(&cp.signature),
        }
    }

    fn checkpoint(self) -> Option<AuditCheckpoint> {
        Some(AuditCheckpoint {
            seq: self.seq,
            hash: hex::decode(self.hash).ok()?,
            time_ms: self.time_ms,
            public_key: hex::decode(self.public_key).ok()?,
            signature: hex::decode(self.signature).ok()?,
            link: Some(CheckpointLink {
                prev: hex::decode(self.prev).ok()?,
                count: self.count,
            }),
        })
    }
}

fn open(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Makes sure the anchor can be appended to: creates it (0600) if missing, narrows it to
/// 0600 if an older run or an operator left it wider. Blocking.
pub fn prepare(path: &Path) -> io::Result<()> {
    let created = !path.exists();
    let file = open(path)?;
    let mode = file.metadata()?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    if created {
        file.sync_all()?;
        sync_dir(path)?;
    }
    Ok(())
}

/// The new file's directory entry is durable only once the directory is synced.
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => std::fs::File::open(".")?.sync_all(),
    }
}

/// Appends a chained checkpoint as one line and syncs it to disk. Blocking.
pub fn append(path: &Path, cp: &AuditCheckpoint) -> io::Result<()> {
    let Some(link) = &cp.link else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "only chained checkpoints are anchored",
        ));
    };
    let mut line = serde_json::to_vec(&Line::of(cp, link)).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut file = open(path)?;
    // One write of the whole line: with O_APPEND it lands after whatever is there.
    file.write_all(&line)?;
    file.sync_data()
}

/// One line of an anchor file.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its line number, from 1.
    pub line: usize,
    /// The checkpoint it holds; `None` if the line is not one.
    pub checkpoint: Option<AuditCheckpoint>,
}

/// What an anchor file holds.
#[derive(Debug, Clone, Default)]
pub struct Anchor {
    /// Every complete line, in order.
    pub entries: Vec<Entry>,
    /// Whether the file ends in a partial line (a crash while appending): it is left out,
    /// since its checkpoint is in the database or was never stored there.
    pub torn_tail: bool,
}

/// Reads an anchor file. Blocking.
pub fn read(path: &Path) -> io::Result<Anchor> {
    let text = std::fs::read(path)?;
    let mut anchor = Anchor::default();
    let mut lines = text.split(|b| *b == b'\n').peekable();
    let mut n = 0;
    while let Some(raw) = lines.next() {
        n += 1;
        if lines.peek().is_none() {
            // After the last newline: empty, or a line the writer never finished.
            anchor.torn_tail = !raw.is_empty();
            break;
        }
        let checkpoint = serde_json::from_slice::<Line>(raw)
            .ok()
            .and_then(Line::checkpoint);
        anchor.entries.push(Entry {
            line: n,
            checkpoint,
        });
    }
    Ok(anchor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(count: i64) -> AuditCheckpoint {
        AuditCheckpoint {
            seq: count * 10,
            hash: vec![1; 32],
            time_ms: 1_700_000_000_000,
            public_key: vec![2; 32],
            signature: vec![3; 64],
            link: Some(CheckpointLink {
                prev: vec![4; 32],
                count,
            }),
        }
    }

    #[test]
    fn lines_round_trip_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        prepare(&path).unwrap();
        append(&path, &cp(1)).unwrap();
        append(&path, &cp(2)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let a = read(&path).unwrap();
        assert!(!a.torn_tail);
        let got: Vec<_> = a.entries.into_iter().map(|e| e.checkpoint).collect();
        assert_eq!(got, vec![Some(cp(1)), Some(cp(2))]);
        // An unchained checkpoint is not anchored.
        let mut old = cp(3);
        old.link = None;
        assert!(append(&path, &old).is_err());
    }

    #[test]
    fn a_wider_file_is_narrowed_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "not json\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        prepare(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        append(&path, &cp(1)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"count\":2").unwrap();
        let a = read(&path).unwrap();
        assert!(a.torn_tail);
        assert_eq!(a.entries.len(), 2);
        assert_eq!(a.entries[0].line, 1);
        assert!(a.entries[0].checkpoint.is_none());
        assert_eq!(a.entries[1].checkpoint, Some(cp(1)));
    }

    #[test]
    fn the_default_anchor_sits_beside_an_sqlite_database() {
        assert_eq!(
            default_path("sqlite:///var/lib/strongroom/strongroom.db"),
            Some(PathBuf::from("/var/lib/strongroom").join(FILE_NAME))
        );
        assert_eq!(default_path("postgres://db/strongroom"), None);
    }
}
