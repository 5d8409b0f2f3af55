//! What pods and the pod template of `Prometheus` and `PrometheusAgent`
//! resources share: the volume, mounts, the injection label, and finding
//! the Prometheus container.

use super::MutationConfig;
use super::patch::{ObjectAdditions, PatchBuilder, Path};
use super::user_volume_mount::same_dir;
use super::view::{Json, Object};

fn items<'a, 'j>(list: Option<&'a Json<'j>>) -> impl Iterator<Item = &'a Json<'j>> {
    list.and_then(Json::as_array).into_iter().flatten()
}

fn name_of<'a>(item: &'a Json<'_>) -> Option<&'a str> {
    item.get("name").and_then(Json::as_str)
}

/// Finds the entries of a list (containers, env, volumes) with this name.
pub fn find_named<'a, 'j>(list: Option<&'a Json<'j>>, name: &str) -> Option<(usize, &'a Json<'j>)> {
    items(list)
        .enumerate()
        .find(|(_, item)| name_of(item) == Some(name))
}

/// Adds the in-memory certificate volume to the list at `path`, unless a
/// volume of that name exists (then it is the user's, and used as is).
pub fn ensure_volume<'r>(
    path: &Path,
    volumes: Option<&Json<'_>>,
    config: &'r MutationConfig,
    patch: &mut PatchBuilder<'r>,
) {
    if find_named(volumes, &config.volume_name).is_none() {
        patch.add_to_array(path, volumes, config.volume_entry());
    }
}

/// Mounts the certificate volume at `mount_path` through the mount list at
/// `path` (`mounts` being what is there now). Nothing is added when the
/// volume is already mounted; a warning is returned when another volume
/// occupies the directory (two mounts at one path make the pod invalid).
pub fn ensure_mount<'r>(
    path: &Path,
    mounts: Option<&Json<'_>>,
    mount_path: &str,
    read_only: bool,
    container: &str,
    config: &'r MutationConfig,
    patch: &mut PatchBuilder<'r>,
) -> Option<String> {
    if find_named(mounts, &config.volume_name).is_some() {
        return None;
    }
    let occupant = items(mounts).find(|mount| {
        mount
            .get("mountPath")
            .and_then(Json::as_str)
            .is_some_and(|existing| same_dir(existing, mount_path))
    });
    if let Some(occupant) = occupant {
        return Some(format!(
            "container {container} already mounts volume {} at {mount_path}; {} was not mounted there",
            name_of(occupant).unwrap_or("?"),
            config.volume_name,
        ));
    }
    patch.add_to_array(path, mounts, config.mount_entry(mount_path, read_only));
    None
}

pub const SIDECAR_INJECT: &str = "sidecar.istio.io/inject";
/// The container Istio's injector adds.
pub const ISTIO_PROXY: &str = "istio-proxy";

/// `sidecar.istio.io/inject: "true"` among the labels at `path` (`labels`
/// being what is there now), so that the pod gets a sidecar even where its
/// namespace is not labelled for injection. The user's own choice, as a
/// label or (older Istio) an annotation, stands; a "false" gets a warning,
/// since nothing then writes the certificates Prometheus is given.
pub fn ensure_injection_label<'r>(
    path: &Path,
    labels: Option<&Json<'_>>,
    annotations: Option<&Object<'_>>,
    patch: &mut PatchBuilder<'r>,
) -> Option<String> {
    fn choice<'a, 'j>(map: Option<&'a Object<'j>>) -> Option<&'a Json<'j>> {
        map.and_then(|m| m.get(SIDECAR_INJECT))
    }
    let users = choice(labels.and_then(Json::as_object)).or_else(|| choice(annotations));
    match users {
        Some(value)
            if value
                .as_str()
                .is_some_and(|v| v.eq_ignore_ascii_case("false")) =>
        {
            Some(format!(
                "{SIDECAR_INJECT} is false: without a sidecar nothing writes the certificates Prometheus is given"
            ))
        }
        Some(_) => None,
        None => {
            let mut additions = ObjectAdditions::new(path.clone(), labels);
            additions.insert_if_absent(SIDECAR_INJECT, "true");
            additions.emit(patch);
            None
        }
    }
}

/// The container that runs Prometheus: the one with the configured name,
/// else the only one whose image is Prometheus' (`prom/prometheus`,
/// `quay.io/prometheus/prometheus`, from any registry or mirror), as in the
/// prometheus-community chart's `prometheus-server`. The error is the warning.
pub fn find_prometheus_container<'a, 'j>(
    containers: Option<&'a Json<'j>>,
    config: &MutationConfig,
) -> Result<(usize, &'a Json<'j>), String> {
    if let Some(found) = find_named(containers, &config.prometheus_container) {
        return Ok(found);
    }
    // Never Istio's own sidecar, whatever it runs.
    let by_image: Vec<(usize, &Json<'j>)> = items(containers)
        .enumerate()
        .filter(|(_, container)| name_of(container) != Some(ISTIO_PROXY))
        .filter(|(_, container)| {
            container
                .get("image")
                .and_then(Json::as_str)
                .is_some_and(is_prometheus_image)
        })
        .collect();
    match by_image.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!(
            "the pod has no container named {} and none runs a Prometheus image, so {} was not mounted into Prometheus",
            config.prometheus_container, config.volume_name
        )),
        several => Err(format!(
            "the pod has no container named {} and {} run a Prometheus image ({}), so {} was not mounted into any",
            config.prometheus_container,
            several.len(),
            several
                .iter()
                .map(|(_, c)| name_of(c).unwrap_or("?"))
                .collect::<Vec<_>>()
                .join(", "),
            config.volume_name
        )),
    }
}

/// `[registry/]prom/prometheus` or `[registry/]prometheus/prometheus`, with
/// any tag or digest, and any path before it (a mirror's prefix).
fn is_prometheus_image(image: &str) -> bool {
    let without_digest = image.split('@').next().unwrap_or_default();
    // A tag's colon comes after the last slash; a registry port's before.
    let repository = match (without_digest.rfind(':'), without_digest.rfind('/')) {
        (Some(colon), slash) if slash.is_none_or(|slash| colon > slash) => {
            without_digest.get(..colon).unwrap_or_default()
        }
        _ => without_digest,
    };
    let mut parts = repository.rsplit('/');
    matches!(
        (parts.next(), parts.next()),
        (Some("prometheus"), Some("prom" | "prometheus"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recognises_prometheus_images_from_any_registry() {
        for image in [
            "prom/prometheus",
            "prom/prometheus:v3.5.0",
            "quay.io/prometheus/prometheus:v3.5.0",
            "docker.io/prom/prometheus@sha256:0123",
            "registry.example.com:5000/mirror/prom/prometheus:v3",
            "localhost:5000/prometheus/prometheus",
        ] {
            assert!(is_prometheus_image(image), "{image}");
        }
        for image in [
            "prom/node-exporter:v1",
            "quay.io/prometheus-operator/prometheus-config-reloader:v0.93.1",
            "bitnami/prometheus:3",
            "prometheus",
            "registry:5000/prom/prometheus-x",
        ] {
            assert!(!is_prometheus_image(image), "{image}");
        }
    }

    #[test]
    fn finds_the_prometheus_container_by_name_then_by_image() {
        let config = MutationConfig::default();
        let named = json!([{"name": "sidecar", "image": "prom/prometheus"}, {"name": "prometheus", "image": "x"}]);
        assert_eq!(
            find_prometheus_container(Some(&Json::from(&named)), &config)
                .unwrap()
                .0,
            1
        );
        let chart = json!([{"name": "prometheus-server-configmap-reload", "image": "quay.io/prometheus-operator/prometheus-config-reloader:v0.81.0"},
                           {"name": "prometheus-server", "image": "quay.io/prometheus/prometheus:v3.4.1"}]);
        assert_eq!(
            find_prometheus_container(Some(&Json::from(&chart)), &config)
                .unwrap()
                .0,
            1
        );
        let two = json!([{"name": "a", "image": "prom/prometheus"}, {"name": "b", "image": "prom/prometheus"}]);
        assert!(
            find_prometheus_container(Some(&Json::from(&two)), &config)
                .unwrap_err()
                .contains("2 run a Prometheus image (a, b)")
        );
        assert!(find_prometheus_container(None, &config).is_err());
    }
}
