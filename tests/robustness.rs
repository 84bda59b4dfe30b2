//! Invariant 8: bad input gets a clear error and never crashes. Property tests feed the two parsers that
//! take input from outside — peer messages and configuration files — with arbitrary and mutated input.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use rrguard::agree::wire::{self, Heard, Key, Message, Vote};
use rrguard::agree::{Cluster, ClusterConfig, Quorum};
use rrguard::config::{self, ConfigError};
use rrguard::observe::health::Health;
use tokio::time::Instant;

const WALL: u64 = 1_800_000_000_000;

fn cluster() -> Cluster {
    let cfg = ClusterConfig {
        me: "mon-1".to_owned(),
        nodes: ["mon-1", "mon-2", "mon-3"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        quorum: Quorum::Majority,
        service_quorum: Default::default(),
        vote_ttl: Duration::from_secs(3),
        max_clock_skew: Duration::from_secs(30),
        settle: Duration::ZERO,
    };
    let mut c = Cluster::new(cfg, 1);
    c.set_local(
        ("www.example.test.".to_owned(), "192.0.2.1".parse().unwrap()),
        Health::Up,
    );
    c
}

fn message_strategy() -> impl Strategy<Value = Message> {
    let node = prop_oneof![
        Just("mon-1".to_owned()),
        Just("mon-2".to_owned()),
        Just("mon-3".to_owned()),
        "[a-z0-9-]{1,12}",
    ];
    let heard = (
        prop_oneof![Just("mon-1".to_owned()), "[a-z0-9-]{1,8}"],
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(node, generation, seq)| Heard {
            node,
            generation,
            seq,
        });
    let vote = (
        prop_oneof![Just("www.example.test.".to_owned()), "[a-z.]{1,20}"],
        any::<[u8; 4]>(),
        any::<bool>(),
    )
        .prop_map(|(service, ip, up)| Vote {
            service,
            endpoint: std::net::IpAddr::from(ip),
            up,
        });
    (
        0u32..3,
        node,
        any::<u64>(),
        any::<u64>(),
        prop_oneof![Just(WALL), any::<u64>(), (WALL - 60_000..WALL + 60_000)],
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec("[a-z0-9-]{1,8}", 0..5),
        prop::collection::vec(vote, 0..20),
        prop::collection::vec(heard, 0..4),
    )
        .prop_map(
            |(v, node, generation, seq, sent_at_ms, isolated, settling, sees, votes, heard)| {
                Message {
                    v,
                    node,
                    generation,
                    seq,
                    sent_at_ms,
                    isolated,
                    settling,
                    sees,
                    votes,
                    heard,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Arbitrary bytes, correctly authenticated (the worst case: a peer with the secret and a bug) or
    /// not: decoding returns an error or a message, and the core then accepts or rejects it, never
    /// panicking.
    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048), sign in any::<bool>()) {
        let key = Key::new(b"robustness test secret");
        let mac = if sign { key.mac(&body) } else { "AAAA".to_owned() };
        let mut c = cluster();
        match wire::decode(&body, Some(&mac), &key) {
            Ok(msg) => {
                let _ = c.receive(&msg, Instant::now(), WALL);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let _ = c.view(Instant::now());
    }

    /// Any sequence of well-formed but hostile messages (unknown nodes, wrong versions, wild clocks,
    /// replays, votes for unknown services) leaves the core consistent: votes only from configured,
    /// live, non-isolated peers count, and never more of them than there are nodes.
    #[test]
    fn hostile_message_sequences_keep_the_core_consistent(msgs in prop::collection::vec(message_strategy(), 1..40)) {
        let key = Key::new(b"robustness test secret");
        let mut c = cluster();
        let now = Instant::now();
        for m in &msgs {
            // Through the real codec, as from the HTTP server.
            let (body, mac) = wire::encode(m, &key);
            if let Ok(decoded) = wire::decode(&body, Some(&mac), &key) {
                let _ = c.receive(&decoded, now, WALL);
            }
            let v = c.view(now);
            for tally in v.endpoints.values() {
                prop_assert!(tally.up.len() + tally.down.len() <= 3);
                for voter in tally.up.iter().chain(&tally.down) {
                    prop_assert!(["mon-1", "mon-2", "mon-3"].contains(&voter.as_str()), "{voter}");
                }
            }
            prop_assert!(v.endpoints.len() == 1, "votes for unknown services are not tallied");
        }
    }

    /// Random edits of a valid configuration: the parser returns a config or problems with positions
    /// inside the file, never a panic.
    #[test]
    fn mutated_configs_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<char>()), 1..6)) {
        let base = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/rrguard.example.toml")).unwrap();
        let mut text: Vec<char> = base.chars().collect();
        for (at, op, ch) in edits {
            if text.is_empty() {
                break;
            }
            let i = at.index(text.len());
            match op {
                0 => { text.remove(i); }
                1 => text.insert(i, ch),
                2 => text[i] = ch,
                // Duplicate a line: exercises duplicate keys and tables.
                _ => {
                    let s: String = text.iter().collect();
                    let line = s.lines().nth(i % s.lines().count().max(1)).unwrap_or("").to_owned();
                    text.extend(format!("\n{line}\n").chars());
                }
            }
        }
        let text: String = text.into_iter().collect();
        let lines = text.lines().count() + 1;
        match config::parse(Path::new("mutated.toml"), &text) {
            Ok(_) => {}
            Err(ConfigError::Invalid { problems, .. }) => {
                prop_assert!(!problems.is_empty());
                for p in problems {
                    prop_assert!(p.line <= lines, "line {} of {lines}: {}", p.line, p.message);
                    prop_assert!(!p.message.is_empty());
                }
            }
            Err(e) => prop_assert!(false, "unexpected error kind: {e}"),
        }
    }

    /// Entirely arbitrary text is rejected with positions, never accepted by accident into something
    /// that writes (no writers) and never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        if let Ok(c) = config::parse(Path::new("x.toml"), &text) {
            prop_assert!(c.services.is_empty() || !c.writers.is_empty());
        }
    }
}
