//! The writer battery (`tests/support/battery.rs`) over `rfc2136` on Knot and on BIND and over
//! `act::memory::MemoryWriter`; other writers run it from their own test files.
//!
//! Below the battery, rows that only make sense for one back end: `rfc2136` refusals, key files and
//! transport errors; `memory` without compare-and-swap.

#[macro_use]
mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use rrguard::act::memory::MemoryWriter;
use rrguard::act::rfc2136::Rfc2136Writer;
use rrguard::act::{Capabilities, Precondition, Published, RecordChange, WriteError, Writer};
use rrguard::config::{Rfc2136Config, TsigAlgorithm, TsigConfig};
use support::battery::*;
use support::{DnsKind, DnsServer};

/// `rfc2136` against a real server; out-of-band changes by nsupdate, reads by dig.
struct ServerFixture {
    dns: DnsServer,
    writer: Rfc2136Writer,
}

impl ServerFixture {
    fn start(kind: DnsKind) -> Box<dyn Fixture> {
        let dns = DnsServer::start(kind, "");
        let writer = writer(&dns, secret(&dns));
        Box::new(ServerFixture { dns, writer })
    }
}

impl Fixture for ServerFixture {
    fn writer(&self) -> &dyn Writer {
        &self.writer
    }

    fn set(&self, fqdn: &str, published: &Published) {
        let mut script: Vec<String> = ["A", "AAAA", "CNAME"]
            .iter()
            .map(|t| format!("update delete {fqdn} {t}"))
            .collect();
        for (ip, ttl) in &published.records {
            let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
            script.push(format!("update add {fqdn} {ttl} {rtype} {ip}"));
        }
        if let Some(target) = &published.cname {
            script.push(format!("update add {fqdn} 60 CNAME {target}"));
        }
        self.dns.nsupdate(&script.join("\n"));
    }

    fn authoritative(&self, fqdn: &str) -> Published {
        let mut out = Published::default();
        for rtype in ["A", "AAAA"] {
            for (ttl, rdata) in self.dns.query_with_ttl(fqdn, rtype) {
                match rdata.split_once(' ') {
                    Some(("CNAME", target)) => out.cname = Some(target.to_owned()),
                    Some((_, ip)) => {
                        out.records.insert(ip.parse().expect("an address"), ttl);
                    }
                    None => panic!("unexpected answer {rdata:?}"),
                }
            }
        }
        out
    }

    fn zone(&self) -> &str {
        &self.dns.zone
    }

    fn failing(&self, failure: Failure) -> Result<Box<dyn Writer>, &'static str> {
        Ok(Box::new(match failure {
            Failure::ServerError => {
                // A port nobody listens on: the connection is refused.
                let port = TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .unwrap();
                writer_at(port, &self.dns.key_name, secret(&self.dns))
            }
            Failure::BadCredentials => {
                writer(&self.dns, b"definitely-not-the-right-secret!".to_vec())
            }
        }))
    }
}

/// `memory`: out-of-band changes and reads go to its store directly.
struct MemoryFixture(MemoryWriter);

impl MemoryFixture {
    fn boxed(capabilities: Option<Capabilities>) -> Box<dyn Fixture> {
        let w = MemoryWriter::new("memory");
        Box::new(MemoryFixture(match capabilities {
            Some(c) => w.with_capabilities(c),
            None => w,
        }))
    }
}

impl Fixture for MemoryFixture {
    fn writer(&self) -> &dyn Writer {
        &self.0
    }
    fn set(&self, fqdn: &str, published: &Published) {
        self.0.set(fqdn, published.clone());
    }
    fn authoritative(&self, fqdn: &str) -> Published {
        self.0.read_now(fqdn)
    }
    fn failing(&self, _: Failure) -> Result<Box<dyn Writer>, &'static str> {
        Err("an in-memory store has no server and no credentials")
    }
}

fn writer(dns: &DnsServer, secret: Vec<u8>) -> Rfc2136Writer {
    writer_at(dns.addr, &dns.key_name, secret)
}

fn writer_at(addr: std::net::SocketAddr, key_name: &str, secret: Vec<u8>) -> Rfc2136Writer {
    Rfc2136Writer::new(
        "primary",
        Rfc2136Config {
            servers: vec![addr],
            tsig: TsigConfig {
                name: format!("{key_name}."),
                algorithm: TsigAlgorithm::HmacSha256,
                secret,
            },
            timeout: Duration::from_secs(2),
        },
    )
    .unwrap()
}

fn secret(dns: &DnsServer) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(&dns.secret_b64)
        .unwrap()
}

/// The battery checks the data; here what a server adds: the refusal names the rcode an operator
/// knows from dig, and the zone's serial shows that no part of the UPDATE was applied.
async fn refused_update_names_the_rcode_and_leaves_the_serial(kind: DnsKind) {
    let dns = DnsServer::start(kind, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    let w = writer(&dns, secret(&dns));
    dns.nsupdate("update add www.example.test. 60 A 127.0.0.5");
    let serial = dns.soa_serial();
    let stale = change(&["127.0.0.2", "127.0.0.3"], &["127.0.0.6"], &["127.0.0.3"]);
    match w.apply(&stale).await {
        Err(WriteError::Conflict(why)) => assert!(why.ends_with("answered NXRRSET"), "{why}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(dns.soa_serial(), serial);
}

async fn wrong_key_is_an_operator_error(kind: DnsKind) {
    let dns = DnsServer::start(kind, "www A 127.0.0.2\n");
    let w = writer(&dns, b"definitely-not-the-right-secret!".to_vec());
    let err = w
        .apply(&change(&["127.0.0.2"], &["127.0.0.3"], &[]))
        .await
        .unwrap_err();
    assert!(err.needs_operator(), "{err:?}");
    assert!(
        err.to_string().contains("TSIG") || err.to_string().contains("NOTAUTH"),
        "{err}"
    );
    assert_eq!(dns.query("www.example.test", "A"), vec!["127.0.0.2"]);
}

async fn unreachable_server_is_transient(kind: DnsKind) {
    let mut dns = DnsServer::start(kind, "www A 127.0.0.2\n");
    let w = writer(&dns, secret(&dns));
    dns.stop();
    match w.read(FQDN, ZONE).await {
        Err(e @ WriteError::Transient(_)) => assert!(!e.needs_operator()),
        other => panic!("expected a transient error, got {other:?}"),
    }
}

/// A key file shared with the server often holds another key first (BIND's rndc-key): the writer
/// built from the config must sign with the key named like `tsig.name`, in BIND and Knot syntax.
async fn key_file_with_another_key_first_signs_with_the_named_key(kind: DnsKind) {
    let dns = DnsServer::start(kind, "www A 127.0.0.2\n");
    let dir = tempfile::tempdir().unwrap();
    let (key, secret) = (&dns.key_name, &dns.secret_b64);
    let other = "cm5kYy1zZWNyZXQtcm5kYy1zZWNyZXQtcm5kYy1zZWM=";
    let files = [
        format!(
            "key \"rndc-key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{other}\";\n}};\nkey \"{key}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n"
        ),
        format!(
            "key:\n  - id: rndc-key\n    algorithm: hmac-sha256\n    secret: {other}\n  - id: {key}\n    algorithm: hmac-sha256\n    secret: {secret}\n"
        ),
    ];
    for (i, file) in files.iter().enumerate() {
        std::fs::write(dir.path().join("keys.conf"), file).unwrap();
        let text = format!(
            "[[writer]]\nname = \"primary\"\ntype = \"rfc2136\"\nserver = \"{}\"\ntsig = {{ name = \"{}\", algorithm = \"hmac-sha256\", secret_file = \"keys.conf\" }}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"primary\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n",
            dns.addr,
            key.to_uppercase()
        );
        let config = rrguard::config::parse(&dir.path().join("rrguard.toml"), &text).unwrap();
        let w = rrguard::act::build(&config.writers[0], &Default::default()).unwrap();
        let ip = format!("127.0.0.{}", 10 + i);
        let expected: Vec<String> = dns.query("www.example.test", "A");
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        w.apply(&change(&expected, &[&ip], &[])).await.unwrap();
        assert!(dns.query("www.example.test", "A").contains(&ip), "{file}");
    }
}

/// Keeps the writer trait object-safe and shareable, as the daemon uses it.
#[test]
fn writer_is_shareable_trait_object() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn Writer>();
    let _: Option<Arc<dyn Writer>> = None;
}

// Every writer, one line each.
writer_battery! {
    rfc2136_knot => ServerFixture::start(DnsKind::Knot);
    rfc2136_bind => ServerFixture::start(DnsKind::Bind);
    memory => MemoryFixture::boxed(None);
}

/// `memory` declaring no compare-and-swap: preconditions are ignored and stale changes applied, as a
/// back end without conditional writes would (the core re-reads after every write instead).
#[tokio::test]
async fn memory_without_compare_and_swap_applies_stale_changes() {
    let f = MemoryFixture::boxed(Some(Capabilities {
        compare_and_swap: false,
        ..MemoryWriter::new("m").capabilities()
    }));
    assert!(!f.writer().capabilities().compare_and_swap);
    capabilities_are_honoured(&*f).await;
    // NameNotInUse is not enforced either.
    f.set(FQDN, &published(&[("127.0.0.2", 60)]));
    let allocate = RecordChange {
        precondition: Precondition::NameNotInUse,
        ..change(&[], &["127.0.0.8"], &[])
    };
    f.writer().apply(&allocate).await.unwrap();
    assert_eq!(
        f.authoritative(FQDN),
        published(&[("127.0.0.2", 30), ("127.0.0.8", 30)])
    );
}

/// Rows for `rfc2136` only, on each server.
macro_rules! rfc2136_rows {
    ($($name:ident),* $(,)?) => {
        mod rfc2136_knot_only {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::DnsKind::Knot).await } )*
        }
        mod rfc2136_bind_only {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::DnsKind::Bind).await } )*
        }
    };
}

/// Changes of many names of one zone, written as one batch, go out in one UPDATE (the zone's serial
/// moves once), and each name gets its records.
async fn batch_of_one_zone_is_one_update(kind: DnsKind) {
    let dns = DnsServer::start(kind, "");
    let w = writer(&dns, secret(&dns));
    let changes: Vec<RecordChange> = (0..40)
        .map(|i| RecordChange {
            fqdn: format!("n{i}.example.test."),
            ..change(&[], &[&format!("127.0.1.{i}"), "127.0.0.2"], &[])
        })
        .collect();
    let serial = dns.soa_serial();
    let results = w.apply_batch(&changes).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        dns.soa_serial(),
        serial.wrapping_add(1),
        "one UPDATE for 40 names"
    );
    for i in [0, 17, 39] {
        assert_eq!(
            dns.query(&format!("n{i}.example.test"), "A"),
            vec!["127.0.0.2".to_owned(), format!("127.0.1.{i}")]
        );
    }
}

/// One stale precondition refuses the whole UPDATE (RFC 2136 §3.4); the batch is then written one
/// change per UPDATE, so only the stale change fails, as a conflict, and its neighbours land.
async fn stale_change_in_a_batch_fails_alone(kind: DnsKind) {
    let dns = DnsServer::start(kind, "b A 127.0.0.9\n");
    let w = writer(&dns, secret(&dns));
    let mut changes: Vec<RecordChange> = ["a", "b", "c"]
        .iter()
        .map(|l| RecordChange {
            fqdn: format!("{l}.example.test."),
            ..change(&[], &["127.0.0.2"], &[])
        })
        .collect();
    // "b" is believed empty but publishes 127.0.0.9.
    changes[1].precondition = Precondition::RrsetEquals(Default::default());
    let results = w.apply_batch(&changes).await;
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(WriteError::Conflict(_))),
        "{results:?}"
    );
    assert!(results[2].is_ok(), "{results:?}");
    assert_eq!(dns.query("a.example.test", "A"), vec!["127.0.0.2"]);
    assert_eq!(dns.query("b.example.test", "A"), vec!["127.0.0.9"]);
    assert_eq!(dns.query("c.example.test", "A"), vec!["127.0.0.2"]);
}

/// A batch larger than one signed message is split into messages that fit, none refused for size.
async fn batch_larger_than_a_message_is_split(kind: DnsKind) {
    let dns = DnsServer::start(kind, "");
    let w = writer(&dns, secret(&dns));
    // 600 names × 4 records ≈ 2,400 RRs with long owner names: well over 64 KiB in one message.
    let changes: Vec<RecordChange> = (0..600)
        .map(|i| RecordChange {
            fqdn: format!("a-rather-long-label-to-fill-the-message-{i}.example.test."),
            ..change(
                &[],
                &["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"],
                &[],
            )
        })
        .collect();
    let serial = dns.soa_serial();
    let results = w.apply_batch(&changes).await;
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    let updates = dns.soa_serial().wrapping_sub(serial);
    assert!(
        (2..=20).contains(&updates),
        "{updates} UPDATEs for 600 names"
    );
    assert_eq!(
        dns.query(
            "a-rather-long-label-to-fill-the-message-599.example.test",
            "A"
        )
        .len(),
        4
    );
}

rfc2136_rows!(
    batch_of_one_zone_is_one_update,
    stale_change_in_a_batch_fails_alone,
    batch_larger_than_a_message_is_split,
    key_file_with_another_key_first_signs_with_the_named_key,
    refused_update_names_the_rcode_and_leaves_the_serial,
    wrong_key_is_an_operator_error,
    unreachable_server_is_transient,
);
