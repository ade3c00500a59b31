//! Where things are in the file: an index from dotted paths (`workspaces[0].sources[1].owner`)
//! to byte ranges, built by walking a span-keeping parse of the document. Validation works on
//! the typed [`crate::Config`] and names fields by path; this index turns those paths into line
//! numbers afterwards, so the rules stay free of any parsing detail.

use std::ops::Range;
use toml_edit::{ImDocument, Item, Table, Value};

/// Paths of the document's tables, keys and values with their byte ranges.
pub struct DocumentIndex {
    entries: Vec<(String, Range<usize>)>,
    line_starts: Vec<usize>,
}

impl DocumentIndex {
    /// Indexes `text`; a text that does not parse gives an index that only knows lines.
    pub fn new(text: &str) -> Self {
        let mut entries = Vec::new();
        if let Ok(document) = ImDocument::parse(text) {
            walk_table(document.as_table(), "", &mut entries);
        }
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        DocumentIndex {
            entries,
            line_starts,
        }
    }

    /// 1-based line of byte `offset`.
    pub fn line_of_offset(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    /// Line of `path`, or of its nearest enclosing table present in the file (a missing field
    /// is reported on its table's header).
    pub fn line_of_path(&self, path: &str) -> Option<usize> {
        let mut candidate = path;
        loop {
            if let Some((_, span)) = self.entries.iter().find(|(entry, _)| entry == candidate) {
                return Some(self.line_of_offset(span.start));
            }
            candidate = parent_path(candidate)?;
        }
    }

    /// Path of the innermost entry whose range holds `offset` (to name the field of a serde error).
    pub fn path_at_offset(&self, offset: usize) -> Option<&str> {
        self.entries
            .iter()
            .filter(|(_, span)| span.contains(&offset))
            .min_by_key(|(_, span)| span.len())
            .map(|(path, _)| path.as_str())
    }
}

/// `a.b[2]` → `a.b`, `a.b` → `a`, `a` → none.
fn parent_path(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk_table(table: &Table, prefix: &str, entries: &mut Vec<(String, Range<usize>)>) {
    if let Some(span) = table.span() {
        entries.push((prefix.to_string(), span));
    }
    for (key, item) in table.iter() {
        let path = join(prefix, key);
        // The key's own range: a value or a missing child field is reported where its key is written.
        if let Some(span) = table.key(key).and_then(|key| key.span()) {
            let end = item
                .span()
                .map_or(span.end, |value| value.end.max(span.end));
            entries.push((path.clone(), span.start..end));
        }
        walk_item(item, &path, entries);
    }
}

fn walk_item(item: &Item, path: &str, entries: &mut Vec<(String, Range<usize>)>) {
    match item {
        Item::Table(table) => walk_table(table, path, entries),
        Item::ArrayOfTables(array) => {
            for (index, table) in array.iter().enumerate() {
                walk_table(table, &format!("{path}[{index}]"), entries);
            }
        }
        Item::Value(value) => walk_value(value, path, entries),
        Item::None => {}
    }
}

fn walk_value(value: &Value, path: &str, entries: &mut Vec<(String, Range<usize>)>) {
    match value {
        Value::InlineTable(table) => {
            for (key, item) in table.iter() {
                let child = join(path, key);
                if let Some(span) = table.key(key).and_then(|key| key.span()) {
                    let end = item
                        .span()
                        .map_or(span.end, |value| value.end.max(span.end));
                    entries.push((child.clone(), span.start..end));
                }
                walk_value(item, &child, entries);
            }
        }
        Value::Array(array) => {
            for (index, element) in array.iter().enumerate() {
                let child = format!("{path}[{index}]");
                if let Some(span) = element.span() {
                    entries.push((child.clone(), span));
                }
                walk_value(element, &child, entries);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
[server]
listen = \"x\"

[[workspaces]]
id = \"de\"

[[workspaces.sources]]
name = \"Web\"

[[workspaces.sources]]
name = \"App\"
owner = \"o\"
";

    #[test]
    fn paths_map_to_their_lines() {
        let index = DocumentIndex::new(TEXT);
        assert_eq!(index.line_of_path("server.listen"), Some(2));
        assert_eq!(index.line_of_path("workspaces[0].id"), Some(5));
        assert_eq!(
            index.line_of_path("workspaces[0].sources[1].owner"),
            Some(12)
        );
    }

    #[test]
    fn missing_field_falls_back_to_its_table_header() {
        let index = DocumentIndex::new(TEXT);
        assert_eq!(
            index.line_of_path("workspaces[0].sources[0].owner"),
            Some(7)
        );
        assert_eq!(
            index.line_of_path("workspaces[0].sources[1].write_key"),
            Some(10)
        );
        assert_eq!(index.line_of_path("log.segment_bytes_max"), None);
    }

    #[test]
    fn offset_names_the_innermost_path() {
        let index = DocumentIndex::new(TEXT);
        let offset = TEXT.find("owner").unwrap();
        assert_eq!(
            index.path_at_offset(offset),
            Some("workspaces[0].sources[1].owner")
        );
        assert_eq!(index.line_of_offset(offset), 12);
        assert_eq!(index.line_of_offset(0), 1);
    }

    #[test]
    fn inline_tables_and_arrays_are_indexed() {
        let index =
            DocumentIndex::new("workspaces = [\n  { id = \"de\" },\n  { id = \"fr\" },\n]\n");
        assert_eq!(index.line_of_path("workspaces[1].id"), Some(3));
    }
}
