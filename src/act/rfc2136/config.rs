//! The `rfc2136` writer's configuration: its options as written ([`RawRfc2136`], [`RawTsig`]), their
//! validation (problems reported by key path, which the central config turns into `FILE:LINE:COL`),
//! and the validated [`Rfc2136Config`] the writer is built from. The TSIG secret's source (inline or
//! file) is read by the config's shared secret helper; what a key file means, and which of its keys
//! is used, is [`super::key_file`]'s business.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use super::key_file;
use crate::config::Seg::{self, Index, Key};
use crate::config::{Errors, SecretSource, SecretText, normalize_name, read_secret, with};

/// Default port of a DNS server given without one.
pub const DEFAULT_DNS_PORT: u16 = 53;
/// Default timeout of one DNS exchange with a writer's server.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(3);

/// `type = "rfc2136"`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Rfc2136Config {
    /// Servers in order of preference; the first is the primary.
    pub servers: Vec<SocketAddr>,
    /// TSIG key.
    pub tsig: TsigConfig,
    /// Timeout of one DNS exchange.
    pub timeout: Duration,
}

/// TSIG algorithms rrguard signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TsigAlgorithm {
    /// hmac-sha256.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// hmac-sha512.
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

impl TsigAlgorithm {
    /// The config spelling, which is also how BIND and Knot name it.
    pub fn as_str(self) -> &'static str {
        match self {
            TsigAlgorithm::HmacSha256 => "hmac-sha256",
            TsigAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }
}

impl fmt::Display for TsigAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TSIG key with its secret decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigConfig {
    /// Key name, as known to the server.
    pub name: String,
    /// MAC algorithm.
    pub algorithm: TsigAlgorithm,
    /// The decoded secret.
    pub secret: Vec<u8>,
}

impl fmt::Debug for TsigConfig {
    // Never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigConfig")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `[[writer]]` options of `type = "rfc2136"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRfc2136 {
    /// Name services refer to.
    pub name: String,
    /// The primary server, `IP` or `IP:PORT`.
    pub server: Option<String>,
    /// Several servers in order of preference (instead of `server`).
    pub servers: Option<Vec<String>>,
    /// TSIG key.
    pub tsig: RawTsig,
    /// Timeout of one DNS exchange.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub timeout: Option<Duration>,
}

/// `tsig = { … }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTsig {
    /// Key name.
    pub name: String,
    /// Algorithm.
    pub algorithm: TsigAlgorithm,
    /// Base64 secret inline.
    pub secret: Option<String>,
    /// File holding the base64 secret, or BIND/Knot key definitions (the key named `name` is used).
    pub secret_file: Option<String>,
}

/// Validates the writer at key path `wpath`; relative `secret_file`s are read from `base_dir`.
/// Problems go to `errs`, and then `None` is returned.
pub(crate) fn validate(
    r: &RawRfc2136,
    wpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<Rfc2136Config> {
    let servers = servers(r, wpath, errs);
    let tsig = tsig(&r.tsig, &with(wpath, &[Key("tsig")]), base_dir, errs);
    if servers.is_empty() {
        return None;
    }
    Some(Rfc2136Config {
        servers,
        tsig: tsig?,
        timeout: r.timeout.unwrap_or(DEFAULT_DNS_TIMEOUT),
    })
}

/// `server` or `servers`, parsed; empty if there was a problem.
fn servers(r: &RawRfc2136, wpath: &[Seg], errs: &mut Errors) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    match (&r.server, &r.servers) {
        (Some(_), Some(_)) => errs.at(
            &with(wpath, &[Key("servers")]),
            "set either `server` or `servers`, not both",
        ),
        (None, None) => errs.at(
            wpath,
            format!(
                "writer {:?} needs `server = \"IP[:PORT]\"` (or `servers = [...]`)",
                r.name
            ),
        ),
        (Some(one), None) => match parse_server(one) {
            Ok(a) => servers.push(a),
            Err(m) => errs.at(&with(wpath, &[Key("server")]), m),
        },
        (None, Some(list)) => {
            if list.is_empty() {
                errs.at(
                    &with(wpath, &[Key("servers")]),
                    "servers must list at least one server",
                );
            }
            for (i, s) in list.iter().enumerate() {
                match parse_server(s) {
                    Ok(a) => servers.push(a),
                    Err(m) => errs.at(&with(wpath, &[Key("servers"), Index(i)]), m),
                }
            }
        }
    }
    servers
}

/// The `tsig` table at `tpath`.
fn tsig(t: &RawTsig, tpath: &[Seg], base_dir: &Path, errs: &mut Errors) -> Option<TsigConfig> {
    let name = normalize_name(&t.name)
        .map_err(|_| {
            errs.at(
                &with(tpath, &[Key("name")]),
                format!("TSIG key name {:?} is not a valid DNS name", t.name),
            )
        })
        .ok();
    let source = SecretSource {
        inline: t.secret.as_deref(),
        file: t.secret_file.as_deref(),
    };
    let missing = "TSIG needs `secret = \"BASE64\"` or `secret_file = \"PATH\"`";
    let text = read_secret(source, tpath, "TSIG", missing, base_dir, errs)?;
    let secret = tsig_secret(&text, t)
        .map_err(|m| errs.at(text.at(), m))
        .ok()?;
    Some(TsigConfig {
        name: name?,
        algorithm: t.algorithm,
        secret,
    })
}

/// The decoded secret of key `t.name`: the inline value, or the file's key of that name.
fn tsig_secret(text: &SecretText, t: &RawTsig) -> Result<Vec<u8>, String> {
    let SecretText::File { path, text, .. } = text else {
        return decode_secret(text.text());
    };
    let in_file = |m: String| format!("{}: {m}", path.display());
    let keys = key_file::parse(text);
    let key = key_file::select(&keys, &t.name)
        .map_err(|m| format!("TSIG secret file {} {m}", path.display()))?;
    if let Some(algorithm) = &key.algorithm
        && !algorithm
            .trim_end_matches('.')
            .eq_ignore_ascii_case(t.algorithm.as_str())
    {
        let supported = [TsigAlgorithm::HmacSha256, TsigAlgorithm::HmacSha512]
            .into_iter()
            .find(|a| algorithm.eq_ignore_ascii_case(a.as_str()));
        let fix = match supported {
            Some(a) => format!("set algorithm = \"{a}\" in the tsig table"),
            None => {
                "rrguard signs with hmac-sha256 or hmac-sha512 only: give it a key with one of them"
                    .to_owned()
            }
        };
        return Err(in_file(format!(
            "key {:?} has algorithm {algorithm} in the file, but tsig.algorithm is \"{}\"; {fix}",
            key.name.as_deref().unwrap_or(&t.name),
            t.algorithm
        )));
    }
    decode_secret(&key.secret).map_err(in_file)
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`.
fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_DNS_PORT));
    }
    Err(format!(
        "server {s:?} is not an IP address with optional port, like \"192.0.2.53\", \"192.0.2.53:5353\" or \"[2001:db8::53]:53\""
    ))
}

fn decode_secret(b64: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("TSIG secret is not valid base64 ({e}); generate one with `tsig-keygen` or `keymgr -t NAME hmac-sha256`"))?;
    if bytes.is_empty() {
        return Err("TSIG secret is empty".to_owned());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, WriterKind, parse};

    /// Parses a one-writer config whose TSIG secret is the file `key_file`, named `name`.
    fn tsig_from_file(key_file: &str, name: &str) -> Result<super::TsigConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keys.conf"), key_file).unwrap();
        let text = format!(
            "[[writer]]\nname = \"w\"\ntype = \"rfc2136\"\nserver = \"127.0.0.1\"\ntsig = {{ name = \"{name}\", algorithm = \"hmac-sha256\", secret_file = \"keys.conf\" }}\n\n[[service]]\nfqdn = \"www.example.test\"\nzone = \"example.test\"\nwriter = \"w\"\nendpoints = [\"127.0.0.2\"]\n[service.check]\ntype = \"tcp\"\nport = 80\n"
        );
        match parse(&dir.path().join("rrguard.toml"), &text) {
            Ok(c) => {
                let WriterKind::Rfc2136(w) = &c.writers[0].kind else {
                    panic!("an rfc2136 writer")
                };
                Ok(w.tsig.clone())
            }
            Err(ConfigError::Invalid { problems, .. }) => Err(problems[0].message.clone()),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_key_named_like_tsig_name_is_used_not_the_first() {
        let bind = "key \"rndc-key\" { algorithm hmac-sha256; secret \"d3Jvbmc=\"; };\nkey \"rrguard-key\" { algorithm hmac-sha256; secret \"cmlnaHQ=\"; };\n";
        let knot = "key:\n  - id: rndc-key\n    algorithm: hmac-sha256\n    secret: d3Jvbmc=\n  - id: rrguard-key\n    algorithm: hmac-sha256\n    secret: cmlnaHQ=\n";
        for file in [bind, knot] {
            for name in ["rrguard-key", "RRGUARD-KEY."] {
                let tsig = tsig_from_file(file, name).unwrap();
                assert_eq!(tsig.secret, b"right", "{file}");
                assert_eq!(tsig.name, "rrguard-key.");
            }
        }
    }

    #[test]
    fn a_key_file_problem_names_the_file_and_the_fix() {
        let none = tsig_from_file(
            "key \"rndc-key\" { algorithm hmac-sha256; secret \"d3Jvbmc=\"; };",
            "rrguard-key",
        )
        .unwrap_err();
        assert!(
            none.contains("keys.conf holds key \"rndc-key\": none is named \"rrguard-key\""),
            "{none}"
        );
        let md5 = tsig_from_file(
            "key \"k\" { algorithm hmac-md5; secret \"d3Jvbmc=\"; };",
            "k",
        )
        .unwrap_err();
        assert!(md5.contains("key \"k\" has algorithm hmac-md5 in the file, but tsig.algorithm is \"hmac-sha256\"; rrguard signs with hmac-sha256 or hmac-sha512 only"), "{md5}");
    }
}
