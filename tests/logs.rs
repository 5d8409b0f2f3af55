//! The log sink, seen from outside the real binary: a stderr nobody reads
//! (a container log pipe under pressure) stalls neither `/healthz` nor the
//! reviews, and the dropped lines are counted; a newline in a name cannot
//! forge a line of the text format.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use common::Http;

/// The process, killed when dropped.
struct Webhook(Child);

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `serve --dev` on kernel-picked ports, its stderr piped; returns once it
/// says where it listens, with the pipe's reader (left unread from then on)
/// and the ports.
fn spawn(
    dir: &tempfile::TempDir,
    format: &str,
) -> (Webhook, BufReader<ChildStderr>, u16, u16, Vec<String>) {
    let ca = dir.path().join("ca.crt");
    let mut child = Webhook(
        Command::new(env!("CARGO_BIN_EXE_prom-mtls-webhook"))
            .args([
                "serve",
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--log-format", format, "--dev-ca-out"])
            .arg(&ca)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut seen = Vec::new();
    // `webhook=127.0.0.1:1234` (text) or `"webhook":"127.0.0.1:1234"` (JSON).
    let port_after = |line: &str, key: &str| -> Option<u16> {
        let pattern = regex::Regex::new(&format!(r#"{key}"?[=:]"?127\.0\.0\.1:(\d+)"#)).unwrap();
        pattern.captures(line)?.get(1)?.as_str().parse().ok()
    };
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "exited early: {seen:?}"
        );
        seen.push(line.clone());
        if line.contains("listening") {
            let webhook = port_after(&line, "webhook").unwrap();
            let admin = port_after(&line, "admin").unwrap();
            return (child, stderr, webhook, admin, seen);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_log_sink_stalls_neither_healthz_nor_reviews_and_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (child, stderr, webhook, admin, _) = spawn(&dir, "json");
    // From here on nobody reads stderr: the pipe fills, then the log queue.
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let url = format!("https://localhost:{webhook}/mutate?timeout=10s");
    let review = serde_json::to_vec(&common::fixture("pod-create-1")).unwrap();

    let load: Vec<_> = (0..16)
        .map(|_| {
            let client = common::https_client(&ca, Http::V2);
            let (url, review) = (url.clone(), review.clone());
            tokio::spawn(async move {
                for _ in 0..1500 {
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(review.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                }
            })
        })
        .collect();
    // Probes all along: each answered within the kubelet's 2 s timeout.
    let probe = common::plain_client();
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while !load.iter().all(|l| l.is_finished()) {
        let started = Instant::now();
        let response = tokio::time::timeout(
            Duration::from_secs(2),
            probe
                .get(format!("http://127.0.0.1:{admin}/healthz"))
                .send(),
        )
        .await
        .expect("/healthz stalled behind the log sink")
        .unwrap();
        assert_eq!(response.status(), 200);
        slowest = slowest.max(started.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for l in load {
        tokio::time::timeout(Duration::from_secs(60), l)
            .await
            .expect("reviews stalled")
            .unwrap();
    }
    let metrics = common::Metrics::parse(
        &probe
            .get(format!("http://127.0.0.1:{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let dropped = metrics.value("prom_mtls_webhook_log_lines_dropped_total", &[]);
    println!(
        "24,000 reviews with stderr unread: {dropped} log lines dropped; slowest of {probes} /healthz probes {slowest:?}"
    );
    assert!(
        dropped > 0.0,
        "the sink was blocked, so lines were dropped and counted"
    );
    drop(stderr);
    drop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_a_name_cannot_forge_a_text_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let (child, mut stderr, webhook, _, _) = spawn(&dir, "text");
    let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
    let mut review = common::fixture("pod-create-1");
    review["request"]["name"] = serde_json::json!(
        "prometheus-0\n2026-12-04T00:00:00Z ERROR forged: the webhook was compromised"
    );
    let response = common::https_client(&ca, Http::V1)
        .post(format!("https://localhost:{webhook}/mutate?timeout=10s"))
        .json(&review)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut review_line = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while review_line.is_none() {
        assert!(Instant::now() < deadline, "no review line");
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0);
        assert!(
            !line.contains("ERROR forged") || line.contains("review"),
            "a forged line: {line:?}"
        );
        if line.contains("uid=") && line.contains("name=") {
            review_line = Some(line);
        }
    }
    let line = review_line.unwrap();
    assert!(
        line.contains(r"prometheus-0\n2026-12-04T00:00:00Z ERROR forged"),
        "{line}"
    );
    drop(child);
}
