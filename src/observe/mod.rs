//! Observe: probe every endpoint on its schedule and keep its health verdict.
//!
//! - [`check`]: the check types (`http`/`https`, `tcp`, `exec`, `dns`, `icmp`), one plug-in module each owning
//!   its options, their validation and its probe; [`check::CheckConfig`] is the validated choice.
//! - [`probe`]: the [`probe::Probe`] trait, its result and what every check shares.
//! - [`scheduler`]: one task per endpoint running its probe every interval, staggered, never overlapping
//!   itself, with a hard timeout; results go to the service's controller over a channel.
//! - [`health`]: the sans-I/O fall/rise state machine.
//! - [`lag`]: the probe engine's own lateness; a failure while rrguard itself was late abstains
//!   instead of counting against the endpoint.
//! - [`selfaddr`]: self-registration's sources of this node's own address (an interface, an echo
//!   URL, a cloud metadata URL).

pub mod check;
pub mod health;
pub mod lag;
pub mod probe;
pub mod pump;
pub mod scheduler;
pub mod selfaddr;
