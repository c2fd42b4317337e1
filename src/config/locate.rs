//! Maps between byte spans of the TOML text, 1-based lines, and key paths like `rule[2].when`.
//!
//! Spans come from `toml::de::DeTable::parse`. A table opened by a header (`[relay]`,
//! `[[camera]]`, `[destination.cloud]`) spans only its header, so a key inside it is found by
//! searching the whole tree for the deepest key or value whose span contains an offset.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A key path into the config, displayed as `relay.data_dir`, `camera[0].url`, `rule[2].to[0]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The root of the document.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_string()));
        p
    }

    /// This path extended by an index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The parsed document with spans, for locating keys and errors.
pub(crate) struct Locator<'i> {
    root: Option<Spanned<DeTable<'i>>>,
    line_starts: Vec<usize>,
}

impl<'i> Locator<'i> {
    /// Parses `text` for spans; a text that does not parse still maps offsets to lines.
    pub(crate) fn new(text: &'i str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            root: DeTable::parse(text).ok(),
            line_starts,
        }
    }

    /// The parsed document, if the text is valid TOML.
    pub(crate) fn document(&self) -> Option<&Spanned<DeTable<'i>>> {
        self.root.as_ref()
    }

    /// The 1-based line holding byte `offset`.
    pub(crate) fn line_at(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|&start| start <= offset)
            .max(1)
    }

    /// The line of the deepest existing part of `path` (a key, or an array element's start).
    pub(crate) fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let root = self.root.as_ref()?;
        let mut span: Option<Range<usize>> = None;
        let mut table: Option<&DeTable<'i>> = Some(root.get_ref());
        let mut array: Option<&[Spanned<DeValue<'i>>]> = None;
        for seg in &path.0 {
            let value = match (seg, table, array) {
                (Seg::Key(k), Some(t), _) => {
                    let Some((key, value)) = t.iter().find(|(key, _)| key.get_ref() == k) else {
                        break;
                    };
                    span = Some(key.span());
                    value
                }
                (Seg::Index(i), _, Some(a)) => {
                    let Some(value) = a.get(*i) else { break };
                    span = Some(value.span());
                    value
                }
                _ => break,
            };
            table = value.get_ref().as_table();
            array = value.get_ref().as_array().map(|a| &a[..]);
        }
        span.map(|s| self.line_at(s.start))
    }

    /// The deepest key path whose key or value span contains `offset`.
    pub(crate) fn path_at(&self, offset: usize) -> KeyPath {
        let mut best = KeyPath::root();
        if let Some(root) = &self.root {
            search_table(root.get_ref(), &KeyPath::root(), offset, &mut best);
        }
        best
    }

    /// Looks up the value at `path`.
    pub(crate) fn value_at(&self, path: &KeyPath) -> Option<&DeValue<'i>> {
        let root = self.root.as_ref()?;
        let mut table = Some(root.get_ref());
        let mut found: Option<&DeValue<'i>> = None;
        for seg in &path.0 {
            let value = match seg {
                Seg::Key(k) => table?.iter().find(|(key, _)| key.get_ref() == k)?.1,
                Seg::Index(i) => found?.as_array()?.get(*i)?,
            };
            found = Some(value.get_ref());
            table = value.get_ref().as_table();
        }
        found
    }

    /// Finds `key` inside the table at `path` (nested tables included): for unknown-key errors
    /// whose span covers a whole table.
    pub(crate) fn find_key_below(&self, path: &KeyPath, key: &str) -> Option<KeyPath> {
        let table = match path.0.is_empty() {
            true => self.root.as_ref()?.get_ref(),
            false => self.value_at(path)?.as_table()?,
        };
        find_key(table, path, key)
    }
}

fn find_key(table: &DeTable<'_>, path: &KeyPath, key: &str) -> Option<KeyPath> {
    if table.iter().any(|(k, _)| k.get_ref() == key) {
        return Some(path.key(key));
    }
    table.iter().find_map(|(k, v)| {
        v.get_ref()
            .as_table()
            .and_then(|t| find_key(t, &path.key(k.get_ref()), key))
    })
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn search_table(table: &DeTable<'_>, path: &KeyPath, offset: usize, best: &mut KeyPath) {
    for (key, value) in table.iter() {
        let here = path.key(key.get_ref());
        search_value(value, &key.span(), &here, offset, best);
    }
}

fn search_value(
    value: &Spanned<DeValue<'_>>,
    key_span: &Range<usize>,
    here: &KeyPath,
    offset: usize,
    best: &mut KeyPath,
) {
    if (contains(key_span, offset) || contains(&value.span(), offset))
        && here.0.len() > best.0.len()
    {
        *best = here.clone();
    }
    match value.get_ref() {
        DeValue::Table(t) => search_table(t, here, offset, best),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                search_value(item, &item.span(), &here.index(i), offset, best);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[relay]\nhttp = \"x\"\n\n[[camera]]\nname = \"a\"\n\n[[camera]]\nname = \"b\"\nlw = { qos = 1 }\n";

    fn path(s: &[Seg]) -> KeyPath {
        KeyPath(s.to_vec())
    }

    #[test]
    fn key_paths_display_with_dots_and_indices() {
        let p = KeyPath::root().key("rule").index(2).key("to").index(0);
        assert_eq!(p.to_string(), "rule[2].to[0]");
        assert_eq!(
            KeyPath::root().key("destination").key("cloud").to_string(),
            "destination.cloud"
        );
    }

    #[test]
    fn paths_map_to_lines() {
        let loc = Locator::new(TEXT);
        let camera1 = path(&[Seg::Key("camera".into()), Seg::Index(1)]);
        assert_eq!(loc.line_of(&camera1), Some(7));
        assert_eq!(loc.line_of(&camera1.key("lw").key("qos")), Some(9));
        assert_eq!(
            loc.line_of(&KeyPath::root().key("relay").key("http")),
            Some(2)
        );
        // A missing key falls back to its table.
        assert_eq!(loc.line_of(&camera1.key("url")), Some(7));
    }

    #[test]
    fn offsets_map_to_deepest_paths() {
        let loc = Locator::new(TEXT);
        let off = TEXT.find("qos").unwrap();
        assert_eq!(loc.path_at(off).to_string(), "camera[1].lw.qos");
        assert_eq!(loc.line_at(off), 9);
        let off = TEXT.find("\"b\"").unwrap();
        assert_eq!(loc.path_at(off).to_string(), "camera[1].name");
    }
}
