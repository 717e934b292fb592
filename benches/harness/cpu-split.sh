#!/usr/bin/env bash
# CPU split between Envoy and the ext_authz server through Envoy (modes iv and v of
# scripts/bench): CPU time per request of each process over a 5 s saturation run. Needs the
# files a scripts/bench run leaves in target/bench and the release binaries.
set -u
cd "$(dirname "$0")/../.."
b=target/bench; r=target/release
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
taskset -c 0 $r/null-authz --listen 127.0.0.1:18052 >/dev/null 2>&1 & null=$!
RUST_LOG=warn taskset -c 0 $r/fedauthz serve --config $b/fedauthz-bench.yaml >/dev/null 2>&1 & fa=$!
sleep 2
for mode in null fedauthz; do
  taskset -c 0 .tools/bin/envoy -c $b/envoy-ext-$mode.yaml --concurrency 1 --disable-hot-restart -l error >/dev/null 2>&1 & env=$!
  sleep 2
  if [ $mode = null ]; then srv=$null; else srv=$fa; fi
  taskset -c 1 $r/fedauthz-load run --target http --connections 16 --addr 127.0.0.1:18000 --path /bench --host bench.local --expect-status 200 --tokens $b/tokens-pool.txt --duration 2 --warmup 0 >/dev/null 2>&1
  e0=$(cpu $env); s0=$(cpu $srv)
  out=$(taskset -c 1 $r/fedauthz-load run --target http --connections 16 --addr 127.0.0.1:18000 --path /bench --host bench.local --expect-status 200 --tokens $b/tokens-pool.txt --duration 5 --warmup 0 2>&1 | tail -1)
  e1=$(cpu $env); s1=$(cpu $srv)
  n=$(echo "$out" | sed -E 's/.*: ([0-9]+) requests.*/\1/')
  echo "$mode: $n requests; envoy $(( (e1-e0)*10000000/n )) ns/req, server $(( (s1-s0)*10000000/n )) ns/req"
  kill $env; wait $env 2>/dev/null
done
kill $null $fa; wait 2>/dev/null
