//! The one table from a whole answer — rcode, TSIG error field, signed or not — to what the caller
//! should do ([`WriteError`] class) and what the operator reads.
//!
//! The rows follow what Knot 3.2 and BIND 9.18 were measured to send (`/work/shared/TESTING.md`):
//!
//! | TSIG record | TSIG error | rcode | class | meaning |
//! | --- | --- | --- | --- | --- |
//! | any | BADTIME | any | Auth | clocks differ beyond the fudge; the skew is shown |
//! | any | BADKEY | any | Auth | the server does not know key K with algorithm A (or its ACL does not allow it: Knot) |
//! | any | BADSIG | any | Auth | the server knows K but our MAC does not verify: the secret differs |
//!
//! (BADKEY and BADSIG messages both open with "rejected the TSIG signature", the wording operators
//! search the log for; the parenthesis tells them apart.)
//!
//! | TSIG record | TSIG error | rcode | class | meaning |
//! | --- | --- | --- | --- | --- |
//! | any | other | any | Auth | named by its code |
//! | does not verify | none | any | Auth | the server signs with another secret for K |
//! | verified | none | NOERROR | ok | |
//! | verified | none | NXDOMAIN | ok (read) / Conflict (update) | |
//! | verified | none | NXRRSET, YXRRSET, YXDOMAIN | Conflict | a prerequisite failed |
//! | either | none | NOTAUTH | Rejected | the server is not authoritative for zone X (Knot answers unsigned) |
//! | either | none | NOTZONE | Rejected | the name is not in zone X |
//! | either | none | REFUSED | Auth | the read, or the update, is not allowed for key K |
//! | either | none | FORMERR, NOTIMP | Rejected | the server does not take this request |
//! | either | none | SERVFAIL | Transient | server trouble (a secondary that cannot forward answers it unsigned) |
//! | unsigned | none | anything else | Auth | an answer we cannot authenticate is not used |
//! | verified | none | anything else | Transient | |
//!
//! A SERVFAIL caused by BIND's `max-records-per-type` cannot be told from the answer itself; the
//! writer, which knows how large the RRset would become, rewords it (see `super::Rfc2136Writer`).

use std::net::SocketAddr;

use hickory_net::proto::op::ResponseCode;
use hickory_net::proto::rr::rdata::tsig::TsigError;

use super::wire::{Answer, Signature};
use crate::act::WriteError;

/// What the request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A query (SOA, A, AAAA).
    Read,
    /// An UPDATE.
    Update,
}

/// Who asked what of whom, for the messages.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The server asked.
    pub server: SocketAddr,
    /// The writer's configured name.
    pub writer: &'a str,
    /// The TSIG key name.
    pub key: &'a str,
    /// The TSIG algorithm, as configured (`hmac-sha256`).
    pub algorithm: &'a str,
    /// The zone the request is for.
    pub zone: &'a str,
    /// The name read or written.
    pub fqdn: &'a str,
    /// What the request was.
    pub op: Op,
}

/// The standard mnemonic (RFC 2136 / RFC 8945 tables) that operators know from dig and server logs,
/// rather than hickory's prose ("RR Set does not exist").
pub fn rcode_name(code: ResponseCode) -> String {
    let name = match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        ResponseCode::BADSIG => "BADSIG",
        ResponseCode::BADKEY => "BADKEY",
        ResponseCode::BADTIME => "BADTIME",
        other => return format!("rcode {}", u16::from(other)),
    };
    name.to_owned()
}

/// Classifies a whole answer: `None` when it is a usable success, else what went wrong.
pub fn classify(ctx: &Context<'_>, answer: &Answer) -> Option<WriteError> {
    classify_parts(
        ctx,
        answer.message.metadata.response_code,
        &answer.signature,
        answer.our_time,
    )
}

/// [`classify`] on the parts of an answer; `our_time` is our clock when we signed (s since epoch).
pub fn classify_parts(
    ctx: &Context<'_>,
    rcode: ResponseCode,
    signature: &Signature,
    our_time: u64,
) -> Option<WriteError> {
    let what = match ctx.op {
        Op::Read => "query",
        Op::Update => "UPDATE",
    };
    if let Some(e) = tsig_failure(ctx, what, signature, our_time) {
        return Some(e);
    }
    rcode_class(
        ctx,
        what,
        rcode,
        matches!(signature, Signature::Verified { .. }),
    )
}

/// The first half of the table: the TSIG error field, then a signature that does not verify.
fn tsig_failure(
    ctx: &Context<'_>,
    what: &str,
    signature: &Signature,
    our_time: u64,
) -> Option<WriteError> {
    let Context {
        server,
        writer,
        key,
        algorithm,
        zone,
        ..
    } = *ctx;
    let tsig_error = match signature {
        Signature::Unsigned => None,
        Signature::Verified { error, .. } | Signature::Unverified { error, .. } => *error,
    };
    match tsig_error {
        Some(TsigError::BadTime) => {
            let server_time = match signature {
                Signature::Verified { server_time, .. } => Some(*server_time),
                _ => None,
            };
            let skew = match server_time {
                Some(t) => format!(
                    "the server's clock reads {t}, ours {our_time} (s since 1970): a skew of {:+} s",
                    t as i64 - our_time as i64
                ),
                None => "the server did not sign its clock reading".to_owned(),
            };
            return Some(WriteError::Auth(format!(
                "{server} rejected the {what} of writer {writer:?} as outside the TSIG time window (BADTIME, fudge 300 s): {skew}; synchronise the clocks of this host and the server (NTP)"
            )));
        }
        Some(TsigError::BadKey) => {
            return Some(WriteError::Auth(format!(
                "{server} rejected the TSIG signature of writer {writer:?} on its {what} (BADKEY: the server does not know key {key:?} with algorithm {algorithm}): check that key {key:?} is defined on the server with this name and algorithm, and allowed for zone {zone} (Knot also answers BADKEY when its ACL does not allow the key)"
            )));
        }
        Some(TsigError::BadSig) => {
            return Some(WriteError::Auth(format!(
                "{server} rejected the TSIG signature of writer {writer:?} on its {what} (BADSIG: the server knows key {key:?}, but our MAC does not verify): check that key {key:?}, its algorithm {algorithm} and its secret match the server's key"
            )));
        }
        Some(other) => {
            return Some(WriteError::Auth(format!(
                "{server} answered TSIG error {} to the {what} of writer {writer:?} with key {key:?} ({algorithm})",
                u16::from(other)
            )));
        }
        None => {}
    }
    if let Signature::Unverified { why, .. } = signature {
        return Some(WriteError::Auth(format!(
            "{server} signed its answer to writer {writer:?} with key {key:?}, but the signature does not verify with our secret ({why}): the secret (or algorithm {algorithm}) configured for the key differs from the server's"
        )));
    }
    None
}

/// The second half of the table: the rcode of an answer whose TSIG is in order (or absent).
fn rcode_class(
    ctx: &Context<'_>,
    what: &str,
    rcode: ResponseCode,
    signed: bool,
) -> Option<WriteError> {
    let Context {
        server,
        writer,
        key,
        algorithm,
        zone,
        fqdn,
        op,
    } = *ctx;
    let name = rcode_name(rcode);
    match rcode {
        ResponseCode::NoError if signed => None,
        ResponseCode::NXDomain if signed && op == Op::Read => None,
        ResponseCode::NXRRSet
        | ResponseCode::YXRRSet
        | ResponseCode::NXDomain
        | ResponseCode::YXDomain
            if signed =>
        {
            Some(WriteError::Conflict(format!("{server} answered {name}")))
        }
        ResponseCode::NotAuth => Some(WriteError::Rejected(format!(
            "{server} answered NOTAUTH{}: the server is not authoritative for zone {zone}: point writer {writer:?} at a primary of {zone}, or set the service's zone to a zone this server serves",
            if signed { "" } else { " (unsigned)" }
        ))),
        ResponseCode::NotZone => Some(WriteError::Rejected(format!(
            "{server} answered NOTZONE: {fqdn} is not in zone {zone}: set the service's zone to the zone that holds {fqdn}"
        ))),
        ResponseCode::Refused => Some(WriteError::Auth(match op {
            Op::Read => format!(
                "{server} refused the query for {fqdn} signed with key {key:?} (REFUSED): it serves no zone holding {fqdn} (point writer {writer:?} at a primary of {zone}), or it does not allow queries with this key (BIND: allow-query, or a view whose match-clients names the key)"
            ),
            Op::Update => format!(
                "{server} refused the UPDATE of writer {writer:?} (REFUSED): allow updates from key {key:?} in the server's configuration of zone {zone} (Knot: acl with action update; BIND: allow-update or update-policy)"
            ),
        })),
        ResponseCode::FormErr | ResponseCode::NotImp => Some(WriteError::Rejected(format!(
            "{server} answered {name} to the {what} of writer {writer:?}: the server does not take this request for zone {zone}; check that it is a primary (or forwards UPDATEs) for that zone"
        ))),
        ResponseCode::ServFail => Some(WriteError::Transient(format!(
            "{server} answered SERVFAIL{} to the {what} for {fqdn}",
            if signed {
                ""
            } else {
                " (unsigned; a secondary that cannot reach its primary answers so)"
            }
        ))),
        _ if !signed => Some(WriteError::Auth(format!(
            "{server} answered {name} to the {what} of writer {writer:?} without a TSIG signature, so the answer cannot be trusted: define key {key:?} ({algorithm}) on the server"
        ))),
        _ => Some(WriteError::Transient(format!("{server} answered {name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(op: Op) -> Context<'static> {
        Context {
            server: "127.0.0.1:53".parse().unwrap(),
            writer: "primary",
            key: "upd-key.",
            algorithm: "hmac-sha256",
            zone: "example.test.",
            fqdn: "www.example.test.",
            op,
        }
    }

    fn verified(error: Option<TsigError>, server_time: u64) -> Signature {
        Signature::Verified { error, server_time }
    }

    fn row(op: Op, rcode: ResponseCode, sig: Signature) -> Option<WriteError> {
        classify_parts(&ctx(op), rcode, &sig, 1_000_000)
    }

    #[test]
    fn signed_noerror_is_success_and_nxdomain_only_for_reads() {
        let ok = verified(None, 1_000_000);
        assert_eq!(row(Op::Update, ResponseCode::NoError, ok.clone()), None);
        assert_eq!(row(Op::Read, ResponseCode::NXDomain, ok.clone()), None);
        assert!(matches!(
            row(Op::Update, ResponseCode::NXDomain, ok),
            Some(WriteError::Conflict(_))
        ));
    }

    #[test]
    fn signed_prerequisite_failures_are_conflicts() {
        for code in [ResponseCode::NXRRSet, ResponseCode::YXRRSet] {
            let e = row(Op::Update, code, verified(None, 1_000_000));
            assert!(
                matches!(e, Some(WriteError::Conflict(ref m)) if m.contains(&rcode_name(code)))
            );
        }
    }

    #[test]
    fn unsigned_servfail_is_transient() {
        let e = row(Op::Update, ResponseCode::ServFail, Signature::Unsigned).unwrap();
        assert!(
            matches!(e, WriteError::Transient(ref m) if m.contains("unsigned")),
            "{e:?}"
        );
        assert!(!e.needs_operator());
    }

    #[test]
    fn unsigned_notauth_names_the_zone() {
        let e = row(Op::Update, ResponseCode::NotAuth, Signature::Unsigned).unwrap();
        assert!(
            matches!(e, WriteError::Rejected(ref m)
                if m.contains("not authoritative for zone example.test.") && !m.contains("signature")),
            "{e:?}"
        );
    }

    #[test]
    fn badtime_shows_the_skew_and_says_to_synchronise() {
        let e = row(
            Op::Update,
            ResponseCode::NotAuth,
            verified(Some(TsigError::BadTime), 1_000_000 - 310),
        )
        .unwrap();
        let WriteError::Auth(m) = e else {
            panic!("{e:?}")
        };
        assert!(m.contains("BADTIME") && m.contains("-310 s") && m.contains("synchronise"));
    }

    #[test]
    fn badkey_and_badsig_are_told_apart_and_name_key_and_algorithm() {
        let unsigned = |error| Signature::Unverified {
            error: Some(error),
            why: "empty MAC".to_owned(),
        };
        let key = row(
            Op::Update,
            ResponseCode::NotAuth,
            unsigned(TsigError::BadKey),
        )
        .unwrap();
        let sig = row(
            Op::Update,
            ResponseCode::NotAuth,
            unsigned(TsigError::BadSig),
        )
        .unwrap();
        for (e, word) in [(&key, "BADKEY"), (&sig, "BADSIG")] {
            let WriteError::Auth(m) = e else {
                panic!("{e:?}")
            };
            assert!(m.contains(word) && m.contains("\"upd-key.\"") && m.contains("hmac-sha256"));
        }
        assert_ne!(key, sig);
        assert!(format!("{key}").contains("does not know"));
        assert!(
            format!("{sig}").contains("MAC does not verify") && format!("{sig}").contains("secret")
        );
    }

    #[test]
    fn a_signature_that_does_not_verify_is_an_auth_error() {
        let e = row(
            Op::Read,
            ResponseCode::NoError,
            Signature::Unverified {
                error: None,
                why: "bad MAC".to_owned(),
            },
        );
        assert!(matches!(e, Some(WriteError::Auth(ref m)) if m.contains("does not verify")));
    }

    #[test]
    fn an_unsigned_success_is_not_trusted() {
        let e = row(Op::Read, ResponseCode::NoError, Signature::Unsigned);
        assert!(matches!(e, Some(WriteError::Auth(ref m)) if m.contains("without a TSIG")));
    }

    #[test]
    fn a_refused_read_is_worded_as_a_refused_read() {
        let read = row(Op::Read, ResponseCode::Refused, verified(None, 1_000_000)).unwrap();
        assert!(
            matches!(read, WriteError::Auth(ref m) if m.contains("refused the query") && !m.contains("allow updates")),
            "{read:?}"
        );
        let update = row(Op::Update, ResponseCode::Refused, Signature::Unsigned).unwrap();
        assert!(matches!(update, WriteError::Auth(ref m) if m.contains("allow updates")));
    }

    #[test]
    fn notzone_and_formerr_are_rejected() {
        for code in [
            ResponseCode::NotZone,
            ResponseCode::FormErr,
            ResponseCode::NotImp,
        ] {
            assert!(matches!(
                row(Op::Update, code, verified(None, 1_000_000)),
                Some(WriteError::Rejected(_))
            ));
        }
    }

    #[test]
    fn rcodes_use_standard_mnemonics() {
        assert_eq!(rcode_name(ResponseCode::NXRRSet), "NXRRSET");
        assert_eq!(rcode_name(ResponseCode::NotZone), "NOTZONE");
        assert_eq!(rcode_name(ResponseCode::Unknown(3841)), "rcode 3841");
    }
}
