//! The Route 53 REST API's XML (API version 2013-04-01): the ChangeResourceRecordSets request body,
//! and the ListResourceRecordSets, ChangeResourceRecordSets, GetChange and error answers.
//!
//! - <https://docs.aws.amazon.com/Route53/latest/APIReference/API_ChangeResourceRecordSets.html>
//! - <https://docs.aws.amazon.com/Route53/latest/APIReference/API_ListResourceRecordSets.html>
//! - <https://docs.aws.amazon.com/Route53/latest/APIReference/API_GetChange.html>
//!
//! Errors come in two shapes: `<ErrorResponse><Error><Code/><Message/></Error></ErrorResponse>`, and
//! for a refused change batch `<InvalidChangeBatch><Messages><Message/>…</Messages></InvalidChangeBatch>`.

use serde::Deserialize;

/// The namespace of every request and answer.
pub const NAMESPACE: &str = "https://route53.amazonaws.com/doc/2013-04-01/";

/// What one `<Change>` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create an RRset that must not exist.
    Create,
    /// Delete an RRset that must exist with exactly these values and TTL.
    Delete,
}

/// One `<Change>` of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// CREATE or DELETE.
    pub action: Action,
    /// The owner name, with trailing dot.
    pub name: String,
    /// `A` or `AAAA`.
    pub rtype: String,
    /// TTL (s).
    pub ttl: u32,
    /// The values, as Route 53 shows them for a DELETE.
    pub values: Vec<String>,
    /// `SetIdentifier` and `Weight` of a weighted record set; `None`: a plain one.
    pub weighted: Option<(String, u8)>,
}

/// The body of a ChangeResourceRecordSets request.
pub fn change_batch(comment: &str, changes: &[Change]) -> String {
    use quick_xml::escape::escape;
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ChangeResourceRecordSetsRequest xmlns=\"{NAMESPACE}\"><ChangeBatch><Comment>{}</Comment><Changes>",
        escape(comment)
    );
    for c in changes {
        let action = match c.action {
            Action::Create => "CREATE",
            Action::Delete => "DELETE",
        };
        s.push_str(&format!(
            "<Change><Action>{action}</Action><ResourceRecordSet><Name>{}</Name><Type>{}</Type>",
            escape(&c.name),
            escape(&c.rtype),
        ));
        // The API's element order: Name, Type, SetIdentifier, Weight, ..., TTL, ResourceRecords.
        if let Some((id, weight)) = &c.weighted {
            s.push_str(&format!(
                "<SetIdentifier>{}</SetIdentifier><Weight>{weight}</Weight>",
                escape(id)
            ));
        }
        s.push_str(&format!("<TTL>{}</TTL><ResourceRecords>", c.ttl));
        for v in &c.values {
            s.push_str(&format!(
                "<ResourceRecord><Value>{}</Value></ResourceRecord>",
                escape(v)
            ));
        }
        s.push_str("</ResourceRecords></ResourceRecordSet></Change>");
    }
    s.push_str("</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>");
    s
}

/// `ListResourceRecordSetsResponse`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResponse {
    /// The RRsets of this page.
    pub resource_record_sets: RecordSets,
    /// More pages follow.
    pub is_truncated: bool,
    /// The next page starts at this name…
    pub next_record_name: Option<String>,
    /// …and type…
    pub next_record_type: Option<String>,
    /// …and set identifier (weighted, latency, … records).
    pub next_record_identifier: Option<String>,
}

/// `<ResourceRecordSets>`.
#[derive(Debug, Deserialize)]
pub struct RecordSets {
    /// Its RRsets.
    #[serde(rename = "ResourceRecordSet", default)]
    pub sets: Vec<RecordSet>,
}

/// One `<ResourceRecordSet>`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecordSet {
    /// Owner name, as Route 53 writes it (`\052` for `*`, trailing dot).
    pub name: String,
    /// Record type.
    #[serde(rename = "Type")]
    pub rtype: String,
    /// TTL (s); absent for alias records.
    #[serde(rename = "TTL")]
    pub ttl: Option<u32>,
    /// The values; absent for alias records.
    pub resource_records: Option<Records>,
    /// Set for an alias record.
    pub alias_target: Option<AliasTarget>,
    /// Set for weighted, latency, failover, geolocation and multivalue records.
    pub set_identifier: Option<String>,
    /// Set for weighted records (0..=255).
    pub weight: Option<u64>,
}

impl RecordSet {
    /// The values, in the order Route 53 gave them.
    pub fn values(&self) -> Vec<String> {
        self.resource_records
            .as_ref()
            .map(|r| r.records.iter().map(|v| v.value.clone()).collect())
            .unwrap_or_default()
    }
}

/// `<ResourceRecords>`.
#[derive(Debug, Deserialize)]
pub struct Records {
    /// Its records.
    #[serde(rename = "ResourceRecord", default)]
    pub records: Vec<Record>,
}

/// `<ResourceRecord>`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Record {
    /// The value in presentation format.
    pub value: String,
}

/// `<AliasTarget>`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasTarget {
    /// Where the alias points.
    #[serde(rename = "DNSName")]
    pub dns_name: String,
}

/// `<ChangeInfo>` of ChangeResourceRecordSets and GetChange answers.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChangeInfoResponse {
    /// The change.
    pub change_info: ChangeInfo,
}

/// The state of a submitted change.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChangeInfo {
    /// `/change/C…`.
    pub id: String,
    /// `PENDING` or `INSYNC`.
    pub status: String,
}

/// Parses an answer of type `T`.
///
/// # Errors
/// The parser's message.
pub fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, String> {
    quick_xml::de::from_str(body).map_err(|e| e.to_string())
}

/// An error answer: its code (`Throttling`, `InvalidChangeBatch`, …) and messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    /// The error code; the root element's name for `<InvalidChangeBatch>`.
    pub code: String,
    /// Every message, in order.
    pub messages: Vec<String>,
}

impl ApiError {
    /// The messages joined, or the code when there is none.
    pub fn text(&self) -> String {
        if self.messages.is_empty() {
            self.code.clone()
        } else {
            format!("{}: {}", self.code, self.messages.join("; "))
        }
    }
}

/// An error document of either shape (the root element's name is not needed: only
/// `<InvalidChangeBatch>` has `<Messages>`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorDoc {
    error: Option<ErrorBody>,
    messages: Option<Messages>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Messages {
    #[serde(rename = "Message", default)]
    messages: Vec<String>,
}

/// Reads an error answer of either shape; `None` if the body is not one.
pub fn parse_error(body: &str) -> Option<ApiError> {
    let doc: ErrorDoc = quick_xml::de::from_str(body).ok()?;
    if let Some(m) = doc.messages {
        return Some(ApiError {
            code: "InvalidChangeBatch".to_owned(),
            messages: m
                .messages
                .into_iter()
                .map(|m| m.trim().to_owned())
                .collect(),
        });
    }
    let e = doc.error?;
    Some(ApiError {
        code: e.code.unwrap_or_default().trim().to_owned(),
        messages: e.message.map(|m| m.trim().to_owned()).into_iter().collect(),
    })
}

/// A name as Route 53 writes it, made comparable: `\DDD` octal escapes decoded, lower case, with a
/// trailing dot (<https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/DomainNameFormat.html>).
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if digits.len() == 3
                && digits.chars().all(|d| d.is_digit(8))
                && let Ok(code) = u8::from_str_radix(&digits, 8)
            {
                out.push(char::from(code));
                for _ in 0..3 {
                    chars.next();
                }
                continue;
            }
        }
        out.push(c);
    }
    let mut out = out.to_ascii_lowercase();
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_names_compare_equal() {
        assert_eq!(normalize_name("\\052.Example.com"), "*.example.com.");
        assert_eq!(normalize_name("www.example.com."), "www.example.com.");
        assert_eq!(normalize_name("a\\\\b.test."), "a\\\\b.test.");
    }

    #[test]
    fn both_error_shapes_are_read() {
        let batch = "<?xml version=\"1.0\"?>\n<InvalidChangeBatch xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><Messages><Message>Tried to delete resource record set [name='www.example.com.', type='A'] but the values provided do not match the current values</Message></Messages><RequestId>r</RequestId></InvalidChangeBatch>";
        let e = parse_error(batch).unwrap();
        assert_eq!(e.code, "InvalidChangeBatch");
        assert!(e.messages[0].contains("do not match"));
        let throttled = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r</RequestId></ErrorResponse>";
        assert_eq!(
            parse_error(throttled).unwrap(),
            ApiError {
                code: "Throttling".into(),
                messages: vec!["Rate exceeded".into()]
            }
        );
        assert_eq!(parse_error("not xml at all <"), None);
    }

    #[test]
    fn the_batch_escapes_and_lists_values_in_order() {
        let body = change_batch(
            "a<b",
            &[Change {
                action: Action::Delete,
                name: "www.example.com.".into(),
                rtype: "A".into(),
                ttl: 60,
                values: vec!["192.0.2.2".into(), "192.0.2.1".into()],
                weighted: None,
            }],
        );
        assert!(body.contains("<Comment>a&lt;b</Comment>"), "{body}");
        assert!(body.contains("<Change><Action>DELETE</Action><ResourceRecordSet><Name>www.example.com.</Name><Type>A</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>192.0.2.2</Value></ResourceRecord><ResourceRecord><Value>192.0.2.1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>"), "{body}");
    }

    #[test]
    fn a_weighted_set_has_set_identifier_and_weight_in_the_documented_order() {
        let body = change_batch(
            "rrguard",
            &[Change {
                action: Action::Create,
                name: "www.example.com.".into(),
                rtype: "AAAA".into(),
                ttl: 30,
                values: vec!["2001:db8::1".into()],
                weighted: Some(("rrguard-2001:db8::1".into(), 0)),
            }],
        );
        assert!(body.contains("<Change><Action>CREATE</Action><ResourceRecordSet><Name>www.example.com.</Name><Type>AAAA</Type><SetIdentifier>rrguard-2001:db8::1</SetIdentifier><Weight>0</Weight><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>2001:db8::1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>"), "{body}");
        let listing = "<ListResourceRecordSetsResponse><ResourceRecordSets><ResourceRecordSet><Name>www.example.com.</Name><Type>A</Type><SetIdentifier>rrguard-192.0.2.1</SetIdentifier><Weight>7</Weight><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>192.0.2.1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>100</MaxItems></ListResourceRecordSetsResponse>";
        let l: ListResponse = parse(listing).unwrap();
        let set = &l.resource_record_sets.sets[0];
        assert_eq!(set.set_identifier.as_deref(), Some("rrguard-192.0.2.1"));
        assert_eq!(set.weight, Some(7));
    }

    #[test]
    fn a_listing_is_parsed() {
        let body = "<?xml version=\"1.0\"?><ListResourceRecordSetsResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ResourceRecordSets><ResourceRecordSet><Name>www.example.com.</Name><Type>A</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>192.0.2.1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet><ResourceRecordSet><Name>www.example.com.</Name><Type>AAAA</Type><AliasTarget><HostedZoneId>Z</HostedZoneId><DNSName>lb.example.net.</DNSName><EvaluateTargetHealth>false</EvaluateTargetHealth></AliasTarget></ResourceRecordSet></ResourceRecordSets><IsTruncated>true</IsTruncated><NextRecordName>www.example.com.</NextRecordName><NextRecordType>CNAME</NextRecordType><MaxItems>2</MaxItems></ListResourceRecordSetsResponse>";
        let l: ListResponse = parse(body).unwrap();
        assert!(l.is_truncated);
        assert_eq!(l.next_record_type.as_deref(), Some("CNAME"));
        assert_eq!(l.resource_record_sets.sets.len(), 2);
        assert_eq!(l.resource_record_sets.sets[0].values(), vec!["192.0.2.1"]);
        assert_eq!(l.resource_record_sets.sets[0].ttl, Some(60));
        let alias = l.resource_record_sets.sets[1]
            .alias_target
            .as_ref()
            .unwrap();
        assert_eq!(alias.dns_name, "lb.example.net.");
        let empty: ListResponse = parse("<ListResourceRecordSetsResponse><ResourceRecordSets></ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>300</MaxItems></ListResourceRecordSetsResponse>").unwrap();
        assert!(empty.resource_record_sets.sets.is_empty());
    }
}
