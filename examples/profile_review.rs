//! A tight loop over `admission::review` for instruction-level profilers.
//!
//! Criterion measures wall time; this driver exists so that `valgrind
//! --tool=callgrind` or `perf record` see nothing but the review path
//! (see docs/benchmarks.md for the exact commands).
//!
//! Usage: `profile_review [FIXTURE.json] [ITERATIONS]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use prom_mtls_webhook::admission::review;
use prom_mtls_webhook::mutation::MutationConfig;

fn main() {
    let mut args = std::env::args().skip(1);
    let fixture = args.next().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/admission/pod-create-1.json"
        )
        .to_owned()
    });
    let iterations: usize = args.next().map_or(10_000, |n| n.parse().unwrap());
    let body = std::fs::read(&fixture).unwrap();
    let config = MutationConfig::default();
    let mut total = 0;
    for _ in 0..iterations {
        total += review(&body, &config, rules()).unwrap().body.len();
    }
    println!("{total} response bytes over {iterations} reviews");
}

/// The scrape class's rules for a mesh taken as STRICT.
fn rules() -> &'static serde_json::Value {
    static RULES: std::sync::LazyLock<prom_mtls_webhook::mesh::Rendering> =
        std::sync::LazyLock::new(prom_mtls_webhook::mesh::Rendering::assumed_strict);
    &RULES.relabelings
}
