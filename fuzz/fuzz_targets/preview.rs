//! Arbitrary text through the offline preview (`prom-mtls-webhook mutate`),
//! both outputs. Never panics; a manifest the preview printed reads back, and
//! previewing it again prints it unchanged (the mutation is idempotent and
//! the YAML writer reads back as written).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use prom_mtls_webhook::mutation::MutationConfig;
use prom_mtls_webhook::preview::{PreviewOutput, preview};

static CONFIG: LazyLock<MutationConfig> = LazyLock::new(MutationConfig::default);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = preview(text, PreviewOutput::Patches, &CONFIG, rules());
    let Ok(first) = preview(text, PreviewOutput::Manifests, &CONFIG, rules()) else {
        return;
    };
    match preview(&first.output, PreviewOutput::Manifests, &CONFIG, rules()) {
        Ok(second) => assert_eq!(
            first.output, second.output,
            "previewing the preview changed it\ninput: {text:?}"
        ),
        Err(error) => panic!(
            "the preview's output does not read back: {error}\ninput: {text:?}\noutput: {:?}",
            first.output
        ),
    }
});

/// The scrape class's rules for a mesh taken as STRICT.
fn rules() -> &'static serde_json::Value {
    static RULES: std::sync::LazyLock<prom_mtls_webhook::mesh::Rendering> =
        std::sync::LazyLock::new(prom_mtls_webhook::mesh::Rendering::assumed_strict);
    &RULES.relabelings
}
