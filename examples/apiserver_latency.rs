//! Pod and ServiceMonitor create latency through a real kube-apiserver, with
//! the webhook called and without it, in one run (the end-to-end harness's
//! control plane, in a network namespace of its own). A benchmark, not a
//! test: `scripts/bench-apiserver.sh` builds the release binary and runs it.
//!
//!   apiserver_latency --webhook <release binary> [--rounds 8] [--per-round 60]
//!                     [--set chart.value=x]...
//!
//! Each round creates `--per-round` Prometheus pods (which the webhook
//! mutates) and as many ServiceMonitors (which join its class), and as many
//! of each already in the shape the webhook leaves them (it is called and
//! changes nothing: the call's cost without the patch's), with the webhook
//! configuration in place and without it (deleted, then restored), in
//! alternating order, timing each POST from the client's side (a kept-alive
//! HTTPS connection, client-certificate authentication). Then the API
//! server's own account of the webhook calls, and the webhook's of its
//! reviews.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/e2e/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::cluster::Cluster;
use harness::webhook;
use prom_mtls_webhook::mutation::{Kind, MutationConfig, Operation, View, mutate};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

const NAMESPACE: &str = "bench";

struct Args {
    webhook: PathBuf,
    rounds: usize,
    per_round: usize,
    /// Chart values besides the harness's own (`helm --set`), to compare
    /// registrations (`webhook.matchConditions=false`, ...).
    chart_values: Vec<String>,
}

fn args() -> Args {
    let mut args = Args {
        webhook: PathBuf::new(),
        rounds: 8,
        per_round: 60,
        chart_values: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--webhook" => args.webhook = value.into(),
            "--rounds" => args.rounds = value.parse().unwrap(),
            "--per-round" => args.per_round = value.parse().unwrap(),
            "--set" => args.chart_values.push(value),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        args.webhook.is_file(),
        "--webhook <release binary> is needed (scripts/bench-apiserver.sh passes it)"
    );
    args
}

fn main() {
    let args = args();
    let passed: Vec<String> = std::env::args().skip(1).collect();
    harness::run_in_private_network(&passed, &[harness::NODE_IP], run(args));
}

/// An HTTPS client of the API server as the admin, by client certificate.
fn api_client(cluster: &Cluster) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&cluster.ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cluster.admin_cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&cluster.admin_key).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn create(client: &reqwest::Client, path: &str, body: &Value) -> Duration {
    let started = Instant::now();
    let response = client
        .post(format!(
            "https://127.0.0.1:{}{path}",
            harness::cluster::API_PORT
        ))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let took = started.elapsed();
    assert!(status.is_success(), "POST {path}: {status} {text}");
    took
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "prometheus"}},
           "spec": {"nodeName": harness::cluster::NODE,
                    "containers": [{"name": "prometheus", "image": "quay.io/prometheus/prometheus:v3.5.0"}]}})
}

fn service_monitor(name: &str) -> Value {
    json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
           "metadata": {"name": name},
           "spec": {"selector": {"matchLabels": {"app": "web"}}, "endpoints": [{"port": "http-metrics"}]}})
}

/// `object` as the webhook would store it: created so, the webhook is called
/// and has nothing to change, which parts the cost of the call from the
/// cost of the patch.
fn already_mutated(kind: Kind, object: &Value) -> Value {
    let mutation = mutate(
        kind,
        Operation::Create,
        &View::of(kind, object),
        &MutationConfig::default(),
        &json!([]),
    );
    let mut mutated = object.clone();
    json_patch::patch(&mut mutated, &mutation.patch.0).unwrap();
    let again = mutate(
        kind,
        Operation::Create,
        &View::of(kind, &mutated),
        &MutationConfig::default(),
        &json!([]),
    );
    assert!(again.patch.0.is_empty(), "{kind:?} is mutated again");
    mutated
}

/// Create latencies, of the objects as users write them and as the webhook
/// leaves them.
#[derive(Default)]
struct Samples {
    pods: Vec<Duration>,
    monitors: Vec<Duration>,
    mutated_pods: Vec<Duration>,
    mutated_monitors: Vec<Duration>,
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

async fn run(args: Args) {
    let work = harness::WorkDir::new();
    let cluster = Cluster::start(&work.path).await;
    webhook::install_crds(&cluster).await;
    let mut values = vec!["mesh.mtls=strict".to_owned()];
    values.extend(args.chart_values.iter().cloned());
    let serving = webhook::install_chart(&cluster, &values).await;
    let (_webhook, admin) = webhook::start(&cluster, &args.webhook, "webhook", 0, &serving).await;
    cluster
        .kubectl(&["create", "namespace", NAMESPACE])
        .await
        .unwrap();
    cluster
        .eventually(
            Duration::from_secs(30),
            "the bench namespace's ServiceAccount",
            || async {
                cluster
                    .kubectl(&["get", "serviceaccount", "default", "-n", NAMESPACE])
                    .await
                    .is_ok()
            },
        )
        .await;
    let configuration = format!("00-{}", webhook::RELEASE);
    let mut saved = cluster
        .get(&["mutatingwebhookconfiguration", &configuration])
        .await;
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "generation",
        "managedFields",
    ] {
        saved["metadata"].as_object_mut().unwrap().remove(field);
    }

    let client = api_client(&cluster);
    let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    let monitors = format!("/apis/monitoring.coreos.com/v1/namespaces/{NAMESPACE}/servicemonitors");
    let reviews = || async {
        let (_, text) = webhook::get_text(&format!("http://{admin}/metrics"))
            .await
            .unwrap();
        webhook::metric(&text, "prom_mtls_webhook_reviews_total")
    };
    // Warm up both paths: connections, caches.
    for i in 0..20 {
        create(&client, &pods, &pod(&format!("warm-{i}"))).await;
        create(&client, &monitors, &service_monitor(&format!("warm-{i}"))).await;
    }
    let (mut with, mut without) = (Samples::default(), Samples::default());
    let (mut serial, mut registered) = (0, true);
    for round in 0..args.rounds {
        // Alternating order: on, off, off, on, on, off... one switch per state.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for webhook_on in order {
            if webhook_on && !registered {
                cluster.apply(&saved.to_string()).await;
            } else if !webhook_on && registered {
                cluster
                    .kubectl(&["delete", "mutatingwebhookconfiguration", &configuration])
                    .await
                    .unwrap();
            }
            registered = webhook_on;
            // The API server's admission plugin follows the configuration
            // through an informer: wait until a create shows the state.
            loop {
                let before = reviews().await;
                serial += 1;
                create(&client, &pods, &pod(&format!("probe-{serial}"))).await;
                let called = reviews().await > before;
                if called == webhook_on {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let samples = if webhook_on { &mut with } else { &mut without };
            for _ in 0..args.per_round {
                serial += 1;
                samples
                    .pods
                    .push(create(&client, &pods, &pod(&format!("p-{serial}"))).await);
                samples.monitors.push(
                    create(&client, &monitors, &service_monitor(&format!("m-{serial}"))).await,
                );
                let mutated_pod = already_mutated(Kind::Pod, &pod(&format!("q-{serial}")));
                samples
                    .mutated_pods
                    .push(create(&client, &pods, &mutated_pod).await);
                let mutated_monitor = already_mutated(
                    Kind::ServiceMonitor,
                    &service_monitor(&format!("n-{serial}")),
                );
                samples
                    .mutated_monitors
                    .push(create(&client, &monitors, &mutated_monitor).await);
            }
        }
    }

    println!(
        "kube-apiserver {}, {} rounds x {} creates of each kind in each state, webhook {}, chart values {:?}",
        harness::version("KUBERNETES_VERSION"),
        args.rounds,
        args.per_round,
        args.webhook.display(),
        values
    );
    println!("| create | webhook | p50 ms | p90 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|");
    for (kind, on, off) in [
        ("Pod", &with.pods, &without.pods),
        ("ServiceMonitor", &with.monitors, &without.monitors),
        (
            "Pod, already mutated",
            &with.mutated_pods,
            &without.mutated_pods,
        ),
        (
            "ServiceMonitor, already mutated",
            &with.mutated_monitors,
            &without.mutated_monitors,
        ),
    ] {
        for (state, samples) in [("called", on), ("not registered", off)] {
            println!(
                "| {kind} | {state} | {} | {} | {} |",
                ms(percentile(samples, 0.5)),
                ms(percentile(samples, 0.9)),
                ms(percentile(samples, 0.99))
            );
        }
        let delta = percentile(on, 0.5).as_secs_f64() - percentile(off, 0.5).as_secs_f64();
        println!("| {kind} | difference at p50 | {:.3} | | |", delta * 1000.0);
    }

    // Where the difference goes: the API server's own account of each
    // webhook call (network, TLS and the webhook), beside the webhook's
    // account of the reviews (from request headers to answer).
    let text = client
        .get(format!(
            "https://127.0.0.1:{}/metrics",
            harness::cluster::API_PORT
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    println!();
    println!("| measured by | what | calls | mean ms |");
    println!("|---|---|---:|---:|");
    for (series, what) in [
        (
            "apiserver_admission_webhook_admission_duration_seconds",
            "webhook call",
        ),
        (
            "apiserver_admission_step_admission_duration_seconds",
            "admit step",
        ),
        // Each in-tree plugin, counted per run: a webhook that changes the
        // object makes the API server run the whole mutating chain again
        // (k8s.io/apiserver pkg/admission/reinvocation.go).
        (
            "apiserver_admission_controller_admission_duration_seconds",
            "plugin",
        ),
    ] {
        for (labels, count, sum) in histogram_means(&text, series) {
            println!(
                "| kube-apiserver | {what} {labels} | {count} | {:.3} |",
                sum / count * 1000.0
            );
        }
    }
    let (_, ours) = webhook::get_text(&format!("http://{admin}/metrics"))
        .await
        .unwrap();
    for (labels, count, sum) in histogram_means(&ours, "prom_mtls_webhook_review_duration_seconds")
    {
        println!(
            "| webhook | review {labels} | {count} | {:.3} |",
            sum / count * 1000.0
        );
    }
}

/// `(labels, count, sum)` of each series of a histogram in Prometheus' text
/// format, for the series with any calls.
fn histogram_means(text: &str, name: &str) -> Vec<(String, f64, f64)> {
    let value_of = |suffix: &str, labels: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(&format!("{name}{suffix}"))?;
            let (found, value) = rest.rsplit_once(' ')?;
            (found.trim_start_matches('{').trim_end_matches('}') == labels)
                .then(|| value.parse::<f64>().ok())?
        })
    };
    text.lines()
        .filter_map(|line| line.strip_prefix(&format!("{name}_count")))
        .filter_map(|rest| {
            let (labels, count) = rest.rsplit_once(' ')?;
            let labels = labels
                .trim_start_matches('{')
                .trim_end_matches('}')
                .to_owned();
            let count: f64 = count.parse().ok()?;
            let sum = value_of("_sum", &labels)?;
            (count > 0.0).then_some((labels, count, sum))
        })
        .collect()
}
