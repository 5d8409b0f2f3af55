//! Arbitrary objects (JSON, or YAML when the bytes are not JSON) through
//! `mutation::mutate` as every kind, CREATE and UPDATE.
//!
//! Never panics; the patch applies to the object, never removes, and a
//! second pass over the patched object gives an empty patch (SPEC.md).
#![no_main]

use std::sync::LazyLock;

use json_patch::PatchOperation;
use libfuzzer_sys::fuzz_target;
use prom_mtls_webhook::mutation::{Kind, MutationConfig, Operation, View, mutate};
use prom_mtls_webhook::yaml;
use serde_json::Value;


static CONFIG: LazyLock<MutationConfig> = LazyLock::new(MutationConfig::default);

const KINDS: [Kind; 4] = [
    Kind::Pod,
    Kind::Prometheus,
    Kind::ServiceMonitor,
    Kind::PodMonitor,
];

fn check(object: &Value) {
    for kind in KINDS {
        for operation in [Operation::Create, Operation::Update] {
            let first = mutate(kind, operation, &View::of(kind, object), &CONFIG, rules());
            if first.patch.0.is_empty() {
                continue;
            }
            for op in &first.patch.0 {
                assert!(
                    !matches!(op, PatchOperation::Remove(_) | PatchOperation::Move(_)),
                    "{kind:?}: the patch removes: {op:?}"
                );
            }
            let mut patched = object.clone();
            if let Err(error) = json_patch::patch(&mut patched, &first.patch.0) {
                panic!(
                    "{kind:?} {operation:?}: the patch does not apply: {error}\nobject: {object}\npatch: {:?}",
                    first.patch
                );
            }
            let second = mutate(kind, operation, &View::of(kind, &patched), &CONFIG, rules());
            assert!(
                second.patch.0.is_empty(),
                "{kind:?} {operation:?}: not idempotent\nobject: {object}\nfirst: {:?}\nsecond: {:?}",
                first.patch,
                second.patch
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = serde_json::from_slice::<Value>(data) {
        check(&object);
    } else if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(documents) = yaml::parse_documents(text) {
            documents.iter().for_each(check);
        }
    }
});

/// The scrape class's rules for a mesh taken as STRICT.
fn rules() -> &'static serde_json::Value {
    static RULES: std::sync::LazyLock<prom_mtls_webhook::mesh::Rendering> =
        std::sync::LazyLock::new(prom_mtls_webhook::mesh::Rendering::assumed_strict);
    &RULES.relabelings
}
