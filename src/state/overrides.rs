//! The node's overrides at run time: one [`OverrideStore`] per daemon, kept across reloads.
//!
//! It holds the [`OverrideSet`] (the rules are in [`crate::decide::overrides`]), persists it to
//! `STATE_DIR/overrides.json` after every change (written atomically: a temporary file in the same
//! directory, fsync, rename, fsync of the directory, so a crash leaves the old or the new file), and
//! publishes each new set on a `watch` channel the service controllers and the replication task
//! follow. The API creates and deletes through it; replication merges through it. Changes are
//! logged here, once per node. Locks are `std` locks held for a few field updates and one small
//! file write, never across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use super::now_unix_ms;
use crate::decide::overrides::{
    DeleteError, Override, OverrideRequest, OverrideSet, RequestError, Services, SetChange,
};

/// The state file's name under `[node].state_dir`.
pub const FILE_NAME: &str = "overrides.json";
/// Format version of the state file.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    overrides: Vec<Override>,
}

/// Why a new override was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// The request is wrong (400) or names an unknown service or endpoint (404).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Too many overrides are set (409). Not retryable until some are deleted.
    #[error("{0}")]
    Full(String),
    /// The state file could not be written (500); nothing was changed. Retryable.
    #[error("{0}")]
    Persist(String),
}

/// The shared handle. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OverrideStore {
    inner: Arc<Mutex<Inner>>,
    tx: Arc<watch::Sender<Arc<OverrideSet>>>,
}

#[derive(Debug, Default)]
struct Inner {
    set: OverrideSet,
    path: Option<PathBuf>,
    node: String,
    services: Services,
}

impl Default for OverrideStore {
    fn default() -> Self {
        let (tx, _) = watch::channel(Arc::new(OverrideSet::new()));
        OverrideStore {
            inner: Arc::default(),
            tx: Arc::new(tx),
        }
    }
}

impl OverrideStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets this node's id and state directory, and loads the overrides saved there (merged into
    /// what is held: expired ones are dropped).
    ///
    /// # Errors
    /// A message naming the file when it cannot be read or is not an overrides file; the store then
    /// keeps what it holds and still saves to that path.
    pub fn open(&self, state_dir: &Path, node: &str) -> Result<usize, String> {
        let path = state_dir.join(FILE_NAME);
        let loaded = load(&path);
        let mut inner = self.lock();
        inner.node = node.to_owned();
        inner.path = Some(path);
        let loaded = loaded?;
        let now = now_unix_ms();
        inner.set.merge(loaded, now);
        inner.set.prune(now);
        let n = inner.set.live().count();
        self.tx.send_replace(Arc::new(inner.set.clone()));
        Ok(n)
    }

    /// The configured services and their endpoints (at start and on every reload): what a request
    /// may name.
    pub fn set_services(&self, services: Services) {
        self.lock().services = services;
    }

    /// This node's id, as [`OverrideStore::open`] set it.
    pub fn node(&self) -> String {
        self.lock().node.clone()
    }

    /// Follows the set: the receiver sees every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<OverrideSet>> {
        self.tx.subscribe()
    }

    /// The set as it is now, expired entries pruned.
    pub fn current(&self) -> Arc<OverrideSet> {
        self.prune();
        self.tx.borrow().clone()
    }

    /// The live overrides (not deleted, not ended), in id order.
    pub fn list(&self) -> Vec<Override> {
        self.current().live().cloned().collect()
    }

    /// Creates an override from an API request, with a fresh id; saved before it is published.
    ///
    /// # Errors
    /// [`CreateError`].
    pub fn create(&self, request: OverrideRequest) -> Result<Override, CreateError> {
        let mut inner = self.lock();
        let now = now_unix_ms();
        let o = request.into_override(&inner.services, now, &inner.node, new_id())?;
        let mut next = inner.set.clone();
        let change = next.insert(o.clone()).map_err(CreateError::Full)?;
        self.commit(&mut inner, next, vec![change], "API")
            .map_err(CreateError::Persist)?;
        Ok(o)
    }

    /// Deletes an override (it becomes a tombstone until its end).
    ///
    /// # Errors
    /// [`DeleteError`], or a message when the state file cannot be written (nothing changed then).
    pub fn delete(&self, id: &str) -> Result<Result<Override, DeleteError>, String> {
        let mut inner = self.lock();
        let now = now_unix_ms();
        inner.set.prune(now);
        let mut next = inner.set.clone();
        let change = match next.delete(id, now) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let SetChange::Deleted(o) = change.clone() else {
            unreachable!("delete returns a deletion")
        };
        self.commit(&mut inner, next, vec![change], "API")?;
        Ok(Ok(o))
    }

    /// Merges what a peer sent (`from` names it in logs); returns how many entries changed here.
    pub fn merge(&self, incoming: Vec<Override>, from: &str) -> usize {
        let mut inner = self.lock();
        let mut next = inner.set.clone();
        let changes = next.merge(incoming, now_unix_ms());
        let n = changes.len();
        if n > 0 {
            // Merged entries stay applied even if they cannot be saved: the peers hold them too.
            if let Err(e) = self.commit(&mut inner, next.clone(), changes, from) {
                warn!("{e}; the override applies, but will not survive a restart of this node");
                inner.set = next;
                self.tx.send_replace(Arc::new(inner.set.clone()));
            }
        }
        n
    }

    /// Forgets what has ended, logging each override that expired. Returns the next wall time (Unix
    /// ms) at which an override starts or ends, if any.
    pub fn prune(&self) -> Option<u64> {
        let mut inner = self.lock();
        let now = now_unix_ms();
        if inner.set.all().any(|o| o.expired_at(now)) {
            let mut next = inner.set.clone();
            let changes = next.prune(now);
            if let Err(e) = self.commit(&mut inner, next.clone(), changes, "expiry") {
                warn!("{e}");
                inner.set = next;
                self.tx.send_replace(Arc::new(inner.set.clone()));
            }
        }
        inner.set.next_boundary_ms(now)
    }

    /// Saves `next`, then makes it current, logs `changes` and notifies the followers.
    fn commit(
        &self,
        inner: &mut Inner,
        next: OverrideSet,
        changes: Vec<SetChange>,
        by: &str,
    ) -> Result<(), String> {
        if let Some(path) = &inner.path {
            save(path, &next)?;
        }
        inner.set = next;
        for c in &changes {
            log_change(c, by);
        }
        self.tx.send_replace(Arc::new(inner.set.clone()));
        Ok(())
    }
}

fn log_change(c: &SetChange, by: &str) {
    let target = |o: &Override| o.service.clone().unwrap_or_else(|| "every service".into());
    match c {
        SetChange::Set(o) => info!(
            id = %o.id, kind = %o.kind, endpoint = %o.endpoint, service = %target(o),
            starts_unix_ms = o.starts_unix_ms, ends_unix_ms = o.ends_unix_ms, origin = %o.origin,
            comment = %o.comment, via = by,
            "override set: {} of {}", o.kind, o.endpoint
        ),
        SetChange::Deleted(o) => info!(
            id = %o.id, kind = %o.kind, endpoint = %o.endpoint, service = %target(o), via = by,
            "override deleted: {} of {}", o.kind, o.endpoint
        ),
        SetChange::Expired(o) => info!(
            id = %o.id, kind = %o.kind, endpoint = %o.endpoint, service = %target(o),
            "override expired: {} of {}", o.kind, o.endpoint
        ),
    }
}

/// A fresh id: 16 hex digits from the system's random source.
fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // No random source: time and a counter are unique enough on one node.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes = (now_unix_ms() ^ (n << 48)).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the state file: empty when there is none.
fn load(path: &Path) -> Result<Vec<Override>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: File = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not an overrides file: {e}", path.display()))?;
    if file.version != VERSION {
        return Err(format!(
            "{} has format version {}, this rrguard reads version {VERSION}",
            path.display(),
            file.version
        ));
    }
    Ok(file.overrides)
}

/// Writes the set to `path` atomically, creating the directory if needed.
fn save(path: &Path, set: &OverrideSet) -> Result<(), String> {
    use std::io::Write as _;
    let fail = |what: &str, e: std::io::Error| {
        format!("cannot {what} the overrides file {}: {e}", path.display())
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| fail("create the directory of", e))?;
    let file = File {
        version: VERSION,
        overrides: set.all().cloned().collect(),
    };
    let text = serde_json::to_vec_pretty(&file).map_err(|e| fail("encode", e.into()))?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| fail("create a temporary file for", e))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .map_err(|e| fail("write", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| fail("replace", e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::overrides::OverrideKind;

    fn request(comment: &str) -> OverrideRequest {
        OverrideRequest {
            endpoint: "192.0.2.1".into(),
            service: None,
            kind: OverrideKind::Drain,
            comment: comment.into(),
            starts_unix_ms: None,
            ends_unix_ms: None,
            duration: Some("1h".into()),
        }
    }

    fn store(dir: &Path) -> OverrideStore {
        let s = OverrideStore::default();
        s.open(dir, "mon-1").unwrap();
        s.set_services(
            [(
                "www.example.test.".to_owned(),
                vec!["192.0.2.1".parse().unwrap()],
            )]
            .into(),
        );
        s
    }

    #[test]
    fn overrides_survive_a_restart_deletions_too() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut rx = s.subscribe();
        let kept = s.create(request("kernel upgrade")).unwrap();
        let gone = s.create(request("disk swap")).unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().live().count(), 2);
        s.delete(&gone.id).unwrap().unwrap();
        assert_eq!(
            s.delete(&gone.id).unwrap(),
            Err(DeleteError::AlreadyDeleted(gone.id.clone()))
        );
        assert!(matches!(
            s.delete("nope").unwrap(),
            Err(DeleteError::NotFound(_))
        ));
        // A new process: the same file.
        let again = store(dir.path());
        assert_eq!(again.list(), vec![kept]);
        assert!(
            again.current().get(&gone.id).unwrap().deleted,
            "tombstone kept"
        );
        assert!(!dir.path().join("overrides.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{ not json").unwrap();
        let e = OverrideStore::default()
            .open(dir.path(), "mon-1")
            .unwrap_err();
        assert!(e.contains("overrides.json is not an overrides file"), "{e}");
    }

    #[test]
    fn a_failed_save_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir.path().join("sub"));
        // The state directory is a file now: saving fails.
        std::fs::write(dir.path().join("sub-file"), "").unwrap();
        let _ = s.open(&dir.path().join("sub-file"), "mon-1");
        let e = s.create(request("x")).unwrap_err();
        assert!(matches!(e, CreateError::Persist(_)), "{e:?}");
        assert!(s.list().is_empty());
    }
}
