//! The admin server: plain HTTP on its own port, for the kubelet and Prometheus.
//!
//! - `/healthz`: 200 while the process runs (liveness).
//! - `/readyz`: 200 only once a certificate is loaded, the TLS listener is
//!   bound and the mesh's mTLS modes are known (or settled on, see
//!   [`crate::mesh::controller`]); 503 from the first instant of a shutdown.
//! - `/metrics`: OpenMetrics text.
//!
//! Kept off the webhook port so that probes and scrapes need no TLS client
//! configuration and never compete with reviews for connection slots.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::error;

use crate::mesh::controller::MeshState;
use crate::metrics::{self, Metrics};

/// Readiness, shared by the server (which sets it), the mesh watch, and
/// `/readyz` (which reads both).
#[derive(Debug)]
pub struct Health {
    serving: AtomicBool,
    mesh: Arc<MeshState>,
}

impl Health {
    pub fn new(mesh: Arc<MeshState>) -> Self {
        Self {
            serving: AtomicBool::new(false),
            mesh,
        }
    }

    /// The TLS listener serves (and the process is not shutting down).
    pub fn set_ready(&self, ready: bool) {
        self.serving.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.serving.load(Ordering::SeqCst) && self.mesh.is_decided()
    }
}

#[derive(Clone)]
struct AdminState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

pub fn router(health: Arc<Health>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { health, metrics })
}

/// Serves until `stop` resolves, then closes its connections gracefully.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health, metrics))
        .with_graceful_shutdown(stop)
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics_text(State(state): State<AdminState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            error!(%error, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
