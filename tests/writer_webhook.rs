//! The writer battery (`tests/support/battery.rs`) over the `webhook` writer, against a receiver
//! written here (axum on 127.0.0.1, port 0) that checks every request the way docs/writers.md tells
//! a receiver to: `Content-Type`, the timestamp within 300 s of its clock and the HMAC-SHA256
//! signature (401 otherwise), and the body against the documented schema with no unknown field. It
//! keeps the zone in an `act::memory` store (the fixture's out-of-band side) and answers 409 on a
//! failed precondition when it promises compare-and-swap:
//! - `webhook_cas`: the receiver enforces preconditions, the writer declares `compare_and_swap`;
//! - `webhook_plain`: it ignores them, the writer declares nothing.
//!
//! `ServerError` is a receiver path answering 500; `BadCredentials` a writer with another secret.
//! Below the battery: the signature checked by independent code (the Python snippet of
//! docs/writers.md and `openssl dgst`), status codes, timeouts, bodies that are not the reply, the
//! size bound, extra headers, an unreachable receiver.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rrguard::act::memory::MemoryWriter;
use rrguard::act::{Capabilities, Precondition, Published, RecordChange, WriteError, Writer};
use serde::Deserialize;
use support::battery::*;

const SECRET: &str = "webhook-test-secret-0123456789";

/// One request as the receiver got it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// The receiver's state.
#[derive(Clone)]
struct Hub {
    store: MemoryWriter,
    secret: Vec<u8>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// The documented request, parsed strictly: an unknown or missing field is a 400.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    version: u32,
    operation: String,
    writer: String,
    fqdn: String,
    zone: String,
    ttl: Option<u32>,
    precondition: Option<PreconditionDoc>,
    add: Option<BTreeSet<IpAddr>>,
    remove: Option<BTreeSet<IpAddr>>,
    rettl: Option<BTreeSet<IpAddr>>,
    expected: Option<BTreeSet<IpAddr>>,
    families: Option<Vec<String>>,
    desired: Option<Vec<DesiredDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreconditionDoc {
    rrset_equals: Option<BTreeSet<IpAddr>>,
    name_not_in_use: Option<bool>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
struct DesiredDoc {
    address: IpAddr,
    ttl: u32,
}

/// Checks the headers as docs/writers.md tells a receiver to; `Err` is the 401 body.
fn authenticate(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {name} header"))
    };
    if header("content-type")? != "application/json" {
        return Err("content type is not application/json".to_owned());
    }
    let timestamp = header("x-rrguard-timestamp")?;
    let sent: u64 = timestamp.parse().map_err(|_| "bad timestamp".to_owned())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(sent) > 300 {
        return Err("timestamp too far from now".to_owned());
    }
    let hex = header("x-rrguard-signature")?
        .strip_prefix("sha256=")
        .ok_or("signature without sha256=")?;
    let tag: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| "signature is not hex".to_owned())?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    ring::hmac::verify(&key, &signed, &tag).map_err(|_| "bad signature".to_owned())
}

/// The change a valid `apply` document describes; `Err` is the 400 body. The convenience fields
/// (`expected`, `families`, `desired`) must agree with the others.
fn change_of(doc: &Doc) -> Result<RecordChange, String> {
    let (Some(ttl), Some(pre), Some(add), Some(remove), Some(rettl)) = (
        doc.ttl,
        &doc.precondition,
        &doc.add,
        &doc.remove,
        &doc.rettl,
    ) else {
        return Err(format!("apply without its fields: {doc:?}"));
    };
    let precondition = match (&pre.rrset_equals, pre.name_not_in_use) {
        (Some(set), None) => Precondition::RrsetEquals(set.clone()),
        (None, Some(true)) => Precondition::NameNotInUse,
        other => return Err(format!("bad precondition {other:?}")),
    };
    let change = RecordChange {
        fqdn: doc.fqdn.clone(),
        zone: doc.zone.clone(),
        ttl,
        precondition,
        add: add.clone(),
        remove: remove.clone(),
        rettl: rettl.clone(),
        weights: Default::default(),
    };
    let expected = match &change.precondition {
        Precondition::RrsetEquals(s) => s.clone(),
        Precondition::NameNotInUse => BTreeSet::new(),
    };
    let families: Vec<String> = change.families().iter().map(|f| f.to_string()).collect();
    let v4 = |ip: &IpAddr| if ip.is_ipv4() { "A" } else { "AAAA" };
    let mut desired: Vec<DesiredDoc> = expected
        .difference(remove)
        .chain(add)
        .filter(|ip| families.iter().any(|f| f == v4(ip)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|ip| DesiredDoc { address: *ip, ttl })
        .collect();
    desired.sort();
    if doc.expected.as_ref() != Some(&expected)
        || doc.families.as_ref() != Some(&families)
        || doc.desired.as_ref() != Some(&desired)
    {
        return Err(format!("convenience fields disagree: {doc:?}"));
    }
    Ok(change)
}

async fn zone(State(hub): State<Hub>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    hub.seen.lock().unwrap().push(Seen {
        path: "/zone".to_owned(),
        headers: headers.clone(),
        body: body.to_vec(),
    });
    if let Err(why) = authenticate(&hub.secret, &headers, &body) {
        return (StatusCode::UNAUTHORIZED, why);
    }
    let doc: Doc = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()),
    };
    if doc.version != 1 || doc.writer.is_empty() {
        return (StatusCode::BAD_REQUEST, format!("{doc:?}"));
    }
    match doc.operation.as_str() {
        "read" if doc.ttl.is_none() && doc.desired.is_none() => {
            let p = hub.store.read_now(&doc.fqdn);
            let records: Vec<_> = p
                .records
                .iter()
                .map(|(ip, ttl)| serde_json::json!({"address": ip, "ttl": ttl}))
                .collect();
            let reply = serde_json::json!({"records": records, "cname": p.cname});
            (StatusCode::OK, reply.to_string())
        }
        "apply" => match change_of(&doc).map(|c| hub.store.apply_now(&c)) {
            Err(why) => (StatusCode::BAD_REQUEST, why),
            Ok(Ok(())) => (StatusCode::NO_CONTENT, String::new()),
            Ok(Err(WriteError::Conflict(why))) => (StatusCode::CONFLICT, why),
            Ok(Err(other)) => (StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
        },
        _ => (StatusCode::BAD_REQUEST, format!("{doc:?}")),
    }
}

/// Answers with the status of the path, after recording the request.
async fn status(
    State(hub): State<Hub>,
    UrlPath(code): UrlPath<u16>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    hub.seen.lock().unwrap().push(Seen {
        path: format!("/status/{code}"),
        headers,
        body: body.to_vec(),
    });
    (
        StatusCode::from_u16(code).unwrap(),
        format!("status {code} from the test receiver"),
    )
}

/// A receiver serving on its own thread and runtime, stopped when dropped.
struct Receiver {
    base: String,
    hub: Hub,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    fn start(compare_and_swap: bool) -> Self {
        let store = MemoryWriter::new("receiver").with_capabilities(Capabilities {
            compare_and_swap,
            ..MemoryWriter::new("m").capabilities()
        });
        let hub = Hub {
            store,
            secret: SECRET.as_bytes().to_vec(),
            seen: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/zone", post(zone))
            .route("/status/{code}", post(status))
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "{\"records\":[]}"
                }),
            )
            .route("/text", post(|| async { "hello from a web page" }))
            .route("/huge", post(|| async { vec![b' '; 2 << 20] }))
            .with_state(hub.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let server = axum::serve(listener, app);
                tokio::select! {
                    r = server => r.unwrap(),
                    _ = stopped => {}
                }
            });
        });
        Receiver {
            base: format!("http://{addr}"),
            hub,
            stop: Some(stop),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.hub.seen.lock().unwrap().clone()
    }

    /// A writer posting to `path` of this receiver.
    fn writer(&self, path: &str, secret: &str, options: &str) -> Box<dyn Writer> {
        webhook_writer(&format!("{}{path}", self.base), secret, options)
    }
}

/// A writer posting to `url`, built through the configuration as the daemon builds it.
fn webhook_writer(url: &str, secret: &str, options: &str) -> Box<dyn Writer> {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[writer]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{url}\"\nsecret = \"{secret}\"\n{options}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"hook\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n"
    );
    let config = rrguard::config::parse(&dir.path().join("rrguard.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    Box::new(rrguard::act::build(&config.writers[0], &Default::default()).unwrap())
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

struct WebhookFixture {
    receiver: Receiver,
    writer: Box<dyn Writer>,
    options: String,
}

impl WebhookFixture {
    fn boxed(compare_and_swap: bool) -> Box<dyn Fixture> {
        let receiver = Receiver::start(compare_and_swap);
        let options = format!("compare_and_swap = {compare_and_swap}\ntimeout = \"5s\"");
        let writer = receiver.writer("/zone", SECRET, &options);
        Box::new(WebhookFixture {
            receiver,
            writer,
            options,
        })
    }
}

impl Fixture for WebhookFixture {
    fn writer(&self) -> &dyn Writer {
        &*self.writer
    }
    fn set(&self, fqdn: &str, published: &Published) {
        self.receiver.hub.store.set(fqdn, published.clone());
    }
    fn authoritative(&self, fqdn: &str) -> Published {
        self.receiver.hub.store.read_now(fqdn)
    }
    fn failing(&self, failure: Failure) -> Result<Box<dyn Writer>, &'static str> {
        Ok(match failure {
            Failure::ServerError => self.receiver.writer("/status/500", SECRET, &self.options),
            // The receiver answers 401 to a signature made with another key.
            Failure::BadCredentials => {
                self.receiver
                    .writer("/zone", "not-the-receiver-secret-at-all", &self.options)
            }
        })
    }
}

writer_battery! {
    webhook_cas => WebhookFixture::boxed(true);
    webhook_plain => WebhookFixture::boxed(false);
}

// ---- Rows for the webhook writer only. ----

/// The Python block of the `## webhook` section of docs/writers.md.
fn documented_verifier() -> String {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/writers.md"))
            .unwrap();
    let section = docs
        .split_once("\n## webhook\n")
        .expect("docs/writers.md has a ## webhook section")
        .1;
    let code = section
        .split_once("```python\n")
        .expect("the webhook section shows a Python verifier")
        .1;
    code.split_once("```").unwrap().0.to_owned()
}

/// The signature of a real request checks out with code that shares nothing with rrguard's: the
/// documented Python verifier (which also refuses a changed body or an old timestamp) and openssl.
#[tokio::test]
async fn signature_matches_independent_computations() {
    let r = Receiver::start(true);
    let w = r.writer("/zone", SECRET, "");
    w.apply(&change(&[], &["127.0.0.2", "::1"], &[]))
        .await
        .unwrap();
    let seen = r.seen().pop().unwrap();
    let header = |n: &str| seen.headers[n].to_str().unwrap().to_owned();
    let (timestamp, signature) = (header("x-rrguard-timestamp"), header("x-rrguard-signature"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(timestamp.parse().unwrap()) <= 5, "{timestamp}");

    let dir = tempfile::tempdir().unwrap();
    let signed = dir.path().join("signed");
    let mut bytes = format!("{timestamp}.").into_bytes();
    bytes.extend_from_slice(&seen.body);
    std::fs::write(&signed, &bytes).unwrap();
    let openssl = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", SECRET])
        .arg(&signed)
        .output()
        .expect("openssl runs");
    let out = String::from_utf8(openssl.stdout).unwrap();
    let hex = signature.strip_prefix("sha256=").unwrap();
    assert!(
        out.trim_end().ends_with(&format!("= {hex}")),
        "{out} vs {signature}"
    );

    let script = dir.path().join("verify.py");
    std::fs::write(
        &script,
        format!(
            "{}\nimport sys\nbody = open(sys.argv[4], 'rb').read()\nprint(verify(sys.argv[1].encode(), sys.argv[2], sys.argv[3], body))\n",
            documented_verifier()
        ),
    )
    .unwrap();
    let body = dir.path().join("body");
    let verify = |ts: &str, body_bytes: &[u8]| {
        std::fs::write(&body, body_bytes).unwrap();
        let out = std::process::Command::new("python3")
            .arg(&script)
            .args([SECRET, ts, &signature])
            .arg(&body)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(verify(&timestamp, &seen.body), "True");
    let mut tampered = seen.body.clone();
    tampered[10] ^= 1;
    assert_eq!(verify(&timestamp, &tampered), "False");
    let old = (timestamp.parse::<u64>().unwrap() - 3600).to_string();
    assert_eq!(verify(&old, &seen.body), "False");
}

/// Each status means what docs/writers.md says, and the message names the URL, status and body.
#[tokio::test]
async fn statuses_are_classified() {
    let r = Receiver::start(true);
    let kind = |e: &WriteError| match e {
        WriteError::Conflict(_) => "conflict",
        WriteError::Transient(_) => "transient",
        WriteError::Auth(_) => "auth",
        WriteError::Rejected(_) => "rejected",
    };
    for (code, on_apply, on_read) in [
        (400, "rejected", "rejected"),
        (401, "auth", "auth"),
        (403, "auth", "auth"),
        (404, "rejected", "rejected"),
        (408, "transient", "transient"),
        (409, "conflict", "transient"),
        (422, "rejected", "rejected"),
        (429, "transient", "transient"),
        (500, "transient", "transient"),
        (502, "transient", "transient"),
        (503, "transient", "transient"),
        (301, "rejected", "rejected"),
    ] {
        let w = r.writer(&format!("/status/{code}"), SECRET, "");
        let apply = w
            .apply(&change(&[], &["127.0.0.2"], &[]))
            .await
            .unwrap_err();
        let read = w.read(FQDN, ZONE).await.unwrap_err();
        assert_eq!(kind(&apply), on_apply, "{code}: {apply}");
        assert_eq!(kind(&read), on_read, "{code}: {read}");
        let m = apply.to_string();
        assert!(
            m.contains(&format!(
                "POST {}/status/{code} (apply www.example.test.) answered {code}",
                r.base
            )) && m.contains(&format!("body: \"status {code} from the test receiver\"")),
            "{m}"
        );
    }
    // Both requests of each pair reached the receiver: one attempt per call, no retries.
    assert_eq!(r.seen().len(), 24);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_transient() {
    let r = Receiver::start(true);
    let w = r.writer("/slow", SECRET, "timeout = \"500ms\"");
    let start = tokio::time::Instant::now();
    let err = w.read(FQDN, ZONE).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(&err, WriteError::Transient(m) if m.contains("timed out after 500ms")),
        "{err:?}"
    );
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = webhook_writer(&format!("http://127.0.0.1:{port}/zone"), SECRET, "")
        .read(FQDN, ZONE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WriteError::Transient(m) if m.contains("Connection refused")),
        "{err:?}"
    );
}

#[tokio::test]
async fn bodies_that_are_not_the_reply_are_rejected() {
    let r = Receiver::start(true);
    let text = r.writer("/text", SECRET, "");
    let read = text.read(FQDN, ZONE).await.unwrap_err();
    assert!(
        matches!(&read, WriteError::Rejected(m) if m.contains("not the documented read reply") && m.contains("\"hello from a web page\"")),
        "{read:?}"
    );
    let apply = text
        .apply(&change(&[], &["127.0.0.2"], &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&apply, WriteError::Rejected(m) if m.contains("must be empty or a JSON object")),
        "{apply:?}"
    );
    let huge = r
        .writer("/huge", SECRET, "")
        .read(FQDN, ZONE)
        .await
        .unwrap_err();
    assert!(
        matches!(&huge, WriteError::Rejected(m) if m.contains("larger than 1048576 bytes")),
        "{huge:?}"
    );
}

/// Extra headers go out with every request, beside rrguard's own; the body is the one document
/// the script writer gets on stdin.
#[tokio::test]
async fn extra_headers_and_the_body() {
    let r = Receiver::start(true);
    let w = r.writer(
        "/zone",
        SECRET,
        "headers = { Authorization = \"Bearer abc\", \"X-Tenant\" = \"blue\" }",
    );
    assert_eq!(w.read(FQDN, ZONE).await.unwrap(), Published::default());
    let seen = r.seen().pop().unwrap();
    assert_eq!(seen.path, "/zone");
    assert_eq!(seen.headers["authorization"], "Bearer abc");
    assert_eq!(seen.headers["x-tenant"], "blue");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert!(
        seen.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("rrguard/"),
        "{:?}",
        seen.headers
    );
    assert_eq!(
        String::from_utf8(seen.body).unwrap(),
        "{\"version\":1,\"operation\":\"read\",\"writer\":\"hook\",\"fqdn\":\"www.example.test.\",\"zone\":\"example.test.\"}\n"
    );
}
