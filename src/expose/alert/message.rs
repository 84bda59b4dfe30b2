//! What an alert sends: the JSON document (version [`VERSION`], documented in
//! `docs/operations.md`), Slack's `{"text": …}` and the email's subject and body, all rendered from
//! one [`Outgoing`] message.

use serde::Serialize;

use super::gate::{Outgoing, Suppressed};
use crate::state::Event;

/// Version of the JSON document; a change that removes or renames a field increments it.
pub const VERSION: u32 = 1;

/// The JSON document a `format = "json"` webhook receives.
#[derive(Debug, Serialize)]
pub struct Document<'a> {
    /// [`VERSION`].
    pub version: u32,
    /// `[[alert]].name`.
    pub alert: &'a str,
    /// `[node].id` of the node that sends it.
    pub node: &'a str,
    /// When the message was made, Unix milliseconds.
    pub unix_ms: u64,
    /// The event, as in the status document's events (with `endpoint`, `state` and `previous` when
    /// the kind has them); `null` in a summary sent on its own.
    pub event: Option<&'a Event>,
    /// Events the rate limit held back since the previous message; `null` when none were.
    pub suppressed: Option<&'a Suppressed>,
    /// The whole message in one line of text, as Slack mode and the email subject show it.
    pub text: String,
}

/// A message as it waits in the outbox: what to say and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The event and summary.
    pub outgoing: Outgoing,
    /// When it was made, Unix milliseconds.
    pub unix_ms: u64,
}

impl Message {
    /// The document of this message sent by alert `alert` of node `node`.
    pub fn document<'a>(&'a self, alert: &'a str, node: &'a str) -> Document<'a> {
        Document {
            version: VERSION,
            alert,
            node,
            unix_ms: self.unix_ms,
            event: self.outgoing.event.as_ref(),
            suppressed: self.outgoing.suppressed.as_ref(),
            text: self.text(node),
        }
    }

    /// One line: `[rrguard NODE] SERVICE: MESSAGE` (node-wide events without the service), then
    /// what was held back.
    pub fn text(&self, node: &str) -> String {
        let mut text = format!("[rrguard {node}]");
        if let Some(e) = &self.outgoing.event {
            if !e.service.is_empty() {
                text.push(' ');
                text.push_str(&e.service);
                text.push(':');
            }
            text.push(' ');
            text.push_str(&e.message);
        }
        if let Some(s) = &self.outgoing.suppressed {
            text.push(' ');
            text.push_str(&summary(s, self.outgoing.event.is_some()));
        }
        text
    }

    /// The email subject: the first 150 characters of [`Message::text`].
    pub fn subject(&self, node: &str) -> String {
        let text = self.text(node);
        match text.char_indices().nth(150) {
            Some((i, _)) => format!("{}…", &text[..i]),
            None => text,
        }
    }

    /// The email body: the text, the event's fields, and the held-back events quoted.
    pub fn body(&self, alert: &str, node: &str) -> String {
        let mut body = self.text(node);
        body.push_str("\n\n");
        if let Some(e) = &self.outgoing.event {
            body.push_str(&format!("kind: {}\n", e.kind));
            if !e.service.is_empty() {
                body.push_str(&format!("service: {}\n", e.service));
            }
            for (k, v) in [
                ("endpoint", &e.endpoint),
                ("state", &e.state),
                ("previous", &e.previous),
            ] {
                if let Some(v) = v {
                    body.push_str(&format!("{k}: {v}\n"));
                }
            }
            body.push_str(&format!("time: {}\n", unix_ms_text(e.unix_ms)));
        }
        if let Some(s) = &self.outgoing.suppressed
            && !s.first.is_empty()
        {
            body.push_str("\nheld back by the rate limit:\n");
            for e in &s.first {
                body.push_str(&format!(
                    "- {} {} {}\n",
                    unix_ms_text(e.unix_ms),
                    e.service,
                    e.message
                ));
            }
            if s.count > s.first.len() as u64 {
                body.push_str(&format!("- and {} more\n", s.count - s.first.len() as u64));
            }
        }
        body.push_str(&format!("\nnode: {node}\nalert: {alert}\n"));
        body
    }
}

/// `(+3 more held back by the rate limit: endpoint_state 2, write_failed 1)`.
fn summary(s: &Suppressed, after_event: bool) -> String {
    let mut parts = Vec::new();
    if s.count > 0 {
        let kinds: Vec<String> = s.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let what = if after_event { "more " } else { "" };
        parts.push(format!(
            "{} {what}event{} held back by the rate limit: {}",
            s.count,
            if s.count == 1 { "" } else { "s" },
            kinds.join(", ")
        ));
    }
    if s.lost > 0 {
        parts.push(format!("{} events lost (the alert fell behind)", s.lost));
    }
    if after_event {
        format!("(+{})", parts.join("; "))
    } else {
        parts.join("; ")
    }
}

/// RFC 3339 UTC with milliseconds.
fn unix_ms_text(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}
