//! `POST /mutate`: read the body under the size limit and the budget, call
//! [`admission::review`] (pure and fast, so inline: no `spawn_blocking`)
//! with the scrape class's rules in force, record metrics, log one line.
//! The connection calls [`review`] itself for `POST /mutate`; everything
//! else goes to [`router`], for axum's 404 or 405.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{BoxError, Router};
use hyper::body::Body as HttpBody;
use tracing::{info, warn};

use super::body::{BodyBudget, BodyError, discard};
use crate::admission;
use crate::mesh::controller::MeshState;
use crate::metrics::Metrics;
use crate::mutation::MutationConfig;

/// What a 503 tells the client to wait before it tries again.
const RETRY_AFTER_SECONDS: &str = "1";

/// What the review handler needs.
pub(super) struct ReviewState {
    pub mutation: MutationConfig,
    /// The scrape class's rules in force.
    pub mesh: Arc<MeshState>,
    pub max_body_bytes: usize,
    pub budget: BodyBudget,
    pub request_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

/// `POST /mutate`; other methods get 405 and other paths 404 (axum's defaults).
pub(super) fn router(state: Arc<ReviewState>) -> Router {
    Router::new()
        .route(
            "/mutate",
            post(
                |State(state): State<Arc<ReviewState>>, request: Request| async move {
                    review(&state, request).await
                },
            ),
        )
        .with_state(state)
}

/// Whether a request is the one [`review`] answers: the connection then
/// calls it directly, without the router's boxed body, futures and layers
/// (a tenth of the CPU a review took besides the review itself).
pub(super) fn is_review(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST && path == "/mutate"
}

/// The API server calls `POST /mutate?timeout=10s`; the query is ignored (the
/// request timeout is ours to enforce).
pub(super) async fn review<B>(state: &ReviewState, request: axum::http::Request<B>) -> Response
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let http1 = request.version() < Version::HTTP_2;
    match tokio::time::timeout(
        state.request_timeout,
        answer(state, request.into_body(), http1, started),
    )
    .await
    {
        Ok(response) => response,
        Err(_) => reject(
            state,
            started,
            StatusCode::REQUEST_TIMEOUT,
            "timed out reading the request body".to_owned(),
        ),
    }
}

async fn answer<B>(state: &ReviewState, body: B, http1: bool, started: Instant) -> Response
where
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let (bytes, held) = match state.budget.read(body, state.max_body_bytes).await {
        Ok(read) => read,
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
            let reason = format!(
                "request body is larger than {} bytes (--max-body-bytes)",
                state.max_body_bytes
            );
            return reject(state, started, StatusCode::PAYLOAD_TOO_LARGE, reason);
        }
        Err(BodyError::Busy) => {
            let reason = format!(
                "{} bytes of request bodies are being reviewed already (--max-body-bytes-in-flight); try again",
                state.budget.total()
            );
            let mut response = reject(state, started, StatusCode::SERVICE_UNAVAILABLE, reason);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
            return response;
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
    state.metrics.body_bytes_in_flight(state.budget.in_use());

    let rendering = state.mesh.current();
    let response = match admission::review(&bytes, &state.mutation, &rendering.relabelings) {
        Ok(reviewed) => {
            let elapsed = started.elapsed();
            state.metrics.review(&reviewed.summary, elapsed);
            let summary = &reviewed.summary;
            info!(
                // A string, not a format string: the same line (the message
                // first), without the formatting machinery.
                message = "review",
                // As strings: escaped by either format (see `logging`).
                uid = summary.uid.as_ref(),
                kind = summary.kind.as_ref(),
                namespace = summary.namespace.as_ref(),
                name = summary.name.as_ref(),
                operation = summary.operation.as_ref(),
                dry_run = summary.dry_run,
                patch_ops = summary.patch_operations,
                warnings = ?summary.warnings,
                outcome = summary.outcome.as_str(),
                duration_us = elapsed.as_micros() as u64,
            );
            let mut response = Response::new(Body::from(reviewed.body));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => reject(state, started, StatusCode::BAD_REQUEST, error.to_string()),
    };
    // Held until the line is written: the summary borrows the request's
    // texts rather than copying them.
    drop(bytes);
    drop(held);
    state.metrics.body_bytes_in_flight(state.budget.in_use());
    response
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
