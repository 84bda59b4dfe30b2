//! Self-tests of the integration-test harness in tests/support: if these fail, no other integration
//! test's verdict means anything.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::thread;
use std::time::Duration;

use tokio::time::Instant;

use support::{DnsKind, DnsServer, HttpEndpoints, free_tcp_port, wait_until};

const WWW_ZONE: &str = "www A 127.0.0.2\nwww A 127.0.0.3\ntxt TXT \"hello  world\" \"two\"\n";

const IP2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const IP3: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

// ---------------------------------------------------------------------------------------------
// DNS servers

/// Everything a test relies on, for one server kind: zone content, TCP queries, signed updates
/// (good and bad key), persistence across stop/restart.
fn dns_full_cycle(kind: DnsKind) {
    let mut dns = DnsServer::start(kind, WWW_ZONE);
    assert_eq!(dns.kind, kind);
    assert_eq!(dns.addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_ne!(dns.port(), 0);
    assert_eq!(dns.zone, "example.test.");
    assert_eq!(dns.key_name, "upd-key");
    assert_eq!(dns.secret_b64.len(), 44, "32 bytes in base64");
    assert!(dns.is_running());

    // The zone: the harness's header plus the body.
    assert_eq!(
        dns.query("www.example.test", "A"),
        strings(&["127.0.0.2", "127.0.0.3"])
    );
    assert_eq!(dns.query("ns1.example.test.", "A"), strings(&["127.0.0.1"]));
    assert_eq!(
        dns.query("example.test.", "NS"),
        strings(&["ns1.example.test."])
    );
    assert_eq!(
        dns.query("txt.example.test.", "TXT"),
        strings(&["\"hello  world\" \"two\""]),
        "TXT rdata keeps its inner spacing"
    );
    assert_eq!(dns.query("nope.example.test.", "A"), Vec::<String>::new());
    assert_eq!(dns.query("www.example.test.", "AAAA"), Vec::<String>::new());
    assert_eq!(dns.soa_serial(), 1);
    // A zone the server does not have is REFUSED: an error, not an empty answer.
    assert!(dns.try_query("www.other.test.", "A").is_err());

    // A signed update is applied and bumps the serial.
    dns.nsupdate("update add new.example.test. 60 A 127.0.0.9");
    assert_eq!(dns.query("new.example.test.", "A"), strings(&["127.0.0.9"]));
    let serial = dns.soa_serial();
    assert!(
        serial > 1,
        "serial should grow after an update, is {serial}"
    );

    // Several commands in one UPDATE.
    dns.nsupdate(
        "update delete www.example.test. A 127.0.0.3\nupdate add www.example.test. 60 A 127.0.0.4",
    );
    assert_eq!(
        dns.query("www.example.test.", "A"),
        strings(&["127.0.0.2", "127.0.0.4"])
    );
    let serial = dns.soa_serial();

    // A failing prerequisite is an error, and changes nothing.
    let err = dns
        .try_nsupdate(
            "prereq nxdomain www.example.test.\nupdate add www.example.test. 60 A 127.0.0.5",
        )
        .expect_err("prerequisite should fail");
    assert!(err.contains("YXDOMAIN"), "{err}");
    assert_eq!(dns.soa_serial(), serial);

    // The wrong secret is rejected.
    let wrong = support::base64_encode(&[7u8; 32]);
    assert_ne!(wrong, dns.secret_b64);
    let err = dns
        .try_nsupdate_with_secret(&wrong, "update add evil.example.test. 60 A 127.0.0.66")
        .expect_err("an update signed with the wrong secret must fail");
    assert!(err.contains("BADSIG") || err.contains("NOTAUTH"), "{err}");
    assert_eq!(dns.query("evil.example.test.", "A"), Vec::<String>::new());
    assert_eq!(dns.soa_serial(), serial);

    // The key may also transfer the zone (AXFR over TCP); without it the transfer is refused.
    let axfr = |key: Option<&str>| {
        let mut cmd = std::process::Command::new("dig");
        if let Some(secret) = key {
            cmd.args(["-y", &format!("hmac-sha256:upd-key:{secret}")]);
        }
        cmd.args(["+time=2", "+tries=1", "@127.0.0.1", "-p"])
            .arg(dns.port().to_string())
            .args(["example.test.", "AXFR"]);
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    let signed = axfr(Some(&dns.secret_b64));
    assert!(
        signed.contains("new.example.test.") && signed.contains("127.0.0.9"),
        "{signed}"
    );
    assert!(!axfr(None).contains("new.example.test."));

    // The secret file.
    let tmp = tempfile::tempdir().unwrap();
    let path = dns.write_secret_file(tmp.path());
    assert_eq!(path, tmp.path().join("tsig.secret"));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", dns.secret_b64)
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Stopped: nobody listens any more.
    let port = dns.port();
    let pid = dns.pid().unwrap();
    dns.stop();
    assert!(!dns.is_running());
    assert_eq!(dns.pid(), None);
    assert!(!process_exists(pid), "server pid {pid} still exists");
    let err = TcpStream::connect(dns.addr).expect_err("nothing should listen after stop");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    assert!(dns.try_query("www.example.test.", "A").is_err());
    assert!(
        dns.try_nsupdate("update add x.example.test. 60 A 127.0.0.1")
            .is_err()
    );
    // The panicking variants say what failed and show the server log.
    let msg = panic_message(|| dns.nsupdate("update add x.example.test. 60 A 127.0.0.1"));
    assert!(
        msg.contains("nsupdate to") && msg.contains("--- server log ---"),
        "{msg}"
    );
    let msg = panic_message(|| {
        dns.query("www.example.test.", "A");
    });
    assert!(msg.contains("query www.example.test. A"), "{msg}");
    dns.stop(); // idempotent

    // Restarted: same port, same data, updates still work.
    dns.restart();
    assert!(dns.is_running());
    assert_eq!(dns.port(), port);
    assert_eq!(dns.query("new.example.test.", "A"), strings(&["127.0.0.9"]));
    assert_eq!(
        dns.query("www.example.test.", "A"),
        strings(&["127.0.0.2", "127.0.0.4"])
    );
    assert_eq!(dns.soa_serial(), serial);
    dns.nsupdate("update add after.example.test. 60 TXT \"restart\"");
    assert_eq!(
        dns.query("after.example.test.", "TXT"),
        strings(&["\"restart\""])
    );
    assert!(dns.soa_serial() > serial);

    // restart() on a running server works too.
    dns.restart();
    assert_eq!(
        dns.query("after.example.test.", "TXT"),
        strings(&["\"restart\""])
    );

    let log = dns.log();
    let banner = match kind {
        DnsKind::Knot => "Knot DNS",
        DnsKind::Bind => "BIND 9",
    };
    assert!(log.contains(banner), "{log}");
    assert!(
        log.contains("=== harness: stopped by the harness ==="),
        "{log}"
    );

    // Drop kills the process.
    let pid = dns.pid().unwrap();
    let addr = dns.addr;
    drop(dns);
    assert!(!process_exists(pid), "server pid {pid} survived drop");
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn knot_full_cycle() {
    dns_full_cycle(DnsKind::Knot);
}

#[test]
fn bind_full_cycle() {
    dns_full_cycle(DnsKind::Bind);
}

/// Servers started at the same time get distinct ports and each serves its own data.
#[test]
fn dns_servers_in_parallel_are_isolated() {
    let handles: Vec<_> = (0..6)
        .map(|i| {
            thread::spawn(move || {
                let kind = if i % 2 == 0 {
                    DnsKind::Knot
                } else {
                    DnsKind::Bind
                };
                let dns = DnsServer::start(kind, &format!("id TXT \"server-{i}\"\n"));
                // Query repeatedly: a server sharing its port with another would sooner or later
                // hand out the other one's answer.
                for _ in 0..5 {
                    assert_eq!(
                        dns.query("id.example.test.", "TXT"),
                        vec![format!("\"server-{i}\"")]
                    );
                }
                dns
            })
        })
        .collect();
    let servers: Vec<DnsServer> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut ports: Vec<u16> = servers.iter().map(DnsServer::port).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), servers.len(), "ports must be distinct");
    let secrets: std::collections::HashSet<_> = servers.iter().map(|s| &s.secret_b64).collect();
    assert_eq!(secrets.len(), servers.len(), "secrets must be distinct");
    // A key is only valid on its own server.
    let err = servers[0]
        .try_nsupdate_with_secret(
            &servers[2].secret_b64,
            "update add x.example.test. 60 A 127.0.0.1",
        )
        .expect_err("another server's secret must be rejected");
    assert!(err.contains("BADSIG") || err.contains("NOTAUTH"), "{err}");
}

/// A zone that does not load makes `start` panic with the server's complaint as soon as the server
/// reports it, not after the readiness timeout ("not ready within ..."). No wall-clock assertion: under
/// load, capturing the panic's backtrace alone can take seconds.
#[test]
fn broken_zone_fails_fast_and_loudly() {
    for kind in [DnsKind::Knot, DnsKind::Bind] {
        let msg = panic_message(|| {
            DnsServer::start(kind, "www A 300.1.1.1\n");
        });
        assert!(msg.contains("the zone did not load"), "{kind:?}: {msg}");
        assert!(!msg.contains("not ready within"), "{kind:?}: {msg}");
        assert!(
            msg.contains("300.1.1.1"),
            "{kind:?}: the zone file is shown: {msg}"
        );
        let complaint = match kind {
            DnsKind::Knot => "invalid IPv4 address",
            DnsKind::Bind => "bad dotted quad",
        };
        assert!(
            msg.contains(complaint),
            "{kind:?}: the server log is shown: {msg}"
        );
    }
}

/// A server that lands on a port someone else has moves on to another port, and never disturbs the
/// previous owner. BIND against BIND is the nasty case: BIND 9.18 binds TCP with SO_REUSEPORT, so
/// without the harness's countermeasures both would run and share the traffic.
#[test]
fn port_collisions_are_detected_and_retried() {
    let fresh = || free_tcp_port(IpAddr::V4(Ipv4Addr::LOCALHOST));
    for kind in [DnsKind::Knot, DnsKind::Bind] {
        // Taken by a plain socket of this process.
        let blocker = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken = blocker.local_addr().unwrap().port();
        let mut ports = vec![fresh(), taken];
        let dns = DnsServer::start_with_ports(kind, "", &mut || ports.pop().unwrap());
        assert_ne!(dns.port(), taken, "{kind:?}");
        assert!(ports.is_empty());
        let log = dns.log();
        assert_eq!(
            log.matches("=== harness: starting").count(),
            2,
            "{kind:?}: {log}"
        );
        assert!(
            log.contains("address in use") || log.contains("address already in use"),
            "{kind:?}: {log}"
        );

        // Taken by another server of each kind.
        for other_kind in [DnsKind::Knot, DnsKind::Bind] {
            let first = DnsServer::start(other_kind, "id TXT \"first\"\n");
            let mut ports = vec![fresh(), first.port()];
            let second = DnsServer::start_with_ports(kind, "id TXT \"second\"\n", &mut || {
                ports.pop().unwrap()
            });
            assert_ne!(second.port(), first.port(), "{kind:?} after {other_kind:?}");
            for _ in 0..10 {
                assert_eq!(
                    first.query("id.example.test.", "TXT"),
                    strings(&["\"first\""])
                );
                assert_eq!(
                    second.query("id.example.test.", "TXT"),
                    strings(&["\"second\""])
                );
            }
        }
    }
}

/// The /proc check that catches two servers sharing a port (BIND and Knot use SO_REUSEPORT/ADDR).
#[test]
fn port_ownership_sees_foreign_sockets() {
    use support::{Ownership, port_ownership};
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = tcp.local_addr().unwrap().port();
    let me = std::process::id();
    // TCP alone is not enough: a DNS server must serve UDP as well.
    assert!(matches!(port_ownership(me, port), Ownership::Incomplete(_)));
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    assert_eq!(port_ownership(me, port), Ownership::Exclusive);

    // The same sockets seen from another process are foreign.
    let dns = DnsServer::start(DnsKind::Knot, "");
    let pid = dns.pid().unwrap();
    match port_ownership(pid, port) {
        Ownership::Shared(why) => assert!(why.contains("shared with another process"), "{why}"),
        other => panic!("expected Shared, got {other:?}"),
    }
    assert_eq!(port_ownership(pid, dns.port()), Ownership::Exclusive);
    assert!(matches!(
        port_ownership(me, dns.port()),
        Ownership::Shared(_)
    ));
    drop((tcp, udp));
}

// ---------------------------------------------------------------------------------------------
// HTTP endpoints

/// Sends `METHOD / HTTP/1.1` to `addr`, returns the whole response.
fn http(addr: SocketAddr, method: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} /health HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: harness-selftest\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn get(addr: SocketAddr) -> String {
    http(addr, "GET").unwrap_or_else(|e| panic!("GET {addr}: {e}"))
}

#[test]
fn http_endpoints_stop_resume_status_hits() {
    let http_eps = HttpEndpoints::start(&[IP2, IP3]);
    let (a2, a3) = (http_eps.addr(IP2), http_eps.addr(IP3));
    assert_eq!(a2, SocketAddr::new(IP2, http_eps.port));
    assert_eq!(a3.port(), http_eps.port);

    let ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";
    assert_eq!(get(a2), ok);
    assert_eq!(get(a3), ok);
    assert_eq!((http_eps.hits(IP2), http_eps.hits(IP3)), (1, 1));

    // Stopped on .2 only.
    http_eps.stop(IP2);
    let err = TcpStream::connect(a2).expect_err("stopped endpoint must refuse");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(get(a3), ok);
    http_eps.stop(IP2); // idempotent

    // Back again, same port.
    http_eps.resume(IP2);
    assert_eq!(get(a2), ok);
    http_eps.resume(IP2); // idempotent

    // Status and body switch per address.
    http_eps.set_status(IP3, 503);
    let r = get(a3);
    assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
    assert!(r.contains("\r\nContent-Length: 3\r\n"), "{r}");
    assert!(get(a2).starts_with("HTTP/1.1 200 OK\r\n"));
    http_eps.set_status(IP3, 200);
    http_eps.set_body(IP3, "hello\n");
    let r = get(a3);
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(
        r.ends_with("Content-Length: 6\r\nConnection: close\r\n\r\nhello\n"),
        "{r}"
    );

    // HEAD: headers only.
    let r = http(a2, "HEAD").unwrap();
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
        "{r:?}"
    );

    assert_eq!(http_eps.hits(IP2), 4);
    assert_eq!(http_eps.hits(IP3), 4);
    assert!(http_eps.connections(IP2) >= 4);
}

/// A TCP-level probe (connect, close) counts as a connection but not as a request.
#[test]
fn http_endpoints_count_bare_connections() {
    let http_eps = HttpEndpoints::start(&[IP2]);
    drop(TcpStream::connect(http_eps.addr(IP2)).unwrap());
    wait_until("the connection is accepted", Duration::from_secs(5), || {
        http_eps.connections(IP2) == 1
    });
    assert_eq!(http_eps.hits(IP2), 0);
}

/// A delayed answer on one address does not hold up the others, nor further connections. Asserted
/// by order of events, not wall-clock bounds, so that it holds on an overloaded machine.
#[test]
fn http_endpoints_delay() {
    let delay = Duration::from_millis(1500);
    let http_eps = HttpEndpoints::start(&[IP2, IP3]);
    http_eps.set_delay(IP2, delay);
    let slow_addr = http_eps.addr(IP2);
    let started = Instant::now();
    let slow = thread::spawn(move || get(slow_addr));
    wait_until("the slow request arrives", Duration::from_secs(5), || {
        http_eps.hits(IP2) == 1
    });
    // Answered while the slow request still waits: on the other address and on the same one.
    assert!(get(http_eps.addr(IP3)).starts_with("HTTP/1.1 200"));
    assert!(
        !slow.is_finished(),
        "the fast answer should not wait for the slow one"
    );
    http_eps.set_delay(IP2, Duration::ZERO);
    assert!(get(slow_addr).starts_with("HTTP/1.1 200"));
    assert!(
        !slow.is_finished(),
        "a second connection should not wait for the first"
    );
    assert!(slow.join().unwrap().starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() >= delay);
}

/// `stop` kills the endpoint at once: a request still waiting for its (delayed) answer and an idle
/// connection held open both end (EOF or reset) instead of being answered later or left to time
/// out, and new connections are refused.
#[test]
fn http_endpoints_stop_ends_accepted_connections() {
    let http_eps = HttpEndpoints::start(&[IP2]);
    http_eps.set_delay(IP2, Duration::from_secs(120));
    let addr = http_eps.addr(IP2);
    let mut pending = TcpStream::connect(addr).unwrap();
    pending
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let idle = TcpStream::connect(addr).unwrap();
    wait_until(
        "the request arrives and both connections are accepted",
        Duration::from_secs(5),
        || http_eps.hits(IP2) == 1 && http_eps.connections(IP2) == 2,
    );
    http_eps.stop(IP2);
    let err = TcpStream::connect(addr).expect_err("stopped endpoint must refuse");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
    // Without the shutdown the pending request would be answered after 120 s: the read times out.
    for (what, mut stream) in [("pending request", pending), ("idle connection", idle)] {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("{what}: should have ended at stop(), got {other:?}"),
        }
    }
    // And it comes back as before.
    http_eps.set_delay(IP2, Duration::ZERO);
    http_eps.resume(IP2);
    assert!(get(addr).starts_with("HTTP/1.1 200 OK"));
}

#[test]
fn http_endpoints_ipv6_loopback() {
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    if TcpListener::bind((v6, 0)).is_err() {
        eprintln!("SKIPPED http_endpoints_ipv6_loopback: ::1 is not available on this machine");
        return;
    }
    let http_eps = HttpEndpoints::start(&[IP2, v6]);
    assert!(get(http_eps.addr(v6)).starts_with("HTTP/1.1 200 OK"));
    http_eps.stop(v6);
    assert!(TcpStream::connect(http_eps.addr(v6)).is_err());
    assert!(get(http_eps.addr(IP2)).starts_with("HTTP/1.1 200 OK"));
    http_eps.resume(v6);
    assert!(get(http_eps.addr(v6)).starts_with("HTTP/1.1 200 OK"));
    assert_eq!(http_eps.hits(v6), 2);
}

#[test]
fn http_endpoints_drop_closes_everything() {
    let http_eps = HttpEndpoints::start(&[IP2, IP3]);
    let addrs = [http_eps.addr(IP2), http_eps.addr(IP3)];
    http_eps.stop(IP3);
    drop(http_eps);
    for addr in addrs {
        let err = TcpStream::connect(addr).expect_err("dropped endpoints must refuse");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{addr}");
    }
}

/// Many endpoint sets at once: all get working, distinct ports.
#[test]
fn http_endpoints_in_parallel() {
    let handles: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(|| {
                let ips = [IP2, IP3, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4))];
                let eps = HttpEndpoints::start(&ips);
                for ip in ips {
                    assert!(get(eps.addr(ip)).starts_with("HTTP/1.1 200 OK"));
                }
                eps
            })
        })
        .collect();
    let all: Vec<HttpEndpoints> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut ports: Vec<u16> = all.iter().map(|e| e.port).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), all.len());
}

#[test]
#[should_panic(expected = "is not one of the HttpEndpoints addresses")]
fn http_endpoints_unknown_ip_panics() {
    let http_eps = HttpEndpoints::start(&[IP2]);
    http_eps.hits(IP3);
}

// ---------------------------------------------------------------------------------------------
// Small helpers

#[test]
fn free_tcp_port_is_free_and_never_repeats() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let ports: Vec<u16> = (0..50).map(|_| free_tcp_port(ip)).collect();
    let mut unique = ports.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ports.len());
    // Bindable right away (a port held for a while can of course be taken by another process).
    let port = free_tcp_port(ip);
    TcpListener::bind((ip, port)).expect("the port should be bindable");
}

#[test]
fn wait_until_returns_early_and_panics_on_timeout() {
    let mut calls = 0;
    wait_until("third call", Duration::from_secs(5), || {
        calls += 1;
        calls == 3
    });
    assert_eq!(calls, 3, "returns as soon as the condition holds");

    let started = Instant::now();
    let msg = panic_message(|| wait_until("the impossible", Duration::from_millis(100), || false));
    assert!(msg.contains("the impossible"), "{msg}");
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[test]
fn base64_matches_rfc4648_vectors() {
    for (input, expected) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(support::base64_encode(input.as_bytes()), expected);
    }
    assert_eq!(support::base64_encode(&[0xff, 0xfe, 0xfd]), "//79");
}
