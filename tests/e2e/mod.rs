//! The end-to-end harness: a real control plane, the chart installed with
//! Helm, the webhook binary, prometheus-operator and Prometheus, and
//! stand-in workloads, all in a network namespace of the test's own.
//!
//! Why a network namespace: the API server refuses loopback addresses in
//! Endpoints and EndpointSlices ("may not be in the loopback range"), so the
//! pods' addresses are 10.244.x.y, and those live on the loopback interface
//! of a namespace that nothing outside the test can reach. Inside it every
//! server binds to a fixed port: nothing else is there to collide with.

#![allow(dead_code)]

pub mod cluster;
pub mod monitoring;
pub mod pki;
pub mod process;
pub mod webhook;
pub mod workloads;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The API server's advertised address (no node exists).
pub const NODE_IP: &str = "10.244.0.1";

/// Set in the re-executed test process, inside the network namespace.
const NETNS_MARKER: &str = "PROM_MTLS_WEBHOOK_E2E_NETNS";

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The pinned versions (tests/e2e/versions.env), by name.
pub fn version(name: &str) -> String {
    let text = std::fs::read_to_string(repo().join("tests/e2e/versions.env")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} is not in tests/e2e/versions.env"))
        .trim()
        .to_owned()
}

/// Runs this program again, with `args`, in a new network namespace (and,
/// for a user other than root, a user namespace that maps them to root
/// there), under `unshare`; returns `false` in the outer process, whose job
/// is then done, `true` inside, where the scenario runs, with `addresses` on
/// the namespace's loopback interface. A PID namespace too: the program is
/// its first process, so when it ends, however it ends (a panic, a kill of
/// the test run), the kernel ends every process it started, and the
/// network namespace with them; `--kill-child` ends it if `unshare` is killed.
pub fn enter_private_network(args: &[String], addresses: &[&str]) -> bool {
    if std::env::var_os(NETNS_MARKER).is_some() {
        let run = |args: &[&str]| {
            let status = Command::new("ip")
                .args(args)
                .status()
                .expect("`ip` (iproute2) is needed for the end-to-end test");
            assert!(status.success(), "ip {args:?} failed");
        };
        run(&["link", "set", "lo", "up"]);
        for address in addresses {
            run(&["addr", "add", &format!("{address}/32"), "dev", "lo"]);
        }
        return true;
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false);
    let namespaces: &[&str] = if root {
        &["--net", "--pid", "--kill-child"]
    } else {
        &[
            "--user",
            "--map-root-user",
            "--net",
            "--pid",
            "--kill-child",
        ]
    };
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("unshare")
        .args(namespaces)
        .arg("--")
        .arg(&exe)
        .args(args)
        .env(NETNS_MARKER, "1")
        .status()
        .unwrap_or_else(|e| panic!("cannot run unshare (util-linux): {e}"));
    assert!(
        status.success(),
        "the run in its network namespace failed (`unshare {}`): {status}",
        namespaces.join(" ")
    );
    false
}

/// Runs `scenario` on a two-thread runtime inside a private network (see
/// [`enter_private_network`]); the outer process only waits for it.
pub fn run_in_private_network<F>(args: &[String], addresses: &[&str], scenario: F)
where
    F: std::future::Future<Output = ()>,
{
    if !enter_private_network(args, addresses) {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(scenario);
}

/// A directory for the scenario's files, kept when it fails (its path is
/// printed) and removed when it passes.
pub struct WorkDir {
    pub path: PathBuf,
}

impl WorkDir {
    pub fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("prom-mtls-webhook-e2e-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self { path }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("end-to-end files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
