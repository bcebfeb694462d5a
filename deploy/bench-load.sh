#!/usr/bin/env bash
# `make bench-load`: the same write load against pyramid and against Prometheus's own
# remote-write receiver, interleaved (pyramid, Prometheus, pyramid, Prometheus, ...: a 2-core
# machine cannot host two fair runs at once), then the medians, spreads and ratios of both
# (bin/pyramid-loadgen summarize).
#
# A pyramid run gets a fresh ClickHouse under <repo>/var/bench-<compression>, pyramid on
# 127.0.0.1:19201 and bin/pyramid-loadgen's three phases (ingest, direct inserts of the same
# rows, storage; storage in the first run only). A Prometheus run gets Debian's prometheus
# with an empty TSDB under <repo>/var/bench-prometheus, --web.enable-remote-write-receiver on
# 127.0.0.1:19290 and --storage.tsdb.min-block-duration=24h, so that the generated hours of
# history go into its head block in order rather than down its out-of-order path. Everything
# is stopped afterwards, pass or fail.
#
# Env: LOADGEN_ARGS (extra flags for every bin/pyramid-loadgen run; default "-concurrency 50",
# Prometheus at max_shards), BENCH_RUNS (default 3: runs of each receiver), BENCH_COMPRESSION
# (default zstd: ClickHouse's compression, or lz4), BENCH_PROMETHEUS (default 1; 0 runs
# pyramid alone), BENCH_DIR (default <repo>/var: where the server directories and the
# results go), BENCH_PYRAMID_ADDR (default 127.0.0.1:19201), BENCH_CLICKHOUSE_PORT (default
# 19200; HTTP on that port + 10), BENCH_PROMETHEUS_ADDR (default 127.0.0.1:19290).
# Needs bin/pyramid and bin/pyramid-loadgen (make build) and prometheus (deploy/install.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
export PATH="$PATH:/usr/sbin:/sbin"

pyramid_addr=${BENCH_PYRAMID_ADDR:-127.0.0.1:19201}
prometheus_addr=${BENCH_PROMETHEUS_ADDR:-127.0.0.1:19290}
tcp=${BENCH_CLICKHOUSE_PORT:-19200}
compression=${BENCH_COMPRESSION:-zstd}
runs=${BENCH_RUNS:-3}
with_prometheus=${BENCH_PROMETHEUS:-1}
dir=${BENCH_DIR:-$repo/var}
read -r -a loadgen_args <<<"${LOADGEN_ARGS:--concurrency 50}"

if [[ $with_prometheus == 1 ]] && ! command -v prometheus >/dev/null; then
	echo "bench-load.sh: prometheus is not installed; run deploy/install.sh (or BENCH_PROMETHEUS=0)" >&2
	exit 1
fi

# shellcheck source=deploy/bench-pyramid.sh
source "$here/bench-pyramid.sh"

ch_dir=
prometheus_pid=
cleanup() {
	stop_pyramid
	if [[ -n $ch_dir ]]; then
		"$here/clickhouse.sh" stop "$ch_dir" || true
	fi
	ch_dir=
	if [[ -n $prometheus_pid ]] && kill -0 "$prometheus_pid" 2>/dev/null; then
		kill -TERM "$prometheus_pid" 2>/dev/null || true
		wait "$prometheus_pid" 2>/dev/null || true
	fi
	prometheus_pid=
}
trap cleanup EXIT

results=$dir/bench-load-results
rm -rf "$results"
mkdir -p "$results"
files=()

run_pyramid() {
	local i=$1 extra=()
	ch_dir=$dir/bench-$compression
	echo "==== run $i: pyramid, ClickHouse ($compression) on 127.0.0.1:$tcp, dir $ch_dir"
	"$here/clickhouse.sh" stop "$ch_dir" >/dev/null
	rm -rf "$ch_dir"
	"$here/clickhouse.sh" start "$ch_dir" "$tcp" "$((tcp + 10))" "$compression"
	start_pyramid "$pyramid_addr" "$ch_dir/pyramid.log" PYRAMID_CLICKHOUSE_ADDR="127.0.0.1:$tcp"
	((i == 1)) || extra=(-skip-storage)
	bin/pyramid-loadgen -url "http://$pyramid_addr/api/v1/write" \
		-clickhouse-addr "127.0.0.1:$tcp" -pyramid-pid "$pyramid_pid" -clickhouse-pid "$(<"$ch_dir/clickhouse.pid")" \
		-compression-label "$compression" -json-file "$results/pyramid-$i.json" "${extra[@]}" "${loadgen_args[@]}"
	files+=("$results/pyramid-$i.json")
	cleanup
}

run_prometheus() {
	local i=$1 prom_dir=$dir/bench-prometheus
	echo "==== run $i: Prometheus's remote-write receiver on $prometheus_addr, dir $prom_dir"
	rm -rf "$prom_dir"
	mkdir -p "$prom_dir"
	# No scrape jobs: the only samples are the load generator's.
	printf 'global:\n  scrape_interval: 15s\n' >"$prom_dir/prometheus.yml"
	prometheus --config.file="$prom_dir/prometheus.yml" --storage.tsdb.path="$prom_dir/data" \
		--web.listen-address="$prometheus_addr" --web.enable-remote-write-receiver \
		--storage.tsdb.min-block-duration=24h --storage.tsdb.max-block-duration=24h \
		>"$prom_dir/prometheus.log" 2>&1 &
	prometheus_pid=$!
	# The load generator waits for /-/ready itself.
	bin/pyramid-loadgen -receiver prometheus -url "http://$prometheus_addr/api/v1/write" \
		-prometheus-pid "$prometheus_pid" -json-file "$results/prometheus-$i.json" "${loadgen_args[@]}"
	files+=("$results/prometheus-$i.json")
	cleanup
}

for i in $(seq "$runs"); do
	run_pyramid "$i"
	if [[ $with_prometheus == 1 ]]; then
		run_prometheus "$i"
	fi
done

echo "==== summary (results in $results)"
bin/pyramid-loadgen summarize "${files[@]}"
