#!/usr/bin/awk -f
# Summarise BenchmarkQueryAPI output (go test -bench lines): per case the seconds per query
# of pyramid's API and of Prometheus 2.42, their ratio against the issue's goal, and the peak
# memory of each side; then the guard's refusals. Usage: bench-query-ratios.awk FILE...

# BenchmarkQueryAPI/GROUP/CASE-P  ITERS  V ns/op  V unit  V unit ...
/^BenchmarkQueryAPI\/[a-z]+\/[a-z0-9_]+(-[0-9]+)?[ \t]/ {
	name = $1
	sub(/-[0-9]+$/, "", name)
	split(name, part, "/")
	key = part[2] "/" part[3]
	delete v
	for (i = 3; i < NF; i += 2) v[$(i + 1)] = $i
	if (part[3] ~ /^guard_/) {
		guard[++nguard] = sprintf("  %-20s %10.1f ms %14.2f %16.0f", part[3], v["ns/op"] / 1e6, v["clickhouse-queries/op"], v["clickhouse-rows-read/op"])
		next
	}
	goal = (part[2] == "rollup") ? 0.5 : 1.5
	ratio = v["pyramid/prometheus"]
	promSide = mem("prometheus")
	# Prometheus over remote read needs the pyramid that serves it as well.
	if ("prometheus-pyramid-peak-MiB" in v) promSide = promSide " + " mem("prometheus-pyramid")
	decoded = "-"
	if (v["prometheus-decoded-s/query"] > 0) decoded = sprintf("%.2fx", v["pyramid-decoded-s/query"] / v["prometheus-decoded-s/query"])
	rows[++n] = sprintf("  %-22s %9.3f %12.3f %9.2fx %7s %4s %9s %12s %22s %12s %9.2g",
		key, v["pyramid-s/query"], v["prometheus-s/query"], ratio, "<=" goal "x", (ratio <= goal) ? "yes" : "NO", decoded,
		mem("pyramid"), promSide, mem("clickhouse"), v["max-rel-diff"])
	cpu[n] = sprintf("  %-22s %12s %12s %19s %12s", key, ms("pyramid"), ms("prometheus"), ms("prometheus-pyramid"), ms("clickhouse"))
}

# mem is a process's peak MiB and, in parentheses, what it held when the case began.
function mem(proc) {
	if (!((proc "-peak-MiB") in v)) return "-"
	return sprintf("%.0f (%.0f)", v[proc "-peak-MiB"], v[proc "-start-MiB"])
}

function ms(proc) { return ((proc "-cpu-ms/op") in v) ? sprintf("%.0f", v[proc "-cpu-ms/op"]) : "-" }

END {
	if (n == 0 && nguard == 0) {
		print "bench-query-ratios: no BenchmarkQueryAPI results found" > "/dev/stderr"
		exit 1
	}
	if (n > 0) {
		print "Seconds per query and peak memory (MiB, VmHWM during the case), pyramid's API against Prometheus 2.42"
		print "(rollup: reading pyramid through remote read, its MiB + that pyramid's; raw: its own TSDB); same run:"
		printf "  %-22s %9s %12s %10s %7s %4s %9s %12s %22s %12s %9s\n", "case", "pyramid s", "prometheus s", "ratio", "goal", "met", "decoded", "pyramid", "prometheus", "clickhouse", "max diff"
		for (j = 1; j <= n; j++) print rows[j]
		print "ratio = pyramid / prometheus, each until its whole answer arrived; decoded = the same ratio with the"
		print "client's decoding of the points added. MiB: peak (held when the case began). clickhouse serves both sides in the"
		print "rollup case, pyramid alone in the raw one."
		print ""
		print "CPU ms per op (one query on each side) of each process:"
		printf "  %-22s %12s %12s %19s %12s\n", "case", "pyramid", "prometheus", "prometheus-pyramid", "clickhouse"
		for (j = 1; j <= n; j++) print cpu[j]
	}
	if (nguard > 0) {
		print ""
		print "Guard: a year over every series at a 15s step, refused (time per refusal, ClickHouse queries and rows read per refusal):"
		printf "  %-20s %13s %14s %16s\n", "case", "per refusal", "CH queries", "CH rows read"
		for (j = 1; j <= nguard; j++) print guard[j]
	}
}
