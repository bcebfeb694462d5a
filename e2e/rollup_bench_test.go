package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/rollup"
)

// The data set of BenchmarkRollupQuery: rollupBenchDefaultSeries series (half gauges, half
// counters) spread over rollupBenchTargets scrape targets, one sample every 15s for
// rollupBenchDefaultDays days. ROLLUP_BENCH_SERIES and ROLLUP_BENCH_DAYS shrink it for
// development.
const (
	rollupBenchDB            = "e2e_rollup_bench"
	rollupBenchGauge         = "rollup_bench_gauge"
	rollupBenchCounter       = "rollup_bench_requests_total"
	rollupBenchStepMs        = 15_000
	rollupBenchHourMs        = 3_600_000
	rollupBenchTargets       = 10
	rollupBenchDefaultDays   = 30
	rollupBenchDefaultSeries = 500
	// Samples per write request (whole scrapes of every series: 500 series x 10 scrapes at
	// full size) and requests in flight. pyramid holds each request up to its batch wait
	// (100ms) for group commit, so throughput needs several large requests at once.
	rollupBenchRequestSamples = 5_000
	rollupBenchSenders        = 16
	// The tiers: raw kept longer than the data, so that the materializer computes every unit
	// (it leaves alone units in a day that raw retention may be dropping).
	rollupBenchTiers = "raw:40d,5m:365d,1h:0"
)

// BenchmarkRollupQuery measures what the rollup tiers buy a dashboard: a query_range over
// 30 days at a 1h step of 500 series scraped every 15s, answered by a Prometheus 2.42 with
// an empty TSDB reading from pyramid, once from raw samples (86.4M of them) and once routed
// to the 1h tier, side by side in one run.
//
// Setup (not timed): a private ClickHouse, pyramid "routed" (the default routing) into which
// the 30 days are loaded through /api/v1/write, then the wait until the materializer has
// computed the 5m and 1h rollups of all of it, OPTIMIZE ... FINAL of the samples and rollups
// tables (so bytes on disk are merged figures, as old partitions end up), and pyramid "raw",
// a second replica on the same database with PYRAMID_READ_ROLLUPS=false. Each pyramid gets
// its own Prometheus with remote_read (read_recent: true) and nothing else.
//
// One sub-benchmark per expression; each op is the query through both Prometheus servers,
// in alternating order, with every answer decoded and compared: the same series and
// timestamps, and values equal (max_over_time: bit for bit, since no sample lies on an hour
// boundary and a 1h range at an hour boundary then holds exactly one 1h bucket; avg_over_time
// within 1e-9 relative, the order of the additions differs; rate within 1%, the rollup's
// points are the last sample of each bucket, see rollup/README.md). A benchmark that times
// different answers would be meaningless, so a difference fails it. Custom metrics:
//
//	raw-s/query        seconds per query answered from raw samples
//	routed-s/query     seconds per query answered by the rollup routing
//	raw/routed         the ratio of the two: the speed-up routing buys
//	raw-samples/query  samples pyramid read from ClickHouse per query (pyramid_read_samples_total)
//	routed-samples/query
//	points/query       points in the answer (series x steps)
//	max-rel-diff       the largest relative difference between a raw and a routed value
//
// It also checks that the routed pyramid counted segments of the 1h tier and that the raw one
// counted raw segments only (pyramid_read_segments_total), and logs a table of rows and
// bytes on disk per tier (GET /api/v1/status/tiers) and each server's peak memory.
//
// The full size takes about 8 minutes on a 2-core machine (3 of them loading) and 14 GiB of
// memory at its peak, mostly the raw side's Prometheus (7 GiB) and pyramid (4.5 GiB) holding
// a 43M-sample read; run it alone (`make bench-rollup`).
func BenchmarkRollupQuery(b *testing.B) {
	env := setupRollupBench(b)
	for _, q := range env.queries {
		b.Run(q.name, func(b *testing.B) { runRollupBenchQuery(b, env, q) })
	}
	env.logServers(b)
}

// rollupBenchEnv is what the sub-benchmarks share.
type rollupBenchEnv struct {
	data                 *rollupBenchData
	queries              []rollupBenchQuery
	queryStart, queryEnd int64 // the query_range window (ms), on hour boundaries
	raw, routed          *rollupBenchSide
	ch                   *clickhouseServer
	began                time.Time
	// bin and work are the pyramid binary and the working directory, for more servers.
	bin, work string
}

// rollupBenchSide is one way of answering: a pyramid and the Prometheus that reads from it.
type rollupBenchSide struct {
	name string
	pyr  *pyramidServer
	prom *prometheusServer
}

// rollupBenchQuery is one expression measured, with how closely the two answers must agree.
type rollupBenchQuery struct {
	name string
	expr string
	// relTol is the largest relative difference allowed between a raw and a routed value;
	// 0 demands the same float bits.
	relTol float64
}

// rollupBenchConfig reads the data set's size from the environment.
func rollupBenchConfig(tb testing.TB) (days, series int) {
	tb.Helper()
	get := func(name string, def int) int {
		s := os.Getenv(name)
		if s == "" {
			return def
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			tb.Fatalf("%s=%q: want a positive integer", name, s)
		}
		return n
	}
	days, series = get("ROLLUP_BENCH_DAYS", rollupBenchDefaultDays), get("ROLLUP_BENCH_SERIES", rollupBenchDefaultSeries)
	if series%2 != 0 {
		tb.Fatalf("ROLLUP_BENCH_SERIES=%d: want an even number (half gauges, half counters)", series)
	}
	return days, series
}

func (env *rollupBenchEnv) logf(tb testing.TB, format string, args ...any) {
	tb.Helper()
	tb.Logf("[%6.1fs] "+format, append([]any{time.Since(env.began).Seconds()}, args...)...)
}

// setupRollupBench starts everything, loads the data and waits for its rollups. Everything
// it starts ends with b.
func setupRollupBench(b *testing.B) *rollupBenchEnv {
	b.Helper()
	tools := requireTools(b, "bash", "clickhouse-server", "clickhouse-client", "prometheus")
	days, series := rollupBenchConfig(b)
	env := &rollupBenchEnv{began: time.Now()}
	env.data = newRollupBenchData(series, days, rollupBenchEnd(time.Now()))
	d := env.data
	// Every rate window (4h) of the query lies inside the data: where a window reaches
	// before the first sample, raw and the rollups see different parts of the first hours
	// (one counter point per bucket: a window holding one bucket has no rate at all).
	env.queryStart, env.queryEnd = d.start+4*rollupBenchHourMs, d.end
	env.queries = []rollupBenchQuery{
		{name: "max_over_time", expr: "max_over_time(" + rollupBenchGauge + "[1h])"},
		{name: "avg_over_time", expr: "avg_over_time(" + rollupBenchGauge + "[1h])", relTol: 1e-9},
		{name: "rate", expr: "rate(" + rollupBenchCounter + "[4h])", relTol: 0.01},
	}
	env.logf(b, "data: %d series (%d gauges, %d counters) x %d samples at 15s over %d days, %s .. %s, %d samples in all",
		d.series, d.series/2, d.series/2, d.perSeries, days,
		time.UnixMilli(d.start).UTC().Format(time.RFC3339), time.UnixMilli(d.end).UTC().Format(time.RFC3339), d.total())

	work := b.TempDir()
	bin := buildPyramid(b, work)
	env.bin, env.work = bin, work
	ch := startClickHouse(b)
	env.ch = ch
	env.logf(b, "ClickHouse ready on %s", ch.addr())
	settings := []string{
		"PYRAMID_TIERS=" + rollupBenchTiers,
		"PYRAMID_ROLLUP_SETTLE=1s",
		"PYRAMID_ROLLUP_INTERVAL=2s",
		"PYRAMID_READ_TIER_REFRESH=1s",
		// A raw query of all the data reads every sample: 86.4M at full size.
		"PYRAMID_READ_MAX_SAMPLES=1000000000",
		"PYRAMID_READ_MAX_SERIES=1000000",
	}
	routed := startPyramid(b, bin, ch.addr(), rollupBenchDB, work, append(settings, "PYRAMID_TEST_LOG=pyramid-routed.log")...)
	env.logf(b, "pyramid (routed) ready on %s", routed.url)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Hour)
	defer cancel()
	loadStart := time.Now()
	if err := d.remoteWrite(ctx, routed.url+"/api/v1/write", func(done int64) {
		env.logf(b, "  loaded %d of %d samples (%.0f samples/s)", done, d.total(), float64(done)/time.Since(loadStart).Seconds())
	}); err != nil {
		b.Fatalf("load the data into pyramid: %v", err)
	}
	loadTime := time.Since(loadStart)
	env.logf(b, "loaded %d samples in %.1fs: %.0f samples/s", d.total(), loadTime.Seconds(), float64(d.total())/loadTime.Seconds())

	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{ch.addr()}, Auth: clickhouse.Auth{Database: "default"},
		DialTimeout: 10 * time.Second, ReadTimeout: 30 * time.Minute})
	if err != nil {
		b.Fatalf("open ClickHouse %s: %v", ch.addr(), err)
	}
	defer conn.Close()
	matStart := time.Now()
	if err := env.waitRollups(ctx, b, routed, conn); err != nil {
		b.Fatal(err)
	}
	units, err := sumMetric(routed.url+"/metrics", "pyramid_rollup_units_total", nil)
	if err != nil {
		b.Fatalf("read pyramid's metrics: %v", err)
	}
	env.logf(b, "rollups of every unit computed %.1fs after the load ended (%.1fs after it began): %v unit computations for %d units (target x hour)",
		time.Since(matStart).Seconds(), time.Since(loadStart).Seconds(), units, d.units())

	optStart := time.Now()
	if err := rollupBenchOptimize(ctx, conn, "samples", "rollups"); err != nil {
		b.Fatal(err)
	}
	env.logf(b, "OPTIMIZE ... FINAL of samples and rollups took %.1fs", time.Since(optStart).Seconds())
	if err := env.checkStored(ctx, conn); err != nil {
		b.Fatal(err)
	}
	tiers, err := readTierStatus(routed.url)
	if err != nil {
		b.Fatal(err)
	}
	env.logTiers(b, tiers)

	// The raw replica starts only now, so that its materializer does not compete with the
	// routed one's: with every unit computed it finds nothing to do.
	rawPyr := startPyramid(b, bin, ch.addr(), rollupBenchDB, work, append(settings, "PYRAMID_READ_ROLLUPS=false", "PYRAMID_TEST_LOG=pyramid-raw.log")...)
	env.logf(b, "pyramid (raw) ready on %s", rawPyr.url)
	env.routed = &rollupBenchSide{name: "routed", pyr: routed, prom: rollupBenchPrometheus(b, tools["prometheus"], work, "prometheus-routed", routed.url)}
	env.raw = &rollupBenchSide{name: "raw", pyr: rawPyr, prom: rollupBenchPrometheus(b, tools["prometheus"], work, "prometheus-raw", rawPyr.url)}
	env.logf(b, "Prometheus reading from the routed pyramid on %s, from the raw one on %s", env.routed.prom.url, env.raw.prom.url)
	env.logf(b, "queries: query_range %s .. %s, step 1h (%d steps)",
		time.UnixMilli(env.queryStart).UTC().Format(time.RFC3339), time.UnixMilli(env.queryEnd).UTC().Format(time.RFC3339),
		(env.queryEnd-env.queryStart)/rollupBenchHourMs+1)
	return env
}

// rollupBenchEnd is where the data ends: the last hour boundary at least an hour ago, so
// that its last 1h bucket has ended well before the materializer looks.
func rollupBenchEnd(now time.Time) int64 {
	return (now.UnixMilli() - rollupBenchHourMs) / rollupBenchHourMs * rollupBenchHourMs
}

// runRollupBenchQuery is one sub-benchmark: the expression through both sides b.N times.
func runRollupBenchQuery(b *testing.B, env *rollupBenchEnv, q rollupBenchQuery) {
	ctx := context.Background()
	segsBefore := map[*rollupBenchSide]segmentCounts{}
	samplesBefore := map[*rollupBenchSide]float64{}
	for _, s := range []*rollupBenchSide{env.raw, env.routed} {
		var err error
		if segsBefore[s], err = readSegments(s.pyr.url); err != nil {
			b.Fatal(err)
		}
		if samplesBefore[s], err = sumMetric(s.pyr.url+"/metrics", "pyramid_read_samples_total", nil); err != nil {
			b.Fatalf("read the %s pyramid's metrics: %v", s.name, err)
		}
	}
	run := func(s *rollupBenchSide) (rollupBenchAnswer, time.Duration) {
		began := time.Now()
		got, err := rollupBenchRange(ctx, s.prom.url, q.expr, env.queryStart, env.queryEnd, rollupBenchHourMs)
		took := time.Since(began)
		if err != nil {
			b.Fatalf("%s through the %s pyramid: %v", q.expr, s.name, err)
		}
		return got, took
	}
	// worst is the largest relative difference between raw and routed values seen.
	var worst float64
	pair := func(rawFirst bool) (raw, routed time.Duration, points int) {
		var a, r rollupBenchAnswer
		if rawFirst {
			a, raw = run(env.raw)
			r, routed = run(env.routed)
		} else {
			r, routed = run(env.routed)
			a, raw = run(env.raw)
		}
		diff, err := rollupBenchCompare(a, r, q.relTol)
		if err != nil {
			b.Fatalf("%s: the routed answer differs from the raw one: %v", q.expr, err)
		}
		worst = max(worst, diff)
		if want := env.data.series / 2; len(a) != want {
			b.Fatalf("%s: %d series in the answer, want %d", q.expr, len(a), want)
		}
		for _, ps := range a {
			points += len(ps)
		}
		return raw, routed, points
	}
	// One untimed pair first, so both sides are measured warm (connections open, the data
	// in the page cache) and so the answers are known to agree before anything is timed.
	_, _, points := pair(true)
	runtime.GC()
	var rawTime, routedTime time.Duration
	i := 0
	for b.Loop() {
		// Alternate which side goes first, so neither always meets the other's leftovers
		// (a Prometheus still collecting the garbage of 43M samples, a busy page cache).
		raw, routed, _ := pair(i%2 == 0)
		rawTime += raw
		routedTime += routed
		i++
	}
	b.StopTimer()

	// Routing must have happened on one side and only on that one; otherwise the benchmark
	// measured something else than it claims.
	for _, s := range []*rollupBenchSide{env.raw, env.routed} {
		after, err := readSegments(s.pyr.url)
		if err != nil {
			b.Fatal(err)
		}
		served := after.minus(segsBefore[s])
		grew := served.tiers()
		b.Logf("segments the %s pyramid read, by tier/kind: %s", s.name, served.describe())
		switch {
		case s == env.routed && grew["1h"] == 0:
			b.Fatalf("the routed pyramid answered %s without the 1h tier: segments by tier %v", q.expr, grew)
		case s == env.raw && (len(grew) != 1 || grew["raw"] == 0):
			b.Fatalf("the raw pyramid answered %s with more than raw samples: segments by tier %v", q.expr, grew)
		}
		samples, err := sumMetric(s.pyr.url+"/metrics", "pyramid_read_samples_total", nil)
		if err != nil {
			b.Fatalf("read the %s pyramid's metrics: %v", s.name, err)
		}
		// The warm-up pair included: b.N + 1 queries a side.
		b.ReportMetric((samples-samplesBefore[s])/float64(b.N+1), s.name+"-samples/query")
	}
	rawS, routedS := rawTime.Seconds()/float64(b.N), routedTime.Seconds()/float64(b.N)
	b.ReportMetric(rawS, "raw-s/query")
	b.ReportMetric(routedS, "routed-s/query")
	b.ReportMetric(rawS/routedS, "raw/routed")
	b.ReportMetric(float64(points), "points/query")
	b.ReportMetric(worst, "max-rel-diff")
}

// rollupBenchData generates the data set deterministically, request by request, so that
// memory stays bounded whatever its size: only each series' current value is kept.
type rollupBenchData struct {
	series     int
	perSeries  int
	start, end int64 // the first hour boundary and the last, the data lies between them
	days       int
}

func newRollupBenchData(series, days int, end int64) *rollupBenchData {
	return &rollupBenchData{
		series:    series,
		perSeries: days * 24 * rollupBenchHourMs / rollupBenchStepMs,
		start:     end - int64(days)*24*rollupBenchHourMs,
		end:       end,
		days:      days,
	}
}

// total is the number of samples; hours the number of 1h buckets they fill.
func (d *rollupBenchData) total() int64 { return int64(d.series) * int64(d.perSeries) }
func (d *rollupBenchData) hours() int64 { return (d.end - d.start) / rollupBenchHourMs }

// units is the number of rollup work units (target x hour) the data fills.
func (d *rollupBenchData) units() int64 {
	return int64(min(rollupBenchTargets, (d.series+1)/2)) * d.hours()
}

// Series alternate gauge, counter, and go to targets in pairs, so that every target has
// both kinds.
func (d *rollupBenchData) counter(i int) bool { return i%2 == 1 }
func (d *rollupBenchData) target(i int) int   { return (i / 2) % rollupBenchTargets }

// offsetMs is where within the 15s scrape interval series i is scraped: 1 to 10s past
// the hour's start, by target as Prometheus spreads its targets. No sample lies on an hour
// boundary then, so a 1h range evaluated at one holds exactly the samples of one 1h
// bucket on both sides of the comparison, whichever of Prometheus's range rules apply.
func (d *rollupBenchData) offsetMs(i int) int64 { return 1000 + 1000*int64(d.target(i)) }

// ts is the timestamp of series i's k-th sample.
func (d *rollupBenchData) ts(i, k int) int64 {
	return d.start + d.offsetMs(i) + int64(k)*rollupBenchStepMs
}

// rollupBenchSeriesState is one series' generator: its labels, random state and value.
type rollupBenchSeriesState struct {
	labels  []prompb.Label
	counter bool
	rng     uint64
	v, inc  float64
}

// rand returns a uniform float in [0, 1) (xorshift64*).
func (s *rollupBenchSeriesState) rand() float64 {
	s.rng ^= s.rng >> 12
	s.rng ^= s.rng << 25
	s.rng ^= s.rng >> 27
	return float64((s.rng*2685821657736338717)>>11) / (1 << 53)
}

// next is the series' next sample, shaped like what exporters report, so that bytes on
// disk are realistic: gauges walk within [0, 100] in steps of 0.01 (a percentage with two
// decimals); counters count whole events, their mean increment ±5% a scrape (so that rate
// over 4h from 1h buckets is within 1% of raw, see rollup/README.md), and reset to 0
// about once a week.
func (s *rollupBenchSeriesState) next() float64 {
	u := s.rand()
	if !s.counter {
		v := s.v + (u-0.5)*2
		if v < 0 {
			v = -v
		}
		if v > 100 {
			v = 200 - v
		}
		s.v = math.Round(v*100) / 100
		return s.v
	}
	if s.rand() < 1.0/(7*24*240) {
		s.v = 0
	}
	s.v += math.Round(s.inc * (0.95 + 0.1*u))
	return s.v
}

func (d *rollupBenchData) newStates() []*rollupBenchSeriesState {
	states := make([]*rollupBenchSeriesState, d.series)
	for i := range states {
		name := rollupBenchGauge
		if d.counter(i) {
			name = rollupBenchCounter
		}
		s := &rollupBenchSeriesState{
			// Sorted by name, as Prometheus sends them.
			labels: []prompb.Label{
				{Name: "__name__", Value: name},
				{Name: "instance", Value: fmt.Sprintf("host-%02d:9100", d.target(i))},
				{Name: "job", Value: "rollup_bench"},
				{Name: "series", Value: fmt.Sprintf("%04d", i)},
			},
			counter: d.counter(i),
			rng:     uint64(i)*0x9e3779b97f4a7c15 + 1,
		}
		s.v = math.Round(100*100*s.rand()) / 100
		if s.counter {
			s.v = math.Floor(1e6 * s.rand())
			s.inc = 1 + float64(i%7)*10
		}
		states[i] = s
	}
	return states
}

// remoteWrite sends the data oldest first as snappy-compressed remote-write 1.0 requests of
// about rollupBenchRequestSamples samples, whole scrapes of every series, from rollupBenchSenders concurrent
// senders fed by one generator (the values are random walks, so they are generated in
// order), each posted with postRemoteWrite. progress is called about every 30s with the
// samples stored so far.
func (d *rollupBenchData) remoteWrite(ctx context.Context, url string, progress func(done int64)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type request struct {
		k0, k1 int
		body   []byte
	}
	reqs := make(chan request, 2*rollupBenchSenders)
	var done atomic.Int64
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	var wg sync.WaitGroup
	for range rollupBenchSenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range reqs {
				if err := postRemoteWrite(ctx, url, r.body); err != nil {
					fail(fmt.Errorf("write scrapes %d..%d of %d series: %w", r.k0, r.k1, d.series, err))
					return
				}
				done.Add(int64((r.k1 - r.k0) * d.series))
			}
		}()
	}
	stopProgress := make(chan struct{})
	var progressDone sync.WaitGroup
	progressDone.Add(1)
	go func() {
		defer progressDone.Done()
		tick := time.NewTicker(30 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				progress(done.Load())
			case <-stopProgress:
				return
			}
		}
	}()

	scrapes := max(1, rollupBenchRequestSamples/d.series)
	states := d.newStates()
	wr := prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, d.series)}
	for i, s := range states {
		wr.Timeseries[i].Labels = s.labels
		wr.Timeseries[i].Samples = make([]prompb.Sample, 0, scrapes)
	}
	var raw []byte
generate:
	for k0 := 0; k0 < d.perSeries; k0 += scrapes {
		k1 := min(k0+scrapes, d.perSeries)
		for i, s := range states {
			ts := &wr.Timeseries[i]
			ts.Samples = ts.Samples[:0]
			for k := k0; k < k1; k++ {
				ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: d.ts(i, k), Value: s.next()})
			}
		}
		n := wr.Size()
		if cap(raw) < n {
			raw = make([]byte, n)
		}
		raw = raw[:n]
		if _, err := wr.MarshalToSizedBuffer(raw); err != nil {
			fail(fmt.Errorf("marshal write request of scrapes %d..%d: %w", k0, k1, err))
			break
		}
		select {
		case reqs <- request{k0: k0, k1: k1, body: snappy.Encode(nil, raw)}:
		case <-ctx.Done():
			break generate
		}
	}
	close(reqs)
	wg.Wait()
	close(stopProgress)
	progressDone.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("write %d samples: %w", d.total(), err)
	}
	return nil
}

// waitRollups waits until every rollup tier's newest bucket is the data's last and no unit
// waits to be computed (again): a unit computed while its hour's samples were still
// arriving is marked again and recomputed, and the newest bucket alone does not show that.
func (env *rollupBenchEnv) waitRollups(ctx context.Context, b *testing.B, pyr *pyramidServer, conn driver.Conn) error {
	lastLog := time.Now()
	err := poll(2*time.Hour, func() error {
		err := rollupsComplete(ctx, pyr, conn, rollupBenchDB, env.data.end)
		if err != nil && time.Since(lastLog) > 30*time.Second {
			env.logf(b, "  waiting for rollups: %v", err)
			lastLog = time.Now()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("wait for the rollups of %d hours: %w", env.data.hours(), err)
	}
	return nil
}

// rollupBenchOptimize merges every partition of the tables with OPTIMIZE ... FINAL,
// partition by partition (one statement for a whole table would only merge one).
func rollupBenchOptimize(ctx context.Context, conn driver.Conn, tables ...string) error {
	for _, table := range tables {
		rows, err := conn.Query(ctx, "SELECT DISTINCT partition_id FROM system.parts WHERE active AND database = ? AND table = ?", rollupBenchDB, table)
		if err != nil {
			return fmt.Errorf("list the partitions of %s: %w", table, err)
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("scan a partition of %s: %w", table, err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("list the partitions of %s: %w", table, err)
		}
		for _, id := range ids {
			if err := conn.Exec(ctx, fmt.Sprintf("OPTIMIZE TABLE %s.%s PARTITION ID '%s' FINAL", rollupBenchDB, table, id)); err != nil {
				return fmt.Errorf("optimize %s partition %s: %w", table, id, err)
			}
		}
	}
	return nil
}

// checkStored checks that ClickHouse holds every sample once and one rollup row per series
// and bucket of each tier, versions collapsed; with the tables merged, the parts' row counts
// that the status endpoint reports are then these figures.
func (env *rollupBenchEnv) checkStored(ctx context.Context, conn driver.Conn) error {
	d := env.data
	var samples, series uint64
	err := conn.QueryRow(ctx, "SELECT count(), uniqExact(fingerprint) FROM "+rollupBenchDB+".samples FINAL").Scan(&samples, &series)
	if err != nil {
		return fmt.Errorf("count the stored samples: %w", err)
	}
	if samples != uint64(d.total()) || series != uint64(d.series) {
		return fmt.Errorf("ClickHouse holds %d samples of %d series, want %d of %d", samples, series, d.total(), d.series)
	}
	rows, err := conn.Query(ctx, "SELECT res, count() FROM "+rollupBenchDB+".rollups FINAL GROUP BY res ORDER BY res")
	if err != nil {
		return fmt.Errorf("count the rollup rows: %w", err)
	}
	defer rows.Close()
	got := map[int64]uint64{}
	for rows.Next() {
		var res int64
		var n uint64
		if err := rows.Scan(&res, &n); err != nil {
			return fmt.Errorf("scan a rollup count: %w", err)
		}
		got[res] = n
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count the rollup rows: %w", err)
	}
	for _, res := range []int64{5 * 60 * 1000, rollupBenchHourMs} {
		want := uint64(d.series) * uint64((d.end-d.start)/res)
		if got[res] != want {
			return fmt.Errorf("the %dms tier holds %d rows, want %d (one per series and bucket)", res, got[res], want)
		}
	}
	return nil
}

// logTiers logs rows and bytes on disk per tier, and bytes per raw sample or rollup row.
func (env *rollupBenchEnv) logTiers(tb testing.TB, tiers []rollup.TierStatus) {
	tb.Helper()
	var out strings.Builder
	tw := tabwriter.NewWriter(&out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "tier\trows\tMiB on disk\tB/row\tB/raw sample\tshare of raw bytes\t")
	var rawBytes uint64
	for _, t := range tiers {
		if t.ResolutionMs == 0 {
			rawBytes = t.BytesOnDisk
		}
	}
	samples := float64(env.data.total())
	for _, t := range tiers {
		perRow := float64(t.BytesOnDisk) / float64(max(t.Rows, 1))
		share := float64(t.BytesOnDisk) / float64(max(rawBytes, 1))
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.2f\t%.3f\t%.2f%%\t\n",
			t.Name, t.Rows, float64(t.BytesOnDisk)/(1<<20), perRow, float64(t.BytesOnDisk)/samples, 100*share)
	}
	tw.Flush()
	env.logf(tb, "tiers after OPTIMIZE ... FINAL (GET /api/v1/status/tiers; a raw row is a sample; B/raw sample is "+
		"the tier's bytes over the %d raw samples it summarises):\n%s", env.data.total(), out.String())
}

// logServers logs the peak resident memory of every server, to show what the raw reads cost.
func (env *rollupBenchEnv) logServers(tb testing.TB) {
	tb.Helper()
	if env.raw == nil {
		return
	}
	var out strings.Builder
	for _, p := range []struct {
		name string
		pid  int
	}{
		{"pyramid (routed)", env.routed.pyr.cmd.Process.Pid}, {"pyramid (raw)", env.raw.pyr.cmd.Process.Pid},
		{"prometheus (routed)", env.routed.prom.cmd.Process.Pid}, {"prometheus (raw)", env.raw.prom.cmd.Process.Pid},
	} {
		fmt.Fprintf(&out, "  %-20s %s\n", p.name, rollupBenchPeakRSS(p.pid))
	}
	if pid, err := os.ReadFile(filepath.Join(env.ch.dir, "clickhouse.pid")); err != nil {
		fmt.Fprintf(&out, "  %-20s %v\n", "clickhouse", err)
	} else if n, err := strconv.Atoi(strings.TrimSpace(string(pid))); err != nil {
		fmt.Fprintf(&out, "  %-20s parse pid %q: %v\n", "clickhouse", pid, err)
	} else {
		fmt.Fprintf(&out, "  %-20s %s\n", "clickhouse", rollupBenchPeakRSS(n))
	}
	env.logf(tb, "peak resident memory:\n%s", out.String())
}

// rollupBenchPeakRSS reads a process's peak resident set size (VmHWM) from /proc.
func rollupBenchPeakRSS(pid int) string {
	kib, err := peakRSSKiB(pid)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%.0f MiB", float64(kib)/1024)
}

// rollupBenchPrometheus runs a Prometheus 2.42 with an empty TSDB whose only data is the
// pyramid at pyramidURL. A raw query over 30 days may take longer than the default 2m query
// timeout, and the remote read as long.
func rollupBenchPrometheus(tb testing.TB, bin, work, name, pyramidURL string) *prometheusServer {
	tb.Helper()
	cfg := fmt.Sprintf("scrape_configs: []\nremote_read:\n  - url: %q\n    read_recent: true\n    remote_timeout: 30m\n", pyramidURL+"/api/v1/read")
	return startQueryPrometheus(tb, bin, work, name, filepath.Join(work, name+"-tsdb"), cfg, "--query.timeout=30m")
}

// rollupBenchAnswer is a matrix answer: each series' points by its canonical label string.
type rollupBenchAnswer map[string][]benchRangePoint

// rollupBenchRange runs a query_range and decodes the matrix. Warnings fail it: Prometheus
// turns a failed remote read into a warning and an empty answer.
func rollupBenchRange(ctx context.Context, baseURL, expr string, start, end, stepMs int64) (rollupBenchAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	form := url.Values{
		"query": {expr},
		"start": {promTime(start)},
		"end":   {promTime(end)},
		"step":  {strconv.FormatFloat(float64(stepMs)/1000, 'f', -1, 64)},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/api/v1/query_range", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", baseURL, err)
	}
	defer resp.Body.Close()
	var r benchRangeResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("decode query_range answer (%s): %w", resp.Status, err)
	}
	switch {
	case resp.StatusCode != http.StatusOK || r.Status != "success":
		return nil, fmt.Errorf("query_range %q: %s: %s", expr, resp.Status, r.Error)
	case len(r.Warnings) > 0:
		return nil, fmt.Errorf("query_range %q answered with warnings: %s", expr, strings.Join(r.Warnings, "; "))
	case r.Data.ResultType != "matrix":
		return nil, fmt.Errorf("query_range %q returned a %s, want a matrix", expr, r.Data.ResultType)
	}
	out := make(rollupBenchAnswer, len(r.Data.Result))
	for _, s := range r.Data.Result {
		out[metricKey(s.Metric)] = s.Values
	}
	return out, nil
}

// rollupBenchCompare returns the largest relative difference between a raw and a routed value
// (relative to the raw value), or an error describing how routed differs from raw: a series
// on one side only, different timestamps, or a value further than relTol (0 demands the same
// bits).
func rollupBenchCompare(raw, routed rollupBenchAnswer, relTol float64) (float64, error) {
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for k := range routed {
		if _, ok := raw[k]; !ok {
			return 0, fmt.Errorf("series %s only in the routed answer", k)
		}
	}
	var worst float64
	var worstAt string
	for _, k := range keys {
		a, r := raw[k], routed[k]
		if r == nil {
			return 0, fmt.Errorf("series %s only in the raw answer", k)
		}
		if len(a) != len(r) {
			return 0, fmt.Errorf("series %s: %d points raw, %d routed", k, len(a), len(r))
		}
		for j := range a {
			if a[j].t != r[j].t {
				return 0, fmt.Errorf("series %s point %d: at %d raw, at %d routed", k, j, a[j].t, r[j].t)
			}
			same := math.Float64bits(a[j].v) == math.Float64bits(r[j].v)
			if relTol == 0 && !same {
				return 0, fmt.Errorf("series %s at %s: raw %v, routed %v", k, time.UnixMilli(a[j].t).UTC().Format(time.RFC3339), a[j].v, r[j].v)
			}
			if same {
				continue
			}
			diff := math.Abs(a[j].v-r[j].v) / math.Abs(a[j].v)
			if math.IsNaN(diff) || diff > worst {
				worst, worstAt = diff, fmt.Sprintf("series %s at %s: raw %v, routed %v", k, time.UnixMilli(a[j].t).UTC().Format(time.RFC3339), a[j].v, r[j].v)
			}
			if math.IsNaN(diff) {
				break
			}
		}
	}
	if worst > relTol || math.IsNaN(worst) {
		return worst, fmt.Errorf("relative difference %.3g, more than %.3g allowed: %s", worst, relTol, worstAt)
	}
	return worst, nil
}
