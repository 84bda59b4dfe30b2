//! The `digitalocean` writer's configuration: its options as written ([`RawDigitalOcean`]), their
//! validation, and the validated [`DigitalOceanConfig`].

use std::path::Path;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::act::api::{self, ApiToken};
use crate::config::Seg::{self, Key};
use crate::config::{Errors, normalize_name, with};

/// DigitalOcean's API.
pub const DEFAULT_DIGITALOCEAN_ENDPOINT: &str = "https://api.digitalocean.com";
/// Requests per second, per writer: DigitalOcean allows 250 a minute and 5,000 an hour per token
/// (<https://docs.digitalocean.com/reference/api/digitalocean/#section/Introduction/Rate-Limit>).
pub const DEFAULT_DIGITALOCEAN_RATE: u32 = 4;

/// `type = "digitalocean"`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitalOceanConfig {
    /// The domain (DigitalOcean's name for a zone), lower case without trailing dot; `None` uses
    /// each service's `zone`.
    pub domain: Option<String>,
    /// The API token (sent as `Authorization: Bearer …`).
    pub token: ApiToken,
    /// The API's base URL.
    pub endpoint: Url,
    /// Limit of one HTTP exchange.
    pub timeout: Duration,
}

/// `[[writer]]` options of `type = "digitalocean"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDigitalOcean {
    /// Name services refer to.
    pub name: String,
    /// The domain, when it is not the services' zone.
    pub domain: Option<String>,
    /// API token, inline.
    pub token: Option<String>,
    /// File holding the API token.
    pub token_file: Option<String>,
    /// API base URL.
    pub endpoint: Option<String>,
    /// Limit of one HTTP exchange.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub timeout: Option<Duration>,
}

/// Validates the writer at key path `wpath`; a relative `token_file` is read from `base_dir`.
/// Problems go to `errs`, and then `None` is returned.
pub(crate) fn validate(
    r: &RawDigitalOcean,
    wpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<DigitalOceanConfig> {
    let before = errs.len();
    let domain = r.domain.as_ref().and_then(|d| match normalize_name(d) {
        Ok(n) => Some(n.trim_end_matches('.').to_owned()),
        Err(_) => {
            errs.at(
                &with(wpath, &[Key("domain")]),
                format!("domain {d:?} is not a DNS name like \"example.com\""),
            );
            None
        }
    });
    let token = api::token(
        r.token.as_deref(),
        r.token_file.as_deref(),
        wpath,
        "DigitalOcean API token",
        base_dir,
        errs,
    );
    let endpoint = api::endpoint(
        r.endpoint.as_deref(),
        DEFAULT_DIGITALOCEAN_ENDPOINT,
        &with(wpath, &[Key("endpoint")]),
        errs,
    );
    let timeout = api::timeout(r.timeout, wpath, errs);
    if errs.len() > before {
        return None;
    }
    Some(DigitalOceanConfig {
        domain,
        token: token?,
        endpoint: endpoint?,
        timeout,
    })
}
