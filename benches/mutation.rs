//! Criterion benchmarks of the pure core, on the AdmissionReviews captured
//! from a real kube-apiserver (`tests/fixtures/admission/`).
//!
//! - `mutate/<Kind>`: [`mutate`] of each kind's object, already parsed
//!   (the mutation rules alone: no JSON parse, no response);
//! - `review/<fixture>`: [`review`] of every fixture, bytes in, bytes out
//!   (parse, mutate, patch to JSON and base64, response serialised): what the
//!   server's handler spends per request besides HTTP, TLS, metrics and logs;
//! - `review_again/pod-create-1`: the same pod after the patch was applied,
//!   the idempotent pass that answers with an empty patch;
//! - `parts/*`: pieces of a review for attributing its cost (the JSON parse
//!   of the body into a `Value`, the response serialisation).
//!
//! Run: `cargo bench --bench mutation` (figures in docs/benchmarks.md).
//! Quick look: `cargo bench --bench mutation -- --quick`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prom_mtls_webhook::admission::review;
use prom_mtls_webhook::mutation::{Kind, MutationConfig, Operation, Outcome, View, mutate};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission")
}

fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(format!("{name}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn all_fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = fixtures_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let body = read_fixture(&name);
            (name, body)
        })
        .collect()
}

/// The request's object, and what the webhook makes of its kind and operation.
fn object_of(body: &[u8]) -> (Kind, Operation, Value) {
    let review: Value = serde_json::from_slice(body).unwrap();
    let request = &review["request"];
    let kind = Kind::from_group_kind(
        request["kind"]["group"].as_str().unwrap(),
        request["kind"]["kind"].as_str().unwrap(),
    )
    .unwrap();
    let operation = match request["operation"].as_str().unwrap() {
        "CREATE" => Operation::Create,
        "UPDATE" => Operation::Update,
        other => panic!("unexpected operation {other}"),
    };
    (kind, operation, request["object"].clone())
}

fn bench_mutate(c: &mut Criterion) {
    let config = MutationConfig::default();
    let mut group = c.benchmark_group("mutate");
    for (label, fixture) in [
        ("Pod", "pod-create-1"),
        ("Prometheus", "prometheus-create-1"),
        ("ServiceMonitor", "servicemonitor-create-1"),
    ] {
        let (kind, operation, object) = object_of(&read_fixture(fixture));
        let view = View::of(kind, &object);
        let first = mutate(kind, operation, &view, &config, rules());
        assert_eq!(first.outcome, Outcome::Patched, "{fixture} is not patched");
        group.bench_function(label, |b| {
            b.iter(|| mutate(kind, operation, black_box(&view), &config, rules()));
        });
    }

    // The captured PodMonitor scrapes the sidecar's own metrics: left alone,
    // with a warning. The same object scraping an application port is patched.
    let (kind, operation, object) = object_of(&read_fixture("podmonitor-create-1"));
    let view = View::of(kind, &object);
    assert_eq!(
        mutate(kind, operation, &view, &config, rules()).outcome,
        Outcome::Unchanged
    );
    group.bench_function("PodMonitor/envoy-endpoint-unchanged", |b| {
        b.iter(|| mutate(kind, operation, black_box(&view), &config, rules()));
    });
    let mut app = object.clone();
    app["spec"]["podMetricsEndpoints"][0]["port"] = "http-metrics".into();
    app["spec"]["podMetricsEndpoints"][0]["path"] = "/metrics".into();
    let app = View::of(kind, &app);
    assert_eq!(
        mutate(kind, operation, &app, &config, rules()).outcome,
        Outcome::Patched
    );
    group.bench_function("PodMonitor/app-endpoint-patched", |b| {
        b.iter(|| mutate(kind, operation, black_box(&app), &config, rules()));
    });
    group.finish();
}

fn bench_review(c: &mut Criterion) {
    let config = MutationConfig::default();
    let mut group = c.benchmark_group("review");
    for (name, body) in all_fixtures() {
        review(&body, &config, rules()).unwrap_or_else(|e| panic!("{name}: {e}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(&name, |b| {
            b.iter(|| review(black_box(&body), &config, rules()).unwrap());
        });
    }
    group.finish();
}

/// pod-create-1 with the webhook's own patch applied: what the API server
/// would send if the pod came through a second time (reinvocation).
fn mutated_pod_review() -> Vec<u8> {
    let config = MutationConfig::default();
    let body = read_fixture("pod-create-1");
    let (kind, operation, mut object) = object_of(&body);
    let first = mutate(kind, operation, &View::of(kind, &object), &config, rules());
    json_patch::patch(&mut object, &first.patch.0).unwrap();
    let mut review: Value = serde_json::from_slice(&body).unwrap();
    review["request"]["object"] = object;
    serde_json::to_vec(&review).unwrap()
}

fn bench_review_again(c: &mut Criterion) {
    let config = MutationConfig::default();
    let body = mutated_pod_review();
    let (kind, operation, object) = object_of(&body);
    let view = View::of(kind, &object);
    let again = mutate(kind, operation, &view, &config, rules());
    assert_eq!(
        again.outcome,
        Outcome::Unchanged,
        "second pass is not empty"
    );
    assert!(again.patch.0.is_empty());

    let mut group = c.benchmark_group("review_again");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("pod-create-1", |b| {
        b.iter(|| review(black_box(&body), &config, rules()).unwrap());
    });
    group.finish();

    let mut group = c.benchmark_group("mutate_again");
    group.bench_function("Pod", |b| {
        b.iter(|| mutate(kind, operation, black_box(&view), &config, rules()));
    });
    group.finish();
}

/// Where a review's time goes, piece by piece (for profiling, not targets).
fn bench_parts(c: &mut Criterion) {
    let config = MutationConfig::default();
    let body = read_fixture("pod-create-1");
    let mut group = c.benchmark_group("parts");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse_value/pod-create-1", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&body)).unwrap());
    });
    group.bench_function("scan_only/pod-create-1", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(&body)).unwrap());
    });
    let (kind, operation, object) = object_of(&body);
    let object_bytes = serde_json::to_vec(&object).unwrap();
    group.bench_function("parse_object_value/pod-create-1", |b| {
        b.iter(|| serde_json::from_slice::<Value>(black_box(&object_bytes)).unwrap());
    });
    group.bench_function("drop_value/pod-create-1", |b| {
        b.iter_batched(|| object.clone(), drop, BatchSize::SmallInput);
    });
    let mutation = mutate(kind, operation, &View::of(kind, &object), &config, rules());
    group.bench_function("patch_to_json/pod-create-1", |b| {
        b.iter(|| serde_json::to_vec(black_box(&mutation.patch)).unwrap());
    });
    group.bench_function("config_default", |b| b.iter(MutationConfig::default));
    group.finish();
}

criterion_group!(
    benches,
    bench_mutate,
    bench_review,
    bench_review_again,
    bench_parts
);
criterion_main!(benches);

/// The scrape class's rules for a mesh taken as STRICT.
fn rules() -> &'static serde_json::Value {
    static RULES: std::sync::LazyLock<prom_mtls_webhook::mesh::Rendering> =
        std::sync::LazyLock::new(prom_mtls_webhook::mesh::Rendering::assumed_strict);
    &RULES.relabelings
}
