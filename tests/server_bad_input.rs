//! What the API server should never send, and an attacker might: each gets
//! its status code and a one-line reason, and the server keeps serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Http, TestServer};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Small enough that the oversized bodies are quick to send.
const LIMIT: usize = 64 * 1024;

async fn server() -> TestServer {
    TestServer::start_with(|config| config.limits.max_body_bytes = LIMIT).await
}

async fn post_raw(client: &reqwest::Client, server: &TestServer, body: Vec<u8>) -> (u16, String) {
    let response = client
        .post(server.mutate_url())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn assert_one_line_reason(body: &str, contains: &str) {
    let line = body.strip_suffix('\n').unwrap_or(body);
    assert!(
        !line.is_empty() && !line.contains('\n'),
        "one line: {body:?}"
    );
    assert!(
        line.contains(contains),
        "{body:?} should mention {contains:?}"
    );
}

async fn assert_still_serving(client: &reqwest::Client, server: &TestServer) {
    let review = common::fixture("servicemonitor-create-1");
    let (status, body) = post_raw(client, server, serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
}

fn malformed() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let review = common::fixture("pod-create-1");
    let mut without_request = review.clone();
    without_request.as_object_mut().unwrap().remove("request");
    let mut v1beta1 = review.clone();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    vec![
        ("malformed JSON", b"{\"apiVersion\": ".to_vec(), "JSON"),
        ("not JSON at all", b"\x00\xff\xfe garbage".to_vec(), "JSON"),
        ("empty body", Vec::new(), "JSON"),
        (
            "JSON that is not a review",
            br#"{"hello": ["world"]}"#.to_vec(),
            "apiVersion",
        ),
        ("a JSON array", b"[1, 2, 3]".to_vec(), "AdmissionReview"),
        (
            "a review without request",
            serde_json::to_vec(&without_request).unwrap(),
            "request",
        ),
        (
            "admission.k8s.io/v1beta1",
            serde_json::to_vec(&v1beta1).unwrap(),
            "v1beta1",
        ),
    ]
}

async fn malformed_reviews_get_400_over(http: Http) {
    let server = server().await;
    let client = server.client(http);
    for (what, body, mention) in malformed() {
        let (status, reason) = post_raw(&client, &server, body).await;
        assert_eq!(status, 400, "{what}: {reason}");
        assert_one_line_reason(&reason, mention);
    }
    assert_still_serving(&client, &server).await;
    let metrics = server.metrics().await;
    let rejected = metrics.value(
        "prom_mtls_webhook_reviews_total",
        &[("outcome", "rejected")],
    );
    assert_eq!(rejected, malformed().len() as f64);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reviews_get_400_with_a_one_line_reason_over_http1() {
    malformed_reviews_get_400_over(Http::V1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reviews_get_400_with_a_one_line_reason_over_http2() {
    malformed_reviews_get_400_over(Http::V2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_gets_413() {
    let server = server().await;
    for http in [Http::V1, Http::V2] {
        let client = server.client(http);
        // reqwest sends a Content-Length for a byte body.
        let (status, reason) = post_raw(&client, &server, vec![b' '; LIMIT + 1]).await;
        assert_eq!(status, 413, "{http:?}");
        assert_one_line_reason(&reason, "larger than");
        // Exactly at the limit is read (and then found not to be a review).
        let (status, _) = post_raw(&client, &server, vec![b' '; LIMIT]).await;
        assert_eq!(status, 400, "{http:?}");
        assert_still_serving(&client, &server).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_content_length_over_the_limit_is_refused_before_the_body() {
    let server = server().await;
    let mut stream = common::raw_tls(server.webhook_addr, &server.certs.ca_pem).await;
    // Only the head: the answer must come without the server waiting for a body.
    let head = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        100 * 1024 * 1024
    );
    common::send(&mut stream, head.as_bytes()).await;
    let (status, _, body) = common::read_response(&mut stream).await;
    assert_eq!(status, 413);
    assert_one_line_reason(&body, "larger than");
    assert_still_serving(&server.client(Http::V1), &server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_growing_over_the_limit_gets_413() {
    let server = server().await;
    let mut stream = common::raw_tls(server.webhook_addr, &server.certs.ca_pem).await;
    common::send(
        &mut stream,
        b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await;
    // One byte past the limit, in 1 KiB chunks, and no terminating chunk:
    // the server must stop reading and answer on its own.
    let chunk = vec![b' '; 1024];
    let mut sent = 0;
    while sent <= LIMIT {
        let size = chunk.len().min(LIMIT + 1 - sent);
        let mut frame = format!("{size:x}\r\n").into_bytes();
        frame.extend_from_slice(&chunk[..size]);
        frame.extend_from_slice(b"\r\n");
        common::send(&mut stream, &frame).await;
        sent += size;
    }
    let (status, _, body) = common::read_response(&mut stream).await;
    assert_eq!(status, 413);
    assert_one_line_reason(&body, "larger than");
    // The server would read on (up to another limit's worth, within the
    // request timeout) for a client that is still writing; this one hangs up.
    drop(stream);
    assert_still_serving(&server.client(Http::V1), &server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_writing_its_oversized_body_reads_the_413() {
    let server = server().await;
    let mut stream = common::raw_tls(server.webhook_addr, &server.certs.ca_pem).await;
    // Declared over the limit, and all of it written before reading: the
    // server answers at once but keeps reading, so the writes do not fail.
    let body = vec![b' '; LIMIT + LIMIT / 2];
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    common::send(&mut stream, head.as_bytes()).await;
    common::send(&mut stream, &body).await;
    let (status, _, reason) = common::read_response(&mut stream).await;
    assert_eq!(status, 413);
    assert_one_line_reason(&reason, "larger than");
    drop(stream);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_get_405_and_other_paths_404() {
    let server = server().await;
    for http in [Http::V1, Http::V2] {
        let client = server.client(http);
        let get = client.get(server.mutate_url()).send().await.unwrap();
        assert_eq!(get.status(), 405, "{http:?}");
        let put = client
            .put(server.url("/mutate"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 405, "{http:?}");
        let elsewhere = client
            .post(server.url("/validate"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(elsewhere.status(), 404, "{http:?}");
        assert_still_serving(&client, &server).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_after_the_request_timeout() {
    let server = TestServer::start_with(|config| {
        config.timeouts.request = std::time::Duration::from_millis(300);
    })
    .await;
    let mut stream = common::raw_tls(server.webhook_addr, &server.certs.ca_pem).await;
    common::send(
        &mut stream,
        b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\n{\"apiVersion\"",
    )
    .await;
    let (status, _, body) = common::read_response(&mut stream).await;
    assert_eq!(status, 408);
    assert_one_line_reason(&body, "timed out");
    server.stop().await;
}

/// A JSON value of any shape, with a bias towards AdmissionReview-like keys.
fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        Just(json!("admission.k8s.io/v1")),
        Just(json!("AdmissionReview")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            Just("apiVersion".to_owned()),
            Just("kind".to_owned()),
            Just("request".to_owned()),
            Just("uid".to_owned()),
            Just("object".to_owned()),
            Just("operation".to_owned()),
            Just("metadata".to_owned()),
            Just("spec".to_owned()),
            "[a-z]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

#[test]
fn random_bodies_never_get_a_5xx_or_a_dropped_connection() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(server());
    let clients = [server.client(Http::V1), server.client(Http::V2)];

    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        arbitrary_json().prop_map(|value| serde_json::to_vec(&value).unwrap()),
        // A real review with one field replaced by something arbitrary.
        (arbitrary_json(), 0usize..6).prop_map(|(value, field)| {
            let mut review = common::fixture("pod-create-1");
            let request = &mut review["request"];
            match field {
                0 => request["object"] = value,
                1 => request["uid"] = value,
                2 => request["kind"] = value,
                3 => request["operation"] = value,
                4 => request["object"]["metadata"] = value,
                _ => request["object"]["spec"] = value,
            }
            serde_json::to_vec(&review).unwrap()
        }),
    ];
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(body in bodies, h2 in any::<bool>())| {
        let client = &clients[usize::from(h2)];
        let (status, reason) = runtime.block_on(post_raw(client, &server, body));
        prop_assert!(status == 200 || status == 400, "status {} ({})", status, reason);
        if status == 400 {
            prop_assert!(!reason.trim_end().contains('\n'), "one line: {:?}", reason);
        }
    });

    runtime.block_on(async {
        assert_still_serving(&clients[0], &server).await;
        server.stop().await;
    });
}
