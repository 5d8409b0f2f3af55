//! prom-mtls-webhook: a Kubernetes mutating admission webhook that wires
//! Prometheus to Istio's workload certificates and switches scrapes to mTLS.
//!
//! The pure core ([`mutation`], [`admission`], [`mesh`]'s composition and
//! rendering, [`yaml`], [`preview`]) does no I/O; the server, TLS, admin
//! endpoints, the mesh watch and the CLI are layered on top of it.

pub mod admission;
pub mod mesh;
pub mod mutation;
pub mod preview;
pub mod yaml;

// The server and the command line.
pub mod admin;
pub mod certs;
pub mod cli;
pub mod commands;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod ordering;
pub mod server;
pub mod shutdown;
pub mod tls;
