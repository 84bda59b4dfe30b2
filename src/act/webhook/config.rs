//! The `webhook` writer's configuration: its options as written ([`RawWebhook`]), their validation
//! (problems reported by key path) and the validated [`WebhookConfig`] the writer is built from. The
//! signing secret's source (inline or file) is read by the config's shared secret helper; the text
//! itself (trimmed) is the HMAC key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Seg::{self, Key};
use crate::config::{Errors, SecretSource, read_secret, with};

/// Default limit of one request, connection included.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest accepted signing secret, bytes.
pub const MIN_WEBHOOK_SECRET_LEN: usize = 16;
/// Headers rrguard sets itself; `headers` cannot replace them.
pub const RESERVED_HEADERS: [&str; 4] = [
    "content-type",
    "x-rrguard-timestamp",
    "x-rrguard-signature",
    "content-length",
];

/// `[[writer]]` options of `type = "webhook"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Name services refer to.
    pub name: String,
    /// Where to POST, `http://` or `https://`.
    pub url: String,
    /// HMAC-SHA256 signing key inline.
    pub secret: Option<String>,
    /// File holding the signing key.
    pub secret_file: Option<String>,
    /// Limit of one request.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub timeout: Option<Duration>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The receiver checks the precondition atomically with the change and answers 409 when it fails.
    pub compare_and_swap: Option<bool>,
    /// A `read` right after an `apply` shows the change.
    pub read_back: Option<bool>,
}

/// `type = "webhook"`, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: reqwest::Url,
    /// The HMAC-SHA256 key.
    pub secret: Vec<u8>,
    /// Limit of one request.
    pub timeout: Duration,
    /// Extra request headers, valid HTTP, none of [`RESERVED_HEADERS`].
    pub headers: Vec<(String, String)>,
    /// Declared compare-and-swap (default false).
    pub compare_and_swap: bool,
    /// Declared read-back (default true).
    pub read_back: bool,
}

impl fmt::Debug for WebhookConfig {
    // Never print the secret, nor header values (they often carry tokens).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &shown_url(&self.url))
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("compare_and_swap", &self.compare_and_swap)
            .field("read_back", &self.read_back)
            .finish()
    }
}

/// Validates the writer at key path `wpath`; a relative `secret_file` is read from `base_dir`.
/// Problems go to `errs`, and then `None` is returned.
pub(crate) fn validate(
    r: &RawWebhook,
    wpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<WebhookConfig> {
    let before = errs.len();
    let url = url(&r.url)
        .map_err(|m| errs.at(&with(wpath, &[Key("url")]), m))
        .ok();
    let source = SecretSource {
        inline: r.secret.as_deref(),
        file: r.secret_file.as_deref(),
    };
    let missing = "a webhook needs `secret_file = \"PATH\"` (or `secret`): the key its requests are signed with";
    let secret = read_secret(source, wpath, "webhook", missing, base_dir, errs).and_then(|text| {
        let secret = text.text().trim().as_bytes().to_vec();
        if secret.len() < MIN_WEBHOOK_SECRET_LEN {
            errs.at(
                text.at(),
                format!(
                    "webhook secret has {} bytes, at least {MIN_WEBHOOK_SECRET_LEN} are needed; generate one with `head -c32 /dev/urandom | base64`",
                    secret.len()
                ),
            );
            return None;
        }
        Some(secret)
    });
    let headers = headers(&r.headers, &with(wpath, &[Key("headers")]), errs);
    if errs.len() != before {
        return None;
    }
    Some(WebhookConfig {
        url: url?,
        secret: secret?,
        timeout: r.timeout.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT),
        headers,
        compare_and_swap: r.compare_and_swap.unwrap_or(false),
        read_back: r.read_back.unwrap_or(true),
    })
}

/// `url` as logs and messages show it: the query string, which may carry a token, replaced by `?…`.
pub fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    shown.set_fragment(None);
    if url.query().is_some() {
        shown.set_query(None);
        return format!("{shown}?…");
    }
    shown.to_string()
}

/// An absolute `http://` or `https://` URL without credentials.
fn url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|e| {
        format!(
            "url {text:?} is not a URL ({e}); write it like \"https://hooks.example.net/rrguard\""
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "url {text:?} must be http:// or https:// with a host, like \"https://hooks.example.net/rrguard\""
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "url {:?} holds credentials; put them in `headers` (e.g. Authorization) so they stay out of logs",
            url.host_str().unwrap_or_default()
        ));
    }
    Ok(url)
}

/// The valid `headers` at `at`; each invalid or reserved one is reported.
fn headers(raw: &BTreeMap<String, String>, at: &[Seg], errs: &mut Errors) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for (k, v) in raw {
        if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
            errs.at(
                at,
                format!("header {k:?} is set by rrguard itself; remove it from `headers`"),
            );
        } else if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(v).is_err()
        {
            errs.at(at, format!("header {k:?} is not a valid HTTP header"));
        } else {
            headers.push((k.clone(), v.clone()));
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, WriterKind, parse};

    fn webhook(options: &str) -> Result<super::WebhookConfig, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hook.secret"),
            "0123456789abcdef-from-file\n",
        )
        .unwrap();
        let text = format!(
            "[[writer]]\nname = \"w\"\ntype = \"webhook\"\n{options}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"w\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n"
        );
        match parse(&dir.path().join("rrguard.toml"), &text) {
            Ok(c) => match &c.writers[0].kind {
                WriterKind::Webhook(w) => Ok(w.clone()),
                other => panic!("{other:?}"),
            },
            Err(ConfigError::Invalid { problems, .. }) => {
                Err(problems.into_iter().map(|p| p.message).collect())
            }
            Err(e) => Err(vec![e.to_string()]),
        }
    }

    #[test]
    fn defaults_file_secret_and_redaction() {
        let q = webhook(
            "url = \"https://hooks.example.net/dns?token=t0ken\"\nsecret = \"0123456789abcdef\"",
        )
        .unwrap();
        assert_eq!(super::shown_url(&q.url), "https://hooks.example.net/dns?…");
        assert!(!format!("{q:?}").contains("t0ken"));
        let w = webhook("url = \"https://hooks.example.net/dns\"\nsecret_file = \"hook.secret\"\nheaders = { Authorization = \"Bearer t0ken\" }").unwrap();
        assert_eq!(w.secret, b"0123456789abcdef-from-file");
        assert_eq!(w.timeout, super::DEFAULT_WEBHOOK_TIMEOUT);
        assert!(!w.compare_and_swap && w.read_back);
        let shown = format!("{w:?}");
        assert!(
            !shown.contains("t0ken") && !shown.contains("from-file"),
            "{shown}"
        );
        let w = webhook("url = \"http://127.0.0.1:8080/h\"\nsecret = \"0123456789abcdef\"\ntimeout = \"2s\"\ncompare_and_swap = true\nread_back = false").unwrap();
        assert!(w.compare_and_swap && !w.read_back);
    }

    #[test]
    fn problems_name_the_fix() {
        let cases = [
            (
                "url = \"hooks.example.net\"\nsecret = \"0123456789abcdef\"",
                "is not a URL",
            ),
            (
                "url = \"ftp://h/x\"\nsecret = \"0123456789abcdef\"",
                "must be http:// or https://",
            ),
            (
                "url = \"https://u:p@h/x\"\nsecret = \"0123456789abcdef\"",
                "holds credentials",
            ),
            (
                "url = \"https://h/x\"\nsecret = \"short\"",
                "at least 16 are needed",
            ),
            ("url = \"https://h/x\"", "needs `secret_file"),
            (
                "url = \"https://h/x\"\nsecret = \"0123456789abcdef\"\nheaders = { \"X-Rrguard-Signature\" = \"x\" }",
                "set by rrguard itself",
            ),
            (
                "url = \"https://h/x\"\nsecret = \"0123456789abcdef\"\nheaders = { \"Bad Header\" = \"x\" }",
                "not a valid HTTP header",
            ),
        ];
        for (options, says) in cases {
            let problems = webhook(options).unwrap_err();
            assert!(
                problems.iter().any(|p| p.contains(says)),
                "{options}: {problems:?}"
            );
        }
    }
}
