//! Certificate rotation without a restart, with real files rotated the two
//! ways they are in practice: files replaced in place, and the kubelet's
//! Secret-volume layout (`tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>`,
//! `..data` swapped by renaming a new symlink over it). What a fresh TLS
//! handshake is served is read off a raw rustls client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{CertFiles, TestServer};
use prom_mtls_webhook::certs::ServingPair;
use prom_mtls_webhook::config::TlsSource;

/// The server reloads every 100ms; a few intervals plus scheduling slack.
const WITHIN: Duration = Duration::from_secs(10);

const RELOADS: &str = "prom_mtls_webhook_certificate_reloads_total";
const FAILURES: &str = "prom_mtls_webhook_certificate_reload_failures_total";

/// Replaces `path` atomically (write a temp file, rename it over), as any
/// careful writer does; a reader sees the old or the new file, never half.
fn replace(path: &Path, contents: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, contents).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// A Secret volume as the kubelet lays it out and updates it.
struct SecretVolume {
    dir: PathBuf,
    generation: u32,
}

impl SecretVolume {
    fn new(dir: PathBuf, pair: &ServingPair) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let mut volume = Self { dir, generation: 0 };
        volume.publish(&pair.cert_pem, &pair.key_pem);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(Path::new("..data").join(file), volume.dir.join(file))
                .unwrap();
        }
        volume
    }

    /// Writes a new timestamped directory and swaps `..data` to it in one
    /// rename, then removes the old directory: the kubelet's AtomicWriter.
    fn publish(&mut self, cert: &str, key: &str) {
        self.generation += 1;
        let name = format!(
            "..2026_11_22_02_00_{:02}.{}",
            self.generation,
            1000 + self.generation
        );
        let payload = self.dir.join(&name);
        std::fs::create_dir(&payload).unwrap();
        std::fs::write(payload.join("tls.crt"), cert).unwrap();
        std::fs::write(payload.join("tls.key"), key).unwrap();
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        let temp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &temp).unwrap();
        std::fs::rename(&temp, self.dir.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }

    fn tls_source(&self) -> TlsSource {
        TlsSource::Files {
            cert: self.dir.join("tls.crt"),
            key: self.dir.join("tls.key"),
            reload_interval: Duration::from_millis(100),
        }
    }
}

async fn served(server: &TestServer) -> Vec<u8> {
    common::served_certificate(server.webhook_addr, &server.certs.ca_pem).await
}

async fn wait_until_served(server: &TestServer, pem: &str) {
    let expected = common::der_of(pem);
    common::eventually(WITHIN, "the new certificate is served", || {
        let expected = &expected;
        async move { served(server).await == *expected }
    })
    .await;
}

async fn wait_for_failures(server: &TestServer, count: f64) {
    common::eventually(WITHIN, "the refusal is counted", || async move {
        server.metrics().await.value(FAILURES, &[]) >= count
    })
    .await;
}

/// Long enough for many polls: whatever was going to happen has happened.
async fn several_intervals() {
    tokio::time::sleep(Duration::from_millis(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_replaced_in_place_is_served_to_new_handshakes() {
    let server = TestServer::start().await;
    assert_eq!(
        served(&server).await,
        common::der_of(&server.certs.pair.cert_pem)
    );

    let next = common::issue(&server.certs.authority);
    replace(&server.certs.key_path(), &next.key_pem);
    replace(&server.certs.cert_path(), &next.cert_pem);
    wait_until_served(&server, &next.cert_pem).await;
    assert!(server.metrics().await.value(RELOADS, &[]) >= 1.0);

    // Reviews go on over the new certificate.
    let review = common::fixture("servicemonitor-create-1");
    let response = server
        .client(common::Http::V1)
        .post(server.mutate_url())
        .json(&review)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_kubelet_secret_volume_is_served_to_new_handshakes() {
    let certs = CertFiles::new();
    let mut volume = SecretVolume::new(certs.dir.path().join("secret"), &certs.pair);
    let source = volume.tls_source();
    let server = TestServer::start_with_certs(certs, |config| config.tls = source).await;
    assert_eq!(
        served(&server).await,
        common::der_of(&server.certs.pair.cert_pem)
    );

    for _ in 0..2 {
        let next = common::issue(&server.certs.authority);
        volume.publish(&next.cert_pem, &next.key_pem);
        wait_until_served(&server, &next.cert_pem).await;
    }
    let metrics = server.metrics().await;
    assert_eq!(metrics.value(RELOADS, &[]), 2.0);
    // The swap is atomic: never a half-rotated pair to refuse.
    assert_eq!(metrics.value(FAILURES, &[]), 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_mismatched_files_are_refused_and_the_last_good_pair_kept() {
    let server = TestServer::start().await;
    let original = common::der_of(&server.certs.pair.cert_pem);
    let (cert_path, key_path) = (server.certs.cert_path(), server.certs.key_path());

    // A truncated certificate.
    let pem = &server.certs.pair.cert_pem;
    replace(&cert_path, &pem[..pem.len() / 2]);
    wait_for_failures(&server, 1.0).await;
    several_intervals().await;
    assert_eq!(
        server.metrics().await.value(FAILURES, &[]),
        1.0,
        "the same broken bytes are counted once"
    );
    assert_eq!(served(&server).await, original);

    // A valid certificate whose key is not the one in the key file.
    let next = common::issue(&server.certs.authority);
    replace(&cert_path, &next.cert_pem);
    wait_for_failures(&server, 2.0).await;
    several_intervals().await;
    assert_eq!(server.metrics().await.value(FAILURES, &[]), 2.0);
    assert_eq!(served(&server).await, original);

    // Its key arrives: the pair is whole, and served.
    replace(&key_path, &next.key_pem);
    wait_until_served(&server, &next.cert_pem).await;
    let metrics = server.metrics().await;
    assert_eq!(metrics.value(RELOADS, &[]), 1.0);
    assert_eq!(metrics.value(FAILURES, &[]), 2.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_mismatched_secret_volumes_are_refused_and_the_last_good_pair_kept() {
    let certs = CertFiles::new();
    let mut volume = SecretVolume::new(certs.dir.path().join("secret"), &certs.pair);
    let source = volume.tls_source();
    let server = TestServer::start_with_certs(certs, |config| config.tls = source).await;
    let original = common::der_of(&server.certs.pair.cert_pem);

    volume.publish("-----BEGIN CERTIFICATE-----\nnot base64\n", "not a key");
    wait_for_failures(&server, 1.0).await;
    assert_eq!(served(&server).await, original);

    let (a, b) = (
        common::issue(&server.certs.authority),
        common::issue(&server.certs.authority),
    );
    volume.publish(&a.cert_pem, &b.key_pem);
    wait_for_failures(&server, 2.0).await;
    several_intervals().await;
    let metrics = server.metrics().await;
    assert_eq!(metrics.value(FAILURES, &[]), 2.0);
    assert_eq!(metrics.value(RELOADS, &[]), 0.0);
    assert_eq!(served(&server).await, original);

    // The original pair back again is accepted like any good pair.
    volume.publish(&a.cert_pem, &a.key_pem);
    wait_until_served(&server, &a.cert_pem).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_files_are_refused_once_and_recovered_from() {
    let server = TestServer::start().await;
    let original = common::der_of(&server.certs.pair.cert_pem);
    std::fs::remove_file(server.certs.key_path()).unwrap();
    wait_for_failures(&server, 1.0).await;
    several_intervals().await;
    assert_eq!(server.metrics().await.value(FAILURES, &[]), 1.0);
    assert_eq!(served(&server).await, original);

    let next = common::issue(&server.certs.authority);
    replace(&server.certs.cert_path(), &next.cert_pem);
    replace(&server.certs.key_path(), &next.key_pem);
    wait_until_served(&server, &next.cert_pem).await;
    server.stop().await;
}
