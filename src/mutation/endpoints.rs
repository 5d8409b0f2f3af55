//! What ServiceMonitor and PodMonitor endpoints have in common: which ones
//! must be switched to https, and which are left as they are.

use serde_json::Value;

/// Envoy's own metrics (`http-envoy-prom` on 15090) and the agent's merged
/// metrics (15020) are served in plain text outside mTLS: https breaks them.
const ENVOY_PORT_NAME: &str = "http-envoy-prom";
const ENVOY_PORTS: [u64; 2] = [15090, 15020];
const ENVOY_PATH: &str = "/stats/prometheus";

/// How an endpoint is treated.
#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// No TLS of its own: to be switched to https.
    Plain { scheme_present: bool },
    /// Already switched by this webhook: nothing to do, nothing to say.
    Done,
    /// It scrapes the sidecar's own metrics: stays plain.
    SidecarMetrics,
    /// The user chose TLS (a `tlsConfig`, or `scheme: https`): untouched.
    OwnTls,
    /// A scheme this webhook does not know: untouched.
    UnknownScheme(String),
    /// Not a mapping at all (the CRD schema is checked after admission).
    NotMapping,
}

/// Classifies one endpoint. `is_done` recognises the webhook's own work,
/// which differs between the kinds.
pub fn classify(endpoint: &Value, is_done: impl Fn(&Value) -> bool) -> Endpoint {
    if !endpoint.is_object() {
        return Endpoint::NotMapping;
    }
    if scrapes_sidecar(endpoint) {
        return Endpoint::SidecarMetrics;
    }
    if is_done(endpoint) {
        return Endpoint::Done;
    }
    let has_tls_config = endpoint.get("tlsConfig").is_some_and(|t| !t.is_null());
    match endpoint.get("scheme") {
        None | Some(Value::Null) if !has_tls_config => Endpoint::Plain {
            scheme_present: false,
        },
        Some(Value::String(s)) if s.eq_ignore_ascii_case("http") && !has_tls_config => {
            Endpoint::Plain {
                scheme_present: true,
            }
        }
        Some(Value::String(s))
            if !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https") =>
        {
            Endpoint::UnknownScheme(s.clone())
        }
        _ => Endpoint::OwnTls,
    }
}

pub fn is_https(endpoint: &Value) -> bool {
    endpoint
        .get("scheme")
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("https"))
}

fn scrapes_sidecar(endpoint: &Value) -> bool {
    let is_envoy_port = |field: &str| match endpoint.get(field) {
        Some(Value::Number(n)) => n.as_u64().is_some_and(|n| ENVOY_PORTS.contains(&n)),
        Some(Value::String(s)) => {
            s == ENVOY_PORT_NAME || s.parse::<u64>().is_ok_and(|n| ENVOY_PORTS.contains(&n))
        }
        _ => false,
    };
    ["port", "targetPort", "portNumber"]
        .into_iter()
        .any(is_envoy_port)
        || endpoint.get("path").and_then(Value::as_str) == Some(ENVOY_PATH)
}

/// How a warning names an endpoint: its index, and its port if it has one.
pub fn describe(index: usize, endpoint: &Value) -> String {
    let port = ["port", "portNumber", "targetPort"]
        .into_iter()
        .find_map(|field| match endpoint.get(field) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
    match port {
        Some(port) => format!("{index} (port {port})"),
        None => index.to_string(),
    }
}

/// "endpoint 0 (port web) stays" or "endpoints 0 (port web), 2 stay".
pub fn subject(described: &[String], singular_verb: &str, plural_verb: &str) -> String {
    match described {
        [one] => format!("endpoint {one} {singular_verb}"),
        many => format!("endpoints {} {plural_verb}", many.join(", ")),
    }
}

/// The warning for an endpoint left as it is, if it deserves one.
pub fn left_alone_warning(index: usize, endpoint: &Value, class: &Endpoint) -> Option<String> {
    let what = format!("endpoint {}", describe(index, endpoint));
    match class {
        Endpoint::SidecarMetrics => Some(format!(
            "{what} scrapes the sidecar's own metrics, which are served in plain text; it stays on http"
        )),
        Endpoint::OwnTls => Some(format!(
            "{what} has TLS settings of its own; it was left as it is"
        )),
        Endpoint::UnknownScheme(scheme) => Some(format!(
            "{what} has scheme {scheme:?}; it was left as it is"
        )),
        Endpoint::NotMapping => Some(format!("{what} is not a mapping; it was left as it is")),
        Endpoint::Plain { .. } | Endpoint::Done => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn never(_: &Value) -> bool {
        false
    }

    #[test]
    fn sidecar_metrics_are_recognised_by_port_name_number_or_path() {
        for endpoint in [
            json!({"port": "http-envoy-prom"}),
            json!({"targetPort": 15090}),
            json!({"targetPort": "15020"}),
            json!({"portNumber": 15020}),
            json!({"port": "web", "path": "/stats/prometheus"}),
        ] {
            assert_eq!(
                classify(&endpoint, never),
                Endpoint::SidecarMetrics,
                "{endpoint}"
            );
        }
    }

    #[test]
    fn only_endpoints_without_tls_are_plain() {
        assert_eq!(
            classify(&json!({"port": "web"}), never),
            Endpoint::Plain {
                scheme_present: false
            }
        );
        assert_eq!(
            classify(&json!({"port": "web", "scheme": "HTTP"}), never),
            Endpoint::Plain {
                scheme_present: true
            }
        );
        assert_eq!(
            classify(&json!({"scheme": "https"}), never),
            Endpoint::OwnTls
        );
        assert_eq!(
            classify(&json!({"scheme": "HTTPS"}), never),
            Endpoint::OwnTls
        );
        assert_eq!(classify(&json!({"tlsConfig": {}}), never), Endpoint::OwnTls);
        assert_eq!(
            classify(&json!({"scheme": "http", "tlsConfig": {"ca": {}}}), never),
            Endpoint::OwnTls
        );
        assert_eq!(
            classify(&json!({"scheme": "ftp"}), never),
            Endpoint::UnknownScheme("ftp".into())
        );
        assert_eq!(
            classify(&json!({"tlsConfig": null}), never),
            Endpoint::Plain {
                scheme_present: false
            }
        );
    }
}
