#!/usr/bin/env bash
# `make bench-query`: BenchmarkQueryAPI (e2e/query_bench_test.go), pyramid's own PromQL API
# against the same PromQL through Prometheus 2.42, side by side in the same run, every answer
# compared; then a table of the latencies, their ratio and each side's peak memory.
#   rollup  the data of `make bench-rollup` (30 days x 500 series at 15s, rolled up):
#           pyramid's /api/v1/query_range at a 1h step against a Prometheus that reads the
#           same database through pyramid's remote read (goal: pyramid 2x faster, less memory)
#   guard   a year over every series at a 15s step, refused before it runs, timed; the
#           samples and rollups tables must not be read (system.query_log)
#   raw     the data of `make bench-read` (1,000 series x 1 day at 15s): pyramid's API
#           against Prometheus's own TSDB (goal: pyramid at most 1.5x slower)
#
# It takes about 9 minutes on a 2-core machine, 4 of them loading the rollup data, and about
# 3 GiB of memory at its peak (ClickHouse 1.6 GiB); run nothing else heavy meanwhile.
#
# Env (defaults): BENCHTIME (3x: timed query pairs per case, after one untimed pair),
# BENCH (BenchmarkQueryAPI, the -bench pattern: BenchmarkQueryAPI/raw runs the raw case
# alone), ROLLUP_BENCH_DAYS (30) and ROLLUP_BENCH_SERIES (500, even) to shrink the rollup
# data for a quick look, BENCH_QUERY_OUT (<repo>/var/bench-query.txt, the raw output),
# GO_TEST_TIMEOUT (120m).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"

out=${BENCH_QUERY_OUT:-$repo/var/bench-query.txt}
mkdir -p "$(dirname "$out")"

"$here/install.sh"
# PYRAMID_TEST_REQUIRE=1: a missing program fails the run instead of skipping it silently.
# -v shows the setup's log (load rate, rollup time, the guard's messages); === lines are noise.
PYRAMID_TEST_REQUIRE=1 go test ./e2e -v -run '^$' -bench "${BENCH:-BenchmarkQueryAPI}" \
	-benchtime "${BENCHTIME:-3x}" -count 1 -timeout "${GO_TEST_TIMEOUT:-120m}" |
	grep --line-buffered -v '^=== ' | tee "$out"

echo
"$here/bench-query-ratios.awk" "$out"
echo "(raw output in $out)"
