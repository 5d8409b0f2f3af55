#!/usr/bin/env bash
# Load benchmark: the webhook against two constant-response floors, on loopback.
#
#   scripts/bench-load.sh [--duration S] [--warmup S] [--rounds N]
#                         [--connections N] [--h2] [--no-build] [--no-latency]
#                         [--out FILE]
#
# Servers, each a fresh process every time, pinned to CPU 0 (load on CPU 1):
#   nginx         nginx (Debian `nginx-light`), one worker process, answering
#                 every POST /mutate with the webhook's own answer to the
#                 fixture (`return 200 '...'`), over the same certificate and
#                 key, TLS 1.3 only, access log off: what a C server costs
#   floor         examples/tls_floor.rs: the webhook's TLS/HTTP stack (tokio,
#                 rustls, hyper), same constant answer: what our stack costs
#   webhook-info  prom-mtls-webhook serve, --log-level info (the default: one
#                 log line per review, to a file, as in production)
#   webhook-warn  the same with --log-level warn (no per-review line)
#
# Closed loop, every round: 16 keep-alive connections POST the real
# AdmissionReview tests/fixtures/admission/pod-create-1.json to
# /mutate?timeout=10s for a warm-up, then a measured run (wrk; with --h2 also
# h2load over HTTP/2). Before the load one response is sampled with curl
# (HTTP 200, a JSONPatch answer echoing the uid); during it, every non-2xx
# answer is counted. Recorded: requests/s, p50, p99, peak RSS (VmHWM), the
# server's and the load generator's CPU, how often the kernel preempted the
# server's threads.
#
# Latency, after the rounds (unless --no-latency), for nginx, the floor,
# webhook-info and webhook-warn (the log line's share of the tail): one connection, closed loop (wrk -c1: the median is the cost
# of one request with nothing queued), and an open loop at half the
# webhook's measured capacity (examples/open_loop.rs: requests sent at a
# constant rate, each timed from when it was due, so a late answer is
# charged for every request that came due meanwhile; wrk2's method), 16
# connections, its first second left out as a warm-up. Every run is
# bounded in time.
#
# Prints one markdown table (and writes it to --out FILE): medians over the
# rounds (peak RSS: the highest), ratios to both floors, the latency runs,
# and the targets of issue 13.
#
# Tools: wrk (Debian `wrk`), nginx (Debian `nginx-light`), h2load (Debian
# `nghttp2-client`, with --h2) are installed with apt-get when missing and
# running as root.
#
# Builds with scripts/build-release.sh (the static release binary that ships)
# and the floor and the open-loop generator with the same profile, target
# and flags. --no-build uses what is there. Environment: WEBHOOK_BIN,
# FLOOR_BIN, OPEN_LOOP_BIN override the binaries.
set -euo pipefail

duration=10
warmup=3
rounds=3
connections=16
h2=0
build=1
latency=1
latency_seconds=""
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) duration="${2:?}"; shift 2 ;;
    --warmup) warmup="${2:?}"; shift 2 ;;
    --rounds) rounds="${2:?}"; shift 2 ;;
    --connections) connections="${2:?}"; shift 2 ;;
    --h2) h2=1; shift ;;
    --no-build) build=0; shift ;;
    --no-latency) latency=0; shift ;;
    --out) out="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
    *) echo "bench-load: unknown argument: $1" >&2; exit 2 ;;
  esac
done

latency_seconds="${latency_seconds:-$duration}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
fixture="$repo/tests/fixtures/admission/pod-create-1.json"
lua="$repo/scripts/bench/wrk-post.lua"
summarize="$repo/scripts/bench/summarize.py"
target="x86_64-unknown-linux-gnu"
server_cpu=0
load_cpu=1
port=18443
admin_port=18080
url="https://127.0.0.1:$port/mutate?timeout=10s"

say() { printf 'bench-load: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ -f "$fixture" ]] || die "missing fixture $fixture"
[[ "$(nproc --all)" -ge 2 ]] || die "needs two CPUs (server on $server_cpu, load on $load_cpu)"
for tool in taskset curl python3; do
  command -v "$tool" >/dev/null || die "needs $tool"
done

need_apt() { # command package
  command -v "$1" >/dev/null && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    say "installing $2 with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null ||
      { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
  fi
  command -v "$1" >/dev/null || die "needs $1 (Debian package $2)"
}
need_apt wrk wrk
need_apt nginx nginx-light
[[ "$h2" == 1 ]] && need_apt h2load nghttp2-client

# --- build ---------------------------------------------------------------------
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
webhook_bin="${WEBHOOK_BIN:-$target_dir/$target/release/prom-mtls-webhook}"
floor_bin="${FLOOR_BIN:-$target_dir/$target/release/examples/tls_floor}"
open_loop_bin="${OPEN_LOOP_BIN:-$target_dir/$target/release/examples/open_loop}"
if [[ "$build" == 1 ]]; then
  say "building the release binary (scripts/build-release.sh)"
  webhook_bin="${WEBHOOK_BIN:-$(scripts/build-release.sh)}"
  say "building the floor and the open-loop generator (examples/) with the same profile and flags"
  RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" --example tls_floor --example open_loop >&2
fi
[[ -x "$webhook_bin" ]] || die "no webhook binary at $webhook_bin (drop --no-build)"
[[ -x "$floor_bin" ]] || die "no floor binary at $floor_bin (drop --no-build)"
[[ "$latency" == 0 || -x "$open_loop_bin" ]] || die "no open-loop generator at $open_loop_bin (drop --no-build)"

# One name at a time: pgrep -x matches at most 15 characters of a pattern,
# so an alternation of them all would silently never match.
busy=0
for compiler in rustc cargo cc1 ld cc c++; do
  busy=$((busy + $(pgrep -c -x "$compiler" || true)))
done
if [[ "$busy" -gt 0 ]]; then
  say "WARNING: $busy compiler process(es) running: figures will be skewed; re-run when quiet"
fi

# --- work dir, certificates ------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/bench-load.XXXXXX")"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$webhook_bin" certs --out "$work/certs" 2>/dev/null
ca="$work/certs/ca.crt"
results="$work/results.jsonl"
: >"$results"
latency_results="$work/latency.jsonl"
: >"$latency_results"

# --- nginx ------------------------------------------------------------------------
# Its constant answer is the webhook's own answer to the fixture, as the
# floor serves it (taken from a floor started once for that).
nginx_config() { # answer-file
  local answer="$1"
  grep -q "[\\'\$]" "$answer" && die "the answer holds a quote, backslash or \$: cannot put it in nginx.conf"
  mkdir -p "$work/nginx/logs" "$work/nginx/tmp"
  cat >"$work/nginx/nginx.conf" <<NGINX
daemon off;
master_process on;
worker_processes 1;
worker_cpu_affinity 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $work/certs/tls.crt;
    ssl_certificate_key $work/certs/tls.key;
    ssl_protocols TLSv1.3;
    location = /mutate {
      default_type application/json;
      return 200 '$(cat "$answer")';
    }
    location / { return 404; }
  }
}
NGINX
}

# The pids of a server: nginx's master and its worker, else the one process.
server_pids() {
  echo "$server_pid"
  pgrep -P "$server_pid" 2>/dev/null || true
}

# --- one server --------------------------------------------------------------------
start_server() { # name
  local name="$1"
  case "$name" in
    nginx)
      taskset -c "$server_cpu" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/$name.log" &
      ;;
    floor)
      taskset -c "$server_cpu" "$floor_bin" --tls-cert "$work/certs/tls.crt" \
        --tls-key "$work/certs/tls.key" --listen "127.0.0.1:$port" \
        --response-for "$fixture" 2>"$work/$name.log" &
      ;;
    webhook-*)
      env -u KUBERNETES_SERVICE_HOST PROM_MTLS_WEBHOOK_ORDERING_CHECK=off \
        taskset -c "$server_cpu" "$webhook_bin" serve \
        --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" \
        --log-level "${name#webhook-}" 2>"$work/$name.log" &
      ;;
  esac
  server_pid=$!
  local i
  for i in $(seq 100); do
    if curl -s -o /dev/null --cacert "$ca" "https://127.0.0.1:$port/" 2>/dev/null; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/$name.log" >&2; die "$name exited at start"; }
    sleep 0.05
  done
  die "$name is not answering on $port"
}

stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

# One request with curl: HTTP 200, and for the webhook a JSONPatch answer
# echoing the request's uid.
sample_check() { # name
  local name="$1" code
  code="$(curl -s -o "$work/sample.json" -w '%{http_code}' --cacert "$ca" \
    -H 'Content-Type: application/json' --data-binary "@$fixture" "$url")"
  [[ "$code" == 200 ]] || die "$name answered HTTP $code to the sample request"
  python3 - "$fixture" "$work/sample.json" "$name" <<'PY'
import base64, json, sys
request = json.load(open(sys.argv[1]))["request"]
response = json.load(open(sys.argv[2]))["response"]
assert response["uid"] == request["uid"], "uid not echoed"
assert response["allowed"] is True
assert response.get("patchType") == "JSONPatch", "no patch"
ops = json.loads(base64.b64decode(response["patch"]))
assert ops, "empty patch"
print(f"bench-load: {sys.argv[3]}: sample response 200, JSONPatch with {len(ops)} operations", file=sys.stderr)
PY
}

cpu_ticks() { # utime+stime of the server's processes, in clock ticks
  local pid total=0
  for pid in $(server_pids); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

# The highest VmHWM among the server's processes (nginx: the worker's).
peak_rss_kib() {
  local pid
  for pid in $(server_pids); do awk '/^VmHWM:/ {print $2}' "/proc/$pid/status"; done | sort -n | tail -n1
}

# Times the kernel took the CPU from one of the server's threads (summed
# over its threads): on one CPU, each is a wait for every request in flight.
preemptions() {
  local pid
  for pid in $(server_pids); do cat "/proc/$pid"/task/*/status 2>/dev/null; done |
    awk '/^nonvoluntary_ctxt_switches/ {n += $2} END {print n + 0}'
}

# Runs the load generator under `bash -c '...; times'` so that its own CPU
# time is known: prints the generator's JSON line with cpu_s added.
run_load() { # proto seconds log-file [connections]
  local proto="$1" seconds="$2" log="$3" conns="${4:-$connections}"
  case "$proto" in
    h1)
      BODY="$fixture" taskset -c "$load_cpu" bash -c \
        'wrk -t1 -c"$1" -d"$2"s --timeout 5s -s "$3" "$4" >"$5"; times' _ \
        "$conns" "$seconds" "$lua" "$url" "$log.out" >"$log.times"
      grep '^{' "$log.out" | tail -n1 >"$log"
      ;;
    h2)
      taskset -c "$load_cpu" bash -c \
        'h2load -t1 -c"$1" -m1 -D"$2" -d "$3" -H "content-type: application/json" --log-file="$4.req" "$5" >"$4.out"; times' _ \
        "$connections" "$seconds" "$fixture" "$log" "$url" >"$log.times"
      python3 "$summarize" h2load "$log.out" "$log.req" >"$log"
      rm -f "$log.req"
      ;;
  esac
  python3 "$summarize" times "$log.times" >>"$log"
}

measure() { # name proto round
  local name="$1" proto="$2" round="$3" run="$work/run"
  start_server "$name"
  sample_check "$name"
  run_load "$proto" "$warmup" "$run.warm"
  local t0 t1 start end pre0 pre1
  t0="$(cpu_ticks)"; pre0="$(preemptions)"; start="$(date +%s.%N)"
  run_load "$proto" "$duration" "$run.measured"
  t1="$(cpu_ticks)"; pre1="$(preemptions)"; end="$(date +%s.%N)"
  local hwm log_lines=""
  hwm="$(peak_rss_kib)"
  stop_server
  if [[ "$name" == webhook-info ]]; then
    log_lines="$(grep -c ' review uid=' "$work/$name.log" || true)"
  fi
  rm -f "$work/$name.log"
  python3 "$summarize" record --name "$name" --proto "$proto" --round "$round" \
    --load "$run.measured" --warm "$run.warm" --hwm-kib "$hwm" \
    --server-ticks "$((t1 - t0))" --clk-tck "$(getconf CLK_TCK)" --preempted "$((pre1 - pre0))" \
    --wall "$(python3 -c "print($end - $start)")" --log-lines "${log_lines:-}" >>"$results"
  tail -n1 "$results" | python3 "$summarize" line >&2
}

# Latency of one server: one connection closed-loop (wrk), then the open
# loop at `rate` requests/s (examples/open_loop.rs), each after a warm-up.
measure_latency() { # name rate
  local name="$1" rate="$2" run="$work/lat"
  start_server "$name"
  sample_check "$name"
  run_load h1 "$warmup" "$run.warm"
  run_load h1 "$latency_seconds" "$run.one" 1
  # Its first second is a warm-up, left out.
  taskset -c "$load_cpu" "$open_loop_bin" --url "$url" --ca "$ca" --body "$fixture" \
    --rate "$rate" --connections "$connections" --duration "$latency_seconds" --warmup 1 \
    >"$run.open.json" 2>"$run.open.err" ||
    { cat "$run.open.err" >&2; die "the open loop failed against $name"; }
  stop_server
  rm -f "$work/$name.log"
  python3 "$summarize" latency --name "$name" --rate "$rate" --one "$run.one" \
    --open "$run.open.json" >>"$latency_results"
  tail -n1 "$latency_results" | python3 "$summarize" latency-line >&2
}

protos=(h1)
[[ "$h2" == 1 ]] && protos+=(h2)
servers=(nginx floor webhook-info webhook-warn)

# nginx answers what the floor answers: take it from a floor started once.
start_server floor
curl -s -o "$work/answer.json" --cacert "$ca" -H 'Content-Type: application/json' \
  --data-binary "@$fixture" "$url"
stop_server
nginx_config "$work/answer.json"

say "server on CPU $server_cpu, load on CPU $load_cpu, $connections connections, ${warmup}s warm-up + ${duration}s measured, $rounds round(s)"
for round in $(seq "$rounds"); do
  for proto in "${protos[@]}"; do
    # Rotate the order every round so that drift does not favour one server.
    n=${#servers[@]}
    for i in $(seq 0 $((n - 1))); do
      measure "${servers[$(((i + round - 1) % n))]}" "$proto" "$round"
    done
  done
done

if [[ "$latency" == 1 ]]; then
  capacity="$(python3 "$summarize" capacity --name webhook-info <"$results")"
  rate=$((capacity / 2))
  say "latency: one connection, then an open loop at $rate requests/s (half of webhook-info's $capacity)"
  for name in nginx floor webhook-info webhook-warn; do
    measure_latency "$name" "$rate"
  done
fi

machine="$(lscpu | awk -F: '/^Model name/ {gsub(/^ +/, "", $2); print $2; exit}'), $(nproc --all) CPUs, Linux $(uname -r), $(rustc --version 2>/dev/null || echo rustc ?)"
table="$(python3 "$summarize" table --machine "$machine" --connections "$connections" \
  --duration "$duration" --rounds "$rounds" --busy "$busy" --load "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --latency "$latency_results" <"$results")"
printf '%s\n' "$table"
if [[ -n "$out" ]]; then printf '%s\n' "$table" >"$out"; fi
