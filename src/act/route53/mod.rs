//! The `route53` writer: Amazon Route 53's REST API, requests signed with AWS Signature Version 4
//! (`aws-sigv4`, no SDK).
//!
//! Reading lists the RRsets from the name on (ListResourceRecordSets), following pages while they
//! stay at the name. Writing is one ChangeResourceRecordSets batch: for each RRset the change touches,
//! a DELETE of the RRset exactly as read (values and TTL) and a CREATE of the new one (only the CREATE
//! when the family was empty, only the DELETE when it becomes empty). Route 53 applies a batch whole
//! or not at all and refuses a DELETE that does not match the current RRset exactly, or a CREATE of
//! an RRset that exists (`InvalidChangeBatch`), so the batch is a compare-and-swap: the writer reads,
//! checks the change's precondition against what it read ([`WriteError::Conflict`] if it does not
//! hold), and sends DELETE-as-read + CREATE; a change by someone else between that read and the write
//! makes Route 53 refuse the batch, which is a conflict too.
//! (<https://docs.aws.amazon.com/Route53/latest/APIReference/API_ChangeResourceRecordSets.html>)
//!
//! Route 53 allows five requests a second per account and answers `Throttling` (HTTP 400) or
//! `PriorRequestNotComplete` past that: the writer spaces its own requests to five a second and
//! retries those answers with backoff, within [`crate::act::api::RetryPolicy`]'s bounds.
//!
//! Weighted records (`[service.select] weights`, [`Capabilities::weighted`]): one record set per
//! address with `SetIdentifier` `rrguard-<address>` and `Weight`, the service's TTL; reading finds
//! rrguard's sets by that identifier (other routing policies at the name are refused). A change is
//! still one batch: DELETE-as-read of every set that changes, CREATE of the new ones, and a pin
//! (DELETE-as-read + CREATE the same) of every set that stays, so a concurrent change to any set of
//! the family refuses the batch and two writers cannot empty the name between them. Unlike a plain
//! RRset, a set someone else adds for another address in between is not noticed by the batch; the
//! next reconcile read repairs it.
//!
//! Changes are visible to ListResourceRecordSets once Route 53 reports them `INSYNC`; the writer
//! declares read-back only with `wait_insync = true`, when it polls GetChange until then.

pub mod config;
pub mod xml;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use self::config::{AwsCredentials, DEFAULT_INSYNC_TIMEOUT, DEFAULT_ROUTE53_RATE, Route53Config};
use self::xml::{Action, ApiError, Change, ChangeInfoResponse, ListResponse, RecordSet};
use super::api::{self, ApiClient, Reply, RetryPolicy, Verdict};
use super::{
    BuildError, Capabilities, Family, Precondition, Published, RecordChange, WriteError, Writer,
};

/// The API version in every path.
const API_PATH: &str = "/2013-04-01";
/// RRsets asked for per ListResourceRecordSets page (Route 53 gives at most 300).
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Most `<ResourceRecord>` elements in one ChangeResourceRecordSets request
/// (<https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/DNSLimitations.html#limits-api-requests-changeresourcerecordsets>).
pub const MAX_BATCH_RECORDS: usize = 1000;
/// Most names the daemon's batching puts in one request: a name changes at most two RRsets, each a
/// DELETE and a CREATE, so 50 names of up to 5 addresses stay under [`MAX_BATCH_RECORDS`]; a request
/// over the limits is refused before it is sent and its changes go one by one.
pub const BATCH_CHANGES: usize = 50;
/// Most characters of `<Value>`s in one ChangeResourceRecordSets request (same source).
pub const MAX_BATCH_VALUE_CHARS: usize = 32_000;
/// How often GetChange is asked while waiting for `INSYNC`.
const INSYNC_POLL: Duration = Duration::from_secs(2);

/// Writes one Route 53 hosted zone.
#[derive(Debug)]
pub struct Route53Writer {
    name: String,
    config: Route53Config,
    credentials: AwsCredentials,
    api: ApiClient,
    page_size: u32,
}

/// One A or AAAA RRset as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rrset {
    ttl: u32,
    /// Values as Route 53 gave them (a DELETE must repeat them).
    values: Vec<String>,
    addresses: BTreeSet<IpAddr>,
}

/// One weighted record set of one address, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Weighted {
    ttl: u32,
    weight: u8,
}

/// The SetIdentifier rrguard gives the weighted record set of `ip`.
pub fn set_identifier(ip: &IpAddr) -> String {
    format!("rrguard-{ip}")
}

/// What a name holds, as far as the writer cares.
#[derive(Debug, Clone, Default)]
struct NameState {
    rrsets: BTreeMap<Family, Rrset>,
    /// rrguard's weighted record sets (SetIdentifier `rrguard-<address>`), one per address.
    weighted: BTreeMap<IpAddr, Weighted>,
    cname: Option<String>,
    /// Every type at the name (for `NameNotInUse`).
    types: BTreeSet<String>,
}

impl NameState {
    fn published(&self) -> Published {
        let mut p = Published {
            cname: self.cname.clone(),
            ..Published::default()
        };
        for set in self.rrsets.values() {
            for ip in &set.addresses {
                p.records.insert(*ip, set.ttl);
            }
        }
        for (ip, w) in &self.weighted {
            p.records.insert(*ip, w.ttl);
            p.weights.insert(*ip, w.weight);
        }
        p
    }

    fn addresses(&self, family: Family) -> BTreeSet<IpAddr> {
        let mut out: BTreeSet<IpAddr> = self
            .rrsets
            .get(&family)
            .map(|s| s.addresses.clone())
            .unwrap_or_default();
        out.extend(self.weighted.keys().filter(|ip| Family::of(ip) == family));
        out
    }
}

impl Route53Writer {
    /// A writer named `name`; credentials from the config, else from the process environment and
    /// the shared credentials file (see [`AwsCredentials::from_environment`]).
    ///
    /// # Errors
    /// [`BuildError`] when no credentials are found or the HTTP client cannot be built.
    pub fn new(name: &str, config: Route53Config) -> Result<Self, BuildError> {
        let credentials = match &config.credentials {
            Some(c) => c.clone(),
            None => AwsCredentials::from_environment(
                |k| std::env::var(k).ok(),
                config.profile.as_deref(),
            )
            .map_err(|reason| BuildError {
                name: name.to_owned(),
                reason,
            })?,
        };
        Self::with_credentials(name, config, credentials)
    }

    /// A writer named `name` signing with `credentials`.
    ///
    /// # Errors
    /// [`BuildError`] when the HTTP client cannot be built.
    pub fn with_credentials(
        name: &str,
        config: Route53Config,
        credentials: AwsCredentials,
    ) -> Result<Self, BuildError> {
        let label = format!("route53 writer {name:?}");
        let api = ApiClient::new(
            &label,
            &config.endpoint,
            config.timeout,
            DEFAULT_ROUTE53_RATE,
            RetryPolicy::default(),
        )
        .map_err(|reason| BuildError {
            name: name.to_owned(),
            reason,
        })?;
        Ok(Route53Writer {
            name: name.to_owned(),
            config,
            credentials,
            api,
            page_size: DEFAULT_PAGE_SIZE,
        })
    }

    /// The same writer asking for `n` RRsets per listing page (at least 1), so that tests can cross
    /// page boundaries.
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// The same writer retrying by `retry` instead of [`RetryPolicy::default`].
    ///
    /// # Errors
    /// [`BuildError`] when the HTTP client cannot be built.
    pub fn with_retry(self, retry: RetryPolicy) -> Result<Self, BuildError> {
        let label = format!("route53 writer {:?}", self.name);
        let api = ApiClient::new(
            &label,
            &self.config.endpoint,
            self.config.timeout,
            DEFAULT_ROUTE53_RATE,
            retry,
        )
        .map_err(|reason| BuildError {
            name: self.name.clone(),
            reason,
        })?;
        Ok(Route53Writer { api, ..self })
    }

    /// Applies several changes to names of this hosted zone in one ChangeResourceRecordSets
    /// request: all or none. Each change's precondition is checked against a fresh read, and the
    /// batch carries the DELETE-as-read of every touched RRset, so any change by someone else in
    /// between refuses the whole batch. Each name may appear once.
    ///
    /// # Errors
    /// [`WriteError::Conflict`] if a precondition does not hold or Route 53 refuses the batch for
    /// a changed RRset; [`WriteError::Rejected`] for a name given twice, a CNAME at a name, or a
    /// batch over Route 53's limits ([`MAX_BATCH_RECORDS`] records, [`MAX_BATCH_VALUE_CHARS`]
    /// characters of values: split it); otherwise as [`Writer::apply`].
    pub async fn apply_all(&self, changes: &[RecordChange]) -> Result<(), WriteError> {
        let mut names = BTreeSet::new();
        for change in changes {
            if !names.insert(xml::normalize_name(&change.fqdn)) {
                return Err(WriteError::Rejected(format!(
                    "route53 writer {:?}: {} appears twice in one batch; merge its changes into one",
                    self.name, change.fqdn
                )));
            }
        }
        let mut batch = Vec::new();
        for change in changes {
            if change.is_empty() {
                continue;
            }
            let state = self.read_name(&change.fqdn).await?;
            batch.extend(self.plan(&state, change)?);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let records: usize = batch.iter().map(|c| c.values.len()).sum();
        let chars: usize = batch.iter().flat_map(|c| &c.values).map(String::len).sum();
        if records > MAX_BATCH_RECORDS || chars > MAX_BATCH_VALUE_CHARS {
            return Err(WriteError::Rejected(format!(
                "route53 writer {:?}: the batch has {records} records with {chars} characters of values; Route 53 takes at most {MAX_BATCH_RECORDS} records and {MAX_BATCH_VALUE_CHARS} characters in one request: split it",
                self.name
            )));
        }
        self.change(&batch).await
    }

    /// The batch entries for `change` given the name's `state`, after checking its precondition.
    fn plan(&self, state: &NameState, change: &RecordChange) -> Result<Vec<Change>, WriteError> {
        let at = |m: String| format!("route53 writer {:?}: {}: {m}", self.name, change.fqdn);
        let families = change.families();
        match &change.precondition {
            Precondition::RrsetEquals(expected) => {
                for f in &families {
                    let want: BTreeSet<IpAddr> = expected
                        .iter()
                        .filter(|ip| Family::of(ip) == *f)
                        .copied()
                        .collect();
                    let found = state.addresses(*f);
                    if want != found {
                        return Err(WriteError::Conflict(at(format!(
                            "{f} records are {} but the change expected {}",
                            list(&found),
                            list(&want)
                        ))));
                    }
                }
            }
            Precondition::NameNotInUse => {
                if !state.types.is_empty() {
                    let types: Vec<&str> = state.types.iter().map(String::as_str).collect();
                    return Err(WriteError::Conflict(at(format!(
                        "the name is in use ({})",
                        types.join(", ")
                    ))));
                }
            }
        }
        if let Some(target) = &state.cname
            && !change.add.is_empty()
        {
            return Err(WriteError::Rejected(at(format!(
                "a CNAME (to {target}) is at the name, and Route 53 allows no address records beside it; remove the CNAME or point the service at another name"
            ))));
        }
        let mut out = Vec::new();
        for f in families {
            let old = state.rrsets.get(&f);
            let mut new = state.addresses(f);
            new.retain(|ip| !change.remove.contains(ip));
            new.extend(change.add.iter().filter(|ip| Family::of(ip) == f));
            let old_weighted: BTreeMap<IpAddr, Weighted> = state
                .weighted
                .iter()
                .filter(|(ip, _)| Family::of(ip) == f)
                .map(|(ip, w)| (*ip, *w))
                .collect();
            if !change.weights.is_empty() || !old_weighted.is_empty() {
                out.extend(weighted_changes(change, f, old, &old_weighted, &new));
                continue;
            }
            if let Some(old) = old
                && old.addresses == new
                && old.ttl == change.ttl
            {
                continue;
            }
            let rtype = f.to_string();
            if let Some(old) = old {
                out.push(Change {
                    action: Action::Delete,
                    name: change.fqdn.clone(),
                    rtype: rtype.clone(),
                    ttl: old.ttl,
                    values: old.values.clone(),
                    weighted: None,
                });
            }
            if !new.is_empty() {
                out.push(Change {
                    action: Action::Create,
                    name: change.fqdn.clone(),
                    rtype,
                    ttl: change.ttl,
                    values: new.iter().map(IpAddr::to_string).collect(),
                    weighted: None,
                });
            }
        }
        Ok(out)
    }

    /// Every RRset at `fqdn`, following pages while they stay at the name.
    async fn read_name(&self, fqdn: &str) -> Result<NameState, WriteError> {
        let want = xml::normalize_name(fqdn);
        let path = format!("{API_PATH}/hostedzone/{}/rrset", self.config.hosted_zone_id);
        let first = (fqdn.to_owned(), None::<String>, None::<String>);
        let sets = api::collect_pages(first, |(name, rtype, identifier)| {
            let path = &path;
            let want = &want;
            async move {
                let page_size = self.page_size.to_string();
                let mut query = vec![("name", name.as_str())];
                if let Some(t) = &rtype {
                    query.push(("type", t.as_str()));
                }
                if let Some(i) = &identifier {
                    query.push(("identifier", i.as_str()));
                }
                query.push(("maxitems", page_size.as_str()));
                let url = self.api.url(path, &query)?;
                let reply = self
                    .signed(Method::GET, url, Vec::new(), "ListResourceRecordSets")
                    .await?;
                let page: ListResponse = xml::parse(&reply.body).map_err(|e| {
                    self.api.prefixed(
                        "ListResourceRecordSets",
                        WriteError::Transient(format!(
                            "unexpected answer: {e}: {}",
                            api::snippet(&reply.body)
                        )),
                    )
                })?;
                let sets: Vec<RecordSet> = page
                    .resource_record_sets
                    .sets
                    .into_iter()
                    .filter(|s| xml::normalize_name(&s.name) == *want)
                    .collect();
                let next = match (page.is_truncated, page.next_record_name) {
                    (true, Some(n)) if xml::normalize_name(&n) == *want => {
                        Some((n, page.next_record_type, page.next_record_identifier))
                    }
                    _ => None,
                };
                Ok((sets, next))
            }
        })
        .await?;
        let mut state = NameState::default();
        for set in sets {
            state.types.insert(set.rtype.clone());
            let family = match set.rtype.as_str() {
                "A" => Family::V4,
                "AAAA" => Family::V6,
                "CNAME" => {
                    state.cname = set.values().into_iter().next();
                    if let Some(alias) = &set.alias_target {
                        state.cname = Some(alias.dns_name.clone());
                    }
                    continue;
                }
                _ => continue,
            };
            let rejected = |m: String| {
                WriteError::Rejected(format!(
                    "route53 writer {:?}: {fqdn} {}: {m}",
                    self.name, set.rtype
                ))
            };
            if let Some(alias) = &set.alias_target {
                return Err(rejected(format!(
                    "is an alias record (to {}); rrguard manages plain A/AAAA records only: remove the alias or point the service at another name",
                    alias.dns_name
                )));
            }
            if let (Some(id), Some(weight)) = (&set.set_identifier, set.weight)
                && let Some(ip) = id
                    .strip_prefix("rrguard-")
                    .and_then(|a| a.parse::<IpAddr>().ok())
                && Family::of(&ip) == family
                && set.values() == [ip.to_string()]
            {
                let weight = u8::try_from(weight)
                    .map_err(|_| rejected(format!("set {id:?} has weight {weight}, over 255")))?;
                let ttl = set.ttl.ok_or_else(|| rejected("has no TTL".to_owned()))?;
                state.weighted.insert(ip, Weighted { ttl, weight });
                continue;
            }
            if let Some(id) = &set.set_identifier {
                return Err(rejected(format!(
                    "has a routing policy (set identifier {id:?}); rrguard manages simple records only: remove those records or point the service at another name"
                )));
            }
            let values = set.values();
            let addresses = values
                .iter()
                .map(|v| {
                    v.parse::<IpAddr>()
                        .map_err(|_| rejected(format!("value {v:?} is not an address")))
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            let ttl = set.ttl.ok_or_else(|| rejected("has no TTL".to_owned()))?;
            state.rrsets.insert(
                family,
                Rrset {
                    ttl,
                    values,
                    addresses,
                },
            );
        }
        Ok(state)
    }

    /// Sends one ChangeResourceRecordSets request and, with `wait_insync`, waits for `INSYNC`.
    async fn change(&self, batch: &[Change]) -> Result<(), WriteError> {
        let path = format!(
            "{API_PATH}/hostedzone/{}/rrset/",
            self.config.hosted_zone_id
        );
        let url = self.api.url(&path, &[])?;
        let body = xml::change_batch("rrguard", batch);
        let reply = self
            .signed(
                Method::POST,
                url,
                body.into_bytes(),
                "ChangeResourceRecordSets",
            )
            .await?;
        if !self.config.wait_insync {
            return Ok(());
        }
        let unexpected = |reply: &Reply, e: String| {
            self.api.prefixed(
                "ChangeResourceRecordSets",
                WriteError::Transient(format!(
                    "unexpected answer: {e}: {}",
                    api::snippet(&reply.body)
                )),
            )
        };
        let mut info = xml::parse::<ChangeInfoResponse>(&reply.body)
            .map_err(|e| unexpected(&reply, e))?
            .change_info;
        let deadline = Instant::now() + DEFAULT_INSYNC_TIMEOUT;
        while info.status != "INSYNC" {
            if Instant::now() + INSYNC_POLL > deadline {
                return Err(WriteError::Transient(format!(
                    "route53 writer {:?}: change {} is still {} after {}s",
                    self.name,
                    info.id,
                    info.status,
                    DEFAULT_INSYNC_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(INSYNC_POLL).await;
            let id = info.id.trim_start_matches("/change/");
            let url = self.api.url(&format!("{API_PATH}/change/{id}"), &[])?;
            let reply = self
                .signed(Method::GET, url, Vec::new(), "GetChange")
                .await?;
            info = xml::parse::<ChangeInfoResponse>(&reply.body)
                .map_err(|e| unexpected(&reply, e))?
                .change_info;
        }
        Ok(())
    }

    /// Sends a request signed anew for each attempt (a signature is good for five minutes) and
    /// classifies Route 53's answer.
    async fn signed(
        &self,
        method: Method,
        url: reqwest::Url,
        body: Vec<u8>,
        what: &str,
    ) -> Result<Reply, WriteError> {
        let make = |http: &reqwest::Client| {
            let mut request = http
                .request(method.clone(), url.clone())
                .body(body.clone())
                .build()
                .map_err(|e| WriteError::Rejected(format!("cannot build the request: {e}")))?;
            if !body.is_empty() {
                request
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
            }
            sign_request(&mut request, &self.credentials, &self.config.region, &body)?;
            Ok(request)
        };
        self.api.send(what, make, classify).await
    }
}

/// Signs `request` for Route 53 in `region` (AWS Signature Version 4), adding `Authorization`,
/// `X-Amz-Date` and, for temporary credentials, `X-Amz-Security-Token`
/// (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html>).
///
/// # Errors
/// [`WriteError::Auth`] when the credentials cannot sign (an empty key).
pub fn sign_request(
    request: &mut reqwest::Request,
    credentials: &AwsCredentials,
    region: &str,
    body: &[u8],
) -> Result<(), WriteError> {
    sign_request_at(request, credentials, region, body, SystemTime::now())
}

/// [`sign_request`] at time `at`, so that a test can recompute a signature.
///
/// # Errors
/// As [`sign_request`].
pub fn sign_request_at(
    request: &mut reqwest::Request,
    credentials: &AwsCredentials,
    region: &str,
    body: &[u8],
    at: SystemTime,
) -> Result<(), WriteError> {
    let failed = |e: &dyn std::fmt::Display| {
        WriteError::Auth(format!(
            "cannot sign with the AWS credentials from {}: {e}",
            credentials.source
        ))
    };
    let identity: Identity = Credentials::new(
        &credentials.access_key_id,
        &credentials.secret_access_key,
        credentials.session_token.clone(),
        None,
        "rrguard",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("route53")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.url().as_str(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| failed(&e))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| failed(&e))?
        .into_parts();
    let mut add = Vec::new();
    for (name, value) in instructions.headers() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| failed(&e))?;
        let value = HeaderValue::from_str(value).map_err(|e| failed(&e))?;
        add.push((name, value));
    }
    for (name, value) in add {
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

/// Route 53's answers: throttling and server trouble are retried; a refused DELETE or CREATE is a
/// conflict; signature and permission errors are for an operator
/// (<https://docs.aws.amazon.com/Route53/latest/APIReference/CommonErrors.html>).
fn classify(reply: &Reply) -> Verdict {
    if reply.status.is_success() {
        return Verdict::Done;
    }
    let error = xml::parse_error(&reply.body).unwrap_or_else(|| ApiError {
        code: format!("HTTP {}", reply.status),
        messages: vec![api::snippet(&reply.body)]
            .into_iter()
            .filter(|m| !m.is_empty())
            .collect(),
    });
    let text = error.text();
    match error.code.as_str() {
        "Throttling"
        | "ThrottlingException"
        | "PriorRequestNotComplete"
        | "ServiceUnavailable"
        | "InternalFailure"
        | "RequestTimeout" => return Verdict::Retry(text),
        "InvalidChangeBatch" => {
            let conflict = error.messages.iter().any(|m| {
                m.contains("but it was not found")
                    || m.contains("values provided do not match")
                    || m.contains("but it already exists")
            });
            return Verdict::Fail(if conflict {
                WriteError::Conflict(text)
            } else {
                WriteError::Rejected(text)
            });
        }
        "AccessDenied"
        | "AccessDeniedException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredToken"
        | "UnrecognizedClientException"
        | "InvalidSignatureException" => {
            return Verdict::Fail(WriteError::Auth(format!(
                "{text} (check the access key, its secret and the clock; the key needs route53:ListResourceRecordSets and route53:ChangeResourceRecordSets on the zone)"
            )));
        }
        "RequestExpired" => {
            return Verdict::Fail(WriteError::Auth(format!(
                "{text} (the system clock is off by more than five minutes)"
            )));
        }
        "NoSuchHostedZone" => {
            return Verdict::Fail(WriteError::Rejected(format!(
                "{text} (check hosted_zone_id)"
            )));
        }
        _ => {}
    }
    if reply.status == StatusCode::BAD_REQUEST && error.code.contains("Throttl") {
        return Verdict::Retry(text);
    }
    api::classify_status(reply.status, text)
}

/// The batch entries that take family `f` of `change.fqdn` from what was read (a plain RRset `old`
/// and/or rrguard's weighted sets `old_weighted`) to the addresses `new`: weighted sets when the
/// change has weights, else one plain RRset. Every set that stays identical is pinned (DELETE as
/// read + CREATE the same) when anything else in the family changes, so a concurrent removal of it
/// by someone else refuses the batch and two writers can never empty the name between them.
fn weighted_changes(
    change: &RecordChange,
    f: Family,
    old: Option<&Rrset>,
    old_weighted: &BTreeMap<IpAddr, Weighted>,
    new: &BTreeSet<IpAddr>,
) -> Vec<Change> {
    let rtype = f.to_string();
    let set = |action, ip: &IpAddr, w: Weighted| Change {
        action,
        name: change.fqdn.clone(),
        rtype: rtype.clone(),
        ttl: w.ttl,
        values: vec![ip.to_string()],
        weighted: Some((set_identifier(ip), w.weight)),
    };
    let mut moves = Vec::new();
    let mut pins = Vec::new();
    if let Some(old) = old {
        moves.push(Change {
            action: Action::Delete,
            name: change.fqdn.clone(),
            rtype: rtype.clone(),
            ttl: old.ttl,
            values: old.values.clone(),
            weighted: None,
        });
    }
    if change.weights.is_empty() {
        for (ip, w) in old_weighted {
            moves.push(set(Action::Delete, ip, *w));
        }
        if !new.is_empty() {
            moves.push(Change {
                action: Action::Create,
                name: change.fqdn.clone(),
                rtype,
                ttl: change.ttl,
                values: new.iter().map(IpAddr::to_string).collect(),
                weighted: None,
            });
        }
        return moves;
    }
    let want: BTreeMap<IpAddr, Weighted> = new
        .iter()
        .map(|ip| {
            let weight = change
                .weights
                .get(ip)
                .or(old_weighted.get(ip).map(|w| &w.weight))
                .copied()
                .unwrap_or(crate::decide::select::DEFAULT_WEIGHT);
            (
                *ip,
                Weighted {
                    ttl: change.ttl,
                    weight,
                },
            )
        })
        .collect();
    for (ip, w) in old_weighted {
        if want.get(ip) == Some(w) {
            pins.push(set(Action::Delete, ip, *w));
            pins.push(set(Action::Create, ip, *w));
        } else {
            moves.push(set(Action::Delete, ip, *w));
        }
    }
    for (ip, w) in &want {
        if old_weighted.get(ip) != Some(w) {
            moves.push(set(Action::Create, ip, *w));
        }
    }
    if moves.is_empty() {
        return moves;
    }
    moves.extend(pins);
    moves
}

/// Addresses for messages: `{192.0.2.1, 192.0.2.2}` or `nothing`.
fn list(set: &BTreeSet<IpAddr>) -> String {
    if set.is_empty() {
        return "nothing".to_owned();
    }
    let items: Vec<String> = set.iter().map(IpAddr::to_string).collect();
    format!("{{{}}}", items.join(", "))
}

#[async_trait]
impl Writer for Route53Writer {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            compare_and_swap: true,
            read_back: self.config.wait_insync,
            batches: true,
            weighted: true,
            ..Capabilities::default()
        }
    }

    /// The changes go out as few ChangeResourceRecordSets requests as Route 53's limits allow
    /// ([`BATCH_CHANGES`] names per request), each all or nothing ([`Route53Writer::apply_all`]). A
    /// request refused for any reason but a transient one is sent again one change per request, so
    /// that one stale change does not fail its neighbours. At 5 requests a second per account, a mass
    /// failure of 500 names is a few requests instead of 100 seconds of them.
    async fn apply_batch(&self, changes: &[RecordChange]) -> Vec<Result<(), WriteError>> {
        let mut results = Vec::with_capacity(changes.len());
        for chunk in changes.chunks(BATCH_CHANGES) {
            let mut names = BTreeSet::new();
            let distinct = chunk
                .iter()
                .all(|c| names.insert(xml::normalize_name(&c.fqdn)));
            let together = if distinct && chunk.len() > 1 {
                Some(self.apply_all(chunk).await)
            } else {
                None
            };
            match together {
                Some(Ok(())) => results.extend(chunk.iter().map(|_| Ok(()))),
                Some(Err(e @ WriteError::Transient(_))) => {
                    results.extend(chunk.iter().map(|_| Err(e.clone())));
                }
                _ => {
                    for change in chunk {
                        results.push(self.apply(change).await);
                    }
                }
            }
        }
        results
    }

    async fn read(&self, fqdn: &str, _zone: &str) -> Result<Published, WriteError> {
        Ok(self.read_name(fqdn).await?.published())
    }

    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        self.apply_all(std::slice::from_ref(change)).await
    }
}
