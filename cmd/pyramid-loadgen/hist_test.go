package main

import (
	"cmp"
	"crypto/sha256"
	"math"
	"reflect"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"

	"github.com/pyramid-metrics/pyramid/adapter"
)

func histConfig(kind string) genConfig {
	return genConfig{Seed: 7, Targets: 3, SeriesPerTarget: 5, Histograms: 6, HistogramKind: kind, Scrapes: 300,
		IntervalMs: 15000, EndMs: 1_700_000_000_123, ResetProb: 0.01, Job: "node"}
}

func TestExpBucket(t *testing.T) {
	for _, tc := range []struct {
		x    float64
		want int
	}{
		{1, 0},       // 2^0 is the upper bound of bucket 0
		{1.05, 1},    // (1, 2^(1/8) = 1.0905]
		{1.1, 2},     // (1.0905, 2^(2/8) = 1.1892]
		{2, 8},       // 2^(8/8)
		{0.5, -8},    // 2^(-8/8)
		{0.51, -7},   // (0.5, 2^(-7/8) = 0.5453]
		{0.001, -79}, // log2(0.001) = -9.966; *8 = -79.73
		{100, 54},    // log2(100) = 6.644; *8 = 53.15
	} {
		if got := expBucket(tc.x); got != tc.want {
			t.Errorf("expBucket(%g) = %d, want %d", tc.x, got, tc.want)
		}
	}
	// Every x lies in (upper(i-1), upper(i]] of its bucket i.
	for x := 1e-4; x < 1e3; x *= 1.01 {
		i := expBucket(x)
		if !(expUpper(i-1) < x && x <= expUpper(i)) {
			t.Fatalf("%g in bucket %d = (%g, %g]", x, i, expUpper(i-1), expUpper(i))
		}
	}
}

func TestLogNormalCDF(t *testing.T) {
	mu, sigma := math.Log(0.05), 0.5
	for _, tc := range []struct{ x, want float64 }{
		{0, 0},
		{-1, 0},
		{math.Inf(1), 1},
		{0.05, 0.5},                           // the median
		{0.05 * math.Exp(0.5), 0.841344746},   // one sigma above: Phi(1)
		{0.05 * math.Exp(-1.0), 0.022750132},  // two sigmas below: Phi(-2)
		{0.05 * math.Exp(2.25), 0.9999966023}, // 4.5 sigmas above: beyond it, 3.4 in a million
	} {
		if got := logNormalCDF(tc.x, mu, sigma); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("logNormalCDF(%g) = %.10f, want %.10f", tc.x, got, tc.want)
		}
	}
}

func TestLargeCount(t *testing.T) {
	for _, tc := range []struct {
		m, u1, u2, u3, u4 float64
		want              uint64
	}{
		{100, 0.5, 0.5, 0.5, 0, 100},    // z = 0
		{100, 1, 1, 1, 0, 130},          // z = 3: 100 + 3*10
		{100, 0, 0, 0, 0.99, 70},        // z = -3: floor(70.99)
		{100, 0.75, 0.5, 0.5, 0.5, 105}, // z = 0.5: floor(105.5)
		{smallCount, 0, 0, 0, 0, 0},     // the lowest it can go is 0, never below
		{2.25e6, 0.5, 0.5, 0.5, 0.3, 2250000},
	} {
		if got := largeCount(tc.m, tc.u1, tc.u2, tc.u3, tc.u4); got != tc.want {
			t.Errorf("largeCount(%g, %g, %g, %g, %g) = %d, want %d", tc.m, tc.u1, tc.u2, tc.u3, tc.u4, got, tc.want)
		}
	}
	// The mean is m.
	r := rng{s: 1}
	const n = 200_000
	var sum float64
	for range n {
		sum += float64(largeCount(20, r.float(), r.float(), r.float(), r.float()))
	}
	if mean := sum / n; math.Abs(mean-20) > 0.05 {
		t.Errorf("mean of largeCount(20) = %g, want 20", mean)
	}
}

func TestExpHistogram(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lo      int
		counts  []uint64
		spans   []histogram.Span
		buckets []int64
		count   uint64
	}{
		// Buckets -2, 0 and 4: the gap of three empty buckets (1, 2, 3) starts a new span.
		{"gap of three", -2, []uint64{5, 0, 3, 0, 0, 0, 1}, []histogram.Span{{Offset: -2, Length: 3}, {Offset: 3, Length: 1}}, []int64{5, -5, 3, -2}, 9},
		// A gap of two empty buckets is filled with zeros, as client_golang does.
		{"gap of two", 10, []uint64{5, 0, 0, 3}, []histogram.Span{{Offset: 10, Length: 4}}, []int64{5, -5, 0, 3}, 8},
		{"leading and trailing empty", 0, []uint64{0, 0, 2, 0}, []histogram.Span{{Offset: 2, Length: 1}}, []int64{2}, 2},
		{"empty", -5, []uint64{0, 0}, nil, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := expHistogram(tc.lo, tc.counts, 1.5)
			if err := h.Validate(); err != nil {
				t.Fatal(err)
			}
			if h.Schema != 3 || h.ZeroThreshold != zeroThreshold || h.ZeroCount != 0 || h.Sum != 1.5 || h.Count != tc.count {
				t.Errorf("schema %d, zero threshold %g, zero count %d, sum %g, count %d; want 3, 2^-128, 0, 1.5, %d",
					h.Schema, h.ZeroThreshold, h.ZeroCount, h.Sum, h.Count, tc.count)
			}
			if !reflect.DeepEqual(h.PositiveSpans, tc.spans) || !slices.Equal(h.PositiveBuckets, tc.buckets) {
				t.Errorf("spans %v buckets %v, want %v %v", h.PositiveSpans, h.PositiveBuckets, tc.spans, tc.buckets)
			}
			if len(h.NegativeSpans)+len(h.NegativeBuckets) != 0 || h.CustomValues != nil {
				t.Errorf("negative side or custom values: %v", h)
			}
		})
	}
}

func TestCustomHistogram(t *testing.T) {
	for _, tc := range []struct {
		name    string
		bounds  []float64
		counts  []uint64
		spans   []histogram.Span
		buckets []int64
		count   uint64
	}{
		// Classic cumulative counts le=0.1: 2, le=1: 5, +Inf: 7.
		{"all populated", []float64{0.1, 1}, []uint64{2, 3, 2}, []histogram.Span{{Offset: 0, Length: 3}}, []int64{2, 1, -1}, 7},
		{"two empty between", []float64{0.1, 1, 10}, []uint64{2, 0, 0, 4}, []histogram.Span{{Offset: 0, Length: 4}}, []int64{2, -2, 0, 4}, 6},
		{"three empty between", []float64{0.1, 1, 10, 100}, []uint64{2, 0, 0, 0, 4}, []histogram.Span{{Offset: 0, Length: 1}, {Offset: 3, Length: 1}}, []int64{2, 2}, 6},
		{"first empty", []float64{0.1, 1}, []uint64{0, 5, 0}, []histogram.Span{{Offset: 1, Length: 1}}, []int64{5}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := customHistogram(tc.bounds, tc.counts, 2.5)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Validate(); err != nil {
				t.Fatal(err)
			}
			if h.Schema != histogram.CustomBucketsSchema || h.Count != tc.count || h.Sum != 2.5 || h.ZeroThreshold != 0 {
				t.Errorf("schema %d, count %d, sum %g, zero threshold %g; want -53, %d, 2.5, 0", h.Schema, h.Count, h.Sum, h.ZeroThreshold, tc.count)
			}
			if !slices.Equal(h.CustomValues, tc.bounds) {
				t.Errorf("custom values %v, want the classic bounds %v", h.CustomValues, tc.bounds)
			}
			if !reflect.DeepEqual(h.PositiveSpans, tc.spans) || !slices.Equal(h.PositiveBuckets, tc.buckets) {
				t.Errorf("spans %v buckets %v, want %v %v", h.PositiveSpans, h.PositiveBuckets, tc.spans, tc.buckets)
			}
		})
	}
	if _, err := customHistogram([]float64{1}, []uint64{1, 2, 3}, 0); err == nil {
		t.Error("three counts for one bound and +Inf: no error")
	}
}

// Every generated histogram is valid; counts and sum only grow, except at a target
// restart, where Prometheus sees the reset; the buckets shift over time.
func TestHistogramSeries(t *testing.T) {
	for _, kind := range []string{histKindExponential, histKindCustom, histKindBoth} {
		for _, prob := range []float64{0, 0.01, 1} {
			c := histConfig(kind)
			c.ResetProb = prob
			p := mustPlan(t, c)
			prev := map[uint64]*histogram.Histogram{}
			first := map[uint64]*histogram.Histogram{}
			scrape := map[uint64]int{}
			schemas := map[int32]int{}
			resets, detected, buckets, n := 0, 0, 0, 0
			p.walk(histogramSeries, func(d *seriesDef, ts int64, v float64, h *histogram.Histogram) {
				k := scrape[d.fp]
				scrape[d.fp]++
				if h == nil {
					t.Fatalf("series %v: no histogram", d.labels)
				}
				if err := h.Validate(); err != nil {
					t.Fatalf("%s p=%g: series %v scrape %d: %v: %v", kind, prob, d.labels, k, err, h)
				}
				want := int32(expSchema)
				if d.spec.kind == kindCustom {
					want = histogram.CustomBucketsSchema
				}
				if h.Schema != want || h.CounterResetHint != histogram.UnknownCounterReset {
					t.Fatalf("series %v (%s): schema %d, reset hint %d", d.labels, d.spec.kind, h.Schema, h.CounterResetHint)
				}
				schemas[h.Schema]++
				n++
				buckets += len(h.PositiveBuckets)
				if first[d.fp] == nil {
					first[d.fp] = h
				}
				pv := prev[d.fp]
				prev[d.fp] = h
				if k == 0 {
					return
				}
				reset := resetAt(c.Seed, d.target, k, c.ResetProb)
				seen := h.ToFloat(nil).DetectReset(pv.ToFloat(nil))
				switch {
				case !reset && seen:
					t.Fatalf("%s p=%g: series %v scrape %d: Prometheus sees a counter reset without a restart:\n%v\n%v", kind, prob, d.labels, k, pv, h)
				case !reset && (h.Count < pv.Count || h.Sum < pv.Sum):
					t.Fatalf("series %v scrape %d: count %d -> %d, sum %g -> %g", d.labels, k, pv.Count, h.Count, pv.Sum, h.Sum)
				case reset && pv.Count > 2000 && !seen:
					// One scrape brings at most about 450 observations.
					t.Fatalf("%s p=%g: series %v scrape %d: restart after %d observations, Prometheus sees no reset:\n%v\n%v", kind, prob, d.labels, k, pv.Count, pv, h)
				}
				if reset {
					resets++
				}
				if seen {
					detected++
				}
			})
			if n != p.totalHistograms() {
				t.Fatalf("%d histograms, want %d", n, p.totalHistograms())
			}
			if kind == histKindBoth && (schemas[expSchema] == 0 || schemas[histogram.CustomBucketsSchema] == 0) {
				t.Errorf("both kinds: schemas %v", schemas)
			}
			if prob == 0 && (resets != 0 || detected != 0) {
				t.Errorf("%s p=0: %d restarts, %d resets seen", kind, resets, detected)
			}
			if prob > 0 && detected == 0 {
				t.Errorf("%s p=%g: no reset ever seen", kind, prob)
			}
			if prob == 0 {
				// Without restarts, busy series have grown, and some exponential series
				// have populated buckets they had not at the start.
				grown, shifted := 0, 0
				for fp, h := range prev {
					if h.Count > first[fp].Count+1000 {
						grown++
					}
					if len(h.PositiveBuckets) > len(first[fp].PositiveBuckets) {
						shifted++
					}
				}
				if grown == 0 {
					t.Errorf("%s: no series grew by 1000 observations over %d scrapes", kind, c.Scrapes)
				}
				if kind != histKindCustom && shifted == 0 {
					t.Errorf("%s: no series populated new buckets over %d scrapes", kind, c.Scrapes)
				}
			}
			if kind == histKindExponential && prob < 1 {
				// client_golang-like: a few dozen buckets on average, unless every scrape
				// restarts the target and brings only one scrape's observations.
				if avg := float64(buckets) / float64(n); avg < 10 || avg > 60 {
					t.Errorf("p=%g: %.1f buckets per exponential histogram on average, want a few dozen", prob, avg)
				}
			}
		}
	}
}

// Histogram requests carry what the direct batches hold, one histogram per TimeSeries,
// and float requests carry no histogram.
func TestHistogramRequests(t *testing.T) {
	c := histConfig(histKindBoth)
	p := mustPlan(t, c)
	type key struct {
		fp uint64
		ts int64
	}
	direct := map[key]*histogram.Histogram{}
	var seriesRows int
	p.directBatches(700, histogramSeries, func(b *adapter.Batch) {
		if b.Samples() != 0 {
			t.Fatalf("histogram batch with %d float samples", b.Samples())
		}
		for _, h := range b.Histograms {
			direct[key{h.Fingerprint, h.T}] = h.H
		}
		seriesRows += len(b.Series)
	})
	if len(direct) != p.totalHistograms() {
		t.Fatalf("%d histograms in direct batches, want %d", len(direct), p.totalHistograms())
	}
	if want := c.Targets * c.Histograms; seriesRows < want {
		t.Errorf("%d series rows for %d histogram series", seriesRows, want)
	}
	const shards, per = 3, 500
	sent := 0
	for sh := range shards {
		p.shardRequests(sh, shards, per, histogramSeries, func(r request) {
			wr := decodeBody(t, r.body)
			if r.samples != 0 || r.histograms != len(wr.Timeseries) || r.histograms > per {
				t.Fatalf("request of %d series says %d samples, %d histograms", len(wr.Timeseries), r.samples, r.histograms)
			}
			for _, ts := range wr.Timeseries {
				if len(ts.Samples) != 0 || len(ts.Histograms) != 1 || ts.Histograms[0].IsFloatHistogram() {
					t.Fatalf("TimeSeries with %d samples, %d histograms, want one integer histogram", len(ts.Samples), len(ts.Histograms))
				}
				got := ts.Histograms[0].ToIntHistogram()
				want := direct[key{fingerprintOf(ts.Labels), ts.Histograms[0].Timestamp}]
				if want == nil || !got.Equals(want) {
					t.Fatalf("series %v at %d: sent %v, direct batch holds %v", ts.Labels, ts.Histograms[0].Timestamp, got, want)
				}
				sent++
			}
		})
		p.shardRequests(sh, shards, per, floatSeries, func(r request) {
			if r.histograms != 0 {
				t.Fatalf("float request with %d histograms", r.histograms)
			}
			for _, ts := range decodeBody(t, r.body).Timeseries {
				if len(ts.Histograms) != 0 || len(ts.Samples) != 1 {
					t.Fatalf("float TimeSeries with %d samples, %d histograms", len(ts.Samples), len(ts.Histograms))
				}
			}
		})
	}
	if sent != p.totalHistograms() {
		t.Fatalf("%d histograms sent, want %d", sent, p.totalHistograms())
	}
}

// Histograms are a pure function of the seed, and adding them changes no float sample;
// the histogram series' data does not depend on the number of float series.
func TestHistogramDeterminism(t *testing.T) {
	type row struct {
		fp uint64
		ts int64
		h  string
	}
	histRows := func(c genConfig) []row {
		var out []row
		mustPlan(t, c).walk(histogramSeries, func(d *seriesDef, ts int64, v float64, h *histogram.Histogram) {
			out = append(out, row{d.fp, ts, h.String()})
		})
		slices.SortFunc(out, func(a, b row) int {
			return cmp.Or(cmp.Compare(a.fp, b.fp), cmp.Compare(a.ts, b.ts))
		})
		return out
	}
	c := histConfig(histKindBoth)
	a := histRows(c)
	if !slices.Equal(a, histRows(c)) {
		t.Fatal("same seed, different histograms")
	}
	c2 := c
	c2.SeriesPerTarget = 17
	if !slices.Equal(a, histRows(c2)) {
		t.Fatal("histograms change with the number of float series")
	}
	c3 := c
	c3.Seed++
	if slices.Equal(a, histRows(c3)) {
		t.Fatal("different seeds, same histograms")
	}

	floats := func(c genConfig) [32]byte {
		h := sha256.New()
		mustPlan(t, c).shardRequests(0, 1, 2000, floatSeries, func(r request) { h.Write(r.body) })
		return [32]byte(h.Sum(nil))
	}
	c4 := c
	c4.Histograms = 0
	if floats(c) != floats(c4) {
		t.Fatal("float requests change when histogram series are added")
	}
	streams := map[uint64]bool{}
	for _, ti := range mustPlan(t, c).targets {
		for _, d := range ti.series {
			if streams[d.stream] {
				t.Fatalf("series %v shares its random stream with another series", d.labels)
			}
			streams[d.stream] = true
		}
	}
}

// The median wanders, slowly and within its range, so that the populated buckets shift.
func TestMedianDrift(t *testing.T) {
	for _, s := range histogramCatalog(histKindBoth) {
		r := rng{s: 3}
		h := newHistState(&s, &r, 15000)
		moved := 0.0
		for range 2000 {
			before := h.mu
			h.next(&r, false)
			if math.Abs(h.mu-before) > 3*medianStep+1e-12 {
				t.Fatalf("%s: median moved %g in one scrape, more than %g", s.name, h.mu-before, 3*medianStep)
			}
			if math.Abs(h.mu-h.mu0) > medianDrift+1e-12 {
				t.Fatalf("%s: median %g away from its start, more than %g", s.name, h.mu-h.mu0, medianDrift)
			}
			moved = max(moved, math.Abs(h.mu-h.mu0))
		}
		// A random walk of 2000 steps of about 0.01 goes about 0.45 away.
		if moved < 0.1 {
			t.Errorf("%s: median never moved more than %g in 2000 scrapes", s.name, moved)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*genConfig)
		ok   bool
	}{
		{"floats and histograms", func(c *genConfig) {}, true},
		{"histograms only", func(c *genConfig) { c.SeriesPerTarget = 0 }, true},
		{"floats only, no kind needed", func(c *genConfig) { c.Histograms, c.HistogramKind = 0, "" }, true},
		{"nothing", func(c *genConfig) { c.SeriesPerTarget, c.Histograms = 0, 0 }, false},
		{"negative histograms", func(c *genConfig) { c.Histograms = -1 }, false},
		{"unknown kind", func(c *genConfig) { c.HistogramKind = "float" }, false},
	} {
		c := histConfig(histKindExponential)
		tc.edit(&c)
		if err := c.validate(); (err == nil) != tc.ok {
			t.Errorf("%s: validate() = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
