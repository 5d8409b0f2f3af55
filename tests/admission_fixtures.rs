//! Every AdmissionReview captured from a real kube-apiserver
//! (`tests/fixtures/admission/`) answered by the protocol layer: the
//! response is well-formed, echoes the uid, and its decoded patch and
//! warnings match `tests/golden/admission/<fixture>.json`.
//!
//! `UPDATE_GOLDEN=1 cargo test --test admission_fixtures` rewrites them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::{Path, PathBuf};

use prom_mtls_webhook::admission::review;
use prom_mtls_webhook::mutation::{Kind, MutationConfig, Operation};
use serde_json::{Value, json};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let files = support::files_with_extension(&dir, "json");
    assert!(files.len() >= 12, "fixtures went missing");
    files
}

#[test]
fn every_captured_review_gets_its_golden_answer() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let config = MutationConfig::default();
    for fixture in fixtures() {
        let name = fixture.file_stem().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read(&fixture).unwrap();
        let request: Value = serde_json::from_slice(&body).unwrap();
        let reviewed = review(&body, &config, support::strict_rules()).unwrap();
        let answer: Value = serde_json::from_slice(&reviewed.body).unwrap();

        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{name}");
        assert_eq!(answer["kind"], "AdmissionReview", "{name}");
        let response = &answer["response"];
        assert_eq!(response["uid"], request["request"]["uid"], "{name}");
        assert_eq!(response["allowed"], true, "{name}");

        let summary = &reviewed.summary;
        let got = json!({
            "outcome": summary.outcome.as_str(),
            "patch": support::decoded_patch(response),
            "warnings": response.get("warnings").cloned().unwrap_or(json!([])),
        });
        assert_eq!(
            summary.patch_operations,
            got["patch"].as_array().unwrap().len()
        );
        assert_eq!(summary.uid, request["request"]["uid"].as_str().unwrap());
        assert_eq!(summary.dry_run, request["request"]["dryRun"] == true);

        let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/admission")
            .join(format!("{name}.json"));
        if update {
            std::fs::write(&golden, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
            continue;
        }
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap();
        assert_eq!(got, expected, "{name}");

        // The patch keeps every rule, and a second pass has nothing to add.
        let object = &request["request"]["object"];
        let kind = Kind::from_group_kind(
            request["request"]["kind"]["group"].as_str().unwrap(),
            request["request"]["kind"]["kind"].as_str().unwrap(),
        )
        .unwrap();
        let operation = match request["request"]["operation"].as_str().unwrap() {
            "CREATE" => Operation::Create,
            _ => Operation::Update,
        };
        support::mutate_twice(kind, operation, object, &config);
    }
}

#[test]
fn dry_run_reviews_get_the_same_patch_as_real_ones() {
    let config = MutationConfig::default();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    for name in ["servicemonitor-create-2", "servicemonitor-update-2"] {
        let body = std::fs::read(dir.join(format!("{name}.json"))).unwrap();
        let mut request: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(request["request"]["dryRun"], true);
        let dry = review(&body, &config, support::strict_rules()).unwrap();
        request["request"]["dryRun"] = Value::Bool(false);
        let real_body = serde_json::to_vec(&request).unwrap();
        let real = review(&real_body, &config, support::strict_rules()).unwrap();
        let patch = |body: &[u8]| {
            support::decoded_patch(&serde_json::from_slice::<Value>(body).unwrap()["response"])
        };
        assert_eq!(patch(&dry.body), patch(&real.body));
        assert!(dry.summary.dry_run);
        assert!(!patch(&dry.body).as_array().unwrap().is_empty());
    }
}

#[test]
fn malformed_reviews_are_refused_with_a_one_line_reason() {
    let config = MutationConfig::default();
    let good: Value = serde_json::from_slice(
        &std::fs::read(
            fixtures()
                .into_iter()
                .find(|f| f.ends_with("pod-create-1.json"))
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let mut wrong_version = good.clone();
    wrong_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_request = good.clone();
    no_request.as_object_mut().unwrap().remove("request");
    let mut no_uid = good.clone();
    no_uid["request"]["uid"] = json!("");
    let mut wrong_kind = good.clone();
    wrong_kind["kind"] = json!("ConfigMap");
    let mut request_not_object = good.clone();
    request_not_object["request"] = json!([1, 2]);

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "not valid JSON"),
        (b"".to_vec(), "not valid JSON"),
        (b"[1,2,3]".to_vec(), "not an AdmissionReview"),
        (serde_json::to_vec(&wrong_version).unwrap(), "apiVersion"),
        (serde_json::to_vec(&no_request).unwrap(), "no request"),
        (serde_json::to_vec(&no_uid).unwrap(), "empty uid"),
        (serde_json::to_vec(&wrong_kind).unwrap(), "unexpected kind"),
        (
            serde_json::to_vec(&request_not_object).unwrap(),
            "not an AdmissionReview",
        ),
    ];
    for (body, reason) in cases {
        let err = review(&body, &config, support::strict_rules())
            .unwrap_err()
            .to_string();
        assert!(err.contains(reason), "{err:?} should mention {reason:?}");
        assert!(!err.contains('\n'), "{err:?} is not one line");
    }
}

#[test]
fn requests_for_unknown_kinds_subresources_and_deletes_are_allowed_untouched() {
    let config = MutationConfig::default();
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/admission/servicemonitor-create-1.json"),
    )
    .unwrap();
    let base: Value = serde_json::from_slice(&body).unwrap();
    type Change = Box<dyn Fn(&mut Value)>;
    let variants: Vec<Change> = vec![
        Box::new(|r| {
            r["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"})
        }),
        Box::new(|r| r["request"]["subResource"] = json!("status")),
        Box::new(|r| {
            r["request"]["operation"] = json!("DELETE");
            r["request"]["object"] = Value::Null;
        }),
        Box::new(|r| r["request"]["kind"]["version"] = json!("v1alpha1")),
    ];
    for change in variants {
        let mut request = base.clone();
        change(&mut request);
        let body = serde_json::to_vec(&request).unwrap();
        let reviewed = review(&body, &config, support::strict_rules()).unwrap();
        let answer: Value = serde_json::from_slice(&reviewed.body).unwrap();
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"].get("patch").is_none(), "{request}");
        assert_eq!(reviewed.summary.outcome.as_str(), "skipped");
    }
}
