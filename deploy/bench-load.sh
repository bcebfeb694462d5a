#!/usr/bin/env bash
# `make bench-load`: the same write load against pyramid on a zstd ClickHouse and on an lz4
# ClickHouse, one after the other (a 2-core machine cannot host two fair runs at once).
# Each run gets a fresh ClickHouse under <repo>/var/bench-<compression>, pyramid on
# 127.0.0.1:19201, and bin/pyramid-loadgen; everything is stopped afterwards, pass or fail.
#
# Env: LOADGEN_ARGS (extra flags for bin/pyramid-loadgen), BENCH_CONFIGS (default
# "zstd:19200 lz4:19300", COMPRESSION:TCP_PORT; the HTTP port is TCP_PORT+10).
# Needs bin/pyramid and bin/pyramid-loadgen (make build).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
export PATH="$PATH:/usr/sbin:/sbin"

pyramid_addr=127.0.0.1:19201
configs=${BENCH_CONFIGS:-zstd:19200 lz4:19300}
read -r -a loadgen_args <<<"${LOADGEN_ARGS:-}"

for bin in bin/pyramid bin/pyramid-loadgen; do
	[[ -x $bin ]] || { echo "bench-load.sh: $bin missing; run make build" >&2; exit 1; }
done

pyramid_pid=
ch_dir=
cleanup() {
	if [[ -n $pyramid_pid ]] && kill -0 "$pyramid_pid" 2>/dev/null; then
		kill -TERM "$pyramid_pid" 2>/dev/null || true
		# pyramid flushes on SIGTERM; give it 30s, then SIGKILL.
		for _ in $(seq 150); do
			kill -0 "$pyramid_pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$pyramid_pid" 2>/dev/null || true
		wait "$pyramid_pid" 2>/dev/null || true
	fi
	pyramid_pid=
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
	ch_dir=$repo/var/bench-$compression
	echo "==== $compression: ClickHouse on 127.0.0.1:$tcp, dir $ch_dir"

	"$here/clickhouse.sh" stop "$ch_dir" >/dev/null
	rm -rf "$ch_dir"
	"$here/clickhouse.sh" start "$ch_dir" "$tcp" "$((tcp + 10))" "$compression"

	# The readiness probe cannot tell pyramids apart: refuse a port someone else holds.
	if (exec 3<>"/dev/tcp/${pyramid_addr%:*}/${pyramid_addr##*:}") 2>/dev/null; then
		echo "bench-load.sh: $pyramid_addr is already in use" >&2
		exit 1
	fi
	# pyramid is our child here (not detached): the trap above stops it with this script.
	PYRAMID_LISTEN_ADDR=$pyramid_addr PYRAMID_CLICKHOUSE_ADDR=127.0.0.1:$tcp \
		bin/pyramid >"$ch_dir/pyramid.log" 2>&1 &
	pyramid_pid=$!
	ready=
	for _ in $(seq 200); do
		kill -0 "$pyramid_pid" 2>/dev/null || break
		if curl -fsS -o /dev/null --max-time 2 "http://$pyramid_addr/-/ready" 2>/dev/null; then
			ready=1
			break
		fi
		sleep 0.3
	done
	if [[ -z $ready ]]; then
		echo "bench-load.sh: pyramid did not become ready; tail of $ch_dir/pyramid.log:" >&2
		tail -n 40 "$ch_dir/pyramid.log" >&2
		exit 1
	fi

	echo "==> bin/pyramid-loadgen (ClickHouse $compression)"
	if ! bin/pyramid-loadgen -url "http://$pyramid_addr/api/v1/write" \
		-clickhouse-addr "127.0.0.1:$tcp" -pyramid-pid "$pyramid_pid" "${loadgen_args[@]}"; then
		failed+=("$compression")
	fi
	cleanup
done

if ((${#failed[@]})); then
	echo "bench-load.sh: loadgen failed for: ${failed[*]}" >&2
	exit 1
fi
