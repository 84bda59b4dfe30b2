//! Self-registration in the daemon (`[service.self_register]`): the I/O around a service whose one
//! endpoint is this node's own address.
//!
//! - [`discover_until`]: asks the configured source for the address at the start of every generation
//!   (start and reload), retrying with backoff ([`selfaddr::retry_delay`]) until it answers or the
//!   generation ends; a failure is logged with the source, what came back and the fix, and never ends
//!   the daemon.
//! - [`remove_on_shutdown`]: on SIGTERM/SIGINT (not on reload), with `remove_on_shutdown = true`,
//!   removes this node's address from each writer of the service, only while another address remains
//!   in the RRset, under compare-and-swap on what was read.
//!
//! Such a service is per node: its lanes follow this node's own verdicts and write on every node
//! (`controller::Lane`), and the planner counts the other nodes' addresses, which it never touches,
//! towards the one record a name keeps (`decide::Policy::self_register`).

use std::net::IpAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::act::{Precondition, RecordChange, Writer};
use crate::config::ServiceConfig;
use crate::observe::selfaddr::{self, SelfRegisterConfig};

/// This node's address from `cfg`'s source, retried with backoff; `None` once `cancel` fires first.
pub(super) async fn discover_until(
    cfg: &SelfRegisterConfig,
    fqdn: &str,
    cancel: &CancellationToken,
) -> Option<IpAddr> {
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return None,
            r = selfaddr::discover(cfg) => r,
        };
        match attempt {
            Ok(ip) => {
                info!(service = %fqdn, endpoint = %ip, source = %cfg.address, "self_register: this node's address");
                return Some(ip);
            }
            Err(e) => {
                let wait = selfaddr::retry_delay(failures);
                failures = failures.saturating_add(1);
                error!(service = %fqdn, "{e}; retrying in {}", humantime::format_duration(wait));
                tokio::select! {
                    _ = cancel.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Removes `ip` from every writer of `svc` if another address remains at the name; never the last
/// record. Errors are logged: the node is stopping and has nobody to retry for it.
pub(super) async fn remove_on_shutdown(
    svc: &ServiceConfig,
    ip: IpAddr,
    writers: &[Arc<dyn Writer>],
    dry_run: bool,
) {
    for w in writers {
        let published = match w.read(&svc.fqdn, &svc.zone).await {
            Ok(p) => p,
            Err(e) => {
                error!(service = %svc.fqdn, writer = w.name(), endpoint = %ip, "self_register: cannot read before removing this node's address on shutdown: {e}");
                continue;
            }
        };
        let addresses = published.addresses();
        if !addresses.contains(&ip) {
            continue;
        }
        if addresses.len() < 2 {
            warn!(service = %svc.fqdn, writer = w.name(), endpoint = %ip, "self_register: this node's address is the last record; kept on shutdown");
            continue;
        }
        if dry_run {
            info!(service = %svc.fqdn, writer = w.name(), endpoint = %ip, "dry run: would remove this node's address on shutdown");
            continue;
        }
        let change = RecordChange {
            fqdn: svc.fqdn.clone(),
            zone: svc.zone.clone(),
            ttl: svc.ttl,
            precondition: Precondition::RrsetEquals(addresses),
            add: Default::default(),
            remove: [ip].into(),
            rettl: Default::default(),
            weights: Default::default(),
        };
        match w.apply(&change).await {
            Ok(()) => {
                info!(service = %svc.fqdn, writer = w.name(), endpoint = %ip, "self_register: removed this node's address on shutdown")
            }
            Err(e) => {
                error!(service = %svc.fqdn, writer = w.name(), endpoint = %ip, "self_register: removing this node's address on shutdown failed: {e}")
            }
        }
    }
}
