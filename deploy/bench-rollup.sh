#!/usr/bin/env bash
# `make bench-rollup`: BenchmarkRollupQuery (e2e/rollup_bench_test.go), the rollup tiers'
# benchmark: 30 days x 500 series at 15s (86.4M samples, half gauges, half counters) loaded
# through pyramid's remote write into a private ClickHouse, rolled up into the 5m and 1h
# tiers, and then a query_range over the 30 days at a 1h step (max_over_time,
# avg_over_time, rate) through two Prometheus 2.42 servers with empty TSDBs, one reading
# from a pyramid that routes to the 1h tier and one from a pyramid that reads raw samples
# only, side by side in the same run, every answer compared. Then a table of the latencies
# and their ratio; the log above it has the load rate, the time the rollups took, and rows
# and bytes on disk per tier.
#
# It takes about 8 minutes on a 2-core machine and 14 GiB of memory at its peak (a raw read
# holds 43M samples in pyramid and in Prometheus at once); run nothing else heavy meanwhile.
#
# Env (defaults): BENCHTIME (3x: timed query pairs per expression, after one untimed pair),
# ROLLUP_BENCH_DAYS (30) and ROLLUP_BENCH_SERIES (500, even) to shrink the data for a quick
# look, BENCH_ROLLUP_OUT (<repo>/var/bench-rollup.txt, the raw output), GO_TEST_TIMEOUT (120m).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"

out=${BENCH_ROLLUP_OUT:-$repo/var/bench-rollup.txt}
mkdir -p "$(dirname "$out")"

"$here/install.sh"
# PYRAMID_TEST_REQUIRE=1: a missing program fails the run instead of skipping it silently.
# -v shows the setup's log (load rate, rollup time, bytes per tier); the === lines are noise.
PYRAMID_TEST_REQUIRE=1 go test ./e2e -v -run '^$' -bench BenchmarkRollupQuery \
	-benchtime "${BENCHTIME:-3x}" -count 1 -timeout "${GO_TEST_TIMEOUT:-120m}" |
	grep --line-buffered -v '^=== ' | tee "$out"

echo
echo "query_range over the data at step 1h, seconds per query through Prometheus 2.42 (same run):"
awk '
/^BenchmarkRollupQuery\/[a-z_]+(-[0-9]+)?[ \t]/ {
	name = $1
	sub(/^BenchmarkRollupQuery\//, "", name)
	sub(/-[0-9]+$/, "", name)
	for (i = 3; i < NF; i += 2) v[$(i + 1)] = $i
	printf "  %-15s raw %8.3f s   routed %7.3f s   raw/routed %6.1fx   samples read %d vs %d   max rel. diff %g\n",
		name, v["raw-s/query"], v["routed-s/query"], v["raw/routed"], v["raw-samples/query"], v["routed-samples/query"], v["max-rel-diff"]
	found = 1
}
END { if (!found) { print "  (no results: see the output above)"; exit 1 } }
' "$out"
echo "(raw output in $out)"
