//! The `dns` check against a real Knot on loopback (answers, rcodes, expected values, UDP truncation
//! and the TCP fallback, TCP only), a closed port, a server that never answers and a stopped server.
//! Configuration problems are reported at the right key with the fix.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rrguard::config::{CheckConfig, ConfigError, parse};
use rrguard::observe::probe::{self, ProbeResult};
use support::{DnsKind, DnsServer};

const TIMEOUT: Duration = Duration::from_secs(3);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn config(check: &str) -> Result<rrguard::config::Config, ConfigError> {
    let text = format!(
        r#"
[[writer]]
name = "w"
type = "rfc2136"
server = "127.0.0.1"
tsig = {{ name = "k", algorithm = "hmac-sha256", secret = "c2VjcmV0" }}

[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "w"
endpoints = ["127.0.0.1"]
[service.check]
type = "dns"
{check}
"#
    );
    parse(std::path::Path::new("x.toml"), &text)
}

async fn run(check: &str, timeout: Duration) -> ProbeResult {
    let c = config(check).unwrap_or_else(|e| panic!("{e}"));
    let check = &c.services[0].check;
    assert!(matches!(check, CheckConfig::Dns(_)));
    probe::build(check, LOCALHOST, timeout)
        .unwrap()
        .probe()
        .await
}

fn knot() -> DnsServer {
    let mut body = String::from(
        "www A 192.0.2.10\nwww A 192.0.2.11\nmail MX 10 mx.example.test.\ntxt TXT \"v=spf1 -all\"\n",
    );
    // 60 A records: more than 512 bytes, so a UDP answer without EDNS is truncated.
    for i in 1..=60 {
        body.push_str(&format!("big A 198.51.100.{i}\n"));
    }
    DnsServer::start(DnsKind::Knot, &body)
}

#[tokio::test]
async fn answers_rcodes_and_expected_values_from_knot() {
    let knot = knot();
    let port = knot.port();
    let with = |rest: &str| format!("port = {port}\n{rest}");

    let r = run(
        &with("name = \"www.example.test\"\nexpect_answer = [\"192.0.2.99\", \"192.0.2.11\"]"),
        TIMEOUT,
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "NOERROR, answer 192.0.2.11 (udp)");

    let r = run(&with("name = \"www.example.test\""), TIMEOUT).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "NOERROR, 2 answer(s) (udp)");

    let r = run(
        &with("name = \"www.example.test\"\nexpect_answer = [\"192.0.2.99\"]"),
        TIMEOUT,
    )
    .await;
    assert!(!r.ok, "{r:?}");
    assert!(
        r.detail
            .starts_with("NOERROR, no answer matches expect_answer (got 192.0.2.1")
            && r.detail.contains("192.0.2.10")
            && r.detail.contains("192.0.2.11"),
        "{r:?}"
    );

    let r = run(&with("name = \"nothere.example.test\""), TIMEOUT).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.detail, "NXDOMAIN, expected NOERROR (udp)");
    let r = run(
        &with("name = \"nothere.example.test\"\nexpect_rcode = \"nxdomain\""),
        TIMEOUT,
    )
    .await;
    assert!(r.ok, "{r:?}");

    // Not its zone: Knot refuses.
    let r = run(&with("name = \"www.other.test\""), TIMEOUT).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.detail, "REFUSED, expected NOERROR (udp)");

    let r = run(
        &with(
            "name = \"mail.example.test\"\nrecord_type = \"mx\"\nexpect_answer = [\"10 MX.example.test.\"]",
        ),
        TIMEOUT,
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "NOERROR, answer 10 mx.example.test (udp)");

    // The record type is part of the question: no A at mail.
    let r = run(
        &with("name = \"mail.example.test\"\nexpect_answer = [\"192.0.2.10\"]"),
        TIMEOUT,
    )
    .await;
    assert!(!r.ok, "{r:?}");
    assert!(r.detail.contains("(got none)"), "{r:?}");
}

#[tokio::test]
async fn truncated_udp_answer_is_asked_again_over_tcp() {
    let knot = knot();
    let port = knot.port();
    let r = run(
        &format!("port = {port}\nname = \"big.example.test\"\nexpect_answer = [\"198.51.100.60\"]"),
        TIMEOUT,
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "NOERROR, answer 198.51.100.60 (tcp)");
    let r = run(
        &format!("port = {port}\nname = \"www.example.test\"\ntransport = \"tcp\""),
        TIMEOUT,
    )
    .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.detail, "NOERROR, 2 answer(s) (tcp)");
}

/// A UDP server on `socket` that answers every query with an empty, truncated (TC) response.
fn truncating(socket: tokio::net::UdpSocket) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut m = hickory_net::proto::op::Message::from_vec(&buf[..n]).unwrap();
            m.metadata.message_type = hickory_net::proto::op::MessageType::Response;
            m.metadata.truncation = true;
            let _ = socket.send_to(&m.to_vec().unwrap(), from).await;
        }
    })
}

#[tokio::test]
async fn a_failure_over_tcp_after_a_truncated_answer_says_so() {
    // A TCP listener that accepts and never answers, and a UDP server on the same port number that
    // answers truncated.
    let (tcp, udp) = (0..100)
        .find_map(|_| {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = tcp.local_addr().unwrap().port();
            let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).ok()?;
            Some((tcp, udp))
        })
        .expect("no port free for both TCP and UDP");
    let port = tcp.local_addr().unwrap().port();
    udp.set_nonblocking(true).unwrap();
    let server = truncating(tokio::net::UdpSocket::from_std(udp).unwrap());
    let check = format!("port = {port}\nname = \"www.example.test\"");
    let r = run(&check, Duration::from_millis(300)).await;
    assert_eq!(
        r.detail, "timed out after 300ms (tcp, after a truncated udp answer)",
        "{r:?}"
    );
    // Nothing listens on the TCP port any more.
    drop(tcp);
    let r = run(&check, TIMEOUT).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(
        r.detail,
        "connection refused (tcp, after a truncated udp answer)"
    );
    server.abort();
}

#[tokio::test]
async fn dead_silent_and_stopped_servers_fail() {
    // A closed UDP port: the ICMP port unreachable shows as refused.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let r = run(
        &format!("port = {port}\nname = \"www.example.test\""),
        TIMEOUT,
    )
    .await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.detail, "connection refused");
    let tcp_closed = support::free_tcp_port(LOCALHOST);
    let r = run(
        &format!("port = {tcp_closed}\nname = \"www.example.test\"\ntransport = \"tcp\""),
        TIMEOUT,
    )
    .await;
    assert_eq!(r.detail, "connection refused", "{r:?}");

    // A socket that reads and never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let r = run(
        &format!("port = {port}\nname = \"www.example.test\""),
        Duration::from_millis(300),
    )
    .await;
    assert!(!r.ok);
    assert_eq!(r.detail, "timed out after 300ms");
    drop(silent);

    // A socket that sends the query back (QR clear), then garbage: neither is an answer.
    let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    let echoing = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        if let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
            let _ = echo.send_to(b"not dns", from).await;
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let r = run(
        &format!("port = {port}\nname = \"www.example.test\""),
        Duration::from_millis(300),
    )
    .await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(
        r.detail,
        "timed out after 300ms; ignored a reply: a query came back, not a response (QR bit clear)"
    );
    echoing.abort();

    // An answer to another question (a type other than the one asked).
    let other = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = other.local_addr().unwrap().port();
    let answering = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        if let Ok((n, from)) = other.recv_from(&mut buf).await {
            let mut m = hickory_net::proto::op::Message::from_vec(&buf[..n]).unwrap();
            m.metadata.message_type = hickory_net::proto::op::MessageType::Response;
            m.queries[0].set_query_type(hickory_net::proto::rr::RecordType::MX);
            let _ = other.send_to(&m.to_vec().unwrap(), from).await;
        }
    });
    let r = run(
        &format!("port = {port}\nname = \"www.example.test\""),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(
        r.detail,
        "timed out after 300ms; ignored a reply: answer is for www.example.test. MX, not the question asked",
        "{r:?}"
    );
    answering.abort();

    // A real server that stops: up, then down.
    let mut knot = knot();
    let check = format!("port = {}\nname = \"www.example.test\"", knot.port());
    assert!(run(&check, TIMEOUT).await.ok);
    knot.stop();
    let r = run(&check, TIMEOUT).await;
    assert!(!r.ok, "{r:?}");
    assert_eq!(r.detail, "connection refused");
}

#[test]
fn configuration_problems_name_the_key_and_the_fix() {
    let msgs = |check: &str| -> Vec<String> {
        match config(check) {
            Err(ConfigError::Invalid { problems, .. }) => problems
                .iter()
                .map(|p| format!("{}:{} {}", p.line, p.col, p.message))
                .collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    };
    let m = msgs(
        "name = \"bad name\"\nrecord_type = \"AX\"\nexpect_rcode = \"FINE\"\ntransport = \"quic\"\nexpect_answer = []",
    );
    assert_eq!(m.len(), 5, "{m:#?}");
    assert!(
        m[0].starts_with("15:8 ") && m[0].contains("is not a DNS name"),
        "{m:#?}"
    );
    assert!(
        m[1].starts_with("16:15 ") && m[1].contains("like \"A\", \"AAAA\""),
        "{m:#?}"
    );
    assert!(
        m[2].starts_with("17:16 ") && m[2].contains("NOERROR, FORMERR"),
        "{m:#?}"
    );
    assert!(
        m[3].starts_with("18:13 ") && m[3].contains("\"tcp\""),
        "{m:#?}"
    );
    assert!(
        m[4].starts_with("19:17 ") && m[4].contains("must not be empty"),
        "{m:#?}"
    );
    let m = msgs("record_type = \"A\"");
    assert!(m[0].contains("missing field `name`"), "{m:#?}");
    // Defaults.
    let c = config("name = \"www.example.test\"").unwrap();
    let CheckConfig::Dns(d) = &c.services[0].check else {
        panic!()
    };
    assert_eq!(d.port, 53);
    assert_eq!(d.record_type.to_string(), "A");
    assert_eq!(d.expect_rcode, 0);
    assert!(!d.tcp_only && d.expect_answer.is_empty());
    // An rcode as a number, bare or quoted.
    for rcode in ["3", "\"3\"", "\"nxdomain\""] {
        let c = config(&format!(
            "name = \"x.example.test\"\nexpect_rcode = {rcode}"
        ))
        .unwrap();
        let CheckConfig::Dns(d) = &c.services[0].check else {
            panic!()
        };
        assert_eq!(d.expect_rcode, 3, "{rcode}");
    }
    // A value no record of the type can hold; a type no single query can ask.
    let m = msgs("name = \"x.example.test\"\nexpect_answer = [\"192.0.2.1\", \"not-an-ip\"]");
    assert!(
        m.len() == 1
            && m[0].starts_with("16:31 ")
            && m[0].contains("\"not-an-ip\" is not an IPv4 address"),
        "{m:#?}"
    );
    let m =
        msgs("name = \"x.example.test\"\nrecord_type = \"AAAA\"\nexpect_answer = [\"192.0.2.1\"]");
    assert!(
        m.len() == 1 && m[0].contains("is not an IPv6 address"),
        "{m:#?}"
    );
    let m = msgs("name = \"x.example.test\"\nrecord_type = \"axfr\"");
    assert!(
        m.len() == 1 && m[0].starts_with("16:15 ") && m[0].contains("cannot be asked in one query"),
        "{m:#?}"
    );
}
