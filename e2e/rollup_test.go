package e2e

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// The data set of TestRollupReadMatchesPrometheus: accuracySeriesCount series scraped every
// accuracyScrapeMs for accuracyHours hours, every sample accuracyOffsetMs past a multiple of
// the scrape interval.
const (
	accuracyDB       = "e2e_rollup"
	accuracyJob      = "e2e_rollup"
	accuracyGauge    = "e2e_rollup_gauge"
	accuracyCounter  = "e2e_rollup_requests_total"
	accuracyJumps    = "e2e_rollup_jumps_total"
	accuracyScrapeMs = 15_000
	accuracyOffsetMs = 7_000
	accuracyHours    = 48
	accuracyHourMs   = 3_600_000
	accuracyMinuteMs = 60_000
)

// TestRollupReadMatchesPrometheus checks that PromQL answered through remote read from
// pyramid's rollup tiers stays within the error the routing rules document (rollup/README.md,
// rollup/points.go) of Prometheus's own answer from raw samples.
//
// Two days of generated gauges and counters go into two stores: a Prometheus 2.42 TSDB
// written by promtool (Prometheus A, the reference), and pyramid through its remote write.
// Once pyramid's materializer has computed every 5m and 1h bucket, Prometheus B, with an
// empty TSDB and pyramid as its remote-read endpoint, answers the same range queries as A,
// and every point is compared: max_over_time and min_over_time bit for bit, sum_over_time
// within float rounding, avg_over_time within float rounding (regular scrapes put as many
// samples in every bucket), rate and increase within 1% (ranges of at least four buckets),
// and count_over_time, which no rollup answers, bit for bit. Windows that begin days before
// the data (a week of a two-day history, and instant ranges reaching before the first
// sample) must be answered bit for bit at steps finer than every tier. Both answers must also have the
// same series and the same timestamps. pyramid's pyramid_read_segments_total shows, query by
// query, that the tier and aggregate the rules name really served it.
//
// The exactness needs two things the test arranges. Evaluations are on bucket boundaries
// (step and start multiples of the resolution), as Grafana aligns them. And no sample lies
// exactly on a boundary: Prometheus 2 selects [t-r, t], closed at both ends, so a sample at
// t would be in raw's range but belongs to the bucket after t. Every sample is 7s past a
// multiple of 15s.
func TestRollupReadMatchesPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of about half a minute; skipped in -short mode")
	}
	tools := requireTools(t, "bash", "clickhouse-server", "clickhouse-client", "prometheus", "promtool")
	ch := startClickHouse(t)
	t.Logf("ClickHouse ready on %s", ch.addr())
	checkRollupAccuracy(t, tools, ch.addr())
}

// checkRollupAccuracy is TestRollupReadMatchesPrometheus on ClickHouse at chAddr (a
// comma-separated list of servers for a cluster); env adds pyramid settings.
func checkRollupAccuracy(t *testing.T, tools map[string]string, chAddr string, env ...string) {
	t.Helper()
	began := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("[%5.1fs] "+format, append([]any{time.Since(began).Seconds()}, args...)...)
	}
	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	data := generateAccuracyData(accuracyEnd(time.Now()))
	logf("generated %d series, %d samples, %s .. %s", len(data.series), data.samples(),
		time.UnixMilli(data.start).UTC().Format(time.RFC3339), time.UnixMilli(data.end).UTC().Format(time.RFC3339))

	// Prometheus A: the data as TSDB blocks written by Prometheus's own promtool, the
	// answer from raw that pyramid is held to.
	omPath := filepath.Join(work, "data.om")
	if err := data.writeOpenMetrics(omPath); err != nil {
		t.Fatalf("write OpenMetrics: %v", err)
	}
	tsdbA := filepath.Join(work, "prometheus-a-tsdb")
	if _, err := createBlocks(ctx, tools["promtool"], omPath, tsdbA); err != nil {
		t.Fatal(err)
	}
	promA := startQueryPrometheus(t, tools["prometheus"], work, "prometheus-a", tsdbA, "scrape_configs: []\n")
	logf("Prometheus A ready on %s with promtool's blocks", promA.url)

	// pyramid with the default tiers, computing rollups of buckets that ended a second ago
	// every second, and relearning every second which range each tier holds.
	bin := buildPyramid(t, work)
	pyr := startPyramid(t, bin, chAddr, accuracyDB, work, append([]string{
		"PYRAMID_TIERS=raw:30d,5m:365d,1h:0",
		"PYRAMID_ROLLUP_SETTLE=1s",
		"PYRAMID_ROLLUP_INTERVAL=1s",
		"PYRAMID_READ_TIER_REFRESH=1s",
	}, env...)...)
	logf("pyramid ready on %s", pyr.url)
	if err := data.remoteWrite(ctx, pyr.url+"/api/v1/write"); err != nil {
		t.Fatalf("remote-write the data to pyramid: %v", err)
	}
	logf("remote-wrote %d samples to pyramid", data.samples())
	waitAccuracyRollups(t, ctx, pyr, chAddr, data)
	logf("every 5m and 1h bucket is computed")
	// Reads route by what they last learnt of the tiers, at most PYRAMID_READ_TIER_REFRESH
	// ago; after two of those they know the rollups are complete.
	time.Sleep(2500 * time.Millisecond)

	promB := startRemoteReader(t, tools["prometheus"], work, pyr.url)
	logf("Prometheus B ready on %s, reading from pyramid", promB.url)

	// Both stores hold every sample: count_over_time reads raw on both sides.
	total := fmt.Sprintf(`sum(count_over_time({job=%q}[%dh]))`, accuracyJob, accuracyHours+1)
	for _, s := range []struct {
		name, url string
	}{{"A", promA.url}, {"B", promB.url}} {
		r, err := runQuery(ctx, s.url, total, instantAt("end of data", data.end))
		if err != nil {
			t.Fatalf("query %s on %s: %v", total, s.name, err)
		}
		got := "nothing"
		if ps := r.series["{}"]; len(ps) == 1 {
			got = ps[0].v
		}
		if want := strconv.Itoa(data.samples()); got != want {
			t.Fatalf("%s answers %s = %s, want %s: it does not hold all the data", s.name, total, got, want)
		}
	}
	logf("A and B both count %d samples", data.samples())

	segmentsBefore, err := readSegments(pyr.url)
	if err != nil {
		t.Fatalf("read pyramid's metrics: %v", err)
	}
	var (
		table       strings.Builder
		differences int
	)
	fmt.Fprintf(&table, "%-52s %-7s %6s %6s %9s %19s  %-22s %s\n", "query", "mode", "series", "points", "max error", "around resets", "served by", "result")
	for _, q := range accuracyQueries(data) {
		a, err := runQuery(ctx, promA.url, q.expr, q.mode)
		if err != nil {
			t.Errorf("query %s (%s) on A: %v", q.expr, q.mode.name, err)
			continue
		}
		before, err := readSegments(pyr.url)
		if err != nil {
			t.Fatalf("read pyramid's metrics: %v", err)
		}
		b, err := runQuery(ctx, promB.url, q.expr, q.mode)
		if err != nil {
			t.Errorf("query %s (%s) on B: %v", q.expr, q.mode.name, err)
			continue
		}
		after, err := readSegments(pyr.url)
		if err != nil {
			t.Fatalf("read pyramid's metrics: %v", err)
		}
		status := "ok"
		if a.points() == 0 {
			// Two empty answers would compare equal and prove nothing.
			t.Errorf("query %s (%s): A answers nothing, so the comparison would pass vacuously", q.expr, q.mode.name)
			status = "ERROR"
		}
		c := compareAccuracy(a, b, func(key string, ts int64) accuracyTolerance { return q.tolerance(data, key, ts) })
		if len(c.problems) > 0 {
			differences++
			status = "DIFF"
			t.Errorf("query %s (%s, %s): B (remote read from pyramid) is not within %s of A (Prometheus TSDB); %d of %d points differ:\n%s",
				q.expr, q.mode.name, q.mode.describe(), q.allowed, len(c.problems), c.points, c.report())
		}
		served := after.minus(before)
		if err := q.checkServed(served); err != nil {
			status = "ROUTING"
			t.Errorf("query %s (%s): %v", q.expr, q.mode.name, err)
		}
		// pyramid's own query API routes the same way from its engine's hints, and must
		// hold the same bounds.
		apiStatus := "ok"
		p, err := runQuery(ctx, pyr.url, q.expr, q.mode)
		if err == nil {
			var afterAPI segmentCounts
			if afterAPI, err = readSegments(pyr.url); err != nil {
				t.Fatalf("read pyramid's metrics: %v", err)
			}
			if err := q.checkServed(afterAPI.minus(after)); err != nil {
				apiStatus = "ROUTING"
				t.Errorf("query %s (%s) on pyramid's API: %v", q.expr, q.mode.name, err)
			}
		}
		if err != nil {
			apiStatus = "ERROR"
			t.Errorf("query %s (%s) on pyramid's API: %v", q.expr, q.mode.name, err)
		} else if cp := compareAccuracy(a, p, func(key string, ts int64) accuracyTolerance { return q.tolerance(data, key, ts) }); len(cp.problems) > 0 {
			differences++
			apiStatus = "DIFF"
			t.Errorf("query %s (%s, %s): pyramid's API is not within %s of A (Prometheus TSDB); %d of %d points differ:\n%s",
				q.expr, q.mode.name, q.mode.describe(), q.allowed, len(cp.problems), cp.points, cp.report())
		}
		status += "/" + apiStatus
		aroundResets := "-"
		if c.widened > 0 {
			aroundResets = fmt.Sprintf("%.3g (%d points)", c.maxWide, c.widened)
		}
		fmt.Fprintf(&table, "%-52s %-7s %6d %6d %9.3g %19s  %-22s %s\n", q.expr, q.mode.name, len(a.series), c.points, c.maxErr, aroundResets, served.describe(), status)
	}
	t.Logf("A vs B (and, after the slash in the result, vs pyramid's own API), query by query (errors relative to the larger answer, for sums and averages to the size of their terms; around resets: rate points whose range holds a reset, allowed scrape/range more):\n%s", table.String())
	logf("%d queries differ beyond the documented error", differences)

	// The routing must have reached both rollup tiers; without it every answer above would
	// be raw's and the comparison would prove nothing about rollups.
	segmentsAfter, err := readSegments(pyr.url)
	if err != nil {
		t.Fatalf("read pyramid's metrics: %v", err)
	}
	if len(segmentsAfter) == 0 {
		t.Errorf("pyramid's /metrics has no pyramid_read_segments_total: its remote reads are not routed")
	}
	byTier := segmentsAfter.minus(segmentsBefore).tiers()
	for _, tier := range []string{"1h", "5m"} {
		if byTier[tier] == 0 {
			t.Errorf("pyramid served no segment of the queries from the %s tier", tier)
		}
	}

	accuracyControls(t, ctx, promA.url, promB.url, data)
	logf("done")
}

// accuracyEnd picks the end of the data: an hour boundary at least two hours ago, so that
// no store could be answering from memory and every bucket has long ended.
func accuracyEnd(now time.Time) int64 {
	return (now.UnixMilli() - 2*accuracyHourMs) / accuracyHourMs * accuracyHourMs
}

// accuracySeries is one generated series. Timestamps are in ms; resets are the timestamps
// of samples lower than the one before (counters only).
type accuracySeries struct {
	labels    labels.Labels
	key       string // the labels without __name__, as functions over the series return them
	counter   bool
	ts        []int64
	values    []float64
	resets    []int64
	magnitude float64 // the largest |value|, the scale of the rounding of its sums
}

// accuracyData is the generated data: samples from start+7s to end-8s, start and end on
// hour boundaries.
type accuracyData struct {
	start, end     int64
	gapFrom, gapTo int64 // the gappy gauge has no samples in [gapFrom, gapTo)
	series         []*accuracySeries
	byKey          map[string]*accuracySeries
}

func (d *accuracyData) samples() int {
	n := 0
	for _, s := range d.series {
		n += len(s.ts)
	}
	return n
}

// accuracyShapes are the series: gauges, counters, and one counter under its own name that
// the asserted queries leave out.
//
// Gauges: a wave crossing zero, a negative one, spikes up and down lasting one sample,
// integer steps, arbitrary doubles in [0, 1), values around 1e12 (where sums round), and
// one with a gap of several hours whose edges lie inside 5m buckets.
//
// Counters: their rate steady to ±5% from scrape to scrape (the condition of the
// documented 1%), with integer and with inexact fractional increments; one that restarts
// twice inside buckets, and one that restarts twice exactly as a bucket begins (between two
// 5m buckets inside an hour, then between two 1h buckets), so that the reset falls between
// two rollup points' buckets rather than inside one. A restarted counter starts again with
// what it counted since the restart, less than a scrape interval's increase.
//
// The jump counter drops to 30% of its value instead. Prometheus reads the value after a
// drop as counted since a restart, so on raw this is an increase of 30% of the counter
// within one scrape: the rate changes abruptly, outside the ±5% the 1% promise assumes.
// accuracyControls shows what that costs.
var accuracyShapes = []struct {
	name, metric string
}{
	{"wave", accuracyGauge}, {"negative", accuracyGauge}, {"spiky", accuracyGauge}, {"steps", accuracyGauge},
	{"fraction", accuracyGauge}, {"huge", accuracyGauge}, {"gappy", accuracyGauge},
	{"steady", accuracyCounter}, {"integer", accuracyCounter}, {"restart", accuracyCounter},
	{"boundary", accuracyCounter}, {"fractional", accuracyCounter},
	{"jump", accuracyJumps},
}

// generateAccuracyData builds the data deterministically: the same values in every run,
// only the timestamps move with the clock. Values are functions of the sample index, not of
// the time.
func generateAccuracyData(end int64) *accuracyData {
	const h, m = accuracyHourMs, accuracyMinuteMs
	start := end - accuracyHours*h
	d := &accuracyData{
		start: start, end: end,
		gapFrom: start + 21*h + m + 53_000, gapTo: start + 25*h + 47*m + 12_000,
		byKey: map[string]*accuracySeries{},
	}
	// A reset applies to the first sample at or after its time.
	resetsAt := map[string][]int64{
		"restart":  {start + 22*h + 13*m, start + 40*h + 31*m},
		"boundary": {start + 23*h + 50*m, start + 35*h},
		"jump":     {start + 23*h + 48*m, start + 35*h},
	}
	n := int((end - start) / accuracyScrapeMs)
	for i, shape := range accuracyShapes {
		s := &accuracySeries{
			// Three targets, host-4 to host-6, whose hashes put them on both shards of
			// TestClusterRollupReadMatchesPrometheus's 2-shard cluster.
			labels: labels.FromStrings("__name__", shape.metric, "instance", fmt.Sprintf("host-%d:9100", 4+i%3),
				"job", accuracyJob, "shape", shape.name),
			counter: shape.metric != accuracyGauge,
		}
		s.key = metricKey(s.labels.DropMetricName().Map())
		rng := rand.New(rand.NewPCG(uint64(i), 0x5eed))
		noise := func(amplitude float64) float64 { return amplitude * (2*rng.Float64() - 1) }
		v := map[string]float64{"steady": 5e5 + 1000*rng.Float64(), "integer": 1e6, "restart": 2e5,
			"boundary": 3e5, "fractional": 1e6 + 0.1, "jump": 8e5}[shape.name]
		level := 0.0
		resets := resetsAt[shape.name]
		for k := range n {
			ts := start + accuracyOffsetMs + int64(k)*accuracyScrapeMs
			phase := func(periodMs int64) float64 {
				return 2 * math.Pi * float64(int64(k)*accuracyScrapeMs%periodMs) / float64(periodMs)
			}
			switch shape.name {
			case "wave":
				v = 10*math.Sin(phase(90*m)) + noise(0.5)
			case "negative":
				v = -1300 - 300*math.Sin(phase(7*h)) + noise(20)
			case "spiky":
				v = 5 + noise(1)
				switch rng.IntN(300) {
				case 0, 1:
					v = 1000 + 1000*rng.Float64()
				case 2:
					v = -500 - 500*rng.Float64()
				}
			case "steps":
				if k%68 == 0 {
					level = float64(rng.IntN(100) - 50)
				}
				v = level
			case "fraction":
				v = float64(rng.Uint64()>>11) / (1 << 53)
			case "huge":
				v = 1e12 + noise(1e6)
			case "gappy":
				v = 100 + 20*math.Sin(phase(5*h)) + noise(2)
				if ts >= d.gapFrom && ts < d.gapTo {
					continue
				}
			case "steady":
				v += 1500 * (1 + noise(0.05))
			case "integer":
				v += float64(190 + rng.IntN(21))
			case "restart", "boundary", "jump":
				inc := map[string]float64{"restart": 600, "boundary": 400, "jump": 250}[shape.name] * (1 + noise(0.05))
				switch {
				case len(resets) == 0 || ts < resets[0]:
					v += inc
				case shape.name == "jump":
					resets = resets[1:]
					v = 0.3*v + inc
				default:
					resets = resets[1:]
					v = inc * rng.Float64()
				}
			case "fractional":
				v += 1.5 * (1 + noise(0.05))
			}
			if s.counter && len(s.values) > 0 && v < s.values[len(s.values)-1] {
				s.resets = append(s.resets, ts)
			}
			s.ts = append(s.ts, ts)
			s.values = append(s.values, v)
			s.magnitude = max(s.magnitude, math.Abs(v))
		}
		// Increments are positive, so a counter drops exactly where a reset is planned.
		if len(s.resets) != len(resetsAt[shape.name]) {
			panic(fmt.Sprintf("counter %s drops %d times, want %d", shape.name, len(s.resets), len(resetsAt[shape.name])))
		}
		d.series = append(d.series, s)
		d.byKey[s.key] = s
	}
	return d
}

// writeOpenMetrics writes the data as OpenMetrics text for promtool.
func (d *accuracyData) writeOpenMetrics(path string) error {
	om, err := createOpenMetrics(path)
	if err != nil {
		return err
	}
	for _, s := range d.series {
		om.series(s.labels)
		for k, v := range s.values {
			om.sample(s.ts[k], v)
		}
	}
	return om.close()
}

// remoteWrite sends the data to a remote-write endpoint as Prometheus would send a backlog:
// oldest first, one request per hour of every series. A 5xx is retried as Prometheus retries
// it; anything else but 2xx is an error.
func (d *accuracyData) remoteWrite(ctx context.Context, url string) error {
	for from := d.start; from < d.end; from += accuracyHourMs {
		var wr prompb.WriteRequest
		for _, s := range d.series {
			lo, _ := slices.BinarySearch(s.ts, from)
			hi, _ := slices.BinarySearch(s.ts, from+accuracyHourMs)
			if lo == hi {
				continue // the gappy gauge's gap
			}
			ts := prompb.TimeSeries{Samples: make([]prompb.Sample, 0, hi-lo)}
			s.labels.Range(func(l labels.Label) { ts.Labels = append(ts.Labels, prompb.Label{Name: l.Name, Value: l.Value}) })
			for k := lo; k < hi; k++ {
				ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: s.ts[k], Value: s.values[k]})
			}
			wr.Timeseries = append(wr.Timeseries, ts)
		}
		raw, err := wr.Marshal()
		if err != nil {
			return fmt.Errorf("marshal write request: %w", err)
		}
		if err := postRemoteWrite(ctx, url, snappy.Encode(nil, raw)); err != nil {
			return fmt.Errorf("write the hour from %s: %w", time.UnixMilli(from).UTC().Format(time.RFC3339), err)
		}
	}
	return nil
}

// waitAccuracyRollups waits until pyramid has computed every rollup of the data
// (rollupsComplete). chAddr may list several servers, comma-separated.
func waitAccuracyRollups(t *testing.T, ctx context.Context, pyr *pyramidServer, chAddr string, d *accuracyData) {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: strings.Split(chAddr, ","), Auth: clickhouse.Auth{Database: "default"}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("open ClickHouse %s: %v", chAddr, err)
	}
	defer conn.Close()
	waitFor(t, "pyramid to compute every 5m and 1h rollup of the data", 2*time.Minute, func() error {
		return rollupsComplete(ctx, pyr, conn, accuracyDB, d.end)
	})
}

// accuracyKind is how one query's points are compared.
type accuracyKind uint8

const (
	// accuracyExact: the same value, bit for bit (Prometheus writes the shortest decimal
	// that round-trips, so equal strings are equal floats).
	accuracyExact accuracyKind = iota
	// accuracySum: float rounding of a different addition order. Its error is relative to
	// the size of the terms, not of the result (a sum that cancels to almost nothing keeps
	// the rounding of its terms), so the allowance is 1e-12 of the larger of the two answers
	// and of the samples in the range times the series' largest value.
	accuracySum
	// accuracyAvg: a mean computed as sum/count against Prometheus's incremental mean,
	// 1e-9 relative, with the series' largest value as the floor, as for sums.
	accuracyAvg
	// accuracyRate: rate() and increase() over counter points, within 1% of raw for
	// ranges of at least four buckets with the rate steady to ±5%; a range holding a reset
	// (or starting within a bucket after one) may be off by scrape/range more, as Counter
	// in rollup/points.go documents: the increase between the last scrape and the restart
	// is lost on raw too, and the two extrapolate around that dent differently.
	accuracyRate
)

// accuracyQuery is one PromQL expression, the range query it is evaluated in, how its points
// are compared, and the tier and aggregate that must serve it.
type accuracyQuery struct {
	expr    string
	mode    queryMode
	kind    accuracyKind
	rangeMs int64 // the range of the selector
	resMs   int64 // the resolution of the tier that serves it (0: raw)
	allowed string
	tier    string // the tier that must serve a segment of it
	aggr    string // the aggregate (segment kind) it must be served with
}

// accuracyQueries is the suite. The 1h queries are evaluated hourly from six hours after
// the data's start (ranges of up to four hours lie within the data) to its end; the 5m ones
// every five minutes over eight hours holding the gappy gauge's gap edges and two counter
// resets; rate over a day only where the day lies within the data.
func accuracyQueries(d *accuracyData) []accuracyQuery {
	const h, m = accuracyHourMs, accuracyMinuteMs
	hourly := rangeOver("1h step", d.start+6*h, d.end, time.Hour)
	daily := rangeOver("1h step", d.start+25*h, d.end, time.Hour)
	fine := rangeOver("5m step", d.start+19*h, d.start+27*h, 5*time.Minute)
	g, c := accuracyGauge, accuracyCounter
	var qs []accuracyQuery
	add := func(mode queryMode, kind accuracyKind, rangeMs, resMs int64, tier, aggr string, expr string) {
		allowed := map[accuracyKind]string{accuracyExact: "bit-for-bit equality", accuracySum: "1e-12 of the terms",
			accuracyAvg: "1e-9 relative", accuracyRate: "1% (+scrape/range around resets)"}[kind]
		qs = append(qs, accuracyQuery{expr: expr, mode: mode, kind: kind, rangeMs: rangeMs, resMs: resMs, allowed: allowed, tier: tier, aggr: aggr})
	}
	// The 1h tier: one bucket per range, or four and 24 for rate.
	add(hourly, accuracyExact, h, h, "1h", "max", `max_over_time(`+g+`[1h])`)
	add(hourly, accuracyExact, h, h, "1h", "min", `min_over_time(`+g+`[1h])`)
	add(hourly, accuracySum, h, h, "1h", "sum", `sum_over_time(`+g+`[1h])`)
	add(hourly, accuracyAvg, h, h, "1h", "avg", `avg_over_time(`+g+`[1h])`)
	add(hourly, accuracyRate, 4*h, h, "1h", "counter", `rate(`+c+`[4h])`)
	add(hourly, accuracyRate, 4*h, h, "1h", "counter", `increase(`+c+`[4h])`)
	add(daily, accuracyRate, 24*h, h, "1h", "counter", `rate(`+c+`[1d])`)
	// count_over_time has no aggregate: raw answers it.
	add(hourly, accuracyExact, h, 0, "raw", "raw", `count_over_time(`+g+`[1h])`)
	// The 5m tier: one bucket per range, and twelve for the 1h ranges at a 5m step (the
	// 1h tier is coarser than the step).
	add(fine, accuracyExact, 5*m, 5*m, "5m", "max", `max_over_time(`+g+`[5m])`)
	add(fine, accuracyExact, 5*m, 5*m, "5m", "min", `min_over_time(`+g+`[5m])`)
	add(fine, accuracySum, 5*m, 5*m, "5m", "sum", `sum_over_time(`+g+`[5m])`)
	add(fine, accuracyAvg, 5*m, 5*m, "5m", "avg", `avg_over_time(`+g+`[5m])`)
	add(fine, accuracyExact, h, 5*m, "5m", "max", `max_over_time(`+g+`[1h])`)
	add(fine, accuracyExact, h, 5*m, "5m", "min", `min_over_time(`+g+`[1h])`)
	add(fine, accuracySum, h, 5*m, "5m", "sum", `sum_over_time(`+g+`[1h])`)
	// The mean of twelve bucket means is the raw mean only when every bucket holds as many
	// samples; the buckets at the gappy gauge's gap edges do not (the documented error of
	// avg, "sparse buckets over-weighted"), so that gauge is left out here.
	add(fine, accuracyAvg, h, 5*m, "5m", "avg", `avg_over_time(`+g+`{shape!="gappy"}[1h])`)
	add(fine, accuracyRate, 20*m, 5*m, "5m", "counter", `rate(`+c+`[20m])`)
	add(fine, accuracyRate, 20*m, 5*m, "5m", "counter", `increase(`+c+`[20m])`)
	add(fine, accuracyRate, h, 5*m, "5m", "counter", `rate(`+c+`[1h])`)
	add(fine, accuracyExact, 5*m, 0, "raw", "raw", `count_over_time(`+g+`[5m])`)
	// Windows reaching before the data, as a young deployment's dashboards ask for them:
	// a week up to an hour past the data's end. At steps finer than every tier raw answers,
	// bit for bit; at a 1h step the 1h tier answers the hours it holds. Instant queries
	// whose range begins before the first sample read raw.
	week := rangeOver("week 1m", d.end-7*24*h, d.end+h, time.Minute)
	add(week, accuracyExact, 0, 0, "raw", "raw", `{job="`+accuracyJob+`"}`)
	add(week, accuracyExact, 5*m, 0, "raw", "raw", `rate(`+c+`[5m])`)
	add(rangeOver("day 15s", d.start-24*h, d.start+6*h, 15*time.Second), accuracyExact, 0, 0, "raw", "raw", g)
	add(rangeOver("week 1h", d.end-7*24*h, d.end+h, time.Hour), accuracyExact, h, h, "1h", "max", `max_over_time(`+g+`[1h])`)
	add(instantAt("start+1m", d.start+m), accuracyExact, 0, 0, "raw", "raw", g)
	add(instantAt("start+2h", d.start+2*h), accuracyExact, 24*h, 0, "raw", "raw", `max_over_time(`+g+`[1d])`)
	add(instantAt("start+2h", d.start+2*h), accuracyExact, 24*h, 0, "raw", "raw", `count_over_time(`+g+`[1d])`)
	return qs
}

// tolerance is how far B's point at ts of series key may be from A's.
func (q accuracyQuery) tolerance(d *accuracyData, key string, ts int64) accuracyTolerance {
	s := d.byKey[key]
	magnitude := 0.0
	if s != nil {
		magnitude = s.magnitude
	}
	switch q.kind {
	case accuracySum:
		return accuracyTolerance{rel: 1e-12, floor: magnitude * float64(q.rangeMs/accuracyScrapeMs)}
	case accuracyAvg:
		return accuracyTolerance{rel: 1e-9, floor: magnitude}
	case accuracyRate:
		tol := accuracyTolerance{rel: 0.01}
		if s != nil && s.resetWithin(ts-q.rangeMs-q.resMs, ts) {
			tol.rel += float64(accuracyScrapeMs) / float64(q.rangeMs)
			tol.widened = true
		}
		return tol
	}
	return accuracyTolerance{exact: true}
}

// resetWithin reports whether the series drops in (from, to].
func (s *accuracySeries) resetWithin(from, to int64) bool {
	for _, r := range s.resets {
		if r > from && r <= to {
			return true
		}
	}
	return false
}

// checkServed checks that the segments a query was served from include the tier and
// aggregate the routing rules name for it, and for raw queries that no rollup tier served
// any of it.
func (q accuracyQuery) checkServed(served segmentCounts) error {
	if served[q.tier+"/"+q.aggr] == 0 {
		return fmt.Errorf("want a segment from tier %s as %s, pyramid served it from %s", q.tier, q.aggr, served.describe())
	}
	if q.tier == "raw" {
		for k, n := range served {
			if n > 0 && !strings.HasPrefix(k, "raw/") {
				return fmt.Errorf("want raw only, pyramid served it from %s", served.describe())
			}
		}
	}
	return nil
}

// accuracyTolerance is how far one point of B may be from A's: exact means the same value
// string; otherwise |a-b| <= rel * max(|a|, |b|, floor). widened marks a tolerance raised
// beyond the query's usual one (rate around a reset), whose errors are reported apart.
type accuracyTolerance struct {
	exact      bool
	rel, floor float64
	widened    bool
}

// accuracyComparison is the outcome of comparing two answers point by point.
type accuracyComparison struct {
	points   int      // points present on both sides
	maxErr   float64  // the largest |a-b| / max(|a|, |b|, floor) seen at points of the usual tolerance
	widened  int      // points compared under a widened tolerance
	maxWide  float64  // the largest error among those
	problems []string // every point (or series) outside its tolerance, missing or extra
}

func (c accuracyComparison) report() string {
	const show = 10
	var b strings.Builder
	for i, p := range c.problems {
		if i == show {
			fmt.Fprintf(&b, "  ... and %d more\n", len(c.problems)-show)
			break
		}
		fmt.Fprintf(&b, "  %s\n", p)
	}
	return b.String()
}

// compareAccuracy compares B's answer with A's point by point: the same series, the same
// timestamps, and each value within tolAt(series, timestamp in ms).
func compareAccuracy(a, b promResult, tolAt func(key string, ts int64) accuracyTolerance) accuracyComparison {
	var c accuracyComparison
	if a.resultType != b.resultType {
		c.problems = append(c.problems, fmt.Sprintf("result type: A %s, B %s", a.resultType, b.resultType))
	}
	for _, k := range b.sortedKeys() {
		if _, ok := a.series[k]; !ok {
			c.problems = append(c.problems, fmt.Sprintf("%s: only in B (%d points)", k, len(b.series[k])))
		}
	}
	for _, k := range a.sortedKeys() {
		ap, ok := a.series[k]
		bp := b.series[k]
		if !ok {
			continue
		}
		if _, inB := b.series[k]; !inB {
			c.problems = append(c.problems, fmt.Sprintf("%s: only in A (%d points)", k, len(ap)))
			continue
		}
		i, j := 0, 0
		for i < len(ap) || j < len(bp) {
			var ta, tb int64 = math.MaxInt64, math.MaxInt64
			if i < len(ap) {
				ta = promPointMs(ap[i])
			}
			if j < len(bp) {
				tb = promPointMs(bp[j])
			}
			switch {
			case ta < tb:
				c.problems = append(c.problems, fmt.Sprintf("%s at %s: A %s, B has no point", k, ap[i].t, ap[i].v))
				i++
				continue
			case tb < ta:
				c.problems = append(c.problems, fmt.Sprintf("%s at %s: B %s, A has no point", k, bp[j].t, bp[j].v))
				j++
				continue
			}
			c.points++
			tol := tolAt(k, ta)
			av, errA := strconv.ParseFloat(ap[i].v, 64)
			bv, errB := strconv.ParseFloat(bp[j].v, 64)
			e := 0.0
			if ap[i].v != bp[j].v {
				e = math.Inf(1)
				if errA == nil && errB == nil {
					if scale := max(math.Abs(av), math.Abs(bv), tol.floor); scale > 0 && !math.IsInf(scale, 0) {
						e = math.Abs(av-bv) / scale
					}
				}
			}
			if tol.widened {
				c.widened++
				c.maxWide = max(c.maxWide, e)
			} else {
				c.maxErr = max(c.maxErr, e)
			}
			if (tol.exact && ap[i].v != bp[j].v) || e > tol.rel {
				c.problems = append(c.problems, fmt.Sprintf("%s at %s: A %s, B %s (error %.3g, allowed %s)",
					k, ap[i].t, ap[i].v, bp[j].v, e, tol.describe()))
			}
			i++
			j++
		}
	}
	return c
}

func (t accuracyTolerance) describe() string {
	if t.exact {
		return "none"
	}
	return fmt.Sprintf("%.3g of max(|A|, |B|, %.3g)", t.rel, t.floor)
}

// promPointMs is a point's timestamp in ms; Prometheus writes it as decimal seconds.
func promPointMs(p promPoint) int64 {
	sec, err := strconv.ParseFloat(p.t, 64)
	if err != nil {
		return math.MinInt64 // sorts first and shows up as a missing point
	}
	return int64(math.Round(sec * 1000))
}

// accuracyControls shows that the comparison can fail. compareAccuracy must report a value
// changed by one ulp, a missing point, an extra series and a rate 1.5% off, and must pass an
// answer compared with itself. And, logged only, the same functions off the bucket
// boundaries and a plain selector (served by bucket means) are not exact, as documented:
// a test that found them exact would suggest both sides read raw.
func accuracyControls(t *testing.T, ctx context.Context, urlA, urlB string, d *accuracyData) {
	t.Helper()
	const h = accuracyHourMs
	hourly := rangeOver("1h step", d.start+6*h, d.end, time.Hour)
	exact := func(string, int64) accuracyTolerance { return accuracyTolerance{exact: true} }
	onePercent := func(string, int64) accuracyTolerance { return accuracyTolerance{rel: 0.01} }
	for _, c := range []struct {
		expr string
		tol  func(string, int64) accuracyTolerance
	}{
		{`max_over_time(` + accuracyGauge + `[1h])`, exact},
		{`rate(` + accuracyCounter + `[4h])`, onePercent},
	} {
		a, err := runQuery(ctx, urlA, c.expr, hourly)
		if err != nil {
			t.Errorf("query %s on A: %v", c.expr, err)
			continue
		}
		keys := a.sortedKeys()
		if len(keys) == 0 || len(a.series[keys[0]]) < 2 {
			t.Errorf("query %s on A: too few points for the comparison's controls", c.expr)
			continue
		}
		if r := compareAccuracy(a, a, c.tol); len(r.problems) > 0 {
			t.Errorf("the comparison finds A's answer to %s different from itself:\n%s", c.expr, r.report())
		}
		perturbed := map[string]func(ps []promPoint) []promPoint{
			"one value changed": func(ps []promPoint) []promPoint {
				v, _ := strconv.ParseFloat(ps[0].v, 64)
				if c.tol("", 0).exact {
					v = math.Nextafter(v, math.Inf(1))
				} else {
					v *= 1.015
				}
				ps[0].v = strconv.FormatFloat(v, 'f', -1, 64)
				return ps
			},
			"one point missing": func(ps []promPoint) []promPoint { return ps[1:] },
		}
		for name, change := range perturbed {
			b := promResult{resultType: a.resultType, series: map[string][]promPoint{}}
			for k, ps := range a.series {
				b.series[k] = slices.Clone(ps)
			}
			b.series[keys[0]] = change(b.series[keys[0]])
			if r := compareAccuracy(a, b, c.tol); len(r.problems) == 0 {
				t.Errorf("the comparison misses %s in %s", name, c.expr)
			}
		}
		extra := promResult{resultType: a.resultType, series: map[string][]promPoint{`{shape="extra"}`: a.series[keys[0]]}}
		for k, ps := range a.series {
			extra.series[k] = ps
		}
		if r := compareAccuracy(a, extra, c.tol); len(r.problems) == 0 {
			t.Errorf("the comparison misses an extra series in %s", c.expr)
		}
	}

	// Off the bucket boundaries the 1h tier's window moves back to them; a plain selector
	// sees bucket means instead of the last sample. Neither is promised to be exact.
	offGrid := rangeOver("1h step, 17m past", d.start+6*h+17*accuracyMinuteMs, d.end-h, time.Hour)
	fine := rangeOver("5m step", d.start+19*h, d.start+27*h, 5*time.Minute)
	for _, c := range []struct {
		expr string
		mode queryMode
	}{
		{`max_over_time(` + accuracyGauge + `[1h])`, offGrid},
		{accuracyGauge, fine},
	} {
		a, errA := runQuery(ctx, urlA, c.expr, c.mode)
		b, errB := runQuery(ctx, urlB, c.expr, c.mode)
		if err := errors.Join(errA, errB); err != nil {
			t.Errorf("query %s (%s): %v", c.expr, c.mode.name, err)
			continue
		}
		r := compareAccuracy(a, b, exact)
		t.Logf("not required to be exact: %s (%s): %d of %d points differ, largest relative difference %.3g",
			c.expr, c.mode.name, len(r.problems), r.points, r.maxErr)
	}

	// The jump counter's drops are, read as Prometheus reads them, a rate spike. Counter
	// points stand at the last sample of each bucket, so a range misses up to one bucket at
	// its start and extrapolates over it from the rest: a spike in that bucket is lost, and
	// a spike further in is stretched by range/(range - missing piece). points.go documents
	// this as "up to res/r times the change when the rate changes abruptly at the range
	// start"; with a spike of 30% of the counter the change is far beyond 1%.
	hourly = rangeOver("1h step", d.start+6*h, d.end, time.Hour)
	for _, q := range []accuracyQuery{
		{expr: `rate(` + accuracyJumps + `[4h])`, mode: hourly, kind: accuracyRate, rangeMs: 4 * h, resMs: h},
		{expr: `rate(` + accuracyJumps + `[20m])`, mode: fine, kind: accuracyRate, rangeMs: 20 * accuracyMinuteMs, resMs: 5 * accuracyMinuteMs},
	} {
		a, errA := runQuery(ctx, urlA, q.expr, q.mode)
		b, errB := runQuery(ctx, urlB, q.expr, q.mode)
		if err := errors.Join(errA, errB); err != nil {
			t.Errorf("query %s (%s): %v", q.expr, q.mode.name, err)
			continue
		}
		r := compareAccuracy(a, b, func(key string, ts int64) accuracyTolerance { return q.tolerance(d, key, ts) })
		t.Logf("outside the 1%% promise (a rate spike): %s (%s): %d of %d points beyond 1%% (+scrape/range around the drops), largest relative difference %.3g",
			q.expr, q.mode.name, len(r.problems), r.points, max(r.maxErr, r.maxWide))
	}
}
