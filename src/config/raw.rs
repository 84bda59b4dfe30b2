//! The configuration exactly as written: serde structs mirroring the TOML, before validation.
//! Names here are the user contract (see DESIGN.md); unknown keys are rejected.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{AllDownPolicy, MAX_FALL_RISE};
// Each check type owns its options; `RawCheck` below only picks one by `type`.
pub use crate::observe::check::dns::RawDnsCheck;
pub use crate::observe::check::exec::RawExecCheck;
pub use crate::observe::check::http::{RawHttpCheck, StatusSpec};
pub use crate::observe::check::icmp::RawIcmpCheck;
pub use crate::observe::check::tcp::RawTcpCheck;
// Each writer type owns its options; `RawWriter` below only picks one by `type`.
pub use crate::act::cloudflare::config::RawCloudflare;
pub use crate::act::digitalocean::config::RawDigitalOcean;
pub use crate::act::dynu::config::RawDynu;
pub use crate::act::hosts::config::RawHosts;
pub use crate::act::rfc2136::config::{RawRfc2136, RawTsig};
pub use crate::act::route53::config::RawRoute53;
pub use crate::act::script::config::RawScript;
pub use crate::act::serve::config::{RawServe, RawServeZone};
pub use crate::act::webhook::config::RawWebhook;
pub use crate::act::zonefile::config::RawZonefile;
// Alerts and the StatsD push own their options.
pub use crate::expose::alert::config::RawAlert;
pub use crate::expose::statsd::RawMetrics;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[node]`.
    #[serde(default)]
    pub node: RawNode,
    /// `[defaults]`.
    #[serde(default)]
    pub defaults: RawDefaults,
    /// `[[writer]]`.
    #[serde(default)]
    pub writer: Vec<RawWriter>,
    /// `[[service]]`.
    #[serde(default)]
    pub service: Vec<RawService>,
    /// `[cluster]`: absent for a single node.
    pub cluster: Option<RawCluster>,
    /// `[naming]`: fleet naming (`rrguard naming …`); absent when unused.
    pub naming: Option<crate::naming::config::RawNaming>,
    /// `[api]`: who may use the HTTP API.
    pub api: Option<super::RawApi>,
    /// `[[alert]]`.
    #[serde(default)]
    pub alert: Vec<RawAlert>,
    /// `[metrics]`.
    pub metrics: Option<RawMetrics>,
}

/// `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Shared secret inline.
    pub secret: Option<String>,
    /// File holding the shared secret.
    pub secret_file: Option<String>,
    /// Default quorum.
    pub quorum: Option<RawQuorum>,
    /// How long a peer's votes count after its last message.
    #[serde(default, deserialize_with = "opt_duration")]
    pub vote_ttl: Option<Duration>,
    /// Period of full snapshots.
    #[serde(default, deserialize_with = "opt_duration")]
    pub heartbeat: Option<Duration>,
    /// Largest accepted difference between a message's timestamp and our clock.
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_clock_skew: Option<Duration>,
    /// Self-check targets, `IP:PORT`, reached by TCP connect.
    #[serde(default)]
    pub self_check: Vec<String>,
    /// The other nodes.
    #[serde(default)]
    pub peers: Vec<RawPeer>,
}

/// `[[cluster.peers]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    /// The peer's `[node].id`.
    pub id: String,
    /// Base URL of the peer's `[node].listen`, `http://HOST:PORT` or `https://…`.
    pub url: String,
}

/// `quorum = "majority" | "all" | "any" | { at_least = N } | { fraction = 0.x }`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "write quorum = \"majority\", \"all\", \"any\", { at_least = N } or { fraction = 0.5 }"
)]
pub enum RawQuorum {
    /// A named rule.
    Name(String),
    /// `{ at_least = N }`.
    AtLeast {
        /// N.
        at_least: i64,
    },
    /// `{ fraction = 0.x }`.
    Fraction {
        /// The fraction.
        fraction: f64,
    },
}

/// `[node]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// Node id; the host name by default.
    pub id: Option<String>,
    /// HTTP listen address.
    pub listen: Option<String>,
    /// State directory.
    pub state_dir: Option<String>,
    /// Audit log records older than this are dropped.
    #[serde(default, deserialize_with = "opt_duration")]
    pub audit_max_age: Option<Duration>,
    /// Audit log records beyond this many MiB are dropped, oldest first.
    pub audit_max_size_mib: Option<u64>,
    /// At most this many probes run at once on this node (read wide, checked in range).
    #[serde(default, deserialize_with = "opt_count::<_, 1, { 1 << 20 }>")]
    pub max_probes_in_flight: Option<i64>,
}

/// `[defaults]`: values every service inherits unless it sets its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Probe interval.
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Probe timeout.
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Failures in a row to mark down (checked to be 1 to `MAX_FALL_RISE`: read wide, so that a
    /// negative or huge value gets the same message as 0).
    #[serde(default, deserialize_with = "opt_fall_rise")]
    pub fall: Option<i64>,
    /// Successes in a row to mark up (as `fall`).
    #[serde(default, deserialize_with = "opt_fall_rise")]
    pub rise: Option<i64>,
    /// Probe interval while a verdict change is being confirmed, or off.
    #[serde(default, deserialize_with = "opt_confirm_interval")]
    pub confirm_interval: Option<ConfirmInterval>,
    /// Loss-aware fall: more failures in a row for an endpoint that loses probes at random.
    pub adaptive_fall: Option<bool>,
    /// Record TTL.
    pub ttl: Option<u32>,
    /// Fewest records kept.
    pub min_healthy: Option<usize>,
    /// Policy below `min_healthy`.
    pub all_down: Option<AllDownPolicy>,
    /// Reconcile period.
    #[serde(default, deserialize_with = "opt_duration")]
    pub reconcile_interval: Option<Duration>,
}

/// `[[writer]]`, by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RawWriter {
    /// `type = "rfc2136"`.
    Rfc2136(RawRfc2136),
    /// `type = "serve"`.
    Serve(RawServe),
    /// `type = "script"`.
    Script(RawScript),
    /// `type = "webhook"`.
    Webhook(RawWebhook),
    /// `type = "route53"`.
    Route53(RawRoute53),
    /// `type = "cloudflare"`.
    Cloudflare(RawCloudflare),
    /// `type = "digitalocean"`.
    DigitalOcean(RawDigitalOcean),
    /// `type = "dynu"`.
    Dynu(RawDynu),
    /// `type = "zonefile"`.
    Zonefile(RawZonefile),
    /// `type = "hosts"`.
    Hosts(RawHosts),
}

/// `[[service]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// The managed name.
    pub fqdn: String,
    /// Its zone.
    pub zone: String,
    /// Writer name (one writer).
    pub writer: Option<String>,
    /// Writer names (several writers, each reconciled on its own).
    pub writers: Option<Vec<String>>,
    /// Record TTL.
    pub ttl: Option<u32>,
    /// Endpoint addresses (none with `[service.self_register]`).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Probe interval.
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Probe timeout.
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Failures in a row to mark down (checked to be 1 to `MAX_FALL_RISE`: read wide, so that a
    /// negative or huge value gets the same message as 0).
    #[serde(default, deserialize_with = "opt_fall_rise")]
    pub fall: Option<i64>,
    /// Successes in a row to mark up (as `fall`).
    #[serde(default, deserialize_with = "opt_fall_rise")]
    pub rise: Option<i64>,
    /// Probe interval while a verdict change is being confirmed, or off.
    #[serde(default, deserialize_with = "opt_confirm_interval")]
    pub confirm_interval: Option<ConfirmInterval>,
    /// Loss-aware fall: more failures in a row for an endpoint that loses probes at random.
    pub adaptive_fall: Option<bool>,
    /// Fewest records kept.
    pub min_healthy: Option<usize>,
    /// Policy below `min_healthy`.
    pub all_down: Option<AllDownPolicy>,
    /// Remove A/AAAA records that are not endpoints.
    #[serde(default)]
    pub remove_unlisted: bool,
    /// Quorum override for this service (cluster only).
    pub quorum: Option<RawQuorum>,
    /// `[service.damping]`: flap damping; absent: off.
    pub damping: Option<RawDamping>,
    /// `[service.select]`: selection mode and canaries; absent: every up endpoint.
    pub select: Option<RawSelect>,
    /// Failback hold-down: a recovered endpoint returns after this long up; absent: off.
    #[serde(default, deserialize_with = "opt_duration")]
    pub readd_delay: Option<Duration>,
    /// Most record changes per `change_window`; absent: off.
    pub max_changes: Option<u32>,
    /// The sliding window of `max_changes`.
    #[serde(default, deserialize_with = "opt_duration")]
    pub change_window: Option<Duration>,
    /// Largest fraction of the record set removed in one step; absent: 1 (off).
    pub max_remove_fraction: Option<f64>,
    /// `[service.self_register]`: the endpoint is this node's own address; absent: off.
    pub self_register: Option<RawSelfRegister>,
    /// How several checks combine: `"all"` (default) or `"any"`.
    pub check_mode: Option<crate::observe::check::CheckMode>,
    /// How to probe: `[service.check]`, or several `[[service.check]]`.
    pub check: RawChecks,
}

/// `[service.check]` (one table) or `[[service.check]]` (an array of tables).
// Parsed once per service and dropped after validation: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum RawChecks {
    /// `[service.check]`.
    One(RawCheck),
    /// `[[service.check]]`, in file order.
    Several(Vec<RawCheck>),
}

impl<'de> Deserialize<'de> for RawChecks {
    // By hand rather than `#[serde(untagged)]`, which would replace every error inside a check
    // (unknown key, wrong type) with "did not match any variant".
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawChecks;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a [service.check] table or [[service.check]] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawChecks, A::Error> {
                RawCheck::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawChecks::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<RawChecks, A::Error> {
                Vec::<RawCheck>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(RawChecks::Several)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[service.damping]`, every key optional (defaults in [`crate::decide::damping`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDamping {
    /// Penalty per change of agreed state.
    pub penalty: Option<u32>,
    /// Suppress above this penalty.
    pub suppress: Option<u32>,
    /// Reuse below this penalty.
    pub reuse: Option<u32>,
    /// Half-life of the penalty.
    #[serde(default, deserialize_with = "opt_duration")]
    pub half_life: Option<Duration>,
    /// Longest suppression after the last change.
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_suppress: Option<Duration>,
}

/// `mode` of `[service.select]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawSelectMode {
    /// Every up endpoint.
    All,
    /// The `count` fastest.
    Fastest,
    /// Active/standby tiers.
    Priority,
}

/// `[service.select]`, every key optional (defaults in [`crate::decide::select`]); which keys apply
/// depends on `mode`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelect {
    /// `all` (default), `fastest` or `priority`.
    pub mode: Option<RawSelectMode>,
    /// Fastest: how many to publish.
    pub count: Option<usize>,
    /// Fastest: latency under which a published endpoint keeps its place.
    #[serde(default, deserialize_with = "opt_duration")]
    pub good_enough: Option<Duration>,
    /// Priority: tiers of endpoint addresses, first = preferred.
    pub tiers: Option<Vec<Vec<String>>>,
    /// Priority: fewest up endpoints in the published tiers.
    pub min_active: Option<usize>,
    /// Priority: hold-down before failing back to fewer tiers.
    #[serde(default, deserialize_with = "opt_duration")]
    pub failback_after: Option<Duration>,
    /// Canary endpoints.
    #[serde(default)]
    pub canaries: Vec<String>,
    /// More canaries failing than this withdraws them all.
    pub canary_max_failing: Option<usize>,
    /// Weight (0..=255) per endpoint address, for writers with weighted records. Read as `u64` so
    /// that a value over 255 gets rrguard's message rather than the parser's.
    pub weights: Option<std::collections::BTreeMap<String, u64>>,
}

/// `[service.self_register]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelfRegister {
    /// `"interface:NAME"`, `"url:URL"` or `"metadata:URL"`.
    pub address: String,
    /// `"ipv4"` or `"ipv6"`.
    pub family: Option<crate::observe::selfaddr::AddressFamily>,
    /// Remove the node's own address on SIGTERM/SIGINT (never the last record).
    #[serde(default)]
    pub remove_on_shutdown: bool,
}

/// `[service.check]`, by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RawCheck {
    /// Plain HTTP.
    Http(RawHttpCheck),
    /// HTTP over TLS.
    Https(RawHttpCheck),
    /// TCP connect.
    Tcp(RawTcpCheck),
    /// A command, Monitoring Plugins style.
    Exec(RawExecCheck),
    /// A DNS query to the endpoint.
    Dns(RawDnsCheck),
    /// ICMP/ICMPv6 echo.
    Icmp(RawIcmpCheck),
}

/// What a person may write where a string with a unit goes (a duration, a percentage): only text is
/// valid, and a bare number or boolean is read too, to be refused with the string to write instead.
#[derive(serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum Written {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

/// A count read wide: any whole number, which the validation then checks in `MIN..=MAX` and words
/// itself (`fall = 0 must be at least 1`). Anything else is refused with the range in the message
/// (`expected a whole number from 1 to 1000, found string "-2"`), so that only a quoted number in
/// range is told to drop its quotes.
pub(crate) fn opt_count<'de, D: Deserializer<'de>, const MIN: i64, const MAX: i64>(
    d: D,
) -> Result<Option<i64>, D::Error> {
    struct Count<const MIN: i64, const MAX: i64>;
    impl<const MIN: i64, const MAX: i64> serde::de::Visitor<'_> for Count<MIN, MAX> {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a whole number from {MIN} to {MAX}")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            Ok(i64::try_from(v).unwrap_or(i64::MAX))
        }
    }
    d.deserialize_i64(Count::<MIN, MAX>).map(Some)
}

/// `fall` or `rise`: [`opt_count`] from 1 to [`MAX_FALL_RISE`].
pub(crate) fn opt_fall_rise<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    opt_count::<D, 1, { MAX_FALL_RISE as i64 }>(d)
}

/// Durations are human strings: "500ms", "2s", "1m".
pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let unit = || {
        serde::de::Error::custom(
            "durations are strings with a unit, like \"500ms\", \"2s\" or \"1m\"",
        )
    };
    let bare = |n: String| {
        serde::de::Error::custom(format!(
            "durations are strings with a unit, like \"{n}s\" or \"{n}ms\": write \"{n}s\", not `{n}`"
        ))
    };
    let negative = |n: String| {
        serde::de::Error::custom(format!(
            "durations are positive strings with a unit, like \"5s\" or \"500ms\": `{n}` is not one"
        ))
    };
    match Written::deserialize(d).map_err(|_: D::Error| unit())? {
        Written::Text(s) => parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
        Written::Integer(n) if n < 0 => Err(negative(n.to_string())),
        Written::Float(x) if x < 0.0 => Err(negative(x.to_string())),
        Written::Integer(n) => Err(bare(n.to_string())),
        Written::Float(x) => Err(bare(x.to_string())),
        Written::Bool(_) => Err(unit()),
    }
}

/// `confirm_interval` as written: a duration, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmInterval {
    /// `"off"`: no fast confirmation, every probe waits `interval`.
    Off,
    /// A duration.
    Every(Duration),
}

/// `confirm_interval = "100ms"` or `confirm_interval = "off"`.
pub(crate) fn opt_confirm_interval<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<ConfirmInterval>, D::Error> {
    let wrong = |what: String| {
        serde::de::Error::custom(format!(
            "confirm_interval is a duration with a unit, like \"100ms\", or \"off\" to turn fast confirmation off; not {what}"
        ))
    };
    match Written::deserialize(d).map_err(|_: D::Error| wrong("this value".to_owned()))? {
        Written::Text(s) if s.trim().eq_ignore_ascii_case("off") => Ok(Some(ConfirmInterval::Off)),
        Written::Text(s) => parse_duration(&s)
            .map(|d| Some(ConfirmInterval::Every(d)))
            .map_err(|e| {
                serde::de::Error::custom(format!("{e}, or \"off\" to turn fast confirmation off"))
            }),
        Written::Integer(n) => Err(wrong(n.to_string())),
        Written::Float(x) => Err(wrong(x.to_string())),
        Written::Bool(b) => Err(wrong(b.to_string())),
    }
}

/// Parses a human duration string.
///
/// # Errors
/// A message saying what is wrong and what is expected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?} ({e}); write a number with a unit, like \"500ms\", \"2s\" or \"1m\"")
    })?;
    if d.is_zero() {
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    if d > MAX_DURATION {
        return Err(format!(
            "duration {s:?} is longer than the maximum, ten years (\"3650d\")"
        ));
    }
    Ok(d)
}

/// The longest duration any option takes: ten years (3650 days). Longer ones cannot be added to a clock
/// reading without overflowing it (`"5000000000000000h"` made every probe loop panic).
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
