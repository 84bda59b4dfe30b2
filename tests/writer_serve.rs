//! The writer battery over `serve`, and rows only a DNS server of its own has: what `dig` gets over
//! UDP and TCP (NXDOMAIN against NODATA, SOA serials, NS, static data, REFUSED, EDNS and TC, ANY),
//! listeners that survive garbage, a second start and a busy port, state that survives a rebuild,
//! and the real daemon answering the healthy set.
//!
//! The fixture's authoritative read is `dig` over UDP against the writer's own listener; its
//! out-of-band change goes through a second `ServeWriter` built on the same `Resources` (the store
//! the daemon keeps across reloads), as another generation of the configuration would.

#[macro_use]
mod support;

use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rrguard::act::serve::ServeWriter;
use rrguard::act::{Published, RecordChange, Resources, WriteError, Writer};
use rrguard::config::WriterKind;
use support::battery::*;
use support::{Daemon, HttpEndpoints, free_tcp_port, wait_until};
use tempfile::TempDir;

/// A port free for TCP and UDP on 127.0.0.1, never handed out before in this process.
fn free_dns_port() -> u16 {
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    for _ in 0..100 {
        let port = free_tcp_port(lo);
        if UdpSocket::bind((lo, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for TCP and UDP on 127.0.0.1");
}

/// The `[[writer]]` section of a serve writer on `port` for example.test., plus `zone_extra` in
/// its zone table.
fn writer_section(port: u16, zone_extra: &str) -> String {
    format!(
        "[[writer]]\nname = \"primary\"\ntype = \"serve\"\nlisten = [\"127.0.0.1:{port}\"]\ntcp_idle_timeout = \"2s\"\n\n[[writer.zone]]\nname = \"example.test\"\nns = [\"ns1.example.test\", \"ns2.example.test\"]\nttl = 300\nminimum = \"45s\"\n{zone_extra}\n"
    )
}

/// A validated serve config from `writer_section`, relative files read from `dir`.
fn serve_config(dir: &Path, port: u16, zone_extra: &str) -> rrguard::config::ServeConfig {
    let text = format!(
        "{}\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"primary\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n",
        writer_section(port, zone_extra)
    );
    let config =
        rrguard::config::parse(&dir.join("rrguard.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
    match &config.writers[0].kind {
        WriterKind::Serve(c) => c.clone(),
        other => panic!("not a serve writer: {other:?}"),
    }
}

/// One dig run: status, header flags, and the answer and authority records as
/// `(owner, ttl, type, rdata)`.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answer: Vec<(String, u32, String, String)>,
    authority: Vec<(String, u32, String, String)>,
}

impl Dig {
    fn rdata(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.2 == rtype)
            .map(|r| r.3.clone())
            .collect();
        v.sort();
        v
    }
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// `dig @addr name rtype` with `extra` options (`+tcp`, `+bufsize=512`, …), one try.
fn dig(addr: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> Dig {
    let out = Command::new("dig")
        .args([
            "+time=2",
            "+tries=1",
            "+norecurse",
            "+nocmd",
            "+noall",
            "+comments",
            "+answer",
            "+authority",
        ])
        .args(extra)
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), name, rtype])
        .output()
        .expect("dig not found: install dnsutils (scripts/test does)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .lines()
        .find_map(|l| l.split_once("status: "))
        .map(|(_, rest)| rest.split(',').next().unwrap_or("").to_owned())
        .unwrap_or_else(|| panic!("no answer from {addr}: {text}"));
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix(";; flags: "))
        .and_then(|l| l.split(';').next())
        .map(|f| f.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let (mut answer, mut authority) = (Vec::new(), Vec::new());
    let mut section = "";
    for line in text.lines() {
        if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";;") || line.trim().is_empty() {
            if line.trim().is_empty() {
                section = "";
            }
        } else if !line.starts_with(';') {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 {
                let rec = (
                    f[0].to_owned(),
                    f[1].parse().unwrap_or(0),
                    f[3].to_owned(),
                    f[4..].join(" "),
                );
                match section {
                    "answer" => answer.push(rec),
                    "authority" => authority.push(rec),
                    _ => {}
                }
            }
        }
    }
    Dig {
        status,
        flags,
        answer,
        authority,
    }
}

/// The SOA serial `addr` answers for example.test.
fn serial(addr: SocketAddr) -> u32 {
    let d = dig(addr, "example.test.", "SOA", &[]);
    d.rdata("SOA")
        .first()
        .and_then(|s| s.split_whitespace().nth(2))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no serial in {d:?}"))
}

/// `serve` with its listener on a free loopback port; state under a temporary directory.
struct ServeFixture {
    addr: SocketAddr,
    writer: ServeWriter,
    /// The out-of-band handle: another writer on the same store, as the next configuration
    /// generation would build it.
    operator: ServeWriter,
    resources: Resources,
    dir: TempDir,
}

impl ServeFixture {
    fn new(zone_extra: &str) -> ServeFixture {
        let dir = tempfile::tempdir().unwrap();
        ServeFixture::in_dir(dir, zone_extra)
    }

    fn in_dir(dir: TempDir, zone_extra: &str) -> ServeFixture {
        let port = free_dns_port();
        let config = serve_config(dir.path(), port, zone_extra);
        let resources = Resources::new(Some(dir.path().join("state")));
        let writer = ServeWriter::new("primary", config.clone(), &resources);
        writer.start().unwrap();
        let operator = ServeWriter::new("primary", config, &resources);
        ServeFixture {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            writer,
            operator,
            resources,
            dir,
        }
    }

    fn boxed() -> Box<dyn Fixture> {
        Box::new(ServeFixture::new(""))
    }

    /// A new process on the same state directory: fresh `Resources` (no store carried over),
    /// another port, no extra zone data.
    fn restarted(self) -> ServeFixture {
        let ServeFixture {
            writer,
            operator,
            resources,
            dir,
            ..
        } = self;
        drop((writer, operator, resources));
        ServeFixture::in_dir(dir, "")
    }
}

impl Fixture for ServeFixture {
    fn writer(&self) -> &dyn Writer {
        &self.writer
    }

    fn set(&self, fqdn: &str, published: &Published) {
        self.operator.set(fqdn, published.clone()).unwrap();
    }

    fn authoritative(&self, fqdn: &str) -> Published {
        let mut out = Published::default();
        let owner = fqdn.to_ascii_lowercase();
        for rtype in ["A", "AAAA"] {
            let d = dig(self.addr, fqdn, rtype, &["+notcp"]);
            assert!(
                matches!(d.status.as_str(), "NOERROR" | "NXDOMAIN"),
                "{fqdn} {rtype}: {d:?}"
            );
            assert!(d.has_flag("aa"), "{d:?}");
            for (who, ttl, t, rdata) in d.answer {
                if who.to_ascii_lowercase() != owner {
                    continue;
                }
                if t == "CNAME" {
                    out.cname = Some(rdata);
                } else {
                    out.records.insert(rdata.parse().unwrap(), ttl);
                }
            }
        }
        out
    }

    fn failing(&self, failure: Failure) -> Result<Box<dyn Writer>, &'static str> {
        match failure {
            Failure::ServerError => {
                // The one failure a store in the process has: its state file cannot be written
                // (here the state directory is a regular file).
                let blocked = self.dir.path().join("not-a-directory");
                std::fs::write(&blocked, "").unwrap();
                let config = serve_config(self.dir.path(), free_dns_port(), "");
                Ok(Box::new(ServeWriter::new(
                    "primary",
                    config,
                    &Resources::new(Some(blocked)),
                )))
            }
            Failure::BadCredentials => {
                Err("serve is its own server: nothing to authenticate to, no credentials")
            }
        }
    }
}

writer_battery! {
    serve => ServeFixture::boxed();
}

/// A multi-thread runtime test, as the daemon runs the listeners.
macro_rules! rt_test {
    ($($name:ident),* $(,)?) => {
        $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name().await } )*
    };
}

async fn nxdomain_and_nodata_are_told_apart() {
    let f = ServeFixture::new("records = [\"a.b TXT deep\", \"mail MX 10 mx.example.test.\"]");
    f.writer
        .apply(&change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap();
    let nodata_soa = |d: &Dig| {
        assert_eq!(d.status, "NOERROR", "{d:?}");
        assert!(d.answer.is_empty(), "{d:?}");
        assert_eq!(d.authority.len(), 1, "{d:?}");
        assert_eq!(d.authority[0].2, "SOA");
        assert_eq!(
            d.authority[0].1, 45,
            "RFC 2308: min(SOA TTL 300, minimum 45)"
        );
    };
    // Data of another type; an empty non-terminal; a managed name for AAAA.
    nodata_soa(&dig(f.addr, "mail.example.test", "A", &[]));
    nodata_soa(&dig(f.addr, "b.example.test", "A", &[]));
    nodata_soa(&dig(f.addr, "www.example.test", "AAAA", &["+tcp"]));
    for name in ["nothing.example.test", "x.a.b.example.test"] {
        let d = dig(f.addr, name, "A", &[]);
        assert_eq!(d.status, "NXDOMAIN", "{d:?}");
        assert!(d.has_flag("aa"));
        assert_eq!(d.authority[0].2, "SOA", "{d:?}");
        assert_eq!(d.authority[0].0, "example.test.");
    }
    // A name the core asked about exists from then on, even before its first address.
    let fresh = "fresh.example.test.";
    assert_eq!(dig(f.addr, fresh, "A", &[]).status, "NXDOMAIN");
    f.writer.read(fresh, ZONE).await.unwrap();
    nodata_soa(&dig(f.addr, fresh, "A", &[]));
}

/// Changes that arrive together share one commit (one state-file save, one snapshot), and each is
/// still its own compare-and-swap: at start-up 100 services each read and write once, and 200
/// commits one after another had delayed the last first write by 14 s under load.
async fn changes_arriving_together_share_commits_and_keep_their_compare_and_swap() {
    let f = ServeFixture::new("");
    let before = f.writer.commits();
    let name = |i: usize| format!("n{i}.{ZONE}");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (writer, fqdn) = (f.writer.clone(), name(i));
        tasks.spawn(async move {
            writer.read(&fqdn, ZONE).await.unwrap();
            let ip = format!("127.0.{}.{}", i / 100, i % 100 + 1);
            let change = RecordChange {
                fqdn,
                ..change(&[], &[&ip], &[])
            };
            (i, writer.apply(&change).await)
        });
    }
    // Two changes of one name from the same state: exactly one applies, the other conflicts.
    for ip in ["127.0.9.1", "127.0.9.2"] {
        let writer = f.writer.clone();
        tasks.spawn(async move {
            let change = RecordChange {
                fqdn: format!("race.{ZONE}"),
                ..change(&[], &[ip], &[])
            };
            (usize::MAX, writer.apply(&change).await)
        });
    }
    let mut race = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            (usize::MAX, result) => race.push(result),
            (i, result) => assert_eq!(result, Ok(()), "change of {}", name(i)),
        }
    }
    race.sort_by_key(Result::is_ok);
    assert!(
        matches!(race.as_slice(), [Err(WriteError::Conflict(_)), Ok(())]),
        "{race:?}"
    );
    let commits = f.writer.commits() - before;
    // One commit per change would be 200 registrations and 200 writes, plus the race's one.
    assert!(commits < 100, "{commits} commits for 401 changes");
    for i in [0, 57, 199] {
        let ip = format!("127.0.{}.{}", i / 100, i % 100 + 1);
        assert_eq!(dig(f.addr, &name(i), "A", &[]).rdata("A"), [ip]);
    }
    // Saved before served: a new process answers every change.
    let again = f.restarted();
    for i in 0..200 {
        let ip: IpAddr = format!("127.0.{}.{}", i / 100, i % 100 + 1)
            .parse()
            .unwrap();
        let read = again.writer.read(&name(i), ZONE).await.unwrap();
        assert_eq!(
            read.records.keys().collect::<Vec<_>>(),
            [&ip],
            "{}",
            name(i)
        );
    }
}

async fn soa_serial_grows_with_every_change_and_survives_a_rebuild() {
    let f = ServeFixture::new("");
    let mut last = serial(f.addr);
    assert_eq!(last, f.writer.serial());
    for (expected, add) in [(&[][..], "127.0.0.2"), (&["127.0.0.2"][..], "127.0.0.3")] {
        f.writer
            .apply(&change(expected, &[add], &[]))
            .await
            .unwrap();
        let now = serial(f.addr);
        assert!(now > last, "{now} after {last}");
        last = now;
    }
    // A change that changes nothing keeps the serial.
    f.writer
        .apply(&change(&["127.0.0.2", "127.0.0.3"], &[], &[]))
        .await
        .unwrap();
    assert_eq!(serial(f.addr), last);
    // A new process: same state directory, fresh Resources, another port.
    let again = f.restarted();
    assert_eq!(
        dig(again.addr, FQDN, "A", &[]).rdata("A"),
        ["127.0.0.2", "127.0.0.3"]
    );
    assert!(serial(again.addr) > last, "a new start is a change too");
    // A corrupt file is reported and ignored: the node starts empty instead of failing.
    std::fs::write(
        again.dir.path().join("state/serve-primary.json"),
        "{ garbage",
    )
    .unwrap();
    let empty = again.restarted();
    assert_eq!(dig(empty.addr, FQDN, "A", &[]).status, "NXDOMAIN");
}

async fn apex_has_ns_and_soa() {
    let f = ServeFixture::new("soa_rname = \"dns-admin@example.test\"\nrefresh = \"1h\"");
    let ns = dig(f.addr, "example.test", "NS", &["+tcp"]);
    assert!(ns.has_flag("aa"));
    assert_eq!(ns.rdata("NS"), ["ns1.example.test.", "ns2.example.test."]);
    assert!(ns.answer.iter().all(|r| r.1 == 300));
    let soa = dig(f.addr, "example.test", "SOA", &[]).rdata("SOA");
    let fields: Vec<&str> = soa[0].split_whitespace().collect();
    assert_eq!(
        fields[..2],
        ["ns1.example.test.", "dns-admin.example.test."]
    );
    assert_eq!(fields[3], "3600");
}

async fn static_file_and_inline_records_are_served() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("example.test.zone"),
        "$ORIGIN example.test.\n$TTL 120\n@ SOA ns9 hm 1 2 3 4 5\n@ NS ns9.elsewhere.\nmail MX 10 mx\nmx A 192.0.2.25\n_sip._tcp SRV 0 5 5060 sip\nwww A 192.0.2.80\n",
    )
    .unwrap();
    let f = ServeFixture::in_dir(
        dir,
        "static_file = \"example.test.zone\"\nrecords = [\"@ 60 TXT \\\"v=spf1 -all\\\"\", \"alias CNAME www\"]",
    );
    assert_eq!(
        dig(f.addr, "mail.example.test", "MX", &[]).rdata("MX"),
        ["10 mx.example.test."]
    );
    let mx = dig(f.addr, "mx.example.test", "A", &[]);
    assert_eq!(
        (mx.answer[0].1, mx.rdata("A")),
        (120, vec!["192.0.2.25".to_owned()])
    );
    assert_eq!(
        dig(f.addr, "_sip._tcp.example.test", "SRV", &[]).rdata("SRV"),
        ["0 5 5060 sip.example.test."]
    );
    assert_eq!(
        dig(f.addr, "example.test", "TXT", &[]).rdata("TXT"),
        ["\"v=spf1 -all\""]
    );
    // The file's SOA and apex NS give way to the zone's options.
    assert_eq!(
        dig(f.addr, "example.test", "NS", &[]).rdata("NS"),
        ["ns1.example.test.", "ns2.example.test."]
    );
    // Static addresses are what www publishes until rrguard writes it; then the managed set.
    assert_eq!(
        f.writer.read(FQDN, ZONE).await.unwrap(),
        published(&[("192.0.2.80", 120)])
    );
    f.writer
        .apply(&change(&["192.0.2.80"], &["127.0.0.2"], &["192.0.2.80"]))
        .await
        .unwrap();
    assert_eq!(dig(f.addr, FQDN, "A", &[]).rdata("A"), ["127.0.0.2"]);
    let alias = dig(f.addr, "alias.example.test", "A", &[]);
    assert_eq!(alias.rdata("CNAME"), ["www.example.test."]);
    assert_eq!(alias.rdata("A"), ["127.0.0.2"], "followed inside the zone");
}

async fn names_outside_the_zones_are_refused() {
    let f = ServeFixture::new("");
    for name in ["example.org", "test", "www.notexample.test"] {
        let d = dig(f.addr, name, "A", &[]);
        assert_eq!(d.status, "REFUSED", "{name}: {d:?}");
        assert!(!d.has_flag("aa"));
    }
    match f.writer.read("www.example.org.", "example.org.").await {
        Err(WriteError::Rejected(why)) => assert!(why.contains("(example.test.)"), "{why}"),
        other => panic!("{other:?}"),
    }
    match f.writer.read(FQDN, "sub.example.test.").await {
        Err(WriteError::Rejected(why)) => {
            assert!(
                why.contains("set the service's zone = \"example.test\""),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
}

async fn large_answer_truncates_over_udp_and_comes_whole_over_tcp() {
    let f = ServeFixture::new("");
    let ips: Vec<String> = (1..=60).map(|i| format!("127.0.1.{i}")).collect();
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    f.writer.apply(&change(&[], &ips, &[])).await.unwrap();
    let small = dig(f.addr, FQDN, "A", &["+notcp", "+ignore", "+bufsize=512"]);
    assert!(small.has_flag("tc"), "{small:?}");
    assert!(small.answer.is_empty(), "whole RRsets only: {small:?}");
    let plain = dig(f.addr, FQDN, "A", &["+notcp", "+ignore", "+noedns"]);
    assert!(plain.has_flag("tc"), "{plain:?}");
    // The client's EDNS size is honoured: 60 A records fit in 1232 bytes.
    let edns = dig(f.addr, FQDN, "A", &["+notcp", "+ignore", "+bufsize=1232"]);
    assert!(!edns.has_flag("tc"));
    assert_eq!(edns.answer.len(), 60);
    let tcp = dig(f.addr, FQDN, "A", &["+tcp", "+noedns"]);
    assert!(!tcp.has_flag("tc"));
    assert_eq!(tcp.answer.len(), 60);
    // dig's own fallback: TC over UDP, then the whole answer over TCP.
    assert_eq!(dig(f.addr, FQDN, "A", &["+noedns"]).answer.len(), 60);
}

async fn any_gets_a_minimal_answer() {
    let f = ServeFixture::new("records = [\"www TXT hello\"]");
    f.writer
        .apply(&change(&[], &["127.0.0.2", "::1"], &[]))
        .await
        .unwrap();
    for transport in ["+notcp", "+tcp"] {
        let d = dig(f.addr, FQDN, "ANY", &[transport]);
        assert_eq!(d.status, "NOERROR");
        let types: std::collections::BTreeSet<&str> =
            d.answer.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(types, ["A"].into(), "one RRset (RFC 8482): {d:?}");
    }
}

async fn garbage_does_not_stop_the_listener() {
    let f = ServeFixture::new("");
    f.writer
        .apply(&change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        b"0123456789ab\xff\xff\xff",
        &[0xffu8; 600],
    ] {
        udp.send_to(junk, f.addr).unwrap();
    }
    // A header with a bad question gets FORMERR, with the query's ID.
    udp.send_to(
        &[0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c],
        f.addr,
    )
    .unwrap();
    // Junk of 12 bytes or more that is not a response is answered too (here NOTIMP: its flags
    // byte names opcode 6); skip to ours.
    let mut buf = [0u8; 512];
    let n = loop {
        let (n, _) = udp.recv_from(&mut buf).unwrap();
        if buf[..2] == [0x12, 0x34] {
            break n;
        }
    };
    assert_eq!(buf[3] & 0x0f, 1, "FORMERR: {:?}", &buf[..n]);
    {
        use std::io::{Read, Write};
        // TCP: a frame of junk, then a frame that lies about its length, then hang up.
        let mut tcp = TcpStream::connect(f.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        tcp.write_all(&[0, 3, 1, 2, 3]).unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest);
        let mut tcp = TcpStream::connect(f.addr).unwrap();
        tcp.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
        drop(tcp);
    }
    for extra in [&["+notcp"][..], &["+tcp"]] {
        assert_eq!(dig(f.addr, FQDN, "A", extra).rdata("A"), ["127.0.0.2"]);
    }
}

async fn a_second_start_keeps_serving_and_a_new_address_rebinds() {
    let f = ServeFixture::new("");
    f.writer
        .apply(&change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap();
    // The next generation: same Resources, same addresses.
    let config = serve_config(f.dir.path(), f.addr.port(), "");
    let next = ServeWriter::new("primary", config, &f.resources);
    next.start().unwrap();
    assert_eq!(dig(f.addr, FQDN, "A", &[]).rdata("A"), ["127.0.0.2"]);
    // Another address: the new one answers, the old one is closed.
    let port = free_dns_port();
    let moved = ServeWriter::new(
        "primary",
        serve_config(f.dir.path(), port, ""),
        &f.resources,
    );
    moved.start().unwrap();
    let new_addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(
        dig(new_addr, FQDN, "A", &["+tcp"]).rdata("A"),
        ["127.0.0.2"]
    );
    wait_until(
        "the old TCP listener closes",
        Duration::from_secs(5),
        || TcpStream::connect(f.addr).is_err(),
    );
    // Dropping the store (the daemon's Resources and every writer on it) stops the listeners.
    let ServeFixture {
        writer,
        operator,
        resources,
        ..
    } = f;
    drop((writer, operator, resources, next, moved));
    wait_until("the listeners stop", Duration::from_secs(5), || {
        UdpSocket::bind(new_addr).is_ok() && std::net::TcpListener::bind(new_addr).is_ok()
    });
}

async fn a_port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_dns_port();
    let _squatter = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let w = ServeWriter::new(
        "primary",
        serve_config(dir.path(), port, ""),
        &Resources::new(None),
    );
    let err = w.start().unwrap_err();
    assert!(
        err.starts_with(&format!(
            "cannot listen on 127.0.0.1:{port} (UDP): address in use;"
        )),
        "{err}"
    );
    assert!(err.contains("change this writer's `listen`"), "{err}");
}

mod serve_rows {
    rt_test!(
        nxdomain_and_nodata_are_told_apart,
        soa_serial_grows_with_every_change_and_survives_a_rebuild,
        changes_arriving_together_share_commits_and_keep_their_compare_and_swap,
        apex_has_ns_and_soa,
        static_file_and_inline_records_are_served,
        names_outside_the_zones_are_refused,
        large_answer_truncates_over_udp_and_comes_whole_over_tcp,
        any_gets_a_minimal_answer,
        garbage_does_not_stop_the_listener,
        a_second_start_keeps_serving_and_a_new_address_rebinds,
        a_port_in_use_is_a_clear_error,
    );
}

/// The real daemon with a serve writer: `dig` sees the healthy endpoints, and a failed one leaves.
#[test]
fn daemon_serves_the_healthy_set() {
    let ips: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let http = HttpEndpoints::start(&ips);
    let dir = tempfile::tempdir().unwrap();
    let port = free_dns_port();
    let text = format!(
        r#"[node]
id = "serve-node"
state_dir = "{state}"

[defaults]
interval = "200ms"
timeout = "150ms"
fall = 2
rise = 2
ttl = 20

{writer}
[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "primary"
endpoints = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
[service.check]
type = "http"
port = {http}
path = "/health"
"#,
        state = dir.path().join("state").display(),
        writer = writer_section(port, ""),
        http = http.port,
    );
    let config = dir.path().join("rrguard.toml");
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&["run", "-c", config.to_str().unwrap()]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let a = |extra: &[&str]| {
        let d = dig(addr, "www.example.test", "A", extra);
        (
            d.status.clone(),
            d.rdata("A"),
            d.answer.first().map(|r| r.1),
        )
    };
    wait_until(
        "the daemon answers the healthy set",
        Duration::from_secs(15),
        || {
            daemon.log().contains("answering DNS")
                && a(&[]).1 == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        },
    );
    assert_eq!(a(&["+tcp"]).2, Some(20), "the service's TTL");
    http.stop(ips[1]);
    wait_until(
        "127.0.0.3 leaves the answer",
        Duration::from_secs(15),
        || a(&[]).1 == ["127.0.0.2", "127.0.0.4"],
    );
    assert_eq!(a(&["+tcp"]).1, ["127.0.0.2", "127.0.0.4"]);
    assert!(
        dir.path().join("state/serve-primary.json").exists(),
        "{}",
        daemon.log()
    );
    // SIGHUP to a configuration whose serve writer has another name and port: the new one answers,
    // and the removed one stops answering (its sockets close).
    let other = free_dns_port();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{other}"))
        .replace("name = \"primary\"", "name = \"renamed\"")
        .replace("writer = \"primary\"", "writer = \"renamed\"");
    std::fs::write(&config, text).unwrap();
    daemon.signal("HUP");
    let new_addr = SocketAddr::from(([127, 0, 0, 1], other));
    wait_until(
        "the renamed writer answers on its port",
        Duration::from_secs(15),
        || dig(new_addr, "www.example.test", "A", &[]).rdata("A") == ["127.0.0.2", "127.0.0.4"],
    );
    wait_until(
        "the removed writer's port is closed",
        Duration::from_secs(15),
        || std::net::TcpStream::connect(addr).is_err(),
    );
    // A reload whose serve writer cannot listen (its new port is taken) is rejected before the
    // running configuration stops: the daemon keeps running and keeps answering where it did.
    let taken = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("127.0.0.1:{other}"),
        &format!("127.0.0.1:{taken_port}"),
    );
    std::fs::write(&config, text).unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("reload rejected", Duration::from_secs(15));
    assert!(daemon.log().contains("address in use"), "{}", daemon.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        dig(new_addr, "www.example.test", "A", &[]).rdata("A"),
        ["127.0.0.2", "127.0.0.4"],
        "{}",
        daemon.log()
    );
    drop(taken);
}
