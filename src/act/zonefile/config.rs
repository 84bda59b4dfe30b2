//! The `zonefile` writer's configuration: its options as written ([`RawZonefile`]), their validation
//! (problems reported by key path, which the central config turns into `FILE:LINE:COL`), and the
//! validated [`ZonefileConfig`] the writer is built from.
//!
//! The static part of the zone comes from ONE of two sources ([`ZoneSource`]): rrguard generates the
//! header from `ns` and the SOA options and copies in an `include` file of static records; or the
//! operator writes a `template` holding the SOA (with `{{serial}}`), the NS and static records, and a
//! `{{records}}` line where the managed records go (the edge-manager way). Both files are checked here
//! and read again on every write.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::zone;
use crate::config::Seg::{self, Index, Key};
use crate::config::{Errors, normalize_name, with};

/// Default SOA refresh: how often secondaries check the serial.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
/// Default SOA retry: how soon secondaries retry a failed refresh.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(600);
/// Default SOA expire: how long secondaries serve the zone without reaching the primary (2 weeks).
pub const DEFAULT_EXPIRE: Duration = Duration::from_secs(14 * 24 * 3600);
/// Default SOA minimum, the TTL of negative answers (RFC 2308 §4), seconds: short, so that a name
/// rrguard publishes again is not cached away for long.
pub const DEFAULT_MINIMUM: u32 = 60;
/// Default `$TTL`, seconds: the TTL of the SOA, NS and include records that give none.
pub const DEFAULT_ZONE_TTL: u32 = 3600;
/// Default limit of the check and reload commands, and of waiting for the file's lock.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// How the SOA serial is chosen. Either way it always increases (RFC 1982 arithmetic), past the
/// serial in the file and past every serial this process wrote, even when that was higher than the
/// clock suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialStyle {
    /// Seconds since 1970 (UTC), or one more than the last serial.
    #[default]
    Unixtime,
    /// `YYYYMMDDnn` (UTC date and a counter), or one more than the last serial.
    Date,
}

impl fmt::Display for SerialStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SerialStyle::Unixtime => "unixtime",
            SerialStyle::Date => "date",
        })
    }
}

/// `[[writer]]` options of `type = "zonefile"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZonefile {
    /// Name services refer to.
    pub name: String,
    /// The zone file written.
    pub path: String,
    /// The zone apex.
    pub zone: String,
    /// Name servers of the zone (generated header).
    pub ns: Option<Vec<String>>,
    /// SOA MNAME (generated header); default the first `ns`.
    pub soa_mname: Option<String>,
    /// SOA RNAME, the mailbox as a DNS name (generated header); default `hostmaster.ZONE`.
    pub soa_rname: Option<String>,
    /// SOA refresh.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub refresh: Option<Duration>,
    /// SOA retry.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub retry: Option<Duration>,
    /// SOA expire.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub expire: Option<Duration>,
    /// SOA minimum (negative-answer TTL), seconds.
    pub minimum: Option<u32>,
    /// `$TTL`, seconds.
    pub default_ttl: Option<u32>,
    /// A file of static records copied into the zone.
    pub include: Option<String>,
    /// A template with `{{serial}}` and `{{records}}` (instead of the generated header).
    pub template: Option<String>,
    /// Serial style.
    pub serial: Option<SerialStyle>,
    /// Validates the new file before it replaces the old one (argv, `{zone}` and `{path}`).
    pub check_command: Option<Vec<String>>,
    /// Makes the DNS server load the new file (argv, `{zone}` and `{path}`).
    pub reload_command: Option<Vec<String>>,
    /// Limit of each command, and of waiting for the file's lock.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub timeout: Option<Duration>,
}

/// The SOA record's fields other than the serial; times in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Soa {
    /// Primary name server, absolute.
    pub mname: String,
    /// Responsible mailbox as a DNS name, absolute.
    pub rname: String,
    /// Refresh, s.
    pub refresh: u32,
    /// Retry, s.
    pub retry: u32,
    /// Expire, s.
    pub expire: u32,
    /// Negative-answer TTL, s.
    pub minimum: u32,
}

/// The header rrguard generates, and the static records it copies in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// SOA fields.
    pub soa: Soa,
    /// Name servers, absolute.
    pub ns: Vec<String>,
    /// `$TTL`, s.
    pub default_ttl: u32,
    /// File of static records, copied in after the NS records.
    pub include: Option<PathBuf>,
}

/// Where the static part of the zone file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneSource {
    /// Generated header plus an optional include file.
    Generated(Generated),
    /// The operator's template.
    Template(PathBuf),
}

/// `type = "zonefile"`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZonefileConfig {
    /// The zone file written (absolute, or relative to the config file's directory when written so).
    pub path: PathBuf,
    /// The zone apex, lower case, with trailing dot.
    pub zone: String,
    /// The static part of the file.
    pub source: ZoneSource,
    /// How serials are chosen.
    pub serial: SerialStyle,
    /// Run on the new file before it replaces the old one; non-zero exit refuses the write.
    pub check_command: Option<Vec<String>>,
    /// Run after the new file is in place; non-zero exit puts the old file back.
    pub reload_command: Option<Vec<String>>,
    /// Limit of each command, and of waiting for the file's lock.
    pub timeout: Duration,
}

/// Validates the writer at key path `wpath`; relative paths are resolved against `base_dir`.
/// Problems go to `errs`, and then `None` is returned.
pub(crate) fn validate(
    r: &RawZonefile,
    wpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<ZonefileConfig> {
    let before = errs.len();
    let at = |key: &'static str| with(wpath, &[Key(key)]);
    let zone = normalize_name(&r.zone)
        .map_err(|m| errs.at(&at("zone"), format!("zone {:?}: {m}", r.zone)))
        .ok();
    let path = base_dir.join(&r.path);
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => errs.at(
            &at("path"),
            format!(
                "directory {} does not exist; create it or fix the path",
                dir.display()
            ),
        ),
        _ if path.is_dir() => errs.at(
            &at("path"),
            format!(
                "{} is a directory; set the path of the zone file",
                path.display()
            ),
        ),
        _ => {}
    }
    let check_command = command(r.check_command.as_ref(), &at("check_command"), errs);
    let reload_command = command(r.reload_command.as_ref(), &at("reload_command"), errs);
    let source = zone
        .as_ref()
        .and_then(|z| source(r, wpath, base_dir, z, errs));
    if errs.len() > before {
        return None;
    }
    Some(ZonefileConfig {
        path,
        zone: zone?,
        source: source?,
        serial: r.serial.unwrap_or_default(),
        check_command,
        reload_command,
        timeout: r.timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT),
    })
}

/// The template, or the generated header and include file.
fn source(
    r: &RawZonefile,
    wpath: &[Seg],
    base_dir: &Path,
    zone: &str,
    errs: &mut Errors,
) -> Option<ZoneSource> {
    let at = |key: &'static str| with(wpath, &[Key(key)]);
    if let Some(t) = &r.template {
        let header = [
            ("ns", r.ns.is_some()),
            ("soa_mname", r.soa_mname.is_some()),
            ("soa_rname", r.soa_rname.is_some()),
            ("refresh", r.refresh.is_some()),
            ("retry", r.retry.is_some()),
            ("expire", r.expire.is_some()),
            ("minimum", r.minimum.is_some()),
            ("default_ttl", r.default_ttl.is_some()),
            ("include", r.include.is_some()),
        ];
        for (key, _) in header.iter().filter(|(_, set)| *set) {
            errs.at(
                &at(key),
                format!("`{key}` does nothing with `template`: the template holds the SOA, NS and static records; remove `{key}` or the template"),
            );
        }
        let path = base_dir.join(t);
        return match zone::load_template(&path, zone) {
            Ok(_) => Some(ZoneSource::Template(path)),
            Err(m) => {
                errs.at(&at("template"), m);
                None
            }
        };
    }
    let ns = names(r.ns.as_deref().unwrap_or_default(), &at("ns"), errs);
    if r.ns.as_ref().is_none_or(Vec::is_empty) {
        errs.at(
            wpath,
            format!("zonefile writer {:?} needs `ns = [\"ns1.example.com\"]` (the zone's name servers), or a `template`", r.name),
        );
    }
    let mname = match &r.soa_mname {
        Some(m) => normalize_name(m)
            .map_err(|e| errs.at(&at("soa_mname"), format!("soa_mname {m:?}: {e}")))
            .ok(),
        None => ns.first().cloned(),
    };
    let rname = match &r.soa_rname {
        Some(m) if m.contains('@') => {
            errs.at(
                &at("soa_rname"),
                format!(
                    "soa_rname {m:?}: write the mailbox as a DNS name, the @ as a dot: \"{}\"",
                    m.replacen('@', ".", 1)
                ),
            );
            None
        }
        Some(m) => normalize_name(m)
            .map_err(|e| errs.at(&at("soa_rname"), format!("soa_rname {m:?}: {e}")))
            .ok(),
        None => Some(format!("hostmaster.{zone}")),
    };
    let refresh = seconds(r.refresh, DEFAULT_REFRESH, &at("refresh"), errs);
    let retry = seconds(r.retry, DEFAULT_RETRY, &at("retry"), errs);
    let expire = seconds(r.expire, DEFAULT_EXPIRE, &at("expire"), errs);
    let include = r.include.as_ref().and_then(|i| {
        let path = base_dir.join(i);
        zone::load_include(&path, zone)
            .map_err(|m| errs.at(&at("include"), m))
            .ok()
            .map(|_| path)
    });
    if r.include.is_some() && include.is_none() {
        return None;
    }
    Some(ZoneSource::Generated(Generated {
        soa: Soa {
            mname: mname?,
            rname: rname?,
            refresh: refresh?,
            retry: retry?,
            expire: expire?,
            minimum: r.minimum.unwrap_or(DEFAULT_MINIMUM),
        },
        ns,
        default_ttl: r.default_ttl.unwrap_or(DEFAULT_ZONE_TTL),
        include,
    }))
}

/// DNS names, normalized; each bad one reported at its index.
fn names(list: &[String], path: &[Seg], errs: &mut Errors) -> Vec<String> {
    list.iter()
        .enumerate()
        .filter_map(|(i, n)| {
            normalize_name(n)
                .map_err(|m| errs.at(&with(path, &[Index(i)]), format!("{n:?}: {m}")))
                .ok()
        })
        .collect()
}

/// A duration as whole seconds that fit an SOA field.
fn seconds(d: Option<Duration>, default: Duration, path: &[Seg], errs: &mut Errors) -> Option<u32> {
    let d = d.unwrap_or(default);
    if d.subsec_nanos() != 0 || d.as_secs() > u64::from(u32::MAX) {
        errs.at(
            path,
            "SOA times are whole seconds up to 4294967295s (about 136 years), like \"1h\" or \"600s\"",
        );
        return None;
    }
    Some(d.as_secs() as u32)
}

/// A command as an argument list, checked: a program, and no placeholder but `{zone}` and `{path}`.
fn command(argv: Option<&Vec<String>>, path: &[Seg], errs: &mut Errors) -> Option<Vec<String>> {
    let argv = argv?;
    if argv.first().is_none_or(|p| p.trim().is_empty()) {
        errs.at(
            path,
            "a command is a list: the program, then its arguments, like [\"rndc\", \"reload\", \"{zone}\"]",
        );
        return None;
    }
    for (i, arg) in argv.iter().enumerate() {
        let rest = arg.replace("{zone}", "").replace("{path}", "");
        if let Some(at) = rest.find('{').filter(|&at| rest[at..].contains('}')) {
            let end = rest[at..].find('}').map_or(rest.len(), |e| at + e + 1);
            errs.at(
                &with(path, &[Index(i)]),
                format!(
                    "unknown placeholder {:?}; only {{zone}} (the zone, without trailing dot) and {{path}} (the file) exist",
                    &rest[at..end]
                ),
            );
            return None;
        }
    }
    Some(argv.clone())
}
