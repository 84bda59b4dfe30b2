//! The `serve` writer: rrguard's own authoritative DNS server for zones delegated to the rrguard
//! nodes. A write changes what the node answers the moment it returns; there is no server to update
//! and no propagation delay.
//!
//! Parts, in the order data flows:
//! - [`config`]: the options (`listen`, `[[writer.zone]]`) and their validation, static records
//!   parsed with hickory's master-file parser;
//! - [`zone`]: the static data of each zone merged with the managed A/AAAA records;
//! - [`answer`]: every response prebuilt in wire format per snapshot, and the sans-I/O query path;
//! - [`listen`]: UDP and TCP listeners;
//! - [`state`]: the managed records and the serial saved in `[node].state_dir`.
//!
//! One [`Store`] per writer name lives in [`Resources`]: it holds the managed records, the serial
//! and the listeners, so a reload neither empties a zone nor rebinds a socket. Changes are
//! evaluated one at a time in arrival order against the result of the previous ones, which makes
//! [`Writer::apply`] a true compare-and-swap with the rules of the `memory` writer (shared code:
//! `memory::check`, `memory::applied`). Every commit gets a new SOA serial,
//! `max(previous + 1, unix time)`, is saved before it is served, and becomes a new snapshot.
//!
//! **Group commit.** Saving the file and building the snapshot cost O(names) each, so the changes
//! that arrive while one commit runs share the next one ([`Store::submit`]). At start-up with 100
//! services, each reading (a first read makes the name managed) and writing once, 200 commits one
//! after the other had put the last service's first write 14 s after start while 10,000 HTTP
//! endpoints were probed: every hand-over between services waited for the busy runtime, and probe
//! reports piled up behind the waiting services (11 MB of them). Reads of a managed name take the
//! lock for a copy and never wait for a commit.
//!
//! Why a hand-written responder on hickory-proto's types rather than hickory-server: the answers
//! are prebuilt once per change with hickory's encoder (names, compression, every RDATA type of the
//! master-file parser), and a query then costs a hash lookup and a copy, with no decoding into
//! `Message` and no allocation; hickory-server's `Catalog` decodes and re-encodes every message.

mod answer;
pub mod config;
mod listen;
mod state;
mod zone;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hickory_net::proto::rr::RecordType;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::answer::Snapshot;
use self::config::ServeConfig;
use self::listen::Served;
use self::zone::{Zone, Zones, key};
use super::memory::{applied, check};
use super::{Capabilities, Published, RecordChange, Resources, WriteError, Writer};

/// What one `serve` writer keeps across reloads: the managed records, the serial, the zones being
/// answered, and the listeners. Dropping it (with the daemon's [`Resources`]) stops the listeners.
pub struct Store {
    writer: String,
    path: Option<PathBuf>,
    data: Mutex<Data>,
    served: Arc<Served>,
    listeners: Mutex<BTreeMap<SocketAddr, CancellationToken>>,
    root: CancellationToken,
    /// Held through a whole commit (evaluate, save, serve): one at a time, serials in order. Taken
    /// before `data`, never while holding it.
    committing: Mutex<()>,
    /// Changes waiting for the next commit ([`Store::submit`]).
    queue: Mutex<Queue>,
    /// Commits made (each one save and one snapshot).
    commits: std::sync::atomic::AtomicU64,
}

/// Changes waiting for a commit, and whether a committer is running on the blocking pool.
#[derive(Default)]
struct Queue {
    waiting: Vec<Queued>,
    running: bool,
}

/// One change and where its result goes.
struct Queued {
    op: Op,
    done: oneshot::Sender<Result<(), WriteError>>,
}

/// A change to the managed records.
enum Op {
    /// A name asked about becomes managed (see [`Writer::read`]).
    Manage { zone: Zone, fqdn: String },
    /// A compare-and-swap change ([`Writer::apply`]).
    Apply { zone: Zone, change: RecordChange },
}

/// Ends a committer: on a panic, what is still queued fails (its waiters get an error) and the
/// next change starts a new committer.
struct Committer<'a>(&'a Mutex<Queue>);

impl Drop for Committer<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut queue = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            queue.waiting.clear();
            queue.running = false;
        }
    }
}

#[derive(Debug)]
struct Data {
    managed: BTreeMap<String, Published>,
    serial: u32,
    /// The zones answered, from the configuration of the last [`Writer::start`].
    zones: Option<Zones>,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.root.cancel();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("writer", &self.writer)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The next SOA serial: greater than `previous`, and the unix time when that is larger (so serials
/// survive a lost state file in order, as long as the clock is right).
fn next_serial(previous: u32) -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    previous.wrapping_add(1).max(now)
}

impl Store {
    /// The store of `writer`, with what its state file under `state_dir` holds (nothing if there
    /// is no directory or no file; a file that cannot be read is logged and ignored).
    fn open(writer: &str, state_dir: Option<&std::path::Path>) -> Store {
        let path = state_dir.map(|d| state::path(d, writer));
        let saved = match path.as_deref().map(state::load) {
            Some(Ok(Some(saved))) => {
                info!(
                    writer,
                    names = saved.managed.len(),
                    serial = saved.serial,
                    "serve: loaded the last published records"
                );
                saved
            }
            Some(Err(e)) => {
                warn!(writer, "serve: {e}; starting with no managed records");
                state::Saved::default()
            }
            Some(Ok(None)) | None => state::Saved::default(),
        };
        Store {
            writer: writer.to_owned(),
            path,
            data: Mutex::new(Data {
                managed: saved.managed,
                serial: saved.serial,
                zones: None,
            }),
            served: Arc::default(),
            listeners: Mutex::default(),
            root: CancellationToken::new(),
            committing: Mutex::new(()),
            queue: Mutex::default(),
            commits: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_commit(&self) -> MutexGuard<'_, ()> {
        self.committing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What `fqdn` publishes: its managed records, or the static ones until it is managed.
    fn effective(managed: &BTreeMap<String, Published>, zone: &Zone, fqdn: &str) -> Published {
        let statics = zone.static_published(fqdn);
        match managed.get(fqdn) {
            Some(m) => Published {
                records: m.records.clone(),
                cname: m.cname.clone().or(statics.cname),
                weights: Default::default(),
            },
            None => statics,
        }
    }

    /// Makes `managed` the managed records with a new serial: saved first, then served. The
    /// caller holds `committing`.
    ///
    /// # Errors
    /// [`WriteError::Transient`] when the state file cannot be written; nothing changed then.
    fn commit(&self, managed: BTreeMap<String, Published>) -> Result<(), WriteError> {
        let serial = next_serial(self.lock().serial);
        let managed = match &self.path {
            Some(path) => {
                let saved = state::Saved { serial, managed };
                state::save(path, &saved).map_err(|e| {
                    WriteError::Transient(format!(
                        "serve: {e}; the change was not applied: fix the state directory ([node].state_dir)"
                    ))
                })?;
                saved.managed
            }
            None => managed,
        };
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut data = self.lock();
        data.managed = managed;
        data.serial = serial;
        self.republish(&data);
        Ok(())
    }

    /// Builds and serves the snapshot of `data` (nothing is answered before the first start).
    fn republish(&self, data: &Data) {
        if let Some(zones) = &data.zones {
            self.served
                .publish(Snapshot::build(zones, &data.managed, data.serial));
        }
    }

    /// Queues `op` for the next commit and waits for its result. The changes that arrive while
    /// a commit runs share the next one: one save and one snapshot for all of them, each change
    /// still evaluated on its own, in arrival order. The committer runs on the blocking pool while
    /// changes are queued and ends when none is left.
    ///
    /// # Errors
    /// The change's own: [`WriteError::Conflict`] when its precondition does not hold,
    /// [`WriteError::Transient`] when the commit could not be saved (nothing of it applied).
    async fn submit(self: &Arc<Self>, op: Op) -> Result<(), WriteError> {
        let (done, result) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.waiting.push(Queued { op, done });
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            let store = Arc::clone(self);
            tokio::task::spawn_blocking(move || store.drain());
        }
        result.await.unwrap_or_else(|_| {
            Err(WriteError::Transient(
                "serve: the commit failed unexpectedly (see the log); nothing was applied"
                    .to_owned(),
            ))
        })
    }

    /// The committer: commits what is queued, batch after batch, until nothing is.
    fn drain(&self) {
        let _ending = Committer(&self.queue);
        loop {
            let batch = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.waiting.is_empty() {
                    queue.running = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            self.commit_batch(batch);
        }
    }

    /// Evaluates `batch` in order on a copy of the managed records, commits the copy once if any
    /// change made a difference, and answers every change.
    fn commit_batch(&self, batch: Vec<Queued>) {
        let _one = self.lock_commit();
        let mut managed = self.lock().managed.clone();
        let mut answers = Vec::with_capacity(batch.len());
        let mut changed = false;
        for Queued { op, done } in batch {
            let result = evaluate(&mut managed, op).map(|c| changed |= c);
            answers.push((done, result));
        }
        let failed = if changed {
            self.commit(managed).err()
        } else {
            None
        };
        for (done, result) in answers {
            let result = match (&failed, result) {
                (Some(e), Ok(())) => Err(e.clone()),
                (_, result) => result,
            };
            let _ = done.send(result);
        }
    }

    /// Answers from `zones` from now on; a new configuration is a change, with a new serial.
    fn install(&self, zones: &Zones) {
        let _one = self.lock_commit();
        let mut data = self.lock();
        if data.zones.as_ref() == Some(zones) {
            return;
        }
        data.zones = Some(zones.clone());
        for zone in &zones.0 {
            for name in data.managed.keys() {
                let shadowed: Vec<String> = zone
                    .statics
                    .get(name)
                    .into_iter()
                    .flat_map(|sets| sets.keys())
                    .filter(|t| matches!(t, RecordType::A | RecordType::AAAA))
                    .map(ToString::to_string)
                    .collect();
                if !shadowed.is_empty() {
                    warn!(
                        writer = %self.writer,
                        "serve: static {} records at {name} are not served: rrguard manages this name's addresses",
                        shadowed.join("/")
                    );
                }
            }
        }
        let managed = data.managed.clone();
        drop(data);
        if let Err(e) = self.commit(managed) {
            // Served anyway: the zones come from the configuration, not from the file.
            warn!(writer = %self.writer, "{e}");
            let mut data = self.lock();
            data.serial = next_serial(data.serial);
            self.republish(&data);
        }
    }

    /// Listens on exactly `addrs`: keeps the sockets of addresses still listed, binds new ones,
    /// closes the others. All or nothing: on an error the listeners stay as they were.
    fn listen(&self, addrs: &[SocketAddr], idle: Duration) -> Result<(), String> {
        self.served.set_tcp_idle(idle);
        let mut current = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let leaving: Vec<SocketAddr> = current
            .keys()
            .filter(|a| !addrs.contains(a))
            .copied()
            .collect();
        let new: Vec<SocketAddr> = addrs
            .iter()
            .filter(|a| !current.contains_key(a))
            .copied()
            .collect();
        let mut bound = Vec::new();
        for addr in &new {
            match listen::bind(*addr) {
                Ok(b) => bound.push((*addr, b)),
                Err(e)
                    if e.contains("address in use")
                        && leaving.iter().any(|a| a.port() == addr.port()) =>
                {
                    // Perhaps one of our own leaving sockets on that port (a wildcard giving way to
                    // a specific address): close them, then try again while their tasks wind down.
                    // Another port in use is someone else's: fail and keep every socket we have.
                    for a in &leaving {
                        if let Some(token) = current.remove(a) {
                            token.cancel();
                        }
                    }
                    bound.push((*addr, retry_bind(*addr)?));
                }
                Err(e) => return Err(e),
            }
        }
        for a in &leaving {
            if let Some(token) = current.remove(a) {
                token.cancel();
                info!(writer = %self.writer, %a, "serve: stopped listening");
            }
        }
        for (addr, b) in bound {
            let token = self.root.child_token();
            listen::spawn(addr, b, &self.served, &token)?;
            info!(writer = %self.writer, %addr, "serve: answering DNS over UDP and TCP");
            current.insert(addr, token);
        }
        Ok(())
    }
}

/// Applies `op` to `managed`: whether it changed anything.
///
/// # Errors
/// [`WriteError::Conflict`] when an [`Op::Apply`]'s precondition does not hold; `managed` is then
/// unchanged.
fn evaluate(managed: &mut BTreeMap<String, Published>, op: Op) -> Result<bool, WriteError> {
    match op {
        Op::Manage { zone, fqdn } => {
            let now = Store::effective(managed, &zone, &fqdn);
            if !becomes_managed(managed, &fqdn, &now) {
                return Ok(false);
            }
            managed.insert(fqdn, Published::default());
            Ok(true)
        }
        Op::Apply { zone, change } => {
            let fqdn = key(&change.fqdn);
            let current = Store::effective(managed, &zone, &fqdn);
            check(&current, &change).map_err(WriteError::Conflict)?;
            let next = applied(current, &change);
            // The CNAME is static data (or set out of band): keep only the managed one.
            let entry = Published {
                records: next.records,
                cname: managed.get(&fqdn).and_then(|m| m.cname.clone()),
                weights: Default::default(),
            };
            if managed.get(&fqdn) == Some(&entry) {
                return Ok(false);
            }
            managed.insert(fqdn, entry);
            Ok(true)
        }
    }
}

/// Whether asking about `fqdn`, which publishes `now`, makes it a managed name: from then on it
/// exists (NODATA rather than NXDOMAIN while it has no addresses). One with static addresses
/// stays unmanaged until written, so that the first write starts from them.
fn becomes_managed(managed: &BTreeMap<String, Published>, fqdn: &str, now: &Published) -> bool {
    !managed.contains_key(fqdn) && now.records.is_empty()
}

/// Binds `addr`, retrying for up to 2 s while it is in use.
fn retry_bind(addr: SocketAddr) -> Result<listen::Bound, String> {
    let mut tries = 0;
    loop {
        match listen::bind(addr) {
            Err(e) if e.contains("address in use") && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// A `serve` writer: reads and writes its [`Store`], and answers DNS from it once started.
#[derive(Debug, Clone)]
pub struct ServeWriter {
    name: String,
    config: ServeConfig,
    zones: Zones,
    store: Arc<Store>,
}

impl ServeWriter {
    /// The writer `name` on its store in `resources` (made, from the state file, the first time).
    pub fn new(name: &str, config: ServeConfig, resources: &Resources) -> Self {
        let store = resources.get_or_insert_with(name, || Store::open(name, resources.state_dir()));
        ServeWriter {
            name: name.to_owned(),
            zones: Zones::compile(name, &config.zones),
            config,
            store,
        }
    }

    /// Replaces what `fqdn` publishes, bypassing preconditions and the CNAME rule, as an operator's
    /// tool would (the writer battery's out-of-band change). A CNAME set here answers for the name
    /// like a static one.
    ///
    /// # Errors
    /// As [`Writer::apply`]: `fqdn` outside the zones, or the state file cannot be written.
    pub fn set(&self, fqdn: &str, published: Published) -> Result<(), WriteError> {
        self.zone_of(fqdn, None)?;
        let _one = self.store.lock_commit();
        let mut managed = self.store.lock().managed.clone();
        managed.insert(key(fqdn), published);
        self.store.commit(managed)
    }

    /// Commits made since the store was opened: each one state-file save and one snapshot, for
    /// however many changes it carried.
    pub fn commits(&self) -> u64 {
        self.store
            .commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The SOA serial the zones are answered with now.
    pub fn serial(&self) -> u32 {
        self.store.lock().serial
    }

    /// The zone of `fqdn`, checked against the zone a caller named.
    fn zone_of(&self, fqdn: &str, zone: Option<&str>) -> Result<&Zone, WriteError> {
        let found = self.zones.zone_of(fqdn).ok_or_else(|| {
            WriteError::Rejected(format!(
                "{fqdn} is in none of the zones writer {:?} serves ({}): add a [[writer.zone]] for its zone, or give the service another writer",
                self.name,
                self.zones.list()
            ))
        })?;
        if let Some(zone) = zone
            && key(zone) != found.key
        {
            return Err(WriteError::Rejected(format!(
                "{fqdn} is served by writer {:?} in zone {}, not {zone}: set the service's zone = \"{}\"",
                self.name,
                found.key,
                found.key.trim_end_matches('.')
            )));
        }
        Ok(found)
    }
}

#[async_trait]
impl Writer for ServeWriter {
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

    // A managed name is read from memory. A first read (the name becomes managed) and a write go
    // through the group commit ([`Store::submit`]): the save and the snapshot run on the blocking
    // pool, not on a runtime worker, once for all the changes queued meanwhile.
    async fn read(&self, fqdn: &str, zone: &str) -> Result<Published, WriteError> {
        let zone = self.zone_of(fqdn, Some(zone))?;
        let fqdn = key(fqdn);
        let (now, unmanaged) = {
            let data = self.store.lock();
            let now = Store::effective(&data.managed, zone, &fqdn);
            let unmanaged = becomes_managed(&data.managed, &fqdn, &now);
            (now, unmanaged)
        };
        if unmanaged {
            let op = Op::Manage {
                zone: zone.clone(),
                fqdn,
            };
            if let Err(e) = self.store.submit(op).await {
                warn!(writer = %self.name, "{e}");
            }
        }
        Ok(now)
    }

    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        let zone = self.zone_of(&change.fqdn, Some(&change.zone))?.clone();
        let op = Op::Apply {
            zone,
            change: change.clone(),
        };
        self.store.submit(op).await
    }

    fn start(&self) -> Result<(), String> {
        // Zones first: a listener answers from its first packet on.
        self.store.install(&self.zones);
        self.store
            .listen(&self.config.listen, self.config.tcp_idle_timeout)
    }
}
