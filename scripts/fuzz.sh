#!/usr/bin/env bash
# Bounded fuzzing with cargo-fuzz (libFuzzer), on the stable toolchain.
#
#   scripts/fuzz.sh [target|all] [seconds]        default: all, 60 s per target
#   scripts/fuzz.sh --corpus-only [target|all]    replay the corpus once, no fuzzing
#
# Targets (fuzz/fuzz_targets/):
#   review          arbitrary bytes through admission::review (the webhook's input)
#   mutate          arbitrary objects (JSON, or YAML) through mutation::mutate, every kind
#   preview         arbitrary text through preview::preview, both outputs
#   yaml_roundtrip  yaml::parse_documents, then to_string and parse again: same value
# Each checks more than "no panic": patches keep the tests' rules
# (tests/support: they apply, rewrite and remove only what the webhook may,
# lose nothing else) and are empty on a second pass; outputs read back unchanged.
#
# Installs cargo-fuzz into .tools/ when it is not on PATH. The corpus in
# fuzz/corpus/<target> (gitignored) is seeded from tests/fixtures/admission,
# tests/golden/cases/*/{input,expected}.yaml, fuzz/regressions/ and fuzz/seeds/<target>/.
# A crash leaves its input in fuzz/artifacts/<target>/ and exits non-zero;
# reproduce with: RUSTC_BOOTSTRAP=1 .tools/bin/cargo-fuzz run -s none -a <target> <file>
#
# Environment: FUZZ_SANITIZER (default none: the crate has no unsafe code;
# `address` runs the C/unsafe parts of dependencies under ASan, about 2x slower),
# FUZZ_JOBS (parallel fuzzing processes per target, default 1).
set -euo pipefail

corpus_only=0
if [[ "${1:-}" == --corpus-only ]]; then corpus_only=1; shift; fi
which="${1:-all}"
seconds="${2:-60}"
case "$which" in -h|--help) sed -n '2,24p' "$0"; exit 0 ;; esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
all_targets=(review mutate preview yaml_roundtrip)
if [[ "$which" == all ]]; then targets=("${all_targets[@]}"); else targets=("$which"); fi
for t in "${targets[@]}"; do
  [[ -f "fuzz/fuzz_targets/$t.rs" ]] || { echo "fuzz: no target $t (have: ${all_targets[*]})" >&2; exit 2; }
done
say() { printf 'fuzz: %s\n' "$*" >&2; }

# --- cargo-fuzz -------------------------------------------------------------------
export PATH="$repo/.tools/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null; then
  say "installing cargo-fuzz into .tools/"
  CARGO_INSTALL_ROOT="$repo/.tools" cargo install --locked cargo-fuzz >&2
fi
# libFuzzer's instrumentation needs -Z flags: allowed on stable with this.
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-none}"
jobs="${FUZZ_JOBS:-1}"

# --- seed corpus ------------------------------------------------------------------
fixtures="$repo/tests/fixtures/admission"
seed() { # target
  local t="$1" dir="fuzz/corpus/$1"
  mkdir -p "$dir"
  [[ -d "fuzz/seeds/$t" ]] && cp -n fuzz/seeds/"$t"/* "$dir"/ 2>/dev/null || true
  # Every input a fuzzer once found a bug with (tests/fuzz_regressions.rs
  # replays them too); each target reads what it can of the others'.
  cp -n fuzz/regressions/* "$dir"/
  case "$t" in
    review)
      cp -n "$fixtures"/*.json "$dir"/ ;;
    mutate|preview)
      # The objects inside the captured reviews, and the golden test inputs.
      python3 - "$fixtures" "$dir" <<'PY'
import json, os, sys
src, dst = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(src)):
    if name.endswith(".json"):
        obj = json.load(open(os.path.join(src, name)))["request"].get("object")
        if obj is not None:
            with open(os.path.join(dst, "object-" + name), "w") as f:
                json.dump(obj, f, separators=(",", ":"))
PY
      for f in tests/golden/cases/*/input.yaml; do
        cp -n "$f" "$dir/golden-$(basename "$(dirname "$f")").yaml"
      done ;;
    yaml_roundtrip)
      for f in tests/golden/cases/*/input.yaml tests/golden/cases/*/expected.yaml; do
        cp -n "$f" "$dir/golden-$(basename "$(dirname "$f")")-$(basename "$f")"
      done ;;
  esac
}

dict_for() {
  case "$1" in review|mutate) echo "$repo/fuzz/dicts/json.dict" ;; *) echo "$repo/fuzz/dicts/yaml.dict" ;; esac
}

# Build first (all targets, or the one asked for), so that a build failure
# is not taken for a crash.
build_target=()
[[ "$which" != all ]] && build_target=("$which")
if ! cargo fuzz build --fuzz-dir fuzz -s "$sanitizer" -a "${build_target[@]}" >&2; then
  say "the fuzz targets do not build"
  exit 2
fi

status=0
for t in "${targets[@]}"; do
  seed "$t"
  say "$t: $(ls "fuzz/corpus/$t" | wc -l) corpus inputs"
  args=(-dict="$(dict_for "$t")" -timeout=10 -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1)
  if [[ "$corpus_only" == 1 ]]; then
    args+=(-runs=0)
  else
    args+=(-max_total_time="$seconds")
    [[ "$jobs" -gt 1 ]] && args+=(-fork="$jobs")
  fi
  start=$(date +%s)
  # -a: debug assertions and overflow checks on, so arithmetic overflow is found too.
  if ! cargo fuzz run --fuzz-dir fuzz -s "$sanitizer" -a "$t" "fuzz/corpus/$t" -- "${args[@]}"; then
    say "$t: FAILED (input in fuzz/artifacts/$t/)"
    status=1
  fi
  say "$t: done in $(( $(date +%s) - start )) s"
done
exit "$status"
