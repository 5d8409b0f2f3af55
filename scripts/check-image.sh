#!/usr/bin/env bash
# Runs the image that scripts/build-image.sh assembled, in an OCI runtime
# (Debian's runc, or crun), the way the Helm chart runs it, and checks what
# matters:
#
#   - the OCI layout: every blob matches its digest and size; the config has
#     User 65532:65532, the entrypoint, Cmd ["serve"], ports 8443 and 8080, the
#     OCI labels (version = Cargo.toml's), os linux, this machine's architecture
#   - the layer holds exactly the binary and the CA bundle (and their parent
#     directories), owned 0:0, no symlinks, devices or set-id bits
#   - in the container (read-only root, no capabilities, no new privileges,
#     the host's network namespace, the serving pair bind-mounted read-only at
#     /etc/prom-mtls-webhook/tls as the chart mounts it): /readyz answers 200;
#     an AdmissionReview (tests/fixtures/admission/pod-create-1.json) POSTed to
#     https://localhost:PORT/mutate gets 200 with the request's uid and a JSON
#     patch; the process runs as uid/gid 65532 with no capabilities; / and the
#     TLS mount are mounted ro, and writing there fails with EROFS; the logs
#     are JSON; SIGTERM stops it
#   - with --containerd: the archive imports into a private containerd with the
#     command `kind load image-archive` runs (`k3d image import` runs
#     `ctr image import` too), under the name docker.io/library/NAME:TAG
#
# Everything listens on 127.0.0.1 only. Every wait is bounded. The container
# (and containerd) are removed on exit. Needs root, python3, curl, GNU tar;
# runc or crun (apt-get install runc); containerd for --containerd.
#
# If no OCI runtime can start a container here (and --runtime is auto), it
# falls back to running the image's binary as 65532:65532 with setpriv
# (util-linux) outside any container, says so, and cannot check the read-only
# root, the mounts or the namespaces.
#
#   scripts/check-image.sh [--image DIR] [--runtime auto|runc|crun|none]
#                          [--containerd] [--archive TAR] [--keep]
#
#   --image DIR    the OCI layout; default target/image/oci
#   --runtime      auto (default): runc, else crun, else the setpriv fallback;
#                  runc or crun: that one, and no fallback; none: the fallback
#   --containerd   also import the archive into a private containerd
#   --archive TAR  for --containerd; default: prom-mtls-webhook.tar beside DIR
#   --keep         keep the work directory (bundle, logs) for a look
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="$repo/target/image/oci"
archive=""
runtime="auto"
with_containerd=0
keep=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --image) image="${2:?--image needs a directory}"; shift 2 ;;
    --runtime) runtime="${2:?--runtime needs auto, runc, crun or none}"; shift 2 ;;
    --containerd) with_containerd=1; shift ;;
    --archive) archive="${2:?--archive needs a file}"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "check-image: unknown argument: $1" >&2; exit 2 ;;
  esac
done
case "$runtime" in auto|runc|crun|none) ;; *) echo "check-image: --runtime: auto, runc, crun or none" >&2; exit 2 ;; esac
archive="${archive:-$(dirname "$image")/prom-mtls-webhook.tar}"
fixture="$repo/tests/fixtures/admission/pod-create-1.json"

say() { printf 'check-image: %s\n' "$*"; }
checks=0
ok() { checks=$((checks + 1)); printf 'ok   %s\n' "$*"; }
logs() {
  local f
  for f in "$work"/*.out "$work"/*.err; do
    [[ -s "$f" ]] || continue
    printf -- '--- %s (last 20 lines)\n' "${f##*/}" >&2
    tail -n 20 "$f" >&2
  done
}
fail() {
  printf 'check-image: FAIL: %s\n' "$*" >&2
  logs
  exit 1
}

[[ $(id -u) -eq 0 ]] || fail "needs root (the OCI runtime, or setpriv in the fallback)"
for tool in python3 curl tar timeout; do
  command -v "$tool" >/dev/null 2>&1 || fail "needs $tool"
done
[[ -f "$image/index.json" ]] || fail "$image is not an OCI layout: run scripts/build-image.sh"
[[ -f "$fixture" ]] || fail "$fixture is missing"
if [[ $with_containerd -eq 1 ]]; then
  if ! command -v containerd >/dev/null 2>&1 || ! command -v ctr >/dev/null 2>&1; then
    fail "--containerd needs containerd and ctr (apt-get install containerd)"
  fi
  [[ -f "$archive" ]] || fail "$archive is missing: run scripts/build-image.sh"
fi

work="$(mktemp -d /tmp/prom-mtls-webhook-check.XXXXXX)"
# The fallback runs the binary as 65532 from here: it must be able to traverse.
chmod 0755 "$work"
state="$work/runtime-state"
cid="prom-mtls-webhook-check-$$"
rt=""
container_started=0
fallback_pid=""
containerd_pid=""

cleanup() {
  local rc=$?
  if [[ $container_started -eq 1 ]]; then
    timeout 10 "$rt" --root "$state" kill "$cid" KILL >/dev/null 2>&1 || true
    timeout 20 "$rt" --root "$state" delete --force "$cid" >/dev/null 2>&1 || true
  fi
  # An interrupted probe (`RUNTIME run` in the foreground) may leave its container.
  local r
  for r in runc crun; do
    if [[ -d "$state" ]] && command -v "$r" >/dev/null 2>&1; then
      timeout 20 "$r" --root "$state" delete --force "$cid-probe" >/dev/null 2>&1 || true
    fi
  done
  if [[ -n "$fallback_pid" ]] && kill -0 "$fallback_pid" 2>/dev/null; then
    kill -KILL "$fallback_pid" 2>/dev/null || true
  fi
  if [[ -n "$containerd_pid" ]] && kill -0 "$containerd_pid" 2>/dev/null; then
    kill -TERM "$containerd_pid" 2>/dev/null || true
    timeout 10 tail --pid="$containerd_pid" -f /dev/null 2>/dev/null || kill -KILL "$containerd_pid" 2>/dev/null || true
  fi
  if [[ $keep -eq 1 ]]; then
    say "kept $work"
  else
    # containerd's snapshots may hold mounts; never follow them out of $work.
    { grep -o " $work/[^ ]*" /proc/self/mounts 2>/dev/null || true; } | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$work" 2>/dev/null || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. The layout, the config, the layer ------------------------------------
say "image: $image"
python3 - "$image" "$repo/Cargo.toml" "$(uname -m)" "$work/image.txt" <<'PY' || fail "the image layout"
import hashlib, json, os, sys, tomllib

layout, cargo_toml, machine, result = sys.argv[1:]
host_arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)

def die(msg):
    print(f"check-image: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)

def blob(desc):
    algo, _, hexd = desc["digest"].partition(":")
    if algo != "sha256":
        die(f"digest algorithm {algo}")
    path = os.path.join(layout, "blobs", "sha256", hexd)
    if not os.path.isfile(path):
        die(f"blob {desc['digest']} is missing")
    data = open(path, "rb").read()
    if hashlib.sha256(data).hexdigest() != hexd:
        die(f"blob {desc['digest']} does not match its digest")
    if len(data) != desc["size"]:
        die(f"blob {desc['digest']} is {len(data)} bytes, its descriptor says {desc['size']}")
    return path, data

layout_file = json.load(open(os.path.join(layout, "oci-layout")))
if layout_file.get("imageLayoutVersion") != "1.0.0":
    die(f"oci-layout: {layout_file}")
index = json.load(open(os.path.join(layout, "index.json")))
if len(index.get("manifests", [])) != 1:
    die("index.json must list exactly one manifest")
mdesc = index["manifests"][0]
if mdesc["mediaType"] != "application/vnd.oci.image.manifest.v1+json":
    die(f"manifest media type {mdesc['mediaType']}")
_, mdata = blob(mdesc)
manifest = json.loads(mdata)
_, cdata = blob(manifest["config"])
config = json.loads(cdata)
layers = manifest["layers"]
if len(layers) != 1 or layers[0]["mediaType"] != "application/vnd.oci.image.layer.v1.tar":
    die(f"expected one uncompressed tar layer: {layers}")
lpath, _ = blob(layers[0])
if config["rootfs"] != {"type": "layers", "diff_ids": [layers[0]["digest"]]}:
    die(f"rootfs.diff_ids do not name the layer: {config['rootfs']}")
print(f"ok   layout: manifest {mdesc['digest']}, config and layer match their digests")

c = config["config"]
want = {
    "User": "65532:65532",
    "Entrypoint": ["/usr/local/bin/prom-mtls-webhook"],
    "Cmd": ["serve"],
    "ExposedPorts": {"8443/tcp": {}, "8080/tcp": {}},
}
for key, value in want.items():
    if c.get(key) != value:
        die(f"config {key} is {c.get(key)!r}, expected {value!r}")
if config.get("os") != "linux" or config.get("architecture") != host_arch:
    die(f"platform {config.get('os')}/{config.get('architecture')}, this machine is linux/{host_arch}")
if mdesc.get("platform", {}).get("architecture") != host_arch:
    die(f"index.json platform {mdesc.get('platform')}")
version = tomllib.load(open(cargo_toml, "rb"))["package"]["version"]
labels = c.get("Labels", {})
for key in ("title", "description", "source", "licenses", "version", "revision"):
    if not labels.get(f"org.opencontainers.image.{key}"):
        die(f"label org.opencontainers.image.{key} is missing")
if labels["org.opencontainers.image.version"] != version:
    die(f"label version {labels['org.opencontainers.image.version']}, Cargo.toml says {version}")
name = mdesc.get("annotations", {}).get("io.containerd.image.name", "")
if not name:
    die("index.json names no image (io.containerd.image.name)")
print(f"ok   config: user 65532:65532, entrypoint {c['Entrypoint'][0]}, cmd serve, "
      f"ports 8443/tcp 8080/tcp, linux/{host_arch}, version {version}, "
      f"revision {labels['org.opencontainers.image.revision']}")
with open(result, "w") as f:
    print(lpath, name, mdesc["digest"], sep="\n", file=f)
PY
checks=$((checks + 2))
{ read -r layer_path; read -r image_name; read -r image_digest; } <"$work/image.txt"

python3 - "$layer_path" <<'PY' || fail "the layer's contents"
import sys, tarfile

files = {
    "usr/local/bin/prom-mtls-webhook": 0o755,
    "etc/ssl/certs/ca-certificates.crt": 0o644,
}
parents = {"usr", "usr/local", "usr/local/bin", "etc", "etc/ssl", "etc/ssl/certs"}
seen = set()
with tarfile.open(sys.argv[1], "r:") as tar:
    for m in tar.getmembers():
        name = m.name.removeprefix("./").rstrip("/")
        problem = None
        if m.uid != 0 or m.gid != 0:
            problem = f"owned by {m.uid}:{m.gid}"
        elif m.mode & 0o7000:
            problem = f"set-id or sticky bits ({oct(m.mode)})"
        elif m.isdir():
            if name not in parents:
                problem = "a directory that holds neither file"
        elif m.isfile():
            if name not in files:
                problem = "not one of the two files"
            elif m.mode != files[name]:
                problem = f"mode {oct(m.mode)}, expected {oct(files[name])}"
            elif m.size == 0:
                problem = "empty"
        else:
            problem = "not a regular file or directory"
        if problem:
            print(f"check-image: FAIL: layer entry {m.name}: {problem}", file=sys.stderr)
            sys.exit(1)
        seen.add(name)
missing = (set(files) | parents) - seen
if missing:
    print(f"check-image: FAIL: the layer lacks {sorted(missing)}", file=sys.stderr)
    sys.exit(1)
print("ok   layer: exactly /usr/local/bin/prom-mtls-webhook (0755) and "
      "/etc/ssl/certs/ca-certificates.crt (0644), their directories, owner 0:0")
PY
checks=$((checks + 1))
tar --list --verbose --numeric-owner --file "$layer_path" | sed 's/^/     /'

# --- 2. The bundle: rootfs from the layer, the serving pair ------------------
bundle="$work/bundle"
rootfs="$bundle/rootfs"
mkdir -p "$rootfs" "$state"
tar --extract --file "$layer_path" --directory "$rootfs" --numeric-owner --same-permissions
bin="$rootfs/usr/local/bin/prom-mtls-webhook"

# The binary itself makes the pair (static: it runs on this machine as it is).
tls="$work/tls"
timeout 30 "$bin" certs --out "$tls" --dns localhost --ip 127.0.0.1 >"$work/certs.out" 2>&1 ||
  fail "prom-mtls-webhook certs"
# As the chart's Secret volume: readable by group 65532 (fsGroup) only.
chown -R 0:65532 "$tls"
chmod 0750 "$tls"
chmod 0440 "$tls"/*
ok "serving pair for localhost/127.0.0.1 from \`prom-mtls-webhook certs\`, mode 0440 group 65532"

read -r port admin_port < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
for s in socks:
    s.close()
PY
)
args=(serve --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port"
  --tls-cert /etc/prom-mtls-webhook/tls/tls.crt --tls-key /etc/prom-mtls-webhook/tls/tls.key
  --mesh-mtls strict --ordering-check off --log-format json)

# write_config RUNTIME ARG...: config.json from `RUNTIME spec`, then what the
# chart asks of the pod: the image's user, entrypoint and env, read-only root,
# no capabilities, no new privileges, the TLS mount; and the host network
# namespace so that curl on 127.0.0.1 reaches the listeners.
write_config() {
  local r="$1"
  shift
  rm -f "$bundle/config.json"
  (cd "$bundle" && timeout 10 "$r" spec) || return 1
  python3 - "$bundle/config.json" "$image" "$tls" "$@" <<'PY'
import json, os, sys

path, layout, tls, *args = sys.argv[1:]
index = json.load(open(os.path.join(layout, "index.json")))
def blob(digest):
    return json.load(open(os.path.join(layout, "blobs", "sha256", digest.split(":")[1])))
image = blob(blob(index["manifests"][0]["digest"])["config"]["digest"])["config"]
uid, gid = (int(x) for x in image["User"].split(":"))

spec = json.load(open(path))
spec["root"] = {"path": "rootfs", "readonly": True}
spec["hostname"] = "prom-mtls-webhook-check"
p = spec["process"]
p["terminal"] = False
p["user"] = {"uid": uid, "gid": gid}
p["args"] = image["Entrypoint"] + args
p["env"] = image.get("Env", [])
p["cwd"] = image.get("WorkingDir") or "/"
p["capabilities"] = {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")}
p["noNewPrivileges"] = True
# The runtime's own limits (raising them needs CAP_SYS_RESOURCE, which a CI
# sandbox may lack).
p.pop("rlimits", None)
spec["mounts"].append({
    "destination": "/etc/prom-mtls-webhook/tls",
    "type": "bind",
    "source": tls,
    "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
})
linux = spec["linux"]
linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
json.dump(spec, open(path, "w"), indent=2)
PY
}

# probe RUNTIME: can it start a container here at all? `--version` in the
# same bundle, in the foreground, bounded.
probe() {
  local r="$1"
  command -v "$r" >/dev/null 2>&1 || { say "$r: not installed"; return 1; }
  write_config "$r" --version >"$work/probe-$r.err" 2>&1 || { say "$r spec failed: $(tail -n1 "$work/probe-$r.err")"; return 1; }
  if timeout 60 "$r" --root "$state" run --bundle "$bundle" "$cid-probe" </dev/null \
      >"$work/probe-$r.out" 2>>"$work/probe-$r.err" && grep -q '^prom-mtls-webhook ' "$work/probe-$r.out"; then
    return 0
  fi
  say "$r cannot run a container here: $(tr '\n' ' ' <"$work/probe-$r.err" | cut -c1-300)"
  timeout 20 "$r" --root "$state" delete --force "$cid-probe" >/dev/null 2>&1 || true
  rm -f "$work/probe-$r.out" "$work/probe-$r.err"
  return 1
}

case "$runtime" in
  auto)
    for candidate in runc crun; do
      if probe "$candidate"; then rt="$candidate"; break; fi
    done
    ;;
  runc|crun)
    probe "$runtime" || fail "$runtime cannot run a container here (--runtime auto would fall back to setpriv)"
    rt="$runtime"
    ;;
esac

# GET URL: prints the HTTP status (000 when nothing answers).
http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }

# --- 3a. In the container ------------------------------------------------------
if [[ -n "$rt" ]]; then
  say "runtime: $("$rt" --version | head -n1)"
  ok "$rt starts the image (\`prom-mtls-webhook --version\` in a read-only, capability-free container)"
  write_config "$rt" "${args[@]}" || fail "$rt spec"
  container_started=1
  timeout 60 "$rt" --root "$state" run --detach --bundle "$bundle" "$cid" </dev/null \
    >"$work/container.out" 2>"$work/container.err" || fail "$rt run"
  pid="$(timeout 10 "$rt" --root "$state" state "$cid" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')" ||
    fail "$rt state gives no pid"
  running() { timeout 10 "$rt" --root "$state" state "$cid" 2>/dev/null | grep -q '"status": "running"'; }
  say "container $cid, pid $pid, webhook on 127.0.0.1:$port, admin on 127.0.0.1:$admin_port"
else
  [[ "$runtime" == "auto" || "$runtime" == "none" ]] || fail "no runtime"
  command -v setpriv >/dev/null 2>&1 || fail "no OCI runtime works here, and the fallback needs setpriv (util-linux)"
  say "=================================================================="
  if [[ "$runtime" == "none" ]]; then
    say "FALLBACK (--runtime none): no OCI runtime is used."
  else
    say "FALLBACK: no OCI runtime can run a container here (runc, crun)."
  fi
  say "Running the image's binary as 65532:65532 with setpriv, OUTSIDE a"
  say "container: the read-only root, the mounts and the namespaces are"
  say "NOT checked. The binary, its user, TLS and the review are."
  say "=================================================================="
  env_args=()
  while IFS= read -r line; do env_args+=("$line"); done < <(python3 - "$image" <<'PY'
import json, os, sys
layout = sys.argv[1]
index = json.load(open(os.path.join(layout, "index.json")))
def blob(digest):
    return json.load(open(os.path.join(layout, "blobs", "sha256", digest.split(":")[1])))
for e in blob(blob(index["manifests"][0]["digest"])["config"]["digest"])["config"].get("Env", []):
    print(e)
PY
)
  # runc sets HOME (to / when the user has no passwd entry); without it the
  # kube client looks the home directory up through NSS, and static glibc then
  # dlopens this host's NSS modules (nsswitch.conf "passwd: files systemd"),
  # which crashes a static binary.
  env_args+=("HOME=/")
  fallback_args=("${args[@]}")
  for i in "${!fallback_args[@]}"; do
    fallback_args[i]="${fallback_args[i]//\/etc\/prom-mtls-webhook\/tls/$tls}"
  done
  (cd / && exec env -i "${env_args[@]}" setpriv --reuid 65532 --regid 65532 --clear-groups \
      --no-new-privs --inh-caps=-all --bounding-set=-all -- "$bin" "${fallback_args[@]}") \
    </dev/null >"$work/container.out" 2>"$work/container.err" &
  fallback_pid=$!
  pid="$fallback_pid"
  running() { kill -0 "$fallback_pid" 2>/dev/null; }
  say "process $pid, webhook on 127.0.0.1:$port, admin on 127.0.0.1:$admin_port"
fi

# --- 4. Ready, and a real review -----------------------------------------------
deadline=$((SECONDS + 30))
until [[ "$(http_status "http://127.0.0.1:$admin_port/readyz")" == "200" ]]; do
  running || fail "the webhook exited before it was ready"
  [[ $SECONDS -lt $deadline ]] || fail "/readyz did not answer 200 within 30s"
  sleep 0.2
done
ok "GET http://127.0.0.1:$admin_port/readyz: 200"
[[ "$(http_status "http://127.0.0.1:$admin_port/healthz")" == "200" ]] || fail "/healthz is not 200"
ok "GET /healthz: 200"

code="$(curl -sS --max-time 15 --resolve "localhost:$port:127.0.0.1" --cacert "$tls/ca.crt" \
  -H 'Content-Type: application/json' --data-binary "@$fixture" \
  -o "$work/review.json" -w '%{http_code}' "https://localhost:$port/mutate?timeout=10s")" ||
  fail "POST /mutate: curl failed"
[[ "$code" == "200" ]] || fail "POST /mutate: HTTP $code: $(head -c 300 "$work/review.json")"
python3 - "$fixture" "$work/review.json" <<'PY' || fail "the AdmissionReview response"
import base64, json, sys
request = json.load(open(sys.argv[1]))["request"]
review = json.load(open(sys.argv[2]))
r = review.get("response") or {}
def die(msg):
    print(f"check-image: FAIL: {msg}: {json.dumps(review)[:300]}", file=sys.stderr)
    sys.exit(1)
if review.get("kind") != "AdmissionReview" or review.get("apiVersion") != "admission.k8s.io/v1":
    die("not an admission.k8s.io/v1 AdmissionReview")
if r.get("uid") != request["uid"]:
    die(f"response.uid {r.get('uid')!r} is not the request's {request['uid']!r}")
if r.get("allowed") is not True or r.get("patchType") != "JSONPatch" or not r.get("patch"):
    die("no allowed JSONPatch")
ops = json.loads(base64.b64decode(r["patch"]))
if not isinstance(ops, list) or not ops or not all("op" in o and "path" in o for o in ops):
    die("the patch is not a JSON patch")
print(f"ok   POST https://localhost/mutate (TLS verified against the mounted pair's CA): 200, "
      f"uid {r['uid']}, allowed, JSONPatch of {len(ops)} operations")
PY
checks=$((checks + 1))

# --- 5. The process: user, capabilities, mounts, namespaces ------------------
[[ -r "/proc/$pid/status" ]] || fail "no /proc/$pid"
cmp -s "/proc/$pid/exe" "$bin" || fail "pid $pid is not the image's binary"
status="$(cat "/proc/$pid/status")"
field() { sed -n "s/^$1:[[:space:]]*//p" <<<"$status" | tr -s '[:space:]' ' ' | sed 's/ $//'; }
[[ "$(field Uid)" == "65532 65532 65532 65532" ]] || fail "Uid: $(field Uid)"
[[ "$(field Gid)" == "65532 65532 65532 65532" ]] || fail "Gid: $(field Gid)"
[[ -z "$(field Groups)" ]] || fail "supplementary groups: $(field Groups)"
ok "the process (pid $pid) is the image's binary, Uid/Gid 65532, no supplementary groups"
for cap in CapInh CapPrm CapEff CapBnd CapAmb; do
  [[ "$(field "$cap")" == "0000000000000000" ]] || fail "$cap: $(field "$cap")"
done
[[ "$(field NoNewPrivs)" == "1" ]] || fail "NoNewPrivs: $(field NoNewPrivs)"
ok "no capabilities (CapInh/Prm/Eff/Bnd/Amb all 0), NoNewPrivs 1"

if [[ -n "$rt" ]]; then
  # mountinfo: field 5 is the mount point, field 6 its options.
  root_opts="$(awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo" | tail -n1)"
  [[ ",$root_opts," == *,ro,* ]] || fail "/ is mounted '$root_opts', not ro"
  tls_opts="$(awk '$5 == "/etc/prom-mtls-webhook/tls" { print $6 }' "/proc/$pid/mountinfo" | tail -n1)"
  [[ ",$tls_opts," == *,ro,* ]] || fail "/etc/prom-mtls-webhook/tls is mounted '${tls_opts:-nowhere}', not ro"
  ok "mountinfo: / is $root_opts, /etc/prom-mtls-webhook/tls is $tls_opts"
  # A second process in the container (the image has no shell, but it has the
  # binary, whose `certs` writes files) tries to write, as uid 0 even, which
  # owns / and is only stopped by the read-only mount.
  for dir in /probe /etc/prom-mtls-webhook/tls/probe; do
    if out="$(timeout 20 "$rt" --root "$state" exec --user 0:0 "$cid" \
        /usr/local/bin/prom-mtls-webhook certs --out "$dir" 2>&1)"; then
      fail "writing $dir in the container succeeded: $out"
    fi
    grep -q 'Read-only file system' <<<"$out" || fail "writing $dir failed, but not with EROFS: $out"
  done
  ok "writing / and the TLS mount fails in the container, for uid 0 too: Read-only file system"
  [[ "$(readlink "/proc/$pid/ns/net")" == "$(readlink /proc/self/ns/net)" ]] || fail "not in the host's network namespace"
  for ns in pid mnt uts ipc; do
    [[ "$(readlink "/proc/$pid/ns/$ns")" != "$(readlink "/proc/self/ns/$ns")" ]] || fail "shares the host's $ns namespace"
  done
  ok "namespaces: its own pid, mnt, uts and ipc; the host's network (as configured, for 127.0.0.1)"
else
  say "FALLBACK: read-only root, mounts and namespaces not checked"
fi

# --- 6. Logs, and a graceful stop ----------------------------------------------
python3 - "$work/container.out" "$work/container.err" <<'PY' || fail "the logs"
import json, sys
lines = [l for f in sys.argv[1:] for l in open(f, errors="replace").read().splitlines() if l.strip()]
bad = [l for l in lines if not l.startswith("{")]
if bad:
    print(f"check-image: FAIL: a log line that is not JSON: {bad[0][:200]}", file=sys.stderr)
    sys.exit(1)
events = [json.loads(l) for l in lines]
if not any(e.get("message") == "review" and e.get("outcome") == "patched" for e in events):
    print("check-image: FAIL: no 'review' log line with outcome 'patched'", file=sys.stderr)
    sys.exit(1)
print(f"ok   logs: {len(events)} JSON lines, the review logged as patched")
PY
checks=$((checks + 1))

if [[ -n "$rt" ]]; then
  timeout 10 "$rt" --root "$state" kill "$cid" TERM || fail "$rt kill TERM"
else
  kill -TERM "$fallback_pid"
fi
deadline=$((SECONDS + 30))
while running; do
  [[ $SECONDS -lt $deadline ]] || fail "still running 30s after SIGTERM"
  sleep 0.2
done
ok "SIGTERM: stopped within $((30 - (deadline - SECONDS)))s"
if [[ -n "$rt" ]]; then
  timeout 20 "$rt" --root "$state" delete "$cid" || fail "$rt delete"
  container_started=0
fi

# --- 7. Optional: the archive imports as kind and k3d import it --------------
if [[ $with_containerd -eq 1 ]]; then
  ctd="$work/containerd"
  mkdir -p "$ctd"
  cat >"$ctd/config.toml" <<EOF
version = 2
root = "$ctd/root"
state = "$ctd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ctd/containerd.sock"
[ttrpc]
  address = "$ctd/containerd-ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
EOF
  containerd --config "$ctd/config.toml" >"$work/containerd.err" 2>&1 &
  containerd_pid=$!
  deadline=$((SECONDS + 30))
  until timeout 5 ctr --address "$ctd/containerd.sock" version >/dev/null 2>&1; do
    kill -0 "$containerd_pid" 2>/dev/null || fail "containerd exited"
    [[ $SECONDS -lt $deadline ]] || fail "containerd did not start within 30s"
    sleep 0.2
  done
  # kind: ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=X -
  timeout 120 ctr --address "$ctd/containerd.sock" --namespace=k8s.io images import \
    --all-platforms --digests --snapshotter=native - <"$archive" >"$work/import.out" 2>&1 ||
    fail "ctr images import: $(tail -n 3 "$work/import.out")"
  listed="$(timeout 10 ctr --address "$ctd/containerd.sock" --namespace=k8s.io images ls)"
  grep -q "^$image_name .*$image_digest" <<<"$listed" ||
    fail "after import, containerd has no $image_name at $image_digest: $listed"
  ok "containerd $(containerd --version | awk '{print $3}') imports $(basename "$archive") (kind's ctr command) as $image_name, $image_digest"
fi

if [[ -n "$rt" ]]; then
  say "all $checks checks passed (runtime: $rt)"
else
  say "all $checks checks passed, in the FALLBACK (setpriv, no container): read-only root not checked"
fi
