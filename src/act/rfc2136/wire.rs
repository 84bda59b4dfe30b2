//! One signed DNS exchange over TCP, done by hand so that nothing about the answer is hidden.
//!
//! hickory's multiplexer verifies a signed answer before it hands it over, and an answer it cannot
//! verify (the unsigned NOTAUTH Knot sends for a zone it does not serve, an unsigned SERVFAIL from a
//! secondary, a BADKEY/BADSIG answer with an empty MAC) reaches the caller as one opaque error. Here
//! the request is signed with [`TSigner`], its encoded size is checked *after* signing (hickory can emit
//! a message whose TSIG record did not fit: truncated, TC set and unsigned), it is sent over a fresh TCP
//! connection, and the answer is decoded whole: its rcode, whether it carries a TSIG record, whether
//! that record verifies with our key, its TSIG error field and the server's time. [`super::classify`]
//! turns that into a [`super::WriteError`].

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_net::proto::op::Message;
use hickory_net::proto::rr::TSigner;
use hickory_net::proto::rr::rdata::tsig::TsigError;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The largest DNS message over TCP (RFC 1035 §4.2.2: a two-octet length prefix).
pub const MAX_MESSAGE: usize = 65_535;

/// Why a request never produced an answer to classify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The request does not fit in one DNS message once signed (or not at all): `bytes` is its
    /// encoded size when known. Nothing was sent.
    TooLarge {
        /// Encoded size, when hickory could encode it at all.
        bytes: Option<usize>,
        /// hickory's reason when encoding failed.
        why: String,
    },
    /// Connecting, sending or receiving failed, or timed out.
    Network(String),
    /// The answer did not decode, or did not answer our request.
    Garbled(String),
}

/// The TSIG record of an answer, as far as classification needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// The answer carries no TSIG record.
    Unsigned,
    /// It carries one whose MAC verifies with our key (and whose time is within the fudge of ours,
    /// unless the error field says BADTIME).
    Verified {
        /// The TSIG error field.
        error: Option<TsigError>,
        /// The server's clock (seconds since the epoch): the other-data of a BADTIME answer, else the
        /// time signed.
        server_time: u64,
    },
    /// It carries one that does not verify: an empty MAC (BADKEY, BADSIG answers are unsigned by
    /// RFC 8945 §5.3.2), another key, or a MAC that does not match.
    Unverified {
        /// The TSIG error field.
        error: Option<TsigError>,
        /// Why it does not verify.
        why: String,
    },
}

/// A decoded answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The message, TSIG record included.
    pub message: Message,
    /// What its TSIG record says.
    pub signature: Signature,
    /// Our clock when the request was signed (seconds since the epoch).
    pub our_time: u64,
}

/// Seconds since the epoch, by the wall clock (TSIG is defined on it).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// Signs `message` with `signer` at `time` and encodes it.
///
/// # Errors
/// [`SendError::TooLarge`] when the message cannot be encoded, or its TSIG record did not fit and
/// hickory truncated it (TC set, record count short): such a message must never leave.
pub fn sign_and_encode(
    mut message: Message,
    signer: &TSigner,
    time: u64,
) -> Result<(Vec<u8>, Vec<u8>), SendError> {
    message
        .finalize(signer, time)
        .map_err(|e| SendError::TooLarge {
            bytes: None,
            why: e.to_string(),
        })?;
    let mac = message
        .signature()
        .map(|s| s.data.mac.clone())
        .unwrap_or_default();
    let expected_additionals = message.additionals.len() + usize::from(message.edns.is_some()) + 1;
    let bytes = message.to_vec().map_err(|e| SendError::TooLarge {
        bytes: None,
        why: e.to_string(),
    })?;
    let truncated = bytes.get(2).is_some_and(|flags| flags & 0x02 != 0);
    let additionals = bytes
        .get(10..12)
        .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
    if truncated || additionals != expected_additionals || bytes.len() > MAX_MESSAGE {
        return Err(SendError::TooLarge {
            bytes: Some(bytes.len()),
            why: "the TSIG record did not fit".to_owned(),
        });
    }
    Ok((bytes, mac))
}

/// Decodes `bytes`, the answer to a request with id `id` signed with MAC `request_mac`, and checks its
/// TSIG record against `signer` at our time `now`.
///
/// # Errors
/// [`SendError::Garbled`] when it does not decode or answers another id.
pub fn decode_answer(
    bytes: &[u8],
    id: u16,
    request_mac: &[u8],
    signer: &TSigner,
    now: u64,
) -> Result<Answer, SendError> {
    let message = Message::from_vec(bytes)
        .map_err(|e| SendError::Garbled(format!("the answer does not decode: {e}")))?;
    if message.metadata.id != id {
        return Err(SendError::Garbled(format!(
            "the answer has id {}, the request {id}",
            message.metadata.id
        )));
    }
    let signature = match message.signature() {
        None => Signature::Unsigned,
        Some(record) => {
            let tsig = &record.data;
            let error = tsig.error;
            match signer.verify_message_byte(bytes, Some(request_mac), true) {
                Err(e) => Signature::Unverified {
                    error,
                    why: e.to_string(),
                },
                Ok((_, time, range)) => {
                    if error == Some(TsigError::BadTime) {
                        Signature::Verified {
                            error,
                            server_time: other_time(&tsig.other).unwrap_or(time),
                        }
                    } else if range.contains(&now) {
                        Signature::Verified {
                            error,
                            server_time: time,
                        }
                    } else {
                        // RFC 8945 §5.2.3 applies to answers too: our clock is off by more than the
                        // fudge. Told like the server's BADTIME.
                        Signature::Verified {
                            error: Some(TsigError::BadTime),
                            server_time: time,
                        }
                    }
                }
            }
        }
    };
    Ok(Answer {
        message,
        signature,
        our_time: now,
    })
}

/// The 48-bit time in a BADTIME answer's other-data (RFC 8945 §5.2.3).
fn other_time(other: &[u8]) -> Option<u64> {
    let b: [u8; 6] = other.try_into().ok()?;
    Some(b.iter().fold(0u64, |t, byte| (t << 8) | u64::from(*byte)))
}

/// Signs `message`, sends it to `server` over a fresh TCP connection and returns the decoded answer.
///
/// # Errors
/// [`SendError`]: nothing to classify (too large, network, garbled answer).
pub async fn exchange(
    server: SocketAddr,
    message: Message,
    signer: &TSigner,
    timeout: Duration,
) -> Result<Answer, SendError> {
    let id = message.metadata.id;
    let now = now_secs();
    let (bytes, mac) = sign_and_encode(message, signer, now)?;
    let answer = tokio::time::timeout(timeout * 2, async {
        let mut stream = tokio::time::timeout(timeout, TcpStream::connect(server))
            .await
            .map_err(|_| SendError::Network(format!("connecting to {server} timed out")))?
            .map_err(|e| SendError::Network(format!("cannot connect to {server}: {e}")))?;
        let io = |e: std::io::Error| SendError::Network(format!("{server}: {e}"));
        let len = u16::try_from(bytes.len()).expect("checked by sign_and_encode");
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await.map_err(io)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.map_err(|e| {
            SendError::Network(format!(
                "{server}: connection closed without an answer ({e})"
            ))
        })?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await.map_err(io)?;
        Ok::<_, SendError>(answer)
    })
    .await
    .map_err(|_| SendError::Network(format!("{server}: no answer within {timeout:?}")))??;
    decode_answer(&answer, id, &mac, signer, now_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_net::proto::op::{MessageType, OpCode, Query, ResponseCode, UpdateMessage};
    use hickory_net::proto::rr::rdata::A;
    use hickory_net::proto::rr::rdata::tsig::{TSIG, TsigAlgorithm, make_tsig_record};
    use hickory_net::proto::rr::{DNSClass, Name, RData, Record, RecordType};
    use std::net::Ipv4Addr;
    use std::str::FromStr;

    fn signer(algorithm: TsigAlgorithm) -> TSigner {
        TSigner::new(
            vec![7; 32],
            algorithm,
            Name::from_str("upd-key.").unwrap(),
            300,
        )
        .unwrap()
    }

    /// An UPDATE adding `n` A records at www.example.test.
    fn update(n: u32) -> Message {
        let mut m = Message::new(4242, MessageType::Query, OpCode::Update);
        let mut zq = Query::new();
        zq.set_name(Name::from_str("example.test.").unwrap())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        m.add_zone(zq);
        let www = Name::from_str("www.example.test.").unwrap();
        for i in 0..n {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            m.add_update(Record::from_rdata(www.clone(), 30, RData::A(A(ip))));
        }
        m
    }

    /// Around the 64 KiB boundary every UPDATE either encodes whole and signed, or is refused before
    /// sending: never truncated, never unsigned.
    fn boundary(algorithm: TsigAlgorithm) {
        let signer = signer(algorithm);
        let (mut sent, mut refused) = (0, 0);
        // 120 compressed names, then 32 bytes per A: the unsigned message stops fitting at `last`
        // (hickory then drops records and sets TC instead of failing).
        let whole = |n: u32| update(n).to_vec().is_ok_and(|b| b[2] & 0x02 == 0);
        let last = (1_900..2_200).take_while(|n| whole(*n)).last().unwrap();
        let around = last - 40..last + 2;
        for n in around.clone() {
            match sign_and_encode(update(n), &signer, 1_700_000_000) {
                Ok((bytes, mac)) => {
                    sent += 1;
                    assert!(bytes.len() <= MAX_MESSAGE);
                    assert_eq!(bytes[2] & 0x02, 0, "TC set at {n} records");
                    let (verified_mac, _, _) = signer
                        .verify_message_byte(&bytes, None, true)
                        .unwrap_or_else(|e| panic!("{n} records: not verifiable: {e}"));
                    assert_eq!(verified_mac, mac);
                }
                Err(SendError::TooLarge { .. }) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(sent > 0 && refused > 0, "sent {sent}, refused {refused}");
        // The case hickory gets wrong: the records fit, the TSIG record does not.
        let squeezed = around
            .clone()
            .find(|n| whole(*n) && sign_and_encode(update(*n), &signer, 1_700_000_000).is_err());
        assert!(squeezed.is_some(), "no count where only TSIG overflows");
    }

    #[test]
    fn signed_size_boundary_hmac_sha256() {
        boundary(TsigAlgorithm::HmacSha256);
    }

    #[test]
    fn signed_size_boundary_hmac_sha512() {
        boundary(TsigAlgorithm::HmacSha512);
    }

    /// A server answer to `request_mac`, signed by `signer` unless `mac_empty`, with `error` and
    /// `other` in its TSIG record.
    fn answer(
        signer: &TSigner,
        request_mac: &[u8],
        error: Option<TsigError>,
        server_time: u64,
        other: Vec<u8>,
        mac_empty: bool,
    ) -> Vec<u8> {
        let mut resp = Message::new(4242, MessageType::Response, OpCode::Update);
        resp.metadata.response_code = ResponseCode::NotAuth;
        let stub = TSIG::new(
            signer.algorithm().clone(),
            server_time,
            300,
            Vec::new(),
            4242,
            error,
            other,
        );
        let mac = if mac_empty {
            Vec::new()
        } else {
            let tbs = signer
                .encode_response_tbs(request_mac, &resp.to_vec().unwrap(), &stub)
                .unwrap();
            signer.sign(&tbs).unwrap()
        };
        resp.set_signature(Box::new(make_tsig_record(
            signer.signer_name().clone(),
            stub.set_mac(mac),
        )));
        resp.to_vec().unwrap()
    }

    #[test]
    fn badtime_answer_carries_the_server_clock() {
        let signer = signer(TsigAlgorithm::HmacSha256);
        let ours = 1_700_000_000;
        let (_, mac) = sign_and_encode(update(1), &signer, ours).unwrap();
        let server = ours + 310;
        let other = server.to_be_bytes()[2..].to_vec();
        let bytes = answer(&signer, &mac, Some(TsigError::BadTime), ours, other, false);
        let got = decode_answer(&bytes, 4242, &mac, &signer, ours).unwrap();
        assert_eq!(
            got.signature,
            Signature::Verified {
                error: Some(TsigError::BadTime),
                server_time: server
            }
        );
    }

    #[test]
    fn badkey_answer_with_an_empty_mac_is_unverified_with_its_error() {
        let signer = signer(TsigAlgorithm::HmacSha256);
        let (_, mac) = sign_and_encode(update(1), &signer, 1_700_000_000).unwrap();
        let bytes = answer(
            &signer,
            &mac,
            Some(TsigError::BadKey),
            1_700_000_000,
            Vec::new(),
            true,
        );
        let got = decode_answer(&bytes, 4242, &mac, &signer, 1_700_000_000).unwrap();
        assert!(
            matches!(
                got.signature,
                Signature::Unverified {
                    error: Some(TsigError::BadKey),
                    ..
                }
            ),
            "{:?}",
            got.signature
        );
    }

    #[test]
    fn a_signed_answer_outside_our_window_is_badtime() {
        let signer = signer(TsigAlgorithm::HmacSha256);
        let (_, mac) = sign_and_encode(update(1), &signer, 1_700_000_000).unwrap();
        let bytes = answer(&signer, &mac, None, 1_700_000_000, Vec::new(), false);
        let ok = decode_answer(&bytes, 4242, &mac, &signer, 1_700_000_010).unwrap();
        assert!(matches!(
            ok.signature,
            Signature::Verified { error: None, .. }
        ));
        let late = decode_answer(&bytes, 4242, &mac, &signer, 1_700_000_400).unwrap();
        assert!(matches!(
            late.signature,
            Signature::Verified {
                error: Some(TsigError::BadTime),
                ..
            }
        ));
    }

    #[test]
    fn an_unsigned_answer_is_marked_unsigned() {
        let signer = signer(TsigAlgorithm::HmacSha256);
        let (_, mac) = sign_and_encode(update(1), &signer, 1_700_000_000).unwrap();
        let mut resp = Message::new(4242, MessageType::Response, OpCode::Update);
        resp.metadata.response_code = ResponseCode::ServFail;
        let got =
            decode_answer(&resp.to_vec().unwrap(), 4242, &mac, &signer, 1_700_000_000).unwrap();
        assert_eq!(got.signature, Signature::Unsigned);
        assert!(decode_answer(&resp.to_vec().unwrap(), 1, &mac, &signer, 0).is_err());
    }
}
