//! Which targets need mTLS: Istio's PeerAuthentications composed into one
//! mode per workload and port ([`compose`]), rendered as the relabel rules
//! of the `istio-mtls` scrape class ([`relabel`]); and the watch that keeps
//! that class current on every `Prometheus` and `PrometheusAgent`
//! ([`controller`], and `watch` for its API server side).
//!
//! [`policy`], [`compose`] and [`relabel`] are pure: policies in, rules out.

pub mod compose;
pub mod controller;
pub mod policy;
pub mod relabel;
#[cfg(feature = "kubernetes")]
mod watch;

use std::sync::Arc;

use serde_json::Value;

pub use compose::MeshPolicy;
pub use policy::{MtlsMode, PeerAuthentication};
pub use relabel::Relabeling;

/// `--mesh-mtls`: where the modes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshMtls {
    /// Watch PeerAuthentications; where they cannot be read, assume STRICT.
    Watch,
    /// Every sidecar target is STRICT (the seeds' premise).
    Strict,
    /// Every sidecar target is PERMISSIVE: nothing is scraped over https.
    Permissive,
}

/// Where the modes in force come from; a metric label and a log field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModeSource {
    /// The watched PeerAuthentications.
    Watch,
    /// PeerAuthentications cannot be read (no Istio CRDs, no permission, no
    /// cluster): every sidecar target is taken as STRICT.
    AssumedStrict,
    /// `--mesh-mtls=strict|permissive`.
    Flag,
}

impl ModeSource {
    pub const ALL: [Self; 3] = [Self::Watch, Self::AssumedStrict, Self::Flag];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Watch => "watch",
            Self::AssumedStrict => "assumed_strict",
            Self::Flag => "flag",
        }
    }
}

/// The relabel rules in force, ready for the admission path (which adds the
/// class to new `Prometheus` resources) and the controller (which rewrites
/// it on existing ones).
#[derive(Clone, Debug, PartialEq)]
pub struct Rendering {
    pub source: ModeSource,
    pub policy: MeshPolicy,
    /// The rules as the class's `relabelings` (a JSON array).
    pub relabelings: Arc<Value>,
}

impl Rendering {
    pub fn new(source: ModeSource, policy: MeshPolicy) -> Self {
        let rules = relabel::render(&policy);
        // Serialising plain structs of strings cannot fail.
        let relabelings = serde_json::to_value(&rules).unwrap_or(Value::Array(Vec::new()));
        Self {
            source,
            policy,
            relabelings: Arc::new(relabelings),
        }
    }

    /// What a mode given on the command line renders (`--mesh-mtls`
    /// strict/permissive, or the offline preview's assumption).
    pub fn uniform(source: ModeSource, mode: MtlsMode) -> Self {
        Self::new(source, MeshPolicy::uniform(mode))
    }

    /// Where nothing is known yet, or nothing can be: STRICT, the seeds' premise.
    pub fn assumed_strict() -> Self {
        Self::uniform(ModeSource::AssumedStrict, MtlsMode::Strict)
    }
}
