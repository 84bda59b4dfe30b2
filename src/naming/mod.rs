//! Fleet naming without a database: nodes take names like `web-0`, `web-1` (style `iterative`) or
//! `db-master`, `db-slave-1` (style `masterful`) in a DNS zone, and DNS itself is the consistent
//! store. Every step is one RFC 2136 UPDATE whose prerequisites make it a compare-and-swap, so the
//! primary (Knot, BIND) serialises concurrent nodes and nothing is ever taken, freed or swapped twice:
//!
//! - **register**: the lowest free slot, taken with "name is not in use" (§2.4.5); YXDOMAIN means
//!   another node was faster, and the next slot is tried. An instance that already holds a name (its
//!   ownership TXT says so) keeps it and renews it.
//! - **renew**: the ownership TXT (`lease=` the wall-clock second) rewritten, conditional on the TXT
//!   RRset as read (§2.4.2, value dependent).
//! - **free a stale name**: any node deletes a name whose lease is older than `release_after`,
//!   conditional on that stale TXT: a renewal in between, or another node freeing it first, makes
//!   the UPDATE fail, and nothing happens twice.
//! - **change-master**: one UPDATE pinning both names' TXT RRsets swaps the master's and the
//!   slave's records; there is never zero or two masters.
//! - **hosts-sync**: every name of the zone, read by a TSIG-signed AXFR, in a marked section of a
//!   hosts file ([`hosts`]).
//!
//! The model without I/O is [`model`]; the messages and the transfer are [`dns`]; the options are
//! [`config`]. The user guide is `docs/naming.md`.

pub mod cli;
pub mod config;
pub mod dns;
pub mod hosts;
pub mod model;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::act::WriteError;
use config::{Identity, NamingConfig, Style, check_instance_id};
use dns::{Client, NodeRecords, Outcome, Side};
use model::{Held, Owner, Slot, ZoneView};

/// How many slots one registration tries before it gives up (each is one UPDATE).
pub const MAX_ATTEMPTS: usize = 1000;
/// How many times a renewal re-reads the zone when its compare-and-swap loses to a change by the
/// node itself (for instance a change of master that moved it).
const RENEW_ROUNDS: usize = 3;

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: runtime failure (DNS server unreachable or refusing, TSIG, files).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: lost a race or nothing left (change-master lost, the name was taken away, no free name).
pub const EXIT_LOST: u8 = 2;
/// Exit code: this instance holds no name in its service.
pub const EXIT_NOT_REGISTERED: u8 = 3;
/// Exit code: bad usage or configuration.
pub const EXIT_USAGE: u8 = 64;

/// Why a naming command failed.
#[derive(Debug, thiserror::Error)]
pub enum NamingError {
    /// DNS or file trouble: network, TSIG, refusals, I/O. Retryable when it is
    /// [`WriteError::Transient`].
    #[error("{0}")]
    Io(#[from] WriteError),
    /// Another node won: the compare-and-swap failed. Not retried by one-shot commands.
    #[error("{0}")]
    Lost(String),
    /// This instance holds no name in its service.
    #[error("{0}")]
    NotRegistered(String),
    /// The command cannot run with this configuration or these options.
    #[error("{0}")]
    Usage(String),
}

impl NamingError {
    /// The process exit code for this error (see the `EXIT_*` constants).
    pub fn exit_code(&self) -> u8 {
        match self {
            NamingError::Io(_) => EXIT_FAILURE,
            NamingError::Lost(_) => EXIT_LOST,
            NamingError::NotRegistered(_) => EXIT_NOT_REGISTERED,
            NamingError::Usage(_) => EXIT_USAGE,
        }
    }
}

/// Command-line overrides of the configured identity.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Service instead of the configured one.
    pub service: Option<String>,
    /// Style instead of the configured one.
    pub style: Option<Style>,
    /// Instance id instead of the configured or read one.
    pub instance_id: Option<String>,
    /// Addresses instead of the configured ones.
    pub addresses: Vec<IpAddr>,
}

/// This node, as naming needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Service, style and aliases.
    pub identity: Identity,
    /// Instance id.
    pub instance: String,
    /// Addresses its name carries.
    pub addresses: Vec<IpAddr>,
}

/// The node from the config and the overrides; the instance id is read from its file when neither
/// gives it.
///
/// # Errors
/// [`NamingError::Usage`] naming what is missing and where to set it.
pub fn node(cfg: &NamingConfig, o: &Overrides) -> Result<Node, NamingError> {
    let mut identity = match (&o.service, &cfg.identity) {
        (Some(s), base) => Identity {
            service: config::check_label("service", s).map_err(NamingError::Usage)?,
            style: base.as_ref().map_or(Style::Iterative, |b| b.style),
            aliases: base.as_ref().map(|b| b.aliases.clone()).unwrap_or_default(),
        },
        (None, Some(i)) => i.clone(),
        (None, None) => {
            return Err(NamingError::Usage(
                "no service: set [naming] service (or identity_file), or pass --service".into(),
            ));
        }
    };
    if let Some(style) = o.style {
        identity.style = style;
    }
    let instance = match o.instance_id.as_ref().or(cfg.instance_id.as_ref()) {
        Some(id) => check_instance_id(id).map_err(NamingError::Usage)?,
        None => {
            let text = std::fs::read_to_string(&cfg.instance_id_file).map_err(|e| {
                NamingError::Usage(format!(
                    "cannot read the instance id from {}: {e}; set [naming] instance_id or pass --instance-id",
                    cfg.instance_id_file.display()
                ))
            })?;
            check_instance_id(text.lines().next().unwrap_or_default()).map_err(|m| {
                NamingError::Usage(format!("{}: {m}", cfg.instance_id_file.display()))
            })?
        }
    };
    let addresses = if o.addresses.is_empty() {
        cfg.addresses.clone()
    } else {
        o.addresses.clone()
    };
    Ok(Node {
        identity,
        instance,
        addresses,
    })
}

/// Seconds since 1970 by the wall clock: leases leave the process (other nodes compare them).
pub fn now_secs() -> u64 {
    crate::act::rfc2136::wire::now_secs()
}

/// What `register` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The name's label (`web-3`).
    pub label: String,
    /// Whether the instance already held it.
    pub existing: bool,
    /// Dry run: nothing was written.
    pub dry_run: bool,
}

/// One row of `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The name's label.
    pub label: String,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// Its owner, when rrguard naming wrote it.
    pub owner: Option<Owner>,
    /// Seconds since the last renewal, by our clock.
    pub lease_age: Option<i64>,
    /// Whether the lease is older than `release_after`.
    pub stale: bool,
}

/// Naming commands against the configured zone.
pub struct Naming {
    cfg: NamingConfig,
    client: Client,
}

impl Naming {
    /// The commands for `cfg`. No connection is made yet.
    ///
    /// # Errors
    /// [`NamingError::Io`] when the zone or key name is not a DNS name.
    pub fn new(cfg: &NamingConfig) -> Result<Naming, NamingError> {
        Ok(Naming {
            client: Client::new(&cfg.writer, &cfg.dns, &cfg.zone)?,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NamingConfig {
        &self.cfg
    }

    /// The zone without its trailing dot.
    pub fn zone(&self) -> &str {
        self.cfg.zone.trim_end_matches('.')
    }

    fn release_after_secs(&self) -> u64 {
        self.cfg.release_after.as_secs_f64().ceil() as u64
    }

    /// What `node`'s name carries at `now`; without configured addresses, the ones `held` has.
    fn records(&self, node: &Node, now: u64, held: Option<&Held>) -> NodeRecords {
        let addresses = match held {
            Some(h) if node.addresses.is_empty() => h.entry.addresses.iter().copied().collect(),
            _ => node.addresses.clone(),
        };
        NodeRecords {
            addresses,
            owner: Owner {
                instance: node.instance.clone(),
                lease: now,
                aliases: node.identity.aliases.clone(),
            },
            ttl: self.cfg.ttl,
        }
    }

    /// Reads the zone.
    ///
    /// # Errors
    /// As [`Client::axfr`].
    pub async fn read(&self) -> Result<ZoneView, NamingError> {
        Ok(self.client.axfr().await?)
    }

    /// Frees the stale names of the node's service (except its own), each conditional on its stale
    /// TXT. Returns the labels freed.
    ///
    /// # Errors
    /// DNS trouble other than a lost compare-and-swap.
    pub async fn reap(&self, node: &Node, view: &ZoneView) -> Result<Vec<String>, NamingError> {
        let Identity { service, style, .. } = &node.identity;
        let mut freed = Vec::new();
        for h in view.stale(service, *style, now_secs(), self.release_after_secs()) {
            if h.owner.instance == node.instance {
                continue;
            }
            let m = dns::free(self.client.zone(), &h.label, &h.entry.txt, &h.owner.aliases);
            if self.client.update(&m).await? == Outcome::Applied {
                tracing::info!(name = %h.label, instance = %h.owner.instance, lease = h.owner.lease, "freed a stale name");
                freed.push(h.label);
            }
        }
        Ok(freed)
    }

    /// Registers `node`: its existing name (renewed), else the lowest free slot of its service after
    /// freeing stale names.
    ///
    /// # Errors
    /// [`NamingError::Usage`] without addresses; [`NamingError::Lost`] when no slot could be taken in
    /// [`MAX_ATTEMPTS`] tries; DNS trouble.
    pub async fn register(&self, node: &Node, dry_run: bool) -> Result<Registered, NamingError> {
        if node.addresses.is_empty() {
            return Err(NamingError::Usage(
                "no addresses to register: set [naming] addresses or pass --address".into(),
            ));
        }
        let Identity { service, style, .. } = &node.identity;
        let mut view = self.read().await?;
        if let Some(h) = view.held_by(service, *style, &node.instance) {
            if !dry_run {
                self.renew_held(node, h.clone()).await?;
            }
            return Ok(Registered {
                label: h.label,
                existing: true,
                dry_run,
            });
        }
        if !dry_run {
            for label in self.reap(node, &view).await? {
                view.entries.remove(&label);
            }
        }
        let records = self.records(node, now_secs(), None);
        for slot in view.free_slots(service, *style).take(MAX_ATTEMPTS) {
            let label = slot.label(service);
            if dry_run {
                return Ok(Registered {
                    label,
                    existing: false,
                    dry_run,
                });
            }
            match self
                .client
                .update(&dns::allocate(self.client.zone(), &label, &records))
                .await?
            {
                Outcome::Applied => {
                    return Ok(Registered {
                        label,
                        existing: false,
                        dry_run,
                    });
                }
                Outcome::Refused(rcode) => {
                    tracing::debug!(name = %label, %rcode, "taken meanwhile; trying the next name");
                }
            }
        }
        Err(NamingError::Lost(format!(
            "no free name in service {service} after {MAX_ATTEMPTS} tries"
        )))
    }

    /// Renews the lease of `h` (which `node` holds), with the node's current addresses and aliases.
    async fn renew_held(&self, node: &Node, h: Held) -> Result<(), NamingError> {
        let m = dns::rewrite(
            self.client.zone(),
            &h.label,
            &h.entry.txt,
            &h.owner.aliases,
            &self.records(node, now_secs(), Some(&h)),
        );
        match self.client.update(&m).await? {
            Outcome::Applied => Ok(()),
            Outcome::Refused(rcode) => Err(NamingError::Lost(format!(
                "{}: the ownership record changed since it was read ({rcode}): another node freed or took the name",
                h.label
            ))),
        }
    }

    /// Renews the node's lease; also frees stale names of its service. Returns its label.
    ///
    /// # Errors
    /// [`NamingError::NotRegistered`] when it holds no name; [`NamingError::Lost`] when its name was
    /// taken away between the read and the write, [`RENEW_ROUNDS`] times; DNS trouble.
    pub async fn renew(&self, node: &Node, dry_run: bool) -> Result<String, NamingError> {
        let Identity { service, style, .. } = &node.identity;
        let mut last = None;
        for _ in 0..RENEW_ROUNDS {
            let view = self.read().await?;
            let Some(h) = view.held_by(service, *style, &node.instance) else {
                return Err(self.not_registered(node));
            };
            if dry_run {
                return Ok(h.label);
            }
            let label = h.label.clone();
            match self.renew_held(node, h).await {
                Ok(()) => {
                    self.reap(node, &view).await?;
                    return Ok(label);
                }
                Err(NamingError::Lost(m)) => last = Some(m),
                Err(e) => return Err(e),
            }
        }
        Err(NamingError::Lost(last.unwrap_or_default()))
    }

    fn not_registered(&self, node: &Node) -> NamingError {
        NamingError::NotRegistered(format!(
            "instance {} holds no name in service {} of zone {}",
            node.instance,
            node.identity.service,
            self.zone()
        ))
    }

    /// Frees the node's name (and its aliases). Returns the label freed.
    ///
    /// # Errors
    /// [`NamingError::NotRegistered`], [`NamingError::Lost`] (changed since read), DNS trouble.
    pub async fn release(&self, node: &Node, dry_run: bool) -> Result<String, NamingError> {
        let Identity { service, style, .. } = &node.identity;
        let view = self.read().await?;
        let Some(h) = view.held_by(service, *style, &node.instance) else {
            return Err(self.not_registered(node));
        };
        if dry_run {
            return Ok(h.label);
        }
        let m = dns::free(self.client.zone(), &h.label, &h.entry.txt, &h.owner.aliases);
        match self.client.update(&m).await? {
            Outcome::Applied => Ok(h.label),
            Outcome::Refused(rcode) => Err(NamingError::Lost(format!(
                "{}: the ownership record changed since it was read ({rcode})",
                h.label
            ))),
        }
    }

    /// Makes the node (a slave of a `masterful` service) the master: one UPDATE pinning both
    /// names' TXT RRsets swaps the two nodes' records. Returns the master's label and the label the
    /// old master moved to (`None` when the master name was vacant, or the node already is master).
    ///
    /// # Errors
    /// [`NamingError::Usage`] for an `iterative` service or a master name holding records rrguard
    /// did not write; [`NamingError::NotRegistered`]; [`NamingError::Lost`] when another node
    /// changed either name first (another change of master won); DNS trouble.
    pub async fn change_master(
        &self,
        node: &Node,
        dry_run: bool,
    ) -> Result<(String, Option<String>), NamingError> {
        let Identity { service, style, .. } = &node.identity;
        if *style != Style::Masterful {
            return Err(NamingError::Usage(format!(
                "service {service} is {style}: change-master needs style \"masterful\""
            )));
        }
        let view = self.read().await?;
        let Some(mine) = view.held_by(service, *style, &node.instance) else {
            return Err(self.not_registered(node));
        };
        let master_label = Slot::Master.label(service);
        if mine.slot == Slot::Master {
            return Ok((master_label, None));
        }
        let me = Side {
            label: &mine.label,
            entry: &mine.entry,
            owner: &mine.owner,
        };
        let records = self.records(node, now_secs(), Some(&mine));
        let (message, moved) = match view.entries.get(&master_label) {
            None => (
                dns::take_vacant_master(self.client.zone(), &master_label, &me, &records),
                None,
            ),
            Some(entry) => {
                let Some(owner) = entry.owner() else {
                    return Err(NamingError::Usage(format!(
                        "{master_label}.{} holds records without an rrguard ownership TXT; remove them or let their owner register",
                        self.zone()
                    )));
                };
                let master = Side {
                    label: &master_label,
                    entry,
                    owner: &owner,
                };
                (
                    dns::swap(self.client.zone(), &master, &me, &records),
                    Some(mine.label.clone()),
                )
            }
        };
        if dry_run {
            return Ok((master_label, moved));
        }
        match self.client.update(&message).await? {
            Outcome::Applied => Ok((master_label, moved)),
            Outcome::Refused(rcode) => Err(NamingError::Lost(format!(
                "{master_label} or {} changed since they were read ({rcode}): another change of master (or a renewal) came first; nothing was changed",
                mine.label
            ))),
        }
    }

    /// Every name of the zone that belongs to `service` (all names with addresses when `None`).
    ///
    /// # Errors
    /// DNS trouble.
    pub async fn list(&self, service: Option<&Identity>) -> Result<Vec<Row>, NamingError> {
        let view = self.read().await?;
        let now = now_secs();
        let ra = self.release_after_secs();
        let rows = view
            .entries
            .iter()
            .filter(|(label, e)| match service {
                Some(i) => Slot::parse(&i.service, i.style, label).is_some(),
                None => !e.addresses.is_empty() || e.owner().is_some(),
            })
            .map(|(label, e)| {
                let owner = e.owner();
                Row {
                    label: label.clone(),
                    addresses: e.addresses.iter().copied().collect(),
                    lease_age: owner.as_ref().map(|o| now as i64 - o.lease as i64),
                    stale: owner.as_ref().is_some_and(|o| o.is_stale(now, ra)),
                    owner,
                }
            })
            .collect();
        Ok(rows)
    }

    /// The hosts target from the config, `path` overriding its file.
    pub fn hosts_target(&self, path: Option<PathBuf>) -> hosts::HostsTarget {
        hosts::HostsTarget {
            path: path.unwrap_or_else(|| self.cfg.hosts_file.clone()),
            prefix_file: self.cfg.hosts_prefix_file.clone(),
            backup: self.cfg.hosts_backup,
        }
    }

    /// Reads the zone and keeps the hosts file's section.
    ///
    /// # Errors
    /// DNS and file trouble.
    pub async fn hosts_sync(
        &self,
        target: &hosts::HostsTarget,
        dry_run: bool,
    ) -> Result<hosts::Synced, NamingError> {
        let view = self.read().await?;
        let lines = view.hosts_lines(self.zone());
        Ok(hosts::sync(target, self.zone(), lines, dry_run).await?)
    }
}

/// Sets the host name: `file` gets `name` and a line break (atomically, like the hosts file), then
/// sethostname(2) unless `file_only`.
///
/// # Errors
/// I/O classifications; the system call's error (it needs CAP_SYS_ADMIN).
pub fn set_hostname(
    name: &str,
    file: &std::path::Path,
    file_only: bool,
) -> Result<(), NamingError> {
    let staged = crate::act::file::Staged::write(file, format!("{name}\n").as_bytes())?;
    staged.replace()?;
    if !file_only {
        rustix::system::sethostname(name.as_bytes()).map_err(|e| {
            NamingError::Io(WriteError::Auth(format!(
                "sethostname({name}) failed: {e}; run as root (CAP_SYS_ADMIN)"
            )))
        })?;
    }
    Ok(())
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `every` from now, for daemon loops.
pub fn next_tick(every: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + every
}

impl Naming {
    /// `renew --daemon`: renews the node's lease every `renew_interval` (freeing stale names of its
    /// service on the way) until SIGTERM/SIGINT; a node whose name was taken away (or that holds
    /// none) registers again. `on_name` is called with the label whenever it changes (first time
    /// included). Transient trouble is logged and retried at the next tick.
    ///
    /// # Errors
    /// [`NamingError::Usage`] (nothing a retry fixes).
    pub async fn run_renewals(
        &self,
        node: &Node,
        dry_run: bool,
        mut on_name: impl FnMut(&str),
    ) -> Result<(), NamingError> {
        let mut current: Option<String> = None;
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            let result = match self.renew(node, dry_run).await {
                Err(NamingError::NotRegistered(_) | NamingError::Lost(_)) => {
                    if current.is_some() {
                        tracing::warn!("this node's name was taken away; registering again");
                    }
                    self.register(node, dry_run).await.map(|r| r.label)
                }
                other => other,
            };
            match result {
                Ok(label) => {
                    if current.as_deref() != Some(label.as_str()) {
                        on_name(&label);
                        current = Some(label);
                    }
                }
                Err(e @ NamingError::Usage(_)) => return Err(e),
                Err(e) => tracing::warn!("lease renewal failed, retrying at the next tick: {e}"),
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep_until(next_tick(self.cfg.renew_interval)) => {}
            }
        }
    }

    /// `hosts-sync --daemon`: [`Naming::hosts_sync`] every `hosts_interval` until SIGTERM/SIGINT;
    /// failures are logged and retried at the next tick.
    pub async fn run_hosts_sync(&self, target: &hosts::HostsTarget, dry_run: bool) {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            match self.hosts_sync(target, dry_run).await {
                Ok(hosts::Synced::Written) => {
                    tracing::info!(path = %target.path.display(), "hosts file updated");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("hosts sync failed, retrying at the next tick: {e}"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep_until(next_tick(self.cfg.hosts_interval)) => {}
            }
        }
    }
}
