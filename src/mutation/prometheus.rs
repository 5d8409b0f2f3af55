//! prometheus-operator `Prometheus` resources (CREATE and UPDATE): the pod
//! changes go into the template the operator renders pods from
//! (`spec.podMetadata.annotations`, `spec.volumes`, `spec.volumeMounts`), so
//! its pods carry them whatever the order of webhooks; and the scrape class
//! PodMonitors use is added to `spec.scrapeClasses`.

use serde_json::{Value, json};

use super::annotations::{AnnotationPlan, inject_choice};
use super::patch::{PatchBuilder, Path};
use super::pod_template::{ensure_mount, ensure_volume, find_named};
use super::{Mutation, MutationConfig, PodMonitorMode};

pub fn mutate(prometheus: &Value, config: &MutationConfig) -> Mutation {
    let spec = prometheus.get("spec");
    let pod_metadata = spec.and_then(|s| s.get("podMetadata"));
    let pod_annotations = pod_metadata.and_then(|m| m.get("annotations"));
    let own_annotations = prometheus
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);

    // Opting out on the resource or on its pod template leaves it alone.
    let mut warnings = Vec::new();
    let opted_out = [own_annotations, pod_annotations.and_then(Value::as_object)]
        .into_iter()
        .any(|annotations| inject_choice(annotations, config, &mut warnings) == Some(false));
    if opted_out {
        return Mutation::skipped(warnings);
    }

    let mut plan = match AnnotationPlan::new(pod_annotations.and_then(Value::as_object), config) {
        Ok(plan) => plan,
        Err(reason) => {
            warnings.push(format!(
                "spec.podMetadata.annotations: {reason}; the Prometheus was left unchanged"
            ));
            return Mutation::skipped(warnings);
        }
    };
    warnings.append(&mut plan.warnings);

    let mut patch = PatchBuilder::default();
    let spec_path = Path::root().key("spec");
    patch.ensure_mapping(&spec_path, spec);
    let pod_metadata_path = spec_path.key("podMetadata");
    patch.ensure_mapping(&pod_metadata_path, pod_metadata);
    plan.emit(
        &pod_metadata_path.key("annotations"),
        pod_annotations,
        &mut patch,
    );

    ensure_volume(
        &spec_path.key("volumes"),
        spec.and_then(|s| s.get("volumes")),
        config,
        &mut patch,
    );
    // The operator appends `spec.volumeMounts` to its `prometheus` container.
    warnings.extend(ensure_mount(
        &spec_path.key("volumeMounts"),
        spec.and_then(|s| s.get("volumeMounts")),
        &config.prometheus_cert_dir,
        true,
        "prometheus",
        config,
        &mut patch,
    ));

    if config.pod_monitors == PodMonitorMode::ScrapeClass {
        let classes = spec.and_then(|s| s.get("scrapeClasses"));
        if find_named(classes, &config.scrape_class).is_none() {
            patch.add_to_array(
                &spec_path.key("scrapeClasses"),
                classes,
                json!({"name": config.scrape_class, "tlsConfig": config.scrape_tls_config()}),
            );
        }
    }

    Mutation::from_patch(patch, warnings)
}
