//! Graceful shutdown of the real binary, with real signals: on SIGTERM
//! readiness turns false at once, the listener closes, a review in flight
//! finishes, an idle keep-alive connection is closed by the server, and the
//! process exits 0 within the drain timeout; a second signal exits at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::ServeProcess;
use tokio::io::AsyncReadExt as _;

fn spawn(dir: &tempfile::TempDir, drain: &str) -> (ServeProcess, String) {
    let ca = dir.path().join("ca.crt");
    let process = ServeProcess::spawn_dev(&ca, &["--drain-timeout", drain], &[]);
    (process, std::fs::read_to_string(ca).unwrap())
}

fn request_head(body_len: usize) -> String {
    format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n\r\n"
    )
}

async fn readyz(process: &ServeProcess) -> Option<u16> {
    let response = common::plain_client()
        .get(process.admin_url("/readyz"))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_reviews_closes_idle_connections_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (mut process, ca) = spawn(&dir, "10s");
    assert_eq!(readyz(&process).await, Some(200));
    let review = serde_json::to_vec(&common::fixture("pod-create-1")).unwrap();

    // An idle keep-alive connection: one review answered, then left open.
    let mut idle = common::raw_tls(process.webhook_addr, &ca).await;
    common::send(&mut idle, request_head(review.len()).as_bytes()).await;
    common::send(&mut idle, &review).await;
    let (status, head, _) = common::read_response(&mut idle).await;
    assert_eq!(status, 200);
    assert!(!head.to_ascii_lowercase().contains("connection: close"));

    // A review in flight: head and half of the body sent.
    let mut in_flight = common::raw_tls(process.webhook_addr, &ca).await;
    let (first_half, second_half) = review.split_at(review.len() / 2);
    common::send(&mut in_flight, request_head(review.len()).as_bytes()).await;
    common::send(&mut in_flight, first_half).await;
    // Give the server the time to start reading this request.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    process.signal("TERM");

    // Not ready, while the admin port still answers.
    common::eventually(Duration::from_secs(5), "/readyz turns 503", || async {
        readyz(&process).await == Some(503)
    })
    .await;
    // The listener is closed: new connections are refused.
    process.wait_until_refused(Duration::from_secs(5)).await;

    // The idle keep-alive connection is closed by the server.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut byte))
        .await
        .expect("the idle connection is closed, not left hanging");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected EOF, read {read:?}"
    );

    // The review in flight completes, and then its connection closes too.
    common::send(&mut in_flight, second_half).await;
    let (status, head, body) = common::read_response(&mut in_flight).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["response"]["uid"],
        common::fixture("pod-create-1")["request"]["uid"]
    );
    let read = tokio::time::timeout(Duration::from_secs(5), in_flight.read(&mut byte))
        .await
        .unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected EOF, read {read:?}"
    );

    let status = process.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "within the drain timeout"
    );
    process.wait_for_log("drained", Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_with_nothing_in_flight_exits_0_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut process, _) = spawn(&dir, "30s");
    process.signal("INT");
    let status = process.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_without_waiting_for_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let (mut process, ca) = spawn(&dir, "60s");

    // A review that never completes keeps the drain waiting.
    let mut in_flight = common::raw_tls(process.webhook_addr, &ca).await;
    common::send(&mut in_flight, request_head(1000).as_bytes()).await;
    common::send(&mut in_flight, b"{").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    process.signal("TERM");
    process.wait_for_log("shutdown requested", Duration::from_secs(5));
    process.wait_for_log("shutting down", Duration::from_secs(5));
    assert!(
        process.child.try_wait().unwrap().is_none(),
        "still draining"
    );

    process.signal("TERM");
    let status = process.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(128 + 15), "exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_gets_goaway_and_the_drain_completes() {
    let server = common::TestServer::start_with(|config| {
        config.timeouts.drain = Duration::from_secs(30);
    })
    .await;
    let client = server.client(common::Http::V2);
    let response = client
        .post(server.mutate_url())
        .json(&common::fixture("servicemonitor-create-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);

    // The client keeps its connection pooled; only the server's GOAWAY ends
    // it, and the drain waits for that (else it would take the full 30s).
    let connections = server
        .metrics()
        .await
        .value("prom_mtls_webhook_connections", &[]);
    assert_eq!(connections, 1.0);
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the drain completes once the HTTP/2 connection is closed");
    drop(client);
}

/// What one load client saw.
#[derive(Debug, Default)]
struct LoadOutcome {
    answered_before_signal: usize,
    answered_after_signal: usize,
    /// Requests that failed before the signal: must be none.
    errors_before_signal: Vec<String>,
    /// Failures after it: refused connections, and requests caught as their
    /// connection closed. Never an HTTP answer other than 200.
    errors_after_signal: Vec<String>,
}

/// Posts `review` back to back until a request fails after `signalled`
/// is set, at most `limit` requests. Every answer must be a 200 carrying the
/// review's uid.
async fn load_client(
    client: reqwest::Client,
    url: String,
    review: Vec<u8>,
    uid: String,
    signalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    limit: usize,
) -> LoadOutcome {
    use std::sync::atomic::Ordering;
    let mut outcome = LoadOutcome::default();
    for _ in 0..limit {
        let after = signalled.load(Ordering::SeqCst);
        let sent = client
            .post(&url)
            .header("content-type", "application/json")
            .body(review.clone())
            .send()
            .await;
        let answer = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                response.bytes().await.map(|body| (status, body))
            }
            Err(error) => Err(error),
        };
        match answer {
            Ok((status, body)) => {
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(answer["response"]["uid"], uid.as_str());
                if after {
                    outcome.answered_after_signal += 1;
                } else {
                    outcome.answered_before_signal += 1;
                }
            }
            Err(error) if signalled.load(Ordering::SeqCst) => {
                outcome.errors_after_signal.push(format!("{error:?}"));
                return outcome;
            }
            Err(error) => outcome.errors_before_signal.push(format!("{error:?}")),
        }
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_review_it_took_and_exits_0() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    // Connections that end in an error are logged at debug: what the
    // accounting below prints if it ever fails.
    let ca_file = dir.path().join("ca.crt");
    let mut process = ServeProcess::spawn_dev(
        &ca_file,
        &[
            "--drain-timeout",
            "10s",
            "--log-level",
            "info,prom_mtls_webhook::server::connection=debug",
        ],
        &[],
    );
    let ca = std::fs::read_to_string(&ca_file).unwrap();
    let fixture = common::fixture("pod-create-1");
    let review = serde_json::to_vec(&fixture).unwrap();
    let uid = fixture["request"]["uid"].as_str().unwrap().to_owned();
    let url = process.mutate_url();
    let signalled = Arc::new(AtomicBool::new(false));

    // 16 clients with a connection each, as in the load benchmark; half of
    // them HTTP/1.1, half HTTP/2. Bounded: 5,000 requests per client.
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let http = if i % 2 == 0 {
                common::Http::V1
            } else {
                common::Http::V2
            };
            tokio::spawn(load_client(
                common::https_client(&ca, http),
                url.clone(),
                review.clone(),
                uid.clone(),
                signalled.clone(),
                5_000,
            ))
        })
        .collect();

    // Under load: reviews are being answered.
    common::eventually(Duration::from_secs(20), "200 reviews answered", || async {
        process.metrics().await.value(
            "prom_mtls_webhook_reviews_total",
            &[
                ("kind", "Pod"),
                ("operation", "CREATE"),
                ("outcome", "patched"),
            ],
        ) >= 200.0
    })
    .await;

    let started = Instant::now();
    signalled.store(true, Ordering::SeqCst);
    process.signal("TERM");
    let status = process.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "within the drain timeout"
    );
    let drained = process.wait_for_log("drained", Duration::from_secs(1));
    let received = drained["received"].as_u64().unwrap();
    let server_answered = drained["answered"].as_u64().unwrap();

    // Every client stops soon after: its connection was closed, not left hanging.
    let mut answered = 0;
    let mut stopped_by_an_error = 0;
    let mut client_errors = Vec::new();
    for client in clients {
        let outcome = tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .expect("a client was left hanging after the server exited")
            .unwrap();
        assert!(
            outcome.errors_before_signal.is_empty(),
            "failures under load before the signal: {:?}",
            outcome.errors_before_signal
        );
        stopped_by_an_error += outcome.errors_after_signal.len();
        client_errors.extend(outcome.errors_after_signal);
        answered += outcome.answered_before_signal + outcome.answered_after_signal;
    }
    // The server's own accounting: every request it took, it answered.
    // (Seen to fail once in about 800 runs, cause not yet known: the
    // message carries what would tell.)
    assert_eq!(
        received,
        server_answered,
        "requests taken but not answered: {drained}\nclients' errors after the signal: {client_errors:#?}\nthe server's other lines: {:#?}",
        process.lines_other_than("review")
    );
    assert!(answered >= 200, "{answered} reviews answered");
    // What the clients read is what the server wrote, but for at most the
    // one answer in flight on each connection as it closed.
    let answered = answered as u64;
    assert!(
        answered <= server_answered,
        "{answered} read, {server_answered} written"
    );
    assert!(
        server_answered - answered <= stopped_by_an_error as u64,
        "{server_answered} written, {answered} read by clients, {stopped_by_an_error} of which stopped on an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_shutdown_delay_new_connections_get_one_review_each_then_the_listener_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = ServeProcess::spawn_dev(
        &dir.path().join("ca.crt"),
        &["--drain-timeout", "10s", "--shutdown-delay", "3s"],
        &[],
    );
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let fixture = common::fixture("pod-create-1");
    let review = serde_json::to_vec(&fixture).unwrap();
    let uid = &fixture["request"]["uid"];

    // A keep-alive connection from before the signal.
    let mut idle = common::raw_tls(process.webhook_addr, &ca).await;
    common::send(&mut idle, request_head(review.len()).as_bytes()).await;
    common::send(&mut idle, &review).await;
    assert_eq!(common::read_response(&mut idle).await.0, 200);

    let signalled = Instant::now();
    process.signal("TERM");
    common::eventually(Duration::from_secs(2), "/readyz turns 503", || async {
        readyz(&process).await == Some(503)
    })
    .await;
    process.wait_for_log("shutting down: not ready", Duration::from_secs(2));

    // The old connection is closed at once, not at the end of the delay.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut byte))
        .await
        .expect("the keep-alive connection is closed during the delay");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected EOF, read {read:?}"
    );

    // A new HTTP/1.1 connection is still accepted and answered, once.
    let mut late = common::raw_tls(process.webhook_addr, &ca).await;
    common::send(&mut late, request_head(review.len()).as_bytes()).await;
    common::send(&mut late, &review).await;
    let (status, head, body) = common::read_response(&mut late).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(&answer["response"]["uid"], uid);
    let read = tokio::time::timeout(Duration::from_secs(2), late.read(&mut byte))
        .await
        .unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected EOF, read {read:?}"
    );

    // So is a new HTTP/2 connection, which then gets a GOAWAY: the server
    // holds no connection open any more while the delay still runs.
    let h2 = common::https_client(&ca, common::Http::V2);
    let url = process.mutate_url();
    let response = h2
        .post(&url)
        .header("content-type", "application/json")
        .body(review.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(&answer["response"]["uid"], uid);
    common::eventually(
        Duration::from_secs(2),
        "every connection closed",
        || async {
            process
                .metrics()
                .await
                .value("prom_mtls_webhook_connections", &[])
                == 0.0
        },
    )
    .await;
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "all of the above happened within the delay; make the delay longer if this machine is slow"
    );

    // After the delay the listener closes and the process exits.
    process.wait_until_refused(Duration::from_secs(5)).await;
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "refused before the delay ended"
    );
    let status = process.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    process.wait_for_log("drained", Duration::from_secs(1));
    drop(h2);
}
