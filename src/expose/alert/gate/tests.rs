use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::{Instant, advance};

use super::*;
use crate::expose::alert::config::{AlertConfig, Format, Target, WebhookTarget};

const WWW: &str = "www.example.test.";

fn alert(rate_limit: u32, dedupe: Duration) -> AlertConfig {
    AlertConfig {
        name: "ops".to_owned(),
        on: crate::expose::alert::config::DEFAULT_ON
            .into_iter()
            .collect(),
        services: None,
        dedupe,
        rate_limit,
        max_attempts: 3,
        queue: 4,
        timeout: Duration::from_secs(1),
        target: Target::Webhook(WebhookTarget {
            url: "http://127.0.0.1:1/".parse().unwrap(),
            format: Format::Json,
            secret: None,
        }),
    }
}

fn state_change(endpoint: &str, state: &str, previous: &str) -> Event {
    Event::now(
        WWW,
        EventKind::EndpointState,
        format!("{endpoint} is {state}"),
    )
    .about(endpoint, state, previous)
}

fn sent(v: &Verdict) -> &Outgoing {
    match v {
        Verdict::Send(o) => o,
        other => panic!("expected Send, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_same_condition_is_not_alerted_twice_within_the_window() {
    let mut gate = Gate::new(&alert(100, Duration::from_secs(300)));
    let down = || state_change("192.0.2.1", "down", "up");
    sent(&gate.offer(down(), Instant::now()));
    advance(Duration::from_secs(299)).await;
    assert_eq!(gate.offer(down(), Instant::now()), Verdict::Duplicate);
    // Another endpoint, or another state of the same one, is another condition.
    sent(&gate.offer(state_change("192.0.2.2", "down", "up"), Instant::now()));
    sent(&gate.offer(state_change("192.0.2.1", "up", "down"), Instant::now()));
    sent(&gate.offer(down(), Instant::now()));
    // Past the window the same condition alerts again.
    advance(Duration::from_secs(301)).await;
    sent(&gate.offer(down(), Instant::now()));
    // Stateless kinds compare their text.
    let failed = |m: &str| Event::now(WWW, EventKind::WriteFailed, m);
    sent(&gate.offer(failed("SERVFAIL"), Instant::now()));
    assert_eq!(
        gate.offer(failed("SERVFAIL"), Instant::now()),
        Verdict::Duplicate
    );
    sent(&gate.offer(failed("timed out"), Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn filters_by_kind_service_and_ignores_the_first_up() {
    let mut cfg = alert(100, Duration::from_secs(300));
    cfg.on = [EventKind::EndpointState, EventKind::Isolated].into();
    cfg.services = Some(BTreeSet::from(["db.example.test.".to_owned()]));
    let mut gate = Gate::new(&cfg);
    let now = Instant::now();
    assert_eq!(
        gate.offer(Event::now(WWW, EventKind::DnsUpdated, "x"), now),
        Verdict::Ignored
    );
    assert_eq!(
        gate.offer(state_change("192.0.2.1", "down", "up"), now),
        Verdict::Ignored
    );
    let db = |state: &str, previous: &str| {
        Event::now("db.example.test.", EventKind::EndpointState, "db").about(
            "192.0.2.9",
            state,
            previous,
        )
    };
    assert_eq!(gate.offer(db("up", "unknown"), now), Verdict::Ignored);
    sent(&gate.offer(db("down", "unknown"), now));
    // Node-wide events pass any services filter.
    sent(&gate.offer(Event::now("", EventKind::Isolated, "isolated"), now));
}

#[tokio::test(start_paused = true)]
async fn excess_is_held_and_summarised_never_dropped() {
    let mut gate = Gate::new(&alert(2, Duration::from_secs(300)));
    let ep = |i: u32| state_change(&format!("192.0.2.{i}"), "down", "up");
    assert!(
        sent(&gate.offer(ep(1), Instant::now()))
            .suppressed
            .is_none()
    );
    advance(Duration::from_secs(10)).await;
    sent(&gate.offer(ep(2), Instant::now()));
    for i in 3..=9 {
        assert_eq!(gate.offer(ep(i), Instant::now()), Verdict::Held);
    }
    gate.lost(2);
    // Nothing until the first message of the window is a minute old.
    let now = Instant::now();
    assert_eq!(gate.next_wake(now), Some(now + Duration::from_secs(50)));
    assert!(gate.poll(now).is_none());
    advance(Duration::from_secs(50)).await;
    let summary = gate
        .poll(Instant::now())
        .expect("a summary once the limit allows");
    assert!(summary.event.is_none());
    let s = summary.suppressed.unwrap();
    assert_eq!(s.count, 7);
    assert_eq!(s.lost, 2);
    assert_eq!(s.kinds[&EventKind::EndpointState], 7);
    assert_eq!(s.first.len(), SUMMARY_QUOTES);
    assert_eq!(s.first[0].endpoint.as_deref(), Some("192.0.2.3"));
    assert_eq!(gate.next_wake(Instant::now()), None);
    // Held events ride on the next message when one goes out first.
    advance(Duration::from_secs(60)).await;
    sent(&gate.offer(ep(10), Instant::now()));
    sent(&gate.offer(ep(11), Instant::now()));
    assert_eq!(gate.offer(ep(12), Instant::now()), Verdict::Held);
    advance(Duration::from_secs(61)).await;
    let next = gate.offer(ep(13), Instant::now());
    let next = sent(&next);
    assert_eq!(
        next.event.as_ref().unwrap().endpoint.as_deref(),
        Some("192.0.2.13")
    );
    assert_eq!(next.suppressed.as_ref().unwrap().count, 1);
    assert!(gate.poll(Instant::now()).is_none());
}

#[tokio::test(start_paused = true)]
async fn outbox_retries_with_backoff_then_gives_up() {
    let mut out: Outbox<&str> = Outbox::new(3, 3);
    assert!(out.push("a").is_none());
    assert!(out.push("b").is_none());
    let t0 = Instant::now();
    assert_eq!(out.due(t0), Some(&"a"));
    assert_eq!(out.failed(t0), Some(AfterFailure::RetryAt(t0 + RETRY_MIN)));
    assert_eq!(out.due(t0), None);
    assert_eq!(out.next_wake(), Some(t0 + RETRY_MIN));
    let t1 = t0 + RETRY_MIN;
    assert_eq!(out.due(t1), Some(&"a"));
    assert_eq!(
        out.failed(t1),
        Some(AfterFailure::RetryAt(t1 + RETRY_MIN * 2))
    );
    let t2 = t1 + RETRY_MIN * 2;
    match out.failed(t2) {
        Some(AfterFailure::GaveUp(p)) => {
            assert_eq!(p.message, "a");
            assert_eq!(p.attempts, 3);
        }
        other => panic!("{other:?}"),
    }
    // The next one waits a backoff, then goes; success resets the backoff.
    assert_eq!(out.due(t2), None);
    let t3 = t2 + RETRY_MIN * 4;
    assert_eq!(out.due(t3), Some(&"b"));
    assert_eq!(out.delivered().unwrap().attempts, 1);
    assert!(out.is_empty());
    assert_eq!(out.next_wake(), None);
}

#[test]
fn a_full_outbox_drops_the_oldest_waiting_not_the_one_in_flight() {
    let mut out: Outbox<u32> = Outbox::new(3, 3);
    for i in 1..=3 {
        assert!(out.push(i).is_none());
    }
    assert_eq!(out.push(4), Some(2));
    assert_eq!(out.len(), 3);
    assert_eq!(out.delivered().unwrap().message, 1);
    assert_eq!(out.delivered().unwrap().message, 3);
}

#[test]
fn backoff_is_capped() {
    let mut out: Outbox<u32> = Outbox::new(3, 100);
    out.push(1);
    let t = Instant::now();
    let mut last = Duration::ZERO;
    for _ in 0..20 {
        if let Some(AfterFailure::RetryAt(at)) = out.failed(t) {
            last = at - t;
        }
    }
    assert_eq!(last, RETRY_MAX);
}
