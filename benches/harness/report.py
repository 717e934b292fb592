#!/usr/bin/env python3
"""Turns target/bench/results.jsonl (written by scripts/bench) into the markdown section
"Load harness (scripts/bench)" of BENCHMARKS.md, or (--write) puts that section into the file.

Targets from issue 7 are reported, never asserted: a missed target says by how much."""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

BEGIN = "<!-- load-harness:begin (written by scripts/bench; edit benches/harness/report.py) -->"
END = "<!-- load-harness:end -->"


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def fmt_us(v):
    if v is None:
        return "–"
    return f"{v / 1000:.2f} ms" if v >= 10000 else f"{v:.0f} µs"


def lat(r):
    if not r:
        return "–"
    return f"{fmt_us(r['p50_us'])} / {fmt_us(r['p99_us'])} / {fmt_us(r['p999_us'])}"


def rps(r):
    if not r:
        return "–"
    runs = r.get("runs")
    if runs and len(runs) > 1:
        return f"{r['rps']:,.0f} ({runs[0]:,.0f}–{runs[-1]:,.0f})"
    return f"{r['rps']:,.0f}"


def bad(*runs):
    total = sum(r.get("non_ok", 0) for r in runs if r)
    kinds = {}
    for r in runs:
        for k, v in ((r or {}).get("non_ok_kinds") or {}).items():
            kinds[k] = kinds.get(k, 0) + v
    if not total:
        return "0"
    return f"**{total}** ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))})"


def ratio(a, b):
    if not a or not b or not b.get("rps"):
        return None
    return a["rps"] / b["rps"]


def verdict_min(value, target, unit="×"):
    if value is None:
        return "not measured"
    if value >= target:
        return f"met ({value:.2f}{unit} ≥ {target}{unit})"
    short = (target - value) / target * 100
    return f"**missed** ({value:.2f}{unit} < {target}{unit}: {short:.0f} % short)"


def verdict_max(value, target, unit):
    if value is None:
        return "not measured"
    if value <= target:
        return f"met ({value:g} {unit} ≤ {target:g} {unit})"
    return f"**missed** ({value:g} {unit} > {target:g} {unit}: {value / target:.1f}× the target)"


PERF_FRAMES = [
    ("Check handler (`CheckService::check`: pipeline and response)", "fedauthz::service::CheckService as"),
    ("`Pipeline::check` (extract, verify, identity, authorize)", "fedauthz::pipeline::Pipeline::check"),
    ("`verify_signature` (josekit → OpenSSL)", "fedauthz::verify::verify_signature"),
    ("of which `EC_POINT_mul` (P-256 point multiplication)", " EC_POINT_mul"),
    ("HTTP/2 connection (`h2 Connection::poll`: framing, HPACK, I/O)", "h2::proto::connection::Connection<T,P,B>::poll"),
]


def perf_shares(path):
    """Inclusive shares of a few frames from `perf report --children --sort symbol -g none`."""
    if not path or not os.path.exists(path):
        return []
    lines = [l for l in open(path, errors="replace") if l.strip() and not l.startswith("#")]
    shares = []
    for label, needle in PERF_FRAMES:
        best = None
        for l in lines:
            if needle in l:
                try:
                    v = float(l.split()[0].rstrip("%"))
                except ValueError:
                    continue
                best = v if best is None else max(best, v)
        if best is not None:
            shares.append((label, best))
    return shares


def fold_repeats(results):
    """Saturation runs repeated as TAG-rN become one TAG record: the median run by rps, with the
    range of all of them in `range` and every run in `runs`."""
    groups = {}
    for r in results:
        tag = r.get("tag", "")
        if "-r" in tag and tag.rsplit("-r", 1)[1].isdigit():
            groups.setdefault(tag.rsplit("-r", 1)[0], []).append(r)
    folded = []
    for tag, runs in groups.items():
        runs.sort(key=lambda r: r["rps"])
        median = dict(runs[len(runs) // 2])
        median["tag"] = tag
        median["runs"] = [r["rps"] for r in runs]
        median["non_ok"] = sum(r.get("non_ok", 0) for r in runs)
        kinds = {}
        for r in runs:
            for k, v in (r.get("non_ok_kinds") or {}).items():
                kinds[k] = kinds.get(k, 0) + v
        median["non_ok_kinds"] = kinds
        folded.append(median)
    return results + folded


def section(results, args):
    results = fold_repeats(results)
    by = {r["tag"]: r for r in results}
    a = lambda s, t, l: by.get(f"a-{s}-{t}-{l}")
    b = lambda m, l: by.get(f"b-{m}-{l}")
    out = []
    w = out.append
    w("## Load harness (scripts/bench)")
    w("")
    w(
        "Measured by `scripts/bench` in one run, side by side on one machine; the numbers below are "
        "its real output (regenerate with the commands at the end). Targets come from issue 7 and "
        "are reported, not asserted."
    )
    w("")
    cpu = sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
    mem = sh("free -g | awk '/^Mem:/ {print $2}'")
    w(f"- Machine: {sh('nproc')} cores ({cpu}), {sh('uname -sr')}, "
      f"{mem} GiB RAM; load average before the run: {args.loadavg}")
    w(f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; commit {sh('git rev-parse --short HEAD')}"
      f"{' (+ uncommitted changes)' if sh('git status --porcelain -- src benches scripts Cargo.toml') else ''}; "
      f"{sh('rustc --version')}; Envoy {args.envoy}")
    w(f"- Pinning: servers under test (fedauthz / null-authz, and Envoy with `--concurrency 1`) on CPU "
      f"{args.server_cpu}; load generators (fedauthz-load with one tokio worker, h2load `-t 1`, wrk `-t1`) "
      f"on CPU {args.load_cpu}. Through Envoy, Envoy and the auth server share CPU {args.server_cpu}. "
      f"All of them at nice {args.nice} (the machine is shared with other builds).")
    w(f"- Each measurement: {args.warmup} s warm-up (not recorded), then {args.duration} s. Saturation with "
      f"fedauthz-load is measured {args.repeat} times (direct: alternating null and fedauthz): median, "
      "and the range in parentheses; ratios use the medians. "
      "Saturation = closed loop; 1k/5k rps = open loop, latency from each request's intended send "
      "time (no coordinated omission), HDR histogram. Whole run: "
      f"{args.elapsed} s (build excluded when cached).")
    w(f"- Tokens: ES256 (P-256), {args.token_bytes} bytes, minted by `fedauthz-load mint`: a repeated pool of 64 "
      "tokens, and 250,000 unique tokens (every check verifies a signature; unique runs against "
      "fedauthz never reuse a token, also across runs). Envoy runs use the pool.")
    w(f"- fedauthz verified-token cache: {args.cache_state}.")
    w("- Every answer is checked (gRPC: OK; HTTP: 200); the non-OK columns count the rest. A run "
      "with non-OK answers is not a valid throughput number.")
    w("")

    # (a)
    w("### (a) Direct gRPC Check: fedauthz vs null ext_authz server")
    w("")
    w("fedauthz-load, 4 h2 connections × 16 streams; latency p50 / p99 / p99.9.")
    w("")
    w("| server | tokens | saturation rps | at 1k rps | at 5k rps | non-OK |")
    w("|---|---|---:|---|---|---|")
    for t, tname in (("pool", "64-token pool"), ("unique", "all unique")):
        for s, sname in (("null", "null-authz"), ("fedauthz", "fedauthz")):
            sat, k1, k5 = a(s, t, "sat"), a(s, t, "1k"), a(s, t, "5k")
            w(f"| {sname} | {tname} | {rps(sat)} | {lat(k1)} | {lat(k5)} | {bad(sat, k1, k5)} |")
    w("")
    rp = ratio(a("fedauthz", "pool", "sat"), a("null", "pool", "sat"))
    ru = ratio(a("fedauthz", "unique", "sat"), a("null", "unique", "sat"))
    w("| ratio fedauthz / null | 64-token pool | all unique |")
    w("|---|---:|---:|")
    two = lambda x: f"{x:.2f}" if x else "–"
    w(f"| saturation throughput | {two(rp)} | {two(ru)} |")
    for load in ("1k", "5k"):
        cells = []
        for t in ("pool", "unique"):
            f, n = a("fedauthz", t, load), a("null", t, load)
            cells.append(f"{f['p99_us'] / n['p99_us']:.2f}" if f and n and n["p99_us"] else "–")
        w(f"| p99 at {load} rps | {cells[0]} | {cells[1]} |")
    w("")

    xs = [r for r in results if r.get("tool") == "h2load"]
    if xs:
        w("Cross-check at saturation, same 4 connections × 16 streams, one fixed token (h2load "
          "checks the HTTP status only; gRPC errors travel in trailers it does not read):")
        w("")
        w("| server | fedauthz-load rps | h2load rps | h2load / fedauthz-load |")
        w("|---|---:|---:|---:|")
        for s, sname in (("null", "null-authz"), ("fedauthz", "fedauthz")):
            h = by.get(f"x-h2load-{s}")
            m = a(s, "pool", "sat")
            rr = f"{h['rps'] / m['rps']:.2f}" if h and m and m["rps"] else "–"
            w(f"| {sname} | {rps(m)} | {h['rps']:,.0f} | {rr} |" if h else f"| {sname} | {rps(m)} | – | – |")
        hn, hf = by.get("x-h2load-null"), by.get("x-h2load-fedauthz")
        if hn and hf and hn["rps"]:
            w("")
            w(f"h2load's ratio fedauthz / null: {hf['rps'] / hn['rps']:.2f}.")
        w("")

    # (b)
    w("### (b) Through Envoy 1.40 (one worker), HTTP/1.1 keep-alive, 16 connections, 64-token pool")
    w("")
    w("Every mode answers from the same `direct_response: 200`, so only the auth step differs.")
    w("")
    w("| mode | saturation rps (fedauthz-load) | saturation rps (wrk) | at 1k rps p50 / p99 / p99.9 | non-OK | vs no auth |")
    w("|---|---:|---:|---|---|---:|")
    names = {
        "noauth": "(i) no auth",
        "jwt-nocache": "(ii) jwt_authn, no jwt_cache_config",
        "jwt-cache": "(iii) jwt_authn + jwt_cache_config (1000)",
        "ext-null": "(iv) ext_authz → null-authz",
        "ext-fedauthz": "(v) ext_authz → fedauthz",
    }
    base = b("noauth", "sat")
    for m, name in names.items():
        sat, k1 = b(m, "sat"), b(m, "1k")
        wr = by.get(f"x-wrk-{m}")
        wbad = f", wrk non-2xx {wr['non_ok']}" if wr and wr["non_ok"] else ""
        rel = ratio(sat, base)
        wrps = f"{wr['rps']:,.0f}" if wr else "–"
        rels = f"{rel:.2f}" if rel else "–"
        w(f"| {name} | {rps(sat)} | {wrps} | {lat(k1)} | {bad(sat, k1)}{wbad} | {rels} |")
    w("")
    re = ratio(b("ext-fedauthz", "sat"), b("ext-null", "sat"))
    wf, wn = by.get("x-wrk-ext-fedauthz"), by.get("x-wrk-ext-null")
    rw = wf["rps"] / wn["rps"] if wf and wn and wn["rps"] else None
    w(f"Envoy+fedauthz / Envoy+null throughput: {f'{re:.2f}' if re else '–'} (fedauthz-load), "
      f"{f'{rw:.2f}' if rw else '–'} (wrk).")
    k1f, k1n = b("ext-fedauthz", "1k"), b("ext-null", "1k")
    if k1f and k1n:
        w(f"p50 / p99 at 1k rps: Envoy+fedauthz {fmt_us(k1f['p50_us'])} / {fmt_us(k1f['p99_us'])} vs "
          f"Envoy+null {fmt_us(k1n['p50_us'])} / {fmt_us(k1n['p99_us'])}.")
    w("")

    # (c)
    c = by.get("c-rss")
    cl = by.get("c-50-issuers-100k")
    w("### (c) Memory: fedauthz with 50 issuers (ES256 keys inline)")
    w("")
    w("| state | VmRSS |")
    w("|---|---:|")
    if c:
        w(f"| idle, after ready | {c['idle_kib'] / 1024:.1f} MiB |")
        w(f"| after 100,000 unique tokens spread over 50 issuers | {c['after_kib'] / 1024:.1f} MiB |")
        w(f"| peak (VmHWM) | {c['hwm_kib'] / 1024:.1f} MiB |")
    w("")
    if cl:
        w(f"The 100k checks ran at {rps(cl)} rps (closed loop, 4 × 16), non-OK: {bad(cl)}. "
          f"Token cache metrics after them: {c['cache_metrics'] or 'none (no cache in this build)'}.")
        w("")

    # profile
    prof = perf_shares(args.perf)
    if prof:
        w("### Where fedauthz's time goes")
        w("")
        w("`perf record -e cpu-clock --call-graph dwarf` of fedauthz during a unique-token saturation run "
          "(inclusive share of fedauthz's CPU samples; software clock, no hardware counters on this VM):")
        w("")
        w("| frame | share |")
        w("|---|---:|")
        for label, value in prof:
            w(f"| {label} | {value:.1f} % |")
        w("")

    # targets
    w("### Targets (issue 7)")
    w("")
    w("| target | measured | verdict |")
    w("|---|---|---|")
    w(f"| direct gRPC: fedauthz ≥ 0.8 × null throughput | pool {rp:.2f}×, unique {ru:.2f}× | "
      f"pool: {verdict_min(rp, 0.8)}; unique: {verdict_min(ru, 0.8)} |" if rp and ru else
      "| direct gRPC: fedauthz ≥ 0.8 × null throughput | – | not measured |")
    for t in ("pool", "unique"):
        k1 = a("fedauthz", t, "1k")
        v = round(k1["p99_us"] / 1000, 3) if k1 else None
        w(f"| direct gRPC: fedauthz p99 ≤ 1 ms at 1k rps ({t}) | {fmt_us(k1['p99_us']) if k1 else '–'} | "
          f"{verdict_max(v, 1, 'ms')} |")
    w(f"| Envoy+fedauthz ≥ 0.9 × Envoy+null | {f'{re:.2f}×' if re else '–'} | {verdict_min(re, 0.9)} |")
    if c:
        mib = round(c["after_kib"] / 1024, 1)
        cached = "with" if c["cache_metrics"] else "**without** (no cache in this build, so nothing was cached)"
        w(f"| RSS ≤ 64 MiB with 100k cached tokens / 50 issuers | {mib} MiB {cached} | {verdict_max(mib, 64, 'MiB')} |")
    w("")
    w("### Reproduce")
    w("")
    w("```sh")
    w("scripts/bench                                   # everything above; BENCH_NO_WRITE=1 leaves this file alone")
    w("cargo build --release --features bench-harness  # what it builds: fedauthz, null-authz, fedauthz-load")
    w("target/release/fedauthz-load mint --out target/bench --pool 64 --unique 250000 --multi-issuers 50 --multi-tokens 100000")
    w("taskset -c 0 target/release/null-authz --listen 127.0.0.1:18052")
    w("RUST_LOG=warn taskset -c 0 target/release/fedauthz serve --config target/bench/fedauthz-bench.yaml")
    w(f"taskset -c 1 target/release/fedauthz-load run --target grpc --connections 4 --concurrency 16 \\")
    w(f"    --addr 127.0.0.1:18051 --tokens target/bench/tokens-unique.txt --duration {args.duration} --warmup {args.warmup} [--rate 1000|5000]")
    w("taskset -c 1 h2load -D 5 --warm-up-time=1 -c 4 -m 16 -t 1 -d target/bench/check.grpc \\")
    w("    -H 'content-type: application/grpc' -H 'te: trailers' http://127.0.0.1:18051/envoy.service.auth.v3.Authorization/Check")
    w("taskset -c 0 .tools/bin/envoy -c target/bench/envoy-ext-fedauthz.yaml --concurrency 1 --disable-hot-restart")
    w("taskset -c 1 target/release/fedauthz-load run --target http --connections 16 --addr 127.0.0.1:18000 \\")
    w("    --tokens target/bench/tokens-pool.txt [--rate 1000]")
    w("BENCH_TOKENS=target/bench/tokens-pool.txt taskset -c 1 wrk -t1 -c16 -d5s -s benches/harness/rotate-tokens.lua http://127.0.0.1:18000/bench")
    w("```")
    w("")
    w("Raw results (one JSON line per measurement): `target/bench/results.jsonl`; logs: `target/bench/logs/`.")
    return "\n".join(out) + "\n"


def write(path, section_file):
    with open(section_file) as f:
        body = f.read()
    block = f"{BEGIN}\n{body}{END}\n"
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with open(path, "w") as f:
        f.write(text)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("section", nargs="?")
    p.add_argument("--write")
    p.add_argument("--cache-state", default="unknown")
    p.add_argument("--duration", default="5")
    p.add_argument("--warmup", default="1")
    p.add_argument("--elapsed", default="?")
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--load-cpu", default="1")
    p.add_argument("--envoy", default="?")
    p.add_argument("--loadavg", default="?")
    p.add_argument("--token-bytes", default="?")
    p.add_argument("--nice", default="0")
    p.add_argument("--perf")
    p.add_argument("--repeat", default="1")
    args = p.parse_args()
    if args.write:
        write(args.write, args.input if not args.section else args.section)
        return
    with open(args.input) as f:
        results = [json.loads(line) for line in f if line.strip()]
    sys.stdout.write(section(results, args))


if __name__ == "__main__":
    main()
