//! The binary's command line: `certs`, `mutate`, flag validation and the
//! environment twins of flags.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use prom_mtls_webhook::config::{ServeConfig, TlsSource};
use prom_mtls_webhook::server::Server;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_prom-mtls-webhook"));
    // Nothing from the test's environment may leak into the flags.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PROM_MTLS_WEBHOOK_") {
            command.env_remove(name);
        }
    }
    command.env_remove("KUBERNETES_SERVICE_HOST");
    command
}

fn run(command: &mut Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_writes_a_ca_and_a_serving_pair_that_a_client_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let output = run(
        binary()
            .args(["certs", "--out"])
            .arg(&out)
            .args(["--days", "2"]),
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));

    for file in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let key_mode = std::fs::metadata(out.join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600, "the key is private");

    // The proof of a valid chain: serve the pair, and handshake with a client
    // that trusts only ca.crt, by name (localhost) and by IP (127.0.0.1).
    common::install_provider();
    let config = ServeConfig::local(TlsSource::Files {
        cert: out.join("tls.crt"),
        key: out.join("tls.key"),
        reload_interval: Duration::from_secs(60),
    });
    let bound = Server::bind(config).await.unwrap();
    let port = bound.webhook_addr.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(bound.serve(async move {
        let _ = stopped.await;
    }));
    let ca = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    let client = common::https_client(&ca, common::Http::V1);
    for host in ["localhost", "127.0.0.1"] {
        let response = client
            .post(format!("https://{host}:{port}/mutate"))
            .body("{}")
            .send()
            .await
            .unwrap_or_else(|e| panic!("handshake with {host}: {e:?}"));
        assert_eq!(response.status(), 400);
    }
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

#[test]
fn certs_puts_the_requested_names_in_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        binary()
            .args(["certs", "--out"])
            .arg(dir.path())
            .args([
                "--dns",
                "prom-mtls-webhook.monitoring.svc",
                "--dns",
                "prom-mtls-webhook.monitoring.svc.cluster.local",
            ])
            .args(["--ip", "10.96.0.10", "--ip", "::1"]),
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let pem = std::fs::read(dir.path().join("tls.crt")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let names = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .clone();
    let names: Vec<String> = names.iter().map(ToString::to_string).collect();
    for expected in [
        "DNSName(prom-mtls-webhook.monitoring.svc)",
        "DNSName(prom-mtls-webhook.monitoring.svc.cluster.local)",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert_eq!(
        names.iter().filter(|n| n.starts_with("IPAddress")).count(),
        2,
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("localhost")),
        "defaults replaced: {names:?}"
    );
}

#[test]
fn serve_with_a_certificate_but_no_key_exits_with_a_clear_message() {
    let output = run(
        binary().args(["serve", "--tls-cert", "/nonexistent/tls.crt"]),
        b"",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--tls-cert was given without --tls-key"),
        "{}",
        stderr(&output)
    );

    let output = run(binary().arg("serve"), b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--dev"), "{}", stderr(&output));
}

#[test]
fn serve_with_unreadable_files_exits_non_zero_naming_the_file() {
    let output = run(
        binary().args([
            "serve",
            "--tls-cert",
            "/nonexistent/tls.crt",
            "--tls-key",
            "/nonexistent/tls.key",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ]),
        b"",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("/nonexistent/tls.crt"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn bad_flag_values_are_refused() {
    for args in [
        &["serve", "--dev", "--listen", "not-an-address"][..],
        &["serve", "--dev", "--request-timeout", "soon"],
        &["serve", "--dev", "--pod-selector", "a in (b"],
        &["serve", "--dev", "--log-level", "info,[[["],
        &["serve", "--dev", "--log-format", "xml"],
        &["certs", "--out", "/tmp/x", "--ip", "300.1.1.1"],
    ] {
        let output = run(binary().args(args), b"");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn environment_twins_set_flags() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let mut process = common::ServeProcess::spawn(
        &[],
        &[
            ("PROM_MTLS_WEBHOOK_DEV", "true"),
            ("PROM_MTLS_WEBHOOK_LISTEN", "127.0.0.1:0"),
            ("PROM_MTLS_WEBHOOK_ADMIN_LISTEN", "127.0.0.1:0"),
            ("PROM_MTLS_WEBHOOK_DEV_CA_OUT", ca.to_str().unwrap()),
        ],
    );
    // Port 0 could only have come from the environment (the default is 8443).
    assert_ne!(process.webhook_addr.port(), 8443);
    assert!(process.webhook_addr.ip().is_loopback());
    let dev = process.wait_for_log("dev mode", Duration::from_secs(5));
    assert_eq!(dev["ca"], ca.to_str().unwrap());
    assert!(
        dev["curl"]
            .as_str()
            .unwrap()
            .contains(&format!("--cacert {}", ca.display()))
    );
    assert!(ca.is_file());
    process.signal("TERM");
    assert_eq!(process.wait_exit(Duration::from_secs(10)).code(), Some(0));

    // And a flag wins over its twin.
    let output = run(
        binary()
            .args(["serve", "--tls-cert", "c"])
            .env("PROM_MTLS_WEBHOOK_DEV", "false"),
        b"",
    );
    assert!(stderr(&output).contains("--tls-cert was given without --tls-key"));
}

#[test]
fn certs_reads_its_flags_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        binary()
            .arg("certs")
            .env("PROM_MTLS_WEBHOOK_OUT", dir.path())
            .env("PROM_MTLS_WEBHOOK_DNS", "a.example,b.example"),
        b"",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let pem = std::fs::read(dir.path().join("tls.crt")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let text = format!("{:?}", pem.parse_x509().unwrap().subject_alternative_name());
    assert!(
        text.contains("a.example") && text.contains("b.example"),
        "{text}"
    );
}

const SERVICE_MONITOR: &str = "\
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: productpage
spec:
  selector:
    matchLabels:
      app: productpage
  endpoints:
  - port: http-9080
    path: /metrics
";

const POD_MONITOR: &str = "\
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata:
  name: reviews
spec:
  selector:
    matchLabels:
      app: reviews
  podMetricsEndpoints:
  - port: http-metrics
";

#[test]
fn mutate_prints_mutated_manifests_from_a_file_or_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sm.yaml");
    std::fs::write(&file, SERVICE_MONITOR).unwrap();

    let from_file = run(binary().args(["mutate", "-f"]).arg(&file), b"");
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    let stdout = String::from_utf8(from_file.stdout.clone()).unwrap();
    assert!(stdout.contains("scrapeClass: istio-mtls"), "{stdout}");
    assert!(
        !stdout.contains("https"),
        "its endpoints stay as written: {stdout}"
    );

    let from_stdin = run(binary().args(["mutate"]), SERVICE_MONITOR.as_bytes());
    assert!(from_stdin.status.success(), "{}", stderr(&from_stdin));
    assert_eq!(from_stdin.stdout, from_file.stdout);

    let dash = run(
        binary().args(["mutate", "-f", "-"]),
        SERVICE_MONITOR.as_bytes(),
    );
    assert_eq!(dash.stdout, from_file.stdout);

    // The mutation flags apply.
    let renamed = run(
        binary().args(["mutate", "--scrape-class", "mesh"]),
        SERVICE_MONITOR.as_bytes(),
    );
    let stdout = String::from_utf8(renamed.stdout).unwrap();
    assert!(stdout.contains("scrapeClass: mesh"), "{stdout}");
    let wired = run(
        binary().args([
            "mutate",
            "--monitors",
            "endpoints",
            "--prometheus-cert-dir",
            "/certs",
        ]),
        SERVICE_MONITOR.as_bytes(),
    );
    let stdout = String::from_utf8(wired.stdout).unwrap();
    assert!(stdout.contains("/certs/root-cert.pem"), "{stdout}");
}

const PROMETHEUS: &str = "apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata:
  name: main
  namespace: monitoring
spec:
  serviceMonitorSelector: {}
";

#[test]
fn mutate_assumes_a_strict_mesh_unless_told() {
    let rules = |args: &[&str]| {
        let output = run(binary().arg("mutate").args(args), PROMETHEUS.as_bytes());
        assert!(output.status.success(), "{}", stderr(&output));
        let mutated =
            prom_mtls_webhook::yaml::parse_one(&String::from_utf8(output.stdout).unwrap()).unwrap();
        mutated["spec"]["scrapeClasses"][0]["relabelings"][0]["replacement"].clone()
    };
    assert_eq!(rules(&[]), "STRICT");
    assert_eq!(rules(&["--mesh-mtls", "permissive"]), "PERMISSIVE");
}

#[test]
fn mutate_patch_prints_patches() {
    let output = run(
        binary().args(["mutate", "--patch"]),
        SERVICE_MONITOR.as_bytes(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("\"op\""), "{stdout}");
}

#[test]
fn mutate_prints_warnings_on_stderr() {
    let output = run(
        binary().args(["mutate", "--monitors", "endpoints"]),
        POD_MONITOR.as_bytes(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).starts_with("warning: "),
        "{}",
        stderr(&output)
    );
    // Left alone: the manifest comes out as it went in.
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(!stdout.contains("https"), "{stdout}");
}

#[test]
fn mutate_fails_on_unparsable_input_or_a_missing_file() {
    let output = run(binary().arg("mutate"), b"key: [unclosed\n");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("error: "),
        "{}",
        stderr(&output)
    );

    let output = run(binary().args(["mutate", "-f", "/nonexistent.yaml"]), b"");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("/nonexistent.yaml"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_makes_the_ordering_check_log_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // Port 1 on loopback: nothing listens there, the connection is refused.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1
kind: Config
clusters:
- name: nowhere
  cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}
users:
- name: someone
  user: {token: not-a-token}
contexts:
- name: here
  context: {cluster: nowhere, user: someone}
current-context: here
",
    )
    .unwrap();
    let ca = dir.path().join("ca.crt");
    let mut process = common::ServeProcess::spawn_dev(
        &ca,
        &["--ordering-check", "on"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    process.wait_for_log("ordering check: cannot list", Duration::from_secs(20));
    let metrics = process.metrics().await;
    assert_eq!(
        metrics.value(
            "prom_mtls_webhook_ordering_check_result",
            &[("result", "error")]
        ),
        1.0
    );
    let ready = common::plain_client()
        .get(process.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "still serving");
    process.signal("TERM");
    assert_eq!(process.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

/// What a client sends can make rustls warn: an IP address as SNI, as wrk
/// and OpenSSL send it, is one WARN line per handshake. Such lines stay out
/// of the logs unless the filter asks for rustls by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_add_rustls_warnings_to_the_logs_unless_asked_for() {
    async fn rustls_lines(log_level: &str) -> Vec<serde_json::Value> {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        let mut process = common::ServeProcess::spawn_dev(&ca, &["--log-level", log_level], &[]);
        let port = process.webhook_addr.port();
        let handshake = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "127.0.0.1", "-CAfile", ca.to_str().unwrap()])
            .stdin(Stdio::null())
            .output()
            .expect("openssl (installed by .ci/run)");
        assert!(
            String::from_utf8_lossy(&handshake.stdout).contains("Verify return code: 0"),
            "{}",
            String::from_utf8_lossy(&handshake.stderr)
        );
        // A review after the handshake: its log line comes after any line
        // the handshake caused.
        let client = common::https_client(&std::fs::read_to_string(&ca).unwrap(), common::Http::V1);
        let response = client
            .post(format!("https://localhost:{port}/mutate"))
            .json(&common::fixture("servicemonitor-create-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        process.wait_for_log("review", Duration::from_secs(10));
        process.signal("TERM");
        assert_eq!(process.wait_exit(Duration::from_secs(10)).code(), Some(0));
        process
            .seen
            .iter()
            .filter(|line| {
                line["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("rustls"))
            })
            .cloned()
            .collect()
    }

    let asked = rustls_lines("info,rustls=warn").await;
    assert!(
        asked.iter().any(|line| line["level"] == "WARN"
            && line["message"].as_str().unwrap_or("").contains("SNI")),
        "with rustls=warn the IP-address SNI is warned about: {asked:#?}"
    );
    let default = rustls_lines("info").await;
    assert!(default.is_empty(), "{default:#?}");
}
