//! DNS writes and reads that survive real servers: the `rfc2136` writer against Knot and BIND set up the
//! way operators set them up — views chosen by key, CNAMEs at the name, zone cuts, TSIG failures, large
//! RRsets, BIND's record cap, truncated answers. Each test asserts the value today's wrong behaviour
//! would not give.

#[macro_use]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rrguard::act::rfc2136::Rfc2136Writer;
use rrguard::act::{Precondition, Published, RecordChange, WriteError, Writer};
use rrguard::config::{Rfc2136Config, TsigAlgorithm, TsigConfig};
use rrguard::daemon::converge;
use rrguard::decide::Health;
use rrguard::decide::service::{Event, ServiceCore, ServiceView, Settings};
use rrguard::observe::health::HealthMachine;
use support::{CustomDns, Daemon, DnsKind, DnsServer, HttpEndpoints, Site, zone_text};

const FQDN: &str = "www.example.test.";
const ZONE: &str = "example.test.";

fn decode(b64: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn writer_at(server: SocketAddr, key: &str, secret_b64: &str) -> Rfc2136Writer {
    Rfc2136Writer::new(
        "primary",
        Rfc2136Config {
            servers: vec![server],
            tsig: TsigConfig {
                name: key.to_owned(),
                algorithm: TsigAlgorithm::HmacSha256,
                secret: decode(secret_b64),
            },
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap()
}

fn writer(dns: &DnsServer) -> Rfc2136Writer {
    writer_at(dns.addr, "upd-key.", &dns.secret_b64)
}

fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
    ips.iter().map(|s| s.parse().unwrap()).collect()
}

fn change(
    fqdn: &str,
    zone: &str,
    expected: &BTreeSet<IpAddr>,
    add: &[&str],
    remove: &[&str],
) -> RecordChange {
    RecordChange {
        fqdn: fqdn.to_owned(),
        zone: zone.to_owned(),
        ttl: 30,
        precondition: Precondition::RrsetEquals(expected.clone()),
        add: set(add),
        remove: set(remove),
        rettl: BTreeSet::new(),
        weights: Default::default(),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The BIND key clause and zone options of the test key.
fn bind_key(secret: &str) -> String {
    format!(r#"key "upd-key" {{ algorithm hmac-sha256; secret "{secret}"; }};"#)
}

fn bind_options(site: &Site<'_>, extra: &str) -> String {
    format!(
        r#"options {{ directory "{dir}"; pid-file "{dir}/run/named.pid"; session-keyfile none;
    listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; recursion no;
    dnssec-validation no; reuseport no; notify no; {extra} }};
controls {{ }};
{key}
"#,
        dir = site.dir.display(),
        port = site.port,
        key = bind_key(site.secret_b64),
    )
}

fn knot_head(site: &Site<'_>) -> String {
    format!(
        r#"server:
    rundir: "{dir}/run"
    listen: 127.0.0.1@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{dir}/db"
key:
  - id: upd-key
    algorithm: hmac-sha256
    secret: {secret}
acl:
  - id: upd
    key: upd-key
    action: [update, transfer]
"#,
        dir = site.dir.display(),
        port = site.port,
        secret = site.secret_b64,
    )
}

// ---- 1. Reads see what writes change ----

/// BIND picks the view by the key: the internal view (matched by the key) holds .2 .3, the external
/// one 127.0.0.200. Signed reads see the internal view, so one UPDATE converges with no NXRRSET.
#[test]
fn bind_views_signed_reads_see_the_view_that_is_written() {
    let files = [
        (
            "internal.zone",
            zone_text(
                "example.test",
                "ns1 A 127.0.0.1\nwww A 127.0.0.2\nwww A 127.0.0.3",
            ),
        ),
        (
            "external.zone",
            zone_text("example.test", "ns1 A 127.0.0.1\nwww A 127.0.0.200"),
        ),
    ];
    let dns = CustomDns::start(DnsKind::Bind, &files, None, ZONE, &|site| {
        format!(
            r#"{head}
view "internal" {{
    match-clients {{ key upd-key; }};
    zone "example.test" {{ type primary; file "{dir}/internal.zone"; allow-update {{ key upd-key; }}; }};
}};
view "external" {{
    match-clients {{ any; }};
    zone "example.test" {{ type primary; file "{dir}/external.zone"; }};
}};
"#,
            head = bind_options(site, ""),
            dir = site.dir.display()
        )
    });
    let w = writer_at(dns.addr, "upd-key.", &dns.secret_b64);
    rt().block_on(async {
        let read = w.read(FQDN, ZONE).await.unwrap();
        assert_eq!(read.addresses(), set(&["127.0.0.2", "127.0.0.3"]));
        w.apply(&change(
            FQDN,
            ZONE,
            &read.addresses(),
            &["127.0.0.4"],
            &["127.0.0.3"],
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", dns.log()));
        let back = w.read(FQDN, ZONE).await.unwrap();
        assert_eq!(back.addresses(), set(&["127.0.0.2", "127.0.0.4"]));
    });
    // The unsigned world still sees the external view, untouched.
    assert_eq!(dns.query("www.example.test", "A"), vec!["127.0.0.200"]);
}

fn signed_reads_work_and_a_wrong_key_is_not_trusted(kind: DnsKind) {
    let dns = DnsServer::start(kind, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    rt().block_on(async {
        let read = writer(&dns).read(FQDN, ZONE).await.unwrap();
        assert_eq!(read.addresses(), set(&["127.0.0.2", "127.0.0.3"]));
        // A wrong secret: the read itself is refused as a TSIG failure, never taken as data.
        let wrong = writer_at(
            dns.addr,
            "upd-key.",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        );
        let e = wrong.read(FQDN, ZONE).await.unwrap_err();
        assert!(
            matches!(e, WriteError::Auth(ref m) if m.contains("BADSIG")),
            "{e:?}"
        );
    });
}

// ---- 2. Data at the name ----

fn read_reports_a_cname_even_with_in_zone_target(kind: DnsKind) {
    let dns = DnsServer::start(
        kind,
        "www 300 CNAME lb.example.test.\nlb A 127.0.0.9\nlb A 127.0.0.10\n",
    );
    let got = rt().block_on(writer(&dns).read(FQDN, ZONE)).unwrap();
    assert_eq!(
        got,
        Published {
            records: BTreeMap::new(),
            cname: Some("lb.example.test.".to_owned()),
            weights: Default::default(),
        }
    );
}

fn daemon_config(
    server: SocketAddr,
    secret_b64: &str,
    fqdn: &str,
    zone: &str,
    port: u16,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let text = format!(
        r#"[node]
id = "field"
state_dir = "{state}"

[defaults]
interval = "200ms"
timeout = "150ms"
fall = 2
rise = 2
ttl = 30
reconcile_interval = "60s"

[[writer]]
name = "primary"
type = "rfc2136"
server = "{server}"
timeout = "2s"
tsig = {{ name = "upd-key", algorithm = "hmac-sha256", secret = "{secret_b64}" }}

[[service]]
fqdn = "{fqdn}"
zone = "{zone}"
writer = "primary"
endpoints = ["127.0.0.2", "127.0.0.3"]
[service.check]
type = "http"
port = {port}
path = "/health"
"#,
        state = dir.display(),
    );
    let path = dir.join("rrguard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn plan(config: &std::path::Path) -> String {
    let out = std::process::Command::new(support::rrguard_bin())
        .args(["plan", "-c", config.to_str().unwrap()])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn cname_is_one_operator_error_and_plan_flags_it(kind: DnsKind) {
    let dns = DnsServer::start(kind, "www 300 CNAME lb.example.test.\nlb A 127.0.0.9\n");
    let http = HttpEndpoints::start(&[ip("127.0.0.2"), ip("127.0.0.3")]);
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dns.addr,
        &dns.secret_b64,
        "www.example.test",
        "example.test",
        http.port,
        dir.path(),
    );
    let out = plan(&config);
    assert!(
        out.contains("conflict: www.example.test. has a CNAME to lb.example.test."),
        "{out}"
    );
    let serial = dns.soa_serial();
    let daemon = Daemon::start(&["run", "-c", config.to_str().unwrap()]);
    daemon.wait_for_log("has a CNAME to lb.example.test.", Duration::from_secs(30));
    // Several probe intervals and reconcile chances; the operator cadence is 30 s.
    std::thread::sleep(Duration::from_secs(4));
    let log = daemon.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("CNAME"))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("www.example.test."), "{log}");
    assert!(!log.contains("DNS updated"), "{log}");
    assert_eq!(dns.soa_serial(), serial, "the zone was written");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// ---- 3. The configured zone does not hold the name ----

fn name_below_a_zone_cut_is_refused(kind: DnsKind) {
    let files = [
        (
            "parent.zone",
            zone_text(
                "example.test",
                "ns1 A 127.0.0.1\napi NS ns1.api\nns1.api A 127.0.0.1",
            ),
        ),
        (
            "child.zone",
            zone_text(
                "api.example.test",
                "ns1 A 127.0.0.1\nwww A 127.0.0.2\nwww A 127.0.0.3",
            ),
        ),
    ];
    let dns = CustomDns::start(
        kind,
        &files,
        None,
        "api.example.test.",
        &|site| match kind {
            DnsKind::Knot => format!(
                r#"{head}zone:
  - domain: example.test
    storage: "{dir}"
    file: parent.zone
    acl: upd
  - domain: api.example.test
    storage: "{dir}"
    file: child.zone
    acl: upd
"#,
                head = knot_head(site),
                dir = site.dir.display()
            ),
            DnsKind::Bind => format!(
                r#"{head}
zone "example.test" {{ type primary; file "{dir}/parent.zone"; allow-update {{ key upd-key; }}; }};
zone "api.example.test" {{ type primary; file "{dir}/child.zone"; allow-update {{ key upd-key; }}; }};
"#,
                head = bind_options(site, ""),
                dir = site.dir.display()
            ),
        },
    );
    let fqdn = "www.api.example.test.";
    let w = writer_at(dns.addr, "upd-key.", &dns.secret_b64);
    let parent_serial = || {
        dns.query("example.test", "SOA")[0]
            .split_whitespace()
            .nth(2)
            .unwrap()
            .to_owned()
    };
    let before = parent_serial();
    rt().block_on(async {
        let e = w.read(fqdn, ZONE).await.unwrap_err();
        assert!(
            matches!(e, WriteError::Rejected(ref m)
                if m.contains("api.example.test.") && m.contains("example.test.") && m.contains("zone = \"api.example.test.\"")),
            "{e:?}"
        );
        let e = w
            .apply(&change(fqdn, ZONE, &set(&["127.0.0.2", "127.0.0.3"]), &[], &["127.0.0.3"]))
            .await
            .unwrap_err();
        assert!(matches!(e, WriteError::Rejected(_)), "{e:?}");
        // With the right zone it works.
        let read = w.read(fqdn, "api.example.test.").await.unwrap();
        assert_eq!(read.addresses(), set(&["127.0.0.2", "127.0.0.3"]));
    });
    assert_eq!(
        parent_serial(),
        before,
        "something was written to the parent"
    );
    // `rrguard plan` shows it.
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dns.addr,
        &dns.secret_b64,
        "www.api.example.test",
        "example.test",
        9,
        dir.path(),
    );
    let out = plan(&config);
    assert!(
        out.contains("cannot read") && out.contains("held by zone api.example.test."),
        "{out}"
    );
}

// ---- 4. Whole answers classified ----

fn badkey_and_badsig_are_told_apart(kind: DnsKind) {
    let dns = DnsServer::start(kind, "www A 127.0.0.2\n");
    rt().block_on(async {
        let unknown = writer_at(dns.addr, "no-such-key.", &dns.secret_b64);
        let e = unknown.read(FQDN, ZONE).await.unwrap_err();
        assert!(
            matches!(e, WriteError::Auth(ref m) if m.contains("BADKEY") && m.contains("no-such-key.") && m.contains("hmac-sha256")),
            "{e:?}"
        );
        let bad = writer_at(dns.addr, "upd-key.", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        let e = bad
            .apply(&change(FQDN, ZONE, &set(&["127.0.0.2"]), &["127.0.0.3"], &[]))
            .await
            .unwrap_err();
        assert!(
            matches!(e, WriteError::Auth(ref m) if m.contains("BADSIG") && m.contains("upd-key.")),
            "{e:?}"
        );
    });
    assert_eq!(dns.query("www.example.test", "A"), vec!["127.0.0.2"]);
}

// ---- 5. Message size ----

fn many(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect()
}

/// 3,000 published, 1,500 dead: the core and the writer end with exactly the healthy 1,500.
#[test]
fn knot_large_rrset_shrinks_to_exactly_the_healthy_half() {
    let all = many(3_000);
    let body: String = all.iter().map(|ip| format!("www A {ip}\n")).collect();
    let dns = DnsServer::start(DnsKind::Knot, &body);
    let w = writer(&dns);
    let health: BTreeMap<IpAddr, Health> = all
        .iter()
        .enumerate()
        .map(|(i, ip)| (*ip, if i % 2 == 0 { Health::Up } else { Health::Down }))
        .collect();
    let healthy: BTreeSet<IpAddr> = health
        .iter()
        .filter(|(_, h)| **h == Health::Up)
        .map(|(ip, _)| *ip)
        .collect();
    let svc = support::service_config(FQDN, ZONE, all.clone(), 60);
    let settings = Settings::of(&svc, w.capabilities(), Duration::from_secs(600), false);
    let machines = all
        .iter()
        .map(|ip| (*ip, HealthMachine::with_state(1, 1, health[ip])))
        .collect();
    let started = tokio::time::Instant::now();
    let events = rt().block_on(async {
        let mut core = ServiceCore::new(settings, machines, tokio::time::Instant::now());
        core.on_view(
            tokio::time::Instant::now(),
            &ServiceView {
                health: health.clone(),
                leader: true,
                live_nodes: 1,
            },
        );
        let events = converge(&mut core, &w).await;
        assert_eq!(
            core.published().map(|p| p.addresses()),
            Some(healthy.clone())
        );
        events
    });
    let took = started.elapsed();
    println!("field: Knot 3,000 -> 1,500 A converged in {took:?}");
    assert!(
        events.iter().any(|e| matches!(e, Event::Updated(_))),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Failed { .. } | Event::Conflict(_))),
        "{events:?}"
    );
    let published: BTreeSet<IpAddr> = rt().block_on(w.read(FQDN, ZONE)).unwrap().addresses();
    assert_eq!(published, healthy);
}

/// A change whose update section alone exceeds one message (2,500 deletions, ~80 KB) goes as several
/// SOA-pinned UPDATEs and ends exactly where planned.
#[test]
fn knot_change_larger_than_one_message_is_split() {
    let all = many(3_000);
    let body: String = all.iter().map(|ip| format!("www A {ip}\n")).collect();
    let dns = DnsServer::start(DnsKind::Knot, &body);
    let w = writer(&dns);
    let remove: Vec<String> = all[500..].iter().map(ToString::to_string).collect();
    let remove: Vec<&str> = remove.iter().map(String::as_str).collect();
    let before = dns.log().matches("DDNS, finished").count();
    rt().block_on(async {
        let read = w.read(FQDN, ZONE).await.unwrap();
        assert_eq!(read.records.len(), 3_000);
        w.apply(&change(FQDN, ZONE, &read.addresses(), &[], &remove))
            .await
            .unwrap();
        let back = w.read(FQDN, ZONE).await.unwrap();
        assert_eq!(back.addresses(), all[..500].iter().copied().collect());
        // A stale plan (the set it was planned against is gone) is refused whole.
        let e = w
            .apply(&change(FQDN, ZONE, &read.addresses(), &[], &remove[..10]))
            .await
            .unwrap_err();
        assert!(matches!(e, WriteError::Conflict(_)), "{e:?}");
    });
    let updates = dns.log().matches("DDNS, finished").count() - before;
    assert!(updates >= 2, "{updates} UPDATEs\n{}", dns.log());
}

/// BIND's default max-records-per-type (100): adding up to 150 is one operator error naming the
/// option, and the zone keeps exactly what it had.
#[test]
fn bind_record_cap_is_an_operator_error_and_nothing_partial() {
    let dns = DnsServer::start(DnsKind::Bind, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    let add: Vec<String> = many(148).iter().map(ToString::to_string).collect();
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    let e = rt()
        .block_on(writer(&dns).apply(&change(
            FQDN,
            ZONE,
            &set(&["127.0.0.2", "127.0.0.3"]),
            &add,
            &[],
        )))
        .unwrap_err();
    assert!(
        matches!(e, WriteError::Rejected(ref m) if m.contains("max-records-per-type") && m.contains("150 A")),
        "{e:?}"
    );
    assert!(e.needs_operator());
    assert_eq!(
        dns.query("www.example.test", "A"),
        vec!["127.0.0.2", "127.0.0.3"]
    );
}

/// 4,200 A records do not fit in one TCP answer: BIND sets TC and sends part of them. That is an
/// error, never a record set.
#[test]
fn bind_truncated_answer_is_an_error_not_a_set() {
    let body: String = many(4_200)
        .iter()
        .map(|ip| format!("www A {ip}\n"))
        .collect();
    let files = [(
        "example.test.zone",
        zone_text("example.test", &format!("ns1 A 127.0.0.1\n{body}")),
    )];
    let dns = CustomDns::start(DnsKind::Bind, &files, None, ZONE, &|site| {
        format!(
            r#"{head}
zone "example.test" {{ type primary; file "{dir}/example.test.zone"; allow-update {{ key upd-key; }}; }};
"#,
            head = bind_options(site, "max-records-per-type 0;"),
            dir = site.dir.display()
        )
    });
    let e = rt()
        .block_on(writer_at(dns.addr, "upd-key.", &dns.secret_b64).read(FQDN, ZONE))
        .unwrap_err();
    assert!(
        matches!(e, WriteError::Rejected(ref m) if m.contains("truncated")),
        "{e:?}"
    );
}

knot_and_bind!(
    signed_reads_work_and_a_wrong_key_is_not_trusted,
    read_reports_a_cname_even_with_in_zone_target,
    cname_is_one_operator_error_and_plan_flags_it,
    name_below_a_zone_cut_is_refused,
    badkey_and_badsig_are_told_apart,
    clock_skew_is_badtime_with_the_measured_skew,
);

// ---- 6. Secondaries and stale reads ----

/// `servers = [secondary, primary]`: the secondary forwards UPDATEs to the primary and serves the
/// change only after it has transferred it. A flip is one accepted UPDATE at the primary, and the
/// read-back (from the secondary) shows it: no anomaly, no re-plan, no refused UPDATE.
#[test]
fn knot_secondary_first_one_update_per_flip() {
    let files = [(
        "example.test.zone",
        zone_text(
            "example.test",
            "ns1 A 127.0.0.1\nwww A 127.0.0.2\nwww A 127.0.0.3\nwww A 127.0.0.4",
        ),
    )];
    let primary = CustomDns::start(DnsKind::Knot, &files, None, ZONE, &|site| {
        format!(
            "{head}zone:\n  - domain: example.test\n    storage: \"{dir}\"\n    file: example.test.zone\n    acl: upd\n",
            head = knot_head(site),
            dir = site.dir.display()
        )
    });
    let primary_port = primary.addr.port();
    let secondary = CustomDns::start(
        DnsKind::Knot,
        &[],
        Some(&primary.secret_b64),
        ZONE,
        &|site| {
            format!(
                "{head}remote:\n  - id: primary\n    address: 127.0.0.1@{primary_port}\n    key: upd-key\n\
                 zone:\n  - domain: example.test\n    storage: \"{dir}\"\n    file: example.test.zone\n    master: primary\n    acl: upd\n    refresh-min-interval: 2\n    refresh-max-interval: 2\n",
                head = knot_head(site),
                dir = site.dir.display()
            )
        },
    );
    let w = Rfc2136Writer::new(
        "primary",
        Rfc2136Config {
            servers: vec![secondary.addr, primary.addr],
            tsig: TsigConfig {
                name: "upd-key.".to_owned(),
                algorithm: TsigAlgorithm::HmacSha256,
                secret: decode(&primary.secret_b64),
            },
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    let endpoints: Vec<IpAddr> = set(&["127.0.0.2", "127.0.0.3", "127.0.0.4"])
        .into_iter()
        .collect();
    let svc = support::service_config(FQDN, ZONE, endpoints.clone(), 60);
    let health = |down: Option<&str>| -> BTreeMap<IpAddr, Health> {
        endpoints
            .iter()
            .map(|e| {
                let h = if Some(*e) == down.map(ip) {
                    Health::Down
                } else {
                    Health::Up
                };
                (*e, h)
            })
            .collect()
    };
    let ddns = |log: &str| log.matches("DDNS, finished").count();
    rt().block_on(async {
        let settings = Settings::of(&svc, w.capabilities(), Duration::from_secs(600), false);
        let first = health(Some("127.0.0.3"));
        let machines = endpoints
            .iter()
            .map(|e| (*e, HealthMachine::with_state(1, 1, first[e])))
            .collect();
        let mut core = ServiceCore::new(settings, machines, tokio::time::Instant::now());
        for (down, expect) in [
            (Some("127.0.0.3"), set(&["127.0.0.2", "127.0.0.4"])),
            (None, set(&["127.0.0.2", "127.0.0.3", "127.0.0.4"])),
        ] {
            let before = ddns(&primary.log());
            let h = health(down);
            core.on_view(
                tokio::time::Instant::now(),
                &ServiceView {
                    health: h,
                    leader: true,
                    live_nodes: 1,
                },
            );
            let events = converge(&mut core, &w).await;
            assert!(
                !events.iter().any(|e| !matches!(e, Event::Updated(_))),
                "{events:?}\n--- primary ---\n{}\n--- secondary ---\n{}",
                primary.log(),
                secondary.log()
            );
            assert_eq!(
                core.published().map(|p| p.addresses()),
                Some(expect.clone())
            );
            assert_eq!(
                ddns(&primary.log()) - before,
                1,
                "--- primary ---\n{}",
                primary.log()
            );
        }
    });
    // Primary gone: the secondary cannot forward and answers SERVFAIL, unsigned. Transient, and not
    // a TSIG problem.
    let secondary_only = Rfc2136Writer::new(
        "primary",
        Rfc2136Config {
            servers: vec![secondary.addr],
            tsig: TsigConfig {
                name: "upd-key.".to_owned(),
                algorithm: TsigAlgorithm::HmacSha256,
                secret: decode(&primary.secret_b64),
            },
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    drop(primary);
    let e = rt()
        .block_on(secondary_only.apply(&change(
            FQDN,
            ZONE,
            &set(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]),
            &[],
            &["127.0.0.4"],
        )))
        .unwrap_err();
    assert!(
        matches!(e, WriteError::Transient(ref m) if m.contains("SERVFAIL") && !m.contains("TSIG")),
        "{e:?}\n--- secondary ---\n{}",
        secondary.log()
    );
}

/// libfaketime (Debian `faketime`) moves only rrguard's wall clock.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// rrguard's clock 310 s ahead of the server's (fudge 300): the server answers BADTIME, signed, with
/// its own time; the operator reads BADTIME, the measured skew and what to do.
fn clock_skew_is_badtime_with_the_measured_skew(kind: DnsKind) {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} missing: apt-get install faketime (scripts/test does this)"
    );
    let dns = DnsServer::start(kind, "www A 127.0.0.2\nwww A 127.0.0.3\n");
    let http = HttpEndpoints::start(&[ip("127.0.0.2"), ip("127.0.0.3")]);
    let dir = tempfile::tempdir().unwrap();
    let config = daemon_config(
        dns.addr,
        &dns.secret_b64,
        "www.example.test",
        "example.test",
        http.port,
        dir.path(),
    );
    let daemon = Daemon::start_with_env(
        &["run", "-c", config.to_str().unwrap()],
        &[
            ("DONT_FAKE_MONOTONIC", "1"),
            ("FAKETIME", "+310"),
            ("LD_PRELOAD", LIBFAKETIME),
        ],
    );
    daemon.wait_for_log("BADTIME", Duration::from_secs(30));
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("BADTIME")).unwrap();
    assert!(
        line.contains("ERROR") && line.contains("synchronise the clocks"),
        "{line}"
    );
    let skew: i64 = line
        .split("a skew of ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no skew in {line}"));
    assert!((-315..=-305).contains(&skew), "{line}");
    assert!(!log.contains("DNS updated"), "{log}");
}
