//! The `[naming]` section: its options as written ([`RawNaming`]), their validation (problems by key
//! path, which the central config turns into `FILE:LINE:COL`) and the validated [`NamingConfig`].
//!
//! The naming zone lives on an RFC 2136 primary; `writer` names an `rfc2136` `[[writer]]`, whose
//! servers, TSIG key and timeout naming uses (the same key must be allowed to transfer the zone, for
//! `list`, `register` and `hosts-sync`). The node's identity (service, style, aliases) comes from
//! this section, or from an `identity_file` in the old aerostat format (`/etc/aerostat_info`: one
//! line `service [style [alias…]]`); the instance id from `instance_id`, or from the first line of
//! `instance_id_file` (default `/etc/machine-id`), read when a command runs.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Seg::{Index, Key};
use crate::config::{Errors, Rfc2136Config, WriterConfig, WriterKind, normalize_name, with};

/// Default TTL of the records naming writes, seconds.
pub const DEFAULT_NAMING_TTL: u32 = 60;
/// Default period of lease renewal (`renew --daemon`).
pub const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(30);
/// Default age after which a lease that was not renewed frees its name.
pub const DEFAULT_RELEASE_AFTER: Duration = Duration::from_secs(300);
/// Default period of `hosts-sync --daemon`.
pub const DEFAULT_HOSTS_INTERVAL: Duration = Duration::from_secs(30);
/// Default hosts file of `hosts-sync`.
pub const DEFAULT_HOSTS_FILE: &str = "/etc/hosts";
/// Default file the instance id is read from.
pub const DEFAULT_INSTANCE_ID_FILE: &str = "/etc/machine-id";
/// Default file `--set-hostname` writes.
pub const DEFAULT_HOSTNAME_FILE: &str = "/etc/hostname";
/// Longest instance id, bytes (it travels in a TXT character-string of at most 255).
pub const MAX_INSTANCE_ID_LEN: usize = 128;

/// How a service names its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// `svc-0`, `svc-1`, …: the lowest free number, from 0.
    Iterative,
    /// `svc-master` when free, else the lowest free `svc-slave-N`, from 1.
    Masterful,
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Style::Iterative => "iterative",
            Style::Masterful => "masterful",
        })
    }
}

impl FromStr for Style {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "iterative" => Ok(Style::Iterative),
            "masterful" => Ok(Style::Masterful),
            other => Err(format!(
                "unknown naming style {other:?}; write \"iterative\" or \"masterful\""
            )),
        }
    }
}

/// `[naming]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNaming {
    /// The `rfc2136` writer whose servers and TSIG key hold the naming zone.
    pub writer: String,
    /// The naming zone.
    pub zone: String,
    /// This node's service (`web` → `web-0`…).
    pub service: Option<String>,
    /// `iterative` (default) or `masterful`.
    pub style: Option<Style>,
    /// Extra names of this node, CNAMEs to its name.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A file holding `service [style [alias…]]` (the old `/etc/aerostat_info`).
    pub identity_file: Option<String>,
    /// This node's instance id.
    pub instance_id: Option<String>,
    /// File whose first line is the instance id; default `/etc/machine-id`.
    pub instance_id_file: Option<String>,
    /// This node's addresses (A/AAAA of its name).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// TTL of the records written, seconds.
    pub ttl: Option<u32>,
    /// Period of lease renewal.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub renew_interval: Option<Duration>,
    /// Lease age after which any node frees the name.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub release_after: Option<Duration>,
    /// The hosts file `hosts-sync` keeps.
    pub hosts_file: Option<String>,
    /// Legacy lines that go first in the section.
    pub hosts_prefix_file: Option<String>,
    /// Keep `HOSTS.bak`; default true.
    pub hosts_backup: Option<bool>,
    /// Period of `hosts-sync --daemon`.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub hosts_interval: Option<Duration>,
    /// The file `--set-hostname` writes.
    pub hostname_file: Option<String>,
}

/// `[naming]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NamingConfig {
    /// The writer's name (for messages).
    pub writer: String,
    /// Servers, key and timeout of that writer.
    pub dns: Rfc2136Config,
    /// The naming zone, lower case, trailing dot.
    pub zone: String,
    /// This node's identity, when configured here or in `identity_file`.
    pub identity: Option<Identity>,
    /// Instance id from the config.
    pub instance_id: Option<String>,
    /// Where the instance id is read otherwise.
    pub instance_id_file: PathBuf,
    /// This node's addresses.
    pub addresses: Vec<IpAddr>,
    /// TTL of the records written, seconds.
    pub ttl: u32,
    /// Period of lease renewal.
    pub renew_interval: Duration,
    /// Lease age after which any node frees the name.
    pub release_after: Duration,
    /// The hosts file `hosts-sync` keeps.
    pub hosts_file: PathBuf,
    /// Its legacy prefix file.
    pub hosts_prefix_file: Option<PathBuf>,
    /// Keep `HOSTS.bak`.
    pub hosts_backup: bool,
    /// Period of `hosts-sync --daemon`.
    pub hosts_interval: Duration,
    /// The file `--set-hostname` writes.
    pub hostname_file: PathBuf,
}

/// What a node is named after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Service label (`web`).
    pub service: String,
    /// Naming style.
    pub style: Style,
    /// Alias labels (CNAMEs in the zone to the node's name).
    pub aliases: Vec<String>,
}

/// Checks a service or alias label: one DNS label of letters, digits and `-`, lower-cased.
///
/// # Errors
/// What is wrong with it.
pub fn check_label(what: &str, label: &str) -> Result<String, String> {
    let l = label.trim().to_ascii_lowercase();
    if l.is_empty() || l.len() > 50 {
        return Err(format!(
            "{what} {label:?} must have 1 to 50 characters (the node's name adds a suffix)"
        ));
    }
    if !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') || l.starts_with('-') {
        return Err(format!(
            "{what} {label:?} must be one DNS label: letters, digits and '-', not starting with '-'"
        ));
    }
    Ok(l)
}

/// Parses the old aerostat identity line, `service [style [alias…]]` (the first non-empty line that
/// is not a `#` comment).
///
/// # Errors
/// What is wrong, for the caller to place.
pub fn parse_identity_line(text: &str) -> Result<Identity, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or("the file holds no `service [style [alias…]]` line")?;
    let mut words = line.split_whitespace();
    let service = check_label("service", words.next().unwrap_or_default())?;
    let style = match words.next() {
        None => Style::Iterative,
        Some(s) => s.parse()?,
    };
    let aliases = words
        .map(|a| check_label("alias", a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Identity {
        service,
        style,
        aliases,
    })
}

/// Checks an instance id: printable, no spaces, at most [`MAX_INSTANCE_ID_LEN`] bytes.
///
/// # Errors
/// What is wrong with it.
pub fn check_instance_id(id: &str) -> Result<String, String> {
    let id = id.trim();
    if id.is_empty() || id.len() > MAX_INSTANCE_ID_LEN {
        return Err(format!(
            "instance id {id:?} must have 1 to {MAX_INSTANCE_ID_LEN} characters"
        ));
    }
    if !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "instance id {id:?} may only hold printable ASCII without spaces"
        ));
    }
    Ok(id.to_owned())
}

/// Validates `[naming]`; relative paths are resolved against `base_dir`. Problems go to `errs`, and
/// then `None` is returned.
pub(crate) fn validate(
    r: &RawNaming,
    writers: &[WriterConfig],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<NamingConfig> {
    let before = errs.len();
    let npath = [Key("naming")];
    let at = |key: &'static str| with(&npath, &[Key(key)]);
    let dns = match writers.iter().find(|w| w.name == r.writer) {
        Some(WriterConfig {
            kind: WriterKind::Rfc2136(c),
            ..
        }) => Some(c.clone()),
        Some(_) => {
            errs.at(
                &at("writer"),
                format!(
                    "writer {:?} is not of type \"rfc2136\": naming needs a DNS primary that takes UPDATEs with prerequisites",
                    r.writer
                ),
            );
            None
        }
        None => {
            errs.at(
                &at("writer"),
                format!(
                    "no [[writer]] named {:?}; add an rfc2136 writer for the naming zone's primary",
                    r.writer
                ),
            );
            None
        }
    };
    let zone = normalize_name(&r.zone)
        .map_err(|m| errs.at(&at("zone"), format!("zone {:?}: {m}", r.zone)))
        .ok();
    let mut identity = None;
    if let Some(file) = &r.identity_file {
        let p = base_dir.join(file);
        match std::fs::read_to_string(&p) {
            Ok(text) => match parse_identity_line(&text) {
                Ok(i) => identity = Some(i),
                Err(m) => errs.at(&at("identity_file"), format!("{}: {m}", p.display())),
            },
            Err(e) => errs.at(
                &at("identity_file"),
                format!("cannot read {}: {e}", p.display()),
            ),
        }
    }
    if let Some(s) = &r.service {
        match check_label("service", s) {
            Ok(service) => {
                let base = identity.take();
                identity = Some(Identity {
                    service,
                    style: base.as_ref().map_or(Style::Iterative, |b| b.style),
                    aliases: base.map(|b| b.aliases).unwrap_or_default(),
                });
            }
            Err(m) => errs.at(&at("service"), m),
        }
    }
    if let Some(i) = identity.as_mut() {
        if let Some(style) = r.style {
            i.style = style;
        }
        if !r.aliases.is_empty() {
            i.aliases.clear();
        }
        for (n, a) in r.aliases.iter().enumerate() {
            match check_label("alias", a) {
                Ok(a) => i.aliases.push(a),
                Err(m) => errs.at(&with(&npath, &[Key("aliases"), Index(n)]), m),
            }
        }
    } else if r.style.is_some() || !r.aliases.is_empty() {
        let key = if r.style.is_some() {
            "style"
        } else {
            "aliases"
        };
        errs.at(
            &at(key),
            format!("{key} needs a service: set service = \"NAME\" or identity_file"),
        );
    }
    if let Some(i) = &identity {
        for a in &i.aliases {
            if crate::naming::model::is_generated(a) {
                errs.at(
                    &at("aliases"),
                    format!("alias {a:?} looks like a generated name (NAME-N, NAME-master, NAME-slave-N); choose another"),
                );
            }
        }
    }
    let instance_id = r.instance_id.as_ref().and_then(|id| {
        check_instance_id(id)
            .map_err(|m| errs.at(&at("instance_id"), m))
            .ok()
    });
    let mut addresses = Vec::new();
    for (n, a) in r.addresses.iter().enumerate() {
        match a.trim().parse::<IpAddr>() {
            Ok(ip) => addresses.push(ip),
            Err(_) => errs.at(
                &with(&npath, &[Key("addresses"), Index(n)]),
                format!("{a:?} is not an IP address"),
            ),
        }
    }
    let ttl = r.ttl.unwrap_or(DEFAULT_NAMING_TTL);
    if ttl == 0 || ttl > 86_400 {
        errs.at(&at("ttl"), format!("ttl {ttl} must be 1 to 86400 seconds"));
    }
    let renew_interval = r.renew_interval.unwrap_or(DEFAULT_RENEW_INTERVAL);
    let release_after = r.release_after.unwrap_or(DEFAULT_RELEASE_AFTER);
    if renew_interval < Duration::from_millis(100) {
        errs.at(
            &at("renew_interval"),
            "renew_interval must be at least 100ms",
        );
    }
    if release_after < Duration::from_secs(1) {
        errs.at(
            &at("release_after"),
            "release_after must be at least 1s (leases are stamped in whole seconds)",
        );
    } else if release_after <= renew_interval * 2 {
        errs.at(
            &at("release_after"),
            format!(
                "release_after ({}) must be more than twice renew_interval ({}): otherwise one late renewal frees a live node's name",
                humantime::format_duration(release_after),
                humantime::format_duration(renew_interval)
            ),
        );
    }
    let hosts_interval = r.hosts_interval.unwrap_or(DEFAULT_HOSTS_INTERVAL);
    if hosts_interval < Duration::from_millis(100) {
        errs.at(
            &at("hosts_interval"),
            "hosts_interval must be at least 100ms",
        );
    }
    let hosts_file = base_dir.join(r.hosts_file.as_deref().unwrap_or(DEFAULT_HOSTS_FILE));
    if let Some(dir) = hosts_file.parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        errs.at(
            &if r.hosts_file.is_some() {
                at("hosts_file")
            } else {
                npath.to_vec()
            },
            format!(
                "directory {} does not exist; create it or fix hosts_file",
                dir.display()
            ),
        );
    }
    let hosts_prefix_file = r.hosts_prefix_file.as_ref().map(|p| base_dir.join(p));
    if let Some(p) = &hosts_prefix_file
        && let Err(m) = super::hosts::read_prefix(p)
    {
        errs.at(&at("hosts_prefix_file"), m);
    }
    if errs.len() > before {
        return None;
    }
    Some(NamingConfig {
        writer: r.writer.clone(),
        dns: dns?,
        zone: zone?,
        identity,
        instance_id,
        instance_id_file: base_dir.join(
            r.instance_id_file
                .as_deref()
                .unwrap_or(DEFAULT_INSTANCE_ID_FILE),
        ),
        addresses,
        ttl,
        renew_interval,
        release_after,
        hosts_file,
        hosts_prefix_file,
        hosts_backup: r.hosts_backup.unwrap_or(true),
        hosts_interval,
        hostname_file: base_dir.join(r.hostname_file.as_deref().unwrap_or(DEFAULT_HOSTNAME_FILE)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aerostat_identity_lines() {
        let i = parse_identity_line("# comment\n\nDB masterful primary-db  \n").unwrap();
        assert_eq!(i.service, "db");
        assert_eq!(i.style, Style::Masterful);
        assert_eq!(i.aliases, vec!["primary-db".to_owned()]);
        assert_eq!(parse_identity_line("web").unwrap().style, Style::Iterative);
        assert!(
            parse_identity_line("web roundrobin")
                .unwrap_err()
                .contains("iterative")
        );
        assert!(parse_identity_line("we_b").is_err());
        assert!(parse_identity_line("  \n# only\n").is_err());
    }

    #[test]
    fn instance_ids_are_printable_words() {
        assert_eq!(check_instance_id(" abc-1\n").unwrap(), "abc-1");
        assert!(check_instance_id("a b").is_err());
        assert!(check_instance_id("").is_err());
        assert!(check_instance_id(&"x".repeat(129)).is_err());
    }
}
