#!/usr/bin/env bash
# The local stack: ClickHouse <- pyramid <- Prometheus, all plain background processes with
# pid files and logs under $PYRAMID_HOME (default <repo>/var/stack). No systemd, no Docker.
#
#   deploy/stack.sh up       start whatever is not running yet, wait until each part is ready
#   deploy/stack.sh down     stop Prometheus, pyramid, ClickHouse (in that order; data is kept)
#   deploy/stack.sh status   show what runs
#
# Env (defaults): PYRAMID_HOME (<repo>/var/stack), PYRAMID_BIN (<repo>/bin/pyramid),
# CLICKHOUSE_TCP_PORT (9000), CLICKHOUSE_HTTP_PORT (8123), CLICKHOUSE_COMPRESSION (zstd),
# PYRAMID_PORT (9201), PROMETHEUS_PORT (9090), SCRAPE_INTERVAL (15s).
# STACK_CLUSTER=SHARDSxREPLICAS (e.g. 2x2) runs a local ClickHouse cluster instead of one
# server (deploy/cluster.sh: ZooKeeper on CLUSTER_BASE_PORT, default 9300, and the servers
# on the ports after it) and pyramid in cluster mode.
# Other PYRAMID_* variables in the environment reach pyramid unchanged.
set -euo pipefail

# Debian installs clickhouse-server in /usr/sbin, which a non-root PATH often lacks.
export PATH="$PATH:/usr/sbin:/sbin"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

home=${PYRAMID_HOME:-$repo/var/stack}
pyramid_bin=${PYRAMID_BIN:-$repo/bin/pyramid}
# Absolute, because processes start in $home and the path identifies pyramid in /proc.
[[ $pyramid_bin == /* ]] || pyramid_bin=$PWD/$pyramid_bin
ch_tcp=${CLICKHOUSE_TCP_PORT:-9000}
ch_http=${CLICKHOUSE_HTTP_PORT:-8123}
ch_compression=${CLICKHOUSE_COMPRESSION:-zstd}
pyramid_port=${PYRAMID_PORT:-9201}
prom_port=${PROMETHEUS_PORT:-9090}
scrape_interval=${SCRAPE_INTERVAL:-15s}
cluster=${STACK_CLUSTER:-}
cluster_base=${CLUSTER_BASE_PORT:-9300}
ready_timeout=60

die() {
	echo "stack.sh: $*" >&2
	exit 1
}

# pid of service $1 if it runs. The command line must mention $2, so a stale pid file whose
# pid the kernel gave to another process never makes us signal a stranger.
running_pid() {
	local pidfile=$home/$1.pid pid state
	[[ -f $pidfile ]] || return 0
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 0
	state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
	[[ -n $state && $state != Z ]] || return 0
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 0
	echo "$pid"
}

port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_bg NAME CMD...: run CMD detached (own session, survives make and the terminal) with
# cwd $home, output in $home/NAME.log and its pid in $home/NAME.pid. The inner shell writes its
# own pid and then becomes CMD through exec, so the pid is CMD's.
start_bg() {
	local name=$1
	shift
	rm -f "$home/$name.pid"
	echo "==== $(date -u +%FT%TZ) stack.sh starting $name" >>"$home/$name.log"
	# shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
	setsid bash -c 'cd "$1" && echo $$ >"$2" && shift 2 && exec "$@"' _ "$home" "$home/$name.pid" "$@" \
		</dev/null >>"$home/$name.log" 2>&1 &
}

# wait_ready NAME MARKER URL: poll URL until it answers 2xx; fail early if the process died.
wait_ready() {
	local name=$1 marker=$2 url=$3 deadline=$((SECONDS + ready_timeout))
	until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
		if [[ -f $home/$name.pid && -z $(running_pid "$name" "$marker") ]]; then
			echo "stack.sh: $name exited during startup; tail of $home/$name.log:" >&2
			tail -n 40 "$home/$name.log" >&2
			exit 1
		fi
		if ((SECONDS >= deadline)); then
			echo "stack.sh: $name not ready at $url after ${ready_timeout}s; tail of $home/$name.log:" >&2
			tail -n 40 "$home/$name.log" >&2
			exit 1
		fi
		sleep 0.3
	done
}

# stop_bg NAME MARKER: SIGTERM, then SIGKILL after 30s. pyramid flushes buffered samples to
# ClickHouse on SIGTERM, which is why ClickHouse is stopped last.
stop_bg() {
	local name=$1 marker=$2 pid deadline
	pid=$(running_pid "$name" "$marker")
	if [[ -z $pid ]]; then
		rm -f "$home/$name.pid"
		echo "$name not running"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + 30))
	while [[ -n $(running_pid "$name" "$marker") ]]; do
		if ((SECONDS >= deadline)); then
			echo "stack.sh: $name (pid $pid) ignored SIGTERM for 30s; sending SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
			sleep 1
			break
		fi
		sleep 0.2
	done
	rm -f "$home/$name.pid"
	echo "$name stopped"
}

# Markers that identify our processes in /proc/PID/cmdline.
pyramid_marker() { echo "$pyramid_bin"; }
prom_marker() { echo "--storage.tsdb.path=$home/prometheus"; }

up() {
	[[ -x $pyramid_bin ]] || die "$pyramid_bin not found; run 'make build' (or 'make run')"
	command -v prometheus >/dev/null || die "prometheus not found; run deploy/install.sh"
	command -v curl >/dev/null || die "curl not found; run deploy/install.sh"
	mkdir -p "$home"

	local ch_env=(PYRAMID_CLICKHOUSE_ADDR="127.0.0.1:$ch_tcp") ch_hint="clickhouse-client --port $ch_tcp" stop_hint="make stop"
	if [[ -n $cluster ]]; then
		[[ $cluster =~ ^([1-9][0-9]*)x([1-9][0-9]*)$ ]] || die "STACK_CLUSTER must be SHARDSxREPLICAS, like 2x2, not $cluster"
		"$here/cluster.sh" start "$home/cluster" "$cluster_base" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
		ch_env=(PYRAMID_CLICKHOUSE_ADDR="$("$here/cluster.sh" addrs "$home/cluster")" PYRAMID_CLICKHOUSE_CLUSTER=pyramid)
		ch_hint="clickhouse-client --port $((cluster_base + 1))"
		stop_hint="make stop-cluster"
	else
		"$here/clickhouse.sh" start "$home/clickhouse" "$ch_tcp" "$ch_http" "$ch_compression"
	fi

	if [[ -n $(running_pid pyramid "$(pyramid_marker)") ]]; then
		echo "pyramid already running"
	else
		! port_open "$pyramid_port" || die "port $pyramid_port on 127.0.0.1 is already in use"
		start_bg pyramid env \
			PYRAMID_LISTEN_ADDR="127.0.0.1:$pyramid_port" \
			"${ch_env[@]}" \
			"$pyramid_bin"
	fi
	wait_ready pyramid "$(pyramid_marker)" "http://127.0.0.1:$pyramid_port/-/ready"
	echo "pyramid ready: pid $(running_pid pyramid "$(pyramid_marker)"), 127.0.0.1:$pyramid_port"

	if [[ -n $(running_pid prometheus "$(prom_marker)") ]]; then
		echo "prometheus already running"
	else
		! port_open "$prom_port" || die "port $prom_port on 127.0.0.1 is already in use"
		sed -e "s|@SCRAPE_INTERVAL@|$scrape_interval|g" \
			-e "s|@PROMETHEUS_PORT@|$prom_port|g" \
			-e "s|@PYRAMID_PORT@|$pyramid_port|g" \
			"$here/prometheus/prometheus.yml.in" >"$home/prometheus.yml"
		if command -v promtool >/dev/null; then
			promtool check config "$home/prometheus.yml" >/dev/null ||
				die "promtool rejects $home/prometheus.yml"
		fi
		start_bg prometheus prometheus \
			--config.file="$home/prometheus.yml" \
			--storage.tsdb.path="$home/prometheus" \
			--web.listen-address="127.0.0.1:$prom_port"
	fi
	wait_ready prometheus "$(prom_marker)" "http://127.0.0.1:$prom_port/-/ready"
	echo "prometheus ready: pid $(running_pid prometheus "$(prom_marker)"), 127.0.0.1:$prom_port"

	cat <<EOF

pyramid stack is up (state and logs in $home):
  Prometheus UI:   http://127.0.0.1:$prom_port/  (Debian's 2.42 serves the classic UI: /classic/graph, /classic/targets)
  pyramid metrics: curl -s http://127.0.0.1:$pyramid_port/metrics
  ClickHouse:      $ch_hint -q 'SELECT count() FROM pyramid.samples'
  logs:            $home/pyramid.log, $home/prometheus.log, $home/$([[ -n $cluster ]] && echo 'cluster/*' || echo clickhouse)/log/
  stop:            $stop_hint   (deploy/stack.sh down; data is kept, 'make clean' deletes it)
Prometheus scrapes every $scrape_interval and remote-writes to pyramid; samples reach
ClickHouse within a scrape interval or two.
EOF
}

down() {
	stop_bg prometheus "$(prom_marker)"
	stop_bg pyramid "$(pyramid_marker)"
	if [[ -f $home/cluster/nodes ]]; then
		"$here/cluster.sh" stop "$home/cluster"
	fi
	if [[ -d $home/clickhouse ]]; then
		"$here/clickhouse.sh" stop "$home/clickhouse"
	fi
}

status() {
	local rc=0 pid
	if [[ -f $home/cluster/nodes ]]; then
		local name
		while read -r name _; do
			"$here/clickhouse.sh" status "$home/cluster/$name" || rc=1
		done < <("$here/cluster.sh" nodes "$home/cluster")
	else
		"$here/clickhouse.sh" status "$home/clickhouse" || rc=1
	fi
	pid=$(running_pid pyramid "$(pyramid_marker)")
	if [[ -n $pid ]]; then
		echo "pyramid running: pid $pid, 127.0.0.1:$pyramid_port"
	else
		echo "pyramid not running"
		rc=1
	fi
	pid=$(running_pid prometheus "$(prom_marker)")
	if [[ -n $pid ]]; then
		echo "prometheus running: pid $pid, http://127.0.0.1:$prom_port"
	else
		echo "prometheus not running"
		rc=1
	fi
	return "$rc"
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
*)
	sed -n '5,7p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
	exit 2
	;;
esac
