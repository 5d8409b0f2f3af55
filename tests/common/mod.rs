//! Shared by the server tests: real certificates in real files, the real
//! server on 127.0.0.1 (ports picked by the kernel), real HTTPS clients.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prom_mtls_webhook::certs::{self, Authority, ServingPair};
use prom_mtls_webhook::config::{ServeConfig, TlsSource};
use prom_mtls_webhook::server::Server;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Where the shared AdmissionReview fixtures live.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission")
}

/// Every fixture: file name and parsed review.
pub fn fixtures() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures found");
    files
        .into_iter()
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let review = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            (name, review)
        })
        .collect()
}

pub fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// A CA and a serving pair from it, written as `tls.crt`/`tls.key` in a temp dir.
pub struct CertFiles {
    pub dir: TempDir,
    pub authority: Authority,
    pub ca_pem: String,
    pub pair: ServingPair,
}

impl CertFiles {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::new(1).unwrap();
        let pair = issue(&authority);
        std::fs::write(dir.path().join(certs::CERT_FILE), &pair.cert_pem).unwrap();
        std::fs::write(dir.path().join(certs::KEY_FILE), &pair.key_pem).unwrap();
        Self {
            ca_pem: authority.ca_pem(),
            dir,
            authority,
            pair,
        }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join(certs::CERT_FILE)
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join(certs::KEY_FILE)
    }

    pub fn tls_source(&self, reload_interval: Duration) -> TlsSource {
        TlsSource::Files {
            cert: self.cert_path(),
            key: self.key_path(),
            reload_interval,
        }
    }
}

/// A serving pair for localhost and 127.0.0.1.
pub fn issue(authority: &Authority) -> ServingPair {
    authority
        .issue(
            &["localhost".to_owned()],
            &["127.0.0.1".parse().unwrap()],
            1,
        )
        .unwrap()
}

/// The real server, serving in a task of the test's runtime.
pub struct TestServer {
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub certs: CertFiles,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with certificate files in a temp dir; `configure` may change
    /// anything else.
    pub async fn start_with(configure: impl FnOnce(&mut ServeConfig)) -> Self {
        Self::start_with_certs(CertFiles::new(), configure).await
    }

    /// Starts serving `certs` (reloaded every 100ms) unless `configure`
    /// points the TLS source elsewhere.
    pub async fn start_with_certs(
        certs: CertFiles,
        configure: impl FnOnce(&mut ServeConfig),
    ) -> Self {
        install_provider();
        let mut config = ServeConfig::local(certs.tls_source(Duration::from_millis(100)));
        configure(&mut config);
        let bound = Server::bind(config).await.expect("bind");
        let (webhook_addr, admin_addr) = (bound.webhook_addr, bound.admin_addr);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async move {
            let _ = stopped.await;
        }));
        let server = Self {
            webhook_addr,
            admin_addr,
            certs,
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_ready().await;
        server
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("https://{}{path_and_query}", self.webhook_addr)
    }

    pub fn mutate_url(&self) -> String {
        self.url("/mutate?timeout=10s")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    async fn wait_ready(&self) {
        let client = plain_client();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(response) = client.get(self.admin_url("/readyz")).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "server never became ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `/metrics`, checked to be a complete OpenMetrics exposition.
    pub async fn metrics(&self) -> Metrics {
        let response = plain_client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        Metrics::parse(&response.text().await.unwrap())
    }

    /// Stops and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// A client that trusts this server's CA.
    pub fn client(&self, http: Http) -> reqwest::Client {
        https_client(&self.certs.ca_pem, http)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http {
    V1,
    V2,
}

/// A rustls client configuration trusting `ca_pem` only, with the ring provider.
pub fn tls_client_config(ca_pem: &str, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// An HTTPS client for one HTTP version (chosen by ALPN, as the API server does).
pub fn https_client(ca_pem: &str, http: Http) -> reqwest::Client {
    install_provider();
    let alpn: &[&[u8]] = match http {
        Http::V1 => &[b"http/1.1"],
        Http::V2 => &[b"h2"],
    };
    let builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_client_config(ca_pem, alpn))
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4);
    let builder = match http {
        Http::V1 => builder.http1_only(),
        Http::V2 => builder,
    };
    builder.build().unwrap()
}

/// A plain-HTTP client for the admin port.
pub fn plain_client() -> reqwest::Client {
    install_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A raw TLS connection to the webhook port, for what an HTTP client will
/// not do (partial requests, lying headers) and for the peer certificate.
pub async fn raw_tls(addr: SocketAddr, ca_pem: &str) -> TlsStream<TcpStream> {
    let connector = TlsConnector::from(Arc::new(tls_client_config(ca_pem, &[b"http/1.1"])));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// The DER of the certificate a fresh handshake is served.
pub async fn served_certificate(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    let stream = raw_tls(addr, ca_pem).await;
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.to_vec())
        .expect("a peer certificate")
}

pub fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Reads one HTTP/1.1 response (head and Content-Length body) from a raw stream.
pub async fn read_response<S: AsyncReadExt + Unpin>(stream: &mut S) -> (u16, String, String) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buffer.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed inside the body");
                buffer.extend_from_slice(&chunk[..n]);
            }
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap();
            let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
            return (status, head, body);
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes all of `bytes` and flushes (TLS streams buffer).
pub async fn send<S: AsyncWriteExt + Unpin>(stream: &mut S, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    stream.flush().await.unwrap();
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A parsed OpenMetrics exposition: `name{labels} value` samples.
#[derive(Debug)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        assert!(text.ends_with("# EOF\n"), "no # EOF terminator:\n{text}");
        let mut samples = Vec::new();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                other => other
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap();
                    let labels = body
                        .split("\",")
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (key, value) = pair.split_once("=\"").unwrap();
                            (key.to_owned(), value.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Self {
            text: text.to_owned(),
            samples,
        }
    }

    /// The value of the one sample with this name and (at least) these labels; 0 if absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| *value)
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches several samples"
        );
        matching.first().copied().unwrap_or(0.0)
    }
}

/// The real binary running `serve`, its JSON log lines collected from stderr.
pub struct ServeProcess {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

impl ServeProcess {
    /// `serve` with JSON logs, both listeners on 127.0.0.1 with kernel-picked
    /// ports, plus `args`; returns once it logged where it listens.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Self {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_prom-mtls-webhook"))
            .arg("serve")
            .args(["--log-format", "json"])
            .args(args)
            .envs(envs.iter().copied())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"message": line, "unparsed": true}));
                if sender.send(value).is_err() {
                    break;
                }
            }
        });
        let mut process = Self {
            child,
            lines,
            seen: Vec::new(),
            webhook_addr: "0.0.0.0:0".parse().unwrap(),
            admin_addr: "0.0.0.0:0".parse().unwrap(),
        };
        let listening = process.wait_for_log("listening", Duration::from_secs(20));
        process.webhook_addr = listening["webhook"].as_str().unwrap().parse().unwrap();
        process.admin_addr = listening["admin"].as_str().unwrap().parse().unwrap();
        process
    }

    /// The first log line (from now on, or already seen) whose message starts with `prefix`.
    pub fn wait_for_log(&mut self, prefix: &str, timeout: Duration) -> Value {
        let starts = |line: &Value| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(prefix))
        };
        if let Some(line) = self.seen.iter().find(|line| starts(line)) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if starts(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line {prefix:?} within {timeout:?}; saw {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// The log lines read so far whose message is not `message`.
    pub fn lines_other_than(&self, message: &str) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|line| line["message"] != message)
            .collect()
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name}");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {timeout:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// `/mutate` by the name the dev certificate is for.
    pub fn mutate_url(&self) -> String {
        format!(
            "https://localhost:{}/mutate?timeout=10s",
            self.webhook_addr.port()
        )
    }

    /// `serve --dev` on 127.0.0.1 (kernel-picked ports), its CA written to
    /// `ca`, plus `args`.
    pub fn spawn_dev(ca: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let ca = ca.to_str().unwrap();
        let dev = [
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--dev-ca-out",
            ca,
        ];
        Self::spawn(&[&dev[..], args].concat(), envs)
    }

    /// `/metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        let text = plain_client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        Metrics::parse(&text)
    }

    /// Waits until the webhook port refuses connections (its listener closed).
    pub async fn wait_until_refused(&self, timeout: Duration) {
        let addr = self.webhook_addr;
        eventually(timeout, "the webhook port refuses", || async move {
            TcpStream::connect(addr).await.is_err()
        })
        .await;
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
