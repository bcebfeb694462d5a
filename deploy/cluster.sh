#!/usr/bin/env bash
# A local ClickHouse cluster on one machine for development and tests: one ZooKeeper and
# SHARDS x REPLICAS ClickHouse servers (deploy/clickhouse.sh), joined in the cluster
# "pyramid" with {shard}/{replica} macros. Everything lives under DIR: DIR/zookeeper and one
# directory per server, DIR/s<shard>r<replica>.
#
#   deploy/cluster.sh start DIR BASE_PORT [SHARDS REPLICAS]   (default 2 2)
#       ZooKeeper on BASE_PORT; server k (0-based, shard-major) on tcp BASE_PORT+1+3k,
#       http BASE_PORT+2+3k, interserver http BASE_PORT+3+3k
#   deploy/cluster.sh stop DIR                  stop every server, then ZooKeeper
#   deploy/cluster.sh node start|stop|kill DIR NAME   one server, e.g. s1r2
#   deploy/cluster.sh zookeeper start|stop DIR
#   deploy/cluster.sh addrs DIR                 the servers' tcp addresses, comma-separated
#   deploy/cluster.sh nodes DIR                 one line per server: name tcp http shard replica
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
	sed -n '7,15p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
	exit 2
}

die() {
	echo "cluster.sh: $*" >&2
	exit 1
}

# The layout is written once by start and read back by every other command.
nodes_file() { echo "$dir/nodes"; }

node_line() {
	awk -v n="$1" '$1 == n' "$(nodes_file)"
}

zk_port() { awk '$1 == "zookeeper" {print $2}' "$(nodes_file)"; }

start_node() {
	local name=$1 line tcp http
	line=$(node_line "$name")
	[[ -n $line ]] || die "no server $name in $dir"
	read -r _ tcp http _ _ _ <<<"$line"
	bash "$here/clickhouse.sh" start "$dir/$name" "$tcp" "$http"
}

write_layout() {
	local base=$1 shards=$2 replicas=$3 k=0 s r
	{
		echo "zookeeper $base"
		for ((s = 1; s <= shards; s++)); do
			for ((r = 1; r <= replicas; r++)); do
				echo "s${s}r${r} $((base + 1 + 3 * k)) $((base + 2 + 3 * k)) $((base + 3 + 3 * k)) $s $r"
				k=$((k + 1))
			done
		done
	} >"$(nodes_file)"
}

# The remote_servers entry every server shares: internal_replication, because the tables
# are Replicated*MergeTree and replicate themselves; a Distributed insert writes one replica.
remote_servers() {
	local shard=0 name tcp s
	echo "        <pyramid>"
	while read -r name tcp _ _ s _; do
		[[ $name != zookeeper ]] || continue
		if [[ $s != "$shard" ]]; then
			((shard == 0)) || echo "            </shard>"
			echo "            <shard>"
			echo "                <internal_replication>true</internal_replication>"
			shard=$s
		fi
		echo "                <replica><host>127.0.0.1</host><port>$tcp</port></replica>"
	done <"$(nodes_file)"
	echo "            </shard>"
	echo "        </pyramid>"
}

write_config() {
	local name=$1 line interserver shard replica
	line=$(node_line "$name")
	read -r _ _ _ interserver shard replica <<<"$line"
	mkdir -p "$dir/$name/config.d"
	cat >"$dir/$name/config.d/cluster.xml" <<XML
<?xml version="1.0"?>
<!-- Written by deploy/cluster.sh: this server's place in the local cluster "pyramid". -->
<yandex>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <interserver_http_port>$interserver</interserver_http_port>
    <zookeeper>
        <node><host>127.0.0.1</host><port>$(zk_port)</port></node>
        <session_timeout_ms>6000</session_timeout_ms>
    </zookeeper>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
    <macros>
        <shard>$shard</shard>
        <replica>r$replica</replica>
    </macros>
    <remote_servers>
$(remote_servers)
    </remote_servers>
</yandex>
XML
}

start() {
	(($# == 1 || $# == 3)) || usage
	local base=$1 shards=${2:-2} replicas=${3:-2} name
	[[ $base =~ ^[0-9]+$ && $shards =~ ^[1-9][0-9]*$ && $replicas =~ ^[1-9][0-9]*$ ]] ||
		die "BASE_PORT, SHARDS and REPLICAS must be numbers"
	mkdir -p "$dir"
	if [[ -f $(nodes_file) ]]; then
		[[ $(zk_port) == "$base" ]] || die "$dir holds a cluster on another base port; stop it and remove $dir first"
	else
		write_layout "$base" "$shards" "$replicas"
	fi
	bash "$here/zookeeper.sh" start "$dir/zookeeper" "$(zk_port)"
	while read -r name _; do
		[[ $name != zookeeper ]] || continue
		write_config "$name"
		start_node "$name"
	done <"$(nodes_file)"
	echo "cluster pyramid ready: $(addrs)"
}

stop() {
	local name
	[[ -f $(nodes_file) ]] || {
		echo "no cluster in $dir"
		return 0
	}
	while read -r name _; do
		[[ $name != zookeeper ]] || continue
		bash "$here/clickhouse.sh" stop "$dir/$name"
	done <"$(nodes_file)"
	bash "$here/zookeeper.sh" stop "$dir/zookeeper"
}

addrs() {
	awk '$1 != "zookeeper" {printf "%s127.0.0.1:%s", sep, $2; sep = ","} END {print ""}' "$(nodes_file)"
}

(($# >= 2)) || usage
cmd=$1
case $cmd in
node | zookeeper)
	(($# >= 3)) || usage
	action=$2
	dir=$3
	shift 3
	;;
*)
	dir=$2
	shift 2
	;;
esac
[[ $cmd != start ]] || mkdir -p "$dir"
[[ -d $dir ]] || die "no cluster in $dir"
dir=$(cd "$dir" && pwd)

case $cmd in
start) start "$@" ;;
stop) stop ;;
addrs) addrs ;;
nodes) awk '$1 != "zookeeper" {print $1, $2, $3, $5, $6}' "$(nodes_file)" ;;
node)
	(($# == 1)) || usage
	case $action in
	start) start_node "$1" ;;
	stop | kill) bash "$here/clickhouse.sh" "$action" "$dir/$1" ;;
	*) usage ;;
	esac
	;;
zookeeper)
	case $action in
	start) bash "$here/zookeeper.sh" start "$dir/zookeeper" "$(zk_port)" ;;
	stop) bash "$here/zookeeper.sh" stop "$dir/zookeeper" ;;
	*) usage ;;
	esac
	;;
*) usage ;;
esac
