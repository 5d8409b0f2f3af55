//! The webhook server: TLS on one port for `POST /mutate`, plain HTTP on
//! another for the admin endpoints ([`crate::admin`]).
//!
//! - [`listener`]: the accept loop, bounded by connection slots (at the
//!   limit, new connections wait in the kernel's backlog);
//! - [`connection`]: one connection's life: the TLS handshake, HTTP/2 or
//!   HTTP/1.1 as ALPN decided, closing it when idle or at shutdown;
//! - [`review`]: the `POST /mutate` handler, behind axum's router;
//! - [`body`]: reading a request body under the size limit and the budget
//!   of body bytes held at once.
//!
//! This module starts them and runs the shutdown: readiness off at the
//! signal, open connections told to finish (HTTP/1 closes after the response
//! in flight, HTTP/2 gets a GOAWAY), new connections still served one
//! review each for the shutdown delay (a terminating pod keeps receiving
//! connections until kube-proxy and the API server have seen it leave the
//! endpoints), then the drain.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use prom_mtls_webhook::config::{ServeConfig, TlsSource};
//! use prom_mtls_webhook::server::Server;
//!
//! let config = ServeConfig::local(TlsSource::Dev { ca_out: "/tmp/ca.crt".into() });
//! let bound = Server::bind(config).await?;
//! println!("webhook on {}, admin on {}", bound.webhook_addr, bound.admin_addr);
//! bound.serve(std::future::pending()).await
//! # }
//! ```

mod body;
mod connection;
mod listener;
mod review;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::admin::{self, Health};
use crate::certs;
use crate::config::{ServeConfig, TlsSource};
use crate::mesh::controller::{self as mesh_controller, MeshState};
use crate::metrics::Metrics;
#[cfg(feature = "kubernetes")]
use crate::ordering;
use crate::tls::{self, CertResolver, Reloader};

use body::BodyBudget;
use connection::{Connections, Lifetime};
use review::ReviewState;

/// How long the dev certificates live: a working session, not a deployment.
const DEV_CERT_DAYS: u32 = 7;

/// How long the admin server gets to close its own connections at the end.
const ADMIN_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Binds the listeners; see [`Bound::serve`].
pub struct Server;

impl Server {
    /// Loads the serving certificate (or makes one, with `--dev`) and binds
    /// both listeners. Nothing is served until [`Bound::serve`].
    pub async fn bind(config: ServeConfig) -> anyhow::Result<Bound> {
        let metrics = Arc::new(Metrics::new(config.ordering.is_some()));
        let provider = tls::provider();

        let (serving, reloader, dev_ca) = match &config.tls {
            TlsSource::Files {
                cert,
                key,
                reload_interval,
            } => {
                let (cert_pem, key_pem) = tls::read_pair(cert, key)
                    .await
                    .context("cannot read the serving certificate")?;
                let serving =
                    tls::parse_pair(&cert_pem, &key_pem, &provider).with_context(|| {
                        format!(
                            "cannot use {} and {} as the serving certificate",
                            cert.display(),
                            key.display()
                        )
                    })?;
                let reloader = Reloader::new(
                    cert.clone(),
                    key.clone(),
                    *reload_interval,
                    provider.clone(),
                    (cert_pem, key_pem),
                );
                (serving, Some(reloader), None)
            }
            TlsSource::Dev { ca_out } => {
                let bundle = certs::generate(
                    &["localhost".to_owned()],
                    &[
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(Ipv6Addr::LOCALHOST),
                    ],
                    DEV_CERT_DAYS,
                )?;
                std::fs::write(ca_out, &bundle.ca_pem)
                    .with_context(|| format!("cannot write the dev CA to {}", ca_out.display()))?;
                let serving = tls::parse_pair(
                    bundle.serving.cert_pem.as_bytes(),
                    bundle.serving.key_pem.as_bytes(),
                    &provider,
                )?;
                (serving, None, Some(ca_out.clone()))
            }
        };
        metrics.certificate_loaded(serving.not_after);
        let resolver = Arc::new(CertResolver::new(serving.key));
        let tls_config = tls::server_config(resolver.clone(), provider)?;

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| {
                format!("cannot listen on {} (--admin-listen)", config.admin_listen)
            })?;

        let mesh = Arc::new(MeshState::new(config.mesh.mode));
        Ok(Bound {
            webhook_addr: listener.local_addr()?,
            admin_addr: admin_listener.local_addr()?,
            dev_ca,
            listener,
            admin_listener,
            acceptor: TlsAcceptor::from(Arc::new(tls_config)),
            resolver,
            reloader,
            metrics,
            health: Arc::new(Health::new(mesh.clone())),
            mesh,
            config,
        })
    }
}

/// Listeners bound, certificate loaded: ready to serve.
pub struct Bound {
    /// Where `POST /mutate` is served (TLS).
    pub webhook_addr: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (plain HTTP).
    pub admin_addr: SocketAddr,
    /// With `--dev`: the file the throwaway CA was written to.
    pub dev_ca: Option<PathBuf>,
    listener: TcpListener,
    admin_listener: TcpListener,
    acceptor: TlsAcceptor,
    resolver: Arc<CertResolver>,
    reloader: Option<Reloader>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mesh: Arc<MeshState>,
    config: ServeConfig,
}

impl Bound {
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns false
    /// at once, connections are told to finish, the listener stays open for
    /// the shutdown delay, connections get up to the drain timeout to
    /// finish. Returns when every connection is closed or the drain timeout
    /// has passed.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Bound {
            webhook_addr: _,
            admin_addr: _,
            dev_ca: _,
            listener,
            admin_listener,
            acceptor,
            resolver,
            reloader,
            metrics,
            health,
            mesh,
            config,
        } = self;

        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = tokio::spawn(admin::serve(
            admin_listener,
            health.clone(),
            metrics.clone(),
            async move {
                let _ = admin_stopped.await;
            },
        ));
        let mut background: Vec<JoinHandle<()>> = Vec::new();
        if let Some(reloader) = reloader {
            background.push(tokio::spawn(reloader.run(resolver, metrics.clone())));
        }
        // Without the `kubernetes` feature the configuration has no ordering check.
        #[cfg(feature = "kubernetes")]
        if let Some(ordering) = config.ordering.clone() {
            background.push(tokio::spawn(ordering::run(ordering, metrics.clone())));
        }
        background.push(tokio::spawn(mesh_controller::run(
            config.mesh.clone(),
            Arc::new(config.mutation.clone()),
            mesh.clone(),
            metrics.clone(),
        )));

        let reviews = Arc::new(ReviewState {
            mesh,
            mutation: config.mutation.clone(),
            max_body_bytes: config.limits.max_body_bytes,
            budget: BodyBudget::new(
                config.limits.body_bytes_in_flight,
                config.limits.body_budget_wait,
            ),
            request_timeout: config.timeouts.request,
            metrics: metrics.clone(),
        });
        let connections = Arc::new(Connections::new(
            acceptor,
            &config,
            reviews,
            metrics.clone(),
        ));
        let slots = Arc::new(Semaphore::new(config.limits.max_connections));
        // `true` once the open connections must finish.
        let (closing, closing_rx) = watch::channel(false);
        let mut open = JoinSet::new();

        // Certificate loaded and listener bound: from here on we can serve
        // (ready once the mesh's modes are known too).
        health.set_ready(true);
        tokio::pin!(shutdown);
        listener::accept(
            &listener,
            &slots,
            &mut shutdown,
            &mut open,
            |stream, permit| {
                connections.clone().serve(
                    stream,
                    permit,
                    Lifetime::UntilClosing(closing_rx.clone()),
                )
            },
        )
        .await;

        // Not ready from the first instant of the shutdown, so that the
        // endpoints controller takes this pod out of the Service; every open
        // connection is told to finish now, so that the API server stops
        // reusing a connection to this pod.
        health.set_ready(false);
        let _ = closing.send(true);
        let delay = config.timeouts.shutdown_delay;
        let (drained, drained_rx) = watch::channel(false);
        if !delay.is_zero() {
            info!(
                connections = open.len(),
                delay = ?delay,
                "shutting down: not ready; still accepting during the shutdown delay, one review per connection"
            );
            let deadline = tokio::time::sleep(delay);
            tokio::pin!(deadline);
            listener::accept(
                &listener,
                &slots,
                &mut deadline,
                &mut open,
                |stream, permit| {
                    connections.clone().serve(
                        stream,
                        permit,
                        Lifetime::OneReview(drained_rx.clone()),
                    )
                },
            )
            .await;
        }
        drop(listener);
        info!(
            connections = open.len(),
            timeout = ?config.timeouts.drain,
            "shutting down: listener closed, draining connections"
        );
        let _ = drained.send(true);
        let all_closed = async { while open.join_next().await.is_some() {} };
        let drained_in_time = tokio::time::timeout(config.timeouts.drain, all_closed)
            .await
            .is_ok();
        // Requests taken against answers written: equal after a clean drain.
        let (received, answered) = metrics.requests();
        if drained_in_time {
            info!(received, answered, "drained: every connection is closed");
        } else {
            warn!(
                timeout = ?config.timeouts.drain,
                received,
                answered,
                "drain timeout passed with connections still open; closing them"
            );
        }

        for task in &background {
            task.abort();
        }
        let _ = stop_admin.send(());
        if let Ok(Ok(Err(error))) = tokio::time::timeout(ADMIN_STOP_TIMEOUT, admin).await {
            warn!(%error, "admin server failed");
        }
        Ok(())
    }
}
