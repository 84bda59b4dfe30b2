//! Semantic validation: from [`RawConfig`] to [`Config`], collecting every problem with its key path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use std::time::Duration;

use super::locate::Seg::{self, Index, Key};
use super::raw::{
    ConfirmInterval, RawCheck, RawChecks, RawCluster, RawConfig, RawDefaults, RawService, RawWriter,
};
use super::secret::{SecretSource, read_secret};
use super::*;
use crate::act::{hosts, rfc2136, serve, zonefile};
use crate::observe::check;

/// A validation problem at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// Where.
    pub path: Vec<Seg>,
    /// What, and the fix.
    pub message: String,
}

/// The problems found so far; validation goes on after each so that all are reported at once.
#[derive(Default)]
pub(crate) struct Errors(Vec<PathError>);

impl Errors {
    /// Records `message` about the value at `path`.
    pub(crate) fn at(&mut self, path: &[Seg], message: impl Into<String>) {
        self.0.push(PathError {
            path: path.to_vec(),
            message: message.into(),
        });
    }

    /// How many problems so far (compare before and after validating a part to see if it failed).
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// `path` extended by `more`.
pub(crate) fn with(path: &[Seg], more: &[Seg]) -> Vec<Seg> {
    path.iter().chain(more).cloned().collect()
}

/// Validates `raw`; relative `secret_file` and `ca_file` paths are resolved against `base_dir`.
///
/// # Errors
/// Every problem found, each with the key path of the offending value.
pub fn validate(raw: RawConfig, base_dir: &Path, path: &Path) -> Result<Config, Vec<PathError>> {
    let mut errs = Errors::default();
    let node = node(&raw, &mut errs);
    defaults(&raw.defaults, &mut errs);
    let (writers, names) = writers(&raw.writer, base_dir, &mut errs);
    let services = services(&raw, &names, base_dir, &mut errs);
    let cluster = raw
        .cluster
        .as_ref()
        .and_then(|c| cluster(c, &raw, &node, base_dir, &mut errs));
    let naming = raw
        .naming
        .as_ref()
        .and_then(|n| crate::naming::config::validate(n, &writers, base_dir, &mut errs));
    let api = super::api::api(raw.api.as_ref(), base_dir, &mut errs);
    let alerts = crate::expose::alert::config::validate_all(&raw.alert, base_dir, &mut errs);
    let metrics = crate::expose::statsd::validate(raw.metrics.as_ref(), &mut errs);
    if raw.service.is_empty() && raw.naming.is_none() && errs.0.is_empty() {
        // Nothing else (fleet naming, hosts sync) can give a node work yet: say so instead of running
        // idle. Only once the rest is right, so that it does not bury the problems a person is fixing.
        errs.at(
            &[],
            "this configuration manages nothing: add a [[service]] section with fqdn, zone, writer, endpoints and [service.check] (see etc/rrguard.example.toml)",
        );
    }
    if !errs.0.is_empty() {
        return Err(errs.0);
    }
    Ok(Config {
        path: path.to_owned(),
        node,
        reconcile_interval: raw
            .defaults
            .reconcile_interval
            .unwrap_or(DEFAULT_RECONCILE_INTERVAL),
        writers,
        services,
        cluster,
        naming,
        api,
        alerts,
        metrics,
        warnings: Vec::new(),
    })
}

/// What a valid configuration asks for that a writer cannot do: weights on a writer without
/// weighted records ([`crate::act::weighted`]), one warning per service and writer.
pub(crate) fn warnings(config: &Config) -> Vec<PathError> {
    let mut out = Vec::new();
    for (i, s) in config.services.iter().enumerate() {
        if s.policies.weights.is_none() {
            continue;
        }
        for w in config.writers_of(s) {
            if !crate::act::weighted(&w.kind) {
                out.push(PathError {
                    path: vec![Key("service"), Index(i), Key("select"), Key("weights")],
                    message: format!(
                        "warning: service {:?}: weights ignored: writer {:?} ({}) has no weighted records; it publishes plain records",
                        s.fqdn,
                        w.name,
                        w.kind.type_name()
                    ),
                });
            }
        }
    }
    out
}

/// `[defaults]`: the values that are checked where they are written.
fn defaults(d: &RawDefaults, errs: &mut Errors) {
    let dpath = [Key("defaults")];
    for (field, value) in [("fall", d.fall), ("rise", d.rise)] {
        if let Some(why) = value.and_then(|v| threshold_problem(field, v)) {
            errs.at(&with(&dpath, &[Key(field)]), why);
        }
    }
    if let Some(ttl) = d.ttl {
        check_ttl(ttl, &with(&dpath, &[Key("ttl")]), errs);
    }
    probe_timing(d.interval, d.timeout, &dpath, errs);
    if let Some(ConfirmInterval::Every(c)) = d.confirm_interval
        && c < MIN_CONFIRM_INTERVAL
    {
        errs.at(
            &with(&dpath, &[Key("confirm_interval")]),
            format!(
                "confirm_interval {} is below the {} minimum; write at least \"{}\", or \"off\"",
                humantime::format_duration(c),
                humantime::format_duration(MIN_CONFIRM_INTERVAL),
                humantime::format_duration(MIN_CONFIRM_INTERVAL),
            ),
        );
    }
}

/// Why `fall` or `rise` (`field`) = `v` cannot be used, if it cannot: from 1 to [`MAX_FALL_RISE`].
fn threshold_problem(field: &str, v: i64) -> Option<String> {
    match v {
        ..=0 => Some(format!("{field} = {v} must be at least 1")),
        v if v > i64::from(MAX_FALL_RISE) => Some(format!(
            "{field} = {v} is above the {MAX_FALL_RISE} maximum (a verdict after that many probes in a row)"
        )),
        _ => None,
    }
}

/// `fall` or `rise` as written (`v`, checked by [`threshold_problem`]), else `default`.
fn threshold(v: Option<i64>, default: u32) -> u32 {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|v| (1..=MAX_FALL_RISE).contains(v))
        .unwrap_or(default)
}

/// `interval` and `timeout` where written (`[defaults]` or a service at `path`): from
/// [`MIN_INTERVAL`] to [`MAX_INTERVAL`] and from [`MIN_TIMEOUT`] to [`MAX_TIMEOUT`]. Shorter ones
/// parse (any positive duration does) but would probe an endpoint thousands of times a second, or
/// time out before any answer can arrive.
fn probe_timing(
    interval: Option<Duration>,
    timeout: Option<Duration>,
    path: &[Seg],
    errs: &mut Errors,
) {
    for (field, value, min, max) in [
        ("interval", interval, MIN_INTERVAL, MAX_INTERVAL),
        ("timeout", timeout, MIN_TIMEOUT, MAX_TIMEOUT),
    ] {
        let Some(v) = value else { continue };
        let (bound, side, limit, write) = if v < min {
            (min, "below", "minimum", "at least")
        } else if v > max {
            (max, "above", "maximum", "at most")
        } else {
            continue;
        };
        let bound = humantime::format_duration(bound);
        errs.at(
            &with(path, &[Key(field)]),
            format!(
                "{field} {} is {side} the {bound} {limit}; write {write} \"{bound}\"",
                humantime::format_duration(v),
            ),
        );
    }
}

/// `[[writer]]`: each handed to its plug-in; also the set of writer names, for services to refer to.
fn writers(
    raw: &[RawWriter],
    base_dir: &Path,
    errs: &mut Errors,
) -> (Vec<WriterConfig>, BTreeSet<String>) {
    let mut writers = Vec::new();
    let mut names = BTreeSet::new();
    for (i, w) in raw.iter().enumerate() {
        let wpath = [Key("writer"), Index(i)];
        let (name, kind) = match w {
            RawWriter::Rfc2136(r) => (
                &r.name,
                rfc2136::config::validate(r, &wpath, base_dir, errs).map(WriterKind::Rfc2136),
            ),
            RawWriter::Serve(r) => (
                &r.name,
                serve::config::validate(r, &wpath, base_dir, errs).map(WriterKind::Serve),
            ),
            RawWriter::Script(r) => (
                &r.name,
                crate::act::script::config::validate(r, &wpath, base_dir, errs)
                    .map(WriterKind::Script),
            ),
            RawWriter::Webhook(r) => (
                &r.name,
                crate::act::webhook::config::validate(r, &wpath, base_dir, errs)
                    .map(WriterKind::Webhook),
            ),
            RawWriter::Route53(r) => (
                &r.name,
                crate::act::route53::config::validate(r, &wpath, base_dir, errs)
                    .map(WriterKind::Route53),
            ),
            RawWriter::Cloudflare(r) => (
                &r.name,
                crate::act::cloudflare::config::validate(r, &wpath, base_dir, errs)
                    .map(WriterKind::Cloudflare),
            ),
            RawWriter::DigitalOcean(r) => (
                &r.name,
                crate::act::digitalocean::config::validate(r, &wpath, base_dir, errs)
                    .map(WriterKind::DigitalOcean),
            ),
            RawWriter::Dynu(r) => (
                &r.name,
                crate::act::dynu::config::validate(r, &wpath, base_dir, errs).map(WriterKind::Dynu),
            ),
            RawWriter::Zonefile(r) => (
                &r.name,
                zonefile::config::validate(r, &wpath, base_dir, errs).map(WriterKind::Zonefile),
            ),
            RawWriter::Hosts(r) => (
                &r.name,
                hosts::config::validate(r, &wpath, base_dir, errs).map(WriterKind::Hosts),
            ),
        };
        let npath = with(&wpath, &[Key("name")]);
        if name.trim().is_empty() {
            errs.at(&npath, "writer name must not be empty");
        } else if !names.insert(name.clone()) {
            errs.at(
                &npath,
                format!("writer name {name:?} is used twice; give each writer its own name"),
            );
        }
        if let Some(kind) = kind {
            writers.push(WriterConfig {
                name: name.clone(),
                kind,
            });
        }
    }
    (writers, names)
}

/// `[[service]]`, each name at most once.
fn services(
    raw: &RawConfig,
    writers: &BTreeSet<String>,
    base_dir: &Path,
    errs: &mut Errors,
) -> Vec<ServiceConfig> {
    let mut services = Vec::new();
    let mut fqdns = BTreeSet::new();
    for (i, s) in raw.service.iter().enumerate() {
        let spath = [Key("service"), Index(i)];
        if let Ok(fqdn) = normalize_name(&s.fqdn)
            && !fqdns.insert(fqdn.clone())
        {
            errs.at(
                &with(&spath, &[Key("fqdn")]),
                format!(
                    "service {fqdn:?} is configured twice; merge the endpoints into one [[service]]"
                ),
            );
        }
        if let Some(svc) = service(s, raw, &spath, writers, base_dir, errs) {
            services.push(svc);
        }
    }
    services
}

fn node(raw: &RawConfig, errs: &mut Errors) -> NodeConfig {
    let n = &raw.node;
    let id = n.id.clone().unwrap_or_else(default_node_id);
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        errs.at(
            &[Key("node"), Key("id")],
            format!(
                "node id {id:?} must be non-empty and use only letters, digits, '-', '_' and '.'"
            ),
        );
    }
    let listen = n.listen.as_deref().and_then(|text| match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.at(
                &[Key("node"), Key("listen")],
                format!("listen {text:?} is not an IP:PORT address, like \"127.0.0.1:9053\" or \"[::1]:9053\""),
            );
            None
        }
    });
    let state_dir = PathBuf::from(n.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR));
    if state_dir.as_os_str().is_empty() {
        errs.at(
            &[Key("node"), Key("state_dir")],
            "state_dir must not be empty",
        );
    }
    let audit_max_age = n.audit_max_age.unwrap_or(DEFAULT_AUDIT_MAX_AGE);
    if audit_max_age < MIN_AUDIT_MAX_AGE {
        errs.at(
            &[Key("node"), Key("audit_max_age")],
            format!(
                "audit_max_age {} is too short: use at least \"1m\" (the default is \"30days\")",
                humantime::format_duration(audit_max_age)
            ),
        );
    }
    let audit_max_size_mib = n.audit_max_size_mib.unwrap_or(DEFAULT_AUDIT_MAX_SIZE_MIB);
    if !(1..=1 << 20).contains(&audit_max_size_mib) {
        errs.at(
            &[Key("node"), Key("audit_max_size_mib")],
            format!(
                "audit_max_size_mib {audit_max_size_mib} is out of range: use 1 to 1048576 (MiB; the default is {DEFAULT_AUDIT_MAX_SIZE_MIB})"
            ),
        );
    }
    let written = n
        .max_probes_in_flight
        .unwrap_or(DEFAULT_MAX_PROBES_IN_FLIGHT as i64);
    let max_probes_in_flight = match usize::try_from(written) {
        Ok(v) if (1..=1 << 20).contains(&v) => v,
        _ => {
            errs.at(
                &[Key("node"), Key("max_probes_in_flight")],
                format!(
                    "max_probes_in_flight {written} is out of range: use 1 to 1048576 (the default is {DEFAULT_MAX_PROBES_IN_FLIGHT})"
                ),
            );
            DEFAULT_MAX_PROBES_IN_FLIGHT
        }
    };
    NodeConfig {
        id,
        listen,
        state_dir,
        audit_max_age,
        audit_max_bytes: audit_max_size_mib * 1024 * 1024,
        max_probes_in_flight,
    }
}

/// The host name, so that a node needs no id in a single-node setup.
fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rrguard".to_owned())
}

fn check_ttl(ttl: u32, path: &[Seg], errs: &mut Errors) {
    if ttl > i32::MAX as u32 {
        errs.at(
            path,
            format!("ttl {ttl} is larger than the DNS maximum 2147483647"),
        );
    }
}

/// Lower-cases and validates a DNS name, returning it with a trailing dot.
///
/// # Errors
/// A description of what is wrong with the name.
pub fn normalize_name(name: &str) -> Result<String, String> {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if n.is_empty() || n.len() > 253 {
        return Err("name must have 1 to 253 characters".to_owned());
    }
    for label in n.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("label {label:?} must have 1 to 63 characters"));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*')
        {
            return Err(format!(
                "label {label:?} may only hold letters, digits, '-' and '_'"
            ));
        }
    }
    Ok(format!("{n}."))
}

/// One `[[service]]` at `spath`; `writers` are the configured writer names.
fn service(
    s: &RawService,
    raw: &RawConfig,
    spath: &[Seg],
    writers: &BTreeSet<String>,
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<ServiceConfig> {
    let before = errs.0.len();
    let d = &raw.defaults;
    let (fqdn, zone) = service_name(s, spath, errs);
    let label = fqdn.clone().unwrap_or_else(|| s.fqdn.clone());
    let writer_names = writer_refs(s, &label, spath, writers, errs);
    let self_register = s
        .self_register
        .as_ref()
        .and_then(|r| self_register(s, r, &label, spath, errs));
    let endpoints = if s.self_register.is_some() {
        Vec::new()
    } else {
        endpoints(s, &label, spath, errs)
    };
    let counts = counts(s, d, &label, spath, errs);
    probe_timing(s.interval, s.timeout, spath, errs);
    let timeout = s.timeout.or(d.timeout).unwrap_or(DEFAULT_TIMEOUT);
    let ctx = CheckContext {
        label: &label,
        base_dir,
        timeout,
        endpoints: &endpoints,
    };
    let check = checks(s, &ctx, spath, errs);
    let quorum = service_quorum(s, raw, &label, spath, errs);
    let interval = s.interval.or(d.interval).unwrap_or(DEFAULT_INTERVAL);
    let confirm_interval = confirm_interval(s, d, interval, &label, spath, errs);
    let policies = policies(s, &label, spath, errs);
    if errs.0.len() != before {
        return None;
    }
    Some(ServiceConfig {
        fqdn: fqdn?,
        zone: zone?,
        writers: writer_names,
        ttl: counts.ttl,
        endpoints,
        interval,
        timeout,
        fall: counts.fall,
        rise: counts.rise,
        confirm_interval,
        adaptive_fall: s
            .adaptive_fall
            .or(d.adaptive_fall)
            .unwrap_or(DEFAULT_ADAPTIVE_FALL),
        // Self-registration: the other nodes' addresses count towards one record (`Policy`).
        min_healthy: if self_register.is_some() {
            1
        } else {
            counts.min_healthy
        },
        all_down: if self_register.is_some() {
            AllDownPolicy::KeepLast
        } else {
            s.all_down.or(d.all_down).unwrap_or_default()
        },
        remove_unlisted: s.remove_unlisted,
        quorum,
        policies,
        self_register,
        check: check?,
    })
}

/// `[service.self_register]`: a known source, and none of the options that would contradict it (its
/// endpoint is discovered; the other nodes' addresses are never removed; the last record stays).
fn self_register(
    s: &RawService,
    r: &super::raw::RawSelfRegister,
    label: &str,
    spath: &[Seg],
    errs: &mut Errors,
) -> Option<crate::observe::selfaddr::SelfRegisterConfig> {
    let rpath = with(spath, &[Key("self_register")]);
    let address = r
        .address
        .parse()
        .map_err(|m| {
            errs.at(
                &with(&rpath, &[Key("address")]),
                format!("service {label:?}: self_register address {m}"),
            )
        })
        .ok();
    let conflicts: [(&str, bool, &str); 4] = [
        (
            "endpoints",
            !s.endpoints.is_empty(),
            "the endpoint is this node's own address, discovered from self_register.address; remove endpoints",
        ),
        (
            "remove_unlisted",
            s.remove_unlisted,
            "the other addresses at the name are other nodes' and are left alone; remove remove_unlisted",
        ),
        (
            "min_healthy",
            s.min_healthy.is_some_and(|m| m != 1),
            "a self-registered name keeps at least one record, counting the other nodes' addresses; remove min_healthy",
        ),
        (
            "all_down",
            s.all_down.is_some_and(|a| a != AllDownPolicy::KeepLast),
            "a self-registered name keeps what it publishes (keep_last) and never adds a failing node; remove all_down",
        ),
    ];
    for (key, bad, why) in conflicts {
        if bad {
            errs.at(
                &with(spath, &[Key(key)]),
                format!("service {label:?}: {key} does not go with [service.self_register]: {why}"),
            );
        }
    }
    Some(crate::observe::selfaddr::SelfRegisterConfig {
        address: address?,
        family: r.family,
        remove_on_shutdown: r.remove_on_shutdown,
    })
}

/// The service's selection and change-safety policies (issue 11).
fn policies(
    s: &RawService,
    label: &str,
    spath: &[Seg],
    errs: &mut Errors,
) -> crate::decide::Policies {
    crate::decide::Policies {
        damping: s
            .damping
            .as_ref()
            .map(|d| damping(d, label, &with(spath, &[Key("damping")]), errs)),
        readd_delay: s.readd_delay.unwrap_or(Duration::ZERO),
        change_rate: change_rate(s, label, spath, errs),
        max_remove_fraction: max_remove_fraction(s, label, spath, errs),
        weights: s.select.as_ref().and_then(|sel| {
            weights(
                sel,
                &s.endpoints,
                label,
                &with(spath, &[Key("select"), Key("weights")]),
                errs,
            )
        }),
        select: s.select.as_ref().map(|sel| {
            select(
                sel,
                &s.endpoints,
                label,
                &with(spath, &[Key("select")]),
                errs,
            )
        }),
    }
}

/// `[service.select] weights`: every key a configured endpoint, every value 0..=255; the endpoints
/// not listed get [`crate::decide::select::DEFAULT_WEIGHT`].
fn weights(
    sel: &super::raw::RawSelect,
    raw_endpoints: &[String],
    label: &str,
    path: &[Seg],
    errs: &mut Errors,
) -> Option<BTreeMap<IpAddr, u8>> {
    use crate::decide::select::{DEFAULT_WEIGHT, MAX_WEIGHT};
    let raw = sel.weights.as_ref()?;
    let endpoints: Vec<IpAddr> = raw_endpoints
        .iter()
        .filter_map(|e| e.trim().parse().ok())
        .collect();
    let mut out: BTreeMap<IpAddr, u8> = endpoints.iter().map(|ip| (*ip, DEFAULT_WEIGHT)).collect();
    let mut seen = BTreeSet::new();
    for (key, value) in raw {
        // Key paths name static keys only: the problem is shown at `weights`, naming the key.
        let at = path.to_vec();
        let ip = match key.trim().parse::<IpAddr>() {
            Ok(ip) if endpoints.contains(&ip) => ip,
            Ok(_) => {
                errs.at(
                    &at,
                    format!(
                        "service {label:?}: weights names {key:?}, which is not one of the service's endpoints; add it to endpoints or remove its weight"
                    ),
                );
                continue;
            }
            Err(_) => {
                errs.at(
                    &at,
                    format!("service {label:?}: weights key {key:?} is not an IP address"),
                );
                continue;
            }
        };
        if !seen.insert(ip) {
            errs.at(
                &at,
                format!(
                    "service {label:?}: weights gives {ip} a weight twice (as {key:?}); keep one"
                ),
            );
            continue;
        }
        match u8::try_from(*value) {
            Ok(w) if u64::from(w) <= MAX_WEIGHT => {
                out.insert(ip, w);
            }
            _ => errs.at(
                &at,
                format!(
                    "service {label:?}: weight {value} of {key:?} is out of range; Route 53 weights run from 0 to {MAX_WEIGHT}"
                ),
            ),
        }
    }
    Some(out)
}

/// `[service.select]`: the mode's keys, tiers and canaries that name configured endpoints.
fn select(
    sel: &super::raw::RawSelect,
    raw_endpoints: &[String],
    label: &str,
    path: &[Seg],
    errs: &mut Errors,
) -> crate::decide::select::SelectConfig {
    use super::raw::RawSelectMode;
    use crate::decide::select::{self, Mode, SelectConfig};
    let endpoints: Vec<IpAddr> = raw_endpoints
        .iter()
        .filter_map(|e| e.trim().parse().ok())
        .collect();
    let key = |k: &'static str| with(path, &[Key(k)]);
    // An address that must be a configured endpoint; errors at `at`.
    let endpoint = |v: &str, what: &str, at: Vec<Seg>, errs: &mut Errors| match v
        .trim()
        .parse::<IpAddr>()
    {
        Ok(ip) if endpoints.contains(&ip) => Some(ip),
        Ok(_) => {
            errs.at(
                &at,
                format!(
                    "service {label:?}: {what} {v:?} is not one of the service's endpoints; add it to endpoints (it is probed like them)"
                ),
            );
            None
        }
        Err(_) => {
            errs.at(
                &at,
                format!("service {label:?}: {what} {v:?} is not an IP address"),
            );
            None
        }
    };
    let mut canaries = Vec::new();
    for (i, c) in sel.canaries.iter().enumerate() {
        let at = with(path, &[Key("canaries"), Index(i)]);
        if let Some(ip) = endpoint(c, "canary", at.clone(), errs) {
            if canaries.contains(&ip) {
                errs.at(
                    &at,
                    format!("service {label:?}: canary {c:?} is listed twice"),
                );
            } else {
                canaries.push(ip);
            }
        }
    }
    if !canaries.is_empty() && canaries.len() >= endpoints.len() {
        errs.at(
            &key("canaries"),
            format!(
                "service {label:?}: every endpoint is a canary; a canary replaces one of the other endpoints, so at least one endpoint must not be a canary"
            ),
        );
    }
    let canary_max_failing = sel
        .canary_max_failing
        .unwrap_or(select::DEFAULT_CANARY_MAX_FAILING);
    if sel.canary_max_failing.is_some() && canaries.len() <= canary_max_failing {
        errs.at(
            &key("canary_max_failing"),
            format!(
                "service {label:?}: canary_max_failing = {canary_max_failing} with {} canaries never withdraws them; set it below the number of canaries",
                canaries.len()
            ),
        );
    }
    let mode = sel.mode.unwrap_or(RawSelectMode::All);
    let only = |k: &'static str, set: bool, modes: &str, errs: &mut Errors| {
        if set {
            errs.at(
                &key(k),
                format!("service {label:?}: select {k} applies only with mode = {modes}"),
            );
        }
    };
    if mode != RawSelectMode::Fastest {
        only("count", sel.count.is_some(), "\"fastest\"", errs);
        only(
            "good_enough",
            sel.good_enough.is_some(),
            "\"fastest\"",
            errs,
        );
    }
    if mode != RawSelectMode::Priority {
        only("tiers", sel.tiers.is_some(), "\"priority\"", errs);
        only("min_active", sel.min_active.is_some(), "\"priority\"", errs);
        only(
            "failback_after",
            sel.failback_after.is_some(),
            "\"priority\"",
            errs,
        );
    }
    let ranked = endpoints.len().saturating_sub(canaries.len());
    let mode = match mode {
        RawSelectMode::All => Mode::All,
        RawSelectMode::Fastest => {
            let count = sel.count.unwrap_or(0);
            if sel.count.is_none() {
                errs.at(
                    &key("count"),
                    format!(
                        "service {label:?}: mode = \"fastest\" needs count, the number of endpoints to publish"
                    ),
                );
            } else if count == 0 || count > ranked {
                errs.at(
                    &key("count"),
                    format!(
                        "service {label:?}: select count = {count} must be between 1 and the {ranked} endpoints that are not canaries"
                    ),
                );
            }
            // Durations of 0 are refused when parsed.
            let good_enough = sel.good_enough.unwrap_or(select::DEFAULT_GOOD_ENOUGH);
            Mode::Fastest { count, good_enough }
        }
        RawSelectMode::Priority => {
            let mut tiers: Vec<Vec<IpAddr>> = Vec::new();
            let mut seen: Vec<IpAddr> = Vec::new();
            match &sel.tiers {
                None => errs.at(
                    &key("tiers"),
                    format!(
                        "service {label:?}: mode = \"priority\" needs tiers, lists of endpoints, first = preferred: tiers = [[\"10.0.0.1\"], [\"10.0.1.1\"]]"
                    ),
                ),
                Some(raw) => {
                    for (t, tier) in raw.iter().enumerate() {
                        if tier.is_empty() {
                            errs.at(
                                &with(path, &[Key("tiers"), Index(t)]),
                                format!("service {label:?}: select tier {} is empty", t + 1),
                            );
                        }
                        let mut ips = Vec::new();
                        for (i, a) in tier.iter().enumerate() {
                            let at = with(path, &[Key("tiers"), Index(t), Index(i)]);
                            let Some(ip) = endpoint(a, "tier address", at.clone(), errs) else {
                                continue;
                            };
                            if canaries.contains(&ip) {
                                errs.at(&at, format!("service {label:?}: {a:?} is a canary; canaries belong to no tier"));
                            } else if seen.contains(&ip) {
                                errs.at(&at, format!("service {label:?}: {a:?} is in more than one tier, or twice in one"));
                            } else {
                                seen.push(ip);
                                ips.push(ip);
                            }
                        }
                        tiers.push(ips);
                    }
                    let missing: Vec<String> = endpoints
                        .iter()
                        .filter(|ip| !seen.contains(ip) && !canaries.contains(ip))
                        .map(ToString::to_string)
                        .collect();
                    if !missing.is_empty() {
                        errs.at(
                            &key("tiers"),
                            format!(
                                "service {label:?}: endpoints {} are in no tier; put every endpoint that is not a canary in exactly one tier",
                                missing.join(", ")
                            ),
                        );
                    }
                }
            }
            let min_active = sel.min_active.unwrap_or(select::DEFAULT_MIN_ACTIVE);
            if min_active == 0 || min_active > ranked {
                errs.at(
                    &key("min_active"),
                    format!(
                        "service {label:?}: select min_active = {min_active} must be between 1 and the {ranked} endpoints that are not canaries"
                    ),
                );
            }
            Mode::Priority {
                tiers,
                min_active,
                failback_after: sel.failback_after.unwrap_or(select::DEFAULT_FAILBACK_AFTER),
            }
        }
    };
    SelectConfig {
        mode,
        canaries,
        canary_max_failing,
    }
}

/// `max_changes` per `change_window`: both or neither.
fn change_rate(
    s: &RawService,
    label: &str,
    spath: &[Seg],
    errs: &mut Errors,
) -> Option<crate::decide::safety::ChangeRate> {
    match (s.max_changes, s.change_window) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            let (key, missing) = if s.max_changes.is_some() {
                ("max_changes", "change_window")
            } else {
                ("change_window", "max_changes")
            };
            errs.at(
                &with(spath, &[Key(key)]),
                format!(
                    "service {label:?}: {key} needs {missing}: max_changes = N and change_window = \"DURATION\" go together (at most N record changes in any window of that length); set both, or neither"
                ),
            );
            None
        }
        (Some(0), Some(_)) => {
            errs.at(
                &with(spath, &[Key("max_changes")]),
                format!(
                    "service {label:?}: max_changes must be at least 1; 0 would queue every change for ever (leave max_changes and change_window out to turn the limit off)"
                ),
            );
            None
        }
        (Some(_), Some(w)) if w.is_zero() => {
            errs.at(
                &with(spath, &[Key("change_window")]),
                format!("service {label:?}: change_window must be longer than 0s"),
            );
            None
        }
        (Some(max_changes), Some(window)) => Some(crate::decide::safety::ChangeRate {
            max_changes,
            window,
        }),
    }
}

/// `max_remove_fraction`: 0 < f ≤ 1.
fn max_remove_fraction(
    s: &RawService,
    label: &str,
    spath: &[Seg],
    errs: &mut Errors,
) -> Option<f64> {
    let f = s.max_remove_fraction?;
    if !(f > 0.0 && f <= 1.0) {
        errs.at(
            &with(spath, &[Key("max_remove_fraction")]),
            format!(
                "service {label:?}: max_remove_fraction = {f} must be above 0 and at most 1 (the largest fraction of the published records one write may remove; 1 = no cap)"
            ),
        );
        return None;
    }
    Some(f)
}

/// `[service.damping]`: thresholds that can suppress and reuse (RFC 2439 §4.2).
fn damping(
    d: &super::raw::RawDamping,
    label: &str,
    dpath: &[Seg],
    errs: &mut Errors,
) -> crate::decide::damping::DampingConfig {
    use crate::decide::damping::DampingConfig;
    let def = DampingConfig::default();
    for (key, v) in [
        ("penalty", d.penalty),
        ("suppress", d.suppress),
        ("reuse", d.reuse),
    ] {
        if v == Some(0) {
            errs.at(
                &with(dpath, &[Key(key)]),
                format!("service {label:?}: damping {key} must be at least 1"),
            );
        }
    }
    let cfg = DampingConfig {
        penalty: d.penalty.map_or(def.penalty, f64::from),
        suppress: d.suppress.map_or(def.suppress, f64::from),
        reuse: d.reuse.map_or(def.reuse, f64::from),
        half_life: d.half_life.unwrap_or(def.half_life),
        max_suppress: d.max_suppress.unwrap_or(def.max_suppress),
    };
    if cfg.reuse >= cfg.suppress {
        errs.at(
            &with(dpath, &[Key(if d.reuse.is_some() { "reuse" } else { "suppress" })]),
            format!(
                "service {label:?}: damping reuse = {} must be below suppress = {}; an endpoint is reused once its penalty decays below reuse",
                cfg.reuse, cfg.suppress
            ),
        );
    } else if cfg.reuse * 2f64.powf(cfg.max_suppress.as_secs_f64() / cfg.half_life.as_secs_f64())
        <= cfg.suppress
    {
        errs.at(
            &with(dpath, &[Key(if d.max_suppress.is_some() { "max_suppress" } else { "half_life" })]),
            format!(
                "service {label:?}: damping max_suppress = {} is too short for half_life = {}: the penalty ceiling reuse × 2^(max_suppress / half_life) must exceed suppress = {}, or nothing is ever suppressed; raise max_suppress",
                humantime::format_duration(cfg.max_suppress),
                humantime::format_duration(cfg.half_life),
                cfg.suppress
            ),
        );
    }
    cfg
}

/// The service's `fqdn` and `zone`, normalized, and the name inside the zone.
fn service_name(
    s: &RawService,
    spath: &[Seg],
    errs: &mut Errors,
) -> (Option<String>, Option<String>) {
    let mut name = |key: &'static str, value: &str| {
        normalize_name(value)
            .map_err(|m| {
                errs.at(
                    &with(spath, &[Key(key)]),
                    format!("{key} {value:?} is not a valid DNS name: {m}"),
                )
            })
            .ok()
    };
    let fqdn = name("fqdn", &s.fqdn);
    let zone = name("zone", &s.zone);
    if let (Some(f), Some(z)) = (&fqdn, &zone)
        && !(f == z || f.ends_with(&format!(".{z}")))
    {
        errs.at(
            &with(spath, &[Key("fqdn")]),
            format!("service {f:?} is not inside zone {z:?}; set `zone` to the zone that holds this name"),
        );
    }
    (fqdn, zone)
}

/// The service's `writer` or `writers`: at least one configured writer, each named once.
fn writer_refs(
    s: &RawService,
    label: &str,
    spath: &[Seg],
    writers: &BTreeSet<String>,
    errs: &mut Errors,
) -> Vec<String> {
    let (key, names) = match (&s.writer, &s.writers) {
        (Some(_), Some(_)) => {
            errs.at(
                &with(spath, &[Key("writers")]),
                format!("service {label:?}: set either `writer = \"NAME\"` or `writers = [\"A\", \"B\"]`, not both"),
            );
            return Vec::new();
        }
        (Some(one), None) => ("writer", vec![one.clone()]),
        (None, Some(many)) => ("writers", many.clone()),
        (None, None) => {
            errs.at(
                spath,
                format!("service {label:?} has no writer: add `writer = \"NAME\"` naming a [[writer]] section"),
            );
            return Vec::new();
        }
    };
    if names.is_empty() {
        errs.at(
            &with(spath, &[Key(key)]),
            format!("service {label:?}: `writers` is empty; name at least one [[writer]]"),
        );
    }
    let known = if writers.is_empty() {
        "no [[writer]] is configured".to_owned()
    } else {
        format!(
            "known writers: {}",
            writers.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    let mut seen = BTreeSet::new();
    for name in &names {
        if !writers.contains(name) {
            errs.at(
                &with(spath, &[Key(key)]),
                format!("service {label:?}: unknown writer {name:?} ({known})"),
            );
        } else if !seen.insert(name) {
            errs.at(
                &with(spath, &[Key(key)]),
                format!("service {label:?}: writer {name:?} is listed twice"),
            );
        }
    }
    names
}

/// The service's `endpoints`: unicast IP addresses, each once.
fn endpoints(s: &RawService, label: &str, spath: &[Seg], errs: &mut Errors) -> Vec<IpAddr> {
    let mut endpoints = Vec::new();
    if s.endpoints.is_empty() {
        errs.at(
            &with(spath, &[Key("endpoints")]),
            format!("service {label:?}: endpoints must list at least one address"),
        );
    }
    for (i, e) in s.endpoints.iter().enumerate() {
        let epath = with(spath, &[Key("endpoints"), Index(i)]);
        match e.trim().parse::<IpAddr>() {
            Ok(ip) if endpoints.contains(&ip) => errs.at(
                &epath,
                format!("service {label:?}: endpoint {e:?} is listed twice"),
            ),
            Ok(ip) if ip.is_unspecified() || ip.is_multicast() => errs.at(
                &epath,
                format!("service {label:?}: endpoint {e:?} is not a unicast address"),
            ),
            Ok(ip) => endpoints.push(ip),
            Err(_) => errs.at(
                &epath,
                format!("service {label:?}: endpoint {e:?} is not an IP address"),
            ),
        }
    }
    endpoints
}

/// A service's `confirm_interval`, its own or inherited from `[defaults]` (then shortened to the
/// service's `interval` if longer), or by default a tenth of its `interval`, never below
/// [`MIN_CONFIRM_INTERVAL`] nor above `interval` ([`default_confirm_interval`]); `None`: `"off"`.
fn confirm_interval(
    s: &RawService,
    d: &RawDefaults,
    interval: Duration,
    label: &str,
    spath: &[Seg],
    errs: &mut Errors,
) -> Option<Duration> {
    match s.confirm_interval {
        Some(ConfirmInterval::Off) => None,
        Some(ConfirmInterval::Every(c)) => {
            let problem = if c < MIN_CONFIRM_INTERVAL {
                Some(format!(
                    "confirm_interval {} is below the {} minimum; write at least \"{}\", or \"off\"",
                    humantime::format_duration(c),
                    humantime::format_duration(MIN_CONFIRM_INTERVAL),
                    humantime::format_duration(MIN_CONFIRM_INTERVAL),
                ))
            } else if c > interval {
                Some(format!(
                    "confirm_interval {} is longer than interval {}; make it shorter (a tenth of interval is a good start), or \"off\"",
                    humantime::format_duration(c),
                    humantime::format_duration(interval),
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                errs.at(
                    &with(spath, &[Key("confirm_interval")]),
                    format!("service {label:?}: {p}"),
                );
            }
            Some(c)
        }
        None => match d.confirm_interval {
            Some(ConfirmInterval::Off) => None,
            Some(ConfirmInterval::Every(c)) => Some(c.min(interval)),
            None => Some(default_confirm_interval(interval)),
        },
    }
}

/// The `confirm_interval` of a service that sets none: `interval` / [`CONFIRM_DIVISOR`], at least
/// [`MIN_CONFIRM_INTERVAL`], at most `interval`.
pub(crate) fn default_confirm_interval(interval: Duration) -> Duration {
    (interval / CONFIRM_DIVISOR)
        .max(MIN_CONFIRM_INTERVAL)
        .min(interval)
}

/// A service's counts, its own or inherited from `[defaults]`.
struct Counts {
    fall: u32,
    rise: u32,
    ttl: u32,
    min_healthy: usize,
}

fn counts(
    s: &RawService,
    d: &RawDefaults,
    label: &str,
    spath: &[Seg],
    errs: &mut Errors,
) -> Counts {
    for (field, v) in [("fall", s.fall), ("rise", s.rise)] {
        if let Some(why) = v.and_then(|v| threshold_problem(field, v)) {
            errs.at(
                &with(spath, &[Key(field)]),
                format!("service {label:?}: {why}"),
            );
        }
    }
    if let Some(t) = s.ttl {
        check_ttl(t, &with(spath, &[Key("ttl")]), errs);
    }
    let min_healthy = match s.min_healthy {
        Some(m) if m > s.endpoints.len() && s.self_register.is_none() => {
            errs.at(
                &with(spath, &[Key("min_healthy")]),
                format!(
                    "service {label:?}: min_healthy = {m} is more than the {} configured endpoint(s); lower it or add endpoints",
                    s.endpoints.len()
                ),
            );
            m
        }
        Some(m) => m,
        // An inherited default larger than a small service is clamped rather than rejected.
        None => d
            .min_healthy
            .unwrap_or(DEFAULT_MIN_HEALTHY)
            .min(s.endpoints.len()),
    };
    Counts {
        fall: threshold(s.fall.or(d.fall), DEFAULT_FALL),
        rise: threshold(s.rise.or(d.rise), DEFAULT_RISE),
        ttl: s.ttl.or(d.ttl).unwrap_or(DEFAULT_TTL),
        min_healthy,
    }
}

/// The service's own `quorum`: only with a `[cluster]`, and reachable with its nodes.
fn service_quorum(
    s: &RawService,
    raw: &RawConfig,
    label: &str,
    spath: &[Seg],
    errs: &mut Errors,
) -> Option<crate::agree::Quorum> {
    let q = s.quorum.as_ref()?;
    let qpath = with(spath, &[Key("quorum")]);
    let Some(cluster) = &raw.cluster else {
        errs.at(
            &qpath,
            format!("service {label:?}: quorum only applies with a [cluster] section"),
        );
        return None;
    };
    let q = quorum(q, &qpath, errs)?;
    let nodes = cluster.peers.len() + 1;
    if let crate::agree::Quorum::AtLeast(k) = q
        && k > nodes
    {
        errs.at(
            &qpath,
            format!("service {label:?}: at_least = {k} is more than the {nodes} configured nodes"),
        );
        return None;
    }
    Some(q)
}

/// What validating a service's checks needs to know about the service.
struct CheckContext<'a> {
    /// The service, for messages.
    label: &'a str,
    /// Relative paths in checks (`ca_file`, `body_sha256_file`, …) are read from here.
    base_dir: &'a Path,
    /// The service's probe timeout.
    timeout: Duration,
    /// The service's endpoints.
    endpoints: &'a [IpAddr],
}

/// The service's `[service.check]`, or its `[[service.check]]` combined by `check_mode`.
fn checks(
    s: &RawService,
    ctx: &CheckContext<'_>,
    spath: &[Seg],
    errs: &mut Errors,
) -> Option<CheckConfig> {
    let cpath = with(spath, &[Key("check")]);
    match &s.check {
        RawChecks::One(c) => {
            if s.check_mode.is_some() {
                errs.at(
                    &with(spath, &[Key("check_mode")]),
                    format!(
                        "service {:?}: check_mode combines several checks; write each as a [[service.check]] table, or remove check_mode",
                        ctx.label
                    ),
                );
            }
            check(c, ctx, &cpath, errs)
        }
        RawChecks::Several(list) => {
            if list.is_empty() {
                errs.at(
                    &cpath,
                    format!(
                        "service {:?}: add at least one [[service.check]]",
                        ctx.label
                    ),
                );
                return None;
            }
            let before = errs.len();
            let mut checks = Vec::new();
            for (j, c) in list.iter().enumerate() {
                if let Some(c) = check(c, ctx, &with(&cpath, &[Index(j)]), errs) {
                    checks.push(c);
                }
            }
            if errs.len() != before {
                return None;
            }
            if checks.len() == 1 {
                return checks.pop();
            }
            Some(CheckConfig::Several(check::MultiCheckConfig {
                mode: s.check_mode.unwrap_or_default(),
                checks,
            }))
        }
    }
}

/// Hands one check at `cpath` to the plug-in of its `type`, then checks it against the service.
fn check(
    c: &RawCheck,
    ctx: &CheckContext<'_>,
    cpath: &[Seg],
    errs: &mut Errors,
) -> Option<CheckConfig> {
    let (label, base_dir) = (ctx.label, ctx.base_dir);
    let http = |h, tls, errs: &mut Errors| {
        check::http::validate(h, tls, label, cpath, base_dir, errs).map(CheckConfig::Http)
    };
    let checked = match c {
        RawCheck::Tcp(t) => check::tcp::validate(t, label, cpath, errs).map(CheckConfig::Tcp),
        RawCheck::Dns(d) => check::dns::validate(d, label, cpath, errs).map(CheckConfig::Dns),
        RawCheck::Icmp(i) => check::icmp::validate(i, label, cpath, errs).map(CheckConfig::Icmp),
        RawCheck::Exec(e) => {
            check::exec::validate(e, label, cpath, base_dir, errs).map(CheckConfig::Exec)
        }
        RawCheck::Http(h) => http(h, false, errs),
        RawCheck::Https(h) => http(h, true, errs),
    }?;
    match &checked {
        CheckConfig::Icmp(i) if i.spread() >= ctx.timeout => {
            errs.at(
                &with(cpath, &[Key("echo_interval")]),
                format!(
                    "service {label:?}: {} echoes {} apart do not fit in timeout {}; lower count or echo_interval, or raise timeout",
                    i.count,
                    humantime::format_duration(i.echo_interval),
                    humantime::format_duration(ctx.timeout),
                ),
            );
            None
        }
        CheckConfig::Http(h) if h.max_latency.is_some_and(|m| m >= ctx.timeout) => {
            errs.at(
                &with(cpath, &[Key("max_latency")]),
                format!(
                    "service {label:?}: max_latency {} is not below timeout {}, so it can never fail a probe the timeout has not; lower it, or leave it out",
                    humantime::format_duration(h.max_latency.unwrap_or_default()),
                    humantime::format_duration(ctx.timeout),
                ),
            );
            None
        }
        CheckConfig::Http(h) => {
            if let Some(src) = h.source_address
                && let Some(other) = ctx.endpoints.iter().find(|e| e.is_ipv4() != src.is_ipv4())
            {
                errs.at(
                    &with(cpath, &[Key("source_address")]),
                    format!(
                        "service {label:?}: source_address {src} cannot reach endpoint {other} (another address family); split the service's IPv4 and IPv6 endpoints, or drop source_address"
                    ),
                );
                return None;
            }
            Some(checked)
        }
        _ => Some(checked),
    }
}

fn quorum(
    q: &super::raw::RawQuorum,
    path: &[Seg],
    errs: &mut Errors,
) -> Option<crate::agree::Quorum> {
    use super::raw::RawQuorum;
    use crate::agree::Quorum;
    let hint =
        "write quorum = \"majority\", \"all\", \"any\", { at_least = N } or { fraction = 0.5 }";
    match q {
        RawQuorum::Name(n) => match n.as_str() {
            "majority" => Some(Quorum::Majority),
            "all" => Some(Quorum::All),
            "any" => Some(Quorum::Any),
            other => {
                errs.at(path, format!("unknown quorum {other:?}; {hint}"));
                None
            }
        },
        RawQuorum::AtLeast { at_least } if *at_least >= 1 => {
            Some(Quorum::AtLeast(*at_least as usize))
        }
        RawQuorum::AtLeast { at_least } => {
            errs.at(path, format!("at_least = {at_least} must be at least 1"));
            None
        }
        RawQuorum::Fraction { fraction } if *fraction > 0.0 && *fraction <= 1.0 => {
            Some(Quorum::Fraction(*fraction))
        }
        RawQuorum::Fraction { fraction } => {
            errs.at(
                path,
                format!("fraction = {fraction} must be greater than 0 and at most 1"),
            );
            None
        }
    }
}

/// `[cluster]`.
fn cluster(
    c: &RawCluster,
    raw: &RawConfig,
    node: &NodeConfig,
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<ClusterSettings> {
    let before = errs.0.len();
    let cpath = [Key("cluster")];
    let at = |k: &'static str| with(&cpath, &[Key(k)]);
    if node.listen.is_none() {
        errs.at(
            &[Key("node")],
            "a cluster needs [node].listen = \"IP:PORT\": peers send their votes there",
        );
    }
    let secret = cluster_secret(c, &cpath, base_dir, errs);
    let q = match &c.quorum {
        Some(q) => quorum(q, &at("quorum"), errs),
        None => Some(crate::agree::Quorum::Majority),
    };
    let (heartbeat, vote_ttl) = cluster_timing(c, raw, &cpath, errs);
    let self_check = self_check(c, &cpath, errs);
    let peers = peers(c, node, &cpath, errs);
    if let Some(crate::agree::Quorum::AtLeast(k)) = q
        && k > c.peers.len() + 1
    {
        errs.at(
            &at("quorum"),
            format!(
                "at_least = {k} is more than the {} configured nodes",
                c.peers.len() + 1
            ),
        );
    }
    if errs.0.len() != before {
        return None;
    }
    Some(ClusterSettings {
        secret: secret?,
        quorum: q?,
        vote_ttl,
        heartbeat,
        max_clock_skew: c.max_clock_skew.unwrap_or(DEFAULT_MAX_CLOCK_SKEW),
        self_check,
        peers,
    })
}

/// The cluster secret: the text itself (trimmed) is the key, not base64, and it must be long enough.
fn cluster_secret(
    c: &RawCluster,
    cpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<Vec<u8>> {
    let source = SecretSource {
        inline: c.secret.as_deref(),
        file: c.secret_file.as_deref(),
    };
    let missing = "a cluster needs `secret_file = \"PATH\"` (or `secret`): the key that authenticates peer messages";
    let text = read_secret(source, cpath, "cluster", missing, base_dir, errs)?;
    let secret = text.text().trim().as_bytes().to_vec();
    if secret.len() < MIN_CLUSTER_SECRET_LEN {
        errs.at(
            text.at(),
            format!(
                "cluster secret has {} bytes, at least {MIN_CLUSTER_SECRET_LEN} are needed; generate one with `head -c32 /dev/urandom | base64`",
                secret.len()
            ),
        );
    }
    Some(secret)
}

/// `heartbeat` and `vote_ttl`, defaulting from `[defaults].interval`; votes must outlive a heartbeat.
fn cluster_timing(
    c: &RawCluster,
    raw: &RawConfig,
    cpath: &[Seg],
    errs: &mut Errors,
) -> (Duration, Duration) {
    let interval = raw.defaults.interval.unwrap_or(DEFAULT_INTERVAL);
    let heartbeat = c.heartbeat.unwrap_or(interval);
    let vote_ttl = c.vote_ttl.unwrap_or(interval * DEFAULT_VOTE_TTL_INTERVALS);
    if vote_ttl <= heartbeat {
        let key = if c.vote_ttl.is_some() {
            "vote_ttl"
        } else {
            "heartbeat"
        };
        errs.at(
            &with(cpath, &[Key(key)]),
            format!(
                "vote_ttl ({}) must be longer than heartbeat ({}), or live peers would expire between two messages; 3 × heartbeat is a good value",
                humantime::format_duration(vote_ttl),
                humantime::format_duration(heartbeat)
            ),
        );
    }
    (heartbeat, vote_ttl)
}

/// `self_check` targets, `IP:PORT`.
fn self_check(c: &RawCluster, cpath: &[Seg], errs: &mut Errors) -> Vec<SocketAddr> {
    let mut targets = Vec::new();
    for (i, t) in c.self_check.iter().enumerate() {
        match t.parse::<SocketAddr>() {
            Ok(a) => targets.push(a),
            Err(_) => errs.at(
                &with(cpath, &[Key("self_check"), Index(i)]),
                format!("self_check target {t:?} is not IP:PORT, like \"192.0.2.53:53\""),
            ),
        }
    }
    targets
}

/// `[[cluster.peers]]`: at least one, each id once and not this node's, each with an http(s) URL.
fn peers(c: &RawCluster, node: &NodeConfig, cpath: &[Seg], errs: &mut Errors) -> Vec<PeerConfig> {
    let mut peers = Vec::new();
    let mut ids = BTreeSet::new();
    ids.insert(node.id.clone());
    for (i, p) in c.peers.iter().enumerate() {
        let ppath = with(cpath, &[Key("peers"), Index(i)]);
        if p.id == node.id {
            errs.at(
                &with(&ppath, &[Key("id")]),
                format!(
                    "peer id {:?} is this node's own id; list only the other nodes",
                    p.id
                ),
            );
        } else if !ids.insert(p.id.clone()) {
            errs.at(
                &with(&ppath, &[Key("id")]),
                format!("peer id {:?} is listed twice", p.id),
            );
        }
        match reqwest::Url::parse(&p.url) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => peers
                .push(PeerConfig {
                    id: p.id.clone(),
                    url: p.url.trim_end_matches('/').to_owned(),
                }),
            _ => errs.at(
                &with(&ppath, &[Key("url")]),
                format!(
                    "peer url {:?} must be http://HOST:PORT or https://HOST:PORT",
                    p.url
                ),
            ),
        }
    }
    if c.peers.is_empty() {
        errs.at(
            cpath,
            "a cluster needs at least one [[cluster.peers]] entry",
        );
    }
    peers
}
