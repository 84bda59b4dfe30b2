//! The `tcp` check: its options as written (`RawTcpCheck`), their validation, the validated
//! [`TcpCheckConfig`] and the [`TcpProbe`] built from it. It passes when a TCP connection to the
//! endpoint's port is established within the timeout and, if set, after writing `send`, the first
//! bytes the endpoint sends match the `expect` regex (SMTP/IMAP banners, Redis `PING` → `+PONG`).
//! At most [`MAX_EXPECT_BYTES`] are read, within the probe's timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use super::Pattern;
use crate::config::Seg::Key;
use crate::config::{Errors, Seg, with};
use crate::observe::probe::{Probe, ProbeResult, close_with_reset, io_detail, timed_out};

/// Most bytes read from the endpoint while waiting for `expect` to match.
pub const MAX_EXPECT_BYTES: usize = 4096;
/// Longest excerpt of what the endpoint sent, quoted in the probe detail, characters.
const EXCERPT_CHARS: usize = 100;

/// A TCP check, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpCheckConfig {
    /// Port on each endpoint.
    pub port: u16,
    /// Bytes written once connected.
    pub send: Option<Vec<u8>>,
    /// What the first bytes read must match.
    pub expect: Option<Pattern>,
}

/// `[service.check]` options of `type = "tcp"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcpCheck {
    /// Port.
    pub port: u16,
    /// Text written once connected.
    pub send: Option<String>,
    /// Regex the first bytes read must match.
    pub expect: Option<String>,
}

impl TcpCheckConfig {
    /// A plain connect check of `port`.
    pub fn connect(port: u16) -> Self {
        TcpCheckConfig {
            port,
            send: None,
            expect: None,
        }
    }

    /// Builds the probe of endpoint `ip`; it cannot fail.
    pub fn build(&self, ip: IpAddr, timeout: Duration) -> TcpProbe {
        TcpProbe {
            addr: SocketAddr::new(ip, self.port),
            timeout,
            send: self.send.clone(),
            expect: self.expect.clone(),
        }
    }
}

/// Validates a tcp check of service `label` at key path `cpath`; a problem goes to `errs`, and `None`
/// is returned if there was one.
pub(crate) fn validate(
    t: &RawTcpCheck,
    label: &str,
    cpath: &[Seg],
    errs: &mut Errors,
) -> Option<TcpCheckConfig> {
    let before = errs.len();
    if t.port == 0 {
        errs.at(
            &with(cpath, &[Key("port")]),
            format!("service {label:?}: check port must not be 0"),
        );
    }
    if t.send.as_ref().is_some_and(String::is_empty) {
        errs.at(
            &with(cpath, &[Key("send")]),
            format!(
                "service {label:?}: send must not be empty; write the request, like \"PING\\r\\n\", or leave it out"
            ),
        );
    }
    let expect = match &t.expect {
        None => None,
        Some(re) if re.is_empty() => {
            errs.at(
                &with(cpath, &[Key("expect")]),
                format!(
                    "service {label:?}: expect must not be empty; write a regex like \"^220 \", or leave it out"
                ),
            );
            None
        }
        Some(re) => match Pattern::new(re) {
            Ok(r) => Some(r),
            Err(why) => {
                errs.at(
                    &with(cpath, &[Key("expect")]),
                    format!("service {label:?}: expect {re:?} is not a valid regex: {why}"),
                );
                None
            }
        },
    };
    if errs.len() != before {
        return None;
    }
    Some(TcpCheckConfig {
        port: t.port,
        send: t.send.as_ref().map(|s| s.as_bytes().to_vec()),
        expect,
    })
}

/// TCP connect check, optionally with a request and an expected answer.
pub struct TcpProbe {
    addr: SocketAddr,
    timeout: Duration,
    send: Option<Vec<u8>>,
    expect: Option<Pattern>,
}

impl TcpProbe {
    /// The plain connect probe of `addr`, giving up after `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        TcpProbe {
            addr,
            timeout,
            send: None,
            expect: None,
        }
    }

    /// Connects, sends and reads into `got` until `expect` matches: `Ok(detail)` on a pass,
    /// `Err(detail)`.
    async fn converse(&self, got: &mut Vec<u8>) -> Result<String, String> {
        let mut stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| io_detail(&e))?;
        // With `send` but no `expect`, the bytes written may still be unsent when the probe ends:
        // those connections close gracefully.
        if self.send.is_none() || self.expect.is_some() {
            close_with_reset(&stream);
        }
        if let Some(send) = &self.send {
            stream
                .write_all(send)
                .await
                .map_err(|e| format!("send failed: {}", io_detail(&e)))?;
        }
        let Some(expect) = &self.expect else {
            return Ok(if self.send.is_some() {
                "connected, sent".to_owned()
            } else {
                "connected".to_owned()
            });
        };
        let mut buf = [0u8; 1024];
        loop {
            if expect.is_match(got) {
                return Ok(format!("connected, got {}", excerpt(got)));
            }
            if got.len() >= MAX_EXPECT_BYTES {
                return Err(format!(
                    "expect /{}/ did not match the first {MAX_EXPECT_BYTES} bytes: {}",
                    expect.as_str(),
                    excerpt(got)
                ));
            }
            let room = (MAX_EXPECT_BYTES - got.len()).min(buf.len());
            let n = stream
                .read(&mut buf[..room])
                .await
                .map_err(|e| format!("read failed: {}", io_detail(&e)))?;
            if n == 0 {
                return Err(format!(
                    "connection closed before expect /{}/ matched: got {}",
                    expect.as_str(),
                    excerpt(got)
                ));
            }
            got.extend_from_slice(&buf[..n]);
        }
    }
}

/// The first line of `bytes`, quoted with escapes, at most [`EXCERPT_CHARS`] characters.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next().unwrap_or("");
    let cut: String = line.chars().take(EXCERPT_CHARS).collect();
    format!("{cut:?}")
}

#[async_trait]
impl Probe for TcpProbe {
    async fn probe(&self) -> ProbeResult {
        let start = Instant::now();
        let mut got = Vec::new();
        let outcome = tokio::time::timeout(self.timeout, self.converse(&mut got)).await;
        let latency = start.elapsed();
        match outcome {
            Ok(Ok(detail)) => ProbeResult {
                ok: true,
                latency,
                detail,
            },
            Ok(Err(detail)) => ProbeResult {
                ok: false,
                latency,
                detail,
            },
            Err(_) => {
                let mut r = timed_out(self.timeout);
                // What a wrong banner said is the useful part of a timeout.
                if let Some(expect) = &self.expect {
                    r.detail = format!(
                        "{} before expect /{}/ matched: got {}",
                        r.detail,
                        expect.as_str(),
                        if got.is_empty() {
                            "nothing".to_owned()
                        } else {
                            excerpt(&got)
                        }
                    );
                }
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::check::CheckConfig;
    use crate::observe::probe::build;
    #[tokio::test]
    async fn tcp_connects_or_not() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let check = CheckConfig::Tcp(TcpCheckConfig::connect(port));
        let p = build(&check, "127.0.0.1".parse().unwrap(), Duration::from_secs(1)).unwrap();
        assert!(p.probe().await.ok);
        drop(l);
        let r = p.probe().await;
        assert!(!r.ok);
        assert_eq!(r.detail, "connection refused");
    }

    /// A connect probe closes with a reset (no `TIME_WAIT`); one that writes without expecting an
    /// answer closes gracefully, so that what it wrote is not discarded unsent.
    #[tokio::test]
    async fn connect_probes_close_with_a_reset_unless_bytes_may_be_unsent() {
        use tokio::io::AsyncReadExt as _;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let connect = CheckConfig::Tcp(TcpCheckConfig::connect(port));
        let p = build(&connect, ip, Duration::from_secs(1)).unwrap();
        assert!(p.probe().await.ok);
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let read = s.read(&mut buf).await.map_err(|e| e.kind());
        assert_eq!(read, Err(std::io::ErrorKind::ConnectionReset));
        let send = CheckConfig::Tcp(TcpCheckConfig {
            send: Some(b"PING\r\n".to_vec()),
            ..TcpCheckConfig::connect(port)
        });
        let p = build(&send, ip, Duration::from_secs(1)).unwrap();
        assert!(p.probe().await.ok);
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"PING\r\n");
    }
}
