//! `/metrics` after real reviews over TLS: counters by kind, operation and
//! outcome, the latency histogram, warnings, the certificate's expiry, build info.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Http, TestServer};
use serde_json::Value;

const REVIEWS: &str = "prom_mtls_webhook_reviews_total";

async fn post(client: &reqwest::Client, server: &TestServer, body: Vec<u8>) -> u16 {
    client
        .post(server.mutate_url())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_are_counted_by_kind_operation_and_outcome() {
    let server = TestServer::start().await;
    let client = server.client(Http::V2);
    let mut posted = 0;
    for (_, review) in common::fixtures() {
        assert_eq!(
            post(&client, &server, serde_json::to_vec(&review).unwrap()).await,
            200
        );
        posted += 1;
    }
    // An object of a kind the webhook leaves alone, and two malformed bodies.
    let mut config_map = common::fixture("pod-create-2");
    config_map["request"]["kind"] =
        serde_json::json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    assert_eq!(
        post(&client, &server, serde_json::to_vec(&config_map).unwrap()).await,
        200
    );
    // A PodMonitor whose scrape class is not a string: left alone, and
    // counted apart from what is out of scope.
    let mut odd = common::fixture("podmonitor-create-1");
    odd["request"]["object"]["spec"]["scrapeClass"] = serde_json::json!(5);
    assert_eq!(
        post(&client, &server, serde_json::to_vec(&odd).unwrap()).await,
        200
    );
    assert_eq!(post(&client, &server, b"{".to_vec()).await, 400);
    assert_eq!(post(&client, &server, b"[]".to_vec()).await, 400);

    let metrics = server.metrics().await;
    let count = |labels: &[(&str, &str)]| metrics.value(REVIEWS, labels);
    assert_eq!(
        count(&[
            ("kind", "Pod"),
            ("operation", "CREATE"),
            ("outcome", "patched")
        ]),
        1.0
    );
    // pod-create-2 and -3 are not Prometheus.
    assert_eq!(
        count(&[
            ("kind", "Pod"),
            ("operation", "CREATE"),
            ("outcome", "skipped")
        ]),
        2.0
    );
    assert_eq!(
        count(&[
            ("kind", "Prometheus"),
            ("operation", "CREATE"),
            ("outcome", "patched")
        ]),
        1.0
    );
    assert_eq!(
        count(&[
            ("kind", "ServiceMonitor"),
            ("operation", "CREATE"),
            ("outcome", "patched")
        ]),
        4.0
    );
    assert_eq!(
        count(&[
            ("kind", "ServiceMonitor"),
            ("operation", "UPDATE"),
            ("outcome", "patched")
        ]),
        3.0
    );
    // It joins the class; its Envoy endpoint stays on http by the class's rules.
    assert_eq!(
        count(&[
            ("kind", "PodMonitor"),
            ("operation", "CREATE"),
            ("outcome", "patched")
        ]),
        1.0
    );
    assert_eq!(
        count(&[
            ("kind", "PodMonitor"),
            ("operation", "CREATE"),
            ("outcome", "refused")
        ]),
        1.0
    );
    assert_eq!(
        count(&[
            ("kind", "other"),
            ("operation", "CREATE"),
            ("outcome", "skipped")
        ]),
        1.0
    );
    assert_eq!(
        count(&[
            ("kind", "other"),
            ("operation", "other"),
            ("outcome", "rejected")
        ]),
        2.0
    );
    let total: f64 = metrics
        .samples
        .iter()
        .filter(|(name, _, _)| name == REVIEWS)
        .map(|(_, _, value)| value)
        .sum();
    assert_eq!(total, f64::from(posted + 4));
    // Never a namespace or an object name in a label.
    for (name, labels, _) in &metrics.samples {
        assert!(
            !labels.contains_key("namespace") && !labels.contains_key("name"),
            "{name} {labels:?}"
        );
    }

    // The histogram: one observation per answered review, cumulative
    // buckets from 25µs up, the +Inf bucket equal to the count.
    let histogram = "prom_mtls_webhook_review_duration_seconds";
    let observed = metrics.value(&format!("{histogram}_count"), &[]);
    assert_eq!(observed, f64::from(posted + 2));
    assert!(metrics.value(&format!("{histogram}_sum"), &[]) > 0.0);
    let buckets: Vec<(f64, f64)> = metrics
        .samples
        .iter()
        .filter(|(name, _, _)| *name == format!("{histogram}_bucket"))
        .map(|(_, labels, value)| {
            let le = match labels["le"].as_str() {
                "+Inf" => f64::INFINITY,
                le => le.parse().unwrap(),
            };
            (le, *value)
        })
        .collect();
    assert_eq!(buckets.first().unwrap().0, 25e-6);
    assert!(buckets.len() >= 12, "fine buckets: {buckets:?}");
    assert!(
        buckets.iter().filter(|(le, _)| *le <= 1e-3).count() >= 6,
        "sub-millisecond buckets"
    );
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
    );
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, observed));

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_are_counted_by_kind() {
    let server = TestServer::start_with(|config| {
        config.mutation.monitors = prom_mtls_webhook::mutation::MonitorMode::Endpoints;
    })
    .await;
    let client = server.client(Http::V1);
    let review = common::fixture("podmonitor-create-1");
    let response: Value = client
        .post(server.mutate_url())
        .json(&review)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let returned = response["response"]["warnings"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(
        returned > 0,
        "PodMonitors left alone with --monitors=endpoints come with a warning: {response}"
    );
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.value(
            "prom_mtls_webhook_warnings_total",
            &[("kind", "PodMonitor")]
        ),
        returned as f64
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_build_info_and_connections_are_exposed() {
    let server = TestServer::start().await;
    let metrics = server.metrics().await;

    let expiry = metrics.value(
        "prom_mtls_webhook_certificate_expiry_timestamp_seconds",
        &[],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The test certificate is valid for one day.
    assert!(
        expiry > now + 86_400.0 - 600.0 && expiry < now + 86_400.0 + 600.0,
        "{expiry}"
    );

    assert_eq!(
        metrics.value(
            "prom_mtls_webhook_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for present in [
        "prom_mtls_webhook_certificate_reloads_total",
        "prom_mtls_webhook_certificate_reload_failures_total",
        "prom_mtls_webhook_connections",
    ] {
        assert!(
            metrics.samples.iter().any(|(name, _, _)| name == present),
            "{present} missing:\n{}",
            metrics.text
        );
    }
    // Off outside a cluster, so not exposed at all.
    assert!(!metrics.text.contains("ordered_before_istio"));

    // A connection held open shows in the gauge.
    let _open = common::raw_tls(server.webhook_addr, &server.certs.ca_pem).await;
    common::eventually(
        std::time::Duration::from_secs(5),
        "the connection is counted",
        || async {
            server
                .metrics()
                .await
                .value("prom_mtls_webhook_connections", &[])
                >= 1.0
        },
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let server = TestServer::start().await;
    let client = common::plain_client();
    let healthz = client
        .get(server.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = client
        .get(server.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    let missing = client.get(server.admin_url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    server.stop().await;
}
