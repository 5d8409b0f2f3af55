#!/usr/bin/env bash
# Pod and ServiceMonitor create latency through a real kube-apiserver, with
# the webhook called and without it, in one run (a benchmark, never a test).
#
#   scripts/bench-apiserver.sh [--no-build | --webhook BIN] [--rounds N] [--per-round N]
#                              [--set chart.value=x]...
#
# Uses the end-to-end harness's control plane (etcd, kube-apiserver,
# kube-controller-manager from scripts/e2e-components.sh, the chart installed
# with Helm, the release binary of scripts/build-release.sh serving on
# 127.0.0.1) and prints a markdown table: p50, p90 and p99 of each create,
# timed at the client over one kept-alive HTTPS connection, and the median's
# difference. Rounds alternate the order of the two states; the webhook
# configuration is deleted and restored between them, and each state is
# confirmed through the webhook's review counter before it is timed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

build=1
webhook=""
passed=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) build=0; shift ;;
    --webhook) webhook="${2:?--webhook needs a binary}"; build=0; shift 2 ;;
    --rounds|--per-round|--set) passed+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench-apiserver: unknown argument: $1" >&2; exit 2 ;;
  esac
done

scripts/install-tools.sh >/dev/null
if [[ -n "$webhook" ]]; then
  :
elif [[ $build -eq 1 ]]; then
  webhook="$(scripts/build-release.sh)"
else
  host="$(rustc -vV | sed -n 's/^host: //p')"
  webhook="${CARGO_TARGET_DIR:-$repo/target}/$host/release/prom-mtls-webhook"
fi
# A copy, so that a build running meanwhile cannot swap the binary under the run.
copy="$(mktemp -d)"
trap 'rm -rf "$copy"' EXIT
cp "$webhook" "$copy/prom-mtls-webhook"
cargo run --quiet --release --locked --example apiserver_latency -- \
  --webhook "$copy/prom-mtls-webhook" "${passed[@]}"
