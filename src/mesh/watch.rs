//! The API server side of [`super::controller`]: the watches on
//! PeerAuthentications, `Prometheus`/`PrometheusAgent` resources and
//! opted-out namespaces, and the writer that keeps the scrape class current
//! (feature `kubernetes`). The module doc of [`super::controller`] says how
//! they work together.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::controller::{MeshConfig, MeshState};
use super::{MeshMtls, MeshPolicy, ModeSource, PeerAuthentication, Rendering};
use crate::metrics::Metrics;
use crate::mutation::{self, Kind, MutationConfig};

/// How often a write that does not stick is tried, per rendering and resource.
pub const MAX_ATTEMPTS: u32 = 3;
fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn peer_authentications() -> ApiResource {
    resource(
        "security.istio.io",
        "v1",
        "PeerAuthentication",
        "peerauthentications",
    )
}

/// The kinds that carry the scrape class.
fn class_holders() -> [(Kind, ApiResource); 2] {
    [
        (
            Kind::Prometheus,
            resource(
                "monitoring.coreos.com",
                Kind::Prometheus.version(),
                "Prometheus",
                "prometheuses",
            ),
        ),
        (
            Kind::PrometheusAgent,
            resource(
                "monitoring.coreos.com",
                Kind::PrometheusAgent.version(),
                "PrometheusAgent",
                "prometheusagents",
            ),
        ),
    ]
}
/// Connects to the API server (found as kubectl finds it), then runs the
/// watches and the writer until the task is aborted.
pub(super) async fn run(
    config: MeshConfig,
    mutation: Arc<MutationConfig>,
    state: Arc<MeshState>,
    metrics: Arc<Metrics>,
) {
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            if config.mode == MeshMtls::Watch {
                warn!(
                    %error,
                    "no Kubernetes API to read PeerAuthentications from: every sidecar target is taken as STRICT (--mesh-mtls=strict|permissive says so explicitly)"
                );
            } else {
                warn!(%error, "no Kubernetes API: the scrape class of existing Prometheus resources is not kept");
            }
            state.decide();
            return;
        }
    };
    info!(
        mode = ?config.mode,
        root_namespace = %config.root_namespace,
        source = state.current().source.as_str(),
        "mesh: watching"
    );

    let changed = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    if config.mode == MeshMtls::Watch {
        tasks.spawn(watch_policies(
            client.clone(),
            config.clone(),
            state.clone(),
            metrics.clone(),
            changed.clone(),
        ));
        let (grace, state) = (config.startup_grace, state.clone());
        tasks.spawn(async move {
            tokio::time::sleep(grace).await;
            if !state.is_decided() {
                warn!(
                    after = ?grace,
                    "no answer from the API server about PeerAuthentications yet: ready, with every sidecar target taken as STRICT until it answers"
                );
                state.decide();
            }
        });
    }
    if mutation.manages_scrape_class() {
        let disabled = Writer::<PartialObjectMeta<Namespace>>::default();
        let disabled_namespaces = disabled.as_reader();
        tasks.spawn(watch_disabled_namespaces(
            client.clone(),
            format!("{}=disabled", mutation.inject_annotation()),
            disabled,
            metrics.clone(),
            changed.clone(),
        ));
        let mut stores = Vec::new();
        for (kind, api_resource) in class_holders() {
            let writer = Writer::new(api_resource.clone());
            stores.push((kind, api_resource.clone(), writer.as_reader()));
            tasks.spawn(watch_class_holders(
                client.clone(),
                kind,
                api_resource,
                writer,
                metrics.clone(),
                changed.clone(),
            ));
        }
        let writer = ClassWriter {
            client,
            config: config.clone(),
            mutation,
            state,
            metrics,
            disabled_namespaces,
            attempts: HashMap::new(),
        };
        tasks.spawn(writer.run(stores, changed));
    }
    while tasks.join_next().await.is_some() {}
}
/// The PeerAuthentication watch: a new rendering on every change.
async fn watch_policies(
    client: kube::Client,
    config: MeshConfig,
    state: Arc<MeshState>,
    metrics: Arc<Metrics>,
    changed: Arc<Notify>,
) {
    let api_resource = peer_authentications();
    let api = Api::<DynamicObject>::all_with(client, &api_resource);
    let mut writer = Writer::new(api_resource);
    let store = writer.as_reader();
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                writer.apply_watcher_event(&event);
                match event {
                    Event::Init | Event::InitApply(_) => continue,
                    Event::InitDone => listed = true,
                    Event::Apply(_) | Event::Delete(_) if !listed => continue,
                    Event::Apply(_) | Event::Delete(_) => {}
                }
                let (policies, invalid) = read_policies(&store);
                let rendering = Rendering::new(
                    ModeSource::Watch,
                    MeshPolicy::compose(&policies, &config.root_namespace),
                );
                let rules = rendering.relabelings.as_array().map_or(0, Vec::len);
                metrics.mesh_policies(policies.len(), invalid);
                if state.set(rendering) {
                    let current = state.current();
                    metrics.mesh_rendered(&current, rules);
                    info!(
                        source = current.source.as_str(),
                        policies = policies.len(),
                        invalid,
                        mesh = current.policy.mesh.as_str(),
                        namespaces = current.policy.namespaces.len(),
                        workloads = current.policy.workloads.len(),
                        rules,
                        "mesh: rendered the scrape class from the PeerAuthentications"
                    );
                    changed.notify_one();
                }
                state.decide();
            }
            Err(error) => {
                metrics.mesh_watch_error("PeerAuthentication");
                if cannot_read(&error) {
                    listed = false;
                    if state.set(Rendering::assumed_strict()) {
                        let current = state.current();
                        metrics.mesh_rendered(
                            &current,
                            current.relabelings.as_array().map_or(0, Vec::len),
                        );
                        warn!(
                            %error,
                            "mesh: cannot read PeerAuthentications (no Istio CRDs, or no permission): every sidecar target is taken as STRICT; retrying"
                        );
                        changed.notify_one();
                    }
                    state.decide();
                } else {
                    warn!(%error, "mesh: the PeerAuthentication watch failed; keeping the modes in force and retrying");
                }
            }
        }
    }
}

/// 404 (the CRD is not installed) and 403 (no RBAC): the answer will not
/// change by retrying soon, unlike a dropped connection.
fn cannot_read(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => {
            status.is_not_found() || status.is_forbidden()
        }
        _ => false,
    }
}

/// The policies in the store, and how many could not be read (those are
/// left out and logged: Istio's validation would refuse them too).
fn read_policies(store: &Store<DynamicObject>) -> (Vec<PeerAuthentication>, usize) {
    let mut invalid = 0;
    let policies = store
        .state()
        .iter()
        .filter_map(|object| {
            let json = serde_json::to_value(object.as_ref()).ok()?;
            match PeerAuthentication::from_object(&json) {
                Ok(policy) => Some(policy),
                Err(error) => {
                    invalid += 1;
                    warn!(%error, "mesh: a PeerAuthentication cannot be read; it is left out");
                    None
                }
            }
        })
        .collect();
    (policies, invalid)
}

/// A watch of `api` into `writer`, each change after the initial list
/// signalled on `changed`; errors are counted under `what` and retried with
/// backoff, the first one logged.
async fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    mut writer: Writer<K>,
    what: &'static str,
    metrics: Arc<Metrics>,
    changed: Arc<Notify>,
) where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut reported = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                writer.apply_watcher_event(&event);
                if !matches!(event, Event::Init | Event::InitApply(_)) {
                    changed.notify_one();
                }
            }
            Err(error) => {
                metrics.mesh_watch_error(what);
                if !reported {
                    reported = true;
                    if cannot_read(&error) {
                        info!(kind = what, %error, "mesh: cannot list these resources (no CRD, or no permission); retrying");
                    } else {
                        warn!(kind = what, %error, "mesh: watch failed; retrying");
                    }
                }
            }
        }
    }
}

/// A watch on `Prometheus` or `PrometheusAgent` resources into `writer`.
/// Without their CRD (no such operator, no agents) there is nothing to keep.
async fn watch_class_holders(
    client: kube::Client,
    kind: Kind,
    api_resource: ApiResource,
    writer: Writer<DynamicObject>,
    metrics: Arc<Metrics>,
    changed: Arc<Notify>,
) {
    let api = Api::<DynamicObject>::all_with(client, &api_resource);
    let config = watcher::Config::default();
    follow(api, config, writer, kind.as_str(), metrics, changed).await;
}

/// The namespaces labelled `<prefix>inject=disabled` (`selector`), into
/// `writer`: their names are all the class writer needs. Until they can be
/// read (no permission), such namespaces get the class like any other.
async fn watch_disabled_namespaces(
    client: kube::Client,
    selector: String,
    writer: Writer<PartialObjectMeta<Namespace>>,
    metrics: Arc<Metrics>,
    changed: Arc<Notify>,
) {
    // Metadata only: an `Api` of `PartialObjectMeta` asks for nothing else.
    let api = Api::<PartialObjectMeta<Namespace>>::all(client);
    let config = watcher::Config::default().labels(&selector);
    follow(api, config, writer, "Namespace", metrics, changed).await;
}

/// Brings the class onto every resource that lacks the current rendering.
struct ClassWriter {
    client: kube::Client,
    config: MeshConfig,
    mutation: Arc<MutationConfig>,
    state: Arc<MeshState>,
    metrics: Arc<Metrics>,
    /// Namespaces labelled `<prefix>inject=disabled`.
    disabled_namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Writes made per resource (uid) for the rendering in force.
    attempts: HashMap<String, Attempt>,
}

struct Attempt {
    rendering: Arc<Value>,
    writes: u32,
    /// The resourceVersion the last write was made over: while the store
    /// still shows it, the write has not come back through the watch.
    written_over: Option<String>,
}

impl ClassWriter {
    async fn run(
        mut self,
        stores: Vec<(Kind, ApiResource, Store<DynamicObject>)>,
        changed: Arc<Notify>,
    ) {
        let mut resync = tokio::time::interval(self.config.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = changed.notified() => {}
                _ = resync.tick() => {}
            }
            // Let a burst of events (an initial list, a kubectl apply of
            // many policies) settle into one pass.
            tokio::time::sleep(self.config.debounce).await;
            if !self.state.is_decided() {
                continue;
            }
            let rendering = self.state.current();
            let mut stale = 0;
            for (kind, api_resource, store) in &stores {
                for object in store.state() {
                    if !self
                        .reconcile(*kind, api_resource, &object, &rendering)
                        .await
                    {
                        stale += 1;
                    }
                }
            }
            self.metrics.scrape_classes_stale(stale);
        }
    }

    /// Whether objects in `namespace` are never changed (as in admission).
    fn leaves_namespace_alone(&self, namespace: &str) -> bool {
        self.config
            .excluded_namespaces
            .iter()
            .any(|n| n == namespace)
            || self
                .disabled_namespaces
                .get(&ObjectRef::new(namespace))
                .is_some()
    }

    /// `false` when the resource is left without the current class.
    async fn reconcile(
        &mut self,
        kind: Kind,
        api_resource: &ApiResource,
        object: &DynamicObject,
        rendering: &Rendering,
    ) -> bool {
        if self.leaves_namespace_alone(object.metadata.namespace.as_deref().unwrap_or_default()) {
            return true;
        }
        let Ok(json) = serde_json::to_value(object) else {
            return false;
        };
        if mutation::scrape_class_opted_out(&json, &self.mutation) {
            return true;
        }
        let desired = self.mutation.scrape_class_entry(&rendering.relabelings);
        let uid = object.metadata.uid.clone().unwrap_or_default();
        if class_is_current(&json, &desired) {
            self.attempts.remove(&uid);
            return true;
        }
        let (namespace, name) = (
            object.metadata.namespace.clone().unwrap_or_default(),
            object.metadata.name.clone().unwrap_or_default(),
        );
        let seen_version = object.metadata.resource_version.clone();
        let attempt = self.attempts.entry(uid.clone()).or_insert_with(|| Attempt {
            rendering: rendering.relabelings.clone(),
            writes: 0,
            written_over: None,
        });
        if !Arc::ptr_eq(&attempt.rendering, &rendering.relabelings) {
            *attempt = Attempt {
                rendering: rendering.relabelings.clone(),
                writes: 0,
                written_over: None,
            };
        }
        // Our last write has not come back through the watch yet.
        if attempt.written_over.is_some() && attempt.written_over == seen_version {
            return true;
        }
        if attempt.writes >= MAX_ATTEMPTS {
            return false;
        }
        attempt.writes += 1;
        attempt.written_over = seen_version;
        if attempt.writes == MAX_ATTEMPTS {
            warn!(
                kind = kind.as_str(),
                namespace,
                name,
                "mesh: the scrape class written here did not stick (does the API server drop its relabelings? prometheus-operator's CRDs must be 0.74 or later); giving up until the mesh changes"
            );
        }
        let body = json!({
            "apiVersion": api_resource.api_version,
            "kind": api_resource.kind,
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": {"scrapeClasses": [desired]},
        });
        let api =
            Api::<DynamicObject>::namespaced_with(self.client.clone(), &namespace, api_resource);
        let params = PatchParams::apply(&self.config.field_manager).force();
        match api.patch(&name, &params, &Patch::Apply(&body)).await {
            Ok(_) => {
                self.metrics.scrape_class_written(kind, true);
                info!(
                    kind = kind.as_str(),
                    namespace,
                    name,
                    source = rendering.source.as_str(),
                    "mesh: wrote the scrape class"
                );
                true
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => {
                debug!(
                    kind = kind.as_str(),
                    namespace, name, "mesh: gone before the write"
                );
                true
            }
            Err(error) => {
                self.metrics.scrape_class_written(kind, false);
                warn!(kind = kind.as_str(), namespace, name, %error, "mesh: cannot write the scrape class");
                false
            }
        }
    }
}
/// Whether the resource's class of our name has exactly the fields we own.
fn class_is_current(object: &Value, desired: &Value) -> bool {
    let name = desired.get("name");
    object
        .get("spec")
        .and_then(|s| s.get("scrapeClasses"))
        .and_then(Value::as_array)
        .and_then(|classes| classes.iter().find(|c| c.get("name") == name))
        .is_some_and(|class| {
            ["tlsConfig", "relabelings"]
                .iter()
                .all(|field| class.get(field) == desired.get(field))
        })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_is_current_when_the_fields_we_own_match() {
        let config = MutationConfig::default();
        let rules = json!([{"targetLabel": "__tmp_istio_mtls_mode"}]);
        let desired = config.scrape_class_entry(&rules);
        let with = |class: Value| json!({"spec": {"scrapeClasses": [{"name": "other"}, class]}});
        assert!(class_is_current(&with(desired.clone()), &desired));
        // A field the user added to the entry is theirs.
        let mut extra = desired.clone();
        extra["metricRelabelings"] = json!([]);
        assert!(class_is_current(&with(extra), &desired));
        // Older rules, or the class of an earlier version without rules.
        let mut old = desired.clone();
        old["relabelings"] = json!([]);
        assert!(!class_is_current(&with(old), &desired));
        let mut bare = desired.clone();
        bare.as_object_mut().unwrap().remove("relabelings");
        assert!(!class_is_current(&with(bare), &desired));
        assert!(!class_is_current(&json!({"spec": {}}), &desired));
    }
}
