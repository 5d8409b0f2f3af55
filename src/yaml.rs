//! YAML read the way Kubernetes tools read it, and written so they read it back
//! the same.
//!
//! `kubectl` and Istio parse YAML with Go's YAML 1.1 rules (`sigs.k8s.io/yaml`):
//! an unquoted `yes`, `on`, `off`, `y`, `0777` or `1_000` is a bool or a
//! number there, not a string. YAML 1.2 parsers (serde_yaml and friends) read
//! them as strings, and their emitters write the string `yes` back unquoted,
//! which Go then reads as `true`. So this module
//! - resolves plain scalars with Go's YAML 1.1 rules ([`parse_documents`]): the
//!   webhook reads `proxy.istio.io/config` as Istio will, and
//! - writes block YAML in which a string is left unquoted only when no YAML 1.1
//!   or 1.2 reader can take it for anything else ([`to_string`]), for the
//!   `mutate` preview, whose output goes on to `kubectl apply`.
//!
//! The emitter is kept because the crates that write YAML do not do this.
//! Tried on 2026-12-04 with 45 strings that YAML 1.1 or 1.2 may read as
//! something else, each emitted and read back with [`parse_one`]: serde_yaml
//! 0.9.34 (deprecated) and serde_norway 0.9.42 wrote 12 of them unquoted
//! (`yes`, `on`, `off`, `y`, `n` and their capitalised forms, `1_000`), saphyr
//! 0.3.4 wrote 7 (`y`, `n`, `Y`, `N`, `0b101`, `1_000`, `+0x1F`); this module
//! none.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use serde_json::{Map, Number, Value};

/// Why a text is not YAML this module can turn into JSON values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid YAML: {0}")]
pub struct YamlError(String);

/// Nesting deeper than this is refused, as serde_json refuses it: the loader
/// recurses, and a stack overflow would abort the whole webhook.
const MAX_DEPTH: usize = 128;

/// Aliases may expand a document to at most this many nodes per event read
/// (plus [`ALIAS_SLACK`]): a few hundred bytes of nested anchors ("billion
/// laughs") would otherwise expand to 10^9 nodes and exhaust memory. Go's
/// YAML refuses "excessive aliasing" the same way.
const NODES_PER_EVENT: usize = 10;
const ALIAS_SLACK: usize = 10_000;

/// Parses every document of a YAML stream. An empty document is `null`.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let mut loader = Loader {
        events: Parser::new_from_str(text),
        anchors: HashMap::new(),
        events_read: 0,
        nodes: 0,
        depth: 0,
    };
    let mut documents = Vec::new();
    while let Some(event) = loader.next()? {
        match event {
            Event::DocumentStart(_) => documents.push(loader.document()?),
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
            other => return Err(YamlError(format!("unexpected {other:?} between documents"))),
        }
    }
    Ok(documents)
}

/// Parses a text that holds one document (the first, if there are several).
pub fn parse_one(text: &str) -> Result<Value, YamlError> {
    Ok(parse_documents(text)?
        .into_iter()
        .next()
        .unwrap_or(Value::Null))
}

struct Loader<'a> {
    events: Parser<'a, saphyr_parser::StrInput<'a>>,
    /// Anchored values, with the number of nodes each one holds.
    anchors: HashMap<usize, (Value, usize)>,
    events_read: usize,
    /// Nodes produced so far, aliases counted at their expanded size.
    nodes: usize,
    depth: usize,
}

impl<'a> Loader<'a> {
    fn next(&mut self) -> Result<Option<Event<'a>>, YamlError> {
        match self.events.next() {
            None => Ok(None),
            Some(Ok((event, _span))) => {
                self.events_read += 1;
                Ok(Some(event))
            }
            Some(Err(error)) => Err(YamlError(error.to_string())),
        }
    }

    fn expect_next(&mut self) -> Result<Event<'a>, YamlError> {
        self.next()?
            .ok_or_else(|| YamlError("unexpected end of input".into()))
    }

    /// Reads one document's content, after its `DocumentStart`.
    fn document(&mut self) -> Result<Value, YamlError> {
        self.anchors.clear();
        let mut value = Value::Null;
        loop {
            match self.expect_next()? {
                Event::DocumentEnd => return Ok(value),
                event => value = self.node(event)?,
            }
        }
    }

    /// Counts `count` more nodes, failing past the alias budget.
    fn produce(&mut self, count: usize) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(count);
        let budget = self
            .events_read
            .saturating_mul(NODES_PER_EVENT)
            .saturating_add(ALIAS_SLACK);
        if self.nodes > budget {
            return Err(YamlError(
                "aliases expand to too many nodes (excessive aliasing)".into(),
            ));
        }
        Ok(())
    }

    fn node(&mut self, event: Event<'a>) -> Result<Value, YamlError> {
        if self.depth >= MAX_DEPTH {
            return Err(YamlError(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let nodes_before = self.nodes;
        let result = self.node_inner(event);
        self.depth -= 1;
        let (value, anchor) = result?;
        // saphyr numbers anchors from 1; 0 means "no anchor".
        if anchor != 0 {
            let size = self.nodes.saturating_sub(nodes_before);
            self.anchors.insert(anchor, (value.clone(), size));
        }
        Ok(value)
    }

    /// The value of one node, and its anchor (0 for none).
    fn node_inner(&mut self, event: Event<'a>) -> Result<(Value, usize), YamlError> {
        let (value, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.produce(1)?;
                (resolve_scalar(&text, style, tag.as_deref()), anchor)
            }
            Event::SequenceStart(anchor, _tag) => {
                self.produce(1)?;
                let mut items = Vec::new();
                loop {
                    match self.expect_next()? {
                        Event::SequenceEnd => break,
                        event => items.push(self.node(event)?),
                    }
                }
                (Value::Array(items), anchor)
            }
            Event::MappingStart(anchor, _tag) => {
                self.produce(1)?;
                (Value::Object(self.mapping()?), anchor)
            }
            Event::Alias(id) => {
                let (value, size) = self
                    .anchors
                    .get(&id)
                    .ok_or_else(|| YamlError("alias to an unknown anchor".into()))?;
                let (value, size) = (value.clone(), *size);
                // Checked before the clone is kept: the budget bounds memory.
                self.produce(size)?;
                (value, 0)
            }
            other => return Err(YamlError(format!("unexpected {other:?}"))),
        };
        Ok((value, anchor))
    }

    fn mapping(&mut self) -> Result<Map<String, Value>, YamlError> {
        let mut map = Map::new();
        let mut merged = Vec::new();
        loop {
            let key_event = self.expect_next()?;
            if matches!(key_event, Event::MappingEnd) {
                break;
            }
            let is_merge = matches!(
                &key_event,
                Event::Scalar(text, ScalarStyle::Plain, _, None) if text == "<<"
            );
            let key = self.node(key_event)?;
            let value_event = self.expect_next()?;
            let value = self.node(value_event)?;
            if is_merge {
                merged.push(value);
            } else {
                map.insert(key_string(key)?, value);
            }
        }
        // `<<: *defaults` (YAML 1.1 merge keys, which Go honours): keys of
        // the merged maps fill in what the mapping does not set itself.
        for source in merged {
            let sources = match source {
                Value::Array(items) => items,
                other => vec![other],
            };
            for source in sources {
                let Value::Object(source) = source else {
                    return Err(YamlError("a merge key (<<) must refer to a mapping".into()));
                };
                for (key, value) in source {
                    map.entry(key).or_insert(value);
                }
            }
        }
        Ok(map)
    }
}

/// A mapping key as JSON sees it: Go's YAML-to-JSON conversion writes
/// non-string keys (`true`, `1`) as their text.
fn key_string(key: Value) -> Result<String, YamlError> {
    match key {
        Value::String(key) => Ok(key),
        Value::Bool(key) => Ok(key.to_string()),
        Value::Number(key) => Ok(key.to_string()),
        Value::Null => Ok("null".into()),
        Value::Array(_) | Value::Object(_) => Err(YamlError(
            "a mapping key is a sequence or a mapping, which JSON cannot hold".into(),
        )),
    }
}

fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(tag) = tag {
        if tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:" {
            match tag.suffix.as_str() {
                "str" | "binary" | "timestamp" => return Value::String(text.to_owned()),
                "null" => return Value::Null,
                _ => {}
            }
        } else {
            // A local tag (`!foo`) says nothing JSON can keep.
            return Value::String(text.to_owned());
        }
    }
    if style != ScalarStyle::Plain {
        return Value::String(text.to_owned());
    }
    resolve_plain(text)
}

/// Go YAML 1.1 resolution of a plain scalar (gopkg.in/yaml.v2 `resolve`).
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    let starts_like_number = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
    if !starts_like_number {
        return Value::String(text.to_owned());
    }
    let digits = text.replace('_', "");
    if let Some(integer) = parse_go_integer(&digits) {
        return Value::Number(integer);
    }
    // Go's ParseFloat also takes "Inf" and "NaN", which JSON cannot hold:
    // those (and `.inf`/`.nan`) stay strings.
    let is_decimal = digits
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'));
    let number = digits.parse::<f64>().ok().and_then(Number::from_f64);
    match number {
        Some(number) if is_decimal => Value::Number(number),
        _ => Value::String(text.to_owned()),
    }
}

/// Integers as Go's `strconv.ParseInt(s, 0, 64)` reads them (with yaml.v2's
/// extra `0b` handling): decimal, `0x` hex, `0o` or leading-`0` octal.
fn parse_go_integer(digits: &str) -> Option<Number> {
    let (negative, unsigned) = match digits.as_bytes().first()? {
        b'-' => (true, digits.get(1..)?),
        b'+' => (false, digits.get(1..)?),
        _ => (false, digits),
    };
    let (radix, body) = if let Some(hex) = unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        (16, hex)
    } else if let Some(binary) = unsigned
        .strip_prefix("0b")
        .or_else(|| unsigned.strip_prefix("0B"))
    {
        (2, binary)
    } else if let Some(octal) = unsigned
        .strip_prefix("0o")
        .or_else(|| unsigned.strip_prefix("0O"))
    {
        (8, octal)
    } else if unsigned.len() > 1 && unsigned.starts_with('0') {
        (8, unsigned.get(1..)?)
    } else {
        (10, unsigned)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(body, radix).ok()?;
    if negative {
        let value = i64::try_from(magnitude)
            .ok()
            .map(|m| -m)
            .or((magnitude == 1 << 63).then_some(i64::MIN))?;
        Some(Number::from(value))
    } else {
        Some(Number::from(magnitude))
    }
}

/// Writes `value` as one block-style YAML document (no `---`), ending in a newline.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            write_inline(&mut out, scalar);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, width: usize) {
    out.extend(std::iter::repeat_n(' ', width));
}

/// YAML allows implicit keys (`key: value`) of at most this many characters;
/// longer ones take the explicit form (`? key` then `: value`).
const MAX_IMPLICIT_KEY_CHARS: usize = 1024;

fn write_map(out: &mut String, map: &Map<String, Value>, width: usize) {
    for (key, value) in map {
        let key = scalar(key);
        indent(out, width);
        if key.chars().count() > MAX_IMPLICIT_KEY_CHARS {
            out.push_str("? ");
            out.push_str(&key);
            out.push('\n');
            indent(out, width);
        } else {
            out.push_str(&key);
        }
        out.push(':');
        write_child(out, value, width, width + 2);
    }
}

/// Sequences under a key sit at the key's indentation, as `kubectl` writes them.
fn write_seq(out: &mut String, items: &[Value], width: usize) {
    for item in items {
        indent(out, width);
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key goes on the dash's line, the rest under it.
                out.push(' ');
                let mut nested = String::new();
                write_map(&mut nested, map, width + 2);
                out.push_str(nested.get(width + 2..).unwrap_or_default());
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push(' ');
                let mut nested = String::new();
                write_seq(&mut nested, inner, width + 2);
                out.push_str(nested.get(width + 2..).unwrap_or_default());
            }
            scalar => write_scalar(out, scalar, width + 2),
        }
    }
}

/// What follows `key:`: an inline scalar, or a nested block on the next lines.
fn write_child(out: &mut String, value: &Value, key_width: usize, map_width: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, map_width);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, key_width);
        }
        scalar => write_scalar(out, scalar, map_width),
    }
}

/// A scalar after `key:` or `-`: inline, or a literal block (`|`) for a
/// multi-line string, its lines at `block_width`.
fn write_scalar(out: &mut String, value: &Value, block_width: usize) {
    let block = value
        .as_str()
        .and_then(|s| Some((s, literal_block_chomping(s)?)));
    let Some((s, chomping)) = block else {
        out.push(' ');
        write_inline(out, value);
        out.push('\n');
        return;
    };
    out.push_str(" |");
    out.push_str(chomping);
    out.push('\n');
    for line in s.trim_end_matches('\n').split('\n') {
        if !line.is_empty() {
            indent(out, block_width);
            out.push_str(line);
        }
        out.push('\n');
    }
}

/// `Some("")` (clip) for text ending in one newline, `Some("-")` (strip) for
/// text ending in none; `None` when a literal block would not read back as
/// the same string: a single line, several trailing newlines, leading or
/// trailing spaces on a line (the first line's would be read as
/// indentation), or characters that need escapes.
fn literal_block_chomping(s: &str) -> Option<&'static str> {
    let body = s.strip_suffix('\n').unwrap_or(s);
    if !body.contains('\n') || body.ends_with('\n') || body.starts_with([' ', '\n']) {
        return None;
    }
    let plain_lines = body.split('\n').all(|line| {
        !line.ends_with(' ')
            && line
                .chars()
                .all(|c| c == ' ' || (!c.is_control() && is_yaml_printable(c)))
    });
    if !plain_lines {
        return None;
    }
    Some(if s.ends_with('\n') { "" } else { "-" })
}

/// Characters YAML allows unescaped and that no YAML version reads as a
/// line break (YAML 1.1 breaks lines at U+0085, U+2028 and U+2029).
fn is_yaml_printable(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{7E}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}')
}

fn write_inline(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

/// A string as a YAML scalar that every reader takes for that string.
pub fn scalar(s: &str) -> String {
    let mut out = String::new();
    write_string(&mut out, s);
    out
}

/// A string plain when that is unambiguous, else double-quoted with every
/// character outside YAML's printable set escaped.
fn write_string(out: &mut String, s: &str) {
    if is_plain_safe(s) {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_yaml_printable(c) => out.push(c),
            c if u32::from(c) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08X}", u32::from(c))),
        }
    }
    out.push('"');
}

/// A string no YAML 1.1 or 1.2 reader resolves to anything but that string:
/// starts with a letter, `_` or `/` (so never a number, date or indicator),
/// holds no space, quote, comment, flow or mapping syntax, and is not one of
/// the words YAML 1.1 reads as a bool or null.
fn is_plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '_' || first == '/') {
        return false;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '=' | '@' | '+'))
    {
        return false;
    }
    !matches!(resolve_plain(s), Value::Bool(_) | Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_plain_scalars_like_go_yaml_1_1() {
        let doc = parse_one(
            "a: yes\nb: off\nc: Y\nd: 0777\ne: 0x1F\nf: 1_000\ng: -12\nh: 1.5\ni: 1e3\n\
             j: ~\nk: 2024-01-01\nl: .inf\nm: hello\nbin: 0b101\no: '08'\np: 08\nn: 1\n",
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"a": true, "b": false, "c": true, "d": 511, "e": 31, "f": 1000, "g": -12,
                   "h": 1.5, "i": 1000.0, "j": null, "k": "2024-01-01", "l": ".inf",
                   "m": "hello", "bin": 5, "o": "08", "p": 8.0, "false": 1})
        );
    }

    #[test]
    fn quoted_and_tagged_scalars_stay_strings() {
        let doc = parse_one("a: 'yes'\nb: \"1\"\nc: !!str true\nd: |\n  on\n").unwrap();
        assert_eq!(doc, json!({"a": "yes", "b": "1", "c": "true", "d": "on\n"}));
    }

    #[test]
    fn non_string_keys_become_their_text() {
        // The Norway problem, as Go has it: an unquoted `n` key is `false`.
        assert_eq!(
            parse_one("yes: 1\n2: b\n").unwrap(),
            json!({"true": 1, "2": "b"})
        );
    }

    #[test]
    fn anchors_aliases_and_merge_keys_expand() {
        let doc = parse_one("base: &b {x: 1, z: 2}\nc:\n  <<: *b\n  z: 3\nd: *b\n").unwrap();
        assert_eq!(
            doc,
            json!({"base": {"x": 1, "z": 2}, "c": {"z": 3, "x": 1}, "d": {"x": 1, "z": 2}})
        );
    }

    #[test]
    fn refuses_alias_bombs() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, next) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            text.push_str(&format!(
                "{next}: &{next} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            ));
        }
        let err = parse_one(&text).unwrap_err();
        assert!(err.to_string().contains("excessive aliasing"), "{err}");
        // Ordinary reuse is fine.
        let reuse = "d: &d {x: 1, z: [1, 2, 3]}\n".to_owned()
            + &(0..200).map(|i| format!("k{i}: *d\n")).collect::<String>();
        assert_eq!(parse_one(&reuse).unwrap()["k199"]["z"][2], 3);
    }

    #[test]
    fn refuses_nesting_that_would_overflow_the_stack() {
        // The parser stops at its own limit; the loader's bound backs it up.
        assert!(parse_one(&"[".repeat(100_000)).is_err());
        let block: String = (0..200).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        let err = parse_one(&block).unwrap_err();
        assert!(err.to_string().contains("nested deeper than 128"), "{err}");
        let ok = format!("{}{}", "[".repeat(120), "]".repeat(120));
        assert!(parse_one(&ok).is_ok());
    }

    #[test]
    fn reads_every_document_of_a_stream() {
        let docs = parse_documents("---\na: 1\n---\n---\nb: 2\n...\n").unwrap();
        assert_eq!(docs, vec![json!({"a": 1}), Value::Null, json!({"b": 2})]);
    }

    #[test]
    fn reports_invalid_yaml() {
        let err = parse_documents("a: [1, 2\n").unwrap_err();
        assert!(err.to_string().starts_with("invalid YAML"), "{err}");
    }

    #[test]
    fn quotes_every_string_go_would_read_as_something_else() {
        for word in [
            "yes",
            "Yes",
            "on",
            "Off",
            "y",
            "n",
            "NO",
            "true",
            "null",
            "~",
            "",
            "1",
            "0777",
            "1_000",
            "0x10",
            "1e3",
            ".inf",
            "-1",
            "+1",
            "12:30",
            "2024-01-01",
            "a: b",
            "- x",
            "#x",
            "x #y",
            "[x]",
            "{x}",
            "*x",
            "&x",
            "!x",
            "%x",
            "@x",
            "`x",
            "'x'",
            "\"x\"",
            "<<",
            "=",
            " lead",
            "trail ",
        ] {
            let text = to_string(&json!({ "k": word }));
            assert_eq!(
                parse_one(&text).unwrap(),
                json!({ "k": word }),
                "{word:?} -> {text}"
            );
            assert!(text.starts_with("k: \""), "{word:?} must be quoted: {text}");
        }
    }

    #[test]
    fn leaves_ordinary_names_and_paths_unquoted() {
        let value = json!({
            "proxyMetadata": {"OUTPUT_CERTS": "/etc/istio-output-certs"},
            "app.kubernetes.io/name": "prometheus",
        });
        assert_eq!(
            to_string(&value),
            "proxyMetadata:\n  OUTPUT_CERTS: /etc/istio-output-certs\napp.kubernetes.io/name: prometheus\n"
        );
    }

    #[test]
    fn writes_nested_blocks_that_read_back_identically() {
        let value = json!({
            "kind": "Pod",
            "spec": {
                "containers": [
                    {"name": "a", "args": ["--x=1", "y"], "ports": [{"containerPort": 9090}]},
                    {"name": "b", "env": [], "resources": {}},
                ],
                "matrix": [[1, 2], [], [{"k": "v"}]],
                "enabled": true,
                "ratio": 0.5,
                "nothing": null,
            }
        });
        let text = to_string(&value);
        assert_eq!(parse_one(&text).unwrap(), value, "{text}");
        assert!(
            text.contains("  containers:\n  - name: a\n    args:\n    - \"--x=1\"\n    - \"y\"\n"),
            "{text}"
        );
    }

    #[test]
    fn writes_multi_line_strings_as_literal_blocks() {
        let value =
            json!({"a": {"config": "proxyMetadata:\n  X: \"1\"\n\n# end\n"}, "b": ["x\ny"]});
        let text = to_string(&value);
        assert_eq!(
            text,
            "a:\n  config: |\n    proxyMetadata:\n      X: \"1\"\n\n    # end\nb:\n- |-\n  x\n  y\n"
        );
        assert_eq!(parse_one(&text).unwrap(), value);
        // Shapes a literal block cannot carry are quoted instead.
        for s in ["a\n\n", " lead\nx", "a \nb", "tab\there\nx", "\nx"] {
            let text = to_string(&json!({ "k": s }));
            assert!(text.starts_with("k: \""), "{s:?}: {text}");
            assert_eq!(parse_one(&text).unwrap(), json!({ "k": s }));
        }
    }

    #[test]
    fn long_keys_take_the_explicit_form() {
        let key = "k".repeat(2000);
        for value in [
            json!("v"),
            json!({"a": 1}),
            json!([1, {"b": 2}]),
            json!("multi\nline\n"),
        ] {
            let doc = json!({ "first": 1, key.clone(): value, "last": 2 });
            let text = to_string(&doc);
            assert!(text.contains("? kkk"), "{text}");
            assert_eq!(parse_one(&text).unwrap(), doc, "{text}");
        }
    }

    #[test]
    fn escapes_what_yaml_1_1_reads_as_line_breaks() {
        for s in ["a\u{85}b", "a\u{2028}b", "\u{feff}x", "a\u{7f}b", "\u{1}"] {
            let text = to_string(&json!(s));
            assert!(text.is_ascii(), "{s:?}: {text}");
            assert_eq!(parse_one(&text).unwrap(), json!(s));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_json_reads_back_as_written(value in any_json()) {
            let text = to_string(&value);
            proptest::prop_assert_eq!(parse_one(&text).unwrap(), value, "{}", text);
        }
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
            "[a-z0-9 :#\\-\n'\"]{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("yes"),
                Just("on"),
                Just("0777"),
                Just("1_0"),
                Just("~"),
                Just("<<"),
                Just("")
            ]
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }
}
