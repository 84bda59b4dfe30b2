//! Deterministic cluster simulator.
//!
//! N nodes run rrguard's real decision core — the agreement core (`Cluster`) with the wire format and
//! HMAC, and per node the very `ServiceCore` the daemon's controller runs (health machines, planner,
//! removal hold, settle bound, backoff, conflicts, read-back) — over an in-memory network with seeded
//! random faults: message loss, delay and reordering, duplication, partitions, node crash and restart,
//! clock skew up to ±2 s, self-check failures, probe paths cut between a monitor and an endpoint, and
//! endpoints failing and recovering, all at once or one by one. Some seeds have an endpoint whose
//! results alternate from the start and never settle; some reload every node with a new TTL. DNS is the
//! library's `MemoryWriter`, which has the compare-and-swap and TTL semantics of an RFC 2136 primary.
//! This file holds no hold, backoff or conflict logic of its own: it only executes the core's actions.
//!
//! After every step the DESIGN.md invariants are checked:
//! 1. never fewer than `min_healthy` records published (keep_all);
//! 2. no write from a node that is isolated or hears from fewer than a majority;
//! 3. every published record set is one a single leader decided (CAS);
//! 4. votes of nodes not heard within `vote_ttl` are not counted;
//! 5. after faults heal, DNS equals the true healthy set, every record at the service TTL, within
//!    [`CONVERGENCE_BOUND_MS`] — also with an endpoint that never settles (invariant 10: it holds
//!    nobody back beyond the bound);
//! 6. no flapping: in fault-free stretches, no more DNS writes than real changes (endpoint transitions,
//!    TTL reloads); when every endpoint fails at once (fall ≥ 2), nothing is removed only to be put
//!    back by keep_all; and when they all recover at once, nothing is removed on the way up.
//!
//! A failing seed prints the command that replays it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use rrguard::act::memory::MemoryWriter;
use rrguard::act::{Precondition, Published, RecordChange, Writer as _};
use rrguard::agree::wire::{self, Key};
use rrguard::agree::{Cluster, ClusterConfig, Quorum, Rules};
use rrguard::config::AllDownPolicy;
use rrguard::decide::service::{self, Action, ServiceCore, ServiceView, Settings};
use rrguard::decide::{Health, Policy};
use rrguard::observe::health::HealthMachine;
use tokio::time::Instant;

const TICK_MS: u64 = 100;
const INTERVAL_MS: u64 = 1000;
const TIMEOUT_MS: u64 = 500;
const HEARTBEAT_MS: u64 = 1000;
const VOTE_TTL_MS: u64 = 3000;
const RECONCILE_MS: u64 = 5000;
const CHAOS_MS: u64 = 30_000;
const CALM_MS: u64 = 40_000;
/// Stated convergence bound: once faults have healed and endpoints are steady, DNS shows the true
/// healthy set within this time. Detection takes at most fall × interval (≤ 3 s) plus stagger, votes
/// propagate within a heartbeat, restarted nodes are heard again within one heartbeat and vote after
/// rise × interval; a removal hold lasts at most max(fall, rise) × interval + timeout (3.5 s) and an
/// endpoint without a verdict holds removals back for at most one settle bound (4.5 s) after the
/// leader's core starts; 10 s covers all of that.
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

/// Rule changes that must make the simulator fail (to show the checks have teeth). The last three
/// switch rules off inside the service core itself.
#[derive(Clone, Copy, Debug, Default)]
struct Mutations {
    no_vote_expiry: bool,
    minority_writes: bool,
    no_removal_hold: bool,
    endless_hold: bool,
    no_settle: bool,
    no_recovery_hold: bool,
}

impl Mutations {
    fn core_rules(&self) -> service::Rules {
        service::Rules {
            hold_removals: !self.no_removal_hold,
            end_holds: !self.endless_hold,
            settle_unknown: !self.no_settle,
            hold_recovering: !self.no_recovery_hold,
            ..service::Rules::default()
        }
    }
}

struct Node {
    id: String,
    alive: bool,
    generation: u64,
    skew_ms: i64,
    cluster: Cluster,
    /// The daemon's service core for the one simulated service.
    core: ServiceCore,
    next_probe_ms: BTreeMap<IpAddr, u64>,
    next_heartbeat_ms: u64,
    self_check_ok: bool,
    /// Ground truth for invariant 4: when this node last accepted a message from each peer.
    accepted_from: BTreeMap<String, u64>,
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
    /// The zone's primary: every node's writer shares it.
    dns: MemoryWriter,
    /// An endpoint whose probe results alternate from the start (never settles), on some seeds.
    flapper: Option<IpAddr>,
    /// Set during a recovery of every endpoint at once, until DNS shows them all again.
    mass_recovery_since: Option<u64>,
    /// How many TTL reloads and mass recoveries the run made (so the battery can tell they happen).
    ttl_reloads: u64,
    mass_recoveries: u64,
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
            ttl: 30,
            self_register: false,
        };
        // Alternating results never reach fall or rise in a row only when both are at least 2.
        let flapper = (fall >= 2 && rise >= 2 && rng.chance(300)).then_some(endpoints[0]);
        let dns = MemoryWriter::new("primary");
        dns.set(
            SERVICE,
            Published::with_ttl(endpoints.iter().copied(), policy.ttl),
        );
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
            dns,
            flapper,
            mass_recovery_since: None,
            ttl_reloads: 0,
            mass_recoveries: 0,
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
            "seed {} nodes {} endpoints {} fall {} rise {} quorum {} min_healthy {} never-settling {:?}",
            self.seed,
            self.nodes.len(),
            self.endpoints.len(),
            self.fall,
            self.rise,
            self.quorum,
            self.policy.min_healthy,
            self.flapper
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
        let core = self.core(machines);
        Node {
            id,
            alive: true,
            generation,
            skew_ms,
            cluster,
            core,
            next_probe_ms,
            next_heartbeat_ms: self.now_ms,
            self_check_ok: true,
            accepted_from: BTreeMap::new(),
        }
    }

    /// A service core as the daemon builds one for this service, with the run's mutations.
    fn core(&self, machines: BTreeMap<IpAddr, HealthMachine>) -> ServiceCore {
        let settings = Settings {
            fqdn: SERVICE.to_owned(),
            zone: "example.test.".to_owned(),
            policy: self.policy.clone(),
            policies: Default::default(),
            interval: Duration::from_millis(INTERVAL_MS),
            timeout: Duration::from_millis(TIMEOUT_MS),
            fall: self.fall,
            rise: self.rise,
            reconcile_interval: Duration::from_millis(RECONCILE_MS),
            dry_run: false,
            capabilities: self.dns.capabilities(),
        };
        let mut core = ServiceCore::new(settings, machines, self.instant());
        core.set_rules(self.mutations.core_rules());
        core
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
                // Not to a never-settling endpoint: a cut makes it down on that node, and alternating
                // results rightly keep it down there, so "it keeps its place" would not hold.
                if Some(ep) != self.flapper {
                    self.faults.cut.insert((node, ep), until);
                }
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
            if Some(ep) != self.flapper {
                let v = self.truth[&ep];
                self.truth.insert(ep, !v);
                if std::env::var_os("SIM_TRACE").is_some() {
                    println!("t={now} {ep} truly {}", if v { "down" } else { "up" });
                }
                self.transitions.push(now);
                self.mass_recovery_since = None;
                self.disturbed();
            }
        }
        // Now and then, in calm times, every endpoint fails in the same instant (a shared upstream
        // dies). With fall = 1 there is no moment of doubt to hold a removal in, so only fall ≥ 2.
        // Only from a steady, all-healthy state: an endpoint that had already failed before may rightly
        // be removed before the others are seen failing.
        let steady = now >= self.last_disturbance_ms + CONVERGENCE_BOUND_MS
            && self.truth.values().all(|up| *up);
        if !chaos
            && self.fall >= 2
            && self.flapper.is_none()
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
        // Once DNS has settled on keep_all, every endpoint comes back in the same instant (the shared
        // upstream returns): nothing may be removed on the way up.
        if let Some(since) = self.mass_failure_since
            && !chaos
            && now >= since + CONVERGENCE_BOUND_MS
            && self.rng.chance(50)
        {
            for ep in self.endpoints.clone() {
                if self.truth.insert(ep, true) == Some(false) {
                    self.transitions.push(now);
                }
            }
            self.mass_failure_since = None;
            self.mass_recovery_since = Some(now);
            self.mass_recoveries += 1;
            self.disturbed();
        }
        if self.truth.values().any(|up| *up) || chaos {
            self.mass_failure_since = None;
        }
        if chaos {
            self.mass_recovery_since = None;
        }
        // Now and then, in calm and steady times, an operator changes the TTL and reloads every node:
        // one write for it, then none.
        if !chaos && steady && self.rng.chance(1) {
            self.reload_ttl();
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

    /// A SIGHUP with a new TTL on every node: new cores, health carried over, as the daemon does.
    fn reload_ttl(&mut self) {
        self.policy.ttl = if self.policy.ttl == 30 { 120 } else { 30 };
        self.ttl_reloads += 1;
        for i in 0..self.nodes.len() {
            let machines = self.nodes[i].core.machines().clone();
            self.nodes[i].core = self.core(machines);
        }
        self.transitions.push(self.now_ms);
        self.disturbed();
    }

    /// Whether a probe of `ip` from node `i` passes now.
    fn probe_passes(&self, i: usize, ip: IpAddr) -> bool {
        if self.faults.cut.contains_key(&(i, ip)) {
            return false;
        }
        if Some(ip) == self.flapper {
            // Each node probes once per interval: its results alternate.
            return (self.now_ms / INTERVAL_MS).is_multiple_of(2);
        }
        self.truth[&ip]
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
            let ok = self.probe_passes(i, ip);
            let now = self.instant();
            let node = &mut self.nodes[i];
            node.next_probe_ms.insert(ip, self.now_ms + INTERVAL_MS);
            let actions = node
                .core
                .on_probe(now, ip, ok, Duration::from_millis(5), "");
            self.execute(i, actions);
        }
    }

    /// Executes a core's actions the way the daemon's controller does: votes to the agreement core,
    /// reads and writes to the shared DNS, results back into the core.
    fn execute(&mut self, i: usize, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let now = self.instant();
            match action {
                Action::Vote { endpoint, health } => self.nodes[i]
                    .cluster
                    .set_local((SERVICE.to_owned(), endpoint), health),
                Action::Event(e) => {
                    if std::env::var_os("SIM_TRACE").is_some() {
                        println!("t={} {}: {e:?}", self.now_ms, self.nodes[i].id);
                    }
                }
                Action::Read => {
                    let read = self.dns.read_now(SERVICE);
                    queue.extend(self.nodes[i].core.on_read(now, Ok(read)));
                }
                Action::Apply(change) => {
                    let result = self.write(i, &change);
                    queue.extend(self.nodes[i].core.on_applied(now, result));
                }
            }
        }
    }

    /// Polls node `i`'s core until nothing is due.
    fn drive(&mut self, i: usize) {
        loop {
            let now = self.instant();
            let actions = self.nodes[i].core.poll(now);
            if actions.is_empty() {
                return;
            }
            self.execute(i, actions);
        }
    }

    /// One write by node `i` to the shared DNS, checked against invariants 2, 3 and 6.
    fn write(&mut self, i: usize, change: &RecordChange) -> Result<(), rrguard::act::WriteError> {
        self.check_write_allowed(i);
        // Invariant 6, per endpoint: after a simultaneous failure of every endpoint, keep_all keeps
        // them all; removing one first would mean putting it back: two changes for one event. And
        // when they all come back together, none is removed on the way up.
        if !change.remove.is_empty() {
            if let Some(since) = self.mass_failure_since {
                self.fail(&format!(
                    "{} removed {:?} {} ms after every endpoint failed at once; keep_all will put it back (flapping)",
                    self.nodes[i].id,
                    change.remove,
                    self.now_ms - since
                ));
            }
            if let Some(since) = self.mass_recovery_since {
                self.fail(&format!(
                    "{} removed {:?} {} ms after every endpoint recovered at once (flapping on the way up)",
                    self.nodes[i].id,
                    change.remove,
                    self.now_ms - since
                ));
            }
        }
        let result = self.dns.apply_now(change);
        if std::env::var_os("SIM_TRACE").is_some() {
            println!(
                "t={} {} writes +{:?} -{:?} ttl-{:?}: {result:?}",
                self.now_ms, self.nodes[i].id, change.add, change.remove, change.rettl
            );
        }
        match &result {
            Ok(()) => {
                // Invariant 3: the record set is exactly what this leader decided.
                let Precondition::RrsetEquals(expected) = &change.precondition else {
                    self.fail("the service core sent a change without an RRset condition");
                };
                let mut decided = expected.clone();
                decided.retain(|ip| !change.remove.contains(ip));
                decided.extend(change.add.iter().copied());
                let now = self.dns.read_now(SERVICE).addresses();
                if now != decided {
                    self.fail(&format!(
                        "DNS {now:?} is not the set {} decided ({decided:?})",
                        self.nodes[i].id
                    ));
                }
                self.writes.push(self.now_ms);
            }
            Err(_) => self.conflicts += 1,
        }
        result
    }

    /// Invariant 2: the leader is not isolated and has heard from a majority within the vote lifetime.
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
            let now = self.instant();
            let view = self.nodes[i].cluster.view(now);
            self.check_votes_fresh(i, &view);
            let actions = self.nodes[i]
                .core
                .on_view(now, &ServiceView::of(&view, SERVICE));
            self.execute(i, actions);
            self.drive(i);
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

    /// What DNS must publish once settled: the up endpoints, plus a never-settling one (it keeps its
    /// place, unjudged); every endpoint if that is fewer than min_healthy (keep_all).
    fn expected(&self) -> BTreeSet<IpAddr> {
        let up: BTreeSet<IpAddr> = self
            .truth
            .iter()
            .filter(|(ip, up)| **up || Some(**ip) == self.flapper)
            .map(|(ip, _)| *ip)
            .collect();
        if up.len() >= self.policy.min_healthy {
            up
        } else {
            self.endpoints.iter().copied().collect()
        }
    }

    fn check_published(&mut self) {
        let dns = self.dns.read_now(SERVICE);
        // Invariant 1 (keep_all).
        if dns.records.len() < self.policy.min_healthy {
            self.fail(&format!(
                "{} records published, min_healthy is {}",
                dns.records.len(),
                self.policy.min_healthy
            ));
        }
        // Invariants 5 and 10: converged within the bound once faults healed and endpoints are steady,
        // every record with the service TTL, whatever a never-settling endpoint does.
        let alive = self.nodes.iter().all(|n| n.alive);
        let settled = alive && self.now_ms >= self.last_disturbance_ms + CONVERGENCE_BOUND_MS;
        self.convergence_checks += u64::from(settled);
        let want = Published::with_ttl(self.expected(), self.policy.ttl);
        if settled && dns != want {
            self.fail(&format!(
                "not converged {CONVERGENCE_BOUND_MS} ms after the last disturbance: DNS {dns}, want {want}"
            ));
        }
        if settled && dns == want {
            self.mass_recovery_since = None;
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
    /// Seeds with a never-settling endpoint, TTL reloads and mass recoveries seen.
    never_settling: u64,
    ttl_reloads: u64,
    mass_recoveries: u64,
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
            never_settling: u64::from(sim.flapper.is_some()),
            ttl_reloads: sim.ttl_reloads,
            mass_recoveries: sim.mass_recoveries,
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
                total.never_settling += s.never_settling;
                total.ttl_reloads += s.ttl_reloads;
                total.mass_recoveries += s.mass_recoveries;
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
    // The new fault kinds really occur in every shard.
    assert!(
        total.never_settling >= 10 && total.ttl_reloads >= 10 && total.mass_recoveries >= 4,
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

#[test]
fn a_removal_hold_that_never_ends_is_caught() {
    let found = first_failure(
        Mutations {
            endless_hold: true,
            ..Mutations::default()
        },
        "not converged",
    );
    assert!(
        found.is_some(),
        "the simulator must catch a removal hold inside the service core that never ends"
    );
}

#[test]
fn waiting_for_ever_on_a_never_settling_endpoint_is_caught() {
    let found = first_failure(
        Mutations {
            no_settle: true,
            ..Mutations::default()
        },
        "not converged",
    );
    assert!(
        found.is_some(),
        "the simulator must catch a dead endpoint kept because another never settles"
    );
}

#[test]
fn shrinking_the_set_on_a_mass_recovery_is_caught() {
    let found = first_failure(
        Mutations {
            no_recovery_hold: true,
            ..Mutations::default()
        },
        "on the way up",
    );
    assert!(
        found.is_some(),
        "the simulator must catch removals while every endpoint recovers at once"
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
    assert_eq!(sim.dns.read_now(SERVICE).addresses(), sim.expected());
}
