//! The part of an object the rules read, parsed without the rest.
//!
//! Building a `serde_json::Value` of a whole pod (managedFields, probes,
//! ports, tolerations...) costs most of a review's time, yet the rules read a
//! few fields. [`View::parse`] builds a `Value` that keeps those fields, in
//! their places, and skips everything else without allocating. The patch
//! computed from the view is the patch for the full object: every path it
//! writes and every check it makes lies within the kept fields.
//!
//! [`crate::mutation::mutate`] takes a [`View`], never a bare `Value`, and a
//! `View` is made only here, by the lists below: a test, a bench or the
//! preview hands the rules exactly what a review hands them. So a new rule
//! that reads a field missing from these lists sees nothing in its own tests
//! too, and its golden case fails until the field is listed.
//!
//! Where a field has another type than expected (a custom resource arrives
//! before its schema is checked), it is kept whole, so the rules see it as it
//! is and refuse to overwrite it.

use std::borrow::Cow;
use std::fmt;

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

    /// [`View::parse`], checked against [`View::of`] on the same object.
    fn parse(kind: Kind, json: &str) -> Result<Value, serde_json::Error> {
        let view = View::parse(kind, json)?;
        let whole: Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            View::of(kind, &whole),
            view,
            "View::of keeps what View::parse keeps"
        );
        Ok(view.0)
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
