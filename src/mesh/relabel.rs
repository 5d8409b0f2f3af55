//! The mesh's effective policy rendered as Prometheus relabel rules, which
//! choose `__scheme__` per target at scrape time.
//!
//! Prometheus runs a scrape class's relabelings on every target of the jobs
//! that prometheus-operator renders for the monitors in the class, after the
//! operator's own rules and before the monitor's. Each rule is a `replace`
//! (the last write wins), and the rules are ordered from the widest scope to
//! the narrowest, so that they compute what [`MeshPolicy::mode_for`] computes:
//!
//! 1. a *candidate* (a pod with an Istio sidecar, `tlsMode` istio, scraped
//!    over http as the monitor asked) gets the mesh mode in a scratch label;
//! 2. then its namespace's mode, if the namespace has a policy;
//! 3. then the name of the workload policy that selects it (lowest
//!    precedence first, so the oldest writes last);
//! 4. then that policy's mode, and its port-level modes by target port;
//! 5. Istio's own plain-text ports (15020, 15021, 15090) and path
//!    (`/stats/prometheus`) are marked plain text, and so is every port of a
//!    sidecar that captures no inbound traffic
//!    (`traffic.sidecar.istio.io/includeInboundPorts: ""`, which this
//!    webhook sets on Prometheus' own pods);
//! 6. a STRICT candidate is scraped over https.
//!
//! Targets that are not candidates (no sidecar: node-exporter,
//! kube-state-metrics, ambient pods; or an endpoint that chose https itself)
//! are never touched. Scratch labels start with `__tmp_`, which Prometheus
//! drops after relabeling.

use std::collections::BTreeMap;

use serde::Serialize;

use super::compose::{MeshPolicy, WorkloadPolicy};
use super::policy::MtlsMode;

const SCHEME: &str = "__scheme__";
const ADDRESS: &str = "__address__";
const METRICS_PATH: &str = "__metrics_path__";
const NAMESPACE: &str = "__meta_kubernetes_namespace";
/// Set by Istio's injector on every pod it injected.
const SIDECAR_INJECTED: &str = "__meta_kubernetes_pod_annotationpresent_sidecar_istio_io_status";
/// `istio` when the sidecar takes Istio mTLS (`disabled`: plain text).
const TLS_MODE: &str = "__meta_kubernetes_pod_label_security_istio_io_tlsMode";
/// The candidate's mode, as it is worked out.
pub const MODE_LABEL: &str = "__tmp_istio_mtls_mode";
/// `<namespace>/<name>` of the workload policy that selects the candidate.
pub const POLICY_LABEL: &str = "__tmp_istio_mtls_policy";
/// Istio's own listeners that stay plain text under STRICT: the agent's
/// merged metrics and health (15020, 15021) and Envoy's stats (15090).
const ISTIO_PLAIN_TEXT_PORTS: &str = "15020|15021|15090";
const ISTIO_STATS_PATH: &str = "/stats/prometheus";
/// The mode written for Istio's own plain-text listeners.
const PLAIN_TEXT: &str = "PLAINTEXT";
const INBOUND_PORTS_SET: &str =
    "__meta_kubernetes_pod_annotationpresent_traffic_sidecar_istio_io_includeInboundPorts";
const INBOUND_PORTS: &str =
    "__meta_kubernetes_pod_annotation_traffic_sidecar_istio_io_includeInboundPorts";

/// One `replace` rule, in prometheus-operator's `RelabelConfig` form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Relabeling {
    pub source_labels: Vec<String>,
    pub regex: String,
    pub target_label: String,
    pub replacement: String,
    /// Always `replace`; written out because the CRD defaults it, and the
    /// stored class must equal the rendered one.
    pub action: &'static str,
}

fn replace(sources: &[&str], regex: String, target: &str, replacement: &str) -> Relabeling {
    Relabeling {
        source_labels: sources.iter().map(|s| (*s).to_owned()).collect(),
        regex,
        target_label: target.to_owned(),
        replacement: replacement.to_owned(),
        action: "replace",
    }
}

/// The rules for `policy`.
pub fn render(policy: &MeshPolicy) -> Vec<Relabeling> {
    let mut rules = vec![replace(
        &[SCHEME, SIDECAR_INJECTED, TLS_MODE],
        "(?i:http);true;istio".to_owned(),
        MODE_LABEL,
        policy.mesh.as_str(),
    )];

    // Namespaces with the same mode share one rule.
    for (mode, namespaces) in group_by_mode(
        policy
            .namespaces
            .iter()
            .map(|(ns, mode)| (*mode, ns.as_str())),
    ) {
        rules.push(replace(
            &[MODE_LABEL, NAMESPACE],
            format!(".+;{}", alternation(&namespaces)),
            MODE_LABEL,
            mode.as_str(),
        ));
    }

    // The policy that selects a pod: the first one in precedence order that
    // matches, so rules go from the last to the first.
    for workload in policy.workloads.iter().rev() {
        let mut sources = vec![MODE_LABEL.to_owned(), NAMESPACE.to_owned()];
        let mut regex = format!(".+;{}", escape(&workload.namespace));
        for (key, value) in &workload.selector {
            // `labelpresent`: a selector value "" must not match a pod that
            // lacks the label altogether.
            let key = sanitize_label_name(key);
            sources.push(format!("__meta_kubernetes_pod_label_{key}"));
            sources.push(format!("__meta_kubernetes_pod_labelpresent_{key}"));
            regex.push(';');
            regex.push_str(&escape(value));
            regex.push_str(";true");
        }
        rules.push(Relabeling {
            source_labels: sources,
            regex,
            target_label: POLICY_LABEL.to_owned(),
            replacement: policy_id(workload),
            action: "replace",
        });
    }
    for workload in &policy.workloads {
        let id = escape(&policy_id(workload));
        if let Some(mode) = workload.mode {
            rules.push(replace(
                &[POLICY_LABEL],
                id.clone(),
                MODE_LABEL,
                mode.as_str(),
            ));
        }
        let ports = workload
            .ports
            .iter()
            .filter_map(|(port, mode)| Some(((*mode)?, port.to_string())));
        for (mode, ports) in group_by_mode(ports) {
            rules.push(replace(
                &[POLICY_LABEL, ADDRESS],
                format!("{id};.+:({})", ports.join("|")),
                MODE_LABEL,
                mode.as_str(),
            ));
        }
    }

    rules.push(replace(
        &[MODE_LABEL, ADDRESS],
        format!(".+;.+:({ISTIO_PLAIN_TEXT_PORTS})"),
        MODE_LABEL,
        PLAIN_TEXT,
    ));
    rules.push(replace(
        &[MODE_LABEL, METRICS_PATH],
        format!(".+;{}", escape(ISTIO_STATS_PATH)),
        MODE_LABEL,
        PLAIN_TEXT,
    ));
    rules.push(replace(
        &[MODE_LABEL, INBOUND_PORTS_SET, INBOUND_PORTS],
        ".+;true;".to_owned(),
        MODE_LABEL,
        PLAIN_TEXT,
    ));
    rules.push(replace(
        &[MODE_LABEL],
        MtlsMode::Strict.as_str().to_owned(),
        SCHEME,
        "https",
    ));
    rules
}

fn policy_id(workload: &WorkloadPolicy) -> String {
    format!("{}/{}", workload.namespace, workload.name)
}

/// Items grouped by mode, modes in a fixed order, items in the order given.
fn group_by_mode<T>(items: impl Iterator<Item = (MtlsMode, T)>) -> BTreeMap<MtlsMode, Vec<T>> {
    let mut groups: BTreeMap<MtlsMode, Vec<T>> = BTreeMap::new();
    for (mode, item) in items {
        groups.entry(mode).or_default().push(item);
    }
    groups
}

fn alternation(items: &[&str]) -> String {
    let escaped: Vec<String> = items.iter().map(|item| escape(item)).collect();
    format!("({})", escaped.join("|"))
}

/// A literal for RE2 (Go's regexp, which Prometheus uses).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How Kubernetes service discovery names a label in its meta labels:
/// every character that may not appear in a label name becomes `_`.
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::super::policy::PeerAuthentication;
    use super::*;
    use MtlsMode::{Disable, Permissive, Strict, Unset};

    /// Prometheus' `replace` relabeling (model/relabel): source values joined
    /// by `;`, the regex anchored, the target set to the expanded replacement
    /// when it matches. Every rule rendered here is a `replace`.
    fn run(rules: &[Relabeling], labels: &mut BTreeMap<String, String>) {
        for rule in rules {
            assert_eq!(rule.action, "replace");
            let value: Vec<&str> = rule
                .source_labels
                .iter()
                .map(|name| labels.get(name).map_or("", String::as_str))
                .collect();
            let regex = compiled(&rule.regex);
            if let Some(captures) = regex.captures(&value.join(";")) {
                let mut out = String::new();
                captures.expand(&rule.replacement, &mut out);
                if out.is_empty() {
                    labels.remove(&rule.target_label);
                } else {
                    labels.insert(rule.target_label.clone(), out);
                }
            }
        }
    }

    /// Anchored as Prometheus anchors relabel regexes; compiled once per
    /// thread and pattern (the generated meshes repeat them).
    fn compiled(pattern: &str) -> regex::Regex {
        thread_local! {
            static CACHE: std::cell::RefCell<BTreeMap<String, regex::Regex>> = Default::default();
        }
        CACHE.with(|cache| {
            cache
                .borrow_mut()
                .entry(pattern.to_owned())
                .or_insert_with(|| regex::Regex::new(&format!("^(?s:{pattern})$")).unwrap())
                .clone()
        })
    }

    /// A target as Kubernetes service discovery hands it to relabeling.
    struct Target<'a> {
        namespace: &'a str,
        pod_labels: &'a [(&'a str, &'a str)],
        sidecar: bool,
        tls_mode: Option<&'a str>,
        scheme: &'a str,
        port: u32,
        path: &'a str,
    }

    impl Target<'_> {
        fn labels(&self) -> BTreeMap<String, String> {
            let mut labels = BTreeMap::from([
                (SCHEME.to_owned(), self.scheme.to_owned()),
                (ADDRESS.to_owned(), format!("10.1.2.3:{}", self.port)),
                (METRICS_PATH.to_owned(), self.path.to_owned()),
                (NAMESPACE.to_owned(), self.namespace.to_owned()),
            ]);
            let mut pod_labels: Vec<(String, String)> = self
                .pod_labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            if let Some(mode) = self.tls_mode {
                pod_labels.push(("security.istio.io/tlsMode".into(), mode.into()));
            }
            for (key, value) in pod_labels {
                let key = sanitize_label_name(&key);
                labels.insert(format!("__meta_kubernetes_pod_label_{key}"), value);
                labels.insert(
                    format!("__meta_kubernetes_pod_labelpresent_{key}"),
                    "true".into(),
                );
            }
            if self.sidecar {
                labels.insert(SIDECAR_INJECTED.to_owned(), "true".into());
            }
            labels
        }

        fn scheme_after(&self, rules: &[Relabeling]) -> String {
            let mut labels = self.labels();
            run(rules, &mut labels);
            labels[SCHEME].clone()
        }
    }

    fn mesh_target<'a>(
        namespace: &'a str,
        pod_labels: &'a [(&'a str, &'a str)],
        port: u32,
    ) -> Target<'a> {
        Target {
            namespace,
            pod_labels,
            sidecar: true,
            tls_mode: Some("istio"),
            scheme: "http",
            port,
            path: "/metrics",
        }
    }

    #[test]
    fn only_strict_sidecars_scraped_over_http_switch_to_https() {
        let rules = render(&MeshPolicy::uniform(Strict));
        let app = &[("app", "web")][..];
        assert_eq!(mesh_target("ns", app, 8080).scheme_after(&rules), "https");
        let untouched = [
            Target {
                sidecar: false,
                ..mesh_target("ns", app, 8080)
            },
            Target {
                tls_mode: None,
                ..mesh_target("ns", app, 8080)
            },
            Target {
                tls_mode: Some("disabled"),
                ..mesh_target("ns", app, 8080)
            },
            Target {
                scheme: "https",
                ..mesh_target("ns", app, 8080)
            },
            mesh_target("ns", app, 15020),
            mesh_target("ns", app, 15021),
            mesh_target("ns", app, 15090),
            Target {
                path: "/stats/prometheus",
                ..mesh_target("ns", app, 8080)
            },
        ];
        for target in untouched {
            let expected = target.scheme.to_owned();
            assert_eq!(target.scheme_after(&rules), expected);
        }
        // The monitor's own spelling of http counts as http.
        assert_eq!(
            Target {
                scheme: "HTTP",
                ..mesh_target("ns", app, 8080)
            }
            .scheme_after(&rules),
            "https"
        );
        assert_eq!(
            mesh_target("ns", app, 8080).scheme_after(&render(&MeshPolicy::uniform(Permissive))),
            "http"
        );
    }

    #[test]
    fn a_sidecar_that_captures_no_inbound_traffic_stays_on_http() {
        let rules = render(&MeshPolicy::uniform(Strict));
        let target = mesh_target("monitoring", &[], 9090);
        let mut labels = target.labels();
        labels.insert(INBOUND_PORTS_SET.into(), "true".into());
        labels.insert(INBOUND_PORTS.into(), String::new());
        run(&rules, &mut labels);
        assert_eq!(labels[SCHEME], "http");
        // A list of ports still goes through the sidecar.
        let mut labels = target.labels();
        labels.insert(INBOUND_PORTS_SET.into(), "true".into());
        labels.insert(INBOUND_PORTS.into(), "9090".into());
        run(&rules, &mut labels);
        assert_eq!(labels[SCHEME], "https");
    }

    #[test]
    fn scratch_labels_are_dropped_by_prometheus() {
        for rule in render(&MeshPolicy::uniform(Strict)) {
            assert!(
                rule.target_label == SCHEME || rule.target_label.starts_with("__tmp_"),
                "{rule:?}"
            );
        }
    }

    #[test]
    fn renders_json_the_crd_accepts() {
        let rules = render(&MeshPolicy::uniform(Strict));
        let json = serde_json::to_value(&rules[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "sourceLabels": [SCHEME, SIDECAR_INJECTED, TLS_MODE],
                "regex": "(?i:http);true;istio", "targetLabel": MODE_LABEL,
                "replacement": "STRICT", "action": "replace"
            })
        );
    }

    #[test]
    fn escapes_regex_syntax_in_names_and_values() {
        assert_eq!(escape("a.b-c"), "a\\.b-c");
        assert_eq!(
            sanitize_label_name("app.kubernetes.io/name"),
            "app_kubernetes_io_name"
        );
        let policy = PeerAuthentication {
            namespace: "ns".into(),
            name: "p.v1".into(),
            created: 1,
            selector: BTreeMap::from([("app.kubernetes.io/name".into(), "web.v1".into())]),
            mode: Strict,
            port_level: BTreeMap::new(),
        };
        let rules = render(&MeshPolicy::compose(&[policy], "istio-system"));
        // "web.v1" must not match "webxv1".
        let lookalike = &[("app.kubernetes.io/name", "webxv1")][..];
        assert_eq!(
            mesh_target("ns", lookalike, 80).scheme_after(&rules),
            "http"
        );
        let exact = &[("app.kubernetes.io/name", "web.v1")][..];
        assert_eq!(mesh_target("ns", exact, 80).scheme_after(&rules), "https");
    }

    #[test]
    fn an_empty_selector_value_needs_the_label_present() {
        let policy = PeerAuthentication {
            namespace: "ns".into(),
            name: "p".into(),
            created: 1,
            selector: BTreeMap::from([("canary".into(), String::new())]),
            mode: Strict,
            port_level: BTreeMap::new(),
        };
        let rules = render(&MeshPolicy::compose(&[policy], "istio-system"));
        assert_eq!(
            mesh_target("ns", &[("canary", "")], 80).scheme_after(&rules),
            "https"
        );
        assert_eq!(mesh_target("ns", &[], 80).scheme_after(&rules), "http");
    }

    // Generated meshes: the rules must pick https exactly where
    // `mode_for` says STRICT, for every target.

    fn mode() -> impl Strategy<Value = MtlsMode> {
        prop_oneof![Just(Unset), Just(Disable), Just(Permissive), Just(Strict)]
    }

    const NAMESPACES: [&str; 3] = ["istio-system", "a", "b"];
    const KEYS: [&str; 2] = ["app", "app.kubernetes.io/version"];
    const VALUES: [&str; 3] = ["x", "y.z", ""];
    const PORTS: [u32; 3] = [8080, 9090, 15090];

    fn policy() -> impl Strategy<Value = PeerAuthentication> {
        (
            prop::sample::select(&NAMESPACES[..]),
            0..4usize,
            0..3i64,
            prop::collection::btree_map(
                prop::sample::select(&KEYS[..]),
                prop::sample::select(&VALUES[..]),
                0..=2,
            ),
            mode(),
            prop::collection::btree_map(prop::sample::select(&PORTS[..]), mode(), 0..=2),
        )
            .prop_map(|(namespace, name, created, selector, mode, ports)| {
                PeerAuthentication {
                    namespace: namespace.to_owned(),
                    name: format!("p{name}"),
                    created,
                    selector: selector
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    mode,
                    port_level: if ports.is_empty() {
                        BTreeMap::new()
                    } else {
                        ports
                    },
                }
            })
    }

    fn pod() -> impl Strategy<Value = (&'static str, Vec<(&'static str, &'static str)>, u32)> {
        (
            prop::sample::select(&NAMESPACES[..]),
            prop::collection::btree_map(
                prop::sample::select(&KEYS[..]),
                prop::sample::select(&VALUES[..]),
                0..=2,
            ),
            prop::sample::select(&PORTS[..]),
        )
            .prop_map(|(ns, labels, port)| (ns, labels.into_iter().collect(), port))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn rules_choose_https_exactly_where_the_mesh_is_strict(
            policies in prop::collection::vec(policy(), 0..6),
            pods in prop::collection::vec(pod(), 1..6),
        ) {
            // Istio keys policies by namespace/name: no duplicates.
            let mut seen = std::collections::BTreeSet::new();
            let policies: Vec<_> = policies.into_iter().filter(|p| seen.insert((p.namespace.clone(), p.name.clone()))).collect();
            let mesh = MeshPolicy::compose(&policies, "istio-system");
            let rules = render(&mesh);
            for (namespace, labels, port) in &pods {
                let label_map = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
                let plain_port = *port == 15090;
                let expected = if mesh.mode_for(namespace, &label_map, *port) == Strict && !plain_port { "https" } else { "http" };
                prop_assert_eq!(mesh_target(namespace, labels, *port).scheme_after(&rules), expected, "{:#?}\n{:#?}", mesh, rules);
            }
        }
    }
}
