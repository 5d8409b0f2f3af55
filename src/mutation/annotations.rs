//! The pod annotations Istio's sidecar injector reads, plus this webhook's
//! status annotation: planned first (nothing is emitted when one of them
//! cannot be merged), then written as additions and merges.
//!
//! The status annotation says what touched the pod, so it is planned only
//! once the certificate volume is known to be mounted into Prometheus
//! ([`AnnotationPlan::mark_injected`]).

use std::borrow::Cow;

use super::MutationConfig;
use super::patch::{ObjectAdditions, PatchBuilder, PatchValue, Path};
use super::proxy_config::{self, Additions, ProxyConfig};
use super::user_volume_mount::{self, Merge};
use super::view::{Json, Object};

pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
pub const STATUS_INJECTED: &str = "injected";

/// What the annotations need, computed before anything is written.
/// Keys and values are borrowed from the configuration (`'r`) where they
/// are its names and default texts, as for most pods.
#[derive(Debug)]
pub struct AnnotationPlan<'r> {
    /// The directory the sidecar writes its certificates to: the configured
    /// one, or the user's own `OUTPUT_CERTS`.
    pub sidecar_dir: Cow<'r, str>,
    /// Whether the traffic annotations were absent (and are now added).
    pub traffic_added: bool,
    pub warnings: Vec<String>,
    /// Keys the annotations lack, in the order they are added.
    additions: Vec<(&'r str, PatchValue<'r>)>,
    /// Keys whose existing value is replaced by a merged one.
    replacements: Vec<(&'r str, PatchValue<'r>)>,
}

impl<'r> AnnotationPlan<'r> {
    /// Plans the annotations for `current` (a `metadata.annotations`-like
    /// map, possibly absent). An error is a warning: the object must be left
    /// alone, since Istio would ignore or reject what could be written.
    pub fn new(current: Option<&Object<'_>>, config: &'r MutationConfig) -> Result<Self, String> {
        let get = |key: &str| current.and_then(|map| map.get(key)).and_then(Json::as_str);
        let mut plan = Self {
            sidecar_dir: Cow::Borrowed(&config.sidecar_cert_dir),
            traffic_added: false,
            warnings: Vec::new(),
            additions: Vec::with_capacity(5),
            replacements: Vec::new(),
        };

        match get(proxy_config::ANNOTATION) {
            None => plan
                .additions
                .push((proxy_config::ANNOTATION, config.default_proxy_config())),
            Some(text) => {
                let proxy_config = ProxyConfig::parse(text)?;
                let output_certs = match proxy_config.output_certs()? {
                    // The user's directory wins; the volume is mounted there.
                    Some(dir) => {
                        plan.sidecar_dir = Cow::Owned(dir.to_owned());
                        None
                    }
                    None => Some(config.sidecar_cert_dir.as_str()),
                };
                let additions = Additions {
                    output_certs,
                    hold_application: !proxy_config.sets_hold_application(),
                };
                if !additions.is_empty() {
                    plan.replacements.push((
                        proxy_config::ANNOTATION,
                        proxy_config.with(additions).into(),
                    ));
                }
            }
        }

        match get(user_volume_mount::ANNOTATION) {
            None => plan.additions.push((
                user_volume_mount::ANNOTATION,
                match &plan.sidecar_dir {
                    Cow::Borrowed(_) => config.default_user_volume_mount(),
                    Cow::Owned(dir) => user_volume_mount::new(&config.volume_name, dir).into(),
                },
            )),
            Some(text) => match user_volume_mount::merge(text, &config.volume_name, &plan.sidecar_dir)? {
                Merge::Added(text) => plan
                    .replacements
                    .push((user_volume_mount::ANNOTATION, text.into())),
                Merge::Present { elsewhere: None } => {}
                Merge::Present {
                    elsewhere: Some(path),
                } => plan.warnings.push(format!(
                    "{} mounts {} at {:?}, but the sidecar writes its certificates to {}: Prometheus will not see them",
                    user_volume_mount::ANNOTATION,
                    config.volume_name,
                    path,
                    plan.sidecar_dir
                )),
            },
        }

        // Prometheus' own traffic must not be captured by its sidecar.
        for key in [INCLUDE_INBOUND_PORTS, INCLUDE_OUTBOUND_IP_RANGES] {
            if get(key).is_none() {
                plan.additions.push((key, "".into()));
                plan.traffic_added = true;
            }
        }

        Ok(plan)
    }

    /// Plans `<prefix>status: injected` on `current` (the same map given to
    /// [`Self::new`]): call once the volume is mounted into Prometheus.
    pub fn mark_injected(&mut self, current: Option<&Object<'_>>, config: &'r MutationConfig) {
        let status = config.status_annotation();
        let injected = PatchValue::from(STATUS_INJECTED);
        match current
            .and_then(|map| map.get(status))
            .and_then(Json::as_str)
        {
            Some(STATUS_INJECTED) => {}
            Some(_) => self.replacements.push((status, injected)),
            None if current.is_some_and(|map| map.contains_key(status)) => {
                self.replacements.push((status, injected));
            }
            None => self.additions.push((status, injected)),
        }
    }

    /// Writes the planned changes to the annotations at `path` (`current`
    /// being what is there now); they are moved out of the plan.
    pub fn emit(&mut self, path: &Path, current: Option<&Json<'_>>, patch: &mut PatchBuilder<'r>) {
        let mut additions = ObjectAdditions::new(path.clone(), current);
        for (key, value) in self.additions.drain(..) {
            additions.insert_if_absent(key, value);
        }
        additions.emit(patch);
        for (key, value) in self.replacements.drain(..) {
            patch.replace(path.child_key(key), value);
        }
    }
}

/// Whether a monitor opted out with `<prefix>inject: "false"` in its own
/// metadata (monitors have no opt-in: every one is a candidate).
pub fn monitor_opted_out(
    monitor: &Json<'_>,
    config: &MutationConfig,
    warnings: &mut Vec<String>,
) -> bool {
    let annotations = monitor
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Json::as_object);
    inject_choice(annotations, config, warnings) == Some(false)
}

/// The value of this webhook's `<prefix>inject` annotation, as an opt-in
/// (`Some(true)`), an opt-out (`Some(false)`) or neither. Compared
/// case-insensitively; any other value is reported.
pub fn inject_choice(
    annotations: Option<&Object<'_>>,
    config: &MutationConfig,
    warnings: &mut Vec<String>,
) -> Option<bool> {
    let key = config.inject_annotation();
    let value = annotations.and_then(|map| map.get(key))?;
    match value.as_str() {
        Some(v) if v.eq_ignore_ascii_case("true") => Some(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Some(false),
        _ => {
            warnings.push(format!(
                "{key} is {value}; only \"true\" and \"false\" have a meaning, so it is ignored"
            ));
            None
        }
    }
}
