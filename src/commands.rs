//! The three subcommands, from parsed flags to an exit code.
//!
//! Exit codes: 0 success; 1 the command failed (an unreadable file, a
//! listener that cannot bind); 2 the flags are wrong (as clap's own errors).

use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tracing::{error, info};

use crate::certs;
use crate::cli::{CertsArgs, Cli, Command, MutateArgs, PreviewMeshMtls, ServeArgs};
use crate::config::{LogConfig, ServeConfig};
use crate::logging;
use crate::mesh::{ModeSource, MtlsMode, Rendering};
use crate::mutation::MutationConfig;
use crate::preview::{self, PreviewOutput};
use crate::server::Server;
use crate::shutdown::Signals;

const USAGE_ERROR: u8 = 2;

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Mutate(args) => mutate(*args),
        Command::Certs(args) => write_certs(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty());
    let (log, config) = match LogConfig::from_args(&args)
        .and_then(|log| Ok((log, ServeConfig::from_args(args, in_cluster)?)))
    {
        Ok(configs) => configs,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let _log_writer = match logging::init(&log) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    // One process-wide provider, for whatever builds a rustls config without
    // naming one (the kube client does).
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let signals = Signals::install()?;
        let bound = Server::bind(config).await?;
        info!(
            webhook = %bound.webhook_addr,
            admin = %bound.admin_addr,
            "listening: POST /mutate over TLS on webhook, /healthz /readyz /metrics on admin"
        );
        if let Some(ca) = &bound.dev_ca {
            info!(
                ca = %ca.display(),
                curl = %dev_curl(ca, bound.webhook_addr),
                "dev mode: throwaway certificate for localhost, 127.0.0.1 and ::1; trust the CA written to `ca`"
            );
        }
        bound.serve(signals.first()).await
    });
    // Connection tasks still running after the drain timeout are dropped here.
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(error = format!("{error:#}"), "cannot serve");
            ExitCode::FAILURE
        }
    }
}

/// One worker per CPU this process may run on (`available_parallelism`
/// honours `taskset` and cgroup CPU quotas). With a single CPU, a
/// current-thread runtime: the same work without a second thread to hand
/// tasks and wake-ups to, which one CPU could only run by time-slicing.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    match std::thread::available_parallelism().map_or(1, usize::from) {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        workers => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build(),
    }
}

/// A ready-to-paste command that posts an AdmissionReview to the dev server.
fn dev_curl(ca: &Path, addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "curl --cacert {} -H 'Content-Type: application/json' --data-binary @review.json 'https://{}/mutate?timeout=10s'",
        ca.display(),
        SocketAddr::new(ip, addr.port())
    )
}

fn mutate(args: MutateArgs) -> ExitCode {
    let input = match read_input(&args.filename) {
        Ok(input) => input,
        Err(error) => {
            eprintln!("error: {}: {error}", args.filename.display());
            return ExitCode::FAILURE;
        }
    };
    let output = if args.patch {
        PreviewOutput::Patches
    } else {
        PreviewOutput::Manifests
    };
    let config = MutationConfig::from(args.mutation);
    let mode = match args.mesh_mtls {
        PreviewMeshMtls::Strict => MtlsMode::Strict,
        PreviewMeshMtls::Permissive => MtlsMode::Permissive,
    };
    let rendering = Rendering::uniform(ModeSource::Flag, mode);
    match preview::preview(&input, output, &config, &rendering.relabelings) {
        Ok(preview) => {
            for warning in &preview.warnings {
                eprintln!("warning: {warning}");
            }
            let mut stdout = io::stdout().lock();
            match stdout
                .write_all(preview.output.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                // `| head` closed the pipe: what was wanted has been printed.
                Err(error) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: cannot write the output: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn read_input(path: &Path) -> io::Result<String> {
    if path == Path::new("-") {
        let mut input = String::new();
        io::stdin().lock().read_to_string(&mut input)?;
        Ok(input)
    } else {
        std::fs::read_to_string(path)
    }
}

fn write_certs(args: CertsArgs) -> ExitCode {
    let written = certs::generate(&args.dns_names, &args.ips, args.days)
        .and_then(|bundle| certs::write_bundle(&args.out, &bundle));
    match written {
        Ok(()) => {
            eprintln!(
                "wrote {dir}/{ca} (the CA to trust), {dir}/{cert} and {dir}/{key} (the serving pair), valid for {days} days",
                dir = args.out.display(),
                ca = certs::CA_FILE,
                cert = certs::CERT_FILE,
                key = certs::KEY_FILE,
                days = args.days,
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
