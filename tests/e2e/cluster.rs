//! A real control plane on this network namespace's loopback: etcd,
//! kube-apiserver (RBAC on, the default admission plugins, mutating webhooks
//! included) and kube-controller-manager (service accounts, endpoints,
//! StatefulSets). There is no kubelet and no scheduler: pods are created,
//! admitted and stored, never run; the scenario binds them to [`NODE`] and
//! sets their status itself. The Node object exists because the endpoints
//! controllers skip pods whose node they cannot find; nothing watches its
//! heartbeat (the node lifecycle controller is off), so its pods are never
//! evicted.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::pki::{Ca, Leaf};
use super::process::Process;
use super::{NODE_IP, repo};

pub const API_PORT: u16 = 6443;
/// The one Node: an API object with no kubelet behind it.
pub const NODE: &str = "e2e-node";

/// The component binaries and client tools, where scripts/install-tools.sh puts them.
pub fn tool(name: &str) -> PathBuf {
    let path = match name {
        "kubectl" | "helm" => repo().join(".tools/bin").join(name),
        other => repo().join(".tools/e2e/bin").join(other),
    };
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-tools.sh (it installs helm and kubectl, and builds the end-to-end components)",
        path.display()
    );
    path
}

pub struct Cluster {
    pub dir: PathBuf,
    pub logs: PathBuf,
    /// system:masters, by client certificate.
    pub admin_kubeconfig: PathBuf,
    /// The API server's serving CA, for kubeconfigs of other identities.
    pub ca_file: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    processes: Vec<Process>,
}

impl Cluster {
    /// Starts etcd, kube-apiserver and kube-controller-manager, and waits
    /// until the API server is ready and the `default` ServiceAccount exists.
    pub async fn start(dir: &Path) -> Self {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        let write = |name: &str, text: &str| {
            let path = pki.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };

        let ca = Ca::new("e2e-kubernetes-ca");
        let ca_file = write("ca.crt", &ca.pem());
        let node_ip: IpAddr = NODE_IP.parse().unwrap();
        let serving = ca.issue(Leaf::Server {
            dns: &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
            ips: &[
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                node_ip,
                "10.96.0.1".parse().unwrap(),
            ],
        });
        let serving_cert = write("apiserver.crt", &serving.cert_pem);
        let serving_key = write("apiserver.key", &serving.key_pem);
        let admin = ca.issue(Leaf::Client {
            user: "e2e-admin",
            groups: &["system:masters"],
        });
        let admin_cert = write("admin.crt", &admin.cert_pem);
        let admin_key = write("admin.key", &admin.key_pem);
        let (sa_private, sa_public) = super::pki::signing_key();
        let sa_key = write("sa.key", &sa_private);
        let sa_pub = write("sa.pub", &sa_public);
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &ca_file,
            &format!(
                "client-certificate: {}\n    client-key: {}",
                admin_cert.display(),
                admin_key.display()
            ),
        );

        let path = |p: &Path| p.display().to_string();
        let mut processes = Vec::new();
        processes.push(Process::spawn(
            "etcd",
            &tool("etcd"),
            &[
                format!("--data-dir={}", dir.join("etcd").display()),
                "--listen-client-urls=http://127.0.0.1:2379".into(),
                "--advertise-client-urls=http://127.0.0.1:2379".into(),
                "--listen-peer-urls=http://127.0.0.1:2380".into(),
                "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
                "--initial-cluster=default=http://127.0.0.1:2380".into(),
                // Nothing here needs to survive a power cut.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            &[],
            &logs,
        ));
        processes.push(Process::spawn(
            "kube-apiserver",
            &tool("kube-apiserver"),
            &[
                "--etcd-servers=http://127.0.0.1:2379".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={API_PORT}"),
                format!("--advertise-address={NODE_IP}"),
                format!("--tls-cert-file={}", path(&serving_cert)),
                format!("--tls-private-key-file={}", path(&serving_key)),
                format!("--client-ca-file={}", path(&ca_file)),
                format!("--service-account-key-file={}", path(&sa_pub)),
                format!("--service-account-signing-key-file={}", path(&sa_key)),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--authorization-mode=RBAC".into(),
                format!("--cert-dir={}", path(&dir.join("apiserver-certs"))),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
            &[],
            &logs,
        ));
        let cluster = Self {
            dir: dir.to_owned(),
            logs: logs.clone(),
            admin_kubeconfig,
            ca_file: ca_file.clone(),
            admin_cert,
            admin_key,
            processes,
        };
        cluster
            .eventually(Duration::from_secs(90), "kube-apiserver ready", || async {
                cluster.kubectl(&["get", "--raw", "/readyz"]).await.is_ok()
            })
            .await;

        cluster
            .apply(&format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {NODE}, labels: {{kubernetes.io/hostname: {NODE}}}}}\n"
            ))
            .await;

        let mut cluster = cluster;
        let kcm = Process::spawn(
            "kube-controller-manager",
            &tool("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", path(&cluster.admin_kubeconfig)),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=10257".into(),
                "--leader-elect=false".into(),
                // No kubelet heartbeats: nothing may mark the node unreachable and evict.
                "--controllers=*,-node-lifecycle-controller,-node-ipam-controller".into(),
                format!("--service-account-private-key-file={}", path(&sa_key)),
                format!("--root-ca-file={}", path(&ca_file)),
                "--use-service-account-credentials=false".into(),
                "--cluster-signing-duration=1h".into(),
                "--v=1".into(),
            ],
            &[],
            &logs,
        );
        cluster.processes.push(kcm);
        cluster
            .eventually(
                Duration::from_secs(60),
                "the default ServiceAccount",
                || async {
                    cluster
                        .kubectl(&["get", "serviceaccount", "default"])
                        .await
                        .is_ok()
                },
            )
            .await;
        cluster
    }

    /// Panics if a control-plane process has exited.
    pub fn assert_running(&mut self) {
        for process in &mut self.processes {
            process.assert_running();
        }
    }

    /// kubectl as the admin; stdout, or stderr as the error.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_in(args, None).await
    }

    pub async fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        run(
            &tool("kubectl"),
            &[
                &["--kubeconfig", &self.admin_kubeconfig.display().to_string()][..],
                args,
            ]
            .concat(),
            stdin,
        )
        .await
    }

    /// `kubectl apply` (client-side, as the seeds do) of a manifest.
    pub async fn apply(&self, manifest: &str) -> String {
        self.kubectl_in(&["apply", "-f", "-"], Some(manifest))
            .await
            .unwrap_or_else(|e| panic!("kubectl apply failed: {e}\n{manifest}"))
    }

    /// `kubectl get ... -o json`, parsed.
    pub async fn get(&self, args: &[&str]) -> Value {
        let out = self
            .kubectl(&[&["get"][..], args, &["-o", "json"]].concat())
            .await
            .unwrap_or_else(|e| panic!("kubectl get {args:?}: {e}"));
        serde_json::from_str(&out).unwrap()
    }

    pub async fn helm(&self, args: &[&str]) -> Result<String, String> {
        run(
            &tool("helm"),
            &[
                args,
                &["--kubeconfig", &self.admin_kubeconfig.display().to_string()][..],
            ]
            .concat(),
            None,
        )
        .await
    }

    /// A kubeconfig that authenticates as a ServiceAccount, with a token
    /// from the TokenRequest API (what a pod's projected token is).
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self
            .kubectl(&["create", "token", name, "-n", namespace, "--duration=2h"])
            .await
            .unwrap_or_else(|e| panic!("token for {namespace}/{name}: {e}"));
        let path = self.dir.join(format!("{namespace}-{name}.kubeconfig"));
        write_kubeconfig(&path, &self.ca_file, &format!("token: {}", token.trim()));
        path
    }

    /// Polls `check` every 200 ms until it holds, or panics after `timeout`.
    pub async fn eventually<F, Fut>(&self, timeout: Duration, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        eventually(timeout, what, &mut check).await;
    }
}

pub async fn eventually<F, Fut>(timeout: Duration, what: &str, check: &mut F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a client tool; stdout, or stderr (with stdout) as the error.
pub async fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{}{stdout}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn write_kubeconfig(path: &Path, ca: &Path, credentials: &str) {
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:{API_PORT}
    certificate-authority: {}
users:
- name: e2e
  user:
    {credentials}
contexts:
- name: e2e
  context: {{cluster: e2e, user: e2e}}
current-context: e2e
",
        ca.display()
    );
    std::fs::write(path, text).unwrap();
}
