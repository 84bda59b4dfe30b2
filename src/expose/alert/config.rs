//! `[[alert]]` sections: the options as written ([`RawAlert`]), their validation (problems reported
//! by key path) and the validated [`AlertConfig`] an alert task is built from.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Seg::{self, Index, Key};
use crate::config::{Errors, SecretKeys, SecretSource, read_secret, read_secret_as, with};
use crate::state::EventKind;

/// Default window within which the same condition is not alerted twice.
pub const DEFAULT_DEDUPE: Duration = Duration::from_secs(300);
/// Default largest number of messages per minute.
pub const DEFAULT_RATE_LIMIT: u32 = 10;
/// Default number of delivery attempts of one message.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Default number of messages waiting for delivery; beyond it the oldest is dropped (and logged).
pub const DEFAULT_QUEUE: usize = 100;
/// Default limit of one delivery attempt, connection included.
pub const DEFAULT_ALERT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest accepted webhook signing secret, bytes (as for the webhook writer).
pub const MIN_ALERT_SECRET_LEN: usize = 16;
/// The event kinds alerted when `on` is not set.
pub const DEFAULT_ON: [EventKind; 5] = [
    EventKind::EndpointState,
    EventKind::DnsUpdated,
    EventKind::WriteFailed,
    EventKind::Isolated,
    EventKind::Rejoined,
];

/// `[[alert]]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlert {
    /// Names the alert in logs and messages.
    pub name: String,
    /// `webhook` or `email`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Event kinds that alert.
    pub on: Option<Vec<String>>,
    /// Services whose events alert (all when absent).
    pub services: Option<Vec<String>>,
    /// The same condition is not alerted twice within this window.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub dedupe: Option<Duration>,
    /// Messages per minute at most.
    pub rate_limit: Option<u32>,
    /// Delivery attempts per message.
    pub max_attempts: Option<u32>,
    /// Messages waiting for delivery at most.
    pub queue: Option<usize>,
    /// Limit of one delivery attempt.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub timeout: Option<Duration>,
    /// webhook: where to POST.
    pub url: Option<String>,
    /// webhook: `json` (default) or `slack`.
    pub format: Option<String>,
    /// webhook: HMAC-SHA256 signing key inline.
    pub secret: Option<String>,
    /// webhook: file holding the signing key.
    pub secret_file: Option<String>,
    /// email: recipients.
    pub to: Option<Vec<String>>,
    /// email: sender.
    pub from: Option<String>,
    /// email: SMTP server host name or address.
    pub server: Option<String>,
    /// email: SMTP port.
    pub port: Option<u16>,
    /// email: `starttls` (default), `tls` or `none`.
    pub tls: Option<String>,
    /// email: SMTP user name.
    pub username: Option<String>,
    /// email: SMTP password inline.
    pub password: Option<String>,
    /// email: file holding the SMTP password.
    pub password_file: Option<String>,
}

/// One validated `[[alert]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    /// `name`, unique among alerts.
    pub name: String,
    /// The event kinds that alert.
    pub on: BTreeSet<EventKind>,
    /// The services (fqdn with trailing dot) whose events alert; `None`: all. Node-wide events
    /// (`isolated`, `rejoined`) always pass.
    pub services: Option<BTreeSet<String>>,
    /// Window within which the same condition is not alerted twice.
    pub dedupe: Duration,
    /// Messages per minute at most.
    pub rate_limit: u32,
    /// Delivery attempts per message.
    pub max_attempts: u32,
    /// Messages waiting for delivery at most.
    pub queue: usize,
    /// Limit of one delivery attempt.
    pub timeout: Duration,
    /// Where messages go.
    pub target: Target,
}

/// Where an alert's messages go.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// An HTTP POST.
    Webhook(WebhookTarget),
    /// An email over SMTP.
    Email(EmailTarget),
}

/// `type = "webhook"`.
#[derive(Clone, PartialEq)]
pub struct WebhookTarget {
    /// Where to POST.
    pub url: reqwest::Url,
    /// The body's shape.
    pub format: Format,
    /// HMAC-SHA256 key; `None`: unsigned.
    pub secret: Option<Vec<u8>>,
}

impl fmt::Debug for WebhookTarget {
    // Never print the secret nor the query string (it often carries a token, as Slack's URLs do in
    // their path: the path is not printed either).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &shown_url(&self.url))
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A webhook body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// rrguard's documented JSON document (version 1).
    Json,
    /// `{"text": "…"}`, what Slack (and Mattermost, Rocket.Chat, …) incoming webhooks take.
    Slack,
}

/// `type = "email"`.
#[derive(Clone, PartialEq)]
pub struct EmailTarget {
    /// Recipients.
    pub to: Vec<String>,
    /// Sender.
    pub from: String,
    /// SMTP server.
    pub server: String,
    /// SMTP port.
    pub port: u16,
    /// How the connection is protected.
    pub tls: SmtpTls,
    /// User name and password, when the server wants them.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for EmailTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailTarget")
            .field("to", &self.to)
            .field("from", &self.from)
            .field("server", &self.server)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .finish()
    }
}

/// `tls = "starttls" | "tls" | "none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (RFC 3207); port 587 by default.
    StartTls,
    /// TLS from the first byte (RFC 8314 implicit TLS); port 465 by default.
    Tls,
    /// No TLS at all: only for a relay on the same host or network; port 25 by default.
    None,
}

/// `url` as logs show it: scheme, host and port only (webhook URLs carry tokens in their path or
/// query).
pub fn shown_url(url: &reqwest::Url) -> String {
    match url.port() {
        Some(p) => format!("{}://{}:{p}/…", url.scheme(), url.host_str().unwrap_or("")),
        None => format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or("")),
    }
}

/// Validates every `[[alert]]`; relative secret files are read from `base_dir`. Problems go to
/// `errs`; the alerts without problems are returned.
pub(crate) fn validate_all(
    raw: &[RawAlert],
    base_dir: &Path,
    errs: &mut Errors,
) -> Vec<AlertConfig> {
    let mut names = BTreeSet::new();
    let mut alerts = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let at = [Key("alert"), Index(i)];
        if !names.insert(r.name.clone()) {
            errs.at(
                &with(&at, &[Key("name")]),
                format!(
                    "alert name {:?} is used twice; give each [[alert]] its own name",
                    r.name
                ),
            );
        }
        if let Some(a) = validate(r, &at, base_dir, errs) {
            alerts.push(a);
        }
    }
    alerts
}

fn validate(r: &RawAlert, at: &[Seg], base_dir: &Path, errs: &mut Errors) -> Option<AlertConfig> {
    let before = errs.len();
    if r.name.trim().is_empty() {
        errs.at(&with(at, &[Key("name")]), "alert name must not be empty");
    }
    let on = match &r.on {
        None => DEFAULT_ON.into_iter().collect(),
        Some(list) => {
            let mut on = BTreeSet::new();
            for (i, k) in list.iter().enumerate() {
                match k.parse::<EventKind>() {
                    Ok(k) => {
                        on.insert(k);
                    }
                    Err(e) => errs.at(&with(at, &[Key("on"), Index(i)]), e),
                }
            }
            if list.is_empty() {
                errs.at(
                    &with(at, &[Key("on")]),
                    "`on` is empty, so this alert would never fire; list event kinds or remove the [[alert]]",
                );
            }
            on
        }
    };
    let services = r.services.as_ref().map(|list| {
        let mut set = BTreeSet::new();
        for (i, s) in list.iter().enumerate() {
            match crate::config::normalize_name(s) {
                Ok(n) => {
                    set.insert(format!("{n}."));
                }
                Err(e) => errs.at(
                    &with(at, &[Key("services"), Index(i)]),
                    format!("service {s:?}: {e}; write the fqdn of a [[service]]"),
                ),
            }
        }
        set
    });
    for (key, value) in [
        ("rate_limit", r.rate_limit),
        ("max_attempts", r.max_attempts),
    ] {
        if value == Some(0) {
            errs.at(&with(at, &[Key(key)]), format!("{key} must be at least 1"));
        }
    }
    if r.queue == Some(0) {
        errs.at(&with(at, &[Key("queue")]), "queue must be at least 1");
    }
    let target = match r.kind.as_str() {
        "webhook" => webhook(r, at, base_dir, errs).map(Target::Webhook),
        "email" => email(r, at, base_dir, errs).map(Target::Email),
        other => {
            errs.at(
                &with(at, &[Key("type")]),
                format!("unknown alert type {other:?}; write \"webhook\" or \"email\""),
            );
            None
        }
    };
    if errs.len() != before {
        return None;
    }
    Some(AlertConfig {
        name: r.name.clone(),
        on,
        services,
        dedupe: r.dedupe.unwrap_or(DEFAULT_DEDUPE),
        rate_limit: r.rate_limit.unwrap_or(DEFAULT_RATE_LIMIT),
        max_attempts: r.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
        queue: r.queue.unwrap_or(DEFAULT_QUEUE),
        timeout: r.timeout.unwrap_or(DEFAULT_ALERT_TIMEOUT),
        target: target?,
    })
}

/// Reports every option of the other type that is set: a person mixing them up learns which apply.
fn not_for(r: &RawAlert, at: &[Seg], kind: &str, errs: &mut Errors) {
    let webhook_only = [
        ("url", r.url.is_some()),
        ("format", r.format.is_some()),
        ("secret", r.secret.is_some()),
        ("secret_file", r.secret_file.is_some()),
    ];
    let email_only = [
        ("to", r.to.is_some()),
        ("from", r.from.is_some()),
        ("server", r.server.is_some()),
        ("port", r.port.is_some()),
        ("tls", r.tls.is_some()),
        ("username", r.username.is_some()),
        ("password", r.password.is_some()),
        ("password_file", r.password_file.is_some()),
    ];
    let others = if kind == "webhook" {
        &email_only[..]
    } else {
        &webhook_only[..]
    };
    for (key, set) in others {
        if *set {
            errs.at(
                &with(at, &[Key(key)]),
                format!("`{key}` is not an option of a type = \"{kind}\" alert; remove it"),
            );
        }
    }
}

fn webhook(r: &RawAlert, at: &[Seg], base_dir: &Path, errs: &mut Errors) -> Option<WebhookTarget> {
    not_for(r, at, "webhook", errs);
    let url = match &r.url {
        None => {
            errs.at(at, "a webhook alert needs `url = \"https://…\"`");
            None
        }
        Some(text) => match reqwest::Url::parse(text.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                errs.at(
                    &with(at, &[Key("url")]),
                    format!("url {text:?} is not an http:// or https:// URL, like \"https://hooks.example.net/rrguard\""),
                );
                None
            }
        },
    };
    let format = match r.format.as_deref() {
        None | Some("json") => Some(Format::Json),
        Some("slack") => Some(Format::Slack),
        Some(other) => {
            errs.at(
                &with(at, &[Key("format")]),
                format!("unknown format {other:?}; write \"json\" (rrguard's document) or \"slack\" ({{\"text\": …}})"),
            );
            None
        }
    };
    let secret = if r.secret.is_none() && r.secret_file.is_none() {
        None
    } else {
        let source = SecretSource {
            inline: r.secret.as_deref(),
            file: r.secret_file.as_deref(),
        };
        let text = read_secret(source, at, "alert", "", base_dir, errs)?;
        let secret = text.text().trim().as_bytes().to_vec();
        if secret.len() < MIN_ALERT_SECRET_LEN {
            errs.at(
                text.at(),
                format!(
                    "alert secret has {} bytes, at least {MIN_ALERT_SECRET_LEN} are needed; generate one with `head -c32 /dev/urandom | base64`",
                    secret.len()
                ),
            );
            return None;
        }
        Some(secret)
    };
    Some(WebhookTarget {
        url: url?,
        format: format?,
        secret,
    })
}

fn email(r: &RawAlert, at: &[Seg], base_dir: &Path, errs: &mut Errors) -> Option<EmailTarget> {
    not_for(r, at, "email", errs);
    let before = errs.len();
    let mailbox = |text: &str, key: &'static str, i: Option<usize>, errs: &mut Errors| {
        if text.parse::<lettre::message::Mailbox>().is_err() {
            let mut path = with(at, &[Key(key)]);
            if let Some(i) = i {
                path.push(Index(i));
            }
            errs.at(
                &path,
                format!("{text:?} is not an email address, like \"ops@example.net\" or \"Ops <ops@example.net>\""),
            );
        }
    };
    let to = r.to.clone().unwrap_or_default();
    if to.is_empty() {
        errs.at(at, "an email alert needs `to = [\"ops@example.net\"]`");
    }
    for (i, t) in to.iter().enumerate() {
        mailbox(t, "to", Some(i), errs);
    }
    let from = r.from.clone().unwrap_or_default();
    match &r.from {
        None => errs.at(at, "an email alert needs `from = \"rrguard@example.net\"`"),
        Some(f) => mailbox(f, "from", None, errs),
    }
    let server = r.server.clone().unwrap_or_default();
    if server.trim().is_empty() {
        errs.at(
            at,
            "an email alert needs `server = \"smtp.example.net\"` (the SMTP server)",
        );
    }
    let tls = match r.tls.as_deref() {
        None | Some("starttls") => SmtpTls::StartTls,
        Some("tls") => SmtpTls::Tls,
        Some("none") => SmtpTls::None,
        Some(other) => {
            errs.at(
                &with(at, &[Key("tls")]),
                format!("unknown tls {other:?}; write \"starttls\" (port 587), \"tls\" (port 465) or \"none\" (port 25, a local relay only)"),
            );
            SmtpTls::StartTls
        }
    };
    let port = r.port.unwrap_or(match tls {
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    });
    if port == 0 {
        errs.at(&with(at, &[Key("port")]), "port must be 1 to 65535");
    }
    let has_password = r.password.is_some() || r.password_file.is_some();
    let credentials = match (&r.username, has_password) {
        (None, false) => None,
        (None, true) => {
            let key = if r.password.is_some() {
                "password"
            } else {
                "password_file"
            };
            errs.at(
                &with(at, &[Key(key)]),
                "a password needs `username = \"…\"` too",
            );
            None
        }
        (Some(user), _) => {
            let source = SecretSource {
                inline: r.password.as_deref(),
                file: r.password_file.as_deref(),
            };
            let keys = SecretKeys {
                inline: "password",
                file: "password_file",
            };
            let missing = "`username` needs `password_file = \"PATH\"` (or `password`)";
            read_secret_as(source, keys, at, "SMTP password", missing, base_dir, errs).map(|p| {
                (
                    user.clone(),
                    p.text().trim_end_matches(['\r', '\n']).to_owned(),
                )
            })
        }
    };
    if errs.len() != before {
        return None;
    }
    Some(EmailTarget {
        to,
        from,
        server: server.trim().to_owned(),
        port,
        tls,
        credentials,
    })
}
