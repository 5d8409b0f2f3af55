//! What any pod that reaches the webhook's Service could do to it, with real
//! connections on 127.0.0.1: hold every connection slot with idle HTTP/2
//! connections (which answer PINGs forever), or send many bodies at the
//! size limit at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{Http, ServeProcess, TestServer};

const CONNECTIONS: &str = "prom_mtls_webhook_connections";

async fn post_review(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> Result<reqwest::Response, reqwest::Error> {
    client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
}

/// Fills every connection slot with idle connections (half HTTP/2, half
/// HTTP/1.1), then asks for one more; `true` if it was served within `wait`.
async fn another_client_is_served(idle_timeout: Duration, wait: Duration) -> bool {
    const SLOTS: usize = 6;
    let server = TestServer::start_with(|config| {
        config.limits.max_connections = SLOTS;
        config.timeouts.idle = idle_timeout;
        // HTTP/1's own idle limit (the header read timeout) out of the way.
        config.timeouts.header_read = Duration::from_secs(3600);
    })
    .await;
    let review = serde_json::to_vec(&common::fixture("pod-create-2")).unwrap();
    let mut idle = Vec::new();
    for i in 0..SLOTS {
        let client = server.client(if i % 2 == 0 { Http::V2 } else { Http::V1 });
        let response = post_review(&client, &server.mutate_url(), review.clone())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        // Kept: its pooled connection stays open, idle.
        idle.push(client);
    }
    assert_eq!(server.metrics().await.value(CONNECTIONS, &[]), SLOTS as f64);
    let newcomer = server.client(Http::V2);
    let served = tokio::time::timeout(wait, post_review(&newcomer, &server.mutate_url(), review))
        .await
        .is_ok_and(|r| r.is_ok_and(|r| r.status() == 200));
    drop(idle);
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_so_a_new_client_is_served() {
    let started = Instant::now();
    assert!(another_client_is_served(Duration::from_secs(1), Duration::from_secs(20)).await);
    println!(
        "served {:.1} s after every slot was held idle",
        started.elapsed().as_secs_f64()
    );
    // The control: were idle connections kept, every slot would stay taken.
    assert!(
        !another_client_is_served(Duration::from_secs(3600), Duration::from_secs(3)).await,
        "a client was served although every connection slot was held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_with_a_goaway_after_the_idle_timeout() {
    let server =
        TestServer::start_with(|config| config.timeouts.idle = Duration::from_millis(500)).await;
    let client = server.client(Http::V2);
    let review = serde_json::to_vec(&common::fixture("pod-create-2")).unwrap();
    post_review(&client, &server.mutate_url(), review.clone())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(server.metrics().await.value(CONNECTIONS, &[]), 1.0);
    common::eventually(
        Duration::from_secs(10),
        "the idle connection closed",
        || async { server.metrics().await.value(CONNECTIONS, &[]) == 0.0 },
    )
    .await;
    // The client notices and connects anew.
    let response = post_review(&client, &server.mutate_url(), review)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

/// A real review of `size` bytes: the Prometheus pod, its object carrying a
/// large annotation (annotations are what the webhook must read whole).
fn review_of_size(size: usize, uid: &str) -> Vec<u8> {
    let mut review = common::fixture("pod-create-1");
    review["request"]["uid"] = serde_json::json!(uid);
    let base = serde_json::to_vec(&review).unwrap().len();
    review["request"]["object"]["metadata"]["annotations"]["example.com/padding"] =
        serde_json::json!("x".repeat(size.saturating_sub(base + 64)));
    let body = serde_json::to_vec(&review).unwrap();
    assert!(
        body.len() <= size && body.len() > size - 1024,
        "{}",
        body.len()
    );
    body
}

/// VmHWM (peak resident set) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

const MIB: u64 = 1024 * 1024;
const BODY: usize = 7 * 1024 * 1024;
const BUDGET: u64 = 32 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_bodies_at_the_size_limit_stay_within_the_memory_the_budget_allows() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    // Long enough a wait that every review is answered, one budget's worth at a time.
    let process = ServeProcess::spawn_dev(
        &ca,
        &[
            "--log-level",
            "warn,prom_mtls_webhook::commands=info",
            "--body-budget-wait",
            "60s",
        ],
        &[],
    );
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    let url = process.mutate_url();
    let before = peak_rss(process.child.id());

    // 16 at once: 112 MiB of bodies, over HTTP/2 and HTTP/1.1.
    let sends: Vec<_> = (0..16)
        .map(|i| {
            let client =
                common::https_client(&ca_pem, if i % 2 == 0 { Http::V2 } else { Http::V1 });
            let url = url.clone();
            let uid = format!("big-{i}");
            tokio::spawn(async move {
                let response = post_review(&client, &url, review_of_size(BODY, &uid))
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap();
                (
                    status,
                    body["response"]["uid"].as_str().unwrap_or_default() == uid,
                )
            })
        })
        .collect();
    for send in sends {
        let (status, echoed) = send.await.unwrap();
        assert_eq!(status, 200);
        assert!(echoed, "every well-formed review gets its own answer");
    }
    let peak = peak_rss(process.child.id());
    // The bound the chart's memory limit is computed from (values.yaml,
    // maxBodyBytesInFlight): 32 MiB besides three times the budget.
    let bound = 32 * MIB + 3 * BUDGET;
    println!(
        "peak RSS {:.1} MiB (at start {:.1} MiB) for 16 x 7 MiB bodies; bound {} MiB",
        peak as f64 / MIB as f64,
        before as f64 / MIB as f64,
        bound / MIB
    );
    assert!(peak < bound, "peak RSS {peak} bytes passes {bound}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_the_budget_a_review_waits_then_gets_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let process = ServeProcess::spawn_dev(
        &ca,
        &[
            "--log-level",
            "warn,prom_mtls_webhook::commands=info",
            "--max-body-bytes-in-flight",
            &BODY.to_string(),
            "--body-budget-wait",
            "10ms",
        ],
        &[],
    );
    let ca_pem = std::fs::read_to_string(&ca).unwrap();
    let url = process.mutate_url();
    let sends: Vec<_> = (0..8)
        .map(|i| {
            let client = common::https_client(&ca_pem, Http::V2);
            let url = url.clone();
            tokio::spawn(async move {
                let response = post_review(
                    &client,
                    &url,
                    review_of_size(BODY - 4096, &format!("b-{i}")),
                )
                .await
                .unwrap();
                (
                    response.status().as_u16(),
                    response.headers().get("retry-after").cloned(),
                )
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for send in sends {
        let (status, retry_after) = send.await.unwrap();
        if status == 503 {
            assert_eq!(retry_after.unwrap(), "1");
        }
        statuses.push(status);
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.contains(&503),
        "one body's budget cannot take 8 at once: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    let metrics = process.metrics().await;
    assert_eq!(
        metrics.value("prom_mtls_webhook_request_body_in_flight_bytes", &[]),
        0.0
    );
}
