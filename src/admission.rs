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

use std::fmt;

use base64::Engine;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::mutation::{self, Kind, MutationConfig, Operation, Outcome};

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

/// What a review was about and what came of it, for logs and metrics.
#[derive(Clone, Debug)]
pub struct ReviewSummary {
    pub uid: String,
    /// The object's kind as sent (`Pod`, `ServiceMonitor`, ...).
    pub kind: String,
    /// The kind when the webhook knows it; `None` for anything else.
    pub known_kind: Option<Kind>,
    pub namespace: String,
    pub name: String,
    pub operation: String,
    pub dry_run: bool,
    pub patch_operations: usize,
    pub warnings: Vec<String>,
    pub outcome: Outcome,
}

/// A review answered: the response body and its summary.
#[derive(Debug)]
pub struct Reviewed {
    /// A serialised `AdmissionReview` carrying the response.
    pub body: Vec<u8>,
    pub summary: ReviewSummary,
}

/// Answers one AdmissionReview. Always allows (this webhook mutates, it never
/// denies); the patch, when there is one, is `JSONPatch`. `dryRun` requests
/// get the same answer: the webhook has no side effects.
///
/// `relabelings` are the scrape class's rules in force ([`mutation::mutate`]).
pub fn review(
    body: &[u8],
    config: &MutationConfig,
    relabelings: &Value,
) -> Result<Reviewed, AdmissionError> {
    let review = parse(body)?;
    let request = review.request.ok_or(AdmissionError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(AdmissionError::MissingUid);
    }

    let known_kind = Kind::from_group_kind(&request.kind.group, &request.kind.kind);
    let operation = match request.operation.as_str() {
        "CREATE" => Some(Operation::Create),
        "UPDATE" => Some(Operation::Update),
        "DELETE" => Some(Operation::Delete),
        "CONNECT" => Some(Operation::Connect),
        _ => None,
    };
    let mut warnings = Vec::new();
    let object = match (known_kind, request.object) {
        (Some(_), Some(RequestObject::View(view))) => Some(view),
        (Some(kind), Some(RequestObject::Raw(raw))) => {
            Some(mutation::View::parse(kind, raw.get()).map_err(AdmissionError::Shape)?)
        }
        _ => None,
    };
    let object = object.filter(|view| !view.as_value().is_null());
    let mutation = match (known_kind, operation, &object) {
        // Subresources (`pods/status`, `prometheuses/scale`, ...) carry no
        // object this webhook should touch, whatever the registration says.
        (Some(kind), Some(operation), Some(object))
            if request
                .sub_resource
                .as_deref()
                .unwrap_or_default()
                .is_empty()
                && request.kind.version == kind.version() =>
        {
            Some(mutation::mutate(
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
                let about = mutation::describe_object(
                    &request.kind.kind,
                    request.namespace.as_deref().unwrap_or_default(),
                    object
                        .as_ref()
                        .map_or(&Value::Null, mutation::View::as_value),
                );
                warnings = framed_warnings(&about, &mutation.warnings);
            }
            let operations = mutation.patch.0.len();
            let patch = if operations == 0 {
                None
            } else {
                let mut json = Vec::with_capacity(1024);
                serde_json::to_writer(&mut json, &mutation.patch).map_err(AdmissionError::Json)?;
                Some(json)
            };
            (patch, mutation.outcome, operations)
        }
        None => (None, Outcome::Skipped, 0),
    };

    let body = response(&request.uid, patch.as_deref(), &warnings);

    Ok(Reviewed {
        body,
        summary: ReviewSummary {
            uid: request.uid,
            kind: request.kind.kind,
            known_kind,
            namespace: request.namespace.unwrap_or_default(),
            name: request.name.unwrap_or_default(),
            operation: request.operation,
            dry_run: request.dry_run.unwrap_or(false),
            patch_operations,
            warnings,
            outcome,
        },
    })
}

/// The AdmissionReview answer, written into one buffer of the right size:
/// `{"apiVersion":..,"kind":..,"response":{"uid":..,"allowed":true,
/// "patchType":"JSONPatch","patch":"<base64>","warnings":[..]}}`. The patch
/// is base64 as the API documents it (not kube-core's array of byte values).
fn response(uid: &str, patch: Option<&[u8]>, warnings: &[String]) -> Vec<u8> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let patch_len = patch.map_or(0, |p| p.len().div_ceil(3) * 4);
    let warnings_len: usize = warnings.iter().map(|w| w.len() + 8).sum();
    let mut out = String::with_capacity(160 + uid.len() + patch_len + warnings_len);
    out.push_str(r#"{"apiVersion":""#);
    out.push_str(API_VERSION);
    out.push_str(r#"","kind":""#);
    out.push_str(KIND);
    out.push_str(r#"","response":{"uid":"#);
    push_json(&mut out, uid);
    out.push_str(r#","allowed":true"#);
    if let Some(patch) = patch {
        out.push_str(r#","patchType":"JSONPatch","patch":""#);
        engine.encode_string(patch, &mut out);
        out.push('"');
    }
    if !warnings.is_empty() {
        out.push_str(r#","warnings":"#);
        push_json(&mut out, warnings);
    }
    out.push_str("}}");
    out.into_bytes()
}

/// Appends `value` as JSON. Serialising strings cannot fail.
fn push_json<T: serde::Serialize + ?Sized>(out: &mut String, value: &T) {
    if let Ok(json) = serde_json::to_string(value) {
        out.push_str(&json);
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
        let reviewed = review(
            &serde_json::to_vec(&body).unwrap(),
            &MutationConfig::default(),
            &json!([]),
        )
        .unwrap();
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
        let reviewed = review(
            &serde_json::to_vec(&body).unwrap(),
            &MutationConfig::default(),
            &json!([]),
        )
        .unwrap();
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
