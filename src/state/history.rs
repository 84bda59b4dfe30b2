//! Per-endpoint history: this node's probe latencies at a fixed resolution and the endpoint's state
//! transitions, bounded in memory and on disk, for `GET /api/v1/services/{fqdn}/endpoints/{ip}/history`,
//! `rrguard status SERVICE ENDPOINT` and the `fastest` ranking after a restart
//! ([`History::long_term_means`], seeded through `decide::select::Selector::seed_long_term`).
//!
//! Shape, per endpoint ([`EndpointHistory`]):
//! - a ring of [`BUCKETS`] buckets of [`RESOLUTION_MS`] (the last hour at 10 s), each
//!   `(probes, failures, min, max, sum of latency in ms)` of the probes whose time (wall clock, Unix
//!   ms) falls into it; latency figures count passed probes only (a failed probe's latency is its
//!   timeout or its error, not the endpoint's speed). A bucket is 16 bytes and the ring is allocated
//!   once, when the endpoint is first configured: recording a probe ([`History::record_probe`]) is
//!   two hash lookups and a few field updates under one mutex, with no allocation;
//! - the last [`TRANSITIONS`] transitions ([`Transition`]): the agreed state (`up`, `down`) and
//!   whether the first writer's plan publishes the endpoint (`published`, `excluded`), each with the
//!   rule's machine name and the reason for a person (cut to [`KIND_MAX_BYTES`] and
//!   [`REASON_MAX_BYTES`]). A transition is
//!   only recorded when the state differs from the last one of its kind, so a restart, which
//!   restores the ring, does not repeat the current state.
//!
//! Memory (measured by `benches/history.rs` at 10,000 endpoints): 5,760 bytes of buckets and about
//! 180 bytes of map entry and ring heads per endpoint, allocated when it is configured (5.8 KiB,
//! 59 MB for 10,000 endpoints, whether they are probed or not); each kept transition takes a 48-byte
//! slot (the ring grows to 128 slots, 6 KiB) and shares its texts with every transition that has
//! the same ones (an interner: a flapping endpoint repeats two reasons, and rule names are the same
//! everywhere). An hour of probes with 10 transitions each: 6.6 KiB per endpoint (67 MB); every
//! ring full of a flapping endpoint's transitions: 11.8 KiB (121 MB); the bound, every ring full of
//! distinct reasons of the longest kept length: 34 KiB (350 MB).
//!
//! Persistence ([`HistoryStore`], `state_dir/history.redb`, redb as the audit log, opened and
//! committed from a thread of its own as [`super::store`] describes): the thread copies the buckets
//! changed since its last commit (a handful per endpoint) and the changed transition rings every
//! [`PERSIST_INTERVAL`] and on [`HistoryStore::flush`], and commits them in one transaction; nothing
//! on the probe path waits for the disk. On disk the same bounds hold: buckets older than the ring
//! are deleted as new ones are written, an endpoint no longer configured is deleted
//! ([`History::retain`]), so the file holds at most [`BUCKETS`] × 16 bytes (plus the key) and one
//! transition ring per configured endpoint. A crash loses at most the last [`PERSIST_INTERVAL`].

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::store::{self, CommitterHandle};

/// Width of one latency bucket, milliseconds (10 s).
pub const RESOLUTION_MS: u64 = 10_000;
/// Buckets kept per endpoint: with [`RESOLUTION_MS`], the last hour.
pub const BUCKETS: usize = 360;
/// Transitions kept per endpoint; older ones are dropped.
pub const TRANSITIONS: usize = 100;
/// Longest reason text kept per transition, bytes (longer ones are cut at a character boundary).
pub const REASON_MAX_BYTES: usize = 160;
/// Longest rule name kept per transition, bytes.
pub const KIND_MAX_BYTES: usize = 32;
/// How often the store commits what changed.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(30);
/// The file name of the store inside `state_dir`.
pub const FILE_NAME: &str = "history.redb";

/// (endpoint key `"fqdn ip"`, slot) → encoded [`Bucket`].
const BUCKET_TABLE: TableDefinition<(&str, u64), [u8; 16]> = TableDefinition::new("buckets");
/// Endpoint key → JSON list of [`TransitionRecord`], oldest first.
const TRANSITION_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("transitions");

/// One bucket of probes: 16 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bucket {
    /// Probes in the bucket (saturating).
    probes: u16,
    /// Failed probes among them (saturating).
    failures: u16,
    /// Fastest passed probe, ms.
    min_ms: f32,
    /// Slowest passed probe, ms.
    max_ms: f32,
    /// Sum of the passed probes' latencies, ms.
    sum_ms: f32,
}

impl Bucket {
    fn passed(&self) -> u16 {
        self.probes - self.failures
    }

    fn add(&mut self, ok: bool, latency_ms: f32) {
        if self.probes == u16::MAX {
            return;
        }
        self.probes += 1;
        if !ok {
            self.failures += 1;
            return;
        }
        if self.passed() == 1 {
            self.min_ms = latency_ms;
            self.max_ms = latency_ms;
        } else {
            self.min_ms = self.min_ms.min(latency_ms);
            self.max_ms = self.max_ms.max(latency_ms);
        }
        self.sum_ms += latency_ms;
    }

    fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[0..2].copy_from_slice(&self.probes.to_le_bytes());
        out[2..4].copy_from_slice(&self.failures.to_le_bytes());
        out[4..8].copy_from_slice(&self.min_ms.to_le_bytes());
        out[8..12].copy_from_slice(&self.max_ms.to_le_bytes());
        out[12..16].copy_from_slice(&self.sum_ms.to_le_bytes());
        out
    }

    fn decode(b: [u8; 16]) -> Option<Bucket> {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let f32_at = |i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let bucket = Bucket {
            probes: u16_at(0),
            failures: u16_at(2),
            min_ms: f32_at(4),
            max_ms: f32_at(8),
            sum_ms: f32_at(12),
        };
        // A damaged record is dropped rather than shown.
        (bucket.failures <= bucket.probes
            && [bucket.min_ms, bucket.max_ms, bucket.sum_ms]
                .iter()
                .all(|v| v.is_finite() && *v >= 0.0))
        .then_some(bucket)
    }
}

/// What a transition is about and the state it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionState {
    /// Agreed up (by the quorum, or this node's verdict on a single node).
    Up,
    /// Agreed down.
    Down,
    /// The first writer's plan publishes the endpoint.
    Published,
    /// The first writer's plan keeps it out of DNS (down, or a policy: selection, damping,
    /// overrides, …), the reason says which.
    Excluded,
}

impl TransitionState {
    /// The state as the API and the store spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionState::Up => "up",
            TransitionState::Down => "down",
            TransitionState::Published => "published",
            TransitionState::Excluded => "excluded",
        }
    }

    fn parse(s: &str) -> Option<TransitionState> {
        Some(match s {
            "up" => TransitionState::Up,
            "down" => TransitionState::Down,
            "published" => TransitionState::Published,
            "excluded" => TransitionState::Excluded,
            _ => return None,
        })
    }

    fn agreed(self) -> bool {
        matches!(self, TransitionState::Up | TransitionState::Down)
    }
}

/// One transition as kept in memory.
#[derive(Debug, Clone, PartialEq)]
struct Transition {
    unix_ms: u64,
    state: TransitionState,
    /// The rule's machine name (`agreed` for up/down; the standing's `reason_kind` otherwise).
    kind: Arc<str>,
    reason: Arc<str>,
}

/// One transition, as the API returns it and the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransitionRecord {
    /// When this node saw it, wall clock, Unix ms.
    pub unix_ms: u64,
    /// `up`, `down` (agreed state), `published` or `excluded` (the first writer's plan).
    pub state: String,
    /// The rule's machine name: `agreed` for `up`/`down`; for `published`/`excluded` the
    /// standing's `reason_kind` (`verdict`, `not_fastest`, `damped`, `override`, …).
    pub reason_kind: String,
    /// Why, for a person.
    pub reason: String,
}

/// One bucket of probes, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BucketRecord {
    /// Start of the bucket, wall clock, Unix ms (a multiple of `resolution_ms`).
    pub start_unix_ms: u64,
    /// Probes in the bucket.
    pub probes: u32,
    /// Failed probes among them.
    pub failures: u32,
    /// Fastest passed probe, ms (`null` when none passed).
    pub min_ms: Option<f64>,
    /// Mean of the passed probes, ms (`null` when none passed).
    pub mean_ms: Option<f64>,
    /// Slowest passed probe, ms (`null` when none passed).
    pub max_ms: Option<f64>,
}

/// Totals over the kept buckets.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LatencySummary {
    /// Probes.
    pub probes: u64,
    /// Failed probes.
    pub failures: u64,
    /// Fastest passed probe, ms.
    pub min_ms: Option<f64>,
    /// Mean of the passed probes, ms (the long-term mean `fastest` starts from).
    pub mean_ms: Option<f64>,
    /// Slowest passed probe, ms.
    pub max_ms: Option<f64>,
}

/// One endpoint's history: fixed-size bucket ring and bounded transition ring. See the module
/// documentation for the shape and its size.
#[derive(Debug, Clone)]
pub struct EndpointHistory {
    buckets: Box<[Bucket]>,
    /// Slot (`unix_ms / RESOLUTION_MS`) of the newest bucket written; 0: none yet.
    head: u64,
    /// Lowest slot changed since the store last copied this endpoint.
    dirty_from: Option<u64>,
    transitions: VecDeque<Transition>,
    transitions_dirty: bool,
    /// The last agreed state recorded.
    agreed: Option<TransitionState>,
    /// The last standing recorded: published or excluded, and the rule's machine name.
    standing: Option<(TransitionState, Arc<str>)>,
}

impl Default for EndpointHistory {
    fn default() -> Self {
        EndpointHistory {
            buckets: vec![Bucket::default(); BUCKETS].into_boxed_slice(),
            head: 0,
            dirty_from: None,
            transitions: VecDeque::new(),
            transitions_dirty: false,
            agreed: None,
            standing: None,
        }
    }
}

impl EndpointHistory {
    fn index(slot: u64) -> usize {
        (slot % BUCKETS as u64) as usize
    }

    /// Whether `slot` is still inside the ring whose newest slot is `head`.
    fn in_ring(slot: u64, head: u64) -> bool {
        slot <= head && head - slot < BUCKETS as u64
    }

    fn record_probe(&mut self, unix_ms: u64, ok: bool, latency: Duration) {
        let slot = unix_ms / RESOLUTION_MS;
        if slot > self.head {
            // Clear the buckets the ring moves over (at most all of them).
            let first = (self.head + 1).max((slot + 1).saturating_sub(BUCKETS as u64));
            if self.head != 0 {
                for s in first..=slot {
                    self.buckets[Self::index(s)] = Bucket::default();
                }
            }
            self.head = slot;
        } else if !Self::in_ring(slot, self.head) {
            // The wall clock went back more than the ring holds: nothing to attach this to.
            return;
        }
        self.buckets[Self::index(slot)].add(ok, latency.as_secs_f32() * 1000.0);
        self.dirty_from = Some(self.dirty_from.map_or(slot, |d| d.min(slot)));
    }

    fn push(&mut self, t: Transition) {
        if t.state.agreed() {
            self.agreed = Some(t.state);
        } else {
            self.standing = Some((t.state, t.kind.clone()));
        }
        if self.transitions.len() == TRANSITIONS {
            self.transitions.pop_front();
        }
        self.transitions.push_back(t);
        self.transitions_dirty = true;
    }

    /// The non-empty buckets at or after `now_unix_ms` minus the ring's span, oldest first.
    fn live_buckets(&self, now_unix_ms: u64) -> impl Iterator<Item = (u64, Bucket)> + '_ {
        let now_slot = (now_unix_ms / RESOLUTION_MS).max(self.head);
        let first = (now_slot + 1).saturating_sub(BUCKETS as u64).max(1);
        (first..=self.head)
            .filter(move |s| Self::in_ring(*s, self.head))
            .map(|s| (s, self.buckets[Self::index(s)]))
            .filter(|(_, b)| b.probes > 0)
    }

    fn summary(&self, now_unix_ms: u64) -> LatencySummary {
        let (mut probes, mut failures, mut sum, mut passed) = (0u64, 0u64, 0f64, 0u64);
        let (mut min, mut max): (Option<f64>, Option<f64>) = (None, None);
        for (_, b) in self.live_buckets(now_unix_ms) {
            probes += u64::from(b.probes);
            failures += u64::from(b.failures);
            if b.passed() > 0 {
                passed += u64::from(b.passed());
                sum += f64::from(b.sum_ms);
                min = Some(min.map_or(f64::from(b.min_ms), |m| m.min(f64::from(b.min_ms))));
                max = Some(max.map_or(f64::from(b.max_ms), |m| m.max(f64::from(b.max_ms))));
            }
        }
        LatencySummary {
            probes,
            failures,
            min_ms: min,
            mean_ms: (passed > 0).then(|| sum / passed as f64),
            max_ms: max,
        }
    }

    /// The kept buckets and transitions, for the API.
    pub fn document(
        &self,
        now_unix_ms: u64,
    ) -> (Vec<BucketRecord>, LatencySummary, Vec<TransitionRecord>) {
        let buckets = self
            .live_buckets(now_unix_ms)
            .map(|(slot, b)| {
                let passed = b.passed() > 0;
                BucketRecord {
                    start_unix_ms: slot * RESOLUTION_MS,
                    probes: u32::from(b.probes),
                    failures: u32::from(b.failures),
                    min_ms: passed.then_some(f64::from(b.min_ms)),
                    mean_ms: passed.then(|| f64::from(b.sum_ms) / f64::from(b.passed())),
                    max_ms: passed.then_some(f64::from(b.max_ms)),
                }
            })
            .collect();
        let transitions = self.transitions.iter().map(record_of).collect();
        (buckets, self.summary(now_unix_ms), transitions)
    }
}

fn record_of(t: &Transition) -> TransitionRecord {
    TransitionRecord {
        unix_ms: t.unix_ms,
        state: t.state.as_str().to_owned(),
        reason_kind: t.kind.to_string(),
        reason: t.reason.to_string(),
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The key of an endpoint in the store.
fn store_key(service: &str, endpoint: IpAddr) -> String {
    format!("{service} {endpoint}")
}

fn parse_key(key: &str) -> Option<(String, IpAddr)> {
    let (service, ip) = key.rsplit_once(' ')?;
    Some((service.to_owned(), ip.parse().ok()?))
}

/// Every endpoint's history, by service then endpoint. Kept behind one mutex in
/// [`super::NodeState`]; every method is O(1) per endpoint touched.
#[derive(Debug, Default)]
pub struct History {
    services: HashMap<String, HashMap<IpAddr, EndpointHistory>>,
    /// Rule names and reasons shared by the transitions that carry them: a flapping endpoint
    /// repeats the same few texts, and rules such as `verdict` are the same for every endpoint.
    texts: Interner,
    /// Endpoints dropped by [`History::retain`] whose stored copy the store must delete (only
    /// collected once a store is attached).
    forgotten: Vec<String>,
    /// A [`HistoryStore`] copies this history.
    persisted: bool,
}

impl History {
    /// Keeps the history of the configured endpoints (`(service, endpoints)`), allocates one for
    /// each new endpoint and drops the others (the store deletes them at its next commit).
    pub fn retain<'a>(&mut self, configured: impl IntoIterator<Item = (&'a str, &'a [IpAddr])>) {
        let mut old = std::mem::take(&mut self.services);
        for (service, endpoints) in configured {
            let mut kept = old.remove(service).unwrap_or_default();
            let mut eps = HashMap::with_capacity(endpoints.len());
            for ip in endpoints {
                eps.insert(*ip, kept.remove(ip).unwrap_or_default());
            }
            if self.persisted {
                self.forgotten
                    .extend(kept.into_keys().map(|ip| store_key(service, ip)));
            }
            self.services.insert(service.to_owned(), eps);
        }
        if self.persisted {
            for (service, eps) in old {
                self.forgotten
                    .extend(eps.into_keys().map(|ip| store_key(&service, ip)));
            }
        }
    }

    fn get_mut(&mut self, service: &str, endpoint: IpAddr) -> Option<&mut EndpointHistory> {
        self.services.get_mut(service)?.get_mut(&endpoint)
    }

    /// The history of one configured endpoint.
    pub fn get(&self, service: &str, endpoint: IpAddr) -> Option<&EndpointHistory> {
        self.services.get(service)?.get(&endpoint)
    }

    /// Adds one probe of this node (ignored for an endpoint not configured). No allocation.
    pub fn record_probe(
        &mut self,
        service: &str,
        endpoint: IpAddr,
        ok: bool,
        latency: Duration,
        unix_ms: u64,
    ) {
        if let Some(h) = self.get_mut(service, endpoint) {
            h.record_probe(unix_ms, ok, latency);
        }
    }

    /// Records an agreed state (`Up` or `Down`) if it differs from the last one recorded.
    pub fn record_agreed(
        &mut self,
        service: &str,
        endpoint: IpAddr,
        up: bool,
        reason: &str,
        unix_ms: u64,
    ) {
        let Some(h) = self.get_mut(service, endpoint) else {
            return;
        };
        let state = if up {
            TransitionState::Up
        } else {
            TransitionState::Down
        };
        if h.agreed == Some(state) {
            return;
        }
        let kind = self.texts.get("agreed");
        let reason = self.texts.get(cut(reason, REASON_MAX_BYTES));
        if let Some(h) = self.get_mut(service, endpoint) {
            h.push(Transition {
                unix_ms,
                state,
                kind,
                reason,
            });
        }
    }

    /// Records whether the first writer's plan publishes the endpoint, and by which rule
    /// (`reason_kind`), if either differs from the last one recorded.
    pub fn record_standing(
        &mut self,
        service: &str,
        endpoint: IpAddr,
        published: bool,
        reason_kind: &str,
        reason: &str,
        unix_ms: u64,
    ) {
        let Some(h) = self.get_mut(service, endpoint) else {
            return;
        };
        let state = if published {
            TransitionState::Published
        } else {
            TransitionState::Excluded
        };
        let reason_kind = cut(reason_kind, KIND_MAX_BYTES);
        if h.standing
            .as_ref()
            .is_some_and(|(s, k)| *s == state && **k == *reason_kind)
        {
            return;
        }
        let kind = self.texts.get(reason_kind);
        let reason = self.texts.get(cut(reason, REASON_MAX_BYTES));
        if let Some(h) = self.get_mut(service, endpoint) {
            h.push(Transition {
                unix_ms,
                state,
                kind,
                reason,
            });
        }
    }

    /// Per endpoint of `service`, the mean latency of the passed probes kept (`fastest`'s
    /// long-term mean after a restart); endpoints without one are left out.
    pub fn long_term_means(&self, service: &str, now_unix_ms: u64) -> Vec<(IpAddr, Duration)> {
        let Some(eps) = self.services.get(service) else {
            return Vec::new();
        };
        let mut out: Vec<(IpAddr, Duration)> = eps
            .iter()
            .filter_map(|(ip, h)| {
                let mean = h.summary(now_unix_ms).mean_ms?;
                Some((*ip, Duration::from_secs_f64(mean / 1000.0)))
            })
            .collect();
        out.sort();
        out
    }

    /// Puts back what the store loaded (before [`History::retain`] trims it to the configuration).
    fn restore(&mut self, loaded: HashMap<String, HashMap<IpAddr, EndpointHistory>>) {
        self.persisted = true;
        for (service, eps) in loaded {
            let into = self.services.entry(service).or_default();
            for (ip, h) in eps {
                into.entry(ip).or_insert(h);
            }
        }
    }

    /// Takes what changed since the last call: per endpoint key, the changed buckets, the head,
    /// and the transitions if they changed; and the keys to delete.
    fn take_dirty(&mut self) -> Dirty {
        let mut out = Dirty {
            forgotten: std::mem::take(&mut self.forgotten),
            ..Dirty::default()
        };
        for (service, eps) in &mut self.services {
            for (ip, h) in eps.iter_mut() {
                let buckets = match h.dirty_from.take() {
                    Some(from) => (from..=h.head)
                        .filter(|s| EndpointHistory::in_ring(*s, h.head))
                        .map(|s| (s, h.buckets[EndpointHistory::index(s)]))
                        .collect(),
                    None => Vec::new(),
                };
                let transitions = std::mem::take(&mut h.transitions_dirty)
                    .then(|| h.transitions.iter().map(record_of).collect());
                if !buckets.is_empty() || transitions.is_some() {
                    out.endpoints.push(DirtyEndpoint {
                        key: store_key(service, *ip),
                        head: h.head,
                        buckets,
                        transitions,
                    });
                }
            }
        }
        out
    }
}

/// Shared texts. Pruned of texts no transition holds any more whenever it doubles, so it stays
/// within about twice the texts in use (amortised O(1) per text).
#[derive(Debug, Default)]
struct Interner {
    set: std::collections::HashSet<Arc<str>>,
    prune_at: usize,
}

impl Interner {
    fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(t) = self.set.get(text) {
            return t.clone();
        }
        if self.set.len() >= self.prune_at {
            self.set.retain(|t| Arc::strong_count(t) > 1);
            self.prune_at = (2 * self.set.len()).max(1024);
        }
        let t: Arc<str> = Arc::from(text);
        self.set.insert(t.clone());
        t
    }
}

#[derive(Debug, Default)]
struct Dirty {
    endpoints: Vec<DirtyEndpoint>,
    forgotten: Vec<String>,
}

#[derive(Debug)]
struct DirtyEndpoint {
    key: String,
    head: u64,
    buckets: Vec<(u64, Bucket)>,
    transitions: Option<Vec<TransitionRecord>>,
}

/// Why the history store failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The database could not be opened or read (not writable, another process holds it, not a
    /// redb file). The daemon runs on with the history in memory only; fixing the cause and
    /// restarting brings persistence back.
    #[error("history store {path}: {message}")]
    Database {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

impl From<store::OpenError> for HistoryError {
    fn from(e: store::OpenError) -> Self {
        HistoryError::Database {
            path: e.path,
            message: e.message,
        }
    }
}

/// The persistent copy of a [`History`]: cheap to clone; its thread ends when the last handle is
/// dropped, after a last commit.
#[derive(Clone)]
pub struct HistoryStore {
    /// Nothing is queued: the thread copies what changed from the shared [`History`] itself.
    committer: CommitterHandle<Infallible>,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStore")
            .field("path", &self.path())
            .finish()
    }
}

impl HistoryStore {
    /// Opens (or creates) `state_dir/history.redb`, loads what it holds into `history` (buckets
    /// older than the ring are left out), and starts the thread that commits `history`'s changes
    /// every [`PERSIST_INTERVAL`].
    ///
    /// # Errors
    /// [`HistoryError::Database`] when the directory or the file cannot be created, opened or read.
    pub fn open(
        state_dir: &Path,
        history: Arc<Mutex<History>>,
        now_unix_ms: u64,
    ) -> Result<HistoryStore, HistoryError> {
        let (path, db) = store::open(state_dir, FILE_NAME)?;
        let loaded = load(&db, now_unix_ms).map_err(|e| HistoryError::Database {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let endpoints: usize = loaded.values().map(HashMap::len).sum();
        if endpoints > 0 {
            info!(path = %path.display(), endpoints, "endpoint history restored");
        }
        history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .restore(loaded);
        let mut persister = Persister {
            db,
            path: path.clone(),
            history,
            failing: false,
        };
        // Every interval, on a flush and after the last handle is gone.
        let committer = store::spawn_committer(
            "rrguard-history",
            path,
            Some(PERSIST_INTERVAL),
            move |_: Vec<Infallible>| persister.persist(),
        )?;
        Ok(HistoryStore { committer })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.committer.path()
    }

    /// Blocks until what the history holds now has been committed (or the thread has stopped).
    /// Call from a blocking context (`spawn_blocking`), as on shutdown.
    pub fn flush(&self) {
        self.committer.flush();
    }
}

type Loaded = HashMap<String, HashMap<IpAddr, EndpointHistory>>;

// Opening is rare and its error ends in a message: its size does not matter.
#[allow(clippy::result_large_err)]
fn load(db: &Database, now_unix_ms: u64) -> Result<Loaded, redb::Error> {
    // Make sure both tables exist.
    let txn = db.begin_write()?;
    txn.open_table(BUCKET_TABLE)?;
    txn.open_table(TRANSITION_TABLE)?;
    txn.commit()?;
    let mut out: Loaded = HashMap::new();
    let oldest = (now_unix_ms / RESOLUTION_MS + 1).saturating_sub(BUCKETS as u64);
    let txn = db.begin_read()?;
    let buckets = txn.open_table(BUCKET_TABLE)?;
    for entry in buckets.iter()? {
        let (k, v) = entry?;
        let (key, slot) = k.value();
        let (Some((service, ip)), Some(bucket)) = (parse_key(key), Bucket::decode(v.value()))
        else {
            continue;
        };
        if slot < oldest {
            continue;
        }
        let h = out.entry(service).or_default().entry(ip).or_default();
        if slot > h.head {
            h.head = slot;
        }
        h.buckets[EndpointHistory::index(slot)] = bucket;
    }
    // Entries loaded in key order: a bucket from a wrap-around older than head's ring would have
    // overwritten a newer one only if both are kept, which `oldest` rules out.
    let transitions = txn.open_table(TRANSITION_TABLE)?;
    for entry in transitions.iter()? {
        let (k, v) = entry?;
        let Some((service, ip)) = parse_key(k.value()) else {
            continue;
        };
        let Ok(records) = serde_json::from_slice::<Vec<TransitionRecord>>(v.value()) else {
            continue;
        };
        let h = out.entry(service).or_default().entry(ip).or_default();
        for r in records.iter().rev().take(TRANSITIONS).rev() {
            let Some(state) = TransitionState::parse(&r.state) else {
                continue;
            };
            h.push(Transition {
                unix_ms: r.unix_ms,
                state,
                kind: Arc::from(cut(&r.reason_kind, KIND_MAX_BYTES)),
                reason: Arc::from(cut(&r.reason, REASON_MAX_BYTES)),
            });
        }
        h.transitions_dirty = false;
    }
    Ok(out)
}

/// The store's thread.
struct Persister {
    db: Database,
    path: PathBuf,
    history: Arc<Mutex<History>>,
    /// The last commit failed (logged once until one succeeds).
    failing: bool,
}

impl Persister {
    fn persist(&mut self) {
        // The copy is quick (a few buckets per endpoint); encoding and the disk happen unlocked.
        let dirty = self
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take_dirty();
        if dirty.endpoints.is_empty() && dirty.forgotten.is_empty() {
            return;
        }
        match commit(&self.db, &dirty) {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    info!(path = %self.path.display(), "endpoint history is stored again");
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    error!(path = %self.path.display(), "endpoint history not stored (kept in memory; retried every {}s): {e}", PERSIST_INTERVAL.as_secs());
                }
                // Keep it for the next try.
                let mut h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
                h.forgotten.extend(dirty.forgotten);
                for d in dirty.endpoints {
                    let Some((service, ip)) = parse_key(&d.key) else {
                        continue;
                    };
                    if let Some(e) = h.get_mut(&service, ip) {
                        if let Some((first, _)) = d.buckets.first() {
                            e.dirty_from = Some(e.dirty_from.map_or(*first, |f| f.min(*first)));
                        }
                        e.transitions_dirty |= d.transitions.is_some();
                    }
                }
            }
        }
    }
}

// The error path is rare (I/O) and ends in a log line: its size does not matter.
#[allow(clippy::result_large_err)]
fn commit(db: &Database, dirty: &Dirty) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut buckets = txn.open_table(BUCKET_TABLE)?;
        let mut transitions = txn.open_table(TRANSITION_TABLE)?;
        for key in &dirty.forgotten {
            buckets.retain_in((key.as_str(), 0)..=(key.as_str(), u64::MAX), |_, _| false)?;
            transitions.remove(key.as_str())?;
        }
        for d in &dirty.endpoints {
            let key = d.key.as_str();
            for (slot, b) in &d.buckets {
                buckets.insert((key, *slot), b.encode())?;
            }
            // What fell out of the ring goes from the disk too.
            let oldest = (d.head + 1).saturating_sub(BUCKETS as u64);
            buckets.retain_in((key, 0)..(key, oldest), |_, _| false)?;
            if let Some(t) = &d.transitions {
                let json = serde_json::to_vec(t).unwrap_or_default();
                transitions.insert(key, json.as_slice())?;
            }
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests;
