//! `proxy.istio.io/config`: a ProxyConfig as YAML or JSON, into which
//! `proxyMetadata.OUTPUT_CERTS` is merged without losing any other key.
//!
//! Istio parses the annotation with Go's YAML 1.1 rules and rejects the pod if
//! the result is not a valid ProxyConfig, so the text is read with those rules.
//! YAML is edited in place (one line inserted, the user's comments and layout
//! kept) when re-reading the edit proves it means exactly the old config plus
//! `OUTPUT_CERTS`; otherwise it is written back unambiguously (see
//! [`crate::yaml`]). JSON stays JSON.

use serde_json::{Map, Value};

use crate::yaml;

pub const ANNOTATION: &str = "proxy.istio.io/config";
const PROXY_METADATA: &str = "proxyMetadata";
const OUTPUT_CERTS: &str = "OUTPUT_CERTS";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
}

/// A parsed `proxy.istio.io/config` value.
#[derive(Debug)]
pub struct ProxyConfig {
    format: Format,
    source: String,
    fields: Map<String, Value>,
}

impl ProxyConfig {
    /// Parses an existing annotation value. The error says why it cannot be
    /// merged into (and so why the object is left alone).
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim_start();
        let (format, value) = match serde_json::from_str::<Value>(trimmed) {
            Ok(value) if trimmed.starts_with('{') => (Format::Json, value),
            _ => (
                Format::Yaml,
                yaml::parse_one(text)
                    .map_err(|e| format!("{ANNOTATION} is not valid YAML or JSON ({e})"))?,
            ),
        };
        let fields = match value {
            Value::Object(fields) => fields,
            Value::Null => Map::new(),
            _ => return Err(format!("{ANNOTATION} is not a ProxyConfig mapping")),
        };
        let config = Self {
            format,
            source: text.to_owned(),
            fields,
        };
        config.output_certs()?;
        Ok(config)
    }

    /// `proxyMetadata.OUTPUT_CERTS`, if set.
    pub fn output_certs(&self) -> Result<Option<&str>, String> {
        match self.fields.get(PROXY_METADATA) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(metadata)) => match metadata.get(OUTPUT_CERTS) {
                None => Ok(None),
                Some(Value::String(dir)) => Ok(Some(dir)),
                Some(_) => Err(format!(
                    "{ANNOTATION} sets proxyMetadata.OUTPUT_CERTS to something other than a directory"
                )),
            },
            Some(_) => Err(format!(
                "{ANNOTATION} has a proxyMetadata that is not a mapping"
            )),
        }
    }

    /// The annotation text with `OUTPUT_CERTS` set to `dir`, every other key
    /// kept in its place. Call only when [`Self::output_certs`] is `None`.
    pub fn with_output_certs(mut self, dir: &str) -> String {
        let metadata = self
            .fields
            .entry(PROXY_METADATA)
            .or_insert_with(|| Value::Object(Map::new()));
        if !metadata.is_object() {
            *metadata = Value::Object(Map::new());
        }
        if let Value::Object(metadata) = metadata {
            metadata.insert(OUTPUT_CERTS.to_owned(), Value::String(dir.to_owned()));
        }
        let fields = Value::Object(self.fields);
        match self.format {
            Format::Json => fields.to_string(),
            Format::Yaml => insert_in_place(&self.source, dir)
                .filter(|edited| yaml::parse_one(edited).is_ok_and(|v| v == fields))
                .unwrap_or_else(|| yaml::to_string(&fields)),
        }
    }

    /// The annotation for a pod that has none: YAML, as Istio's docs write it.
    pub fn new_with_output_certs(dir: &str) -> String {
        format!(
            "{PROXY_METADATA}:\n  {OUTPUT_CERTS}: {}\n",
            yaml::scalar(dir)
        )
    }
}

/// The user's block YAML with an `OUTPUT_CERTS` line added: as the first
/// entry under a top-level `proxyMetadata:`, or with a new `proxyMetadata`
/// at the end. `None` where the layout is not that simple (flow style, tabs,
/// CRLF); the caller verifies the result either way.
fn insert_in_place(source: &str, dir: &str) -> Option<String> {
    if source.trim().is_empty() || source.contains(['\r', '\t']) {
        return None;
    }
    let entry = format!("OUTPUT_CERTS: {}", yaml::scalar(dir));
    let mut lines: Vec<String> = source.lines().map(str::to_owned).collect();
    let is_header = |line: &str| {
        line.strip_prefix(PROXY_METADATA)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
    };
    match lines.iter().position(|line| is_header(line)) {
        Some(header) => {
            let indent = lines
                .iter()
                .skip(header + 1)
                .find(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
                .map(|line| line.len() - line.trim_start().len())
                .filter(|&indent| indent > 0)
                .unwrap_or(2);
            lines.insert(header + 1, format!("{}{entry}", " ".repeat(indent)));
        }
        None if lines.iter().any(|line| line.starts_with(PROXY_METADATA)) => return None,
        None => {
            lines.push(format!("{PROXY_METADATA}:"));
            lines.push(format!("  {entry}"));
        }
    }
    Some(lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged(text: &str) -> String {
        let config = ProxyConfig::parse(text).unwrap();
        assert_eq!(config.output_certs().unwrap(), None);
        config.with_output_certs("/etc/istio-output-certs")
    }

    #[test]
    fn writes_the_documented_form_when_absent() {
        assert_eq!(
            ProxyConfig::new_with_output_certs("/etc/istio-output-certs"),
            "proxyMetadata:\n  OUTPUT_CERTS: /etc/istio-output-certs\n"
        );
    }

    #[test]
    fn keeps_existing_proxy_config_keys_in_yaml() {
        let text = "holdApplicationUntilProxyStarts: true\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\nconcurrency: 2\n";
        let out = merged(text);
        assert_eq!(
            yaml::parse_one(&out).unwrap(),
            json!({
                "holdApplicationUntilProxyStarts": true,
                "proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true", "OUTPUT_CERTS": "/etc/istio-output-certs"},
                "concurrency": 2,
            })
        );
        // The quoted "true" must stay a string for Go, or Istio rejects the pod.
        assert!(out.contains("ISTIO_META_DNS_CAPTURE: \"true\""), "{out}");
    }

    #[test]
    fn keeps_the_users_comments_and_layout() {
        let text = "# owned by team-obs\nproxyMetadata:   # env for the agent\n    ISTIO_META_DNS_CAPTURE: 'true'\nconcurrency: 2 # cores\n";
        assert_eq!(
            merged(text),
            "# owned by team-obs\nproxyMetadata:   # env for the agent\n    OUTPUT_CERTS: /etc/istio-output-certs\n    ISTIO_META_DNS_CAPTURE: 'true'\nconcurrency: 2 # cores\n"
        );
        assert_eq!(
            merged("# tuned\nconcurrency: 2"),
            "# tuned\nconcurrency: 2\nproxyMetadata:\n  OUTPUT_CERTS: /etc/istio-output-certs\n"
        );
        // An empty proxyMetadata followed by a sibling key.
        assert_eq!(
            merged("proxyMetadata:\nconcurrency: 2\n"),
            "proxyMetadata:\n  OUTPUT_CERTS: /etc/istio-output-certs\nconcurrency: 2\n"
        );
    }

    #[test]
    fn rewrites_when_an_edit_in_place_would_change_the_meaning() {
        // Indented top-level mapping: appending at column 0 would not parse
        // as the same document, so the config is written anew.
        let out = merged("  concurrency: 2\n");
        assert_eq!(
            yaml::parse_one(&out).unwrap(),
            json!({"concurrency": 2, "proxyMetadata": {"OUTPUT_CERTS": "/etc/istio-output-certs"}})
        );
        let out = merged("proxyMetadata: {A: b}\n");
        assert_eq!(
            yaml::parse_one(&out).unwrap(),
            json!({"proxyMetadata": {"A": "b", "OUTPUT_CERTS": "/etc/istio-output-certs"}})
        );
    }

    #[test]
    fn keeps_yaml_1_1_meaning_of_unquoted_words() {
        // Go reads `yes` as true; after the merge it must still be a bool,
        // whether the text is kept (here) or written anew (flow style).
        for text in [
            "holdApplicationUntilProxyStarts: yes\n",
            "{holdApplicationUntilProxyStarts: yes}",
        ] {
            let out = merged(text);
            assert_eq!(
                yaml::parse_one(&out).unwrap()["holdApplicationUntilProxyStarts"],
                true,
                "{out}"
            );
        }
    }

    #[test]
    fn json_stays_json() {
        let out = merged(r#"{"discoveryAddress":"istiod:15012","proxyMetadata":{"A":"1"}}"#);
        assert_eq!(
            out,
            r#"{"discoveryAddress":"istiod:15012","proxyMetadata":{"A":"1","OUTPUT_CERTS":"/etc/istio-output-certs"}}"#
        );
    }

    #[test]
    fn flow_yaml_that_is_not_json_is_read_as_yaml() {
        let out = merged("{concurrency: 2}");
        assert_eq!(
            yaml::parse_one(&out).unwrap(),
            json!({"concurrency": 2, "proxyMetadata": {"OUTPUT_CERTS": "/etc/istio-output-certs"}})
        );
    }

    #[test]
    fn empty_value_gets_the_documented_form() {
        assert_eq!(
            merged("  \n"),
            "proxyMetadata:\n  OUTPUT_CERTS: /etc/istio-output-certs\n"
        );
        assert_eq!(
            merged("proxyMetadata:\n"),
            "proxyMetadata:\n  OUTPUT_CERTS: /etc/istio-output-certs\n"
        );
    }

    #[test]
    fn reports_the_users_output_certs() {
        let config = ProxyConfig::parse("proxyMetadata:\n  OUTPUT_CERTS: /certs\n").unwrap();
        assert_eq!(config.output_certs().unwrap(), Some("/certs"));
    }

    #[test]
    fn refuses_what_cannot_be_merged() {
        for bad in [
            "proxyMetadata: [1]",
            "- a\n- b",
            "a: [1, 2",
            "proxyMetadata:\n  OUTPUT_CERTS: 3",
            "just a string",
        ] {
            let err = ProxyConfig::parse(bad).unwrap_err();
            assert!(err.starts_with(ANNOTATION), "{bad}: {err}");
        }
    }
}
