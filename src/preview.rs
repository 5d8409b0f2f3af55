//! The offline preview behind `prom-mtls-webhook mutate`: manifests in
//! (multi-document YAML, JSON, or a `List`), the same manifests out as the API
//! server would store them after this webhook, or the patches themselves.
//! Objects the webhook does not handle pass through unchanged.

use serde_json::{Map, Value, json};

use crate::mutation::{self, Kind, MutationConfig, Operation, Outcome};
use crate::yaml;

/// What `preview` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviewOutput {
    /// Every manifest, mutated, as YAML documents.
    Manifests,
    /// One JSON line per object the webhook handles: what it is and its patch.
    Patches,
}

#[derive(Debug)]
pub struct Preview {
    pub output: String,
    /// Each prefixed with the object it is about.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error(transparent)]
    Yaml(#[from] yaml::YamlError),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{object}: the patch does not apply ({error}); this is a bug, please report it")]
    Patch {
        object: String,
        error: json_patch::PatchError,
    },
}

/// `relabelings`: the scrape class's rules for the mode the preview assumes
/// ([`crate::mesh::Rendering`]); it has no mesh to watch.
pub fn preview(
    input: &str,
    output: PreviewOutput,
    config: &MutationConfig,
    relabelings: &Value,
) -> Result<Preview, PreviewError> {
    let mut warnings = Vec::new();
    let mut documents = Vec::new();
    let mut patches = String::new();
    for mut document in read_documents(input)? {
        if document.is_null() {
            continue;
        }
        let is_list = is_list(&document_kind(&document));
        match document.get_mut("items").and_then(Value::as_array_mut) {
            // `kubectl get -o yaml` writes a List.
            Some(items) if is_list => {
                for item in items.iter_mut() {
                    mutate_in_place(item, config, relabelings, &mut patches, &mut warnings)?;
                }
            }
            _ => mutate_in_place(
                &mut document,
                config,
                relabelings,
                &mut patches,
                &mut warnings,
            )?,
        }
        documents.push(document);
    }
    let output = match output {
        PreviewOutput::Patches => patches,
        PreviewOutput::Manifests => documents
            .iter()
            .map(yaml::to_string)
            .collect::<Vec<_>>()
            .join("---\n"),
    };
    Ok(Preview { output, warnings })
}

fn read_documents(input: &str) -> Result<Vec<Value>, PreviewError> {
    let trimmed = input.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return Ok(yaml::parse_documents(input)?);
    }
    // JSON, possibly several values in a row (`kubectl ... -o json` output
    // concatenated); or YAML that starts with a flow collection (`{}` then
    // `---`). When it is neither, the JSON error is the one worth showing.
    let json: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(trimmed)
        .into_iter::<Value>()
        .collect();
    match json {
        Ok(documents) => Ok(documents),
        Err(json_error) => yaml::parse_documents(input).map_err(|_| PreviewError::Json(json_error)),
    }
}

fn document_kind(document: &Value) -> String {
    document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn is_list(kind: &str) -> bool {
    kind == "List" || kind.ends_with("List")
}

/// `ServiceMonitor default/productpage`, for warnings.
fn describe(object: &Value) -> String {
    mutation::describe_object(&document_kind(object), "", object)
}

fn mutate_in_place(
    object: &mut Value,
    config: &MutationConfig,
    relabelings: &Value,
    patches: &mut String,
    warnings: &mut Vec<String>,
) -> Result<(), PreviewError> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(kind) = Kind::from_api_version_kind(api_version, &document_kind(object)) else {
        note_pod_template(object, config, warnings);
        return Ok(());
    };
    let name = describe(object);
    // What `kubectl apply` of a new object does: a CREATE.
    let view = mutation::View::of(kind, object);
    let mutation = mutation::mutate(kind, Operation::Create, &view, config, relabelings);
    warnings.extend(mutation.warnings.iter().map(|w| format!("{name}: {w}")));

    let mut line = Map::new();
    for field in ["apiVersion", "kind"] {
        line.insert(
            field.into(),
            object.get(field).cloned().unwrap_or(Value::Null),
        );
    }
    for field in ["namespace", "name"] {
        if let Some(value) = object.get("metadata").and_then(|m| m.get(field)) {
            line.insert(field.into(), value.clone());
        }
    }
    line.insert("patch".into(), serde_json::to_value(&mutation.patch)?);
    patches.push_str(&Value::Object(line).to_string());
    patches.push('\n');

    json_patch::patch(object, &mutation.patch).map_err(|error| PreviewError::Patch {
        object: name,
        error,
    })
}

/// Workloads are not mutated (the webhook mutates their pods when they are
/// created), but a preview that stays silent about them would mislead.
fn note_pod_template(object: &Value, config: &MutationConfig, warnings: &mut Vec<String>) {
    let template = object
        .get("spec")
        .and_then(|s| s.get("jobTemplate").and_then(|j| j.get("spec")).or(Some(s)))
        .and_then(|s| s.get("template"));
    let Some(template) = template.filter(|t| t.get("spec").is_some()) else {
        return;
    };
    let pod = json!({"metadata": template.get("metadata"), "spec": template.get("spec")});
    let pod_view = mutation::View::of(Kind::Pod, &pod);
    let pod_mutation = mutation::mutate(
        Kind::Pod,
        Operation::Create,
        &pod_view,
        config,
        &Value::Null,
    );
    if pod_mutation.outcome == Outcome::Patched {
        warnings.push(format!(
            "{}: left as it is; the webhook mutates its pods when they are created",
            describe(object)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutates_handled_kinds_and_passes_others_through() {
        let input = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: prom\n---\n\
                     apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: web\n\
                     spec:\n  endpoints:\n  - port: web\n";
        let preview = preview(
            input,
            PreviewOutput::Manifests,
            &MutationConfig::default(),
            &serde_json::json!([]),
        )
        .unwrap();
        let docs = yaml::parse_documents(&preview.output).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0], yaml::parse_documents(input).unwrap()[0]);
        assert_eq!(docs[1]["spec"]["scrapeClass"], "istio-mtls");
        assert_eq!(
            docs[1]["spec"]["endpoints"][0],
            serde_json::json!({"port": "web"})
        );
        assert!(preview.warnings.is_empty(), "{:?}", preview.warnings);
    }

    #[test]
    fn prints_one_patch_line_per_handled_object() {
        let input = r#"{"apiVersion":"monitoring.coreos.com/v1","kind":"ServiceMonitor","metadata":{"name":"a","namespace":"n"},"spec":{"endpoints":[{"port":"web"}]}}"#;
        let preview = preview(
            input,
            PreviewOutput::Patches,
            &MutationConfig::default(),
            &serde_json::json!([]),
        )
        .unwrap();
        let line: Value = serde_json::from_str(preview.output.trim()).unwrap();
        assert_eq!(line["name"], "a");
        assert_eq!(line["namespace"], "n");
        assert_eq!(line["patch"][0]["path"], "/spec/scrapeClass");
    }

    #[test]
    fn mutates_the_items_of_a_list() {
        let input = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: monitoring.coreos.com/v1\n  kind: ServiceMonitor\n  metadata: {name: a}\n  spec:\n    endpoints: [{port: web}]\n";
        let preview = preview(
            input,
            PreviewOutput::Manifests,
            &MutationConfig::default(),
            &serde_json::json!([]),
        )
        .unwrap();
        let doc = yaml::parse_one(&preview.output).unwrap();
        assert_eq!(doc["items"][0]["spec"]["scrapeClass"], "istio-mtls");
    }

    #[test]
    fn says_that_workload_pods_are_mutated_at_creation() {
        let input = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: prom}\nspec:\n  template:\n    metadata:\n      labels: {app.kubernetes.io/name: prometheus}\n    spec:\n      containers: [{name: prometheus}]\n";
        let preview = preview(
            input,
            PreviewOutput::Manifests,
            &MutationConfig::default(),
            &serde_json::json!([]),
        )
        .unwrap();
        assert_eq!(
            yaml::parse_one(&preview.output).unwrap(),
            yaml::parse_one(input).unwrap()
        );
        assert_eq!(preview.warnings.len(), 1, "{:?}", preview.warnings);
        assert!(preview.warnings[0].starts_with("StatefulSet prom: "));
    }

    #[test]
    fn output_reads_back_as_the_same_documents() {
        for input in [
            "{}\n---\na: 1\n",
            "[]\n",
            "[1, 2]\n---\n{}\n",
            "{\"a\": [1]} {\"b\": 2}",
        ] {
            let first = preview(
                input,
                PreviewOutput::Manifests,
                &MutationConfig::default(),
                &serde_json::json!([]),
            )
            .unwrap();
            let second = preview(
                &first.output,
                PreviewOutput::Manifests,
                &MutationConfig::default(),
                &serde_json::json!([]),
            )
            .unwrap();
            assert_eq!(first.output, second.output, "{input:?}");
        }
    }

    #[test]
    fn reports_unparsable_input() {
        let err = preview(
            "a: [",
            PreviewOutput::Manifests,
            &MutationConfig::default(),
            &serde_json::json!([]),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("invalid YAML"), "{err}");
        let err = preview(
            "{\"a\":",
            PreviewOutput::Manifests,
            &MutationConfig::default(),
            &serde_json::json!([]),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("invalid JSON"), "{err}");
    }
}
