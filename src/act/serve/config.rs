//! The `serve` writer's configuration: its options as written ([`RawServe`], [`RawServeZone`]), their
//! validation (problems reported by key path, which the central config turns into `FILE:LINE:COL`),
//! and the validated [`ServeConfig`] the writer is built from.
//!
//! Static records (`static_file`, `records`) are parsed here, with hickory's RFC 1035 master-file
//! parser, so `check-config` reports a broken zone file before anything binds a port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hickory_net::proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_net::proto::serialize::txt::Parser;
use serde::Deserialize;

use crate::config::Seg::{self, Index, Key};
use crate::config::{Errors, normalize_name, with};

/// Default TTL (s) of the zone's SOA and NS records and of static records written without one.
pub const DEFAULT_ZONE_TTL: u32 = 3600;
/// Default SOA refresh (RFC 1035 §3.3.13; RIPE-203's recommendation).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(86_400);
/// Default SOA retry (RIPE-203).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(7_200);
/// Default SOA expire (RIPE-203).
pub const DEFAULT_EXPIRE: Duration = Duration::from_secs(3_600_000);
/// Default SOA minimum: how long resolvers cache a negative answer (RFC 2308 §4). Short, because a
/// managed name may get its addresses back any moment.
pub const DEFAULT_MINIMUM: Duration = Duration::from_secs(60);
/// Default time a TCP connection may stay idle between two queries (RFC 7766 §6.2.3 suggests
/// "on the order of seconds"; Knot's `tcp-idle-timeout` is 10 s).
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// `type = "serve"`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Addresses to answer on, each over UDP and TCP; no duplicates, no port 0.
    pub listen: Vec<SocketAddr>,
    /// The zones served, no two nested.
    pub zones: Vec<ZoneConfig>,
    /// How long a TCP connection may wait for its next query.
    pub tcp_idle_timeout: Duration,
}

/// One `[[writer.zone]]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneConfig {
    /// The apex, lower case, with trailing dot.
    pub name: String,
    /// Name servers of the zone (the apex NS RRset), in the order written.
    pub ns: Vec<Name>,
    /// The SOA's fields other than the serial (rrguard keeps the serial).
    pub soa: SoaConfig,
    /// TTL (s) of the SOA and NS records.
    pub ttl: u32,
    /// Static records of the zone from `static_file` then `records`, every owner inside the zone,
    /// class IN.
    pub records: Vec<Record>,
}

/// SOA fields (RFC 1035 §3.3.13), times in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoaConfig {
    /// MNAME, the primary name server.
    pub mname: Name,
    /// RNAME, the mailbox of the person responsible, as a name (`hostmaster.example.com.`).
    pub rname: Name,
    /// REFRESH, s.
    pub refresh: u32,
    /// RETRY, s.
    pub retry: u32,
    /// EXPIRE, s.
    pub expire: u32,
    /// MINIMUM: the TTL of negative answers (RFC 2308 §4), s.
    pub minimum: u32,
}

/// `[[writer]]` options of `type = "serve"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServe {
    /// Name services refer to.
    pub name: String,
    /// `"IP:PORT"` addresses, each served over UDP and TCP.
    pub listen: Option<Vec<String>>,
    /// `[[writer.zone]]`.
    #[serde(default)]
    pub zone: Vec<RawServeZone>,
    /// Idle timeout of a TCP connection.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub tcp_idle_timeout: Option<Duration>,
}

/// `[[writer.zone]]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServeZone {
    /// Zone apex.
    pub name: String,
    /// Name server host names.
    pub ns: Option<Vec<String>>,
    /// SOA MNAME; the first `ns` by default.
    pub soa_mname: Option<String>,
    /// SOA RNAME, `hostmaster.example.com` or `hostmaster@example.com`.
    pub soa_rname: Option<String>,
    /// TTL of SOA, NS and static records without their own, seconds.
    pub ttl: Option<u32>,
    /// SOA refresh.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub refresh: Option<Duration>,
    /// SOA retry.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub retry: Option<Duration>,
    /// SOA expire.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub expire: Option<Duration>,
    /// SOA minimum (negative caching TTL).
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub minimum: Option<Duration>,
    /// An RFC 1035 master file with other records of the zone.
    pub static_file: Option<String>,
    /// Records in master-file syntax, one per entry, relative to the zone.
    #[serde(default)]
    pub records: Vec<String>,
}

/// Validates the writer at key path `wpath`; a relative `static_file` is read from `base_dir`.
/// Problems go to `errs`, and then `None` is returned.
pub(crate) fn validate(
    r: &RawServe,
    wpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<ServeConfig> {
    let before = errs.len();
    let listen = listen(r, wpath, errs);
    let mut zones = Vec::new();
    if r.zone.is_empty() {
        errs.at(
            wpath,
            format!(
                "writer {:?} serves no zone: add a [[writer.zone]] with `name` and `ns`",
                r.name
            ),
        );
    }
    for (i, z) in r.zone.iter().enumerate() {
        if let Some(zone) = zone(z, &with(wpath, &[Key("zone"), Index(i)]), base_dir, errs) {
            zones.push((i, zone));
        }
    }
    for (a, (i, outer)) in zones.iter().enumerate() {
        for (j, inner) in zones.iter().skip(a + 1) {
            let path = with(wpath, &[Key("zone"), Index(*i.max(j)), Key("name")]);
            if outer.name == inner.name {
                errs.at(
                    &path,
                    format!("zone {} is listed twice; list it once", outer.name),
                );
            } else if in_zone(&inner.name, &outer.name) || in_zone(&outer.name, &inner.name) {
                errs.at(
                    &path,
                    format!(
                        "zones {} and {} of one serve writer are nested; serve the inner one from another writer or fold it into the outer one",
                        outer.name, inner.name
                    ),
                );
            }
        }
    }
    if errs.len() > before {
        return None;
    }
    Some(ServeConfig {
        listen,
        zones: zones.into_iter().map(|(_, z)| z).collect(),
        tcp_idle_timeout: r.tcp_idle_timeout.unwrap_or(DEFAULT_TCP_IDLE_TIMEOUT),
    })
}

/// `name` is `zone` or below it (both lower case with trailing dot).
pub(crate) fn in_zone(name: &str, zone: &str) -> bool {
    zone == "." || name == zone || name.ends_with(&format!(".{zone}"))
}

fn listen(r: &RawServe, wpath: &[Seg], errs: &mut Errors) -> Vec<SocketAddr> {
    let lpath = with(wpath, &[Key("listen")]);
    let Some(list) = &r.listen else {
        errs.at(
            wpath,
            format!(
                "writer {:?} needs `listen`, the addresses to answer DNS on, like listen = [\"0.0.0.0:53\", \"[::]:53\"]",
                r.name
            ),
        );
        return Vec::new();
    };
    if list.is_empty() {
        errs.at(
            &lpath,
            "listen must name at least one address, like [\"0.0.0.0:53\", \"[::]:53\"]",
        );
    }
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let path = with(&lpath, &[Index(i)]);
        match s.trim().parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => errs.at(
                &path,
                format!("listen {s:?} has port 0; give the port to answer on, usually 53"),
            ),
            Ok(a) if out.contains(&a) => {
                errs.at(&path, format!("listen {s:?} is listed twice"));
            }
            Ok(a) => out.push(a),
            Err(_) => errs.at(
                &path,
                format!(
                    "listen {s:?} is not an IP:PORT address, like \"0.0.0.0:53\", \"127.0.0.1:5353\" or \"[::]:53\""
                ),
            ),
        }
    }
    out
}

/// A DNS name for the SOA/NS fields, as hickory's fully qualified [`Name`].
fn dns_name(s: &str) -> Result<Name, String> {
    let normal = normalize_name(s)?;
    Name::from_ascii(&normal).map_err(|e| e.to_string())
}

/// A duration as whole seconds that fit an SOA field (RFC 1982 serial-arithmetic limit 2^31 − 1).
fn seconds(d: Option<Duration>, default: Duration, path: &[Seg], errs: &mut Errors) -> u32 {
    let d = d.unwrap_or(default);
    if d.subsec_nanos() != 0 {
        errs.at(
            path,
            format!(
                "SOA times are whole seconds; {} is not",
                humantime::format_duration(d)
            ),
        );
    }
    match u32::try_from(d.as_secs()) {
        Ok(s) if s <= i32::MAX as u32 => s,
        _ => {
            errs.at(path, "at most 2147483647 seconds (about 68 years)");
            0
        }
    }
}

fn zone(z: &RawServeZone, zpath: &[Seg], base_dir: &Path, errs: &mut Errors) -> Option<ZoneConfig> {
    let before = errs.len();
    let name = normalize_name(&z.name)
        .map_err(|m| {
            errs.at(
                &with(zpath, &[Key("name")]),
                format!("zone name {:?}: {m}", z.name),
            )
        })
        .ok();
    let mut ns = Vec::new();
    match &z.ns {
        None => errs.at(
            zpath,
            format!(
                "zone {:?} needs `ns`, the host names of its name servers (the rrguard nodes), like ns = [\"ns1.{}\"]",
                z.name,
                z.name.trim_end_matches('.')
            ),
        ),
        Some(list) if list.is_empty() => errs.at(
            &with(zpath, &[Key("ns")]),
            "ns must list at least one name server",
        ),
        Some(list) => {
            for (i, s) in list.iter().enumerate() {
                match dns_name(s) {
                    Ok(n) => ns.push(n),
                    Err(m) => errs.at(
                        &with(zpath, &[Key("ns"), Index(i)]),
                        format!("name server {s:?} is not a host name: {m}"),
                    ),
                }
            }
        }
    }
    let mname = match &z.soa_mname {
        Some(s) => dns_name(s)
            .map_err(|m| {
                errs.at(
                    &with(zpath, &[Key("soa_mname")]),
                    format!("soa_mname {s:?} is not a host name: {m}"),
                )
            })
            .ok(),
        None => ns.first().cloned(),
    };
    let rname = match (&z.soa_rname, &name) {
        (Some(s), _) => dns_name(&s.replacen('@', ".", 1))
            .map_err(|m| {
                errs.at(
                    &with(zpath, &[Key("soa_rname")]),
                    format!(
                        "soa_rname {s:?} is not a mailbox like \"hostmaster.example.com\": {m}"
                    ),
                )
            })
            .ok(),
        (None, Some(zone)) => dns_name(&format!("hostmaster.{zone}")).ok(),
        (None, None) => None,
    };
    let ttl = z.ttl.unwrap_or(DEFAULT_ZONE_TTL);
    if ttl > i32::MAX as u32 {
        errs.at(
            &with(zpath, &[Key("ttl")]),
            format!("ttl {ttl} is larger than the DNS maximum 2147483647"),
        );
    }
    let soa_times = [
        ("refresh", z.refresh, DEFAULT_REFRESH),
        ("retry", z.retry, DEFAULT_RETRY),
        ("expire", z.expire, DEFAULT_EXPIRE),
        ("minimum", z.minimum, DEFAULT_MINIMUM),
    ]
    .map(|(key, value, default)| seconds(value, default, &with(zpath, &[Key(key)]), errs));
    let mut records = Vec::new();
    if let Some(zone) = &name {
        let origin = Name::from_ascii(zone).ok()?;
        if let Some(file) = &z.static_file {
            let fpath = with(zpath, &[Key("static_file")]);
            let path = base_dir.join(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => match parse_records(&text, &origin, ttl, Some(&path)) {
                    Ok(r) => {
                        let source = format!("static_file {}", path.display());
                        check_records(&r, zone, &source, &fpath, errs);
                        records.extend(r);
                    }
                    Err(m) => errs.at(&fpath, format!("static_file {}{m}", path.display())),
                },
                Err(e) => errs.at(
                    &fpath,
                    format!(
                        "cannot read static_file {}: {e}; a relative path is read from the config file's directory",
                        path.display()
                    ),
                ),
            }
        }
        for (i, line) in z.records.iter().enumerate() {
            let rpath = with(zpath, &[Key("records"), Index(i)]);
            if line.contains('\n') || line.trim_start().starts_with('$') {
                errs.at(
                    &rpath,
                    "one record per entry, like \"mail 300 IN MX 10 mx.example.com.\" (directives and several lines belong in static_file)",
                );
                continue;
            }
            match parse_records(line, &origin, ttl, None) {
                Ok(r) if r.is_empty() => errs.at(&rpath, "no record in this entry"),
                Ok(r) => {
                    check_records(&r, zone, "record", &rpath, errs);
                    records.extend(r);
                }
                Err(m) => errs.at(&rpath, format!("record {line:?}{m}")),
            }
        }
        check_cname_alone(&records, zpath, errs);
    }
    if errs.len() > before {
        return None;
    }
    let [refresh, retry, expire, minimum] = soa_times;
    Some(ZoneConfig {
        name: name?,
        ns,
        soa: SoaConfig {
            mname: mname?,
            rname: rname?,
            refresh,
            retry,
            expire,
            minimum,
        },
        ttl,
        records,
    })
}

/// Parses master-file text relative to `origin`, with `default_ttl` where no TTL is given. The
/// error starts with `:LINE: ` (for a file) or `: `, then hickory's message.
fn parse_records(
    text: &str,
    origin: &Name,
    default_ttl: u32,
    path: Option<&Path>,
) -> Result<Vec<Record>, String> {
    let parse = |text: &str| {
        // A `$TTL` of the file's own overrides this default.
        let input = format!("$TTL {default_ttl}\n{text}\n");
        Parser::new(input, path.map(Path::to_path_buf), Some(origin.clone()))
            .parse()
            .map(|(_, sets)| {
                sets.into_values()
                    .flat_map(|set| set.records_without_rrsigs().cloned().collect::<Vec<_>>())
                    .collect::<Vec<Record>>()
            })
    };
    parse(text).map_err(|e| match path {
        Some(_) => match first_bad_line(text, &parse) {
            Some(line) => format!(":{line}: {e}"),
            None => format!(": {e}"),
        },
        None => format!(": {e}"),
    })
}

/// The parser does not say where it failed: the first line whose prefix of the file fails to parse
/// with the same message as the whole file (a cut inside parentheses fails with another one).
fn first_bad_line<T, E: ToString>(
    text: &str,
    parse: &dyn Fn(&str) -> Result<T, E>,
) -> Option<usize> {
    let whole = parse(text).err()?.to_string();
    let lines: Vec<&str> = text.lines().collect();
    (1..=lines.len()).find(|&n| {
        parse(&lines[..n].join("\n"))
            .err()
            .is_some_and(|e| e.to_string() == whole)
    })
}

fn owner_of(r: &Record) -> String {
    let owner = r.name.to_lowercase().to_ascii();
    if owner.ends_with('.') {
        owner
    } else {
        format!("{owner}.")
    }
}

/// Rules each static record must follow; a violation names the record and its `source`.
fn check_records(records: &[Record], zone: &str, source: &str, path: &[Seg], errs: &mut Errors) {
    for r in records {
        let owner = owner_of(r);
        let what = format!("{source}: {} {}", r.name, r.record_type());
        if !in_zone(&owner, zone) {
            errs.at(
                path,
                format!(
                    "{what} is outside zone {zone}; write names relative to the zone or ending in .{zone}"
                ),
            );
        } else if r.dns_class != DNSClass::IN {
            errs.at(
                path,
                format!("{what} has class {}; only IN is served", r.dns_class),
            );
        } else if r.record_type() == RecordType::NS && owner != zone {
            errs.at(
                path,
                format!(
                    "{what} would delegate {owner}; serve does not delegate: leave that zone's NS out and serve it from its own servers"
                ),
            );
        } else if r.record_type() == RecordType::CNAME && owner == zone {
            errs.at(
                path,
                format!("{what}: a zone apex cannot hold a CNAME (RFC 1034 §3.6.2)"),
            );
        }
    }
}

/// A CNAME excludes every other type at its name (RFC 1034 §3.6.2), across all static sources.
fn check_cname_alone(records: &[Record], zpath: &[Seg], errs: &mut Errors) {
    let mut types: BTreeMap<String, BTreeSet<RecordType>> = BTreeMap::new();
    for r in records {
        types
            .entry(owner_of(r))
            .or_default()
            .insert(r.record_type());
    }
    for (owner, set) in types {
        if set.contains(&RecordType::CNAME) && set.len() > 1 {
            let others: Vec<String> = set
                .iter()
                .filter(|t| **t != RecordType::CNAME)
                .map(ToString::to_string)
                .collect();
            errs.at(
                zpath,
                format!(
                    "static records at {owner}: a CNAME excludes other data at its name (RFC 1034 §3.6.2), but {} is there too",
                    others.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, WriterKind, parse};

    /// The problems of a one-writer config whose writer table holds `writer`, in a directory
    /// holding `files`.
    fn problems(writer: &str, files: &[(&str, &str)]) -> Result<super::ServeConfig, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let text = format!(
            "[[writer]]\nname = \"dns\"\ntype = \"serve\"\n{writer}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"dns\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n"
        );
        match parse(&dir.path().join("rrguard.toml"), &text) {
            Ok(c) => match &c.writers[0].kind {
                WriterKind::Serve(s) => Ok(s.clone()),
                other => panic!("{other:?}"),
            },
            Err(ConfigError::Invalid { problems, .. }) => {
                Err(problems.into_iter().map(|p| p.message).collect())
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn one_problem(writer: &str, files: &[(&str, &str)]) -> String {
        let p = problems(writer, files).unwrap_err();
        assert_eq!(p.len(), 1, "{p:#?}");
        p[0].clone()
    }

    #[test]
    fn defaults_and_static_records() {
        let zone_file = "$TTL 120\n@ SOA ns1 hostmaster 1 2 3 4 5\n@ NS other.\nmail MX 10 mx\nmx A 192.0.2.25\n_sip._tcp SRV 0 5 5060 sip\n";
        let c = problems(
            "listen = [\"127.0.0.1:5353\", \"[::1]:5353\"]\n[[writer.zone]]\nname = \"Example.Test.\"\nns = [\"ns1.example.test\"]\nstatic_file = \"z.zone\"\nrecords = [\"txt 30 IN TXT \\\"v=spf1 -all\\\"\"]\n",
            &[("z.zone", zone_file)],
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        let z = &c.zones[0];
        assert_eq!(z.name, "example.test.");
        assert_eq!(z.soa.mname.to_ascii(), "ns1.example.test.");
        assert_eq!(z.soa.rname.to_ascii(), "hostmaster.example.test.");
        assert_eq!(
            (z.soa.refresh, z.soa.retry, z.soa.expire, z.soa.minimum),
            (86_400, 7_200, 3_600_000, 60)
        );
        assert_eq!(z.ttl, super::DEFAULT_ZONE_TTL);
        assert_eq!(c.tcp_idle_timeout, super::DEFAULT_TCP_IDLE_TIMEOUT);
        let mut got: Vec<String> = z
            .records
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.ttl, r.record_type()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                "_sip._tcp.example.test. 120 SRV",
                "example.test. 120 NS",
                "example.test. 120 SOA",
                "mail.example.test. 120 MX",
                "mx.example.test. 120 A",
                "txt.example.test. 30 TXT"
            ]
        );
    }

    #[test]
    fn missing_listen_and_ns_say_what_to_write() {
        let p = problems("[[writer.zone]]\nname = \"example.test\"\n", &[]).unwrap_err();
        assert!(
            p.iter().any(
                |m| m.contains("needs `listen`") && m.contains("[\"0.0.0.0:53\", \"[::]:53\"]")
            ),
            "{p:#?}"
        );
        assert!(p.iter().any(|m| m.contains("needs `ns`")), "{p:#?}");
        let none = one_problem("listen = [\"127.0.0.1:53\"]\n", &[]);
        assert!(none.contains("serves no zone"), "{none}");
        let port = one_problem(
            "listen = [\"127.0.0.1:0\"]\n[[writer.zone]]\nname = \"example.test\"\nns = [\"ns1.example.test\"]\n",
            &[],
        );
        assert!(port.contains("port 0"), "{port}");
    }

    #[test]
    fn bad_static_data_is_named_with_its_line() {
        let zone = "[[writer.zone]]\nname = \"example.test\"\nns = [\"ns1.example.test\"]\n";
        let file = one_problem(
            &format!("listen = [\"127.0.0.1:53\"]\n{zone}static_file = \"z.zone\"\n"),
            &[(
                "z.zone",
                "www A 192.0.2.1\n\nbad A 300.1.2.3\nok A 192.0.2.2\n",
            )],
        );
        assert!(file.contains("z.zone:3: "), "{file}");
        let inline = one_problem(
            &format!("listen = [\"127.0.0.1:53\"]\n{zone}records = [\"www BOGUS 1\"]\n"),
            &[],
        );
        assert!(inline.contains("record \"www BOGUS 1\""), "{inline}");
        let outside = one_problem(
            &format!(
                "listen = [\"127.0.0.1:53\"]\n{zone}records = [\"www.example.org. A 192.0.2.1\"]\n"
            ),
            &[],
        );
        assert!(
            outside.contains("is outside zone example.test."),
            "{outside}"
        );
        let delegation = one_problem(
            &format!("listen = [\"127.0.0.1:53\"]\n{zone}records = [\"sub NS ns.elsewhere.\"]\n"),
            &[],
        );
        assert!(
            delegation.contains("serve does not delegate"),
            "{delegation}"
        );
        let cname = one_problem(
            &format!(
                "listen = [\"127.0.0.1:53\"]\n{zone}records = [\"www CNAME lb\", \"www TXT x\"]\n"
            ),
            &[],
        );
        assert!(cname.contains("a CNAME excludes other data"), "{cname}");
    }

    #[test]
    fn nested_zones_are_refused() {
        let p = one_problem(
            "listen = [\"127.0.0.1:53\"]\n[[writer.zone]]\nname = \"example.test\"\nns = [\"ns1.example.test\"]\n[[writer.zone]]\nname = \"sub.example.test\"\nns = [\"ns1.example.test\"]\n",
            &[],
        );
        assert!(p.contains("are nested"), "{p}");
    }
}
