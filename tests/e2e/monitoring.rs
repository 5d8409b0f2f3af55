//! prometheus-operator, running against the API server from outside the
//! cluster, and the real Prometheus, running the configuration the operator
//! renders (its Secret `prometheus-<name>`), changed only where it must be
//! to reach the API server from outside a cluster: each Kubernetes service
//! discovery gets a kubeconfig instead of the in-cluster credentials.
//! Schemes, TLS settings and relabelings stay as generated. A reloader task
//! does what the operator's config-reloader sidecar does in a pod: it
//! expands the pod's variables in the rendering (`$(SHARD)`, `$(POD_NAME)`),
//! writes every new rendering out, and tells Prometheus to reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::cluster::{self, Cluster, tool};
use super::process::Process;

pub const OPERATOR_ADDR: &str = "127.0.0.1:8089";
pub const PROMETHEUS_ADDR: &str = "127.0.0.1:9090";

pub fn start_operator(cluster: &Cluster) -> Process {
    let path = |p: &Path| p.display().to_string();
    Process::spawn(
        "prometheus-operator",
        &tool("prometheus-operator"),
        &[
            format!("--apiserver=https://127.0.0.1:{}", cluster::API_PORT),
            format!("--ca-file={}", path(&cluster.ca_file)),
            format!("--cert-file={}", path(&cluster.admin_cert)),
            format!("--key-file={}", path(&cluster.admin_key)),
            format!("--web.listen-address={OPERATOR_ADDR}"),
            "--log-level=info".into(),
        ],
        &[],
        &cluster.logs,
    )
}

pub struct Prometheus {
    pub process: Process,
    pub config: PathBuf,
    /// Renderings loaded so far (the first one included).
    pub reloads: Arc<AtomicU64>,
    client: reqwest::Client,
    reloader: tokio::task::JoinHandle<()>,
}

/// One active target, as `/api/v1/targets` reports it.
#[derive(Clone, Debug)]
pub struct Target {
    pub job: String,
    pub namespace: String,
    pub pod: String,
    pub scrape_url: String,
    pub health: String,
    pub last_error: String,
}

impl Target {
    pub fn scheme(&self) -> &str {
        self.scrape_url.split("://").next().unwrap_or_default()
    }
}

/// The operator's rendering of Prometheus `namespace/name`, as text.
pub async fn rendered_config(cluster: &Cluster, namespace: &str, name: &str) -> Option<String> {
    let admin = cluster.admin_kubeconfig.display().to_string();
    fetch_rendering(&tool("kubectl"), &admin, namespace, name).await
}

async fn fetch_rendering(
    kubectl: &Path,
    admin: &str,
    namespace: &str,
    name: &str,
) -> Option<String> {
    let secret = format!("prometheus-{name}");
    let encoded = cluster::run(
        kubectl,
        &[
            "--kubeconfig",
            admin,
            "get",
            "secret",
            &secret,
            "-n",
            namespace,
            "-o",
            "jsonpath={.data.prometheus\\.yaml\\.gz}",
        ],
        None,
    )
    .await
    .ok()?;
    let gzipped = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    gunzip(&gzipped).await
}

/// The variables the config-reloader expands, as the first pod of shard 0
/// has them.
const POD_VARIABLES: [(&str, &str); 2] =
    [("$(SHARD)", "0"), ("$(POD_NAME)", "prometheus-default-0")];

/// The rendering as the config-reloader of the first pod writes it, with
/// each Kubernetes service discovery pointed at the API server through
/// `kubeconfig`; nothing else changes. Written as JSON, which Prometheus
/// reads as YAML.
pub fn outside_the_cluster(rendered: &str, kubeconfig: &Path) -> String {
    let expanded = POD_VARIABLES
        .iter()
        .fold(rendered.to_owned(), |text, (variable, value)| {
            text.replace(variable, value)
        });
    let mut config =
        prom_mtls_webhook::yaml::parse_one(&expanded).expect("the operator's rendering is YAML");
    for job in config["scrape_configs"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        for sd in job["kubernetes_sd_configs"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            assert!(
                sd.get("api_server").is_none(),
                "the operator set an api_server: {sd}"
            );
            sd["kubeconfig_file"] = Value::String(kubeconfig.display().to_string());
        }
    }
    config.to_string()
}

impl Prometheus {
    /// Waits for the operator's rendering of `namespace/name`, then runs
    /// Prometheus on it and keeps it current.
    pub async fn start(
        cluster: &Cluster,
        namespace: &str,
        name: &str,
        kubeconfig: PathBuf,
    ) -> Self {
        let started = std::time::Instant::now();
        let rendered = loop {
            if let Some(rendered) = rendered_config(cluster, namespace, name).await {
                break rendered;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the operator rendered no configuration for {namespace}/{name}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let dir = cluster.dir.join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yaml");
        std::fs::write(&config, outside_the_cluster(&rendered, &kubeconfig)).unwrap();
        let process = Process::spawn(
            "prometheus",
            &tool("prometheus"),
            &[
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address={PROMETHEUS_ADDR}"),
                "--web.enable-lifecycle".into(),
                "--log.level=debug".into(),
            ],
            &[],
            &cluster.logs,
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let reloads = Arc::new(AtomicU64::new(1));
        let reloader = tokio::spawn(reload_on_change(
            cluster.admin_kubeconfig.clone(),
            namespace.to_owned(),
            name.to_owned(),
            kubeconfig,
            config.clone(),
            client.clone(),
            reloads.clone(),
        ));
        let prometheus = Self {
            process,
            config,
            reloads,
            client,
            reloader,
        };
        cluster
            .eventually(Duration::from_secs(60), "Prometheus ready", || async {
                prometheus.get("/-/ready").await.is_some()
            })
            .await;
        prometheus
    }

    async fn get(&self, path: &str) -> Option<String> {
        let response = self
            .client
            .get(format!("http://{PROMETHEUS_ADDR}{path}"))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    /// Every active target.
    pub async fn targets(&self) -> Vec<Target> {
        let Some(text) = self.get("/api/v1/targets?state=active").await else {
            return Vec::new();
        };
        let body: Value = serde_json::from_str(&text).unwrap_or_default();
        body["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| Target {
                job: t["labels"]["job"].as_str().unwrap_or_default().to_owned(),
                namespace: t["labels"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                pod: t["labels"]["pod"].as_str().unwrap_or_default().to_owned(),
                scrape_url: t["scrapeUrl"].as_str().unwrap_or_default().to_owned(),
                health: t["health"].as_str().unwrap_or_default().to_owned(),
                last_error: t["lastError"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    pub fn stop(mut self) {
        self.reloader.abort();
        self.process.stop(Duration::from_secs(5));
    }
}

/// The config-reloader's job: a new rendering is written and loaded.
async fn reload_on_change(
    admin: PathBuf,
    namespace: String,
    name: String,
    kubeconfig: PathBuf,
    config: PathBuf,
    client: reqwest::Client,
    reloads: Arc<AtomicU64>,
) {
    let kubectl = tool("kubectl");
    let admin = admin.display().to_string();
    let mut last = std::fs::read_to_string(&config).unwrap_or_default();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Some(rendered) = fetch_rendering(&kubectl, &admin, &namespace, &name).await else {
            continue;
        };
        let text = outside_the_cluster(&rendered, &kubeconfig);
        if text == last {
            continue;
        }
        std::fs::write(&config, &text).unwrap();
        last = text;
        if client
            .post(format!("http://{PROMETHEUS_ADDR}/-/reload"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            reloads.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn gunzip(bytes: &[u8]) -> Option<String> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    stdin.write_all(bytes).await.ok()?;
    drop(stdin);
    let out = child.wait_with_output().await.ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
