//! Stand-ins for the workloads Prometheus scrapes, each serving `/metrics`
//! on its pod's address:
//!
//! - [`Behaviour::Plain`]: an application without a sidecar (node-exporter,
//!   kube-state-metrics, an ambient pod), or one of Istio's own plain-text
//!   listeners: plain HTTP only.
//! - [`Behaviour::Sidecar`]: an application behind an Istio sidecar. In
//!   STRICT mode it takes only TLS with a client certificate from the mesh CA
//!   and presents a workload certificate shaped like Istio's (a SPIFFE URI
//!   SAN, no DNS or IP SAN); plain text is refused. In PERMISSIVE mode it
//!   takes plain text, and refuses TLS from a client that is not Istio (a
//!   real sidecar passes such TLS through to the plain-text application),
//!   as Prometheus is. The mode can be switched while it serves, as istiod
//!   switches a sidecar when a PeerAuthentication changes.
//! - [`Behaviour::OwnTls`]: an application that serves TLS itself.
//!
//! A connection that a real one would refuse is closed at once, so a target
//! scraped over the wrong scheme is down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

#[derive(Clone)]
pub enum Behaviour {
    Plain,
    Sidecar {
        strict: Arc<AtomicBool>,
        mesh: TlsAcceptor,
    },
    OwnTls(TlsAcceptor),
}

/// Scrapes served, by scheme.
#[derive(Debug, Default)]
pub struct Hits {
    pub http: AtomicU64,
    pub https: AtomicU64,
    pub refused: AtomicU64,
}

/// Serves `behaviour` on `addr` until the runtime ends.
pub async fn serve(addr: SocketAddr, name: &'static str, behaviour: Behaviour, hits: Arc<Hits>) {
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("{name}: cannot listen on {addr}: {e}"));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(handle(stream, name, behaviour.clone(), hits.clone()));
        }
    });
}

async fn handle(stream: TcpStream, name: &'static str, behaviour: Behaviour, hits: Arc<Hits>) {
    let mut first = [0u8; 1];
    if !matches!(stream.peek(&mut first).await, Ok(1)) {
        return;
    }
    // A TLS connection starts with a handshake record.
    let tls = first[0] == 0x16;
    let acceptor = match (&behaviour, tls) {
        (Behaviour::Plain, false) => None,
        (Behaviour::Sidecar { strict, .. }, false) if !strict.load(Ordering::SeqCst) => None,
        (Behaviour::Sidecar { strict, mesh }, true) if strict.load(Ordering::SeqCst) => Some(mesh),
        (Behaviour::OwnTls(acceptor), true) => Some(acceptor),
        _ => {
            hits.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    match acceptor {
        None => respond(stream, name, "http", &hits.http).await,
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls) => respond(tls, name, "https", &hits.https).await,
            Err(_) => {
                hits.refused.fetch_add(1, Ordering::Relaxed);
            }
        },
    }
}

/// Answers every request on the connection with a metric naming the
/// target and the scheme it came over.
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    name: &str,
    scheme: &str,
    counter: &AtomicU64,
) {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buffer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(0)
            + 4;
        buffer.drain(..end);
        let served = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let body = format!(
            "# TYPE e2e_scrapes_total counter\ne2e_scrapes_total{{target=\"{name}\",scheme=\"{scheme}\"}} {served}\n"
        );
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}
