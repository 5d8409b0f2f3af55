//! Volumes and mounts, shared by pods and the pod template of `Prometheus`
//! resources.

use serde_json::{Value, json};

use super::MutationConfig;
use super::patch::{PatchBuilder, Path};
use super::user_volume_mount::same_dir;

fn items(list: Option<&Value>) -> impl Iterator<Item = &Value> {
    list.and_then(Value::as_array).into_iter().flatten()
}

fn name_of(item: &Value) -> Option<&str> {
    item.get("name").and_then(Value::as_str)
}

/// Finds the entries of a list (containers, env, volumes) with this name.
pub fn find_named<'a>(list: Option<&'a Value>, name: &str) -> Option<(usize, &'a Value)> {
    items(list)
        .enumerate()
        .find(|(_, item)| name_of(item) == Some(name))
}

/// Adds the in-memory certificate volume to the list at `path`, unless a
/// volume of that name exists (then it is the user's, and used as is).
pub fn ensure_volume(
    path: &Path,
    volumes: Option<&Value>,
    config: &MutationConfig,
    patch: &mut PatchBuilder,
) {
    if find_named(volumes, &config.volume_name).is_none() {
        patch.add_to_array(
            path,
            volumes,
            json!({"name": config.volume_name, "emptyDir": {"medium": "Memory"}}),
        );
    }
}

/// Mounts the certificate volume at `mount_path` through the mount list at
/// `path` (`mounts` being what is there now). Nothing is added when the
/// volume is already mounted; a warning is returned when another volume
/// occupies the directory (two mounts at one path make the pod invalid).
pub fn ensure_mount(
    path: &Path,
    mounts: Option<&Value>,
    mount_path: &str,
    read_only: bool,
    container: &str,
    config: &MutationConfig,
    patch: &mut PatchBuilder,
) -> Option<String> {
    if find_named(mounts, &config.volume_name).is_some() {
        return None;
    }
    let occupant = items(mounts).find(|mount| {
        mount
            .get("mountPath")
            .and_then(Value::as_str)
            .is_some_and(|existing| same_dir(existing, mount_path))
    });
    if let Some(occupant) = occupant {
        return Some(format!(
            "container {container} already mounts volume {} at {mount_path}; {} was not mounted there",
            name_of(occupant).unwrap_or("?"),
            config.volume_name,
        ));
    }
    let mount = if read_only {
        json!({"name": config.volume_name, "mountPath": mount_path, "readOnly": true})
    } else {
        json!({"name": config.volume_name, "mountPath": mount_path})
    };
    patch.add_to_array(path, mounts, mount);
    None
}
