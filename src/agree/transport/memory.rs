//! An in-process [`Transport`]: messages go straight to receivers registered per peer id.
//!
//! It is the transport of tests and simulations that run several nodes in one process. Each peer id
//! has at most one receiver: a callback that answers like the peer's HTTP endpoint would (`Ok` for
//! 204, `Err(reason)` for a refusal), or a channel that accepts everything. Knobs make a peer
//! unreachable without unregistering it. Like the HTTP receiver, it refuses bodies larger than
//! [`wire::MAX_BODY_BYTES`]. Delivery is synchronous: `send` returns once the receiver has answered.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::Transport;
use crate::agree::wire;
use crate::config::PeerConfig;

/// One message as a receiver gets it: the body and its MAC, byte for byte as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The message body.
    pub body: Vec<u8>,
    /// The MAC sent with it (the `x-rrguard-mac` header over HTTP).
    pub mac: String,
}

/// A receiver's answer: `Err` carries the reason of a refusal.
type Receiver = Arc<dyn Fn(Delivered) -> Result<(), String> + Send + Sync>;

/// The receivers of one in-process network, keyed by peer id.
#[derive(Default)]
struct Peers {
    receivers: HashMap<String, Receiver>,
    unreachable: HashSet<String>,
}

/// In-process transport; cheap to clone, clones share the same receivers.
#[derive(Clone, Default)]
pub struct MemoryTransport {
    peers: Arc<Mutex<Peers>>,
}

impl MemoryTransport {
    /// A network with no receivers: every send fails until peers are registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Delivers messages for `peer_id` to `receiver`, whose answer `send` returns (an `Err` is a
    /// refusal and should say why). Replaces an earlier receiver of the same id.
    pub fn register(
        &self,
        peer_id: &str,
        receiver: impl Fn(Delivered) -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.lock()
            .receivers
            .insert(peer_id.to_owned(), Arc::new(receiver));
    }

    /// Delivers messages for `peer_id` to the returned channel, accepting every one while the channel
    /// is open; once it is dropped, sends to the peer fail as if it had gone away.
    pub fn channel(&self, peer_id: &str) -> mpsc::UnboundedReceiver<Delivered> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = peer_id.to_owned();
        self.register(peer_id, move |message| {
            tx.send(message)
                .map_err(|_| format!("peer {id:?}: receiver is gone"))
        });
        rx
    }

    /// Removes the receiver of `peer_id`: sends to it fail as unreachable.
    pub fn unregister(&self, peer_id: &str) {
        self.lock().receivers.remove(peer_id);
    }

    /// Makes `peer_id` unreachable (messages are dropped and `send` fails) or reachable again,
    /// keeping its receiver.
    pub fn set_reachable(&self, peer_id: &str, reachable: bool) {
        let mut peers = self.lock();
        if reachable {
            peers.unreachable.remove(peer_id);
        } else {
            peers.unreachable.insert(peer_id.to_owned());
        }
    }

    /// Locks ignoring poison: a receiver that panicked must not take the network down with it.
    fn lock(&self) -> MutexGuard<'_, Peers> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    /// Hands the message to the receiver of `peer.id` and returns its answer.
    ///
    /// # Errors
    /// The peer is unreachable (no receiver, or made unreachable), the body exceeds
    /// [`wire::MAX_BODY_BYTES`], or the receiver refused it (its reason is part of the error).
    async fn send(&self, peer: &PeerConfig, body: &[u8], mac: &str) -> Result<(), String> {
        // Clone the receiver out of the lock: it may itself send (a node answering a message).
        let receiver = {
            let peers = self.lock();
            if peers.unreachable.contains(&peer.id) {
                return Err(format!("peer {:?}: unreachable", peer.id));
            }
            peers.receivers.get(&peer.id).cloned()
        };
        let Some(receiver) = receiver else {
            return Err(format!("peer {:?}: unreachable (no receiver)", peer.id));
        };
        if body.len() > wire::MAX_BODY_BYTES {
            return Err(format!(
                "peer {:?}: refused: body of {} bytes exceeds {} bytes",
                peer.id,
                body.len(),
                wire::MAX_BODY_BYTES
            ));
        }
        receiver(Delivered {
            body: body.to_vec(),
            mac: mac.to_owned(),
        })
        .map_err(|reason| format!("peer {:?}: refused: {reason}", peer.id))
    }
}
