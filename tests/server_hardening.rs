//! The connection-level limits: TLS versions and ALPN, the TLS handshake
//! timeout, the header read timeout (which also ends idle keep-alive
//! connections), and the bound on concurrent connections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Long enough to be sure, for a server that closes after 300ms.
const CLOSED_WITHIN: Duration = Duration::from_secs(5);

async fn handshake(
    server: &TestServer,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(common::der_of(&server.certs.ca_pem).into())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(server.webhook_addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until the server closes the connection; panics if it does not.
async fn assert_closed_by_server<S: AsyncReadExt + Unpin>(stream: &mut S) {
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(CLOSED_WITHIN, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closes the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_are_served_and_alpn_picks_the_protocol() {
    let server = TestServer::start().await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let stream = handshake(&server, &[version], &[b"h2", b"http/1.1"]).await;
        let (_, connection) = stream.get_ref();
        assert_eq!(connection.protocol_version(), Some(version.version));
        assert_eq!(connection.alpn_protocol(), Some(&b"h2"[..]));
    }
    let stream = handshake(&server, &[&rustls::version::TLS13], &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    // No ALPN at all: HTTP/1.1.
    let mut stream = handshake(&server, &[&rustls::version::TLS13], &[]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    common::send(
        &mut stream,
        b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    let (status, _, _) = common::read_response(&mut stream).await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_completes_the_tls_handshake_is_dropped() {
    let server = TestServer::start_with(|config| {
        config.timeouts.tls_handshake = Duration::from_millis(300);
    })
    .await;
    let mut tcp = TcpStream::connect(server.webhook_addr).await.unwrap();
    assert_closed_by_server(&mut tcp).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_keep_alive_connections_are_closed() {
    let server = TestServer::start_with(|config| {
        config.timeouts.header_read = Duration::from_millis(300);
    })
    .await;

    // Half a request head, never finished.
    let mut slow = common::raw_tls(server.webhook_addr, &server.certs.ca_pem).await;
    common::send(&mut slow, b"POST /mutate HTTP/1.1\r\nhost: loc").await;
    assert_closed_by_server(&mut slow).await;

    // One review answered, then silence.
    let mut idle = common::raw_tls(server.webhook_addr, &server.certs.ca_pem).await;
    common::send(
        &mut idle,
        b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    let (status, _, _) = common::read_response(&mut idle).await;
    assert_eq!(status, 400);
    assert_closed_by_server(&mut idle).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_wait_until_a_slot_frees() {
    let server = TestServer::start_with(|config| config.limits.max_connections = 1).await;
    let first = common::raw_tls(server.webhook_addr, &server.certs.ca_pem).await;

    // The second connection is not accepted while the first holds the slot:
    // its TCP connection sits in the backlog and its handshake cannot finish.
    let ca = server.certs.ca_pem.clone();
    let addr = server.webhook_addr;
    let mut second = tokio::spawn(async move { common::raw_tls(addr, &ca).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "the second handshake waits for a slot"
    );

    drop(first);
    let mut second = tokio::time::timeout(Duration::from_secs(10), &mut second)
        .await
        .expect("the freed slot goes to the waiting connection")
        .unwrap();
    common::send(
        &mut second,
        b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    let (status, _, _) = common::read_response(&mut second).await;
    assert_eq!(status, 400);
    server.stop().await;
}
