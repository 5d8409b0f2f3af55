//! The outcome, with the real programs: a control plane, the chart installed
//! with Helm, the webhook binary, prometheus-operator and Prometheus, and
//! stand-in workloads (tests/e2e/). In Prometheus every target is up, and
//! scraped over https exactly where its sidecar requires mTLS; a
//! PeerAuthentication changed, deleted or created while Prometheus runs
//! moves its targets between http and https without anyone touching a
//! monitor; two webhook replicas do not fight over the scrape class; and
//! with the webhook gone, only what the chart's failure policy says fails.
//!
//! `scripts/install-tools.sh` builds the components once (docs/e2e.md).
//! One scenario, in steps, because a control plane takes seconds to start.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "e2e/mod.rs"]
mod harness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::cluster::{Cluster, eventually};
use harness::monitoring::{self, Prometheus, Target};
use harness::pki::{Ca, Leaf, Pair};
use harness::workloads::{self, Behaviour, Hits};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio_rustls::TlsAcceptor;

use harness::webhook::{self, NAMESPACE as WEBHOOK_NAMESPACE, RELEASE, get_text, metric};
const MONITORS_NAMESPACE: &str = "default";

/// How a stand-in serves a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Serve {
    /// Plain HTTP (no sidecar, or Istio's own plain-text listeners).
    Plain,
    /// Behind the stand-in sidecar.
    Sidecar,
    /// TLS of the application's own.
    OwnTls,
}

/// One pod of the scenario: where it runs, what it carries, what it serves
/// and the scheme Prometheus must scrape each port over.
struct Workload {
    name: &'static str,
    namespace: &'static str,
    ip: &'static str,
    labels: &'static [(&'static str, &'static str)],
    annotations: &'static [(&'static str, &'static str)],
    sidecar: bool,
    /// (port name, number, how it is served, the scheme it must be scraped over)
    ports: &'static [(&'static str, u16, Serve, &'static str)],
}

const SIDECAR_STATUS: &str = r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"],"revision":"default"}"#;

/// The mesh: istio-system's PeerAuthentication makes it STRICT; `legacy`
/// is PERMISSIVE; in `bookinfo`, ratings' port 9080 is PERMISSIVE by a
/// workload policy's portLevelMtls; `flip`'s policy changes while
/// Prometheus runs.
const WORKLOADS: &[Workload] = &[
    // The seed's application, in the seed's namespace.
    Workload {
        name: "productpage",
        namespace: "default",
        ip: "10.244.1.10",
        labels: &[("app", "productpage")],
        annotations: &[],
        sidecar: true,
        ports: &[
            ("http-9080", 9080, Serve::Sidecar, "https"),
            ("http-envoy-prom", 15090, Serve::Plain, "http"),
        ],
    },
    Workload {
        name: "reviews",
        namespace: "bookinfo",
        ip: "10.244.1.11",
        labels: &[("app", "reviews")],
        annotations: &[],
        sidecar: true,
        ports: &[("http-metrics", 9080, Serve::Sidecar, "https")],
    },
    Workload {
        name: "ratings",
        namespace: "bookinfo",
        ip: "10.244.1.12",
        labels: &[("app", "ratings")],
        annotations: &[],
        sidecar: true,
        // PERMISSIVE on 9080 by portLevelMtls; STRICT on 9081.
        ports: &[
            ("http-9080", 9080, Serve::Sidecar, "http"),
            ("http-9081", 9081, Serve::Sidecar, "https"),
        ],
    },
    Workload {
        name: "details",
        namespace: "legacy",
        ip: "10.244.1.13",
        labels: &[("app", "details")],
        annotations: &[],
        sidecar: true,
        ports: &[("http-9080", 9080, Serve::Sidecar, "http")],
    },
    Workload {
        name: "flip",
        namespace: "flip",
        ip: "10.244.1.14",
        labels: &[("app", "flip")],
        annotations: &[],
        sidecar: true,
        ports: &[("http-9080", 9080, Serve::Sidecar, "https")],
    },
    // Prometheus' own web port: its sidecar captures no inbound traffic.
    Workload {
        name: "prometheus-self",
        namespace: "bookinfo",
        ip: "10.244.1.15",
        labels: &[("app", "prometheus-self")],
        annotations: &[("traffic.sidecar.istio.io/includeInboundPorts", "")],
        sidecar: true,
        ports: &[("http-web", 9090, Serve::Plain, "http")],
    },
    // Ambient: ztunnel does the mTLS; Prometheus sends plain HTTP.
    Workload {
        name: "ambient-app",
        namespace: "ambient",
        ip: "10.244.1.16",
        labels: &[("app", "ambient-app")],
        annotations: &[("ambient.istio.io/redirection", "enabled")],
        sidecar: false,
        ports: &[("http-9080", 9080, Serve::Plain, "http")],
    },
    // kube-prometheus-stack's own monitors: no sidecars.
    Workload {
        name: "node-exporter",
        namespace: "monitoring",
        ip: "10.244.1.20",
        labels: &[("app.kubernetes.io/name", "node-exporter")],
        annotations: &[],
        sidecar: false,
        ports: &[("http-metrics", 9100, Serve::Plain, "http")],
    },
    Workload {
        name: "kube-state-metrics",
        namespace: "monitoring",
        ip: "10.244.1.21",
        labels: &[("app.kubernetes.io/name", "kube-state-metrics")],
        annotations: &[],
        sidecar: false,
        ports: &[("http", 8080, Serve::Plain, "http")],
    },
    // An endpoint that asked for https itself.
    Workload {
        name: "gateway",
        namespace: "monitoring",
        ip: "10.244.1.22",
        labels: &[("app", "gateway")],
        annotations: &[],
        sidecar: false,
        ports: &[("https-metrics", 8443, Serve::OwnTls, "https")],
    },
];

fn addresses() -> Vec<&'static str> {
    let mut all = vec![harness::NODE_IP];
    all.extend(WORKLOADS.iter().map(|w| w.ip));
    all
}

#[test]
fn prometheus_scrapes_every_target_over_the_scheme_it_needs() {
    let this_test = [
        "prometheus_scrapes_every_target_over_the_scheme_it_needs",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ];
    harness::run_in_private_network(&this_test.map(String::from), &addresses(), scenario());
}

fn tls_config(pair: &Pair, client_ca: Option<&str>) -> TlsAcceptor {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

struct Stands {
    /// By workload name: the switch of its stand-in sidecar (true: STRICT).
    strict: BTreeMap<&'static str, Arc<AtomicBool>>,
    hits: BTreeMap<(&'static str, u16), Arc<Hits>>,
}

/// Starts every workload's stand-in servers.
async fn start_workloads(mesh_ca: &Ca) -> Stands {
    let mut stands = Stands {
        strict: BTreeMap::new(),
        hits: BTreeMap::new(),
    };
    let own_tls = tls_config(
        &Ca::new("gateway-ca").issue(Leaf::Server {
            dns: &["gateway.monitoring.svc"],
            ips: &[],
        }),
        None,
    );
    for workload in WORKLOADS {
        let mesh = tls_config(
            &mesh_ca.issue(Leaf::Workload {
                namespace: workload.namespace,
                service_account: "default",
            }),
            Some(&mesh_ca.pem()),
        );
        let strict = Arc::new(AtomicBool::new(true));
        stands.strict.insert(workload.name, strict.clone());
        for (_, port, serve, expected) in workload.ports {
            let behaviour = match serve {
                Serve::Plain => Behaviour::Plain,
                Serve::OwnTls => Behaviour::OwnTls(own_tls.clone()),
                Serve::Sidecar => Behaviour::Sidecar {
                    // ratings' 9080 is PERMISSIVE by port.
                    strict: if *expected == "http" {
                        Arc::new(AtomicBool::new(false))
                    } else {
                        strict.clone()
                    },
                    mesh: mesh.clone(),
                },
            };
            let hits = Arc::new(Hits::default());
            stands.hits.insert((workload.name, *port), hits.clone());
            let addr = SocketAddr::new(workload.ip.parse().unwrap(), *port);
            workloads::serve(addr, workload.name, behaviour, hits).await;
        }
    }
    stands
}

fn pod_manifest(workload: &Workload) -> Value {
    let mut labels: serde_json::Map<String, Value> = workload
        .labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    labels.insert(
        "e2e.prom-mtls-webhook.io/workload".into(),
        json!(workload.name),
    );
    let mut annotations: serde_json::Map<String, Value> = workload
        .annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let mut containers = vec![json!({
        "name": "app",
        "image": "registry.example/app:1",
        "ports": workload.ports.iter().filter(|p| p.1 != 15090).map(|(name, port, _, _)| json!({"name": name, "containerPort": port})).collect::<Vec<_>>(),
    })];
    if workload.sidecar {
        labels.insert("security.istio.io/tlsMode".into(), json!("istio"));
        annotations.insert("sidecar.istio.io/status".into(), json!(SIDECAR_STATUS));
        containers.push(json!({
            "name": "istio-proxy",
            "image": "docker.io/istio/proxyv2:1.28.0",
            "ports": workload.ports.iter().filter(|p| p.1 == 15090).map(|(name, port, _, _)| json!({"name": name, "containerPort": port})).collect::<Vec<_>>(),
        }));
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": workload.name, "namespace": workload.namespace, "labels": labels, "annotations": annotations},
        "spec": {"nodeName": harness::cluster::NODE, "containers": containers},
    })
}

fn service_manifest(workload: &Workload) -> Value {
    let mut labels: serde_json::Map<String, Value> = workload
        .labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    labels.insert(
        "e2e.prom-mtls-webhook.io/workload".into(),
        json!(workload.name),
    );
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": workload.name, "namespace": workload.namespace, "labels": labels},
        "spec": {
            "selector": {"e2e.prom-mtls-webhook.io/workload": workload.name},
            "ports": workload.ports.iter().map(|(name, port, _, _)| json!({"name": name, "port": port, "targetPort": port})).collect::<Vec<_>>(),
        },
    })
}

/// The vendor guide's Prometheus and ServiceMonitor (Steps 2 and 3 of
/// Alibaba Cloud ASM's "Collect application metrics over mTLS with
/// Prometheus"), as written there, hand-edits included; changed only where
/// the scenario must: the Prometheus version is the one this test runs, the
/// interval is 2 s instead of 30 s, PodMonitors are selected too, the
/// ClusterRoleBinding the guide leaves out is added, and the certificate
/// files are where this Prometheus (outside a pod) finds them, `cert_dir`.
fn seed_manifests(cert_dir: &std::path::Path) -> String {
    let cert_dir = cert_dir.display();
    let prometheus_version = format!(
        "v3.{}",
        harness::version("PROMETHEUS_VERSION")
            .trim_start_matches("v0.3")
            .trim_start_matches('0')
    );
    format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata:
  name: prometheus-full-access
  namespace: default
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: prometheus-full-access
rules:
- apiGroups: [""]
  resources:
  - nodes
  - nodes/metrics
  - services
  - endpoints
  - pods
  verbs: ["get", "list", "watch"]
- apiGroups:
  - extensions
  - apps
  resources:
  - deployments
  - replicasets
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources:
  - configmaps
  verbs: ["get"]
- nonResourceURLs: ["/metrics"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: prometheus-full-access
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: prometheus-full-access}}
subjects:
- {{kind: ServiceAccount, name: prometheus-full-access, namespace: default}}
---
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata:
  name: default
  labels:
    prometheus: default
spec:
  logLevel: debug
  podMetadata:
    annotations:
      traffic.sidecar.istio.io/includeInboundPorts: ""   # do not intercept any inbound ports
      traffic.sidecar.istio.io/includeOutboundIPRanges: ""  # do not intercept any outbound traffic
      proxy.istio.io/config: |  # write certificates to the shared volume
        proxyMetadata:
          OUTPUT_CERTS: /etc/istio-output-certs
      sidecar.istio.io/userVolumeMount: '[{{"name": "istio-certs", "mountPath": "/etc/istio-output-certs"}}]'  # mount the shared volume in the sidecar proxy
  volumes:
  - emptyDir:
      medium: Memory
    name: istio-certs
  volumeMounts:
  - mountPath: /etc/prom-certs/  # Prometheus reads certificates from this path
    name: istio-certs
  replicas: 2
  version: {prometheus_version}
  scrapeInterval: 2s
  serviceAccountName: prometheus-full-access
  serviceMonitorSelector:
    matchLabels:
      team: bookinfo
  podMonitorSelector:
    matchLabels:
      team: bookinfo
  ruleSelector:
    matchLabels:
      role: alert-rules
      prometheus: example
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: productpage
  labels:
    app: productpage
    team: bookinfo
spec:
  selector:
    matchLabels:
      app: productpage
  endpoints:
  - port: http-9080
    interval: 2s
    path: /metrics
    scheme: https                                    # scrape over HTTPS
    tlsConfig:
      caFile: {cert_dir}/root-cert.pem          # ASM root CA certificate
      certFile: {cert_dir}/cert-chain.pem       # client certificate chain
      keyFile: {cert_dir}/key.pem                # client private key
      insecureSkipVerify: true                        # skip server identity verification
"#
    )
}

/// Monitors as users write them, without TLS settings: the webhook makes
/// them join the class.
fn monitor_manifests() -> String {
    let service_monitor =
        |name: &str, namespaces: &str, workloads: &str, port: &str, extra: &str| {
            format!(
                r#"---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {name}
  namespace: {MONITORS_NAMESPACE}
  labels: {{team: bookinfo}}
spec:
  namespaceSelector: {{matchNames: [{namespaces}]}}
  selector:
    matchExpressions:
    - {{key: e2e.prom-mtls-webhook.io/workload, operator: In, values: [{workloads}]}}
  endpoints:
  - port: {port}
    interval: 2s
{extra}"#
            )
        };
    [
        service_monitor(
            "bookinfo",
            "bookinfo, legacy, flip, ambient",
            "ratings, details, flip, ambient-app",
            "http-9080",
            "",
        ),
        service_monitor("ratings-9081", "bookinfo", "ratings", "http-9081", ""),
        service_monitor(
            "envoy-stats",
            "default",
            "productpage",
            "http-envoy-prom",
            "    path: /stats/prometheus\n",
        ),
        service_monitor(
            "prometheus-self",
            "bookinfo",
            "prometheus-self",
            "http-web",
            "",
        ),
        service_monitor(
            "node-exporter",
            "monitoring",
            "node-exporter",
            "http-metrics",
            "",
        ),
        service_monitor(
            "kube-state-metrics",
            "monitoring",
            "kube-state-metrics",
            "http",
            "",
        ),
        service_monitor(
            "gateway",
            "monitoring",
            "gateway",
            "https-metrics",
            "    scheme: https\n    tlsConfig:\n      insecureSkipVerify: true\n",
        ),
        format!(
            r#"---
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata:
  name: reviews
  namespace: {MONITORS_NAMESPACE}
  labels: {{team: bookinfo}}
spec:
  namespaceSelector: {{matchNames: [bookinfo]}}
  selector:
    matchLabels: {{app: reviews}}
  podMetricsEndpoints:
  - port: http-metrics
    interval: 2s
"#
        ),
    ]
    .concat()
}

fn peer_authentication(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
    )
}

/// The scheme each (namespace, pod, port) must be scraped over, with the
/// `flip` workload's own expectation given.
fn expected_schemes(flip: &str) -> BTreeMap<(String, String, u16), String> {
    let mut expected = BTreeMap::new();
    for workload in WORKLOADS {
        for (_, port, _, scheme) in workload.ports {
            let scheme = if workload.name == "flip" {
                flip
            } else {
                scheme
            };
            expected.insert(
                (
                    workload.namespace.to_owned(),
                    workload.name.to_owned(),
                    *port,
                ),
                scheme.to_owned(),
            );
        }
    }
    expected
}

fn port_of(target: &Target) -> u16 {
    target
        .scrape_url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or(0)
}

/// Whether every expected target is active, up, and scraped over its scheme.
fn all_as_expected(
    targets: &[Target],
    expected: &BTreeMap<(String, String, u16), String>,
) -> Result<(), String> {
    let mut seen = BTreeMap::new();
    for target in targets {
        seen.insert(
            (
                target.namespace.clone(),
                target.pod.clone(),
                port_of(target),
            ),
            target,
        );
    }
    let mut problems = Vec::new();
    for (key, scheme) in expected {
        match seen.get(key) {
            None => problems.push(format!("{key:?}: not a target")),
            Some(t) if t.scheme() != scheme => problems.push(format!(
                "{key:?}: {} instead of {scheme} ({})",
                t.scheme(),
                t.health
            )),
            Some(t) if t.health != "up" => problems.push(format!(
                "{key:?}: {} over {} ({})",
                t.health,
                t.scheme(),
                t.last_error
            )),
            Some(_) => {}
        }
    }
    for target in targets {
        let key = (
            target.namespace.clone(),
            target.pod.clone(),
            port_of(target),
        );
        if !expected.contains_key(&key) {
            problems.push(format!("unexpected target {key:?} ({})", target.scrape_url));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Waits until every target is as expected; returns how long it took.
async fn until_targets_are(
    prometheus: &Prometheus,
    expected: &BTreeMap<(String, String, u16), String>,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let targets = prometheus.targets().await;
        let problems = match all_as_expected(&targets, expected) {
            Ok(()) => return started.elapsed(),
            Err(problems) => problems,
        };
        assert!(
            started.elapsed() < timeout,
            "targets not as expected after {timeout:?}:\n{problems}\nactive targets:\n{}",
            targets
                .iter()
                .map(|t| format!("{t:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn scenario() {
    let work = harness::WorkDir::new();
    let dir = work.path.clone();
    let mut cluster = Cluster::start(&dir).await;

    // CRDs from the pinned modules; the chart, pointed at the webhook this
    // test runs on 127.0.0.1.
    webhook::install_crds(&cluster).await;
    let prom_certs = dir.join("prom-certs");
    std::fs::create_dir_all(&prom_certs).unwrap();
    let chart = webhook::chart();
    let serving = webhook::install_chart(
        &cluster,
        &[
            format!("mutation.prometheusCertDir={}/", prom_certs.display()),
            "mesh.resyncInterval=2s".to_owned(),
        ],
    )
    .await;

    // The mesh's policies exist before the webhook starts; flip's changes later.
    for namespace in [
        "bookinfo",
        "legacy",
        "flip",
        "ambient",
        "monitoring",
        "istio-system",
    ] {
        // `default` exists already.
        cluster
            .kubectl(&["create", "namespace", namespace])
            .await
            .unwrap();
    }
    cluster
        .apply(&[
            peer_authentication("istio-system", "default", "{mtls: {mode: STRICT}}"),
            "---\n".into(),
            peer_authentication("legacy", "default", "{mtls: {mode: PERMISSIVE}}"),
            "---\n".into(),
            peer_authentication(
                "bookinfo",
                "ratings",
                "{selector: {matchLabels: {app: ratings}}, portLevelMtls: {\"9080\": {mode: PERMISSIVE}}}",
            ),
            "---\n".into(),
            peer_authentication("flip", "default", "{mtls: {mode: STRICT}}"),
        ]
        .concat())
        .await;

    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_prom-mtls-webhook"));
    let (mut first, admin) = webhook::start(&cluster, binary, "webhook", 0, &serving).await;
    first.assert_running();

    let mut operator = monitoring::start_operator(&cluster);

    // Workloads: stand-ins serving on the pods' addresses, and pods whose
    // status says so (there is no kubelet).
    let mesh_ca = Ca::new("e2e-mesh-root");
    let stands = start_workloads(&mesh_ca).await;
    for workload in WORKLOADS {
        cluster.apply(&pod_manifest(workload).to_string()).await;
        cluster.apply(&service_manifest(workload).to_string()).await;
        let status = json!({"status": {
            "phase": "Running",
            "podIP": workload.ip, "podIPs": [{"ip": workload.ip}],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
        }});
        cluster
            .kubectl(&[
                "patch",
                "pod",
                workload.name,
                "-n",
                workload.namespace,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ])
            .await
            .unwrap_or_else(|e| panic!("status of {}: {e}", workload.name));
    }

    // The seeds' objects, then the monitors users write.
    let applied = cluster.apply(&seed_manifests(&prom_certs)).await;
    assert!(
        applied.contains("prometheus.monitoring.coreos.com/default created"),
        "{applied}"
    );
    cluster.apply(&monitor_manifests()).await;
    cluster
        .apply(&format!(
            "apiVersion: monitoring.coreos.com/v1alpha1\nkind: PrometheusAgent\nmetadata: {{name: agent, namespace: {MONITORS_NAMESPACE}}}\nspec:\n  serviceAccountName: prometheus-full-access\n  serviceMonitorSelector: {{matchLabels: {{team: bookinfo}}}}\n"
        ))
        .await;
    // Where admission never reaches, the watch writes no class either: a
    // namespace labelled out, and kube-system.
    cluster
        .apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: hands-off, labels: {prom-mtls-webhook.io/inject: disabled}}\n")
        .await;
    for namespace in ["hands-off", "kube-system"] {
        cluster
            .apply(&format!(
                "apiVersion: monitoring.coreos.com/v1\nkind: Prometheus\nmetadata: {{name: left-alone, namespace: {namespace}}}\nspec: {{serviceMonitorSelector: {{}}}}\n"
            ))
            .await;
    }

    // The seed's ServiceMonitor, hand-edited for https, joined the class
    // instead (the webhook migrates that shape); the Prometheus got it.
    let productpage = cluster
        .get(&["servicemonitor", "productpage", "-n", MONITORS_NAMESPACE])
        .await;
    assert_eq!(
        productpage["spec"]["scrapeClass"], "istio-mtls",
        "{productpage}"
    );
    assert_eq!(
        productpage["spec"]["endpoints"][0]["scheme"], "http",
        "{productpage}"
    );
    assert!(
        productpage["spec"]["endpoints"][0]
            .get("tlsConfig")
            .is_none(),
        "{productpage}"
    );
    let prometheus_cr = cluster
        .get(&["prometheus", "default", "-n", MONITORS_NAMESPACE])
        .await;
    let class = prometheus_cr["spec"]["scrapeClasses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "istio-mtls")
        .cloned()
        .unwrap_or_else(|| panic!("no class: {prometheus_cr}"));
    assert!(class.get("default").is_none());
    assert_eq!(class["tlsConfig"]["insecureSkipVerify"], true);

    // What the sidecar would write (OUTPUT_CERTS): Prometheus' workload
    // certificate from the mesh CA, into the directory the webhook mounts.
    let client = mesh_ca.issue(Leaf::Workload {
        namespace: MONITORS_NAMESPACE,
        service_account: "prometheus-full-access",
    });
    std::fs::write(prom_certs.join("root-cert.pem"), mesh_ca.pem()).unwrap();
    std::fs::write(prom_certs.join("cert-chain.pem"), &client.cert_pem).unwrap();
    std::fs::write(prom_certs.join("key.pem"), &client.key_pem).unwrap();

    let prometheus_kubeconfig = cluster
        .service_account_kubeconfig(MONITORS_NAMESPACE, "prometheus-full-access")
        .await;
    let prometheus = Prometheus::start(
        &cluster,
        MONITORS_NAMESPACE,
        "default",
        prometheus_kubeconfig,
    )
    .await;

    // Every target up, over the scheme it needs.
    let took = until_targets_are(
        &prometheus,
        &expected_schemes("https"),
        Duration::from_secs(120),
    )
    .await;
    println!(
        "e2e: every target up over its scheme {:.1} s after Prometheus started",
        took.as_secs_f64()
    );
    for ((name, port), hits) in &stands.hits {
        let served = hits.http.load(Ordering::Relaxed) + hits.https.load(Ordering::Relaxed);
        assert!(served > 0, "{name}:{port} was never scraped");
    }

    // The operator's own pods went through the webhook as well.
    cluster
        .eventually(
            Duration::from_secs(60),
            "the operator's Prometheus pods",
            || async {
                cluster
                    .kubectl(&[
                        "get",
                        "pod",
                        "prometheus-default-0",
                        "-n",
                        MONITORS_NAMESPACE,
                    ])
                    .await
                    .is_ok()
            },
        )
        .await;
    let pod = cluster
        .get(&["pod", "prometheus-default-0", "-n", MONITORS_NAMESPACE])
        .await;
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(
        annotations["prom-mtls-webhook.io/status"], "injected",
        "{pod}"
    );
    assert_eq!(
        pod["metadata"]["labels"]["sidecar.istio.io/inject"], "true",
        "{pod}"
    );
    let proxy_config = annotations["proxy.istio.io/config"].as_str().unwrap();
    assert!(
        proxy_config.contains("OUTPUT_CERTS: /etc/istio-output-certs")
            && proxy_config.contains("holdApplicationUntilProxyStarts: true"),
        "{proxy_config}"
    );
    let mounts = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "prometheus")
        .unwrap()["volumeMounts"]
        .clone();
    assert!(
        mounts
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "istio-certs"),
        "{mounts}"
    );

    // A second replica, as the chart runs: both keep the class from here on.
    let (mut replica, replica_admin) =
        webhook::start(&cluster, binary, "webhook-2", 1, &serving).await;

    // PeerAuthentication changes while Prometheus runs: the stand-in sidecar
    // switches with its policy (as istiod switches a real one), and Prometheus
    // follows without anyone touching a monitor.
    let flip = stands.strict["flip"].clone();
    let steps: [(&str, bool, &str); 3] = [
        ("changed to PERMISSIVE", false, "http"),
        ("deleted: the mesh's STRICT applies", true, "https"),
        ("created again, PERMISSIVE", false, "http"),
    ];
    for (step, strict, scheme) in steps {
        let changed = Instant::now();
        match step {
            s if s.starts_with("deleted") => {
                cluster
                    .kubectl(&["delete", "peerauthentication", "default", "-n", "flip"])
                    .await
                    .unwrap();
            }
            _ => {
                cluster
                    .apply(&peer_authentication(
                        "flip",
                        "default",
                        "{mtls: {mode: PERMISSIVE}}",
                    ))
                    .await;
            }
        }
        flip.store(strict, Ordering::SeqCst);
        until_targets_are(
            &prometheus,
            &expected_schemes(scheme),
            Duration::from_secs(60),
        )
        .await;
        println!(
            "e2e: PeerAuthentication flip/default {step}: target up over {scheme} {:.1} s later",
            changed.elapsed().as_secs_f64()
        );
    }

    // No fight between the replicas: once settled, the Prometheus is not
    // written again, through several resync passes of both.
    let version_of = || async {
        cluster
            .get(&["prometheus", "default", "-n", MONITORS_NAMESPACE])
            .await["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = version_of().await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        version_of().await,
        settled,
        "the Prometheus was rewritten although nothing changed"
    );
    let mut writes = 0.0;
    for admin in [&admin, &replica_admin] {
        let (_, text) = get_text(&format!("http://{admin}/metrics")).await.unwrap();
        assert_eq!(
            metric(
                &text,
                "prom_mtls_webhook_scrape_class_writes_total{kind=\"Prometheus\",result=\"failed\"}"
            ),
            0.0,
            "{text}"
        );
        assert_eq!(
            metric(
                &text,
                "prom_mtls_webhook_mesh_mode_source{source=\"watch\"}"
            ),
            1.0,
            "{text}"
        );
        writes += metric(
            &text,
            "prom_mtls_webhook_scrape_class_writes_total{kind=\"Prometheus\",result=\"applied\"}",
        );
    }
    println!("e2e: scrape class written {writes} times by two replicas over three policy changes");
    assert!(
        writes >= 3.0,
        "each of the three changes needs a write: {writes}"
    );

    // The webhooks' selection, evaluated by the API server itself (objectSelector
    // and the CEL matchConditions): which pods are sent, and each at most
    // once, counted by the webhook; which are mutated.
    let pod_with = |name: &str, labels: &str, annotations: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{{labels}}}, annotations: {{{annotations}}}}}\nspec: {{nodeName: {}, containers: [{{name: prometheus, image: quay.io/prometheus/prometheus:v3.5.0}}]}}\n",
            harness::cluster::NODE
        )
    };
    let pod_reviews = || async {
        let (_, text) = get_text(&format!("http://{admin}/metrics")).await.unwrap();
        metric(&text, "prom_mtls_webhook_reviews_total{kind=\"Pod\"")
    };
    let prometheus_label = "app.kubernetes.io/name: prometheus";
    let matrix: [(&str, &str, &str, f64, bool); 8] = [
        ("selected", prometheus_label, "", 1.0, true),
        (
            "selected-and-opted-in",
            prometheus_label,
            "prom-mtls-webhook.io/inject: \"TRUE\"",
            1.0,
            true,
        ),
        (
            "selected-but-opted-out",
            prometheus_label,
            "prom-mtls-webhook.io/inject: \"False\"",
            0.0,
            false,
        ),
        (
            "opted-in",
            "app: other",
            "prom-mtls-webhook.io/inject: \"true\"",
            1.0,
            true,
        ),
        (
            "opted-in-in-capitals",
            "app: other",
            "prom-mtls-webhook.io/inject: \"TRUE\"",
            1.0,
            true,
        ),
        ("not-a-candidate", "app: other", "", 0.0, false),
        (
            "opted-out-not-selected",
            "app: other",
            "prom-mtls-webhook.io/inject: \"FALSE\"",
            0.0,
            false,
        ),
        (
            "neither-true-nor-false",
            "app: other",
            "prom-mtls-webhook.io/inject: \"maybe\"",
            0.0,
            false,
        ),
    ];
    for (name, labels, annotations, sent, mutated) in matrix {
        let before = pod_reviews().await;
        cluster.apply(&pod_with(name, labels, annotations)).await;
        let pod = cluster.get(&["pod", name]).await;
        assert_eq!(
            pod_reviews().await - before,
            sent,
            "{name}: reviews sent to the webhook"
        );
        let status = &pod["metadata"]["annotations"]["prom-mtls-webhook.io/status"];
        assert_eq!(status == "injected", mutated, "{name}: {pod}");
    }

    // Certificates rotated while the API server keeps calling the webhook:
    // no review fails. The kubelet's part (new files in the Secret volume)
    // is played by the test; the webhook reloads them without a restart.
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep_calling = Arc::new(AtomicBool::new(true));
    let caller = {
        let (kubectl, admin_kubeconfig) = (
            harness::cluster::tool("kubectl"),
            cluster.admin_kubeconfig.display().to_string(),
        );
        let (calls, failures, keep_calling) =
            (calls.clone(), failures.clone(), keep_calling.clone());
        let monitor = "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: rotation-probe, namespace: default}\nspec: {selector: {}, endpoints: [{port: web}]}\n";
        tokio::spawn(async move {
            while keep_calling.load(Ordering::SeqCst) {
                let out = harness::cluster::run(
                    &kubectl,
                    &[
                        "--kubeconfig",
                        &admin_kubeconfig,
                        "apply",
                        "--dry-run=server",
                        "-f",
                        "-",
                    ],
                    Some(monitor),
                )
                .await;
                calls.fetch_add(1, Ordering::SeqCst);
                if let Err(error) = out {
                    failures.lock().unwrap().push(error);
                }
            }
        })
    };
    let bundle = || async {
        cluster
            .get(&["mutatingwebhookconfiguration", &format!("00-{RELEASE}")])
            .await["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let serving_secret = || async {
        cluster
            .get(&["secret", &format!("{RELEASE}-tls"), "-n", WEBHOOK_NAMESPACE])
            .await
    };
    let reloads = || async {
        let (_, text) = get_text(&format!("http://{admin}/metrics")).await.unwrap();
        metric(&text, "prom_mtls_webhook_certificate_reloads_total")
    };
    for (step, set) in [
        ("the serving certificate", "certs.servingGeneration=2"),
        ("the CA", "certs.caGeneration=2"),
    ] {
        let (bundle_before, secret_before, reloads_before) =
            (bundle().await, serving_secret().await, reloads().await);
        let calls_before = calls.load(Ordering::SeqCst);
        cluster
            .helm(&[
                "upgrade",
                RELEASE,
                &chart.display().to_string(),
                "--namespace",
                WEBHOOK_NAMESPACE,
                "--reuse-values",
                "--set",
                set,
            ])
            .await
            .unwrap_or_else(|e| panic!("helm upgrade ({step}): {e}"));
        let secret_after = serving_secret().await;
        assert_ne!(
            secret_after["data"]["tls.crt"], secret_before["data"]["tls.crt"],
            "{step}: a new serving certificate"
        );
        let bundle_after = bundle().await;
        let certificates = |b64: &str| {
            use base64::Engine as _;
            let pem = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            String::from_utf8(pem)
                .unwrap()
                .matches("BEGIN CERTIFICATE")
                .count()
        };
        if step == "the CA" {
            // The new CA beside the previous one: the pods still serve a
            // certificate of the previous CA until they load the new files.
            assert_ne!(bundle_after, bundle_before);
            assert_eq!(
                certificates(&bundle_after),
                2,
                "the new and the previous CA"
            );
        } else {
            assert_eq!(bundle_after, bundle_before, "{step}: the caBundle stays");
        }
        // Reviews go on for a while against the certificate still served.
        let until = calls.load(Ordering::SeqCst) + 5;
        eventually(
            Duration::from_secs(60),
            "reviews before the files change",
            &mut || async { calls.load(Ordering::SeqCst) >= until },
        )
        .await;
        webhook::write_serving_pair(&cluster, &serving).await;
        eventually(
            Duration::from_secs(30),
            "the webhook serving the new certificate",
            &mut || async { reloads().await > reloads_before },
        )
        .await;
        let until = calls.load(Ordering::SeqCst) + 5;
        eventually(
            Duration::from_secs(60),
            "reviews after the reload",
            &mut || async { calls.load(Ordering::SeqCst) >= until },
        )
        .await;
        println!(
            "e2e: rotated {step}: {} reviews through it, none failed",
            calls.load(Ordering::SeqCst) - calls_before
        );
        let failed = failures.lock().unwrap().clone();
        assert!(
            failed.is_empty(),
            "reviews failed while rotating {step}: {failed:?}"
        );
    }
    keep_calling.store(false, Ordering::SeqCst);
    caller.await.unwrap();

    // What the scrape-class writes rely on: a server-side apply carrying the
    // uid of a resource deleted meanwhile does not create it anew.
    cluster.apply("apiVersion: monitoring.coreos.com/v1\nkind: Prometheus\nmetadata: {name: ghost, namespace: default}\nspec: {replicas: 0}\n").await;
    let uid = cluster.get(&["prometheus", "ghost"]).await["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    cluster
        .kubectl(&["delete", "prometheus", "ghost", "--wait=true"])
        .await
        .unwrap();
    let resurrect = format!(
        "apiVersion: monitoring.coreos.com/v1\nkind: Prometheus\nmetadata: {{name: ghost, namespace: default, uid: {uid}}}\nspec: {{scrapeClasses: [{{name: istio-mtls}}]}}\n"
    );
    let applied = cluster
        .kubectl_in(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager",
                "prom-mtls-webhook",
                "-f",
                "-",
            ],
            Some(&resurrect),
        )
        .await;
    let refusal = applied.expect_err("an apply with a stale uid created the resource");
    assert!(
        refusal.contains("uid") || refusal.contains("UID") || refusal.contains("precondition"),
        "{refusal}"
    );
    assert!(
        cluster
            .kubectl(&["get", "prometheus", "ghost"])
            .await
            .is_err()
    );
    // The control: the same apply without the uid is a valid one (and creates it).
    cluster
        .kubectl_in(
            &[
                "apply",
                "--server-side",
                "--field-manager",
                "prom-mtls-webhook",
                "-f",
                "-",
            ],
            Some(&resurrect.replace(&format!(", uid: {uid}"), "")),
        )
        .await
        .unwrap();
    cluster
        .kubectl(&["delete", "prometheus", "ghost"])
        .await
        .unwrap();

    // The PrometheusAgent got what the Prometheus got, kept current too.
    let agent = cluster
        .get(&["prometheusagent", "agent", "-n", MONITORS_NAMESPACE])
        .await;
    let current = cluster
        .get(&["prometheus", "default", "-n", MONITORS_NAMESPACE])
        .await;
    let class_of = |object: &Value| {
        object["spec"]["scrapeClasses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "istio-mtls")
            .cloned()
            .unwrap()
    };
    assert_eq!(
        class_of(&agent)["relabelings"],
        class_of(&current)["relabelings"],
        "{agent}"
    );
    assert_eq!(
        agent["spec"]["podMetadata"]["annotations"]["prom-mtls-webhook.io/status"], "injected",
        "{agent}"
    );

    // Many passes of both replicas later, the excluded namespaces' Prometheus
    // resources are as they were applied.
    for namespace in ["hands-off", "kube-system"] {
        let left_alone = cluster
            .get(&["prometheus", "left-alone", "-n", namespace])
            .await;
        assert!(
            left_alone["spec"].get("scrapeClasses").is_none()
                && left_alone["spec"].get("podMetadata").is_none(),
            "{left_alone}"
        );
    }

    // The webhook gone: unrelated pods, kube-system's and opted-out pods are
    // still admitted; Prometheus pods fail, as failurePolicy Fail says.
    first.stop(Duration::from_secs(20));
    replica.stop(Duration::from_secs(20));
    let opt_out = pod_with(
        "opted-out",
        prometheus_label,
        "prom-mtls-webhook.io/inject: \"False\"",
    );
    cluster
        .kubectl(&[
            "run",
            "unrelated",
            "--image=registry.example/app:1",
            "--restart=Never",
        ])
        .await
        .unwrap_or_else(|e| panic!("an unrelated pod must not need the webhook: {e}"));
    cluster
        .kubectl_in(
            &["apply", "-f", "-"],
            Some(
                &pod_with(
                    "system-prometheus",
                    "app.kubernetes.io/name: prometheus",
                    "",
                )
                .replace("namespace: default", "namespace: kube-system"),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("kube-system is excluded: {e}"));
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(&opt_out))
        .await
        .unwrap_or_else(|e| panic!("an opted-out pod is not sent: {e}"));
    let refused = cluster
        .kubectl_in(
            &["apply", "-f", "-"],
            Some(&pod_with(
                "prometheus-during-outage",
                "app.kubernetes.io/name: prometheus",
                "",
            )),
        )
        .await
        .expect_err("a Prometheus pod needs the webhook (failurePolicy: Fail)");
    assert!(
        refused.contains("failed calling webhook")
            && refused.contains("prometheus-pods.prom-mtls-webhook.io"),
        "{refused}"
    );

    cluster.assert_running();
    operator.assert_running();
    prometheus.stop();
    operator.stop(Duration::from_secs(5));
}
