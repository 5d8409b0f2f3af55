//! Arbitrary bytes through the whole protocol: `admission::review`.
//!
//! Never panics; and when it answers, the answer is an AdmissionReview that
//! echoes the uid, whose patch (base64 of a JSON Patch) keeps the rules the
//! tests check (`tests/support`, SPEC.md "Rules for every change": it
//! applies, rewrites and removes only what the webhook may, loses nothing
//! else) and leaves nothing to do on a second review of the patched object
//! (idempotent).
#![no_main]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::LazyLock;

use json_patch::Patch;
use libfuzzer_sys::fuzz_target;
use prom_mtls_webhook::admission::review;
use prom_mtls_webhook::mutation::MutationConfig;
use serde_json::Value;

static CONFIG: LazyLock<MutationConfig> = LazyLock::new(MutationConfig::default);

fuzz_target!(|data: &[u8]| {
    let Ok(reviewed) = review(data, &CONFIG, support::rules()) else {
        return;
    };
    let answer: Value = serde_json::from_slice(&reviewed.body).expect("the answer is JSON");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["allowed"], true);

    // serde_json skips the fields the webhook ignores without validating
    // their escapes (`"\ud800"`), so an accepted body is not always a Value.
    let Ok(mut request) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    assert_eq!(response["uid"], request["request"]["uid"], "uid not echoed");
    assert_eq!(
        reviewed.summary.patch_operations > 0,
        response.get("patch").is_some()
    );

    // `patchType` exactly when there is a patch, which is base64 of JSON.
    let decoded = support::decoded_patch(response);
    if response.get("patch").is_none() {
        return;
    }
    let patch: Patch = serde_json::from_value(decoded).expect("the patch is a JSON Patch");
    assert!(!patch.0.is_empty(), "an empty patch is sent as no patch");
    let object = request["request"]
        .get_mut("object")
        .expect("a patch needs an object");
    let before = object.clone();
    *object = support::apply_checked(&before, &patch, &CONFIG);

    // Reinvocation: the patched object gets no patch.
    let again_body = serde_json::to_vec(&request).expect("serialises");
    let again =
        review(&again_body, &CONFIG, support::rules()).expect("the patched review is accepted");
    let again: Value = serde_json::from_slice(&again.body).expect("the answer is JSON");
    let second = support::decoded_patch(&again["response"]);
    assert!(
        again["response"].get("patch").is_none(),
        "not idempotent: second patch {second}\nafter first patch {patch:?}\nof object {before}"
    );
});
