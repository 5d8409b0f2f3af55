#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The Helm chart in `charts/prom-mtls-webhook`, rendered by the real `helm`
//! and validated by the real `kubernetes-validate`, then read back as JSON to
//! check what the chart promises (its README and SPEC.md, "Deployment").
//!
//! The tools come from `scripts/install-tools.sh` (into `.tools/`); a test
//! whose tool is missing fails and names that script.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::{Value, json};

const RELEASE: &str = "pmw";
const NAMESPACE: &str = "prom-mtls-webhook";
const FULLNAME: &str = "pmw-prom-mtls-webhook";
/// The Kubernetes version every rendering is validated against.
const VALIDATE_K8S: &str = "1.30.0";
const PREFIX: &str = "prom-mtls-webhook.io/";
/// Names of Istio's injector configurations (istioctl, the istiod chart).
const ISTIO_CONFIGURATIONS: [&str; 6] = [
    "istio-",
    "istio-sidecar-injector",
    "istio-sidecar-injector-canary",
    "istio-sidecar-injector-1-24-2",
    "istio-revision-tag-default",
    "istio-revision-tag-stable",
];

// ---------------------------------------------------------------------------
// Tools

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo().join("charts/prom-mtls-webhook")
}

fn tool(relative: &str) -> PathBuf {
    let path = repo().join(".tools").join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-tools.sh (it installs helm, kubernetes-validate, \
         hadolint and PyYAML into .tools/)",
        path.display()
    );
    path
}

fn python() -> PathBuf {
    tool("venv/bin/python")
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

fn run(command: &mut Command, stdin: Option<&str>) -> Run {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_owned();
        // A writer thread, so that a large input cannot deadlock against a full stdout pipe.
        std::thread::spawn(move || pipe.write_all(input.as_bytes()).unwrap());
    }
    let output = child.wait_with_output().unwrap();
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn helm(args: &[&str]) -> Run {
    run(Command::new(tool("bin/helm")).args(args), None)
}

/// `helm template` of the chart (release `pmw` in `prom-mtls-webhook`) with `extra` arguments.
fn helm_template(extra: &[&str]) -> Run {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
    ];
    args.extend_from_slice(extra);
    helm(&args)
}

/// Multi-document YAML to JSON values, with PyYAML (the same YAML 1.1 reading
/// as Kubernetes' Go decoder for what the chart renders, e.g. `0440` is octal).
fn yaml_documents(text: &str) -> Vec<Value> {
    let out = run(
        Command::new(python()).args([
            "-c",
            "import sys, json, yaml\n\
             json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)",
        ]),
        Some(text),
    );
    assert!(
        out.success,
        "PyYAML could not read the rendering: {}",
        out.stderr
    );
    serde_json::from_str(&out.stdout).unwrap()
}

/// A rendering of the chart, as text (for kubernetes-validate) and as JSON documents.
struct Rendering {
    text: String,
    docs: Vec<Value>,
}

impl Rendering {
    fn of(extra: &[&str]) -> Rendering {
        let out = helm_template(extra);
        assert!(
            out.success,
            "helm template {extra:?} failed:\n{}",
            out.stderr
        );
        Rendering {
            docs: yaml_documents(&out.stdout),
            text: out.stdout,
        }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let found = self.all(kind);
        assert_eq!(
            found.len(),
            1,
            "expected exactly one {kind}, found {}",
            found.len()
        );
        found[0]
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.all(kind)
            .into_iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} named {name}"))
    }

    fn webhook_configuration(&self) -> &Value {
        self.one("MutatingWebhookConfiguration")
    }

    fn webhooks(&self) -> &Vec<Value> {
        self.webhook_configuration()["webhooks"].as_array().unwrap()
    }

    fn webhook(&self, name: &str) -> Option<&Value> {
        self.webhooks().iter().find(|w| w["name"] == name)
    }

    fn pod_spec(&self) -> &Value {
        &self.one("Deployment")["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod_spec()["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        &containers[0]
    }

    /// The container's `--name=value` arguments.
    fn arg(&self, name: &str) -> Option<String> {
        let prefix = format!("--{name}=");
        self.container()["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned))
    }
}

fn default_rendering() -> &'static Rendering {
    static R: OnceLock<Rendering> = OnceLock::new();
    R.get_or_init(|| Rendering::of(&["--kube-version", VALIDATE_K8S]))
}

fn cert_manager_rendering() -> &'static Rendering {
    static R: OnceLock<Rendering> = OnceLock::new();
    R.get_or_init(|| {
        Rendering::of(&[
            "--kube-version",
            VALIDATE_K8S,
            "--set",
            "certManager.enabled=true",
        ])
    })
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// Validates every document of a rendering with `kubernetes-validate --strict`
/// against `version`. cert-manager's kinds have no schema there (they are CRDs):
/// those documents alone are left out, and are returned for the caller to check.
/// kubernetes-validate has no --ignore-missing-schemas; it warns on a missing
/// schema, and a warning here fails the test, so no other kind slips through.
fn validate(text: &str, version: &str) -> Vec<Value> {
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    for doc in text.split("\n---\n") {
        let is_cert_manager = doc
            .lines()
            .any(|l| l.starts_with("apiVersion: cert-manager.io/"));
        if !doc.lines().any(|l| l.starts_with("kind: ")) {
            continue;
        }
        if is_cert_manager {
            skipped.extend(yaml_documents(doc));
        } else {
            kept.push(doc.trim_start_matches("---\n"));
        }
    }
    assert!(
        kept.len() >= 6,
        "too few documents to validate: {}",
        kept.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, kept.join("\n---\n")).unwrap();
    let out = run(
        Command::new(tool("venv/bin/kubernetes-validate"))
            .args(["--strict", "--quiet", "-k", version])
            .arg(&file),
        None,
    );
    let report = format!("{}{}", out.stdout, out.stderr);
    assert!(
        out.success,
        "kubernetes-validate --strict -k {version} failed:\n{report}"
    );
    assert!(
        !report.contains("WARN") && !report.contains("ERROR"),
        "kubernetes-validate -k {version} reported:\n{report}"
    );
    skipped
}

// ---------------------------------------------------------------------------
// Lint and schema validation

#[test]
fn chart_passes_helm_lint_in_both_certificate_modes_and_old_clusters() {
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    for extra in [
        &[][..],
        &["--set", "certManager.enabled=true"][..],
        &[
            "--set",
            "certManager.enabled=true",
            "--set",
            "certManager.issuerRef.name=ca",
        ][..],
        &["--kube-version", "1.27.0"][..],
        &["--set", "orderingCheck.enabled=false"][..],
    ] {
        let mut args = vec!["lint", "--strict", chart, "--namespace", NAMESPACE];
        args.extend_from_slice(extra);
        let out = helm(&args);
        assert!(
            out.success,
            "helm lint {extra:?}:\n{}{}",
            out.stdout, out.stderr
        );
        assert!(out.stdout.contains("0 chart(s) failed"), "{}", out.stdout);
    }
}

#[test]
fn default_rendering_is_valid_kubernetes_1_30() {
    let skipped = validate(&default_rendering().text, VALIDATE_K8S);
    assert!(
        skipped.is_empty(),
        "no cert-manager objects without certManager.enabled"
    );
}

#[test]
fn cert_manager_rendering_is_valid_kubernetes_1_30() {
    let skipped = validate(&cert_manager_rendering().text, VALIDATE_K8S);
    let kinds: BTreeSet<String> = skipped
        .iter()
        .map(|d| format!("{} {}", d["apiVersion"], d["kind"]))
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            r#""cert-manager.io/v1" "Certificate""#.to_owned(),
            r#""cert-manager.io/v1" "Issuer""#.to_owned()
        ]),
        "only cert-manager's own kinds are left to the structural checks below"
    );
}

#[test]
fn renderings_for_kubernetes_1_27_and_without_a_version_are_valid() {
    let old = Rendering::of(&["--kube-version", "1.27.0"]);
    validate(&old.text, "1.27.0");
    validate(&old.text, VALIDATE_K8S);
    // Helm's own default version, as `helm template` without flags renders it.
    let unversioned = Rendering::of(&[]);
    validate(&unversioned.text, VALIDATE_K8S);
}

#[test]
fn invalid_values_are_refused_by_the_values_schema() {
    for (set, complaint) in [
        ("webhook.failurePolicy=fail", "failurePolicy"),
        ("webhook.reinvocationPolicy=Always", "reinvocationPolicy"),
        ("webhook.timeoutSeconds=31", "timeoutSeconds"),
        ("mutation.podMonitors=on", "podMonitors"),
        ("webhook.tyop=1", "tyop"),
    ] {
        let out = helm_template(&["--set", set]);
        assert!(!out.success, "--set {set} was accepted");
        assert!(
            out.stderr.contains(complaint),
            "--set {set}: {}",
            out.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// The webhook configuration

#[test]
fn webhook_configuration_sorts_before_istio_injector() {
    let mut names = vec![
        default_rendering().webhook_configuration()["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned(),
    ];
    assert_eq!(names[0], format!("00-{FULLNAME}"));
    for extra in [
        &["--set", "fullnameOverride=zzz"][..],
        &["--set", "nameOverride=zz"][..],
        &[
            "--set",
            "fullnameOverride=prom-mtls-webhook-with-a-very-long-name-that-gets-truncated-to-63",
        ][..],
    ] {
        let r = Rendering::of(extra);
        names.push(
            r.webhook_configuration()["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for name in &names {
        assert!(name.len() <= 63, "{name}");
        for istio in ISTIO_CONFIGURATIONS {
            // The API server sorts configurations by name, byte-wise, like Rust's str order.
            assert!(name.as_str() < istio, "{name} does not sort before {istio}");
        }
    }
    // The binary's ordering check is told which configuration is ours.
    assert_eq!(
        default_rendering().arg("webhook-config-name").as_deref(),
        Some(names[0].as_str())
    );
}

#[test]
fn webhook_configuration_name_that_sorts_after_istio_is_refused() {
    for name in ["prom-mtls-webhook", "istio-z", "zz-webhook"] {
        let out = helm_template(&["--set", &format!("webhook.configurationName={name}")]);
        assert!(!out.success, "{name} was accepted");
        assert!(
            out.stderr.contains("must sort before \"istio-\""),
            "{}",
            out.stderr
        );
    }
    let custom = Rendering::of(&["--set", "webhook.configurationName=0-mine"]);
    assert_eq!(custom.webhook_configuration()["metadata"]["name"], "0-mine");
    assert_eq!(custom.arg("webhook-config-name").as_deref(), Some("0-mine"));
}

#[test]
fn every_webhook_has_no_side_effects_v1_reviews_equivalent_matching_and_a_short_timeout() {
    let r = default_rendering();
    let names: Vec<&str> = r
        .webhooks()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "prometheus-pods.prom-mtls-webhook.io",
            "annotated-pods.prom-mtls-webhook.io",
            "monitoring.prom-mtls-webhook.io"
        ]
    );
    for w in r.webhooks() {
        let name = &w["name"];
        assert_eq!(w["sideEffects"], "None", "{name}");
        assert_eq!(w["admissionReviewVersions"], json!(["v1"]), "{name}");
        assert_eq!(w["matchPolicy"], "Equivalent", "{name}");
        assert_eq!(w["timeoutSeconds"], 5, "{name}");
        assert_eq!(w["failurePolicy"], "Fail", "{name}");
        assert_eq!(w["reinvocationPolicy"], "Never", "{name}");
        assert_eq!(
            w["clientConfig"]["service"],
            json!({"name": FULLNAME, "namespace": NAMESPACE, "path": "/mutate", "port": 443}),
            "{name}"
        );
        assert!(w["clientConfig"].get("url").is_none(), "{name}");
    }
}

#[test]
fn webhook_policies_and_timeout_follow_values() {
    let r = Rendering::of(&[
        "--set",
        "webhook.failurePolicy=Ignore,webhook.monitoring.failurePolicy=Fail",
        "--set",
        "webhook.reinvocationPolicy=IfNeeded,webhook.timeoutSeconds=3",
    ]);
    for w in r.webhooks() {
        let expected = if w["name"] == "monitoring.prom-mtls-webhook.io" {
            "Fail"
        } else {
            "Ignore"
        };
        assert_eq!(w["failurePolicy"], expected, "{}", w["name"]);
        assert_eq!(w["reinvocationPolicy"], "IfNeeded");
        assert_eq!(w["timeoutSeconds"], 3);
    }
}

#[test]
fn namespace_selector_keeps_out_system_own_and_disabled_namespaces() {
    let other = Rendering::of(&["--namespace", "ops"]);
    for (r, own) in [(default_rendering(), NAMESPACE), (&other, "ops")] {
        for w in r.webhooks() {
            let selector = &w["namespaceSelector"];
            assert!(selector.get("matchLabels").is_none(), "{}", w["name"]);
            assert_eq!(
                selector["matchExpressions"],
                json!([
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                     "values": ["kube-system", "kube-node-lease", own]},
                    {"key": format!("{PREFIX}inject"), "operator": "NotIn", "values": ["disabled"]},
                ]),
                "{}",
                w["name"]
            );
        }
        // The mesh watch leaves the same namespaces' resources alone.
        assert_eq!(
            r.arg("exclude-namespaces").as_deref(),
            Some(format!("kube-system,kube-node-lease,{own}").as_str())
        );
    }
}

#[test]
fn prometheus_pods_webhook_sends_only_labelled_pods_on_create() {
    let r = default_rendering();
    let w = r.webhook("prometheus-pods.prom-mtls-webhook.io").unwrap();
    assert_eq!(
        w["rules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods"], "scope": "Namespaced"}])
    );
    assert_eq!(
        w["objectSelector"],
        json!({"matchLabels": {"app.kubernetes.io/name": "prometheus"}})
    );
    assert_eq!(
        r.arg("pod-selector").as_deref(),
        Some("app.kubernetes.io/name=prometheus")
    );

    // The selector is a values map; the webhook and the binary get the same one.
    let custom = Rendering::of(&[
        "--set-string",
        "mutation.prometheusPodLabels.app\\.kubernetes\\.io/name=prom,mutation.prometheusPodLabels.team=obs",
    ]);
    let w = custom
        .webhook("prometheus-pods.prom-mtls-webhook.io")
        .unwrap();
    assert_eq!(
        w["objectSelector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "prom", "team": "obs"})
    );
    assert_eq!(
        custom.arg("pod-selector").as_deref(),
        Some("app.kubernetes.io/name=prom,team=obs")
    );
}

#[test]
fn opt_in_annotation_webhook_renders_only_where_match_conditions_exist() {
    let annotated = "annotated-pods.prom-mtls-webhook.io";
    let labelled = "prometheus-pods.prom-mtls-webhook.io";
    for (extra, expected) in [
        (&["--kube-version", "1.27.0"][..], false),
        (&["--kube-version", "1.28.0"][..], true),
        (&["--kube-version", "1.30.0"][..], true),
        (
            &[
                "--kube-version",
                "1.27.0",
                "--set",
                "webhook.matchConditions=true",
            ][..],
            true,
        ),
        (
            &[
                "--kube-version",
                "1.30.0",
                "--set",
                "webhook.matchConditions=false",
            ][..],
            false,
        ),
    ] {
        let r = Rendering::of(extra);
        assert_eq!(r.webhook(annotated).is_some(), expected, "{extra:?}");
        assert_eq!(
            r.webhook(labelled)
                .unwrap()
                .get("matchConditions")
                .is_some(),
            expected,
            "{extra:?}"
        );
        if let Some(w) = r.webhook(annotated) {
            // The one label that selects Prometheus pods keeps them out
            // before any CEL runs.
            assert_eq!(
                w["objectSelector"],
                json!({"matchExpressions": [{"key": "app.kubernetes.io/name",
                        "operator": "NotIn", "values": ["prometheus"]}]})
            );
            assert_eq!(
                w["rules"],
                r.webhook(labelled).unwrap()["rules"],
                "pods, CREATE only"
            );
            assert_eq!(condition_names(w), ["opted-in"]);
        }
    }
    // Several labels must all match: no selector can negate that, CEL does.
    let r = Rendering::of(&[
        "--kube-version",
        "1.30.0",
        "--set",
        "mutation.prometheusPodLabels.team=obs",
    ]);
    let w = r.webhook(annotated).unwrap();
    assert!(w.get("objectSelector").is_none());
    assert_eq!(condition_names(w), ["opted-in", "not-selected-by-labels"]);
}

fn condition_names(webhook: &Value) -> Vec<&str> {
    webhook["matchConditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

// Which pods the API server sends to which webhook (the objectSelector and
// the CEL matchConditions, evaluated by a real API server) is tested in
// tests/e2e.rs.

#[test]
fn monitoring_webhook_covers_monitors_prometheuses_and_agents_on_create_and_update() {
    let w = default_rendering()
        .webhook("monitoring.prom-mtls-webhook.io")
        .unwrap();
    assert_eq!(
        w["rules"],
        json!([{"apiGroups": ["monitoring.coreos.com"], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["servicemonitors", "podmonitors", "prometheuses"],
                "scope": "Namespaced"},
               {"apiGroups": ["monitoring.coreos.com"], "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["prometheusagents"],
                "scope": "Namespaced"}])
    );
    assert!(w.get("objectSelector").is_none() && w.get("matchConditions").is_none());
}

// ---------------------------------------------------------------------------
// The Deployment

#[test]
fn deployment_runs_non_root_read_only_and_without_privileges() {
    let r = default_rendering();
    let pod = &r.pod_spec()["securityContext"];
    assert_eq!(pod["runAsNonRoot"], true);
    assert_eq!(pod["runAsUser"], 65532);
    assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault");
    let c = &r.container()["securityContext"];
    assert_eq!(c["runAsNonRoot"], true);
    assert_eq!(c["runAsUser"], 65532);
    assert_eq!(c["runAsGroup"], 65532);
    assert_eq!(c["readOnlyRootFilesystem"], true);
    assert_eq!(c["allowPrivilegeEscalation"], false);
    assert_eq!(c["privileged"], false);
    assert_eq!(c["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(c["seccompProfile"]["type"], "RuntimeDefault");
    let resources = &r.container()["resources"];
    for k in ["cpu", "memory"] {
        assert!(resources["requests"][k].is_string(), "requests.{k}");
        assert!(resources["limits"][k].is_string(), "limits.{k}");
    }
    // No sidecar: the API server's plain TLS would meet Istio's STRICT mTLS.
    assert_eq!(
        r.one("Deployment")["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"],
        "false"
    );
}

#[test]
fn deployment_runs_two_spread_replicas_protected_by_a_disruption_budget() {
    let r = default_rendering();
    let deployment = r.one("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v));
    }
    let spread = &r.pod_spec()["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(spread["maxSkew"], 1);
    assert_eq!(spread["labelSelector"]["matchLabels"], *selector);

    let pdb = r.one("PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *selector);

    // One replica with minAvailable 1 would block every node drain: no PDB then.
    assert!(
        Rendering::of(&["--set", "replicaCount=1"])
            .all("PodDisruptionBudget")
            .is_empty()
    );
}

#[test]
fn probes_use_healthz_and_readyz_on_the_admin_port() {
    let r = default_rendering();
    let c = r.container();
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "admin"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "admin"})
    );
    assert_eq!(
        c["ports"],
        json!([{"name": "https", "containerPort": 8443, "protocol": "TCP"},
               {"name": "admin", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(r.arg("listen").as_deref(), Some("0.0.0.0:8443"));
    assert_eq!(r.arg("admin-listen").as_deref(), Some("0.0.0.0:8080"));
    let v6 = Rendering::of(&["--set", "bindAddress=::"]);
    assert_eq!(v6.arg("listen").as_deref(), Some("[::]:8443"));
}

#[test]
fn priority_class_is_optional() {
    assert!(
        default_rendering()
            .pod_spec()
            .get("priorityClassName")
            .is_none()
    );
    let r = Rendering::of(&["--set", "priorityClassName=system-cluster-critical"]);
    assert_eq!(r.pod_spec()["priorityClassName"], "system-cluster-critical");
}

#[test]
fn termination_grace_period_exceeds_the_shutdown_delay_and_the_drain_timeout() {
    let r = default_rendering();
    assert_eq!(r.arg("shutdown-delay").as_deref(), Some("5s"));
    assert_eq!(r.arg("drain-timeout").as_deref(), Some("15s"));
    assert_eq!(r.pod_spec()["terminationGracePeriodSeconds"], 35);
    let longer = Rendering::of(&["--set", "drainTimeoutSeconds=40"]);
    assert_eq!(longer.arg("drain-timeout").as_deref(), Some("40s"));
    assert_eq!(longer.pod_spec()["terminationGracePeriodSeconds"], 60);
    let no_delay = Rendering::of(&["--set", "shutdownDelaySeconds=0"]);
    assert_eq!(no_delay.arg("shutdown-delay").as_deref(), Some("0s"));
    assert_eq!(no_delay.pod_spec()["terminationGracePeriodSeconds"], 30);
    let out = helm_template(&["--set", "terminationGracePeriodSeconds=20"]);
    assert!(
        !out.success
            && out
                .stderr
                .contains("must exceed shutdownDelaySeconds + drainTimeoutSeconds (5 + 15)"),
        "{}",
        out.stderr
    );
}

#[test]
fn serving_secret_is_mounted_as_a_directory_so_renewals_arrive_without_restart() {
    for r in [default_rendering(), cert_manager_rendering()] {
        let mounts = r.container()["volumeMounts"].as_array().unwrap();
        assert_eq!(mounts.len(), 1);
        let mount = &mounts[0];
        assert!(
            mount.get("subPath").is_none() && mount.get("subPathExpr").is_none(),
            "subPath never sees a rotated Secret"
        );
        assert_eq!(mount["readOnly"], true);
        let dir = mount["mountPath"].as_str().unwrap();
        assert_eq!(r.arg("tls-cert"), Some(format!("{dir}/tls.crt")));
        assert_eq!(r.arg("tls-key"), Some(format!("{dir}/tls.key")));
        let volume = &r.pod_spec()["volumes"][0];
        assert_eq!(volume["name"], mount["name"]);
        assert_eq!(volume["secret"]["defaultMode"], 0o440);
        let secret_name = &volume["secret"]["secretName"];
        if r.all("Certificate").is_empty() {
            assert_eq!(
                r.named("Secret", &format!("{FULLNAME}-tls"))["metadata"]["name"],
                *secret_name
            );
        } else {
            assert_eq!(
                r.named("Certificate", &format!("{FULLNAME}-serving"))["spec"]["secretName"],
                *secret_name
            );
        }
    }
}

#[test]
fn service_routes_443_to_the_tls_port_and_exposes_metrics() {
    let r = default_rendering();
    let service = r.one("Service");
    assert_eq!(service["metadata"]["name"], FULLNAME);
    let ports = &service["spec"]["ports"];
    assert_eq!(ports[0]["name"], "https");
    assert_eq!(ports[0]["port"], 443);
    assert_eq!(ports[0]["targetPort"], "https");
    assert_eq!(ports[1]["name"], "metrics");
    assert_eq!(ports[1]["targetPort"], "admin");
    assert_eq!(
        service["spec"]["selector"],
        r.one("Deployment")["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn rbac_grants_what_each_feature_reads_and_writes_and_nothing_more() {
    let r = default_rendering();
    let role = r.one("ClusterRole");
    let ordering = json!({"apiGroups": ["admissionregistration.k8s.io"],
                          "resources": ["mutatingwebhookconfigurations"],
                          "verbs": ["get", "list"]});
    let mesh = json!({"apiGroups": ["security.istio.io"],
                      "resources": ["peerauthentications"],
                      "verbs": ["get", "list", "watch"]});
    let classes = json!({"apiGroups": ["monitoring.coreos.com"],
                         "resources": ["prometheuses", "prometheusagents"],
                         "verbs": ["get", "list", "watch", "patch"]});
    // Where the class is not kept: namespaces labelled out (metadata only).
    let namespaces = json!({"apiGroups": [""],
                            "resources": ["namespaces"],
                            "verbs": ["list", "watch"]});
    assert_eq!(role["rules"], json!([ordering, mesh, classes, namespaces]));
    // Each feature off takes its rules away.
    for (values, rules) in [
        (
            &["orderingCheck.enabled=false"][..],
            json!([mesh, classes, namespaces]),
        ),
        (
            &["mesh.mtls=strict"][..],
            json!([ordering, classes, namespaces]),
        ),
        (
            &["mutation.monitors=endpoints"][..],
            json!([ordering, mesh]),
        ),
    ] {
        let args: Vec<&str> = values.iter().flat_map(|v| ["--set", v]).collect();
        assert_eq!(
            Rendering::of(&args).one("ClusterRole")["rules"],
            rules,
            "{values:?}"
        );
    }
    let binding = r.one("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}])
    );
    assert_eq!(r.pod_spec()["serviceAccountName"], FULLNAME);
    assert_eq!(r.pod_spec()["automountServiceAccountToken"], true);
    assert_eq!(r.arg("ordering-check").as_deref(), Some("on"));
    assert!(r.all("Role").is_empty() && r.all("RoleBinding").is_empty());

    let off = Rendering::of(&[
        "--set",
        "orderingCheck.enabled=false",
        "--set",
        "mesh.mtls=permissive",
        "--set",
        "mutation.monitors=off",
    ]);
    for kind in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(
            off.all(kind).is_empty(),
            "{kind} without anything that reads the API"
        );
    }
    assert_eq!(off.pod_spec()["automountServiceAccountToken"], false);
    assert_eq!(off.arg("ordering-check").as_deref(), Some("off"));
    assert_eq!(
        off.one("ServiceAccount")["automountServiceAccountToken"],
        false
    );
}

// ---------------------------------------------------------------------------
// Certificates

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new("openssl").current_dir(dir).args(args), None);
    assert!(
        out.success,
        "openssl {args:?} (Debian package openssl): {}{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// The subjectAltName extension of `dir/tls.crt`, as openssl prints it.
fn subject_alt_names(dir: &Path) -> String {
    openssl(
        dir,
        &["x509", "-in", "tls.crt", "-noout", "-ext", "subjectAltName"],
    )
}

/// The subjectAltName extension of the serving certificate `rendering` makes.
fn serving_cert_sans(rendering: &Rendering) -> String {
    let secret = rendering.named("Secret", &format!("{FULLNAME}-tls"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tls.crt"),
        decode(&secret["data"]["tls.crt"]),
    )
    .unwrap();
    subject_alt_names(dir.path())
}

fn decode(b64: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().unwrap())
        .unwrap()
}

#[test]
fn default_mode_generates_a_ca_for_the_service_names_and_sets_it_as_ca_bundle() {
    let r = default_rendering();
    let ca_secret = r.named("Secret", &format!("{FULLNAME}-ca"));
    assert_eq!(
        ca_secret["metadata"]["annotations"]["prom-mtls-webhook.io/generation"],
        "1"
    );
    let secret = r.named("Secret", &format!("{FULLNAME}-tls"));
    // The serving Secret's ca.crt is the bundle: the CA alone on a first install.
    assert_eq!(secret["data"]["ca.crt"], ca_secret["data"]["ca.crt"]);
    assert!(ca_secret["data"].get("previous.crt").is_none());
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let data = &secret["data"];
    for w in r.webhooks() {
        assert_eq!(
            w["clientConfig"]["caBundle"], data["ca.crt"],
            "{}",
            w["name"]
        );
    }
    assert!(
        r.webhook_configuration()["metadata"]
            .get("annotations")
            .is_none()
    );
    assert!(r.all("Certificate").is_empty() && r.all("Issuer").is_empty());

    let dir = tempfile::tempdir().unwrap();
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::write(dir.path().join(file), decode(&data[file])).unwrap();
    }
    let d = dir.path();
    assert!(openssl(d, &["verify", "-CAfile", "ca.crt", "tls.crt"]).contains("tls.crt: OK"));
    let sans = subject_alt_names(d);
    for name in [
        FULLNAME.to_owned(),
        format!("{FULLNAME}.{NAMESPACE}"),
        format!("{FULLNAME}.{NAMESPACE}.svc"),
        format!("{FULLNAME}.{NAMESPACE}.svc.cluster.local"),
    ] {
        assert!(
            sans.contains(&format!("DNS:{name},"))
                || sans.trim_end().ends_with(&format!("DNS:{name}")),
            "{name} in {sans}"
        );
    }
    // Valid for the year certs.validityDays gives (less a day of slack),
    // and the key belongs to the certificate.
    openssl(
        d,
        &["x509", "-in", "tls.crt", "-noout", "-checkend", "31449600"],
    );
    assert_eq!(
        openssl(d, &["x509", "-in", "tls.crt", "-noout", "-pubkey"]),
        openssl(d, &["pkey", "-in", "tls.key", "-pubout"])
    );
    // The key's PEM form (PKCS#1 from Helm's genSignedCert) is one the server's rustls loads.
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject as _;
    let key = PrivateKeyDer::from_pem_slice(&decode(&data["tls.key"])).unwrap();
    rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .unwrap();
}

#[test]
fn cert_manager_mode_injects_the_ca_and_sets_no_ca_bundle() {
    let r = cert_manager_rendering();
    assert!(r.all("Secret").is_empty(), "cert-manager writes the Secret");
    let serving_name = format!("{FULLNAME}-serving");
    assert_eq!(
        r.webhook_configuration()["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{NAMESPACE}/{serving_name}")
    );
    for w in r.webhooks() {
        assert!(w["clientConfig"].get("caBundle").is_none(), "{}", w["name"]);
    }
    // self-signed Issuer -> CA Certificate -> CA Issuer -> serving Certificate
    let selfsigned = r.named("Issuer", &format!("{FULLNAME}-selfsigned"));
    assert_eq!(selfsigned["spec"], json!({"selfSigned": {}}));
    let ca = r.named("Certificate", &format!("{FULLNAME}-ca"));
    assert_eq!(ca["spec"]["isCA"], true);
    // Never the chart's own CA Secret: a switch of modes hands nothing over.
    assert_eq!(
        ca["spec"]["secretName"],
        format!("{FULLNAME}-cert-manager-ca")
    );
    assert_eq!(
        ca["spec"]["issuerRef"]["name"],
        selfsigned["metadata"]["name"]
    );
    let ca_issuer = r.named("Issuer", &format!("{FULLNAME}-ca"));
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"],
        ca["spec"]["secretName"]
    );
    let serving = r.named("Certificate", &serving_name);
    assert_eq!(
        serving["spec"]["issuerRef"],
        json!({"group": "cert-manager.io", "kind": "Issuer", "name": ca_issuer["metadata"]["name"]})
    );
    assert_eq!(
        serving["spec"]["dnsNames"],
        json!([
            FULLNAME,
            format!("{FULLNAME}.{NAMESPACE}"),
            format!("{FULLNAME}.{NAMESPACE}.svc"),
            format!("{FULLNAME}.{NAMESPACE}.svc.cluster.local")
        ])
    );
    for cert in [ca, serving] {
        assert_eq!(cert["metadata"]["namespace"], NAMESPACE);
    }
    assert!(strings(&serving["spec"]["usages"]).contains(&"server auth"));
}

#[test]
fn cert_manager_mode_can_use_an_existing_issuer() {
    let r = Rendering::of(&[
        "--set",
        "certManager.enabled=true,certManager.issuerRef.name=corp-ca,certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert!(r.all("Issuer").is_empty());
    let serving = r.one("Certificate");
    assert_eq!(
        serving["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer"})
    );
}

// What `helm upgrade` does with the Secrets it finds (the CA kept, the
// serving certificate renewed under it without a failed review) is tested
// against a real API server: tests/e2e.rs.

// ---------------------------------------------------------------------------
// Image, binary contract, documentation

fn chart_yaml() -> Value {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    yaml_documents(&text).remove(0)
}

#[test]
fn image_tag_defaults_to_the_app_version_which_is_the_crate_version() {
    let app_version = chart_yaml()["appVersion"].as_str().unwrap().to_owned();
    assert_eq!(
        app_version,
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion follows Cargo.toml"
    );
    let r = default_rendering();
    assert_eq!(
        r.container()["image"],
        format!("ghcr.io/prom-mtls-webhook/prom-mtls-webhook:{app_version}")
    );
    assert_eq!(r.container()["imagePullPolicy"], "IfNotPresent");
    assert!(r.pod_spec().get("imagePullSecrets").is_none());

    let custom = Rendering::of(&[
        "--set",
        "image.repository=registry.example/pmw,image.tag=dev,image.pullPolicy=Always",
        "--set",
        "imagePullSecrets[0].name=regcred",
    ]);
    assert_eq!(custom.container()["image"], "registry.example/pmw:dev");
    assert_eq!(custom.container()["imagePullPolicy"], "Always");
    assert_eq!(
        custom.pod_spec()["imagePullSecrets"],
        json!([{"name": "regcred"}])
    );
    let digest = format!("sha256:{}", "a".repeat(64));
    let pinned = Rendering::of(&["--set", &format!("image.digest={digest}")]);
    assert_eq!(
        pinned.container()["image"],
        format!("ghcr.io/prom-mtls-webhook/prom-mtls-webhook@{digest}")
    );
}

/// The long options that `prom-mtls-webhook <subcommand> --help` lists.
fn binary_flags(subcommand: &str) -> BTreeSet<String> {
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_prom-mtls-webhook")).args([subcommand, "--help"]),
        None,
    );
    assert!(
        out.success,
        "prom-mtls-webhook {subcommand} --help: {}",
        out.stderr
    );
    out.stdout
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn chart_passes_only_flags_the_binary_knows() {
    let known = binary_flags("serve");
    let r = Rendering::of(&["--set", "maxBodyBytes=1048576,maxConnections=512"]);
    let args = strings(&r.container()["args"]);
    assert_eq!(args[0], "serve");
    for arg in &args[1..] {
        let name = arg
            .strip_prefix("--")
            .and_then(|a| a.split('=').next())
            .unwrap_or_else(|| panic!("{arg}: not --flag=value"));
        assert!(
            known.contains(name),
            "the chart passes --{name}, which `prom-mtls-webhook serve` does not know"
        );
    }
    let certs = binary_flags("certs");
    let script = std::fs::read_to_string(repo().join("certs/generate.sh")).unwrap();
    for flag in ["out", "dns", "ip"] {
        assert!(
            certs.contains(flag),
            "`prom-mtls-webhook certs` has no --{flag}"
        );
        assert!(
            script.contains(&format!("--{flag} ")),
            "certs/generate.sh does not pass --{flag}"
        );
    }
}

#[test]
fn values_table_in_the_chart_readme_is_the_one_values_yaml_makes() {
    let out = run(
        Command::new(python())
            .arg(repo().join("scripts/chart-values-table.py"))
            .arg("--check"),
        None,
    );
    assert!(out.success, "{}", out.stderr);
}

#[test]
fn values_table_in_the_chart_readme_lists_every_value() {
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let table = readme
        .split("\n## Values\n")
        .nth(1)
        .expect("the README has a \"## Values\" section");
    let rows: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    let values = yaml_documents(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
        .remove(0);
    // Every leaf of values.yaml is a row, or lies under one (e.g. resources.limits.cpu under resources).
    fn leaves(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, child) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&path, child, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut all = Vec::new();
    leaves("", &values, &mut all);
    for leaf in &all {
        let documented = rows
            .iter()
            .any(|row| leaf == row || leaf.starts_with(&format!("{row}.")));
        assert!(
            documented,
            "values.yaml's {leaf} has no row in the chart README's values table"
        );
    }
    // And every row names a real value.
    for row in &rows {
        let exists = all
            .iter()
            .any(|leaf| leaf == row || leaf.starts_with(&format!("{row}.")));
        assert!(exists, "README row {row} is not in values.yaml");
    }
}

#[test]
fn notes_tell_how_to_see_the_webhook_work() {
    let chart = chart_dir();
    let out = helm(&[
        "install",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
    ]);
    assert!(out.success, "{}", out.stderr);
    let notes = out
        .stdout
        .split("NOTES:")
        .nth(1)
        .expect("helm printed NOTES");
    assert!(
        notes.contains("kubectl apply --dry-run=server -o yaml -f -"),
        "{notes}"
    );
    assert!(
        notes.contains("kind: ServiceMonitor") && notes.contains("scrapeClass: istio-mtls"),
        "{notes}"
    );
    assert!(notes.contains(&format!("00-{FULLNAME}")), "{notes}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn curl(args: &[&str]) -> Run {
    run(
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "5"])
            .args(args),
        None,
    )
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Deployment's own arguments and the chart's generated certificate, given
/// to the real binary: it gets ready, answers a review over TLS that verifies
/// against the caBundle under the Service's DNS name (as the API server
/// connects), and exits 0 on SIGTERM. Only the addresses and file paths are
/// changed for a run outside the cluster (and the ordering check is off: there
/// is no API server to list configurations from).
#[test]
fn chart_arguments_and_generated_certificate_serve_reviews_under_the_service_name() {
    let r = default_rendering();
    let dir = tempfile::tempdir().unwrap();
    let secret = &r.named("Secret", &format!("{FULLNAME}-tls"))["data"];
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::write(dir.path().join(file), decode(&secret[file])).unwrap();
    }
    let (https, admin) = (free_port(), free_port());
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let args: Vec<String> = strings(&r.container()["args"])
        .into_iter()
        .map(|a| match a.split_once('=').map(|(k, _)| k) {
            Some("--listen") => format!("--listen=127.0.0.1:{https}"),
            Some("--admin-listen") => format!("--admin-listen=127.0.0.1:{admin}"),
            Some("--tls-cert") => format!("--tls-cert={}", path("tls.crt")),
            Some("--tls-key") => format!("--tls-key={}", path("tls.key")),
            Some("--ordering-check") => "--ordering-check=off".to_owned(),
            _ => a.to_owned(),
        })
        .collect();
    let log = dir.path().join("server.log");
    let mut server = Process(
        Command::new(env!("CARGO_BIN_EXE_prom-mtls-webhook"))
            .args(&args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("server.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let server_output = || {
        format!(
            "{}{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("server.err")).unwrap_or_default()
        )
    };

    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !curl(&["--output", "/dev/null", "--fail", &readyz]).success {
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "the server exited:\n{}",
            server_output()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "never ready:\n{}",
            server_output()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    let host = format!("{FULLNAME}.{NAMESPACE}.svc");
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0b5f6d1e-5a4e-4f3b-9a43-c0ffee000001",
            "kind": {"group": "monitoring.coreos.com", "version": "v1", "kind": "ServiceMonitor"},
            "resource": {"group": "monitoring.coreos.com", "version": "v1", "resource": "servicemonitors"},
            "name": "web", "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin"},
            "object": {
                "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "endpoints": [{"port": "http-metrics"}]}
            },
            "oldObject": null, "dryRun": false
        }
    });
    let review_file = dir.path().join("review.json");
    std::fs::write(&review_file, review.to_string()).unwrap();
    let out = curl(&[
        "--fail",
        "--cacert",
        &path("ca.crt"),
        "--resolve",
        &format!("{host}:{https}:127.0.0.1"),
        "--header",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", review_file.display()),
        &format!("https://{host}:{https}/mutate?timeout=5s"),
    ]);
    assert!(
        out.success,
        "POST /mutate with the caBundle as trust: {}\n{}",
        out.stderr,
        server_output()
    );
    let answer: Value = serde_json::from_str(&out.stdout).unwrap();
    let response = &answer["response"];
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: Value = serde_json::from_slice(&decode(&response["patch"])).unwrap();
    assert!(
        patch.to_string().contains("istio-mtls"),
        "the monitor joins the scrape class: {patch}"
    );

    // SIGTERM, as the kubelet sends it: a graceful drain, then exit 0.
    let pid = server.0.id().to_string();
    assert!(run(Command::new("kill").args(["-TERM", &pid]), None).success);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        server_output()
    );
}

/// certs/generate.sh, for running the binary outside a cluster: a CA and a
/// serving pair for localhost and the Service's names, signed by that CA.
#[test]
fn certs_script_writes_a_serving_pair_signed_by_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        Command::new("bash")
            .arg(repo().join("certs/generate.sh"))
            .args([
                "--out",
                dir.path().to_str().unwrap(),
                "--service",
                FULLNAME,
                "--namespace",
                NAMESPACE,
            ])
            .args(["--ip", "10.96.0.10"])
            .env(
                "PROM_MTLS_WEBHOOK_BIN",
                env!("CARGO_BIN_EXE_prom-mtls-webhook"),
            ),
        None,
    );
    assert!(
        out.success,
        "certs/generate.sh: {}{}",
        out.stdout, out.stderr
    );
    let d = dir.path();
    assert!(openssl(d, &["verify", "-CAfile", "ca.crt", "tls.crt"]).contains("tls.crt: OK"));
    let sans = subject_alt_names(d);
    for san in [
        "DNS:localhost".to_owned(),
        format!("DNS:{FULLNAME}.{NAMESPACE}.svc"),
        "IP Address:127.0.0.1".to_owned(),
        "IP Address:10.96.0.10".to_owned(),
    ] {
        assert!(sans.contains(&san), "{san} in {sans}");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(d.join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is readable by its owner only");
}

// ---------------------------------------------------------------------------
// Hostile or overloaded clusters

#[test]
fn network_policy_opens_the_webhook_port_to_all_and_the_admin_port_to_the_scrapers() {
    let r = default_rendering();
    let policy = r.one("NetworkPolicy");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        r.one("Deployment")["spec"]["selector"]["matchLabels"]
    );
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2);
    // The API server's address is not knowable: the webhook port is open to every source.
    assert!(ingress[0].get("from").is_none());
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": "https", "protocol": "TCP"}])
    );
    assert_eq!(
        ingress[1]["ports"],
        json!([{"port": "admin", "protocol": "TCP"}])
    );
    assert_eq!(
        ingress[1]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
    );
    // The port names are the container's.
    let ports: Vec<&str> = r.container()["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(ports, ["https", "admin"]);
    let off = Rendering::of(&["--set", "networkPolicy.enabled=false"]);
    assert!(off.all("NetworkPolicy").is_empty());
}

#[test]
fn the_memory_limit_follows_from_the_body_budget_and_a_lower_one_is_refused() {
    let r = default_rendering();
    let resources = &r.container()["resources"];
    assert_eq!(
        resources["limits"]["memory"], "128Mi",
        "32 MiB + 3 x 32 MiB"
    );
    assert_eq!(
        r.arg("max-body-bytes-in-flight").as_deref(),
        Some("33554432")
    );
    let bigger = Rendering::of(&["--set", "maxBodyBytesInFlight=67108864"]);
    assert_eq!(bigger.container()["resources"]["limits"]["memory"], "224Mi");
    assert_eq!(
        bigger.arg("max-body-bytes-in-flight").as_deref(),
        Some("67108864")
    );
    let room = Rendering::of(&["--set", "resources.limits.memory=1Gi"]);
    assert_eq!(room.container()["resources"]["limits"]["memory"], "1Gi");
    let tight = helm_template(&["--set", "resources.limits.memory=64Mi"]);
    assert!(!tight.success);
    assert!(
        tight
            .stderr
            .contains("below the 128Mi that maxBodyBytesInFlight"),
        "{}",
        tight.stderr
    );
}

#[test]
fn cert_manager_is_used_where_the_cluster_serves_it_unless_told() {
    let present = Rendering::of(&["--api-versions", "cert-manager.io/v1"]);
    assert_eq!(present.all("Certificate").len(), 2);
    assert!(present.all("Secret").is_empty());
    let refused = Rendering::of(&[
        "--api-versions",
        "cert-manager.io/v1",
        "--set",
        "certManager.enabled=false",
    ]);
    assert!(refused.all("Certificate").is_empty());
    assert_eq!(refused.all("Secret").len(), 2);
    assert!(default_rendering().all("Certificate").is_empty());
}

#[test]
fn a_secret_of_ones_own_with_its_ca_bundle_replaces_the_generated_ones() {
    let r = Rendering::of(&[
        "--api-versions",
        "cert-manager.io/v1",
        "--set",
        "certs.existingSecret=my-serving-cert",
        "--set",
        "webhook.caBundle=Zm9v",
    ]);
    assert!(r.all("Secret").is_empty() && r.all("Certificate").is_empty());
    assert_eq!(
        r.pod_spec()["volumes"][0]["secret"]["secretName"],
        "my-serving-cert"
    );
    for w in r.webhooks() {
        assert_eq!(w["clientConfig"]["caBundle"], "Zm9v");
    }
    // A bundle of one's own keeps cert-manager out in `auto` mode too.
    let own_bundle = Rendering::of(&[
        "--api-versions",
        "cert-manager.io/v1",
        "--set",
        "webhook.caBundle=Zm9v",
    ]);
    assert!(own_bundle.all("Certificate").is_empty());
    assert!(
        own_bundle.webhook_configuration()["metadata"]
            .get("annotations")
            .is_none()
    );
}

#[test]
fn certificate_settings_that_cannot_hold_together_are_refused() {
    for (values, reason) in [
        (
            &["certs.existingSecret=mine"][..],
            "certs.existingSecret needs webhook.caBundle",
        ),
        (
            &[
                "certs.existingSecret=mine",
                "webhook.caBundle=Zm9v",
                "certManager.enabled=true",
            ][..],
            "certs.existingSecret and certManager.enabled=true exclude each other",
        ),
        (
            &["webhook.caBundle=Zm9v", "certManager.enabled=true"][..],
            "webhook.caBundle and certManager.enabled=true exclude each other",
        ),
    ] {
        let mut args = vec!["--api-versions", "cert-manager.io/v1"];
        args.extend(values.iter().flat_map(|v| ["--set", v]));
        let out = helm_template(&args);
        assert!(!out.success, "{values:?} was accepted");
        assert!(out.stderr.contains(reason), "{values:?}: {}", out.stderr);
    }
}

#[test]
fn the_url_value_points_the_webhooks_at_a_webhook_outside_the_cluster() {
    let r = Rendering::of(&["--set", "webhook.url=https://10.1.2.3:9443/mutate"]);
    for w in r.webhooks() {
        assert_eq!(w["clientConfig"]["url"], "https://10.1.2.3:9443/mutate");
        assert!(w["clientConfig"].get("service").is_none());
    }
    let sans = serving_cert_sans(&r);
    assert!(sans.contains("IP Address:10.1.2.3"), "{sans}");
    let named = Rendering::of(&["--set", "webhook.url=https://webhook.example.com/mutate"]);
    let sans = serving_cert_sans(&named);
    assert!(sans.contains("DNS:webhook.example.com"), "{sans}");
}
