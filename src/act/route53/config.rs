//! The `route53` writer's configuration: its options as written ([`RawRoute53`]), their validation,
//! the validated [`Route53Config`], and where the AWS credentials come from ([`AwsCredentials`]): the
//! config file, else the environment, else the shared credentials file, as the AWS tools look
//! (<https://docs.aws.amazon.com/sdkref/latest/guide/file-format.html>,
//! <https://docs.aws.amazon.com/sdkref/latest/guide/feature-static-credentials.html>).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::act::api;
use crate::config::SecretKeys;
use crate::config::Seg::{self, Key};
use crate::config::{Errors, SecretSource, read_secret_as, with};

/// The Route 53 API (a global service: one endpoint for every commercial region).
pub const DEFAULT_ROUTE53_ENDPOINT: &str = "https://route53.amazonaws.com";
/// The region requests are signed for (Route 53 signs in us-east-1 outside China and GovCloud).
pub const DEFAULT_ROUTE53_REGION: &str = "us-east-1";
/// Requests per second, per writer: Route 53 allows five per account
/// (<https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/DNSLimitations.html#limits-api-requests>).
pub const DEFAULT_ROUTE53_RATE: u32 = 5;
/// Longest wait for a change to reach `INSYNC` with `wait_insync = true`.
pub const DEFAULT_INSYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// `type = "route53"`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Route53Config {
    /// The hosted zone's ID, without the `/hostedzone/` prefix.
    pub hosted_zone_id: String,
    /// The API's base URL.
    pub endpoint: Url,
    /// The region requests are signed for.
    pub region: String,
    /// Credentials from the config file; `None` looks in the environment and the shared
    /// credentials file when the writer is built.
    pub credentials: Option<AwsCredentials>,
    /// The profile of the shared credentials file, when set in the config.
    pub profile: Option<String>,
    /// Limit of one HTTP exchange.
    pub timeout: Duration,
    /// After a change, wait until Route 53 reports it `INSYNC` (GetChange), so that reads show it.
    pub wait_insync: bool,
}

/// An AWS access key. `Debug` never shows the secret or the session token.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// The access key ID (`AKIA…`, or `ASIA…` for temporary credentials).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token of temporary credentials.
    pub session_token: Option<String>,
    /// Where they came from, for messages ("the config file", "the environment", a file's path).
    pub source: String,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("source", &self.source)
            .finish()
    }
}

impl AwsCredentials {
    /// The credentials of the environment, as the AWS tools find them: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and optional `AWS_SESSION_TOKEN`; else the profile (`profile`, else
    /// `AWS_PROFILE`, else `default`) of the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`,
    /// else `~/.aws/credentials`). `env` reads a variable.
    ///
    /// # Errors
    /// A message naming every place looked at and how to give credentials.
    pub fn from_environment(
        env: impl Fn(&str) -> Option<String>,
        profile: Option<&str>,
    ) -> Result<Self, String> {
        let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            return Ok(AwsCredentials {
                access_key_id: id.trim().to_owned(),
                secret_access_key: secret.trim().to_owned(),
                session_token: var("AWS_SESSION_TOKEN").map(|t| t.trim().to_owned()),
                source: "the environment (AWS_ACCESS_KEY_ID)".to_owned(),
            });
        }
        let profile = profile
            .map(str::to_owned)
            .or_else(|| var("AWS_PROFILE"))
            .unwrap_or_else(|| "default".to_owned());
        let file = match var("AWS_SHARED_CREDENTIALS_FILE") {
            Some(f) => PathBuf::from(f),
            None => match var("HOME") {
                Some(home) => Path::new(&home).join(".aws").join("credentials"),
                None => {
                    return Err(
                        "no AWS credentials: set access_key_id and secret_access_key in the writer, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, or AWS_SHARED_CREDENTIALS_FILE (HOME is not set, so ~/.aws/credentials cannot be found)".to_owned(),
                    );
                }
            },
        };
        let text = std::fs::read_to_string(&file).map_err(|e| {
            format!(
                "no AWS credentials: none in the writer's config, AWS_ACCESS_KEY_ID is not set, and the shared credentials file {} cannot be read ({e}); give credentials in one of these places",
                file.display()
            )
        })?;
        from_credentials_file(&text, &profile)
            .map(|(id, secret, token)| AwsCredentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: token,
                source: format!("{} [{profile}]", file.display()),
            })
            .map_err(|m| format!("{}: {m}", file.display()))
    }
}

/// Access key ID, secret and session token of `profile` in a shared credentials file (INI: `[name]`
/// sections of `key = value` lines, `#` and `;` comments).
fn from_credentials_file(
    text: &str,
    profile: &str,
) -> Result<(String, String, Option<String>), String> {
    let mut section: Option<&str> = None;
    let mut found = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    let mut profiles = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            profiles.push(name.to_owned());
            section = Some(name);
            found |= name == profile;
            continue;
        }
        if section != Some(profile) {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    if !found {
        return Err(format!(
            "no profile [{profile}] (profiles: {}); set `profile` in the writer or AWS_PROFILE",
            if profiles.is_empty() {
                "none".to_owned()
            } else {
                profiles.join(", ")
            }
        ));
    }
    match (id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok((id, secret, token)),
        _ => Err(format!(
            "profile [{profile}] needs aws_access_key_id and aws_secret_access_key"
        )),
    }
}

/// `[[writer]]` options of `type = "route53"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute53 {
    /// Name services refer to.
    pub name: String,
    /// The hosted zone's ID (`Z0123456789ABCDEFGHIJ`, or `/hostedzone/Z…`).
    pub hosted_zone_id: String,
    /// API base URL.
    pub endpoint: Option<String>,
    /// Signing region.
    pub region: Option<String>,
    /// Access key ID.
    pub access_key_id: Option<String>,
    /// Secret access key, inline.
    pub secret_access_key: Option<String>,
    /// File holding the secret access key.
    pub secret_access_key_file: Option<String>,
    /// Profile of the shared credentials file.
    pub profile: Option<String>,
    /// Limit of one HTTP exchange.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub timeout: Option<Duration>,
    /// Wait for INSYNC after each change.
    #[serde(default)]
    pub wait_insync: bool,
}

/// Validates the writer at key path `wpath`; a relative `secret_access_key_file` is read from
/// `base_dir`. Problems go to `errs`, and then `None` is returned.
pub(crate) fn validate(
    r: &RawRoute53,
    wpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<Route53Config> {
    let before = errs.len();
    let id = r.hosted_zone_id.trim();
    let id = id.strip_prefix("/hostedzone/").unwrap_or(id);
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        errs.at(
            &with(wpath, &[Key("hosted_zone_id")]),
            format!(
                "hosted_zone_id {:?} is not a Route 53 hosted zone ID; copy it from `aws route53 list-hosted-zones` (like \"Z0123456789ABCDEFGHIJ\")",
                r.hosted_zone_id
            ),
        );
    }
    let endpoint = api::endpoint(
        r.endpoint.as_deref(),
        DEFAULT_ROUTE53_ENDPOINT,
        &with(wpath, &[Key("endpoint")]),
        errs,
    );
    let region = r
        .region
        .clone()
        .unwrap_or_else(|| DEFAULT_ROUTE53_REGION.to_owned());
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        errs.at(
            &with(wpath, &[Key("region")]),
            format!("region {region:?} is not an AWS region name like \"us-east-1\""),
        );
    }
    let credentials = credentials(r, wpath, base_dir, errs);
    if let Some(p) = &r.profile
        && (p.trim().is_empty() || r.access_key_id.is_some())
    {
        errs.at(
            &with(wpath, &[Key("profile")]),
            if p.trim().is_empty() {
                "profile must not be empty"
            } else {
                "profile names credentials in the shared credentials file; with access_key_id in the writer it has no use: remove one of them"
            },
        );
    }
    let timeout = api::timeout(r.timeout, wpath, errs);
    if errs.len() > before {
        return None;
    }
    Some(Route53Config {
        hosted_zone_id: id.to_owned(),
        endpoint: endpoint?,
        region,
        credentials,
        profile: r.profile.clone(),
        timeout,
        wait_insync: r.wait_insync,
    })
}

/// Credentials written in the config: `access_key_id` with `secret_access_key[_file]`, or neither.
fn credentials(
    r: &RawRoute53,
    wpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<AwsCredentials> {
    let has_secret = r.secret_access_key.is_some() || r.secret_access_key_file.is_some();
    let id = match (&r.access_key_id, has_secret) {
        (None, false) => return None,
        (None, true) => {
            errs.at(
                &with(wpath, &[Key("access_key_id")]),
                "a secret access key needs its access_key_id = \"AKIA…\" beside it",
            );
            return None;
        }
        (Some(id), _) => id.trim(),
    };
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        errs.at(
            &with(wpath, &[Key("access_key_id")]),
            format!(
                "access_key_id {id:?} is not an AWS access key ID (like \"AKIAIOSFODNN7EXAMPLE\")"
            ),
        );
    }
    let source = SecretSource {
        inline: r.secret_access_key.as_deref(),
        file: r.secret_access_key_file.as_deref(),
    };
    let keys = SecretKeys {
        inline: "secret_access_key",
        file: "secret_access_key_file",
    };
    let missing =
        "access_key_id needs `secret_access_key = \"…\"` or `secret_access_key_file = \"PATH\"`";
    let text = read_secret_as(source, keys, wpath, "AWS", missing, base_dir, errs)?;
    let secret = text.text().trim();
    if secret.is_empty() {
        errs.at(text.at(), "the secret access key is empty");
        return None;
    }
    Some(AwsCredentials {
        access_key_id: id.to_owned(),
        secret_access_key: secret.to_owned(),
        session_token: None,
        source: "the config file".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::{ConfigError, WriterKind, parse};

    /// The route53 writer of a config whose writer section has `options`, or the problems.
    fn parse_writer(options: &str) -> Result<Route53Config, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("aws.secret"), "c2VjcmV0\n").unwrap();
        let text = format!(
            "[[writer]]\nname = \"aws\"\ntype = \"route53\"\n{options}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"aws\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n"
        );
        match parse(&dir.path().join("rrguard.toml"), &text) {
            Ok(c) => match &c.writers[0].kind {
                WriterKind::Route53(w) => Ok(w.clone()),
                other => panic!("{other:?}"),
            },
            Err(ConfigError::Invalid { problems, .. }) => {
                Err(problems.into_iter().map(|p| p.message).collect())
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn options_are_validated_with_defaults() {
        let c = parse_writer("hosted_zone_id = \"/hostedzone/Z123ABC\"").unwrap();
        assert_eq!(c.hosted_zone_id, "Z123ABC");
        assert_eq!(c.endpoint.as_str(), "https://route53.amazonaws.com/");
        assert_eq!(c.region, DEFAULT_ROUTE53_REGION);
        assert_eq!(c.credentials, None);
        assert_eq!(c.timeout, crate::act::api::DEFAULT_API_TIMEOUT);
        let c = parse_writer(
            "hosted_zone_id = \"Z1\"\naccess_key_id = \"AKID1\"\nsecret_access_key_file = \"aws.secret\"\nendpoint = \"http://127.0.0.1:9\"\nwait_insync = true",
        )
        .unwrap();
        let creds = c.credentials.unwrap();
        assert_eq!(creds.secret_access_key, "c2VjcmV0");
        assert!(!format!("{creds:?}").contains("c2VjcmV0"));
        assert!(c.wait_insync);
        let problems = parse_writer(
            "hosted_zone_id = \"\"\nendpoint = \"route53.amazonaws.com\"\naccess_key_id = \"AKID1\"\nprofile = \"p\"",
        )
        .unwrap_err();
        let all = problems.join("\n");
        for want in [
            "hosted_zone_id \"\" is not a Route 53 hosted zone ID",
            "endpoint \"route53.amazonaws.com\" is not an http(s) URL",
            "access_key_id needs `secret_access_key = \"…\"` or `secret_access_key_file = \"PATH\"`",
            "with access_key_id in the writer it has no use",
        ] {
            assert!(all.contains(want), "{want:?} not in {all}");
        }
        let both = parse_writer(
            "hosted_zone_id = \"Z1\"\naccess_key_id = \"AKID1\"\nsecret_access_key = \"x\"\nsecret_access_key_file = \"aws.secret\"",
        )
        .unwrap_err();
        assert!(
            both[0]
                .contains("set either `secret_access_key` or `secret_access_key_file`, not both"),
            "{both:?}"
        );
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_environment_comes_before_the_file() {
        let c = AwsCredentials::from_environment(
            env(&[
                ("AWS_ACCESS_KEY_ID", "AKIDENV"),
                ("AWS_SECRET_ACCESS_KEY", "s"),
                ("AWS_SESSION_TOKEN", "tok"),
                ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(c.access_key_id, "AKIDENV");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert!(!format!("{c:?}").contains("tok\""));
    }

    #[test]
    fn the_profile_is_read_from_the_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "# comment\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = d\n\n[ops]\naws_access_key_id=AKIDOPS\naws_secret_access_key=o\naws_session_token = t\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let get = |vars: &[(&str, &str)], profile| {
            let mut all = vec![("AWS_SHARED_CREDENTIALS_FILE", path)];
            all.extend_from_slice(vars);
            AwsCredentials::from_environment(env(&all), profile)
        };
        assert_eq!(get(&[], None).unwrap().access_key_id, "AKIDDEFAULT");
        assert_eq!(
            get(&[("AWS_PROFILE", "ops")], None).unwrap().access_key_id,
            "AKIDOPS"
        );
        let ops = get(&[("AWS_PROFILE", "default")], Some("ops")).unwrap();
        assert_eq!(ops.secret_access_key, "o");
        assert_eq!(ops.session_token.as_deref(), Some("t"));
        let missing = get(&[], Some("prod")).unwrap_err();
        assert!(
            missing.contains("no profile [prod] (profiles: default, ops)"),
            "{missing}"
        );
        let home =
            AwsCredentials::from_environment(env(&[("HOME", "/nonexistent")]), None).unwrap_err();
        assert!(home.contains("/nonexistent/.aws/credentials"), "{home}");
    }
}
