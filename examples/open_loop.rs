//! An open-loop load generator for `scripts/bench-load.sh`: requests sent at
//! a constant rate whatever the server does, each timed from when it was
//! due (wrk2's method), so that a server that stalls is charged for every
//! request that came due meanwhile.
//!
//! ```text
//! open_loop --url https://127.0.0.1:18443/mutate?timeout=10s --ca ca.crt \
//!     --body review.json --rate 30000 [--connections 16] [--duration 10] [--warmup 1]
//! ```
//!
//! Why not oha's `-q`: it paces requests with tokio's timer, whose
//! granularity is a millisecond, so at tens of thousands of requests per
//! second they leave in bursts and the latency it corrects for includes
//! up to a millisecond of its own; and it keeps every result in a vector
//! that doubles as it grows, whose copies stall it for milliseconds at
//! 2^16, 2^17, 2^18 results (seen as latency spikes at exactly those
//! counts). Here the schedule is kept by polling the clock (the load
//! generator has its CPU to itself), and the latencies go to a vector sized
//! for the whole run before it starts.
//!
//! Each of `--connections` keep-alive HTTP/1.1 connections takes every
//! `connections`-th request of the schedule, in order; a request due while
//! its connection is busy waits, and that wait is part of its latency.
//! Prints one JSON line: the rate asked and achieved, latency percentiles
//! in milliseconds (after the warm-up), errors.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

struct Args {
    url: Uri,
    ca: PathBuf,
    body: PathBuf,
    rate: f64,
    connections: usize,
    duration: Duration,
    warmup: Duration,
}

fn args() -> Args {
    let mut url = None;
    let mut ca = None;
    let mut body = None;
    let mut rate = None;
    let (mut connections, mut duration, mut warmup) = (16, 10.0, 1.0);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(value.parse::<Uri>().expect("--url")),
            "--ca" => ca = Some(PathBuf::from(value)),
            "--body" => body = Some(PathBuf::from(value)),
            "--rate" => rate = Some(value.parse::<f64>().expect("--rate requests/s")),
            "--connections" => connections = value.parse().expect("--connections N"),
            "--duration" => duration = value.parse().expect("--duration seconds"),
            "--warmup" => warmup = value.parse().expect("--warmup seconds"),
            other => panic!("unknown argument {other}"),
        }
    }
    Args {
        url: url.expect("--url https://HOST:PORT/PATH"),
        ca: ca.expect("--ca FILE"),
        body: body.expect("--body FILE"),
        rate: rate.expect("--rate R"),
        connections,
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
    }
}

/// What one connection measured: latencies (µs) of requests due after the
/// warm-up, and errors.
struct Measured {
    micros: Vec<u32>,
    errors: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = args();
    let body = Bytes::from(std::fs::read(&args.body).unwrap());
    let tls = tls_connector(&args.ca);
    let host = args.url.host().expect("--url has a host").to_owned();
    let port = args.url.port_u16().unwrap_or(443);
    let server_name = ServerName::try_from(host.clone()).unwrap();

    let total = (args.rate * (args.warmup + args.duration).as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let per_connection = total / args.connections + 1;
    let start = Instant::now() + Duration::from_millis(200);
    let measured_from = start + args.warmup;

    let mut queues = Vec::with_capacity(args.connections);
    let mut connections = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let tcp = TcpStream::connect((host.as_str(), port)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let stream = tls.connect(server_name.clone(), tcp).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        // Bounded by the run: a queue per connection of the times its
        // requests are due.
        let (due, mut dues) = mpsc::unbounded_channel::<Instant>();
        queues.push(due);
        let (url, body) = (args.url.clone(), body.clone());
        connections.push(tokio::spawn(async move {
            let mut measured = Measured {
                micros: Vec::with_capacity(per_connection),
                errors: 0,
            };
            while let Some(due) = dues.recv().await {
                let request = Request::post(url.clone())
                    .header(hyper::header::HOST, url.authority().unwrap().as_str())
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let ok = match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                let took = due.elapsed();
                if due >= measured_from {
                    if ok {
                        measured
                            .micros
                            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    } else {
                        measured.errors += 1;
                    }
                }
            }
            measured
        }));
    }

    // The schedule: request i is due at start + i * interval, on connection
    // i % connections. The clock is polled, yielding to the connections
    // between looks, so a request leaves within microseconds of its time.
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        while Instant::now() < due {
            tokio::task::yield_now().await;
        }
        queues[i % args.connections].send(due).unwrap();
    }
    let sent_by = Instant::now();
    drop(queues);
    let mut micros = Vec::with_capacity(total);
    let mut errors = 0;
    for connection in connections {
        let measured = connection.await.unwrap();
        micros.extend(measured.micros);
        errors += measured.errors;
    }
    micros.sort_unstable();
    let percentile = |p: f64| {
        let index = ((micros.len() as f64 - 1.0) * p).round() as usize;
        f64::from(micros.get(index).copied().unwrap_or(0)) / 1000.0
    };
    let achieved = total as f64 / sent_by.duration_since(start).as_secs_f64();
    println!(
        "{{\"rate\":{},\"sent_rate\":{:.0},\"connections\":{},\"measured\":{},\"errors\":{},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"p999_ms\":{:.3},\"max_ms\":{:.3}}}",
        args.rate,
        achieved,
        args.connections,
        micros.len(),
        errors,
        percentile(0.5),
        percentile(0.9),
        percentile(0.99),
        percentile(0.999),
        percentile(1.0)
    );
}

fn tls_connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}
