//! rrguard keeps DNS names pointing only at healthy servers.
//!
//! Modules, in the order data flows through them:
//!
//! - [`config`]: the TOML file, parsed and validated before anything binds a port.
//! - [`observe`]: probes (`http`, `https`, `tcp`, `exec`, `dns`), the per-endpoint scheduler and the
//!   health state machine that turns probe results into up/down verdicts.
//! - [`agree`]: several monitor nodes agree by quorum: the sans-I/O cluster core (vote expiry,
//!   isolation, leader election), the authenticated peer message format and the peer transport.
//! - [`decide`]: the pure planner (verdicts and the published records → desired records and the plan,
//!   with the safety policies `min_healthy`, `all_down`) and [`decide::service::ServiceCore`], the
//!   sans-I/O state machine of one service (hold, settle, backoff, reconcile, conflicts, read-back)
//!   that both the daemon and the simulator drive.
//! - [`act`]: DNS writers behind the [`act::Writer`] trait (read A/AAAA with TTLs and a CNAME; apply
//!   a change under a typed precondition; declared capabilities); `rfc2136` (UPDATE + TSIG,
//!   compare-and-swap with prerequisites) and `memory` (an in-memory primary).
//! - [`state`]: the shared, typed node state: the agreement actor and the controllers publish into
//!   it (view, peers, per-endpoint last probe, plans, writes, events); readers take a
//!   [`state::NodeStatus`] snapshot, the one schema of everything rrguard shows about itself.
//! - [`expose`]: the node's HTTP server: peer messages in, status out. It reads [`state`] and never
//!   imports [`daemon`].
//! - [`daemon`]: wires the above together: per-service controllers (the I/O shells of the service
//!   cores: probe loops, votes, the core's reads and writes), the agreement actor, signals and config
//!   reload. Also the one-shot `plan` used by the CLI.
//! - [`naming`]: fleet naming in DNS (`web-0`, `db-master`): registration, leases, change of
//!   master by compare-and-swap UPDATEs, and `/etc/hosts` sync from the naming zone.
//! - [`subprocess`]: child processes in their own process group, killed with the group on timeout
//!   and reaped; shared by the `exec` check and the `script` writer.
//! - [`demo`]: `rrguard demo`, the daemon with built-in endpoints and its own served zone, nothing
//!   else needed.
//!
//! The decision core (`observe::health`, `agree` apart from `agree::transport`, `decide`) is sans-I/O:
//! it never reads a clock, sleeps or opens a socket; callers pass `now` and inputs in and get decisions
//! out.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod act;
pub mod agree;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod demo;
pub mod expose;
pub mod naming;
pub mod observe;
pub mod runtime;
pub mod state;
pub mod subprocess;
