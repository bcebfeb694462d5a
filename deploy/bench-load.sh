#!/usr/bin/env bash
# `make bench-load`: the same write load against pyramid on a zstd ClickHouse and on an lz4
# ClickHouse, one after the other (a 2-core machine cannot host two fair runs at once).
# Each run gets a fresh ClickHouse under <repo>/var/bench-<compression>, pyramid on
# 127.0.0.1:19201, and bin/pyramid-loadgen; everything is stopped afterwards, pass or fail.
#
# Env: LOADGEN_ARGS (extra flags for bin/pyramid-loadgen), BENCH_CONFIGS (default
# "zstd:19200 lz4:19300", COMPRESSION:TCP_PORT; the HTTP port is TCP_PORT+10), BENCH_DIR
# (default <repo>/var: where the ClickHouse directories go), BENCH_PYRAMID_ADDR (default
# 127.0.0.1:19201).
# Needs bin/pyramid and bin/pyramid-loadgen (make build).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
export PATH="$PATH:/usr/sbin:/sbin"

pyramid_addr=${BENCH_PYRAMID_ADDR:-127.0.0.1:19201}
configs=${BENCH_CONFIGS:-zstd:19200 lz4:19300}
read -r -a loadgen_args <<<"${LOADGEN_ARGS:-}"

# shellcheck source=deploy/bench-pyramid.sh
source "$here/bench-pyramid.sh"

ch_dir=
cleanup() {
	stop_pyramid
	if [[ -n $ch_dir ]]; then
		"$here/clickhouse.sh" stop "$ch_dir" || true
	fi
	ch_dir=
}
trap cleanup EXIT

failed=()
for cfg in $configs; do
	compression=${cfg%%:*}
	tcp=${cfg#*:}
	ch_dir=${BENCH_DIR:-$repo/var}/bench-$compression
	echo "==== $compression: ClickHouse on 127.0.0.1:$tcp, dir $ch_dir"

	"$here/clickhouse.sh" stop "$ch_dir" >/dev/null
	rm -rf "$ch_dir"
	"$here/clickhouse.sh" start "$ch_dir" "$tcp" "$((tcp + 10))" "$compression"

	start_pyramid "$pyramid_addr" "$ch_dir/pyramid.log" PYRAMID_CLICKHOUSE_ADDR="127.0.0.1:$tcp"

	echo "==> bin/pyramid-loadgen (ClickHouse $compression)"
	if ! bin/pyramid-loadgen -url "http://$pyramid_addr/api/v1/write" \
		-clickhouse-addr "127.0.0.1:$tcp" -pyramid-pid "$pyramid_pid" -clickhouse-pid "$(<"$ch_dir/clickhouse.pid")" \
		-compression-label "$compression" "${loadgen_args[@]}"; then
		failed+=("$compression")
	fi
	cleanup
done

if ((${#failed[@]})); then
	echo "bench-load.sh: loadgen failed for: ${failed[*]}" >&2
	exit 1
fi
