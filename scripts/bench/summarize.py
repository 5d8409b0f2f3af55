#!/usr/bin/env python3
"""Helpers of scripts/bench-load.sh: turn load-generator output into JSON
records, and the records into the markdown table.

  summarize.py h2load OUT REQLOG   h2load's summary + per-request log -> JSON line
  summarize.py times FILE          `times` output -> {"load_cpu_s": ...}
  summarize.py record ...          one JSON record per measured run
  summarize.py line                one record (stdin) -> one human line
  summarize.py capacity --name N   records (stdin) -> median requests/s of N (HTTP/1.1)
  summarize.py latency ...         wrk -c1 + open-loop (examples/open_loop.rs) outputs -> one JSON line
  summarize.py latency-line        one latency record (stdin) -> one human line
  summarize.py table ...           records (stdin) -> markdown table
"""

import argparse
import json
import re
import statistics
import sys


def percentile(sorted_values, p):
    if not sorted_values:
        return 0
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def h2load(out_path, req_path):
    text = open(out_path).read()
    finished = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    if not finished:
        sys.exit(f"summarize: no summary in h2load output:\n{text}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    latencies, non_2xx = [], 0
    for line in open(req_path):
        cols = line.split("\t")
        if len(cols) < 3:
            continue
        status, micros = int(cols[1]), int(cols[2])
        if not 200 <= status < 300:
            non_2xx += 1
        latencies.append(micros)
    latencies.sort()
    failed = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed", text)
    print(json.dumps({
        "requests": len(latencies),
        "duration_us": int(seconds * 1e6),
        "rps": len(latencies) / seconds if seconds else 0,
        "p50_us": percentile(latencies, 50),
        "p90_us": percentile(latencies, 90),
        "p99_us": percentile(latencies, 99),
        "p999_us": percentile(latencies, 99.9),
        "max_us": latencies[-1] if latencies else 0,
        "mean_us": statistics.fmean(latencies) if latencies else 0,
        "errors_status": non_2xx,
        "errors_failed": int(failed.group(1)) if failed else 0,
    }))


def times(path):
    # bash `times`: the shell's own user/sys, then its children's.
    lines = [l.split() for l in open(path).read().strip().splitlines()]
    def seconds(s):
        m = re.fullmatch(r"(\d+)m([\d.]+)s", s)
        return int(m.group(1)) * 60 + float(m.group(2))
    child = lines[-1]
    print(json.dumps({"load_cpu_s": seconds(child[0]) + seconds(child[1])}))


def record(args):
    load = {}
    for line in open(args.load):
        load.update(json.loads(line))
    warm = {}
    for line in open(args.warm):
        warm.update(json.loads(line))
    wall = float(args.wall)
    out = {
        "name": args.name,
        "proto": args.proto,
        "round": int(args.round),
        "rps": load["rps"],
        "requests": load["requests"],
        "warm_requests": warm.get("requests", 0),
        "p50_us": load["p50_us"],
        "p99_us": load["p99_us"],
        "p999_us": load["p999_us"],
        "max_us": load["max_us"],
        "non_2xx": load.get("errors_status", 0) + warm.get("errors_status", 0),
        "socket_errors": sum(load.get(k, 0) for k in
                             ("errors_connect", "errors_read", "errors_write", "errors_timeout", "errors_failed")),
        "hwm_kib": int(args.hwm_kib),
        "server_cpu": int(args.server_ticks) / int(args.clk_tck) / wall,
        "load_cpu": load.get("load_cpu_s", 0) / (load["duration_us"] / 1e6),
        "preempted_per_s": int(args.preempted or 0) / wall,
    }
    if args.log_lines:
        out["log_lines"] = int(args.log_lines)
    print(json.dumps(out))


def line():
    r = json.loads(sys.stdin.read())
    extra = f", {r['log_lines']} review log lines" if "log_lines" in r else ""
    print(f"bench-load: round {r['round']} {r['name']} ({r['proto']}): {r['rps']:,.0f} req/s, "
          f"p50 {r['p50_us']} us, p99 {r['p99_us']} us, VmHWM {r['hwm_kib'] / 1024:.1f} MiB, "
          f"server CPU {r['server_cpu']:.0%}, load CPU {r['load_cpu']:.0%}, "
          f"server preempted {r.get('preempted_per_s', 0):,.0f}/s, non-2xx {r['non_2xx']}, "
          f"socket errors {r['socket_errors']}{extra}")


def capacity(args):
    rps = [json.loads(l)["rps"] for l in sys.stdin if l.strip()
           and json.loads(l)["name"] == args.name and json.loads(l)["proto"] == "h1"]
    print(int(statistics.median(rps)))


def latency(args):
    one = {}
    for line in open(args.one):
        one.update(json.loads(line))
    # examples/open_loop.rs: one JSON line, latencies in ms from when each
    # request was due, the warm-up left out.
    ol = json.loads(open(args.open).read())
    print(json.dumps({
        "name": args.name,
        "rate": int(args.rate),
        "one_p50_us": one["p50_us"],
        "one_p99_us": one["p99_us"],
        "one_rps": one["rps"],
        "open_requests": ol["measured"],
        "open_rps": ol["sent_rate"],
        "open_p50_us": round(ol["p50_ms"] * 1000),
        "open_p99_us": round(ol["p99_ms"] * 1000),
        "open_p999_us": round(ol["p999_ms"] * 1000),
        "open_max_us": round(ol["max_ms"] * 1000),
        # Failed requests and non-2xx answers, counted together.
        "open_non_2xx": ol["errors"],
        "open_errors": one.get("errors_status", 0)
                       + sum(one.get(k, 0) for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout")),
    }))


def latency_line():
    r = json.loads(sys.stdin.read())
    print(f"bench-load: latency {r['name']}: one connection p50 {r['one_p50_us']} us; open loop at "
          f"{r['rate']:,}/s ({r['open_rps']:,.0f} done/s): p50 {r['open_p50_us']} us, p99 {r['open_p99_us']} us, "
          f"p99.9 {r['open_p999_us']} us, non-2xx {r['open_non_2xx']}, errors {r['open_errors']}")


def table(args):
    records = [json.loads(l) for l in sys.stdin if l.strip()]
    groups = {}
    for r in records:
        groups.setdefault((r["proto"], r["name"]), []).append(r)
    floor_rps = {proto: statistics.median(x["rps"] for x in rs)
                 for (proto, name), rs in groups.items() if name == "floor"}
    nginx_rps = {proto: statistics.median(x["rps"] for x in rs)
                 for (proto, name), rs in groups.items() if name == "nginx"}
    lat = {}
    if args.latency:
        for l in open(args.latency):
            if l.strip():
                r = json.loads(l)
                lat[r["name"]] = r
    out = [
        f"Server on CPU 0 (one tokio worker), load generator on CPU 1, {args.connections} keep-alive "
        f"connections, POST pod-create-1.json, {args.duration} s measured after a warm-up; "
        f"median of {args.rounds} round(s) (peak RSS: highest). Machine: {args.machine}.",
        "",
        f"Load average at the end: {args.load}. Latency columns (HTTP/1.1 only): one connection closed-loop (wrk -c1), "
        f"and an open loop at a constant rate of half the webhook's capacity (examples/open_loop.rs: each request timed from when it was due), {args.connections} connections.",
        "",
        "| server | HTTP | requests/s | p50 | p99 | p99.9 | peak RSS (VmHWM) | server CPU | server CPU per request | server preempted | load-gen CPU | non-2xx | / nginx | / floor | 1 conn p50 | open loop p50 | open loop p99 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {"nginx": 0, "floor": 1, "webhook-info": 2, "webhook-warn": 3}
    for (proto, name), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9))):
        med = lambda k: statistics.median(x[k] for x in rs)
        rps = med("rps")
        ratio = f"{rps / floor_rps[proto]:.2f}" if proto in floor_rps and name != "floor" else ""
        to_nginx = f"{rps / nginx_rps[proto]:.2f}" if proto in nginx_rps and name != "nginx" else ""
        label = {"nginx": "nginx floor (C, 1 worker, `return 200`)",
                 "floor": "hyper + rustls floor (examples/tls_floor.rs)",
                 "webhook-info": "webhook, --log-level info (per-review line)",
                 "webhook-warn": "webhook, --log-level warn"}.get(name, name)
        l = lat.get(name) if proto == "h1" else None
        lat_cols = (f"{l['one_p50_us'] / 1000:.3f} ms | {l['open_p50_us'] / 1000:.3f} ms | {l['open_p99_us'] / 1000:.3f} ms"
                    if l else " | | ")
        out.append(
            f"| {label} | {'1.1 (wrk)' if proto == 'h1' else '2 (h2load)'} | {rps:,.0f} | "
            f"{med('p50_us') / 1000:.3f} ms | {med('p99_us') / 1000:.3f} ms | {med('p999_us') / 1000:.3f} ms | "
            f"{max(x['hwm_kib'] for x in rs) / 1024:.1f} MiB | {med('server_cpu'):.0%} | "
            f"{statistics.median(x['server_cpu'] / x['rps'] * 1e6 for x in rs):.1f} µs | "
            f"{statistics.median(x.get('preempted_per_s', 0) for x in rs):,.0f}/s | {med('load_cpu'):.0%} | "
            f"{sum(x['non_2xx'] + x['socket_errors'] for x in rs)} | {to_nginx} | {ratio} | {lat_cols} |")
    if args.busy and int(args.busy) > 0:
        out += ["", "**Warning: compilers were running during the run; figures are skewed.**"]
    # Targets (issue 13), on the headline configuration: HTTP/1.1, default log level.
    head = groups.get(("h1", "webhook-info"))
    if head and "h1" in nginx_rps:
        rps = statistics.median(x["rps"] for x in head)
        hwm = max(x["hwm_kib"] for x in head) / 1024
        ratio = rps / nginx_rps["h1"]
        ok = lambda b: "met" if b else "**missed**"
        out += ["", "Targets (issue 13; webhook at the default log level, HTTP/1.1):", "",
                f"- >= 0.6 of the nginx floor: {ratio:.2f} ({rps:,.0f} / {nginx_rps['h1']:,.0f}), {ok(ratio >= 0.6)}"
                + (f"; of the hyper+rustls floor: {rps / floor_rps['h1']:.2f}" if "h1" in floor_rps else ""),
                f"- peak RSS < 20 MiB: {hwm:.1f} MiB, {ok(hwm < 20)}"]
        w, n = lat.get("webhook-info"), lat.get("nginx")
        if w and n:
            gap = w["one_p50_us"] - n["one_p50_us"]
            out += [f"- one-connection median within 40 µs of nginx's: {w['one_p50_us']} µs against {n['one_p50_us']} µs "
                    f"(+{gap} µs), {ok(gap <= 40)}",
                    f"- open loop at {w['rate']:,}/s, p99 < 1 ms: {w['open_p99_us'] / 1000:.3f} ms "
                    f"(non-2xx {w['open_non_2xx']}, errors {w['open_errors']}), {ok(w['open_p99_us'] < 1000 and w['open_errors'] == 0)}"]
    lines = [x.get("log_lines") for x in records if x["name"] == "webhook-info"]
    reqs = [x["requests"] + x["warm_requests"] for x in records if x["name"] == "webhook-info"]
    if lines and all(l is not None for l in lines):
        out += ["", f"Per-review log lines written by webhook-info runs: {sum(lines):,} for "
                    f"{sum(reqs):,} requests counted by the load generator (plus the sample request and the requests in flight when each run stopped)."]
    print("\n".join(out))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "h2load":
        h2load(sys.argv[2], sys.argv[3])
    elif cmd == "times":
        times(sys.argv[2])
    elif cmd == "line":
        line()
    elif cmd == "latency-line":
        latency_line()
    elif cmd in ("record", "table", "capacity", "latency"):
        p = argparse.ArgumentParser(prog=f"summarize.py {cmd}")
        if cmd == "record":
            for flag in ("name", "proto", "round", "load", "warm", "hwm-kib", "server-ticks",
                         "clk-tck", "wall", "log-lines", "preempted"):
                p.add_argument(f"--{flag}", default="")
            record(p.parse_args(sys.argv[2:]))
        elif cmd == "capacity":
            p.add_argument("--name", default="webhook-info")
            capacity(p.parse_args(sys.argv[2:]))
        elif cmd == "latency":
            for flag in ("name", "rate", "one", "open"):
                p.add_argument(f"--{flag}", default="")
            latency(p.parse_args(sys.argv[2:]))
        else:
            for flag in ("machine", "connections", "duration", "rounds", "busy", "load", "latency"):
                p.add_argument(f"--{flag}", default="")
            table(p.parse_args(sys.argv[2:]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
