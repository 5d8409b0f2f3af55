#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The Dockerfile. There is no Docker engine on our machines, so it is linted
//! (hadolint, installed by scripts/install-tools.sh) and read: the image must
//! be built by the same release command CI runs, and be static, small and
//! non-root.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn hadolint() -> PathBuf {
    let path = repo().join(".tools/venv/bin/hadolint");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/install-tools.sh",
        path.display()
    );
    path
}

/// One Dockerfile instruction: the keyword (upper case) and its arguments,
/// with line continuations joined and comments dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions(dockerfile: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, args) = pending
            .split_once(char::is_whitespace)
            .unwrap_or((&pending, ""));
        out.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        });
        pending.clear();
    }
    out
}

/// Instructions grouped by stage (each starts at a FROM).
fn stages(dockerfile: &str) -> Vec<Vec<Instruction>> {
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for i in instructions(dockerfile) {
        if i.keyword == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(i);
        }
    }
    stages
}

fn dockerfile() -> String {
    read("Dockerfile")
}

#[test]
fn dockerfile_passes_hadolint() {
    let out = Command::new(hadolint())
        .current_dir(repo())
        .args(["--config", ".hadolint.yaml", "--no-color", "Dockerfile"])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "hadolint:\n{report}"
    );
}

#[test]
fn hadolint_ignores_nothing_without_a_reason() {
    let config = read(".hadolint.yaml");
    assert!(
        config.contains("failure-threshold: info"),
        "every finding fails, infos included"
    );
    assert!(!config.contains("ignored:"), "no rule is ignored globally");
    for line in dockerfile()
        .lines()
        .filter(|l| l.contains("hadolint ignore="))
    {
        let reason = line
            .split_once("hadolint ignore=")
            .unwrap()
            .1
            .split_once(' ')
            .map(|(_, r)| r.trim());
        assert!(
            reason.is_some_and(|r| !r.is_empty()),
            "an inline ignore needs a reason: {line}"
        );
    }
}

#[test]
fn image_is_built_by_the_release_script_that_ci_runs() {
    let stages = stages(&dockerfile());
    assert!(
        stages.len() >= 2,
        "multi-stage: a build stage and a final image"
    );
    let build = &stages[0];
    assert!(
        build[0].args.starts_with("rust:") && build[0].args.ends_with(" AS build"),
        "{:?}",
        build[0]
    );
    let copies_lock = build
        .iter()
        .any(|i| i.keyword == "COPY" && i.args.split_whitespace().any(|a| a == "Cargo.lock"));
    assert!(
        copies_lock,
        "the build stage copies Cargo.lock (the build is --locked)"
    );
    let runs: Vec<&Instruction> = build.iter().filter(|i| i.keyword == "RUN").collect();
    assert_eq!(runs.len(), 1, "one build command: {runs:?}");
    assert!(
        runs[0].args.contains("scripts/build-release.sh"),
        "{:?}",
        runs[0]
    );

    let script = read("scripts/build-release.sh");
    assert!(
        script.contains("cargo build --release --locked --target \"$target\""),
        "release build, lock file honoured"
    );
    assert!(script.contains("target=\"x86_64-unknown-linux-gnu\""));
    assert!(
        script.contains("-C target-feature=+crt-static"),
        "a static glibc binary"
    );
    assert!(
        script.contains("INTERP") && script.contains("(NEEDED)"),
        "the script checks that the binary is static"
    );
}

#[test]
fn builder_rust_is_not_older_than_the_crate_needs() {
    let stages = stages(&dockerfile());
    let image = stages[0][0]
        .args
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let version = image
        .trim_start_matches("rust:")
        .split('-')
        .next()
        .unwrap()
        .to_owned();
    let builder: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert_eq!(
        builder.len(),
        3,
        "the Rust image is pinned to a patch release: {image}"
    );
    let cargo = read("Cargo.toml");
    let needed = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .map(|v| v.trim_end_matches('"').to_owned())
        .expect("Cargo.toml has rust-version");
    let needed: Vec<u32> = needed.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(
        builder[..2] >= needed[..2],
        "{image} is older than rust-version {needed:?}"
    );
}

#[test]
fn final_image_is_distroless_static_non_root_and_has_no_shell() {
    let stages = stages(&dockerfile());
    let last = stages.last().unwrap();
    let base = &last[0].args;
    assert!(
        base == "gcr.io/distroless/static-debian12:nonroot" || base == "scratch",
        "final base: {base}"
    );
    for i in last {
        assert!(
            !matches!(i.keyword.as_str(), "RUN" | "SHELL"),
            "the final image has no shell to run: {i:?}"
        );
    }
    let user: Vec<&str> = last
        .iter()
        .filter(|i| i.keyword == "USER")
        .map(|i| i.args.as_str())
        .collect();
    assert_eq!(user, ["65532:65532"]);
    // The chart's securityContext runs as the same user.
    assert!(read("charts/prom-mtls-webhook/values.yaml").contains("runAsUser: 65532"));

    let copy = last.iter().find(|i| i.keyword == "COPY").unwrap();
    let binary = copy.args.split_whitespace().last().unwrap();
    assert!(copy.args.starts_with("--from=build "), "{copy:?}");
    let entrypoint = last.iter().find(|i| i.keyword == "ENTRYPOINT").unwrap();
    assert_eq!(
        entrypoint.args,
        format!("[\"{binary}\"]"),
        "exec form, the copied binary"
    );
    let cmd = last.iter().find(|i| i.keyword == "CMD").unwrap();
    assert_eq!(cmd.args, "[\"serve\"]");
    let expose = last.iter().find(|i| i.keyword == "EXPOSE").unwrap();
    assert_eq!(expose.args, "8443 8080", "the chart's containerPorts");
}

#[test]
fn final_image_carries_oci_labels() {
    let stages = stages(&dockerfile());
    let labels: String = stages
        .last()
        .unwrap()
        .iter()
        .filter(|i| i.keyword == "LABEL")
        .map(|i| i.args.as_str())
        .collect();
    for key in [
        "title",
        "description",
        "source",
        "licenses",
        "version",
        "revision",
    ] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{key}=")),
            "label org.opencontainers.image.{key}"
        );
    }
}

#[test]
fn dockerignore_keeps_out_build_output_history_tools_and_generated_certificates() {
    let ignore = read(".dockerignore");
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    for entry in ["target/", ".git/", ".tools/", "certs/out/"] {
        assert!(lines.contains(&entry), ".dockerignore lacks {entry}");
    }
    for needed in ["Cargo.lock", "Cargo.toml", "src", "scripts"] {
        assert!(
            !lines.iter().any(|l| l.trim_end_matches('/') == needed),
            ".dockerignore must not drop {needed}"
        );
    }
}
