#!/usr/bin/env bash
# The one release build of prom-mtls-webhook, used by the Dockerfile and by CI.
#
# A statically linked glibc binary (musl is not installable on our machines):
# it runs on distroless/static or scratch, with no libc in the image. The kube
# client reaches the API server by the KUBERNETES_SERVICE_HOST IP address and
# the listeners bind IP addresses, so static glibc needs no NSS modules (as
# long as HOME is set, as container runtimes set it: docs/image.md).
#
# Built for this machine's architecture: x86_64 or aarch64, the host triple of
# rustc (x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu). A Docker build
# on an arm64 machine therefore gives an arm64 binary.
#
#   scripts/build-release.sh [--out DIR]
#
# Prints the binary's path; with --out, also copies it to DIR/prom-mtls-webhook.
set -euo pipefail

bin_name="prom-mtls-webhook"
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "build-release: unknown argument: $1" >&2; exit 2 ;;
  esac
done

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# The host's triple, as rustc reports it; only the two glibc Linux ones are built.
host="$(rustc -vV | sed -n 's/^host: //p')"
case "$host" in
  x86_64-unknown-linux-gnu|aarch64-unknown-linux-gnu) target="$host" ;;
  *)
    echo "build-release: unsupported host ${host:-(rustc -vV printed no host line)}: x86_64 or aarch64 Linux with glibc only" >&2
    exit 1
    ;;
esac
# rustc and the kernel must agree (an x86_64 toolchain under emulation would build the wrong binary).
machine="$(uname -m)"
if [[ "${target%%-*}" != "$machine" ]]; then
  echo "build-release: rustc's host is $target but this machine is $machine" >&2
  exit 1
fi

# --target keeps crt-static off build scripts and proc macros, which must stay dynamic.
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
  cargo build --release --locked --target "$target" --bin "$bin_name"

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
bin="$target_dir/$target/release/$bin_name"

# Static means: no program interpreter (ld.so) and no shared libraries needed.
if ! command -v readelf >/dev/null 2>&1; then
  echo "build-release: readelf (binutils) is needed to check that $bin is static" >&2
  exit 1
fi
# (Captured first: with pipefail, `readelf | grep -q` can fail on SIGPIPE.)
headers="$(readelf --program-headers --wide "$bin")"
dynamic="$(readelf --dynamic --wide "$bin")"
if grep -q 'INTERP' <<<"$headers"; then
  echo "build-release: $bin has a program interpreter: not statically linked" >&2
  exit 1
fi
if grep -q '(NEEDED)' <<<"$dynamic"; then
  echo "build-release: $bin needs shared libraries:" >&2
  grep '(NEEDED)' <<<"$dynamic" >&2
  exit 1
fi
# And it runs: a static binary starts without any library from this system.
"$bin" --help >/dev/null
echo "build-release: $bin is statically linked ($(du -h "$bin" | cut -f1))" >&2

if [[ -n "$out" ]]; then
  mkdir -p "$out"
  cp "$bin" "$out/$bin_name"
  echo "$out/$bin_name"
else
  echo "$bin"
fi
