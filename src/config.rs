//! The typed configuration `serve` runs on.
//!
//! [`crate::cli`] holds what was typed; this module resolves the defaults that
//! depend on other flags (`--dev`, `--ordering-check auto`), checks the
//! combinations, and hands the rest of the program one [`ServeConfig`].
//! Tests build a [`ServeConfig`] directly with [`ServeConfig::local`].

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use tracing_subscriber::filter::Targets;

use crate::cli::{self, LogFormat, ServeArgs};
use crate::mesh::controller::MeshConfig;
use crate::mutation::MutationConfig;

/// 7 MiB: the API server stores objects of up to ~1.5 MiB (etcd's limit) and
/// accepts request bodies of up to 3 MiB; a review carries the object and its
/// old version, JSON-escaped, plus the envelope.
pub const DEFAULT_MAX_BODY_BYTES: usize = 7 * 1024 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// 32 MiB of request bodies at once: four at the size limit, or a few
/// thousand of the few-KiB reviews the API server sends.
pub const DEFAULT_BODY_BYTES_IN_FLIGHT: usize = 32 * 1024 * 1024;
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
pub const DEFAULT_WEBHOOK_PORT: u16 = 8443;
pub const DEFAULT_ADMIN_PORT: u16 = 8080;
pub const DEFAULT_WEBHOOK_CONFIG_NAME: &str = "00-prom-mtls-webhook";

/// Everything `serve` needs, resolved and checked.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub tls: TlsSource,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub ordering: Option<OrderingConfig>,
    pub mesh: MeshConfig,
    pub mutation: MutationConfig,
}

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// PEM files, re-read every `reload_interval` (through symlinks, so the
    /// kubelet's Secret-volume layout works).
    Files {
        cert: PathBuf,
        key: PathBuf,
        reload_interval: Duration,
    },
    /// A throwaway CA and serving certificate made in memory; the CA is
    /// written to `ca_out` for clients to trust.
    Dev { ca_out: PathBuf },
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Bytes of request bodies held at once, over all connections.
    pub body_bytes_in_flight: usize,
    /// How long a request waits for room in that budget before a 503.
    pub body_budget_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            body_bytes_in_flight: DEFAULT_BODY_BYTES_IN_FLIGHT,
            body_budget_wait: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header_read: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle: Duration,
    pub request: Duration,
    pub tls_handshake: Duration,
    pub drain: Duration,
    /// Between the signal and the drain: still accepting, not ready.
    pub shutdown_delay: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(5),
            idle: Duration::from_secs(60),
            request: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(5),
            drain: Duration::from_secs(15),
            shutdown_delay: Duration::ZERO,
        }
    }
}

/// The in-cluster check that our webhook configuration sorts before Istio's injector.
#[derive(Clone, Debug)]
pub struct OrderingConfig {
    pub webhook_config_name: String,
    pub interval: Duration,
}

/// How log lines are written; applied by [`crate::logging::init`].
#[derive(Clone, Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--tls-cert and --tls-key are required (or --dev, for a throwaway certificate)")]
    MissingTls,
    #[error("--tls-cert was given without --tls-key")]
    CertWithoutKey,
    #[error("--tls-key was given without --tls-cert")]
    KeyWithoutCert,
    #[error("--dev makes its own certificate: drop --tls-cert/--tls-key, or drop --dev")]
    DevWithFiles,
    #[error("--dev-ca-out only makes sense with --dev")]
    DevCaOutWithoutDev,
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("--listen and --admin-listen are both {0}")]
    SameAddress(SocketAddr),
    #[error(
        "--max-body-bytes-in-flight ({budget}) must be at least --max-body-bytes ({body}), or a body at the limit could never be read"
    )]
    BudgetBelowBody { budget: usize, body: usize },
    #[error(
        "{0} needs the Kubernetes client, which this build leaves out (built without the `kubernetes` feature): set it to off, or build with default features"
    )]
    NoKubernetesClient(&'static str),
    #[error("--log-level {filter:?} is not a valid filter: {reason}")]
    LogFilter { filter: String, reason: String },
}

impl ServeConfig {
    /// Resolves and checks `serve`'s flags. `in_cluster` decides
    /// `--ordering-check auto` (the caller looks at `KUBERNETES_SERVICE_HOST`).
    pub fn from_args(args: ServeArgs, in_cluster: bool) -> Result<Self, ConfigError> {
        let tls = match (args.dev, args.tls_cert, args.tls_key) {
            (true, None, None) => TlsSource::Dev {
                ca_out: args
                    .dev_ca_out
                    .unwrap_or_else(|| std::env::temp_dir().join("prom-mtls-webhook-dev-ca.crt")),
            },
            (true, _, _) => return Err(ConfigError::DevWithFiles),
            (false, Some(cert), Some(key)) => {
                if args.dev_ca_out.is_some() {
                    return Err(ConfigError::DevCaOutWithoutDev);
                }
                TlsSource::Files {
                    cert,
                    key,
                    reload_interval: nonzero("--tls-reload-interval", args.tls_reload_interval)?,
                }
            }
            (false, Some(_), None) => return Err(ConfigError::CertWithoutKey),
            (false, None, Some(_)) => return Err(ConfigError::KeyWithoutCert),
            (false, None, None) => return Err(ConfigError::MissingTls),
        };

        // --dev is for a laptop: never listen beyond it unless asked to.
        let host = if args.dev {
            Ipv4Addr::LOCALHOST
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        let listen = args.listen.unwrap_or(SocketAddr::V4(SocketAddrV4::new(
            host,
            DEFAULT_WEBHOOK_PORT,
        )));
        let admin_listen = args
            .admin_listen
            .unwrap_or(SocketAddr::V4(SocketAddrV4::new(host, DEFAULT_ADMIN_PORT)));
        if listen == admin_listen && listen.port() != 0 {
            return Err(ConfigError::SameAddress(listen));
        }

        if args.max_body_bytes == 0 {
            return Err(ConfigError::Zero("--max-body-bytes"));
        }
        if args.max_connections == 0 {
            return Err(ConfigError::Zero("--max-connections"));
        }
        if args.max_concurrent_streams == 0 {
            return Err(ConfigError::Zero("--max-concurrent-streams"));
        }
        if args.max_body_bytes_in_flight < args.max_body_bytes {
            return Err(ConfigError::BudgetBelowBody {
                budget: args.max_body_bytes_in_flight,
                body: args.max_body_bytes,
            });
        }
        let timeouts = Timeouts {
            header_read: nonzero("--header-read-timeout", args.header_read_timeout)?,
            idle: nonzero("--idle-timeout", args.idle_timeout)?,
            request: nonzero("--request-timeout", args.request_timeout)?,
            tls_handshake: nonzero("--tls-handshake-timeout", args.tls_handshake_timeout)?,
            // Zero is allowed: exit as soon as the listener is closed.
            drain: args.drain_timeout,
            shutdown_delay: args.shutdown_delay,
        };

        let ordering = if ordering_enabled(args.ordering_check, in_cluster) {
            if !cfg!(feature = "kubernetes") {
                return Err(ConfigError::NoKubernetesClient("--ordering-check"));
            }
            Some(OrderingConfig {
                webhook_config_name: args.webhook_config_name,
                interval: nonzero("--ordering-check-interval", args.ordering_check_interval)?,
            })
        } else {
            None
        };

        let mesh = MeshConfig {
            mode: args.mesh_mtls.into(),
            root_namespace: args.mesh_root_namespace,
            field_manager: args.field_manager,
            resync: nonzero("--mesh-resync-interval", args.mesh_resync_interval)?,
            excluded_namespaces: args
                .exclude_namespaces
                .into_iter()
                .map(|namespace| namespace.trim().to_owned())
                .filter(|namespace| !namespace.is_empty())
                .collect(),
            // A laptop's kubeconfig may point at a real cluster.
            use_api: !args.dev,
            ..MeshConfig::default()
        };

        Ok(Self {
            listen,
            admin_listen,
            tls,
            limits: Limits {
                max_body_bytes: args.max_body_bytes,
                max_connections: args.max_connections,
                max_concurrent_streams: args.max_concurrent_streams,
                body_bytes_in_flight: args.max_body_bytes_in_flight,
                body_budget_wait: args.body_budget_wait,
            },
            timeouts,
            ordering,
            mesh,
            mutation: args.mutation.into(),
        })
    }

    /// Both listeners on 127.0.0.1 with ports the kernel picks, every other
    /// setting at its default: what tests and embedders start from.
    pub fn local(tls: TlsSource) -> Self {
        let any_local_port = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        Self {
            listen: any_local_port,
            admin_listen: any_local_port,
            tls,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            ordering: None,
            // Tests and embedders have no cluster unless they say so.
            mesh: MeshConfig {
                use_api: false,
                ..MeshConfig::default()
            },
            mutation: MutationConfig::default(),
        }
    }
}

impl LogConfig {
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        // Checked here so that a typo is a clear startup error rather than a
        // silently ignored directive.
        check_log_filter(&args.log_level).map_err(|reason| ConfigError::LogFilter {
            filter: args.log_level.clone(),
            reason,
        })?;
        Ok(Self {
            format: args.log_format,
            filter: with_quiet_rustls(&args.log_level),
        })
    }
}

/// A level, then `target=level` directives. `Targets` takes any text as a
/// target; a target here is a module path (`prom_mtls_webhook::server`),
/// so that a stray character is refused, not a directive that never matches.
fn check_log_filter(filter: &str) -> Result<(), String> {
    filter
        .parse::<Targets>()
        .map_err(|error| error.to_string())?;
    for directive in filter.split(',') {
        let target = directive.split('=').next().unwrap_or_default();
        let is_level = target
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .is_ok();
        let is_path = !target.is_empty()
            && target
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'));
        if !is_level && !is_path {
            return Err(format!(
                "{directive:?} is neither a level nor `target=level`"
            ));
        }
    }
    Ok(())
}

/// rustls warns about what a peer sent (an IP address as SNI, which wrk and
/// OpenSSL send, an unknown extension): any client could then add a WARN
/// line per handshake to the logs. Its messages are kept to errors unless
/// the filter names rustls itself (`debug,rustls=debug`).
fn with_quiet_rustls(filter: &str) -> String {
    if filter.contains("rustls") {
        filter.to_owned()
    } else {
        format!("{filter},rustls=error")
    }
}

/// `auto` means: on exactly when running in a pod.
pub fn ordering_enabled(mode: cli::OrderingCheck, in_cluster: bool) -> bool {
    match mode {
        cli::OrderingCheck::Auto => in_cluster,
        cli::OrderingCheck::On => true,
        cli::OrderingCheck::Off => false,
    }
}

fn nonzero(flag: &'static str, duration: Duration) -> Result<Duration, ConfigError> {
    if duration.is_zero() {
        Err(ConfigError::Zero(flag))
    } else {
        Ok(duration)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let argv = ["prom-mtls-webhook", "serve"].iter().chain(flags);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(args) => *args,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    fn config(flags: &[&str]) -> Result<ServeConfig, ConfigError> {
        ServeConfig::from_args(serve_args(flags), false)
    }

    #[test]
    fn flag_defaults_match_the_typed_defaults() {
        let config = config(&["--tls-cert", "c", "--tls-key", "k"]).unwrap();
        let (limits, timeouts) = (Limits::default(), Timeouts::default());
        assert_eq!(config.limits.max_body_bytes, limits.max_body_bytes);
        assert_eq!(config.limits.max_connections, limits.max_connections);
        assert_eq!(config.timeouts.header_read, timeouts.header_read);
        assert_eq!(config.timeouts.request, timeouts.request);
        assert_eq!(config.timeouts.tls_handshake, timeouts.tls_handshake);
        assert_eq!(config.timeouts.drain, timeouts.drain);
        assert_eq!(config.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(config.admin_listen.to_string(), "0.0.0.0:8080");
        assert!(config.ordering.is_none());
        match config.tls {
            TlsSource::Files {
                reload_interval, ..
            } => assert_eq!(reload_interval, Duration::from_secs(2)),
            TlsSource::Dev { .. } => panic!("expected files"),
        }
    }

    #[test]
    fn dev_listens_on_loopback_only() {
        let config = config(&["--dev"]).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(config.admin_listen.to_string(), "127.0.0.1:8080");
        match config.tls {
            TlsSource::Dev { ca_out } => {
                assert!(ca_out.ends_with("prom-mtls-webhook-dev-ca.crt"));
            }
            TlsSource::Files { .. } => panic!("expected dev"),
        }
    }

    #[test]
    fn refuses_half_a_key_pair() {
        assert_eq!(
            config(&["--tls-cert", "c"]).unwrap_err(),
            ConfigError::CertWithoutKey
        );
        assert_eq!(
            config(&["--tls-key", "k"]).unwrap_err(),
            ConfigError::KeyWithoutCert
        );
        assert_eq!(config(&[]).unwrap_err(), ConfigError::MissingTls);
    }

    #[test]
    fn refuses_dev_together_with_files() {
        assert_eq!(
            config(&["--dev", "--tls-cert", "c", "--tls-key", "k"]).unwrap_err(),
            ConfigError::DevWithFiles
        );
    }

    #[test]
    fn refuses_zero_limits_and_shared_ports() {
        let files = ["--tls-cert", "c", "--tls-key", "k"];
        let with = |extra: &[&str]| config(&[&files[..], extra].concat());
        assert_eq!(
            with(&["--max-connections", "0"]).unwrap_err(),
            ConfigError::Zero("--max-connections")
        );
        assert_eq!(
            with(&["--tls-reload-interval", "0s"]).unwrap_err(),
            ConfigError::Zero("--tls-reload-interval")
        );
        assert!(matches!(
            with(&["--listen", "0.0.0.0:9000", "--admin-listen", "0.0.0.0:9000"]),
            Err(ConfigError::SameAddress(_))
        ));
    }

    #[test]
    fn ordering_check_auto_follows_the_cluster() {
        use crate::cli::OrderingCheck::{Auto, Off, On};
        assert!(ordering_enabled(Auto, true));
        assert!(!ordering_enabled(Auto, false));
        assert!(ordering_enabled(On, false));
        assert!(!ordering_enabled(Off, true));
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn the_ordering_check_runs_in_a_cluster() {
        let args = serve_args(&["--dev"]);
        let ordering = ServeConfig::from_args(args, true)
            .unwrap()
            .ordering
            .unwrap();
        assert_eq!(ordering.webhook_config_name, DEFAULT_WEBHOOK_CONFIG_NAME);
        assert_eq!(ordering.interval, Duration::from_secs(300));
    }

    // `cargo test --no-default-features --lib` (CI runs it).
    #[cfg(not(feature = "kubernetes"))]
    #[test]
    fn a_build_without_the_kubernetes_client_refuses_the_ordering_check() {
        let in_cluster = ServeConfig::from_args(serve_args(&["--dev"]), true);
        assert!(matches!(
            in_cluster,
            Err(ConfigError::NoKubernetesClient("--ordering-check"))
        ));
        let args = serve_args(&["--dev", "--ordering-check", "off"]);
        assert!(
            ServeConfig::from_args(args, true)
                .unwrap()
                .ordering
                .is_none()
        );
        // `--dev` on a laptop: auto is off, nothing to refuse.
        assert!(ServeConfig::from_args(serve_args(&["--dev"]), false).is_ok());
    }

    #[test]
    fn rustls_logs_errors_only_unless_the_filter_names_it() {
        assert_eq!(with_quiet_rustls("info"), "info,rustls=error");
        assert_eq!(
            with_quiet_rustls("warn,prom_mtls_webhook=debug"),
            "warn,prom_mtls_webhook=debug,rustls=error"
        );
        assert_eq!(
            with_quiet_rustls("debug,rustls=debug"),
            "debug,rustls=debug"
        );
        with_quiet_rustls("info").parse::<Targets>().unwrap();
    }

    #[test]
    fn refuses_an_invalid_log_filter() {
        for filter in ["info,prom_mtls_webhook=loud", "info,[[[", "info,a b=debug"] {
            let args = serve_args(&["--dev", "--log-level", filter]);
            assert!(
                matches!(
                    LogConfig::from_args(&args),
                    Err(ConfigError::LogFilter { .. })
                ),
                "{filter}"
            );
        }
        for filter in [
            "info",
            "warn,prom_mtls_webhook=debug",
            "debug,rustls=debug",
            "h2=off",
        ] {
            let args = serve_args(&["--dev", "--log-level", filter]);
            assert!(LogConfig::from_args(&args).is_ok(), "{filter}");
        }
    }
}
