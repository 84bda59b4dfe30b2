//! Override replication between nodes: the message and its authentication (sans-I/O).
//!
//! Every node sends its whole [`OverrideSet`] (overrides and tombstones) to every peer whenever it
//! changes and at every heartbeat, as the body of `POST /cluster/v1/overrides`; the receiver merges
//! it last-writer-wins ([`OverrideSet::merge`]). A full set on every exchange is the anti-entropy: a
//! node that was down or cut off has every override and deletion within one heartbeat of rejoining.
//! Messages are authenticated like votes ([`super::wire`]): the header `x-rrguard-mac` carries the
//! base64 HMAC-SHA256 of the exact body under the cluster secret, verified in constant time before
//! parsing. Since the content is a state (merging an old copy changes nothing newer), replay needs no
//! sequence number; a message whose `sent_at_ms` is further than `max_clock_skew` from the
//! receiver's clock is refused all the same, as stale.
//!
//! [`OverrideSet`]: crate::decide::overrides::OverrideSet
//! [`OverrideSet::merge`]: crate::decide::overrides::OverrideSet::merge

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::wire::{self, Key, WireError};
use crate::decide::overrides::{MAX_OVERRIDES, Override};

/// Path peers post override sets to.
pub const OVERRIDES_PATH: &str = "/cluster/v1/overrides";
/// The message format version this build speaks.
pub const VERSION: u32 = 1;

/// One override-set message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverridesMessage {
    /// Format version ([`VERSION`]).
    pub v: u32,
    /// Sender's node id.
    pub node: String,
    /// Sender's wall clock, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// Every override and tombstone the sender holds.
    pub overrides: Vec<Override>,
}

/// Why a received override message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// Missing or wrong MAC, too large or malformed: as for votes.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Authentic, but from another version, from this node itself, or too old or too far ahead;
    /// the reason's machine name (`version`, `unknown_node`, `clock`) and the message.
    #[error("{1}")]
    Refused(&'static str, String),
}

impl SyncError {
    /// The reason's machine name, as the peer message metrics count it: `authentication`,
    /// `malformed`, `version`, `unknown_node` or `clock`.
    pub fn reason(&self) -> &'static str {
        match self {
            SyncError::Wire(WireError::BadMac | WireError::MissingMac) => "authentication",
            SyncError::Wire(_) => "malformed",
            SyncError::Refused(reason, _) => reason,
        }
    }
}

/// Serializes and authenticates a message: the body and its MAC header value.
pub fn encode(msg: &OverridesMessage, key: &Key) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(msg).expect("an OverridesMessage always serializes");
    let mac = key.mac(&body);
    (body, mac)
}

/// Verifies the MAC of `body`, parses it and checks version, sender and clock (`now_ms`, the
/// receiver's wall clock; `me`, its node id).
///
/// # Errors
/// [`SyncError`] saying why the message is refused.
pub fn decode(
    body: &[u8],
    mac: Option<&str>,
    key: &Key,
    me: &str,
    now_ms: u64,
    max_clock_skew: Duration,
) -> Result<OverridesMessage, SyncError> {
    if body.len() > wire::MAX_BODY_BYTES {
        return Err(WireError::TooLarge(body.len()).into());
    }
    key.verify(body, mac)?;
    let msg: OverridesMessage =
        serde_json::from_slice(body).map_err(|e| WireError::Malformed(e.to_string()))?;
    if msg.v != VERSION {
        return Err(SyncError::Refused(
            "version",
            format!(
                "override message version {} (this node speaks {VERSION})",
                msg.v
            ),
        ));
    }
    if msg.node.is_empty() || msg.node.len() > wire::MAX_NAME_LEN {
        return Err(WireError::Malformed("empty or over-long node id".into()).into());
    }
    if msg.node == me {
        return Err(SyncError::Refused(
            "unknown_node",
            "message from this node's own id: two nodes share an id".into(),
        ));
    }
    if msg.overrides.len() > MAX_OVERRIDES {
        return Err(WireError::Malformed("too many overrides".into()).into());
    }
    let skew = u64::try_from(max_clock_skew.as_millis()).unwrap_or(u64::MAX);
    if msg.sent_at_ms.abs_diff(now_ms) > skew {
        return Err(SyncError::Refused(
            "clock",
            format!(
                "override message from {} sent {} ms away from this node's clock (max_clock_skew {} ms)",
                msg.node,
                msg.sent_at_ms.abs_diff(now_ms),
                skew
            ),
        ));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::overrides::OverrideKind;

    fn msg() -> OverridesMessage {
        OverridesMessage {
            v: VERSION,
            node: "mon-2".into(),
            sent_at_ms: 1_000_000,
            overrides: vec![Override {
                id: "abc".into(),
                endpoint: "192.0.2.1".parse().unwrap(),
                service: None,
                kind: OverrideKind::Drain,
                comment: "swap disk".into(),
                starts_unix_ms: 1,
                ends_unix_ms: 2_000_000,
                created_unix_ms: 1,
                updated_unix_ms: 1,
                origin: "mon-2".into(),
                deleted: false,
            }],
        }
    }

    const SKEW: Duration = Duration::from_secs(30);

    #[test]
    fn round_trip_and_refusals() {
        let key = Key::new(b"0123456789abcdef");
        let (body, mac) = encode(&msg(), &key);
        assert_eq!(
            decode(&body, Some(&mac), &key, "mon-1", 1_000_500, SKEW),
            Ok(msg())
        );
        let other = Key::new(b"another secret!!");
        assert_eq!(
            decode(&body, Some(&mac), &other, "mon-1", 1_000_500, SKEW),
            Err(SyncError::Wire(WireError::BadMac))
        );
        assert_eq!(
            decode(&body, None, &key, "mon-1", 1_000_500, SKEW),
            Err(SyncError::Wire(WireError::MissingMac))
        );
        assert!(matches!(
            decode(&body, Some(&mac), &key, "mon-1", 1_000_000 + 31_000, SKEW),
            Err(SyncError::Refused("clock", _))
        ));
        let own = decode(&body, Some(&mac), &key, "mon-2", 1_000_000, SKEW).unwrap_err();
        assert_eq!(own.reason(), "unknown_node");
        let junk = b"{\"v\":1}";
        assert!(matches!(
            decode(junk, Some(&key.mac(junk)), &key, "mon-1", 0, SKEW),
            Err(SyncError::Wire(WireError::Malformed(_)))
        ));
    }
}
