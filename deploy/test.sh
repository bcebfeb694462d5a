#!/usr/bin/env bash
# What `make test`, `make bench` and `make fuzz` run.
#
#   deploy/test.sh test    private ClickHouse up, go test ./..., brief fuzzing, ClickHouse down
#   deploy/test.sh bench   private ClickHouse up, go test -bench (all but e2e), ClickHouse down
#   deploy/test.sh fuzz    longer fuzzing only, with the private ClickHouse (FuzzQuoteRoundTrip needs it)
#
# Env (defaults): FUZZ_TARGETS ("adapter:FuzzDecodeWriteRequest", space-separated PKGDIR:FuzzName),
# FUZZTIME (20s for test, 60s for fuzz), GO_TEST_TIMEOUT (40m), TEST_CLICKHOUSE_DIR
# (<repo>/var/test-clickhouse), TEST_CLICKHOUSE_TCP_PORT (19000), TEST_CLICKHOUSE_HTTP_PORT (18123).
#
# The tests see PYRAMID_TEST_CLICKHOUSE_ADDR, PYRAMID_TEST_CHDB_LIB (ClickHouse 26.5 as the
# chDB library, which install.sh fetches into var/chdb/lib) and PYRAMID_TEST_REQUIRE=1 (a
# test that needs either engine fails instead of skipping). The end-to-end test, which
# restarts ClickHouse, starts a server of its own with deploy/clickhouse.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"

mode=${1:-test}
ch_dir=${TEST_CLICKHOUSE_DIR:-$repo/var/test-clickhouse}
ch_tcp=${TEST_CLICKHOUSE_TCP_PORT:-19000}
ch_http=${TEST_CLICKHOUSE_HTTP_PORT:-18123}
ch_compression=zstd
fuzz_targets=${FUZZ_TARGETS:-adapter:FuzzDecodeWriteRequest}
export PYRAMID_TEST_CHDB_LIB=${PYRAMID_TEST_CHDB_LIB:-$repo/var/chdb/lib/libchdb.so}
go_timeout=${GO_TEST_TIMEOUT:-40m}

failed=()

# Start a fresh, empty ClickHouse for this run (stale tables from an earlier run must not
# decide a test) and stop it on any exit, pass or fail.
clickhouse_up() {
	"$here/clickhouse.sh" stop "$ch_dir" >/dev/null
	rm -rf "$ch_dir"
	trap '"$here/clickhouse.sh" stop "$ch_dir" || true' EXIT
	"$here/clickhouse.sh" start "$ch_dir" "$ch_tcp" "$ch_http" "$ch_compression"
	export PYRAMID_TEST_CLICKHOUSE_ADDR=127.0.0.1:$ch_tcp
	export PYRAMID_TEST_REQUIRE=1
}

# run NAME CMD...: run CMD, remember NAME if it fails, carry on.
run() {
	local name=$1
	shift
	echo "==> $*"
	if ! "$@"; then
		failed+=("$name")
	fi
}

# Fuzz every target in $fuzz_targets for $1. go test -fuzz passes quietly when the pattern
# matches nothing, so first check with -list that each target exists: a renamed target must
# fail the build, not silently stop being fuzzed.
fuzz_all() {
	local fuzztime=$1 t pkg name list
	for t in $fuzz_targets; do
		pkg=${t%%:*}
		name=${t#*:}
		[[ $pkg != "$t" && -n $pkg && -n $name ]] || {
			echo "test.sh: bad FUZZ_TARGETS entry '$t' (want PKGDIR:FuzzName)" >&2
			failed+=("fuzz $t")
			continue
		}
		# Capture, not pipe into grep -q: grep quitting early would SIGPIPE go under pipefail.
		list=$(go test -list "^${name}\$" "./$pkg/" || true)
		if ! grep -qx "$name" <<<"$list"; then
			echo "test.sh: fuzz target $name not found in ./$pkg/" >&2
			failed+=("fuzz $t")
			continue
		fi
		run "fuzz $t" fuzz_one "$pkg" "$name" "$fuzztime"
	done
}

# fuzz_one PKGDIR NAME FUZZTIME: fuzz one target. Go 1.26's fuzz coordinator can fail a
# target with "context deadline exceeded" as -fuzztime ends, with no failing input (a race
# in internal/fuzz, golang/go#75804, fixed in Go 1.27). Such a run, and only such a run
# (no new file in the target's corpus directory), is tried once more; a real crash writes
# its input there and fails at once.
fuzz_one() {
	local pkg=$1 name=$2 fuzztime=$3 corpus out before after attempt
	corpus="$pkg/testdata/fuzz/$name"
	for attempt in 1 2; do
		before=$(ls "$corpus" 2>/dev/null | wc -l)
		out=$(mktemp)
		if go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "./$pkg/" 2>&1 | tee "$out"; then
			rm -f "$out"
			return 0
		fi
		after=$(ls "$corpus" 2>/dev/null | wc -l)
		if [[ $attempt == 1 && $before == "$after" ]] && grep -q '^    context deadline exceeded$' "$out"; then
			echo "test.sh: $name stopped with Go's fuzztime race (golang/go#75804) and no failing input; once more"
			rm -f "$out"
			continue
		fi
		rm -f "$out"
		return 1
	done
}

case $mode in
test)
	"$here/install.sh"
	clickhouse_up
	run "go test" go test -count=1 -timeout "$go_timeout" ./...
	fuzz_all "${FUZZTIME:-20s}"
	;;
bench)
	"$here/install.sh"
	clickhouse_up
	# The end-to-end benchmarks load millions of samples into their own servers and have
	# their own targets (bench-read, bench-rollup); this runs the package benchmarks.
	run "go test -bench" go test -count=1 -timeout "$go_timeout" -run '^$' -bench . -benchmem $(go list ./... | grep -v /e2e)
	;;
fuzz)
	"$here/install.sh"
	clickhouse_up
	fuzz_all "${FUZZTIME:-60s}"
	;;
*)
	sed -n '4,6p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
	exit 2
	;;
esac

if ((${#failed[@]})); then
	printf 'FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "PASS ($mode)"
