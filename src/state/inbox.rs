//! The peer inbox: how the HTTP server hands a peer message to the current generation's agreement
//! actor and gets the verdict back. Lives here, not in `daemon`, so that `expose` never imports the
//! daemon.

use tokio::sync::oneshot;

/// A peer message as received by the HTTP server, with the channel for the verdict.
#[derive(Debug)]
pub struct Inbound {
    /// Raw body.
    pub body: Vec<u8>,
    /// The MAC header, if any.
    pub mac: Option<String>,
    /// `Ok` if accepted, else why not.
    pub reply: oneshot::Sender<Result<(), InboundError>>,
}

/// Why a peer message was not accepted, as the HTTP server reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// This node has no `[cluster]`: the sender's peer URL points at the wrong node. Not retryable.
    #[error("this node is not in a cluster (no [cluster] section)")]
    NotClustered,
    /// Missing or wrong MAC. Not retryable.
    #[error("{0}")]
    Authentication(String),
    /// Not a valid message. Not retryable.
    #[error("{0}")]
    Malformed(String),
    /// Authentic and well-formed, but refused: replayed, out of order, clock, unknown node, version.
    /// The next fresh message may be accepted.
    #[error("{0}")]
    Refused(String),
}
