//! The `zonefile` writer: renders a whole zone file, edge-manager style, and has the DNS server load it.
//!
//! **The file.** The static part comes from the configuration — a generated header (`$ORIGIN`, `$TTL`,
//! SOA, NS) plus an `include` file of static records copied in, or the operator's `template` with
//! `{{serial}}` and `{{records}}` ([`config::ZoneSource`]). The managed A, AAAA and CNAME records sit
//! between `; BEGIN rrguard` and `; END rrguard` ([`zone`]). The file is the state: every read parses
//! it (hickory-proto's RFC 1035 parser), so an operator's edit of the managed lines is seen, and every
//! write keeps the managed records of every other name as the file holds them. Several services of one
//! zone share one file: their writes are serialised by the path's lock.
//!
//! **A write** ([`ZonefileWriter::apply`]), all under the path's lock ([`FileLock`]: a mutex shared by
//! every writer of the path in this process, then `flock` on `PATH.lock`):
//! 1. read and parse the file; check the change's precondition against it (compare-and-swap: a change
//!    made since the service core read, by anyone, is a [`WriteError::Conflict`]);
//! 2. render the new file; if it equals the file with its current serial, stop — no write, no reload,
//!    the mtime stays;
//! 3. choose a serial that increases (RFC 1982) past the file's and past every serial this process wrote
//!    to the path (so a reload that failed after the server had loaded the file is still overtaken);
//! 4. write a temporary file beside the old one and fsync it; run `check_command` on it (non-zero exit:
//!    [`WriteError::Rejected`] quoting its output; the old file stays);
//! 5. rename it over the old file, unless the file changed since step 1 (then `Conflict`), and fsync
//!    the directory;
//! 6. run `reload_command`. If it fails the old file is put back (or the new one removed) and the write
//!    is [`WriteError::Transient`]: the file then still says what the server serves, so the retry
//!    writes and reloads again instead of finding nothing to do.
//!
//! **What compare-and-swap covers.** Other rrguard writers of the path (this process or another, by
//! the lock), and anyone else who edits the file between the service core's read and the write (the
//! precondition is checked against the file read under the lock, and the file's identity — inode,
//! size, mtime — once more just before the rename). An editor that takes no lock can still slip
//! between that last check and the rename, a window of one system call; `flock PATH.lock` before an
//! edit closes it.
//!
//! **Per node.** Each node renders its own file for its own server ([`Capabilities::per_node`]).

pub mod command;
pub mod config;
pub mod zone;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;

use super::file::{self, FileLock, Snapshot, Staged, blocking};
use super::{
    Capabilities, Family, Precondition, Published, RecordChange, Resources, WriteError, Writer,
};
use command::Failure;
use config::{SerialStyle, ZonefileConfig};
use zone::{Current, Frame, NameRecords};

/// The highest serial this process wrote to one path (shared like its lock).
#[derive(Debug, Default)]
struct SerialMemory(Mutex<Option<u32>>);

/// The zone file writer.
pub struct ZonefileWriter {
    name: String,
    config: Arc<ZonefileConfig>,
    lock: Arc<FileLock>,
    serials: Arc<SerialMemory>,
}

impl ZonefileWriter {
    /// A writer of `config.path`, sharing the path's lock and serial memory with every other writer of
    /// that path built from `resources`. Touches no file until the first read or write.
    pub fn new(name: &str, config: ZonefileConfig, resources: &Resources) -> Self {
        let serials = resources.get_or_insert_with(
            &format!("zonefile-serial:{}", config.path.display()),
            SerialMemory::default,
        );
        ZonefileWriter {
            name: name.to_owned(),
            lock: FileLock::of(resources, &config.path),
            config: Arc::new(config),
            serials,
        }
    }

    /// Refuses a name outside this writer's zone, or a service that names another zone.
    fn check_zone(&self, fqdn: &str, zone: &str) -> Result<String, WriteError> {
        let mine = &self.config.zone;
        let zone = normalized(zone);
        if &zone != mine {
            return Err(WriteError::Rejected(format!(
                "writer {:?} writes zone {mine} to {}, but the service is in zone {zone}; set the service's zone or use another writer",
                self.name,
                self.config.path.display()
            )));
        }
        let fqdn = normalized(fqdn);
        if fqdn != zone && !fqdn.ends_with(&format!(".{zone}")) {
            return Err(WriteError::Rejected(format!(
                "{fqdn} is not in zone {zone}"
            )));
        }
        Ok(fqdn)
    }

    /// Runs the check command on the staged file.
    async fn check(&self, staged: &Staged) -> Result<(), WriteError> {
        let Some(argv) = &self.config.check_command else {
            return Ok(());
        };
        let argv = command::expand(argv, &self.config.zone, staged.path());
        command::run(&argv, self.config.timeout)
            .await
            .map_err(|f| match f {
                Failure::CannotStart(m) => WriteError::Rejected(format!("check_command: {m}")),
                Failure::Exit(m) => WriteError::Rejected(format!(
                    "check_command refused the new zone file, {} stays as it was: {m}",
                    self.config.path.display()
                )),
                Failure::TimedOut(m) => WriteError::Transient(format!("check_command: {m}")),
            })
    }

    /// Runs the reload command; on failure puts `before` back.
    async fn reload(&self, before: Snapshot) -> Result<(), WriteError> {
        let Some(argv) = &self.config.reload_command else {
            return Ok(());
        };
        let argv = command::expand(argv, &self.config.zone, &self.config.path);
        let failure = match command::run(&argv, self.config.timeout).await {
            Ok(()) => return Ok(()),
            Err(f) => f,
        };
        let path = self.config.path.clone();
        let restored = blocking(move || match &before.bytes {
            Some(old) => Staged::write(&path, old)?.replace(),
            None => file::remove(&path),
        })
        .await;
        let undo = match restored {
            Ok(()) => {
                "the previous file is back in place, and the write will be retried".to_owned()
            }
            Err(e) => format!("putting the previous file back failed too: {e}"),
        };
        Err(match failure {
            Failure::CannotStart(m) => WriteError::Rejected(format!("reload_command: {m}; {undo}")),
            Failure::Exit(m) | Failure::TimedOut(m) => {
                WriteError::Transient(format!("reload_command: {m}; {undo}"))
            }
        })
    }
}

/// Lower case with a trailing dot.
fn normalized(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// Reads `path` as a zone file's text; `None` when there is no file.
fn read_text(path: &Path) -> Result<(Snapshot, Option<String>), WriteError> {
    let snap = file::snapshot(path)?;
    let text = match &snap.bytes {
        None => None,
        Some(b) => Some(String::from_utf8(b.clone()).map_err(|e| {
            WriteError::Rejected(format!(
                "{} is not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ))
        })?),
    };
    Ok((snap, text))
}

/// Whether serial `a` is greater than `b` in RFC 1982 serial number arithmetic (SERIAL_BITS = 32).
pub fn serial_gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < (1 << 31)
}

/// The serial to write now: the clock's in `style` if that is greater than `floor` (as a number, so an
/// operator never sees it go down, and in RFC 1982 arithmetic, as secondaries compare), else
/// `floor + 1`, which is always greater in RFC 1982 arithmetic (4294967295 + 1 wraps to 0).
pub fn next_serial(style: SerialStyle, now: SystemTime, floor: Option<u32>) -> u32 {
    let candidate = match style {
        SerialStyle::Unixtime => now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32),
        SerialStyle::Date => {
            let day: String = humantime::format_rfc3339_seconds(now)
                .to_string()
                .chars()
                .take(10)
                .filter(char::is_ascii_digit)
                .collect();
            day.parse::<u32>().map_or(0, |d| d.saturating_mul(100))
        }
    };
    match floor {
        Some(f) if candidate <= f || !serial_gt(candidate, f) => f.wrapping_add(1),
        _ => candidate,
    }
}

/// The greater of two serials (RFC 1982), either possibly unknown.
fn max_serial(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if serial_gt(y, x) { y } else { x }),
        (x, y) => x.or(y),
    }
}

/// The file's part of one write: everything decided under the lock before anything is written.
struct Prepared {
    before: Snapshot,
    /// The new text and its serial; `None`: the file already says this, nothing to write.
    write: Option<(String, u32)>,
}

/// Steps 1–3 of a write (see the module documentation), on the blocking pool.
fn prepare(
    config: &ZonefileConfig,
    change: &RecordChange,
    fqdn: &str,
    floor: Option<u32>,
) -> Result<Prepared, WriteError> {
    let path = &config.path;
    let rejected = WriteError::Rejected;
    let frame = Frame::load(&config.source, &config.zone).map_err(rejected)?;
    let (before, text) = read_text(path)?;
    let current = match &text {
        Some(t) => Current::parse(t, &config.zone, path, &frame).map_err(rejected)?,
        None => Current::default(),
    };
    let now = current.all.get(fqdn).cloned().unwrap_or_default();
    if change.precondition == Precondition::NameNotInUse && current.in_use.contains(fqdn) {
        return Err(WriteError::Conflict(format!(
            "{fqdn} is in use in {}",
            path.display()
        )));
    }
    file::check_precondition(&now.published(), change).map_err(WriteError::Conflict)?;
    refuse_impossible(&current, change, fqdn, path)?;
    let mut managed = current.managed.clone();
    let mine = managed.entry(fqdn.to_owned()).or_default();
    mine.addresses = file::changed(&mine.addresses, change);
    if *mine == NameRecords::default() {
        managed.remove(fqdn);
    }
    if let (Some(serial), Some(old)) = (current.serial, &text)
        && zone::render(&frame, serial, &managed) == *old
    {
        return Ok(Prepared {
            before,
            write: None,
        });
    }
    let serial = next_serial(
        config.serial,
        SystemTime::now(),
        max_serial(current.serial, floor),
    );
    Ok(Prepared {
        before,
        write: Some((zone::render(&frame, serial, &managed), serial)),
    })
}

/// Refuses a change the file cannot take: addresses beside a CNAME, or a touched RRset that the
/// include file or the template holds (rrguard would have to edit those).
fn refuse_impossible(
    current: &Current,
    change: &RecordChange,
    fqdn: &str,
    path: &Path,
) -> Result<(), WriteError> {
    let adds = !change.add.is_empty() || !change.rettl.is_empty();
    if let Some((target, _)) = current.all.get(fqdn).and_then(|n| n.cname.as_ref())
        && adds
    {
        return Err(WriteError::Rejected(format!(
            "{fqdn} is a CNAME to {target} in {}: no other record may sit beside a CNAME (RFC 1034 §3.6.2, RFC 2181 §10.1); remove the CNAME or stop managing the name",
            path.display()
        )));
    }
    if let Some(fixed) = current.fixed.get(fqdn) {
        for family in change.families() {
            if fixed.addresses.keys().any(|ip| Family::of(ip) == family) {
                return Err(WriteError::Rejected(format!(
                    "{fqdn} has {family} records in the include file or template of {}; rrguard cannot change those: remove them there",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Writer for ZonefileWriter {
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
        let fqdn = self.check_zone(fqdn, zone)?;
        let config = self.config.clone();
        blocking(move || {
            let (_, text) = read_text(&config.path)?;
            let Some(text) = text else {
                return Ok(Published::default());
            };
            zone::published(&text, &config.zone, &config.path, &fqdn).map_err(WriteError::Rejected)
        })
        .await
    }

    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        let fqdn = self.check_zone(&change.fqdn, &change.zone)?;
        let _locked = self
            .lock
            .lock(&self.config.path, self.config.timeout)
            .await?;
        let floor = *self.serials.0.lock().unwrap_or_else(|e| e.into_inner());
        let (config, owned) = (self.config.clone(), change.clone());
        let prepared = blocking(move || prepare(&config, &owned, &fqdn, floor)).await?;
        let Some((text, serial)) = prepared.write else {
            return Ok(());
        };
        let path: PathBuf = self.config.path.clone();
        let staged = blocking(move || Staged::write(&path, text.as_bytes())).await?;
        self.check(&staged).await?;
        let identity = prepared.before.identity;
        blocking(move || staged.commit(identity)).await?;
        {
            let mut memory = self.serials.0.lock().unwrap_or_else(|e| e.into_inner());
            *memory = max_serial(*memory, Some(serial));
        }
        self.reload(prepared.before).await
    }
}

#[cfg(test)]
mod tests;
