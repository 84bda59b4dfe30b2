//! The audit log: every event of [`super::NodeState`] (endpoint state changes, plans, holds,
//! isolation) and every DNS write with its evidence, kept durably in `state_dir/audit.redb`.
//!
//! Contract:
//! - Records are appended by [`AuditLog::append`], which never blocks: it hands the record to a
//!   dedicated thread ([`super::store`]'s committer) that commits whatever has queued in one redb
//!   transaction (fsync per commit, `Durability::Immediate`), at most [`LINGER`] after it came. A
//!   record that [`AuditLog::query`] returns is committed and survives a crash (kill -9, power
//!   loss) of the process: redb's copy-on-write B-trees never expose a partly written
//!   transaction, and the database opens cleanly afterwards.
//! - Each record gets the next sequence number (`seq`), which orders the log and is the paging cursor;
//!   numbers continue across restarts.
//! - The log is bounded: records older than `max_age` and, beyond `max_bytes` of stored records, the
//!   oldest ones are dropped after each commit ([`Limits`]). The file itself does not shrink: redb reuses
//!   the freed pages, so it stays within about twice `max_bytes`.
//! - Records are JSON documents ([`AuditRecord`]); a record that cannot be decoded (written by a later
//!   version) is skipped by queries, never an error.
//!
//! redb (2.x) was chosen over SQLite (a C library and its build) and over an append-only file of our
//! own (torn writes, rotation, and an index for paging would all be ours to get right).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use super::status::{ChangeStatus, RecordStatus, StandingStatus};
use super::store::{self, CommitterHandle};

/// How long the writer waits after a record for more before it commits. At start-up with 10,000
/// endpoints, their first agreed states arrive over a few seconds, a few at a time: one durable
/// commit (fsync, and the bound's pruning) for each handful took a tenth of the CPU (perf) while
/// the first probes were due. A record is exposed to a crash this much longer before it is
/// committed; a flush (shutdown) does not wait.
const LINGER: Duration = Duration::from_millis(100);

/// Default [`Limits::max_age`]: 30 days.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default [`Limits::max_bytes`]: 64 MiB of stored records.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The file name of the log inside `state_dir`.
pub const FILE_NAME: &str = "audit.redb";
/// Most records one query returns.
pub const MAX_PAGE: usize = 1000;

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// How much the log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Records older than this are dropped.
    pub max_age: Duration,
    /// Once the stored records add up to more bytes than this, the oldest are dropped.
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_age: DEFAULT_MAX_AGE,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// One entry of the audit log, as stored and as `GET /api/v1/events` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Sequence number: the order of the log and the paging cursor (0 until stored).
    pub seq: u64,
    /// When, wall clock, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// `[node].id` of the node that recorded it.
    pub node: String,
    /// The service's fqdn (empty for node-wide events such as isolation).
    pub service: String,
    /// The event kind, `snake_case`: `probe_transition`, `endpoint_state`, `plan`, `dns_updated`,
    /// `write_failed`, `hold`, `isolated`, `rejoined`, `note`, … (every [`crate::state::EventKind`]).
    pub kind: String,
    /// For a person.
    pub message: String,
    /// The writer (`[[writer]].name`) of a DNS write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// A DNS write's records and evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<WriteRecord>,
}

/// What one DNS write changed, its result, and why it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WriteRecord {
    /// `ok` or `error`.
    pub result: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The records the plan was made against (TTL `null` when it was not rewritten and is unknown).
    pub before: Vec<RecordStatus>,
    /// The records the write publishes.
    pub after: Vec<RecordStatus>,
    /// The plan's changes, each with its reason.
    pub changes: Vec<ChangeStatus>,
    /// The votes, thresholds and policy behind it.
    pub evidence: Evidence,
}

/// The evidence behind a DNS write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Evidence {
    /// Per endpoint, the agreed state and the votes that made it.
    pub votes: Vec<VoteEvidence>,
    /// Failed probes in a row that mark an endpoint down.
    pub fall: u32,
    /// Passed probes in a row that mark it up.
    pub rise: u32,
    /// The service's `min_healthy`.
    pub min_healthy: usize,
    /// The service's `all_down` policy, config spelling.
    pub all_down: String,
    /// The all-down policy if it decided the outcome, else `null`.
    pub policy_applied: Option<String>,
    /// Why each address is in or out.
    pub standing: Vec<StandingStatus>,
    /// The leader that wrote, and its term.
    pub leader: Option<String>,
    /// Leader changes seen by the writing node.
    pub term: u64,
}

/// The agreed state of one endpoint at the time of a write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VoteEvidence {
    /// The endpoint.
    pub endpoint: String,
    /// `up`, `down` or `unknown`.
    pub cluster_state: String,
    /// Nodes whose up vote counted.
    pub up_votes: Vec<String>,
    /// Nodes whose down vote counted.
    pub down_votes: Vec<String>,
    /// Agreeing votes needed (the quorum threshold).
    pub needed: usize,
}

/// What to return from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only this service.
    pub service: Option<String>,
    /// Only these kinds (empty: all).
    pub kinds: Vec<String>,
    /// Only records at or after this time (Unix ms).
    pub since_unix_ms: Option<u64>,
    /// Only records older than this sequence number (the cursor of the previous page).
    pub before: Option<u64>,
    /// At most this many (capped at [`MAX_PAGE`]).
    pub limit: usize,
}

/// One page of records, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Page {
    /// The records, newest first.
    pub events: Vec<AuditRecord>,
    /// Pass as `before` to get the next (older) page; `null` when there is none.
    pub next_before: Option<u64>,
}

/// Why the audit log failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The database could not be opened, read or written (I/O, corruption, another process holds
    /// it). Retryable only once the cause is fixed.
    #[error("audit log {path}: {message}")]
    Database {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

impl From<store::OpenError> for AuditError {
    fn from(e: store::OpenError) -> Self {
        AuditError::Database {
            path: e.path,
            message: e.message,
        }
    }
}

/// The handle: cheap to clone; the writer thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct AuditLog {
    db: Arc<Database>,
    committer: CommitterHandle<Box<AuditRecord>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path())
            .finish()
    }
}

impl AuditLog {
    /// Opens (or creates) `state_dir/audit.redb` and starts its writer thread. A database left by a
    /// crash is repaired by redb on open.
    ///
    /// # Errors
    /// [`AuditError::Database`] when the directory or the file cannot be created or opened (not
    /// writable, another rrguard holds it, not a redb file).
    pub fn open(state_dir: &Path, limits: Limits) -> Result<AuditLog, AuditError> {
        let (path, db) = store::open(state_dir, FILE_NAME)?;
        let err = |message: String| AuditError::Database {
            path: path.clone(),
            message,
        };
        // Make sure the table exists, and learn where the sequence and the size stand.
        let (next_seq, bytes) = {
            let txn = db.begin_write().map_err(|e| err(e.to_string()))?;
            let stats = {
                let table = txn.open_table(EVENTS).map_err(|e| err(e.to_string()))?;
                let next = table
                    .last()
                    .map_err(|e| err(e.to_string()))?
                    .map_or(1, |(k, _)| k.value() + 1);
                let mut bytes = 0u64;
                for entry in table.iter().map_err(|e| err(e.to_string()))? {
                    let (_, v) = entry.map_err(|e| err(e.to_string()))?;
                    bytes += v.value().len() as u64;
                }
                (next, bytes)
            };
            txn.commit().map_err(|e| err(e.to_string()))?;
            stats
        };
        let db = Arc::new(db);
        let mut writer = Writer {
            db: db.clone(),
            path: path.clone(),
            limits,
            next_seq,
            bytes,
        };
        // No interval: the thread wakes only for records and flushes, and lingers for more.
        let committer =
            store::spawn_committer("rrguard-audit", path, None, LINGER, move |batch| {
                writer.store(batch);
            })?;
        Ok(AuditLog { db, committer })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.committer.path()
    }

    /// Queues `record` for the next commit; returns at once.
    pub fn append(&self, record: AuditRecord) {
        if !self.committer.send(Box::new(record)) {
            warn!("audit log writer has stopped; record dropped");
        }
    }

    /// Blocks until every record appended before has been committed (or the writer has stopped).
    /// Call from a blocking context (`spawn_blocking`), as on shutdown.
    pub fn flush(&self) {
        self.committer.flush();
    }

    /// Reads one page, newest first. Blocking (a read transaction): call from `spawn_blocking`.
    ///
    /// # Errors
    /// [`AuditError::Database`] when the database cannot be read.
    pub fn query(&self, q: &Query) -> Result<Page, AuditError> {
        let err = |e: &dyn std::fmt::Display| AuditError::Database {
            path: self.path().to_owned(),
            message: e.to_string(),
        };
        let limit = q.limit.clamp(1, MAX_PAGE);
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let table = txn.open_table(EVENTS).map_err(|e| err(&e))?;
        let range = table
            .range(..q.before.unwrap_or(u64::MAX))
            .map_err(|e| err(&e))?;
        let mut events = Vec::new();
        let mut next_before = None;
        for entry in range.rev() {
            let (k, v) = entry.map_err(|e| err(&e))?;
            let Ok(mut record) = serde_json::from_slice::<AuditRecord>(v.value()) else {
                continue;
            };
            record.seq = k.value();
            if q.since_unix_ms.is_some_and(|t| record.unix_ms < t) {
                break;
            }
            if q.service.as_ref().is_some_and(|s| *s != record.service)
                || (!q.kinds.is_empty() && !q.kinds.contains(&record.kind))
            {
                continue;
            }
            if events.len() == limit {
                next_before = events.last().map(|r: &AuditRecord| r.seq);
                break;
            }
            events.push(record);
        }
        Ok(Page {
            events,
            next_before,
        })
    }
}

/// The writer thread's state.
struct Writer {
    db: Arc<Database>,
    path: PathBuf,
    limits: Limits,
    next_seq: u64,
    /// Bytes of the stored records.
    bytes: u64,
}

/// The one field trimming by age needs.
#[derive(Deserialize)]
struct Stamp {
    unix_ms: u64,
}

impl Writer {
    /// Commits one batch of the committer thread (nothing to do for a flush alone).
    // Boxed as they were queued: a record is large, the channel's messages stay small.
    #[allow(clippy::vec_box)]
    fn store(&mut self, mut batch: Vec<Box<AuditRecord>>) {
        if !batch.is_empty()
            && let Err(e) = self.commit(&mut batch)
        {
            error!(path = %self.path.display(), "audit log: {} records not stored: {e}", batch.len());
        }
    }

    // The error path is rare (I/O) and ends in a log line: its size does not matter.
    #[allow(clippy::result_large_err)]
    fn commit(&mut self, batch: &mut [Box<AuditRecord>]) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        let mut seq = self.next_seq;
        let mut bytes = self.bytes;
        {
            let mut table = txn.open_table(EVENTS)?;
            for record in batch {
                record.seq = seq;
                let value = serde_json::to_vec(record).unwrap_or_default();
                table.insert(seq, value.as_slice())?;
                bytes += value.len() as u64;
                seq += 1;
            }
            bytes -= trim(&mut table, self.limits, super::now_unix_ms(), bytes)?;
        }
        txn.commit()?;
        self.next_seq = seq;
        self.bytes = bytes;
        Ok(())
    }
}

/// Drops the oldest records while they are older than `limits.max_age` or the stored records
/// (`bytes` in all) exceed `limits.max_bytes`; returns the bytes dropped.
#[allow(clippy::result_large_err)]
fn trim(
    table: &mut redb::Table<'_, u64, &[u8]>,
    limits: Limits,
    now_unix_ms: u64,
    bytes: u64,
) -> Result<u64, redb::Error> {
    let oldest_kept = now_unix_ms.saturating_sub(limits.max_age.as_millis() as u64);
    let mut dropped = 0u64;
    loop {
        let Some((_, v)) = table.first()? else {
            return Ok(dropped);
        };
        let len = v.value().len() as u64;
        let too_old =
            serde_json::from_slice::<Stamp>(v.value()).map_or(true, |s| s.unix_ms < oldest_kept);
        drop(v);
        if !too_old && bytes - dropped <= limits.max_bytes {
            return Ok(dropped);
        }
        table.pop_first()?;
        dropped += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(service: &str, kind: &str, unix_ms: u64) -> AuditRecord {
        AuditRecord {
            seq: 0,
            unix_ms,
            node: "mon-1".to_owned(),
            service: service.to_owned(),
            kind: kind.to_owned(),
            message: "x".repeat(100),
            writer: None,
            write: None,
        }
    }

    fn all(log: &AuditLog) -> Vec<AuditRecord> {
        log.query(&Query {
            limit: MAX_PAGE,
            ..Query::default()
        })
        .unwrap()
        .events
    }

    #[test]
    fn size_bound_drops_the_oldest_records() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_age: DEFAULT_MAX_AGE,
            max_bytes: 2_000,
        };
        let log = AuditLog::open(dir.path(), limits).unwrap();
        let now = super::super::now_unix_ms();
        for _ in 0..50 {
            log.append(record("www.", "note", now));
        }
        log.flush();
        let kept = all(&log);
        let size: usize = kept
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap().len())
            .sum();
        assert!(size <= 2_000, "{size} bytes kept");
        assert!(kept.len() >= 5, "only {} kept", kept.len());
        // The newest are the ones kept, and the sequence is contiguous up to the last.
        assert_eq!(kept[0].seq, 50);
        assert!(kept.windows(2).all(|w| w[0].seq == w[1].seq + 1));
    }

    #[test]
    fn age_bound_drops_old_records_and_sequence_continues_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_age: Duration::from_secs(3600),
            max_bytes: DEFAULT_MAX_BYTES,
        };
        let now = super::super::now_unix_ms();
        {
            let log = AuditLog::open(dir.path(), limits).unwrap();
            log.append(record("www.", "note", now - 2 * 3600 * 1000));
            log.append(record("www.", "note", now - 10));
            log.flush();
            let kept = all(&log);
            assert_eq!(kept.len(), 1, "{kept:?}");
            assert_eq!(kept[0].seq, 2);
        }
        // The thread lets go of the database once the last handle is gone; wait for that.
        let log = (0..100)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(20));
                AuditLog::open(dir.path(), limits).ok()
            })
            .expect("reopen");
        log.append(record("api.", "dns_updated", now));
        log.flush();
        let seqs: Vec<u64> = all(&log).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![3, 2]);
    }

    #[test]
    fn query_filters_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), Limits::default()).unwrap();
        let now = super::super::now_unix_ms();
        for i in 0..10u64 {
            let service = if i % 2 == 0 { "www." } else { "api." };
            let kind = if i % 3 == 0 { "dns_updated" } else { "note" };
            log.append(record(service, kind, now + i));
        }
        log.flush();
        let q = Query {
            service: Some("www.".to_owned()),
            limit: 2,
            ..Query::default()
        };
        let p1 = log.query(&q).unwrap();
        assert_eq!(
            p1.events.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![9, 7]
        );
        let p2 = log
            .query(&Query {
                before: p1.next_before,
                ..q.clone()
            })
            .unwrap();
        assert_eq!(
            p2.events.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![5, 3]
        );
        let p3 = log
            .query(&Query {
                before: p2.next_before,
                ..q.clone()
            })
            .unwrap();
        assert_eq!(p3.events.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(p3.next_before, None);
        let kinds = log
            .query(&Query {
                kinds: vec!["dns_updated".to_owned()],
                since_unix_ms: Some(now + 3),
                limit: 10,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(
            kinds.events.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![10, 7, 4]
        );
    }
}
