//! The sans-I/O part of an alert: which events become messages and when messages are (re)sent.
//! Time is passed in; nothing here sleeps, reads a clock or sends.
//!
//! - [`Gate`]: the alert's filter (`on`, `services`), de-duplication (an event with the same subject
//!   — kind, service, endpoint — and the same state, or for stateless kinds the same text, as the
//!   last one sent for that subject within `dedupe` is dropped) and rate limit (at most `rate_limit`
//!   messages in any 60 s; the excess is counted into a [`Suppressed`] summary that rides on the next
//!   message, or goes out on its own as soon as the limit allows).
//! - [`Outbox`]: the messages waiting for delivery, bounded (beyond `queue` the oldest is dropped),
//!   one in flight at a time, retried with exponential backoff ([`RETRY_MIN`] doubling to
//!   [`RETRY_MAX`]) up to `max_attempts`, then given up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::config::AlertConfig;
use crate::state::{Event, EventKind};

/// The rate limit's window.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// First retry delay after a failed delivery.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// Suppressed events whose text a summary quotes; the others are only counted.
pub const SUMMARY_QUOTES: usize = 5;

/// Events the rate limit held back since the last message, as a message reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Suppressed {
    /// How many.
    pub count: u64,
    /// How many of each kind.
    pub kinds: BTreeMap<EventKind, u64>,
    /// The first [`SUMMARY_QUOTES`] of them, whole.
    pub first: Vec<Event>,
    /// Events lost because the alert fell too far behind the event stream (its queue of unread
    /// events overflowed); not expected in practice.
    pub lost: u64,
}

impl Suppressed {
    fn is_empty(&self) -> bool {
        self.count == 0 && self.lost == 0
    }

    fn add(&mut self, event: Event) {
        self.count += 1;
        *self.kinds.entry(event.kind).or_default() += 1;
        if self.first.len() < SUMMARY_QUOTES {
            self.first.push(event);
        }
    }
}

/// What one message carries: the event that caused it (none for a summary sent on its own) and what
/// was held back before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The event.
    pub event: Option<Event>,
    /// Held back since the previous message; `None` when nothing was.
    pub suppressed: Option<Suppressed>,
}

/// What [`Gate::offer`] did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not for this alert (kind or service filtered out, or an endpoint's first verdict `up`).
    Ignored,
    /// The same condition was alerted within the dedupe window.
    Duplicate,
    /// Over the rate limit: counted into the next message's summary.
    Held,
    /// Send this.
    Send(Outgoing),
}

/// Filter, de-duplication and rate limit of one alert.
#[derive(Debug)]
pub struct Gate {
    on: std::collections::BTreeSet<EventKind>,
    services: Option<std::collections::BTreeSet<String>>,
    dedupe: Duration,
    rate_limit: usize,
    /// Per subject (kind, service, endpoint): the state or text last sent, and when.
    last: HashMap<(EventKind, String, Option<String>), (String, Instant)>,
    /// When the messages of the last [`RATE_WINDOW`] were let through.
    sent: VecDeque<Instant>,
    held: Suppressed,
}

impl Gate {
    /// The gate of `config`.
    pub fn new(config: &AlertConfig) -> Gate {
        Gate {
            on: config.on.clone(),
            services: config.services.clone(),
            dedupe: config.dedupe,
            rate_limit: usize::try_from(config.rate_limit)
                .unwrap_or(usize::MAX)
                .max(1),
            last: HashMap::new(),
            sent: VecDeque::new(),
            held: Suppressed::default(),
        }
    }

    /// Decides about `event` at `now`.
    pub fn offer(&mut self, event: Event, now: Instant) -> Verdict {
        if !self.on.contains(&event.kind) {
            return Verdict::Ignored;
        }
        // Node-wide events (empty service) concern every service.
        if let Some(services) = &self.services
            && !event.service.is_empty()
            && !services.contains(&event.service)
        {
            return Verdict::Ignored;
        }
        // An endpoint's first agreed verdict being `up` is the normal start, not news.
        if event.kind == EventKind::EndpointState
            && event.previous.as_deref() == Some("unknown")
            && event.state.as_deref() == Some("up")
        {
            return Verdict::Ignored;
        }
        let subject = (event.kind, event.service.clone(), event.endpoint.clone());
        let value = event.state.clone().unwrap_or_else(|| event.message.clone());
        if let Some((last, at)) = self.last.get(&subject)
            && *last == value
            && now.saturating_duration_since(*at) < self.dedupe
        {
            return Verdict::Duplicate;
        }
        self.expire(now);
        if self.sent.len() >= self.rate_limit {
            self.held.add(event);
            return Verdict::Held;
        }
        self.last.insert(subject, (value, now));
        self.sent.push_back(now);
        Verdict::Send(Outgoing {
            event: Some(event),
            suppressed: self.take_held(),
        })
    }

    /// Counts `n` events the alert never saw (it fell behind the stream) into the next summary.
    pub fn lost(&mut self, n: u64) {
        self.held.lost += n;
    }

    /// When [`Gate::poll`] will have a summary to send (`now` if it has one already), if anything
    /// is held back.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        if self.held.is_empty() {
            return None;
        }
        match self.sent.front() {
            Some(first) if self.sent.len() >= self.rate_limit => Some(*first + RATE_WINDOW),
            _ => Some(now),
        }
    }

    /// A summary of what is held back, once the rate limit lets one more message through.
    pub fn poll(&mut self, now: Instant) -> Option<Outgoing> {
        if self.held.is_empty() {
            return None;
        }
        self.expire(now);
        if self.sent.len() >= self.rate_limit {
            return None;
        }
        self.sent.push_back(now);
        Some(Outgoing {
            event: None,
            suppressed: self.take_held(),
        })
    }

    fn take_held(&mut self) -> Option<Suppressed> {
        let held = std::mem::take(&mut self.held);
        (!held.is_empty()).then_some(held)
    }

    fn expire(&mut self, now: Instant) {
        while let Some(first) = self.sent.front() {
            if now.saturating_duration_since(*first) >= RATE_WINDOW {
                self.sent.pop_front();
            } else {
                break;
            }
        }
        let dedupe = self.dedupe;
        if self.last.len() > 4096 {
            self.last
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < dedupe);
        }
    }
}

/// A message waiting for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending<M> {
    /// The message.
    pub message: M,
    /// Attempts made so far.
    pub attempts: u32,
}

/// What the outbox decided after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AfterFailure<M> {
    /// Tried again at this time.
    RetryAt(Instant),
    /// `max_attempts` reached: the message is dropped.
    GaveUp(Pending<M>),
}

/// Messages waiting for delivery, oldest first; the head is the one being delivered.
#[derive(Debug)]
pub struct Outbox<M> {
    queue: VecDeque<Pending<M>>,
    capacity: usize,
    max_attempts: u32,
    backoff: Duration,
    next_try: Option<Instant>,
}

impl<M> Outbox<M> {
    /// An empty outbox holding at most `capacity` messages, each tried `max_attempts` times.
    pub fn new(capacity: usize, max_attempts: u32) -> Outbox<M> {
        Outbox {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            max_attempts: max_attempts.max(1),
            backoff: RETRY_MIN,
            next_try: None,
        }
    }

    /// Queues `message`; returns the oldest message if the queue was full and it had to go.
    pub fn push(&mut self, message: M) -> Option<M> {
        let dropped = if self.queue.len() >= self.capacity {
            // Not the head while it is being retried: it keeps its place and backoff.
            let i = usize::from(self.queue.len() > 1);
            self.queue.remove(i).map(|p| p.message)
        } else {
            None
        };
        self.queue.push_back(Pending {
            message,
            attempts: 0,
        });
        dropped
    }

    /// The message to try now, if one is due at `now`.
    pub fn due(&self, now: Instant) -> Option<&M> {
        match self.next_try {
            Some(t) if t > now => None,
            _ => self.queue.front().map(|p| &p.message),
        }
    }

    /// When the head is due, if there is one.
    pub fn next_wake(&self) -> Option<Instant> {
        self.queue.front()?;
        self.next_try
    }

    /// The head was delivered: it leaves the queue and the backoff resets.
    pub fn delivered(&mut self) -> Option<Pending<M>> {
        self.backoff = RETRY_MIN;
        self.next_try = None;
        self.queue.pop_front().map(|mut p| {
            p.attempts += 1;
            p
        })
    }

    /// The head failed at `now`: retried after the backoff, or given up after `max_attempts`.
    pub fn failed(&mut self, now: Instant) -> Option<AfterFailure<M>> {
        let head = self.queue.front_mut()?;
        head.attempts += 1;
        if head.attempts >= self.max_attempts {
            let gone = self.queue.pop_front()?;
            // The receiver is down: the next message waits one backoff rather than hammering it.
            self.next_try = Some(now + self.backoff);
            return Some(AfterFailure::GaveUp(gone));
        }
        let at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        self.next_try = Some(at);
        Some(AfterFailure::RetryAt(at))
    }

    /// Messages waiting, the one in flight included.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests;
