package materialize_test

import (
	"context"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
)

// latencyHistograms is a counter of request latencies scraped every 15s over n scrapes from
// start: ten schema-0 buckets, a request rate varying ±5% from scrape to scrape around a
// daily swing of ±swing, a restart (reset) at reset, a stale marker at stale. Integer histograms,
// as client libraries send them.
func latencyHistograms(rng *rand.Rand, swing float64, start int64, n, reset, stale int) []store.HistogramSample {
	counts := make([]int64, 10)
	var sum float64
	var out []store.HistogramSample
	for i := range n {
		t := start + int64(i)*15_000
		if i == stale {
			out = append(out, store.HistogramSample{T: t, H: &histogram.Histogram{Sum: math.Float64frombits(value.StaleNaN)}})
			continue
		}
		if i == reset {
			counts = make([]int64, 10)
			sum = 0
		}
		// ±5% from scrape to scrape around a daily swing of ±swing.
		rate := 40 * (1 + swing*math.Sin(2*math.Pi*float64(t-start)/float64(24*hour))) * (1 + (rng.Float64()-0.5)/10)
		for range int(math.Round(rate)) {
			// Latencies around 2^4 with a long tail; bucket i of schema 0 holds (2^(i-1), 2^i].
			b := min(9, max(0, int(math.Round(4+rng.NormFloat64()*1.5))))
			counts[b]++
			sum += math.Ldexp(0.75, b)
		}
		var total int64
		deltas := make([]int64, len(counts))
		prev := int64(0)
		for j, c := range counts {
			deltas[j], prev = c-prev, c
			total += c
		}
		out = append(out, store.HistogramSample{T: t, H: &histogram.Histogram{
			Schema: 0, Count: uint64(total), Sum: sum,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 10}}, PositiveBuckets: deltas,
		}})
	}
	return out
}

// TestMaterializeHistograms writes a day and a half of a latency histogram (a retried batch,
// a restart, a stale marker), computes the rollups and checks that (1) every tier's rows
// equal DownsampleHistograms of the raw histograms, and (2) PromQL routed to the 1h tier
// answers histogram_quantile(0.9, rate(h[4h])) and histogram_count(rate(h[4h])) at a 1h
// step within the bound rollup/README.md states for counters, against the same queries over
// raw histograms.
func TestMaterializeHistograms(t *testing.T) {
	for _, tc := range []struct {
		name  string
		swing float64
		// bounds are the relative errors allowed for the quantile, the count and the sum
		// of observations: the rate over the last three of four hours stands for the rate
		// over all four (see rollup.Counter), so a rate that changes within the range
		// moves them, and the sum, whose increments have a long tail, moves most.
		bounds [3]float64
	}{
		{"steady", 0, [3]float64{0.02, 0.005, 0.015}},
		{"daily swing of 20%", 0.2, [3]float64{0.02, 0.03, 0.035}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testMaterializeHistograms(t, tc.swing, tc.bounds)
		})
	}
}

func testMaterializeHistograms(t *testing.T, swing float64, bounds [3]float64) {
	e := newEnv(t, "raw:0,5m:0,1h:0")
	e.now = time.UnixMilli(epoch + 5000*hour)
	ctx := context.Background()
	const target, fp = uint64(7), uint64(4242)
	start := epoch + 2000*hour
	hs := latencyHistograms(rand.New(rand.NewPCG(1, 2)), swing, start, 36*240, 14*240+17, 30*240+3)
	if err := e.st.InsertSeries(ctx, []store.SeriesRow{{Fingerprint: fp, Target: target, MetricName: "h",
		Names: []string{"__name__", "instance", "job"}, Values: []string{"h", "i", "j"},
		FirstSeen: hs[0].T, LastSeen: hs[len(hs)-1].T}}); err != nil {
		t.Fatal(err)
	}
	for lo := 0; lo < len(hs); lo += 1000 {
		part := hs[lo:min(lo+1000, len(hs))]
		e.writeHistograms(t, target, fp, part)
		if lo == 3000 {
			e.writeHistograms(t, target, fp, part) // A retry.
		}
	}
	e.materialize(t)

	var raw []rollup.HistogramSample
	for _, h := range hs {
		raw = append(raw, rollup.HistogramSample{T: h.T, H: h.H.ToFloat(nil)})
	}
	for _, res := range []int64{5 * minute, hour} {
		got, _, err := e.st.ReadHistogramBuckets(ctx, res, []uint64{target}, []uint64{fp}, 0, math.MaxInt64)
		if err != nil {
			t.Fatal(err)
		}
		want := rollup.DownsampleHistograms(raw, res)
		if len(got[fp]) != len(want) {
			t.Fatalf("%d ms: %d buckets stored, want %d", res, len(got[fp]), len(want))
		}
		for i, w := range want {
			g := got[fp][i]
			if g.Start != w.Start || g.Count != w.Count || g.FirstT != w.FirstT || g.LastT != w.LastT || g.Resets != w.Resets ||
				!g.First.Equals(w.First) || !g.Last.Equals(w.Last) || !g.Sum.Equals(w.Sum) ||
				(g.Correction == nil) != (w.Correction == nil) || (w.Correction != nil && !g.Correction.Equals(w.Correction)) {
				t.Fatalf("%d ms bucket %d: stored %+v, want %+v", res, i, g, w)
			}
		}
	}

	routed := e.store(t, true)
	direct := e.store(t, false)
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	qStart, qEnd := time.UnixMilli(start+6*hour), time.UnixMilli(start+36*hour)
	for _, q := range []struct {
		expr  string
		bound float64 // relative
	}{
		{`histogram_quantile(0.9, rate(h[4h]))`, bounds[0]},
		{`histogram_count(rate(h[4h]))`, bounds[1]},
		{`histogram_sum(increase(h[4h]))`, bounds[2]},
	} {
		var tiers store.TierLog
		got := rangeQuery(t, engine, routed.Queryable(store.Options{Tiers: &tiers}), q.expr, qStart, qEnd, time.Hour)
		want := rangeQuery(t, engine, direct.Queryable(store.Options{}), q.expr, qStart, qEnd, time.Hour)
		if tiers.Coarsest() != "1h" {
			t.Errorf("%s: answered by %v, want the 1h tier", q.expr, tiers.Tiers())
		}
		if len(got) != len(want) || len(want) < 25 {
			t.Fatalf("%s: %d points routed, %d raw (want the same, at least 25)", q.expr, len(got), len(want))
		}
		worst := 0.0
		for i := range want {
			if got[i].T != want[i].T {
				t.Fatalf("%s: point %d at %d routed, %d raw", q.expr, i, got[i].T, want[i].T)
			}
			worst = max(worst, math.Abs(got[i].F-want[i].F)/math.Abs(want[i].F))
		}
		t.Logf("%s over 30h at 1h steps, routed to 1h against raw: worst relative error %.4f%% (bound %.2f%%)", q.expr, 100*worst, 100*q.bound)
		if worst > q.bound {
			t.Errorf("%s: worst relative error %.4f, more than %.4f", q.expr, worst, q.bound)
		}
	}
}

// writeHistograms stores histograms of one series as the write path does: the rows, then
// the marks.
func (e *env) writeHistograms(t *testing.T, target, fp uint64, hs []store.HistogramSample) {
	t.Helper()
	rows := make([]store.HistogramRow, len(hs))
	targets, stamps := make([]uint64, len(hs)), make([]int64, len(hs))
	for i, h := range hs {
		rows[i] = store.HistogramRow{Target: target, Fingerprint: fp, HistogramSample: h}
		targets[i], stamps[i] = target, h.T
	}
	if err := e.st.InsertHistograms(context.Background(), rows); err != nil {
		t.Fatal(err)
	}
	units := e.marker.Unmarked(targets, stamps, e.now.UnixMilli())
	if err := e.st.InsertMarks(context.Background(), e.marker.Width(), units); err != nil {
		t.Fatal(err)
	}
	e.marker.Remember(units, e.now.UnixMilli())
}

// store is another store on e's database, reading rollups or not.
func (e *env) store(t *testing.T, rollups bool) *store.Store {
	t.Helper()
	st, err := store.New(store.Config{Database: e.db, Tiers: e.tiers, Rollups: rollups, TierRefresh: time.Minute,
		Lookback: 5 * time.Minute, Now: func() time.Time { return e.now }}, e.conn,
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// rangeQuery runs expr over q and returns the points of its one series.
func rangeQuery(t *testing.T, engine *promql.Engine, q storage.Queryable, expr string, start, end time.Time, step time.Duration) []promql.FPoint {
	t.Helper()
	qry, err := engine.NewRangeQuery(context.Background(), q, nil, expr, start, end, step)
	if err != nil {
		t.Fatal(err)
	}
	defer qry.Close()
	res := qry.Exec(context.Background())
	if res.Err != nil {
		t.Fatalf("%s: %v", expr, res.Err)
	}
	m, err := res.Matrix()
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	if len(m) != 1 {
		t.Fatalf("%s: %d series, want 1", expr, len(m))
	}
	return m[0].Floats
}
