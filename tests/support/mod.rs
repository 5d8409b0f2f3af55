//! Checks shared by the golden, fixture, property and fuzz-regression tests
//! and by the fuzz targets (`fuzz/fuzz_targets`, through `#[path]`): the
//! rules every patch must keep (SPEC.md, "Rules for every change").

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use base64::Engine;
use json_patch::{Patch, PatchOperation};
use std::sync::LazyLock;

use prom_mtls_webhook::mesh::{MeshPolicy, ModeSource, MtlsMode, PeerAuthentication, Rendering};
use prom_mtls_webhook::mutation::{Kind, Mutation, MutationConfig, Operation, View, mutate};
use serde_json::{Value, json};

/// A rendering with namespace, workload and port rules, so that patches
/// carry rules of every kind: what the golden, fixture and property tests
/// pass as the class's relabelings.
pub static RULES: LazyLock<Rendering> = LazyLock::new(|| {
    let policy = |namespace: &str,
                  name: &str,
                  selector: &[(&str, &str)],
                  mode,
                  ports: &[(u32, MtlsMode)]| PeerAuthentication {
        namespace: namespace.into(),
        name: name.into(),
        created: 1_700_000_000,
        selector: selector
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        mode,
        port_level: ports.iter().copied().collect(),
    };
    let policies = [
        policy("istio-system", "default", &[], MtlsMode::Strict, &[]),
        policy("legacy", "default", &[], MtlsMode::Permissive, &[]),
        policy(
            "bookinfo",
            "reviews",
            &[("app", "reviews")],
            MtlsMode::Unset,
            &[(9080, MtlsMode::Permissive)],
        ),
    ];
    Rendering::new(
        ModeSource::Watch,
        MeshPolicy::compose(&policies, "istio-system"),
    )
});

pub fn rules() -> &'static Value {
    &RULES.relabelings
}

/// The rules for a mesh taken as STRICT throughout: the smallest rendering,
/// which the golden files carry (the rendering has golden files of its own).
pub fn strict_rules() -> &'static Value {
    static STRICT: LazyLock<Rendering> = LazyLock::new(Rendering::assumed_strict);
    &STRICT.relabelings
}

/// The files in `dir` whose name ends in `.<extension>`, sorted.
pub fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

/// An AdmissionReview response's patch, decoded from base64, or `[]`.
pub fn decoded_patch(response: &Value) -> Value {
    match response["patch"].as_str() {
        Some(encoded) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }
        None => {
            assert!(response.get("patchType").is_none());
            json!([])
        }
    }
}

/// The only existing values a patch may rewrite: the merged Istio
/// annotations, the webhook's own status annotation, and an earlier
/// version's `scheme: https` on an endpoint, turned back into `http`.
fn may_replace(path: &str, value: &Value, config: &MutationConfig) -> bool {
    let status = format!("{}status", config.annotation_prefix).replace('/', "~1");
    let annotation = |key: &str| {
        path.ends_with(&format!("/annotations/{key}"))
            && (path.starts_with("/metadata/") || path.starts_with("/spec/podMetadata/"))
    };
    annotation("proxy.istio.io~1config")
        || annotation("sidecar.istio.io~1userVolumeMount")
        || annotation(&status)
        || (path.ends_with("/scheme") && endpoint_path(path) && value == "http")
}

fn endpoint_path(path: &str) -> bool {
    path.starts_with("/spec/endpoints/") || path.starts_with("/spec/podMetricsEndpoints/")
}

/// The only values a patch may remove: what this webhook wrote itself (an
/// earlier version's file `tlsConfig` on an endpoint, the class's rules in
/// an endpoint's relabelings).
fn may_remove(path: &str, value: &Value, config: &MutationConfig) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        [
            "",
            "spec",
            "endpoints" | "podMetricsEndpoints",
            _,
            "tlsConfig",
        ] => *value == *config.scrape_tls_config(),
        ["", "spec", "endpoints", _, "relabelings", _] => {
            let target = value["targetLabel"].as_str().unwrap_or_default();
            target.starts_with("__tmp_istio_mtls_")
                || (target == "__scheme__"
                    && value["sourceLabels"] == json!(["__tmp_istio_mtls_mode"]))
        }
        _ => false,
    }
}

/// Applies `patch` to `object` and checks the rules: it applies cleanly,
/// `add` never lands on an existing value (except to append to a list or to
/// fill a null), `replace` and `remove` only where allowed, nothing else of
/// the object changes, and no other existing value disappears.
pub fn apply_checked(object: &Value, patch: &Patch, config: &MutationConfig) -> Value {
    let mut result = object.clone();
    // `object` with only the allowed removals applied: what must survive.
    let mut kept = object.clone();
    for operation in &patch.0 {
        match operation {
            PatchOperation::Add(add) => {
                let path = add.path.to_string();
                if !path.ends_with("/-") {
                    let existing = result.pointer(&path);
                    assert!(
                        existing.is_none_or(Value::is_null),
                        "add would overwrite {path}: {existing:?}"
                    );
                }
            }
            PatchOperation::Replace(replace) => {
                let path = replace.path.to_string();
                assert!(
                    may_replace(&path, &replace.value, config),
                    "replace of {path} with {} is not an allowed merge",
                    replace.value
                );
            }
            PatchOperation::Remove(remove) => {
                let path = remove.path.to_string();
                let existing = result.pointer(&path).cloned().unwrap_or(Value::Null);
                assert!(
                    may_remove(&path, &existing, config),
                    "remove of {path} ({existing}) is not allowed"
                );
                json_patch::patch(&mut kept, std::slice::from_ref(operation)).unwrap();
            }
            other => panic!("unexpected operation {other:?}"),
        }
        json_patch::patch(&mut result, std::slice::from_ref(operation)).unwrap_or_else(|e| {
            panic!(
                "patch does not apply: {e}\n{}",
                serde_json::to_string_pretty(patch).unwrap()
            )
        });
    }
    assert_nothing_lost(&kept, &result, "", config);
    result
}

/// Every value of `before` is still in `after`, in the same place (lists
/// only grow at their end), except the allowed merges.
fn assert_nothing_lost(before: &Value, after: &Value, path: &str, config: &MutationConfig) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (key, value) in b {
                let child = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                match a.get(key) {
                    Some(next) => assert_nothing_lost(value, next, &child, config),
                    None => panic!("{child} was removed"),
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            assert!(a.len() >= b.len(), "{path} lost items");
            for (i, (value, next)) in b.iter().zip(a).enumerate() {
                assert_nothing_lost(value, next, &format!("{path}/{i}"), config);
            }
        }
        (Value::Null, _) => {}
        (b, a) if b == a => {}
        (b, a) => assert!(
            may_replace(path, a, config),
            "{path} changed from {b} to {a}"
        ),
    }
}

/// Mutates, applies with the checks above, and mutates the result again,
/// which must yield an empty patch (idempotence).
pub fn mutate_twice(
    kind: Kind,
    operation: Operation,
    object: &Value,
    config: &MutationConfig,
) -> (Mutation, Value) {
    mutate_twice_with(kind, operation, object, config, rules())
}

/// [`mutate_twice`] with the given scrape class rules.
pub fn mutate_twice_with(
    kind: Kind,
    operation: Operation,
    object: &Value,
    config: &MutationConfig,
    rules: &Value,
) -> (Mutation, Value) {
    let first = mutate(kind, operation, &view_of(kind, object), config, rules);
    let mutated = apply_checked(object, &first.patch, config);
    let second = mutate(kind, operation, &view_of(kind, &mutated), config, rules);
    assert!(
        second.patch.0.is_empty(),
        "second pass is not empty: {}",
        serde_json::to_string(&second.patch).unwrap()
    );
    (first, mutated)
}

/// The object as the rules see it. A review parses its view from the
/// request's bytes (`View::parse`), the preview and these tests cut it from
/// a parsed object (`View::of`): both must keep the same fields, and the
/// patch computed from the view must apply to the whole object (which
/// `apply_checked` does).
pub fn view_of(kind: Kind, object: &Value) -> View {
    let view = View::of(kind, object);
    assert_eq!(
        View::parse(kind, &object.to_string()).unwrap(),
        view,
        "View::parse and View::of keep different fields"
    );
    assert_eq!(
        prom_mtls_webhook::mutation::describe_object(kind.as_str(), "", view.as_value()),
        prom_mtls_webhook::mutation::describe_object(kind.as_str(), "", object),
        "the view lacks what names the object"
    );
    view
}
