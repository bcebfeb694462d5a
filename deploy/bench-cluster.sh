#!/usr/bin/env bash
# `make bench-cluster`: the same write load through pyramid into a ClickHouse cluster of one
# shard and into one of two shards (deploy/cluster.sh, cluster mode), one after the other on
# this machine, then the ratio of their ingest rates and the CPU each part used per million
# samples, the per-core figures the README's sizing section starts from. Each layout gets a
# fresh cluster under <repo>/var/bench-cluster-<layout> and pyramid on 127.0.0.1:19201;
# everything is stopped afterwards, pass or fail.
#
# Env: CLUSTER_LAYOUTS (default "1x1 2x1", SHARDSxREPLICAS), CLUSTER_BASE_PORT (19400),
# LOADGEN_ARGS (extra flags for bin/pyramid-loadgen; default "-targets 100 -scrapes 1000
# -concurrency 8"). Needs bin/pyramid and bin/pyramid-loadgen (make build).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
export PATH="$PATH:/usr/sbin:/sbin"

pyramid_addr=127.0.0.1:19201
layouts=${CLUSTER_LAYOUTS:-1x1 2x1}
base=${CLUSTER_BASE_PORT:-19400}
read -r -a loadgen_args <<<"${LOADGEN_ARGS:--targets 100 -scrapes 1000 -concurrency 8}"

# shellcheck source=deploy/bench-pyramid.sh
source "$here/bench-pyramid.sh"

dir=
cleanup() {
	stop_pyramid
	if [[ -n $dir ]]; then
		"$here/cluster.sh" stop "$dir" >/dev/null || true
	fi
	dir=
}
trap cleanup EXIT

# cpu_seconds PID...: user+system CPU time of the processes so far.
cpu_seconds() {
	local ticks=0 pid
	for pid in "$@"; do
		ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
	done
	awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz}'
}

results=()
for layout in $layouts; do
	[[ $layout =~ ^([1-9][0-9]*)x([1-9][0-9]*)$ ]] || { echo "bench-cluster.sh: bad layout $layout" >&2; exit 1; }
	dir=$repo/var/bench-cluster-$layout
	echo "==== $layout: ${BASH_REMATCH[1]} shard(s) x ${BASH_REMATCH[2]} replica(s), dir $dir"
	[[ ! -f $dir/nodes ]] || "$here/cluster.sh" stop "$dir" >/dev/null
	rm -rf "$dir"
	"$here/cluster.sh" start "$dir" "$base" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
	addrs=$("$here/cluster.sh" addrs "$dir")
	ch_pids=()
	while read -r name _; do
		ch_pids+=("$(<"$dir/$name/clickhouse.pid")")
	done < <("$here/cluster.sh" nodes "$dir")

	start_pyramid "$pyramid_addr" "$dir/pyramid.log" PYRAMID_CLICKHOUSE_ADDR="$addrs" PYRAMID_CLICKHOUSE_CLUSTER=pyramid

	ch_before=$(cpu_seconds "${ch_pids[@]}")
	pyr_before=$(cpu_seconds "$pyramid_pid")
	bin/pyramid-loadgen -url "http://$pyramid_addr/api/v1/write" -clickhouse-addr "${addrs%%,*}" \
		-skip-direct -skip-storage "${loadgen_args[@]}" | tee "$dir/loadgen.txt"
	ch_cpu=$(awk -v a="$(cpu_seconds "${ch_pids[@]}")" -v b="$ch_before" 'BEGIN {printf "%.1f", a - b}')
	pyr_cpu=$(awk -v a="$(cpu_seconds "$pyramid_pid")" -v b="$pyr_before" 'BEGIN {printf "%.1f", a - b}')
	# "accepted  N samples in S s = R samples/s (wall clock)"
	read -r samples rate < <(awk '$1 == "accepted" {print $2, $8}' "$dir/loadgen.txt")
	results+=("$layout $samples $rate $pyr_cpu $ch_cpu")
	cleanup
done

echo
echo "==== cluster ingest, side by side (same load, one layout after the other)"
printf '%-8s %12s %12s %22s %22s\n' layout samples samples/s "pyramid CPU s per 1M" "ClickHouse CPU s per 1M"
first_rate=
for r in "${results[@]}"; do
	read -r layout samples rate pyr ch <<<"$r"
	awk -v l="$layout" -v n="$samples" -v r="$rate" -v p="$pyr" -v c="$ch" \
		'BEGIN {printf "%-8s %12d %12.0f %22.2f %22.2f\n", l, n, r, p * 1e6 / n, c * 1e6 / n}'
	first_rate=${first_rate:-$rate}
	[[ $rate == "$first_rate" ]] || awk -v a="$rate" -v b="$first_rate" -v l="$layout" \
		'BEGIN {printf "ratio %s / first layout: %.2f\n", l, a / b}'
done
