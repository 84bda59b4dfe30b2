//! Alerts: `[[alert]]` sections turn events from [`NodeState::subscribe`] into webhook POSTs
//! (rrguard's JSON document, or Slack's `{"text": …}`) and emails over SMTP.
//!
//! One task per alert ([`spawn_alerts`]). It reads the event stream, lets each event through its
//! [`gate::Gate`] (filter, de-duplication, rate limit with summaries) and queues the messages in its
//! [`gate::Outbox`] (bounded, retried with backoff, bounded attempts, then logged and dropped). One
//! delivery is in flight at a time and runs beside the reading of the stream, so a receiver that is
//! down or slow never holds back the stream, and nothing here ever blocks the daemon: the stream is a
//! broadcast channel whose senders never wait (an alert that fell behind loses the oldest events
//! and says so in its next message).
//!
//! - [`config`]: the options and their validation.
//! - [`gate`]: the sans-I/O decisions (what to send, when to retry).
//! - [`message`]: the documents.
//!
//! Webhook requests are signed like the webhook writer's when a secret is set
//! ([`crate::act::webhook::sign`]: `X-Rrguard-Timestamp`, `X-Rrguard-Signature: sha256=…`).

pub mod config;
pub mod gate;
pub mod message;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::act::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use crate::state::{NodeState, now_unix_ms};
pub use config::{AlertConfig, EmailTarget, Format, RawAlert, SmtpTls, Target, WebhookTarget};
use gate::{AfterFailure, Gate, Outbox, Verdict};
use message::Message;

/// Why an alert could not be set up. Not retryable without operator action.
#[derive(Debug, thiserror::Error)]
#[error("alert {name:?}: {reason}")]
pub struct AlertBuildError {
    /// `[[alert]].name`.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Starts one task per alert in `set`; each subscribes to `state`'s events now and stops when
/// `cancel` fires (logging the messages it leaves undelivered). An alert whose transport cannot be
/// built is logged and left out.
pub fn spawn_alerts(
    alerts: &[AlertConfig],
    node: &str,
    state: &NodeState,
    cancel: &CancellationToken,
    set: &mut JoinSet<()>,
) {
    for alert in alerts {
        match Deliver::build(alert) {
            Ok(deliver) => {
                let task = AlertTask {
                    name: alert.name.clone(),
                    node: node.to_owned(),
                    gate: Gate::new(alert),
                    outbox: Outbox::new(alert.queue, alert.max_attempts),
                    deliver: Arc::new(deliver),
                };
                set.spawn(task.run(state.subscribe(), cancel.clone()));
            }
            Err(e) => error!("{e}; this alert is off"),
        }
    }
}

type Delivery = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

struct AlertTask {
    name: String,
    node: String,
    gate: Gate,
    outbox: Outbox<Message>,
    deliver: Arc<Deliver>,
}

impl AlertTask {
    async fn run(
        mut self,
        mut events_rx: tokio::sync::broadcast::Receiver<crate::state::Event>,
        cancel: CancellationToken,
    ) {
        let mut inflight: Option<Delivery> = None;
        let mut stream_open = true;
        loop {
            let now = Instant::now();
            if let Some(outgoing) = self.gate.poll(now) {
                self.queue(outgoing);
            }
            if inflight.is_none()
                && let Some(m) = self.outbox.due(now)
            {
                inflight = Some(self.deliver.send(m.clone(), &self.name, &self.node));
            }
            let wake = [self.gate.next_wake(now), self.outbox.next_wake()]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                _ = cancel.cancelled() => {
                    if !self.outbox.is_empty() {
                        warn!(alert = %self.name, undelivered = self.outbox.len(), "stopping with undelivered alert messages");
                    }
                    return;
                }
                received = events_rx.recv(), if stream_open => match received {
                    Ok(event) => match self.gate.offer(event, Instant::now()) {
                        Verdict::Send(outgoing) => self.queue(outgoing),
                        Verdict::Held => debug!(alert = %self.name, "event held back by the rate limit"),
                        Verdict::Duplicate => debug!(alert = %self.name, "duplicate event not alerted"),
                        Verdict::Ignored => {}
                    },
                    Err(RecvError::Lagged(n)) => {
                        warn!(alert = %self.name, lost = n, "alert fell behind the event stream");
                        self.gate.lost(n);
                    }
                    Err(RecvError::Closed) => stream_open = false,
                },
                result = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                    inflight = None;
                    let now = Instant::now();
                    match result {
                        Ok(()) => {
                            if let Some(p) = self.outbox.delivered()
                                && p.attempts > 1
                            {
                                info!(alert = %self.name, attempts = p.attempts, "alert delivered after retries");
                            }
                        }
                        Err(why) => match self.outbox.failed(now) {
                            Some(AfterFailure::RetryAt(at)) => warn!(
                                alert = %self.name,
                                retry_in = ?at.saturating_duration_since(now),
                                "cannot deliver alert: {why}"
                            ),
                            Some(AfterFailure::GaveUp(p)) => error!(
                                alert = %self.name,
                                attempts = p.attempts,
                                message = %p.message.text(&self.node),
                                "giving up on an alert message: {why}"
                            ),
                            None => {}
                        },
                    }
                }
                _ = sleep_until_opt(wake) => {}
            }
        }
    }

    fn queue(&mut self, outgoing: gate::Outgoing) {
        let message = Message {
            outgoing,
            unix_ms: now_unix_ms(),
        };
        if let Some(dropped) = self.outbox.push(message) {
            error!(
                alert = %self.name,
                message = %dropped.text(&self.node),
                "alert queue full: dropping its oldest message"
            );
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How an alert's messages leave the process.
enum Deliver {
    Webhook {
        target: WebhookTarget,
        client: reqwest::Client,
    },
    Email {
        target: EmailTarget,
        transport: AsyncSmtpTransport<Tokio1Executor>,
    },
}

impl Deliver {
    fn build(alert: &AlertConfig) -> Result<Deliver, AlertBuildError> {
        let fail = |reason: String| AlertBuildError {
            name: alert.name.clone(),
            reason,
        };
        crate::observe::probe::ensure_crypto_provider();
        match &alert.target {
            Target::Webhook(target) => {
                let client = reqwest::Client::builder()
                    .timeout(alert.timeout)
                    .connect_timeout(alert.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .user_agent(concat!("rrguard/", env!("CARGO_PKG_VERSION"), " alert"))
                    .build()
                    .map_err(|e| fail(format!("cannot build the HTTP client: {e}")))?;
                Ok(Deliver::Webhook {
                    target: target.clone(),
                    client,
                })
            }
            Target::Email(target) => {
                let builder = match target.tls {
                    SmtpTls::StartTls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&target.server)
                    }
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&target.server),
                    SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                        &target.server,
                    )),
                }
                .map_err(|e| fail(format!("cannot set up TLS for {}: {e}", target.server)))?;
                let mut builder = builder.port(target.port).timeout(Some(alert.timeout));
                if let Some((user, password)) = &target.credentials {
                    builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
                }
                Ok(Deliver::Email {
                    target: target.clone(),
                    transport: builder.build(),
                })
            }
        }
    }

    /// One delivery attempt of `message`.
    fn send(self: &Arc<Self>, message: Message, alert: &str, node: &str) -> Delivery {
        let this = self.clone();
        let alert = alert.to_owned();
        let node = node.to_owned();
        Box::pin(async move {
            match &*this {
                Deliver::Webhook { target, client } => {
                    webhook(client, target, &message, &alert, &node).await
                }
                Deliver::Email { target, transport } => {
                    email(transport, target, &message, &alert, &node).await
                }
            }
        })
    }
}

async fn webhook(
    client: &reqwest::Client,
    target: &WebhookTarget,
    message: &Message,
    alert: &str,
    node: &str,
) -> Result<(), String> {
    let body = match target.format {
        Format::Json => serde_json::to_vec(&message.document(alert, node)),
        Format::Slack => serde_json::to_vec(&serde_json::json!({ "text": message.text(node) })),
    }
    .map_err(|e| format!("cannot encode the message: {e}"))?;
    let mut req = client
        .post(target.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = &target.secret {
        // Wall-clock time: the receiver compares it with its own clock.
        let timestamp = now_unix_ms() / 1000;
        req = req
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, sign(secret, timestamp, &body));
    }
    let shown = config::shown_url(&target.url);
    let resp = req.body(body).send().await.map_err(|e| {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        format!("POST {shown}: {detail}")
    })?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("POST {shown} answered {status}"))
    }
}

async fn email(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    target: &EmailTarget,
    message: &Message,
    alert: &str,
    node: &str,
) -> Result<(), String> {
    let mut builder = lettre::Message::builder()
        .from(target.from.parse().map_err(|e| format!("from: {e}"))?)
        .subject(message.subject(node))
        .header(ContentType::TEXT_PLAIN);
    for to in &target.to {
        builder = builder.to(to.parse().map_err(|e| format!("to {to:?}: {e}"))?);
    }
    let email = builder
        .body(message.body(alert, node))
        .map_err(|e| format!("cannot build the email: {e}"))?;
    transport
        .send(email)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP {}:{}: {e}", target.server, target.port))
}
