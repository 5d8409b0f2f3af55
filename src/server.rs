//! The webhook server: TLS on one port for `POST /mutate`, plain HTTP on
//! another for the admin endpoints ([`crate::admin`]).
//!
//! Connections: an accept loop bounded by a semaphore (at the limit, new
//! connections wait in the kernel's backlog), a TLS handshake with a timeout,
//! then hyper serves HTTP/2 or HTTP/1.1 as ALPN decided. Every connection is
//! watched by hyper-util's [`GracefulShutdown`], so a drain lets in-flight
//! reviews finish, closes HTTP/1 keep-alive connections after their response
//! and sends HTTP/2 a GOAWAY. That starts at the signal; with a shutdown
//! delay the listener stays open for that long first, serving each new
//! connection one review (`Lifetime::Closing`), because a terminating pod
//! keeps receiving new connections until kube-proxy and the API server have
//! seen it leave the endpoints.
//!
//! The review handler is thin: read the body under a hard size limit, call
//! [`admission::review`] (pure and fast, so inline: no `spawn_blocking`),
//! record metrics, log one line.
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

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::admin::{self, Health};
use crate::admission;
use crate::certs;
use crate::config::{ServeConfig, Timeouts, TlsSource};
use crate::mesh::controller::{self as mesh_controller, MeshState};
use crate::metrics::Metrics;
use crate::mutation::MutationConfig;
use crate::ordering;
use crate::tls::{self, CertResolver, Reloader};

/// How long the dev certificates live: a working session, not a deployment.
const DEV_CERT_DAYS: u32 = 7;

/// HTTP/2 PING interval and timeout: finds peers that vanished without a FIN
/// (a node gone), so their connections do not hold a slot forever.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (out of file descriptors, typically) so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

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
    /// at once, the listener closes, connections get up to the drain timeout
    /// to finish. Returns when every connection is closed or the drain
    /// timeout has passed.
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
            mutation: config.mutation,
            max_body_bytes: config.limits.max_body_bytes,
            request_timeout: config.timeouts.request,
            metrics: metrics.clone(),
        });
        let connections = Connections {
            acceptor,
            http1: http1_builder(&config.timeouts, true),
            http1_closing: http1_builder(&config.timeouts, false),
            http2: http2_builder(),
            router: router(reviews.clone()),
            reviews,
            handshake_timeout: config.timeouts.tls_handshake,
            metrics: metrics.clone(),
        };
        let connections = Arc::new(connections);
        let slots = Arc::new(Semaphore::new(config.limits.max_connections));
        let graceful = GracefulShutdown::new();

        // Certificate loaded and listener bound: from here on we can serve
        // (ready once the mesh's modes are known too).
        health.set_ready(true);
        tokio::pin!(shutdown);
        while let Some((stream, permit)) = next_connection(&listener, &slots, &mut shutdown).await {
            // Subscribed before the handshake: the drain waits for handshakes
            // in progress too, and closes them as soon as they complete.
            let watcher = graceful.watcher();
            tokio::spawn(
                connections
                    .clone()
                    .serve(stream, permit, Lifetime::Watched(watcher)),
            );
        }

        // Not ready from the first instant of the shutdown, so that the
        // endpoints controller takes this pod out of the Service.
        health.set_ready(false);
        // Every open connection is told to finish now: HTTP/1 closes after
        // the response in flight (at once when idle), HTTP/2 gets a GOAWAY,
        // so the API server stops reusing a connection to this pod.
        let open = graceful.count();
        let closing = tokio::spawn(graceful.shutdown());

        // Until kube-proxy and the API server have seen the pod leave the
        // endpoints, new connections may still come here: refusing them
        // would fail admission requests. Serve them, one review each.
        let delay = config.timeouts.shutdown_delay;
        let (stop_late, stopped_late) = watch::channel(false);
        let mut late = JoinSet::new();
        if !delay.is_zero() {
            info!(
                connections = open,
                delay = ?delay,
                "shutting down: not ready; still accepting during the shutdown delay, one review per connection"
            );
            let deadline = tokio::time::sleep(delay);
            tokio::pin!(deadline);
            while let Some((stream, permit)) =
                next_connection(&listener, &slots, &mut deadline).await
            {
                late.spawn(connections.clone().serve(
                    stream,
                    permit,
                    Lifetime::Closing(stopped_late.clone()),
                ));
            }
        }
        drop(listener);
        info!(
            connections = open + late.len(),
            timeout = ?config.timeouts.drain,
            "shutting down: listener closed, draining connections"
        );
        let drained = async {
            let _ = stop_late.send(true);
            let _ = closing.await;
            while late.join_next().await.is_some() {}
        };
        match tokio::time::timeout(config.timeouts.drain, drained).await {
            Ok(()) => info!("drained: every connection is closed"),
            Err(_) => warn!(
                timeout = ?config.timeouts.drain,
                "drain timeout passed with connections still open; closing them"
            ),
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

/// Waits for a free connection slot and then for the next connection
/// (at the limit, new connections wait in the kernel's backlog), or for
/// `stop`; `None` once `stop` has resolved.
async fn next_connection<F: Future<Output = ()>>(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    stop: &mut Pin<&mut F>,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut *stop => return None,
            // The semaphore is never closed.
            permit = slots.clone().acquire_owned() => permit.ok()?,
        };
        let accepted = tokio::select! {
            biased;
            () = &mut *stop => return None,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => return Some((stream, permit)),
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// How long a connection is kept.
enum Lifetime {
    /// Until the client closes it, or the shutdown begins (hyper-util's
    /// graceful watcher then closes it after its request in flight).
    Watched(Watcher),
    /// Accepted during the shutdown delay: closed after its first answer,
    /// or once `stop` turns true (the drain).
    Closing(watch::Receiver<bool>),
}

/// What every connection task shares.
struct Connections {
    acceptor: TlsAcceptor,
    http1: auto::Builder<TokioExecutor>,
    /// HTTP/1.1 without keep-alive, for [`Lifetime::Closing`].
    http1_closing: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
    router: Router,
    /// `POST /mutate`'s state, for the path that bypasses `router`.
    reviews: Arc<ReviewState>,
    handshake_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Connections {
    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        permit: OwnedSemaphorePermit,
        lifetime: Lifetime,
    ) {
        let _slot = permit;
        let _open = OpenConnection::new(&self.metrics);
        // Responses are small and written whole; waiting for Nagle would
        // only add latency.
        let _ = stream.set_nodelay(true);

        let tls = match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream))
            .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                debug!(%error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!("TLS handshake timed out");
                return;
            }
        };
        // ALPN decided the protocol; no ALPN means HTTP/1.1 (as in Go's
        // net/http). Never sniffing for the HTTP/2 preface keeps every
        // HTTP/1 connection under the header read timeout from its first byte.
        let h2 = tls.get_ref().1.alpn_protocol() == Some(tls::ALPN_H2);
        let closing = matches!(lifetime, Lifetime::Closing(_));
        let builder = match (h2, closing) {
            (true, _) => &self.http2,
            (false, false) => &self.http1,
            (false, true) => &self.http1_closing,
        };
        // Set once a closing connection has its answer: then HTTP/2 gets its
        // GOAWAY (HTTP/1 closes by itself, without keep-alive). Only closing
        // connections have one.
        let answered: Option<Arc<Notify>> = closing.then(Arc::default);
        let reviews = self.reviews.clone();
        let router = self.router.clone();
        let notify = answered.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let reviews = reviews.clone();
            let router = router.clone();
            let notify = notify.clone();
            async move {
                // Every request the API server sends: straight to the
                // handler, skipping the router's matching and boxing (a few
                // µs of a ~20 µs review). The router answers the rest with
                // the same 404/405 as before.
                let response =
                    if request.method() == Method::POST && request.uri().path() == "/mutate" {
                        review(State(reviews), request.map(Body::new)).await
                    } else {
                        match router.oneshot(request.map(Body::new)).await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        }
                    };
                if let Some(answered) = notify {
                    answered.notify_one();
                }
                Ok::<_, Infallible>(response)
            }
        });
        let connection = builder.serve_connection(TokioIo::new(tls), service);
        let result = match lifetime {
            Lifetime::Watched(watcher) => watcher.watch(connection).await,
            Lifetime::Closing(mut stop) => {
                let answered = answered.unwrap_or_default();
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => result,
                    () = async {
                        tokio::select! {
                            () = answered.notified() => {}
                            _ = stop.wait_for(|stop| *stop) => {}
                        }
                    } => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                }
            }
        };
        if let Err(error) = result {
            debug!(%error, "connection closed with an error");
        }
    }
}

/// Keeps the open-connections gauge right whichever way a task ends.
struct OpenConnection<'a>(&'a Metrics);

impl<'a> OpenConnection<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.connection_opened();
        Self(metrics)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

fn http1_builder(timeouts: &Timeouts, keep_alive: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head, so
        // it also closes keep-alive connections left idle this long.
        .header_read_timeout(timeouts.header_read)
        .keep_alive(keep_alive);
    builder
}

fn http2_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    builder
}

/// What the review handler needs.
struct ReviewState {
    mutation: MutationConfig,
    /// The scrape class's rules in force.
    mesh: Arc<MeshState>,
    max_body_bytes: usize,
    request_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// `POST /mutate`; other methods get 405 and other paths 404 (axum's defaults).
fn router(state: Arc<ReviewState>) -> Router {
    Router::new()
        .route("/mutate", post(review))
        .with_state(state)
}

/// The API server calls `POST /mutate?timeout=10s`; the query is ignored (the
/// request timeout is ours to enforce).
async fn review(State(state): State<Arc<ReviewState>>, request: Request) -> Response {
    let started = Instant::now();
    let http1 = request.version() < Version::HTTP_2;
    match tokio::time::timeout(
        state.request_timeout,
        answer(&state, request.into_body(), http1, started),
    )
    .await
    {
        Ok(response) => response,
        Err(_) => reject(
            &state,
            started,
            StatusCode::REQUEST_TIMEOUT,
            "timed out reading the request body".to_owned(),
        ),
    }
}

async fn answer(state: &ReviewState, body: Body, http1: bool, started: Instant) -> Response {
    let limit = state.max_body_bytes;
    let bytes = match read_body(body, limit).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge { rest, budget }) => {
            // An HTTP/1 client may still be writing the body: closing now
            // would reset the connection under it, and it would see a broken
            // pipe instead of our 413. Reading (and discarding) up to another
            // limit's worth lets it finish and read the answer. HTTP/2 needs
            // none of this: the stream is reset, the connection lives on.
            if http1 && budget > 0 {
                tokio::spawn(tokio::time::timeout(
                    state.request_timeout,
                    discard(rest, budget),
                ));
            }
            return too_large(state, started);
        }
        Err(BodyError::Read(error)) => {
            return reject(
                state,
                started,
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {error}"),
            );
        }
    };

    let rendering = state.mesh.current();
    match admission::review(&bytes, &state.mutation, &rendering.relabelings) {
        Ok(reviewed) => {
            let elapsed = started.elapsed();
            state.metrics.review(&reviewed.summary, elapsed);
            let summary = &reviewed.summary;
            info!(
                uid = %summary.uid,
                kind = %summary.kind,
                namespace = %summary.namespace,
                name = %summary.name,
                operation = %summary.operation,
                dry_run = summary.dry_run,
                patch_ops = summary.patch_operations,
                warnings = ?summary.warnings,
                outcome = summary.outcome.as_str(),
                duration_us = elapsed.as_micros() as u64,
                "review"
            );
            let mut response = Response::new(Body::from(reviewed.body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => reject(state, started, StatusCode::BAD_REQUEST, error.to_string()),
    }
}

fn too_large(state: &ReviewState, started: Instant) -> Response {
    let reason = format!(
        "request body is larger than {} bytes (--max-body-bytes)",
        state.max_body_bytes
    );
    reject(state, started, StatusCode::PAYLOAD_TOO_LARGE, reason)
}

enum BodyError {
    /// Over the limit. `rest` is the unread remainder, `budget` how much of
    /// it may still be read to let the client finish writing (0: too much).
    TooLarge {
        rest: Body,
        budget: usize,
    },
    Read(axum::Error),
}

/// Reads the whole body, refusing it as soon as it is known to exceed
/// `limit`: at once when the declared Content-Length says so, else when the
/// bytes read pass it. A body in one chunk (the usual case) is not copied.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let declared = body.size_hint().lower();
    if declared > limit as u64 {
        let budget = if declared <= 2 * limit as u64 {
            usize::try_from(declared).unwrap_or(0)
        } else {
            0
        };
        return Err(BodyError::TooLarge { rest: body, budget });
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(BodyError::TooLarge {
                rest: body,
                budget: limit,
            });
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            previous => {
                if let Some(previous) = previous {
                    joined.reserve(usize::try_from(declared).unwrap_or(0).max(total));
                    joined.extend_from_slice(&previous);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

/// Reads and drops what is left of a refused body, at most `budget` bytes.
async fn discard(mut body: Body, mut budget: usize) {
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            let Some(left) = budget.checked_sub(data.len()) else {
                return;
            };
            budget = left;
        }
    }
}

/// An HTTP error with a one-line reason in a plain-text body.
fn reject(state: &ReviewState, started: Instant, status: StatusCode, reason: String) -> Response {
    state.metrics.rejected();
    // One line, whatever a parser put in its message.
    let reason = reason.replace(['\r', '\n'], " ");
    warn!(
        status = status.as_u16(),
        %reason,
        duration_us = started.elapsed().as_micros() as u64,
        outcome = "rejected",
        "review rejected"
    );
    (status, format!("{reason}\n")).into_response()
}
