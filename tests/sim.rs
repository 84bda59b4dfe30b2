//! Deterministic cluster simulator.
//!
//! N nodes run rrguard's real decision core — health state machines, the agreement core (`Cluster`), the
//! wire format with HMAC, and the planner — over an in-memory network with seeded random faults: message
//! loss, delay and reordering, duplication, partitions, node crash and restart, clock skew up to ±2 s,
//! self-check failures, probe paths cut between a monitor and an endpoint, and endpoints failing and
//! recovering. DNS is an in-memory record set with compare-and-swap, like an RFC 2136 primary.
//!
//! After every step the DESIGN.md invariants are checked:
//! 1. never fewer than `min_healthy` records published (keep_all);
//! 2. no write from a node that is isolated or hears from fewer than a majority;
//! 3. every published record set is one a single writer decided (CAS);
//! 4. votes of nodes not heard within `vote_ttl` are not counted;
//! 5. after faults heal, DNS equals the true healthy set within [`CONVERGENCE_BOUND`];
//! 6. no flapping: in fault-free stretches, no more DNS writes than real endpoint transitions; and when
//!    every endpoint fails at once (fall ≥ 2), nothing is removed only to be put back by keep_all.
//!
//! A failing seed prints the command that replays it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use rrguard::agree::wire::{self, Key};
use rrguard::agree::{Cluster, ClusterConfig, Quorum, Rules};
use rrguard::config::AllDownPolicy;
use rrguard::decide::{self, Health, Policy};
use rrguard::observe::health::HealthMachine;
use tokio::time::Instant;

const TICK_MS: u64 = 100;
const INTERVAL_MS: u64 = 1000;
const HEARTBEAT_MS: u64 = 1000;
const VOTE_TTL_MS: u64 = 3000;
const RECONCILE_MS: u64 = 5000;
const CHAOS_MS: u64 = 30_000;
const CALM_MS: u64 = 40_000;
/// Stated convergence bound: once faults have healed and endpoints are steady, DNS shows the true
/// healthy set within this time. Detection takes at most fall × interval (≤ 3 s) plus stagger, votes
/// propagate within a heartbeat, restarted nodes are heard again within one heartbeat and vote after
/// rise × interval; 10 s covers all of that with margin.
const CONVERGENCE_BOUND_MS: u64 = 10_000;
const WALL_BASE_MS: u64 = 1_800_000_000_000;
const SERVICE: &str = "www.example.test.";

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Rule changes that must make the simulator fail (to show the checks have teeth).
#[derive(Clone, Copy, Debug, Default)]
struct Mutations {
    no_vote_expiry: bool,
    minority_writes: bool,
    no_removal_hold: bool,
}

struct Node {
    id: String,
    alive: bool,
    generation: u64,
    skew_ms: i64,
    cluster: Cluster,
    machines: BTreeMap<IpAddr, HealthMachine>,
    next_probe_ms: BTreeMap<IpAddr, u64>,
    next_heartbeat_ms: u64,
    next_reconcile_ms: u64,
    published: Option<BTreeSet<IpAddr>>,
    self_check_ok: bool,
    /// Ground truth for invariant 4: when this node last accepted a message from each peer.
    accepted_from: BTreeMap<String, u64>,
    /// Since when this node, as writer, holds removals back (as the daemon's controller does).
    deferring_since: Option<u64>,
}

struct InFlight {
    due_ms: u64,
    to: usize,
    body: Vec<u8>,
    mac: String,
}

#[derive(Default)]
struct Faults {
    /// Partition: group id per node (all 0 = connected), until time.
    partition: Option<(Vec<u8>, u64)>,
    /// (node, endpoint) probe paths cut, until time.
    cut: BTreeMap<(usize, IpAddr), u64>,
    /// Nodes whose self-check fails, until time.
    self_check: BTreeMap<usize, u64>,
    /// Crashed nodes, until time.
    crashed: BTreeMap<usize, u64>,
    loss_per_mille: u64,
    dup_per_mille: u64,
    max_delay_ms: u64,
}

impl Faults {
    fn any(&self) -> bool {
        self.partition.is_some()
            || !self.cut.is_empty()
            || !self.self_check.is_empty()
            || !self.crashed.is_empty()
            || self.loss_per_mille > 0
            || self.dup_per_mille > 0
    }
}

struct Sim {
    seed: u64,
    rng: Rng,
    now_ms: u64,
    t0: Instant,
    key: Key,
    nodes: Vec<Node>,
    net: VecDeque<InFlight>,
    faults: Faults,
    endpoints: Vec<IpAddr>,
    truth: BTreeMap<IpAddr, bool>,
    policy: Policy,
    fall: u32,
    rise: u32,
    quorum: Quorum,
    dns: BTreeSet<IpAddr>,
    /// Time of the last fault or endpoint change, for convergence.
    last_disturbance_ms: u64,
    /// Start of the current fault-free stretch, if in one.
    calm_since_ms: Option<u64>,
    /// Writes and truth transitions, with times, for the flapping check.
    writes: Vec<u64>,
    /// Set while every endpoint has been down since they all failed in the same tick (calm phase).
    mass_failure_since: Option<u64>,
    transitions: Vec<u64>,
    mutations: Mutations,
    rejected: u64,
    accepted: u64,
    /// How often invariants 5 and 6 were actually checked, so the battery cannot go vacuous.
    convergence_checks: u64,
    flap_checks: u64,
    conflicts: u64,
}

fn majority(n: usize) -> usize {
    n / 2 + 1
}

impl Sim {
    fn new(seed: u64, mutations: Mutations) -> Sim {
        let mut rng = Rng(seed);
        let n_nodes = [3usize, 3, 3, 4, 5][rng.below(5) as usize];
        let n_endpoints = 2 + rng.below(4) as usize;
        let endpoints: Vec<IpAddr> = (0..n_endpoints)
            .map(|i| IpAddr::from([192, 0, 2, 10 + i as u8]))
            .collect();
        let fall = 1 + rng.below(3) as u32;
        let rise = 1 + rng.below(3) as u32;
        let quorum = match rng.below(10) {
            0 => Quorum::All,
            1 => Quorum::AtLeast(2),
            2 => Quorum::Fraction(0.5),
            _ => Quorum::Majority,
        };
        let min_healthy = 1 + rng.below(2) as usize;
        let policy = Policy {
            endpoints: endpoints.clone(),
            min_healthy: min_healthy.min(n_endpoints),
            all_down: AllDownPolicy::KeepAll,
            remove_unlisted: false,
        };
        let ids: Vec<String> = (0..n_nodes).map(|i| format!("mon-{i}")).collect();
        let t0 = Instant::now();
        let mut sim = Sim {
            seed,
            rng,
            now_ms: 0,
            t0,
            key: Key::new(b"sim cluster secret"),
            nodes: Vec::new(),
            net: VecDeque::new(),
            faults: Faults::default(),
            truth: endpoints.iter().map(|ip| (*ip, true)).collect(),
            dns: endpoints.iter().copied().collect(),
            endpoints,
            policy,
            fall,
            rise,
            quorum,
            last_disturbance_ms: 0,
            calm_since_ms: Some(0),
            writes: Vec::new(),
            mass_failure_since: None,
            transitions: Vec::new(),
            mutations,
            rejected: 0,
            accepted: 0,
            convergence_checks: 0,
            flap_checks: 0,
            conflicts: 0,
        };
        for (i, id) in ids.iter().enumerate() {
            let skew_ms = sim.rng.below(4001) as i64 - 2000;
            let node = sim.fresh_node(i, id.clone(), &ids, 1, skew_ms);
            sim.nodes.push(node);
        }
        sim
    }

    fn describe(&self) -> String {
        format!(
            "seed {} nodes {} endpoints {} fall {} rise {} quorum {} min_healthy {}",
            self.seed,
            self.nodes.len(),
            self.endpoints.len(),
            self.fall,
            self.rise,
            self.quorum,
            self.policy.min_healthy
        )
    }

    fn fresh_node(
        &mut self,
        index: usize,
        id: String,
        ids: &[String],
        generation: u64,
        skew_ms: i64,
    ) -> Node {
        let cfg = ClusterConfig {
            me: id.clone(),
            nodes: ids.iter().cloned().collect(),
            quorum: self.quorum,
            service_quorum: BTreeMap::new(),
            vote_ttl: Duration::from_millis(VOTE_TTL_MS),
            max_clock_skew: Duration::from_secs(30),
            settle: Duration::from_millis(2 * HEARTBEAT_MS),
        };
        let mut cluster = Cluster::new(cfg, generation);
        cluster.set_rules(Rules {
            expire_votes: !self.mutations.no_vote_expiry,
            minority_cannot_write: !self.mutations.minority_writes,
        });
        let n = self.endpoints.len() as u64;
        let mut machines = BTreeMap::new();
        let mut next_probe_ms = BTreeMap::new();
        for (k, ip) in self.endpoints.iter().enumerate() {
            machines.insert(*ip, HealthMachine::new(self.fall, self.rise));
            // Staggered like the real scheduler, plus a per-node phase.
            let phase = (index as u64 * 37) % INTERVAL_MS;
            next_probe_ms.insert(
                *ip,
                self.now_ms + (INTERVAL_MS / n * k as u64 + phase) % INTERVAL_MS,
            );
            cluster.set_local((SERVICE.to_owned(), *ip), Health::Unknown);
        }
        Node {
            id,
            alive: true,
            generation,
            skew_ms,
            cluster,
            machines,
            next_probe_ms,
            next_heartbeat_ms: self.now_ms,
            next_reconcile_ms: self.now_ms + RECONCILE_MS,
            published: None,
            self_check_ok: true,
            accepted_from: BTreeMap::new(),
            deferring_since: None,
        }
    }

    fn instant(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now_ms)
    }

    fn wall(&self, node: usize) -> u64 {
        (WALL_BASE_MS as i64 + self.now_ms as i64 + self.nodes[node].skew_ms) as u64
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "invariant violated at t={} ms: {what}\n  {}\n  replay: SIM_SEED={} cargo test --test sim replay -- --nocapture",
            self.now_ms,
            self.describe(),
            self.seed
        );
    }

    fn disturbed(&mut self) {
        self.last_disturbance_ms = self.now_ms;
    }

    /// Random faults during the chaos phase; endpoint changes throughout.
    fn inject(&mut self, chaos: bool) {
        let now = self.now_ms;
        let n = self.nodes.len();
        let span = |rng: &mut Rng| 2000 + rng.below(8000);
        if chaos {
            if self.rng.chance(5) {
                let groups: Vec<u8> = (0..n).map(|_| self.rng.below(2) as u8).collect();
                let until = now + span(&mut self.rng);
                self.faults.partition = Some((groups, until));
            }
            if self.rng.chance(8) {
                let node = self.rng.below(n as u64) as usize;
                let ep = self.endpoints[self.rng.below(self.endpoints.len() as u64) as usize];
                let until = now + span(&mut self.rng);
                self.faults.cut.insert((node, ep), until);
            }
            if self.rng.chance(3) {
                let node = self.rng.below(n as u64) as usize;
                let until = now + span(&mut self.rng);
                self.faults.self_check.insert(node, until);
            }
            if self.rng.chance(4) {
                let node = self.rng.below(n as u64) as usize;
                if self.nodes[node].alive {
                    self.nodes[node].alive = false;
                    let until = now + span(&mut self.rng);
                    self.faults.crashed.insert(node, until);
                }
            }
            if self.rng.chance(10) {
                self.faults.loss_per_mille = [0, 50, 100, 300][self.rng.below(4) as usize];
                self.faults.dup_per_mille = [0, 50][self.rng.below(2) as usize];
                self.faults.max_delay_ms = [50, 200, 500][self.rng.below(3) as usize];
            }
        } else {
            self.faults.loss_per_mille = 0;
            self.faults.dup_per_mille = 0;
            self.faults.max_delay_ms = 50;
        }
        // Endpoint failures and recoveries, rarely enough that fault-free stretches see steady states.
        if self.rng.chance(if chaos { 6 } else { 3 }) {
            let ep = self.endpoints[self.rng.below(self.endpoints.len() as u64) as usize];
            let v = self.truth[&ep];
            self.truth.insert(ep, !v);
            self.transitions.push(now);
            self.disturbed();
        }
        // Now and then, in calm times, every endpoint fails in the same instant (a shared upstream
        // dies). With fall = 1 there is no moment of doubt to hold a removal in, so only fall ≥ 2.
        // Only from a steady, all-healthy state: an endpoint that had already failed before may rightly
        // be removed before the others are seen failing.
        let steady = now >= self.last_disturbance_ms + CONVERGENCE_BOUND_MS
            && self.truth.values().all(|up| *up);
        if !chaos
            && self.fall >= 2
            && steady
            && self.mass_failure_since.is_none()
            && self.rng.chance(2)
        {
            for ep in self.endpoints.clone() {
                if self.truth.insert(ep, false) == Some(true) {
                    self.transitions.push(now);
                }
            }
            self.mass_failure_since = Some(now);
            self.disturbed();
        }
        if self.truth.values().any(|up| *up) || chaos {
            self.mass_failure_since = None;
        }
        // Expire faults; restart crashed nodes with a new generation and no memory.
        if let Some((_, until)) = &self.faults.partition
            && *until <= now
        {
            self.faults.partition = None;
        }
        self.faults.cut.retain(|_, until| *until > now);
        self.faults.self_check.retain(|_, until| *until > now);
        let restart: Vec<usize> = self
            .faults
            .crashed
            .iter()
            .filter(|(_, u)| **u <= now)
            .map(|(i, _)| *i)
            .collect();
        for i in restart {
            self.faults.crashed.remove(&i);
            let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
            let (id, generation, skew) = (
                self.nodes[i].id.clone(),
                self.nodes[i].generation + 1,
                self.nodes[i].skew_ms,
            );
            self.nodes[i] = self.fresh_node(i, id, &ids, generation, skew);
        }
        if self.faults.any() {
            self.disturbed();
            self.calm_since_ms = None;
        } else if self.calm_since_ms.is_none() {
            self.calm_since_ms = Some(now);
        }
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        match &self.faults.partition {
            Some((groups, _)) => groups[a] == groups[b],
            None => true,
        }
    }

    fn send(&mut self, from: usize) {
        let now = self.instant();
        let wall = self.wall(from);
        let msg = self.nodes[from].cluster.outgoing(now, wall);
        let (body, mac) = wire::encode(&msg, &self.key);
        for to in 0..self.nodes.len() {
            if to == from || self.rng.chance(self.faults.loss_per_mille) {
                continue;
            }
            let copies = if self.rng.chance(self.faults.dup_per_mille) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let due_ms = self.now_ms + self.rng.below(self.faults.max_delay_ms.max(1) + 1);
                self.net.push_back(InFlight {
                    due_ms,
                    to,
                    body: body.clone(),
                    mac: mac.clone(),
                });
            }
        }
        let _ = msg;
        self.nodes[from].next_heartbeat_ms = self.now_ms + HEARTBEAT_MS;
    }

    fn deliver(&mut self) {
        let now = self.instant();
        let mut keep = VecDeque::new();
        while let Some(m) = self.net.pop_front() {
            if m.due_ms > self.now_ms {
                keep.push_back(m);
                continue;
            }
            let msg =
                wire::decode(&m.body, Some(&m.mac), &self.key).expect("own messages authenticate");
            let from = self.nodes.iter().position(|n| n.id == msg.node).unwrap();
            // Partitions drop in flight too: a message crossing a cut is lost.
            if !self.nodes[m.to].alive || !self.connected(from, m.to) {
                continue;
            }
            let wall = self.wall(m.to);
            match self.nodes[m.to].cluster.receive(&msg, now, wall) {
                Ok(()) => {
                    self.accepted += 1;
                    self.nodes[m.to]
                        .accepted_from
                        .insert(msg.node.clone(), self.now_ms);
                }
                Err(_) => self.rejected += 1,
            }
        }
        self.net = keep;
    }

    fn probe(&mut self, i: usize) {
        let due: Vec<IpAddr> = self.nodes[i]
            .next_probe_ms
            .iter()
            .filter(|(_, t)| **t <= self.now_ms)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            let ok = self.truth[&ip] && !self.faults.cut.contains_key(&(i, ip));
            let node = &mut self.nodes[i];
            node.next_probe_ms.insert(ip, self.now_ms + INTERVAL_MS);
            let m = node.machines.get_mut(&ip).unwrap();
            if m.observe(ok, Duration::from_millis(5), "").is_some() {
                let state = m.state();
                node.cluster.set_local((SERVICE.to_owned(), ip), state);
            }
        }
    }

    /// The writer's converge step, with compare-and-swap against the shared DNS.
    fn write(&mut self, i: usize, health: &BTreeMap<IpAddr, Health>) {
        for _ in 0..5 {
            let published = match self.nodes[i].published.clone() {
                Some(p) => p,
                None => {
                    self.nodes[i].published = Some(self.dns.clone());
                    self.dns.clone()
                }
            };
            let max_hold_ms = u64::from(self.fall) * INTERVAL_MS;
            let holding_too_long = self.nodes[i]
                .deferring_since
                .is_some_and(|t| self.now_ms - t >= max_hold_ms);
            let in_doubt: BTreeSet<IpAddr> = if self.mutations.no_removal_hold || holding_too_long {
                BTreeSet::new()
            } else {
                self.nodes[i]
                    .machines
                    .iter()
                    .filter(|(_, m)| m.in_doubt())
                    .map(|(ip, _)| *ip)
                    .collect()
            };
            let plan = decide::plan(&self.policy, health, &published, &in_doubt);
            if plan.deferred.is_empty() {
                self.nodes[i].deferring_since = None;
            } else {
                self.nodes[i].deferring_since.get_or_insert(self.now_ms);
            }
            if plan.is_empty() {
                return;
            }
            if self.dns != plan.expected {
                // NXRRSET: re-read and re-plan.
                self.conflicts += 1;
                self.nodes[i].published = None;
                continue;
            }
            self.check_write_allowed(i);
            // Invariant 6, per endpoint: after a simultaneous failure of every endpoint, keep_all keeps
            // them all; removing one first would mean putting it back: two changes for one event.
            if let Some(since) = self.mass_failure_since
                && !plan.removals().is_empty()
            {
                self.fail(&format!(
                    "{} removed {:?} {} ms after every endpoint failed at once; keep_all will put it back (flapping)",
                    self.nodes[i].id,
                    plan.removals(),
                    self.now_ms - since
                ));
            }
            for ip in plan.removals() {
                self.dns.remove(&ip);
            }
            for ip in plan.additions() {
                self.dns.insert(ip);
            }
            // Invariant 3: the record set is exactly what this writer decided.
            if self.dns != plan.desired {
                self.fail(&format!(
                    "DNS {:?} is not the set {} decided ({:?})",
                    self.dns, self.nodes[i].id, plan.desired
                ));
            }
            self.nodes[i].published = Some(self.dns.clone());
            self.writes.push(self.now_ms);
            return;
        }
    }

    /// Invariant 2: the writer is not isolated and has heard from a majority within the vote lifetime.
    fn check_write_allowed(&self, i: usize) {
        let node = &self.nodes[i];
        if self.faults.self_check.contains_key(&i) {
            self.fail(&format!("{} wrote while its self-check failed", node.id));
        }
        let heard = 1 + node
            .accepted_from
            .values()
            .filter(|t| self.now_ms - **t <= VOTE_TTL_MS)
            .count();
        if heard < majority(self.nodes.len()) {
            self.fail(&format!(
                "{} wrote while hearing from {heard} of {} nodes (minority)",
                node.id,
                self.nodes.len()
            ));
        }
    }

    fn step(&mut self, chaos: bool) {
        self.inject(chaos);
        self.deliver();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            let self_ok = !self.faults.self_check.contains_key(&i);
            self.nodes[i].self_check_ok = self_ok;
            self.nodes[i].cluster.set_self_check(self_ok);
            self.probe(i);
            if self.nodes[i].cluster.has_news() || self.nodes[i].next_heartbeat_ms <= self.now_ms {
                self.send(i);
            }
            if self.nodes[i].next_reconcile_ms <= self.now_ms {
                self.nodes[i].published = None;
                self.nodes[i].next_reconcile_ms = self.now_ms + RECONCILE_MS;
            }
            let now = self.instant();
            let view = self.nodes[i].cluster.view(now);
            self.check_votes_fresh(i, &view);
            if view.am_writer {
                let health = view.service_health(SERVICE);
                self.write(i, &health);
            } else {
                self.nodes[i].deferring_since = None;
            }
        }
        self.check_published();
        self.now_ms += TICK_MS;
    }

    /// Invariant 4: only votes of nodes this node accepted a message from within `vote_ttl` count.
    fn check_votes_fresh(&self, i: usize, view: &rrguard::agree::View) {
        let node = &self.nodes[i];
        for ((_, ip), tally) in &view.endpoints {
            for voter in tally.up.iter().chain(&tally.down) {
                if *voter == node.id {
                    continue;
                }
                let fresh = node
                    .accepted_from
                    .get(voter)
                    .is_some_and(|t| self.now_ms - *t <= VOTE_TTL_MS);
                if !fresh {
                    self.fail(&format!(
                        "{} counted a vote of silent node {voter} on {ip}",
                        node.id
                    ));
                }
            }
        }
    }

    fn expected(&self) -> BTreeSet<IpAddr> {
        let up: BTreeSet<IpAddr> = self
            .truth
            .iter()
            .filter(|(_, up)| **up)
            .map(|(ip, _)| *ip)
            .collect();
        if up.len() >= self.policy.min_healthy {
            up
        } else {
            self.endpoints.iter().copied().collect()
        }
    }

    fn check_published(&mut self) {
        // Invariant 1 (keep_all).
        if self.dns.len() < self.policy.min_healthy {
            self.fail(&format!(
                "{} records published, min_healthy is {}",
                self.dns.len(),
                self.policy.min_healthy
            ));
        }
        // Invariant 5: converged within the bound once faults healed and endpoints are steady.
        let alive = self.nodes.iter().all(|n| n.alive);
        let settled = alive && self.now_ms >= self.last_disturbance_ms + CONVERGENCE_BOUND_MS;
        self.convergence_checks += u64::from(settled);
        if settled && self.dns != self.expected() {
            self.fail(&format!(
                "not converged {CONVERGENCE_BOUND_MS} ms after the last disturbance: DNS {:?}, true healthy set {:?}",
                self.dns,
                self.expected()
            ));
        }
        // Invariant 6: no flapping in a fault-free stretch (after the convergence bound for repair).
        if let Some(since) = self.calm_since_ms {
            self.flap_checks += 1;
            let from = since + CONVERGENCE_BOUND_MS;
            let writes = self.writes.iter().filter(|t| **t >= from).count();
            let transitions = self.transitions.iter().filter(|t| **t >= since).count();
            if writes > transitions {
                self.fail(&format!(
                    "{writes} DNS writes for {transitions} endpoint transitions in a fault-free stretch (flapping)"
                ));
            }
        }
    }

    fn run(&mut self) {
        while self.now_ms < CHAOS_MS {
            self.step(true);
        }
        // Heal: every fault ends, crashed nodes come back.
        self.faults.partition = None;
        self.faults.cut.clear();
        self.faults.self_check.clear();
        for until in self.faults.crashed.values_mut() {
            *until = self.now_ms;
        }
        while self.now_ms < CHAOS_MS + CALM_MS {
            self.step(false);
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    writes: u64,
    conflicts: u64,
    convergence_checks: u64,
    flap_checks: u64,
    rejected: u64,
}

fn run_seed(seed: u64, mutations: Mutations) -> Result<Stats, String> {
    std::panic::catch_unwind(|| {
        let mut sim = Sim::new(seed, mutations);
        sim.run();
        Stats {
            writes: sim.writes.len() as u64,
            conflicts: sim.conflicts,
            convergence_checks: sim.convergence_checks,
            flap_checks: sim.flap_checks,
            rejected: sim.rejected,
        }
    })
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Seeds per test function; four functions run in parallel: 2,000 seeds per CI run.
const SEEDS_PER_SHARD: u64 = 500;

fn shard(k: u64) {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut total = Stats::default();
    for seed in k * SEEDS_PER_SHARD..(k + 1) * SEEDS_PER_SHARD {
        match run_seed(seed, Mutations::default()) {
            Ok(s) => {
                total.writes += s.writes;
                total.conflicts += s.conflicts;
                total.convergence_checks += u64::from(s.convergence_checks > 0);
                total.flap_checks += u64::from(s.flap_checks > 0);
                total.rejected += s.rejected;
            }
            Err(e) => failures.push(e),
        }
    }
    std::panic::set_hook(quiet);
    println!("shard {k}: {total:?}");
    assert!(
        failures.is_empty(),
        "{} of {SEEDS_PER_SHARD} seeds failed; first:\n{}",
        failures.len(),
        failures[0]
    );
    // The battery must exercise what it checks: most seeds reach a settled, fault-free state, and the
    // faults really produce rejected (duplicated/reordered) messages and DNS writes.
    assert!(
        total.convergence_checks * 10 >= SEEDS_PER_SHARD * 9,
        "{total:?}"
    );
    assert!(total.flap_checks * 10 >= SEEDS_PER_SHARD * 9, "{total:?}");
    assert!(
        total.writes >= SEEDS_PER_SHARD && total.rejected > 0,
        "{total:?}"
    );
}

#[test]
fn seeds_0000_0499() {
    shard(0);
}
#[test]
fn seeds_0500_0999() {
    shard(1);
}
#[test]
fn seeds_1000_1499() {
    shard(2);
}
#[test]
fn seeds_1500_1999() {
    shard(3);
}

/// Replays one seed (`SIM_SEED`, default 0) with its panic message shown.
#[test]
fn replay() {
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut sim = Sim::new(seed, Mutations::default());
    println!("{}", sim.describe());
    sim.run();
    println!(
        "accepted {} messages, rejected {} (duplicates, reordering); {} writes, {} CAS conflicts; {} convergence checks",
        sim.accepted,
        sim.rejected,
        sim.writes.len(),
        sim.conflicts,
        sim.convergence_checks
    );
    assert!(sim.accepted > 0);
}

fn first_failure(mutations: Mutations, needle: &str) -> Option<String> {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let found = (0..400).find_map(|seed| {
        run_seed(seed, mutations)
            .err()
            .filter(|e| e.contains(needle))
    });
    std::panic::set_hook(quiet);
    found
}

#[test]
fn not_expiring_votes_is_caught() {
    let found = first_failure(
        Mutations {
            no_vote_expiry: true,
            ..Mutations::default()
        },
        "vote of silent node",
    );
    assert!(
        found.is_some(),
        "the simulator must catch votes of dead nodes that never expire"
    );
    assert!(found.unwrap().contains("replay: SIM_SEED="));
}

#[test]
fn removing_before_a_mass_failure_is_known_is_caught() {
    let found = first_failure(
        Mutations {
            no_removal_hold: true,
            ..Mutations::default()
        },
        "(flapping)",
    );
    assert!(
        found.is_some(),
        "the simulator must catch a removal that keep_all undoes"
    );
}

#[test]
fn letting_a_minority_write_is_caught() {
    let found = first_failure(
        Mutations {
            minority_writes: true,
            ..Mutations::default()
        },
        "(minority)",
    );
    assert!(
        found.is_some(),
        "the simulator must catch writes from a minority partition"
    );
}

/// The healthy path: with no faults at all, DNS follows the endpoints.
#[test]
fn no_faults_follows_endpoints() {
    let mut sim = Sim::new(7, Mutations::default());
    for _ in 0..200 {
        sim.deliver();
        sim.faults = Faults::default();
        sim.step(false);
    }
    assert_eq!(sim.dns, sim.expected());
}
