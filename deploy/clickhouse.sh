#!/usr/bin/env bash
# Run a private clickhouse-server out of one directory, for tests, benchmarks and the local
# stack. No systemd needed: the server is a plain background process with a pid file.
#
#   deploy/clickhouse.sh start  DIR TCP_PORT HTTP_PORT [zstd|lz4]   (default zstd)
#   deploy/clickhouse.sh stop   DIR    SIGTERM, SIGKILL after 30s; data is kept
#   deploy/clickhouse.sh kill   DIR    SIGKILL now (tests use it to simulate a crash)
#   deploy/clickhouse.sh status DIR    exit 0 if running
#
# Env: CLICKHOUSE_ZSTD_LEVEL (default 3), CLICKHOUSE_START_TIMEOUT seconds (default 60).
set -euo pipefail

# Debian installs clickhouse-server in /usr/sbin, which a non-root PATH often lacks.
export PATH="$PATH:/usr/sbin:/sbin"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
	sed -n '5,8p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
	exit 2
}

die() {
	echo "clickhouse.sh: $*" >&2
	exit 1
}

# pid of the server started from $dir, or nothing if it is not running. Checks the command
# line too, so a stale pid file whose pid was reused never makes us signal a stranger.
running_pid() {
	local pid state
	[[ -f $dir/clickhouse.pid ]] || return 0
	pid=$(<"$dir/clickhouse.pid")
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	[[ -r /proc/$pid/cmdline ]] || return 0
	# A zombie (exited, not yet reaped by its parent) is not running.
	state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
	[[ $state != Z && -n $state ]] || return 0
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--config-file=$dir/config.xml" || return 0
	echo "$pid"
}

# Is something (anything) listening on 127.0.0.1:$1?
port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Wait up to $1 seconds for pid $2 to go away.
wait_gone() {
	local deadline=$((SECONDS + $1))
	while [[ -n $(running_pid) ]]; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

show_logs() {
	local f
	for f in "$dir"/log/*.log; do
		[[ -f $f ]] || continue
		echo "---- tail $f" >&2
		tail -n 40 "$f" >&2
	done
}

start() {
	(($# == 2 || $# == 3)) || usage
	local tcp=$1 http=$2 compression=${3:-zstd}
	local level=${CLICKHOUSE_ZSTD_LEVEL:-3} timeout=${CLICKHOUSE_START_TIMEOUT:-60}
	[[ $tcp =~ ^[0-9]+$ && $http =~ ^[0-9]+$ ]] || die "ports must be numbers: $tcp $http"
	[[ $compression == zstd || $compression == lz4 ]] || die "compression must be zstd or lz4, not $compression"
	[[ $level =~ ^[0-9]+$ ]] || die "CLICKHOUSE_ZSTD_LEVEL must be a number"
	command -v clickhouse-server >/dev/null || die "clickhouse-server not found; run deploy/install.sh"

	local pid
	pid=$(running_pid)
	if [[ -n $pid ]]; then
		# Already running from this directory: fine if it is the same server the caller wants.
		grep -qF "<tcp_port>$tcp</tcp_port>" "$dir/config.xml" ||
			die "a server is already running from $dir (pid $pid) on another port; stop it first"
	else
		# The readiness probe below cannot tell servers apart, so refuse ports someone else
		# holds (e.g. another ClickHouse on 9000) instead of reporting success for theirs.
		local p
		for p in "$tcp" "$http"; do
			! port_open "$p" || die "port $p on 127.0.0.1 is already in use"
		done

		mkdir -p "$dir"/{log,data,tmp,user_files,format_schemas}
		# Escape characters that are special in a sed replacement.
		local d=${dir//\\/\\\\}
		d=${d//&/\\&}
		d=${d//|/\\|}
		local drop_level=()
		[[ $compression == zstd ]] || drop_level=(-e '/@ZSTD_LEVEL@/d')
		sed "${drop_level[@]}" \
			-e "s|@DIR@|$d|g" -e "s|@TCP_PORT@|$tcp|g" -e "s|@HTTP_PORT@|$http|g" \
			-e "s|@COMPRESSION@|$compression|g" -e "s|@ZSTD_LEVEL@|$level|g" \
			"$here/clickhouse/config.xml.in" >"$dir/config.xml.tmp"
		mv "$dir/config.xml.tmp" "$dir/config.xml"
		cp "$here/clickhouse/users.xml" "$dir/users.xml"
		rm -f "$dir/clickhouse.pid"

		# setsid: own session, so the server outlives the caller (make, go test) and its
		# terminal. The inner shell records its pid and then becomes the server via exec.
		# A simple command, not a (subshell): a subshell would linger as the server's parent
		# holding the caller's stdout open, so $(clickhouse.sh start ...) would never return.
		# cwd = $dir so anything written relative to the working directory stays in $dir.
		# shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
		setsid bash -c 'cd "$1" && echo $$ >clickhouse.pid && exec "${@:2}"' _ "$dir" \
			clickhouse-server --config-file="$dir/config.xml" \
			</dev/null >>"$dir/log/stdout.log" 2>&1 &
	fi

	local deadline=$((SECONDS + timeout))
	while :; do
		if [[ -f $dir/clickhouse.pid && -z $(running_pid) ]]; then
			echo "clickhouse.sh: clickhouse-server exited during startup" >&2
			show_logs
			exit 1
		fi
		if clickhouse-client --host 127.0.0.1 --port "$tcp" -q 'SELECT 1' >/dev/null 2>&1; then
			break
		fi
		if ((SECONDS >= deadline)); then
			echo "clickhouse.sh: no answer on 127.0.0.1:$tcp after ${timeout}s" >&2
			show_logs
			pid=$(running_pid)
			[[ -z $pid ]] || kill -KILL "$pid" 2>/dev/null || true
			exit 1
		fi
		sleep 0.3
	done
	echo "clickhouse-server ready: pid $(running_pid), tcp 127.0.0.1:$tcp, http 127.0.0.1:$http, $compression, dir $dir"
}

stop() {
	local pid
	pid=$(running_pid)
	if [[ -z $pid ]]; then
		rm -f "$dir/clickhouse.pid"
		echo "clickhouse-server not running ($dir)"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_gone 30; then
		echo "clickhouse.sh: pid $pid ignored SIGTERM for 30s; sending SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone 10 || die "pid $pid survived SIGKILL"
	fi
	rm -f "$dir/clickhouse.pid"
	echo "clickhouse-server stopped ($dir)"
}

kill_now() {
	local pid
	pid=$(running_pid)
	if [[ -n $pid ]]; then
		kill -KILL "$pid" 2>/dev/null || true
		# SIGKILL is asynchronous; wait so a following start finds the ports free.
		wait_gone 10 || die "pid $pid survived SIGKILL"
		echo "clickhouse-server killed ($dir)"
	fi
	rm -f "$dir/clickhouse.pid"
}

(($# >= 2)) || usage
cmd=$1
# Absolute path: the config and pid check need it. stop/kill/status must not create DIR.
if [[ $cmd == start ]]; then
	mkdir -p "$2"
fi
if [[ -d $2 ]]; then
	dir=$(cd "$2" && pwd)
else
	dir=$2
fi
shift 2

case $cmd in
start) start "$@" ;;
stop) stop ;;
kill) kill_now ;;
status)
	pid=$(running_pid)
	if [[ -n $pid ]]; then
		echo "clickhouse-server running: pid $pid ($dir)"
	else
		echo "clickhouse-server not running ($dir)"
		exit 1
	fi
	;;
*) usage ;;
esac
