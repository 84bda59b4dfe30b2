//! Observe: probe every endpoint on its schedule and keep its health verdict.
//!
//! - [`probe`]: the [`probe::Probe`] trait and the `http`/`https`/`tcp` checks.
//! - [`scheduler`]: one task per endpoint running its probe every interval, staggered, never overlapping
//!   itself, with a hard timeout; results go to the service's controller over a channel.
//! - [`health`]: the sans-I/O fall/rise state machine.

pub mod health;
pub mod probe;
pub mod scheduler;
