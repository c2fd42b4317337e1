//! Camera-supplied names inside the Jinja templates Home Assistant runs. A catalog item name
//! is camera input: written verbatim into `value_template` it could end the expression and
//! add its own (`x }}{{ states('lock.front') }}`). Names are therefore written as attribute
//! access only when they are plain identifiers that Jinja resolves to the data member, and
//! otherwise as a subscript with a string literal that holds nothing but letters, digits and
//! escape sequences.

/// Names Jinja's `a.name` would resolve to a method of the dict instead of its member
/// (attribute lookup comes first): those take the subscript form.
const DICT_ATTRIBUTES: &[&str] = &[
    "clear",
    "copy",
    "fromkeys",
    "get",
    "items",
    "keys",
    "pop",
    "popitem",
    "setdefault",
    "update",
    "values",
];

/// The Jinja expression for member `name` of the expression `object`.
pub fn member(object: &str, name: &str) -> String {
    if is_plain_identifier(name) {
        format!("{object}.{name}")
    } else {
        format!("{object}[{}]", string_literal(name))
    }
}

/// `[A-Za-z][A-Za-z0-9_]*`, not a dict method (a leading `_` is left to the subscript form:
/// Home Assistant's sandbox refuses such attributes).
fn is_plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !DICT_ATTRIBUTES.contains(&name)
}

/// A single-quoted Jinja string literal for `s`: ASCII letters, digits and spaces as they
/// are, every other character as `\xNN`, `\uNNNN` or `\UNNNNNNNN` (which Jinja decodes like
/// Python). Quotes, backslashes, braces and `%` therefore never appear unescaped.
pub fn string_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        let n = u32::from(c);
        if c.is_ascii_alphanumeric() || c == ' ' {
            out.push(c);
        } else if n < 0x100 {
            out.push_str(&format!("\\x{n:02x}"));
        } else if n < 0x1_0000 {
            out.push_str(&format!("\\u{n:04x}"));
        } else {
            out.push_str(&format!("\\U{n:08x}"));
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identifiers_are_attributes_everything_else_a_subscript() {
        let m = |n| member("value_json.message.data", n);
        assert_eq!(m("active"), "value_json.message.data.active");
        assert_eq!(m("State_2"), "value_json.message.data.State_2");
        assert_eq!(m("items"), "value_json.message.data['items']");
        assert_eq!(m("_x"), "value_json.message.data['\\x5fx']");
        assert_eq!(m("2x"), "value_json.message.data['2x']");
        assert_eq!(m(""), "value_json.message.data['']");
        assert_eq!(m("Rule Name"), "value_json.message.data['Rule Name']");
    }

    #[test]
    fn a_hostile_name_cannot_leave_the_literal() {
        let hostile = "x' ]}}{{ states('lock.front') }}{% if 1 %}\\\n\u{2028}é😀";
        let lit = string_literal(hostile);
        assert_eq!(
            lit,
            "'x\\x27 \\x5d\\x7d\\x7d\\x7b\\x7b states\\x28\\x27lock\\x2efront\\x27\\x29 \\x7d\\x7d\\x7b\\x25 if 1 \\x25\\x7d\\x5c\\x0a\\u2028\\xe9\\U0001f600'"
        );
        let inner = &lit[1..lit.len() - 1];
        assert!(
            inner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '\\'),
            "{inner}"
        );
        // Every backslash starts an escape of hex digits: none escapes the closing quote.
        assert!(!inner.ends_with('\\'));
        assert_eq!(decode(inner), hostile, "Jinja reads back the exact name");
    }

    /// Python's `unicode-escape` decoding of the escapes `string_literal` writes.
    fn decode(s: &str) -> String {
        let mut out = String::new();
        let mut it = s.chars();
        while let Some(c) = it.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let width = match it.next() {
                Some('x') => 2,
                Some('u') => 4,
                Some('U') => 8,
                other => panic!("unexpected escape {other:?}"),
            };
            let hex: String = it.by_ref().take(width).collect();
            out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
        }
        out
    }
}
