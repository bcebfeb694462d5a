#!/usr/bin/env bash
# Install what pyramid's tests and local stack need, each only if it is missing: Debian's
# clickhouse-server/clickhouse-client (18.16), prometheus (2.42, with promtool) and zookeeper
# (3.8, for the local ClickHouse cluster), plus curl and CA certificates; and, for the tests of the modern dialect, ClickHouse 26.5 as the chDB
# library (npm's @chdb/lib-linux-x64-gnu, fetched with npm into var/chdb/lib/libchdb.so).
# Safe to run again and again; it does nothing once everything is there. Go is not installed
# here: it is expected at /usr/local/go (or anywhere on PATH).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chdb_version=26.5.3
chdb_dir=$repo/var/chdb
chdb_lib=$chdb_dir/lib/libchdb.so

# Debian installs clickhouse-server in /usr/sbin, which a non-root PATH often lacks.
export PATH="$PATH:/usr/sbin:/sbin:/usr/local/go/bin"

need=()
command -v clickhouse-server >/dev/null || need+=(clickhouse-server)
command -v clickhouse-client >/dev/null || need+=(clickhouse-client)
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v curl >/dev/null || need+=(curl)
# The local ClickHouse cluster (deploy/cluster.sh) coordinates its replicas through ZooKeeper.
[[ -r /usr/share/java/zookeeper.jar ]] || need+=(zookeeper)
command -v setsid >/dev/null || need+=(util-linux)
# go needs CA certificates to fetch modules over HTTPS; minimal images lack them.
[[ -e /etc/ssl/certs/ca-certificates.crt ]] || need+=(ca-certificates)
chdb_current() { [[ -s $chdb_lib && $(cat "$chdb_dir/lib/VERSION" 2>/dev/null) == "$chdb_version" ]]; }
if ! chdb_current; then
	command -v npm >/dev/null || need+=(npm)
fi

if ((${#need[@]})); then
	sudo=()
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null || { echo "install.sh: need root or sudo to install ${need[*]}" >&2; exit 1; }
		sudo=(sudo)
	fi
	# The packages' postinst scripts would start system-wide servers on the very ports the
	# stack uses (ClickHouse 9000/8123, Prometheus 9090, node-exporter 9100), or fail without
	# systemd. We run our own servers, so forbid service starts during the install with a
	# policy-rc.d (exit 101 = "not allowed") unless the machine already has one.
	policy=/usr/sbin/policy-rc.d
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\n# temporary, from pyramid deploy/install.sh\nexit 101\n' |
			"${sudo[@]}" tee "$policy" >/dev/null
		"${sudo[@]}" chmod 755 "$policy"
		trap '"${sudo[@]}" rm -f "$policy"' EXIT
	fi
	echo "install.sh: installing ${need[*]}"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
	# --no-install-recommends: skips prometheus-node-exporter, which we do not use. A failing
	# postinst (service start without systemd) is tolerated; the checks below decide.
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"${need[@]}" ||
		echo "install.sh: apt-get install reported an error; checking the binaries anyway" >&2
fi

# The library is 560 MB unpacked; npm checks the tarball against the registry's integrity
# hash. Only libchdb.so is kept, with its version beside it.
if ! chdb_current && command -v npm >/dev/null; then
	if [[ $(uname -m) != x86_64 ]]; then
		echo "install.sh: chDB's npm package is for x86_64 Linux only, not $(uname -m)" >&2
	else
		echo "install.sh: fetching @chdb/lib-linux-x64-gnu@$chdb_version (166 MB) into $chdb_dir"
		rm -rf "$chdb_dir/fetch" "$chdb_dir/lib"
		mkdir -p "$chdb_dir/fetch/unpacked"
		(cd "$chdb_dir/fetch" &&
			npm pack --silent --cache "$chdb_dir/fetch/npm-cache" "@chdb/lib-linux-x64-gnu@$chdb_version" >/dev/null &&
			tar -xzf chdb-lib-linux-x64-gnu-"$chdb_version".tgz -C unpacked package/libchdb.so) &&
			mkdir -p "$chdb_dir/lib" &&
			mv "$chdb_dir/fetch/unpacked/package/libchdb.so" "$chdb_lib" &&
			echo "$chdb_version" >"$chdb_dir/lib/VERSION" ||
			echo "install.sh: fetching chDB failed" >&2
		rm -rf "$chdb_dir/fetch"
	fi
fi

missing=0
if ! chdb_current; then
	echo "install.sh: chDB $chdb_version is still missing ($chdb_lib)" >&2
	missing=1
fi
for cmd in clickhouse-server clickhouse-client prometheus promtool curl setsid; do
	if ! command -v "$cmd" >/dev/null; then
		echo "install.sh: $cmd is still missing" >&2
		missing=1
	fi
done
if ! command -v go >/dev/null; then
	echo "install.sh: go not found; install Go (go.mod's version) under /usr/local/go" >&2
	missing=1
fi
if [[ ! -r /usr/share/java/zookeeper.jar ]]; then
	echo "install.sh: zookeeper is still missing (/usr/share/java/zookeeper.jar)" >&2
	missing=1
fi
exit "$missing"
