//! Istio's composition of PeerAuthentications into one mode per workload and
//! port, as istiod computes it (`ComposePeerAuthentication` in
//! `pilot/pkg/security/authn/policy_applier.go`):
//!
//! - the mode starts PERMISSIVE;
//! - the oldest selector-less policy in the root namespace sets the mesh mode;
//! - the oldest selector-less policy in the workload's namespace overrides it;
//! - the oldest policy of that namespace whose selector matches the pod's
//!   labels overrides that, and its `portLevelMtls` overrides it for one
//!   (container) port;
//! - `UNSET` at any level inherits from the level above; selector policies
//!   in the root namespace are ignored; "oldest" is by creation time, then
//!   by `name.namespace`.
//!
//! [`MeshPolicy::compose`] reduces the policies to that structure once;
//! [`MeshPolicy::mode_for`] answers for one workload (the reference that the
//! rendered relabel rules are tested against).

use std::collections::BTreeMap;

use super::policy::{MtlsMode, PeerAuthentication};

/// The mesh's effective policy: policies in, modes per namespace, workload
/// and port out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshPolicy {
    /// The mesh-wide mode: never `Unset`.
    pub mesh: MtlsMode,
    /// Namespaces whose own namespace-wide policy sets a mode (an `UNSET`
    /// one inherits the mesh mode and is not listed). Never the root namespace.
    pub namespaces: BTreeMap<String, MtlsMode>,
    /// Selector policies, in precedence order: for a pod, the first one of
    /// its namespace whose selector its labels satisfy is the one that applies.
    pub workloads: Vec<WorkloadPolicy>,
}

/// A policy with a selector, outside the root namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadPolicy {
    pub namespace: String,
    pub name: String,
    pub selector: BTreeMap<String, String>,
    /// `None`: UNSET, the namespace's mode applies.
    pub mode: Option<MtlsMode>,
    /// By container port; `None`: UNSET, the workload's mode applies.
    pub ports: BTreeMap<u32, Option<MtlsMode>>,
}

impl WorkloadPolicy {
    fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespace == namespace
            && self
                .selector
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
    }
}

impl MeshPolicy {
    /// Every sidecar in the same mode, whatever the policies: what
    /// `--mesh-mtls=strict|permissive` means, and what is assumed where the
    /// policies cannot be read.
    pub fn uniform(mode: MtlsMode) -> Self {
        Self {
            mesh: mode.set().unwrap_or(MtlsMode::Permissive),
            namespaces: BTreeMap::new(),
            workloads: Vec::new(),
        }
    }

    /// Composes `policies` (in any order) the way istiod does.
    pub fn compose(policies: &[PeerAuthentication], root_namespace: &str) -> Self {
        let mut ordered: Vec<&PeerAuthentication> = policies.iter().collect();
        ordered.sort_by(|a, b| {
            if a.precedes(b) {
                std::cmp::Ordering::Less
            } else if b.precedes(a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });

        let mut mesh = None;
        // The oldest namespace-wide policy of each namespace wins its scope,
        // even when it is UNSET: newer ones are ignored.
        let mut namespace_winners: BTreeMap<&str, MtlsMode> = BTreeMap::new();
        let mut workloads = Vec::new();
        for policy in ordered {
            let in_root = policy.namespace == root_namespace;
            match (policy.is_namespace_wide(), in_root) {
                (true, true) => {
                    mesh.get_or_insert(policy.mode);
                }
                (true, false) => {
                    namespace_winners
                        .entry(policy.namespace.as_str())
                        .or_insert(policy.mode);
                }
                // Selector policies in the root namespace do not apply.
                (false, true) => {}
                (false, false) => workloads.push(WorkloadPolicy {
                    namespace: policy.namespace.clone(),
                    name: policy.name.clone(),
                    selector: policy.selector.clone(),
                    mode: policy.mode.set(),
                    ports: policy
                        .port_level
                        .iter()
                        .map(|(port, mode)| (*port, mode.set()))
                        .collect(),
                }),
            }
        }
        Self {
            mesh: mesh.and_then(MtlsMode::set).unwrap_or(MtlsMode::Permissive),
            namespaces: namespace_winners
                .into_iter()
                .filter_map(|(namespace, mode)| Some((namespace.to_owned(), mode.set()?)))
                .collect(),
            workloads,
        }
    }

    /// The mode a sidecar applies to connections on `port` of a pod with
    /// these labels in this namespace.
    pub fn mode_for(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        port: u32,
    ) -> MtlsMode {
        let mut mode = self.namespaces.get(namespace).copied().unwrap_or(self.mesh);
        if let Some(workload) = self.workloads.iter().find(|w| w.selects(namespace, labels)) {
            mode = workload.mode.unwrap_or(mode);
            if let Some(port_mode) = workload.ports.get(&port) {
                mode = port_mode.unwrap_or(mode);
            }
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    //! Istio's documented behaviour, one row per rule (istio.io "Mutual TLS
    //! Migration" and "Authentication Policy" tasks, the PeerAuthentication
    //! reference, and `TestComposePeerAuthentication`).
    use super::*;
    use MtlsMode::{Disable, Permissive, Strict, Unset};

    const ROOT: &str = "istio-system";

    fn policy(namespace: &str, name: &str, created: i64, mode: MtlsMode) -> PeerAuthentication {
        PeerAuthentication {
            namespace: namespace.into(),
            name: name.into(),
            created,
            selector: BTreeMap::new(),
            mode,
            port_level: BTreeMap::new(),
        }
    }

    fn selecting(mut policy: PeerAuthentication, labels: &[(&str, &str)]) -> PeerAuthentication {
        policy.selector = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        policy
    }

    fn ports(mut policy: PeerAuthentication, ports: &[(u32, MtlsMode)]) -> PeerAuthentication {
        policy.port_level = ports.iter().copied().collect();
        policy
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// (case, policies, namespace, pod labels, port, expected mode)
    type Row = (
        &'static str,
        Vec<PeerAuthentication>,
        &'static str,
        &'static [(&'static str, &'static str)],
        u32,
        MtlsMode,
    );

    fn rows() -> Vec<Row> {
        let app = &[("app", "reviews"), ("version", "v1")][..];
        vec![
            (
                "no policy at all: PERMISSIVE",
                vec![],
                "bookinfo",
                app,
                9080,
                Permissive,
            ),
            (
                "mesh-wide STRICT in the root namespace",
                vec![policy(ROOT, "default", 1, Strict)],
                "bookinfo",
                app,
                9080,
                Strict,
            ),
            (
                "mesh-wide UNSET is PERMISSIVE",
                vec![policy(ROOT, "default", 1, Unset)],
                "bookinfo",
                app,
                9080,
                Permissive,
            ),
            (
                "a selector-less policy elsewhere than the root is only its namespace's",
                vec![policy("other", "default", 1, Strict)],
                "bookinfo",
                app,
                9080,
                Permissive,
            ),
            (
                "namespace overrides mesh",
                vec![
                    policy(ROOT, "default", 1, Strict),
                    policy("bookinfo", "ns", 2, Permissive),
                ],
                "bookinfo",
                app,
                9080,
                Permissive,
            ),
            (
                "namespace UNSET inherits mesh",
                vec![
                    policy(ROOT, "default", 1, Strict),
                    policy("bookinfo", "ns", 2, Unset),
                ],
                "bookinfo",
                app,
                9080,
                Strict,
            ),
            (
                "DISABLE at namespace level",
                vec![
                    policy(ROOT, "default", 1, Strict),
                    policy("bookinfo", "ns", 2, Disable),
                ],
                "bookinfo",
                app,
                9080,
                Disable,
            ),
            (
                "two namespace-wide policies: the oldest wins",
                vec![
                    policy("bookinfo", "newer", 5, Permissive),
                    policy("bookinfo", "older", 4, Strict),
                ],
                "bookinfo",
                app,
                9080,
                Strict,
            ),
            (
                "two namespace-wide policies of one age: by name",
                vec![
                    policy("bookinfo", "b", 4, Permissive),
                    policy("bookinfo", "a", 4, Strict),
                ],
                "bookinfo",
                app,
                9080,
                Strict,
            ),
            (
                "the oldest namespace-wide policy wins even when UNSET",
                vec![
                    policy(ROOT, "default", 1, Permissive),
                    policy("bookinfo", "older", 2, Unset),
                    policy("bookinfo", "newer", 3, Strict),
                ],
                "bookinfo",
                app,
                9080,
                Permissive,
            ),
            (
                "two mesh-wide policies: the oldest wins",
                vec![
                    policy(ROOT, "newer", 9, Strict),
                    policy(ROOT, "older", 2, Disable),
                ],
                "bookinfo",
                app,
                9080,
                Disable,
            ),
            (
                "workload overrides namespace",
                vec![
                    policy("bookinfo", "ns", 1, Strict),
                    selecting(
                        policy("bookinfo", "reviews", 2, Permissive),
                        &[("app", "reviews")],
                    ),
                ],
                "bookinfo",
                app,
                9080,
                Permissive,
            ),
            (
                "a selector needs every label, with its value",
                vec![
                    policy("bookinfo", "ns", 1, Strict),
                    selecting(
                        policy("bookinfo", "reviews-v2", 2, Permissive),
                        &[("app", "reviews"), ("version", "v2")],
                    ),
                ],
                "bookinfo",
                app,
                9080,
                Strict,
            ),
            (
                "a workload policy in another namespace does not apply",
                vec![
                    policy("bookinfo", "ns", 1, Permissive),
                    selecting(policy("other", "reviews", 2, Strict), &[("app", "reviews")]),
                ],
                "bookinfo",
                app,
                9080,
                Permissive,
            ),
            (
                "workload UNSET inherits the namespace",
                vec![
                    policy("bookinfo", "ns", 1, Strict),
                    selecting(
                        policy("bookinfo", "reviews", 2, Unset),
                        &[("app", "reviews")],
                    ),
                ],
                "bookinfo",
                app,
                9080,
                Strict,
            ),
            (
                "two matching workload policies: the oldest wins",
                vec![
                    selecting(
                        policy("bookinfo", "newer", 7, Strict),
                        &[("app", "reviews")],
                    ),
                    selecting(
                        policy("bookinfo", "older", 3, Permissive),
                        &[("version", "v1")],
                    ),
                ],
                "bookinfo",
                app,
                9080,
                Permissive,
            ),
            (
                "the oldest matching workload policy wins even when UNSET, with its ports",
                vec![
                    policy(ROOT, "default", 1, Strict),
                    selecting(
                        ports(policy("bookinfo", "older", 3, Unset), &[(9080, Permissive)]),
                        &[("app", "reviews")],
                    ),
                    selecting(
                        policy("bookinfo", "newer", 7, Disable),
                        &[("app", "reviews")],
                    ),
                ],
                "bookinfo",
                app,
                9080,
                Permissive,
            ),
            (
                "selector policies in the root namespace are ignored",
                vec![
                    policy(ROOT, "default", 1, Permissive),
                    selecting(policy(ROOT, "reviews", 2, Strict), &[("app", "reviews")]),
                ],
                "bookinfo",
                app,
                9080,
                Permissive,
            ),
            (
                "and ignored for pods in the root namespace too",
                vec![
                    policy(ROOT, "default", 1, Permissive),
                    selecting(policy(ROOT, "gw", 2, Strict), &[("app", "reviews")]),
                ],
                ROOT,
                app,
                9080,
                Permissive,
            ),
            (
                "port level overrides the workload for that port",
                vec![selecting(
                    ports(policy("bookinfo", "reviews", 1, Strict), &[(9080, Disable)]),
                    &[("app", "reviews")],
                )],
                "bookinfo",
                app,
                9080,
                Disable,
            ),
            (
                "and only for that port",
                vec![selecting(
                    ports(policy("bookinfo", "reviews", 1, Strict), &[(9080, Disable)]),
                    &[("app", "reviews")],
                )],
                "bookinfo",
                app,
                8080,
                Strict,
            ),
            (
                "port UNSET inherits the workload mode",
                vec![
                    policy("bookinfo", "ns", 1, Permissive),
                    selecting(
                        ports(policy("bookinfo", "reviews", 2, Strict), &[(9080, Unset)]),
                        &[("app", "reviews")],
                    ),
                ],
                "bookinfo",
                app,
                9080,
                Strict,
            ),
            (
                "port UNSET under a workload UNSET inherits the namespace",
                vec![
                    policy("bookinfo", "ns", 1, Strict),
                    selecting(
                        ports(policy("bookinfo", "reviews", 2, Unset), &[(9080, Unset)]),
                        &[("app", "reviews")],
                    ),
                ],
                "bookinfo",
                app,
                9080,
                Strict,
            ),
            (
                "port level on a namespace-wide policy does nothing",
                vec![ports(
                    policy("bookinfo", "ns", 1, Strict),
                    &[(9080, Permissive)],
                )],
                "bookinfo",
                app,
                9080,
                Strict,
            ),
            (
                "a STRICT port under a PERMISSIVE mesh",
                vec![selecting(
                    ports(policy("bookinfo", "reviews", 1, Unset), &[(9080, Strict)]),
                    &[("app", "reviews")],
                )],
                "bookinfo",
                app,
                9080,
                Strict,
            ),
        ]
    }

    #[test]
    fn composes_as_istio_documents() {
        for (case, policies, namespace, pod, port, expected) in rows() {
            let mesh = MeshPolicy::compose(&policies, ROOT);
            assert_eq!(
                mesh.mode_for(namespace, &labels(pod), port),
                expected,
                "{case}: {mesh:#?}"
            );
            // The order the policies come in does not matter.
            let mut reversed = policies.clone();
            reversed.reverse();
            assert_eq!(MeshPolicy::compose(&reversed, ROOT), mesh, "{case}");
        }
    }

    #[test]
    fn the_root_namespace_is_configurable() {
        let policies = [
            policy("mesh-root", "default", 1, Strict),
            policy(ROOT, "default", 1, Disable),
        ];
        let mesh = MeshPolicy::compose(&policies, "mesh-root");
        assert_eq!(mesh.mesh, Strict);
        // istio-system is now an ordinary namespace.
        assert_eq!(mesh.namespaces.get(ROOT), Some(&Disable));
    }

    #[test]
    fn uniform_modes_ignore_every_policy() {
        assert_eq!(
            MeshPolicy::uniform(Strict).mode_for("any", &labels(&[]), 1),
            Strict
        );
        assert_eq!(MeshPolicy::uniform(Unset).mesh, Permissive);
    }
}
