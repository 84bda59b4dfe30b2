//! The `hosts` writer's configuration: its options as written ([`RawHosts`]), their validation
//! (problems reported by key path, which the central config turns into `FILE:LINE:COL`), and the
//! validated [`HostsConfig`] the writer is built from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{BEGIN, END};
use crate::config::Errors;
use crate::config::Seg::{self, Key};
use crate::config::with;

/// Default hosts file.
pub const DEFAULT_HOSTS_PATH: &str = "/etc/hosts";
/// Default limit of waiting for the file's lock (another writer of the file).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// `[[writer]]` options of `type = "hosts"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHosts {
    /// Name services refer to.
    pub name: String,
    /// The hosts file; default `/etc/hosts`.
    pub path: Option<String>,
    /// A file whose content goes first in rrguard's section (a legacy list kept with the names).
    pub prefix_file: Option<String>,
    /// Keep `PATH.bak`, the content before the last change; default true.
    pub backup: Option<bool>,
    /// Limit of waiting for the file's lock.
    #[serde(default, deserialize_with = "crate::config::raw::opt_duration")]
    pub timeout: Option<Duration>,
}

/// `type = "hosts"`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsConfig {
    /// The hosts file.
    pub path: PathBuf,
    /// Its content goes first in the section, read again on every write.
    pub prefix_file: Option<PathBuf>,
    /// Keep `PATH.bak`.
    pub backup: bool,
    /// Limit of waiting for the file's lock.
    pub timeout: Duration,
}

/// Validates the writer at key path `wpath`; relative paths are resolved against `base_dir`.
/// Problems go to `errs`, and then `None` is returned.
pub(crate) fn validate(
    r: &RawHosts,
    wpath: &[Seg],
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<HostsConfig> {
    let before = errs.len();
    let at = |key: &'static str| with(wpath, &[Key(key)]);
    let path = base_dir.join(r.path.as_deref().unwrap_or(DEFAULT_HOSTS_PATH));
    let at_path = if r.path.is_some() {
        at("path")
    } else {
        wpath.to_vec()
    };
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => errs.at(
            &at_path,
            format!(
                "directory {} does not exist; create it or fix the path",
                dir.display()
            ),
        ),
        _ if path.is_dir() => errs.at(
            &at_path,
            format!(
                "{} is a directory; set the path of the hosts file",
                path.display()
            ),
        ),
        _ => {}
    }
    let prefix_file = r.prefix_file.as_ref().map(|p| base_dir.join(p));
    if let Some(p) = &prefix_file
        && let Err(m) = read_prefix(p)
    {
        errs.at(&at("prefix_file"), m);
    }
    if errs.len() > before {
        return None;
    }
    Some(HostsConfig {
        path,
        prefix_file,
        backup: r.backup.unwrap_or(true),
        timeout: r.timeout.unwrap_or(DEFAULT_LOCK_TIMEOUT),
    })
}

/// The prefix file's bytes, ending with a line break, checked to hold no section marker (which would
/// make rrguard's section unreadable).
///
/// # Errors
/// What is wrong, naming the file (and line).
pub fn read_prefix(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the prefix file {}: {e}", path.display()))?;
    for (n, (_, line)) in crate::act::file::lines(&bytes).enumerate() {
        let text = String::from_utf8_lossy(line);
        if text.trim_start().starts_with(BEGIN) || text.trim_start().starts_with(END) {
            return Err(format!(
                "{}:{}: the prefix file holds a `{}` line; remove it (rrguard writes the section markers)",
                path.display(),
                n + 1,
                text.trim()
            ));
        }
    }
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    Ok(bytes)
}
