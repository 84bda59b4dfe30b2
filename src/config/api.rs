//! `[api]`: who may use the node's HTTP API on `[node].listen`.
//!
//! ```toml
//! [api]
//! token_file = "/etc/rrguard/api.token"   # or token = "…"; the bearer token mutations need
//! read = "public"                         # or "token": reads need the token too
//! ```
//!
//! Without a token, mutations (`POST`/`DELETE /api/v1/overrides`) are refused with 403 and reads stay
//! public. The token is the file's text, trimmed, at least [`MIN_API_TOKEN_LEN`] bytes.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::locate::Seg::{self, Key};
use super::secret::{SecretKeys, SecretSource, read_secret_as};
use super::validate::{Errors, with};

/// Shortest accepted API token, bytes.
pub const MIN_API_TOKEN_LEN: usize = 16;

/// `[api]`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    /// The bearer token inline.
    pub token: Option<String>,
    /// File holding the bearer token, relative to the configuration file.
    pub token_file: Option<String>,
    /// `public` (default) or `token`.
    pub read: Option<String>,
}

/// Whether reads need the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadAccess {
    /// Anyone who reaches `[node].listen` may read. The default.
    #[default]
    Public,
    /// Reads need the bearer token too.
    Token,
}

impl fmt::Display for ReadAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadAccess::Public => "public",
            ReadAccess::Token => "token",
        })
    }
}

/// `[api]`, validated.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ApiSettings {
    /// The bearer token; `None`: mutations are refused.
    pub token: Option<Vec<u8>>,
    /// Who may read.
    pub read: ReadAccess,
}

impl fmt::Debug for ApiSettings {
    // Never print the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiSettings")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("read", &self.read)
            .finish()
    }
}

/// Validates `[api]`; problems go to `errs`.
pub(crate) fn api(raw: Option<&RawApi>, base_dir: &Path, errs: &mut Errors) -> ApiSettings {
    let Some(raw) = raw else {
        return ApiSettings::default();
    };
    let apath: [Seg; 1] = [Key("api")];
    let read = match raw.read.as_deref() {
        None | Some("public") => ReadAccess::Public,
        Some("token") => ReadAccess::Token,
        Some(other) => {
            errs.at(
                &with(&apath, &[Key("read")]),
                format!("read = {other:?} is not one of \"public\", \"token\""),
            );
            ReadAccess::Public
        }
    };
    let token = if raw.token.is_none() && raw.token_file.is_none() {
        None
    } else {
        let source = SecretSource {
            inline: raw.token.as_deref(),
            file: raw.token_file.as_deref(),
        };
        let keys = SecretKeys {
            inline: "token",
            file: "token_file",
        };
        read_secret_as(source, keys, &apath, "API token", "", base_dir, errs).and_then(|text| {
            let token = text.text().trim().as_bytes().to_vec();
            if token.len() < MIN_API_TOKEN_LEN {
                errs.at(
                    text.at(),
                    format!(
                        "API token has {} bytes, at least {MIN_API_TOKEN_LEN} are needed; generate one with `head -c32 /dev/urandom | base64`",
                        token.len()
                    ),
                );
                return None;
            }
            Some(token)
        })
    };
    if read == ReadAccess::Token
        && token.is_none()
        && raw.token.is_none()
        && raw.token_file.is_none()
    {
        errs.at(
            &with(&apath, &[Key("read")]),
            "read = \"token\" needs a token: set token_file = \"PATH\" in [api]",
        );
    }
    ApiSettings { token, read }
}
