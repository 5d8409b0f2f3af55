//! prometheus-operator `Prometheus` (v1) and `PrometheusAgent` (v1alpha1)
//! resources, CREATE and UPDATE. Both share the fields this touches.
//!
//! The pod changes go into the template the operator renders pods from
//! (`spec.podMetadata.annotations` and `.labels`, `spec.volumes`,
//! `spec.volumeMounts`, which the operator mounts into its `prometheus`
//! container), so its pods carry them whatever the order of webhooks. And
//! the resource gets the scrape class that monitors join, unless it has one
//! of that name already: from then on the class is kept current by the
//! controller ([`crate::mesh::controller`]), never rewritten here, so that a
//! replica whose view of the mesh lags cannot undo a newer rendering.

use serde_json::Value;

use super::annotations::{AnnotationPlan, inject_choice};
use super::patch::{PatchBuilder, Path};
use super::pod_template::{ensure_injection_label, ensure_mount, ensure_volume, find_named};
use super::view::Json;
use super::{Mutated, MutationConfig};

/// The container prometheus-operator renders, which `spec.volumeMounts` go into.
const OPERATOR_CONTAINER: &str = "prometheus";

pub fn mutate<'r>(
    prometheus: &Json<'_>,
    config: &'r MutationConfig,
    relabelings: &'r Value,
) -> Mutated<'r> {
    let mut warnings = Vec::new();
    if opted_out(prometheus, config, &mut warnings) {
        return Mutated::skipped(warnings);
    }
    let spec = prometheus.get("spec");
    let pod_metadata = spec.and_then(|s| s.get("podMetadata"));
    let pod_annotations = pod_metadata.and_then(|m| m.get("annotations"));
    let pod_annotation_map = pod_annotations.and_then(Json::as_object);

    let mut plan = match AnnotationPlan::new(pod_annotation_map, config) {
        Ok(plan) => plan,
        Err(reason) => {
            warnings.push(format!(
                "spec.podMetadata.annotations: {reason}; the object was left unchanged"
            ));
            return Mutated::refused(warnings);
        }
    };
    warnings.append(&mut plan.warnings);

    let mut patch = PatchBuilder::default();
    let spec_path = Path::root().key("spec");
    patch.ensure_mapping(&spec_path, spec);
    let pod_metadata_path = spec_path.key("podMetadata");
    patch.ensure_mapping(&pod_metadata_path, pod_metadata);
    warnings.extend(ensure_injection_label(
        &pod_metadata_path.key("labels"),
        pod_metadata.and_then(|m| m.get("labels")),
        pod_annotation_map,
        &mut patch,
    ));
    ensure_volume(
        &spec_path.key("volumes"),
        spec.and_then(|s| s.get("volumes")),
        config,
        &mut patch,
    );
    let blocked = ensure_mount(
        &spec_path.key("volumeMounts"),
        spec.and_then(|s| s.get("volumeMounts")),
        &config.prometheus_cert_dir,
        true,
        OPERATOR_CONTAINER,
        config,
        &mut patch,
    );
    match blocked {
        Some(warning) => warnings.push(warning),
        None => plan.mark_injected(pod_annotation_map, config),
    }
    plan.emit(
        &pod_metadata_path.key("annotations"),
        pod_annotations,
        &mut patch,
    );

    if config.manages_scrape_class() {
        let classes = spec.and_then(|s| s.get("scrapeClasses"));
        if find_named(classes, &config.scrape_class).is_none() {
            patch.add_to_array(
                &spec_path.key("scrapeClasses"),
                classes,
                config.scrape_class_patch(relabelings),
            );
        }
    }

    Mutated::from_patch(patch, warnings)
}

/// Opting out on the resource or on its pod template leaves it alone; its
/// pods are then opted out as well. The controller asks the same question.
pub fn opted_out(
    prometheus: &Json<'_>,
    config: &MutationConfig,
    warnings: &mut Vec<String>,
) -> bool {
    let own = prometheus
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Json::as_object);
    let template = prometheus
        .get("spec")
        .and_then(|s| s.get("podMetadata"))
        .and_then(|m| m.get("annotations"))
        .and_then(Json::as_object);
    [own, template]
        .into_iter()
        .any(|annotations| inject_choice(annotations, config, warnings) == Some(false))
}
