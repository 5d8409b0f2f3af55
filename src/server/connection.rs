//! One connection's life: the TLS handshake under a timeout, then hyper
//! serves HTTP/2 or HTTP/1.1 as ALPN decided, until the client closes it, or
//! it is closed gracefully (HTTP/1 after the response in flight, HTTP/2 with
//! a GOAWAY) because
//!
//! - no request has been in flight on it for the idle timeout (an HTTP/2
//!   client answers PINGs forever, so without this an idle connection would
//!   hold a connection slot for good, and any pod that reaches the Service
//!   could take them all);
//! - the shutdown began ([`Lifetime::UntilClosing`]); or
//! - it was accepted during the shutdown delay and has had its one review
//!   ([`Lifetime::OneReview`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::debug;

use super::review::{self, ReviewState};
use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::tls;

/// HTTP/2 PING interval and timeout: finds peers that vanished without a FIN
/// (a node gone) while a request is in flight.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection is kept, besides the idle timeout.
pub(super) enum Lifetime {
    /// Until the client closes it, or the value turns true (the shutdown).
    UntilClosing(watch::Receiver<bool>),
    /// Accepted during the shutdown delay: closed after its first answer,
    /// or once the value turns true (the drain).
    OneReview(watch::Receiver<bool>),
}

/// What every connection task shares.
pub(super) struct Connections {
    acceptor: TlsAcceptor,
    http1: auto::Builder<TokioExecutor>,
    /// HTTP/1.1 without keep-alive, for [`Lifetime::OneReview`].
    http1_once: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
    /// `POST /mutate`, called directly.
    reviews: Arc<ReviewState>,
    /// Every other request: axum's 404 or 405.
    router: Router,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Connections {
    pub(super) fn new(
        acceptor: TlsAcceptor,
        config: &ServeConfig,
        reviews: Arc<ReviewState>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let timeouts = &config.timeouts;
        Self {
            acceptor,
            http1: http1_builder(timeouts.header_read, true),
            http1_once: http1_builder(timeouts.header_read, false),
            http2: http2_builder(config.limits.max_concurrent_streams),
            router: review::router(reviews.clone()),
            reviews,
            handshake_timeout: timeouts.tls_handshake,
            idle_timeout: timeouts.idle,
            metrics,
        }
    }

    pub(super) async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        slot: OwnedSemaphorePermit,
        lifetime: Lifetime,
    ) {
        let _slot = slot;
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
        let once = matches!(lifetime, Lifetime::OneReview(_));
        let builder = match (h2, once) {
            (true, _) => &self.http2,
            (false, false) => &self.http1,
            (false, true) => &self.http1_once,
        };

        // Only a connection closed after its first answer waits for answers.
        let activity = Arc::new(Activity::new(once));
        let tracked = activity.clone();
        let connections = self.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let request_guard = tracked.begin();
            let connections = connections.clone();
            connections.metrics.request_received();
            async move {
                let response = if review::is_review(request.method(), request.uri().path()) {
                    review::review(&connections.reviews, request).await
                } else {
                    match connections
                        .router
                        .clone()
                        .oneshot(request.map(Body::new))
                        .await
                    {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                };
                drop(request_guard);
                let metrics = connections.metrics.clone();
                Ok::<_, Infallible>(response.map(|body| Counted::new(body, metrics)))
            }
        });
        let connection = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(connection);
        let (mut stop, close_after_answer) = match lifetime {
            Lifetime::UntilClosing(stop) => (stop, false),
            Lifetime::OneReview(stop) => (stop, true),
        };
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = async {
                tokio::select! {
                    () = activity.idle(self.idle_timeout) => {
                        debug!(timeout = ?self.idle_timeout, "closing an idle connection");
                    }
                    _ = stop.wait_for(|stop| *stop) => {}
                    () = activity.answered(), if close_after_answer => {}
                }
            } => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            debug!(%error, "connection closed with an error");
        }
    }
}

/// Requests in flight on one connection, and when the last one ended.
///
/// A request ending wakes nobody unless someone waits for it: the idle
/// watch sleeps until the idle timeout would be reached and only then looks
/// at when the last request ended, so a busy connection costs no wake-up and
/// no new timer per request (they were a tenth of what the connection cost
/// besides the review).
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `started` to the end of the last request.
    last_end_ms: AtomicU64,
    answers: AtomicU64,
    /// Whether a request's end must be announced on `ended`: while the idle
    /// watch waits for requests in flight to end, and always on a connection
    /// that waits for its first answer.
    announce_ends: AtomicBool,
    always_announce: bool,
    ended: Notify,
}

/// Ends a request when dropped (answered, or abandoned by a reset stream).
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = u64::try_from(activity.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_end_ms.store(now, Ordering::SeqCst);
        activity.answers.fetch_add(1, Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
        // SeqCst on both sides: a watch that saw this request in flight had
        // set the flag before it looked, so the flag is seen here.
        if activity.always_announce || activity.announce_ends.load(Ordering::SeqCst) {
            activity.ended.notify_waiters();
        }
    }
}

impl Activity {
    fn new(always_announce: bool) -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            announce_ends: AtomicBool::new(false),
            always_announce,
            ended: Notify::new(),
        }
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        RequestGuard(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                let ended = self.ended.notified();
                tokio::pin!(ended);
                // Registered, and the ends announced, before looking again,
                // so an end in between is not missed.
                ended.as_mut().enable();
                self.announce_ends.store(true, Ordering::SeqCst);
                if self.in_flight.load(Ordering::SeqCst) > 0 {
                    ended.await;
                }
                self.announce_ends.store(false, Ordering::SeqCst);
                continue;
            }
            let last_end = Duration::from_millis(self.last_end_ms.load(Ordering::SeqCst));
            let idle_for = self.started.elapsed().saturating_sub(last_end);
            if idle_for >= timeout {
                return;
            }
            // Requests may come and go meanwhile: looked at when it fires.
            tokio::time::sleep(timeout - idle_for).await;
        }
    }

    /// Resolves once a request has been answered (for a connection made
    /// with `always_announce`).
    async fn answered(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.answers.load(Ordering::SeqCst) > 0 {
                return;
            }
            ended.await;
        }
    }
}

/// A response body that counts itself answered once it is handed to the
/// connection whole: requests taken against answers written, so that a
/// shutdown can tell whether it left one unanswered.
struct Counted {
    inner: Body,
    metrics: Arc<Metrics>,
    counted: AtomicBool,
}

impl Counted {
    fn new(inner: Body, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            metrics,
            counted: AtomicBool::new(false),
        }
    }

    fn done(&self) {
        if !self.counted.swap(true, Ordering::SeqCst) {
            self.metrics.response_sent();
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.done(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.done(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.done();
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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

fn http1_builder(header_read: Duration, keep_alive: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper starts this timer whenever it waits for a request head, so
        // it also closes keep-alive connections left idle this long.
        .header_read_timeout(header_read)
        .keep_alive(keep_alive);
    builder
}

fn http2_builder(max_concurrent_streams: u32) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    builder
        .http2()
        .timer(TokioTimer::new())
        // Stated rather than left to hyper's default: with the body budget,
        // what bounds the streams one client can keep open at once.
        .max_concurrent_streams(max_concurrent_streams)
        .keep_alive_interval(H2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_without_requests_for_the_timeout() {
        let activity = Arc::new(Activity::new(false));
        let timeout = Duration::from_secs(10);
        let guard = activity.begin();
        // A request in flight for longer than the timeout: not idle.
        assert!(
            tokio::time::timeout(Duration::from_secs(30), activity.idle(timeout))
                .await
                .is_err()
        );
        drop(guard);
        let ended = Instant::now();
        activity.idle(timeout).await;
        assert!(ended.elapsed() >= timeout);
        // A request ending restarts the clock.
        let guard = activity.begin();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(guard);
        assert!(
            tokio::time::timeout(Duration::from_secs(9), activity.idle(timeout))
                .await
                .is_err()
        );
        activity.answered().await;
    }
}
