//! The AdmissionReview protocol (`admission.k8s.io/v1`): bytes in, bytes out.
//!
//! The request's object is read as JSON, never through typed structs, and
//! only the part the rules read is kept ([`mutation::view`]), parsed in the
//! same pass as the envelope: the patch goes to the API server, which applies
//! it to the object it holds, so nothing of the object is lost.
//!
//! kube-core has admission types, but its response puts the patch on the wire
//! as a JSON array of byte values (`[91,123,...]`), more than twice the size
//! of the base64 string the API documents, and its request type wants a typed
//! object. These types are the few fields the webhook reads and writes.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use base64::Engine;
use bumpalo::Bump;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::mutation::patch::write_json_str;
use crate::mutation::view::Reader;
use crate::mutation::{self, Json, Kind, MutationConfig, Operation, Outcome};

pub const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";
/// The API server truncates longer warnings; cut them where we choose.
const MAX_WARNING_CHARS: usize = 256;
/// The API server sends at most 4 KiB of `Warning` headers per response
/// (`k8s.io/apiserver` endpoints/filters/warning.go) and past that truncates
/// every warning to 256 characters; stay under it, counting each header's
/// `299 - "..."` framing.
const MAX_WARNING_BYTES: usize = 4096;
const WARNING_HEADER_OVERHEAD: usize = 10;
/// The least of a warning's `Kind namespace/name: ` prefix kept when the
/// reason needs the room.
const MIN_PREFIX_CHARS: usize = 40;

/// Why a request body is not an AdmissionReview this webhook can answer.
/// Rendered as a one-line reason with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("request body is not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("request body is not an AdmissionReview: {0}")]
    Shape(serde_json::Error),
    #[error("unsupported AdmissionReview apiVersion {0:?}, expected \"admission.k8s.io/v1\"")]
    ApiVersion(String),
    #[error("unexpected kind {0:?}, expected \"AdmissionReview\"")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has an empty uid")]
    MissingUid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

struct Request<'a> {
    uid: String,
    kind: GroupVersionKind,
    sub_resource: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    operation: String,
    object: Option<RequestObject<'a>>,
    dry_run: Option<bool>,
}

/// The request's object, as far as it was read.
enum RequestObject<'a> {
    /// The part the rules read, for a kind known when the object came.
    View(mutation::View),
    /// Captured unparsed: `kind` had not come yet (the API server sends it
    /// first, but JSON does not promise an order).
    Raw(&'a RawValue),
}

impl<'de: 'a, 'a> Deserialize<'de> for Request<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RequestVisitor)
    }
}

/// Reads the request's fields in one pass; the object of a handled kind is
/// parsed straight into its view, the object of any other kind is skipped.
struct RequestVisitor;

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = Request<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AdmissionRequest")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request<'de>, A::Error> {
        let (mut uid, mut kind, mut operation) = (None, None::<GroupVersionKind>, None);
        let (mut sub_resource, mut name, mut namespace, mut dry_run) = (None, None, None, None);
        let mut object = None;
        while let Some(mutation::view::Key(key)) = map.next_key()? {
            match key.as_ref() {
                "uid" => uid = Some(map.next_value::<String>()?),
                "kind" => kind = Some(map.next_value()?),
                "subResource" => sub_resource = map.next_value()?,
                "name" => name = map.next_value()?,
                "namespace" => namespace = map.next_value()?,
                "operation" => operation = Some(map.next_value::<String>()?),
                "dryRun" => dry_run = map.next_value()?,
                "object" => {
                    let known = kind
                        .as_ref()
                        .map(|k| Kind::from_group_kind(&k.group, &k.kind));
                    object = match known {
                        Some(Some(kind)) => Some(RequestObject::View(
                            map.next_value_seed(mutation::view::seed(kind))?,
                        )),
                        Some(None) => {
                            map.next_value::<IgnoredAny>()?;
                            None
                        }
                        None => Some(RequestObject::Raw(map.next_value()?)),
                    };
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Request {
            uid: uid.ok_or_else(|| de::Error::missing_field("uid"))?,
            kind: kind.ok_or_else(|| de::Error::missing_field("kind"))?,
            operation: operation.ok_or_else(|| de::Error::missing_field("operation"))?,
            sub_resource,
            name,
            namespace,
            object,
            dry_run,
        })
    }
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    kind: String,
}

/// What a review was about and what came of it, for logs and metrics: its
/// texts borrowed from the request's body where they hold no escapes.
#[derive(Clone, Debug)]
pub struct ReviewSummary<'a> {
    pub uid: Cow<'a, str>,
    /// The object's kind as sent (`Pod`, `ServiceMonitor`, ...).
    pub kind: Cow<'a, str>,
    /// The kind when the webhook knows it; `None` for anything else.
    pub known_kind: Option<Kind>,
    pub namespace: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub operation: Cow<'a, str>,
    pub dry_run: bool,
    pub patch_operations: usize,
    pub warnings: Vec<String>,
    pub outcome: Outcome,
}

/// A review answered: the response body and its summary.
#[derive(Debug)]
pub struct Reviewed<'a> {
    /// A serialised `AdmissionReview` carrying the response.
    pub body: Vec<u8>,
    pub summary: ReviewSummary<'a>,
}

/// Answers one AdmissionReview. Always allows (this webhook mutates, it never
/// denies); the patch, when there is one, is `JSONPatch`. `dryRun` requests
/// get the same answer: the webhook has no side effects.
///
/// `relabelings` are the scrape class's rules in force ([`mutation::mutate`]).
///
/// The request is read by [`read_fast`] when it can (a well-formed review,
/// each field once, `kind` before `object`: what the API server sends);
/// anything else is read again by serde_json ([`review_with_serde`]), which
/// gives the exact answer or error. Both hand the same fields to [`answer`].
pub fn review<'a>(
    body: &'a [u8],
    config: &MutationConfig,
    relabelings: &Value,
) -> Result<Reviewed<'a>, AdmissionError> {
    with_arena(|arena| match read_fast(body, arena) {
        Some(request) => Ok(answer(request, config, relabelings)),
        None => review_with_serde(body, config, relabelings, arena),
    })
}

/// Runs `review` with this thread's arena for the view, emptied first. The
/// arena keeps its memory from review to review (so a review allocates
/// nothing for the view), unless a large request made it grow past
/// [`ARENA_KEPT_BYTES`].
fn with_arena<T>(review: impl FnOnce(&Bump) -> T) -> T {
    thread_local! {
        static ARENA: RefCell<Bump> = RefCell::new(Bump::new());
    }
    ARENA.with(|arena| match arena.try_borrow_mut() {
        Ok(mut arena) => {
            arena.reset();
            let answer = review(&arena);
            if arena.allocated_bytes() > ARENA_KEPT_BYTES {
                *arena = Bump::new();
            }
            answer
        }
        // A review within a review (never, today): an arena of its own.
        Err(_) => review(&Bump::new()),
    })
}

/// What a thread's arena keeps between reviews: views of the objects the
/// API server sends take a few KiB.
const ARENA_KEPT_BYTES: usize = 1 << 20;

/// What the answer depends on, however the request was read: texts that
/// the summary keeps (`'a`), and the object (`'o`).
struct RequestFields<'a, 'o> {
    uid: Cow<'a, str>,
    group: Cow<'a, str>,
    version: Cow<'a, str>,
    kind: Cow<'a, str>,
    sub_resource: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    namespace: Option<Cow<'a, str>>,
    operation: Cow<'a, str>,
    dry_run: Option<bool>,
    /// The view of the object, for a kind the webhook handles.
    object: Option<Json<'o>>,
}

/// The review read by serde_json, as the webhook always read it; errors
/// come out in the order they always did.
fn review_with_serde<'a>(
    body: &'a [u8],
    config: &MutationConfig,
    relabelings: &Value,
    arena: &Bump,
) -> Result<Reviewed<'a>, AdmissionError> {
    let review = parse(body)?;
    let request = review.request.ok_or(AdmissionError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(AdmissionError::MissingUid);
    }
    let known_kind = Kind::from_group_kind(&request.kind.group, &request.kind.kind);
    let view = match (known_kind, request.object) {
        (Some(_), Some(RequestObject::View(view))) => Some(view),
        (Some(kind), Some(RequestObject::Raw(raw))) => {
            Some(mutation::View::parse(kind, raw.get()).map_err(AdmissionError::Shape)?)
        }
        _ => None,
    };
    let fields = RequestFields {
        uid: Cow::Owned(request.uid),
        group: Cow::Owned(request.kind.group),
        version: Cow::Owned(request.kind.version),
        kind: Cow::Owned(request.kind.kind),
        sub_resource: request.sub_resource.map(Cow::Owned),
        name: request.name.map(Cow::Owned),
        namespace: request.namespace.map(Cow::Owned),
        operation: Cow::Owned(request.operation),
        dry_run: request.dry_run,
        object: view
            .as_ref()
            .map(|view| Json::from_value(view.as_value(), arena)),
    };
    Ok(answer(fields, config, relabelings))
}

/// Sets a field read once; a second time gives up (serde_json decides).
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// The review as the API server sends it, read in one pass without
/// serde: `None` for anything else (any error, a field twice, the object
/// before its kind, a review [`review_with_serde`] refuses), for serde_json
/// to read again. Reads what [`ReviewIn`] reads, and accepts no more.
fn read_fast<'a: 'b, 'b>(body: &'a [u8], arena: &'b Bump) -> Option<RequestFields<'a, 'b>> {
    let mut reader = Reader::new(body, arena)?;
    reader.begin_object()?;
    let (mut api_version, mut kind, mut request) = (None, None, None);
    let mut first = true;
    while let Some(key) = reader.next_key(&mut first)? {
        match key.as_ref() {
            "apiVersion" => once(&mut api_version, reader.string()?)?,
            "kind" => once(&mut kind, reader.string()?)?,
            "request" => once(&mut request, read_request(&mut reader)?)?,
            _ => reader.skip_value()?,
        }
    }
    if !reader.at_end() || api_version? != API_VERSION || kind? != KIND {
        return None;
    }
    request.filter(|request| !request.uid.is_empty())
}

/// The request's fields, as [`RequestVisitor`] reads them.
fn read_request<'a: 'b, 'b>(reader: &mut Reader<'a, 'b>) -> Option<RequestFields<'a, 'b>> {
    reader.begin_object()?;
    let (mut uid, mut gvk, mut operation) = (None, None, None);
    let (mut sub_resource, mut name, mut namespace, mut dry_run) = (None, None, None, None);
    let mut object = None;
    let mut first = true;
    while let Some(key) = reader.next_key(&mut first)? {
        match key.as_ref() {
            "uid" => once(&mut uid, reader.string()?)?,
            "kind" => once(&mut gvk, read_group_version_kind(reader)?)?,
            "subResource" => once(&mut sub_resource, reader.optional_string()?)?,
            "name" => once(&mut name, reader.optional_string()?)?,
            "namespace" => once(&mut namespace, reader.optional_string()?)?,
            "operation" => once(&mut operation, reader.string()?)?,
            "dryRun" => once(&mut dry_run, reader.optional_bool()?)?,
            "object" => {
                let (group, _, kind) = gvk.as_ref()?;
                let view = match Kind::from_group_kind(group, kind) {
                    Some(kind) => Some(reader.view(kind)?),
                    None => {
                        reader.skip_value()?;
                        None
                    }
                };
                once(&mut object, view)?;
            }
            _ => reader.skip_value()?,
        }
    }
    let (group, version, kind) = gvk?;
    Some(RequestFields {
        uid: uid?,
        group,
        version,
        kind,
        sub_resource: sub_resource.flatten(),
        name: name.flatten(),
        namespace: namespace.flatten(),
        operation: operation?,
        dry_run: dry_run.flatten(),
        object: object.flatten(),
    })
}

/// `{"group":..,"version":..,"kind":..}`, as [`GroupVersionKind`] reads it.
type Gvk<'a> = (Cow<'a, str>, Cow<'a, str>, Cow<'a, str>);

fn read_group_version_kind<'a: 'b, 'b>(reader: &mut Reader<'a, 'b>) -> Option<Gvk<'a>> {
    reader.begin_object()?;
    let (mut group, mut version, mut kind) = (None, None, None);
    let mut first = true;
    while let Some(key) = reader.next_key(&mut first)? {
        match key.as_ref() {
            "group" => once(&mut group, reader.string()?)?,
            "version" => once(&mut version, reader.string()?)?,
            "kind" => once(&mut kind, reader.string()?)?,
            _ => reader.skip_value()?,
        }
    }
    Some((
        group.unwrap_or_default(),
        version.unwrap_or_default(),
        kind?,
    ))
}

/// The answer to a request read either way.
fn answer<'a>(
    request: RequestFields<'a, '_>,
    config: &MutationConfig,
    relabelings: &Value,
) -> Reviewed<'a> {
    let known_kind = Kind::from_group_kind(&request.group, &request.kind);
    let operation = match request.operation.as_ref() {
        "CREATE" => Some(Operation::Create),
        "UPDATE" => Some(Operation::Update),
        "DELETE" => Some(Operation::Delete),
        "CONNECT" => Some(Operation::Connect),
        _ => None,
    };
    let mut warnings = Vec::new();
    let object = request.object.as_ref().filter(|view| !view.is_null());
    let mutation = match (known_kind, operation, object) {
        // Subresources (`pods/status`, `prometheuses/scale`, ...) carry no
        // object this webhook should touch, whatever the registration says.
        (Some(kind), Some(operation), Some(object))
            if request
                .sub_resource
                .as_deref()
                .unwrap_or_default()
                .is_empty()
                && request.version == kind.version() =>
        {
            Some(mutation::mutate_view(
                kind,
                operation,
                object,
                config,
                relabelings,
            ))
        }
        (Some(_), Some(Operation::Create | Operation::Update), None) => {
            warnings.push("the request carries no object; nothing was changed".to_owned());
            None
        }
        _ => None,
    };

    let (patch, outcome, patch_operations) = match mutation {
        Some(mutation) => {
            if !mutation.warnings.is_empty() {
                // kubectl prints warnings without saying which object of a
                // multi-document apply they are about: name it.
                let about = mutation::describe(
                    &request.kind,
                    request.namespace.as_deref().unwrap_or_default(),
                    object.unwrap_or(&Json::Null),
                );
                warnings = framed_warnings(&about, &mutation.warnings);
            }
            let operations = mutation.patch.len();
            let patch = (operations > 0).then(|| {
                // A pod's patch is about 1 KiB, a Prometheus's 5: one allocation
                // for most, without the copy of a growing buffer.
                let mut json = Vec::with_capacity(4096);
                mutation.patch.write_json(&mut json);
                json
            });
            (patch, mutation.outcome, operations)
        }
        None => (None, Outcome::Skipped, 0),
    };

    let body = response(&request.uid, patch.as_deref(), &warnings);

    Reviewed {
        body,
        summary: ReviewSummary {
            uid: request.uid,
            kind: request.kind,
            known_kind,
            namespace: request.namespace.unwrap_or_default(),
            name: request.name.unwrap_or_default(),
            operation: request.operation,
            dry_run: request.dry_run.unwrap_or(false),
            patch_operations,
            warnings,
            outcome,
        },
    }
}

/// The AdmissionReview answer, written into one buffer of the right size:
/// `{"apiVersion":..,"kind":..,"response":{"uid":..,"allowed":true,
/// "patchType":"JSONPatch","patch":"<base64>","warnings":[..]}}`. The patch
/// is base64 as the API documents it (not kube-core's array of byte values).
fn response(uid: &str, patch: Option<&[u8]>, warnings: &[String]) -> Vec<u8> {
    let patch_len = patch.map_or(0, |p| p.len().div_ceil(3) * 4);
    let warnings_len: usize = warnings.iter().map(|w| w.len() + 8).sum();
    let mut out = Vec::with_capacity(160 + uid.len() + patch_len + warnings_len);
    out.extend_from_slice(br#"{"apiVersion":""#);
    out.extend_from_slice(API_VERSION.as_bytes());
    out.extend_from_slice(br#"","kind":""#);
    out.extend_from_slice(KIND.as_bytes());
    out.extend_from_slice(br#"","response":{"uid":"#);
    write_json_str(&mut out, uid);
    out.extend_from_slice(br#","allowed":true"#);
    if let Some(patch) = patch {
        out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
        push_base64(&mut out, patch);
        out.push(b'"');
    }
    if !warnings.is_empty() {
        out.extend_from_slice(br#","warnings":["#);
        for (index, warning) in warnings.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            write_json_str(&mut out, warning);
        }
        out.push(b']');
    }
    out.extend_from_slice(b"}}");
    out
}

/// Standard base64 (RFC 4648, padded): two output characters for each 12
/// bits, looked up at once. The patch is most of a response, so this is
/// most of its cost; the base64 crate's scalar encoder takes about twice the
/// instructions.
// Evaluated at compile time: an index out of bounds fails the build, it
// can never panic on a request.
#[allow(clippy::indexing_slicing)]
const BASE64_PAIRS: [[u8; 2]; 4096] = {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut pairs = [[0u8; 2]; 4096];
    let mut i = 0;
    while i < 4096 {
        pairs[i] = [ALPHABET[i >> 6], ALPHABET[i & 63]];
        i += 1;
    }
    pairs
};

fn base64_pair(bits: u64) -> [u8; 2] {
    BASE64_PAIRS
        .get((bits & 0xfff) as usize)
        .copied()
        .unwrap_or_default()
}

/// Appends `bytes` in standard base64, padded: six bytes (48 bits, four
/// pairs) at a time, then the last few as the base64 crate writes them.
fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len().div_ceil(3) * 4);
    let mut chunks = bytes.chunks_exact(6);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        if let Some(low) = word.get_mut(2..) {
            low.copy_from_slice(chunk);
        }
        let bits = u64::from_be_bytes(word);
        let [a, b] = base64_pair(bits >> 36);
        let [c, d] = base64_pair(bits >> 24);
        let [e, f] = base64_pair(bits >> 12);
        let [g, h] = base64_pair(bits);
        out.extend_from_slice(&[a, b, c, d, e, f, g, h]);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let engine = &base64::engine::general_purpose::STANDARD;
        let start = out.len();
        out.resize(start + rest.len().div_ceil(3) * 4, 0);
        if let Some(tail) = out.get_mut(start..) {
            let written = engine.encode_slice(rest, tail).unwrap_or(0);
            out.truncate(start + written);
        }
    }
}

/// Each reason prefixed with the object it is about (kubectl prints
/// warnings without saying which object of a multi-document apply they
/// concern), within the API server's limits: the reason keeps its room and
/// the prefix gives way; warnings past the total budget are summed up in a
/// last one.
fn framed_warnings(about: &str, reasons: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(reasons.len());
    let mut bytes = 0;
    for (index, reason) in reasons.iter().enumerate() {
        let warning = frame(about, reason);
        let left = reasons.len() - index - 1;
        // Room for this one, and for the summary should the next not fit.
        let reserve = if left > 0 { 64 } else { 0 };
        if bytes + warning.len() + WARNING_HEADER_OVERHEAD + reserve > MAX_WARNING_BYTES {
            out.push(format!(
                "{}: {} more warnings not shown",
                clip(about, MIN_PREFIX_CHARS),
                left + 1
            ));
            break;
        }
        bytes += warning.len() + WARNING_HEADER_OVERHEAD;
        out.push(warning);
    }
    out
}

/// `about: reason`, one line, at most [`MAX_WARNING_CHARS`].
fn frame(about: &str, reason: &str) -> String {
    let about = one_line(about);
    let reason = one_line(reason);
    let (about_len, reason_len) = (about.chars().count(), reason.chars().count());
    if about_len + 2 + reason_len <= MAX_WARNING_CHARS {
        return format!("{about}: {reason}");
    }
    let prefix_room = MAX_WARNING_CHARS
        .saturating_sub(reason_len + 2)
        .max(MIN_PREFIX_CHARS.min(about_len));
    let about = clip(&about, prefix_room);
    let reason_room = MAX_WARNING_CHARS - about.chars().count() - 2;
    format!("{about}: {}", clip(&reason, reason_room))
}

/// Warnings travel as HTTP `Warning` headers and are printed by kubectl:
/// one line, no control characters. They may quote user input (a name, an
/// annotation's value), so this is enforced here.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// At most `chars` characters, the last one `…` when something was cut.
fn clip(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(chars.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

fn parse(body: &[u8]) -> Result<ReviewIn<'_>, AdmissionError> {
    let review: ReviewIn<'_> =
        serde_json::from_slice(body).map_err(|error| match error.classify() {
            serde_json::error::Category::Data => AdmissionError::Shape(error),
            _ => AdmissionError::Json(error),
        })?;
    if review.api_version != API_VERSION {
        return Err(AdmissionError::ApiVersion(review.api_version));
    }
    if review.kind != KIND {
        return Err(AdmissionError::Kind(review.kind));
    }
    Ok(review)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What a review gives, comparable: the body and summary, or the error.
    fn outcome(result: Result<Reviewed<'_>, AdmissionError>) -> String {
        match result {
            Ok(reviewed) => format!(
                "{}\n{:?}",
                String::from_utf8_lossy(&reviewed.body),
                reviewed.summary
            ),
            Err(error) => format!("error: {error}"),
        }
    }

    fn fixtures() -> Vec<(String, Vec<u8>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/admission");
        let mut fixtures: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                (path.display().to_string(), std::fs::read(&path).unwrap())
            })
            .collect();
        fixtures.sort();
        assert!(fixtures.len() >= 10);
        fixtures
    }

    #[test]
    fn base64_is_the_standard_padded_encoding() {
        let engine = &base64::engine::general_purpose::STANDARD;
        let bytes: Vec<u8> = (0..=255u8)
            .chain((0..=255u8).rev())
            .cycle()
            .take(700)
            .collect();
        for len in 0..bytes.len() {
            let mut out = b"x".to_vec();
            push_base64(&mut out, &bytes[..len]);
            assert_eq!(
                out,
                format!("x{}", engine.encode(&bytes[..len])).into_bytes(),
                "{len}"
            );
        }
    }

    /// The answer as the webhook wrote it before the patch had its own
    /// writer: serde_json on json-patch's types, then base64.
    fn response_as_before(body: &[u8], config: &MutationConfig, rules: &Value) -> Vec<u8> {
        let review: Value = serde_json::from_slice(body).unwrap();
        let request = &review["request"];
        let kind = Kind::from_group_kind(
            request["kind"]["group"].as_str().unwrap_or_default(),
            request["kind"]["kind"].as_str().unwrap(),
        )
        .unwrap();
        let operation = match request["operation"].as_str().unwrap() {
            "CREATE" => Operation::Create,
            _ => Operation::Update,
        };
        let view = mutation::View::of(kind, &request["object"]);
        let mutation = mutation::mutate(kind, operation, &view, config, rules);
        let about = mutation::describe_object(
            request["kind"]["kind"].as_str().unwrap(),
            request["namespace"].as_str().unwrap_or_default(),
            view.as_value(),
        );
        let warnings = framed_warnings(&about, &mutation.warnings);
        let mut out = String::new();
        out.push_str(
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#,
        );
        out.push_str(&serde_json::to_string(request["uid"].as_str().unwrap()).unwrap());
        out.push_str(r#","allowed":true"#);
        if !mutation.patch.0.is_empty() {
            out.push_str(r#","patchType":"JSONPatch","patch":""#);
            let json = serde_json::to_vec(&mutation.patch).unwrap();
            base64::engine::general_purpose::STANDARD.encode_string(json, &mut out);
            out.push('"');
        }
        if !warnings.is_empty() {
            out.push_str(r#","warnings":"#);
            out.push_str(&serde_json::to_string(&warnings).unwrap());
        }
        out.push_str("}}");
        out.into_bytes()
    }

    #[test]
    fn every_captured_review_is_answered_byte_for_byte_as_before() {
        let config = MutationConfig::default();
        let rules = crate::mesh::Rendering::assumed_strict().relabelings;
        for (name, body) in fixtures() {
            let reviewed = review(&body, &config, &rules).unwrap();
            assert_eq!(
                String::from_utf8(reviewed.body).unwrap(),
                String::from_utf8(response_as_before(&body, &config, &rules)).unwrap(),
                "{name}"
            );
        }
    }

    /// The fast reader answers exactly as serde_json does, or leaves the
    /// request to it: checked on every captured review and on variants of
    /// them cut short, with bytes replaced, fields doubled or moved.
    #[test]
    fn the_fast_reader_answers_as_serde_json_does() {
        let config = MutationConfig::default();
        let rules = crate::mesh::Rendering::assumed_strict().relabelings;
        let same = |body: &[u8]| {
            let fast = outcome(review(body, &config, &rules));
            let serde = outcome(review_with_serde(body, &config, &rules, &Bump::new()));
            assert_eq!(fast, serde, "{}", String::from_utf8_lossy(body));
        };
        for (name, body) in fixtures() {
            assert!(
                read_fast(&body, &Bump::new()).is_some(),
                "{name} takes the fast path"
            );
            same(&body);
            for cut in (0..body.len()).step_by(7) {
                same(body.get(..cut).unwrap());
            }
            for at in (0..body.len()).step_by(3) {
                for byte in [
                    b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'x', b'0', 0x01, 0xc3, 0xff,
                    b' ',
                ] {
                    let mut changed = body.clone();
                    changed[at] = byte;
                    same(&changed);
                }
            }
            let text = String::from_utf8(body.clone()).unwrap();
            for (from, to) in [
                (r#""uid":"#, r#""uid":"x","uid":"#),
                (r#""kind":{"#, r#""kind":{"kind":"Pod","#),
                (r#""name":"#, r#""name":"n\u0041\n","name":"#),
                (r#""namespace":"#, r#""namespace":null,"x":"#),
                (r#""labels":{"#, r#""labels":{"a":"1","a":"2","#),
                (
                    r#""annotations":{"#,
                    r#""annotations":{"k\u00e9y":"v\u00e9\ud83e\udd80\t","#,
                ),
                (r#""annotations":{"#, r#""annotations":{"lone":"\ud83e","#),
                (
                    r#""metadata":{"#,
                    r#""metadata":{"generateName":"g-","n":[1.5e3,-0,1E+2,{"a":[]}],"#,
                ),
                (r#""spec":{"#, r#""spec":{"volumes":"odd","x":[[[[]]]],"#),
                (r#""dryRun":false"#, r#""dryRun":null"#),
                (r#""operation":"CREATE""#, r#""operation":"UPDATE""#),
                (
                    r#""apiVersion":"admission.k8s.io/v1""#,
                    r#""apiVersion":"v1""#,
                ),
            ] {
                same(text.replacen(from, to, 1).as_bytes());
            }
            // The object before its kind: serde_json's path reads it later.
            if let (Some(kind), Some(object)) =
                (text.find(r#""kind":{"#), text.find(r#""object":"#))
                && kind < object
            {
                let moved = text.replacen(r#""kind":{"#, r#""kindX":{"#, 1).replacen(
                    r#""object":"#,
                    r#""kind":{"group":"","version":"v1","kind":"Pod"},"object":"#,
                    1,
                );
                same(moved.as_bytes());
            }
        }
        for odd in [
            "",
            "[]",
            "{}",
            "null",
            "{\"request\":null}",
            " { } ",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":-}",
            "{\"a\":[1,]}",
            "{\"a\":{\"b\":1,}}",
            "{\"a\":tru}",
            "{\"a\":\"\\x\"}",
            "{\"a\":[1}}",
            "{\"a\":{\"b\":1]}",
            "{\"a\":[}",
            "{\"a\":{]}",
            "{\"a\":{\"b\"}}",
            "{\"a\":{\"b\":}}",
            "{\"a\":[[],{}],\"b\":{\"c\":[{\"d\":{}}]}}",
        ] {
            same(odd.as_bytes());
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        same(format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","x":{deep},"request":{{"uid":"u","kind":{{"kind":"Pod","version":"v1"}},"operation":"CREATE","object":{{}}}}}}"#).as_bytes());
    }

    #[test]
    fn the_response_is_the_documented_json() {
        let body = response("u\"1", Some(br#"[{"op":"add"}]"#), &["a \"b\"".to_owned()]);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                   "response": {"uid": "u\"1", "allowed": true, "patchType": "JSONPatch",
                                "patch": "W3sib3AiOiJhZGQifV0=", "warnings": ["a \"b\""]}})
        );
        let bare: Value = serde_json::from_slice(&response("u", None, &[])).unwrap();
        assert_eq!(bare["response"], json!({"uid": "u", "allowed": true}));
    }

    #[test]
    fn reads_an_object_sent_before_its_kind() {
        let body = json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "request": {"uid": "u", "operation": "CREATE",
                "object": {"spec": {"endpoints": [{"port": "web"}]}, "metadata": {"name": "m"}},
                "kind": {"group": "monitoring.coreos.com", "version": "v1", "kind": "ServiceMonitor"}}
        });
        let body = serde_json::to_vec(&body).unwrap();
        let reviewed = review(&body, &MutationConfig::default(), &json!([])).unwrap();
        assert_eq!(reviewed.summary.patch_operations, 1);
    }

    #[test]
    fn warnings_are_one_line_and_capped() {
        assert_eq!(frame("Pod a", "x\nb\tc"), "Pod a: x b c");
        let capped = frame("Pod a", &"x".repeat(1000));
        assert_eq!(capped.chars().count(), MAX_WARNING_CHARS);
        assert!(capped.starts_with("Pod a: x") && capped.ends_with('…'));
        let exact = "é".repeat(MAX_WARNING_CHARS - 7);
        assert_eq!(frame("Pod a", &exact), format!("Pod a: {exact}"));
    }

    #[test]
    fn a_long_name_gives_way_to_the_reason() {
        let about = format!("ServiceMonitor ns/{}", "n".repeat(253));
        let reason = "endpoint 0 (port web) has TLS settings of its own, so the monitor does not join scrape class \"istio-mtls\"";
        let warning = frame(&about, reason);
        assert!(warning.chars().count() <= MAX_WARNING_CHARS, "{warning}");
        assert!(warning.ends_with(reason), "{warning}");
        assert!(warning.starts_with("ServiceMonitor ns/nnn"), "{warning}");
        // A reason too long for any prefix still keeps MIN_PREFIX_CHARS of it.
        let warning = frame(&about, &"r".repeat(400));
        assert_eq!(warning.chars().count(), MAX_WARNING_CHARS);
        assert!(warning.starts_with(&about.chars().take(MIN_PREFIX_CHARS - 1).collect::<String>()));
    }

    #[test]
    fn all_warnings_of_a_response_stay_within_the_api_servers_budget() {
        let reasons: Vec<String> = (0..100)
            .map(|i| format!("{i}: {}", "w".repeat(200)))
            .collect();
        let warnings = framed_warnings("Pod ns/p", &reasons);
        let bytes: usize = warnings
            .iter()
            .map(|w| w.len() + WARNING_HEADER_OVERHEAD)
            .sum();
        assert!(bytes <= MAX_WARNING_BYTES, "{bytes}");
        assert!(warnings.len() > 10);
        let last = warnings.last().unwrap();
        assert_eq!(
            last,
            &format!(
                "Pod ns/p: {} more warnings not shown",
                100 - (warnings.len() - 1)
            )
        );
        // Few warnings pass whole.
        assert_eq!(framed_warnings("Pod ns/p", &reasons[..2]).len(), 2);
    }

    #[test]
    fn a_long_user_value_in_a_warning_is_capped() {
        let value = "y".repeat(10_000);
        let body = serde_json::json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                "object": {"metadata": {"labels": {"app.kubernetes.io/name": "prometheus"},
                    "annotations": {"prom-mtls-webhook.io/inject": value}}, "spec": {"containers": []}}}
        });
        let body = serde_json::to_vec(&body).unwrap();
        let reviewed = review(&body, &MutationConfig::default(), &json!([])).unwrap();
        assert!(!reviewed.summary.warnings.is_empty());
        assert!(
            reviewed
                .summary
                .warnings
                .iter()
                .all(|w| w.chars().count() <= MAX_WARNING_CHARS)
        );
    }
}
