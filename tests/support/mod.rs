//! Synchronous integration-test harness for rrguard: real DNS servers (Knot, BIND) that accept TSIG-
//! signed RFC 2136 UPDATEs, HTTP endpoints that can fail one address at a time, and the rrguard
//! daemon as a subprocess.
//!
//! Plain std and blocking on purpose: it works from `#[test]` and from inside `#[tokio::test]` alike
//! (it never creates or blocks on a runtime; calls just block the calling thread briefly).
//! Everything binds free ports on loopback only (127.0.0.0/8, ::1), so tests and test binaries can
//! run in parallel. Use it from an integration test with `mod support;`.

// Each test binary compiles its own copy and uses only part of it.
#![allow(dead_code, unused_imports)]
// The harness measures real time while it blocks threads (`thread::sleep`, polling a child process),
// from plain `#[test]`s and from inside `#[tokio::test]`s alike: a paused tokio clock would never
// advance there, so its deadlines use `std::time::Instant` on purpose (.clippy.toml bans it elsewhere).
#![allow(clippy::disallowed_types)]

/// `knot_and_bind!(a, b)` runs each scenario function `fn a(kind: DnsKind)` as two tests,
/// `knot::a` and `bind::a`. The calling file imports `DnsKind` and declares `#[macro_use] mod support;`.
#[allow(unused_macros)]
macro_rules! knot_and_bind {
    ($($name:ident),* $(,)?) => {
        mod knot {
            $( #[test] fn $name() { super::$name(super::DnsKind::Knot) } )*
        }
        mod bind {
            $( #[test] fn $name() { super::$name(super::DnsKind::Bind) } )*
        }
    };
}

#[macro_use]
pub mod battery;
pub mod browser;
mod daemon;
mod dns;
mod http;
mod netns;
mod procnet;
mod setup;
mod util;

pub use daemon::{Daemon, rrguard_bin};
pub use dns::{DnsKind, DnsServer, KEY_NAME, TSIG_ALGORITHM, ZONE, ask_a, dig};
pub use http::{HttpEndpoints, read_head};
pub use netns::{Lab, Ns, NsKnot, NsProcess, required_tool};
pub use setup::{KnotSetup, KnotSetupBuilder};
pub use util::{free_tcp_port, service_config, wait_until};

// Internals re-exported for the harness's own self-tests (tests/harness.rs).
pub(crate) use procnet::{Ownership, port_ownership};
pub(crate) use util::base64_encode;

// Test-written server configurations (views, several zones, secondaries): tests/field.rs.
mod custom;
pub use custom::{CustomDns, Site, zone_text};
