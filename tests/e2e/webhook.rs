//! The chart installed with Helm into the control plane, pointed at a
//! webhook outside the cluster, and the webhook binary run on 127.0.0.1 with
//! the arguments of the chart's Deployment as the API server stores it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use super::cluster::Cluster;
use super::process::Process;
use super::repo;

pub const RELEASE: &str = "prom-mtls-webhook";
pub const NAMESPACE: &str = "prom-mtls-webhook";
/// Where the API server calls the first webhook (the chart's `webhook.url`).
pub const ADDR: &str = "127.0.0.1:9443";

pub fn chart() -> PathBuf {
    repo().join("charts/prom-mtls-webhook")
}

/// Installs every CRD of the pinned modules, as an operator's install does.
pub async fn install_crds(cluster: &Cluster) {
    for crd in std::fs::read_dir(repo().join(".tools/e2e/crds")).unwrap() {
        let path = crd.unwrap().path();
        cluster
            .kubectl(&["apply", "--server-side", "-f", &path.display().to_string()])
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ])
        .await
        .unwrap();
}

/// `helm install` of the chart, pointed at [`ADDR`], with `values`
/// (`key=value`); returns the directory holding the serving pair the chart
/// made (`tls.crt`, `tls.key`), as a pod would find it in its Secret volume.
pub async fn install_chart(cluster: &Cluster, values: &[String]) -> PathBuf {
    let chart = chart().display().to_string();
    let mut args = vec![
        "install".to_owned(),
        RELEASE.to_owned(),
        chart,
        "--namespace".into(),
        NAMESPACE.into(),
        "--create-namespace".into(),
        "--set".into(),
        format!("webhook.url=https://{ADDR}/mutate"),
    ];
    for value in values {
        args.extend(["--set".to_owned(), value.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster
        .helm(&args)
        .await
        .unwrap_or_else(|e| panic!("helm install: {e}"));
    let serving = cluster.dir.join("serving");
    std::fs::create_dir_all(&serving).unwrap();
    write_serving_pair(cluster, &serving).await;
    serving
}

/// Copies the chart's serving Secret into `dir`, each file replaced whole
/// (what the kubelet does to a Secret volume).
pub async fn write_serving_pair(cluster: &Cluster, dir: &Path) {
    let secret = cluster
        .get(&["secret", &format!("{RELEASE}-tls"), "-n", NAMESPACE])
        .await;
    for file in ["tls.crt", "tls.key"] {
        let data = base64::engine::general_purpose::STANDARD
            .decode(secret["data"][file].as_str().unwrap())
            .unwrap();
        let temporary = dir.join(format!(".{file}.new"));
        std::fs::write(&temporary, data).unwrap();
        std::fs::rename(&temporary, dir.join(file)).unwrap();
    }
}

/// `binary serve` with the Deployment's arguments, but the listeners on
/// 127.0.0.1 (replica `index` 0 on [`ADDR`]) and the files of `serving`;
/// its API credentials are the chart's ServiceAccount's. Returns the process
/// and its admin address.
pub async fn start(
    cluster: &Cluster,
    binary: &Path,
    name: &str,
    index: u16,
    serving: &Path,
) -> (Process, String) {
    let deployment = cluster.get(&["deployment", RELEASE, "-n", NAMESPACE]).await;
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let local = ["--listen=", "--admin-listen=", "--tls-cert=", "--tls-key="];
    let mut args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .filter(|a| !local.iter().any(|flag| a.starts_with(flag)))
        .collect();
    let listen = if index == 0 {
        ADDR.to_owned()
    } else {
        format!("127.0.0.1:{}", 9443 + index)
    };
    let admin = format!("127.0.0.1:{}", 9180 + index);
    args.extend([
        format!("--listen={listen}"),
        format!("--admin-listen={admin}"),
        format!("--tls-cert={}", serving.join("tls.crt").display()),
        format!("--tls-key={}", serving.join("tls.key").display()),
    ]);
    let kubeconfig = cluster
        .service_account_kubeconfig(NAMESPACE, RELEASE)
        .await
        .display()
        .to_string();
    let process = Process::spawn(
        name,
        binary,
        &args,
        &[("KUBECONFIG", &kubeconfig), ("KUBERNETES_SERVICE_HOST", "")],
        &cluster.logs,
    );
    let readyz = format!("http://{admin}/readyz");
    super::cluster::eventually(
        Duration::from_secs(30),
        "the webhook ready",
        &mut || async { matches!(get_text(&readyz).await, Some((200, _))) },
    )
    .await;
    (process, admin)
}

/// GET, the status and body; `None` when nothing answered.
pub async fn get_text(url: &str) -> Option<(u16, String)> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The sum of the samples whose line starts with `series` in an OpenMetrics
/// text (0 when absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| {
            line.rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
        })
        .sum()
}
