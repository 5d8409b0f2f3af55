//! Arbitrary objects (JSON, or YAML when the bytes are not JSON) through
//! `mutation::mutate` as every kind, CREATE and UPDATE.
//!
//! Never panics; and every patch keeps the rules the tests check
//! (`tests/support`, SPEC.md "Rules for every change"): it applies, adds
//! without overwriting, rewrites and removes only what the webhook may
//! (an earlier version's https and file `tlsConfig`, its own rules), loses
//! nothing else, and a second pass over the patched object gives an empty
//! patch. The view parsed from the object's bytes equals the one cut from
//! the parsed object.
#![no_main]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use prom_mtls_webhook::mutation::{Kind, MutationConfig, Operation};
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
            // Namespace, workload and port rules: patches carry every kind.
            support::mutate_twice(kind, operation, object, &CONFIG);
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
