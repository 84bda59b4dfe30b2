//! Maps a key path (`service[1].endpoints[2]`) back to a line and column of the TOML text, so that
//! semantic errors found after deserialization point at the value the user wrote.

use toml::de::{DeTable, DeValue};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(&'static str),
    /// An array index.
    Index(usize),
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Position of the value at `path`; falls back to the deepest ancestor that exists, then to 1:1.
pub fn find(text: &str, path: &[Seg]) -> (usize, usize) {
    let Ok(root) = DeTable::parse(text) else {
        return (0, 0);
    };
    let mut best = 0usize;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut array: Option<&[toml::Spanned<DeValue<'_>>]> = None;
    for seg in path {
        let next = match seg {
            Seg::Key(k) => table.and_then(|t| {
                t.iter()
                    .find(|(key, _)| key.get_ref().as_ref() == *k)
                    .map(|(_, v)| v)
            }),
            Seg::Index(i) => array.and_then(|a| a.get(*i)),
        };
        let Some(value) = next else { break };
        best = value.span().start;
        table = None;
        array = None;
        match value.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(&a[..]),
            _ => {}
        }
    }
    if best == 0 {
        return (1, 1);
    }
    line_col(text, best)
}

/// toml reports some errors at a coarse span: an unknown key at its table's header, and anything inside
/// an internally tagged table (`type = ...`) at the top of the document, because serde buffers those.
/// Point at the offending key or value instead when it can be found unambiguously.
pub fn refine_span(text: &str, span: std::ops::Range<usize>, message: &str) -> usize {
    if let Some(value) = message
        .strip_prefix("unknown variant `")
        .and_then(|rest| rest.split('`').next())
    {
        let quoted = format!("\"{value}\"");
        let mut found = text.match_indices(&quoted).map(|(i, _)| i);
        return match (found.next(), found.next()) {
            (Some(i), None) => i,
            _ => span.start,
        };
    }
    let Some(key) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    else {
        // A value rejected inside such a table (`duration "0s" must be greater than zero`,
        // `invalid value: integer `70000`, expected u16`, `invalid type: string "3", expected
        // i64`): point at the one `key = value` line of the table that holds that value.
        return value_literal(message)
            .and_then(|literal| find_value(text, &span, &literal))
            .unwrap_or(span.start);
    };
    // The span may cover only the table's header: search the table's body, up to the next header.
    table_lines(text, &span, false)
        .find(|(_, line)| {
            line.strip_prefix(key)
                .is_some_and(|after| after.trim_start().starts_with('='))
        })
        .map_or(span.start, |(at, _)| at)
}

/// The lines of the table whose header `span` starts at, each trimmed at the start, with its
/// offset: up to the first header after `span`, or with `past_same_array` past further tables of
/// the same array (`[[service.check]]`, which toml reports at the first).
fn table_lines<'t>(
    text: &'t str,
    span: &std::ops::Range<usize>,
    past_same_array: bool,
) -> impl Iterator<Item = (usize, &'t str)> {
    let start = span.start.min(text.len());
    let header = text[start..].lines().next().unwrap_or("").trim();
    let array = (past_same_array && header.starts_with("[[")).then_some(header);
    let end = span.end;
    text[start..]
        .split_inclusive('\n')
        .scan(start, |offset, line| {
            let at = *offset;
            *offset += line.len();
            Some((at, line))
        })
        .enumerate()
        .take_while(move |(i, (at, line))| {
            let trimmed = line.trim_start();
            !(*i > 0 && trimmed.starts_with('[') && *at >= end && array != Some(trimmed.trim()))
        })
        .map(|(_, (at, line))| {
            let trimmed = line.trim_start();
            (at + (line.len() - trimmed.len()), trimmed)
        })
}

/// The value an error message quotes as written, in TOML: the first `` `...` `` (how serde and
/// rrguard quote the value that was written: `` integer `70000` ``, `` not `5` ``), else the first
/// `"..."` (a string, quotes kept: `duration "0s" must be ...`). A message may quote its fix in
/// `"..."` before the written value in backticks (`write "5s", not `5``), hence the order.
fn value_literal(message: &str) -> Option<String> {
    let between = |open: char| {
        let start = message.find(open)? + 1;
        let len = message[start..].find(open)?;
        Some(&message[start..start + len])
    };
    between('`')
        .map(str::to_owned)
        .or_else(|| between('"').map(|s| format!("\"{s}\"")))
        .filter(|l| !l.is_empty() && l != "\"\"")
}

/// The offset of the value of the only `key = literal` line from `span` to the header after it
/// (past further tables of the same array, `[[service.check]]`, which toml reports at the first);
/// else of the only element `literal` of a list or inline table there (`expect_status = [true]`).
/// `None` if there is none or more than one.
fn find_value(text: &str, span: &std::ops::Range<usize>, literal: &str) -> Option<usize> {
    let values = || {
        table_lines(text, span, true).filter_map(|(at, line)| {
            let (_, value) = line.split_once('=')?;
            let value_text = value.trim_start();
            Some((at + (line.len() - value_text.len()), value_text))
        })
    };
    let whole = values().filter(|(_, value_text)| {
        value_text.strip_prefix(literal).is_some_and(|r| {
            let r = r.trim();
            r.is_empty() || r.starts_with('#')
        })
    });
    if let Some(at) = only(whole.map(|(at, _)| at)) {
        return Some(at);
    }
    // An element: the literal between separators of a list or an inline table.
    let elements = values().flat_map(|(at, value_text)| {
        let value_text = value_text.split(" #").next().unwrap_or(value_text);
        value_text
            .match_indices(literal)
            .filter(move |(i, _)| {
                let before = value_text[..*i].chars().next_back();
                let after = value_text[i + literal.len()..].chars().next();
                matches!(before, Some('[' | ',' | ' ' | '{' | '='))
                    && matches!(after, Some(']' | ',' | ' ' | '}'))
            })
            .map(move |(i, _)| at + i)
            .collect::<Vec<_>>()
    });
    only(elements)
}

/// The one item of `items`; `None` if there is none or more than one.
fn only(mut items: impl Iterator<Item = usize>) -> Option<usize> {
    let first = items.next()?;
    items.next().is_none().then_some(first)
}

/// Every key that deserialization would reject in the table holding the unknown key `key`, which
/// toml reported (at `at` after [`refine_span`], `span` before): the keys of that table not among
/// `known` and not the check's tag `type`, each with its offset, in file order. toml stops at the
/// first unknown key it meets, which is not the first in the file; this lets every one be reported
/// at once, in the file's order. Empty if the table cannot be told apart (a quoted or dotted key).
pub fn unknown_keys(
    text: &str,
    span: &std::ops::Range<usize>,
    at: usize,
    key: &str,
    known: &[&str],
) -> Vec<(usize, String)> {
    fn tables<'a, 't>(value: &'a DeValue<'t>, out: &mut Vec<&'a DeTable<'t>>) {
        match value {
            DeValue::Table(t) => {
                out.push(t);
                for (_, v) in t.iter() {
                    tables(v.get_ref(), out);
                }
            }
            DeValue::Array(a) => a.iter().for_each(|v| tables(v.get_ref(), out)),
            _ => {}
        }
    }
    let Ok(root) = DeTable::parse(text) else {
        return Vec::new();
    };
    let mut all = vec![root.get_ref()];
    for (_, v) in root.get_ref().iter() {
        tables(v.get_ref(), &mut all);
    }
    let key_at = |t: &DeTable<'_>| {
        t.iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(k, _)| k.span().start)
    };
    // The table whose `key` sits where toml's error was refined to, else the first one after the
    // span toml gave.
    let holder = all.iter().find(|t| key_at(t) == Some(at)).or_else(|| {
        all.iter()
            .filter(|t| key_at(t).is_some_and(|k| k >= span.start))
            .min_by_key(|t| key_at(t))
    });
    let Some(holder) = holder else {
        return Vec::new();
    };
    let mut unknown: Vec<(usize, String)> = holder
        .iter()
        .map(|(k, _)| (k.span().start, k.get_ref().to_string()))
        .filter(|(_, k)| k != "type" && !known.contains(&k.as_str()))
        .collect();
    unknown.sort();
    unknown
}
