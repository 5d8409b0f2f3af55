//! What ServiceMonitor and PodMonitor endpoints have in common: how each is
//! classified, and how warnings name them.

use super::view::Json;
use crate::mesh::relabel::{MODE_LABEL, POLICY_LABEL};

/// How an endpoint is treated.
#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// No TLS of its own (`scheme` http, absent, or one Prometheus would
    /// refuse anyway): the class's rules decide per target.
    Plain,
    /// The user chose TLS (a `tlsConfig`, or `scheme: https`).
    OwnTls,
    /// What an earlier version of this webhook wrote into every endpoint
    /// (and what the vendor guide writes by hand): `scheme: https` with
    /// exactly the webhook's file `tlsConfig`, or, on a PodMonitor of the
    /// webhook's class, `scheme: https` alone. Migrated to the class.
    Legacy,
}

pub fn is_https(endpoint: &Json<'_>) -> bool {
    endpoint
        .get("scheme")
        .and_then(Json::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("https"))
}

pub fn has_tls_config(endpoint: &Json<'_>) -> bool {
    endpoint.get("tlsConfig").is_some_and(|t| !t.is_null())
}

/// Whether a relabeling is one of the class's own rules: they write only
/// the scratch labels, and `__scheme__` from the mode label.
pub fn is_own_rule(rule: &Json<'_>) -> bool {
    let target = rule.get("targetLabel").and_then(Json::as_str);
    let sources = rule.get("sourceLabels").and_then(Json::as_array);
    match target {
        Some(MODE_LABEL | POLICY_LABEL) => true,
        Some("__scheme__") => sources
            .is_some_and(|s| s.len() == 1 && s.first().and_then(Json::as_str) == Some(MODE_LABEL)),
        _ => false,
    }
}

/// How a warning names an endpoint: its index, and its port if it has one.
pub fn describe(index: usize, endpoint: &Json<'_>) -> String {
    let port = ["port", "portNumber", "targetPort"]
        .into_iter()
        .find_map(|field| match endpoint.get(field) {
            Some(Json::String(s)) => Some((*s).to_owned()),
            Some(Json::Number(n)) => Some(n.to_string()),
            _ => None,
        });
    match port {
        Some(port) => format!("{index} (port {port})"),
        None => index.to_string(),
    }
}

/// "endpoint 0 (port web) has" or "endpoints 0 (port web), 2 have".
pub fn subject(described: &[String], singular_verb: &str, plural_verb: &str) -> String {
    match described {
        [one] => format!("endpoint {one} {singular_verb}"),
        many => format!("endpoints {} {plural_verb}", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn own(rule: Value) -> bool {
        is_own_rule(&Json::from(&rule))
    }

    fn named(index: usize, endpoint: Value) -> String {
        describe(index, &Json::from(&endpoint))
    }

    #[test]
    fn recognises_the_class_rules_and_nothing_else() {
        assert!(own(json!({"targetLabel": MODE_LABEL})));
        assert!(own(
            json!({"targetLabel": POLICY_LABEL, "sourceLabels": ["a"]})
        ));
        assert!(own(
            json!({"targetLabel": "__scheme__", "sourceLabels": [MODE_LABEL]})
        ));
        assert!(!own(
            json!({"targetLabel": "__scheme__", "sourceLabels": ["__meta_x"]})
        ));
        assert!(!own(json!({"targetLabel": "team"})));
        assert!(!own(json!("x")));
    }

    #[test]
    fn names_endpoints_by_index_and_port() {
        assert_eq!(named(0, json!({"port": "web"})), "0 (port web)");
        assert_eq!(named(2, json!({"targetPort": 8080})), "2 (port 8080)");
        assert_eq!(named(1, json!({})), "1");
        assert_eq!(subject(&["0".into()], "is", "are"), "endpoint 0 is");
        assert_eq!(
            subject(&["0".into(), "1".into()], "is", "are"),
            "endpoints 0, 1 are"
        );
    }
}
