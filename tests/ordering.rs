//! The ordering check end to end: the real binary, through the real kube
//! client (kubeconfig, bearer token, HTTPS with a CA it must verify), against
//! a stand-in for kube-apiserver on 127.0.0.1 that serves
//! MutatingWebhookConfiguration lists. A kube-apiserver cannot run here; the
//! list is the API's own JSON, as `kubectl get mutatingwebhookconfigurations
//! -o json` prints it.
//!
//! The check must warn and set the metrics when Istio's injector sorts first,
//! and must look again periodically: the served list changes under it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine as _;
use common::ServeProcess;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prom_mtls_webhook::certs::Authority;
use prom_mtls_webhook::tls;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceExt as _;

const LIST_PATH: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";
const TOKEN: &str = "ordering-test-token";

/// What the stand-in serves, and what it was asked.
#[derive(Default)]
struct ApiState {
    configurations: Vec<Value>,
    lists: usize,
    authorizations: Vec<String>,
}

type Shared = Arc<Mutex<ApiState>>;

/// A MutatingWebhookConfiguration as the API returns it.
fn configuration(name: &str, webhooks: &[&str]) -> Value {
    json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "1"},
        "webhooks": webhooks.iter().map(|webhook| json!({
            "name": webhook,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "clientConfig": {"service": {"namespace": "x", "name": "y", "path": "/inject"}},
        })).collect::<Vec<_>>(),
    })
}

fn istio_injector(name: &str) -> Value {
    configuration(
        name,
        &[
            "rev.namespace.sidecar-injector.istio.io",
            "rev.object.sidecar-injector.istio.io",
            "namespace.sidecar-injector.istio.io",
            "object.sidecar-injector.istio.io",
        ],
    )
}

async fn list(State(state): State<Shared>, headers: HeaderMap) -> impl IntoResponse {
    let mut state = state.lock().unwrap();
    state.lists += 1;
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    state.authorizations.push(authorization.clone());
    let (status, body) = if authorization == format!("Bearer {TOKEN}") {
        (
            StatusCode::OK,
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfigurationList",
                "metadata": {"resourceVersion": "42"},
                "items": state.configurations,
            }),
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "code": 401, "reason": "Unauthorized", "message": "Unauthorized"}),
        )
    };
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
}

/// Serves the list over HTTPS on 127.0.0.1 with a certificate from a fresh
/// CA; returns the port and the CA's PEM.
async fn start_api_server(state: Shared) -> (u16, String) {
    common::install_provider();
    // A pair for localhost and 127.0.0.1, served as the webhook serves its own.
    let authority = Authority::new(1).unwrap();
    let pair = common::issue(&authority);
    let provider = tls::provider();
    let serving =
        tls::parse_pair(pair.cert_pem.as_bytes(), pair.key_pem.as_bytes(), &provider).unwrap();
    let tls = tls::server_config(Arc::new(tls::CertResolver::new(serving.key)), provider).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let router = axum::Router::new()
        .route(LIST_PATH, get(list))
        .with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request| {
                    router.clone().oneshot(request.map(axum::body::Body::new))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, authority.ca_pem())
}

fn write_kubeconfig(dir: &tempfile::TempDir, port: u16, ca_pem: &str) -> String {
    let path = dir.path().join("kubeconfig");
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: 'https://127.0.0.1:{port}', certificate-authority-data: {ca}}}
users:
- name: webhook
  user: {{token: {TOKEN}}}
contexts:
- name: test
  context: {{cluster: test, user: webhook}}
current-context: test
"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn spawn_webhook(dir: &tempfile::TempDir, kubeconfig: &str, ours: &str) -> ServeProcess {
    ServeProcess::spawn_dev(
        &dir.path().join("ca.crt"),
        &[
            "--ordering-check",
            "on",
            "--ordering-check-interval",
            "200ms",
            "--webhook-config-name",
            ours,
        ],
        &[("KUBECONFIG", kubeconfig)],
    )
}

/// Waits until the last check's result is `result`.
async fn wait_for_result(process: &ServeProcess, result: &str) -> common::Metrics {
    let reported = |metrics: &common::Metrics| {
        metrics.value(
            "prom_mtls_webhook_ordering_check_result",
            &[("result", result)],
        ) == 1.0
    };
    common::eventually(
        Duration::from_secs(20),
        &format!("the ordering check reports {result:?}"),
        || async { reported(&process.metrics().await) },
    )
    .await;
    process.metrics().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_injector_sorting_first_is_warned_about_and_exposed_until_fixed() {
    let state: Shared = Arc::default();
    // Ours is named without the chart's `00-` prefix: `istio-` sorts first.
    let ours = "prom-mtls-webhook";
    state.lock().unwrap().configurations = vec![
        istio_injector("istio-revision-tag-default"),
        configuration(ours, &["pods.prom-mtls-webhook.io"]),
        istio_injector("istio-sidecar-injector"),
        configuration("cert-manager-webhook", &["webhook.cert-manager.io"]),
    ];
    let (port, ca_pem) = start_api_server(state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(&dir, port, &ca_pem);
    let mut process = spawn_webhook(&dir, &kubeconfig, ours);

    let warning = process.wait_for_log(
        "ordering check: Istio's injector configuration sorts before ours",
        Duration::from_secs(20),
    );
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(warning["ours"], ours);
    let offending = warning["offending"].as_str().unwrap();
    assert!(
        offending.contains("istio-revision-tag-default")
            && offending.contains("istio-sidecar-injector")
            && !offending.contains("cert-manager"),
        "{offending}"
    );
    let misordered = wait_for_result(&process, "misordered").await;
    assert_eq!(
        misordered.value("prom_mtls_webhook_ordered_before_istio", &[]),
        0.0
    );
    // The webhook still serves: a misordering is reported, never fatal.
    let ready = common::plain_client()
        .get(process.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // Istio is uninstalled: the next periodic check sees it.
    state.lock().unwrap().configurations =
        vec![configuration(ours, &["pods.prom-mtls-webhook.io"])];
    let fixed = wait_for_result(&process, "no_injector").await;
    assert_eq!(
        fixed.value("prom_mtls_webhook_ordered_before_istio", &[]),
        1.0
    );
    assert_eq!(
        fixed.value(
            "prom_mtls_webhook_ordering_check_result",
            &[("result", "misordered")]
        ),
        0.0
    );

    let state = state.lock().unwrap();
    assert!(state.lists >= 2, "checked at start and again");
    assert!(
        state
            .authorizations
            .iter()
            .all(|a| *a == format!("Bearer {TOKEN}")),
        "every list carries the kubeconfig's token: {:?}",
        state.authorizations
    );
    drop(state);
    process.signal("TERM");
    assert_eq!(process.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_before_every_injector_is_ordered_and_a_missing_registration_is_reported() {
    let state: Shared = Arc::default();
    let ours = "00-prom-mtls-webhook";
    state.lock().unwrap().configurations = vec![
        istio_injector("istio-sidecar-injector"),
        istio_injector("istio-sidecar-injector-canary"),
        configuration(ours, &["pods.prom-mtls-webhook.io"]),
    ];
    let (port, ca_pem) = start_api_server(state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(&dir, port, &ca_pem);
    let mut process = spawn_webhook(&dir, &kubeconfig, ours);

    let ordered = process.wait_for_log(
        "ordering check: ours sorts before Istio's injector",
        Duration::from_secs(20),
    );
    let injectors = ordered["injectors"].as_str().unwrap();
    assert!(
        injectors.contains("istio-sidecar-injector-canary"),
        "{injectors}"
    );
    let metrics = wait_for_result(&process, "ordered").await;
    assert_eq!(
        metrics.value("prom_mtls_webhook_ordered_before_istio", &[]),
        1.0
    );
    assert!(
        !process.seen.iter().any(|line| line["level"] == "WARN"
            && line["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("ordering")),
        "no warning while the order is right: {:#?}",
        process.seen
    );

    // Our configuration is deleted (a half-finished uninstall): said so.
    state.lock().unwrap().configurations = vec![istio_injector("istio-sidecar-injector")];
    process.wait_for_log(
        "ordering check: no MutatingWebhookConfiguration of this name",
        Duration::from_secs(20),
    );
    wait_for_result(&process, "not_registered").await;
    process.signal("TERM");
    assert_eq!(process.wait_exit(Duration::from_secs(10)).code(), Some(0));
}
