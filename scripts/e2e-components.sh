#!/usr/bin/env bash
# Builds the real programs of the end-to-end test (tests/e2e.rs) from their Go
# modules, at the versions pinned in tests/e2e/versions.env, into a cache
# outside the clone, one folder per component and version:
#
#   $cache/kubernetes-<v>/bin/{kube-apiserver,kube-controller-manager}
#   $cache/etcd-<v>/bin/etcd
#   $cache/prometheus-operator-<v>/bin/operator, crds/*.yaml
#   $cache/prometheus-<v>/bin/prometheus
#   $cache/istio-api-<v>/crds/peerauthentications.yaml
#
# A folder is complete once its .done stamp exists, so a second run costs
# nothing and an interrupted run resumes with the component it was building.
# Then links them under <repo>/.tools/e2e/{bin,crds} (gitignored), where the
# tests look.
#
#   cache: $PROM_MTLS_WEBHOOK_E2E_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/prom-mtls-webhook/e2e
#
# Needs Go (1.26) and the Go module proxy; nothing else is downloaded.
# Cold, on 2 cores, this takes about 18 minutes (docs/e2e.md); warm, a second.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../tests/e2e/versions.env
source "$repo/tests/e2e/versions.env"

cache="${PROM_MTLS_WEBHOOK_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/prom-mtls-webhook/e2e}"
links="$repo/.tools/e2e"
mkdir -p "$cache"

say() { printf 'e2e-components: %s\n' "$*" >&2; }

command -v go >/dev/null || { say "needs Go 1.26 on PATH (https://go.dev/doc/install)"; exit 1; }
# Static binaries, no C toolchain needed; paths of this machine kept out of them.
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false"
# The programs' own go.mod files name Go 1.26.0 at most; a newer local Go is fine.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

# begin <name> <version>: prints the component's folder; returns 1 when it is
# already built. A half-built folder from an interrupted run is started over.
begin() {
  local dir="$cache/$1-$2"
  if [[ -f "$dir/.done" ]]; then
    echo "$dir"
    return 1
  fi
  rm -rf "$dir"
  mkdir -p "$dir/src" "$dir/bin"
  echo "$dir"
}

# A throwaway main module in $dir/src that requires what it builds.
init_module() {
  local dir="$1"
  (cd "$dir/src" && go mod init prom-mtls-webhook.e2e/build >/dev/null 2>&1)
}

build_kubernetes() {
  local dir
  dir="$(begin kubernetes "$KUBERNETES_VERSION")" || return 0
  say "building kube-apiserver and kube-controller-manager $KUBERNETES_VERSION (the longest part)"
  init_module "$dir"
  local minor="${KUBERNETES_VERSION#v1.}"
  local staging="v0.${minor}"
  local gomod
  gomod="$(cd "$dir/src" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "$gomod" ]] || { say "could not download k8s.io/kubernetes@$KUBERNETES_VERSION"; exit 1; }
  # k8s.io/kubernetes requires every staging module at v0.0.0 and replaces it
  # with ./staging/src/k8s.io/<name>; a dependent pins them to the release.
  local mods
  mods="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*#\1#p' "$gomod" | sort -u)"
  [[ -n "$mods" ]] || { say "no staging replaces found in $gomod"; exit 1; }
  (
    cd "$dir/src"
    for m in $mods; do go mod edit -replace "$m=$m@$staging"; done
    go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBERNETES_VERSION"
    # What `kube-apiserver --version` and /version report; Helm checks a
    # chart's kubeVersion against it.
    local v="k8s.io/component-base/version"
    local ld="-s -w -X $v.gitVersion=$KUBERNETES_VERSION -X $v.gitMajor=1 -X $v.gitMinor=${minor%%.*}"
    ld+=" -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
    go build -trimpath -ldflags "$ld" -o "$dir/bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  )
  touch "$dir/.done"
}

build_etcd() {
  local dir
  dir="$(begin etcd "$ETCD_VERSION")" || return 0
  say "building etcd $ETCD_VERSION"
  init_module "$dir"
  # The etcd binary is etcdmain.Main; its own main package sits in the root
  # module, which pulls in etcdctl and etcdutl as well.
  cat >"$dir/src/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (
    cd "$dir/src"
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy
    go build -trimpath -ldflags "-s -w" -o "$dir/bin/etcd" .
  )
  touch "$dir/.done"
}

build_prometheus_operator() {
  local dir
  dir="$(begin prometheus-operator "$PROMETHEUS_OPERATOR_VERSION")" || return 0
  say "building prometheus-operator $PROMETHEUS_OPERATOR_VERSION"
  init_module "$dir"
  local op=github.com/prometheus-operator/prometheus-operator
  (
    cd "$dir/src"
    # Its go.mod replaces its two API modules with local folders, which a
    # dependent does not inherit: pin them to the same release.
    go mod edit -replace "$op/pkg/apis/monitoring=$op/pkg/apis/monitoring@$PROMETHEUS_OPERATOR_VERSION" \
      -replace "$op/pkg/client=$op/pkg/client@$PROMETHEUS_OPERATOR_VERSION"
    go get -tool "$op/cmd/operator@$PROMETHEUS_OPERATOR_VERSION"
    local ver="github.com/prometheus/common/version"
    go build -trimpath -ldflags "-s -w -X $ver.Version=${PROMETHEUS_OPERATOR_VERSION#v}" -o "$dir/bin/operator" "$op/cmd/operator"
    local moddir
    moddir="$(go list -m -f '{{.Dir}}' "$op")"
    mkdir -p "$dir/crds"
    cp "$moddir"/example/prometheus-operator-crd/*.yaml "$dir/crds/"
    chmod u+w "$dir"/crds/*.yaml
  )
  touch "$dir/.done"
}

build_prometheus() {
  local dir
  dir="$(begin prometheus "$PROMETHEUS_VERSION")" || return 0
  say "building Prometheus $PROMETHEUS_VERSION"
  init_module "$dir"
  (
    cd "$dir/src"
    go get -tool "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION"
    # The web UI's assets are left out (no builtinassets tag): the tests use
    # the HTTP API only. Module v0.3XX.Y is Prometheus 3.XX.Y.
    local minor="${PROMETHEUS_VERSION#v0.3}"
    local ver="github.com/prometheus/common/version"
    go build -trimpath -ldflags "-s -w -X $ver.Version=3.${minor#0}" -o "$dir/bin/prometheus" \
      github.com/prometheus/prometheus/cmd/prometheus
  )
  touch "$dir/.done"
}

fetch_istio_crds() {
  local dir
  dir="$(begin istio-api "$ISTIO_API_VERSION")" || return 0
  say "fetching Istio's PeerAuthentication CRD from istio.io/api $ISTIO_API_VERSION"
  init_module "$dir"
  local moddir
  moddir="$(cd "$dir/src" && go mod download -json "istio.io/api@$ISTIO_API_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  mkdir -p "$dir/crds"
  # One document of the many in the generated file.
  python3 - "$moddir/kubernetes/customresourcedefinitions.gen.yaml" "$dir/crds/peerauthentications.yaml" <<'PY'
import re, sys
docs = re.split(r"(?m)^---\s*$", open(sys.argv[1], encoding="utf-8").read())
found = [d for d in docs if re.search(r"(?m)^  name: peerauthentications\.security\.istio\.io\s*$", d)]
if len(found) != 1:
    sys.exit(f"expected one PeerAuthentication CRD in {sys.argv[1]}, found {len(found)}")
open(sys.argv[2], "w", encoding="utf-8").write("---" + found[0].rstrip() + "\n")
PY
  touch "$dir/.done"
}

started=$SECONDS
fetch_istio_crds
build_etcd
build_prometheus_operator
build_prometheus
build_kubernetes

# Links where the tests look.
rm -rf "$links"
mkdir -p "$links/bin" "$links/crds"
ln -s "$cache/kubernetes-$KUBERNETES_VERSION/bin/kube-apiserver" "$links/bin/kube-apiserver"
ln -s "$cache/kubernetes-$KUBERNETES_VERSION/bin/kube-controller-manager" "$links/bin/kube-controller-manager"
ln -s "$cache/etcd-$ETCD_VERSION/bin/etcd" "$links/bin/etcd"
ln -s "$cache/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION/bin/operator" "$links/bin/prometheus-operator"
ln -s "$cache/prometheus-$PROMETHEUS_VERSION/bin/prometheus" "$links/bin/prometheus"
for f in "$cache/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"/crds/*.yaml "$cache/istio-api-$ISTIO_API_VERSION"/crds/*.yaml; do
  ln -s "$f" "$links/crds/$(basename "$f")"
done
say "ready in $((SECONDS - started)) s: $links -> $cache"
