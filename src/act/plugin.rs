//! The plug-in protocol shared by the `script` and `webhook` writers: the JSON document rrguard sends
//! for each operation ([`Request`]), the replies it accepts ([`parse_read_reply`],
//! [`check_apply_reply`]) and how an exit code or an HTTP status is classified ([`Outcome`],
//! [`error_for`]).
//!
//! The schema is a user contract, documented in `docs/writers.md` ("script" and "webhook"), and
//! versioned by [`PROTOCOL_VERSION`]: fields may be added to requests within a version, never
//! removed or changed in meaning; replies may carry fields rrguard does not know, which it ignores.
//!
//! A request is one JSON object:
//! `{"version":1,"operation":"read"|"apply","writer":NAME,"fqdn":"www.example.com.","zone":"example.com."}`,
//! and for `apply` also `ttl`, `precondition`, `add`, `remove`, `rettl`, `expected`, `families` and
//! `desired` ([`ApplyFields`]). Addresses are strings in their canonical text form (RFC 5952 for IPv6), sorted,
//! IPv4 first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Precondition, Published, RecordChange, WriteError};
use crate::config::normalize_name;

/// The `version` of the documents this rrguard sends and understands.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest reply accepted (stdout of a script, body of a webhook response), bytes. A larger one is an
/// error, never buffered whole.
pub const MAX_REPLY_BYTES: usize = 1 << 20;
/// How much of a reply or of a script's stderr an error message quotes, characters.
const EXCERPT_CHARS: usize = 300;

/// What the plug-in is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Report what the name publishes.
    Read,
    /// Change the name's A/AAAA records.
    Apply,
}

impl Operation {
    /// The operation's spelling in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Apply => "apply",
        }
    }
}

/// The document sent for one operation (stdin of a script, body of a webhook POST).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request<'a> {
    /// Always [`PROTOCOL_VERSION`].
    pub version: u32,
    /// `read` or `apply`.
    pub operation: Operation,
    /// The writer's configured name.
    pub writer: &'a str,
    /// The name, fully qualified with a trailing dot, lower case.
    pub fqdn: &'a str,
    /// Its zone apex, with a trailing dot.
    pub zone: &'a str,
    /// The change, for `apply` only.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub apply: Option<ApplyFields>,
}

/// The fields of an `apply` request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApplyFields {
    /// TTL (s) of added and re-TTLed records, and of every RRset (A, AAAA) the change touches.
    pub ttl: u32,
    /// What must hold for the change to apply; a plug-in declared with `compare_and_swap = true`
    /// checks it atomically with the change and exits 4 / answers 409 when it does not hold.
    /// `rrset_equals` is compared per RRset the change touches (`families`), as RFC 2136 §2.4.2
    /// prerequisites pin one RRset each: the AAAA records do not matter to a change of A records.
    pub precondition: PreconditionDoc,
    /// Addresses to add, with `ttl`.
    pub add: Vec<IpAddr>,
    /// Addresses to remove.
    pub remove: Vec<IpAddr>,
    /// Addresses kept whose TTL becomes `ttl`.
    pub rettl: Vec<IpAddr>,
    /// The A and AAAA addresses the change was planned against: those of `rrset_equals`, or none for
    /// `name_not_in_use`.
    pub expected: Vec<IpAddr>,
    /// The RRsets the change touches, `"A"` and/or `"AAAA"`; the others are left alone.
    pub families: Vec<String>,
    /// The complete contents of the RRsets of `families` after the change, if the precondition holds:
    /// `expected` minus `remove` plus `add`, in those families only, each with `ttl` (an RRset has
    /// one TTL, RFC 2181 §5.2). A family of `families` without a record here is to be deleted. A
    /// plug-in that checks the precondition can simply replace those RRsets with this.
    pub desired: Vec<DesiredRecord>,
}

/// `{"rrset_equals":[…]}` or `{"name_not_in_use":true}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PreconditionDoc {
    /// The A and AAAA addresses at the name are exactly these (TTLs not compared).
    RrsetEquals {
        /// The addresses.
        rrset_equals: Vec<IpAddr>,
    },
    /// Nothing of any type exists at the name.
    NameNotInUse {
        /// Always `true`.
        name_not_in_use: bool,
    },
}

/// One record of [`ApplyFields::desired`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredRecord {
    /// The address.
    pub address: IpAddr,
    /// Its TTL (s): the change's.
    pub ttl: u32,
}

impl<'a> Request<'a> {
    /// The `read` request for `fqdn` in `zone`.
    pub fn read(writer: &'a str, fqdn: &'a str, zone: &'a str) -> Self {
        Request {
            version: PROTOCOL_VERSION,
            operation: Operation::Read,
            writer,
            fqdn,
            zone,
            apply: None,
        }
    }

    /// The `apply` request for `change`.
    pub fn apply(writer: &'a str, change: &'a RecordChange) -> Self {
        let expected = match &change.precondition {
            Precondition::RrsetEquals(set) => set.clone(),
            Precondition::NameNotInUse => BTreeSet::new(),
        };
        let precondition = match &change.precondition {
            Precondition::RrsetEquals(set) => PreconditionDoc::RrsetEquals {
                rrset_equals: set.iter().copied().collect(),
            },
            Precondition::NameNotInUse => PreconditionDoc::NameNotInUse {
                name_not_in_use: true,
            },
        };
        let families = change.families();
        let desired = expected
            .difference(&change.remove)
            .chain(&change.add)
            .filter(|ip| families.contains(&super::Family::of(ip)))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|ip| DesiredRecord {
                address: *ip,
                ttl: change.ttl,
            })
            .collect();
        Request {
            version: PROTOCOL_VERSION,
            operation: Operation::Apply,
            writer,
            fqdn: &change.fqdn,
            zone: &change.zone,
            apply: Some(ApplyFields {
                ttl: change.ttl,
                precondition,
                add: change.add.iter().copied().collect(),
                remove: change.remove.iter().copied().collect(),
                rettl: change.rettl.iter().copied().collect(),
                expected: expected.into_iter().collect(),
                families: families.iter().map(ToString::to_string).collect(),
                desired,
            }),
        }
    }

    /// The document as JSON bytes, one line with a trailing newline (what a line-reading script
    /// expects).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and addresses cannot fail.
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

/// The reply to `read`, as written.
#[derive(Debug, Deserialize)]
struct ReadReply {
    records: Vec<ReplyRecord>,
    #[serde(default)]
    cname: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReplyRecord {
    address: IpAddr,
    ttl: u32,
}

/// The reply to `read`: `{"records":[{"address":"192.0.2.1","ttl":30}],"cname":null}`. `cname` may be
/// left out; unknown fields are ignored.
///
/// # Errors
/// What is wrong with the reply, quoting its start (the caller makes it a [`WriteError::Rejected`]:
/// a plug-in that answers something else needs fixing).
pub fn parse_read_reply(body: &[u8]) -> Result<Published, String> {
    let reply: ReadReply = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the reply is not the documented read reply {{\"records\":[{{\"address\":\"192.0.2.1\",\"ttl\":30}}],\"cname\":null}} ({e}); it starts {}",
            excerpt(body)
        )
    })?;
    let mut records = BTreeMap::new();
    for r in reply.records {
        if let Some(other) = records.insert(r.address, r.ttl)
            && other != r.ttl
        {
            return Err(format!(
                "the reply lists {} twice, with TTLs {other} and {}",
                r.address, r.ttl
            ));
        }
    }
    let cname = match reply.cname.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(target) => Some(
            normalize_name(target)
                .map_err(|e| format!("the reply's cname {target:?} is not a DNS name: {e}"))?,
        ),
    };
    Ok(Published {
        records,
        cname,
        weights: Default::default(),
    })
}

/// The reply to `apply`: nothing (only white space) or a JSON object, whatever it holds.
///
/// # Errors
/// What is wrong, quoting the reply's start.
pub fn check_apply_reply(body: &[u8]) -> Result<(), String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(format!(
            "the reply to apply must be empty or a JSON object like {{}}, but it starts {}",
            excerpt(body)
        )),
    }
}

/// What a plug-in's answer means: a script's exit code, a webhook's HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 0: done.
    Ok,
    /// 1, any other code, or killed by a signal: try again later.
    Transient,
    /// 2: the request was refused (malformed, out of zone, impossible).
    Rejected,
    /// 3: the back end refused the script's credentials or permission.
    Auth,
    /// 4: the precondition did not hold; nothing was changed.
    Conflict,
}

impl Outcome {
    /// The meaning of a script's exit code `code` (`None`: killed by a signal).
    pub fn of_exit(code: Option<i32>) -> Self {
        match code {
            Some(0) => Outcome::Ok,
            Some(2) => Outcome::Rejected,
            Some(3) => Outcome::Auth,
            Some(4) => Outcome::Conflict,
            _ => Outcome::Transient,
        }
    }

    /// The meaning of a webhook's HTTP status: 2xx done; 409 conflict; 401/403 authentication;
    /// 408, 429 and 5xx transient; any other (400, 404, 422, a redirect, …) rejected: the request or
    /// the URL needs fixing.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=299 => Outcome::Ok,
            409 => Outcome::Conflict,
            401 | 403 => Outcome::Auth,
            408 | 429 | 500..=599 => Outcome::Transient,
            _ => Outcome::Rejected,
        }
    }

    /// A word for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Transient => "transient failure, retried",
            Outcome::Rejected => "rejected",
            Outcome::Auth => "authentication failed",
            Outcome::Conflict => "precondition failed",
        }
    }
}

/// The error for a failed operation whose outcome is `meaning` (not [`Outcome::Ok`]); `message`
/// says what happened. A conflict on a `read` makes no sense and is taken as transient.
pub fn error_for(meaning: Outcome, operation: Operation, message: String) -> WriteError {
    match (meaning, operation) {
        (Outcome::Rejected, _) => WriteError::Rejected(message),
        (Outcome::Auth, _) => WriteError::Auth(message),
        (Outcome::Conflict, Operation::Apply) => WriteError::Conflict(message),
        _ => WriteError::Transient(message),
    }
}

/// The start of `bytes` for a message: quoted, control characters escaped, at most
/// [`EXCERPT_CHARS`] characters, "(empty)" when there is nothing.
pub fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return "(empty)".to_owned();
    }
    let cut: String = text.chars().take(EXCERPT_CHARS).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    format!("{cut:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn apply_document_has_the_documented_shape() {
        let change = RecordChange {
            fqdn: "www.example.com.".to_owned(),
            zone: "example.com.".to_owned(),
            ttl: 30,
            precondition: Precondition::RrsetEquals(ips(&[
                "192.0.2.1",
                "192.0.2.2",
                "2001:db8::1",
            ])),
            add: ips(&["192.0.2.3"]),
            remove: ips(&["192.0.2.1"]),
            rettl: ips(&["192.0.2.2"]),
            weights: Default::default(),
        };
        let doc: serde_json::Value =
            serde_json::from_slice(&Request::apply("hook", &change).to_json()).unwrap();
        let want = serde_json::json!({
            "version": 1, "operation": "apply", "writer": "hook",
            "fqdn": "www.example.com.", "zone": "example.com.", "ttl": 30,
            "precondition": {"rrset_equals": ["192.0.2.1", "192.0.2.2", "2001:db8::1"]},
            "add": ["192.0.2.3"], "remove": ["192.0.2.1"], "rettl": ["192.0.2.2"],
            "expected": ["192.0.2.1", "192.0.2.2", "2001:db8::1"],
            "families": ["A"],
            "desired": [
                {"address": "192.0.2.2", "ttl": 30},
                {"address": "192.0.2.3", "ttl": 30},
            ],
        });
        assert_eq!(doc, want);
    }

    #[test]
    fn read_and_name_not_in_use_documents() {
        let read: serde_json::Value =
            serde_json::from_slice(&Request::read("s", "a.example.", "example.").to_json())
                .unwrap();
        assert_eq!(
            read,
            serde_json::json!({"version": 1, "operation": "read", "writer": "s", "fqdn": "a.example.", "zone": "example."})
        );
        let change = RecordChange {
            fqdn: "a.example.".to_owned(),
            zone: "example.".to_owned(),
            ttl: 60,
            precondition: Precondition::NameNotInUse,
            add: ips(&["::1"]),
            remove: BTreeSet::new(),
            rettl: BTreeSet::new(),
            weights: Default::default(),
        };
        let doc: serde_json::Value =
            serde_json::from_slice(&Request::apply("s", &change).to_json()).unwrap();
        assert_eq!(
            doc["precondition"],
            serde_json::json!({"name_not_in_use": true})
        );
        assert_eq!(doc["expected"], serde_json::json!([]));
        assert_eq!(doc["families"], serde_json::json!(["AAAA"]));
        assert_eq!(
            doc["desired"],
            serde_json::json!([{"address": "::1", "ttl": 60}])
        );
    }

    #[test]
    fn read_replies() {
        let p = parse_read_reply(
            br#"{"records":[{"address":"192.0.2.1","ttl":30},{"address":"2001:DB8::1","ttl":60}],"extra":1}"#,
        )
        .unwrap();
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.records[&"2001:db8::1".parse::<IpAddr>().unwrap()], 60);
        assert_eq!(p.cname, None);
        let alias = parse_read_reply(br#"{"records":[],"cname":"LB.example.com"}"#).unwrap();
        assert_eq!(alias.cname.as_deref(), Some("lb.example.com."));
        for (bad, says) in [
            (&b"hello"[..], "not the documented read reply"),
            (b"{}", "missing field `records`"),
            (
                br#"{"records":[{"address":"300.1.1.1","ttl":1}]}"#,
                "invalid IP address",
            ),
            (
                br#"{"records":[{"address":"192.0.2.1","ttl":-1}]}"#,
                "invalid value",
            ),
            (
                br#"{"records":[{"address":"192.0.2.1","ttl":1},{"address":"192.0.2.1","ttl":2}]}"#,
                "192.0.2.1 twice",
            ),
            (br#"{"records":[],"cname":"a..b"}"#, "not a DNS name"),
        ] {
            let e = parse_read_reply(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn apply_replies() {
        for ok in [&b""[..], b" \n", b"{}", br#"{"note":"done"}"#] {
            check_apply_reply(ok).unwrap();
        }
        for bad in [&b"done"[..], b"[]", b"true"] {
            assert!(
                check_apply_reply(bad)
                    .unwrap_err()
                    .contains("empty or a JSON object")
            );
        }
    }

    #[test]
    fn classification() {
        let kinds = |m| match error_for(m, Operation::Apply, String::new()) {
            WriteError::Conflict(_) => "conflict",
            WriteError::Transient(_) => "transient",
            WriteError::Auth(_) => "auth",
            WriteError::Rejected(_) => "rejected",
        };
        assert_eq!(Outcome::of_exit(Some(0)), Outcome::Ok);
        for (code, want) in [
            (Some(1), "transient"),
            (Some(2), "rejected"),
            (Some(3), "auth"),
            (Some(4), "conflict"),
            (Some(5), "transient"),
            (Some(127), "transient"),
            (None, "transient"),
        ] {
            assert_eq!(kinds(Outcome::of_exit(code)), want, "{code:?}");
        }
        for (status, want) in [
            (400, "rejected"),
            (401, "auth"),
            (403, "auth"),
            (404, "rejected"),
            (408, "transient"),
            (409, "conflict"),
            (422, "rejected"),
            (429, "transient"),
            (500, "transient"),
            (503, "transient"),
            (301, "rejected"),
        ] {
            assert_eq!(kinds(Outcome::of_status(status)), want, "{status}");
        }
        assert!(matches!(
            error_for(Outcome::Conflict, Operation::Read, String::new()),
            WriteError::Transient(_)
        ));
    }

    #[test]
    fn excerpts_are_bounded_and_quoted() {
        assert_eq!(excerpt(b"  "), "(empty)");
        assert_eq!(excerpt(b"a\nb"), "\"a\\nb\"");
        let long = excerpt(&[b'x'; 5000]);
        assert!(long.len() < 400 && long.ends_with('…'), "{long}");
    }
}
