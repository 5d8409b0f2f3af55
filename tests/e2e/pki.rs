//! The certificates of the scenario: the control plane's (serving, client,
//! service-account signing), and a test mesh CA that issues workload
//! certificates shaped like Istio's: a SPIFFE URI SAN and nothing else.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};

/// A CA and what it signs.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a leaf is for.
pub enum Leaf<'a> {
    /// A TLS server for these DNS names and IPs.
    Server {
        dns: &'a [&'a str],
        ips: &'a [IpAddr],
    },
    /// A client, `CN`/`O` as the API server reads them (user, groups).
    Client {
        user: &'a str,
        groups: &'a [&'a str],
    },
    /// A mesh workload: only `spiffe://cluster.local/ns/<ns>/sa/<sa>`, for
    /// both ends of an mTLS connection, as Istio issues them.
    Workload {
        namespace: &'a str,
        service_account: &'a str,
    },
}

fn validity(params: &mut CertificateParams) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(2);
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        validity(&mut params);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn issue(&self, leaf: Leaf<'_>) -> Pair {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        match &leaf {
            Leaf::Server { dns, ips } => {
                dn.push(DnType::CommonName, dns.first().copied().unwrap_or("server"));
                params.subject_alt_names = dns
                    .iter()
                    .map(|d| SanType::DnsName((*d).try_into().unwrap()))
                    .chain(ips.iter().map(|ip| SanType::IpAddress(*ip)))
                    .collect();
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
            Leaf::Client { user, groups } => {
                dn.push(DnType::CommonName, *user);
                for group in *groups {
                    dn.push(DnType::OrganizationName, *group);
                }
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            Leaf::Workload {
                namespace,
                service_account,
            } => {
                let id = format!("spiffe://cluster.local/ns/{namespace}/sa/{service_account}");
                params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
                params.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
            }
        }
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A key pair for the API server's service-account tokens (private PEM, public PEM).
pub fn signing_key() -> (String, String) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    (key.serialize_pem(), key.public_key_pem())
}
