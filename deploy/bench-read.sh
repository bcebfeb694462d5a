#!/usr/bin/env bash
# `make bench-read`: BenchmarkRemoteRead (e2e/read_bench_test.go), remote read of 1, 100 and
# 1,000 series x 1 day at 15s from pyramid and, side by side in the same run, from Prometheus
# 2.42's own TSDB; then a table of the ratios. The benchmark starts its own ClickHouse,
# pyramid and two Prometheus servers on free ports and stops them all at the end; run
# nothing else heavy meanwhile, since they share the machine's cores with it.
#
# Env (defaults): BENCHTIME (5x: timed reads per case, after one untimed warm-up read),
# BENCH (BenchmarkRemoteRead, the -bench pattern), BENCH_READ_OUT (<repo>/var/bench-read.txt,
# the raw output), GO_TEST_TIMEOUT (60m). PYRAMID_BENCH_OPTIMIZE=0 measures pyramid's parts as
# written instead of merged by OPTIMIZE ... FINAL.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"

out=${BENCH_READ_OUT:-$repo/var/bench-read.txt}
mkdir -p "$(dirname "$out")"

"$here/install.sh"
# PYRAMID_TEST_REQUIRE=1: a missing program fails the run instead of skipping it silently.
# -v shows the setup's log (blocks, parts, load time); the === lines are only noise.
PYRAMID_TEST_REQUIRE=1 go test ./e2e -v -run '^$' -bench "${BENCH:-BenchmarkRemoteRead}" \
	-benchtime "${BENCHTIME:-5x}" -count 1 -timeout "${GO_TEST_TIMEOUT:-60m}" |
	grep --line-buffered -v '^=== ' | tee "$out"

echo
echo "Ratios (pyramid / Prometheus 2.42, same run; ms/op is one request answered and every sample decoded):"
"$here/bench-read-ratios.awk" "$out"
echo "(raw output in $out)"
