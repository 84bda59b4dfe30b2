//! The agreement actor: the I/O shell around [`crate::agree::Cluster`].
//!
//! One task owns the `Cluster`. It takes this node's verdicts from the service controllers, peer messages
//! from the HTTP server and self-check results, recomputes the [`View`] after every input and on a short
//! tick (so expiring votes are noticed), and publishes it on a `watch` channel the controllers follow
//! and, with its peers and rejected-message counters, into the shared [`NodeState`] the status API
//! reads.
//! Whenever its votes change, and every heartbeat, it sends a snapshot to every peer: one sender task per
//! peer always posts the latest snapshot, so a slow or dead peer never delays the others or the actor.
//! A single node (no `[cluster]`) runs the same actor with no peers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::agree::transport::{HttpTransport, Transport};
use crate::agree::wire::{self, Key};
use crate::agree::{Cluster, ClusterConfig, Quorum, View, VoteKey};
use crate::config::{Config, PeerConfig};
use crate::observe::health::{Health, HealthMachine};
use crate::state::{ClusterStatus, Inbound, InboundError, NodeState, PeerStatus, now_unix_ms};

/// What the controllers use to talk to the actor. (Peer messages reach it through the inbox it
/// registers in [`NodeState`]; what it knows is published there too.)
#[derive(Clone)]
pub struct AgreementHandle {
    /// This node's verdicts.
    pub votes_tx: mpsc::UnboundedSender<(VoteKey, Health)>,
    /// The latest view.
    pub view_rx: watch::Receiver<Arc<View>>,
}

/// Builds the agreement configuration from the daemon configuration.
pub fn cluster_config(config: &Config) -> ClusterConfig {
    let mut nodes: std::collections::BTreeSet<String> = [config.node.id.clone()].into();
    let (quorum, vote_ttl, max_clock_skew, settle) = match &config.cluster {
        Some(c) => {
            nodes.extend(c.peers.iter().map(|p| p.id.clone()));
            (c.quorum, c.vote_ttl, c.max_clock_skew, c.heartbeat * 2)
        }
        // A single node has nobody to wait for.
        None => (
            Quorum::Majority,
            Duration::from_secs(3600),
            crate::config::DEFAULT_MAX_CLOCK_SKEW,
            Duration::ZERO,
        ),
    };
    ClusterConfig {
        me: config.node.id.clone(),
        nodes,
        quorum,
        service_quorum: config
            .services
            .iter()
            .filter_map(|s| s.quorum.map(|q| (s.fqdn.clone(), q)))
            .collect(),
        vote_ttl,
        max_clock_skew,
        settle,
    }
}

/// Shortest time between two copies of the view into the node state (the status API and metrics)
/// for a view of `endpoints`: 100 ms, plus 50 µs per endpoint beyond 2,000, at most 1 s (500 ms at
/// 10,000). A copy shares the view's tallies but walks every endpoint for its events and
/// since-times; when it also built every endpoint's status entry (~15 ms of a worker at 10,000),
/// a copy every 100 ms at start-up, when every endpoint gets its first verdict within a few
/// seconds, took ~14 % of the CPU (perf) and made probes late.
fn publish_gap(endpoints: usize) -> Duration {
    let extra = u32::try_from(endpoints.saturating_sub(2000)).unwrap_or(u32::MAX);
    Duration::from_millis(100)
        .saturating_add(Duration::from_micros(50).saturating_mul(extra))
        .min(Duration::from_secs(1))
}

/// Most verdicts taken from the queue before the view is recomputed (bounds the delay of peer
/// messages and ticks behind a flood of verdicts).
const MAX_VOTE_BATCH: usize = 4096;

/// The latest signed snapshot for one peer: body and MAC.
type Snapshot = Option<(Arc<Vec<u8>>, String)>;

fn wall_ms() -> u64 {
    now_unix_ms()
}

/// Spawns the actor (and its peer senders and self-check) into `set`; all stop when `cancel` fires.
/// The actor registers its peer inbox in `state` and publishes what it knows there after every
/// recompute that changed something.
pub fn spawn_agreement(
    config: &Config,
    state: &NodeState,
    cancel: CancellationToken,
    set: &mut JoinSet<()>,
) -> AgreementHandle {
    let cfg = cluster_config(config);
    let generation = wall_ms();
    let mut cluster = Cluster::new(cfg, generation);
    let initial = Arc::new(cluster.view(Instant::now()));
    let (view_tx, view_rx) = watch::channel(initial);
    let (votes_tx, votes_rx) = mpsc::unbounded_channel();
    let (inbox_tx, inbox_rx) = mpsc::channel(256);
    let (self_check_tx, self_check_rx) = mpsc::channel(4);

    let (peers, key, heartbeat) = match &config.cluster {
        Some(c) => (c.peers.clone(), Some(Key::new(&c.secret)), c.heartbeat),
        None => (Vec::new(), None, Duration::from_secs(3600)),
    };
    let mut senders = BTreeMap::new();
    if key.is_some() {
        let transport: Arc<dyn Transport> = Arc::new(HttpTransport::new(
            heartbeat.max(Duration::from_millis(500)),
        ));
        for p in &peers {
            let (tx, rx) = watch::channel::<Snapshot>(None);
            set.spawn(peer_sender(
                p.clone(),
                transport.clone(),
                rx,
                heartbeat,
                cancel.clone(),
            ));
            senders.insert(p.id.clone(), tx);
        }
    }
    if let Some(c) = &config.cluster
        && !c.self_check.is_empty()
    {
        set.spawn(self_check(
            c.self_check.clone(),
            heartbeat,
            self_check_tx,
            cancel.clone(),
        ));
    }
    let actor = Actor {
        state: state.clone(),
        key,
        senders,
        heartbeat,
        generation,
        rejected: BTreeMap::new(),
        last_heard: BTreeMap::new(),
        self_check_targets: config
            .cluster
            .as_ref()
            .map(|c| c.self_check.clone())
            .unwrap_or_default(),
    };
    let tick = (cluster.config().vote_ttl / 10)
        .clamp(Duration::from_millis(20), Duration::from_millis(250));
    actor.publish(&cluster, &view_rx.borrow());
    state.set_inbox(Some(inbox_tx));
    set.spawn(actor.run(
        cluster,
        votes_rx,
        inbox_rx,
        self_check_rx,
        view_tx,
        tick,
        cancel,
    ));
    AgreementHandle { votes_tx, view_rx }
}

/// Posts the latest snapshot to one peer whenever a new one is published.
async fn peer_sender(
    peer: PeerConfig,
    transport: Arc<dyn Transport>,
    mut rx: watch::Receiver<Snapshot>,
    heartbeat: Duration,
    cancel: CancellationToken,
) {
    let mut reachable = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let Some((body, mac)) = rx.borrow_and_update().clone() else {
            continue;
        };
        match transport.send(&peer, &body, &mac).await {
            Ok(()) => {
                if !reachable {
                    info!(peer = %peer.id, "peer reachable again");
                }
                reachable = true;
            }
            Err(e) => {
                if reachable {
                    warn!(peer = %peer.id, "cannot deliver votes to peer: {e}");
                } else {
                    debug!(peer = %peer.id, "still cannot deliver votes: {e}");
                }
                reachable = false;
                // Do not hammer a dead peer faster than the heartbeat.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(heartbeat / 2) => {}
                }
            }
        }
    }
}

/// TCP-connects to every target each period; the node passes only if all are reachable. Debounced by
/// a health machine (2 failures to fail, 2 successes to pass) so one lost packet does not isolate.
async fn self_check(
    targets: Vec<SocketAddr>,
    period: Duration,
    tx: mpsc::Sender<bool>,
    cancel: CancellationToken,
) {
    let mut machine = HealthMachine::new(2, 2);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let timeout = period.min(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let mut ok = true;
        let mut detail = String::from("all targets reachable");
        for t in &targets {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(t)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    ok = false;
                    detail = format!("{t}: {e}");
                }
                Err(_) => {
                    ok = false;
                    detail = format!("{t}: timed out");
                }
            }
        }
        if let Some(t) = machine.observe(ok, Duration::ZERO, &detail) {
            if t.to == Health::Down {
                warn!(%detail, "self-check failed: this node stops voting and writing");
            } else {
                info!("self-check passes");
            }
            if tx.send(t.to == Health::Up).await.is_err() {
                return;
            }
        }
    }
}

struct Actor {
    state: NodeState,
    key: Option<Key>,
    senders: BTreeMap<String, watch::Sender<Snapshot>>,
    heartbeat: Duration,
    generation: u64,
    /// Rejected peer messages by reason.
    rejected: BTreeMap<String, u64>,
    /// When each peer's last accepted message arrived, wall-clock (it is shown in the status).
    last_heard: BTreeMap<String, u64>,
    self_check_targets: Vec<SocketAddr>,
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    async fn run(
        mut self,
        mut cluster: Cluster,
        mut votes_rx: mpsc::UnboundedReceiver<(VoteKey, Health)>,
        mut inbox_rx: mpsc::Receiver<Inbound>,
        mut self_check_rx: mpsc::Receiver<bool>,
        view_tx: watch::Sender<Arc<View>>,
        tick: Duration,
        cancel: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_heartbeat = Instant::now();
        // A change not yet copied into the node state, and when it last was.
        let mut pending = false;
        let mut published_at = Instant::now();
        let mut gap = publish_gap(0);
        loop {
            // Peer messages change counters and last-heard times that the view does not show.
            let mut news = false;
            tokio::select! {
                _ = cancel.cancelled() => return,
                Some((key, health)) = votes_rx.recv() => {
                    cluster.set_local(key, health);
                    // Take every verdict already queued before recomputing the view: at start-up
                    // thousands arrive within a second, and one view (and one wake-up of every
                    // service) per batch instead of per verdict keeps that linear.
                    for _ in 0..MAX_VOTE_BATCH {
                        match votes_rx.try_recv() {
                            Ok((key, health)) => cluster.set_local(key, health),
                            Err(_) => break,
                        }
                    }
                }
                Some(inbound) = inbox_rx.recv() => {
                    self.receive(&mut cluster, inbound);
                    news = true;
                }
                Some(ok) = self_check_rx.recv() => cluster.set_self_check(ok),
                _ = ticker.tick() => {}
                _ = tokio::time::sleep_until(published_at + gap), if pending => {}
            }
            let now = Instant::now();
            if self.key.is_some() && (cluster.has_news() || now >= next_heartbeat) {
                self.broadcast(&mut cluster, now);
                next_heartbeat = now + self.heartbeat;
            }
            let view = cluster.view(now);
            let old = view_tx.borrow().clone();
            if *old != view {
                log_changes(&old, &view);
                pending = true;
                let _ = view_tx.send(Arc::new(view));
            } else if news {
                pending = true;
            }
            // The status copy walks every endpoint: refreshed at most every `publish_gap` (the
            // tick brings a late one), not after every batch of verdicts, which made start-up
            // quadratic.
            gap = publish_gap(view_tx.borrow().endpoints.len());
            if pending && now.saturating_duration_since(published_at) >= gap {
                self.publish(&cluster, &view_tx.borrow());
                published_at = now;
                pending = false;
            }
        }
    }

    fn broadcast(&mut self, cluster: &mut Cluster, now: Instant) {
        let Some(key) = &self.key else { return };
        let msg = cluster.outgoing(now, wall_ms());
        let (body, mac) = wire::encode(&msg, key);
        let body = Arc::new(body);
        for tx in self.senders.values() {
            tx.send_replace(Some((body.clone(), mac.clone())));
        }
    }

    fn receive(&mut self, cluster: &mut Cluster, inbound: Inbound) {
        let Some(key) = &self.key else {
            self.state
                .record_peer_message("votes", Some("not_clustered"));
            let _ = inbound.reply.send(Err(InboundError::NotClustered));
            return;
        };
        let result = match wire::decode(&inbound.body, inbound.mac.as_deref(), key) {
            Err(e) => {
                let why = e.to_string();
                let error = match e {
                    wire::WireError::BadMac | wire::WireError::MissingMac => {
                        InboundError::Authentication(why)
                    }
                    wire::WireError::TooLarge(_) | wire::WireError::Malformed(_) => {
                        InboundError::Malformed(why)
                    }
                };
                let kind = match error {
                    InboundError::Authentication(_) => "authentication",
                    _ => "malformed",
                };
                self.count_reject(kind, "?", &error.to_string());
                Err(error)
            }
            Ok(msg) => match cluster.receive(&msg, Instant::now(), wall_ms()) {
                Ok(()) => {
                    self.state.record_peer_message("votes", None);
                    self.last_heard.insert(msg.node.clone(), wall_ms());
                    Ok(())
                }
                Err(e) => {
                    let kind = match e {
                        crate::agree::Reject::Replay { .. } => "replay",
                        crate::agree::Reject::Clock { .. } => "clock",
                        crate::agree::Reject::UnknownNode(_) | crate::agree::Reject::FromSelf => {
                            "unknown_node"
                        }
                        crate::agree::Reject::Version(_) => "version",
                    };
                    self.count_reject(kind, &msg.node, &e.to_string());
                    Err(InboundError::Refused(e.to_string()))
                }
            },
        };
        let _ = inbound.reply.send(result);
    }

    fn count_reject(&mut self, kind: &str, from: &str, why: &str) {
        self.state.record_peer_message("votes", Some(kind));
        let n = self.rejected.entry(kind.to_owned()).or_default();
        *n += 1;
        // Log the 1st, 2nd, 4th, 8th… of each kind: visible, but a flood cannot fill the disk.
        if n.is_power_of_two() {
            warn!(
                reason = kind,
                from,
                count = *n,
                "rejected peer message: {why}"
            );
        }
    }

    /// Publishes what this actor knows into the shared state.
    fn publish(&self, cluster: &Cluster, view: &View) {
        let peers = cluster
            .config()
            .nodes
            .iter()
            .filter(|n| *n != cluster.me())
            .map(|id| PeerStatus {
                id: id.clone(),
                live: view.live.contains(id),
                votes_count: view.voters.contains(id),
                last_heard_unix_ms: self.last_heard.get(id).copied(),
                last_heard_ms_ago: None,
            })
            .collect();
        self.state.set_cluster(ClusterStatus {
            node: cluster.me().to_owned(),
            generation: self.generation,
            isolated: view.isolated.as_ref().map(ToString::to_string),
            self_check_targets: self
                .self_check_targets
                .iter()
                .map(ToString::to_string)
                .collect(),
            leader: view.leader.clone(),
            am_leader: view.am_leader,
            term: view.term,
            live_nodes: view.live.iter().cloned().collect(),
            peers,
            rejected_messages: self.rejected.clone(),
            tallies: view.endpoints.clone(),
        });
    }
}

fn log_changes(old: &View, new: &View) {
    if old.isolated != new.isolated {
        match &new.isolated {
            Some(why) => warn!(reason = %why, "this node is isolated: it stops voting and writing"),
            None => info!(live = ?new.live, "this node is no longer isolated"),
        }
    }
    if old.leader != new.leader || old.am_leader != new.am_leader {
        match (&new.leader, new.am_leader) {
            (Some(_), true) => info!(term = new.term, "this node is the leader"),
            (Some(l), false) => info!(leader = %l, term = new.term, "leader is {l}; standing by"),
            (None, _) => warn!(term = new.term, "no leader: no node is eligible"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_copy_gap_grows_with_the_endpoints() {
        assert_eq!(publish_gap(0), Duration::from_millis(100));
        assert_eq!(publish_gap(2_000), Duration::from_millis(100));
        assert_eq!(publish_gap(10_000), Duration::from_millis(500));
        assert_eq!(publish_gap(100_000), Duration::from_secs(1));
        assert_eq!(publish_gap(usize::MAX), Duration::from_secs(1));
    }
}
