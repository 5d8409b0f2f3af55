//! `proxy.istio.io/config`: a ProxyConfig as YAML or JSON, into which
//! `proxyMetadata.OUTPUT_CERTS` and `holdApplicationUntilProxyStarts: true`
//! are merged without losing any other key.
//!
//! Istio parses the annotation with Go's YAML 1.1 rules and rejects the pod if
//! the result is not a valid ProxyConfig, so the text is read with those rules.
//! YAML is edited in place (lines inserted, the user's comments and layout
//! kept) when re-reading the edit proves it means exactly the old config plus
//! the additions; otherwise it is written back as JSON, which Istio's YAML
//! reader takes as it is and which no reader can take for anything else.
//! JSON stays JSON.

use serde_json::{Map, Value};

use crate::yaml;

pub const ANNOTATION: &str = "proxy.istio.io/config";
const PROXY_METADATA: &str = "proxyMetadata";
const OUTPUT_CERTS: &str = "OUTPUT_CERTS";
/// Istio then starts the application containers after the sidecar is ready,
/// so the certificate files exist when Prometheus first loads its
/// configuration (a missing file fails the whole scrape pool until the next
/// reload, http targets included).
const HOLD_APPLICATION: &str = "holdApplicationUntilProxyStarts";

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

/// What a merge adds; each is added only where the user has not set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Additions<'a> {
    /// `proxyMetadata.OUTPUT_CERTS`.
    pub output_certs: Option<&'a str>,
    /// `holdApplicationUntilProxyStarts: true`.
    pub hold_application: bool,
}

impl Additions<'_> {
    pub fn is_empty(&self) -> bool {
        self.output_certs.is_none() && !self.hold_application
    }
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

    /// Whether the user set `holdApplicationUntilProxyStarts` (to anything:
    /// their choice stands).
    pub fn sets_hold_application(&self) -> bool {
        self.fields
            .get(HOLD_APPLICATION)
            .is_some_and(|v| !v.is_null())
    }

    /// The annotation text with `additions` merged, every other key kept in
    /// its place. Ask only for what [`Self::output_certs`] and
    /// [`Self::sets_hold_application`] say is missing.
    pub fn with(mut self, additions: Additions<'_>) -> String {
        if let Some(dir) = additions.output_certs {
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
        }
        if additions.hold_application {
            self.fields
                .insert(HOLD_APPLICATION.to_owned(), Value::Bool(true));
        }
        let fields = Value::Object(self.fields);
        match self.format {
            Format::Json => fields.to_string(),
            Format::Yaml => insert_in_place(&self.source, additions)
                .filter(|edited| yaml::parse_one(edited).is_ok_and(|v| v == fields))
                .unwrap_or_else(|| fields.to_string()),
        }
    }

    /// The annotation for a pod that has none: YAML, as Istio's docs write it.
    pub fn new_with(dir: &str) -> String {
        // Pieces joined, not formatted: this runs for every pod.
        let dir = yaml::scalar(dir);
        [
            PROXY_METADATA,
            ":\n  ",
            OUTPUT_CERTS,
            ": ",
            &dir,
            "\n",
            HOLD_APPLICATION,
            ": true\n",
        ]
        .concat()
    }
}

/// The user's block YAML with the additions inserted: `OUTPUT_CERTS` as the
/// first entry under a top-level `proxyMetadata:` (or a new `proxyMetadata`
/// at the end), `holdApplicationUntilProxyStarts` as a last top-level line.
/// `None` where the layout is not that simple (flow style, tabs, CRLF); the
/// caller verifies the result either way.
fn insert_in_place(source: &str, additions: Additions<'_>) -> Option<String> {
    if source.contains(['\r', '\t']) {
        return None;
    }
    // A blank value: the documented form, as for a pod without one.
    let mut lines: Vec<String> = match source.trim() {
        "" => Vec::new(),
        _ => source.lines().map(str::to_owned).collect(),
    };
    if let Some(dir) = additions.output_certs {
        let entry = format!("{OUTPUT_CERTS}: {}", yaml::scalar(dir));
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
    }
    if additions.hold_application {
        lines.push(format!("{HOLD_APPLICATION}: true"));
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
        config.with(Additions {
            output_certs: Some("/etc/istio-output-certs"),
            hold_application: false,
        })
    }

    #[test]
    fn writes_the_documented_form_when_absent() {
        let text = ProxyConfig::new_with("/etc/istio-output-certs");
        assert_eq!(
            text,
            "proxyMetadata:\n  OUTPUT_CERTS: /etc/istio-output-certs\nholdApplicationUntilProxyStarts: true\n"
        );
        assert_eq!(
            yaml::parse_one(&text).unwrap(),
            json!({"proxyMetadata": {"OUTPUT_CERTS": "/etc/istio-output-certs"}, "holdApplicationUntilProxyStarts": true})
        );
    }

    #[test]
    fn adds_hold_application_unless_the_user_set_it() {
        let config = ProxyConfig::parse("# ours\nconcurrency: 2\n").unwrap();
        assert!(!config.sets_hold_application());
        let both = Additions {
            output_certs: Some("/certs"),
            hold_application: true,
        };
        assert_eq!(
            config.with(both),
            "# ours\nconcurrency: 2\nproxyMetadata:\n  OUTPUT_CERTS: /certs\nholdApplicationUntilProxyStarts: true\n"
        );
        for text in [
            "holdApplicationUntilProxyStarts: false\n",
            "{\"holdApplicationUntilProxyStarts\": false}",
        ] {
            assert!(
                ProxyConfig::parse(text).unwrap().sets_hold_application(),
                "{text}"
            );
        }
        let json = ProxyConfig::parse(r#"{"concurrency":2}"#)
            .unwrap()
            .with(both);
        assert_eq!(
            json,
            r#"{"concurrency":2,"proxyMetadata":{"OUTPUT_CERTS":"/certs"},"holdApplicationUntilProxyStarts":true}"#
        );
    }

    #[test]
    fn a_nested_block_at_the_end_is_closed_by_the_new_top_level_line() {
        let config = ProxyConfig::parse("proxyMetadata:\n  A: b\n").unwrap();
        let out = config.with(Additions {
            output_certs: None,
            hold_application: true,
        });
        assert_eq!(
            out,
            "proxyMetadata:\n  A: b\nholdApplicationUntilProxyStarts: true\n"
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
    fn rewrites_as_json_when_an_edit_in_place_would_change_the_meaning() {
        // Indented top-level mapping: appending at column 0 would not parse
        // as the same document, so the config is written anew, as JSON.
        assert_eq!(
            merged("  concurrency: 2\n"),
            r#"{"concurrency":2,"proxyMetadata":{"OUTPUT_CERTS":"/etc/istio-output-certs"}}"#
        );
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
