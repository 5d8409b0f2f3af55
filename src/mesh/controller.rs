//! The watch on the mesh, and the scrape class kept current.
//!
//! - PeerAuthentications (`security.istio.io/v1`, all namespaces) are
//!   watched with kube-runtime's watcher into a store; on every change the
//!   whole set is composed again ([`MeshPolicy::compose`]) and rendered
//!   ([`super::relabel::render`]). The rendering is what the admission path
//!   gives a new `Prometheus`, and what existing ones must carry.
//! - `Prometheus` and `PrometheusAgent` resources are watched the same way.
//!   Whenever the rendering or one of them changes (and every `resync`
//!   regardless), each resource that has not opted out and whose class is
//!   not the current rendering gets it by server-side apply of that one
//!   list entry: one field manager, forced (the entry is this webhook's, a
//!   user's `kubectl apply` may have taken it over), and `metadata.uid` set
//!   so that a resource deleted meanwhile is not created anew.
//! - Namespaces the webhook never changes objects in are left alone here
//!   too, as the webhook configuration's `namespaceSelector` leaves them
//!   out of admission: those named by `--exclude-namespaces` (the chart:
//!   `kube-system`, `kube-node-lease`, its own) and those labelled
//!   `<prefix>inject=disabled`, which a third watch follows. A class there
//!   would point Prometheus at certificate files that admission never
//!   arranged for.
//! - Every replica runs this. They compute the same rendering from the
//!   same policies and write only where the stored class differs from it,
//!   so once their watches agree none of them writes; two replicas writing
//!   the same apply at once both succeed without a conflict. A write that
//!   does not stick (the API server dropped fields: an operator's CRDs older
//!   than 0.74) is tried [`MAX_ATTEMPTS`] times per rendering, then reported.
//!
//! Where PeerAuthentications cannot be read (no Istio CRDs, no permission,
//! no API server) every sidecar target is taken as STRICT, the seeds'
//! premise; this is logged and exported as the mode source, and the watch
//! keeps retrying, so installing Istio later switches to the real modes.
//!
//! This module holds the state and the entry point; the watches and the
//! writer, which talk to the API server, are in [`super::watch`], built
//! with the `kubernetes` feature (on by default). A build without it (the
//! quick dev build) behaves as when no API server can be reached.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tracing::info;

use super::{MeshMtls, ModeSource, MtlsMode, Rendering};
use crate::metrics::Metrics;
use crate::mutation::MutationConfig;

/// The controller's settings (`--mesh-*` flags).
#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub mode: MeshMtls,
    /// Where a selector-less PeerAuthentication sets the mesh-wide mode
    /// (Istio's `meshConfig.rootNamespace`).
    pub root_namespace: String,
    /// The server-side apply field manager that owns the class entry.
    pub field_manager: String,
    /// A full pass over every resource this often, whatever happened.
    pub resync: Duration,
    /// Changes arriving within this time are handled in one pass.
    pub debounce: Duration,
    /// Ready without an answer from the API server after this long (then
    /// assuming STRICT until the watch answers), so that an API server that
    /// cannot be reached does not keep every replica out of the Service.
    pub startup_grace: Duration,
    /// Namespaces whose resources never get the class (besides those
    /// labelled `<prefix>inject=disabled`).
    pub excluded_namespaces: Vec<String>,
    /// Whether to talk to a Kubernetes API at all (found as kubectl finds
    /// it: in-cluster, `KUBECONFIG`, `~/.kube/config`). Off for `--dev`,
    /// tests and embedders: a laptop's kubeconfig may point at a real cluster.
    pub use_api: bool,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            mode: MeshMtls::Watch,
            root_namespace: "istio-system".into(),
            field_manager: "prom-mtls-webhook".into(),
            resync: Duration::from_secs(300),
            debounce: Duration::from_millis(200),
            startup_grace: Duration::from_secs(10),
            excluded_namespaces: vec!["kube-system".into(), "kube-node-lease".into()],
            use_api: true,
        }
    }
}

/// The rendering in force, shared with the admission path and readiness.
#[derive(Debug)]
pub struct MeshState {
    rendering: ArcSwap<Rendering>,
    /// The modes are known (or the webhook has settled on assuming them).
    decided: AtomicBool,
}

impl MeshState {
    /// What the webhook starts with: for `--mesh-mtls=strict|permissive`
    /// the final answer; for `watch`, STRICT until the watch has listed.
    pub fn new(mode: MeshMtls) -> Self {
        let (rendering, decided) = match mode {
            MeshMtls::Watch => (Rendering::assumed_strict(), false),
            MeshMtls::Strict => (Rendering::uniform(ModeSource::Flag, MtlsMode::Strict), true),
            MeshMtls::Permissive => (
                Rendering::uniform(ModeSource::Flag, MtlsMode::Permissive),
                true,
            ),
        };
        Self {
            rendering: ArcSwap::from_pointee(rendering),
            decided: AtomicBool::new(decided),
        }
    }

    pub fn current(&self) -> Arc<Rendering> {
        self.rendering.load_full()
    }

    pub fn is_decided(&self) -> bool {
        self.decided.load(Ordering::SeqCst)
    }

    /// Replaces the rendering; `true` if it differs from the one in force.
    // Only the watch changes the rendering (and the tests).
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
    pub(super) fn set(&self, rendering: Rendering) -> bool {
        let changed = *self.rendering.load_full() != rendering;
        if changed {
            self.rendering.store(Arc::new(rendering));
        }
        changed
    }

    pub(super) fn decide(&self) {
        self.decided.store(true, Ordering::SeqCst);
    }
}
/// Runs the watches and the writer until the task is aborted.
pub async fn run(
    config: MeshConfig,
    mutation: Arc<MutationConfig>,
    state: Arc<MeshState>,
    metrics: Arc<Metrics>,
) {
    let current = state.current();
    metrics.mesh_rendered(&current, current.relabelings.as_array().map_or(0, Vec::len));
    if !config.use_api {
        if config.mode == MeshMtls::Watch {
            info!(
                "mesh: no Kubernetes API in this mode (--dev): every sidecar target is taken as STRICT"
            );
        }
        state.decide();
        return;
    }
    #[cfg(feature = "kubernetes")]
    super::watch::run(config, mutation, state, metrics).await;
    #[cfg(not(feature = "kubernetes"))]
    {
        let _ = mutation;
        tracing::warn!(
            "built without the `kubernetes` feature: PeerAuthentications are not watched, every sidecar target is taken as STRICT, and the scrape class of existing Prometheus resources is not kept"
        );
        state.decide();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::MeshPolicy;

    #[test]
    fn starts_strict_until_the_watch_answers_unless_told() {
        let watch = MeshState::new(MeshMtls::Watch);
        assert!(!watch.is_decided());
        assert_eq!(watch.current().source, ModeSource::AssumedStrict);
        let permissive = MeshState::new(MeshMtls::Permissive);
        assert!(permissive.is_decided());
        assert_eq!(permissive.current().policy.mesh, MtlsMode::Permissive);
        assert_eq!(permissive.current().source, ModeSource::Flag);
    }

    #[test]
    fn only_a_different_rendering_counts_as_a_change() {
        let state = MeshState::new(MeshMtls::Watch);
        assert!(!state.set(Rendering::assumed_strict()));
        assert!(state.set(Rendering::new(
            ModeSource::Watch,
            MeshPolicy::uniform(MtlsMode::Permissive)
        )));
        assert!(!state.set(Rendering::new(
            ModeSource::Watch,
            MeshPolicy::uniform(MtlsMode::Permissive)
        )));
    }
}
