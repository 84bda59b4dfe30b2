//! Files that file-backed writers (`zonefile`, `hosts`) own: reading, locking, atomic replacement,
//! marked sections, and the change rules the writers share.
//!
//! Contract:
//! - [`snapshot`] reads a file and the identity of the inode it read (device, inode, size, mtime); a
//!   missing file reads as `None`, never as an error.
//! - [`FileLock`] serialises every read-check-write of one path: a mutex shared by every writer of this
//!   process that writes the path (kept in [`Resources`], keyed by path, so several services and
//!   several writer sections share it), then `flock(2)` on `PATH.lock` against other processes
//!   (another rrguard, or an operator's `flock PATH.lock …`).
//! - [`Staged`] replaces a file atomically: a temporary file in the same directory, written and
//!   fsynced, given the mode (and, when the process may, the owner) of the file it replaces, renamed
//!   over it only if the file is still the one that was read, then the directory fsynced so the rename
//!   survives a crash. A reader sees the old file or the new one, never a part.
//!   [`Staged::write_backup`] keeps `PATH.bak`, the previous content, the same way.
//! - [`find_section`] locates a `BEGIN`/`END` marked section and refuses broken markers with
//!   `FILE:LINE`.
//! - [`check_precondition`] and [`changed`] are the change rules of the file writers, the same as
//!   the `memory` writer's: preconditions per touched RRset, TTLs ignored; an RRset that gains or
//!   re-TTLs records takes the change's TTL as a whole (RFC 2181 §5.2).
//!
//! Every I/O error is classified for the service core by [`io_error`]: permission denied and a
//! read-only file system need an operator ([`WriteError::Auth`]); a missing directory, a path that is
//! a directory or a mount point are [`WriteError::Rejected`]; anything else (a full disk, EIO) is
//! [`WriteError::Transient`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::FlockOperation;

use super::{Family, Precondition, Published, RecordChange, Resources, WriteError};

/// Mode of a file created where none existed: readable by everyone (a DNS server reading a zone file
/// runs as another user; every process reads `/etc/hosts`), writable by its owner.
pub const NEW_FILE_MODE: u32 = 0o644;
/// How often a writer tries again to take a lock that another process holds.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// The file-level error of `doing` (`"read"`, `"replace"`, …) on `path`, classified by what fixes it.
pub fn io_error(e: &io::Error, doing: &str, path: &Path) -> WriteError {
    let what = format!("cannot {doing} {}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::PermissionDenied => WriteError::Auth(format!(
            "{what}; run rrguard as a user that may write there, or change the permissions"
        )),
        io::ErrorKind::ReadOnlyFilesystem => {
            WriteError::Auth(format!("{what}; the file system is mounted read-only"))
        }
        io::ErrorKind::NotFound => {
            WriteError::Rejected(format!("{what}; create the directory or fix the path"))
        }
        io::ErrorKind::ResourceBusy => WriteError::Rejected(format!(
            "{what}; the file is a mount point (a container's /etc/hosts is one), and rrguard replaces files by renaming a new one over them"
        )),
        io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory => {
            WriteError::Rejected(format!("{what}; fix the path"))
        }
        _ => WriteError::Transient(what),
    }
}

/// Runs blocking file work off the async runtime's threads.
///
/// # Errors
/// What `f` returns; [`WriteError::Transient`] if the blocking task panicked or was cancelled.
pub async fn blocking<T, F>(f: F) -> Result<T, WriteError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, WriteError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WriteError::Transient(format!("file task failed: {e}")))?
}

/// What identifies one version of a file: a rename gives a new inode, an edit in place a new size or
/// modification time (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Identity {
    fn of(m: &fs::Metadata) -> Self {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

/// A file's content and the identity of the version read; both `None` when it does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The bytes read.
    pub bytes: Option<Vec<u8>>,
    /// The version they came from.
    pub identity: Option<Identity>,
}

/// Reads `path` (following symbolic links) and the identity of what was read.
///
/// # Errors
/// [`io_error`] for anything but a missing file.
pub fn snapshot(path: &Path) -> Result<Snapshot, WriteError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Snapshot {
                bytes: None,
                identity: None,
            });
        }
        Err(e) => return Err(io_error(&e, "read", path)),
    };
    let meta = file.metadata().map_err(|e| io_error(&e, "read", path))?;
    if meta.is_dir() {
        return Err(WriteError::Rejected(format!(
            "{} is a directory; set the path of a file",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| io_error(&e, "read", path))?;
    Ok(Snapshot {
        bytes: Some(bytes),
        identity: Some(Identity::of(&meta)),
    })
}

/// The identity of the file at `path` now, `None` if there is none.
fn identity(path: &Path) -> Result<Option<Identity>, WriteError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(Identity::of(&m))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&e, "inspect", path)),
    }
}

/// The file a write to `path` replaces: the target of a symbolic link, so the link stays.
fn resolved(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The directory holding `path` (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A new version of a file, written and fsynced beside it under a temporary name, not yet in place.
/// Dropping it without [`Staged::commit`] removes the temporary file.
#[derive(Debug)]
pub struct Staged {
    temp: tempfile::TempPath,
    target: PathBuf,
}

impl Staged {
    /// Writes `contents` to a temporary file beside `path` (the file a symbolic link at `path`
    /// points to), with the mode and owner of the current file, or [`NEW_FILE_MODE`] for a new one.
    ///
    /// # Errors
    /// [`io_error`] classifications of what failed.
    pub fn write(path: &Path, contents: &[u8]) -> Result<Staged, WriteError> {
        let target = resolved(path);
        let like = match fs::metadata(&target) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(&e, "inspect", &target)),
        };
        Staged::write_like(target, contents, like.as_ref())
    }

    /// Replaces `PATH.bak` with `previous`, the content `path` had, with `path`'s mode and owner.
    ///
    /// # Errors
    /// As [`Staged::write`] and [`Staged::commit`].
    pub fn write_backup(path: &Path, previous: &[u8]) -> Result<(), WriteError> {
        let target = resolved(path);
        let like = fs::metadata(&target).ok();
        let mut backup = target.clone().into_os_string();
        backup.push(".bak");
        let staged = Staged::write_like(PathBuf::from(backup), previous, like.as_ref())?;
        staged.replace()
    }

    fn write_like(
        target: PathBuf,
        contents: &[u8],
        like: Option<&fs::Metadata>,
    ) -> Result<Staged, WriteError> {
        let dir = parent(&target).to_path_buf();
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".rrguard-tmp")
            .tempfile_in(&dir)
            .map_err(|e| io_error(&e, "create a temporary file in", &dir))?;
        let at = temp.path().to_path_buf();
        let fail = |e: io::Error| io_error(&e, "write", &at);
        temp.write_all(contents).map_err(fail)?;
        let mode = like.map_or(NEW_FILE_MODE, |m| m.mode() & 0o7777);
        fs::set_permissions(&at, fs::Permissions::from_mode(mode)).map_err(fail)?;
        if let Some(m) = like {
            // Keeps a zone file owned by the DNS server's user. Only root may give a file away; for
            // anyone else the new file stays theirs, which is what writing it means.
            let _ = std::os::unix::fs::fchown(temp.as_file(), Some(m.uid()), Some(m.gid()));
        }
        temp.as_file().sync_all().map_err(fail)?;
        Ok(Staged {
            temp: temp.into_temp_path(),
            target,
        })
    }

    /// Where the new version is while staged (for a check command).
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Renames the new version over the file, if the file is still the version `expected` (`None`:
    /// still absent), then fsyncs the directory.
    ///
    /// # Errors
    /// [`WriteError::Conflict`] when the file changed since it was read (the new version is dropped);
    /// [`io_error`] classifications otherwise.
    pub fn commit(self, expected: Option<Identity>) -> Result<(), WriteError> {
        if identity(&self.target)? != expected {
            return Err(WriteError::Conflict(format!(
                "{} changed on disk while rrguard was writing it",
                self.target.display()
            )));
        }
        self.replace()
    }

    /// Renames the new version over the file, whatever it is now, then fsyncs the directory (for
    /// putting back a version the lock holder itself replaced).
    ///
    /// # Errors
    /// [`io_error`] classifications.
    pub fn replace(self) -> Result<(), WriteError> {
        let Staged { temp, target } = self;
        temp.persist(&target)
            .map_err(|e| io_error(&e.error, "replace", &target))?;
        sync_dir(parent(&target))
    }
}

/// Fsyncs a directory, so that a rename in it is durable.
///
/// # Errors
/// [`io_error`] classifications.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(&e, "sync the directory", dir))
}

/// Removes `path`; a missing file is fine.
///
/// # Errors
/// [`io_error`] classifications.
pub fn remove(path: &Path) -> Result<(), WriteError> {
    let target = resolved(path);
    match fs::remove_file(&target) {
        Ok(()) => sync_dir(parent(&target)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&e, "remove", &target)),
    }
}

/// The lock of one path, shared by every writer of this process that writes it.
#[derive(Debug, Default)]
pub struct FileLock {
    inner: Arc<tokio::sync::Mutex<()>>,
}

/// Proof of holding a [`FileLock`] and the `flock` on `PATH.lock`; dropping it releases both.
#[derive(Debug)]
pub struct Locked {
    _process: tokio::sync::OwnedMutexGuard<()>,
    _file: File,
}

impl FileLock {
    /// The lock of `path` among `resources` (made on first use). Paths are compared after symbolic
    /// links are resolved, when the file exists.
    pub fn of(resources: &Resources, path: &Path) -> Arc<FileLock> {
        resources.get_or_insert_with(
            &format!("file-lock:{}", resolved(path).display()),
            FileLock::default,
        )
    }

    /// Waits at most `timeout` for this process's other writers of `path`, then for other processes'
    /// `flock` on `PATH.lock` (created if missing).
    ///
    /// # Errors
    /// [`WriteError::Transient`] when another process holds the lock for longer than `timeout`;
    /// [`io_error`] classifications when the lock file cannot be opened.
    pub async fn lock(&self, path: &Path, timeout: Duration) -> Result<Locked, WriteError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let process = tokio::time::timeout_at(deadline, self.inner.clone().lock_owned())
            .await
            .map_err(|_| {
                WriteError::Transient(format!(
                    "another write of {} took longer than {timeout:?}",
                    path.display()
                ))
            })?;
        let lock_path = lock_path(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_error(&e, "open the lock file", &lock_path))?;
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {
                    return Ok(Locked {
                        _process: process,
                        _file: file,
                    });
                }
                Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {}
                Err(e) => return Err(io_error(&e.into(), "lock", &lock_path)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WriteError::Transient(format!(
                    "another process has held the lock {} for longer than {timeout:?}",
                    lock_path.display()
                )));
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }
}

/// `PATH.lock`: the file whose `flock` guards `path` across processes (`PATH` with symbolic links
/// resolved, so that writers naming one file by two paths take one lock).
pub fn lock_path(path: &Path) -> PathBuf {
    let mut p = resolved(path).into_os_string();
    p.push(".lock");
    PathBuf::from(p)
}

/// Where a marked section lies in a file, as byte offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Start of the `BEGIN` line.
    pub start: usize,
    /// Start of the first line after the `BEGIN` line.
    pub body_start: usize,
    /// Start of the `END` line.
    pub body_end: usize,
    /// Just after the `END` line (and its line break).
    pub end: usize,
}

/// Whether `line` (without its line break) is the marker `marker`, possibly followed by a space and
/// more text (`; BEGIN rrguard: managed records`).
fn is_marker(line: &[u8], marker: &str) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let marker = marker.as_bytes();
    line.starts_with(marker)
        && line[marker.len()..]
            .first()
            .is_none_or(|c| matches!(c, b' ' | b'\t' | b':'))
}

/// The lines of `text` with their start offsets, each without its `\n`.
pub fn lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut at = 0;
    text.split_inclusive(|b| *b == b'\n').map(move |line| {
        let start = at;
        at += line.len();
        (start, line.strip_suffix(b"\n").unwrap_or(line))
    })
}

/// The section between a `begin` line and an `end` line of `text` (the file at `path`, named in
/// errors), or `None` when there is none.
///
/// # Errors
/// [`WriteError::Rejected`] naming `FILE:LINE` for an `end` without `begin`, a `begin` without
/// `end`, or a second `begin`: rrguard cannot tell its lines from the rest then.
pub fn find_section(
    text: &[u8],
    begin: &str,
    end: &str,
    path: &Path,
) -> Result<Option<Section>, WriteError> {
    let at = |n: usize| format!("{}:{}", path.display(), n + 1);
    let mut open: Option<(usize, usize, usize)> = None;
    let mut found: Option<Section> = None;
    for (n, (start, line)) in lines(text).enumerate() {
        let next = (start + line.len() + 1).min(text.len());
        if is_marker(line, begin) {
            if let Some((first, ..)) = open {
                return Err(WriteError::Rejected(format!(
                    "{}: a second `{begin}` before the `{end}` of the one on line {}; remove one of them by hand",
                    at(n),
                    first + 1
                )));
            }
            if found.is_some() {
                return Err(WriteError::Rejected(format!(
                    "{}: a second `{begin}` … `{end}` section; merge the two by hand",
                    at(n)
                )));
            }
            open = Some((n, start, next));
        } else if is_marker(line, end) {
            let Some((_, s, body)) = open.take() else {
                return Err(WriteError::Rejected(format!(
                    "{}: `{end}` without a `{begin}` line above it; remove it or add the BEGIN line by hand",
                    at(n)
                )));
            };
            found = Some(Section {
                start: s,
                body_start: body,
                body_end: start,
                end: next,
            });
        }
    }
    if let Some((n, ..)) = open {
        return Err(WriteError::Rejected(format!(
            "{}: `{begin}` has no `{end}` line below it; add the END line (or remove the BEGIN line) by hand",
            at(n)
        )));
    }
    Ok(found)
}

/// Checks `change.precondition` against `current`, TTLs not compared: `Err` says which part failed.
/// [`Precondition::RrsetEquals`] pins only the families the change touches.
pub fn check_precondition(current: &Published, change: &RecordChange) -> Result<(), String> {
    match &change.precondition {
        Precondition::NameNotInUse => {
            if current.records.is_empty() && current.cname.is_none() {
                Ok(())
            } else {
                Err(format!("{} is in use: {current}", change.fqdn))
            }
        }
        Precondition::RrsetEquals(expected) => {
            for family in change.families() {
                let of = |ips: &mut dyn Iterator<Item = &IpAddr>| -> BTreeSet<IpAddr> {
                    ips.filter(|ip| Family::of(ip) == family).copied().collect()
                };
                let have = of(&mut current.records.keys());
                let want = of(&mut expected.iter());
                if have != want {
                    return Err(format!(
                        "the {family} records of {} are {} now, not {}",
                        change.fqdn,
                        list(&have),
                        list(&want)
                    ));
                }
            }
            Ok(())
        }
    }
}

fn list(ips: &BTreeSet<IpAddr>) -> String {
    if ips.is_empty() {
        return "none".to_owned();
    }
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `records` (address → TTL) after `change`: removals leave the rest of their RRset alone; an RRset
/// that gains or re-TTLs records takes the change's TTL as a whole (RFC 2181 §5.2).
pub fn changed(records: &BTreeMap<IpAddr, u32>, change: &RecordChange) -> BTreeMap<IpAddr, u32> {
    let mut out = records.clone();
    for ip in &change.remove {
        out.remove(ip);
    }
    let touched: BTreeSet<Family> = change
        .add
        .iter()
        .chain(&change.rettl)
        .map(Family::of)
        .collect();
    for ip in change.add.iter().chain(&change.rettl) {
        out.insert(*ip, change.ttl);
    }
    for (ip, ttl) in out.iter_mut() {
        if touched.contains(&Family::of(ip)) {
            *ttl = change.ttl;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn staged_replaces_atomically_keeping_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zone");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let before = snapshot(&path).unwrap();
        let staged = Staged::write(&path, b"new\n").unwrap();
        // Staged but not committed: the file is untouched, the new version is complete beside it.
        assert_eq!(fs::read(&path).unwrap(), b"old\n");
        assert_eq!(fs::read(staged.path()).unwrap(), b"new\n");
        assert_eq!(parent(staged.path()), dir.path());
        staged.commit(before.identity).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("zone")]);
    }

    #[test]
    fn a_new_file_gets_the_default_mode_and_a_dropped_stage_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let staged = Staged::write(&path, b"x\n").unwrap();
        let temp = staged.path().to_path_buf();
        drop(staged);
        assert!(!temp.exists() && !path.exists());
        Staged::write(&path, b"x\n").unwrap().commit(None).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, NEW_FILE_MODE);
    }

    #[test]
    fn a_file_changed_since_it_was_read_is_a_conflict_and_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zone");
        fs::write(&path, "old\n").unwrap();
        let before = snapshot(&path).unwrap();
        // An editor that saves by rename (a new inode), then one that appends in place.
        fs::write(dir.path().join("other"), "theirs\n").unwrap();
        fs::rename(dir.path().join("other"), &path).unwrap();
        let staged = Staged::write(&path, b"ours\n").unwrap();
        assert!(matches!(
            staged.commit(before.identity),
            Err(WriteError::Conflict(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), b"theirs\n");
        let before = snapshot(&path).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"more\n")
            .unwrap();
        let staged = Staged::write(&path, b"ours\n").unwrap();
        assert!(matches!(
            staged.commit(before.identity),
            Err(WriteError::Conflict(_))
        ));
        // A file that appeared where none was read is a change too.
        let fresh = dir.path().join("fresh");
        let staged = Staged::write(&fresh, b"ours\n").unwrap();
        fs::write(&fresh, "theirs\n").unwrap();
        assert!(matches!(staged.commit(None), Err(WriteError::Conflict(_))));
    }

    #[test]
    fn a_symbolic_link_is_followed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let link = dir.path().join("link");
        fs::write(&real, "old\n").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let before = snapshot(&link).unwrap();
        Staged::write(&link, b"new\n")
            .unwrap()
            .commit(before.identity)
            .unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new\n");
    }

    #[test]
    fn backup_holds_the_previous_content_with_the_files_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        fs::write(&path, "old\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        Staged::write_backup(&path, b"old\n").unwrap();
        let bak = dir.path().join("hosts.bak");
        assert_eq!(fs::read(&bak).unwrap(), b"old\n");
        assert_eq!(fs::metadata(&bak).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn snapshot_of_a_missing_file_is_empty_and_a_missing_directory_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            snapshot(&dir.path().join("none")).unwrap(),
            Snapshot {
                bytes: None,
                identity: None
            }
        );
        let err = Staged::write(&dir.path().join("no/such/file"), b"x").unwrap_err();
        assert!(matches!(err, WriteError::Rejected(_)), "{err:?}");
        assert!(err.to_string().contains("create the directory"), "{err}");
        assert!(matches!(snapshot(dir.path()), Err(WriteError::Rejected(_))));
    }

    #[test]
    fn io_errors_are_classified_by_what_fixes_them() {
        let p = Path::new("/x");
        let kind = |k: io::ErrorKind| io_error(&io::Error::from(k), "write", p);
        assert!(matches!(
            kind(io::ErrorKind::PermissionDenied),
            WriteError::Auth(_)
        ));
        assert!(matches!(
            kind(io::ErrorKind::ReadOnlyFilesystem),
            WriteError::Auth(_)
        ));
        assert!(matches!(
            kind(io::ErrorKind::NotFound),
            WriteError::Rejected(_)
        ));
        assert!(matches!(
            kind(io::ErrorKind::ResourceBusy),
            WriteError::Rejected(_)
        ));
        assert!(matches!(
            kind(io::ErrorKind::StorageFull),
            WriteError::Transient(_)
        ));
        // EPERM (an immutable file) is a permission problem like EACCES.
        let eperm = io_error(&io::Error::from_raw_os_error(1), "write", p);
        assert!(matches!(eperm, WriteError::Auth(_)), "{eperm:?}");
    }

    #[tokio::test]
    async fn the_lock_excludes_this_process_and_other_holders_of_the_flock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zone");
        let resources = Resources::default();
        let lock = FileLock::of(&resources, &path);
        let held = lock.lock(&path, Duration::from_secs(1)).await.unwrap();
        // Another writer of the same path in this process shares the lock and waits.
        let same = FileLock::of(&resources, &path);
        let err = same
            .lock(&path, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, WriteError::Transient(_)), "{err:?}");
        drop(held);
        let again = same.lock(&path, Duration::from_secs(1)).await.unwrap();
        drop(again);
        // A flock taken by someone else (another open file description, as another process has).
        let other = File::open(lock_path(&path)).unwrap();
        rustix::fs::flock(&other, FlockOperation::LockExclusive).unwrap();
        let err = lock
            .lock(&path, Duration::from_millis(60))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, WriteError::Transient(m) if m.contains("zone.lock")),
            "{err:?}"
        );
        drop(other);
        lock.lock(&path, Duration::from_secs(1)).await.unwrap();
    }

    #[test]
    fn sections_are_found_and_broken_markers_named_by_line() {
        let p = Path::new("/etc/hosts");
        let text = b"127.0.0.1 localhost\n# BEGIN rrguard\n10.0.0.1 a\n# END rrguard\ntail\n";
        let s = find_section(text, "# BEGIN rrguard", "# END rrguard", p)
            .unwrap()
            .unwrap();
        assert_eq!(&text[..s.start], b"127.0.0.1 localhost\n");
        assert_eq!(&text[s.body_start..s.body_end], b"10.0.0.1 a\n");
        assert_eq!(&text[s.end..], b"tail\n");
        let none = find_section(b"a\nb", "# BEGIN rrguard", "# END rrguard", p).unwrap();
        assert_eq!(none, None);
        for (text, want) in [
            (
                &b"a\n# BEGIN rrguard\nb\n"[..],
                "/etc/hosts:2: `# BEGIN rrguard` has no",
            ),
            (
                b"a\n# END rrguard\n",
                "/etc/hosts:2: `# END rrguard` without",
            ),
            (
                b"# BEGIN rrguard\n# BEGIN rrguard\n# END rrguard\n",
                "/etc/hosts:2: a second",
            ),
        ] {
            let err = find_section(text, "# BEGIN rrguard", "# END rrguard", p).unwrap_err();
            assert!(matches!(err, WriteError::Rejected(_)), "{err:?}");
            assert!(err.to_string().starts_with(want), "{err}");
        }
        // A marker with CRLF or a trailing comment still counts; a longer word does not.
        let crlf = b"# BEGIN rrguard\r\n# END rrguard: end\r\n";
        assert!(
            find_section(crlf, "# BEGIN rrguard", "# END rrguard", p)
                .unwrap()
                .is_some()
        );
        let other = b"# BEGIN rrguardian\n";
        assert_eq!(
            find_section(other, "# BEGIN rrguard", "# END rrguard", p).unwrap(),
            None
        );
    }

    #[test]
    fn change_rules_match_the_memory_writer() {
        let current = Published::with_ttl(ips(&["192.0.2.1", "192.0.2.2", "2001:db8::1"]), 60);
        let change = RecordChange {
            fqdn: "www.example.test.".into(),
            zone: "example.test.".into(),
            ttl: 30,
            precondition: Precondition::RrsetEquals(ips(&[
                "192.0.2.1",
                "192.0.2.2",
                "2001:db8::9",
            ])),
            add: ips(&["192.0.2.3"]),
            remove: ips(&["192.0.2.2"]),
            rettl: BTreeSet::new(),
            weights: Default::default(),
        };
        // Only the A RRset is touched, so only it is pinned.
        check_precondition(&current, &change).unwrap();
        let after = changed(&current.records, &change);
        let want: BTreeMap<IpAddr, u32> = [
            ("192.0.2.1".parse().unwrap(), 30),
            ("192.0.2.3".parse().unwrap(), 30),
            ("2001:db8::1".parse().unwrap(), 60),
        ]
        .into_iter()
        .collect();
        assert_eq!(after, want);
        let stale = RecordChange {
            precondition: Precondition::RrsetEquals(ips(&["192.0.2.1"])),
            ..change.clone()
        };
        let why = check_precondition(&current, &stale).unwrap_err();
        assert!(
            why.contains("the A records of www.example.test. are 192.0.2.1 192.0.2.2 now"),
            "{why}"
        );
        let fresh = RecordChange {
            precondition: Precondition::NameNotInUse,
            ..change
        };
        assert!(check_precondition(&current, &fresh).is_err());
        assert!(check_precondition(&Published::default(), &fresh).is_ok());
        // A removal alone leaves the TTL of what stays.
        let removal = RecordChange {
            add: BTreeSet::new(),
            ..fresh
        };
        assert_eq!(
            changed(&current.records, &removal)[&"192.0.2.1".parse::<IpAddr>().unwrap()],
            60
        );
    }
}
