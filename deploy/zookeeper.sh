#!/usr/bin/env bash
# Run a private ZooKeeper (Debian's zookeeper package) out of one directory, for the local
# ClickHouse cluster and its tests: a standalone server, a plain background process with a
# pid file, listening on loopback only.
#
#   deploy/zookeeper.sh start  DIR PORT   start (or check) the server on 127.0.0.1:PORT
#   deploy/zookeeper.sh stop   DIR        SIGTERM, SIGKILL after 20s; data is kept
#   deploy/zookeeper.sh status DIR        exit 0 if running
set -euo pipefail

usage() {
	sed -n '6,8p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
	exit 2
}

die() {
	echo "zookeeper.sh: $*" >&2
	exit 1
}

# pid of the server started from $dir, or nothing; checks the command line so a reused pid
# never makes us signal a stranger.
running_pid() {
	local pid state
	[[ -f $dir/zookeeper.pid ]] || return 0
	pid=$(<"$dir/zookeeper.pid")
	[[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 0
	state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
	[[ -n $state && $state != Z ]] || return 0
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/zoo.cfg" || return 0
	echo "$pid"
}

# ruok PORT: ZooKeeper's four-letter health check.
ruok() {
	local reply
	reply=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && echo ruok >&3 && cat <&3' _ "$1" 2>/dev/null || true)
	[[ $reply == imok ]]
}

start() {
	(($# == 1)) || usage
	local port=$1 timeout=${ZOOKEEPER_START_TIMEOUT:-60}
	[[ $port =~ ^[0-9]+$ ]] || die "port must be a number: $port"
	[[ -r /usr/share/java/zookeeper.jar ]] || die "ZooKeeper not installed; run deploy/install.sh"
	if [[ -z $(running_pid) ]]; then
		! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || die "port $port on 127.0.0.1 is already in use"
		mkdir -p "$dir/data"
		cat >"$dir/zoo.cfg" <<CFG
tickTime=500
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat
CFG
		rm -f "$dir/zookeeper.pid"
		# shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
		setsid bash -c 'cd "$1" && echo $$ >zookeeper.pid && exec "${@:2}"' _ "$dir" \
			java -Xmx256m -cp "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar" \
			-Dzookeeper.log.dir="$dir" org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
			</dev/null >>"$dir/zookeeper.log" 2>&1 &
	fi
	local deadline=$((SECONDS + timeout))
	until ruok "$port"; do
		if [[ -f $dir/zookeeper.pid && -z $(running_pid) ]]; then
			tail -n 30 "$dir/zookeeper.log" >&2
			die "zookeeper exited during startup"
		fi
		((SECONDS < deadline)) || die "no answer on 127.0.0.1:$port after ${timeout}s"
		sleep 0.3
	done
	echo "zookeeper ready: pid $(running_pid), 127.0.0.1:$port, dir $dir"
}

stop() {
	local pid deadline
	pid=$(running_pid)
	if [[ -z $pid ]]; then
		rm -f "$dir/zookeeper.pid"
		echo "zookeeper not running ($dir)"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + 20))
	while [[ -n $(running_pid) ]] && ((SECONDS < deadline)); do sleep 0.2; done
	if [[ -n $(running_pid) ]]; then
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.5
	fi
	rm -f "$dir/zookeeper.pid"
	echo "zookeeper stopped ($dir)"
}

(($# >= 2)) || usage
cmd=$1
[[ $cmd != start ]] || mkdir -p "$2"
if [[ -d $2 ]]; then dir=$(cd "$2" && pwd); else dir=$2; fi
shift 2
case $cmd in
start) start "$@" ;;
stop) stop ;;
status)
	if [[ -n $(running_pid) ]]; then echo "zookeeper running: pid $(running_pid) ($dir)"; else
		echo "zookeeper not running ($dir)"
		exit 1
	fi
	;;
*) usage ;;
esac
