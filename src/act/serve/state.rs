//! The store's file: the managed records and the SOA serial, saved after every change so that a
//! restarted node answers the last published set at once.
//!
//! `STATE_DIR/serve-WRITER.json`, written atomically (a temporary file in the same directory, fsync,
//! rename, fsync of the directory), so a crash leaves the old or the new file, never half of one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::act::Published;

/// Version of the file format; a file with another one is not loaded.
const VERSION: u32 = 1;

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Saved {
    /// The SOA serial of every zone of the writer.
    pub serial: u32,
    /// Managed names (lower case, trailing dot) and what they publish.
    pub managed: BTreeMap<String, Published>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    serial: u32,
    names: BTreeMap<String, Name>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Name {
    /// Address → TTL (s).
    #[serde(default)]
    records: BTreeMap<IpAddr, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cname: Option<String>,
}

/// The file of writer `writer` under `state_dir`.
pub(crate) fn path(state_dir: &Path, writer: &str) -> PathBuf {
    // Writer names are free text: keep the file name to safe characters.
    let safe: String = writer
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir.join(format!("serve-{safe}.json"))
}

/// Reads the file: `Ok(None)` when there is none.
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub(crate) fn load(path: &Path) -> Result<Option<Saved>, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: File = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a serve state file: {e}", path.display()))?;
    if file.version != VERSION {
        return Err(format!(
            "{} has format version {}, this rrguard reads version {VERSION}",
            path.display(),
            file.version
        ));
    }
    let managed = file
        .names
        .into_iter()
        .map(|(name, n)| {
            (
                name,
                Published {
                    records: n.records,
                    cname: n.cname,
                    weights: Default::default(),
                },
            )
        })
        .collect();
    Ok(Some(Saved {
        serial: file.serial,
        managed,
    }))
}

/// Writes `saved` to `path` atomically, creating the directory if needed.
///
/// # Errors
/// The I/O error, with the path.
pub(crate) fn save(path: &Path, saved: &Saved) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| fail("create the directory of", e))?;
    let file = File {
        version: VERSION,
        serial: saved.serial,
        names: saved
            .managed
            .iter()
            .map(|(k, p)| {
                (
                    k.clone(),
                    Name {
                        records: p.records.clone(),
                        cname: p.cname.clone(),
                    },
                )
            })
            .collect(),
    };
    let text = serde_json::to_vec_pretty(&file).map_err(|e| fail("encode", e.into()))?;
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| fail("create a temporary file for", e))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .map_err(|e| fail("write", e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| fail("replace", e))?;
    // The rename itself is durable once the directory is synced.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_reports_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "dns/1");
        assert!(p.ends_with("serve-dns_1.json"));
        assert_eq!(load(&p).unwrap(), None);
        let mut managed = BTreeMap::new();
        managed.insert(
            "www.example.test.".to_owned(),
            Published::with_ttl(
                ["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
                30,
            ),
        );
        managed.insert("empty.example.test.".to_owned(), Published::default());
        let saved = Saved { serial: 7, managed };
        save(&p, &saved).unwrap();
        assert_eq!(load(&p).unwrap(), Some(saved));
        std::fs::write(&p, "{ not json").unwrap();
        let e = load(&p).unwrap_err();
        assert!(
            e.contains("serve-dns_1.json is not a serve state file"),
            "{e}"
        );
    }
}
