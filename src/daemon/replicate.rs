//! The I/O around the node's overrides: expiry on time, and replication to every peer.
//!
//! - One task prunes the [`crate::state::overrides::OverrideStore`] when an override ends (logging
//!   it), so that lists and the status stop showing it on time. (The service cores do not wait for
//!   it: each applies its windows on its own clock.)
//! - With a `[cluster]`, one task sends this node's whole override set to every peer
//!   ([`crate::agree::override_sync`]) whenever it changes and every heartbeat; one sender task per
//!   peer always posts the latest message, so a slow or dead peer delays nobody. Received sets are
//!   merged by the HTTP server (`expose`) into the same store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::agree::override_sync::{self, OVERRIDES_PATH, OverridesMessage};
use crate::agree::wire::{self, Key};
use crate::config::{Config, PeerConfig};
use crate::state::{NodeState, now_unix_ms};

/// Longest the expiry task sleeps without looking (wall clock jumps are caught within it).
const EXPIRY_CHECK: Duration = Duration::from_secs(30);

type Outgoing = Option<(Arc<Vec<u8>>, String)>;

/// Spawns the expiry task and, in a cluster, the replication tasks into `set`; all stop with `cancel`.
pub fn spawn_overrides(
    config: &Config,
    state: &NodeState,
    cancel: CancellationToken,
    set: &mut JoinSet<()>,
) {
    set.spawn(expire(state.clone(), cancel.clone()));
    let Some(cluster) = &config.cluster else {
        return;
    };
    let key = Key::new(&cluster.secret);
    let client = peer_client(cluster.heartbeat.max(Duration::from_millis(500)));
    let mut senders = BTreeMap::new();
    for p in &cluster.peers {
        let (tx, rx) = watch::channel::<Outgoing>(None);
        set.spawn(send_to_peer(
            p.clone(),
            client.clone(),
            rx,
            cluster.heartbeat,
            cancel.clone(),
        ));
        senders.insert(p.id.clone(), tx);
    }
    set.spawn(broadcast(
        state.clone(),
        config.node.id.clone(),
        key,
        senders,
        cluster.heartbeat,
        cancel,
    ));
}

async fn expire(state: NodeState, cancel: CancellationToken) {
    let mut rx = state.overrides().subscribe();
    loop {
        let next = state.overrides().prune();
        let now = now_unix_ms();
        let wait = next.map_or(EXPIRY_CHECK, |t| {
            Duration::from_millis(t.saturating_sub(now)).min(EXPIRY_CHECK)
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = rx.changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn broadcast(
    state: NodeState,
    me: String,
    key: Key,
    senders: BTreeMap<String, watch::Sender<Outgoing>>,
    heartbeat: Duration,
    cancel: CancellationToken,
) {
    let mut rx = state.overrides().subscribe();
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = rx.changed() => {}
            _ = ticker.tick() => {}
        }
        let set = rx.borrow_and_update().clone();
        let msg = OverridesMessage {
            v: override_sync::VERSION,
            node: me.clone(),
            sent_at_ms: now_unix_ms(),
            overrides: set.all().cloned().collect(),
        };
        let (body, mac) = override_sync::encode(&msg, &key);
        let body = Arc::new(body);
        for tx in senders.values() {
            tx.send_replace(Some((body.clone(), mac.clone())));
        }
    }
}

fn peer_client(timeout: Duration) -> reqwest::Client {
    crate::observe::probe::ensure_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .user_agent(concat!("rrguard/", env!("CARGO_PKG_VERSION"), " peer"))
        .build()
        .unwrap_or_default()
}

async fn send_to_peer(
    peer: PeerConfig,
    client: reqwest::Client,
    mut rx: watch::Receiver<Outgoing>,
    heartbeat: Duration,
    cancel: CancellationToken,
) {
    let url = format!("{}{OVERRIDES_PATH}", peer.url);
    let mut reachable = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let Some((body, mac)) = rx.borrow_and_update().clone() else {
            continue;
        };
        let result = client
            .post(&url)
            .header(wire::MAC_HEADER, mac)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await;
        let error = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                Some(format!("HTTP {status}: {}", text.trim()))
            }
            Err(e) => Some(e.to_string()),
        };
        match error {
            None => {
                if !reachable {
                    info!(peer = %peer.id, "overrides reach the peer again");
                }
                reachable = true;
            }
            Some(e) => {
                if reachable {
                    warn!(peer = %peer.id, "cannot send overrides to peer {url}: {e}");
                } else {
                    debug!(peer = %peer.id, "still cannot send overrides: {e}");
                }
                reachable = false;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(heartbeat / 2) => {}
                }
            }
        }
    }
}
