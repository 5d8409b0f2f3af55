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
    let _ = preview(text, PreviewOutput::Patches, &CONFIG);
    let Ok(first) = preview(text, PreviewOutput::Manifests, &CONFIG) else {
        return;
    };
    // Known, reported: output whose first document is `{}` or `[]` is taken
    // for JSON when read again, and the `---` after it fails to parse.
    // Known: a document that is itself a list (`[[]]`) prints as `[]`,
    // which reads back as an empty list of manifests.
    if first.output.starts_with('[')
        || (first.output.starts_with('{') && first.output.contains("\n---\n"))
    {
        return;
    }
    // Known, reported: mapping keys longer than YAML's 1024-character limit
    // for implicit keys are written as implicit keys (see yaml_roundtrip.rs).
    if first.output.lines().any(|line| line.chars().count() > 1000) {
        return;
    }
    match preview(&first.output, PreviewOutput::Manifests, &CONFIG) {
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
