//! Every real AdmissionReview of `tests/fixtures/admission/`, posted over
//! TLS to the real server, over HTTP/1.1 and over HTTP/2: the answer echoes
//! the uid, its patch applies to the object and gives what SPEC.md says, a
//! second pass over the patched object changes nothing, and a dry run gets
//! the same patch as the real thing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use base64::Engine as _;
use common::{Http, TestServer};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

/// What the server answered to one review.
struct Answer {
    response: Value,
    /// The decoded JSON patch; empty when there is none.
    patch: Vec<Value>,
}

async fn post(client: &reqwest::Client, server: &TestServer, review: &Value, http: Http) -> Answer {
    let response = client
        .post(server.mutate_url())
        .header("content-type", "application/json")
        .body(serde_json::to_vec(review).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let expected_version = match http {
        Http::V1 => reqwest::Version::HTTP_11,
        Http::V2 => reqwest::Version::HTTP_2,
    };
    assert_eq!(response.version(), expected_version);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let response = body["response"].clone();
    assert_eq!(response["uid"], review["request"]["uid"], "uid is echoed");
    assert_eq!(response["allowed"], true);
    let patch = match response.get("patch") {
        Some(Value::String(encoded)) => {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("patch is base64");
            serde_json::from_slice(&bytes).expect("patch is a JSON array")
        }
        None => {
            assert!(response.get("patchType").is_none());
            Vec::new()
        }
        Some(other) => panic!("patch is not a string: {other}"),
    };
    Answer { response, patch }
}

fn apply(object: &Value, patch: &[Value]) -> Value {
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(patch.to_vec())).unwrap();
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies to the request's object");
    patched
}

/// The review again, with `object` in place of the request's object.
fn again(review: &Value, object: &Value) -> Value {
    let mut review = review.clone();
    review["request"]["uid"] = json!("second-pass-uid");
    review["request"]["object"] = object.clone();
    review
}

/// SPEC.md's outcome for each fixture, checked on the patched object.
fn check_mutated(name: &str, original: &Value, mutated: &Value) {
    let kind = original["kind"].as_str().unwrap();
    match (kind, name) {
        ("Pod", "pod-create-1") => check_prometheus_pod(mutated),
        ("Pod", _) => assert_eq!(mutated, original, "{name} is not Prometheus: unchanged"),
        ("Prometheus", _) => check_prometheus_resource(mutated),
        // Monitors join the scrape class; their endpoints stay as written
        // (the class's rules choose the scheme per target, and keep Envoy's
        // own metrics on http).
        ("PodMonitor" | "ServiceMonitor", _) => {
            assert_eq!(mutated["spec"]["scrapeClass"], "istio-mtls", "{name}");
            let list = if kind == "PodMonitor" {
                "podMetricsEndpoints"
            } else {
                "endpoints"
            };
            assert!(!mutated["spec"][list].as_array().unwrap().is_empty());
            assert_eq!(
                mutated["spec"][list], original["spec"][list],
                "{name}: endpoints as written"
            );
            let mut rest = mutated.clone();
            rest["spec"].as_object_mut().unwrap().remove("scrapeClass");
            assert_eq!(&rest, original, "{name}: nothing else changes");
        }
        _ => panic!("no expectation for {name} ({kind})"),
    }
}

fn tls_config() -> Value {
    json!({
        "caFile": "/etc/prom-certs/root-cert.pem",
        "certFile": "/etc/prom-certs/cert-chain.pem",
        "keyFile": "/etc/prom-certs/key.pem",
        "insecureSkipVerify": true,
    })
}

fn check_annotations(annotations: &Value) {
    let proxy_config = annotations["proxy.istio.io/config"].as_str().unwrap();
    assert!(
        proxy_config.contains("OUTPUT_CERTS") && proxy_config.contains("/etc/istio-output-certs"),
        "proxy config: {proxy_config}"
    );
    let mounts: Value = serde_json::from_str(
        annotations["sidecar.istio.io/userVolumeMount"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(
        mounts
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "istio-certs" && m["mountPath"] == "/etc/istio-output-certs"),
        "userVolumeMount: {mounts}"
    );
    assert_eq!(
        annotations["traffic.sidecar.istio.io/includeInboundPorts"],
        ""
    );
    assert_eq!(
        annotations["traffic.sidecar.istio.io/includeOutboundIPRanges"],
        ""
    );
    assert_eq!(annotations["prom-mtls-webhook.io/status"], "injected");
}

fn check_volume(volumes: &Value) {
    let volume = volumes
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "istio-certs")
        .expect("volume istio-certs");
    assert_eq!(volume["emptyDir"]["medium"], "Memory");
}

fn check_mount(mounts: &Value) {
    let mount = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "istio-certs")
        .expect("mount of istio-certs");
    assert_eq!(mount["mountPath"], "/etc/prom-certs/");
    assert_eq!(mount["readOnly"], true);
}

fn check_prometheus_pod(pod: &Value) {
    check_annotations(&pod["metadata"]["annotations"]);
    // The existing annotation is kept.
    assert!(
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    check_volume(&pod["spec"]["volumes"]);
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes.first().unwrap()["name"]
            .as_str()
            .unwrap()
            .starts_with("kube-api-access-"),
        "new volumes are appended after the existing ones"
    );
    let prometheus = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "prometheus")
        .unwrap();
    check_mount(&prometheus["volumeMounts"]);
}

fn check_prometheus_resource(prometheus: &Value) {
    let spec = &prometheus["spec"];
    check_annotations(&spec["podMetadata"]["annotations"]);
    check_volume(&spec["volumes"]);
    check_mount(&spec["volumeMounts"]);
    let class = spec["scrapeClasses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "istio-mtls")
        .expect("scrape class istio-mtls");
    assert_eq!(class["tlsConfig"], tls_config());
    assert!(class.get("default").is_none(), "never a default class");
    let rules = class["relabelings"]
        .as_array()
        .expect("the class's relabelings");
    assert_eq!(rules.last().unwrap()["targetLabel"], "__scheme__");
    // The user's spec is kept.
    assert_eq!(
        spec["serviceMonitorSelector"]["matchLabels"]["team"],
        "bookinfo"
    );
}

async fn every_fixture_over(http: Http) {
    let server = TestServer::start().await;
    let client = server.client(http);
    for (name, review) in common::fixtures() {
        let object = &review["request"]["object"];
        let first = post(&client, &server, &review, http).await;
        let mutated = apply(object, &first.patch);
        check_mutated(&name, object, &mutated);

        let second = post(&client, &server, &again(&review, &mutated), http).await;
        assert_eq!(
            second.patch,
            Vec::<Value>::new(),
            "{name}: the second pass is empty"
        );
        assert!(
            second.response.get("patch").is_none(),
            "{name}: no patch field on the second pass"
        );

        // The same review, dry run flipped: the webhook has no side effects,
        // so the answer is the same either way.
        let mut flipped = review.clone();
        let dry_run = review["request"]["dryRun"].as_bool().unwrap_or(false);
        flipped["request"]["dryRun"] = json!(!dry_run);
        let twin = post(&client, &server, &flipped, http).await;
        assert_eq!(
            twin.patch, first.patch,
            "{name}: dryRun={} gets the same patch",
            !dry_run
        );
        assert_eq!(twin.response["warnings"], first.response["warnings"]);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_is_answered_over_http1() {
    every_fixture_over(Http::V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_is_answered_over_http2() {
    every_fixture_over(Http::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_pod_fixture_gets_a_patch() {
    // Guards the loop above against passing vacuously on empty patches.
    let server = TestServer::start().await;
    let answer = post(
        &server.client(Http::V1),
        &server,
        &common::fixture("pod-create-1"),
        Http::V1,
    )
    .await;
    assert!(!answer.patch.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_reviews_share_one_http2_connection_concurrently() {
    let server = TestServer::start().await;
    let client = server.client(Http::V2);
    let review = common::fixture("servicemonitor-create-1");
    let requests = (0..64).map(|i| {
        let mut review = review.clone();
        review["request"]["uid"] = json!(format!("uid-{i}"));
        let (client, server) = (&client, &server);
        async move {
            let answer = post(client, server, &review, Http::V2).await;
            assert_eq!(answer.response["uid"], format!("uid-{i}"));
        }
    });
    futures_join_all(requests).await;
    server.stop().await;
}

/// `join_all` without the futures crate: spawn nothing, poll all together.
async fn futures_join_all<F: Future<Output = ()>>(futures: impl IntoIterator<Item = F>) {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    std::future::poll_fn(|cx| {
        set.retain_mut(|future| future.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
