//! Where a secret comes from, shared by every part of the config that has one (a writer's TSIG key, the
//! `[cluster]` secret): exactly one of an inline `secret = "…"` or a `secret_file = "PATH"`, the file
//! relative to the configuration file's directory. Problems are reported at the key that caused them.
//!
//! Only the source is shared; what the text means is the owner's business: TSIG decodes base64 or
//! picks a key out of a BIND/Knot key file (`crate::act::rfc2136::config`), the cluster takes the text
//! itself as the key.

use std::path::{Path, PathBuf};

use super::locate::Seg::{self, Key};
use super::validate::{Errors, with};

/// The two keys a secret may be given by, as written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SecretSource<'a> {
    /// `secret = "…"`.
    pub inline: Option<&'a str>,
    /// `secret_file = "PATH"`.
    pub file: Option<&'a str>,
}

/// A secret's text and where it came from.
#[derive(Debug)]
pub(crate) enum SecretText {
    /// From `secret`.
    Inline {
        /// The value, as written.
        text: String,
        /// The key path of `secret`.
        at: Vec<Seg>,
    },
    /// From `secret_file`.
    File {
        /// The file, resolved against the config file's directory.
        path: PathBuf,
        /// Its contents (invalid UTF-8 replaced).
        text: String,
        /// The key path of `secret_file`.
        at: Vec<Seg>,
    },
}

impl SecretText {
    /// The text, inline or read from the file.
    pub(crate) fn text(&self) -> &str {
        match self {
            SecretText::Inline { text, .. } | SecretText::File { text, .. } => text,
        }
    }

    /// The key path to report a problem with the secret at.
    pub(crate) fn at(&self) -> &[Seg] {
        match self {
            SecretText::Inline { at, .. } | SecretText::File { at, .. } => at,
        }
    }
}

/// Reads the secret of the table at `table`. `what` names it in messages ("TSIG", "cluster"); `missing`
/// is the message when neither key is set. Problems go to `errs`, and then `None` is returned.
pub(crate) fn read_secret(
    source: SecretSource<'_>,
    table: &[Seg],
    what: &str,
    missing: &str,
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<SecretText> {
    let keys = SecretKeys {
        inline: "secret",
        file: "secret_file",
    };
    read_secret_as(source, keys, table, what, missing, base_dir, errs)
}

/// The names of the two keys a secret is given by, when they are not `secret` and `secret_file`
/// (an API writer's `token` and `token_file`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SecretKeys {
    /// The inline key, such as `token`.
    pub inline: &'static str,
    /// The file key, such as `token_file`.
    pub file: &'static str,
}

/// [`read_secret`] with the keys named `keys`.
pub(crate) fn read_secret_as(
    source: SecretSource<'_>,
    keys: SecretKeys,
    table: &[Seg],
    what: &str,
    missing: &str,
    base_dir: &Path,
    errs: &mut Errors,
) -> Option<SecretText> {
    let file_at = with(table, &[Key(keys.file)]);
    match (source.inline, source.file) {
        (Some(_), Some(_)) => {
            errs.at(
                &file_at,
                format!("set either `{}` or `{}`, not both", keys.inline, keys.file),
            );
            None
        }
        (None, None) => {
            errs.at(table, missing);
            None
        }
        (Some(text), None) => Some(SecretText::Inline {
            text: text.to_owned(),
            at: with(table, &[Key(keys.inline)]),
        }),
        (None, Some(file)) => {
            let path = base_dir.join(file);
            match super::read_bounded(&path, super::MAX_SMALL_FILE_BYTES) {
                Ok(bytes) => Some(SecretText::File {
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                    path,
                    at: file_at,
                }),
                Err(e) => {
                    errs.at(
                        &file_at,
                        format!("cannot read {what} secret file {}: {e}", path.display()),
                    );
                    None
                }
            }
        }
    }
}
