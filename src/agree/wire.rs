//! The peer message format, version 1, and its authentication.
//!
//! A message is a JSON object (schema in `docs/cluster.md`) sent as the body of
//! `POST /cluster/v1/votes`. The header `x-rrguard-mac` carries the base64 HMAC-SHA256 of the exact body
//! bytes under the cluster's shared secret. Receivers verify the MAC (constant time) before parsing,
//! then [`super::Cluster::receive`] checks version, sender, clock window and (generation, seq) order.

use std::net::IpAddr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The message format version this build speaks.
pub const VERSION: u32 = 1;
/// HTTP header carrying the MAC.
pub const MAC_HEADER: &str = "x-rrguard-mac";
/// Path peers post messages to.
pub const VOTES_PATH: &str = "/cluster/v1/votes";
/// Largest body accepted.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most votes one message may carry.
pub const MAX_VOTES: usize = 200_000;
/// Longest node id or service name accepted.
pub const MAX_NAME_LEN: usize = 255;

/// One node's verdict on one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    /// Service fqdn with trailing dot.
    pub service: String,
    /// Endpoint address.
    pub endpoint: IpAddr,
    /// Up (true) or down (false). Unknown verdicts are not sent.
    pub up: bool,
}

/// The latest message a node accepted from one of its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heard {
    /// The peer's node id.
    pub node: String,
    /// That message's generation.
    pub generation: u64,
    /// That message's sequence.
    pub seq: u64,
}

/// One peer message: a full snapshot of the sender's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Format version ([`VERSION`]).
    pub v: u32,
    /// Sender's node id.
    pub node: String,
    /// Sender's generation: the wall-clock ms when its agreement state started; grows with every restart
    /// and every reload.
    pub generation: u64,
    /// Sequence within the generation, starting at 1, strictly increasing.
    pub seq: u64,
    /// Sender's wall clock, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// Sender is isolated: its (empty) votes must not count.
    pub isolated: bool,
    /// Sender has just started or rejoined and does not write yet: pass it over as leader.
    #[serde(default)]
    pub settling: bool,
    /// Peers the sender heard within its vote lifetime.
    pub sees: Vec<String>,
    /// The sender's votes.
    pub votes: Vec<Vote>,
    /// The latest message the sender accepted from each peer it has heard since it started. A
    /// receiver learns from it that this message was composed after one of its own arrived: it
    /// counts the sender's votes only once they answer a message it sent after it (re)joined and
    /// after it heard the sender again ([`super::Cluster::receive`]). Optional, default empty.
    #[serde(default)]
    pub heard: Vec<Heard>,
}

/// Why a received body was refused before it reached the agreement core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// No MAC header, or not base64.
    #[error("missing or malformed {MAC_HEADER} header")]
    MissingMac,
    /// MAC does not match: wrong secret or tampered body.
    #[error("MAC verification failed (wrong cluster secret or altered message)")]
    BadMac,
    /// Body larger than [`MAX_BODY_BYTES`].
    #[error("message of {0} bytes is larger than the limit")]
    TooLarge(usize),
    /// Not a valid version-1 message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// The cluster's shared HMAC key.
#[derive(Clone)]
pub struct Key(ring::hmac::Key);

impl Key {
    /// A key from the shared secret bytes.
    pub fn new(secret: &[u8]) -> Self {
        Key(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret))
    }

    /// The base64 MAC of `body`.
    pub fn mac(&self, body: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&self.0, body).as_ref())
    }

    /// Verifies the base64 MAC `mac` of `body`, in constant time.
    ///
    /// # Errors
    /// [`WireError::MissingMac`] when there is none or it is not base64; [`WireError::BadMac`] when
    /// it does not match.
    pub fn verify(&self, body: &[u8], mac: Option<&str>) -> Result<(), WireError> {
        let tag = mac
            .and_then(|m| {
                base64::engine::general_purpose::STANDARD
                    .decode(m.trim())
                    .ok()
            })
            .ok_or(WireError::MissingMac)?;
        ring::hmac::verify(&self.0, body, &tag).map_err(|_| WireError::BadMac)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Serializes and authenticates a message: returns the body and its MAC header value.
pub fn encode(msg: &Message, key: &Key) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(msg).expect("a Message always serializes");
    let mac = key.mac(&body);
    (body, mac)
}

/// Verifies the MAC of `body`, then parses and bounds-checks it.
///
/// # Errors
/// [`WireError`] saying why the message is refused.
pub fn decode(body: &[u8], mac: Option<&str>, key: &Key) -> Result<Message, WireError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(WireError::TooLarge(body.len()));
    }
    let tag = mac
        .and_then(|m| {
            base64::engine::general_purpose::STANDARD
                .decode(m.trim())
                .ok()
        })
        .ok_or(WireError::MissingMac)?;
    ring::hmac::verify(&key.0, body, &tag).map_err(|_| WireError::BadMac)?;
    let msg: Message =
        serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if msg.votes.len() > MAX_VOTES || msg.sees.len() > MAX_VOTES || msg.heard.len() > MAX_VOTES {
        return Err(WireError::Malformed("too many entries".to_owned()));
    }
    let too_long = |s: &String| s.is_empty() || s.len() > MAX_NAME_LEN;
    if too_long(&msg.node)
        || msg.sees.iter().any(too_long)
        || msg.heard.iter().any(|h| too_long(&h.node))
        || msg.votes.iter().any(|v| too_long(&v.service))
    {
        return Err(WireError::Malformed("empty or over-long name".to_owned()));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Message {
        Message {
            v: VERSION,
            node: "mon-2".to_owned(),
            generation: 7,
            seq: 3,
            sent_at_ms: 1_700_000_000_000,
            isolated: false,
            settling: false,
            sees: vec!["mon-1".to_owned()],
            votes: vec![Vote {
                service: "www.example.test.".to_owned(),
                endpoint: "192.0.2.1".parse().unwrap(),
                up: true,
            }],
            heard: vec![Heard {
                node: "mon-1".to_owned(),
                generation: 5,
                seq: 9,
            }],
        }
    }

    #[test]
    fn round_trip() {
        let key = Key::new(b"cluster secret");
        let (body, mac) = encode(&msg(), &key);
        assert_eq!(decode(&body, Some(&mac), &key).unwrap(), msg());
    }

    #[test]
    fn wrong_secret_tampering_and_missing_mac_are_refused() {
        let key = Key::new(b"cluster secret");
        let (body, mac) = encode(&msg(), &key);
        assert_eq!(
            decode(&body, Some(&mac), &Key::new(b"other")),
            Err(WireError::BadMac)
        );
        let mut tampered = body.clone();
        let i = tampered.iter().position(|b| *b == b'7').unwrap();
        tampered[i] = b'8';
        assert_eq!(decode(&tampered, Some(&mac), &key), Err(WireError::BadMac));
        assert_eq!(decode(&body, None, &key), Err(WireError::MissingMac));
        assert_eq!(decode(&body, Some("%%%"), &key), Err(WireError::MissingMac));
    }

    #[test]
    fn malformed_but_authenticated_bodies_are_refused_not_panicking() {
        let key = Key::new(b"k");
        for body in [
            &b"{}"[..],
            b"[]",
            b"not json",
            b"{\"v\":1,\"node\":\"\"}",
            &[0xff, 0xfe],
        ] {
            let mac = key.mac(body);
            assert!(
                matches!(decode(body, Some(&mac), &key), Err(WireError::Malformed(_))),
                "{body:?}"
            );
        }
        let mut m = msg();
        m.node = String::new();
        let (body, mac) = encode(&m, &key);
        assert!(matches!(
            decode(&body, Some(&mac), &key),
            Err(WireError::Malformed(_))
        ));
        let mut m = msg();
        m.heard[0].node = "x".repeat(MAX_NAME_LEN + 1);
        let (body, mac) = encode(&m, &key);
        assert!(matches!(
            decode(&body, Some(&mac), &key),
            Err(WireError::Malformed(_))
        ));
    }

    /// A sender that does not say what it heard (an older build) is read as having heard nothing:
    /// its messages are accepted, and its votes wait for a sender that answers.
    #[test]
    fn heard_is_optional() {
        let key = Key::new(b"k");
        let mut v = serde_json::to_value(msg()).unwrap();
        v.as_object_mut().unwrap().remove("heard");
        let body = serde_json::to_vec(&v).unwrap();
        let mac = key.mac(&body);
        assert_eq!(decode(&body, Some(&mac), &key).unwrap().heard, []);
    }

    #[test]
    fn schema_field_names_are_stable() {
        let v: serde_json::Value = serde_json::to_value(msg()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "generation",
                "heard",
                "isolated",
                "node",
                "sees",
                "sent_at_ms",
                "seq",
                "settling",
                "v",
                "votes"
            ]
        );
    }
}
