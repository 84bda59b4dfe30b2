//! The writer battery over `cloudflare`, `digitalocean` and `dynu`, each against a local fake of its
//! documented API: a stateful in-memory record list behind the documented endpoints, which checks on
//! every request the exact auth header, `Accept` and `Content-Type`, the path and the body's keys and
//! values, and answers anything else with a 400 that fails the test. These writers are tested against
//! these fakes only, never against the live services.
//!
//! - Cloudflare API v4: <https://developers.cloudflare.com/api/resources/dns/subresources/records/>
//! - DigitalOcean: <https://docs.digitalocean.com/reference/api/digitalocean/#tag/Domain-Records>
//! - Dynu API v2: <https://www.dynu.com/Support/API>
//!
//! Below the battery: pagination, 429 with `Retry-After`, Cloudflare's `proxied`, DigitalOcean's
//! next-page links re-rooted on the endpoint, Dynu's domain look-up and its in-body status codes.

#[macro_use]
mod support;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rrguard::act::api::{ApiToken, RetryPolicy};
use rrguard::act::cloudflare::config::CloudflareConfig;
use rrguard::act::digitalocean::config::DigitalOceanConfig;
use rrguard::act::dynu::config::DynuConfig;
use rrguard::act::{Published, RecordChange, WriteError, Writer};
use serde_json::{Value, json};
use support::battery::*;

const TOKEN: &str = "test-token-0123456789";
const CF_ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const DYNU_DOMAIN_ID: u64 = 98765;
/// Small pages, so that a few records cross page boundaries (Cloudflare's smallest is 5).
const CF_PAGE: u32 = 5;
const DO_PAGE: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Cloudflare,
    DigitalOcean,
    Dynu,
}

/// One record of a fake's store.
#[derive(Debug, Clone, PartialEq)]
struct Rec {
    id: u64,
    /// Lower case, with trailing dot.
    fqdn: String,
    rtype: String,
    /// An address, or a CNAME target with trailing dot.
    content: String,
    ttl: u32,
    proxied: bool,
}

/// A request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: String,
    at: tokio::time::Instant,
}

struct FakeState {
    provider: Provider,
    records: Mutex<Vec<Rec>>,
    next_id: Mutex<u64>,
    seen: Mutex<Vec<Seen>>,
    violations: Mutex<Vec<String>>,
    /// Answers given before normal handling: status, `Retry-After`, body.
    scripted: Mutex<VecDeque<(u16, Option<&'static str>, String)>>,
    fail_all: Mutex<Option<(u16, String)>>,
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
    fn start(provider: Provider) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let state = Arc::new(FakeState {
            provider,
            records: Mutex::default(),
            next_id: Mutex::new(1000),
            seen: Mutex::default(),
            violations: Mutex::default(),
            scripted: Mutex::default(),
            fail_all: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        // The documented base URLs have a path; the writers must keep it.
        let base = match provider {
            Provider::Cloudflare => "/client/v4",
            Provider::DigitalOcean => "",
            Provider::Dynu => "/v2",
        };
        Fake {
            url: format!("http://{addr}{base}"),
            state,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn writes(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method != Method::GET)
            .collect()
    }

    fn insert(&self, fqdn: &str, rtype: &str, content: &str, ttl: u32, proxied: bool) {
        let mut id = self.state.next_id.lock().unwrap();
        *id += 1;
        self.state.records.lock().unwrap().push(Rec {
            id: *id,
            fqdn: fqdn.to_ascii_lowercase(),
            rtype: rtype.to_owned(),
            content: content.to_owned(),
            ttl,
            proxied,
        });
    }
}

fn json_reply(status: u16, retry_after: Option<&str>, body: String) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    if let Some(s) = retry_after {
        r.headers_mut().insert("retry-after", s.parse().unwrap());
    }
    r
}

/// `name` relative to the fake's zone (`www`), empty at the apex.
fn node_of(fqdn: &str) -> String {
    let f = fqdn.trim_end_matches('.');
    let z = ZONE.trim_end_matches('.');
    if f == z {
        String::new()
    } else {
        f.strip_suffix(&format!(".{z}")).unwrap_or(f).to_owned()
    }
}

fn fqdn_of(node: &str) -> String {
    if node.is_empty() || node == "@" {
        ZONE.to_owned()
    } else {
        format!("{node}.{ZONE}")
    }
}

/// Checks that `body` is an object with exactly `keys`.
fn exact_keys(body: &Value, keys: &[&str]) -> Result<(), String> {
    let Some(obj) = body.as_object() else {
        return Err(format!("body is not a JSON object: {body}"));
    };
    let mut have: Vec<&str> = obj.keys().map(String::as_str).collect();
    have.sort_unstable();
    let mut want = keys.to_vec();
    want.sort_unstable();
    if have != want {
        return Err(format!("body keys {have:?}, documented {want:?}"));
    }
    Ok(())
}

/// An address of the family `rtype` names.
fn address_of(rtype: &str, value: &Value) -> Result<String, String> {
    let text = value
        .as_str()
        .ok_or(format!("address {value} is not a string"))?;
    let ip: IpAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an address"))?;
    match (rtype, ip.is_ipv4()) {
        ("A", true) | ("AAAA", false) => Ok(ip.to_string()),
        _ => Err(format!("{text} is not of type {rtype}")),
    }
}

fn ttl_of(value: &Value) -> Result<u32, String> {
    value
        .as_u64()
        .and_then(|t| u32::try_from(t).ok())
        .ok_or(format!("ttl {value} is not a number"))
}

async fn handle(
    State(state): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.clone(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: tokio::time::Instant::now(),
    };
    state.seen.lock().unwrap().push(seen.clone());
    match check_and_answer(&state, &seen, &headers) {
        Ok(r) => r,
        Err(problem) => {
            let m = format!("{} {}?{}: {problem}", seen.method, seen.path, seen.query);
            state.violations.lock().unwrap().push(m.clone());
            json_reply(400, None, json!({ "test_violation": m }).to_string())
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn check_and_answer(
    state: &FakeState,
    seen: &Seen,
    headers: &HeaderMap,
) -> Result<Response, String> {
    // The documented auth header, exactly; nothing else carries the token.
    let (auth_name, auth_value, other) = match state.provider {
        Provider::Cloudflare | Provider::DigitalOcean => {
            ("authorization", format!("Bearer {TOKEN}"), "api-key")
        }
        Provider::Dynu => ("api-key", TOKEN.to_owned(), "authorization"),
    };
    if header(headers, auth_name) != Some(auth_value.as_str()) {
        return Err(format!(
            "{auth_name} is {:?}, documented {auth_value:?}",
            header(headers, auth_name)
        ));
    }
    if headers.contains_key(other) {
        return Err(format!("undocumented {other} header"));
    }
    if header(headers, "accept") != Some("application/json") {
        return Err(format!("Accept is {:?}", header(headers, "accept")));
    }
    let body: Option<Value> = if seen.body.is_empty() {
        None
    } else {
        if header(headers, "content-type") != Some("application/json") {
            return Err(format!(
                "Content-Type is {:?}",
                header(headers, "content-type")
            ));
        }
        Some(serde_json::from_str(&seen.body).map_err(|e| format!("body is not JSON: {e}"))?)
    };
    if matches!(seen.method, Method::POST | Method::PATCH | Method::PUT) && body.is_none() {
        return Err("a write without a body".into());
    }
    if let Some((status, body)) = state.fail_all.lock().unwrap().clone() {
        return Ok(json_reply(status, None, body));
    }
    if let Some((status, retry_after, body)) = state.scripted.lock().unwrap().pop_front() {
        return Ok(json_reply(status, retry_after, body));
    }
    let query: BTreeMap<String, String> = reqwest::Url::parse(&format!("http://x/?{}", seen.query))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    match state.provider {
        Provider::Cloudflare => cloudflare(state, seen, &query, body),
        Provider::DigitalOcean => digitalocean(state, seen, &query, body),
        Provider::Dynu => dynu(state, seen, body),
    }
}

/// A page of `items` (1-based `page`), and the number of pages.
fn page_of<T: Clone>(items: &[T], page: usize, per_page: usize) -> (Vec<T>, usize) {
    let pages = items.len().div_ceil(per_page).max(1);
    let start = (page - 1) * per_page;
    (
        items.iter().skip(start).take(per_page).cloned().collect(),
        pages,
    )
}

/// An address beside a CNAME, or a CNAME beside anything: refused as the providers do.
fn cname_clash(records: &[Rec], fqdn: &str, rtype: &str) -> bool {
    records
        .iter()
        .any(|r| r.fqdn == fqdn && (r.rtype == "CNAME" || rtype == "CNAME"))
}

fn cloudflare(
    state: &FakeState,
    seen: &Seen,
    query: &BTreeMap<String, String>,
    body: Option<Value>,
) -> Result<Response, String> {
    let base = format!("/client/v4/zones/{CF_ZONE_ID}/dns_records");
    let ok = |result: Value, info: Option<Value>| {
        let mut v = json!({ "success": true, "errors": [], "messages": [], "result": result });
        if let Some(i) = info {
            v["result_info"] = i;
        }
        json_reply(200, None, v.to_string())
    };
    let show = |r: &Rec| {
        json!({
            "id": format!("{:032x}", r.id), "zone_id": CF_ZONE_ID, "zone_name": ZONE.trim_end_matches('.'),
            "name": r.fqdn.trim_end_matches('.'), "type": r.rtype,
            "content": if r.rtype == "CNAME" { r.content.trim_end_matches('.').to_owned() } else { r.content.clone() },
            "proxiable": true, "proxied": r.proxied, "ttl": r.ttl, "locked": false,
            "meta": { "auto_added": false }, "comment": null, "tags": [],
            "created_on": "2026-01-01T00:00:00Z", "modified_on": "2026-01-01T00:00:00Z"
        })
    };
    let id_of =
        |tail: &str| u64::from_str_radix(tail, 16).map_err(|_| format!("record id {tail:?}"));
    let mut records = state.records.lock().unwrap();
    match (&seen.method, seen.path.strip_prefix(&base)) {
        (&Method::GET, Some("")) => {
            let name = query
                .get("name")
                .ok_or("list without name= (rrguard lists one name)")?;
            let page: usize = query
                .get("page")
                .ok_or("no page=")?
                .parse()
                .map_err(|_| "page")?;
            let per_page: usize = query
                .get("per_page")
                .ok_or("no per_page=")?
                .parse()
                .map_err(|_| "per_page")?;
            if page == 0 || !(5..=5_000_000).contains(&per_page) {
                return Err(format!(
                    "page {page}, per_page {per_page} (documented: page from 1, per_page 5 to 5,000,000)"
                ));
            }
            let all: Vec<Value> = records
                .iter()
                .filter(|r| r.fqdn.trim_end_matches('.') == name)
                .map(show)
                .collect();
            let (items, pages) = page_of(&all, page, per_page);
            let info = json!({ "page": page, "per_page": per_page, "count": items.len(), "total_count": all.len(), "total_pages": pages });
            Ok(ok(Value::Array(items), Some(info)))
        }
        (&Method::POST, Some("")) => {
            let b = body.unwrap();
            exact_keys(&b, &["type", "name", "content", "ttl", "proxied"])?;
            let rtype = b["type"].as_str().ok_or("type")?.to_owned();
            let content = address_of(&rtype, &b["content"])?;
            let ttl = ttl_of(&b["ttl"])?;
            let proxied = b["proxied"].as_bool().ok_or("proxied is not a bool")?;
            let name = b["name"].as_str().ok_or("name")?;
            if name.ends_with('.') || name != name.to_ascii_lowercase() {
                return Err(format!("name {name:?} is not as Cloudflare shows names"));
            }
            if proxied && ttl != 1 {
                return Err(format!(
                    "a proxied record with ttl {ttl}: Cloudflare keeps proxied records at 1 (automatic)"
                ));
            }
            let fqdn = format!("{name}.");
            if cname_clash(&records, &fqdn, &rtype) {
                return Ok(json_reply(400, None, json!({ "success": false, "errors": [{ "code": 81053, "message": "An A, AAAA, or CNAME record with that host already exists." }], "messages": [], "result": null }).to_string()));
            }
            let mut id = state.next_id.lock().unwrap();
            *id += 1;
            let rec = Rec {
                id: *id,
                fqdn,
                rtype,
                content,
                ttl,
                proxied,
            };
            let shown = show(&rec);
            records.push(rec);
            Ok(ok(shown, None))
        }
        (&Method::DELETE, Some(tail)) if tail.starts_with('/') => {
            let id = id_of(&tail[1..])?;
            let before = records.len();
            records.retain(|r| r.id != id);
            if records.len() == before {
                return Ok(json_reply(404, None, json!({ "success": false, "errors": [{ "code": 81044, "message": "Record does not exist." }], "messages": [], "result": null }).to_string()));
            }
            Ok(ok(json!({ "id": tail[1..].to_owned() }), None))
        }
        (&Method::PATCH, Some(tail)) if tail.starts_with('/') => {
            let id = id_of(&tail[1..])?;
            let b = body.unwrap();
            exact_keys(&b, &["ttl"])?;
            let ttl = ttl_of(&b["ttl"])?;
            let Some(r) = records.iter_mut().find(|r| r.id == id) else {
                return Ok(json_reply(404, None, json!({ "success": false, "errors": [{ "code": 81044, "message": "Record does not exist." }], "messages": [], "result": null }).to_string()));
            };
            r.ttl = ttl;
            Ok(ok(show(r), None))
        }
        _ => Err("undocumented endpoint".into()),
    }
}

fn digitalocean(
    state: &FakeState,
    seen: &Seen,
    query: &BTreeMap<String, String>,
    body: Option<Value>,
) -> Result<Response, String> {
    let domain = ZONE.trim_end_matches('.');
    let base = format!("/v2/domains/{domain}/records");
    let show = |r: &Rec| {
        let name = node_of(&r.fqdn);
        json!({
            "id": r.id, "type": r.rtype, "name": if name.is_empty() { "@".to_owned() } else { name },
            "data": r.content, "priority": null, "port": null, "ttl": r.ttl, "weight": null, "flags": null, "tag": null
        })
    };
    let not_found = || {
        json_reply(404, None, json!({ "id": "not_found", "message": "The resource you were accessing could not be found." }).to_string())
    };
    let mut records = state.records.lock().unwrap();
    match (&seen.method, seen.path.strip_prefix(&base)) {
        (&Method::GET, Some("")) => {
            let name = query
                .get("name")
                .ok_or("list without name= (rrguard lists one name)")?;
            if name.ends_with('.') || !name.ends_with(domain) {
                return Err(format!(
                    "name={name:?} is not a fully qualified record name without trailing dot"
                ));
            }
            let page: usize = query
                .get("page")
                .map_or(Ok(1), |p| p.parse())
                .map_err(|_| "page")?;
            let per_page: usize = query
                .get("per_page")
                .ok_or("no per_page=")?
                .parse()
                .map_err(|_| "per_page")?;
            if !(1..=200).contains(&per_page) {
                return Err(format!("per_page {per_page} (1 to 200)"));
            }
            let all: Vec<Value> = records
                .iter()
                .filter(|r| r.fqdn.trim_end_matches('.') == name)
                .map(show)
                .collect();
            let (items, pages) = page_of(&all, page, per_page);
            // As the real API: absolute links on its own host, which the writer must re-root.
            let link = |p: usize| {
                format!(
                    "https://api.digitalocean.com{base}?name={name}&page={p}&per_page={per_page}"
                )
            };
            let mut pages_obj = json!({});
            if page < pages {
                pages_obj["next"] = json!(link(page + 1));
                pages_obj["last"] = json!(link(pages));
            }
            Ok(json_reply(200, None, json!({ "domain_records": items, "links": { "pages": pages_obj }, "meta": { "total": all.len() } }).to_string()))
        }
        (&Method::POST, Some("")) => {
            let b = body.unwrap();
            exact_keys(&b, &["type", "name", "data", "ttl"])?;
            let rtype = b["type"].as_str().ok_or("type")?.to_owned();
            let data = address_of(&rtype, &b["data"])?;
            let ttl = ttl_of(&b["ttl"])?;
            let name = b["name"].as_str().ok_or("name")?;
            if name.is_empty() || name.contains(domain) {
                return Err(format!(
                    "name {name:?} is not relative to the domain (\"@\" at the apex)"
                ));
            }
            let fqdn = fqdn_of(name);
            if cname_clash(&records, &fqdn, &rtype) {
                return Ok(json_reply(422, None, json!({ "id": "unprocessable_entity", "message": "CNAME records cannot share a name with other records." }).to_string()));
            }
            let mut id = state.next_id.lock().unwrap();
            *id += 1;
            let rec = Rec {
                id: *id,
                fqdn,
                rtype,
                content: data,
                ttl,
                proxied: false,
            };
            let shown = show(&rec);
            records.push(rec);
            Ok(json_reply(
                201,
                None,
                json!({ "domain_record": shown }).to_string(),
            ))
        }
        (&Method::DELETE, Some(tail)) if tail.starts_with('/') => {
            let id: u64 = tail[1..].parse().map_err(|_| "record id")?;
            let before = records.len();
            records.retain(|r| r.id != id);
            if records.len() == before {
                return Ok(not_found());
            }
            Ok((StatusCode::NO_CONTENT, "").into_response())
        }
        (&Method::PATCH, Some(tail)) if tail.starts_with('/') => {
            let id: u64 = tail[1..].parse().map_err(|_| "record id")?;
            let b = body.unwrap();
            exact_keys(&b, &["type", "ttl"])?;
            let ttl = ttl_of(&b["ttl"])?;
            let Some(r) = records.iter_mut().find(|r| r.id == id) else {
                return Ok(not_found());
            };
            if b["type"] != json!(r.rtype) {
                return Err(format!(
                    "type {} does not match the record's {}",
                    b["type"], r.rtype
                ));
            }
            r.ttl = ttl;
            Ok(json_reply(
                200,
                None,
                json!({ "domain_record": show(r) }).to_string(),
            ))
        }
        _ => Err("undocumented endpoint".into()),
    }
}

fn dynu(state: &FakeState, seen: &Seen, body: Option<Value>) -> Result<Response, String> {
    let domain = ZONE.trim_end_matches('.');
    let show = |r: &Rec| {
        let mut v = json!({
            "id": r.id, "domainId": DYNU_DOMAIN_ID, "domainName": domain, "nodeName": node_of(&r.fqdn),
            "hostname": r.fqdn.trim_end_matches('.'), "recordType": r.rtype, "ttl": r.ttl, "state": true,
            "content": format!("{} {} IN {} {}", r.fqdn.trim_end_matches('.'), r.ttl, r.rtype, r.content),
            "updatedOn": "2026-01-01T00:00:00"
        });
        match r.rtype.as_str() {
            "A" => v["ipv4Address"] = json!(r.content),
            "AAAA" => v["ipv6Address"] = json!(r.content),
            _ => v["host"] = json!(r.content.trim_end_matches('.')),
        }
        v
    };
    let record_body = |b: &Value| -> Result<(String, String, String, u32), String> {
        let rtype = b["recordType"].as_str().ok_or("recordType")?.to_owned();
        let field = if rtype == "AAAA" {
            "ipv6Address"
        } else {
            "ipv4Address"
        };
        exact_keys(
            b,
            &["nodeName", "recordType", "ttl", "state", "group", field],
        )?;
        if b["state"] != json!(true) {
            return Err("state is not true".into());
        }
        let node = b["nodeName"].as_str().ok_or("nodeName")?.to_owned();
        if node.contains(domain) {
            return Err(format!("nodeName {node:?} is not relative to the domain"));
        }
        let address = address_of(&rtype, &b[field])?;
        Ok((node, rtype, address, ttl_of(&b["ttl"])?))
    };
    let records_path = format!("/v2/dns/{DYNU_DOMAIN_ID}/record");
    let mut records = state.records.lock().unwrap();
    match (&seen.method, seen.path.as_str()) {
        (&Method::GET, "/v2/dns") => Ok(json_reply(200, None, json!({ "statusCode": 200, "domains": [
            { "id": 11111, "name": "other.test", "unicodeName": "other.test", "state": "Complete" },
            { "id": DYNU_DOMAIN_ID, "name": domain, "unicodeName": domain, "state": "Complete", "ttl": 300 }
        ] }).to_string())),
        (&Method::GET, p) if p == records_path => {
            let all: Vec<Value> = records.iter().map(show).collect();
            Ok(json_reply(200, None, json!({ "statusCode": 200, "dnsRecords": all }).to_string()))
        }
        (&Method::POST, p) if p == records_path => {
            let (node, rtype, address, ttl) = record_body(&body.unwrap())?;
            let fqdn = fqdn_of(&node);
            if cname_clash(&records, &fqdn, &rtype) {
                return Ok(json_reply(501, None, json!({ "statusCode": 501, "type": "Validation Exception", "message": "A CNAME record exists for this node." }).to_string()));
            }
            let mut id = state.next_id.lock().unwrap();
            *id += 1;
            let rec = Rec { id: *id, fqdn, rtype, content: address, ttl, proxied: false };
            let mut shown = show(&rec);
            shown["statusCode"] = json!(200);
            records.push(rec);
            Ok(json_reply(200, None, shown.to_string()))
        }
        (method, p) if p.starts_with(&format!("{records_path}/")) => {
            let id: u64 = p[records_path.len() + 1..].parse().map_err(|_| "record id")?;
            let missing = || json_reply(404, None, json!({ "statusCode": 404, "type": "Not Found Exception", "message": "Record not found." }).to_string());
            match *method {
                Method::DELETE => {
                    let before = records.len();
                    records.retain(|r| r.id != id);
                    if records.len() == before {
                        return Ok(missing());
                    }
                    Ok(json_reply(200, None, json!({ "statusCode": 200 }).to_string()))
                }
                Method::POST => {
                    let (node, rtype, address, ttl) = record_body(&body.unwrap())?;
                    let Some(r) = records.iter_mut().find(|r| r.id == id) else {
                        return Ok(missing());
                    };
                    if fqdn_of(&node) != r.fqdn || rtype != r.rtype || address != r.content {
                        return Err("an update that changes more than the TTL".into());
                    }
                    r.ttl = ttl;
                    Ok(json_reply(200, None, json!({ "statusCode": 200, "id": id }).to_string()))
                }
                _ => Err("undocumented method".into()),
            }
        }
        _ => Err("undocumented endpoint".into()),
    }
}

// ---- Fixtures ----

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        deadline: Duration::from_secs(5),
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
    }
}

fn cloudflare_writer(url: &str, token: &str, proxied: bool) -> Box<dyn Writer> {
    let c = CloudflareConfig {
        zone_id: CF_ZONE_ID.to_owned(),
        token: ApiToken::new(token),
        proxied,
        endpoint: url.parse().unwrap(),
        timeout: Duration::from_secs(5),
    };
    Box::new(
        rrguard::act::cloudflare::writer("cf", c)
            .unwrap()
            .with_retry(fast_retry())
            .with_page_size(CF_PAGE),
    )
}

fn digitalocean_writer(url: &str, token: &str) -> Box<dyn Writer> {
    let c = DigitalOceanConfig {
        domain: None,
        token: ApiToken::new(token),
        endpoint: url.parse().unwrap(),
        timeout: Duration::from_secs(5),
    };
    Box::new(
        rrguard::act::digitalocean::writer("do", c)
            .unwrap()
            .with_retry(fast_retry())
            .with_page_size(DO_PAGE),
    )
}

fn dynu_writer(url: &str, token: &str, domain_id: Option<u64>) -> Box<dyn Writer> {
    let c = DynuConfig {
        domain_id,
        token: ApiToken::new(token),
        endpoint: url.parse().unwrap(),
        timeout: Duration::from_secs(5),
    };
    Box::new(
        rrguard::act::dynu::writer("dynu", c)
            .unwrap()
            .with_retry(fast_retry()),
    )
}

fn writer_for(provider: Provider, url: &str, token: &str) -> Box<dyn Writer> {
    match provider {
        Provider::Cloudflare => cloudflare_writer(url, token, false),
        Provider::DigitalOcean => digitalocean_writer(url, token),
        Provider::Dynu => dynu_writer(url, token, None),
    }
}

struct CloudFixture {
    fake: Fake,
    writer: Box<dyn Writer>,
    failing: Mutex<Vec<Fake>>,
}

impl CloudFixture {
    fn new(provider: Provider) -> Self {
        let fake = Fake::start(provider);
        let writer = writer_for(provider, &fake.url, TOKEN);
        CloudFixture {
            fake,
            writer,
            failing: Mutex::default(),
        }
    }

    fn boxed(provider: Provider) -> Box<dyn Fixture> {
        Box::new(Self::new(provider))
    }
}

impl Fixture for CloudFixture {
    fn writer(&self) -> &dyn Writer {
        &*self.writer
    }

    fn set(&self, fqdn: &str, published: &Published) {
        self.fake
            .state
            .records
            .lock()
            .unwrap()
            .retain(|r| r.fqdn != fqdn);
        for (ip, ttl) in &published.records {
            let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
            self.fake.insert(fqdn, rtype, &ip.to_string(), *ttl, false);
        }
        if let Some(target) = &published.cname {
            self.fake.insert(fqdn, "CNAME", target, 60, false);
        }
    }

    fn authoritative(&self, fqdn: &str) -> Published {
        let mut p = Published::default();
        for r in self
            .fake
            .state
            .records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.fqdn == fqdn)
        {
            match r.rtype.as_str() {
                "CNAME" => p.cname = Some(r.content.clone()),
                _ => {
                    p.records.insert(r.content.parse().unwrap(), r.ttl);
                }
            }
        }
        p
    }

    fn failing(&self, failure: Failure) -> Result<Box<dyn Writer>, &'static str> {
        let provider = self.fake.state.provider;
        let fake = Fake::start(provider);
        let answer = match (provider, failure) {
            (Provider::Cloudflare, Failure::ServerError) => (
                500,
                json!({ "success": false, "errors": [{ "code": 10001, "message": "service unavailable" }] }),
            ),
            (Provider::Cloudflare, Failure::BadCredentials) => (
                403,
                json!({ "success": false, "errors": [{ "code": 10000, "message": "Authentication error" }] }),
            ),
            (Provider::DigitalOcean, Failure::ServerError) => (
                500,
                json!({ "id": "server_error", "message": "Server was unable to give you a response." }),
            ),
            (Provider::DigitalOcean, Failure::BadCredentials) => (
                401,
                json!({ "id": "unauthorized", "message": "Unable to authenticate you" }),
            ),
            (Provider::Dynu, Failure::ServerError) => (
                503,
                json!({ "statusCode": 503, "type": "Server Exception", "message": "unavailable" }),
            ),
            (Provider::Dynu, Failure::BadCredentials) => (
                401,
                json!({ "statusCode": 401, "type": "Authentication Exception", "message": "Invalid API-Key." }),
            ),
        };
        *fake.state.fail_all.lock().unwrap() = Some((answer.0, answer.1.to_string()));
        let w = writer_for(provider, &fake.url, TOKEN);
        self.failing.lock().unwrap().push(fake);
        Ok(w)
    }
}

writer_battery! {
    cloudflare => CloudFixture::boxed(Provider::Cloudflare);
    digitalocean => CloudFixture::boxed(Provider::DigitalOcean);
    dynu => CloudFixture::boxed(Provider::Dynu);
}

// ---- Rows of these writers. ----

const WWW: &str = "www.example.test.";

/// More records than one page, beside records of other names, are all read.
async fn pages_are_followed(provider: Provider, page: u32) {
    let f = CloudFixture::new(provider);
    let ips: Vec<String> = (2..=12).map(|i| format!("127.0.0.{i}")).collect();
    let want = Published::with_ttl(ips.iter().map(|ip| ip.parse().unwrap()), 60);
    f.set(WWW, &want);
    f.set("www2.example.test.", &published(&[("127.0.0.99", 60)]));
    f.set("a.www.example.test.", &published(&[("127.0.0.98", 60)]));
    assert_eq!(f.writer.read(WWW, ZONE).await.unwrap(), want);
    let lists = f
        .fake
        .seen()
        .into_iter()
        .filter(|s| s.method == Method::GET)
        .count();
    assert_eq!(
        lists,
        ips.len().div_ceil(page as usize),
        "{} records in pages of {page}",
        ips.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_pages_are_followed() {
    pages_are_followed(Provider::Cloudflare, CF_PAGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digitalocean_pages_are_followed_on_the_configured_endpoint() {
    // The fake's next links name api.digitalocean.com; the requests still reach the fake (a token
    // never follows a link to another host).
    pages_are_followed(Provider::DigitalOcean, DO_PAGE).await;
    let f = CloudFixture::new(Provider::DigitalOcean);
    f.set(
        WWW,
        &published(&[
            ("127.0.0.2", 60),
            ("127.0.0.3", 60),
            ("127.0.0.4", 60),
            ("127.0.0.5", 60),
        ]),
    );
    f.writer.read(WWW, ZONE).await.unwrap();
    let second = &f.fake.seen()[1];
    assert_eq!(second.path, "/v2/domains/example.test/records");
    assert!(second.query.contains("page=2"), "{}", second.query);
}

/// 429 with `Retry-After: 1`: the writer waits that long and succeeds.
async fn rate_limit_is_waited_out(provider: Provider, limited: Value) {
    let f = CloudFixture::new(provider);
    f.set(WWW, &published(&[("127.0.0.2", 60)]));
    f.fake
        .state
        .scripted
        .lock()
        .unwrap()
        .push_back((429, Some("1"), limited.to_string()));
    assert_eq!(
        f.writer.read(WWW, ZONE).await.unwrap(),
        published(&[("127.0.0.2", 60)])
    );
    let seen = f.fake.seen();
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, Retry-After said 1 s"
    );
    // Limited for good: transient, after a bounded number of attempts.
    *f.fake.state.fail_all.lock().unwrap() = Some((429, limited.to_string()));
    let start = tokio::time::Instant::now();
    let r = f
        .writer
        .apply(&change(&["127.0.0.2"], &["127.0.0.3"], &[]))
        .await;
    assert!(matches!(r, Err(WriteError::Transient(_))), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_429_honours_retry_after() {
    rate_limit_is_waited_out(Provider::Cloudflare, json!({ "success": false, "errors": [{ "code": 971, "message": "Please wait and consider throttling your request speed" }] })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digitalocean_429_honours_retry_after() {
    rate_limit_is_waited_out(
        Provider::DigitalOcean,
        json!({ "id": "too_many_requests", "message": "API Rate limit exceeded." }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynu_429_honours_retry_after() {
    rate_limit_is_waited_out(Provider::Dynu, json!({ "statusCode": 429, "type": "Rate Limit Exception", "message": "Too many requests." })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_proxied_records_are_created_proxied_and_keep_their_ttl_stable() {
    let fake = Fake::start(Provider::Cloudflare);
    let w = cloudflare_writer(&fake.url, TOKEN, true);
    w.apply(&change(&[], &["127.0.0.2", "::2"], &[]))
        .await
        .unwrap();
    let posts: Vec<Value> = fake
        .writes()
        .iter()
        .map(|s| serde_json::from_str(&s.body).unwrap())
        .collect();
    assert_eq!(
        posts,
        vec![
            json!({ "type": "A", "name": "www.example.test", "content": "127.0.0.2", "ttl": 1, "proxied": true }),
            json!({ "type": "AAAA", "name": "www.example.test", "content": "::2", "ttl": 1, "proxied": true }),
        ]
    );
    let stored = fake.state.records.lock().unwrap().clone();
    assert!(stored.iter().all(|r| r.proxied && r.ttl == 1), "{stored:?}");
    // Read back at the TTL asked for, so the core sees nothing to re-TTL.
    assert_eq!(
        w.read(WWW, ZONE).await.unwrap(),
        published(&[("127.0.0.2", 30), ("::2", 30)])
    );
    // After a restart the TTL reads as automatic (1) until one TTL change, which sends nothing.
    let restarted = cloudflare_writer(&fake.url, TOKEN, true);
    assert_eq!(
        restarted.read(WWW, ZONE).await.unwrap(),
        published(&[("127.0.0.2", 1), ("::2", 1)])
    );
    let writes = fake.writes().len();
    let rettl = RecordChange {
        rettl: set(&["127.0.0.2", "::2"]),
        ..change(&["127.0.0.2", "::2"], &[], &[])
    };
    restarted.apply(&rettl).await.unwrap();
    assert_eq!(
        fake.writes().len(),
        writes,
        "a proxied record's TTL is not sent"
    );
    assert_eq!(
        restarted.read(WWW, ZONE).await.unwrap(),
        published(&[("127.0.0.2", 30), ("::2", 30)])
    );
    // Without `proxied`, records are created unproxied at the service's TTL.
    let plain = cloudflare_writer(&fake.url, TOKEN, false);
    plain
        .apply(&RecordChange {
            fqdn: "api.example.test.".into(),
            ..change(&[], &["127.0.0.3"], &[])
        })
        .await
        .unwrap();
    let last: Value = serde_json::from_str(&fake.writes().last().unwrap().body).unwrap();
    assert_eq!(
        last,
        json!({ "type": "A", "name": "api.example.test", "content": "127.0.0.3", "ttl": 30, "proxied": false })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_errors_show_cloudflares_messages() {
    let f = CloudFixture::new(Provider::Cloudflare);
    f.set(
        WWW,
        &Published {
            records: Default::default(),
            cname: Some("lb.example.test.".into()),
            weights: Default::default(),
        },
    );
    // The writer refuses an address beside a CNAME itself; Cloudflare's own refusal is mapped too.
    let w = cloudflare_writer(&f.fake.url, TOKEN, false);
    f.fake.state.scripted.lock().unwrap().push_back((200, None, json!({ "success": true, "errors": [], "result": [], "result_info": { "page": 1, "total_pages": 1 } }).to_string()));
    match w.apply(&change(&[], &["127.0.0.2"], &[])).await {
        Err(WriteError::Rejected(m)) => assert!(
            m.contains("An A, AAAA, or CNAME record with that host already exists. (code 81053)"),
            "{m}"
        ),
        other => panic!("expected rejected, got {other:?}"),
    }
    // success: false under HTTP 200 is no success.
    f.fake.state.scripted.lock().unwrap().push_back((200, None, json!({ "success": false, "errors": [{ "code": 1004, "message": "DNS Validation Error" }] }).to_string()));
    match w.read(WWW, ZONE).await {
        Err(WriteError::Rejected(m)) => {
            assert!(m.contains("DNS Validation Error (code 1004)"), "{m}")
        }
        other => panic!("expected rejected, got {other:?}"),
    }
    // A wrong token: the fake refuses it as a violation, and Cloudflare's 400 code 6111 is an auth error.
    f.fake.state.scripted.lock().unwrap().push_back((400, None, json!({ "success": false, "errors": [{ "code": 6111, "message": "Invalid format for Authorization header" }] }).to_string()));
    assert!(matches!(w.read(WWW, ZONE).await, Err(WriteError::Auth(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynu_looks_the_domain_up_once_and_reads_in_body_status() {
    let f = CloudFixture::new(Provider::Dynu);
    f.set(WWW, &published(&[("127.0.0.2", 60)]));
    f.writer.read(WWW, ZONE).await.unwrap();
    f.writer
        .apply(&change(&["127.0.0.2"], &["127.0.0.3", "::3"], &[]))
        .await
        .unwrap();
    let lookups = f.fake.seen().iter().filter(|s| s.path == "/v2/dns").count();
    assert_eq!(lookups, 1, "the domain ID is looked up once");
    assert_eq!(
        f.authoritative(WWW),
        published(&[("127.0.0.2", 30), ("127.0.0.3", 30), ("::3", 30)])
    );
    // With domain_id, no look-up at all.
    let fixed = dynu_writer(&f.fake.url, TOKEN, Some(DYNU_DOMAIN_ID));
    let before = f.fake.seen().len();
    fixed.read(WWW, ZONE).await.unwrap();
    assert!(f.fake.seen()[before..].iter().all(|s| s.path != "/v2/dns"));
    // A zone the account does not have is an operator error naming what it has.
    match f.writer.read("www.nowhere.test.", "nowhere.test.").await {
        Err(WriteError::Rejected(m)) => assert!(
            m.contains("no domain nowhere.test (it has: other.test, example.test)"),
            "{m}"
        ),
        other => panic!("expected rejected, got {other:?}"),
    }
    // Dynu's statusCode in the body counts even under HTTP 200.
    f.fake.state.scripted.lock().unwrap().push_back((200, None, json!({ "statusCode": 401, "type": "Authentication Exception", "message": "Invalid API-Key." }).to_string()));
    match fixed.read(WWW, ZONE).await {
        Err(WriteError::Auth(m)) => assert!(
            m.contains("Authentication Exception: Invalid API-Key."),
            "{m}"
        ),
        other => panic!("expected auth, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_sent_only_in_its_header_and_never_shown() {
    for provider in [Provider::Cloudflare, Provider::DigitalOcean, Provider::Dynu] {
        let f = CloudFixture::new(provider);
        // A wrong token is refused by the fake (as a violation it records), so check the good one
        // went out exactly and appears nowhere else.
        f.writer
            .apply(&change(&[], &["127.0.0.2"], &[]))
            .await
            .unwrap();
        for s in f.fake.seen() {
            assert!(!s.query.contains(TOKEN) && !s.body.contains(TOKEN), "{s:?}");
        }
        let failing = f.failing(Failure::BadCredentials).unwrap();
        let err = failing.read(WWW, ZONE).await.unwrap_err();
        assert!(err.needs_operator(), "{err:?}");
        assert!(!err.to_string().contains(TOKEN), "{err}");
    }
    assert!(!format!("{:?}", ApiToken::new(TOKEN)).contains(TOKEN));
}
