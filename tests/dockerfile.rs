#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The Dockerfile and the image that scripts/build-image.sh assembles without
//! a Docker engine. There is no engine on our machines, so the Dockerfile is
//! linted (hadolint, installed by scripts/install-tools.sh) and read: the image
//! must be built by the same release command CI runs, and be static, small and
//! non-root. The assembly script is run here on a small dynamically linked ELF
//! (the release build takes minutes): its layout, config and layer are checked
//! against the Dockerfile, and two builds must be identical. Running the real
//! image (root, runc) is scripts/check-image.sh's job, after
//! scripts/build-release.sh in CI (docs/image.md).

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
    // The host's architecture, from rustc's host triple, x86_64 or aarch64.
    assert!(script.contains("rustc -vV"), "the target is rustc's host");
    for triple in ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] {
        assert!(script.contains(triple), "build-release.sh builds {triple}");
    }
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

/// `key="value"` pairs of a LABEL instruction (values may hold spaces).
fn label_pairs(args: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = args.trim();
    while let Some((key, after)) = rest.split_once("=\"") {
        let (value, tail) = after.split_once('"').unwrap();
        pairs.push((key.trim().to_owned(), value.to_owned()));
        rest = tail.trim_start();
    }
    assert!(rest.is_empty(), "unparsed LABEL text: {rest}");
    pairs
}

fn dockerfile_labels() -> Vec<(String, String)> {
    let stages = stages(&dockerfile());
    stages
        .last()
        .unwrap()
        .iter()
        .filter(|i| i.keyword == "LABEL")
        .flat_map(|i| label_pairs(&i.args))
        .collect()
}

fn cargo_version() -> String {
    read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .map(|v| v.trim_end_matches('"').to_owned())
        .expect("Cargo.toml has a version")
}

#[test]
fn dockerfile_version_default_is_the_crate_version() {
    let stages = stages(&dockerfile());
    let arg = stages
        .last()
        .unwrap()
        .iter()
        .find(|i| i.keyword == "ARG" && i.args.starts_with("VERSION="))
        .expect("ARG VERSION=... in the final stage");
    assert_eq!(arg.args, format!("VERSION={}", cargo_version()));
}

/// A small dynamically linked ELF of this machine's architecture: the
/// assembly is checked on it (with --allow-dynamic), not on a release build.
const SMALL_ELF: &str = "/usr/bin/true";

fn build_image(out: &Path, extra: &[&str]) -> std::process::Output {
    assert!(Path::new(SMALL_ELF).is_file(), "{SMALL_ELF} is missing");
    Command::new(repo().join("scripts/build-image.sh"))
        .current_dir(repo())
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["--binary", SMALL_ELF, "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap()
}

/// The blob a descriptor names, checked against its digest and size.
fn blob(layout: &Path, descriptor: &serde_json::Value) -> PathBuf {
    let digest = descriptor["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let path = layout.join("blobs/sha256").join(hex);
    let sum = run(Command::new("sha256sum").arg(&path));
    assert!(
        String::from_utf8(sum).unwrap().starts_with(hex),
        "{digest} does not match its blob"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        descriptor["size"].as_u64().unwrap(),
        "{digest}: size"
    );
    path
}

#[test]
fn image_assembly_refuses_a_dynamically_linked_binary() {
    let dir = tempfile::tempdir().unwrap();
    let out = build_image(dir.path(), &[]);
    assert!(!out.status.success(), "a dynamic binary was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dynamically linked"), "{stderr}");
}

#[test]
fn assembled_image_is_the_dockerfile_image_and_is_reproducible() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let outputs: Vec<String> = [one.path(), two.path()]
        .iter()
        .map(|dir| {
            let out = build_image(dir, &["--allow-dynamic"]);
            assert!(
                out.status.success(),
                "build-image.sh: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    let printed = |stdout: &str, key: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} line in {stdout}"))
            .to_owned()
    };
    let digest = printed(&outputs[0], "digest: ");
    assert_eq!(
        digest,
        printed(&outputs[1], "digest: "),
        "same input, same digest"
    );
    let archive = one.path().join("prom-mtls-webhook.tar");
    assert_eq!(printed(&outputs[0], "archive: "), archive.to_str().unwrap());
    assert!(
        std::fs::read(&archive).unwrap()
            == std::fs::read(two.path().join("prom-mtls-webhook.tar")).unwrap(),
        "the archives differ"
    );

    let layout = one.path().join("oci");
    assert_eq!(
        json(&layout.join("oci-layout")),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    let entry = &manifests[0];
    assert_eq!(entry["digest"], digest.as_str());
    // What containerd (kind, k3d) and OCI tools name the image by.
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        "docker.io/library/prom-mtls-webhook:dev"
    );
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "dev"
    );
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(entry["platform"]["architecture"], arch);
    assert_eq!(entry["platform"]["os"], "linux");

    let manifest = json(&blob(&layout, entry));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config_path = blob(&layout, &manifest["config"]);
    let config = json(&config_path);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one layer");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    let layer = blob(&layout, &layers[0]);
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([layers[0]["digest"]])
    );
    assert_eq!(config["architecture"], arch);
    assert_eq!(config["os"], "linux");

    // The Dockerfile's final stage, instruction by instruction.
    let stages = stages(&dockerfile());
    let last = stages.last().unwrap();
    let arg = |keyword: &str| -> String {
        last.iter()
            .find(|i| i.keyword == keyword)
            .unwrap_or_else(|| panic!("no {keyword}"))
            .args
            .clone()
    };
    let c = &config["config"];
    assert_eq!(c["User"], arg("USER").as_str());
    let entrypoint: serde_json::Value = serde_json::from_str(&arg("ENTRYPOINT")).unwrap();
    assert_eq!(c["Entrypoint"], entrypoint);
    let cmd: serde_json::Value = serde_json::from_str(&arg("CMD")).unwrap();
    assert_eq!(c["Cmd"], cmd);
    let ports: serde_json::Map<String, serde_json::Value> = arg("EXPOSE")
        .split_whitespace()
        .map(|p| (format!("{p}/tcp"), serde_json::json!({})))
        .collect();
    assert_eq!(c["ExposedPorts"], serde_json::Value::Object(ports));
    let labels = c["Labels"].as_object().unwrap();
    let dockerfile_labels = dockerfile_labels();
    assert!(dockerfile_labels.len() >= 6, "{dockerfile_labels:?}");
    for (key, value) in dockerfile_labels {
        match key.as_str() {
            // The assembled image has no base image.
            "org.opencontainers.image.base.name" => assert!(!labels.contains_key(&key)),
            "org.opencontainers.image.version" => {
                assert_eq!(labels[&key], cargo_version().as_str());
            }
            "org.opencontainers.image.revision" => {
                assert!(!labels[&key].as_str().unwrap().is_empty());
            }
            _ => assert_eq!(labels.get(&key), Some(&value.clone().into()), "{key}"),
        }
    }

    // The layer: the binary and the CA bundle, their directories, owner 0:0,
    // mtime 0, sorted.
    let listing = run(Command::new("tar")
        .args([
            "--list",
            "--verbose",
            "--numeric-owner",
            "--full-time",
            "--file",
        ])
        .arg(&layer));
    let listing = String::from_utf8(listing).unwrap();
    let mut names = Vec::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [mode, owner, _size, date, time, name] = fields[..] else {
            panic!("tar listing: {line}");
        };
        assert_eq!(
            (owner, date, time),
            ("0/0", "1970-01-01", "00:00:00"),
            "{line}"
        );
        let expected_mode = match name {
            "usr/local/bin/prom-mtls-webhook" => "-rwxr-xr-x",
            "etc/ssl/certs/ca-certificates.crt" => "-rw-r--r--",
            "etc/" | "etc/ssl/" | "etc/ssl/certs/" | "usr/" | "usr/local/" | "usr/local/bin/" => {
                "drwxr-xr-x"
            }
            other => panic!("the layer holds {other}"),
        };
        assert_eq!(mode, expected_mode, "{line}");
        names.push(name);
    }
    assert_eq!(names.len(), 8, "{listing}");
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "entries are sorted");
    let extract = |member: &str| run(Command::new("tar").args(["-xOf"]).arg(&layer).arg(member));
    assert!(extract("usr/local/bin/prom-mtls-webhook") == std::fs::read(SMALL_ELF).unwrap());
    assert!(
        extract("etc/ssl/certs/ca-certificates.crt")
            == std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap()
    );

    // docker save's manifest.json, beside the OCI index, names the same blobs.
    let config_hex = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .replace("sha256:", "");
    let layer_hex = layers[0]["digest"].as_str().unwrap().replace("sha256:", "");
    assert_eq!(
        json(&layout.join("manifest.json")),
        serde_json::json!([{
            "Config": format!("blobs/sha256/{config_hex}"),
            "RepoTags": ["prom-mtls-webhook:dev"],
            "Layers": [format!("blobs/sha256/{layer_hex}")],
        }])
    );
    let archived = run(Command::new("tar").args(["--list", "--file"]).arg(&archive));
    let archived: Vec<&str> = std::str::from_utf8(&archived).unwrap().lines().collect();
    for name in ["oci-layout", "index.json", "manifest.json"] {
        assert!(
            archived.contains(&name),
            "the archive lacks {name}: {archived:?}"
        );
    }
    for hex in [&config_hex, &layer_hex, &digest.replace("sha256:", "")] {
        assert!(archived.contains(&format!("blobs/sha256/{hex}").as_str()));
    }
}
