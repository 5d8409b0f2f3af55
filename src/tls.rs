//! The serving certificate, swapped without a restart.
//!
//! Every TLS handshake asks [`CertResolver`] for the current pair, a lock-free
//! load from an [`ArcSwap`]. [`Reloader`] polls the certificate and key files
//! and swaps in a new pair once both parse and belong together; anything else
//! is refused and the last good pair keeps being served.
//!
//! Polling, not inotify: the kubelet updates a Secret volume by writing a new
//! `..<timestamp>` directory and renaming a `..data` symlink over the old one,
//! and `tls.crt`/`tls.key` are symlinks through `..data`. Reading the paths
//! (which follows symlinks) every few seconds sees that swap with no special
//! case, on any filesystem, and costs two small reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{error, info};

use crate::metrics::Metrics;

/// ALPN: HTTP/2 first (the API server speaks it), HTTP/1.1 for everyone else.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a certificate/key pair was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the certificate file holds no PEM certificate")]
    NoCertificate,
    #[error("the certificate file is not valid PEM: {0}")]
    CertificatePem(rustls_pki_types::pem::Error),
    #[error("the key file holds no PEM private key: {0}")]
    KeyPem(rustls_pki_types::pem::Error),
    #[error("the certificate or key is unusable: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("the certificate cannot be parsed: {0}")]
    X509(String),
}

/// A parsed pair, ready to serve, with what the metrics want to know about it.
#[derive(Clone, Debug)]
pub struct ServingCert {
    pub key: Arc<CertifiedKey>,
    /// The leaf's notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// The crypto provider everything TLS in this process uses: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM chain (leaf first) and a PEM private key, and checks that the
/// key belongs to the leaf (`CertifiedKey::from_der` compares their public
/// keys): a mismatched pair would fail every handshake.
pub fn parse_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<ServingCert, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(CertError::CertificatePem)?;
    let leaf = chain.first().ok_or(CertError::NoCertificate)?;
    let not_after = not_after(leaf)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(CertError::KeyPem)?;
    let key = CertifiedKey::from_der(chain, key, provider)?;
    Ok(ServingCert {
        key: Arc::new(key),
        not_after,
    })
}

fn not_after(leaf: &CertificateDer<'_>) -> Result<i64, CertError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| CertError::X509(e.to_string()))?;
    Ok(cert.validity().not_after.timestamp())
}

/// The pair every new handshake gets.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        Self {
            current: ArcSwap::new(initial),
        }
    }

    /// Serve `key` from the next handshake on; connections already
    /// established keep the pair they started with.
    pub fn swap(&self, key: Arc<CertifiedKey>) {
        self.current.store(key);
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, certificates from `resolver`.
pub fn server_config(
    resolver: Arc<CertResolver>,
    provider: Arc<CryptoProvider>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// Reads both files (following symlinks).
pub async fn read_pair(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| CertError::Read { path, source })
        }
    };
    Ok((read(cert).await?, read(key).await?))
}

/// Polls the certificate and key files and swaps in new pairs.
pub struct Reloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    interval: Duration,
    provider: Arc<CryptoProvider>,
    /// What the files held at the last look (bytes, or why they could not be
    /// read): a pair is judged once when it appears, so a broken pair left in
    /// place is logged and counted once, not at every poll.
    last_seen: Seen,
}

#[derive(PartialEq, Eq)]
enum Seen {
    Pair(Vec<u8>, Vec<u8>),
    Unreadable(String),
}

impl Reloader {
    /// `loaded` is the pair already being served, read from these paths.
    pub fn new(
        cert_path: PathBuf,
        key_path: PathBuf,
        interval: Duration,
        provider: Arc<CryptoProvider>,
        loaded: (Vec<u8>, Vec<u8>),
    ) -> Self {
        Self {
            cert_path,
            key_path,
            interval,
            provider,
            last_seen: Seen::Pair(loaded.0, loaded.1),
        }
    }

    /// Polls forever; cancel by dropping (aborting) the task.
    pub async fn run(mut self, resolver: Arc<CertResolver>, metrics: Arc<Metrics>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate; the pair is fresh
        loop {
            ticks.tick().await;
            self.poll(&resolver, &metrics).await;
        }
    }

    /// One look at the files: swap, refuse, or nothing new.
    pub async fn poll(&mut self, resolver: &CertResolver, metrics: &Metrics) {
        let seen = match read_pair(&self.cert_path, &self.key_path).await {
            Ok((cert, key)) => Seen::Pair(cert, key),
            Err(error) => Seen::Unreadable(error.to_string()),
        };
        if seen == self.last_seen {
            return;
        }
        match &seen {
            Seen::Pair(cert, key) => match parse_pair(cert, key, &self.provider) {
                Ok(serving) => {
                    resolver.swap(serving.key);
                    metrics.certificate_loaded(serving.not_after);
                    metrics.certificate_reloaded();
                    info!(
                        cert = %self.cert_path.display(),
                        not_after = serving.not_after,
                        "serving a new certificate"
                    );
                }
                Err(error) => {
                    metrics.certificate_reload_failed();
                    error!(
                        cert = %self.cert_path.display(),
                        key = %self.key_path.display(),
                        %error,
                        "refused the new certificate and key; still serving the previous pair"
                    );
                }
            },
            Seen::Unreadable(error) => {
                metrics.certificate_reload_failed();
                error!(%error, "cannot read the certificate or key; still serving the previous pair");
            }
        }
        self.last_seen = seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::Authority;

    fn pair() -> (String, String) {
        let authority = Authority::new(1).unwrap();
        let pair = authority.issue(&["localhost".into()], &[], 1).unwrap();
        (pair.cert_pem, pair.key_pem)
    }

    #[test]
    fn accepts_a_matching_pair_and_reads_its_expiry() {
        let (cert, key) = pair();
        let serving = parse_pair(cert.as_bytes(), key.as_bytes(), &provider()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(serving.not_after > now && serving.not_after <= now + 86_400 + 60);
    }

    #[test]
    fn refuses_a_key_that_belongs_to_another_certificate() {
        let (cert, _) = pair();
        let (_, other_key) = pair();
        let error = parse_pair(cert.as_bytes(), other_key.as_bytes(), &provider()).unwrap_err();
        assert!(matches!(error, CertError::Rustls(_)), "{error}");
    }

    #[test]
    fn refuses_garbage() {
        let (cert, key) = pair();
        let p = provider();
        assert!(matches!(
            parse_pair(b"", key.as_bytes(), &p),
            Err(CertError::NoCertificate)
        ));
        assert!(parse_pair(cert.as_bytes(), b"not a key", &p).is_err());
        let truncated = &cert.as_bytes()[..cert.len() / 2];
        assert!(parse_pair(truncated, key.as_bytes(), &p).is_err());
    }
}
