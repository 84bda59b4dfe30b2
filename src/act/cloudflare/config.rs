//! The `cloudflare` writer's configuration: its options as written ([`RawCloudflare`]), their
//! validation, and the validated [`CloudflareConfig`].

use std::path::Path;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::act::api::{self, ApiToken};
use crate::config::Seg::{self, Key};
use crate::config::{Errors, with};

/// Cloudflare's API v4.
pub const DEFAULT_CLOUDFLARE_ENDPOINT: &str = "https://api.cloudflare.com/client/v4";
/// Requests per second, per writer: Cloudflare allows 1,200 per five minutes per user
/// (<https://developers.cloudflare.com/fundamentals/api/reference/limits/>).
pub const DEFAULT_CLOUDFLARE_RATE: u32 = 4;

/// `type = "cloudflare"`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudflareConfig {
    /// The zone's ID (32 hex digits, from the zone's Overview page).
    pub zone_id: String,
    /// The API token (sent as `Authorization: Bearer …`).
    pub token: ApiToken,
    /// Records created are proxied through Cloudflare.
    pub proxied: bool,
    /// The API's base URL.
    pub endpoint: Url,
    /// Limit of one HTTP exchange.
    pub timeout: Duration,
}

/// `[[writer]]` options of `type = "cloudflare"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloudflare {
    /// Name services refer to.
    pub name: String,
    /// Zone ID.
    pub zone_id: String,
    /// API token, inline.
    pub token: Option<String>,
    /// File holding the API token.
    pub token_file: Option<String>,
    /// Create proxied records.
    #[serde(default)]
    pub proxied: bool,
    /// API base URL.
    pub endpoint: Option<String>,
    /// Limit of one HTTP exchange.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub timeout: Option<Duration>,
}

/// Validates the writer at key path `wpath`; a relative `token_file` is read from `base_dir`.
/// Problems go to `errs`, and then `None` is returned.
pub(crate) fn validate(
    r: &RawCloudflare,
    wpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<CloudflareConfig> {
    let before = errs.len();
    let zone_id = r.zone_id.trim();
    if zone_id.len() != 32 || !zone_id.chars().all(|c| c.is_ascii_hexdigit()) {
        errs.at(
            &with(wpath, &[Key("zone_id")]),
            format!(
                "zone_id {:?} is not a Cloudflare zone ID (32 hex digits, shown as \"Zone ID\" on the zone's Overview page)",
                r.zone_id
            ),
        );
    }
    let token = api::token(
        r.token.as_deref(),
        r.token_file.as_deref(),
        wpath,
        "Cloudflare API token",
        base_dir,
        errs,
    );
    let endpoint = api::endpoint(
        r.endpoint.as_deref(),
        DEFAULT_CLOUDFLARE_ENDPOINT,
        &with(wpath, &[Key("endpoint")]),
        errs,
    );
    let timeout = api::timeout(r.timeout, wpath, errs);
    if errs.len() > before {
        return None;
    }
    Some(CloudflareConfig {
        zone_id: zone_id.to_ascii_lowercase(),
        token: token?,
        proxied: r.proxied,
        endpoint: endpoint?,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, WriterKind, parse};

    /// The writer of a config whose only writer section is `writer`, or the problems.
    fn parse_writer(writer: &str) -> Result<WriterKind, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api.token"), "  tok-from-file\n").unwrap();
        let text = format!(
            "[[writer]]\nname = \"w\"\n{writer}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"w\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n"
        );
        match parse(&dir.path().join("rrguard.toml"), &text) {
            Ok(c) => Ok(c.writers[0].kind.clone()),
            Err(ConfigError::Invalid { problems, .. }) => {
                Err(problems.into_iter().map(|p| p.message).collect())
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn token_writers_validate_their_options() {
        let zone = "023e105f4ecef8ad9ca31a8372d0c353";
        let Ok(WriterKind::Cloudflare(c)) = parse_writer(&format!(
            "type = \"cloudflare\"\nzone_id = \"{zone}\"\ntoken_file = \"api.token\"\nproxied = true"
        )) else {
            panic!("not a cloudflare writer")
        };
        assert_eq!(c.token.expose(), "tok-from-file");
        assert!(c.proxied);
        assert_eq!(c.endpoint.as_str(), "https://api.cloudflare.com/client/v4");
        assert!(!format!("{c:?}").contains("tok-from-file"));
        let problems = parse_writer(
            "type = \"cloudflare\"\nzone_id = \"example.com\"\ntoken = \"a\"\ntoken_file = \"api.token\"\nendpoint = \"ftp://x\"",
        )
        .unwrap_err()
        .join("\n");
        for want in [
            "zone_id \"example.com\" is not a Cloudflare zone ID",
            "set either `token` or `token_file`, not both",
            "endpoint \"ftp://x\" is not an http(s) URL",
        ] {
            assert!(problems.contains(want), "{want:?} not in {problems}");
        }
        let missing = parse_writer(&format!("type = \"cloudflare\"\nzone_id = \"{zone}\""))
            .unwrap_err()
            .join("\n");
        assert!(
            missing.contains(
                "Cloudflare API token needed: set `token = \"…\"` or `token_file = \"PATH\"`"
            ),
            "{missing}"
        );
        let Ok(WriterKind::DigitalOcean(d)) =
            parse_writer("type = \"digitalocean\"\ntoken = \"t\"\ndomain = \"Example.COM.\"")
        else {
            panic!("not a digitalocean writer")
        };
        assert_eq!(d.domain.as_deref(), Some("example.com"));
        let Ok(WriterKind::Dynu(y)) = parse_writer("type = \"dynu\"\ntoken = \"k\"") else {
            panic!("not a dynu writer")
        };
        assert_eq!(
            (y.domain_id, y.endpoint.as_str()),
            (None, "https://api.dynu.com/v2")
        );
        let zero = parse_writer("type = \"dynu\"\ntoken = \"k\"\ndomain_id = 0")
            .unwrap_err()
            .join("\n");
        assert!(zero.contains("domain_id must be"), "{zero}");
        let spaced = parse_writer("type = \"dynu\"\ntoken = \"two words\"")
            .unwrap_err()
            .join("\n");
        assert!(spaced.contains("must be one word"), "{spaced}");
    }
}
