//! The names the mutations write, all configurable (SPEC.md, "Names").

use std::borrow::Cow;
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::patch::PatchValue;
use super::proxy_config::ProxyConfig;
use super::selector::LabelSelector;
use super::user_volume_mount;

/// What happens to ServiceMonitors and PodMonitors (`--monitors`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MonitorMode {
    /// Monitors join the scrape class that this webhook adds to `Prometheus`
    /// and `PrometheusAgent` resources (`spec.scrapeClass`); their endpoints
    /// stay as written. Needs prometheus-operator 0.74 or later.
    ScrapeClass,
    /// For older operators: each plain ServiceMonitor endpoint gets the file
    /// `tlsConfig` and the class's relabelings itself; PodMonitors are left
    /// alone (the operator refuses file paths in their `tlsConfig`).
    Endpoints,
    /// Monitors are left alone, and no scrape class is added.
    Off,
}

/// Every name and switch the mutations depend on.
#[derive(Clone, Debug)]
pub struct MutationConfig {
    /// The shared in-memory volume that carries the workload certificates.
    pub volume_name: String,
    /// Where the sidecar writes its certificates (`OUTPUT_CERTS`).
    pub sidecar_cert_dir: String,
    /// Where the Prometheus container reads them.
    pub prometheus_cert_dir: String,
    pub ca_file_name: String,
    pub cert_file_name: String,
    pub key_file_name: String,
    /// The container that runs Prometheus in a selected pod.
    pub prometheus_container: String,
    /// Pods carrying these labels are selected without an opt-in annotation.
    pub pod_selector: LabelSelector,
    /// The scrape class added to `Prometheus` and `PrometheusAgent`
    /// resources, which monitors join.
    pub scrape_class: String,
    /// Prefix of this webhook's own annotations (`<prefix>inject`, `<prefix>status`).
    pub annotation_prefix: String,
    pub monitors: MonitorMode,
    /// What the reviews write from the names above, made on first use: set
    /// the names before the first review, never after.
    pub(crate) derived: OnceLock<Derived>,
}

/// Texts made from the names, the same for every review: made once rather
/// than per review (they were a tenth of a pod review's instructions).
#[derive(Clone, Debug)]
pub(crate) struct Derived {
    inject_annotation: String,
    status_annotation: String,
    scrape_tls_config: Value,
    /// What the patch writes for the names alone, already as JSON: the
    /// default annotation texts (escaping them took more instructions than
    /// anything else in writing a pod's patch), the volume, its read-only
    /// mount at the Prometheus certificate directory.
    proxy_config_json: String,
    user_volume_mount_json: String,
    volume_json: String,
    prometheus_mount_json: String,
}

/// `value` as the patch writes it.
fn json_of(value: &PatchValue<'_>) -> String {
    let mut out = Vec::new();
    value.write_json(&mut out);
    // Written from `str`s, with ASCII around them.
    String::from_utf8(out).unwrap_or_default()
}

impl Default for MutationConfig {
    fn default() -> Self {
        Self {
            volume_name: "istio-certs".into(),
            sidecar_cert_dir: "/etc/istio-output-certs".into(),
            prometheus_cert_dir: "/etc/prom-certs/".into(),
            ca_file_name: "root-cert.pem".into(),
            cert_file_name: "cert-chain.pem".into(),
            key_file_name: "key.pem".into(),
            prometheus_container: "prometheus".into(),
            pod_selector: LabelSelector::default_prometheus(),
            scrape_class: "istio-mtls".into(),
            annotation_prefix: "prom-mtls-webhook.io/".into(),
            monitors: MonitorMode::ScrapeClass,
            derived: OnceLock::new(),
        }
    }
}

impl MutationConfig {
    fn derived(&self) -> &Derived {
        self.derived.get_or_init(|| Derived {
            inject_annotation: [self.annotation_prefix.as_str(), "inject"].concat(),
            status_annotation: [self.annotation_prefix.as_str(), "status"].concat(),
            proxy_config_json: json_of(&ProxyConfig::new_with(&self.sidecar_cert_dir).into()),
            user_volume_mount_json: json_of(
                &user_volume_mount::new(&self.volume_name, &self.sidecar_cert_dir).into(),
            ),
            volume_json: json_of(&self.volume(&self.volume_name)),
            prometheus_mount_json: json_of(
                &self.mount(Cow::Borrowed(&self.prometheus_cert_dir), true),
            ),
            scrape_tls_config: json!({
                "caFile": self.prometheus_cert_path(&self.ca_file_name),
                "certFile": self.prometheus_cert_path(&self.cert_file_name),
                "keyFile": self.prometheus_cert_path(&self.key_file_name),
                "insecureSkipVerify": true,
            }),
        })
    }

    /// `<prefix>inject`: `"true"` opts a pod in, `"false"` opts any object out.
    pub fn inject_annotation(&self) -> &str {
        &self.derived().inject_annotation
    }

    /// `<prefix>status`: set to `injected` on what this webhook wired.
    pub fn status_annotation(&self) -> &str {
        &self.derived().status_annotation
    }

    /// `proxy.istio.io/config` for a pod that has none: the sidecar writes
    /// its certificates to the configured directory.
    pub(crate) fn default_proxy_config(&self) -> PatchValue<'_> {
        PatchValue::Json(&self.derived().proxy_config_json)
    }

    /// `sidecar.istio.io/userVolumeMount` for a pod that has none: the
    /// volume at the configured sidecar directory.
    pub(crate) fn default_user_volume_mount(&self) -> PatchValue<'_> {
        PatchValue::Json(&self.derived().user_volume_mount_json)
    }

    /// The in-memory certificate volume, as a list item.
    pub(crate) fn volume_entry(&self) -> PatchValue<'_> {
        PatchValue::Json(&self.derived().volume_json)
    }

    /// A mount of the certificate volume at `path`.
    pub(crate) fn mount_entry(&self, path: &str, read_only: bool) -> PatchValue<'_> {
        if read_only && path == self.prometheus_cert_dir {
            PatchValue::Json(&self.derived().prometheus_mount_json)
        } else {
            self.mount(Cow::Owned(path.to_owned()), read_only)
        }
    }

    fn volume<'a>(&'a self, name: &'a str) -> PatchValue<'a> {
        PatchValue::object([
            ("name", name.into()),
            (
                "emptyDir",
                PatchValue::object([("medium", "Memory".into())]),
            ),
        ])
    }

    fn mount<'a>(&'a self, path: Cow<'a, str>, read_only: bool) -> PatchValue<'a> {
        let name = ("name", self.volume_name.as_str().into());
        let at = ("mountPath", PatchValue::Str(path));
        if read_only {
            PatchValue::object([name, at, ("readOnly", PatchValue::Bool(true))])
        } else {
            PatchValue::object([name, at])
        }
    }

    /// Whether `Prometheus` and `PrometheusAgent` resources carry the scrape
    /// class: only where monitors join it.
    pub fn manages_scrape_class(&self) -> bool {
        self.monitors == MonitorMode::ScrapeClass
    }

    /// The scrape class entry with these relabelings, as it appears in
    /// `spec.scrapeClasses`. Never `default: true`: a default class would
    /// hand the mesh certificate to every TLS scrape (kubelet, API server).
    pub fn scrape_class_entry(&self, relabelings: &Value) -> Value {
        json!({
            "name": self.scrape_class,
            "tlsConfig": self.scrape_tls_config(),
            "relabelings": relabelings,
        })
    }

    /// [`Self::scrape_class_entry`] as a patch value: the rules borrowed,
    /// not copied (they are most of a Prometheus review's patch).
    pub fn scrape_class_patch<'r>(&'r self, relabelings: &'r Value) -> PatchValue<'r> {
        PatchValue::object([
            ("name", self.scrape_class.as_str().into()),
            ("tlsConfig", self.scrape_tls_config().into()),
            ("relabelings", relabelings.into()),
        ])
    }

    /// A file under the Prometheus container's certificate directory.
    fn prometheus_cert_path(&self, file: &str) -> String {
        format!(
            "{}/{}",
            self.prometheus_cert_dir.trim_end_matches('/'),
            file
        )
    }

    /// The scrape `tlsConfig` that authenticates Prometheus with the workload
    /// certificate. `insecureSkipVerify`: Prometheus cannot verify Istio's
    /// SPIFFE identities; the client certificate still authenticates it.
    pub fn scrape_tls_config(&self) -> &Value {
        &self.derived().scrape_tls_config
    }
}
