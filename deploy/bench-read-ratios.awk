#!/usr/bin/awk -f
# Summarise BenchmarkRemoteRead output (go test -bench lines) as ratios, pyramid over
# Prometheus, for each series count and response type:
#   vs same     pyramid's time over Prometheus's for the same protocol (samples, streamed),
#               or, for query_range, Prometheus reading pyramid over Prometheus reading its TSDB
#   vs PromQL   pyramid's time over Prometheus's /api/v1/query_range of the same selector
# plus the response bytes on the wire per sample of each. Usage: bench-read-ratios.awk FILE...

# BenchmarkRemoteRead/series=N/STORE/TYPE-P  ITERS  V ns/op  V unit  V unit ...
/^BenchmarkRemoteRead\/series=[0-9]+\/[a-z]+\/[a-z_]+(-[0-9]+)?[ \t]/ {
	name = $1
	sub(/-[0-9]+$/, "", name)
	split(name, part, "/")
	n = part[2]
	sub(/^series=/, "", n)
	key = n SUBSEP part[3] SUBSEP part[4]
	for (i = 3; i < NF; i += 2) {
		if ($(i + 1) == "ns/op") ns[key] = $i
		if ($(i + 1) == "wire-B/sample") wire[key] = $i
		if ($(i + 1) == "ttfb-ms/op") ttfb[key] = $i
		if ($(i + 1) ~ /-cpu-ms\/op$/) {
			proc = $(i + 1)
			sub(/-cpu-ms\/op$/, "", proc)
			cpu[key, proc] = $i
		}
	}
	if (!(n in seen)) {
		seen[n] = 1
		order[++count] = n
	}
}

function ms(k) { return (k in ns) ? sprintf("%.1f", ns[k] / 1e6) : "-" }
function b(k) { return (k in wire) ? sprintf("%.2f", wire[k]) : "-" }
function ratio(a, c) { return (a in ns && c in ns && ns[c] > 0) ? sprintf("%.2fx", ns[a] / ns[c]) : "-" }

END {
	if (count == 0) {
		print "bench-read-ratios: no BenchmarkRemoteRead results found" > "/dev/stderr"
		exit 1
	}
	fmt = "%-7s %-12s %12s %14s %9s %10s %11s %14s\n"
	printf fmt, "series", "type", "pyramid ms", "prometheus ms", "vs same", "vs PromQL", "pyramid B/s", "prometheus B/s"
	for (j = 1; j <= count; j++) {
		n = order[j]
		anchor = n SUBSEP "prometheus" SUBSEP "query_range"
		split("samples streamed query_range", types, " ")
		for (t = 1; t <= 3; t++) {
			p = n SUBSEP "pyramid" SUBSEP types[t]
			q = n SUBSEP "prometheus" SUBSEP types[t]
			printf fmt, n, types[t], ms(p), ms(q), ratio(p, q), ratio(p, anchor), b(p), b(q)
		}
	}
	print "B/s = response bytes on the wire per sample. pyramid query_range = Prometheus 2.42 answering"
	print "the PromQL with remote_read from pyramid (it asks for SAMPLES); its bytes are its JSON."

	print ""
	print "Where the time goes: ms/op, time to first byte, and CPU ms per op of each process:"
	cfmt = "%-7s %-24s %10s %9s %9s %11s %11s %9s\n"
	printf cfmt, "series", "case", "ms/op", "ttfb", "pyramid", "clickhouse", "prometheus", "client"
	split("pyramid prometheus", stores, " ")
	for (j = 1; j <= count; j++) {
		n = order[j]
		for (s = 1; s <= 2; s++) {
			for (t = 1; t <= 3; t++) {
				k = n SUBSEP stores[s] SUBSEP types[t]
				if (!(k in ns)) continue
				printf cfmt, n, stores[s] "/" types[t], ms(k), num(ttfb, k), c(k, "pyramid"), c(k, "clickhouse"), c(k, "prometheus"), c(k, "client")
			}
		}
	}
}

function num(arr, k) { return (k in arr) ? sprintf("%.1f", arr[k]) : "-" }
function c(k, proc) { return ((k, proc) in cpu) ? sprintf("%.0f", cpu[k, proc]) : "-" }
