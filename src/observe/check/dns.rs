//! The `dns` check: asks the endpoint, as a DNS server, for `name` and `record_type`, and passes when
//! the answer's rcode is `expect_rcode` and, if `expect_answer` is set, one of the answer's records
//! has one of those values. Its options as written ([`RawDnsCheck`]), their validation, the validated
//! [`DnsCheckConfig`] and the [`DnsProbe`].
//!
//! The query goes over UDP (no EDNS, recursion not desired) and is asked again over TCP when the
//! answer is truncated; `transport = "tcp"` uses TCP only. Messages are hickory-proto's types,
//! encoded and decoded by hand like the rfc2136 writer's, so that every answer is seen whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use hickory_net::proto::op::{Message, MessageType, Query};
use hickory_net::proto::rr::{Name, RecordType};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::config::Seg::{self, Index, Key};
use crate::config::{Errors, normalize_name, with};
use crate::observe::probe::{Probe, ProbeResult, io_detail, timed_out};

/// Default port of a dns check.
pub const DEFAULT_DNS_PORT: u16 = 53;
/// Default `record_type`.
pub const DEFAULT_DNS_RECORD_TYPE: RecordType = RecordType::A;
/// Largest UDP answer read (no EDNS is sent, so servers stay within 512 bytes or truncate).
const UDP_BUFFER: usize = 4096;
/// The rcodes a check may expect, by their usual names (RFC 1035, RFC 2136).
const RCODES: [(&str, u16); 11] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("YXDOMAIN", 6),
    ("YXRRSET", 7),
    ("NXRRSET", 8),
    ("NOTAUTH", 9),
    ("NOTZONE", 10),
];

/// An rcode as written: a name (`"NXDOMAIN"`) or a number (`3` or `"3"`).
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "expect_rcode is an rcode name like \"NXDOMAIN\" or a number like 3"
)]
pub enum RcodeText {
    /// A name or a number in a string.
    Text(String),
    /// A number.
    Number(i64),
}

/// `[service.check]` options of `type = "dns"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnsCheck {
    /// Port on each endpoint.
    pub port: Option<u16>,
    /// Name asked for.
    pub name: String,
    /// Record type asked for.
    pub record_type: Option<String>,
    /// Expected rcode: a name or a number.
    pub expect_rcode: Option<RcodeText>,
    /// Values any one of which must be in the answer.
    pub expect_answer: Option<Vec<String>>,
    /// `"udp"` (with TCP fallback) or `"tcp"`.
    pub transport: Option<String>,
}

/// A dns check, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsCheckConfig {
    /// Port on each endpoint.
    pub port: u16,
    /// Name asked for, fully qualified.
    pub name: Name,
    /// Record type asked for.
    pub record_type: RecordType,
    /// Expected rcode (its number).
    pub expect_rcode: u16,
    /// Accepted answer values, normalized ([`normalize_rdata`]); empty: any answer.
    pub expect_answer: Vec<String>,
    /// TCP only (`transport = "tcp"`); otherwise UDP, and TCP when the answer is truncated.
    pub tcp_only: bool,
}

impl DnsCheckConfig {
    /// Builds the probe of endpoint `ip`; it cannot fail.
    pub fn build(&self, ip: IpAddr, timeout: Duration) -> DnsProbe {
        DnsProbe {
            server: SocketAddr::new(ip, self.port),
            config: self.clone(),
            timeout,
        }
    }
}

/// The usual name of rcode `code` (`NOERROR`, `NXDOMAIN`, …), or `RCODE n`.
pub fn rcode_name(code: u16) -> String {
    RCODES
        .iter()
        .find(|(_, c)| *c == code)
        .map_or_else(|| format!("RCODE {code}"), |(n, _)| (*n).to_owned())
}

/// Record data as compared with `expect_answer`: words separated by one space, lower case, without
/// quotes or trailing dots (`"10 Mail.Example.test."` and `10 mail.example.test` are equal).
pub fn normalize_rdata(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches('"')
                .trim_end_matches('.')
                .to_ascii_lowercase()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Validates a dns check of service `label` at key path `cpath`; a problem goes to `errs`, and `None`
/// is returned if there was one.
pub(crate) fn validate(
    d: &RawDnsCheck,
    label: &str,
    cpath: &[Seg],
    errs: &mut Errors,
) -> Option<DnsCheckConfig> {
    let before = errs.len();
    let at = |k: &'static str| with(cpath, &[Key(k)]);
    if d.port == Some(0) {
        errs.at(
            &at("port"),
            format!("service {label:?}: check port must not be 0"),
        );
    }
    let name = match normalize_name(&d.name).map(|n| Name::from_ascii(&n)) {
        Ok(Ok(n)) => Some(n),
        Ok(Err(e)) => {
            errs.at(
                &at("name"),
                format!(
                    "service {label:?}: name {:?} is not a DNS name: {e}",
                    d.name
                ),
            );
            None
        }
        Err(e) => {
            errs.at(
                &at("name"),
                format!(
                    "service {label:?}: name {:?} is not a DNS name: {e}; write the name to ask for, like \"www.example.com\"",
                    d.name
                ),
            );
            None
        }
    };
    let record_type = match &d.record_type {
        None => Some(DEFAULT_DNS_RECORD_TYPE),
        Some(t) => match RecordType::from_str(&t.to_ascii_uppercase()) {
            // Zone transfers and the EDNS pseudo-type are not questions a probe can ask.
            Ok(rt @ (RecordType::AXFR | RecordType::IXFR | RecordType::OPT)) => {
                errs.at(
                    &at("record_type"),
                    format!(
                        "service {label:?}: record_type {t:?} cannot be asked in one query ({rt} is a transfer or a pseudo-type); ask for \"SOA\" to see that a server serves a zone"
                    ),
                );
                None
            }
            Ok(rt) if !matches!(rt, RecordType::Unknown(_)) => Some(rt),
            _ => {
                errs.at(
                    &at("record_type"),
                    format!(
                        "service {label:?}: record_type {t:?} is not a DNS record type; write one like \"A\", \"AAAA\", \"SOA\", \"MX\" or \"TXT\""
                    ),
                );
                None
            }
        },
    };
    let expect_rcode = match &d.expect_rcode {
        None => Some(0),
        Some(r) => {
            let r = match r {
                RcodeText::Text(t) => t.clone(),
                RcodeText::Number(n) => n.to_string(),
            };
            let upper = r.trim().to_ascii_uppercase();
            let code = RCODES
                .iter()
                .find(|(n, _)| *n == upper)
                .map(|(_, c)| *c)
                .or_else(|| upper.parse::<u16>().ok().filter(|c| *c < 4096));
            if code.is_none() {
                let names: Vec<&str> = RCODES.iter().map(|(n, _)| *n).collect();
                errs.at(
                    &at("expect_rcode"),
                    format!(
                        "service {label:?}: expect_rcode {r:?} is not an rcode; write one of {} or a number",
                        names.join(", ")
                    ),
                );
            }
            code
        }
    };
    let expect_answer = d.expect_answer.clone().unwrap_or_default();
    if d.expect_answer.as_ref().is_some_and(Vec::is_empty) {
        errs.at(
            &at("expect_answer"),
            format!(
                "service {label:?}: expect_answer must not be empty; list the values, like [\"192.0.2.10\"], or leave it out"
            ),
        );
    }
    for (i, a) in expect_answer.iter().enumerate() {
        let value = normalize_rdata(a);
        let wrong_family = match record_type {
            Some(RecordType::A) => value.parse::<std::net::Ipv4Addr>().is_err(),
            Some(RecordType::AAAA) => value.parse::<std::net::Ipv6Addr>().is_err(),
            _ => false,
        };
        if value.is_empty() {
            errs.at(
                &with(&at("expect_answer"), &[Index(i)]),
                format!("service {label:?}: an expect_answer value must not be blank"),
            );
        } else if wrong_family {
            let rt = record_type.unwrap_or(DEFAULT_DNS_RECORD_TYPE);
            errs.at(
                &with(&at("expect_answer"), &[Index(i)]),
                format!(
                    "service {label:?}: expect_answer {a:?} is not an {} address, so no {rt} record can match it; write one like \"{}\"",
                    if rt == RecordType::A { "IPv4" } else { "IPv6" },
                    if rt == RecordType::A { "192.0.2.10" } else { "2001:db8::10" },
                ),
            );
        }
    }
    let tcp_only = match d.transport.as_deref() {
        None | Some("udp") => false,
        Some("tcp") => true,
        Some(other) => {
            errs.at(
                &at("transport"),
                format!(
                    "service {label:?}: transport {other:?} is not \"udp\" (UDP, TCP when truncated) or \"tcp\""
                ),
            );
            false
        }
    };
    if errs.len() != before {
        return None;
    }
    Some(DnsCheckConfig {
        port: d.port.unwrap_or(DEFAULT_DNS_PORT),
        name: name?,
        record_type: record_type?,
        expect_rcode: expect_rcode?,
        expect_answer: expect_answer.iter().map(|a| normalize_rdata(a)).collect(),
        tcp_only,
    })
}

/// Asks one endpoint as a DNS server.
#[derive(Debug)]
pub struct DnsProbe {
    server: SocketAddr,
    config: DnsCheckConfig,
    timeout: Duration,
}

/// What one exchange saw on its way, for the detail of a failure.
#[derive(Default)]
struct Trail {
    /// Why the last datagram that was not this query's answer was ignored.
    ignored: Option<String>,
    /// The UDP answer came truncated (TC), so the query went again over TCP.
    truncated: bool,
}

impl Trail {
    /// `detail` with where it happened, when the failure came over TCP after a truncated UDP answer:
    /// `connection refused (tcp, after a truncated udp answer)`.
    fn place(&self, detail: String) -> String {
        if self.truncated {
            format!("{detail} (tcp, after a truncated udp answer)")
        } else {
            detail
        }
    }
}

/// Why an exchange produced no answer.
enum Failed {
    Io(std::io::Error),
    Garbled(String),
}

impl DnsProbe {
    fn query(&self, id: u16) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.recursion_desired = false;
        m.add_query(Query::query(
            self.config.name.clone(),
            self.config.record_type,
        ));
        // A name and a type always encode.
        m.to_vec().unwrap_or_default()
    }

    /// Over UDP; a datagram that is not the answer to this query is ignored, and the reason kept in
    /// `ignored` for the detail if no answer comes.
    async fn udp(
        &self,
        id: u16,
        query: &[u8],
        ignored: &mut Option<String>,
    ) -> Result<Message, Failed> {
        let local: IpAddr = match self.server {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let socket = UdpSocket::bind(SocketAddr::new(local, 0))
            .await
            .map_err(Failed::Io)?;
        // Connected: only the server's datagrams arrive, and a closed port reports as refused.
        socket.connect(self.server).await.map_err(Failed::Io)?;
        socket.send(query).await.map_err(Failed::Io)?;
        let mut buf = vec![0u8; UDP_BUFFER];
        loop {
            let n = socket.recv(&mut buf).await.map_err(Failed::Io)?;
            match self.decode(&buf[..n], id) {
                // A stray or late datagram of an earlier probe, or not an answer: keep waiting.
                Err(why) => *ignored = Some(why),
                Ok(m) => return Ok(m),
            }
        }
    }

    async fn tcp(&self, id: u16, query: &[u8]) -> Result<Message, Failed> {
        let mut stream = TcpStream::connect(self.server).await.map_err(Failed::Io)?;
        let len = u16::try_from(query.len()).unwrap_or(u16::MAX);
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.map_err(Failed::Io)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.map_err(Failed::Io)?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await.map_err(Failed::Io)?;
        self.decode(&answer, id).map_err(Failed::Garbled)
    }

    /// The answer and the transport that brought it. `trail` keeps what the detail of a failure
    /// needs: a reply ignored, and whether the UDP answer was truncated, so that a failure over
    /// TCP says it came after one.
    async fn exchange(&self, trail: &mut Trail) -> Result<(Message, &'static str), Failed> {
        let id = rand_id();
        let query = self.query(id);
        if !self.config.tcp_only {
            let answer = self.udp(id, &query, &mut trail.ignored).await?;
            if !answer.metadata.truncation {
                return Ok((answer, "udp"));
            }
            trail.truncated = true;
        }
        Ok((self.tcp(id, &query).await?, "tcp"))
    }

    /// `bytes` as the answer to query `id`: a response (QR set) with that id and, if it repeats a
    /// question, this probe's name and type (RFC 1035 §4.1.1, RFC 5452 §9.1). A server that echoes
    /// the query back, or answers another question, has not answered.
    fn decode(&self, bytes: &[u8], id: u16) -> Result<Message, String> {
        let m = Message::from_vec(bytes).map_err(|e| format!("answer does not decode: {e}"))?;
        if m.metadata.id != id {
            return Err(format!("answer has id {}, the query {id}", m.metadata.id));
        }
        if m.metadata.message_type != MessageType::Response {
            return Err("a query came back, not a response (QR bit clear)".to_owned());
        }
        if let Some(q) = m.queries.first()
            && (q.query_type() != self.config.record_type
                || !q.name().eq_ignore_root(&self.config.name))
        {
            return Err(format!(
                "answer is for {} {}, not the question asked",
                q.name(),
                q.query_type()
            ));
        }
        Ok(m)
    }

    /// The verdict on `answer`: pass or not, and the detail.
    fn judge(&self, answer: &Message, transport: &str) -> (bool, String) {
        let rcode = u16::from(answer.metadata.response_code);
        let got = rcode_name(rcode);
        if rcode != self.config.expect_rcode {
            return (
                false,
                format!(
                    "{got}, expected {} ({transport})",
                    rcode_name(self.config.expect_rcode)
                ),
            );
        }
        let values: Vec<String> = answer
            .answers
            .iter()
            .filter(|r| r.record_type() == self.config.record_type)
            .map(|r| normalize_rdata(&r.data.to_string()))
            .collect();
        if self.config.expect_answer.is_empty() {
            return (
                true,
                format!("{got}, {} answer(s) ({transport})", values.len()),
            );
        }
        match values
            .iter()
            .find(|v| self.config.expect_answer.contains(v))
        {
            Some(v) => (true, format!("{got}, answer {v} ({transport})")),
            None => {
                let mut shown = values.join(", ");
                if shown.len() > 200 {
                    shown = format!("{}…", shown.chars().take(200).collect::<String>());
                }
                (
                    false,
                    format!(
                        "{got}, no answer matches expect_answer (got {}) ({transport})",
                        if shown.is_empty() { "none" } else { &shown }
                    ),
                )
            }
        }
    }
}

fn rand_id() -> u16 {
    // Only pairs answers with queries on our own socket; unpredictability is not a goal here.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .subsec_nanos();
    (nanos ^ (nanos >> 16)) as u16
}

#[async_trait]
impl Probe for DnsProbe {
    async fn probe(&self) -> ProbeResult {
        let start = Instant::now();
        let mut trail = Trail::default();
        let outcome = tokio::time::timeout(self.timeout, self.exchange(&mut trail)).await;
        let latency = start.elapsed();
        match outcome {
            Ok(Ok((answer, transport))) => {
                let (ok, detail) = self.judge(&answer, transport);
                ProbeResult {
                    ok,
                    latency,
                    detail,
                }
            }
            Ok(Err(Failed::Io(e))) => ProbeResult {
                ok: false,
                latency,
                detail: trail.place(io_detail(&e)),
            },
            Ok(Err(Failed::Garbled(why))) => ProbeResult {
                ok: false,
                latency,
                detail: trail.place(why),
            },
            Err(_) => {
                let mut r = timed_out(self.timeout);
                r.detail = trail.place(r.detail);
                if let Some(why) = trail.ignored {
                    r.detail = format!("{}; ignored a reply: {why}", r.detail);
                }
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdata_normalization() {
        assert_eq!(
            normalize_rdata("10  Mail.Example.test."),
            normalize_rdata("10 mail.example.test")
        );
        assert_eq!(normalize_rdata("\"v=spf1 -all\""), "v=spf1 -all");
    }

    #[test]
    fn rcode_names() {
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(23), "RCODE 23");
    }
}
