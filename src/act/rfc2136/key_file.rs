//! TSIG key files: what a `secret_file` may hold, and which key of it the writer uses.
//!
//! A file holds the bare base64 secret, or key definitions in BIND's syntax (`key "name" { algorithm …;
//! secret "…"; };`, as `tsig-keygen` writes them, also on one line, among other statements) or Knot's
//! (`key:` then `- id: name` / `algorithm:` / `secret:`, as `keymgr -t` writes them), so the file the
//! DNS server reads can be shared. Such files often hold several keys (an `rndc-key` first is common):
//! the key whose name equals `tsig.name` is used, compared as DNS names (case-insensitive, trailing dot
//! optional). Taking the first one would sign with the wrong secret and every write would fail BADSIG.

use std::fmt;

/// One key found in a key file.
#[derive(Clone, PartialEq, Eq)]
pub struct FileKey {
    /// Its name; `None` for a bare secret, which is used whatever `tsig.name` is.
    pub name: Option<String>,
    /// The algorithm the file states, as written (`hmac-sha256`).
    pub algorithm: Option<String>,
    /// The base64 secret, as written.
    pub secret: String,
}

impl fmt::Debug for FileKey {
    // Never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The keys of a key file, in file order: BIND or Knot definitions, or else the whole (trimmed) text
/// as one unnamed secret.
pub fn parse(text: &str) -> Vec<FileKey> {
    let keys = if text.lines().any(|l| l.trim_end() == "key:") {
        knot_keys(text)
    } else {
        bind_keys(text)
    };
    if keys.is_empty() {
        vec![FileKey {
            name: None,
            algorithm: None,
            secret: text.trim().to_owned(),
        }]
    } else {
        keys
    }
}

/// The key of `keys` named `name` (or the file's only, unnamed secret).
///
/// # Errors
/// What the file holds instead, naming every key found.
pub fn select<'a>(keys: &'a [FileKey], name: &str) -> Result<&'a FileKey, String> {
    if let [only @ FileKey { name: None, .. }] = keys {
        return Ok(only);
    }
    let wanted = dns_name(name);
    if let Some(key) = keys
        .iter()
        .find(|k| k.name.as_deref().is_some_and(|n| dns_name(n) == wanted))
    {
        return Ok(key);
    }
    let found: Vec<String> = keys
        .iter()
        .filter_map(|k| k.name.as_deref())
        .map(|n| format!("{n:?}"))
        .collect();
    let holds = if found.len() == 1 { "key" } else { "keys" };
    Err(format!(
        "holds {holds} {}: none is named {name:?}; set tsig.name to the key the server uses for rrguard, or point secret_file at the file that defines {name:?}",
        found.join(", ")
    ))
}

/// A DNS name for comparison: lower case, without the trailing dot.
fn dns_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// BIND syntax tokens: quoted strings, braces, semicolons and bare words; comments dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Open,
    Close,
    Semi,
}

fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return out;
        };
        if c == '#' || rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else if rest.starts_with("/*") {
            rest = rest.find("*/").map_or("", |end| &rest[end + 2..]);
        } else if c == '"' {
            let end = rest[1..].find('"').map_or(rest.len(), |e| e + 1);
            out.push(Token::Word(rest[1..end].to_owned()));
            rest = rest.get(end + 1..).unwrap_or("");
        } else if let Some(t) = match c {
            '{' => Some(Token::Open),
            '}' => Some(Token::Close),
            ';' => Some(Token::Semi),
            _ => None,
        } {
            out.push(t);
            rest = &rest[1..];
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, '{' | '}' | ';' | '"'))
                .unwrap_or(rest.len());
            out.push(Token::Word(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
}

/// `key NAME { algorithm ALG; secret "…"; };` at the top level; other statements are skipped. A file
/// with a `secret` statement but no `key` around it gives one unnamed key.
fn bind_keys(text: &str) -> Vec<FileKey> {
    let toks = tokens(text);
    let mut keys = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        match (&toks[i], toks.get(i + 1), toks.get(i + 2)) {
            (Token::Word(k), Some(Token::Word(name)), Some(Token::Open))
                if depth == 0 && k.eq_ignore_ascii_case("key") =>
            {
                let (key, next) = bind_key_body(&toks, i + 3);
                keys.push(FileKey {
                    name: Some(name.clone()),
                    ..key
                });
                i = next;
                continue;
            }
            (Token::Open, ..) => depth += 1,
            (Token::Close, ..) => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    if keys.is_empty() {
        let (key, _) = bind_key_body(&toks, 0);
        if !key.secret.is_empty() {
            keys.push(key);
        }
    }
    keys
}

/// The statements of a key block from `start` to its closing brace; returns the key (unnamed) and the
/// index after the block.
fn bind_key_body(toks: &[Token], start: usize) -> (FileKey, usize) {
    let mut key = FileKey {
        name: None,
        algorithm: None,
        secret: String::new(),
    };
    let mut i = start;
    while i < toks.len() && toks[i] != Token::Close {
        if let (Token::Word(stmt), Some(Token::Word(value))) = (&toks[i], toks.get(i + 1)) {
            if stmt.eq_ignore_ascii_case("algorithm") {
                key.algorithm = Some(value.clone());
            } else if stmt.eq_ignore_ascii_case("secret") && key.secret.is_empty() {
                key.secret = value.clone();
            }
        }
        // To the end of the statement.
        while i < toks.len() && !matches!(toks[i], Token::Semi | Token::Close) {
            i += 1;
        }
        if toks.get(i) == Some(&Token::Semi) {
            i += 1;
        }
    }
    (key, i + 1)
}

/// Knot's `key:` section: a YAML list of `id`/`algorithm`/`secret` maps. Other sections are skipped.
fn knot_keys(text: &str) -> Vec<FileKey> {
    let mut keys: Vec<FileKey> = Vec::new();
    let mut in_keys = false;
    for line in text.lines() {
        let content = line.split(" #").next().unwrap_or_default().trim_end();
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with([' ', '\t', '-']) {
            in_keys = trimmed == "key:";
            continue;
        }
        if !in_keys {
            continue;
        }
        let field = match trimmed.strip_prefix('-') {
            Some(item) => {
                keys.push(FileKey {
                    name: None,
                    algorithm: None,
                    secret: String::new(),
                });
                item.trim_start()
            }
            None => trimmed,
        };
        let (Some(key), Some((name, value))) = (keys.last_mut(), field.split_once(':')) else {
            continue;
        };
        let value = value.trim().trim_matches(['"', '\'']).to_owned();
        match name.trim() {
            "id" => key.name = Some(value),
            "algorithm" => key.algorithm = Some(value),
            "secret" => key.secret = value,
            _ => {}
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(keys: &[FileKey]) -> Vec<Option<&str>> {
        keys.iter().map(|k| k.name.as_deref()).collect()
    }

    #[test]
    fn a_bare_secret_is_one_unnamed_key_used_for_any_name() {
        let keys = parse("  c2VjcmV0\n");
        assert_eq!(names(&keys), vec![None]);
        assert_eq!(keys[0].secret, "c2VjcmV0");
        assert_eq!(select(&keys, "anything").unwrap().secret, "c2VjcmV0");
    }

    #[test]
    fn bind_file_with_several_keys_selects_by_name() {
        let text = r#"
// rndc first, as /etc/bind/rndc.key often is
key "rndc-key" {
	algorithm hmac-sha256;
	secret "cm5kYw==";
};
/* the one rrguard uses */
key "RRguard-Key." { algorithm hmac-sha512; secret "cnJndWFyZA=="; };
key other { algorithm hmac-sha256; secret "b3RoZXI="; };
"#;
        let keys = parse(text);
        assert_eq!(
            names(&keys),
            vec![Some("rndc-key"), Some("RRguard-Key."), Some("other")]
        );
        let k = select(&keys, "rrguard-key").unwrap();
        assert_eq!(k.secret, "cnJndWFyZA==");
        assert_eq!(k.algorithm.as_deref(), Some("hmac-sha512"));
        assert_eq!(select(&keys, "OTHER.").unwrap().secret, "b3RoZXI=");
    }

    #[test]
    fn no_matching_key_names_every_key_found() {
        let keys = parse(
            "key \"rndc-key\" { algorithm hmac-sha256; secret \"YQ==\"; };\nkey \"other\" { secret \"Yg==\"; };\n",
        );
        let err = select(&keys, "rrguard-key").unwrap_err();
        assert!(
            err.starts_with(r#"holds keys "rndc-key", "other": none is named "rrguard-key""#),
            "{err}"
        );
        let one = parse("key \"rndc-key\" { secret \"YQ==\"; };");
        assert!(
            select(&one, "rrguard-key")
                .unwrap_err()
                .starts_with(r#"holds key "rndc-key": none"#)
        );
    }

    #[test]
    fn bind_keys_inside_a_config_with_other_statements() {
        let text = "options { directory \"/x\"; };\nzone \"z\" { type primary; allow-update { key \"k\"; }; };\nkey \"k\" { algorithm hmac-sha256; secret \"aw==\"; };\n";
        let keys = parse(text);
        assert_eq!(names(&keys), vec![Some("k")]);
        assert_eq!(keys[0].secret, "aw==");
    }

    #[test]
    fn knot_file_with_several_keys_and_keymgr_comment() {
        let text = "# hmac-sha256:rndc-key:cm5kYw==\nkey:\n  - id: rndc-key\n    algorithm: hmac-sha256\n    secret: cm5kYw==\n\n- id: rrguard-key # ours\n  algorithm: hmac-sha512\n  secret: \"cnJndWFyZA==\"\nacl:\n  - id: a\n    key: rrguard-key\n";
        let keys = parse(text);
        assert_eq!(names(&keys), vec![Some("rndc-key"), Some("rrguard-key")]);
        let k = select(&keys, "rrguard-key.").unwrap();
        assert_eq!(k.secret, "cnJndWFyZA==");
        assert_eq!(k.algorithm.as_deref(), Some("hmac-sha512"));
    }

    #[test]
    fn a_lone_secret_statement_is_an_unnamed_key() {
        for text in [
            "secret \"c2VjcmV0\";\n",
            "algorithm hmac-sha256; secret c2VjcmV0;",
        ] {
            let keys = parse(text);
            assert_eq!(names(&keys), vec![None], "{text}");
            assert_eq!(keys[0].secret, "c2VjcmV0", "{text}");
        }
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let keys = parse("key \"k\" { secret \"c2VjcmV0\"; };");
        assert!(!format!("{keys:?}").contains("c2VjcmV0"));
    }
}
