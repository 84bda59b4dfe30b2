//! Agree: several monitor nodes turn their local verdicts into one cluster verdict per endpoint (sans-I/O).
//!
//! Each node's verdict on an endpoint is its **vote** (up or down; unknown abstains). Nodes exchange
//! authenticated snapshots of their votes ([`wire`]). [`Cluster`] holds what this node knows and computes a
//! [`View`]:
//!
//! - **Liveness**: a peer is live if a valid message from it arrived within `vote_ttl`, measured on this
//!   node's monotonic clock (so clock skew cannot stretch a vote's life). Votes of peers that are not live
//!   do not count.
//! - **Isolation**: a node whose self-check fails, or that hears from fewer than a majority of the
//!   configured nodes (itself included), is isolated: it neither votes nor writes. Peers announce their
//!   isolation in their messages and their votes are then ignored.
//! - **Tally**: for each endpoint, count the up and down votes of live, non-isolated nodes. With `q` the
//!   quorum threshold computed against the *configured* node count, `up ≥ q` makes it up, `down ≥ q`
//!   makes it down; anything else, ties included, leaves the previous cluster state unchanged (unknown at
//!   first, which the planner treats as "keep what is published"). Isolation forgets the previous state:
//!   the majority may have decided otherwise meanwhile.
//! - **Fresh votes**: a snapshot may arrive seconds after it was composed (TCP retries a request
//!   across a partition and delivers it once the path is back), older than what the majority decided
//!   meanwhile. Each message says which message its sender last accepted from each peer (`heard`);
//!   a peer's votes count, and it is a leader candidate, only once its latest message answers one this
//!   node sent after it last (re)joined and after it heard the peer again after a silence.
//! - **Leader**: the live, non-isolated node with the lowest id among those that see a majority. Only it
//!   writes to DNS (through the service's writer, the DNS back end), and not before it has been
//!   non-isolated for `settle` (two heartbeats) after start or after an isolation and a majority
//!   (itself included) answers it, so that it acts on fresh snapshots (meanwhile it announces itself
//!   as settling and its peers pass it over); writes stay compare-and-swap, so two nodes that briefly
//!   both think they lead cannot corrupt a record set. `term` counts leader changes as seen by this
//!   node.
//!
//! A single node without `[cluster]` is the one-node case of the same rules.

pub mod override_sync;
pub mod transport;
pub mod wire;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::Index;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::observe::health::Health;
pub use wire::{Message, Vote};

/// Identifies one endpoint of one service: (service fqdn, endpoint address).
pub type VoteKey = (String, IpAddr);

/// How many agreeing votes change an endpoint's cluster state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quorum {
    /// More than half of the configured nodes.
    Majority,
    /// Every configured node.
    All,
    /// Any one node (conflicting votes are a tie and change nothing).
    Any,
    /// At least this many nodes.
    AtLeast(usize),
    /// At least this fraction of the configured nodes, rounded up (Route 53 style).
    Fraction(f64),
}

impl Quorum {
    /// The number of agreeing votes needed among `nodes` configured nodes; at least 1.
    pub fn threshold(&self, nodes: usize) -> usize {
        let n = nodes.max(1);
        match *self {
            Quorum::Majority => n / 2 + 1,
            Quorum::All => n,
            Quorum::Any => 1,
            Quorum::AtLeast(k) => k.clamp(1, n),
            Quorum::Fraction(f) => ((f * n as f64).ceil() as usize).clamp(1, n),
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::Majority => f.write_str("majority"),
            Quorum::All => f.write_str("all"),
            Quorum::Any => f.write_str("any"),
            Quorum::AtLeast(k) => write!(f, "at_least = {k}"),
            Quorum::Fraction(x) => write!(f, "fraction = {x}"),
        }
    }
}

/// Settings of the agreement core.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// This node's id.
    pub me: String,
    /// Every configured node id, this node included.
    pub nodes: BTreeSet<String>,
    /// Quorum of services without their own.
    pub quorum: Quorum,
    /// Per-service quorum overrides, by fqdn.
    pub service_quorum: BTreeMap<String, Quorum>,
    /// How long a peer's votes count after its last valid message.
    pub vote_ttl: Duration,
    /// Messages whose timestamp is further than this from our wall clock are rejected.
    pub max_clock_skew: Duration,
    /// After start or after isolation ends, how long to gather fresh snapshots before writing (two
    /// heartbeats: a snapshot delayed across a healed partition may be older than the peer's verdict).
    pub settle: Duration,
}

/// Rules that must hold for the cluster to be safe. Only tests switch them off, to show that the
/// simulator catches the bugs older tools had.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Votes of silent peers stop counting after `vote_ttl`.
    pub expire_votes: bool,
    /// A node that hears from fewer than a majority isolates itself: it neither votes nor writes;
    /// and it leads only once a majority (itself included) answers it.
    pub minority_cannot_write: bool,
    /// A peer's votes count only once its latest message answers one this node sent after it
    /// (re)joined and after it heard the peer again; a node settles only on such answers.
    pub fresh_votes_only: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            expire_votes: true,
            minority_cannot_write: true,
            fresh_votes_only: true,
        }
    }
}

/// Why a node does not vote or write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// The node's self-check targets are unreachable.
    SelfCheckFailed,
    /// The node hears from fewer than a majority of the configured nodes.
    NoMajority {
        /// Nodes heard within `vote_ttl`, itself included.
        heard: usize,
        /// Nodes needed.
        needed: usize,
    },
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Isolation::SelfCheckFailed => f.write_str("self-check failed"),
            Isolation::NoMajority { heard, needed } => {
                write!(
                    f,
                    "hears from {heard} of the {needed} nodes needed for a majority"
                )
            }
        }
    }
}

/// Why a peer message was not accepted. Each is logged and counted; none is fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Message format version we do not speak.
    #[error("unsupported message version {0}")]
    Version(u32),
    /// Sender is not a configured peer.
    #[error("unknown node {0:?}")]
    UnknownNode(String),
    /// Sender claims to be this node.
    #[error("message claims to come from this node")]
    FromSelf,
    /// Timestamp too far from our clock: stale replay or badly skewed clock.
    #[error("timestamp {skew_ms} ms away from our clock (limit {limit_ms} ms)")]
    Clock {
        /// Signed difference, sender minus us.
        skew_ms: i64,
        /// The limit.
        limit_ms: u64,
    },
    /// Older generation or sequence than already seen: replayed, duplicated or reordered.
    #[error(
        "replayed or out-of-order message (generation {generation} seq {seq}, last seen generation {last_generation} seq {last_seq})"
    )]
    Replay {
        /// The message's generation.
        generation: u64,
        /// The message's sequence.
        seq: u64,
        /// Last accepted generation.
        last_generation: u64,
        /// Last accepted sequence.
        last_seq: u64,
    },
}

#[derive(Debug, Clone, Default)]
struct Peer {
    generation: u64,
    seq: u64,
    last_heard: Option<Instant>,
    /// The sequence of this node's message (of its current generation) that the peer's latest
    /// message says it had accepted.
    answered: Option<u64>,
    /// The first sequence of this node's messages that the peer must have answered for its
    /// votes to count: this node's next message when it (re)joined or heard the peer again.
    need: u64,
    isolated: bool,
    settling: bool,
    sees: BTreeSet<String>,
    votes: BTreeMap<VoteKey, bool>,
}

/// The tally of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The cluster state after this tally.
    pub state: Health,
    /// Nodes whose up vote counted.
    pub up: Vec<String>,
    /// Nodes whose down vote counted.
    pub down: Vec<String>,
    /// Agreeing votes needed.
    pub needed: usize,
}

/// What this node concludes at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Set when this node neither votes nor writes.
    pub isolated: Option<Isolation>,
    /// Nodes heard within `vote_ttl`, this node included.
    pub live: BTreeSet<String>,
    /// The live peers whose votes count: not isolated, and their latest message answers a recent one
    /// of this node's (see the module documentation, "Fresh votes").
    pub voters: BTreeSet<String>,
    /// The leader this node recognises: the one node that writes to DNS.
    pub leader: Option<String>,
    /// Leader changes seen by this node.
    pub term: u64,
    /// Whether this node is the leader, and should write.
    pub am_leader: bool,
    /// Per endpoint: its cluster state and the votes behind it.
    pub endpoints: Tallies,
}

impl View {
    /// Cluster states of one service's endpoints.
    pub fn service_health(&self, fqdn: &str) -> BTreeMap<IpAddr, Health> {
        self.endpoints
            .service(fqdn)
            .map(|m| m.iter().map(|(ip, t)| (*ip, t.state)).collect())
            .unwrap_or_default()
    }
}

/// The tallies of a [`View`], grouped by service. Each service's table is shared (`Arc`) between
/// successive views until one of its endpoints' tallies changes, so that a view costs O(services)
/// to make and to compare with the previous one, not O(endpoints): at 10,000 endpoints the
/// agreement actor makes one after every batch of verdicts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tallies(BTreeMap<String, Arc<BTreeMap<IpAddr, Tally>>>);

impl Tallies {
    /// The tally of one endpoint.
    pub fn get(&self, key: &VoteKey) -> Option<&Tally> {
        self.0.get(&key.0)?.get(&key.1)
    }

    /// The tallies of one service's endpoints.
    pub fn service(&self, fqdn: &str) -> Option<&BTreeMap<IpAddr, Tally>> {
        self.0.get(fqdn).map(|m| &**m)
    }

    /// The shared table of one service's tallies: the same `Arc` (pointer-equal) in successive
    /// views until one of that service's tallies changes.
    pub fn service_table(&self, fqdn: &str) -> Option<&Arc<BTreeMap<IpAddr, Tally>>> {
        self.0.get(fqdn)
    }

    /// Every endpoint's tally, ordered by (service, endpoint) like a `BTreeMap<VoteKey, Tally>`.
    pub fn iter(&self) -> impl Iterator<Item = ((&str, IpAddr), &Tally)> {
        self.0
            .iter()
            .flat_map(|(s, m)| m.iter().map(move |(ip, t)| ((s.as_str(), *ip), t)))
    }

    /// Every endpoint's tally, in the order of [`Tallies::iter`].
    pub fn values(&self) -> impl Iterator<Item = &Tally> {
        self.0.values().flat_map(|m| m.values())
    }

    /// The number of endpoints.
    pub fn len(&self) -> usize {
        self.0.values().map(|m| m.len()).sum()
    }

    /// True when no endpoint is registered.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(|m| m.is_empty())
    }

    /// Sets one endpoint's tally; copies that service's table only if a view still shares it and
    /// the tally changed.
    fn set(&mut self, key: &VoteKey, tally: Tally) {
        if self.get(key) == Some(&tally) {
            return;
        }
        let m = self.0.entry(key.0.clone()).or_default();
        Arc::make_mut(m).insert(key.1, tally);
    }
}

impl Index<&VoteKey> for Tallies {
    type Output = Tally;

    /// # Panics
    /// If the endpoint has no tally, like `BTreeMap`'s index.
    fn index(&self, key: &VoteKey) -> &Tally {
        self.get(key).expect("no tally for this endpoint")
    }
}

impl<'a> IntoIterator for &'a Tallies {
    type Item = ((&'a str, IpAddr), &'a Tally);
    type IntoIter = Box<dyn Iterator<Item = Self::Item> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl FromIterator<(VoteKey, Tally)> for Tallies {
    fn from_iter<I: IntoIterator<Item = (VoteKey, Tally)>>(iter: I) -> Self {
        let mut t = Tallies::default();
        for (k, v) in iter {
            t.set(&k, v);
        }
        t
    }
}

/// The agreement state of one node.
#[derive(Debug, Clone)]
pub struct Cluster {
    cfg: ClusterConfig,
    rules: Rules,
    generation: u64,
    seq: u64,
    local: BTreeMap<VoteKey, Health>,
    self_check_ok: bool,
    peers: BTreeMap<String, Peer>,
    decided: BTreeMap<VoteKey, Health>,
    leader: Option<String>,
    term: u64,
    dirty: bool,
    /// Since when this node has been continuously non-isolated.
    joined_at: Option<Instant>,
    /// Whether this node had settled (may lead) as of the last [`Cluster::view`].
    settled: bool,
    /// The tallies of the last [`Cluster::view`], kept up to date incrementally.
    tallies: Tallies,
    /// Endpoints whose inputs (this node's or a peer's vote) changed since the last view.
    stale: BTreeSet<VoteKey>,
    /// What every tally of the last view was computed against: whether this node was isolated, and
    /// the voting peers. `None`: recompute every tally at the next view.
    basis: Option<(bool, Vec<String>)>,
}

impl Cluster {
    /// A fresh node. `generation` must grow across restarts and reloads of this node (the wall-clock ms
    /// when this state starts does).
    pub fn new(cfg: ClusterConfig, generation: u64) -> Self {
        let peers = cfg
            .nodes
            .iter()
            .filter(|n| **n != cfg.me)
            .map(|n| (n.clone(), Peer::default()))
            .collect();
        Cluster {
            cfg,
            rules: Rules::default(),
            generation,
            seq: 0,
            local: BTreeMap::new(),
            self_check_ok: true,
            peers,
            decided: BTreeMap::new(),
            leader: None,
            term: 0,
            dirty: true,
            joined_at: None,
            settled: false,
            tallies: Tallies::default(),
            stale: BTreeSet::new(),
            basis: None,
        }
    }

    /// Replaces the safety rules (tests only).
    #[doc(hidden)]
    pub fn set_rules(&mut self, rules: Rules) {
        self.rules = rules;
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.cfg.me
    }

    /// The configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// Records this node's own verdict on an endpoint; registers the endpoint for tallying.
    pub fn set_local(&mut self, key: VoteKey, health: Health) {
        if self.local.get(&key) != Some(&health) {
            self.stale.insert(key.clone());
            self.local.insert(key, health);
            self.dirty = true;
        }
    }

    /// Forgets endpoints no longer configured (after a reload).
    pub fn retain_local(&mut self, keep: impl Fn(&VoteKey) -> bool) {
        self.local.retain(|k, _| keep(k));
        self.decided.retain(|k, _| keep(k));
        self.tallies = Tallies::default();
        self.basis = None;
        self.dirty = true;
    }

    /// Records the outcome of this node's self-check.
    pub fn set_self_check(&mut self, ok: bool) {
        if self.self_check_ok != ok {
            self.self_check_ok = ok;
            self.dirty = true;
        }
    }

    /// True if something peers should hear about changed since the last [`Cluster::outgoing`].
    pub fn has_news(&self) -> bool {
        self.dirty
    }

    /// Accepts a peer message that already passed authentication.
    ///
    /// # Errors
    /// [`Reject`] saying why the message is ignored.
    pub fn receive(&mut self, msg: &Message, now: Instant, now_wall_ms: u64) -> Result<(), Reject> {
        if msg.v != wire::VERSION {
            return Err(Reject::Version(msg.v));
        }
        if msg.node == self.cfg.me {
            return Err(Reject::FromSelf);
        }
        let limit_ms = self.cfg.max_clock_skew.as_millis() as u64;
        let skew_ms = msg.sent_at_ms as i64 - now_wall_ms as i64;
        if skew_ms.unsigned_abs() > limit_ms {
            return Err(Reject::Clock { skew_ms, limit_ms });
        }
        let was_live = match self.peers.get(&msg.node) {
            Some(p) => self.peer_live(p, now),
            None => return Err(Reject::UnknownNode(msg.node.clone())),
        };
        let next_seq = self.seq + 1;
        let Some(peer) = self.peers.get_mut(&msg.node) else {
            return Err(Reject::UnknownNode(msg.node.clone()));
        };
        if (msg.generation, msg.seq) <= (peer.generation, peer.seq) {
            return Err(Reject::Replay {
                generation: msg.generation,
                seq: msg.seq,
                last_generation: peer.generation,
                last_seq: peer.seq,
            });
        }
        if msg.generation != peer.generation && peer.last_heard.is_some() {
            // A restarted peer: a full snapshot replaces everything it said before.
            peer.votes.clear();
        }
        // A message may have waited out a partition in a TCP retransmission queue and arrive
        // seconds after it was composed. From a peer heard again after silence, only messages
        // answering one of this node's from now on count; answer at once. A peer that restarted
        // or (re)joined (its flags changed) waits for an answer too.
        if !was_live {
            peer.need = next_seq;
        }
        if !was_live
            || msg.generation != peer.generation
            || msg.isolated != peer.isolated
            || msg.settling != peer.settling
        {
            self.dirty = true;
        }
        peer.answered = msg
            .heard
            .iter()
            .find(|h| h.node == self.cfg.me && h.generation == self.generation)
            .map(|h| h.seq);
        peer.generation = msg.generation;
        peer.seq = msg.seq;
        peer.last_heard = Some(now);
        peer.isolated = msg.isolated;
        peer.settling = msg.settling;
        peer.sees = msg.sees.iter().cloned().collect();
        let votes: BTreeMap<VoteKey, bool> = msg
            .votes
            .iter()
            .map(|v| ((v.service.clone(), v.endpoint), v.up))
            .collect();
        // Only the endpoints whose vote from this peer changed need a new tally (a change of the
        // peer's liveness or isolation changes the voters, and then every tally is recomputed).
        for (k, up) in &votes {
            if peer.votes.get(k) != Some(up) {
                self.stale.insert(k.clone());
            }
        }
        for k in peer.votes.keys() {
            if !votes.contains_key(k) {
                self.stale.insert(k.clone());
            }
        }
        peer.votes = votes;
        Ok(())
    }

    fn peer_live(&self, p: &Peer, now: Instant) -> bool {
        match p.last_heard {
            None => false,
            Some(t) => {
                !self.rules.expire_votes || now.saturating_duration_since(t) <= self.cfg.vote_ttl
            }
        }
    }

    /// Whether the peer's latest message answers one this node sent since it (re)joined and since
    /// it heard the peer again: then it was composed after both, and its votes are current.
    fn answers(&self, p: &Peer) -> bool {
        !self.rules.fresh_votes_only || p.answered.is_some_and(|s| s >= p.need)
    }

    /// Non-isolated for at least `settle`, and hearing current snapshots (answers to its own, see
    /// [`Cluster::answers`]) from enough live peers to make a majority with itself.
    fn has_settled(&self, now: Instant) -> bool {
        let current = self
            .peers
            .values()
            .filter(|p| self.peer_live(p, now) && self.answers(p))
            .count();
        self.joined_at
            .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.settle)
            && (current + 1 >= self.majority() || !self.rules.minority_cannot_write)
    }

    fn majority(&self) -> usize {
        self.cfg.nodes.len() / 2 + 1
    }

    /// Computes this node's view at `now` and updates the sticky cluster states and leader term.
    pub fn view(&mut self, now: Instant) -> View {
        let live_peers: BTreeSet<String> = self
            .peers
            .iter()
            .filter(|(_, p)| self.peer_live(p, now))
            .map(|(id, _)| id.clone())
            .collect();
        let mut live = live_peers.clone();
        live.insert(self.cfg.me.clone());
        let isolated = self.isolation(live.len());
        self.track_join(now, isolated.is_none());
        // Live peers that are not isolated and whose latest message answers a recent one of this
        // node's: their votes count.
        let voters: Vec<String> = live_peers
            .into_iter()
            .filter(|id| !self.peers[id].isolated && self.answers(&self.peers[id]))
            .collect();
        let endpoints = self.tally(isolated.is_some(), voters.clone());
        let leader = self.elect(now, isolated.is_none(), &voters);
        View {
            am_leader: leader.as_deref() == Some(self.cfg.me.as_str()),
            isolated,
            live,
            voters: voters.into_iter().collect(),
            leader,
            term: self.term,
            endpoints,
        }
    }

    /// Tracks since when this node has been continuously non-isolated. On (re)joining, every peer's
    /// votes wait for an answer to this node's next message, which goes out at once: what arrived
    /// before may be older than what the majority decided meanwhile.
    fn track_join(&mut self, now: Instant, not_isolated: bool) {
        self.joined_at = match (not_isolated, self.joined_at) {
            (true, None) => {
                let next = self.seq + 1;
                for p in self.peers.values_mut() {
                    p.need = p.need.max(next);
                }
                self.dirty = true;
                Some(now)
            }
            (true, since) => since,
            (false, _) => None,
        };
    }

    /// Why this node is isolated, hearing `live` nodes (itself included), if it is.
    fn isolation(&self, live: usize) -> Option<Isolation> {
        let needed = self.majority();
        if !self.self_check_ok {
            Some(Isolation::SelfCheckFailed)
        } else if live < needed && self.rules.minority_cannot_write {
            Some(Isolation::NoMajority {
                heard: live,
                needed,
            })
        } else {
            None
        }
    }

    /// Counts the votes of this node (unless `isolated`) and of `voters` on every endpoint, and
    /// updates the sticky cluster states.
    ///
    /// Incremental: with the same isolation and voters as the last time, only the endpoints whose
    /// votes changed since are counted again; the others' tallies cannot have changed (a tally is a
    /// function of the votes, and of the previous state only when the votes leave it as it was).
    fn tally(&mut self, isolated: bool, voters: Vec<String>) -> Tallies {
        let basis = Some((isolated, voters));
        let stale = std::mem::take(&mut self.stale);
        if self.basis != basis {
            self.basis = basis;
            let keys: Vec<VoteKey> = self.local.keys().cloned().collect();
            for key in keys {
                self.tally_one(key);
            }
        } else {
            for key in stale {
                self.tally_one(key);
            }
        }
        self.tallies.clone()
    }

    /// Counts the votes on one endpoint against [`Cluster::basis`] and stores its tally.
    fn tally_one(&mut self, key: VoteKey) {
        let Some((isolated, voters)) = &self.basis else {
            return;
        };
        let isolated = *isolated;
        let n = self.cfg.nodes.len();
        // Votes of peers on endpoints this node does not probe are not tallied.
        if let Some(local) = self.local.get(&key) {
            let q = self
                .cfg
                .service_quorum
                .get(&key.0)
                .unwrap_or(&self.cfg.quorum)
                .threshold(n);
            let mut up = Vec::new();
            let mut down = Vec::new();
            if !isolated {
                match local {
                    Health::Up => up.push(self.cfg.me.clone()),
                    Health::Down => down.push(self.cfg.me.clone()),
                    Health::Unknown => {}
                }
            }
            for id in voters {
                match self.peers[id].votes.get(&key) {
                    Some(true) => up.push(id.clone()),
                    Some(false) => down.push(id.clone()),
                    None => {}
                }
            }
            // An isolated node's conclusions are not agreement, and what it agreed before may since
            // have been overruled by the majority it could not hear: forget it. Unknown makes the planner
            // keep what DNS publishes, exactly like a node that just started.
            let state = if isolated {
                self.decided.remove(&key);
                Health::Unknown
            } else {
                let previous = self.decided.get(&key).copied().unwrap_or(Health::Unknown);
                let state = match (up.len() >= q, down.len() >= q) {
                    (true, false) => Health::Up,
                    (false, true) => Health::Down,
                    _ => previous,
                };
                self.decided.insert(key.clone(), state);
                state
            };
            self.tallies.set(
                &key,
                Tally {
                    state,
                    up,
                    down,
                    needed: q,
                },
            );
        }
    }

    /// Elects the leader among `voters` and this node (when it is not isolated and has settled),
    /// counting leader changes in `term`.
    fn elect(&mut self, now: Instant, not_isolated: bool, voters: &[String]) -> Option<String> {
        let needed = self.majority();
        let mut candidates: Vec<&str> = voters
            .iter()
            .filter(|id| {
                let p = &self.peers[*id];
                !p.settling && p.sees.len() + 1 >= needed
            })
            .map(String::as_str)
            .collect();
        self.settled = not_isolated && self.has_settled(now);
        if self.settled {
            candidates.push(&self.cfg.me);
        }
        let leader = candidates.into_iter().min().map(str::to_owned);
        if leader != self.leader {
            self.term += 1;
            self.leader.clone_from(&leader);
        }
        leader
    }

    /// The message to send to every peer now: a full snapshot of this node's votes. Bumps the sequence.
    pub fn outgoing(&mut self, now: Instant, now_wall_ms: u64) -> Message {
        let view = self.view(now);
        self.seq += 1;
        self.dirty = false;
        let mut sees: Vec<String> = view
            .live
            .into_iter()
            .filter(|n| *n != self.cfg.me)
            .collect();
        sees.sort();
        let votes = if view.isolated.is_some() {
            Vec::new()
        } else {
            self.local
                .iter()
                .filter_map(|((service, endpoint), h)| {
                    match h {
                        Health::Up => Some(true),
                        Health::Down => Some(false),
                        Health::Unknown => None,
                    }
                    .map(|up| Vote {
                        service: service.clone(),
                        endpoint: *endpoint,
                        up,
                    })
                })
                .collect()
        };
        let heard = self
            .peers
            .iter()
            .filter(|(_, p)| p.last_heard.is_some())
            .map(|(id, p)| wire::Heard {
                node: id.clone(),
                generation: p.generation,
                seq: p.seq,
            })
            .collect();
        Message {
            v: wire::VERSION,
            node: self.cfg.me.clone(),
            generation: self.generation,
            seq: self.seq,
            sent_at_ms: now_wall_ms,
            isolated: view.isolated.is_some(),
            settling: view.isolated.is_none() && !self.settled,
            sees,
            votes,
            heard,
        }
    }
}
