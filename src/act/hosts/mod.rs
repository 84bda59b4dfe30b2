//! The `hosts` writer: keeps rrguard's section of a hosts file (`/etc/hosts` by default), for hosts
//! that resolve names from it.
//!
//! **The section.** rrguard owns the lines between `# BEGIN rrguard` and `# END rrguard`; every byte
//! outside them stays as it is (line endings, comments, bytes that are not UTF-8 included). A file
//! without the section gets it appended; a file without the file is created (mode 0644); a missing
//! directory is [`WriteError::Rejected`]. Inside the section come first the content of the optional
//! `prefix_file` (a legacy list kept with the managed names, read again on every write), then one line
//! per address and name:
//!
//! ```text
//! # BEGIN rrguard
//! # Written by rrguard: lines ending in "# ttl=N" are its records; the rest of this section is rewritten.
//! 192.0.2.10<TAB>www.example.com<TAB># ttl=30
//! 2001:db8::10<TAB>www.example.com<TAB># ttl=30
//! # END rrguard
//! ```
//!
//! **TTLs.** A hosts file has none; rrguard keeps each record's TTL in the trailing `# ttl=N` comment
//! (resolvers ignore comments) so that what it reads back is what it wrote. A line in the section is a
//! managed record exactly when it ends in that comment; an operator may edit or add such lines, and
//! rrguard reads them back. Other lines in the section are replaced by the prefix file's content on the
//! next write. **CNAMEs** cannot be expressed: [`Published::cname`] is always `None`.
//!
//! **Refusals.** Broken markers (a `BEGIN` without `END`, an `END` without `BEGIN`, two sections) and
//! a managed name that is also defined outside rrguard's records (elsewhere in the file, or in the
//! prefix file) are [`WriteError::Rejected`] naming `FILE:LINE`: resolvers would answer from that
//! other line, and rrguard's changes would not show.
//!
//! **A write** happens under the path's lock (the same as the `zonefile` writer's: a mutex shared by
//! the process's writers of the path, then `flock` on `PATH.lock`): read the file, check the change's
//! precondition against it (compare-and-swap; see [`crate::act::zonefile`] for what that covers and
//! what an editor that takes no lock can still do), render; if the bytes are unchanged nothing is
//! written (the mtime stays); else `PATH.bak` receives the previous content (`backup = true`, the
//! default) and the new file replaces the old one atomically, only if the file is still the version
//! read. Each node keeps its own hosts file ([`Capabilities::per_node`]).

pub mod config;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::file::{self, FileLock, Section, Staged, blocking};
use super::{Capabilities, Published, RecordChange, Resources, WriteError, Writer};
use config::{HostsConfig, read_prefix};

/// First line of rrguard's section.
pub const BEGIN: &str = "# BEGIN rrguard";
/// Last line of rrguard's section.
pub const END: &str = "# END rrguard";
/// The line rrguard writes after [`BEGIN`], saying what the section is.
const NOTE: &str = "# Written by rrguard: lines ending in \"# ttl=N\" are its records; the rest of this section is rewritten.";

/// Managed records by name (lower case, no trailing dot): address → TTL.
type Managed = BTreeMap<String, BTreeMap<IpAddr, u32>>;

/// The hosts file writer.
pub struct HostsWriter {
    name: String,
    config: Arc<HostsConfig>,
    lock: Arc<FileLock>,
}

impl HostsWriter {
    /// A writer of `config.path`, sharing the path's lock with every other writer of it built from
    /// `resources`. Touches no file until the first read or write.
    pub fn new(name: &str, config: HostsConfig, resources: &Resources) -> Self {
        HostsWriter {
            name: name.to_owned(),
            lock: FileLock::of(resources, &config.path),
            config: Arc::new(config),
        }
    }
}

/// How a name appears in a hosts file: lower case, without the trailing dot.
fn host_name(fqdn: &str) -> String {
    fqdn.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Refuses a name outside the service's zone, as the DNS writers do.
fn check_zone(fqdn: &str, zone: &str) -> Result<String, WriteError> {
    let (name, zone) = (host_name(fqdn), host_name(zone));
    if name != zone && !name.ends_with(&format!(".{zone}")) {
        return Err(WriteError::Rejected(format!(
            "{fqdn} is not in zone {zone}"
        )));
    }
    Ok(name)
}

/// A managed record line, `ADDR NAME… # ttl=N`: the address, the names and the TTL.
fn managed_line(line: &[u8]) -> Option<(IpAddr, Vec<String>, u32)> {
    let line = std::str::from_utf8(line).ok()?;
    let (data, comment) = line.split_once('#')?;
    let ttl = comment.trim().strip_prefix("ttl=")?.parse().ok()?;
    let mut fields = data.split_whitespace();
    let ip = fields.next()?.parse().ok()?;
    let names: Vec<String> = fields.map(host_name).collect();
    (!names.is_empty()).then_some((ip, names, ttl))
}

/// The names a line that is not a managed record defines (none for comments and blank lines).
fn names_on(line: &[u8]) -> Vec<String> {
    let line = String::from_utf8_lossy(line);
    let data = line.split('#').next().unwrap_or_default();
    data.split_whitespace().skip(1).map(host_name).collect()
}

/// A hosts file split around rrguard's section.
struct Parsed<'a> {
    bytes: &'a [u8],
    section: Option<Section>,
    managed: Managed,
}

impl<'a> Parsed<'a> {
    /// Finds the section and its managed records.
    fn new(bytes: &'a [u8], path: &Path) -> Result<Parsed<'a>, WriteError> {
        let section = file::find_section(bytes, BEGIN, END, path)?;
        let mut managed = Managed::new();
        if let Some(s) = section {
            for (_, line) in file::lines(&bytes[s.body_start..s.body_end]) {
                if let Some((ip, names, ttl)) = managed_line(line) {
                    for name in names {
                        managed.entry(name).or_default().insert(ip, ttl);
                    }
                }
            }
        }
        Ok(Parsed {
            bytes,
            section,
            managed,
        })
    }

    /// The first line (1-based) outside the section that defines `name`. (Inside, every line is
    /// rewritten: the prefix file's are checked in the prefix file.)
    fn defined_elsewhere(&self, name: &str) -> Option<usize> {
        file::lines(self.bytes)
            .enumerate()
            .find(|(_, (start, line))| {
                let inside = self
                    .section
                    .is_some_and(|s| *start >= s.start && *start < s.end);
                !inside && names_on(line).iter().any(|n| n == name)
            })
            .map(|(n, _)| n + 1)
    }

    /// The file with the section holding `prefix` and `managed`; every byte outside it as it was.
    fn render(&self, prefix: &[u8], managed: &Managed) -> Vec<u8> {
        let (before, after) = match self.section {
            Some(s) => (&self.bytes[..s.start], &self.bytes[s.end..]),
            None => (self.bytes, &b""[..]),
        };
        let mut out = before.to_vec();
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(format!("{BEGIN}\n{NOTE}\n").as_bytes());
        out.extend_from_slice(prefix);
        for (name, records) in managed {
            for (ip, ttl) in records {
                out.extend_from_slice(format!("{ip}\t{name}\t# ttl={ttl}\n").as_bytes());
            }
        }
        out.extend_from_slice(format!("{END}\n").as_bytes());
        out.extend_from_slice(after);
        out
    }
}

/// A write, on the blocking pool, under the lock.
fn apply_now(config: &HostsConfig, change: &RecordChange, name: &str) -> Result<(), WriteError> {
    let path = &config.path;
    let snap = file::snapshot(path)?;
    let bytes = snap.bytes.clone().unwrap_or_default();
    let parsed = Parsed::new(&bytes, path)?;
    let prefix = match &config.prefix_file {
        Some(p) => read_prefix(p).map_err(WriteError::Rejected)?,
        None => Vec::new(),
    };
    let elsewhere = parsed
        .defined_elsewhere(name)
        .map(|n| (path.as_path(), n))
        .or_else(|| {
            let p = config.prefix_file.as_deref()?;
            let n =
                file::lines(&prefix).position(|(_, l)| names_on(l).iter().any(|n| n == name))?;
            Some((p, n + 1))
        });
    if let Some((file, line)) = elsewhere {
        return Err(WriteError::Rejected(format!(
            "{}:{line}: {name} is defined here, outside rrguard's records; resolvers would answer from this line, so rrguard's changes would not show: remove the name there",
            file.display()
        )));
    }
    let records = parsed.managed.get(name).cloned().unwrap_or_default();
    let current = Published {
        records,
        cname: None,
        weights: Default::default(),
    };
    file::check_precondition(&current, change).map_err(WriteError::Conflict)?;
    let mut managed = parsed.managed.clone();
    let next = file::changed(&current.records, change);
    if next.is_empty() {
        managed.remove(name);
    } else {
        managed.insert(name.to_owned(), next);
    }
    let new = parsed.render(&prefix, &managed);
    if snap.bytes.as_deref() == Some(new.as_slice()) {
        return Ok(());
    }
    if config.backup
        && let Some(old) = &snap.bytes
    {
        Staged::write_backup(path, old)?;
    }
    Staged::write(path, &new)?.commit(snap.identity)
}

#[async_trait]
impl Writer for HostsWriter {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            compare_and_swap: true,
            read_back: true,
            per_node: true,
            ..Capabilities::default()
        }
    }

    async fn read(&self, fqdn: &str, zone: &str) -> Result<Published, WriteError> {
        let name = check_zone(fqdn, zone)?;
        let config = self.config.clone();
        blocking(move || {
            let snap = file::snapshot(&config.path)?;
            let bytes = snap.bytes.unwrap_or_default();
            let parsed = Parsed::new(&bytes, &config.path)?;
            Ok(Published {
                records: parsed.managed.get(&name).cloned().unwrap_or_default(),
                cname: None,
                weights: Default::default(),
            })
        })
        .await
    }

    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        let name = check_zone(&change.fqdn, &change.zone)?;
        let _locked = self
            .lock
            .lock(&self.config.path, self.config.timeout)
            .await?;
        let (config, change) = (self.config.clone(), change.clone());
        blocking(move || apply_now(&config, &change, &name)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &[u8]) -> Result<Parsed<'_>, WriteError> {
        Parsed::new(text, Path::new("/etc/hosts"))
    }

    #[test]
    fn config_defaults_to_etc_hosts_with_a_backup() {
        let text = "[[writer]]\nname = \"h\"\ntype = \"hosts\"\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"h\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n";
        let c = crate::config::parse(Path::new("/nonexistent/rrguard.toml"), text).unwrap();
        let crate::config::WriterKind::Hosts(h) = &c.writers[0].kind else {
            panic!("{c:?}")
        };
        assert_eq!(h.path, Path::new("/etc/hosts"));
        assert!(h.backup && h.prefix_file.is_none());
        assert_eq!(h.timeout, config::DEFAULT_LOCK_TIMEOUT);
        // A prefix file with a marker line is refused at its line.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p"), "10.0.0.1 a\n# END rrguard\n").unwrap();
        let text = text.replace(
            "type = \"hosts\"\n",
            "type = \"hosts\"\nprefix_file = \"p\"\n",
        );
        let err = crate::config::parse(&dir.path().join("rrguard.toml"), &text).unwrap_err();
        assert!(
            err.to_string()
                .contains("p:2: the prefix file holds a `# END rrguard` line"),
            "{err}"
        );
    }

    #[test]
    fn managed_lines_are_the_ones_with_a_ttl_comment() {
        assert_eq!(
            managed_line(b"192.0.2.1\tWWW.example.test.\talias # ttl=30"),
            Some((
                "192.0.2.1".parse().unwrap(),
                vec!["www.example.test".to_owned(), "alias".to_owned()],
                30
            ))
        );
        for other in [
            &b"192.0.2.1 www # a comment"[..],
            b"192.0.2.1 www",
            b"# ttl=30",
            b"not-an-ip www # ttl=30",
            b"192.0.2.1 # ttl=30",
        ] {
            assert_eq!(
                managed_line(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn rendering_keeps_every_byte_outside_the_section() {
        let text = b"127.0.0.1 localhost\r\n# caf\xe9\n# BEGIN rrguard\nold stuff\n192.0.2.9\tx.test\t# ttl=5\n# END rrguard\n::1 ip6-localhost";
        let p = parsed(text).unwrap();
        assert_eq!(
            p.managed["x.test"][&"192.0.2.9".parse::<IpAddr>().unwrap()],
            5
        );
        let mut managed = Managed::new();
        managed.insert(
            "www.example.test".into(),
            [("192.0.2.1".parse().unwrap(), 30)].into_iter().collect(),
        );
        let out = p.render(b"10.0.0.1 legacy\n", &managed);
        let want = b"127.0.0.1 localhost\r\n# caf\xe9\n# BEGIN rrguard\n# Written by rrguard: lines ending in \"# ttl=N\" are its records; the rest of this section is rewritten.\n10.0.0.1 legacy\n192.0.2.1\twww.example.test\t# ttl=30\n# END rrguard\n::1 ip6-localhost";
        assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(want));
        // Without a section, it is appended after a line break the file lacked.
        let out = parsed(b"127.0.0.1 localhost")
            .unwrap()
            .render(b"", &Managed::new());
        assert!(out.starts_with(b"127.0.0.1 localhost\n# BEGIN rrguard\n"));
    }

    #[test]
    fn a_name_defined_outside_the_records_is_found_by_line() {
        let text = b"127.0.0.1 localhost\n# 10.0.0.1 www.example.test\n# BEGIN rrguard\n10.0.0.2 legacy other.example.test\n10.0.0.3 www.example.test # ttl=3\n# END rrguard\n10.0.0.4 alias WWW.example.test.\n";
        let p = parsed(text).unwrap();
        assert_eq!(p.defined_elsewhere("www.example.test"), Some(7));
        assert_eq!(p.defined_elsewhere("localhost"), Some(1));
        // Lines inside the section are rewritten on the next write: they do not count.
        assert_eq!(p.defined_elsewhere("other.example.test"), None);
    }
}
