//! The TLS floor: what TLS and HTTP alone cost, for `scripts/bench-load.sh`.
//!
//! The webhook's serving stack without the webhook: tokio's multi-thread
//! runtime (workers = available parallelism, so `taskset -c 0` gives one, as
//! in the webhook), tokio-rustls with the `ring` provider (TLS 1.3 and 1.2,
//! ALPN `h2` then `http/1.1`), hyper-util serving HTTP/2 or HTTP/1.1 as ALPN
//! chose, `TCP_NODELAY`. Every POST has its body read to the end and gets one
//! constant AdmissionReview response: by default the webhook's own answer to
//! the fixture `pod-create-1.json`, computed once at start, so both servers put
//! the same bytes on the wire. No router, no JSON, no metrics, no logs, no
//! timeouts.
//!
//! ```text
//! cargo run --release --example tls_floor -- \
//!     --tls-cert DIR/tls.crt --tls-key DIR/tls.key --listen 127.0.0.1:9443 \
//!     [--response-for path/to/admission-review.json]
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

struct Args {
    cert: PathBuf,
    key: PathBuf,
    listen: SocketAddr,
    response_for: PathBuf,
}

fn args() -> Args {
    let mut cert = None;
    let mut key = None;
    let mut listen: SocketAddr = "127.0.0.1:9443".parse().unwrap();
    let mut response_for = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission/pod-create-1.json");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--tls-cert" => cert = Some(PathBuf::from(value())),
            "--tls-key" => key = Some(PathBuf::from(value())),
            "--listen" => listen = value().parse().expect("--listen ADDR:PORT"),
            "--response-for" => response_for = PathBuf::from(value()),
            "-h" | "--help" => {
                eprintln!(
                    "tls_floor --tls-cert FILE --tls-key FILE [--listen ADDR] [--response-for REVIEW.json]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    Args {
        cert: cert.expect("--tls-cert FILE"),
        key: key.expect("--tls-key FILE"),
        listen,
        response_for,
    }
}

fn tls_config(args: &Args) -> ServerConfig {
    let cert_pem = std::fs::read(&args.cert).unwrap();
    let key_pem = std::fs::read(&args.key).unwrap();
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&key_pem).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// The webhook's answer to the review in `path`, as bytes.
fn constant_response(path: &PathBuf) -> Bytes {
    let body = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let config = prom_mtls_webhook::mutation::MutationConfig::default();
    let reviewed = prom_mtls_webhook::admission::review(&body, &config, rules()).unwrap();
    Bytes::from(reviewed.body)
}

async fn answer(
    request: Request<Incoming>,
    response: Bytes,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != hyper::Method::POST {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return Ok(r);
    }
    // Read the whole body, as the webhook must before it can answer.
    let read = request.into_body().collect().await;
    let mut r = Response::new(Full::new(if read.is_ok() {
        response
    } else {
        Bytes::new()
    }));
    if read.is_err() {
        *r.status_mut() = StatusCode::BAD_REQUEST;
    }
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn main() {
    let args = args();
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&args)));
    let response = constant_response(&args.response_for);
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen).await.unwrap();
        eprintln!(
            "tls_floor: listening on {} ({workers} worker(s), {} byte response)",
            listener.local_addr().unwrap(),
            response.len()
        );
        let mut http1 = auto::Builder::new(TokioExecutor::new()).http1_only();
        http1.http1().keep_alive(true);
        let http1 = Arc::new(http1);
        let http2 = Arc::new(auto::Builder::new(TokioExecutor::new()).http2_only());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let response = response.clone();
            let (http1, http2) = (http1.clone(), http2.clone());
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let service =
                    hyper::service::service_fn(move |request| answer(request, response.clone()));
                let builder = if h2 { &http2 } else { &http1 };
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
}

/// The scrape class's rules for a mesh taken as STRICT.
fn rules() -> &'static serde_json::Value {
    static RULES: std::sync::LazyLock<prom_mtls_webhook::mesh::Rendering> =
        std::sync::LazyLock::new(prom_mtls_webhook::mesh::Rendering::assumed_strict);
    &RULES.relabelings
}
