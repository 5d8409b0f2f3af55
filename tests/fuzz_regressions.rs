//! Every input the fuzzers found a bug with (`fuzz/regressions/`), replayed
//! on each `cargo test` so that the fixed bugs stay fixed without a fuzzer:
//!
//! - an AdmissionReview (`*-review.json`): answered, allowed, the patch (if
//!   any) applies to the object under the rules of every patch, and the
//!   patched object gets no patch again;
//! - any other JSON object: mutated as every kind, CREATE and UPDATE, with the
//!   same checks (`support::mutate_twice`);
//! - YAML: the preview's output reads back and previews unchanged, and every
//!   document the YAML reader reads is written back to the same value.
//!
//! A new fuzz crash goes into `fuzz/regressions/` with its fix.

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
use prom_mtls_webhook::preview::{PreviewOutput, preview};
use prom_mtls_webhook::yaml;
use serde_json::Value;

fn regressions(extension: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let files = support::files_with_extension(&dir, extension);
    assert!(!files.is_empty(), "no *.{extension} in {}", dir.display());
    files
}

fn is_review(path: &Path) -> bool {
    path.file_stem()
        .is_some_and(|stem| stem.to_string_lossy().ends_with("-review"))
}

#[test]
fn reviews_are_answered_and_their_patches_apply() {
    let config = MutationConfig::default();
    for file in regressions("json").into_iter().filter(|f| is_review(f)) {
        let body = std::fs::read(&file).unwrap();
        let answer = review(&body, &config, support::rules())
            .unwrap_or_else(|e| panic!("{}: rejected: {e}", file.display()));
        let answer: Value = serde_json::from_slice(&answer.body).unwrap();
        let response = &answer["response"];
        assert_eq!(response["allowed"], true, "{}", file.display());

        let request: Value = serde_json::from_slice(&body).unwrap();
        let object = &request["request"]["object"];
        let patch: json_patch::Patch =
            serde_json::from_value(support::decoded_patch(response)).unwrap();
        let patched = support::apply_checked(object, &patch, &config);
        let mut again = request.clone();
        again["request"]["object"] = patched;
        let again_body = serde_json::to_vec(&again).unwrap();
        let again = review(&again_body, &config, support::rules()).unwrap();
        let again: Value = serde_json::from_slice(&again.body).unwrap();
        assert!(
            again["response"].get("patch").is_none(),
            "{}: second review patched again",
            file.display()
        );
    }
}

#[test]
fn objects_mutate_as_every_kind_under_the_patch_rules() {
    let config = MutationConfig::default();
    for file in regressions("json").into_iter().filter(|f| !is_review(f)) {
        let object: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        for kind in [
            Kind::Pod,
            Kind::Prometheus,
            Kind::ServiceMonitor,
            Kind::PodMonitor,
        ] {
            for operation in [Operation::Create, Operation::Update] {
                support::mutate_twice(kind, operation, &object, &config);
            }
        }
    }
}

#[test]
fn yaml_previews_and_round_trips_read_back_unchanged() {
    let config = MutationConfig::default();
    for file in regressions("yaml") {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.display();

        let first = preview(&text, PreviewOutput::Manifests, &config, support::rules())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let second = preview(
            &first.output,
            PreviewOutput::Manifests,
            &config,
            support::rules(),
        )
        .unwrap_or_else(|e| panic!("{name}: the preview's output does not read back: {e}"));
        assert_eq!(first.output, second.output, "{name}: previewing changed it");

        for value in yaml::parse_documents(&text).unwrap() {
            let written = yaml::to_string(&value);
            let read = yaml::parse_documents(&written)
                .unwrap_or_else(|e| panic!("{name}: written YAML does not read back: {e}"));
            assert_eq!(read, vec![value], "{name}: round trip changed the value");
        }
    }
}
