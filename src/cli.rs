//! The command line: what a user types, parsed and nothing more.
//!
//! Every flag has an environment twin `PROM_MTLS_WEBHOOK_<FLAG>` (a Helm chart
//! sets the environment, a human types flags; a flag wins over its twin).
//! Turning these raw values into the typed configuration the program runs on,
//! and refusing combinations that make no sense, is [`crate::config`]'s job.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::mesh::MeshMtls;
use crate::mutation::{LabelSelector, MonitorMode, MutationConfig};

#[derive(Debug, Parser)]
#[command(
    name = "prom-mtls-webhook",
    version,
    about = "Mutating admission webhook that wires Prometheus to Istio's workload certificates and switches scrapes to mTLS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the webhook (`POST /mutate` over TLS) and the admin endpoints.
    Serve(Box<ServeArgs>),
    /// Preview offline: print manifests (YAML or JSON, multi-document) as the
    /// webhook would mutate them.
    Mutate(Box<MutateArgs>),
    /// Write a throwaway CA and a serving certificate signed by it.
    Certs(CertsArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TLS listener for `POST /mutate` [default: 0.0.0.0:8443; 127.0.0.1:8443 with --dev]
    #[arg(long, env = "PROM_MTLS_WEBHOOK_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Plain-HTTP listener for /healthz, /readyz and /metrics [default: 0.0.0.0:8080; 127.0.0.1:8080 with --dev]
    #[arg(long, env = "PROM_MTLS_WEBHOOK_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// Serving certificate chain (PEM); re-read when it changes.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Serving private key (PEM); re-read when it changes.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// How often the certificate and key files are checked for a new pair.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_TLS_RELOAD_INTERVAL", value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,

    /// Development mode: a throwaway CA and serving certificate for
    /// localhost, 127.0.0.1 and ::1, made in memory; listeners on 127.0.0.1.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_DEV")]
    pub dev: bool,

    /// Where --dev writes its CA certificate (for `curl --cacert`)
    /// [default: <temp dir>/prom-mtls-webhook-dev-ca.crt]
    #[arg(long, env = "PROM_MTLS_WEBHOOK_DEV_CA_OUT", value_name = "FILE")]
    pub dev_ca_out: Option<PathBuf>,

    /// Largest request body accepted; larger gets 413. The default fits an
    /// object and its old version at the API server's size limits.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_MAX_BODY_BYTES", value_name = "BYTES", default_value_t = crate::config::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Connections served at once; more wait in the kernel's accept queue.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_MAX_CONNECTIONS", value_name = "N", default_value_t = crate::config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// HTTP/2 streams one connection may have open at once.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_MAX_CONCURRENT_STREAMS", value_name = "N", default_value_t = crate::config::DEFAULT_MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,

    /// Bytes of request bodies held at once, over every connection: past
    /// it, a request waits for room up to --body-budget-wait, then gets 503
    /// with Retry-After. Memory follows from it (see the chart's values).
    #[arg(long, env = "PROM_MTLS_WEBHOOK_MAX_BODY_BYTES_IN_FLIGHT", value_name = "BYTES", default_value_t = crate::config::DEFAULT_BODY_BYTES_IN_FLIGHT)]
    pub max_body_bytes_in_flight: usize,

    /// How long a request waits for room in the body budget.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_BODY_BUDGET_WAIT", value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub body_budget_wait: Duration,

    /// A connection (HTTP/1.1 or HTTP/2) with no request in flight for this
    /// long is closed, so that idle clients cannot hold every connection slot.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// HTTP/1 request headers must arrive within this time (also the idle
    /// time after which a keep-alive connection is closed).
    #[arg(long, env = "PROM_MTLS_WEBHOOK_HEADER_READ_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Reading a request's body and answering it must finish within this time.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_REQUEST_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// A TLS handshake must finish within this time.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_TLS_HANDSHAKE_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub tls_handshake_timeout: Duration,

    /// After SIGTERM/SIGINT, how long connections get to finish before the
    /// process exits anyway.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_DRAIN_TIMEOUT", value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// After SIGTERM/SIGINT, how long to keep accepting connections while
    /// not ready, before the drain: time for the endpoints controller and
    /// kube-proxy to stop sending new connections here. Every connection is
    /// closed after its current review meanwhile. 0: close the listener at once.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_SHUTDOWN_DELAY", value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: Duration,

    /// Log line format.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter: a level, and `target=level` directives after commas
    /// (`info`, `warn,prom_mtls_webhook=debug`).
    /// rustls logs errors only unless the filter names it (`debug,rustls=debug`):
    /// its warnings are about what peers send, one per handshake.
    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_LOG_LEVEL",
        value_name = "FILTER",
        default_value = "info"
    )]
    pub log_level: String,

    /// Check that our MutatingWebhookConfiguration sorts before Istio's
    /// injector; `auto` checks when running in a cluster.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_ORDERING_CHECK", value_enum, default_value_t = OrderingCheck::Auto)]
    pub ordering_check: OrderingCheck,

    /// How often the ordering check runs.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_ORDERING_CHECK_INTERVAL", value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub ordering_check_interval: Duration,

    /// Name of this webhook's MutatingWebhookConfiguration (for the ordering check).
    #[arg(long, env = "PROM_MTLS_WEBHOOK_WEBHOOK_CONFIG_NAME", value_name = "NAME", default_value = crate::config::DEFAULT_WEBHOOK_CONFIG_NAME)]
    pub webhook_config_name: String,

    /// Where each sidecar's mTLS mode comes from: `watch` the mesh's
    /// PeerAuthentications (where they cannot be read, every sidecar target
    /// is taken as STRICT), or take every one as `strict` or `permissive`.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_MESH_MTLS", value_enum, default_value_t = MeshMtlsArg::Watch)]
    pub mesh_mtls: MeshMtlsArg,

    /// The mesh's root namespace (Istio's meshConfig.rootNamespace): its
    /// selector-less PeerAuthentication sets the mesh-wide mode.
    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_MESH_ROOT_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = "istio-system"
    )]
    pub mesh_root_namespace: String,

    /// How often every Prometheus and PrometheusAgent is checked for the
    /// current scrape class, besides the checks that every change triggers.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_MESH_RESYNC_INTERVAL", value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub mesh_resync_interval: Duration,

    /// Field manager of the server-side applies that keep the scrape class.
    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_FIELD_MANAGER",
        value_name = "NAME",
        default_value = "prom-mtls-webhook"
    )]
    pub field_manager: String,

    /// Namespaces whose Prometheus and PrometheusAgent resources never get
    /// the scrape class, as the webhook configuration keeps them out of
    /// admission (so do namespaces labelled `<prefix>inject=disabled`).
    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_EXCLUDE_NAMESPACES",
        value_name = "NAMESPACE,...",
        value_delimiter = ',',
        default_value = "kube-system,kube-node-lease"
    )]
    pub exclude_namespaces: Vec<String>,

    #[command(flatten)]
    pub mutation: MutationArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MeshMtlsArg {
    Watch,
    Strict,
    Permissive,
}

impl From<MeshMtlsArg> for MeshMtls {
    fn from(arg: MeshMtlsArg) -> Self {
        match arg {
            MeshMtlsArg::Watch => Self::Watch,
            MeshMtlsArg::Strict => Self::Strict,
            MeshMtlsArg::Permissive => Self::Permissive,
        }
    }
}

/// The offline preview has no mesh to watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PreviewMeshMtls {
    Strict,
    Permissive,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OrderingCheck {
    /// On when `KUBERNETES_SERVICE_HOST` is set (running in a pod).
    Auto,
    On,
    Off,
}

/// The names and switches of SPEC.md's table, shared by `serve` and `mutate`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Mutation")]
pub struct MutationArgs {
    /// The in-memory volume that carries the workload certificates.
    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_VOLUME_NAME",
        value_name = "NAME",
        default_value = "istio-certs"
    )]
    pub volume_name: String,

    /// Where the sidecar writes its certificates (OUTPUT_CERTS).
    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_SIDECAR_CERT_DIR",
        value_name = "DIR",
        default_value = "/etc/istio-output-certs"
    )]
    pub sidecar_cert_dir: String,

    /// Where the Prometheus container reads them.
    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_PROMETHEUS_CERT_DIR",
        value_name = "DIR",
        default_value = "/etc/prom-certs/"
    )]
    pub prometheus_cert_dir: String,

    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_CA_FILE_NAME",
        value_name = "FILE",
        default_value = "root-cert.pem"
    )]
    pub ca_file_name: String,

    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_CERT_FILE_NAME",
        value_name = "FILE",
        default_value = "cert-chain.pem"
    )]
    pub cert_file_name: String,

    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_KEY_FILE_NAME",
        value_name = "FILE",
        default_value = "key.pem"
    )]
    pub key_file_name: String,

    /// The container that runs Prometheus in a selected pod.
    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_PROMETHEUS_CONTAINER",
        value_name = "NAME",
        default_value = "prometheus"
    )]
    pub prometheus_container: String,

    /// Pods matching this label selector are mutated without opting in.
    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_POD_SELECTOR",
        value_name = "SELECTOR",
        default_value = "app.kubernetes.io/name=prometheus"
    )]
    pub pod_selector: LabelSelector,

    /// Scrape class added to Prometheus and PrometheusAgent resources, which monitors join.
    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_SCRAPE_CLASS",
        value_name = "NAME",
        default_value = "istio-mtls"
    )]
    pub scrape_class: String,

    /// Prefix of this webhook's own annotations (`<prefix>inject`, `<prefix>status`).
    #[arg(
        long,
        env = "PROM_MTLS_WEBHOOK_ANNOTATION_PREFIX",
        value_name = "PREFIX",
        default_value = "prom-mtls-webhook.io/"
    )]
    pub annotation_prefix: String,

    /// What happens to ServiceMonitors and PodMonitors.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_MONITORS", value_enum, default_value_t = Monitors::ScrapeClass)]
    pub monitors: Monitors,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Monitors {
    /// Monitors join the scrape class (prometheus-operator 0.74 or later).
    ScrapeClass,
    /// Older operators: the file tlsConfig and the class's relabelings go
    /// into each plain ServiceMonitor endpoint; PodMonitors are left alone.
    Endpoints,
    /// Leave monitors alone, and add no scrape class.
    Off,
}

impl From<MutationArgs> for MutationConfig {
    fn from(args: MutationArgs) -> Self {
        Self {
            volume_name: args.volume_name,
            sidecar_cert_dir: args.sidecar_cert_dir,
            prometheus_cert_dir: args.prometheus_cert_dir,
            ca_file_name: args.ca_file_name,
            cert_file_name: args.cert_file_name,
            key_file_name: args.key_file_name,
            prometheus_container: args.prometheus_container,
            pod_selector: args.pod_selector,
            scrape_class: args.scrape_class,
            annotation_prefix: args.annotation_prefix,
            monitors: match args.monitors {
                Monitors::ScrapeClass => MonitorMode::ScrapeClass,
                Monitors::Endpoints => MonitorMode::Endpoints,
                Monitors::Off => MonitorMode::Off,
            },
            derived: Default::default(),
        }
    }
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    /// Manifests to read (YAML or JSON, multi-document); `-` is stdin.
    #[arg(
        short = 'f',
        long,
        env = "PROM_MTLS_WEBHOOK_FILENAME",
        value_name = "FILE",
        default_value = "-"
    )]
    pub filename: PathBuf,

    /// Print the JSON patches instead of the mutated manifests.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_PATCH")]
    pub patch: bool,

    /// The mode every sidecar target is taken to be in: the preview has no
    /// mesh to watch.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_MESH_MTLS", value_enum, default_value_t = PreviewMeshMtls::Strict)]
    pub mesh_mtls: PreviewMeshMtls,

    #[command(flatten)]
    pub mutation: MutationArgs,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write `ca.crt`, `tls.crt` and `tls.key` into (created if missing).
    #[arg(long, env = "PROM_MTLS_WEBHOOK_OUT", value_name = "DIR")]
    pub out: PathBuf,

    /// DNS name in the serving certificate (repeat for more).
    #[arg(
        long = "dns",
        env = "PROM_MTLS_WEBHOOK_DNS",
        value_name = "NAME",
        value_delimiter = ',',
        default_value = "localhost"
    )]
    pub dns_names: Vec<String>,

    /// IP address in the serving certificate (repeat for more).
    #[arg(
        long = "ip",
        env = "PROM_MTLS_WEBHOOK_IP",
        value_name = "IP",
        value_delimiter = ',',
        default_value = "127.0.0.1"
    )]
    pub ips: Vec<IpAddr>,

    /// Validity of the CA and the serving certificate, in days.
    #[arg(long, env = "PROM_MTLS_WEBHOOK_DAYS", value_name = "N", default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn mutation_flag_defaults_are_the_spec_defaults() {
        let cli = Cli::try_parse_from(["prom-mtls-webhook", "mutate"]).unwrap();
        let Command::Mutate(args) = cli.command else {
            panic!("expected mutate");
        };
        let parsed = MutationConfig::from(args.mutation);
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", MutationConfig::default())
        );
    }

    #[test]
    fn every_flag_has_a_prefixed_environment_twin() {
        fn walk(command: &clap::Command) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_long().is_none() || matches!(id, "help" | "version") {
                    continue;
                }
                let env = arg
                    .get_env()
                    .unwrap_or_else(|| panic!("--{id} has no env twin"));
                let long = arg.get_long().unwrap_or_default();
                let expected = format!(
                    "PROM_MTLS_WEBHOOK_{}",
                    long.to_uppercase().replace('-', "_")
                );
                assert_eq!(env.to_str(), Some(expected.as_str()), "--{long}");
            }
            for sub in command.get_subcommands() {
                walk(sub);
            }
        }
        walk(&Cli::command());
    }
}
