use std::time::Duration;

use super::*;
use crate::agree::Tally;

const WWW: &str = "www.example.test.";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn state_with_www() -> NodeState {
    let state = NodeState::new();
    state.set_services([ConfiguredService {
        check: "http".to_owned(),
        fqdn: WWW.to_owned(),
        zone: "example.test.".to_owned(),
        writers: vec!["primary".to_owned()],
        endpoints: vec![ip("192.0.2.1"), ip("192.0.2.2")],
    }]);
    state
}

fn cluster() -> ClusterStatus {
    ClusterStatus {
        node: "mon-1".to_owned(),
        generation: 7,
        isolated: None,
        self_check_targets: vec![],
        leader: Some("mon-1".to_owned()),
        am_leader: true,
        term: 1,
        live_nodes: vec!["mon-1".to_owned(), "mon-2".to_owned()],
        peers: vec![PeerStatus {
            id: "mon-2".to_owned(),
            live: true,
            votes_count: true,
            last_heard_unix_ms: Some(1_000),
            last_heard_ms_ago: None,
        }],
        rejected_messages: [("replay".to_owned(), 2)].into(),
        tallies: ["192.0.2.1", "192.0.2.2"]
            .iter()
            .map(|e| {
                // Not agreed yet: agreed states add events (tested below), which would change the
                // counts the snapshot tests check.
                let tally = Tally {
                    state: Health::Unknown,
                    up: vec!["mon-1".to_owned()],
                    down: vec![],
                    needed: 1,
                };
                ((WWW.to_owned(), ip(e)), tally)
            })
            .collect(),
    }
}

fn probe(ok: bool, detail: &str) -> ProbeResult {
    ProbeResult {
        ok,
        latency: Duration::from_micros(1_500),
        detail: detail.to_owned(),
    }
}

#[test]
fn nothing_to_show_until_the_cluster_is_published() {
    let state = state_with_www();
    assert_eq!(state.snapshot(), None);
    state.set_cluster(cluster());
    assert!(state.snapshot().is_some());
}

#[test]
fn snapshot_joins_cluster_local_probes_and_services() {
    let state = state_with_www();
    state.set_cluster(cluster());
    state.record_probe_at(
        WWW,
        ip("192.0.2.1"),
        &probe(true, "HTTP 200"),
        Health::Up,
        None,
        5_000,
    );
    state.set_published(
        WWW,
        "primary",
        [ip("192.0.2.2"), ip("192.0.2.1"), ip("192.0.2.2")],
    );
    let s = state.snapshot_at(6_000).unwrap();
    assert_eq!(s.node, "mon-1");
    assert_eq!(s.leader.as_deref(), Some("mon-1"));
    assert_eq!(s.peers[0].last_heard_ms_ago, Some(5_000));
    assert_eq!(s.rejected_messages["replay"], 2);
    let local = s.endpoints[0]
        .local
        .as_ref()
        .expect("probed endpoint has local");
    assert_eq!(local.state, "up");
    assert_eq!(local.detail, "HTTP 200");
    assert!(
        (local.latency_ms - 1.5).abs() < 1e-9,
        "{}",
        local.latency_ms
    );
    assert_eq!(local.since_unix_ms, 5_000);
    assert_eq!(s.endpoints[1].local, None, "never probed: null");
    assert_eq!(s.services.len(), 1);
    assert_eq!(s.services[0].zone, "example.test.");
    assert_eq!(s.services[0].published, vec!["192.0.2.1", "192.0.2.2"]);
    assert_eq!(s.services[0].events.len(), 1);
    assert_eq!(s.services[0].events[0].kind, EventKind::ProbeTransition);
}

#[test]
fn since_moves_only_when_the_local_verdict_changes() {
    let state = state_with_www();
    state.set_cluster(cluster());
    let e = ip("192.0.2.1");
    state.record_probe_at(WWW, e, &probe(true, "HTTP 200"), Health::Up, None, 1_000);
    let local = |s: &NodeState| s.snapshot().unwrap().endpoints[0].local.clone().unwrap();
    assert_eq!(local(&state).heading, None);
    state.record_probe_at(
        WWW,
        e,
        &probe(false, "refused"),
        Health::Up,
        Some((Health::Down, 1, 3)),
        2_000,
    );
    // The streak towards "down" shows until a result agrees with the verdict again.
    assert_eq!(
        local(&state).heading,
        Some(Heading {
            to: "down".to_owned(),
            have: 1,
            need: 3
        })
    );
    assert_eq!(local(&state).since_unix_ms, 1_000);
    assert_eq!(local(&state).last_probe_unix_ms, 2_000);
    assert!(!local(&state).ok);
    // The entry is updated in place: the new detail replaces the old one.
    assert_eq!(local(&state).detail, "refused");
    state.record_probe_at(WWW, e, &probe(false, "refused"), Health::Down, None, 3_000);
    assert_eq!(local(&state).since_unix_ms, 3_000);
    let events = &state.snapshot().unwrap().services[0].events;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[1].message.contains("192.0.2.1 is down"),
        "{events:?}"
    );
}

#[test]
fn the_event_ring_keeps_the_newest() {
    let state = state_with_www();
    state.set_cluster(cluster());
    for i in 0..EVENTS_PER_SERVICE + 7 {
        state.push_event(Event::now(WWW, EventKind::Note, format!("note {i}")));
    }
    let events = &state.snapshot().unwrap().services[0].events;
    assert_eq!(events.len(), EVENTS_PER_SERVICE);
    assert_eq!(events[0].message, "note 7");
    assert_eq!(
        events.last().unwrap().message,
        format!("note {}", EVENTS_PER_SERVICE + 6)
    );
}

#[test]
fn plans_holds_and_writes_are_recorded_without_repeats() {
    let state = state_with_www();
    state.set_cluster(cluster());
    state.record_plan(WWW, "", None);
    state.record_plan(WWW, "-192.0.2.2 (down)", Some("192.0.2.1 in doubt"));
    state.record_plan(WWW, "-192.0.2.2 (down)", Some("192.0.2.1 in doubt"));
    state.record_write(WWW, "primary", Err("REFUSED".to_owned()));
    state.record_write(WWW, "primary", Err("REFUSED".to_owned()));
    let s = &state.snapshot().unwrap().services[0];
    assert_eq!(s.hold.as_deref(), Some("192.0.2.1 in doubt"));
    assert_eq!(s.last_error.as_deref(), Some("REFUSED"));
    assert_eq!(s.last_write_unix_ms, None);
    let kinds: Vec<EventKind> = s.events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Plan, EventKind::Hold, EventKind::WriteFailed]
    );
    state.record_plan(WWW, "-192.0.2.2 (down)", None);
    state.record_write(WWW, "primary", Ok(()));
    let s = &state.snapshot().unwrap().services[0];
    assert_eq!(s.hold, None);
    assert_eq!(s.last_error, None);
    assert!(s.last_write_unix_ms.is_some());
    let last = s.events.last().unwrap();
    assert_eq!(last.kind, EventKind::DnsUpdated);
    assert_eq!(last.message, "-192.0.2.2 (down)");
    assert_eq!(s.last_plan.as_deref(), Some("-192.0.2.2 (down)"));
}

#[test]
fn unknown_services_are_ignored_and_removed_ones_forgotten() {
    let state = state_with_www();
    state.set_cluster(cluster());
    state.record_plan("other.example.test.", "+192.0.2.9 (up)", None);
    state.push_event(Event::now("other.example.test.", EventKind::Note, "x"));
    state.record_probe(WWW, ip("192.0.2.1"), &probe(true, "ok"), Health::Up, None);
    assert_eq!(state.snapshot().unwrap().services.len(), 1);
    // A reload that keeps www but drops 192.0.2.1 keeps www's history and forgets that probe.
    state.set_services([ConfiguredService {
        check: "http".to_owned(),
        fqdn: WWW.to_owned(),
        zone: "example.test.".to_owned(),
        writers: vec!["secondary".to_owned()],
        endpoints: vec![ip("192.0.2.2")],
    }]);
    let s = state.snapshot().unwrap();
    assert_eq!(s.services[0].writer, "secondary");
    assert_eq!(s.services[0].events.len(), 1);
    assert_eq!(s.endpoints[0].local, None);
    state.set_services([]);
    assert!(state.snapshot().unwrap().services.is_empty());
}

#[test]
fn status_document_keeps_its_keys() {
    let state = state_with_www();
    state.set_cluster(cluster());
    state.record_probe_at(
        WWW,
        ip("192.0.2.1"),
        &probe(true, "HTTP 200"),
        Health::Up,
        None,
        5_000,
    );
    state.push_event(Event::now(WWW, EventKind::DnsUpdated, "x"));
    let v = serde_json::to_value(state.snapshot().unwrap()).unwrap();
    for key in [
        "node",
        "generation",
        "isolated",
        "self_check_targets",
        "leader",
        "am_leader",
        "writer",
        "am_writer",
        "term",
        "live_nodes",
        "peers",
        "rejected_messages",
        "endpoints",
        "services",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v:#}");
    }
    assert_eq!(v["leader"], "mon-1");
    assert_eq!(v["am_leader"], true);
    // Deprecated aliases, same values.
    assert_eq!(v["writer"], "mon-1");
    assert_eq!(v["am_writer"], true);
    assert_eq!(v["peers"][0]["id"], "mon-2");
    assert!(v["peers"][0]["last_heard_ms_ago"].is_u64());
    let e = &v["endpoints"][0];
    for key in [
        "service",
        "endpoint",
        "cluster_state",
        "up_votes",
        "down_votes",
        "needed",
    ] {
        assert!(e.get(key).is_some(), "missing endpoints[].{key}: {v:#}");
    }
    assert_eq!(e["local"]["state"], "up");
    assert_eq!(e["local"]["latency_ms"], 1.5);
    assert!(v["endpoints"][1]["local"].is_null());
    assert_eq!(v["services"][0]["writer"], "primary");
    assert!(v["services"][0]["hold"].is_null());
    assert_eq!(v["services"][0]["events"][1]["kind"], "dns_updated");
    assert_eq!(v["services"][0]["events"][0]["kind"], "probe_transition");
}

#[test]
fn ready_once_every_endpoint_is_probed_and_the_leader_has_read_dns() {
    let state = state_with_www();
    state.set_cluster(cluster());
    let waiting = state.snapshot().unwrap().waiting_for();
    assert_eq!(
        waiting,
        vec![
            "first probe of 192.0.2.1 (www.example.test.)",
            "first probe of 192.0.2.2 (www.example.test.)",
            "the records www.example.test. publishes (writer primary)",
        ]
    );
    state.record_probe(
        WWW,
        ip("192.0.2.1"),
        &probe(true, "HTTP 200"),
        Health::Unknown,
        None,
    );
    state.record_probe(
        WWW,
        ip("192.0.2.2"),
        &probe(false, "connection refused"),
        Health::Unknown,
        None,
    );
    assert_eq!(state.snapshot().unwrap().waiting_for().len(), 1);
    state.set_published(WWW, "primary", [ip("192.0.2.1")]);
    assert!(state.snapshot().unwrap().waiting_for().is_empty());
    // A node that does not lead never reads DNS: probes are enough.
    let follower = state_with_www();
    follower.set_cluster(ClusterStatus {
        am_leader: false,
        ..cluster()
    });
    follower.record_probe(WWW, ip("192.0.2.1"), &probe(true, "ok"), Health::Up, None);
    follower.record_probe(WWW, ip("192.0.2.2"), &probe(true, "ok"), Health::Up, None);
    assert!(follower.snapshot().unwrap().waiting_for().is_empty());
}

#[test]
fn each_writer_of_a_service_has_its_own_status() {
    let state = NodeState::new();
    state.set_services([ConfiguredService {
        check: "http".to_owned(),
        fqdn: WWW.to_owned(),
        zone: "example.test.".to_owned(),
        writers: vec!["primary".to_owned(), "cloud".to_owned()],
        endpoints: vec![ip("192.0.2.1")],
    }]);
    state.set_cluster(cluster());
    state.set_published(WWW, "primary", [ip("192.0.2.1")]);
    state.record_write(WWW, "cloud", Err("HTTP 503".to_owned()));
    let snap = state.snapshot().unwrap();
    let s = &snap.services[0];
    assert_eq!(s.writer, "primary");
    assert_eq!(s.published, vec!["192.0.2.1"]);
    assert_eq!(s.writers[0].published, vec!["192.0.2.1"]);
    assert_eq!(s.writers[1].published, Vec::<String>::new());
    assert_eq!(s.writers[1].last_error.as_deref(), Some("HTTP 503"));
    // The failing writer is named at the service level, and is what readiness still waits for.
    assert_eq!(s.last_error.as_deref(), Some("writer cloud: HTTP 503"));
    assert_eq!(s.events.last().unwrap().message, "writer cloud: HTTP 503");
    let waiting = snap.waiting_for();
    assert!(
        waiting.iter().any(|w| w.contains("(writer cloud)")),
        "{waiting:?}"
    );
    assert!(!waiting.iter().any(|w| w.contains("(writer primary)")));
    state.record_write(WWW, "cloud", Ok(()));
    assert_eq!(state.snapshot().unwrap().services[0].last_error, None);
}

fn agreed(state: &str, generation: u64, isolated: Option<&str>) -> ClusterStatus {
    let mut c = cluster();
    c.generation = generation;
    c.isolated = isolated.map(str::to_owned);
    let state = match state {
        "up" => Health::Up,
        "down" => Health::Down,
        _ => Health::Unknown,
    };
    c.tallies = c
        .tallies
        .iter()
        .enumerate()
        .map(|(i, ((s, ip), t))| {
            let t = Tally {
                state: if i == 0 { state } else { t.state },
                ..t.clone()
            };
            ((s.to_owned(), ip), t)
        })
        .collect();
    c
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    let mut got = Vec::new();
    while let Ok(e) = rx.try_recv() {
        got.push(e);
    }
    got
}

#[test]
fn subscribers_get_every_recorded_event() {
    let state = state_with_www();
    let mut rx = state.subscribe();
    state.record_probe(
        WWW,
        ip("192.0.2.1"),
        &probe(false, "refused"),
        Health::Down,
        None,
    );
    state.record_plan(WWW, "remove 192.0.2.1", None);
    state.record_write(WWW, "primary", Ok(()));
    state.record_write(WWW, "primary", Err("SERVFAIL".to_owned()));
    state.push_event(Event::now(WWW, EventKind::Note, "hello"));
    let got = drain(&mut rx);
    let kinds: Vec<EventKind> = got.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::ProbeTransition,
            EventKind::Plan,
            EventKind::DnsUpdated,
            EventKind::WriteFailed,
            EventKind::Note
        ]
    );
    assert_eq!(got[0].endpoint.as_deref(), Some("192.0.2.1"));
    assert_eq!(got[0].state.as_deref(), Some("down"));
    assert_eq!(got[0].previous.as_deref(), Some("unknown"));
    // The stream carries what the ring holds.
    state.set_cluster(cluster());
    assert_eq!(state.snapshot().unwrap().services[0].events, got);
}

#[test]
fn a_lagging_subscriber_loses_the_oldest_and_never_blocks() {
    let state = state_with_www();
    let mut rx = state.subscribe();
    let n = EVENT_STREAM_CAPACITY + 10;
    for i in 0..n {
        state.push_event(Event::now(WWW, EventKind::Note, format!("note {i}")));
    }
    match rx.try_recv() {
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(lost)) => assert_eq!(lost, 10),
        other => panic!("expected a lag, got {other:?}"),
    }
    assert_eq!(rx.try_recv().unwrap().message, "note 10");
}

#[test]
fn agreed_state_changes_are_events_once_and_survive_a_reload() {
    let state = state_with_www();
    let mut rx = state.subscribe();
    state.set_cluster(agreed("up", 1, None));
    state.set_cluster(agreed("up", 1, None));
    state.set_cluster(agreed("down", 1, None));
    // No agreement is no change; the same state afterwards is no event either.
    state.set_cluster(agreed("unknown", 1, None));
    state.set_cluster(agreed("down", 1, None));
    // A reload: a new generation starts from unknown and agrees on what was known.
    state.set_cluster(agreed("unknown", 2, None));
    state.set_cluster(agreed("down", 2, None));
    let got = drain(&mut rx);
    let states: Vec<(Option<&str>, Option<&str>)> = got
        .iter()
        .map(|e| (e.previous.as_deref(), e.state.as_deref()))
        .collect();
    assert!(
        got.iter().all(|e| e.kind == EventKind::EndpointState),
        "{got:?}"
    );
    assert_eq!(
        states,
        [(Some("unknown"), Some("up")), (Some("up"), Some("down"))]
    );
    assert_eq!(got[1].endpoint.as_deref(), Some("192.0.2.1"));
    assert!(got[1].message.contains("192.0.2.1 is down"), "{got:?}");
}

#[test]
fn isolation_is_reported_once_per_episode_and_not_at_generation_start() {
    let state = state_with_www();
    let mut rx = state.subscribe();
    let lost = Some("hears from 1 of the 2 nodes needed for a majority");
    // A generation starts isolated until it hears its peers: no event.
    state.set_cluster(agreed("unknown", 1, lost));
    state.set_cluster(agreed("unknown", 1, None));
    assert!(drain(&mut rx).is_empty());
    state.set_cluster(agreed("unknown", 1, lost));
    state.set_cluster(agreed("unknown", 1, lost));
    let got = drain(&mut rx);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind, EventKind::Isolated);
    assert_eq!(got[0].service, "");
    assert!(got[0].message.contains("majority"), "{got:?}");
    // Reloaded while isolated: the new generation's start says nothing, its joining ends it.
    state.set_cluster(agreed("unknown", 2, lost));
    assert!(drain(&mut rx).is_empty());
    state.set_cluster(agreed("unknown", 2, None));
    let got = drain(&mut rx);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].kind, EventKind::Rejoined);
    // A reload of a healthy node: isolated while it listens for its peers, then joined; no event.
    state.set_cluster(agreed("unknown", 3, lost));
    state.set_cluster(agreed("unknown", 3, None));
    assert!(drain(&mut rx).is_empty());
    // Each service's ring shows the node-wide events under its own name.
    let ring = &state.snapshot().unwrap().services[0].events;
    let kinds: Vec<EventKind> = ring.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Isolated, EventKind::Rejoined]);
    assert_eq!(ring[0].service, WWW);
}

#[test]
fn probes_reach_their_subscribers() {
    let state = state_with_www();
    let mut rx = state.subscribe_probes();
    state.record_probe(
        WWW,
        ip("192.0.2.2"),
        &probe(true, "HTTP 200"),
        Health::Up,
        None,
    );
    let got = rx.try_recv().unwrap();
    assert_eq!(got.endpoint, ip("192.0.2.2"));
    assert!(got.ok);
    assert_eq!(got.latency, Duration::from_micros(1_500));
}

#[test]
fn a_service_without_an_endpoint_yet_keeps_the_node_not_ready() {
    // A self-registered service before its address is discovered: configured without endpoints,
    // absent from the view. A follower (which waits for no DNS read) whose other service is fully
    // probed must still wait for it.
    let state = NodeState::new();
    let self_reg = "self.example.test.";
    state.set_services([
        ConfiguredService {
            check: "http".to_owned(),
            fqdn: WWW.to_owned(),
            zone: "example.test.".to_owned(),
            writers: vec!["primary".to_owned()],
            endpoints: vec![ip("192.0.2.1"), ip("192.0.2.2")],
        },
        ConfiguredService {
            check: "http".to_owned(),
            fqdn: self_reg.to_owned(),
            zone: "example.test.".to_owned(),
            writers: vec!["primary".to_owned()],
            endpoints: vec![],
        },
    ]);
    state.set_cluster(ClusterStatus {
        am_leader: false,
        ..cluster()
    });
    state.record_probe(WWW, ip("192.0.2.1"), &probe(true, "ok"), Health::Up, None);
    state.record_probe(WWW, ip("192.0.2.2"), &probe(true, "ok"), Health::Up, None);
    assert_eq!(
        state.snapshot().unwrap().waiting_for(),
        vec![
            "a first probe of an endpoint of self.example.test. (with self_register: once this node's address is discovered)"
        ]
    );
    // Probed without a verdict (an endpoint that never settles never enters the view): readiness
    // waits for a first probe, not for a verdict, or such an endpoint would keep it waiting for good.
    state.record_probe(
        self_reg,
        ip("192.0.2.8"),
        &probe(false, "HTTP 503"),
        Health::Unknown,
        None,
    );
    assert!(state.snapshot().unwrap().waiting_for().is_empty());
    // Discovered and in the view, then probed: ready.
    let mut with_self = cluster();
    with_self.am_leader = false;
    let first = with_self.tallies.values().next().unwrap().clone();
    with_self.tallies = with_self
        .tallies
        .iter()
        .map(|((s, ip), t)| ((s.to_owned(), ip), t.clone()))
        .chain([((self_reg.to_owned(), ip("192.0.2.9")), first)])
        .collect();
    state.set_cluster(with_self);
    assert_eq!(
        state.snapshot().unwrap().waiting_for(),
        vec!["first probe of 192.0.2.9 (self.example.test.)"]
    );
    state.record_probe(
        self_reg,
        ip("192.0.2.9"),
        &probe(true, "ok"),
        Health::Up,
        None,
    );
    assert!(state.snapshot().unwrap().waiting_for().is_empty());
}

#[test]
fn the_status_shows_latency_to_the_microsecond() {
    let state = state_with_www();
    state.set_cluster(cluster());
    let r = ProbeResult {
        ok: true,
        latency: Duration::from_nanos(889_780),
        detail: "HTTP 200".to_owned(),
    };
    state.record_probe_at(WWW, ip("192.0.2.1"), &r, Health::Up, None, 1_000);
    let local = state.snapshot().unwrap().endpoints[0]
        .local
        .clone()
        .unwrap();
    assert_eq!(local.latency_ms, 0.89);
}
