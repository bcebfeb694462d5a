package main

import (
	"cmp"
	"crypto/sha256"
	"math"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/adapter"
)

func testConfig() genConfig {
	return genConfig{Seed: 7, Targets: 3, SeriesPerTarget: 20, Scrapes: 300, IntervalMs: 15000,
		EndMs: 1_700_000_000_123, ResetProb: 0.01, Job: "node"}
}

func mustPlan(t *testing.T, c genConfig) *plan {
	t.Helper()
	p, err := newPlan(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLastScrapeAndScrapeTs(t *testing.T) {
	for _, tc := range []struct {
		name               string
		end, interval, off int64
		wantLast           int64
		k, n               int
		wantTs             int64
	}{
		// (1_000_000-1234)/15000 = 66 -> 66*15000+1234 = 991234; next would be 1_006_234 > end.
		{"offset", 1_000_000, 15000, 1234, 991_234, 0, 3, 961_234},
		{"offset last", 1_000_000, 15000, 1234, 991_234, 2, 3, 991_234},
		{"end on grid", 30_000, 15000, 0, 30_000, 1, 2, 30_000},
		{"end just before grid", 29_999, 15000, 0, 15_000, 0, 2, 0},
		// (1_000_000-14999)/15000 = 65 -> 975000+14999 = 989999.
		{"max offset", 1_000_000, 15000, 14999, 989_999, 0, 1, 989_999},
		{"negative", 100, 15000, 5000, -10_000, 0, 2, -25_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			last := lastScrape(tc.end, tc.interval, tc.off)
			if last != tc.wantLast {
				t.Fatalf("lastScrape(%d, %d, %d) = %d, want %d", tc.end, tc.interval, tc.off, last, tc.wantLast)
			}
			if got := scrapeTs(last, tc.interval, tc.k, tc.n); got != tc.wantTs {
				t.Fatalf("scrapeTs(%d, %d, %d, %d) = %d, want %d", last, tc.interval, tc.k, tc.n, got, tc.wantTs)
			}
		})
	}
}

func TestTimestampsAlignedPerTarget(t *testing.T) {
	c := testConfig()
	p := mustPlan(t, c)
	type key struct{ target, k int }
	tsOf := map[key]int64{}
	scrape := map[uint64]int{} // fp -> scrapes seen
	prevTs := map[uint64]int64{}
	var lastEmitted int64 = math.MinInt64
	p.walk(nil, func(d *seriesDef, ts int64, v float64, _ *histogram.Histogram) {
		k := scrape[d.fp]
		scrape[d.fp]++
		if got, ok := tsOf[key{d.target, k}]; ok && got != ts {
			t.Fatalf("target %d scrape %d: series %d at %d, another series of the target at %d", d.target, k, d.index, ts, got)
		}
		tsOf[key{d.target, k}] = ts
		if prev, ok := prevTs[d.fp]; ok && ts-prev != c.IntervalMs {
			t.Fatalf("series %v: step %d, want %d", d.labels, ts-prev, c.IntervalMs)
		}
		prevTs[d.fp] = ts
		if ts < lastEmitted {
			t.Fatalf("stream not time-ordered: %d after %d", ts, lastEmitted)
		}
		lastEmitted = ts
		if (ts-p.targets[d.target].offset)%c.IntervalMs != 0 {
			t.Fatalf("ts %d not on target %d's grid (offset %d)", ts, d.target, p.targets[d.target].offset)
		}
	})
	for _, ti := range p.targets {
		if ti.offset < 0 || ti.offset >= c.IntervalMs {
			t.Errorf("target %d offset %d outside [0, %d)", ti.index, ti.offset, c.IntervalMs)
		}
		if ti.last > c.EndMs || ti.last <= c.EndMs-c.IntervalMs {
			t.Errorf("target %d last scrape %d not in (end-interval, end] = (%d, %d]", ti.index, ti.last, c.EndMs-c.IntervalMs, c.EndMs)
		}
	}
	if len(scrape) != p.totalSeries() {
		t.Fatalf("%d series emitted, want %d", len(scrape), p.totalSeries())
	}
	for fp, n := range scrape {
		if n != c.Scrapes {
			t.Fatalf("series %x: %d samples, want %d", fp, n, c.Scrapes)
		}
	}
	// Offsets differ between targets (three targets, 15000 possible offsets).
	if p.targets[0].offset == p.targets[1].offset && p.targets[1].offset == p.targets[2].offset {
		t.Errorf("all targets share offset %d", p.targets[0].offset)
	}
}

func TestCounterStepAndReset(t *testing.T) {
	for _, tc := range []struct {
		mean, u1, u2 float64
		want         float64
	}{
		{3, 0.5, 0.25, 3},  // floor(3 + 0.25)
		{3, 0.9, 0.5, 5},   // floor(5.4 + 0.5)
		{3, 0, 0.99, 0},    // floor(0.99)
		{0, 0.7, 0.99, 0},  // a counter that never moves
		{0.2, 0.5, 0.9, 1}, // floor(0.2 + 0.9)
		{0.2, 0.5, 0.7, 0}, // floor(0.2 + 0.7)
	} {
		if got := counterStep(tc.mean, tc.u1, tc.u2); got != tc.want {
			t.Errorf("counterStep(%g, %g, %g) = %g, want %g", tc.mean, tc.u1, tc.u2, got, tc.want)
		}
	}
	for _, tc := range []struct {
		prev, step float64
		reset      bool
		want       float64
	}{
		{100, 5, false, 105},
		{100, 5, true, 5},
		{100, 0, true, 0},
		{0, 0, false, 0},
	} {
		if got := counterNext(tc.prev, tc.step, tc.reset); got != tc.want {
			t.Errorf("counterNext(%g, %g, %v) = %g, want %g", tc.prev, tc.step, tc.reset, got, tc.want)
		}
	}
}

func TestResetAt(t *testing.T) {
	for _, tc := range []struct {
		k    int
		p    float64
		want bool
	}{
		{0, 1, false}, // nothing before the first scrape
		{1, 1, true},
		{5, 0, false},
	} {
		if got := resetAt(1, 0, tc.k, tc.p); got != tc.want {
			t.Errorf("resetAt(k=%d, p=%g) = %v, want %v", tc.k, tc.p, got, tc.want)
		}
	}
	n := 0
	for k := 1; k <= 100_000; k++ {
		if resetAt(1, 3, k, 0.01) {
			n++
		}
	}
	if n < 850 || n > 1150 {
		t.Errorf("%d resets in 100000 scrapes at p=0.01, want about 1000", n)
	}
}

// Counters only ever go down at a target restart, and (when they had grown) always do.
func TestCountersResetOnlyOnRestart(t *testing.T) {
	for _, prob := range []float64{0, 0.01, 1} {
		c := testConfig()
		c.ResetProb = prob
		p := mustPlan(t, c)
		prev := map[uint64]float64{}
		scrape := map[uint64]int{}
		resets, drops := 0, 0
		p.walk(nil, func(d *seriesDef, ts int64, v float64, _ *histogram.Histogram) {
			k := scrape[d.fp]
			scrape[d.fp]++
			if d.spec.kind != kindCounter {
				return
			}
			if v != math.Trunc(v) || v < 0 {
				t.Fatalf("counter %v = %g, want a non-negative integer", d.labels, v)
			}
			if k > 0 {
				reset := resetAt(c.Seed, d.target, k, c.ResetProb)
				pv := prev[d.fp]
				switch {
				case v < pv && !reset:
					t.Fatalf("p=%g: counter %v dropped %g -> %g at scrape %d without a restart", prob, d.labels, pv, v, k)
				case reset && pv > 4*d.spec.rate+1 && v >= pv:
					t.Fatalf("p=%g: counter %v did not reset at scrape %d: %g -> %g", prob, d.labels, k, pv, v)
				case reset && v > 2*d.spec.rate*1.5+1:
					t.Fatalf("p=%g: counter %v = %g right after a restart, more than one step", prob, d.labels, v)
				}
				if reset {
					resets++
				}
				if v < pv {
					drops++
				}
			}
			prev[d.fp] = v
		})
		if prob == 0 && (resets != 0 || drops != 0) {
			t.Errorf("p=0: %d resets, %d drops", resets, drops)
		}
		if prob > 0 && drops == 0 {
			t.Errorf("p=%g: no counter ever reset", prob)
		}
	}
}

func TestGaugeAndQuantize(t *testing.T) {
	for _, tc := range []struct {
		v, sigma, lo, hi, u1, u2, u3 float64
		want                         float64
	}{
		{5, 1, 0, 10, 0.5, 0.5, 0.5, 5}, // zero step
		{5, 1, 0, 10, 1, 1, 0.5, 7},     // +2*(2.5-1.5)
		{9.5, 1, 0, 10, 1, 1, 1, 7.5},   // 12.5 reflected at 10
		{0.5, 1, 0, 10, 0, 0, 0, 2.5},   // -2.5 reflected at 0
		{0.5, 100, 0, 10, 0, 0, 0, 10},  // -299.5 reflects to 299.5, clamped to hi
	} {
		if got := walkStep(tc.v, tc.sigma, tc.lo, tc.hi, tc.u1, tc.u2, tc.u3); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("walkStep(%+v) = %g, want %g", tc, got, tc.want)
		}
	}
	for _, tc := range []struct{ v, scale, want float64 }{
		{0.123456, 100, 0.12},
		{0.125001, 100, 0.13},
		{5000, 1.0 / 4096, 4096},
		{6200, 1.0 / 4096, 8192},
		{math.Pi, 0, math.Pi},
		{45.6, 1, 46},
	} {
		if got := quantize(tc.v, tc.scale); got != tc.want {
			t.Errorf("quantize(%g, %g) = %v, want %v", tc.v, tc.scale, got, tc.want)
		}
	}
}

func TestCatalogMix(t *testing.T) {
	cat := nodeCatalog()
	count := func(specs []metricSpec) map[kind]int {
		m := map[kind]int{}
		for _, s := range specs {
			m[s.kind]++
		}
		return m
	}
	if got := count(specsFor(cat, 100)); got[kindCounter] != 60 || got[kindGauge] != 28 || got[kindConstant] != 12 {
		t.Errorf("100 series: %v, want 60 counters, 28 gauges, 12 constants", got)
	}
	if got := count(specsFor(cat, 10)); got[kindCounter] == 0 || got[kindGauge] == 0 || got[kindConstant] == 0 {
		t.Errorf("10 series lose the mix: %v", got)
	}
	// More than the catalogue: copies are told apart by a "copy" label, so every series
	// of a target is distinct.
	p := mustPlan(t, genConfig{Seed: 1, Targets: 2, SeriesPerTarget: 250, Scrapes: 1, IntervalMs: 15000, EndMs: 1e12, Job: "node"})
	seen := map[uint64]bool{}
	for _, ti := range p.targets {
		for _, d := range ti.series {
			if seen[d.fp] {
				t.Fatalf("duplicate series %v", d.labels)
			}
			seen[d.fp] = true
			if !slices.IsSortedFunc(d.labels, func(a, b prompb.Label) int { return cmp.Compare(a.Name, b.Name) }) {
				t.Fatalf("labels not sorted: %v", d.labels)
			}
		}
	}
}

// The fingerprint is labels.StableHash, which pyramid's fingerprint is held to; the target
// hash covers job and instance only.
func TestFingerprintMatchesPrometheus(t *testing.T) {
	p := mustPlan(t, testConfig())
	for _, ti := range p.targets {
		var th uint64
		for i, d := range ti.series {
			b := labels.NewScratchBuilder(len(d.labels))
			for _, l := range d.labels {
				b.Add(l.Name, l.Value)
			}
			b.Sort()
			if want := labels.StableHash(b.Labels()); d.fp != want {
				t.Fatalf("%v: fingerprint %x, labels.StableHash %x", d.labels, d.fp, want)
			}
			want := targetHashOf([]prompb.Label{{Name: "instance", Value: instanceOf(ti.index)}, {Name: "job", Value: "node"}})
			if d.targetH != want {
				t.Fatalf("%v: target hash %x, want %x", d.labels, d.targetH, want)
			}
			if i > 0 && d.targetH != th {
				t.Fatalf("series of one target have different target hashes")
			}
			th = d.targetH
		}
	}
}

type decoded struct {
	fp uint64
	ts int64
	v  uint64 // float bits
}

func decodeBody(t *testing.T, body []byte) *prompb.WriteRequest {
	t.Helper()
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	var wr prompb.WriteRequest
	if err := wr.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	return &wr
}

func TestRequests(t *testing.T) {
	c := testConfig() // 60 series x 300 scrapes = 18000 samples
	p := mustPlan(t, c)
	const shards, per = 4, 2000
	var all []decoded
	shardOfFP := map[uint64]int{}
	for sh := range shards {
		var reqs []request
		p.shardRequests(sh, shards, per, nil, func(r request) { reqs = append(reqs, r) })
		var lastTs int64 = math.MinInt64
		for i, r := range reqs {
			wr := decodeBody(t, r.body)
			if len(wr.Timeseries) != r.samples {
				t.Fatalf("shard %d request %d: %d series, request says %d samples", sh, i, len(wr.Timeseries), r.samples)
			}
			if i < len(reqs)-1 && r.samples != per {
				t.Fatalf("shard %d request %d of %d: %d samples, want %d", sh, i, len(reqs), r.samples, per)
			}
			if r.samples < 1 || r.samples > per {
				t.Fatalf("shard %d last request: %d samples", sh, r.samples)
			}
			perSeries := map[uint64]int{}
			for _, ts := range wr.Timeseries {
				if len(ts.Samples) != 1 || len(ts.Histograms) != 0 {
					t.Fatalf("TimeSeries with %d samples and %d histograms, want one sample", len(ts.Samples), len(ts.Histograms))
				}
				fp := fingerprintOf(ts.Labels)
				perSeries[fp]++
				if s, ok := shardOfFP[fp]; ok && s != sh {
					t.Fatalf("series %v in shards %d and %d", ts.Labels, s, sh)
				}
				shardOfFP[fp] = sh
				s := ts.Samples[0]
				if s.Timestamp < lastTs {
					t.Fatalf("shard %d: timestamp %d after %d", sh, s.Timestamp, lastTs)
				}
				lastTs = s.Timestamp
				all = append(all, decoded{fp, s.Timestamp, math.Float64bits(s.Value)})
			}
			if r.samples == per && len(perSeries) == r.samples {
				t.Errorf("shard %d request %d: no series repeats in a full request of ~%d series/shard", sh, i, p.totalSeries()/shards)
			}
		}
	}
	if len(all) != p.totalSamples() {
		t.Fatalf("%d samples in requests, want %d", len(all), p.totalSamples())
	}
	if len(shardOfFP) != p.totalSeries() {
		t.Fatalf("%d series in requests, want %d", len(shardOfFP), p.totalSeries())
	}

	// The direct batches hold exactly the same rows.
	var direct []decoded
	var batches []*adapter.Batch
	p.directBatches(5000, nil, func(b *adapter.Batch) { batches = append(batches, b) })
	seriesRows := 0
	for i, b := range batches {
		if i < len(batches)-1 && b.Samples() != 5000 {
			t.Fatalf("batch %d: %d rows, want 5000", i, b.Samples())
		}
		if len(b.Targets) != b.Samples() || len(b.Fingerprints) != b.Samples() || len(b.Values) != b.Samples() {
			t.Fatalf("batch %d: ragged columns", i)
		}
		for j := range b.Timestamps {
			direct = append(direct, decoded{b.Fingerprints[j], b.Timestamps[j], math.Float64bits(b.Values[j])})
		}
		for _, s := range b.Series {
			if s.FirstSeen > s.LastSeen || len(s.Names) != len(s.Values) || s.MetricName == "" {
				t.Fatalf("bad series row %+v", s)
			}
		}
		seriesRows += len(b.Series)
	}
	if len(batches[0].Series) != p.totalSeries() {
		t.Errorf("first batch carries %d series rows, want all %d", len(batches[0].Series), p.totalSeries())
	}
	// 300 scrapes x 15 s = 75 min: every series spans 2 or 3 clock hours, so it gets a row
	// in the first batch and one per later hour it reaches.
	if seriesRows < 2*p.totalSeries() || seriesRows > 3*p.totalSeries() {
		t.Errorf("%d series rows for %d series over 75 minutes, want 2-3 per series", seriesRows, p.totalSeries())
	}
	sortDecoded := func(s []decoded) {
		slices.SortFunc(s, func(a, b decoded) int {
			switch {
			case a.fp != b.fp:
				return cmp.Compare(a.fp, b.fp)
			case a.ts != b.ts:
				return cmp.Compare(uint64(a.ts), uint64(b.ts))
			}
			return cmp.Compare(a.v, b.v)
		})
	}
	sortDecoded(all)
	sortDecoded(direct)
	if !slices.Equal(all, direct) {
		t.Fatal("direct batches and remote-write requests hold different samples")
	}
}

func TestDeterminism(t *testing.T) {
	digest := func(c genConfig, shards int) [32]byte {
		p := mustPlan(t, c)
		h := sha256.New()
		for sh := range shards {
			p.shardRequests(sh, shards, 2000, nil, func(r request) { h.Write(r.body) })
		}
		return [32]byte(h.Sum(nil))
	}
	c := testConfig()
	a, b := digest(c, 4), digest(c, 4)
	if a != b {
		t.Fatal("same seed, different request bodies")
	}
	c2 := c
	c2.Seed++
	if digest(c2, 4) == a {
		t.Fatal("different seeds, same request bodies")
	}
	// Values do not depend on how series are grouped into shards.
	values := func(shards int) map[decoded]bool {
		p := mustPlan(t, c)
		m := map[decoded]bool{}
		for sh := range shards {
			p.shardRequests(sh, shards, 2000, nil, func(r request) {
				for _, ts := range decodeBody(t, r.body).Timeseries {
					m[decoded{fingerprintOf(ts.Labels), ts.Samples[0].Timestamp, math.Float64bits(ts.Samples[0].Value)}] = true
				}
			})
		}
		return m
	}
	v1, v3 := values(1), values(3)
	if len(v1) != len(v3) {
		t.Fatalf("%d vs %d distinct samples", len(v1), len(v3))
	}
	for k := range v1 {
		if !v3[k] {
			t.Fatalf("sample %+v with 1 shard missing with 3 shards", k)
		}
	}
}

func TestRetryDelay(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"", 40 * time.Millisecond},
		{"2", 2 * time.Second},
		{"0", 0},
		{"Wed, 01 Jan 2025 00:00:05 GMT", 5 * time.Second},
		{"garbage", 40 * time.Millisecond},
	} {
		h := http.Header{}
		if tc.header != "" {
			h.Set("Retry-After", tc.header)
		}
		if got := retryDelay(h, 40*time.Millisecond, now); got != tc.want {
			t.Errorf("Retry-After %q: %s, want %s", tc.header, got, tc.want)
		}
	}
	for status, want := range map[int]bool{500: true, 503: true, 429: true, 400: false, 413: false, 204: false} {
		if retryable(status) != want {
			t.Errorf("retryable(%d) = %v", status, !want)
		}
	}
}

func TestParseStatus(t *testing.T) {
	status := []byte("Name:\tpyramid\nVmPeak:\t 1234 kB\nVmHWM:\t   56789 kB\nVmRSS:\t   40000 kB\n")
	for key, want := range map[string]int64{"VmHWM": 56789, "VmRSS": 40000} {
		got, err := parseStatusKiB(status, key)
		if err != nil || got != want {
			t.Errorf("%s = %d, %v; want %d", key, got, err, want)
		}
	}
	if _, err := parseStatusKiB(status, "VmSwap"); err == nil {
		t.Error("missing key: no error")
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(d, tc.p); got != tc.want {
			t.Errorf("p%g = %s, want %s", tc.p*100, got, tc.want)
		}
	}
}
