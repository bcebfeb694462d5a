package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// BenchmarkQueryAPI measures pyramid's own PromQL API (/api/v1/query and /api/v1/query_range,
// Prometheus 3's engine over the store) against what a user of pyramid had before it: the
// same PromQL through a Prometheus 2.42, side by side in one run, every answer compared.
//
//	rollup/<function>  the data and queries of BenchmarkRollupQuery (30 days x 500 series,
//	                   max_over_time, avg_over_time, rate at a 1h step): pyramid's API
//	                   (default routing) against a Prometheus 2.42 reading the same
//	                   database through another pyramid's remote read. Goal: pyramid at
//	                   least 2x faster, with less peak memory.
//	rollup/guard_<case> a query over every series and a year at a 15s step, refused before
//	                   it runs; each op is one refusal. system.query_log must show that the
//	                   samples and rollups tables were not read.
//	raw/<query>        the data of BenchmarkRemoteRead (1,000 series x 1 day at 15s):
//	                   pyramid's API against Prometheus 2.42 answering from its own TSDB.
//	                   Goal: pyramid at most 1.5x slower.
//
// Each op of a comparison is the query through both sides, in alternating order, after one
// untimed pair; the answers must agree (see queryBenchCase.relTol), since timing different
// answers would be meaningless. Custom metrics:
//
//	pyramid-s/query, prometheus-s/query  seconds per query on each side, until the whole
//	                                     answer has arrived
//	pyramid/prometheus                   their ratio (below 1: pyramid is faster)
//	<side>-decoded-s/query               the same with the client's decoding of the
//	                                     points into Go values added, as slow for both
//	points/query                         points in the answer
//	max-rel-diff                         largest relative difference between the answers
//	<process>-peak-MiB                   peak resident memory (VmHWM, reset before the
//	                                     sub-benchmark) of each process serving the query
//	<process>-start-MiB                  its resident memory when the peak was reset: what
//	                                     it held from before, which the peak includes
//	<process>-cpu-ms/op                  its CPU time per op (both sides' queries)
//
// ROLLUP_BENCH_DAYS and ROLLUP_BENCH_SERIES shrink the rollup case's data; -bench
// 'BenchmarkQueryAPI/raw' runs the raw case alone. Run it alone
// (`make bench-query`): the full rollup case loads 86.4M samples (about 8 minutes).
func BenchmarkQueryAPI(b *testing.B) {
	b.Run("rollup", benchQueryRollup)
	b.Run("raw", benchQueryRaw)
}

// queryBenchCase is one PromQL query measured.
type queryBenchCase struct {
	name string
	expr string
	mode queryMode
	// relTol is the largest relative difference allowed between the two answers' values;
	// 0 demands the same float bits. Series and timestamps must always be the same.
	relTol float64
}

// queryBenchSide is one way of answering: the base URL of a Prometheus HTTP API, and the
// processes that serve it, whose peak memory the sub-benchmark reports.
type queryBenchSide struct {
	url   string
	procs []benchProc
	// segmentsURL is the pyramid whose pyramid_read_segments_total shows what answered.
	segmentsURL string
}

// tierCheck says what is wrong with the tiers a pyramid read for a query (segments by
// tier), or nothing.
type tierCheck func(tiers map[string]float64) string

// readTier requires the tier to have been read.
func readTier(tier string) tierCheck {
	return func(tiers map[string]float64) string {
		if tiers[tier] == 0 {
			return "no segment of the " + tier + " tier"
		}
		return ""
	}
}

// onlyRaw requires raw samples and nothing else.
func onlyRaw(tiers map[string]float64) string {
	if len(tiers) != 1 || tiers["raw"] == 0 {
		return "more than raw samples, or none"
	}
	return ""
}

// benchQueryRollup compares pyramid's API with Prometheus over remote read on the rollup
// benchmark's data, routed to the 1h tier on both sides.
func benchQueryRollup(b *testing.B) {
	env := setupRollupBench(b)
	// A pyramid of its own for the API, with the default settings but the tiers (which must
	// be the data's, or its retention would drop the oldest day): the routed one served the
	// load, which its peak memory would otherwise show.
	api := startPyramid(b, env.bin, env.ch.addr(), rollupBenchDB, env.work, "PYRAMID_TIERS="+rollupBenchTiers, "PYRAMID_TEST_LOG=pyramid-api.log")
	env.logf(b, "pyramid (API) ready on %s", api.url)
	chPID := clickhousePID(b, env.ch)
	pyr := queryBenchSide{url: api.url, segmentsURL: api.url, procs: []benchProc{{"pyramid", api.cmd.Process.Pid}}}
	prom := queryBenchSide{url: env.routed.prom.url, segmentsURL: env.routed.pyr.url, procs: []benchProc{
		{"prometheus", env.routed.prom.cmd.Process.Pid}, {"prometheus-pyramid", env.routed.pyr.cmd.Process.Pid},
		// One ClickHouse serves both sides; its peak covers both.
		{"clickhouse", chPID},
	}}
	mode := rangeOver("30d", env.queryStart, env.queryEnd, time.Hour)
	for _, q := range env.queries {
		// The same tolerances as BenchmarkRollupQuery, for other reasons: both sides read the
		// same 1h rollups, but pyramid evaluates with Prometheus 3's engine and Prometheus with
		// 2.42's. max_over_time picks a value and must match bit for bit; avg_over_time sums
		// with Kahan compensation in 3.x and plainly in 2.42 (1e-9); rate's 1% is the rollup
		// bench's bound, kept so that both benchmarks accept the same rollup answers.
		c := queryBenchCase{name: q.name, expr: q.expr, mode: mode, relTol: q.relTol}
		b.Run(q.name, func(b *testing.B) { runQueryBench(b, c, pyr, prom, readTier("1h")) })
	}
	benchQueryGuard(b, env)
}

// benchQueryRaw compares pyramid's API with Prometheus's own TSDB on the remote-read
// benchmark's day, then times the guard.
func benchQueryRaw(b *testing.B) {
	env := setupBenchRead(b)
	// The day has just been loaded: the materializer computes its rollups now, which must not
	// be billed to the queries.
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{env.chAddr}, Auth: clickhouse.Auth{Database: "default"}, DialTimeout: 10 * time.Second})
	if err != nil {
		b.Fatalf("open ClickHouse %s: %v", env.chAddr, err)
	}
	defer conn.Close()
	if err := poll(30*time.Minute, func() error {
		return rollupsComplete(context.Background(), env.pyramid, conn, benchDB, env.last+1)
	}); err != nil {
		b.Fatalf("wait for the rollups of the day: %v", err)
	}
	pyr := queryBenchSide{url: env.pyramid.url, segmentsURL: env.pyramid.url, procs: env.pyramidProcs}
	prom := queryBenchSide{url: env.promURL, procs: env.promProcs}
	// Every instant lies 500ms past a whole second and every sample on one: no sample sits on
	// the edge of a range or lookback window, where Prometheus 2.42 (closed windows) and 3.x
	// (left-open) disagree by design. The window leaves out the data's first hour: where a
	// rate's range reaches before a series' first sample, 3.x extrapolates differently from
	// 2.42 (there pyramid answers what Prometheus 3's engine answers over the same TSDB).
	start, end := env.start+time.Hour.Milliseconds()+500, env.last+500
	day := func(step time.Duration) queryMode { return rangeOver("23h", start, end, step) }
	cases := []queryBenchCase{
		// Prometheus 3 sums with Kahan compensation, 2.42 plainly: sums of 1,000 rates may
		// differ in the last bits.
		{name: "sum_rate", expr: "sum by (job) (rate(" + benchMetric + "[5m]))", mode: day(time.Minute), relTol: 1e-12},
		{name: "selector", expr: benchMetric, mode: day(time.Minute)},
		// At a 1m step: at 5m pyramid routes to its 5m tier, which this case is not about.
		{name: "max_over_time", expr: "max_over_time(" + benchMetric + "[1h])", mode: day(time.Minute)},
		{name: "instant", expr: benchMetric, mode: instantAt("end", end)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) { runQueryBench(b, c, pyr, prom, onlyRaw) })
	}
}

// runQueryBench is one comparison sub-benchmark: c through both sides b.N times. check
// judges the tiers each side's pyramid read.
func runQueryBench(b *testing.B, c queryBenchCase, pyr, prom queryBenchSide, check tierCheck) {
	ctx := context.Background()
	sides := []queryBenchSide{pyr, prom}
	segsBefore := make([]segmentCounts, len(sides))
	for i, s := range sides {
		if s.segmentsURL == "" {
			continue
		}
		var err error
		if segsBefore[i], err = readSegments(s.segmentsURL); err != nil {
			b.Fatal(err)
		}
	}
	var procs []benchProc
	for _, s := range sides {
		procs = append(procs, s.procs...)
	}
	startKiB := make([]int64, len(procs))
	for i, p := range procs {
		if err := resetPeakRSS(p.pid); err != nil {
			b.Fatalf("reset the peak memory of %s: %v", p.name, err)
		}
		var err error
		if startKiB[i], err = peakRSSKiB(p.pid); err != nil {
			b.Fatalf("read the memory of %s: %v", p.name, err)
		}
	}
	// A side's time runs until its whole answer has arrived and its envelope says success:
	// the server's work. Decoding the points into the comparison's structures is the
	// client's, as slow for both sides, and is reported apart (-decoded-s/query).
	var pyrDecoded, promDecoded time.Duration
	run := func(s queryBenchSide, decoded *time.Duration) (promResult, time.Duration) {
		began := time.Now()
		path, form := c.mode.params(c.expr)
		data, err := promAPI(ctx, s.url, path, form)
		took := time.Since(began)
		got, err := decodeQuery(data, err)
		*decoded += time.Since(began)
		if err != nil {
			b.Fatalf("%s on %s: %v", c.expr, s.url, err)
		}
		return got, took
	}
	var worst float64
	pair := func(pyrFirst bool) (pyrTime, promTime time.Duration, points int) {
		var p, q promResult
		if pyrFirst {
			p, pyrTime = run(pyr, &pyrDecoded)
			q, promTime = run(prom, &promDecoded)
		} else {
			q, promTime = run(prom, &promDecoded)
			p, pyrTime = run(pyr, &pyrDecoded)
		}
		if d := diffWithin(q, p, c.relTol); d != "" {
			b.Fatalf("%s: pyramid's answer (B) differs from Prometheus's (A):\n%s", c.expr, d)
		}
		if len(p.series) == 0 {
			b.Fatalf("%s: both answers are empty", c.expr)
		}
		worst = max(worst, maxRelDiff(q, p))
		return pyrTime, promTime, p.points()
	}
	// One untimed pair first, so that both sides are measured warm and the answers are known
	// to agree before anything is timed.
	_, _, points := pair(true)
	pyrDecoded, promDecoded = 0, 0
	runtime.GC()
	cpuBefore := make([]time.Duration, len(procs))
	for i, p := range procs {
		var err error
		if cpuBefore[i], err = benchCPUTime(p.pid); err != nil {
			b.Fatalf("read the CPU time of %s: %v", p.name, err)
		}
	}
	var pyrTotal, promTotal time.Duration
	i := 0
	for b.Loop() {
		// Alternate which side goes first, so neither always meets the other's leftovers.
		p, q, _ := pair(i%2 == 0)
		pyrTotal += p
		promTotal += q
		i++
	}
	b.StopTimer()

	for i, s := range sides {
		if s.segmentsURL == "" {
			continue
		}
		after, err := readSegments(s.segmentsURL)
		if err != nil {
			b.Fatal(err)
		}
		served := after.minus(segsBefore[i])
		b.Logf("segments read by the pyramid at %s, by tier/kind: %s", s.segmentsURL, served.describe())
		if msg := check(served.tiers()); msg != "" {
			b.Fatalf("the pyramid at %s answered %s from %s: segments by tier %v", s.segmentsURL, c.expr, msg, served.tiers())
		}
	}
	pyrS, promS := pyrTotal.Seconds()/float64(b.N), promTotal.Seconds()/float64(b.N)
	b.ReportMetric(pyrS, "pyramid-s/query")
	b.ReportMetric(promS, "prometheus-s/query")
	b.ReportMetric(pyrS/promS, "pyramid/prometheus")
	b.ReportMetric(pyrDecoded.Seconds()/float64(b.N), "pyramid-decoded-s/query")
	b.ReportMetric(promDecoded.Seconds()/float64(b.N), "prometheus-decoded-s/query")
	b.ReportMetric(float64(points), "points/query")
	b.ReportMetric(worst, "max-rel-diff")
	for i, p := range procs {
		cpu, err := benchCPUTime(p.pid)
		if err != nil {
			b.Fatalf("read the CPU time of %s: %v", p.name, err)
		}
		// Both sides' queries of each op: a process that serves both (ClickHouse in the
		// rollup case) counts for both.
		b.ReportMetric(float64((cpu-cpuBefore[i]).Microseconds())/1000/float64(b.N), p.name+"-cpu-ms/op")
		kib, err := peakRSSKiB(p.pid)
		if err != nil {
			b.Fatalf("read the peak memory of %s: %v", p.name, err)
		}
		b.ReportMetric(float64(kib)/1024, p.name+"-peak-MiB")
		b.ReportMetric(float64(startKiB[i])/1024, p.name+"-start-MiB")
	}
}

// maxRelDiff is the largest relative difference between the values of a and b at the same
// series and timestamp (relative to the larger magnitude); diffWithin has checked that
// they have the same series and points.
func maxRelDiff(a, b promResult) float64 {
	var worst float64
	for k, ps := range a.series {
		qs := b.series[k]
		for j := range min(len(ps), len(qs)) {
			if ps[j] == qs[j] {
				continue
			}
			x, errX := strconv.ParseFloat(ps[j].v, 64)
			y, errY := strconv.ParseFloat(qs[j].v, 64)
			if errX != nil || errY != nil {
				continue
			}
			if d := math.Abs(x-y) / math.Max(math.Abs(x), math.Abs(y)); d > worst {
				worst = d
			}
		}
	}
	return worst
}

// guardCase is a query the guard must refuse.
type guardCase struct {
	name string
	mode queryMode
	expr string
}

// benchQueryGuard times refusals of queries over every series and a year at a 15s step, on
// the rollup case's data. They go to a pyramid of their own connected as ClickHouse's
// query_logged user, whose every query lands in system.query_log: the samples and rollups
// tables must appear in none of them. Its materializer and tier refresh run once an hour, so
// what the log shows in a timed window is the refused queries' own doing.
func benchQueryGuard(b *testing.B, env *rollupBenchEnv) {
	settings := []string{"PYRAMID_TIERS=" + rollupBenchTiers, "PYRAMID_CLICKHOUSE_USER=query_logged",
		"PYRAMID_ROLLUP_INTERVAL=1h", "PYRAMID_READ_TIER_REFRESH=1h", "PYRAMID_TEST_LOG=pyramid-guard.log"}
	// The default limit (PYRAMID_QUERY_MAX_SAMPLES), unless the data has been shrunk below it:
	// a year over all of it must still pass the limit.
	if limit := int64(50_000_000); env.data.total() <= limit {
		settings = append(settings, fmt.Sprintf("PYRAMID_QUERY_MAX_SAMPLES=%d", env.data.total()/2))
		env.logf(b, "the data holds fewer samples than the default query limit: the guard's pyramid runs with %s", settings[len(settings)-1])
	}
	guard := startPyramid(b, env.bin, env.ch.addr(), rollupBenchDB, env.work, settings...)
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{env.ch.addr()}, Auth: clickhouse.Auth{Database: "default"}, DialTimeout: 10 * time.Second})
	if err != nil {
		b.Fatalf("open ClickHouse %s: %v", env.ch.addr(), err)
	}
	b.Cleanup(func() { conn.Close() })
	log := &queryLog{conn: conn, tables: regexp.MustCompile(`\b` + rollupBenchDB + `\.(samples|rollups)\b`)}

	now := time.Now().UnixMilli()
	yearAgo := now - 365*24*time.Hour.Milliseconds()
	all := `count({__name__=~".+"})`
	cases := []guardCase{
		// The query: 2.1M points per series. Prometheus would refuse it for its
		// 11,000 points; pyramid estimates first, so the answer says what it would read.
		{name: "guard_range_15s", mode: rangeOver("year", yearAgo, now, 15*time.Second), expr: all},
		// The same year at a 15s step as an instant query with a subquery, which no points
		// limit covers.
		{name: "guard_subquery_15s", mode: instantAt("now", now), expr: "count_over_time(" + all + "[365d:15s])"},
	}
	control := queryBenchCase{expr: "count(" + rollupBenchGauge + ")", mode: instantAt("end", env.queryEnd)}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) { runGuardBench(b, guard, log, c, control) })
	}
}

// runGuardBench times refusals of c and checks, from system.query_log and pyramid's own
// counter, that none of them read samples; then that an accepted query does (so that the
// check could fail).
func runGuardBench(b *testing.B, guard *pyramidServer, log *queryLog, c guardCase, control queryBenchCase) {
	ctx := context.Background()
	refuse := func() {
		status, env, err := postAPI(ctx, guard.url, c.mode, c.expr)
		if err != nil {
			b.Fatal(err)
		}
		// The estimate in the message is what tells the user what to change.
		if status != http.StatusUnprocessableEntity || !strings.Contains(env.Error, "would read about") {
			b.Fatalf("%s: %d %s: %s; want 422 with the estimate", c.expr, status, env.ErrorType, env.Error)
		}
	}
	// One untimed refusal first: the first query of a pyramid learns the tiers' extents, which
	// scans the oldest and newest partition of each tier for its bounds.
	refuse()
	_, env, _ := postAPI(ctx, guard.url, c.mode, c.expr)
	b.Logf("%s answers %s: %s", c.expr, env.ErrorType, env.Error)
	samplesBefore, err := sumMetric(guard.url+"/metrics", "pyramid_read_samples_total", nil)
	if err != nil {
		b.Fatalf("read pyramid's metrics: %v", err)
	}
	began := nextSecond()
	for b.Loop() {
		refuse()
	}
	b.StopTimer()
	ended := nextSecond()
	queries, err := log.between(ctx, began, ended)
	if err != nil {
		b.Fatal(err)
	}
	var rows uint64
	for _, q := range queries {
		rows += q.readRows
		if q.touches {
			b.Fatalf("%s: while refusing it pyramid read a samples table (%d rows): %s", c.expr, q.readRows, q.text)
		}
	}
	if len(queries) == 0 {
		b.Fatalf("%s: system.query_log holds no query of pyramid's while it estimated %d queries: the check sees nothing", c.expr, b.N+1)
	}
	samplesAfter, err := sumMetric(guard.url+"/metrics", "pyramid_read_samples_total", nil)
	if err != nil {
		b.Fatalf("read pyramid's metrics: %v", err)
	}
	if samplesAfter != samplesBefore {
		b.Fatalf("%s: pyramid_read_samples_total went from %v to %v while refusing it", c.expr, samplesBefore, samplesAfter)
	}

	// The control: a query the guard admits reads the samples table, and the log shows it.
	began = nextSecond()
	if _, err := runQuery(ctx, guard.url, control.expr, control.mode); err != nil {
		b.Fatal(err)
	}
	admitted, err := log.between(ctx, began, nextSecond())
	if err != nil {
		b.Fatal(err)
	}
	seen := false
	for _, q := range admitted {
		seen = seen || q.touches
	}
	if !seen {
		b.Fatalf("%s, admitted, left no read of a samples table in system.query_log (%d queries): the check sees nothing", control.expr, len(admitted))
	}
	b.ReportMetric(float64(len(queries))/float64(b.N), "clickhouse-queries/op")
	b.ReportMetric(float64(rows)/float64(b.N), "clickhouse-rows-read/op")
}

// postAPI posts a query and returns the status and envelope of whatever the answer is.
func postAPI(ctx context.Context, baseURL string, mode queryMode, expr string) (int, apiEnvelope, error) {
	path, form := mode.params(expr)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+path, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, apiEnvelope{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, apiEnvelope{}, fmt.Errorf("post %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, apiEnvelope{}, fmt.Errorf("read the answer of %s: %w", path, err)
	}
	var env apiEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return 0, apiEnvelope{}, fmt.Errorf("%s answered %s with no API envelope: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return resp.StatusCode, env, nil
}

// nextSecond waits for the next whole second and returns it: system.query_log records
// query start times in whole seconds, so windows that begin and end on one keep the
// queries before and after out.
func nextSecond() time.Time {
	next := time.Now().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(next))
	return next
}

// queryLog reads the queries of ClickHouse's query_logged user from system.query_log.
type queryLog struct {
	conn   driver.Conn
	tables *regexp.Regexp
}

// loggedQuery is one finished (or failed) query (type 1 is QueryStart, a UInt8 on 18.16); touches says it names a table in tables.
type loggedQuery struct {
	text     string
	readRows uint64
	touches  bool
}

// between returns the queries that started in [from, to).
func (l *queryLog) between(ctx context.Context, from, to time.Time) ([]loggedQuery, error) {
	if err := l.conn.Exec(ctx, "SYSTEM FLUSH LOGS"); err != nil {
		return nil, fmt.Errorf("flush ClickHouse's logs: %w", err)
	}
	rows, err := l.conn.Query(ctx, "SELECT query, read_rows FROM system.query_log WHERE user = 'query_logged'"+
		" AND type != 1 AND query_start_time >= toDateTime(?) AND query_start_time < toDateTime(?)", from.Unix(), to.Unix())
	if err != nil {
		return nil, fmt.Errorf("read system.query_log: %w", err)
	}
	defer rows.Close()
	var out []loggedQuery
	for rows.Next() {
		var q loggedQuery
		if err := rows.Scan(&q.text, &q.readRows); err != nil {
			return nil, fmt.Errorf("scan system.query_log: %w", err)
		}
		q.touches = l.tables.MatchString(q.text)
		out = append(out, q)
	}
	return out, rows.Err()
}

// clickhousePID reads the pid of a private ClickHouse server.
func clickhousePID(tb testing.TB, ch *clickhouseServer) int {
	tb.Helper()
	raw, err := os.ReadFile(ch.dir + "/clickhouse.pid")
	if err != nil {
		tb.Fatalf("read ClickHouse's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		tb.Fatalf("parse ClickHouse's pid %q: %v", raw, err)
	}
	return pid
}

// resetPeakRSS sets a process's peak resident set size (VmHWM) to its current one, so that
// the peak read afterwards is that of what ran in between (Linux's /proc/<pid>/clear_refs);
// read right after, the peak is the current size.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// peakRSSKiB reads a process's peak resident set size (VmHWM) from /proc, in KiB.
func peakRSSKiB(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
