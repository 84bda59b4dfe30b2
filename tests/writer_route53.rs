//! The writer battery over `route53`, twice:
//!
//! - against `moto_server` (PyPI `moto[server]`), a local Route 53 that speaks the real REST/XML API:
//!   it covers the request plumbing (signed requests routed as Route 53, ListResourceRecordSets with
//!   its pages, ChangeResourceRecordSets, CreateHostedZone). moto does not enforce Route 53's
//!   compare-and-swap: it accepts a DELETE whose values match *any earlier* CREATE/UPSERT of the name
//!   and type (a journal check, `rr_changes.has_insert_or_update`) and then deletes by name and type,
//!   and a CREATE of an existing RRset adds a second one (moto 5.2.1). So the battery's CAS checks
//!   pass there only through the writer's own read-and-compare, and the race the batch closes is
//!   tested below against a fake;
//! - against a local fake of the documented API that enforces exact DELETE matching and
//!   CREATE-if-absent, answers as Route 53 does (`InvalidChangeBatch` with `<Messages>`), and asserts
//!   on every request the documented path, `Content-Type`, `X-Amz-Date` and an `Authorization` whose
//!   SigV4 signature it recomputes with aws-sigv4 from the known secret.
//!
//! Below the battery: the exact CAS batch, a change between the writer's read and its write refused
//! whole, throttling with backoff (bounded), the client-side rate limit, pagination on moto, batches
//! of several names, alias records, and `wait_insync`.

#[macro_use]
mod support;

use std::collections::{BTreeMap, VecDeque};
use std::io::Read as _;
use std::net::{IpAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use rrguard::act::api::RetryPolicy;
use rrguard::act::route53::config::{AwsCredentials, Route53Config};
use rrguard::act::route53::{Route53Writer, sign_request_at};
use rrguard::act::{Precondition, Published, RecordChange, WriteError, Writer};
use serde::Deserialize;
use support::battery::*;

const AKID: &str = "AKIDFAKEEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const FAKE_ZONE_ID: &str = "ZFAKE0123456789";

fn credentials(secret: &str) -> AwsCredentials {
    AwsCredentials {
        access_key_id: AKID.to_owned(),
        secret_access_key: secret.to_owned(),
        session_token: None,
        source: "the test".to_owned(),
    }
}

fn config(endpoint: &str, zone_id: &str) -> Route53Config {
    Route53Config {
        hosted_zone_id: zone_id.to_owned(),
        endpoint: endpoint.parse().unwrap(),
        region: "us-east-1".to_owned(),
        credentials: Some(credentials(SECRET)),
        profile: None,
        timeout: Duration::from_secs(5),
        wait_insync: false,
    }
}

/// Fast retries, so that failure rows take milliseconds.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        deadline: Duration::from_secs(5),
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
    }
}

fn writer_at(endpoint: &str, zone_id: &str) -> Route53Writer {
    Route53Writer::new("r53", config(endpoint, zone_id))
        .unwrap()
        .with_retry(fast_retry())
        .unwrap()
}

// ---- Route 53's XML, read by the fake and the moto fixture (independently of the writer). ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListDoc {
    resource_record_sets: SetsDoc,
}

#[derive(Debug, Deserialize)]
struct SetsDoc {
    #[serde(rename = "ResourceRecordSet", default)]
    sets: Vec<SetDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SetDoc {
    name: String,
    #[serde(rename = "Type")]
    rtype: String,
    /// Weighted record sets only (with `Weight`).
    set_identifier: Option<String>,
    weight: Option<u64>,
    #[serde(rename = "TTL")]
    ttl: Option<u32>,
    resource_records: Option<RecordsDoc>,
}

#[derive(Debug, Clone, Deserialize)]
struct RecordsDoc {
    #[serde(rename = "ResourceRecord", default)]
    records: Vec<ValueDoc>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ValueDoc {
    value: String,
}

impl SetDoc {
    fn values(&self) -> Vec<String> {
        self.resource_records
            .as_ref()
            .map(|r| r.records.iter().map(|v| v.value.clone()).collect())
            .unwrap_or_default()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeRequestDoc {
    change_batch: BatchDoc,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchDoc {
    changes: ChangesDoc,
}

#[derive(Debug, Deserialize)]
struct ChangesDoc {
    #[serde(rename = "Change", default)]
    changes: Vec<ChangeDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeDoc {
    action: String,
    resource_record_set: SetDoc,
}

/// `published` of one name from listed RRsets.
fn published_of(sets: &[SetDoc], fqdn: &str) -> Published {
    let mut p = Published::default();
    for s in sets.iter().filter(|s| s.name.eq_ignore_ascii_case(fqdn)) {
        match s.rtype.as_str() {
            "A" | "AAAA" => {
                for v in s.values() {
                    let ip: IpAddr = v.parse().unwrap();
                    p.records.insert(ip, s.ttl.unwrap());
                    if let (Some(_), Some(w)) = (&s.set_identifier, s.weight) {
                        p.weights.insert(ip, u8::try_from(w).unwrap());
                    }
                }
            }
            "CNAME" => p.cname = s.values().into_iter().next(),
            _ => {}
        }
    }
    p
}

/// The RRsets `published` means, for `fqdn`.
fn sets_of(fqdn: &str, published: &Published) -> Vec<(String, u32, Vec<String>)> {
    let mut out = Vec::new();
    for (rtype, v4) in [("A", true), ("AAAA", false)] {
        let records: Vec<(&IpAddr, &u32)> = published
            .records
            .iter()
            .filter(|(ip, _)| ip.is_ipv4() == v4)
            .collect();
        if let Some((_, ttl)) = records.first() {
            let values = records.iter().map(|(ip, _)| ip.to_string()).collect();
            out.push((rtype.to_owned(), **ttl, values));
        }
    }
    if let Some(target) = &published.cname {
        out.push(("CNAME".to_owned(), 60, vec![target.clone()]));
    }
    let _ = fqdn;
    out
}

// ---- moto ----

/// One `moto_server` per test binary, ended when the binary exits: it runs under a shell that kills
/// it when its stdin (held here) closes.
struct Moto {
    port: u16,
    _shell: Mutex<(Child, ChildStdin)>,
}

fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let found = Command::new("sh")
            .args(["-c", "command -v moto_server"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "moto_server is not on PATH: install it with `pip3 install 'moto[server]'` (scripts/test does)"
        );
        let port = support::free_tcp_port("127.0.0.1".parse().unwrap());
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg("moto_server -H 127.0.0.1 -p \"$0\" >/dev/null 2>&1 & pid=$!; read _; kill $pid; wait $pid")
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .spawn()
            .expect("sh");
        let stdin = shell.stdin.take().unwrap();
        // Polls for up to 60 s (the clippy config bans std's Instant here).
        for tries in 0.. {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                tries < 1200,
                "moto_server did not listen on port {port} within 60 s: install it with `pip3 install 'moto[server]'` (scripts/test does)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto {
            port,
            _shell: Mutex::new((shell, stdin)),
        }
    })
}

impl Moto {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/2013-04-01{path}", self.port)
    }

    /// A request as curl sends it: moto routes by the credential scope of `Authorization` and does
    /// not check the signature.
    fn curl(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-w", "\n%{http_code}", "-X", method])
            .arg("-H")
            .arg(format!(
                "Authorization: AWS4-HMAC-SHA256 Credential={AKID}/20260101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=0"
            ))
            .arg("-H")
            .arg("Content-Type: application/xml");
        if let Some(b) = body {
            cmd.arg("--data-binary").arg(b);
        }
        let out = cmd.arg(self.url(path)).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("curl status");
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// A new hosted zone named `zone`; its ID.
    fn create_zone(&self, zone: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let reference = format!(
            "rrguard-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Name>{zone}</Name><CallerReference>{reference}</CallerReference></CreateHostedZoneRequest>"
        );
        let (code, text) = self.curl("POST", "/hostedzone", Some(&body));
        assert_eq!(code, 201, "CreateHostedZone: {text}");
        let id = text
            .split("<Id>/hostedzone/")
            .nth(1)
            .and_then(|t| t.split('<').next())
            .unwrap_or_else(|| panic!("no zone ID in {text}"));
        id.to_owned()
    }

    fn list(&self, zone_id: &str, fqdn: &str) -> Vec<SetDoc> {
        let (code, text) = self.curl(
            "GET",
            &format!("/hostedzone/{zone_id}/rrset?name={fqdn}"),
            None,
        );
        assert_eq!(code, 200, "{text}");
        let doc: ListDoc = quick_xml::de::from_str(&text).unwrap();
        doc.resource_record_sets.sets
    }

    fn change(&self, zone_id: &str, changes: &[(&str, &str, &str, u32, Vec<String>)]) {
        let mut xml = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeBatch><Changes>",
        );
        for (action, name, rtype, ttl, values) in changes {
            xml.push_str(&format!("<Change><Action>{action}</Action><ResourceRecordSet><Name>{name}</Name><Type>{rtype}</Type><TTL>{ttl}</TTL><ResourceRecords>"));
            for v in values {
                xml.push_str(&format!(
                    "<ResourceRecord><Value>{v}</Value></ResourceRecord>"
                ));
            }
            xml.push_str("</ResourceRecords></ResourceRecordSet></Change>");
        }
        xml.push_str("</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>");
        let (code, text) = self.curl("POST", &format!("/hostedzone/{zone_id}/rrset/"), Some(&xml));
        assert_eq!(code, 200, "{text}");
    }
}

/// `route53` against moto; out-of-band changes and reads by curl.
struct MotoFixture {
    zone: String,
    zone_id: String,
    writer: Route53Writer,
    /// Fakes for the failure checks (moto checks no credentials and has no failure switch).
    failing: Mutex<Vec<Fake>>,
}

impl MotoFixture {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let zone = format!("z{}.example.test.", N.fetch_add(1, Ordering::SeqCst));
        let m = moto();
        let zone_id = m.create_zone(&zone);
        let writer = writer_at(&format!("http://127.0.0.1:{}", m.port), &zone_id);
        MotoFixture {
            zone,
            zone_id,
            writer,
            failing: Mutex::default(),
        }
    }

    fn boxed() -> Box<dyn Fixture> {
        Box::new(Self::new())
    }
}

impl Fixture for MotoFixture {
    fn writer(&self) -> &dyn Writer {
        &self.writer
    }

    fn set(&self, fqdn: &str, published: &Published) {
        let m = moto();
        let mut changes = Vec::new();
        for s in m.list(&self.zone_id, fqdn) {
            if s.name.eq_ignore_ascii_case(fqdn)
                && matches!(s.rtype.as_str(), "A" | "AAAA" | "CNAME")
            {
                changes.push((
                    "DELETE",
                    fqdn.to_owned(),
                    s.rtype.clone(),
                    s.ttl.unwrap(),
                    s.values(),
                ));
            }
        }
        for (rtype, ttl, values) in sets_of(fqdn, published) {
            changes.push(("CREATE", fqdn.to_owned(), rtype, ttl, values));
        }
        if changes.is_empty() {
            return;
        }
        let changes: Vec<(&str, &str, &str, u32, Vec<String>)> = changes
            .iter()
            .map(|(a, n, t, ttl, v)| (*a, n.as_str(), t.as_str(), *ttl, v.clone()))
            .collect();
        m.change(&self.zone_id, &changes);
    }

    fn authoritative(&self, fqdn: &str) -> Published {
        published_of(&moto().list(&self.zone_id, fqdn), fqdn)
    }

    fn zone(&self) -> &str {
        &self.zone
    }

    fn failing(&self, failure: Failure) -> Result<Box<dyn Writer>, &'static str> {
        let fake = Fake::start(&self.zone);
        *fake.state.fail_all.lock().unwrap() = Some(match failure {
            Failure::ServerError => (500, "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>internal error</Message></Error></ErrorResponse>".to_owned()),
            Failure::BadCredentials => (403, "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error></ErrorResponse>".to_owned()),
        });
        let w = writer_at(&fake.url, FAKE_ZONE_ID);
        self.failing.lock().unwrap().push(fake);
        Ok(Box::new(w))
    }
}

// ---- The fake: Route 53's documented behaviour, with every request checked. ----

/// One RRset of the fake's zone.
#[derive(Debug, Clone, PartialEq)]
struct FakeSet {
    ttl: u32,
    values: Vec<String>,
    alias: Option<String>,
    /// `Weight` of a weighted set (whose `SetIdentifier` is in its [`SetKey`]).
    weight: Option<u64>,
}

/// What identifies a record set in a hosted zone: name, type and, for weighted (and other routing
/// policy) sets, `SetIdentifier`.
type SetKey = (String, String, Option<String>);

/// The key of the simple (no routing policy) set of `name` and `rtype`.
fn simple(name: &str, rtype: &str) -> SetKey {
    (name.to_owned(), rtype.to_owned(), None)
}

/// A request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: String,
    at: tokio::time::Instant,
}

type Hook = Box<dyn FnOnce(&mut BTreeMap<SetKey, FakeSet>) + Send>;

#[derive(Default)]
struct FakeState {
    zone: String,
    /// (name, type, set identifier) → RRset.
    sets: Mutex<BTreeMap<SetKey, FakeSet>>,
    seen: Mutex<Vec<Seen>>,
    /// Problems with requests; the test fails on any.
    violations: Mutex<Vec<String>>,
    /// Answers given before normal handling, in order (status, body).
    scripted: Mutex<VecDeque<(u16, String)>>,
    /// Every request answered this way.
    fail_all: Mutex<Option<(u16, String)>>,
    /// Runs on the zone when the next change arrives, before it is judged: someone else's change
    /// between the writer's read and its write.
    before_change: Mutex<Option<Hook>>,
    /// ChangeInfo status of changes, and GetChange answers left before INSYNC.
    pending_polls: Mutex<usize>,
}

struct Fake {
    url: String,
    state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
        let v = self.state.violations.lock().unwrap();
        if !std::thread::panicking() {
            assert!(
                v.is_empty(),
                "requests the documented API does not allow: {v:#?}"
            );
        }
    }
}

impl Fake {
    /// Starts on a free loopback port, inside the current tokio runtime.
    fn start(zone: &str) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let state = Arc::new(FakeState {
            zone: zone.to_owned(),
            ..FakeState::default()
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Fake { url, state, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn changes_seen(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == Method::POST)
            .collect()
    }

    fn put(&self, fqdn: &str, rtype: &str, ttl: u32, values: &[&str]) {
        self.state.sets.lock().unwrap().insert(
            simple(fqdn, rtype),
            FakeSet {
                ttl,
                values: values.iter().map(|v| v.to_string()).collect(),
                alias: None,
                weight: None,
            },
        );
    }

    /// The ChangeResourceRecordSets bodies received so far.
    fn change_bodies(&self) -> Vec<String> {
        self.changes_seen().into_iter().map(|s| s.body).collect()
    }
}

/// Route 53 sorts by name with its labels reversed, then by type.
fn sort_key(name: &str, rtype: &str) -> (Vec<String>, String) {
    let mut labels: Vec<String> = name
        .trim_end_matches('.')
        .split('.')
        .map(str::to_ascii_lowercase)
        .collect();
    labels.reverse();
    (labels, rtype.to_owned())
}

fn xml_reply(status: u16, body: String) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "text/xml")],
        body,
    )
}

fn invalid_change_batch(
    message: String,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    xml_reply(
        400,
        format!(
            "<?xml version=\"1.0\"?>\n<InvalidChangeBatch xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Messages><Message>{message}</Message></Messages><RequestId>fake</RequestId></InvalidChangeBatch>"
        ),
    )
}

/// `20261130T130514Z` as a time.
fn amz_date(text: &str) -> Option<SystemTime> {
    if text.len() != 16 || &text[8..9] != "T" || !text.ends_with('Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(9..11)?, n(11..13)?, n(13..15)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The problems with a request's signature: the documented header shape, and the signature itself
/// recomputed with the known secret.
fn signature_problems(seen: &Seen, base: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let auth = seen
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(date) = seen.headers.get("x-amz-date").and_then(|v| v.to_str().ok()) else {
        return vec!["no X-Amz-Date header".to_owned()];
    };
    let Some(at) = amz_date(date) else {
        return vec![format!("X-Amz-Date {date:?} is not YYYYMMDDTHHMMSSZ")];
    };
    let prefix = format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/{}/us-east-1/route53/aws4_request, SignedHeaders=",
        &date[..8]
    );
    let Some(rest) = auth.strip_prefix(&prefix) else {
        return vec![format!(
            "Authorization {auth:?} does not start with {prefix:?}"
        )];
    };
    let Some((signed, signature)) = rest.split_once(", Signature=") else {
        return vec![format!("Authorization {auth:?} has no Signature")];
    };
    if !signed.split(';').any(|h| h == "host") || !signed.split(';').any(|h| h == "x-amz-date") {
        problems.push(format!("SignedHeaders {signed:?} lacks host or x-amz-date"));
    }
    if signature.len() != 64 || !signature.chars().all(|c| c.is_ascii_hexdigit()) {
        problems.push(format!("Signature {signature:?} is not 64 hex digits"));
    }
    // Recompute: the same request, signed with the known secret at the request's own time.
    let query = if seen.query.is_empty() {
        String::new()
    } else {
        format!("?{}", seen.query)
    };
    let url: reqwest::Url = format!("{base}{}{query}", seen.path).parse().unwrap();
    let mut request = reqwest::Request::new(
        reqwest::Method::from_bytes(seen.method.as_str().as_bytes()).unwrap(),
        url,
    );
    for name in signed.split(';') {
        if matches!(name, "host" | "x-amz-date") {
            continue;
        }
        if let Some(v) = seen.headers.get(name) {
            request.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                reqwest::header::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
    }
    sign_request_at(
        &mut request,
        &credentials(SECRET),
        "us-east-1",
        seen.body.as_bytes(),
        at,
    )
    .unwrap();
    let want = request.headers()["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    if want != auth {
        problems.push(format!(
            "signature does not verify with the known secret: got {auth:?}, recomputed {want:?}"
        ));
    }
    problems
}

async fn handle(
    State(state): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let seen = Seen {
        method: method.clone(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: headers.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: tokio::time::Instant::now(),
    };
    state.seen.lock().unwrap().push(seen.clone());
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let problems = signature_problems(&seen, &format!("http://{host}"));
    let violation = |state: &FakeState, m: String| {
        state.violations.lock().unwrap().push(m.clone());
        xml_reply(
            400,
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>TestViolation</Code><Message>{m}</Message></Error></ErrorResponse>"
            ),
        )
    };
    if !problems.is_empty() {
        return violation(
            &state,
            format!("{} {}: {problems:?}", seen.method, seen.path),
        );
    }
    if let Some((status, body)) = state.fail_all.lock().unwrap().clone() {
        return xml_reply(status, body);
    }
    if let Some((status, body)) = state.scripted.lock().unwrap().pop_front() {
        return xml_reply(status, body);
    }
    let rrset_path = format!("/2013-04-01/hostedzone/{FAKE_ZONE_ID}/rrset");
    let change_prefix = "/2013-04-01/change/";
    match (&method, seen.path.as_str()) {
        (&Method::GET, p) if p == rrset_path => list(&state, &seen.query),
        (&Method::POST, p) if p == format!("{rrset_path}/") => {
            if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/xml")
            {
                return violation(
                    &state,
                    "ChangeResourceRecordSets without Content-Type: application/xml".into(),
                );
            }
            match quick_xml::de::from_str::<ChangeRequestDoc>(&seen.body) {
                Ok(doc)
                    if seen
                        .body
                        .contains("xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"") =>
                {
                    apply_batch(&state, doc)
                }
                Ok(_) => violation(&state, "request without the 2013-04-01 namespace".into()),
                Err(e) => violation(
                    &state,
                    format!(
                        "body is not a ChangeResourceRecordSetsRequest: {e}: {}",
                        seen.body
                    ),
                ),
            }
        }
        (&Method::GET, p) if p.starts_with(change_prefix) => {
            let id = &p[change_prefix.len()..];
            let mut left = state.pending_polls.lock().unwrap();
            let status = if *left > 0 {
                *left -= 1;
                "PENDING"
            } else {
                "INSYNC"
            };
            xml_reply(
                200,
                format!(
                    "<?xml version=\"1.0\"?>\n<GetChangeResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeInfo><Id>/change/{id}</Id><Status>{status}</Status><SubmittedAt>2026-01-01T00:00:00Z</SubmittedAt></ChangeInfo></GetChangeResponse>"
                ),
            )
        }
        _ => violation(
            &state,
            format!("undocumented request {method} {}", seen.path),
        ),
    }
}

fn list(state: &FakeState, query: &str) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let params: BTreeMap<String, String> = url_pairs(query);
    let name = params.get("name").cloned().unwrap_or_default();
    let rtype = params.get("type").cloned().unwrap_or_default();
    let max: usize = params
        .get("maxitems")
        .and_then(|m| m.parse().ok())
        .unwrap_or(300);
    let identifier = params.get("identifier").cloned();
    let sets = state.sets.lock().unwrap();
    let mut all: Vec<(&SetKey, &FakeSet)> = sets.iter().collect();
    all.sort_by_key(|((n, t, id), _)| (sort_key(n, t), id.clone()));
    let start = (sort_key(&name, &rtype), identifier);
    let from: Vec<_> = all
        .into_iter()
        .filter(|((n, t, id), _)| name.is_empty() || (sort_key(n, t), id.clone()) >= start)
        .collect();
    let mut xml = String::from(
        "<?xml version=\"1.0\"?>\n<ListResourceRecordSetsResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ResourceRecordSets>",
    );
    for ((n, t, id), s) in from.iter().take(max) {
        xml.push_str(&format!(
            "<ResourceRecordSet><Name>{n}</Name><Type>{t}</Type>"
        ));
        if let (Some(id), Some(weight)) = (id, s.weight) {
            xml.push_str(&format!(
                "<SetIdentifier>{id}</SetIdentifier><Weight>{weight}</Weight>"
            ));
        }
        if let Some(alias) = &s.alias {
            xml.push_str(&format!("<AliasTarget><HostedZoneId>Z2FDTNDATAQYW2</HostedZoneId><DNSName>{alias}</DNSName><EvaluateTargetHealth>false</EvaluateTargetHealth></AliasTarget>"));
        } else {
            xml.push_str(&format!("<TTL>{}</TTL><ResourceRecords>", s.ttl));
            for v in &s.values {
                xml.push_str(&format!(
                    "<ResourceRecord><Value>{v}</Value></ResourceRecord>"
                ));
            }
            xml.push_str("</ResourceRecords>");
        }
        xml.push_str("</ResourceRecordSet>");
    }
    xml.push_str("</ResourceRecordSets>");
    match from.get(max) {
        Some(((n, t, id), _)) => {
            xml.push_str(&format!("<IsTruncated>true</IsTruncated><NextRecordName>{n}</NextRecordName><NextRecordType>{t}</NextRecordType>"));
            if let Some(id) = id {
                xml.push_str(&format!(
                    "<NextRecordIdentifier>{id}</NextRecordIdentifier>"
                ));
            }
        }
        None => xml.push_str("<IsTruncated>false</IsTruncated>"),
    }
    xml.push_str(&format!(
        "<MaxItems>{max}</MaxItems></ListResourceRecordSetsResponse>"
    ));
    xml_reply(200, xml)
}

fn url_pairs(query: &str) -> BTreeMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn apply_batch(
    state: &FakeState,
    doc: ChangeRequestDoc,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    if let Some(hook) = state.before_change.lock().unwrap().take() {
        hook(&mut state.sets.lock().unwrap());
    }
    let mut sets = state.sets.lock().unwrap();
    let mut next = sets.clone();
    let input_error = |m: String| {
        state.violations.lock().unwrap().push(m);
        xml_reply(
            400,
            "<ErrorResponse><Error><Code>InvalidInput</Code></Error></ErrorResponse>".into(),
        )
    };
    for c in doc.change_batch.changes.changes {
        let s = c.resource_record_set;
        // A weighted set has both; rrguard sends no other routing policy.
        match (&s.set_identifier, s.weight) {
            (None, None) => {}
            (Some(id), Some(w)) if w <= 255 && (1..=128).contains(&id.len()) => {}
            (id, w) => {
                return input_error(format!(
                    "{} {}: SetIdentifier {id:?} with Weight {w:?} (a weighted set needs both, the weight 0 to 255, the identifier 1 to 128 characters)",
                    s.name, s.rtype
                ));
            }
        }
        let key = (
            s.name.to_ascii_lowercase(),
            s.rtype.clone(),
            s.set_identifier.clone(),
        );
        let what = match &s.set_identifier {
            None => format!("[name='{}', type='{}']", s.name, s.rtype),
            Some(id) => format!(
                "[name='{}', type='{}', set-identifier='{id}']",
                s.name, s.rtype
            ),
        };
        let values = s.values();
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        match c.action.as_str() {
            "DELETE" => match next.get(&key) {
                None => {
                    return invalid_change_batch(format!(
                        "Tried to delete resource record set {what} but it was not found"
                    ));
                }
                Some(have)
                    if Some(have.ttl) != s.ttl
                        || sorted(&have.values) != sorted(&values)
                        || have.weight != s.weight =>
                {
                    return invalid_change_batch(format!(
                        "Tried to delete resource record set {what} but the values provided do not match the current values"
                    ));
                }
                Some(_) => {
                    next.remove(&key);
                }
            },
            "CREATE" => {
                if next.contains_key(&key) {
                    return invalid_change_batch(format!(
                        "Tried to create resource record set {what} but it already exists"
                    ));
                }
                let cname = simple(&key.0, "CNAME");
                if s.rtype != "CNAME" && next.contains_key(&cname) {
                    return invalid_change_batch(format!(
                        "RRSet of type {} with DNS name {} is not permitted because a conflicting RRSet of type CNAME with the same DNS name already exists in zone {}.",
                        s.rtype, s.name, state.zone
                    ));
                }
                next.insert(
                    key,
                    FakeSet {
                        ttl: s.ttl.unwrap_or(300),
                        values,
                        alias: None,
                        weight: s.weight,
                    },
                );
            }
            other => {
                return input_error(format!(
                    "action {other} (rrguard only sends CREATE and DELETE)"
                ));
            }
        }
    }
    // The batch as a whole (Route 53 checks the outcome, not each step): a name and type holds
    // either one simple set or weighted sets, never both.
    for (name, rtype, id) in next.keys() {
        if let Some(id) = id
            && next.contains_key(&simple(name, rtype))
        {
            return invalid_change_batch(format!(
                "RRSet with DNS name {name}, type {rtype}, SetIdentifier {id} cannot be created as a non-weighted set exists with the same name and type."
            ));
        }
    }
    *sets = next;
    let status = if *state.pending_polls.lock().unwrap() > 0 {
        "PENDING"
    } else {
        "INSYNC"
    };
    xml_reply(
        200,
        format!(
            "<?xml version=\"1.0\"?>\n<ChangeResourceRecordSetsResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeInfo><Id>/change/C2682N5HXP0BZ4</Id><Status>{status}</Status><SubmittedAt>2026-01-01T00:00:00Z</SubmittedAt></ChangeInfo></ChangeResourceRecordSetsResponse>"
        ),
    )
}

/// `route53` against the fake; out-of-band changes and reads go to its store.
struct FakeFixture {
    fake: Fake,
    writer: Route53Writer,
    failing: Mutex<Vec<Fake>>,
}

impl FakeFixture {
    fn new() -> Self {
        let fake = Fake::start(ZONE);
        let writer = writer_at(&fake.url, FAKE_ZONE_ID);
        FakeFixture {
            fake,
            writer,
            failing: Mutex::default(),
        }
    }

    fn boxed() -> Box<dyn Fixture> {
        Box::new(Self::new())
    }
}

impl Fixture for FakeFixture {
    fn writer(&self) -> &dyn Writer {
        &self.writer
    }

    fn set(&self, fqdn: &str, published: &Published) {
        let mut sets = self.fake.state.sets.lock().unwrap();
        sets.retain(|(n, _, _), _| n != fqdn);
        for (rtype, ttl, values) in sets_of(fqdn, published) {
            sets.insert(
                simple(fqdn, &rtype),
                FakeSet {
                    ttl,
                    values,
                    alias: None,
                    weight: None,
                },
            );
        }
    }

    fn authoritative(&self, fqdn: &str) -> Published {
        let sets = self.fake.state.sets.lock().unwrap();
        let docs: Vec<SetDoc> = sets
            .iter()
            .filter(|((n, _, _), _)| n == fqdn)
            .map(|((n, t, id), s)| SetDoc {
                name: n.clone(),
                rtype: t.clone(),
                set_identifier: id.clone(),
                weight: s.weight,
                ttl: Some(s.ttl),
                resource_records: Some(RecordsDoc {
                    records: s
                        .values
                        .iter()
                        .map(|v| ValueDoc { value: v.clone() })
                        .collect(),
                }),
            })
            .collect();
        published_of(&docs, fqdn)
    }

    fn failing(&self, failure: Failure) -> Result<Box<dyn Writer>, &'static str> {
        let fake = Fake::start(ZONE);
        *fake.state.fail_all.lock().unwrap() = Some(match failure {
            Failure::ServerError => (503, "<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code><Message>unavailable</Message></Error></ErrorResponse>".to_owned()),
            Failure::BadCredentials => (403, "<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message></Error></ErrorResponse>".to_owned()),
        });
        let w = writer_at(&fake.url, FAKE_ZONE_ID);
        self.failing.lock().unwrap().push(fake);
        Ok(Box::new(w))
    }
}

writer_battery! {
    route53_moto => MotoFixture::boxed();
    route53_fake => FakeFixture::boxed();
}

// ---- Rows of this writer. ----

const WWW: &str = "www.example.test.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cas_batch_is_delete_as_read_then_create_signed() {
    let f = FakeFixture::new();
    f.fake.put(WWW, "A", 60, &["127.0.0.3", "127.0.0.2"]);
    f.writer
        .apply(&change(
            &["127.0.0.2", "127.0.0.3"],
            &["127.0.0.4", "::1"],
            &["127.0.0.2"],
        ))
        .await
        .unwrap();
    let posts = f.fake.changes_seen();
    assert_eq!(posts.len(), 1, "one ChangeResourceRecordSets request");
    let post = &posts[0];
    assert_eq!(
        post.path,
        format!("/2013-04-01/hostedzone/{FAKE_ZONE_ID}/rrset/")
    );
    assert_eq!(post.headers["content-type"], "application/xml");
    let auth = post.headers["authorization"].to_str().unwrap();
    assert!(
        auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={AKID}/")),
        "{auth}"
    );
    assert!(auth.contains("/us-east-1/route53/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="), "{auth}");
    // Verified by the fake for every request; here once more, explicitly, and a wrong secret fails.
    let host = post.headers["host"].to_str().unwrap();
    assert_eq!(
        signature_problems(post, &format!("http://{host}")),
        Vec::<String>::new()
    );
    let want = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeBatch><Comment>rrguard</Comment><Changes>\
<Change><Action>DELETE</Action><ResourceRecordSet><Name>www.example.test.</Name><Type>A</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>127.0.0.3</Value></ResourceRecord><ResourceRecord><Value>127.0.0.2</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>\
<Change><Action>CREATE</Action><ResourceRecordSet><Name>www.example.test.</Name><Type>A</Type><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>127.0.0.3</Value></ResourceRecord><ResourceRecord><Value>127.0.0.4</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>\
<Change><Action>CREATE</Action><ResourceRecordSet><Name>www.example.test.</Name><Type>AAAA</Type><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>::1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>\
</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>";
    assert_eq!(post.body, want);
    assert_eq!(
        f.authoritative(WWW),
        published(&[("127.0.0.3", 30), ("127.0.0.4", 30), ("::1", 30)])
    );
    // The check bites: the same request does not verify with another secret.
    let mut forged = post.clone();
    let mut request = reqwest::Request::new(
        reqwest::Method::POST,
        format!("http://{host}{}", post.path).parse().unwrap(),
    );
    request
        .headers_mut()
        .insert("content-type", "application/xml".parse().unwrap());
    sign_request_at(
        &mut request,
        &credentials("another-secret"),
        "us-east-1",
        post.body.as_bytes(),
        amz_date(post.headers["x-amz-date"].to_str().unwrap()).unwrap(),
    )
    .unwrap();
    forged.headers.insert(
        "authorization",
        request.headers()["authorization"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap(),
    );
    assert!(!signature_problems(&forged, &format!("http://{host}")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_between_read_and_write_is_refused_whole() {
    let f = FakeFixture::new();
    f.fake.put(WWW, "A", 60, &["127.0.0.2", "127.0.0.3"]);
    // Between the writer's own read (inside apply) and its batch, someone adds .5.
    *f.fake.state.before_change.lock().unwrap() = Some(Box::new(|sets| {
        sets.get_mut(&simple(WWW, "A"))
            .unwrap()
            .values
            .push("127.0.0.5".into());
    }));
    let r = f
        .writer
        .apply(&change(
            &["127.0.0.2", "127.0.0.3"],
            &["127.0.0.4", "::4"],
            &["127.0.0.3"],
        ))
        .await;
    match r {
        Err(WriteError::Conflict(m)) => assert!(m.contains("values provided do not match"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Nothing of the batch applied, not even the AAAA.
    assert_eq!(
        f.authoritative(WWW),
        published(&[("127.0.0.2", 60), ("127.0.0.3", 60), ("127.0.0.5", 60)])
    );
    // NameNotInUse: the name taken between read and write makes the CREATE fail.
    let fresh = "fresh.example.test.";
    *f.fake.state.before_change.lock().unwrap() = Some(Box::new(move |sets| {
        sets.insert(
            simple(fresh, "A"),
            FakeSet {
                ttl: 60,
                values: vec!["127.0.0.8".into()],
                alias: None,
                weight: None,
            },
        );
    }));
    let allocate = RecordChange {
        fqdn: fresh.to_owned(),
        precondition: Precondition::NameNotInUse,
        ..change(&[], &["127.0.0.9"], &[])
    };
    match f.writer.apply(&allocate).await {
        Err(WriteError::Conflict(m)) => assert!(m.contains("already exists"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(f.authoritative(fresh), published(&[("127.0.0.8", 60)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_with_backoff_and_bounded() {
    let throttled = "<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r</RequestId></ErrorResponse>";
    let f = FakeFixture::new();
    f.fake.put(WWW, "A", 60, &["127.0.0.2"]);
    {
        let mut s = f.fake.state.scripted.lock().unwrap();
        s.push_back((400, throttled.to_owned()));
        s.push_back((400, throttled.to_owned()));
    }
    f.writer
        .apply(&change(&["127.0.0.2"], &["127.0.0.3"], &[]))
        .await
        .unwrap();
    let seen = f.fake.seen();
    // Two throttled attempts of the read, then the read and the change.
    assert_eq!(seen.len(), 4, "{seen:#?}");
    assert_eq!(addresses_of(&f, WWW), set(&["127.0.0.2", "127.0.0.3"]));
    // Throttled for good: transient after 1 + max_retries attempts, well within the deadline.
    *f.fake.state.fail_all.lock().unwrap() = Some((400, throttled.to_owned()));
    let before = f.fake.seen().len();
    let start = tokio::time::Instant::now();
    match f.writer.read(WWW, ZONE).await {
        Err(WriteError::Transient(m)) => {
            assert!(m.contains("Throttling") && m.contains("4 attempts"), "{m}")
        }
        other => panic!("expected transient, got {other:?}"),
    }
    assert_eq!(f.fake.seen().len() - before, 4);
    assert!(start.elapsed() < Duration::from_secs(5));
    // PriorRequestNotComplete is retried too; a plain 500 is transient.
    *f.fake.state.fail_all.lock().unwrap() = Some((500, "oops".to_owned()));
    assert!(matches!(
        f.writer.read(WWW, ZONE).await,
        Err(WriteError::Transient(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_spaced_to_five_a_second() {
    let f = FakeFixture::new();
    let start = tokio::time::Instant::now();
    for _ in 0..6 {
        f.writer.read(WWW, ZONE).await.unwrap();
    }
    let seen = f.fake.seen();
    assert_eq!(seen.len(), 6);
    assert!(
        start.elapsed() >= Duration::from_millis(990),
        "{:?}",
        start.elapsed()
    );
    for w in seen.windows(2) {
        // Sent 200 ms apart; arrival jitters a little.
        assert!(
            w[1].at - w[0].at >= Duration::from_millis(150),
            "{:?}",
            w[1].at - w[0].at
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_several_names_is_one_request() {
    let f = FakeFixture::new();
    f.fake.put(WWW, "A", 60, &["127.0.0.2"]);
    let api = RecordChange {
        fqdn: "api.example.test.".into(),
        ..change(&[], &["127.0.0.7"], &[])
    };
    f.writer
        .apply_all(&[change(&["127.0.0.2"], &["127.0.0.3"], &[]), api.clone()])
        .await
        .unwrap();
    let posts = f.fake.changes_seen();
    assert_eq!(posts.len(), 1);
    let doc: ChangeRequestDoc = quick_xml::de::from_str(&posts[0].body).unwrap();
    let actions: Vec<(String, String)> = doc
        .change_batch
        .changes
        .changes
        .iter()
        .map(|c| (c.action.clone(), c.resource_record_set.name.clone()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("DELETE".into(), WWW.into()),
            ("CREATE".into(), WWW.into()),
            ("CREATE".into(), "api.example.test.".into())
        ]
    );
    assert_eq!(addresses_of(&f, "api.example.test."), set(&["127.0.0.7"]));
    // All or nothing: a stale precondition on one name refuses the batch before anything is sent.
    let stale = RecordChange {
        fqdn: "api.example.test.".into(),
        ..change(&["127.0.0.99"], &["127.0.0.8"], &[])
    };
    let r = f
        .writer
        .apply_all(&[
            change(&["127.0.0.2", "127.0.0.3"], &["127.0.0.4"], &[]),
            stale,
        ])
        .await;
    assert!(matches!(r, Err(WriteError::Conflict(_))), "{r:?}");
    assert_eq!(f.fake.changes_seen().len(), 1);
    assert_eq!(addresses_of(&f, WWW), set(&["127.0.0.2", "127.0.0.3"]));
    // A name twice, and a batch over Route 53's 1,000 records, are refused without a request.
    let twice = f.writer.apply_all(&[api.clone(), api]).await;
    assert!(
        matches!(twice, Err(WriteError::Rejected(ref m)) if m.contains("twice")),
        "{twice:?}"
    );
    let many: Vec<String> = (0..1001u32)
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    let big = RecordChange {
        fqdn: "big.example.test.".into(),
        add: many.iter().map(|s| s.parse().unwrap()).collect(),
        ..change(&[], &[], &[])
    };
    let r = f.writer.apply_all(&[big]).await;
    assert!(
        matches!(r, Err(WriteError::Rejected(ref m)) if m.contains("split it")),
        "{r:?}"
    );
    assert_eq!(f.fake.changes_seen().len(), 1);
}

/// What the daemon's batching calls: the valid changes of a batch go in one request; a stale change
/// refuses that request, and the batch is then sent one change per request so that only the stale
/// change fails, as a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_batch_is_one_request_and_a_stale_change_fails_alone() {
    let f = FakeFixture::new();
    assert!(f.writer.capabilities().batches);
    let names = ["a.example.test.", "b.example.test.", "c.example.test."];
    let batch: Vec<RecordChange> = names
        .iter()
        .map(|n| RecordChange {
            fqdn: (*n).into(),
            ..change(&[], &["127.0.0.7"], &[])
        })
        .collect();
    let results = Writer::apply_batch(&f.writer, &batch).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        f.fake.changes_seen().len(),
        1,
        "one request for three names"
    );
    let mut next: Vec<RecordChange> = names
        .iter()
        .map(|n| RecordChange {
            fqdn: (*n).into(),
            ..change(&["127.0.0.7"], &["127.0.0.8"], &[])
        })
        .collect();
    next[1].precondition = Precondition::RrsetEquals(set(&["127.0.0.99"]));
    let results = Writer::apply_batch(&f.writer, &next).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(WriteError::Conflict(_))),
        "{results:?}"
    );
    assert_eq!(addresses_of(&f, names[0]), set(&["127.0.0.7", "127.0.0.8"]));
    assert_eq!(addresses_of(&f, names[1]), set(&["127.0.0.7"]));
    assert_eq!(addresses_of(&f, names[2]), set(&["127.0.0.7", "127.0.0.8"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_records_are_refused_with_a_fix() {
    let f = FakeFixture::new();
    f.fake.state.sets.lock().unwrap().insert(
        simple(WWW, "A"),
        FakeSet {
            ttl: 0,
            values: vec![],
            alias: Some("lb-1.us-east-1.elb.amazonaws.com.".into()),
            weight: None,
        },
    );
    match f.writer.read(WWW, ZONE).await {
        Err(WriteError::Rejected(m)) => assert!(
            m.contains("alias record (to lb-1.us-east-1.elb.amazonaws.com.)"),
            "{m}"
        ),
        other => panic!("expected rejected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_insync_polls_get_change() {
    let f = FakeFixture::new();
    *f.fake.state.pending_polls.lock().unwrap() = 1;
    let w = Route53Writer::new(
        "r53",
        Route53Config {
            wait_insync: true,
            ..config(&f.fake.url, FAKE_ZONE_ID)
        },
    )
    .unwrap();
    assert!(w.capabilities().read_back && w.capabilities().compare_and_swap);
    assert!(!f.writer.capabilities().read_back);
    w.apply(&change(&[], &["127.0.0.2"], &[])).await.unwrap();
    let polls: Vec<String> = f
        .fake
        .seen()
        .iter()
        .filter(|s| s.path.starts_with("/2013-04-01/change/"))
        .map(|s| s.path.clone())
        .collect();
    // PENDING from the change, PENDING from the first poll, INSYNC from the second.
    assert_eq!(polls, vec!["/2013-04-01/change/C2682N5HXP0BZ4"; 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_pages_are_followed_and_other_names_left_out() {
    let m = MotoFixture::new();
    let w = writer_at(&format!("http://127.0.0.1:{}", moto().port), &m.zone_id).with_page_size(1);
    let www = format!("www.{}", m.zone);
    let want = published(&[("127.0.0.2", 60), ("::1", 45)]);
    m.set(&www, &want);
    m.set(
        &format!("www2.{}", m.zone),
        &published(&[("127.0.0.9", 60)]),
    );
    m.set(
        &format!("a.www.{}", m.zone),
        &published(&[("127.0.0.8", 60)]),
    );
    // Page one holds the A RRset, page two (NextRecordType AAAA) the AAAA one.
    assert_eq!(w.read(&www, &m.zone).await.unwrap(), want);
    // A batch of two names through moto.
    let other = format!("www2.{}", m.zone);
    w.apply_all(&[
        RecordChange {
            fqdn: www.clone(),
            zone: m.zone.clone(),
            ..change(&["127.0.0.2", "::1"], &["127.0.0.3"], &["::1"])
        },
        RecordChange {
            fqdn: other.clone(),
            zone: m.zone.clone(),
            ..change(&["127.0.0.9"], &[], &["127.0.0.9"])
        },
    ])
    .await
    .unwrap();
    assert_eq!(
        m.authoritative(&www),
        published(&[("127.0.0.2", 30), ("127.0.0.3", 30)])
    );
    assert_eq!(m.authoritative(&other), Published::default());
}

#[test]
fn moto_is_started_and_answers_signed_requests() {
    // A direct check of the fixture itself, so that a broken moto shows as one clear failure.
    let m = moto();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", m.port)).unwrap();
    use std::io::Write as _;
    s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1."), "{text}");
}

/// One `<Change>` of a weighted set as Route 53's API reference documents it
/// (<https://docs.aws.amazon.com/Route53/latest/APIReference/API_ChangeResourceRecordSets.html>,
/// "Weighted resource record sets": Name, Type, SetIdentifier, Weight, TTL, ResourceRecords), built
/// here independently of the writer's serializer.
fn weighted_xml(action: &str, ip: &str, weight: u8, ttl: u32) -> String {
    format!(
        "<Change><Action>{action}</Action><ResourceRecordSet><Name>{WWW}</Name><Type>A</Type>\
<SetIdentifier>rrguard-{ip}</SetIdentifier><Weight>{weight}</Weight><TTL>{ttl}</TTL>\
<ResourceRecords><ResourceRecord><Value>{ip}</Value></ResourceRecord></ResourceRecords>\
</ResourceRecordSet></Change>"
    )
}

/// A whole ChangeResourceRecordSetsRequest with `changes`, in the documented envelope.
fn request_xml(changes: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ChangeBatch><Comment>rrguard</Comment><Changes>{}</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>",
        changes.concat()
    )
}

/// Weighted writes, request by request: the exact ChangeResourceRecordSets body for turning a plain
/// RRset into weighted sets, adding an address, removing one and reweighting one. Each is one
/// batch: DELETE of every set that changes exactly as read (Weight included), CREATE of the new
/// ones, and a pin (DELETE + CREATE as read) of every set that stays, which the fake, like Route 53,
/// only accepts while those sets are unchanged. The fake keeps sets by name, type and
/// SetIdentifier and refuses a simple set beside weighted ones, as Route 53 does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_writes_send_the_documented_batches() {
    let f = FakeFixture::new();
    f.fake.put(WWW, "A", 60, &["127.0.0.2", "127.0.0.3"]);
    let ips = |list: &[&str]| -> std::collections::BTreeSet<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    };
    let weights = |pairs: &[(&str, u8)]| -> BTreeMap<IpAddr, u8> {
        pairs
            .iter()
            .map(|(a, w)| (a.parse().unwrap(), *w))
            .collect()
    };
    let plain_a = "<Change><Action>DELETE</Action><ResourceRecordSet><Name>www.example.test.</Name><Type>A</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>127.0.0.2</Value></ResourceRecord><ResourceRecord><Value>127.0.0.3</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>".to_owned();

    // 1. The plain RRset becomes one weighted set per address, the change's TTL (30), one batch.
    f.writer
        .apply(&RecordChange {
            rettl: ips(&["127.0.0.2", "127.0.0.3"]),
            weights: weights(&[("127.0.0.2", 10), ("127.0.0.3", 5)]),
            ..change(&["127.0.0.2", "127.0.0.3"], &[], &[])
        })
        .await
        .unwrap();
    // 2. Add .4 (weight 1: not listed, the default the decision layer fills in).
    f.writer
        .apply(&RecordChange {
            weights: weights(&[("127.0.0.2", 10), ("127.0.0.3", 5), ("127.0.0.4", 1)]),
            ..change(&["127.0.0.2", "127.0.0.3"], &["127.0.0.4"], &[])
        })
        .await
        .unwrap();
    // 3. Remove .3.
    f.writer
        .apply(&RecordChange {
            weights: weights(&[("127.0.0.2", 10), ("127.0.0.4", 1)]),
            ..change(
                &["127.0.0.2", "127.0.0.3", "127.0.0.4"],
                &[],
                &["127.0.0.3"],
            )
        })
        .await
        .unwrap();
    // 4. Reweigh .4 from 1 to 200 (a reload changed `weights`); .2 stays.
    f.writer
        .apply(&RecordChange {
            rettl: ips(&["127.0.0.4"]),
            weights: weights(&[("127.0.0.2", 10), ("127.0.0.4", 200)]),
            ..change(&["127.0.0.2", "127.0.0.4"], &[], &[])
        })
        .await
        .unwrap();

    let want = [
        request_xml(&[
            plain_a,
            weighted_xml("CREATE", "127.0.0.2", 10, 30),
            weighted_xml("CREATE", "127.0.0.3", 5, 30),
        ]),
        request_xml(&[
            weighted_xml("CREATE", "127.0.0.4", 1, 30),
            weighted_xml("DELETE", "127.0.0.2", 10, 30),
            weighted_xml("CREATE", "127.0.0.2", 10, 30),
            weighted_xml("DELETE", "127.0.0.3", 5, 30),
            weighted_xml("CREATE", "127.0.0.3", 5, 30),
        ]),
        request_xml(&[
            weighted_xml("DELETE", "127.0.0.3", 5, 30),
            weighted_xml("DELETE", "127.0.0.2", 10, 30),
            weighted_xml("CREATE", "127.0.0.2", 10, 30),
            weighted_xml("DELETE", "127.0.0.4", 1, 30),
            weighted_xml("CREATE", "127.0.0.4", 1, 30),
        ]),
        request_xml(&[
            weighted_xml("DELETE", "127.0.0.4", 1, 30),
            weighted_xml("CREATE", "127.0.0.4", 200, 30),
            weighted_xml("DELETE", "127.0.0.2", 10, 30),
            weighted_xml("CREATE", "127.0.0.2", 10, 30),
        ]),
    ];
    let bodies = f.fake.change_bodies();
    assert_eq!(
        bodies.len(),
        want.len(),
        "one request per change: {bodies:#?}"
    );
    for (i, (got, want)) in bodies.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "request {} of {}", i + 1, bodies.len());
    }
    // Every one to the documented path (the fake checked each signature).
    for post in f.fake.changes_seen() {
        assert_eq!(
            post.path,
            format!("/2013-04-01/hostedzone/{FAKE_ZONE_ID}/rrset/")
        );
    }
    let held: Vec<(SetKey, u32, Vec<String>, Option<u64>)> = f
        .fake
        .state
        .sets
        .lock()
        .unwrap()
        .clone()
        .into_iter()
        .map(|(k, s)| (k, s.ttl, s.values, s.weight))
        .collect();
    let weighted = |ip: &str, w: u64| {
        (
            (
                WWW.to_owned(),
                "A".to_owned(),
                Some(format!("rrguard-{ip}")),
            ),
            30,
            vec![ip.to_owned()],
            Some(w),
        )
    };
    assert_eq!(
        held,
        vec![weighted("127.0.0.2", 10), weighted("127.0.0.4", 200)]
    );
    let read = f.writer.read(WWW, ZONE).await.unwrap();
    assert_eq!(
        read.weights,
        weights(&[("127.0.0.2", 10), ("127.0.0.4", 200)])
    );

    // A weighted set reweighted by someone else between the writer's read and its write makes the
    // pin's DELETE fail: the whole batch is refused and nothing of it applies.
    *f.fake.state.before_change.lock().unwrap() = Some(Box::new(|sets| {
        let key = (
            WWW.to_owned(),
            "A".to_owned(),
            Some("rrguard-127.0.0.2".to_owned()),
        );
        sets.get_mut(&key).unwrap().weight = Some(3);
    }));
    let r = f
        .writer
        .apply(&RecordChange {
            weights: weights(&[("127.0.0.2", 10), ("127.0.0.4", 200), ("127.0.0.5", 1)]),
            ..change(&["127.0.0.2", "127.0.0.4"], &["127.0.0.5"], &[])
        })
        .await;
    match r {
        Err(WriteError::Conflict(m)) => assert!(m.contains("values provided do not match"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let read = f.writer.read(WWW, ZONE).await.unwrap();
    assert_eq!(
        read.weights,
        weights(&[("127.0.0.2", 3), ("127.0.0.4", 200)])
    );
}

/// The fake holds Route 53's rule that one name and type has either a simple set or weighted
/// ones: a batch that would leave both is refused whole (the batches above pass because the writer
/// deletes the plain set in the same batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_a_simple_set_beside_weighted_ones() {
    let f = FakeFixture::new();
    f.fake.put(WWW, "A", 60, &["127.0.0.2"]);
    let body = request_xml(&[weighted_xml("CREATE", "127.0.0.3", 1, 30)]);
    let doc: ChangeRequestDoc = quick_xml::de::from_str(&body).unwrap();
    let (status, _, text) = apply_batch(&f.fake.state, doc);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("non-weighted set exists"), "{text}");
    assert_eq!(f.authoritative(WWW), published(&[("127.0.0.2", 60)]));
}

/// Weighted records through moto: a plain RRset becomes one weighted set per address
/// (SetIdentifier `rrguard-<address>`, Weight, the change's TTL) in one batch; a weight change and a
/// removal are one batch; reading finds rrguard's sets by SetIdentifier; without weights the
/// records become one plain RRset again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_weighted_sets_are_written_read_and_reweighted() {
    let m = MotoFixture::new();
    let w = &m.writer;
    assert!(w.capabilities().weighted);
    let www = format!("www.{}", m.zone);
    m.set(&www, &published(&[("127.0.0.2", 30), ("127.0.0.3", 30)]));
    let weights = |pairs: &[(&str, u8)]| -> BTreeMap<IpAddr, u8> {
        pairs
            .iter()
            .map(|(a, w)| (a.parse().unwrap(), *w))
            .collect()
    };
    let to_weighted = RecordChange {
        fqdn: www.clone(),
        zone: m.zone.clone(),
        rettl: ["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()].into(),
        weights: weights(&[("127.0.0.2", 10), ("127.0.0.3", 5)]),
        ..change(&["127.0.0.2", "127.0.0.3"], &[], &[])
    };
    w.apply(&to_weighted).await.unwrap();
    let read = w.read(&www, &m.zone).await.unwrap();
    assert_eq!(read.addresses().len(), 2, "{read}");
    assert_eq!(
        read.weights,
        weights(&[("127.0.0.2", 10), ("127.0.0.3", 5)])
    );
    assert!(read.records.values().all(|ttl| *ttl == 30), "{read}");

    // Remove one, reweigh the other, add a third: one batch.
    let reweigh = RecordChange {
        fqdn: www.clone(),
        zone: m.zone.clone(),
        rettl: ["127.0.0.2".parse().unwrap()].into(),
        weights: weights(&[("127.0.0.2", 0), ("127.0.0.4", 255)]),
        ..change(&["127.0.0.2", "127.0.0.3"], &["127.0.0.4"], &["127.0.0.3"])
    };
    w.apply(&reweigh).await.unwrap();
    let read = w.read(&www, &m.zone).await.unwrap();
    assert_eq!(
        read.weights,
        weights(&[("127.0.0.2", 0), ("127.0.0.4", 255)]),
        "{read}"
    );

    // A stale precondition is refused before anything is sent.
    let stale = RecordChange {
        fqdn: www.clone(),
        zone: m.zone.clone(),
        weights: weights(&[("127.0.0.2", 1), ("127.0.0.9", 1)]),
        ..change(&["127.0.0.2", "127.0.0.3"], &["127.0.0.9"], &[])
    };
    assert!(matches!(
        w.apply(&stale).await,
        Err(WriteError::Conflict(_))
    ));

    // No weights any more: one plain RRset.
    let plain = RecordChange {
        fqdn: www.clone(),
        zone: m.zone.clone(),
        rettl: ["127.0.0.2".parse().unwrap(), "127.0.0.4".parse().unwrap()].into(),
        ..change(&["127.0.0.2", "127.0.0.4"], &[], &[])
    };
    w.apply(&plain).await.unwrap();
    let read = w.read(&www, &m.zone).await.unwrap();
    assert_eq!(read, published(&[("127.0.0.2", 30), ("127.0.0.4", 30)]));
}
