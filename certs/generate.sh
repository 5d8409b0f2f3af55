#!/usr/bin/env bash
# Makes a CA and a serving certificate signed by it, for running the webhook
# outside a cluster or against a local cluster (kind, minikube, k3d):
#
#   certs/generate.sh                                   # localhost, 127.0.0.1
#   certs/generate.sh --dns host.docker.internal --ip 172.18.0.1
#   certs/generate.sh --service pmw-prom-mtls-webhook --namespace prom-mtls-webhook
#
# Writes certs/out/{ca.crt,tls.crt,tls.key} (certs/out is ignored by git) with
# `prom-mtls-webhook certs`. The binary is $PROM_MTLS_WEBHOOK_BIN if set,
# else `prom-mtls-webhook` on PATH, else this checkout built with cargo.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$repo/certs/out"
dns=(localhost)
ips=(127.0.0.1)
service=""
namespace=""

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --dns) dns+=("${2:?--dns needs a name}"); shift 2 ;;
    --ip) ips+=("${2:?--ip needs an address}"); shift 2 ;;
    --service) service="${2:?--service needs a name}"; shift 2 ;;
    --namespace) namespace="${2:?--namespace needs a name}"; shift 2 ;;
    -h|--help) sed -n "2,11p" "$0"; exit 0 ;;
    *) echo "certs/generate.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

# The four names the API server may use for an in-cluster Service.
if [[ -n "$service" ]]; then
  ns="${namespace:-default}"
  dns+=("$service" "$service.$ns" "$service.$ns.svc" "$service.$ns.svc.cluster.local")
fi

if [[ -n "${PROM_MTLS_WEBHOOK_BIN:-}" ]]; then
  run=("$PROM_MTLS_WEBHOOK_BIN")
elif command -v prom-mtls-webhook >/dev/null 2>&1; then
  run=(prom-mtls-webhook)
else
  run=(cargo run --quiet --manifest-path "$repo/Cargo.toml" --bin prom-mtls-webhook --)
fi

args=(certs --out "$out")
for name in "${dns[@]}"; do args+=(--dns "$name"); done
for ip in "${ips[@]}"; do args+=(--ip "$ip"); done

mkdir -p "$out"
"${run[@]}" "${args[@]}"
chmod 600 "$out/tls.key"

cat <<TXT
Wrote $out/ca.crt, $out/tls.crt, $out/tls.key
  names: ${dns[*]}  addresses: ${ips[*]}

Serve with them:
  prom-mtls-webhook serve --tls-cert $out/tls.crt --tls-key $out/tls.key
Trust them:
  curl --cacert $out/ca.crt https://localhost:8443/mutate ...
caBundle for a webhook configuration:
  base64 -w0 < $out/ca.crt
TXT
