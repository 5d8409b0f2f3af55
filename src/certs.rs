//! Throwaway certificates: a CA and serving certificates signed by it
//! (ECDSA P-256), for `serve --dev`, the `certs` command and tests.
//!
//! In a cluster the serving certificate comes from cert-manager or the Helm
//! chart; these are for a laptop, a CI job, or a quick manual install.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};

pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// A CA that issues serving certificates.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A serving certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct ServingPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What `certs` writes: the CA to trust, and the pair to serve.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub ca_pem: String,
    pub serving: ServingPair,
}

impl Authority {
    /// A new self-signed CA valid for `days` days.
    pub fn new(days: u32) -> Result<Self, CertsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name("prom-mtls-webhook CA");
        // pathlen 0: this CA signs serving certificates, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, days);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, key)?,
        })
    }

    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A serving certificate for these names, valid for `days` days, with a
    /// fresh key (so every call yields a distinct pair).
    pub fn issue(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        days: u32,
    ) -> Result<ServingPair, CertsError> {
        let mut params = CertificateParams::default();
        let common_name = dns_names
            .first()
            .map(String::as_str)
            .unwrap_or("prom-mtls-webhook");
        params.distinguished_name = name(common_name);
        params.subject_alt_names = dns_names
            .iter()
            .map(|dns| Ok(SanType::DnsName(dns.clone().try_into()?)))
            .chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, rcgen::Error>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, days);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServingPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A new CA and one serving certificate from it, both valid for `days` days.
pub fn generate(dns_names: &[String], ips: &[IpAddr], days: u32) -> Result<Bundle, CertsError> {
    let authority = Authority::new(days)?;
    let serving = authority.issue(dns_names, ips, days)?;
    Ok(Bundle {
        ca_pem: authority.ca_pem(),
        serving,
    })
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`, creating it.
pub fn write_bundle(dir: &Path, bundle: &Bundle) -> Result<(), CertsError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertsError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(failed(dir))?;
    let ca = dir.join(CA_FILE);
    fs::write(&ca, &bundle.ca_pem).map_err(failed(&ca))?;
    let cert = dir.join(CERT_FILE);
    fs::write(&cert, &bundle.serving.cert_pem).map_err(failed(&cert))?;
    let key = dir.join(KEY_FILE);
    write_private(&key, bundle.serving.key_pem.as_bytes()).map_err(failed(&key))?;
    Ok(())
}

/// Writes a file only its owner can read. The mode is set at creation, so
/// the key is never readable by others, not even for an instant; an existing
/// file is narrowed to 0600 as well.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for clocks that run behind ours.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_distinct_pairs_from_one_authority() {
        let authority = Authority::new(1).unwrap();
        let names = ["localhost".to_owned()];
        let first = authority.issue(&names, &[], 1).unwrap();
        let second = authority.issue(&names, &[], 1).unwrap();
        assert_ne!(first.cert_pem, second.cert_pem);
        assert_ne!(first.key_pem, second.key_pem);
        assert!(first.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(first.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn refuses_an_invalid_dns_name() {
        let authority = Authority::new(1).unwrap();
        assert!(
            authority
                .issue(&["bäd.example".to_owned()], &[], 1)
                .is_err()
        );
    }
}
