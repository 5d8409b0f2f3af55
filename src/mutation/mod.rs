//! The mutations of SPEC.md: object in, patch and warnings out, no I/O.
//!
//! One module per kind ([`pod`], [`prometheus`] for `Prometheus` and
//! `PrometheusAgent`, [`service_monitor`], [`pod_monitor`]); what pods and
//! the pod templates share lives in [`pod_template`], what both monitor
//! kinds share in [`monitor`] and [`endpoints`].

mod annotations;
pub mod config;
mod endpoints;
mod monitor;
pub mod patch;
mod pod;
mod pod_monitor;
mod pod_template;
mod prometheus;
mod proxy_config;
pub mod selector;
mod service_monitor;
mod user_volume_mount;
pub mod view;

use bumpalo::Bump;
use json_patch::Patch;
use serde_json::Value;

pub use config::{MonitorMode, MutationConfig};
pub use selector::LabelSelector;
pub use view::{Json, View};

/// The kinds this webhook knows, recognised by group and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    Prometheus,
    PrometheusAgent,
    ServiceMonitor,
    PodMonitor,
}

impl Kind {
    /// `None` for every kind the webhook leaves alone.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Self> {
        match (group, kind) {
            ("", "Pod") => Some(Self::Pod),
            ("monitoring.coreos.com", "Prometheus") => Some(Self::Prometheus),
            ("monitoring.coreos.com", "PrometheusAgent") => Some(Self::PrometheusAgent),
            ("monitoring.coreos.com", "ServiceMonitor") => Some(Self::ServiceMonitor),
            ("monitoring.coreos.com", "PodMonitor") => Some(Self::PodMonitor),
            _ => None,
        }
    }

    /// From a manifest's `apiVersion` (`v1`, `monitoring.coreos.com/v1`) and `kind`.
    pub fn from_api_version_kind(api_version: &str, kind: &str) -> Option<Self> {
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        Self::from_group_kind(group, kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::Prometheus => "Prometheus",
            Self::PrometheusAgent => "PrometheusAgent",
            Self::ServiceMonitor => "ServiceMonitor",
            Self::PodMonitor => "PodMonitor",
        }
    }

    /// The API version whose schema the rules are written for; a review of
    /// another version is answered without a patch.
    pub fn version(self) -> &'static str {
        match self {
            Self::PrometheusAgent => "v1alpha1",
            Self::Pod | Self::Prometheus | Self::ServiceMonitor | Self::PodMonitor => "v1",
        }
    }
}

/// The admission operation; only CREATE and UPDATE ever change anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

/// What became of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// In scope, and the patch changes it.
    Patched,
    /// In scope, and already carries everything (the patch is empty).
    Unchanged,
    /// Out of scope: another kind, version or operation, not selected, or
    /// opted out.
    Skipped,
    /// In scope, but impossible to change safely: a field of the wrong type,
    /// an annotation that cannot be merged. Left alone; a warning says why.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::Unchanged => "unchanged",
            Self::Skipped => "skipped",
            Self::Refused => "refused",
        }
    }
}

/// The result of mutating one object.
#[derive(Debug)]
pub struct Mutation {
    pub patch: Patch,
    /// Shown by `kubectl` as `Warning: ...`; one short sentence each.
    pub warnings: Vec<String>,
    pub outcome: Outcome,
}

/// A [`Mutation`] whose patch is still the builder: the review writes its
/// JSON straight from it, the values borrowed from the configuration and
/// the scrape class's rules (`'r`) never copied.
#[derive(Debug)]
pub struct Mutated<'r> {
    pub patch: patch::PatchBuilder<'r>,
    pub warnings: Vec<String>,
    pub outcome: Outcome,
}

impl<'r> Mutated<'r> {
    fn empty(outcome: Outcome, warnings: Vec<String>) -> Self {
        Self {
            patch: patch::PatchBuilder::default(),
            warnings,
            outcome,
        }
    }

    fn skipped(warnings: Vec<String>) -> Self {
        Self::empty(Outcome::Skipped, warnings)
    }

    fn refused(warnings: Vec<String>) -> Self {
        Self::empty(Outcome::Refused, warnings)
    }

    fn from_patch(patch: patch::PatchBuilder<'r>, mut warnings: Vec<String>) -> Self {
        if let Some(refused) = patch.refused() {
            warnings.push(format!("{refused}; the object was left unchanged"));
            return Self::refused(warnings);
        }
        let outcome = if patch.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Patched
        };
        Self {
            patch,
            warnings,
            outcome,
        }
    }
}

impl From<Mutated<'_>> for Mutation {
    fn from(mutated: Mutated<'_>) -> Self {
        Self {
            patch: mutated.patch.build(),
            warnings: mutated.warnings,
            outcome: mutated.outcome,
        }
    }
}

/// How warnings name an object: `ServiceMonitor default/productpage`. Pods
/// made from a template have no name yet at admission; their
/// `generateName` stands in (`Pod monitoring/prometheus-5d9f*`).
pub fn describe_object(kind: &str, namespace: &str, object: &Value) -> String {
    describe(kind, namespace, &Json::from_value(object, &Bump::new()))
}

/// [`describe_object`] on the view the rules read.
pub fn describe(kind: &str, namespace: &str, object: &Json<'_>) -> String {
    let field = |name: &str| {
        object
            .get("metadata")
            .and_then(|m| m.get(name))
            .and_then(Json::as_str)
            .unwrap_or_default()
    };
    let name = match (field("name"), field("generateName")) {
        ("", "") => "(unnamed)".to_owned(),
        ("", prefix) => format!("{prefix}*"),
        (name, _) => name.to_owned(),
    };
    let namespace = if namespace.is_empty() {
        field("namespace")
    } else {
        namespace
    };
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

/// Computes the patch for `object` of `kind`, from its [`View`]: the
/// fields the rules read, whether it came in a review or whole. `relabelings` are the scrape
/// class's rules in force (a JSON array, see [`crate::mesh::Rendering`]):
/// what a `Prometheus` or `PrometheusAgent` that lacks the class gets, and
/// what `--monitors=endpoints` writes into ServiceMonitor endpoints.
pub fn mutate(
    kind: Kind,
    operation: Operation,
    object: &View,
    config: &MutationConfig,
    relabelings: &Value,
) -> Mutation {
    let arena = Bump::new();
    mutate_view(
        kind,
        operation,
        &Json::from_value(object.as_value(), &arena),
        config,
        relabelings,
    )
    .into()
}

/// [`mutate`] on a view read straight from a review's bytes
/// ([`view::Reader::view`]), the patch left as the builder.
pub(crate) fn mutate_view<'r>(
    kind: Kind,
    operation: Operation,
    object: &Json<'_>,
    config: &'r MutationConfig,
    relabelings: &'r Value,
) -> Mutated<'r> {
    if !object.is_object() {
        return Mutated::refused(vec![
            "the object is not a mapping; it was left unchanged".into(),
        ]);
    }
    match (kind, operation) {
        (Kind::Pod, Operation::Create) => pod::mutate(object, config),
        (Kind::Prometheus | Kind::PrometheusAgent, Operation::Create | Operation::Update) => {
            prometheus::mutate(object, config, relabelings)
        }
        (Kind::ServiceMonitor, Operation::Create | Operation::Update) => {
            service_monitor::mutate(object, config, relabelings)
        }
        (Kind::PodMonitor, Operation::Create | Operation::Update) => {
            pod_monitor::mutate(object, config)
        }
        _ => Mutated::skipped(Vec::new()),
    }
}

/// Whether a `Prometheus` or `PrometheusAgent` opted out (on the resource or
/// its pod template): then it gets no scrape class, from the admission path
/// or from the controller.
pub fn scrape_class_opted_out(object: &Value, config: &MutationConfig) -> bool {
    let arena = Bump::new();
    prometheus::opted_out(&Json::from_value(object, &arena), config, &mut Vec::new())
}
