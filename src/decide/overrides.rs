//! Overrides: an operator's word on an endpoint, placed over the cluster's verdicts (sans-I/O).
//!
//! An [`Override`] targets one endpoint address, of one service or of every service that lists it,
//! with a kind ([`OverrideKind`]), a mandatory comment and a window `[starts, ends)` in wall-clock Unix
//! milliseconds (a scheduled maintenance window starts later; an override set "for 1h" starts now).
//! It ends by itself at `ends`. Overrides are shared by every node of a cluster, so they carry
//! wall-clock times; a service core works on [`tokio::time::Instant`]s, so the driver turns the set
//! into [`ServiceOverrides`] (windows on the monotonic clock) with [`OverrideSet::for_service`], and
//! the core applies them with [`ServiceOverrides::apply`] between the verdicts and the planner:
//! verdicts → overrides → selection → damping → `min_healthy`/all-down → change safety.
//!
//! Effects, on the verdict the planner sees:
//! - `force_up`: up, whatever the probes say; `force_down`: down.
//! - `maintenance`: failures are ignored and the endpoint keeps its published state: published, it
//!   stays (counted up); not published, it is not added (counted down).
//! - `drain`: down even if healthy, but never below the service's `min_healthy`: while fewer than
//!   `min_healthy` up endpoints would remain, drained endpoints that are up are kept (published
//!   ones first, then by address) and reported as such.
//!
//! When several overrides cover one endpoint at once, the one that takes it out wins: `force_down`,
//! then `drain`, then `maintenance`, then `force_up`.
//!
//! Replication keeps one [`OverrideSet`] per node, merged last-writer-wins per id by
//! (`updated_unix_ms`, deleted): a deletion is a tombstone with a newer `updated_unix_ms`, kept until
//! the override would have ended, so a node that missed it cannot bring it back. Expired overrides
//! and tombstones are pruned and never accepted again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Change, Doubts, Health, Plan, Policy, Reason};
use crate::act::Published;

/// Longest accepted comment, bytes.
pub const MAX_COMMENT_BYTES: usize = 1000;
/// Most overrides (tombstones included) a node keeps; more are refused.
pub const MAX_OVERRIDES: usize = 10_000;
/// Longest accepted id, bytes.
pub const MAX_ID_BYTES: usize = 64;

/// What an override does to its endpoint. Spelled as in config, the API and the CLI (`force_up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideKind {
    /// Out of DNS even if healthy, never below `min_healthy`.
    Drain,
    /// Failures ignored; the published state is kept.
    Maintenance,
    /// Published as if healthy.
    ForceUp,
    /// Withdrawn as if failed.
    ForceDown,
}

impl OverrideKind {
    /// Every kind, in config spelling order.
    pub const ALL: [OverrideKind; 4] = [
        OverrideKind::Drain,
        OverrideKind::Maintenance,
        OverrideKind::ForceUp,
        OverrideKind::ForceDown,
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideKind::Drain => "drain",
            OverrideKind::Maintenance => "maintenance",
            OverrideKind::ForceUp => "force_up",
            OverrideKind::ForceDown => "force_down",
        }
    }

    /// Precedence when several cover one endpoint: lower wins.
    fn rank(self) -> u8 {
        match self {
            OverrideKind::ForceDown => 0,
            OverrideKind::Drain => 1,
            OverrideKind::Maintenance => 2,
            OverrideKind::ForceUp => 3,
        }
    }
}

impl fmt::Display for OverrideKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OverrideKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OverrideKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown override kind {s:?}: use drain, maintenance, force_up or force_down"
                )
            })
    }
}

/// One override, as stored, persisted, replicated and shown by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Unique id, chosen by the node that created it.
    pub id: String,
    /// The endpoint address.
    pub endpoint: IpAddr,
    /// The service fqdn (with trailing dot); `None`: every service that lists the endpoint.
    pub service: Option<String>,
    /// What it does.
    pub kind: OverrideKind,
    /// Why, as the operator wrote it (never empty).
    pub comment: String,
    /// When it takes effect, Unix ms (wall clock).
    pub starts_unix_ms: u64,
    /// When it ends by itself, Unix ms (wall clock); after `starts_unix_ms`.
    pub ends_unix_ms: u64,
    /// When it was created, Unix ms.
    pub created_unix_ms: u64,
    /// When it was last changed (created or deleted), Unix ms: the last-writer-wins version.
    pub updated_unix_ms: u64,
    /// The node that created it.
    pub origin: String,
    /// Deleted before its end: a tombstone, kept until `ends_unix_ms` so replication cannot revive it.
    #[serde(default)]
    pub deleted: bool,
}

impl Override {
    /// Whether it covers `endpoint` of the service `fqdn`.
    pub fn covers(&self, fqdn: &str, endpoint: IpAddr) -> bool {
        self.endpoint == endpoint && self.service.as_deref().is_none_or(|s| s == fqdn)
    }

    /// Whether it is in effect at wall time `now_ms`.
    pub fn active_at(&self, now_ms: u64) -> bool {
        !self.deleted && self.starts_unix_ms <= now_ms && now_ms < self.ends_unix_ms
    }

    /// Whether it has ended (or, deleted, would have) by `now_ms`: it can be forgotten.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        now_ms >= self.ends_unix_ms
    }

    /// The last-writer-wins version: a later update wins; on a tie the deletion wins.
    fn version(&self) -> (u64, bool) {
        (self.updated_unix_ms, self.deleted)
    }

    /// Checks what a received or loaded override must satisfy (ids, comment, window).
    ///
    /// # Errors
    /// The first problem, naming the field.
    pub fn check(&self) -> Result<(), FieldError> {
        if self.id.is_empty()
            || self.id.len() > MAX_ID_BYTES
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(FieldError::new(
                "id",
                "must be 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        check_comment(&self.comment)?;
        if self.ends_unix_ms <= self.starts_unix_ms {
            return Err(FieldError::new("ends_unix_ms", "must be after the start"));
        }
        if self
            .service
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.len() > 255)
        {
            return Err(FieldError::new("service", "must be a service fqdn"));
        }
        Ok(())
    }
}

/// A problem with an override request, naming the field (the API returns it as
/// `{"error": …, "field": …}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The request field, as spelled in the API (`comment`, `ends_unix_ms`, …).
    pub field: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

fn check_comment(comment: &str) -> Result<(), FieldError> {
    if comment.trim().is_empty() {
        return Err(FieldError::new(
            "comment",
            "is required: say why (it is shown in status, logs and on every node)",
        ));
    }
    if comment.len() > MAX_COMMENT_BYTES {
        return Err(FieldError::new(
            "comment",
            format!("is longer than {MAX_COMMENT_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A request for a new override, before it gets an id and times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// The endpoint address.
    pub endpoint: String,
    /// The service fqdn; absent: every service that lists the endpoint.
    #[serde(default)]
    pub service: Option<String>,
    /// `drain`, `maintenance`, `force_up` or `force_down`.
    pub kind: OverrideKind,
    /// Why (required, not empty).
    pub comment: String,
    /// Start, Unix ms; absent: now.
    #[serde(default)]
    pub starts_unix_ms: Option<u64>,
    /// End, Unix ms. Exactly one of `ends_unix_ms` and `duration` is required.
    #[serde(default)]
    pub ends_unix_ms: Option<u64>,
    /// How long from the start, as `"1h"`, `"30m"`, `"90s"`.
    #[serde(default, rename = "for")]
    pub duration: Option<String>,
}

/// The configured services an override may name: fqdn → endpoints.
pub type Services = BTreeMap<String, Vec<IpAddr>>;

/// Why a request names something that does not exist (the API's 404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A field is malformed or out of range (400).
    #[error(transparent)]
    Invalid(FieldError),
    /// The service or endpoint is not configured (404).
    #[error(transparent)]
    Unknown(FieldError),
}

impl RequestError {
    /// The field it names.
    pub fn field(&self) -> &'static str {
        match self {
            RequestError::Invalid(e) | RequestError::Unknown(e) => e.field,
        }
    }
}

impl OverrideRequest {
    /// Checks the request against the configured `services` and makes the override, created at wall
    /// time `now_ms` by node `origin` with the given `id`.
    ///
    /// # Errors
    /// [`RequestError`] naming the field: a missing comment, a malformed address, no or two ends, an
    /// end not after the start or already past, an unknown service, or an endpoint no (named) service
    /// lists.
    pub fn into_override(
        self,
        services: &Services,
        now_ms: u64,
        origin: &str,
        id: String,
    ) -> Result<Override, RequestError> {
        let bad = |f, m: String| RequestError::Invalid(FieldError::new(f, m));
        let endpoint: IpAddr = self.endpoint.trim().parse().map_err(|_| {
            bad(
                "endpoint",
                format!("{:?} is not an IP address", self.endpoint),
            )
        })?;
        check_comment(&self.comment).map_err(RequestError::Invalid)?;
        let service = match self.service.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => {
                let mut fqdn = s.to_ascii_lowercase();
                if !fqdn.ends_with('.') {
                    fqdn.push('.');
                }
                let Some(endpoints) = services.get(&fqdn) else {
                    return Err(RequestError::Unknown(FieldError::new(
                        "service",
                        format!("no configured service is named {s:?}"),
                    )));
                };
                if !endpoints.contains(&endpoint) {
                    return Err(RequestError::Unknown(FieldError::new(
                        "endpoint",
                        format!("service {fqdn} has no endpoint {endpoint}"),
                    )));
                }
                Some(fqdn)
            }
        };
        if service.is_none() && !services.values().any(|e| e.contains(&endpoint)) {
            return Err(RequestError::Unknown(FieldError::new(
                "endpoint",
                format!("no configured service lists the endpoint {endpoint}"),
            )));
        }
        let starts = self.starts_unix_ms.unwrap_or(now_ms);
        let ends = match (self.ends_unix_ms, self.duration.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "for",
                    "give either `for` or `ends_unix_ms`, not both".into(),
                ));
            }
            (None, None) => {
                return Err(bad(
                    "ends_unix_ms",
                    "an override needs an end: `for` (\"1h\") or `ends_unix_ms`".into(),
                ));
            }
            (Some(end), None) => end,
            (None, Some(text)) => {
                let d = humantime::parse_duration(text.trim()).map_err(|e| {
                    bad(
                        "for",
                        format!("{text:?} is not a duration like \"1h\": {e}"),
                    )
                })?;
                if d.is_zero() {
                    return Err(bad("for", "must be longer than 0s".into()));
                }
                starts.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
        };
        if ends <= starts {
            return Err(bad("ends_unix_ms", "must be after the start".into()));
        }
        if ends <= now_ms {
            return Err(bad("ends_unix_ms", "is already past".into()));
        }
        Ok(Override {
            id,
            endpoint,
            service,
            kind: self.kind,
            comment: self.comment.trim().to_owned(),
            starts_unix_ms: starts,
            ends_unix_ms: ends,
            created_unix_ms: now_ms,
            updated_unix_ms: now_ms,
            origin: origin.to_owned(),
            deleted: false,
        })
    }
}

/// What a change to an [`OverrideSet`] did, for logs and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetChange {
    /// A new override (or a newer version of one).
    Set(Override),
    /// An override was deleted (its tombstone).
    Deleted(Override),
    /// An override ended by itself and was forgotten.
    Expired(Override),
}

/// Why a deletion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteError {
    /// No override has this id (or it already ended).
    #[error("no override has the id {0:?}")]
    NotFound(String),
    /// It was already deleted.
    #[error("override {0:?} was already deleted")]
    AlreadyDeleted(String),
}

/// Every override a node knows, tombstones included, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverrideSet {
    by_id: BTreeMap<String, Override>,
}

impl OverrideSet {
    /// An empty set.
    pub fn new() -> Self {
        OverrideSet::default()
    }

    /// Every override and tombstone, by id (what replication sends and the state file holds).
    pub fn all(&self) -> impl Iterator<Item = &Override> {
        self.by_id.values()
    }

    /// The overrides not deleted (active or scheduled), by id.
    pub fn live(&self) -> impl Iterator<Item = &Override> {
        self.by_id.values().filter(|o| !o.deleted)
    }

    /// One override (or tombstone) by id.
    pub fn get(&self, id: &str) -> Option<&Override> {
        self.by_id.get(id)
    }

    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when there is nothing, not even a tombstone.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Adds a new override made by this node.
    ///
    /// # Errors
    /// A message when [`MAX_OVERRIDES`] are already kept or the id is taken.
    pub fn insert(&mut self, o: Override) -> Result<SetChange, String> {
        if self.by_id.len() >= MAX_OVERRIDES {
            return Err(format!(
                "{MAX_OVERRIDES} overrides are already set; delete some first"
            ));
        }
        if self.by_id.contains_key(&o.id) {
            return Err(format!("an override with id {:?} exists", o.id));
        }
        self.by_id.insert(o.id.clone(), o.clone());
        Ok(SetChange::Set(o))
    }

    /// Deletes an override at wall time `now_ms`: it becomes a tombstone whose version is newer
    /// than any seen for it.
    ///
    /// # Errors
    /// [`DeleteError`] when there is no such override, or it is already deleted.
    pub fn delete(&mut self, id: &str, now_ms: u64) -> Result<SetChange, DeleteError> {
        let Some(o) = self.by_id.get_mut(id) else {
            return Err(DeleteError::NotFound(id.to_owned()));
        };
        if o.deleted {
            return Err(DeleteError::AlreadyDeleted(id.to_owned()));
        }
        o.deleted = true;
        o.updated_unix_ms = now_ms.max(o.updated_unix_ms + 1);
        Ok(SetChange::Deleted(o.clone()))
    }

    /// Merges what a peer (or the state file) knows: per id, the newer version wins (see the module
    /// documentation). Entries that fail [`Override::check`] or have already ended at `now_ms` are
    /// ignored. Returns what changed here.
    pub fn merge(
        &mut self,
        incoming: impl IntoIterator<Item = Override>,
        now_ms: u64,
    ) -> Vec<SetChange> {
        let mut changes = Vec::new();
        for o in incoming {
            if o.expired_at(now_ms) || o.check().is_err() {
                continue;
            }
            let newer = match self.by_id.get(&o.id) {
                Some(mine) => o.version() > mine.version(),
                None => self.by_id.len() < MAX_OVERRIDES,
            };
            if newer {
                changes.push(if o.deleted {
                    SetChange::Deleted(o.clone())
                } else {
                    SetChange::Set(o.clone())
                });
                self.by_id.insert(o.id.clone(), o);
            }
        }
        changes
    }

    /// Forgets overrides and tombstones that have ended by `now_ms`; returns the overrides (not
    /// tombstones) that ended.
    pub fn prune(&mut self, now_ms: u64) -> Vec<SetChange> {
        let ended: Vec<String> = self
            .by_id
            .values()
            .filter(|o| o.expired_at(now_ms))
            .map(|o| o.id.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|id| self.by_id.remove(&id))
            .filter(|o| !o.deleted)
            .map(SetChange::Expired)
            .collect()
    }

    /// The earliest wall time after `now_ms` at which an entry starts or ends.
    pub fn next_boundary_ms(&self, now_ms: u64) -> Option<u64> {
        self.by_id
            .values()
            .flat_map(|o| [o.starts_unix_ms, o.ends_unix_ms])
            .filter(|t| *t > now_ms)
            .min()
    }

    /// The overrides that concern `endpoints` of the service `fqdn`, as windows on the monotonic
    /// clock: wall time `now_ms` is taken to be `now`.
    pub fn for_service(
        &self,
        fqdn: &str,
        endpoints: &[IpAddr],
        now: Instant,
        now_ms: u64,
    ) -> ServiceOverrides {
        let at = |ms: u64| {
            if ms >= now_ms {
                now + Duration::from_millis(ms - now_ms)
            } else {
                now.checked_sub(Duration::from_millis(now_ms - ms))
                    .unwrap_or(now)
            }
        };
        let windows = self
            .live()
            .filter(|o| endpoints.contains(&o.endpoint) && o.covers(fqdn, o.endpoint))
            .filter(|o| !o.expired_at(now_ms))
            .map(|o| Window {
                id: o.id.clone(),
                endpoint: o.endpoint,
                kind: o.kind,
                start: at(o.starts_unix_ms),
                end: at(o.ends_unix_ms),
            })
            .collect();
        ServiceOverrides { windows }
    }
}

/// One override of one service, on the monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The override's id.
    pub id: String,
    /// The endpoint.
    pub endpoint: IpAddr,
    /// What it does.
    pub kind: OverrideKind,
    /// When it takes effect.
    pub start: Instant,
    /// When it ends.
    pub end: Instant,
}

/// The overrides of one service, as its core holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceOverrides {
    windows: Vec<Window>,
}

/// What an override did to one endpoint in one plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// The override that applied.
    pub kind: OverrideKind,
    /// Its id.
    pub id: String,
    /// A drained endpoint kept in DNS because fewer than `min_healthy` would remain without it.
    pub kept_for_min_healthy: bool,
}

/// The verdicts and doubts after the overrides, and what each override did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The verdicts the planner sees.
    pub health: BTreeMap<IpAddr, Health>,
    /// The doubts the planner sees: overridden endpoints are the operator's word, never in doubt.
    pub doubts: Doubts,
    /// Per overridden endpoint, what applied.
    pub effects: BTreeMap<IpAddr, Effect>,
}

impl ServiceOverrides {
    /// Overrides made directly from windows (tests, the simulator).
    pub fn from_windows(windows: Vec<Window>) -> Self {
        ServiceOverrides { windows }
    }

    /// Every window, active or not.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// The override in effect on each endpoint at `at` (the winner by precedence).
    pub fn active(&self, at: Instant) -> BTreeMap<IpAddr, &Window> {
        let mut out: BTreeMap<IpAddr, &Window> = BTreeMap::new();
        for w in self.windows.iter().filter(|w| w.start <= at && at < w.end) {
            let better = out
                .get(&w.endpoint)
                .is_none_or(|cur| (w.kind.rank(), &w.id) < (cur.kind.rank(), &cur.id));
            if better {
                out.insert(w.endpoint, w);
            }
        }
        out
    }

    /// The first start or end strictly after `after`: when the plan must be looked at again.
    pub fn next_boundary(&self, after: Instant) -> Option<Instant> {
        self.windows
            .iter()
            .flat_map(|w| [w.start, w.end])
            .filter(|t| *t > after)
            .min()
    }

    /// Applies the overrides in effect at `at` to the cluster verdicts `health` of the service with
    /// `policy`, whose name publishes `published`.
    pub fn apply(
        &self,
        at: Instant,
        policy: &Policy,
        health: &BTreeMap<IpAddr, Health>,
        published: &Published,
        doubts: &Doubts,
    ) -> Applied {
        let active = self.active(at);
        let mut health = health.clone();
        let mut doubts = doubts.clone();
        let mut effects = BTreeMap::new();
        if active.is_empty() {
            return Applied {
                health,
                doubts,
                effects,
            };
        }
        let mut drained: Vec<(IpAddr, &Window)> = Vec::new();
        for (ip, w) in &active {
            if !policy.endpoints.contains(ip) {
                continue;
            }
            let verdict = match w.kind {
                OverrideKind::ForceUp => Health::Up,
                OverrideKind::ForceDown => Health::Down,
                OverrideKind::Maintenance if published.records.contains_key(ip) => Health::Up,
                OverrideKind::Maintenance => Health::Down,
                OverrideKind::Drain => {
                    drained.push((*ip, w));
                    continue;
                }
            };
            health.insert(*ip, verdict);
            effects.insert(
                *ip,
                Effect {
                    kind: w.kind,
                    id: w.id.clone(),
                    kept_for_min_healthy: false,
                },
            );
        }
        // Drain: keep as many drained up endpoints as min_healthy needs, published ones first.
        let is_up = |h: &BTreeMap<IpAddr, Health>, ip: &IpAddr| h.get(ip) == Some(&Health::Up);
        let up_others = policy
            .endpoints
            .iter()
            .filter(|ip| !drained.iter().any(|(d, _)| d == *ip) && is_up(&health, ip))
            .count();
        let mut need = policy.min_healthy.saturating_sub(up_others);
        drained.sort_by_key(|(ip, _)| (!published.records.contains_key(ip), *ip));
        for (ip, w) in drained {
            let keep = need > 0 && is_up(&health, &ip);
            if keep {
                need -= 1;
            } else {
                health.insert(ip, Health::Down);
            }
            effects.insert(
                ip,
                Effect {
                    kind: OverrideKind::Drain,
                    id: w.id.clone(),
                    kept_for_min_healthy: keep,
                },
            );
        }
        for ip in effects.keys() {
            doubts.in_doubt.remove(ip);
            doubts.recovering.remove(ip);
            doubts.unsettled.remove(ip);
        }
        Applied {
            health,
            doubts,
            effects,
        }
    }
}

impl Applied {
    /// Gives each change of `plan` that an override caused, and the standing of each endpoint it
    /// decided, the override's reason.
    pub fn explain(&self, plan: &mut Plan) {
        for (change, why) in &mut plan.changes {
            let (ip, added) = match change {
                Change::Add(ip) => (*ip, true),
                Change::Remove(ip) => (*ip, false),
                Change::Ttl(_) | Change::Weight(_) => continue,
            };
            if let Some(r) = self.reason(&ip, added) {
                *why = r;
            }
        }
        for (ip, standing) in &mut plan.standing {
            if let Some(r) = self.reason(ip, standing.published) {
                standing.reason = r;
            }
        }
    }

    /// The override's reason for `ip` ending up in DNS (`in_dns`) or out of it, if an override
    /// decided that.
    fn reason(&self, ip: &IpAddr, in_dns: bool) -> Option<Reason> {
        let e = self.effects.get(ip)?;
        let id = e.id.clone();
        match (e.kind, in_dns) {
            (OverrideKind::Drain, false) => Some(Reason::Drained { id }),
            (OverrideKind::ForceDown, false) => Some(Reason::ForcedDown { id }),
            (OverrideKind::ForceUp, true) => Some(Reason::ForcedUp { id }),
            (OverrideKind::Maintenance, _) => Some(Reason::Maintenance { id }),
            _ => None,
        }
    }

    /// The endpoints an override touched, for reports.
    pub fn endpoints(&self) -> BTreeSet<IpAddr> {
        self.effects.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests;
