//! `sidecar.istio.io/userVolumeMount`: JSON, either an array
//! `[{"name": .., "mountPath": ..}]` or a map `{"<name>": {"mountPath": ..}}`.
//! The mount of the certificate volume is added in whichever form the user
//! chose, every existing entry kept.

use serde_json::{Map, Value, json};

use super::patch::write_json_str;

pub const ANNOTATION: &str = "sidecar.istio.io/userVolumeMount";

/// The annotation for a pod that has none (the array form, as Istio documents it).
pub fn new(volume: &str, dir: &str) -> String {
    // Written directly: this runs for every pod; the test below checks it
    // against serde_json's rendering.
    let mut out = Vec::with_capacity(32 + volume.len() + dir.len());
    out.extend_from_slice(br#"[{"name":"#);
    write_json_str(&mut out, volume);
    out.extend_from_slice(br#","mountPath":"#);
    write_json_str(&mut out, dir);
    out.extend_from_slice(b"}]");
    // JSON written from two strings is UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// The result of merging into an existing value.
#[derive(Debug, PartialEq, Eq)]
pub enum Merge {
    /// The volume is already mounted; `Some(path)` when at another directory
    /// than the one the sidecar writes to.
    Present { elsewhere: Option<String> },
    /// The new annotation text.
    Added(String),
}

/// Merges the mount of `volume` at `dir` into an existing annotation value.
pub fn merge(text: &str, volume: &str, dir: &str) -> Result<Merge, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("{ANNOTATION} is not valid JSON ({e})"))?;
    match value {
        Value::Array(mut entries) => {
            let existing = entries
                .iter()
                .find(|entry| entry.get("name").and_then(Value::as_str) == Some(volume));
            if let Some(entry) = existing {
                return Ok(present(entry, dir));
            }
            entries.push(json!({"name": volume, "mountPath": dir}));
            Ok(Merge::Added(Value::Array(entries).to_string()))
        }
        Value::Object(mut entries) => {
            if let Some(entry) = entries.get(volume) {
                return Ok(present(entry, dir));
            }
            let mut mount = Map::new();
            mount.insert("mountPath".into(), Value::String(dir.to_owned()));
            entries.insert(volume.to_owned(), Value::Object(mount));
            Ok(Merge::Added(Value::Object(entries).to_string()))
        }
        _ => Err(format!(
            "{ANNOTATION} is neither a JSON array nor a JSON object"
        )),
    }
}

fn present(entry: &Value, dir: &str) -> Merge {
    let path = entry.get("mountPath").and_then(Value::as_str);
    let elsewhere = match path {
        Some(path) if same_dir(path, dir) => None,
        Some(path) => Some(path.to_owned()),
        None => Some(String::new()),
    };
    Merge::Present { elsewhere }
}

/// `/a/b/` and `/a/b` name the same directory.
pub fn same_dir(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DIR: &str = "/etc/istio-output-certs";

    #[test]
    fn new_annotation_is_the_documented_array_form() {
        for (volume, dir) in [("istio-certs", DIR), ("we\"ird", "/a\\b")] {
            assert_eq!(
                new(volume, dir),
                json!([{"name": volume, "mountPath": dir}]).to_string()
            );
        }
    }

    #[test]
    fn appends_to_the_array_form_keeping_entries() {
        let text = r#"[{"name":"oauth","mountPath":"/etc/oauth","readOnly":true}]"#;
        assert_eq!(
            merge(text, "istio-certs", DIR).unwrap(),
            Merge::Added(
                r#"[{"name":"oauth","mountPath":"/etc/oauth","readOnly":true},{"name":"istio-certs","mountPath":"/etc/istio-output-certs"}]"#
                    .into()
            )
        );
    }

    #[test]
    fn adds_to_the_map_form_keeping_entries() {
        let text = r#"{"oauth":{"mountPath":"/etc/oauth"}}"#;
        assert_eq!(
            merge(text, "istio-certs", DIR).unwrap(),
            Merge::Added(
                r#"{"oauth":{"mountPath":"/etc/oauth"},"istio-certs":{"mountPath":"/etc/istio-output-certs"}}"#
                    .into()
            )
        );
    }

    #[test]
    fn recognises_an_existing_mount_in_either_form() {
        for text in [
            r#"[{"name": "istio-certs", "mountPath": "/etc/istio-output-certs/"}]"#,
            r#"{"istio-certs": {"mountPath": "/etc/istio-output-certs"}}"#,
        ] {
            assert_eq!(
                merge(text, "istio-certs", DIR).unwrap(),
                Merge::Present { elsewhere: None }
            );
        }
        assert_eq!(
            merge(
                r#"[{"name":"istio-certs","mountPath":"/x"}]"#,
                "istio-certs",
                DIR
            )
            .unwrap(),
            Merge::Present {
                elsewhere: Some("/x".into())
            }
        );
    }

    #[test]
    fn refuses_what_is_not_json() {
        assert!(
            merge("istio-certs:/x", "istio-certs", DIR)
                .unwrap_err()
                .starts_with(ANNOTATION)
        );
        assert!(
            merge("\"x\"", "istio-certs", DIR)
                .unwrap_err()
                .starts_with(ANNOTATION)
        );
    }
}
