//! The `dynu` writer's configuration: its options as written ([`RawDynu`]), their validation, and
//! the validated [`DynuConfig`].

use std::path::Path;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::act::api::{self, ApiToken};
use crate::config::Seg::{self, Key};
use crate::config::{Errors, with};

/// Dynu's API v2.
pub const DEFAULT_DYNU_ENDPOINT: &str = "https://api.dynu.com/v2";
/// Requests per second, per writer. Dynu documents no rate limit; this keeps rrguard gentle.
pub const DEFAULT_DYNU_RATE: u32 = 2;

/// `type = "dynu"`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DynuConfig {
    /// The domain's ID at Dynu; `None` looks it up by each service's `zone` (`GET /dns`).
    pub domain_id: Option<u64>,
    /// The API key (sent as `API-Key: …`).
    pub token: ApiToken,
    /// The API's base URL.
    pub endpoint: Url,
    /// Limit of one HTTP exchange.
    pub timeout: Duration,
}

/// `[[writer]]` options of `type = "dynu"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDynu {
    /// Name services refer to.
    pub name: String,
    /// The domain's ID, instead of a look-up by zone name.
    pub domain_id: Option<u64>,
    /// API key, inline.
    pub token: Option<String>,
    /// File holding the API key.
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
    r: &RawDynu,
    wpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<DynuConfig> {
    let before = errs.len();
    if r.domain_id == Some(0) {
        errs.at(
            &with(wpath, &[Key("domain_id")]),
            "domain_id must be the domain's ID at Dynu (a positive number), or left out to look it up by the zone's name",
        );
    }
    let token = api::token(
        r.token.as_deref(),
        r.token_file.as_deref(),
        wpath,
        "Dynu API key",
        base_dir,
        errs,
    );
    let endpoint = api::endpoint(
        r.endpoint.as_deref(),
        DEFAULT_DYNU_ENDPOINT,
        &with(wpath, &[Key("endpoint")]),
        errs,
    );
    let timeout = api::timeout(r.timeout, wpath, errs);
    if errs.len() > before {
        return None;
    }
    Some(DynuConfig {
        domain_id: r.domain_id,
        token: token?,
        endpoint: endpoint?,
        timeout,
    })
}
