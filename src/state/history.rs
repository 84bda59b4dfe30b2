//! Per-endpoint history: this node's probe latencies at a fixed resolution and the endpoint's state
//! transitions, bounded in memory and on disk, for `GET /api/v1/services/{fqdn}/endpoints/{ip}/history`,
//! `rrguard status SERVICE ENDPOINT` and the `fastest` ranking after a restart
//! ([`History::long_term_means`], seeded through `decide::select::Selector::seed_long_term`).
//!
//! Shape, per endpoint ([`EndpointHistory`]):
//! - buckets of [`RESOLUTION_MS`], the last hour of them ([`BUCKETS`]), each
//!   `(probes, failures, min, max, sum of latency in ms)` of the probes whose time (wall clock, Unix
//!   ms) falls into it; latency figures count passed probes only (a failed probe's latency is its
//!   timeout or its error, not the endpoint's speed). A bucket is 16 bytes. Memory holds the buckets
//!   the store has not committed yet plus the last [`RECENT_BUCKETS`] (a minute); the store answers
//!   for the older ones of the hour ([`read`]). Without a store, or while its commits fail, the
//!   whole hour stays in memory. Recording a probe ([`History::record_probe`]) is two hash lookups
//!   and a few field updates under one mutex; it allocates only when a new bucket does not fit the
//!   deque's capacity;
//! - seven blocks of 10 minutes (8 bytes each: passed probes and their latency sum), the hour's
//!   mean latency that `fastest` restarts from ([`History::long_term_means`]; its oldest block may
//!   reach up to 10 minutes past the hour);
//! - the last [`TRANSITIONS`] transitions ([`Transition`]): the agreed state (`up`, `down`) and
//!   whether the first writer's plan publishes the endpoint (`published`, `excluded`), each with the
//!   rule's machine name and the reason for a person (cut to [`KIND_MAX_BYTES`] and
//!   [`REASON_MAX_BYTES`]). A transition is
//!   only recorded when the state differs from the last one of its kind, so a restart, which
//!   restores the ring, does not repeat the current state.
//!
//! Memory (measured by `benches/history.rs` at 10,000 endpoints): 0.3 KiB per configured endpoint
//! before its first probe; with a store, about 1.3 KiB per endpoint after an hour of probes and
//! whatever the uptime (13 MB at 10,000, the store's 2 MiB cache included; reading one endpoint's
//! hour back takes about 0.2 ms); without one, about 6.8 KiB once an hour of probes is kept
//! (70 MB). Each kept transition takes a 48-byte slot (the ring grows to 128
//! slots, 6 KiB) and shares its texts with every transition that has the same ones (an interner: a
//! flapping endpoint repeats two reasons, and rule names are the same everywhere). Every ring full
//! of a flapping endpoint's transitions: 6 KiB more per endpoint; the bound, every ring full of
//! distinct reasons of the longest kept length: about 28 KiB more.
//!
//! Persistence ([`HistoryStore`], `state_dir/history.redb`, redb as the audit log, opened and
//! committed from a thread of its own as [`super::store`] describes): the thread copies the buckets
//! changed since its last commit (a handful per endpoint) and the changed transition rings every
//! [`PERSIST_INTERVAL`] and on [`HistoryStore::flush`], commits them in one transaction, then lets
//! the committed buckets older than the recent ones go from memory; nothing on the probe path waits
//! for the disk. On disk the same bounds hold: buckets older than the hour are deleted as new ones
//! are written, an endpoint no longer configured is deleted ([`History::retain`]), so the file
//! holds per configured endpoint at most 7 records of [`RECORD_BUCKETS`] buckets (10 minutes,
//! 960 bytes plus the key; a commit rewrites the one or two records its buckets fall into) and one
//! transition ring. With redb's B-tree that came to ~27 KB per endpoint after an hour (270 MB at
//! 10,000 endpoints, 33 s of commits in the hour; a record per bucket, the first layout, which a
//! store still in it is moved from when opened, took 540 MB and 64 s, `benches/history.rs`). A
//! crash loses at most the last [`PERSIST_INTERVAL`].

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::store::{self, CommitterHandle};

/// Width of one latency bucket, milliseconds (10 s).
pub const RESOLUTION_MS: u64 = 10_000;
/// Buckets kept per endpoint: with [`RESOLUTION_MS`], the last hour.
pub const BUCKETS: usize = 360;
/// Buckets an endpoint keeps in memory once the store holds them (the last minute); older ones are
/// read from the store when asked for.
pub const RECENT_BUCKETS: usize = 6;
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

/// Buckets in one stored record (10 minutes): an endpoint's hour is at most 7 records on disk.
/// One record per bucket (the first layout) made ~3.6 million small keys at 10,000 endpoints, and
/// redb's B-tree and its copy-on-write pages took 539.5 MB and 64 s of commits an hour for them
/// (`benches/history.rs`).
const RECORD_BUCKETS: u64 = 60;
/// Bytes of one stored record: [`RECORD_BUCKETS`] encoded buckets.
const RECORD_BYTES: usize = RECORD_BUCKETS as usize * 16;
/// (endpoint key `"fqdn ip"`, slot / [`RECORD_BUCKETS`]) → [`RECORD_BYTES`]: the encoded [`Bucket`]s
/// of the record's slots in slot order; a slot without probes is all zeros.
const RECORD_TABLE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("bucket_records");
/// The first layout, (endpoint key, slot) → one encoded [`Bucket`]: moved into [`RECORD_TABLE`] when
/// the store is opened, then deleted.
const LEGACY_BUCKET_TABLE: TableDefinition<(&str, u64), [u8; 16]> = TableDefinition::new("buckets");
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

/// Width of one block of the long-term mean, in buckets (10 minutes).
const BLOCK_BUCKETS: u64 = 60;
/// Blocks kept per endpoint: the hour, plus the block being filled.
const BLOCKS: usize = BUCKETS / BLOCK_BUCKETS as usize + 1;

/// The passed probes of one block of [`BLOCK_BUCKETS`] buckets: 8 bytes. What `fastest` needs
/// after a restart (their mean), kept in memory for the whole hour at a 60th of the buckets' size.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Block {
    passed: u32,
    sum_ms: f32,
}

/// One endpoint's history: the buckets not yet stored plus the last [`RECENT_BUCKETS`], the
/// long-term blocks, and the bounded transition ring. See the module documentation for the shape
/// and its size.
#[derive(Debug, Clone, Default)]
pub struct EndpointHistory {
    /// Buckets of the slots `first..=head`, oldest first (at most [`BUCKETS`]).
    buckets: VecDeque<Bucket>,
    /// Slot (`unix_ms / RESOLUTION_MS`) of `buckets[0]`.
    first: u64,
    /// Slot of the newest bucket written; 0: none yet.
    head: u64,
    /// Lowest slot changed since the store last copied this endpoint.
    dirty_from: Option<u64>,
    /// The store has committed every bucket up to this slot, except those changed since
    /// (`dirty_from`); 0: none.
    stored_through: u64,
    /// Ring of the long-term blocks, indexed by `block % BLOCKS`.
    blocks: [Block; BLOCKS],
    /// Block (`slot / BLOCK_BUCKETS`) of the newest block written; 0: none yet.
    block_head: u64,
    transitions: VecDeque<Transition>,
    transitions_dirty: bool,
    /// The last agreed state recorded.
    agreed: Option<TransitionState>,
    /// The last standing recorded: published or excluded, and the rule's machine name.
    standing: Option<(TransitionState, Arc<str>)>,
}

impl EndpointHistory {
    /// Whether `slot` is still inside the hour whose newest slot is `head`.
    fn in_ring(slot: u64, head: u64) -> bool {
        slot <= head && head - slot < BUCKETS as u64
    }

    /// The bucket of `slot`, moving the head forward to it if it is newer; `None` when the slot is
    /// no longer in memory (stored and older than the recent ones, or older than the hour).
    fn bucket_at(&mut self, slot: u64) -> Option<&mut Bucket> {
        if self.head == 0 || slot >= self.head + BUCKETS as u64 {
            // The first bucket, or a jump ahead of more than the hour: start over.
            self.buckets.clear();
            self.buckets.push_back(Bucket::default());
            self.first = slot;
            self.head = slot;
        } else if slot > self.head {
            for _ in self.head..slot {
                self.buckets.push_back(Bucket::default());
            }
            self.head = slot;
            self.trim();
        }
        let index = slot.checked_sub(self.first)?;
        self.buckets.get_mut(usize::try_from(index).ok()?)
    }

    /// Lets go of the buckets older than the hour, and of the stored ones older than the last
    /// [`RECENT_BUCKETS`]: the store answers for those. Without a store (or while it fails) the
    /// whole hour stays here.
    fn trim(&mut self) {
        while self.first < self.head {
            let out_of_hour = !Self::in_ring(self.first, self.head);
            let stored = self.first + RECENT_BUCKETS as u64 <= self.head
                && self.first <= self.stored_through
                && self.dirty_from.is_none_or(|d| self.first < d);
            if !(out_of_hour || stored) {
                break;
            }
            self.buckets.pop_front();
            self.first += 1;
        }
        // After a store outage the deque may have grown to the hour: give that memory back.
        if self.buckets.capacity() > 4 * RECENT_BUCKETS
            && self.buckets.len() * 4 < self.buckets.capacity()
        {
            self.buckets.shrink_to(2 * self.buckets.len());
        }
    }

    fn add_to_block(&mut self, slot: u64, passed: u32, sum_ms: f32) {
        let block = slot / BLOCK_BUCKETS;
        if self.block_head == 0 || block >= self.block_head + BLOCKS as u64 {
            self.blocks = [Block::default(); BLOCKS];
            self.block_head = block;
        } else if block > self.block_head {
            for b in self.block_head + 1..=block {
                self.blocks[(b % BLOCKS as u64) as usize] = Block::default();
            }
            self.block_head = block;
        } else if self.block_head - block >= BLOCKS as u64 {
            return;
        }
        let b = &mut self.blocks[(block % BLOCKS as u64) as usize];
        b.passed = b.passed.saturating_add(passed);
        b.sum_ms += sum_ms;
    }

    fn record_probe(&mut self, unix_ms: u64, ok: bool, latency: Duration) {
        let slot = unix_ms / RESOLUTION_MS;
        let latency_ms = latency.as_secs_f32() * 1000.0;
        // A probe for a slot no longer in memory (the wall clock went back) is dropped.
        let Some(bucket) = self.bucket_at(slot) else {
            return;
        };
        bucket.add(ok, latency_ms);
        self.dirty_from = Some(self.dirty_from.map_or(slot, |d| d.min(slot)));
        if ok {
            self.add_to_block(slot, 1, latency_ms);
        }
    }

    /// Puts back one stored bucket (slots in ascending order, as the store reads them).
    fn restore_bucket(&mut self, slot: u64, bucket: Bucket) {
        self.add_to_block(slot, u32::from(bucket.passed()), bucket.sum_ms);
        self.stored_through = self.stored_through.max(slot);
        if let Some(b) = self.bucket_at(slot) {
            *b = bucket;
        }
        self.trim();
    }

    /// The store committed what it copied up to `head`.
    fn mark_stored(&mut self, head: u64) {
        self.stored_through = self.stored_through.max(head);
        self.trim();
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

    /// The first slot of the hour that ends at `now_unix_ms` (or at the head, if newer).
    fn hour_start(&self, now_unix_ms: u64) -> u64 {
        let now_slot = (now_unix_ms / RESOLUTION_MS).max(self.head);
        (now_slot + 1).saturating_sub(BUCKETS as u64).max(1)
    }

    /// The non-empty buckets in memory within the hour that ends at `now_unix_ms`, oldest first.
    fn live_buckets(&self, now_unix_ms: u64) -> impl Iterator<Item = (u64, Bucket)> + '_ {
        let from = self.hour_start(now_unix_ms);
        (self.first..)
            .zip(self.buckets.iter().copied())
            .filter(move |(s, b)| *s >= from && b.probes > 0)
    }

    /// The mean of the passed probes of the last hour (at the granularity of the blocks: its
    /// oldest block may reach up to 10 minutes further back).
    fn long_term_mean_ms(&self, now_unix_ms: u64) -> Option<f64> {
        let from = self.hour_start(now_unix_ms) / BLOCK_BUCKETS;
        let (mut passed, mut sum) = (0u64, 0f64);
        for block in from.max(self.block_head.saturating_sub(BLOCKS as u64 - 1))..=self.block_head {
            let b = self.blocks[(block % BLOCKS as u64) as usize];
            passed += u64::from(b.passed);
            sum += f64::from(b.sum_ms);
        }
        (self.block_head > 0 && passed > 0).then(|| sum / passed as f64)
    }

    /// The kept buckets and transitions of an endpoint whose store holds nothing older than what
    /// is in memory (no store attached), for the API. With a store, [`read`] adds the stored ones.
    pub fn document(&self, now_unix_ms: u64) -> Document {
        document_of(
            self.live_buckets(now_unix_ms).collect(),
            self.transitions.iter().map(record_of).collect(),
        )
    }
}

/// One endpoint's history as the API returns it: the kept latency buckets (oldest first), their
/// summary and the kept transitions (oldest first).
pub type Document = (Vec<BucketRecord>, LatencySummary, Vec<TransitionRecord>);

fn document_of(buckets: Vec<(u64, Bucket)>, transitions: Vec<TransitionRecord>) -> Document {
    let summary = summary_of(buckets.iter().map(|(_, b)| *b));
    let buckets = buckets
        .into_iter()
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
    (buckets, summary, transitions)
}

fn summary_of(buckets: impl Iterator<Item = Bucket>) -> LatencySummary {
    let (mut probes, mut failures, mut sum, mut passed) = (0u64, 0u64, 0f64, 0u64);
    let (mut min, mut max): (Option<f64>, Option<f64>) = (None, None);
    for b in buckets {
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

/// One configured endpoint's history at `now_unix_ms`, for the API: the buckets in memory, and
/// from `store` the older ones of the hour; `None` for an endpoint not configured. Reads the store
/// (one range of at most [`BUCKETS`] records) after letting go of the lock: call from a blocking
/// context.
pub fn read(
    history: &Mutex<History>,
    store: Option<&HistoryStore>,
    service: &str,
    endpoint: IpAddr,
    now_unix_ms: u64,
) -> Option<Document> {
    let (from, first, recent, transitions) = {
        let h = history.lock().unwrap_or_else(PoisonError::into_inner);
        let e = h.get(service, endpoint)?;
        let from = e.hour_start(now_unix_ms);
        let first = if e.head == 0 { u64::MAX } else { e.first };
        let recent: Vec<(u64, Bucket)> = e.live_buckets(now_unix_ms).collect();
        (
            from,
            first,
            recent,
            e.transitions.iter().map(record_of).collect(),
        )
    };
    let mut buckets = match store {
        Some(store) if from < first => store.stored(&store_key(service, endpoint), from, first),
        _ => Vec::new(),
    };
    buckets.extend(recent);
    Some(document_of(buckets, transitions))
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
                let mean = h.long_term_mean_ms(now_unix_ms)?;
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
                    Some(from) => (h.first..)
                        .zip(h.buckets.iter().copied())
                        .filter(|(s, _)| *s >= from)
                        .collect(),
                    None => Vec::new(),
                };
                let transitions = std::mem::take(&mut h.transitions_dirty)
                    .then(|| h.transitions.iter().map(record_of).collect());
                if !buckets.is_empty() || transitions.is_some() {
                    out.endpoints.push(DirtyEndpoint {
                        service: service.clone(),
                        endpoint: *ip,
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
    service: String,
    endpoint: IpAddr,
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
    /// Shared with the thread: readers see the last commit (redb's readers do not wait for its
    /// writer).
    db: Arc<Database>,
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
        let db = Arc::new(db);
        let mut persister = Persister {
            db: db.clone(),
            path: path.clone(),
            history,
            failing: false,
        };
        // Every interval, on a flush and after the last handle is gone.
        let committer = store::spawn_committer(
            "rrguard-history",
            path,
            Some(PERSIST_INTERVAL),
            Duration::ZERO,
            move |_: Vec<Infallible>| persister.persist(),
        )?;
        Ok(HistoryStore { committer, db })
    }

    /// The stored buckets of the endpoint `key` with slots in `from..to`, oldest first. A store
    /// that cannot be read gives what it could (logged): the API then shows fewer buckets.
    fn stored(&self, key: &str, from: u64, to: u64) -> Vec<(u64, Bucket)> {
        read_stored(&self.db, key, from, to).unwrap_or_else(|e| {
            warn!(path = %self.path().display(), "endpoint history: stored buckets not read: {e}");
            Vec::new()
        })
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

// The error path is rare (I/O) and ends in a log line: its size does not matter.
#[allow(clippy::result_large_err)]
fn read_stored(
    db: &Database,
    key: &str,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, Bucket)>, redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(RECORD_TABLE)?;
    let mut out = Vec::new();
    let last = to.saturating_sub(1) / RECORD_BUCKETS;
    for entry in table.range((key, from / RECORD_BUCKETS)..=(key, last))? {
        let (k, v) = entry?;
        out.extend(
            buckets_of(k.value().1, v.value()).filter(|(slot, _)| (from..to).contains(slot)),
        );
    }
    Ok(out)
}

/// The buckets with probes of the stored record `record`, oldest first; nothing from a record of
/// the wrong length, and a damaged bucket is left out ([`Bucket::decode`]).
fn buckets_of(record: u64, value: &[u8]) -> impl Iterator<Item = (u64, Bucket)> + '_ {
    let whole = value.len() == RECORD_BYTES;
    value
        .chunks_exact(16)
        .take(if whole { RECORD_BUCKETS as usize } else { 0 })
        .zip(record * RECORD_BUCKETS..)
        .filter_map(|(raw, slot)| {
            let bucket = Bucket::decode(raw.try_into().ok()?)?;
            (bucket.probes > 0).then_some((slot, bucket))
        })
}

/// Writes `buckets` (ascending slots) into their records of `key`, keeping the other slots of
/// each record as stored.
// The error path is rare (I/O) and ends in a log line: its size does not matter.
#[allow(clippy::result_large_err)]
fn store_buckets(
    records: &mut redb::Table<'_, (&'static str, u64), &'static [u8]>,
    key: &str,
    buckets: &[(u64, Bucket)],
) -> Result<(), redb::Error> {
    for run in buckets.chunk_by(|a, b| a.0 / RECORD_BUCKETS == b.0 / RECORD_BUCKETS) {
        let record = run[0].0 / RECORD_BUCKETS;
        let mut value = records
            .get((key, record))?
            .map(|v| v.value().to_vec())
            .filter(|v| v.len() == RECORD_BYTES)
            .unwrap_or_else(|| vec![0; RECORD_BYTES]);
        for (slot, bucket) in run {
            let at = (slot % RECORD_BUCKETS) as usize * 16;
            value[at..at + 16].copy_from_slice(&bucket.encode());
        }
        records.insert((key, record), value.as_slice())?;
    }
    Ok(())
}

/// Moves the buckets of the first layout ([`LEGACY_BUCKET_TABLE`]) into records and deletes its
/// table; nothing to do in a file created since.
#[allow(clippy::result_large_err)]
fn migrate_legacy(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    {
        let legacy = txn.open_table(LEGACY_BUCKET_TABLE)?;
        let mut records = txn.open_table(RECORD_TABLE)?;
        let mut key = String::new();
        let mut run: Vec<(u64, Bucket)> = Vec::new();
        for entry in legacy.iter()? {
            let (k, v) = entry?;
            let (k, slot) = k.value();
            if k != key {
                store_buckets(&mut records, &key, &run)?;
                run.clear();
                k.clone_into(&mut key);
            }
            if let Some(bucket) = Bucket::decode(v.value()) {
                run.push((slot, bucket));
            }
        }
        store_buckets(&mut records, &key, &run)?;
    }
    txn.delete_table(LEGACY_BUCKET_TABLE)?;
    Ok(())
}

type Loaded = HashMap<String, HashMap<IpAddr, EndpointHistory>>;

// Opening is rare and its error ends in a message: its size does not matter.
#[allow(clippy::result_large_err)]
fn load(db: &Database, now_unix_ms: u64) -> Result<Loaded, redb::Error> {
    // Make sure both tables exist, and bring a file of the first layout to this one.
    let txn = db.begin_write()?;
    txn.open_table(RECORD_TABLE)?;
    txn.open_table(TRANSITION_TABLE)?;
    migrate_legacy(&txn)?;
    txn.commit()?;
    let mut out: Loaded = HashMap::new();
    let oldest = (now_unix_ms / RESOLUTION_MS + 1).saturating_sub(BUCKETS as u64);
    let txn = db.begin_read()?;
    let records = txn.open_table(RECORD_TABLE)?;
    for entry in records.iter()? {
        let (k, v) = entry?;
        let (key, record) = k.value();
        let Some((service, ip)) = parse_key(key) else {
            continue;
        };
        // In key order: each endpoint's slots ascending. Only the recent ones stay in memory.
        let h = out.entry(service).or_default().entry(ip).or_default();
        for (slot, bucket) in buckets_of(record, v.value()).filter(|(s, _)| *s >= oldest) {
            h.restore_bucket(slot, bucket);
        }
    }
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
    db: Arc<Database>,
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
                // What is stored may leave memory.
                let mut h = self.history.lock().unwrap_or_else(PoisonError::into_inner);
                for d in &dirty.endpoints {
                    if let Some(e) = h.get_mut(&d.service, d.endpoint) {
                        e.mark_stored(d.head);
                    }
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
                    if let Some(e) = h.get_mut(&d.service, d.endpoint) {
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
        let mut records = txn.open_table(RECORD_TABLE)?;
        let mut transitions = txn.open_table(TRANSITION_TABLE)?;
        for key in &dirty.forgotten {
            records.retain_in((key.as_str(), 0)..=(key.as_str(), u64::MAX), |_, _| false)?;
            transitions.remove(key.as_str())?;
        }
        for d in &dirty.endpoints {
            let key = store_key(&d.service, d.endpoint);
            let key = key.as_str();
            store_buckets(&mut records, key, &d.buckets)?;
            // The records wholly older than the hour go from the disk (the slots of the oldest
            // one kept that are older than the hour are not read).
            let oldest = (d.head + 1).saturating_sub(BUCKETS as u64);
            records.retain_in((key, 0)..(key, oldest / RECORD_BUCKETS), |_, _| false)?;
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
