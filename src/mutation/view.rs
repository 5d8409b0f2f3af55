//! The part of an object the rules read, parsed without the rest.
//!
//! Building a `serde_json::Value` of a whole pod (managedFields, probes,
//! ports, tolerations...) costs most of a review's time, yet the rules read a
//! few fields. The lists below (`Keep`) say which; everything else is
//! skipped without allocating. The patch computed from the view is the patch
//! for the full object: every path it writes and every check it makes lies
//! within the kept fields. The rules read the kept fields as a borrowed
//! [`Json`] tree, made one of two ways, by the same lists:
//!
//! - on the review path, [`Reader`] reads the request's bytes straight into
//!   it, borrowing strings from the body; it gives up on anything unusual,
//!   and the protocol layer then reads the body with serde_json instead;
//! - everywhere else (that fallback, the preview, tests, benches, the
//!   fuzzer), [`View::parse`] or [`View::of`] keeps the fields in a `Value`,
//!   which the rules borrow as a `Json`.
//!
//! [`crate::mutation::mutate`] takes a [`View`], never a bare `Value`, and the
//! rules' entry point for a [`Json`] is private to the crate: whatever calls
//! the rules hands them exactly what a review hands them. So a new rule that
//! reads a field missing from these lists sees nothing in its own tests too,
//! and its golden case fails until the field is listed.
//!
//! Where a field has another type than expected (a custom resource arrives
//! before its schema is checked), it is kept whole, so the rules see it as it
//! is and refuse to overwrite it.

use std::borrow::Cow;
use std::fmt;

use bumpalo::Bump;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::Kind;

/// Which part of a JSON value to keep.
#[derive(Debug)]
enum Keep {
    /// The whole value.
    All,
    /// A mapping with only these keys, each kept as said.
    Fields(&'static [(&'static str, Keep)]),
    /// A list, each item kept as said.
    Items(&'static Keep),
    /// A mapping with all of its keys but these.
    AllBut(&'static [&'static str]),
}

use Keep::{All, AllBut, Fields, Items};

/// Annotations: every key may matter (the webhook's own prefix is
/// configurable), except `kubectl apply`'s copy of the whole object, which
/// no rule reads and which is often the largest string in the request: as
/// long as the object itself, JSON-escaped twice.
const ANNOTATIONS: Keep = AllBut(&["kubectl.kubernetes.io/last-applied-configuration"]);

/// `metadata`: names for warnings, labels and annotations for the rules.
const METADATA: Keep = Fields(&[
    ("name", All),
    ("generateName", All),
    ("namespace", All),
    ("labels", All),
    ("annotations", ANNOTATIONS),
]);
const NAMED: Keep = Fields(&[("name", All)]);
const MOUNT: Keep = Fields(&[("name", All), ("mountPath", All)]);
const ENV_VAR: Keep = Fields(&[("name", All), ("value", All)]);
const CONTAINER: Keep = Fields(&[
    ("name", All),
    ("image", All),
    ("volumeMounts", Items(&MOUNT)),
    ("env", Items(&ENV_VAR)),
]);
const ENDPOINT: Keep = Fields(&[
    ("scheme", All),
    ("tlsConfig", All),
    ("port", All),
    ("targetPort", All),
    ("portNumber", All),
    ("path", All),
    ("relabelings", All),
]);

const POD: Keep = Fields(&[
    ("metadata", METADATA),
    (
        "spec",
        Fields(&[
            ("volumes", Items(&NAMED)),
            ("containers", Items(&CONTAINER)),
            ("initContainers", Items(&CONTAINER)),
        ]),
    ),
]);
const PROMETHEUS: Keep = Fields(&[
    ("metadata", METADATA),
    (
        "spec",
        Fields(&[
            (
                "podMetadata",
                Fields(&[("annotations", ANNOTATIONS), ("labels", All)]),
            ),
            ("volumes", Items(&NAMED)),
            ("volumeMounts", Items(&MOUNT)),
            ("scrapeClasses", Items(&NAMED)),
        ]),
    ),
]);
const SERVICE_MONITOR: Keep = Fields(&[
    ("metadata", METADATA),
    (
        "spec",
        Fields(&[("scrapeClass", All), ("endpoints", Items(&ENDPOINT))]),
    ),
]);
const POD_MONITOR: Keep = Fields(&[
    ("metadata", METADATA),
    (
        "spec",
        Fields(&[
            ("scrapeClass", All),
            ("podMetricsEndpoints", Items(&ENDPOINT)),
        ]),
    ),
]);

fn fields_read(kind: Kind) -> &'static Keep {
    match kind {
        Kind::Pod => &POD,
        Kind::Prometheus | Kind::PrometheusAgent => &PROMETHEUS,
        Kind::ServiceMonitor => &SERVICE_MONITOR,
        Kind::PodMonitor => &POD_MONITOR,
    }
}

/// An object as the rules see it: only the fields they read.
#[derive(Clone, Debug, PartialEq)]
pub struct View(Value);

impl View {
    /// Parses the part of `json` (one object of `kind`) that the rules read.
    pub fn parse(kind: Kind, json: &str) -> Result<Self, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let value = Seed(fields_read(kind)).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(Self(value))
    }

    /// The view of an object already parsed whole (the `mutate` preview, the
    /// mesh controller's watch): the same fields [`View::parse`] keeps.
    pub fn of(kind: Kind, object: &Value) -> Self {
        Self(keep(fields_read(kind), object))
    }

    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

/// The view of an object of `kind`, as a seed for a deserializer already
/// positioned at the object (the protocol layer parses it in stride).
pub fn seed(kind: Kind) -> ViewSeed {
    ViewSeed(fields_read(kind))
}

pub struct ViewSeed(&'static Keep);

impl<'de> DeserializeSeed<'de> for ViewSeed {
    type Value = View;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<View, D::Error> {
        Seed(self.0).deserialize(deserializer).map(View)
    }
}

/// What [`Seed`] keeps of a parsed value: the same rules, on a tree.
fn keep(keep_as: &Keep, value: &Value) -> Value {
    match (keep_as, value) {
        (Fields(fields), Value::Object(object)) => Value::Object(
            object
                .iter()
                .filter_map(|(key, value)| {
                    let (_, field) = fields.iter().find(|(name, _)| name == key)?;
                    Some((key.clone(), keep(field, value)))
                })
                .collect(),
        ),
        (AllBut(skipped), Value::Object(object)) => Value::Object(
            object
                .iter()
                .filter(|(key, _)| !skipped.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        ),
        (Items(item), Value::Array(items)) => {
            Value::Array(items.iter().map(|value| keep(item, value)).collect())
        }
        // The whole value, or one of another type than expected.
        _ => value.clone(),
    }
}

struct Seed(&'static Keep);

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self.0 {
            All => Value::deserialize(deserializer),
            keep => deserializer.deserialize_any(KeepVisitor(keep)),
        }
    }
}

struct KeepVisitor(&'static Keep);

impl<'de> Visitor<'de> for KeepVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Seed(self.0).deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // A list where a mapping was expected is kept whole.
        let item = match self.0 {
            Items(item) => item,
            _ => &All,
        };
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(value) = seq.next_element_seed(Seed(item))? {
            items.push(value);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            // A mapping where a list was expected is kept whole.
            let keep = match self.0 {
                Fields(fields) => fields
                    .iter()
                    .find(|(name, _)| *name == key)
                    .map(|(_, keep)| keep),
                AllBut(skipped) => (!skipped.contains(&key.as_ref())).then_some(&All),
                _ => Some(&All),
            };
            match keep {
                Some(keep) => {
                    let value = map.next_value_seed(Seed(keep))?;
                    object.insert(key.into_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// A JSON value as the rules read it: strings and keys borrowed from the
/// request where they hold no escapes, objects as slices of entries in
/// their order (every key once). What [`View`] keeps, without the `IndexMap`
/// per object and the `String` per key and value a `serde_json::Value`
/// costs.
///
/// Lists, mappings and unescaped strings live in an arena ([`Bump`]) that
/// outlives the value: a review allocates nothing for them and frees
/// nothing after (they were a twentieth of a pod review's instructions, in
/// `malloc`, `free` and the walk that dropped them). Nothing in a `Json`
/// owns memory, so the arena can forget it whole.
#[derive(Clone, Debug, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(&'a str),
    Array(&'a [Json<'a>]),
    Object(Object<'a>),
}

/// A JSON object's entries, in order, each key once.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Object<'a>(&'a [(&'a str, Json<'a>)]);

impl<'a> Object<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Json<'a>> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a Json<'a>)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> Json<'a> {
    /// `serde_json::Value::get` for a key: `None` unless an object has it.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.as_object()?.get(key)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(object) => Some(object),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Json::Object(_))
    }

    /// The same value as a `serde_json::Value` (for warnings and the cold
    /// paths; the review path never needs it).
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::String(s) => Value::String((*s).to_owned()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(object) => Value::Object(
                object
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

impl<'a> Json<'a> {
    /// Borrows a parsed value (the preview, the controller, tests), its
    /// lists and mappings made in `arena`: the rules then read it exactly
    /// as they read a review's view.
    pub fn from_value(value: &'a Value, arena: &'a Bump) -> Self {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.clone()),
            Value::String(s) => Json::String(s),
            Value::Array(items) => Json::Array(
                arena.alloc_slice_fill_iter(items.iter().map(|item| Json::from_value(item, arena))),
            ),
            Value::Object(map) => Json::Object(Object(
                arena.alloc_slice_fill_iter(
                    map.iter()
                        .map(|(k, v)| (k.as_str(), Json::from_value(v, arena))),
                ),
            )),
        }
    }
}

/// Tests read parsed values as the rules do without an arena to hand: each
/// conversion's arena is leaked (a test's few values).
#[cfg(test)]
impl<'a> From<&'a Value> for Json<'a> {
    fn from(value: &'a Value) -> Self {
        Json::from_value(value, Box::leak(Box::new(Bump::new())))
    }
}

/// Equality as between two `Value`s: objects are equal whatever their order.
impl PartialEq<Value> for Json<'_> {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Json::Null, Value::Null) => true,
            (Json::Bool(a), Value::Bool(b)) => a == b,
            (Json::Number(a), Value::Number(b)) => a == b,
            (Json::String(a), Value::String(b)) => *a == b,
            (Json::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
            }
            (Json::Object(a), Value::Object(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v == w))
            }
            _ => false,
        }
    }
}

/// As JSON, the way `serde_json::Value` displays (warnings quote values).
impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_value(), f)
    }
}

/// The most nesting the fast reader follows; deeper input goes to
/// serde_json (whose own limit, 128, it then applies).
const MAX_DEPTH: usize = 64;
/// Kept objects with more keys go to serde_json: checking each key against
/// the others for duplicates is quadratic.
const MAX_KEPT_KEYS: usize = 64;

/// A strict reader of JSON bytes for the review path: it reads what the
/// rules need into [`Json`] and skips the rest, making only the kept
/// arrays, objects and escaped strings, in the arena.
///
/// It accepts no more than serde_json does (the same grammar; the whole
/// request UTF-8, where serde_json checks only the strings it reads) and
/// gives up (`None`) on anything it does not handle: a float or a duplicate
/// key where a value is kept, deep nesting, any error. The caller then
/// parses the same bytes with serde_json, which gives the exact answer or
/// the exact error: so whatever this reader accepts, it reads as serde_json
/// would.
pub struct Reader<'a, 'b> {
    /// The request, checked as UTF-8 once: a string without escapes is a
    /// slice of it, with no check of its own (which cost more than finding
    /// its end: a call per string).
    text: &'a str,
    pos: usize,
    depth: usize,
    /// Where the kept lists, mappings and escaped strings are made; the
    /// view lives as long as it (`'b`), the request longer (`'a`).
    arena: &'b Bump,
}

fn is_string_stop(byte: u8) -> bool {
    // `|`, not `||`: no branch per byte, so that a window of them is checked
    // at once (see `window_plain_len`).
    (byte == b'"') | (byte == b'\\') | (byte < 0x20)
}

/// How many bytes of `window` come before its first `"`, `\` or control
/// character: 16 if none. Written byte by byte, without branches, so that
/// the compiler checks the sixteen at once with SSE2 (x86_64's baseline),
/// safely and without intrinsics; on any target the answer is the same.
/// Against eight bytes at a time in a `u64` alone: 1.5k fewer instructions
/// per pod review, 1k per ServiceMonitor (callgrind, docs/benchmarks.md).
#[inline(always)]
fn window_plain_len(window: &[u8; 16]) -> usize {
    window_stops(window).trailing_zeros() as usize / 8
}

/// Each byte of `window` that is `"`, `\` or a control character, as a byte
/// of ones in the result (the first byte lowest).
#[inline(always)]
fn window_stops(window: &[u8; 16]) -> u128 {
    let mut stops = [0u8; 16];
    for (stop, &byte) in stops.iter_mut().zip(window) {
        *stop = if is_string_stop(byte) { 0xff } else { 0 };
    }
    u128::from_le_bytes(stops)
}

/// How many bytes of `bytes` come before the first `"`, `\` or control
/// character (all of them if none), sixteen at a time: the bytes a JSON
/// string holds as they are, for the reader and for the patch's writer.
#[inline(always)]
pub fn plain_len(bytes: &[u8]) -> usize {
    let mut len = 0;
    while let Some(window) = bytes.get(len..len + 16) {
        let Ok(window) = <&[u8; 16]>::try_from(window) else {
            break;
        };
        let plain = window_plain_len(window);
        len += plain;
        if plain < 16 {
            return len;
        }
    }
    // Fewer than sixteen left: eight at a time in a `u64`, then one by one.
    let mut rest = bytes.get(len..).unwrap_or_default();
    if let Some((word, tail)) = rest.split_first_chunk::<8>() {
        let stops = word_stops(u64::from_le_bytes(*word));
        if stops != 0 {
            return len + stops.trailing_zeros() as usize / 8;
        }
        len += 8;
        rest = tail;
    }
    len + rest
        .iter()
        .position(|&byte| is_string_stop(byte))
        .unwrap_or(rest.len())
}

/// Each byte of `word` that is `"`, `\` or a control character has its top
/// bit set in the result (serde_json's test: the lowest set byte is exact).
#[inline(always)]
fn word_stops(word: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & (ONES << 7)
}

/// The position of the first byte from `pos` that is not whitespace.
#[inline(always)]
fn skip_whitespace(bytes: &[u8], mut pos: usize) -> usize {
    // The API server writes compact JSON: one comparison in the usual case.
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

/// Past the string that starts (with its `"`) at `pos`: escapes checked,
/// the bytes between them not, as serde_json ignores a string.
///
/// Sixteen bytes at a time, and every stop within them taken from the one
/// check: a string full of escapes (`kubectl apply`'s copy of the object,
/// quotes escaped at every key) is not checked again after each.
#[inline(always)]
fn string_end(bytes: &[u8], pos: usize) -> Option<usize> {
    if bytes.get(pos) != Some(&b'"') {
        return None;
    }
    let mut pos = pos + 1;
    while let Some(window) = bytes.get(pos..pos + 16) {
        let base = pos;
        let mut stops = window_stops(<&[u8; 16]>::try_from(window).ok()?);
        pos = base + 16;
        while stops != 0 {
            let at = base + stops.trailing_zeros() as usize / 8;
            match *bytes.get(at)? {
                b'"' => return Some(at + 1),
                b'\\' => {
                    let next = escape_end(bytes, at)?;
                    if next >= base + 16 {
                        pos = next;
                        break;
                    }
                    // The stops before `next` are done with.
                    stops &= u128::MAX << ((next - base) * 8);
                }
                _ => return None, // a control character
            }
        }
    }
    // Fewer than sixteen bytes left.
    loop {
        pos += plain_len(bytes.get(pos..)?);
        match *bytes.get(pos)? {
            b'"' => return Some(pos + 1),
            b'\\' => pos = escape_end(bytes, pos)?,
            _ => return None, // a control character
        }
    }
}

/// Past the escape whose `\` is at `pos`, checked as serde_json checks one
/// in a string it ignores (`\u` with four hex digits, whatever they make).
#[inline(always)]
fn escape_end(bytes: &[u8], pos: usize) -> Option<usize> {
    match *bytes.get(pos + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(pos + 2),
        b'u' => {
            let hex = bytes.get(pos + 2..pos + 6)?;
            hex.iter().all(u8::is_ascii_hexdigit).then_some(pos + 6)
        }
        _ => None,
    }
}

/// Past a mapping's key at `pos` (or after whitespace there), its `:` and
/// at most the whitespace before it: at the key's value, or at whitespace
/// before it.
#[inline(always)]
fn key_end(bytes: &[u8], pos: usize) -> Option<usize> {
    let pos = match bytes.get(pos) {
        Some(b'"') => string_end(bytes, pos)?,
        _ => string_end(bytes, skip_whitespace(bytes, pos))?,
    };
    match bytes.get(pos) {
        Some(b':') => Some(pos + 1),
        _ => {
            let pos = skip_whitespace(bytes, pos);
            (bytes.get(pos) == Some(&b':')).then_some(pos + 1)
        }
    }
}

/// Past `word` at `pos`.
#[inline]
fn literal_end(bytes: &[u8], pos: usize, word: &[u8]) -> Option<usize> {
    (bytes.get(pos..pos + word.len())? == word).then_some(pos + word.len())
}

/// Past the number at `pos`, checked against JSON's grammar.
fn number_end(bytes: &[u8], mut pos: usize) -> Option<usize> {
    let digits = |mut pos: usize| {
        while let Some(b'0'..=b'9') = bytes.get(pos) {
            pos += 1;
        }
        pos
    };
    if bytes.get(pos) == Some(&b'-') {
        pos += 1;
    }
    match *bytes.get(pos)? {
        b'0' => pos += 1,
        b'1'..=b'9' => pos = digits(pos + 1),
        _ => return None,
    }
    if bytes.get(pos) == Some(&b'.') {
        let end = digits(pos + 1);
        if end == pos + 1 {
            return None;
        }
        pos = end;
    }
    if let Some(b'e' | b'E') = bytes.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = bytes.get(pos) {
            pos += 1;
        }
        let end = digits(pos);
        if end == pos {
            return None;
        }
        pos = end;
    }
    // `01` is no number: the grammar ends at the `0`, and what follows is
    // refused by whoever reads next, as by serde_json.
    Some(pos)
}

impl<'a: 'b, 'b> Reader<'a, 'b> {
    /// `None` unless `bytes` are UTF-8 as a whole (the API server's always
    /// are; serde_json reads anything else).
    pub fn new(bytes: &'a [u8], arena: &'b Bump) -> Option<Self> {
        Some(Self {
            text: std::str::from_utf8(bytes).ok()?,
            pos: 0,
            depth: 0,
            arena,
        })
    }

    #[inline(always)]
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline(always)]
    pub fn next_byte(&mut self) -> Option<u8> {
        self.pos = skip_whitespace(self.bytes(), self.pos);
        self.peek()
    }

    #[inline(always)]
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.next_byte()? == byte).then(|| self.pos += 1)
    }

    /// Only whitespace is left.
    pub fn at_end(&mut self) -> bool {
        self.next_byte().is_none()
    }

    #[inline(always)]
    fn enter(&mut self, open: u8) -> Option<()> {
        self.eat(open)?;
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// Opens an object; then [`Self::next_key`] until it returns `None`
    /// inside the `Some`.
    pub fn begin_object(&mut self) -> Option<()> {
        self.enter(b'{')
    }

    /// The next key of the object (positioned at its value), or `Some(None)`
    /// at its end; `first` is true before the first key.
    #[inline(always)]
    pub fn next_key(&mut self, first: &mut bool) -> Option<Option<Cow<'a, str>>> {
        if !self.next_entry(first, b'}')? {
            return Some(None);
        }
        let key = self.string()?;
        self.eat(b':')?;
        Some(Some(key))
    }

    /// Past the `,` before the next entry, at its first byte: `false` past
    /// the `close` that ends the object or list instead.
    #[inline(always)]
    fn next_entry(&mut self, first: &mut bool, close: u8) -> Option<bool> {
        match self.next_byte()? {
            byte if byte == close => {
                self.pos += 1;
                self.depth -= 1;
                return Some(false);
            }
            b',' if !*first => {
                self.pos += 1;
                self.next_byte()?;
            }
            _ if *first => {}
            _ => return None,
        }
        *first = false;
        Some(true)
    }

    fn begin_array(&mut self) -> Option<()> {
        self.enter(b'[')
    }

    /// Whether an item follows (positioned at it); `false` at the end.
    fn next_item(&mut self, first: &mut bool) -> Option<bool> {
        self.next_entry(first, b']')
    }

    /// A string (at its opening quote), unescaped: borrowed from the request
    /// unless it holds escapes.
    #[inline(always)]
    pub fn string(&mut self) -> Option<Cow<'a, str>> {
        let bytes = self.bytes();
        if bytes.get(self.pos) != Some(&b'"') {
            return None;
        }
        let start = self.pos + 1;
        let end = start + plain_len(bytes.get(start..)?);
        if bytes.get(end) == Some(&b'"') {
            self.pos = end + 1;
            // Both ends are quotes, so both are character boundaries.
            return self.text.get(start..end).map(Cow::Borrowed);
        }
        self.pos = end;
        self.escaped_string(start)
    }

    /// The rest of a string that holds an escape (or a control character,
    /// refused) at `self.pos`, its plain bytes from `start`.
    #[cold]
    fn escaped_string(&mut self, start: usize) -> Option<Cow<'a, str>> {
        let mut decoded = self.bytes().get(start..self.pos)?.to_vec();
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    // Whole characters of the request and whole escapes:
                    // UTF-8 by construction, checked anyway (rare).
                    return String::from_utf8(decoded).ok().map(Cow::Owned);
                }
                b'\\' => {
                    self.pos += 1;
                    self.unescape(&mut decoded)?;
                }
                _ => return None, // a control character
            }
            let from = self.pos;
            self.pos += plain_len(self.bytes().get(from..)?);
            decoded.extend_from_slice(self.bytes().get(from..self.pos)?);
        }
    }

    /// One escape after its `\`, appended as UTF-8; lone surrogates refused.
    fn unescape(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let escaped = self.peek()?;
        self.pos += 1;
        let byte = match escaped {
            b'"' | b'\\' | b'/' => escaped,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut code = u32::from(self.hex4()?);
                if (0xD800..0xDC00).contains(&code) {
                    if self.bytes().get(self.pos..self.pos + 2)? != b"\\u" {
                        return None;
                    }
                    self.pos += 2;
                    let low = u32::from(self.hex4()?);
                    if !(0xDC00..0xE000).contains(&low) {
                        return None;
                    }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                }
                let c = char::from_u32(code)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                return Some(());
            }
            _ => return None,
        };
        out.push(byte);
        Some(())
    }

    fn hex4(&mut self) -> Option<u16> {
        let digits = self.bytes().get(self.pos..self.pos + 4)?;
        self.pos += 4;
        digits.iter().try_fold(0u16, |n, &d| {
            let digit = (d as char).to_digit(16)?;
            Some(n << 4 | digit as u16)
        })
    }

    /// A number's text, checked against JSON's grammar.
    fn number_text(&mut self) -> Option<&'a str> {
        let start = self.pos;
        self.pos = number_end(self.bytes(), start)?;
        std::str::from_utf8(self.bytes().get(start..self.pos)?).ok()
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.bytes().get(self.pos..self.pos + word.len())? != word {
            return None;
        }
        self.pos += word.len();
        Some(())
    }

    /// Skips one value of any kind, checked as serde_json checks what it
    /// ignores.
    ///
    /// One loop rather than a call per value: most of a request is skipped
    /// (`managedFields`, probes, `userInfo`), and most of that is short keys
    /// and empty mappings, where a call per key and per value cost more than
    /// the bytes themselves. The open lists and mappings are a stack of bits,
    /// one per level (1 for a mapping), which [`MAX_DEPTH`] keeps within a
    /// `u64`.
    pub fn skip_value(&mut self) -> Option<()> {
        let bytes = self.bytes();
        let mut pos = self.pos;
        let mut open: u64 = 0;
        let mut depth = 0;
        // Whitespace is met where a value or a `,` is due, in an arm of its
        // own: the API server writes none, so checking for it before every
        // token cost more than any other step.
        'value: loop {
            match *bytes.get(pos)? {
                b'"' => pos = string_end(bytes, pos)?,
                // `{}`, most values of `managedFields`: nothing to open.
                b'{' if bytes.get(pos + 1) == Some(&b'}') => pos += 2,
                open_byte @ (b'{' | b'[') => {
                    depth += 1;
                    if self.depth + depth > MAX_DEPTH {
                        return None;
                    }
                    let object = open_byte == b'{';
                    open = open << 1 | u64::from(object);
                    pos = skip_whitespace(bytes, pos + 1);
                    let close = if object { b'}' } else { b']' };
                    if *bytes.get(pos)? != close {
                        if object {
                            pos = key_end(bytes, pos)?;
                        }
                        continue 'value;
                    }
                    pos += 1;
                    open >>= 1;
                    depth -= 1;
                }
                b't' => pos = literal_end(bytes, pos, b"true")?,
                b'f' => pos = literal_end(bytes, pos, b"false")?,
                b'n' => pos = literal_end(bytes, pos, b"null")?,
                b' ' | b'\n' | b'\r' | b'\t' => {
                    pos += 1;
                    continue 'value;
                }
                _ => pos = number_end(bytes, pos)?,
            }
            // After a value: the next entry, or the ends of lists and
            // mappings, until the value skipped is whole.
            while depth > 0 {
                let in_object = open & 1 == 1;
                match *bytes.get(pos)? {
                    b',' => {
                        pos += 1;
                        if in_object {
                            pos = key_end(bytes, pos)?;
                        }
                        continue 'value;
                    }
                    b'}' if in_object => {}
                    b']' if !in_object => {}
                    b' ' | b'\n' | b'\r' | b'\t' => {
                        pos += 1;
                        continue;
                    }
                    _ => return None,
                }
                pos += 1;
                open >>= 1;
                depth -= 1;
            }
            self.pos = pos;
            return Some(());
        }
    }

    /// A string or `null` (serde's `Option<String>`).
    pub fn optional_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        match self.next_byte()? {
            b'n' => self.literal(b"null").map(|()| None),
            _ => self.string().map(Some),
        }
    }

    /// A boolean or `null` (serde's `Option<bool>`).
    pub fn optional_bool(&mut self) -> Option<Option<bool>> {
        match self.next_byte()? {
            b'n' => self.literal(b"null").map(|()| None),
            b't' => self.literal(b"true").map(|()| Some(true)),
            b'f' => self.literal(b"false").map(|()| Some(false)),
            _ => None,
        }
    }

    /// The view of the object of `kind` here: what [`View::parse`] keeps.
    pub fn view(&mut self, kind: Kind) -> Option<Json<'b>> {
        self.kept(fields_read(kind))
    }

    /// The part of the value here that `keep` says, as [`Seed`] keeps it.
    fn kept(&mut self, keep: &'static Keep) -> Option<Json<'b>> {
        match self.next_byte()? {
            b'{' => self.kept_object(keep),
            b'[' => {
                // A list where a mapping was expected is kept whole.
                let item = match keep {
                    Items(item) => item,
                    _ => &All,
                };
                self.begin_array()?;
                // Room in the arena costs nothing: enough that the usual
                // list never grows (growing copies it).
                let mut items = bumpalo::collections::Vec::with_capacity_in(8, self.arena);
                let mut first = true;
                while self.next_item(&mut first)? {
                    items.push(self.kept(item)?);
                }
                Some(Json::Array(items.into_bump_slice()))
            }
            b'"' => self.arena_string().map(Json::String),
            b't' => self.literal(b"true").map(|()| Json::Bool(true)),
            b'f' => self.literal(b"false").map(|()| Json::Bool(false)),
            b'n' => self.literal(b"null").map(|()| Json::Null),
            _ => {
                // serde_json's own conversion, so that every number (and
                // every float's rounding) is the one it would make.
                let number = serde_json::from_str::<Number>(self.number_text()?).ok()?;
                Some(Json::Number(number))
            }
        }
    }

    fn kept_object(&mut self, keep: &'static Keep) -> Option<Json<'b>> {
        self.begin_object()?;
        let capacity = match keep {
            Fields(fields) => fields.len(),
            _ => 16,
        };
        let mut entries = bumpalo::collections::Vec::with_capacity_in(capacity, self.arena);
        let mut first = true;
        while let Some(key) = self.next_key(&mut first)? {
            // A mapping where a list was expected is kept whole.
            let (key, keep_as) = match keep {
                Fields(fields) => match fields.iter().find(|(name, _)| **name == *key) {
                    // The field's own name: the same text, no conversion.
                    Some((name, keep)) => (*name, keep),
                    None => {
                        self.skip_value()?;
                        continue;
                    }
                },
                AllBut(skipped) if skipped.iter().any(|name| **name == *key) => {
                    self.skip_value()?;
                    continue;
                }
                _ => (self.in_arena(key), &All),
            };
            // serde_json keeps the last of duplicate keys, in the first's
            // place: rare enough to leave to it.
            if entries.len() >= MAX_KEPT_KEYS || entries.iter().any(|(k, _)| *k == key) {
                return None;
            }
            let value = self.kept(keep_as)?;
            entries.push((key, value));
        }
        Some(Json::Object(Object(entries.into_bump_slice())))
    }

    /// A string (at its opening quote), unescaped: borrowed from the request
    /// unless it holds escapes, then made in the arena.
    fn arena_string(&mut self) -> Option<&'b str> {
        let text = self.string()?;
        Some(self.in_arena(text))
    }

    fn in_arena(&self, text: Cow<'a, str>) -> &'b str {
        match text {
            Cow::Borrowed(text) => text,
            Cow::Owned(text) => self.arena.alloc_str(&text),
        }
    }
}

/// A mapping key, borrowed from the input unless it holds escapes.
pub struct Key<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// [`View::parse`], checked against [`View::of`] on the same object, and
    /// against the fast [`Reader`] (same values, same order) where it reads.
    fn parse(kind: Kind, json: &str) -> Result<Value, serde_json::Error> {
        let arena = Bump::new();
        let fast = Reader::new(json.as_bytes(), &arena).unwrap().view(kind);
        let view = View::parse(kind, json)?;
        let whole: Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            View::of(kind, &whole),
            view,
            "View::of keeps what View::parse keeps"
        );
        if let Some(fast) = fast {
            assert_eq!(fast, Json::from(&view.0));
            assert_eq!(fast.to_value().to_string(), view.0.to_string());
        }
        Ok(view.0)
    }

    #[test]
    fn the_reader_reads_what_serde_json_reads() {
        let json = r#"{"metadata": {"name": "a\"b\u00e9\ud83e\udd80/\/", "labels": {"x": 1, "y": -2,
            "z": 18446744073709551615, "f": 1.5, "e": -0, "t": [true, false, null]}},
            "spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "\n\t"}],
            "ports": [{"x": "\u0000"}]}], "volumes": {"odd": [1, {"a": {}}]}}}"#;
        let arena = Bump::new();
        let fast = Reader::new(json.as_bytes(), &arena)
            .unwrap()
            .view(Kind::Pod)
            .unwrap();
        let view = View::parse(Kind::Pod, json).unwrap();
        assert_eq!(fast, Json::from(view.as_value()));
        assert_eq!(fast.to_value().to_string(), view.as_value().to_string());
        // Left to serde_json: a duplicate kept key, a lone surrogate.
        for json in [
            r#"{"metadata": {"name": "a", "name": "b"}}"#,
            r#"{"metadata": {"name": "\ud800"}}"#,
        ] {
            assert!(
                Reader::new(json.as_bytes(), &Bump::new())
                    .unwrap()
                    .view(Kind::Pod)
                    .is_none(),
                "{json}"
            );
        }
        // A duplicate key that is not kept is skipped as serde_json skips it.
        let json = r#"{"status": 1, "status": 2, "metadata": {}}"#;
        assert_eq!(
            Reader::new(json.as_bytes(), &Bump::new())
                .unwrap()
                .view(Kind::Pod)
                .unwrap()
                .to_value(),
            parse(Kind::Pod, json).unwrap()
        );
    }

    /// The end of a string is found wherever its escapes fall against the
    /// sixteen-byte windows, and a bad escape or a raw control character is
    /// refused wherever it falls.
    #[test]
    fn strings_end_where_serde_json_ends_them() {
        let pieces = ["a", "\"", "\\", "\n", "\u{1}", "é", "🦀", "/", "\u{7f}"];
        let quoted = |text: &str| serde_json::to_string(text).unwrap();
        for len in 0..40 {
            for (index, piece) in pieces.iter().enumerate() {
                for at in 0..=len {
                    let mut text = "x".repeat(len);
                    text.insert_str(at, piece);
                    text.push_str(pieces[(index + at) % pieces.len()]);
                    let literal = quoted(&text);
                    let json = format!("{literal},1]");
                    assert_eq!(
                        string_end(json.as_bytes(), 0),
                        Some(literal.len()),
                        "{literal}"
                    );
                    // Split where `piece` starts: the JSON of the head
                    // without its closing quote, of the tail without its
                    // opening one.
                    let head = quoted(&text[..at]);
                    let tail = quoted(&text[at..]);
                    let (head, tail) = (&head[..head.len() - 1], &tail[1..]);
                    for bad in ["\\x", "\\u12g4", "\u{1}", "\\"] {
                        let broken = if bad == "\\" {
                            // An escaped quote where the string should end.
                            format!("{head}{}\\\"", &tail[..tail.len() - 1])
                        } else {
                            format!("{head}{bad}{tail}")
                        };
                        assert_eq!(string_end(broken.as_bytes(), 0), None, "{broken}");
                    }
                }
            }
        }
    }

    #[test]
    fn keeps_what_the_rules_read_and_nothing_else() {
        let pod = json!({
            "metadata": {"name": "p", "labels": {"a": "b"}, "annotations": {"x": "y"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [1],
                                     "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": true}]}],
                     "tolerations": [{}]},
            "status": {}
        });
        let view = parse(Kind::Pod, &pod.to_string()).unwrap();
        assert_eq!(
            view,
            json!({
                "metadata": {"name": "p", "labels": {"a": "b"}, "annotations": {"x": "y"}},
                "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]}
            })
        );
    }

    #[test]
    fn keeps_fields_of_an_unexpected_type_whole() {
        let prometheus = json!({"spec": {"volumes": {"odd": [1, {"a": 2}]}, "podMetadata": "x"}});
        let view = parse(Kind::Prometheus, &prometheus.to_string()).unwrap();
        assert_eq!(view, prometheus);
        let monitor =
            json!({"spec": {"endpoints": ["http", 3, null, {"port": "web", "interval": "30s"}]}});
        let view = parse(Kind::ServiceMonitor, &monitor.to_string()).unwrap();
        assert_eq!(
            view,
            json!({"spec": {"endpoints": ["http", 3, null, {"port": "web"}]}})
        );
    }

    #[test]
    fn keeps_every_annotation_but_the_last_applied_configuration() {
        let last_applied = "kubectl.kubernetes.io/last-applied-configuration";
        let annotations = json!({"a": "1", last_applied: "{\"kind\":\"Pod\"}", "b": {"odd": true}});
        let pod = json!({"metadata": {"annotations": annotations}});
        assert_eq!(
            parse(Kind::Pod, &pod.to_string()).unwrap(),
            json!({"metadata": {"annotations": {"a": "1", "b": {"odd": true}}}})
        );
        let prometheus = json!({"spec": {"podMetadata": {"annotations": annotations}}});
        assert_eq!(
            parse(Kind::Prometheus, &prometheus.to_string()).unwrap(),
            json!({"spec": {"podMetadata": {"annotations": {"a": "1", "b": {"odd": true}}}}})
        );
        // Annotations of the wrong type are kept whole, as any other field.
        let odd = json!({"metadata": {"annotations": [last_applied]}});
        assert_eq!(parse(Kind::Pod, &odd.to_string()).unwrap(), odd);
    }

    #[test]
    fn reads_escaped_keys_and_refuses_trailing_garbage() {
        let view = parse(Kind::Pod, r#"{"metadata": {"na\u006de": "p"}}"#).unwrap();
        assert_eq!(view, json!({"metadata": {"name": "p"}}));
        assert!(parse(Kind::Pod, "{} x").is_err());
    }
}
