//! `[[alert]]` delivery to real local receivers: a webhook receiver (a plain HTTP/1.1 server on
//! loopback) gets the exact JSON document, signed; Slack mode gets `{"text": …}`; an SMTP sink
//! (PyPI `aiosmtpd`, its Maildir handler) gets the email; both while down at first and up later
//! (the message is retried). End to end: a real `rrguard run` whose endpoint goes down posts the
//! `endpoint_state` alert.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rrguard::expose::alert::config::{
    AlertConfig, EmailTarget, Format, SmtpTls, Target, WebhookTarget,
};
use rrguard::expose::alert::spawn_alerts;
use rrguard::state::{ConfiguredService, Event, EventKind, NodeState};
use serde_json::{Value, json};
use support::{Daemon, HttpEndpoints, free_tcp_port, wait_until};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const EVENTUALLY: Duration = Duration::from_secs(30);
const WWW: &str = "www.example.test.";
const SECRET: &str = "0123456789abcdef-alerts";

/// One request a [`Receiver`] took: its headers (lower-case names) and body.
#[derive(Debug, Clone)]
struct Request {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver: answers every request 200 and keeps it. Stops with the test process.
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let keep = got.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = Vec::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                    }
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                keep.lock().unwrap().push(Request { headers, body });
            }
        });
        Receiver { got }
    }

    fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }
}

fn localhost() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn webhook_alert(port: u16, format: Format) -> AlertConfig {
    AlertConfig {
        name: "ops".to_owned(),
        on: [EventKind::EndpointState, EventKind::WriteFailed].into(),
        services: None,
        dedupe: Duration::from_secs(300),
        rate_limit: 10,
        max_attempts: 8,
        queue: 10,
        timeout: Duration::from_secs(2),
        target: Target::Webhook(WebhookTarget {
            url: format!("http://127.0.0.1:{port}/hooks/rrguard?token=t")
                .parse()
                .unwrap(),
            format,
            secret: Some(SECRET.as_bytes().to_vec()),
        }),
    }
}

fn state_with_www() -> NodeState {
    let state = NodeState::new();
    state.set_services([ConfiguredService {
        fqdn: WWW.to_owned(),
        zone: "example.test.".to_owned(),
        writers: vec!["primary".to_owned()],
        check: "http".to_owned(),
        endpoints: vec!["192.0.2.1".parse().unwrap()],
    }]);
    state
}

fn down_event() -> Event {
    Event::at(
        1_700_000_000_123,
        WWW,
        EventKind::EndpointState,
        "192.0.2.1 is down (agreed by mon-1; was up)",
    )
    .about("192.0.2.1", "down", "up")
}

/// Waits in a blocking thread, so that the alert tasks on the runtime keep running.
async fn wait_for<T: Send + 'static>(
    what: &'static str,
    mut f: impl FnMut() -> Option<T> + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(move || {
        let mut out = None;
        wait_until(what, EVENTUALLY, || {
            out = f();
            out.is_some()
        });
        out.unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_the_exact_signed_document_after_the_receiver_comes_up() {
    // The receiver is down when the event happens: the message waits and is retried.
    let port = free_tcp_port(localhost());
    let state = state_with_www();
    let cancel = CancellationToken::new();
    let mut set = JoinSet::new();
    spawn_alerts(
        &[webhook_alert(port, Format::Json)],
        "mon-1",
        &state,
        &cancel,
        &mut set,
    );
    state.push_event(down_event());
    // Two failed attempts (at 0 s and 1 s), then the receiver starts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let receiver = Receiver::start(port);
    let r = receiver.clone();
    let request = wait_for(
        "the alert delivered after the receiver came up",
        move || r.requests().into_iter().next(),
    )
    .await;
    let mut doc = request.json();
    let made = doc["unix_ms"].take();
    assert!(made.as_u64().unwrap() > 1_700_000_000_123, "{made}");
    assert_eq!(
        doc,
        json!({
            "version": 1,
            "alert": "ops",
            "node": "mon-1",
            "unix_ms": null,
            "event": {
                "unix_ms": 1_700_000_000_123u64,
                "service": WWW,
                "kind": "endpoint_state",
                "message": "192.0.2.1 is down (agreed by mon-1; was up)",
                "endpoint": "192.0.2.1",
                "state": "down",
                "previous": "up"
            },
            "suppressed": null,
            "text": "[rrguard mon-1] www.example.test.: 192.0.2.1 is down (agreed by mon-1; was up)"
        })
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    let ts: u64 = request
        .header("x-rrguard-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        request.header("x-rrguard-signature").unwrap(),
        rrguard::act::webhook::sign(SECRET.as_bytes(), ts, &request.body)
    );
    // The same condition again within the window is not sent; a write failure is.
    state.push_event(down_event());
    state.record_write(WWW, "primary", Err("SERVFAIL from 192.0.2.53".to_owned()));
    let r = receiver.clone();
    let second = wait_for("the write failure alert", move || {
        r.requests().get(1).cloned()
    })
    .await;
    assert_eq!(second.json()["event"]["kind"], "write_failed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), 2, "{:?}", receiver.requests());
    cancel.cancel();
    while set.join_next().await.is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_mode_posts_text_and_summarises_what_the_rate_limit_held_back() {
    let port = free_tcp_port(localhost());
    let receiver = Receiver::start(port);
    let state = state_with_www();
    let cancel = CancellationToken::new();
    let mut set = JoinSet::new();
    let mut alert = webhook_alert(port, Format::Slack);
    alert.rate_limit = 1;
    spawn_alerts(&[alert], "mon-1", &state, &cancel, &mut set);
    state.push_event(down_event());
    for i in 0..3 {
        state.record_write(WWW, "primary", Err(format!("error {i}")));
    }
    let r = receiver.clone();
    let first = wait_for("the first Slack message", move || {
        r.requests().into_iter().next()
    })
    .await;
    assert_eq!(
        first.json(),
        json!({"text": "[rrguard mon-1] www.example.test.: 192.0.2.1 is down (agreed by mon-1; was up)"})
    );
    // The other three are held back by the limit of one per minute, not dropped: they are
    // summarised in the next message (a minute later, so only checked not to have gone out yet).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 1);
    cancel.cancel();
    while set.join_next().await.is_some() {}
}

/// `python3 -m aiosmtpd` storing every message in a Maildir; killed on drop.
struct SmtpSink {
    child: Child,
    maildir: tempfile::TempDir,
}

impl SmtpSink {
    fn start(port: u16) -> SmtpSink {
        let maildir = tempfile::tempdir().unwrap();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (pip install aiosmtpd; scripts/test installs it)");
        SmtpSink { child, maildir }
    }

    /// The raw messages received so far.
    fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("mail/new");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_the_smtp_sink_after_it_comes_up() {
    let port = free_tcp_port(localhost());
    let state = state_with_www();
    let cancel = CancellationToken::new();
    let mut set = JoinSet::new();
    let alert = AlertConfig {
        name: "mail".to_owned(),
        on: [EventKind::EndpointState].into(),
        services: Some(BTreeSet::from([WWW.to_owned()])),
        dedupe: Duration::from_secs(300),
        rate_limit: 10,
        max_attempts: 8,
        queue: 10,
        timeout: Duration::from_secs(2),
        target: Target::Email(EmailTarget {
            to: vec!["ops@example.test".to_owned()],
            from: "rrguard <rrguard@example.test>".to_owned(),
            server: "127.0.0.1".to_owned(),
            port,
            tls: SmtpTls::None,
            credentials: None,
        }),
    };
    spawn_alerts(&[alert], "mon-1", &state, &cancel, &mut set);
    state.push_event(down_event());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sink = Arc::new(SmtpSink::start(port));
    let s = sink.clone();
    let mail = wait_for("the email in the sink's Maildir", move || {
        s.messages().into_iter().next()
    })
    .await;
    let unfolded = mail.replace("\r\n ", " ").replace("\n ", " ");
    assert!(unfolded.contains("To: ops@example.test"), "{mail}");
    assert!(
        unfolded.contains("From: rrguard <rrguard@example.test>"),
        "{mail}"
    );
    assert!(
        unfolded.contains(
            "Subject: [rrguard mon-1] www.example.test.: 192.0.2.1 is down (agreed by mon-1; was up)"
        ),
        "{mail}"
    );
    for line in [
        "kind: endpoint_state",
        "endpoint: 192.0.2.1",
        "state: down",
        "previous: up",
        "alert: mail",
    ] {
        assert!(mail.contains(line), "{line:?} missing:\n{mail}");
    }
    assert_eq!(sink.messages().len(), 1);
    cancel.cancel();
    while set.join_next().await.is_some() {}
}

/// `GET /api/v1/status` of the daemon on `port`, or an empty string.
fn get_status(port: u16) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn an_endpoint_going_down_in_a_running_daemon_alerts() {
    let e2: IpAddr = "127.0.0.2".parse().unwrap();
    let e3: IpAddr = "127.0.0.3".parse().unwrap();
    let http = HttpEndpoints::start(&[e2, e3]);
    let hook = free_tcp_port(localhost());
    let receiver = Receiver::start(hook);
    let listen = free_tcp_port(localhost());
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let config = dir.path().join("rrguard.toml");
    std::fs::write(dir.path().join("alert.secret"), format!("{SECRET}\n")).unwrap();
    std::fs::write(
        &config,
        format!(
            r#"[node]
id = "alert-node"
listen = "127.0.0.1:{listen}"
state_dir = "{state}"

[defaults]
interval = "200ms"
timeout = "150ms"
fall = 2
rise = 2

[[writer]]
name = "local"
type = "hosts"
path = "{hosts}"

[[service]]
fqdn = "www.example.test"
zone = "example.test"
writer = "local"
endpoints = ["127.0.0.2", "127.0.0.3"]
[service.check]
type = "http"
port = {port}
path = "/health"

[[alert]]
name = "ops"
type = "webhook"
url = "http://127.0.0.1:{hook}/alerts"
secret_file = "alert.secret"
on = ["endpoint_state", "dns_updated"]
"#,
            state = dir.path().display(),
            hosts = hosts.display(),
            port = http.port,
        ),
    )
    .unwrap();
    let d = Daemon::start(&["run", "-c", config.to_str().unwrap()]);
    // At start (keep_all) both are published before any verdict; wait until both are agreed up.
    wait_until("both endpoints agreed up", EVENTUALLY, || {
        let status = get_status(listen);
        status.contains(r#""endpoint":"127.0.0.2","cluster_state":"up""#)
            && status.contains(r#""endpoint":"127.0.0.3","cluster_state":"up""#)
    });
    http.stop(e3);
    let mut doc = Value::Null;
    wait_until("the endpoint_state alert for 127.0.0.3", EVENTUALLY, || {
        doc = receiver
            .requests()
            .iter()
            .map(Request::json)
            .find(|d| {
                d["event"]["kind"] == "endpoint_state" && d["event"]["endpoint"] == "127.0.0.3"
            })
            .unwrap_or(Value::Null);
        !doc.is_null()
    });
    assert_eq!(doc["event"]["state"], "down", "{doc}\n{}", d.log());
    assert_eq!(doc["event"]["previous"], "up", "{doc}");
    assert_eq!(doc["node"], "alert-node");
    assert_eq!(doc["event"]["service"], WWW);
    // The first verdicts (unknown → up) at start did not alert; the write that follows does.
    wait_until("the dns_updated alert", EVENTUALLY, || {
        receiver
            .requests()
            .iter()
            .any(|r| r.json()["event"]["kind"] == "dns_updated")
    });
    let ups = receiver
        .requests()
        .iter()
        .filter(|r| r.json()["event"]["state"] == "up")
        .count();
    assert_eq!(ups, 0, "{:?}", receiver.requests());
}
