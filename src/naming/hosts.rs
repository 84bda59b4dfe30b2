//! `hosts-sync`: every name of the naming zone in a marked section of a hosts file, by the `hosts`
//! writer's file rules ([`crate::act::file`]): every byte outside the section stays as it is; the
//! optional legacy prefix file comes first inside it; the previous content goes to `PATH.bak`; the
//! new file is written beside the old one, fsynced, renamed over it only if the file is still the
//! version read, and the directory fsynced; all under the path's lock (`flock` on `PATH.lock`, the
//! same lock the `hosts` writer takes). A crash at any point leaves the old file or the new one.
//!
//! The section has its own markers, `# BEGIN rrguard-naming` … `# END rrguard-naming`, so it can
//! share a file with the `hosts` writer's `# BEGIN rrguard` section without either touching the
//! other's lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::act::file::{self, FileLock, Identity, Staged};
use crate::act::{Resources, WriteError};

/// First line of the naming section.
pub const BEGIN: &str = "# BEGIN rrguard-naming";
/// Last line of the naming section.
pub const END: &str = "# END rrguard-naming";
/// How long `hosts-sync` waits for the file's lock.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how the section is kept.
#[derive(Debug, Clone)]
pub struct HostsTarget {
    /// The hosts file.
    pub path: PathBuf,
    /// Legacy lines that go first in the section.
    pub prefix_file: Option<PathBuf>,
    /// Keep `PATH.bak`.
    pub backup: bool,
}

/// The prefix file's bytes, ending with a line break, checked to hold no section marker.
///
/// # Errors
/// What is wrong, naming the file (and line).
pub fn read_prefix(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the prefix file {}: {e}", path.display()))?;
    for (n, (_, line)) in file::lines(&bytes).enumerate() {
        let text = String::from_utf8_lossy(line);
        let t = text.trim_start();
        if t.starts_with(BEGIN) || t.starts_with(END) {
            return Err(format!(
                "{}:{}: the prefix file holds a `{}` line; remove it (rrguard writes the section markers)",
                path.display(),
                n + 1,
                text.trim()
            ));
        }
    }
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    Ok(bytes)
}

/// `old` (the file's bytes, empty when it does not exist) with the section holding `prefix`, then
/// `lines`; every byte outside the section as it was. A file without the section gets it appended.
///
/// # Errors
/// [`WriteError::Rejected`] naming `FILE:LINE` for broken markers.
pub fn render(
    old: &[u8],
    path: &Path,
    zone: &str,
    prefix: &[u8],
    lines: &str,
) -> Result<Vec<u8>, WriteError> {
    let section = file::find_section(old, BEGIN, END, path)?;
    let (before, after) = match section {
        Some(s) => (&old[..s.start], &old[s.end..]),
        None => (old, &b""[..]),
    };
    let mut out = before.to_vec();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(
        format!("{BEGIN}\n# Written by `rrguard naming hosts-sync` from zone {zone}; this section is rewritten.\n")
            .as_bytes(),
    );
    out.extend_from_slice(prefix);
    out.extend_from_slice(lines.as_bytes());
    out.extend_from_slice(format!("{END}\n").as_bytes());
    out.extend_from_slice(after);
    Ok(out)
}

/// A new version of the hosts file, written and fsynced beside it, not yet renamed into place.
#[derive(Debug)]
pub struct Prepared {
    staged: Staged,
    identity: Option<Identity>,
}

impl Prepared {
    /// Where the new version waits.
    pub fn staged_path(&self) -> &Path {
        self.staged.path()
    }

    /// Renames it over the file if the file is still the version read, then fsyncs the directory.
    ///
    /// # Errors
    /// [`WriteError::Conflict`] when the file changed since it was read; I/O classifications.
    pub fn commit(self) -> Result<(), WriteError> {
        self.staged.commit(self.identity)
    }
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// The file already held this section: nothing written (its mtime stays).
    Unchanged,
    /// The new content was written.
    Written,
    /// Dry run: the content that would be written.
    WouldWrite(Vec<u8>),
}

/// Reads the file, renders the section and, unless nothing changes, keeps the backup and stages the
/// new version (without renaming it). `None` when the file already holds this content; `Err` with
/// the would-be content on `dry_run` is not used: see [`sync`]. Call under the path's lock.
///
/// # Errors
/// Broken markers, an unreadable prefix file, I/O classifications.
pub fn prepare(
    target: &HostsTarget,
    zone: &str,
    lines: &str,
) -> Result<Option<Prepared>, WriteError> {
    match plan(target, zone, lines)? {
        (None, _, _) => Ok(None),
        (Some(new), old, identity) => {
            if target.backup
                && let Some(old) = &old
            {
                Staged::write_backup(&target.path, old)?;
            }
            Ok(Some(Prepared {
                staged: Staged::write(&target.path, &new)?,
                identity,
            }))
        }
    }
}

/// The new content (`None`: unchanged), the old bytes and the identity read.
type Plan = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Identity>);

fn plan(target: &HostsTarget, zone: &str, lines: &str) -> Result<Plan, WriteError> {
    let snap = file::snapshot(&target.path)?;
    let prefix = match &target.prefix_file {
        Some(p) => read_prefix(p).map_err(WriteError::Rejected)?,
        None => Vec::new(),
    };
    let old = snap.bytes.clone().unwrap_or_default();
    let new = render(&old, &target.path, zone, &prefix, lines)?;
    let changed = snap.bytes.as_deref() != Some(new.as_slice());
    Ok((changed.then_some(new), snap.bytes, snap.identity))
}

/// Keeps the section of `target` holding `lines` (the hosts lines of the zone `zone`).
///
/// # Errors
/// As [`prepare`] and [`Prepared::commit`]; [`WriteError::Transient`] when the lock is held longer
/// than [`LOCK_TIMEOUT`].
pub async fn sync(
    target: &HostsTarget,
    zone: &str,
    lines: String,
    dry_run: bool,
) -> Result<Synced, WriteError> {
    let resources = Resources::new(None);
    let _locked = FileLock::of(&resources, &target.path)
        .lock(&target.path, LOCK_TIMEOUT)
        .await?;
    let (target, zone) = (target.clone(), zone.to_owned());
    file::blocking(move || {
        if dry_run {
            return Ok(match plan(&target, &zone, &lines)?.0 {
                Some(new) => Synced::WouldWrite(new),
                None => Synced::Unchanged,
            });
        }
        match prepare(&target, &zone, &lines)? {
            None => Ok(Synced::Unchanged),
            Some(p) => p.commit().map(|()| Synced::Written),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_and_everything_else_kept() {
        let old = b"127.0.0.1 localhost\r\n# BEGIN rrguard\n10.0.0.1\tw\t# ttl=3\n# END rrguard\n# BEGIN rrguard-naming\nstale\n# END rrguard-naming\n::1 ip6\n";
        let out = render(
            old,
            Path::new("/h"),
            "nodes.test",
            b"10.9.9.9 legacy\n",
            "192.0.2.1\tsvc-0.nodes.test svc-0\n",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "127.0.0.1 localhost\r\n# BEGIN rrguard\n10.0.0.1\tw\t# ttl=3\n# END rrguard\n# BEGIN rrguard-naming\n# Written by `rrguard naming hosts-sync` from zone nodes.test; this section is rewritten.\n10.9.9.9 legacy\n192.0.2.1\tsvc-0.nodes.test svc-0\n# END rrguard-naming\n::1 ip6\n"
        );
        let broken = render(b"# END rrguard-naming\n", Path::new("/h"), "z", b"", "");
        assert!(matches!(broken, Err(WriteError::Rejected(m)) if m.contains("/h:1")));
    }
}
