# Sourced by the load benchmarks (bench-load.sh, bench-cluster.sh), from the repository's
# root: check that bin/pyramid and bin/pyramid-loadgen are built, run bin/pyramid as a child
# of the benchmark and stop it again. Not a command of its own.
#
#   start_pyramid ADDR LOG [NAME=VALUE...]   start pyramid listening on ADDR with the given
#                                            settings, wait until it is ready; sets pyramid_pid
#   stop_pyramid                             SIGTERM (pyramid flushes), SIGKILL after 30s

for bin in bin/pyramid bin/pyramid-loadgen; do
	[[ -x $bin ]] || { echo "$(basename "$0"): $bin missing; run make build" >&2; exit 1; }
done

pyramid_pid=

start_pyramid() {
	local addr=$1 log=$2 ready=
	shift 2
	# The readiness probe cannot tell pyramids apart: refuse a port someone else holds.
	if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
		echo "$(basename "$0"): $addr is already in use" >&2
		exit 1
	fi
	# pyramid is the benchmark's child (not detached): the caller's EXIT trap stops it.
	env PYRAMID_LISTEN_ADDR="$addr" "$@" bin/pyramid >"$log" 2>&1 &
	pyramid_pid=$!
	# Migrating a cluster runs ON CLUSTER DDL, which takes longer than on one server.
	for _ in $(seq 400); do
		kill -0 "$pyramid_pid" 2>/dev/null || break
		if curl -fsS -o /dev/null --max-time 2 "http://$addr/-/ready" 2>/dev/null; then
			ready=1
			break
		fi
		sleep 0.3
	done
	if [[ -z $ready ]]; then
		echo "$(basename "$0"): pyramid did not become ready; tail of $log:" >&2
		tail -n 40 "$log" >&2
		exit 1
	fi
}

stop_pyramid() {
	if [[ -n $pyramid_pid ]] && kill -0 "$pyramid_pid" 2>/dev/null; then
		kill -TERM "$pyramid_pid" 2>/dev/null || true
		for _ in $(seq 150); do
			kill -0 "$pyramid_pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$pyramid_pid" 2>/dev/null || true
		wait "$pyramid_pid" 2>/dev/null || true
	fi
	pyramid_pid=
}
