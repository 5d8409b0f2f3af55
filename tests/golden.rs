//! Golden cases, one per behaviour: `tests/golden/<case>/input.yaml` (the
//! object as the API server sends it) beside `expected.yaml` (the object after
//! the patch) and `warnings.txt` (one per line; absent when there are none).
//! An optional `options.yaml` sets the operation and non-default flags.
//!
//! `UPDATE_GOLDEN=1 cargo test --test golden` rewrites the expected files;
//! review the diff.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::{Path, PathBuf};

use prom_mtls_webhook::mutation::{Kind, MonitorMode, MutationConfig, Operation};
use prom_mtls_webhook::yaml;
use serde_json::Value;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cases")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("input.yaml").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 40,
        "golden cases went missing: {}",
        cases.len()
    );
    cases
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml::parse_one(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn options(case: &Path) -> (Operation, MutationConfig) {
    let mut config = MutationConfig::default();
    let mut operation = Operation::Create;
    let path = case.join("options.yaml");
    if !path.exists() {
        return (operation, config);
    }
    let options = read_yaml(&path);
    for (key, value) in options.as_object().unwrap() {
        let value = value.as_str().unwrap();
        match key.as_str() {
            "operation" => {
                operation = match value {
                    "CREATE" => Operation::Create,
                    "UPDATE" => Operation::Update,
                    "DELETE" => Operation::Delete,
                    other => panic!("operation {other}"),
                }
            }
            "monitors" => {
                config.monitors = match value {
                    "off" => MonitorMode::Off,
                    "endpoints" => MonitorMode::Endpoints,
                    "scrape-class" => MonitorMode::ScrapeClass,
                    other => panic!("monitors {other}"),
                }
            }
            "podSelector" => config.pod_selector = value.parse().unwrap(),
            "sidecarCertDir" => config.sidecar_cert_dir = value.into(),
            "prometheusCertDir" => config.prometheus_cert_dir = value.into(),
            "volumeName" => config.volume_name = value.into(),
            other => panic!("{}: unknown option {other}", case.display()),
        }
    }
    (operation, config)
}

fn kind_of(object: &Value) -> Option<Kind> {
    Kind::from_api_version_kind(object["apiVersion"].as_str()?, object["kind"].as_str()?)
}

#[test]
fn every_golden_case_yields_its_expected_object_and_warnings() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let input = read_yaml(&case.join("input.yaml"));
        let (operation, config) = options(&case);
        let (mutated, warnings) = match kind_of(&input) {
            Some(kind) => {
                let (mutation, mutated) = support::mutate_twice_with(
                    kind,
                    operation,
                    &input,
                    &config,
                    support::strict_rules(),
                );
                (mutated, mutation.warnings)
            }
            None => {
                // Kinds the webhook does not know: the review path skips them.
                (input.clone(), Vec::new())
            }
        };

        let expected_path = case.join("expected.yaml");
        let warnings_path = case.join("warnings.txt");
        if update {
            std::fs::write(&expected_path, yaml::to_string(&mutated)).unwrap();
            if warnings.is_empty() {
                let _ = std::fs::remove_file(&warnings_path);
            } else {
                std::fs::write(&warnings_path, warnings.join("\n") + "\n").unwrap();
            }
            continue;
        }
        let expected = read_yaml(&expected_path);
        if expected != mutated {
            failures.push(format!(
                "{name}: object differs\n--- expected\n{}--- got\n{}",
                yaml::to_string(&expected),
                yaml::to_string(&mutated)
            ));
        }
        let expected_warnings: Vec<String> = std::fs::read_to_string(&warnings_path)
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        if expected_warnings != warnings {
            failures.push(format!(
                "{name}: warnings differ\n--- expected\n{expected_warnings:#?}\n--- got\n{warnings:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The schema a real API server validates each custom resource against:
/// prometheus-operator's CRDs at the pinned version, which
/// `scripts/install-tools.sh` fetches from its Go module.
fn crd_validator(kind: Kind) -> jsonschema::Validator {
    let file = match kind {
        Kind::Prometheus => "monitoring.coreos.com_prometheuses.yaml",
        Kind::PrometheusAgent => "monitoring.coreos.com_prometheusagents.yaml",
        Kind::ServiceMonitor => "monitoring.coreos.com_servicemonitors.yaml",
        Kind::PodMonitor => "monitoring.coreos.com_podmonitors.yaml",
        Kind::Pod => unreachable!("pods have no CRD"),
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/e2e/crds")
        .join(file);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-tools.sh (it fetches the CRDs)",
        path.display()
    );
    let crd = read_yaml(&path);
    let version = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == kind.version())
        .unwrap();
    jsonschema::validator_for(&version["schema"]["openAPIV3Schema"]).unwrap()
}

#[test]
fn every_valid_custom_resource_stays_valid_against_its_crd() {
    let validators: Vec<(Kind, jsonschema::Validator)> = [
        Kind::Prometheus,
        Kind::PrometheusAgent,
        Kind::ServiceMonitor,
        Kind::PodMonitor,
    ]
    .into_iter()
    .map(|kind| (kind, crd_validator(kind)))
    .collect();
    let mut checked = 0;
    for case in cases() {
        let input = read_yaml(&case.join("input.yaml"));
        let expected = read_yaml(&case.join("expected.yaml"));
        let Some(kind) = kind_of(&expected) else {
            continue;
        };
        let Some((_, validator)) = validators.iter().find(|(k, _)| *k == kind) else {
            continue;
        };
        // Cases about malformed input (which the API server rejects after
        // admission whatever the webhook does) are not this test's business.
        if !validator.is_valid(&input) {
            continue;
        }
        let errors: Vec<String> = validator
            .iter_errors(&expected)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{}: {}",
            case.display(),
            errors.join("; ")
        );
        checked += 1;
    }
    assert!(
        checked >= 15,
        "only {checked} custom resources were validated"
    );
}

#[test]
fn the_crd_schemas_catch_an_invalid_patch() {
    // The validation above can fail: a scheme outside the CRD's enum is refused.
    let validator = crd_validator(Kind::ServiceMonitor);
    let mut monitor =
        read_yaml(&golden_dir().join("servicemonitor-joins-the-scrape-class/expected.yaml"));
    monitor["spec"]["endpoints"][0]["scheme"] = Value::String("mtls".into());
    assert!(!validator.is_valid(&monitor));
}

fn mesh_cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/mesh");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("policies.yaml").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 7, "mesh cases went missing: {}", cases.len());
    cases
}

/// The rendering's golden cases: `tests/golden/mesh/<case>/policies.yaml`
/// (PeerAuthentications as the API server serves them) beside `rules.yaml`
/// (the scrape class's relabelings) and `left-out.txt` (policies that cannot
/// be read). `UPDATE_GOLDEN=1` rewrites them.
#[test]
fn every_mesh_case_renders_its_expected_rules() {
    use prom_mtls_webhook::mesh::{MeshPolicy, ModeSource, PeerAuthentication, Rendering};
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in mesh_cases() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let objects = read_yaml(&case.join("policies.yaml"));
        let (mut policies, mut left_out) = (Vec::new(), Vec::new());
        for object in objects.as_array().unwrap() {
            match PeerAuthentication::from_object(object) {
                Ok(policy) => policies.push(policy),
                Err(error) => left_out.push(error.to_string()),
            }
        }
        let rendering = Rendering::new(
            ModeSource::Watch,
            MeshPolicy::compose(&policies, "istio-system"),
        );
        let rules = rendering.relabelings.as_ref().clone();
        let rules_path = case.join("rules.yaml");
        let left_out_path = case.join("left-out.txt");
        if update {
            std::fs::write(&rules_path, yaml::to_string(&rules)).unwrap();
            if left_out.is_empty() {
                let _ = std::fs::remove_file(&left_out_path);
            } else {
                std::fs::write(&left_out_path, left_out.join("\n") + "\n").unwrap();
            }
            continue;
        }
        if read_yaml(&rules_path) != rules {
            failures.push(format!(
                "{name}: rules differ\n--- expected\n{}--- got\n{}",
                std::fs::read_to_string(&rules_path).unwrap_or_default(),
                yaml::to_string(&rules)
            ));
        }
        let expected_left_out: Vec<String> = std::fs::read_to_string(&left_out_path)
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        if expected_left_out != left_out {
            failures.push(format!(
                "{name}: left out {left_out:?}, expected {expected_left_out:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
