//! Pods (CREATE): the certificate volume, Istio's annotations, the injection
//! label, the mount in the Prometheus container, the status annotation once
//! that mount is in place, and, when Istio's injector ran first, the
//! sidecar's `OUTPUT_CERTS` and mount.

use super::annotations::{AnnotationPlan, inject_choice};
use super::patch::{PatchBuilder, PatchValue, Path};
use super::pod_template::{
    ISTIO_PROXY, ensure_injection_label, ensure_mount, ensure_volume, find_named,
    find_prometheus_container,
};
use super::view::Json;
use super::{Mutated, MutationConfig};

const OUTPUT_CERTS: &str = "OUTPUT_CERTS";

pub fn mutate<'r>(pod: &Json<'_>, config: &'r MutationConfig) -> Mutated<'r> {
    let metadata = pod.get("metadata");
    let annotations = metadata.and_then(|m| m.get("annotations"));
    let annotation_map = annotations.and_then(Json::as_object);
    let labels = metadata
        .and_then(|m| m.get("labels"))
        .and_then(Json::as_object);

    let mut warnings = Vec::new();
    let selected = match inject_choice(annotation_map, config, &mut warnings) {
        Some(choice) => choice,
        None => config.pod_selector.matches(labels),
    };
    if !selected {
        return Mutated::skipped(warnings);
    }

    let mut plan = match AnnotationPlan::new(annotation_map, config) {
        Ok(plan) => plan,
        Err(reason) => {
            warnings.push(format!("{reason}; the pod was left unchanged"));
            return Mutated::refused(warnings);
        }
    };
    warnings.append(&mut plan.warnings);

    let mut patch = PatchBuilder::default();
    let spec = pod.get("spec");
    let spec_path = Path::root().key("spec");
    let metadata_path = Path::root().key("metadata");
    patch.require_mapping(&metadata_path, metadata);
    patch.require_mapping(&spec_path, spec);
    warnings.extend(ensure_injection_label(
        &metadata_path.key("labels"),
        metadata.and_then(|m| m.get("labels")),
        annotation_map,
        &mut patch,
    ));
    ensure_volume(
        &spec_path.key("volumes"),
        spec.and_then(|s| s.get("volumes")),
        config,
        &mut patch,
    );

    let containers = spec.and_then(|s| s.get("containers"));
    let mounted = match find_prometheus_container(containers, config) {
        Ok((index, container)) => {
            let container_path = spec_path.key("containers").index(index);
            let name = container
                .get("name")
                .and_then(Json::as_str)
                .unwrap_or(&config.prometheus_container);
            let blocked = ensure_mount(
                &container_path.key("volumeMounts"),
                container.get("volumeMounts"),
                &config.prometheus_cert_dir,
                true,
                name,
                config,
                &mut patch,
            );
            let mounted = blocked.is_none();
            warnings.extend(blocked);
            mounted
        }
        Err(warning) => {
            warnings.push(warning);
            false
        }
    };
    if mounted {
        plan.mark_injected(annotation_map, config);
    }
    plan.emit(&metadata_path.key("annotations"), annotations, &mut patch);

    // Istio's injector reads the annotations only when it injects. If its
    // sidecar is already here (a container, or a native sidecar among the
    // init containers), give it what the annotations would have.
    for list in ["containers", "initContainers"] {
        if let Some((index, proxy)) = find_named(spec.and_then(|s| s.get(list)), ISTIO_PROXY) {
            let proxy_path = spec_path.key(list).index(index);
            wire_injected_sidecar(
                &proxy_path,
                proxy,
                &plan.sidecar_dir,
                config,
                &mut patch,
                &mut warnings,
            );
            if plan.traffic_added {
                warnings.push(format!(
                    "{ISTIO_PROXY} was injected before this webhook ran, so the traffic.sidecar.istio.io annotations came too late to take effect; order this webhook's configuration before Istio's injector"
                ));
            }
        }
    }

    Mutated::from_patch(patch, warnings)
}

/// `OUTPUT_CERTS` in the sidecar's environment, and a writable mount of the
/// volume at that directory.
fn wire_injected_sidecar<'r>(
    path: &Path,
    proxy: &Json<'_>,
    sidecar_dir: &str,
    config: &'r MutationConfig,
    patch: &mut PatchBuilder<'r>,
    warnings: &mut Vec<String>,
) {
    let env = proxy.get("env");
    let dir = match find_named(env, OUTPUT_CERTS) {
        // The injector already set it (from the user's ProxyConfig): that is
        // where the running sidecar writes, so mount there.
        Some((_, var)) => var
            .get("value")
            .and_then(Json::as_str)
            .unwrap_or(sidecar_dir)
            .to_owned(),
        None => {
            patch.add_to_array(
                &path.key("env"),
                env,
                PatchValue::object([
                    ("name", OUTPUT_CERTS.into()),
                    ("value", sidecar_dir.to_owned().into()),
                ]),
            );
            sidecar_dir.to_owned()
        }
    };
    warnings.extend(ensure_mount(
        &path.key("volumeMounts"),
        proxy.get("volumeMounts"),
        &dir,
        false,
        ISTIO_PROXY,
        config,
        patch,
    ));
}
