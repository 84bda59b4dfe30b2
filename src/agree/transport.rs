//! Peer transport: how a signed snapshot reaches a peer.
//!
//! [`Transport`] is the seam; [`HttpTransport`] posts to `PEER_URL/cluster/v1/votes` with reqwest. The
//! receiving side is the `expose` HTTP server. [`MemoryTransport`] delivers in-process to registered
//! receivers, for tests and simulations of several nodes in one process. `tests/transport.rs` runs
//! one battery against both.

use std::time::Duration;

use async_trait::async_trait;

use super::wire;
use crate::config::PeerConfig;

mod memory;

pub use memory::{Delivered, MemoryTransport};

/// Delivers signed peer messages.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends one message (body and its MAC) to `peer`.
    ///
    /// # Errors
    /// A description of why the peer did not accept it (unreachable, timeout, refused with a reason).
    async fn send(&self, peer: &PeerConfig, body: &[u8], mac: &str) -> Result<(), String>;
}

/// HTTP(S) transport.
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// A transport whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        crate::observe::probe::ensure_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .no_proxy()
            .user_agent(concat!("rrguard/", env!("CARGO_PKG_VERSION"), " peer"))
            .build()
            .unwrap_or_default();
        HttpTransport { client }
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, peer: &PeerConfig, body: &[u8], mac: &str) -> Result<(), String> {
        let url = format!("{}{}", peer.url, wire::VOTES_PATH);
        let resp = self
            .client
            .post(&url)
            .header(wire::MAC_HEADER, mac)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(format!("{url}: HTTP {status}: {}", text.trim()))
    }
}
