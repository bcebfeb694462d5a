package rollup

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/value"
)

// TestStampOneBucketOnePoint: a range of exactly one bucket, evaluated at the bucket's end,
// selects exactly that bucket's point, under Prometheus 3's left-open ranges and Prometheus
// 2's closed ones; in Prometheus 3 also evaluated one millisecond earlier.
func TestStampOneBucketOnePoint(t *testing.T) {
	type window struct {
		name       string
		t          func(s, res int64) int64
		leftClosed bool
	}
	windows := []window{
		{"prometheus 3 at the bucket end", func(s, res int64) int64 { return s + res }, false},
		{"prometheus 3 at the bucket's last ms", func(s, res int64) int64 { return s + res - 1 }, false},
		{"prometheus 2 at the bucket end", func(s, res int64) int64 { return s + res }, true},
	}
	for _, res := range []int64{min5, hour, day1} {
		for _, s := range []int64{0, 3 * res, -res, -7 * res, 1700000000000 / res * res} {
			for _, w := range windows {
				at := w.t(s, res)
				var seen []int64
				for b := s - 2*res; b <= s+2*res; b += res {
					st := Stamp(b, res)
					if st <= at && (st > at-res || (w.leftClosed && st == at-res)) {
						seen = append(seen, b)
					}
				}
				if len(seen) != 1 || seen[0] != s {
					t.Errorf("res %d, bucket %d, %s: sees buckets %v, want only %d", res, s, w.name, seen, s)
				}
			}
			if st := Stamp(s, res); BucketStart(st, res) != s {
				t.Errorf("stamp %d of bucket %d lies outside it", st, s)
			}
		}
	}
}

func TestAggregatePoint(t *testing.T) {
	a, _ := AggregateBucket([]int64{60_000, 90_000, 120_000, 150_000}, []float64{4, 10, 1, 3})
	for _, tc := range []struct {
		kind Kind
		want Point
	}{
		{KindAvg, Point{T: min5 - 1, V: 4.5}},
		{KindMax, Point{T: min5 - 1, V: 10}},
		{KindMin, Point{T: min5 - 1, V: 1}},
		{KindSum, Point{T: min5 - 1, V: 18}},
		{KindLast, Point{T: 150_000, V: 3}},
	} {
		got, err := a.Point(tc.kind, 0, min5)
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.kind, got, err, tc.want)
		}
	}
	for _, k := range []Kind{KindCounter, KindRaw, Kind(99)} {
		if _, err := a.Point(k, 0, min5); err == nil {
			t.Errorf("%s: no error", k)
		}
	}
	if _, err := (Aggregate{}).Point(KindAvg, 0, min5); err == nil {
		t.Error("empty aggregate: no error")
	}
}

func TestPoints(t *testing.T) {
	ts := []int64{0, min1, 6 * min1, 7 * min1, 21 * min1}
	vs := []float64{1, 5, 2, 2, 9}
	buckets := Downsample(ts, vs, min5)
	got, err := Points(KindMax, buckets)
	if err != nil {
		t.Fatal(err)
	}
	want := []Point{{min5 - 1, 5}, {2*min5 - 1, 2}, {5*min5 - 1, 9}}
	if !equalPoints(got, want) {
		t.Errorf("max points %v, want %v", got, want)
	}
	if _, err := Points(KindMax, []BucketAggregate{buckets[1], buckets[0]}); err == nil || !strings.Contains(err.Error(), "before the end") {
		t.Errorf("unordered buckets: error %v", err)
	}
	if _, err := Points(KindRaw, buckets); err == nil {
		t.Error("raw kind: no error")
	}
}

// TestCounterHandComputed follows the counter points through resets inside a bucket, at a
// bucket boundary, at the seam to raw and inside raw, with stale markers in raw.
func TestCounterHandComputed(t *testing.T) {
	// Bucket [0, 5m): 10, 20, reset, 5: correction 20, last 5.
	// Bucket [5m, 10m): 8, 12: no reset (8 > 5).
	// Bucket [10m, 15m): 3, 4: reset at the boundary (3 < 12).
	// Raw after 15m: 6, stale, 1 (reset), 2.
	ts := []int64{0, min1, 2 * min1, 5 * min1, 8 * min1, 10 * min1, 14 * min1}
	vs := []float64{10, 20, 5, 8, 12, 3, 4}
	var c Counter
	var got []Point
	for _, b := range Downsample(ts, vs, min5) {
		got = c.Bucket(got, b)
	}
	for i, v := range []float64{6, stale, 1, 2} {
		got = append(got, c.Sample(15*min1+int64(i)*15*sec, v))
	}
	want := []Point{
		{0, 10},                   // the first bucket opens the data: its first sample too
		{2 * min1, 25},            // 5 + 20
		{8 * min1, 32},            // 12 + 20
		{14 * min1, 36},           // 4 + 20 + 12
		{15 * min1, 38},           // 6 + 32
		{15*min1 + 15*sec, stale}, // unchanged
		{15*min1 + 30*sec, 39},    // 1 + 32 + 6
		{15*min1 + 45*sec, 40},    // 2 + 38
	}
	if !equalPoints(got, want) {
		t.Errorf("counter points\n got %v\nwant %v", got, want)
	}
	// The increase between any two points is the raw increase between those samples: from
	// the first sample's 10 at t=0 the raw increase to the last sample is
	// 10 (to 20) + 5 (reset) + 3 + 4 (to 12) + 3 (reset) + 1 + 2 (to 6) + 1 (reset) + 1 = 30,
	// and the points reach 40 from the raw 10 the first bucket started with.
	if got[len(got)-1].V-10 != 30 {
		t.Errorf("total increase %v, want 30", got[len(got)-1].V-10)
	}
	if p := c.Bucket(nil, BucketAggregate{}); len(p) != 0 {
		t.Errorf("empty bucket gave points %v", p)
	}
}

// TestCounterOpeningPoints: a bucket that opens the data, the first one or the first after
// an empty bucket, also gives a point at its first sample, unless that is its only sample.
func TestCounterOpeningPoints(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   []int64
		vs   []float64
		want []Point
	}{
		{
			// [0, 5m): 2, 4. [5m, 10m): 5, 7. [10m, 15m) empty. [15m, 20m): 1 (a reset
			// after the gap: offset 7), 3. [20m, 25m): 4.
			name: "first bucket and after a gap",
			ts:   []int64{min1, 3 * min1, 6 * min1, 8 * min1, 16 * min1, 18 * min1, 21 * min1},
			vs:   []float64{2, 4, 5, 7, 1, 3, 4},
			want: []Point{{min1, 2}, {3 * min1, 4}, {8 * min1, 7}, {16 * min1, 8}, {18 * min1, 10}, {21 * min1, 11}},
		},
		{
			name: "an opening bucket of one sample",
			ts:   []int64{2 * min1, 7 * min1},
			vs:   []float64{5, 6},
			want: []Point{{2 * min1, 5}, {7 * min1, 6}},
		},
	} {
		var c Counter
		var got []Point
		for _, b := range Downsample(tc.ts, tc.vs, min5) {
			got = c.Bucket(got, b)
		}
		if !equalPoints(got, tc.want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, got, tc.want)
		}
	}
}

// TestCounterOpeningPointRate backs the error the Counter documents for a series' first
// ranges. A counter enters at 1e6 and counts 100/s from then on; rate(x[4h]) over 1h
// rollup points, evaluated m minutes after the series began, against rate over raw: where
// the range starts more than 1.1 buckets before the series, Prometheus extrapolates half a
// bucket there (raw: half a scrape), +0.5h/covered; where it starts less than that before
// it, the whole gap, +(4h-covered)/covered; once the series fills the range, nothing.
func TestCounterOpeningPointRate(t *testing.T) {
	const scrape = 15 * sec
	start := 100*hour + 7*sec
	var ts []int64
	var vs []float64
	for k := range int64(5 * 240) {
		ts = append(ts, start+k*scrape)
		vs = append(vs, 1e6+float64(k)*100*15)
	}
	var c Counter
	var pts []Point
	for _, b := range Downsample(ts, vs, hour) {
		pts = c.Bucket(pts, b)
	}
	raw := make([]Point, len(ts))
	for i := range ts {
		raw[i] = Point{ts[i], vs[i]}
	}
	for _, tc := range []struct {
		minutes  int64
		min, max float64 // the relative error, rollup over raw
	}{
		{60, 0.45, 0.50},   // 0.5h over 1h
		{120, 0.22, 0.25},  // 0.5h over 2h
		{180, 0.30, 0.334}, // the whole 1h gap over 3h
		{240, -1e-9, 1e-9}, // the series fills the range
	} {
		at := 100*hour + tc.minutes*min1
		want, ok1 := promRate(raw, at, 4*hour)
		got, ok2 := promRate(pts, at, 4*hour)
		if !ok1 || !ok2 {
			t.Fatalf("%d min in: raw ok %v, rollup ok %v", tc.minutes, ok1, ok2)
		}
		if e := got/want - 1; e < tc.min || e > tc.max {
			t.Errorf("%d min in: rate over points %v, over raw %v: error %+.2f%%, want %+.1f%% to %+.1f%%", tc.minutes, got, want, 100*e, 100*tc.min, 100*tc.max)
		}
	}
}

// TestCounterPointsIncrease: for random integer counters, the difference between any two
// counter points equals Prometheus's raw increase between those two samples (last - first
// plus the value before every drop), and the points never drop.
func TestCounterPointsIncrease(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 7))
		ts, vs := randomCounterSeries(rng, 15*sec, 2*day1, 0, 0.1)
		for i := range vs {
			vs[i] = math.Floor(vs[i])
		}
		res := []int64{min5, hour}[seed%2]
		pts, err := Points(KindCounter, Downsample(ts, vs, res))
		if err != nil {
			t.Fatal(err)
		}
		index := make(map[int64]int, len(ts))
		for i, ts := range ts {
			index[ts] = i
		}
		for k := 1; k < len(pts); k++ {
			if pts[k].V < pts[k-1].V {
				t.Fatalf("seed %d: point %d drops from %v to %v", seed, k, pts[k-1].V, pts[k].V)
			}
		}
		for n := 0; n < 200; n++ {
			a, b := rng.IntN(len(pts)), rng.IntN(len(pts))
			if a > b {
				a, b = b, a
			}
			i, j := index[pts[a].T], index[pts[b].T]
			want := vs[j] - vs[i]
			for k := i + 1; k <= j; k++ {
				if vs[k] < vs[k-1] {
					want += vs[k-1]
				}
			}
			if got := pts[b].V - pts[a].V; got != want {
				t.Fatalf("seed %d: points %d..%d increase %v, raw %v", seed, a, b, got, want)
			}
		}
	}
}

// TestCounterMonotonic: with non-integer values and huge offsets the points still never
// drop, which a rounding of one ulp would otherwise make rate() read as a reset.
func TestCounterMonotonic(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 8))
		var c Counter
		prev := math.Inf(-1)
		v := 0.0
		for i := range 20000 {
			v += rng.Float64() * math.Pow(10, float64(rng.IntN(12)))
			if rng.IntN(5) == 0 {
				v = rng.Float64() * 1e-3
			}
			p := c.Sample(int64(i), v)
			if p.V < prev {
				t.Fatalf("seed %d sample %d: %v after %v", seed, i, p.V, prev)
			}
			prev = p.V
		}
	}
}

// TestRateOverCounterPoints: rate() over counter points against rate() over raw, for ranges
// of at least four buckets evaluated every minute at times not aligned to buckets, on
// counters with resets (some exactly at bucket boundaries), served by one tier, by a tier
// then raw aggregated to its resolution on the fly (the right edge of range queries, where
// rollups lag), by two tiers rolled up to the coarser, and by a tier then raw samples as
// they are (instant queries over a range reaching past raw retention).
//
// With the rate steady to ±5% from scrape to scrape, every evaluation is within 1%. Ranges
// holding a reset get scrape/r more (1.25% for rate[20m]): the counter's increase between
// the last scrape and the restart is lost to rate() on raw as well, and raw and rollup
// points see that dent at different places relative to their extrapolation. With ±20% the
// piece of up to one bucket at the range start that the points miss is noisier: 99% of
// evaluations are within 2%, all within 3%. (Without noise and resets the error is 0.)
func TestRateOverCounterPoints(t *testing.T) {
	const scrape = 15 * sec
	type source int
	const (
		oneTier            source = iota
		tierThenRaw               // raw after seam, aggregated to res on the fly
		twoTiers                  // 5m rows rolled up to res after the seam
		tierThenRawSamples        // raw samples after the seam, through Counter.Sample
	)
	for _, tc := range []struct {
		name     string
		res, rng int64
		src      source
		noise    float64
		max, p99 float64
	}{
		{"5m tier, rate[20m]", min5, 20 * min1, oneTier, 0.05, 0.01, 0.01},
		{"5m tier, rate[1h]", min5, hour, oneTier, 0.05, 0.01, 0.01},
		{"1h tier, rate[4h]", hour, 4 * hour, oneTier, 0.05, 0.01, 0.01},
		{"1h tier, rate[1d]", hour, day1, oneTier, 0.05, 0.01, 0.01},
		{"5m tier then raw as 5m, rate[20m]", min5, 20 * min1, tierThenRaw, 0.05, 0.01, 0.01},
		{"1h tier then raw as 1h, rate[4h]", hour, 4 * hour, tierThenRaw, 0.05, 0.01, 0.01},
		{"1h tier then 5m tier as 1h, rate[4h]", hour, 4 * hour, twoTiers, 0.05, 0.01, 0.01},
		{"5m tier then raw samples, rate[1d]", min5, day1, tierThenRawSamples, 0.05, 0.01, 0.01},
		{"noisy: 5m tier, rate[20m]", min5, 20 * min1, oneTier, 0.2, 0.03, 0.02},
		{"noisy: 1h tier then raw as 1h, rate[4h]", hour, 4 * hour, tierThenRaw, 0.2, 0.03, 0.02},
	} {
		var errs []float64
		for seed := range uint64(4) {
			rng := rand.New(rand.NewPCG(seed, 9))
			ts, vs := randomCounterSeries(rng, scrape, 3*day1, tc.res, tc.noise)
			seam := len(ts)
			if tc.src != oneTier {
				seam = len(ts) / 2
				for BucketStart(ts[seam], tc.res) == BucketStart(ts[seam-1], tc.res) {
					seam++
				}
			}
			var c Counter
			var pts []Point
			for _, b := range Downsample(ts[:seam], vs[:seam], tc.res) {
				pts = c.Bucket(pts, b)
			}
			switch tc.src {
			case tierThenRaw:
				for _, b := range Downsample(ts[seam:], vs[seam:], tc.res) {
					pts = c.Bucket(pts, b)
				}
			case twoTiers:
				up, err := Rollup(Downsample(ts[seam:], vs[seam:], min5), tc.res)
				if err != nil {
					t.Fatal(err)
				}
				for _, b := range up {
					pts = c.Bucket(pts, b)
				}
			case tierThenRawSamples:
				for i := seam; i < len(ts); i++ {
					pts = append(pts, c.Sample(ts[i], vs[i]))
				}
			}
			raw := make([]Point, len(ts))
			for i := range ts {
				raw[i] = Point{ts[i], vs[i]}
			}
			for at := ts[0] + tc.rng + 17*sec; at <= ts[len(ts)-1]; at += min1 {
				want, ok1 := promRate(raw, at, tc.rng)
				got, ok2 := promRate(pts, at, tc.rng)
				if !ok1 || !ok2 {
					t.Fatalf("%s seed %d at %d: raw ok %v, rollup ok %v", tc.name, seed, at, ok1, ok2)
				}
				e := math.Abs(got-want) / want
				errs = append(errs, e)
				limit := tc.max
				if resetWithin(raw, at-tc.rng-tc.res, at) {
					limit += float64(scrape) / float64(tc.rng)
				}
				if e > limit {
					t.Errorf("%s seed %d at %d: rate %v over points, %v over raw (%.2f%%)", tc.name, seed, at, got, want, 100*e)
				}
			}
		}
		slices.Sort(errs)
		p99 := errs[len(errs)*99/100]
		if p99 > tc.p99 {
			t.Errorf("%s: 99th percentile error %.3f%%, want at most %.1f%%", tc.name, 100*p99, 100*tc.p99)
		}
		t.Logf("%s: error median %.3f%%, p99 %.3f%%, max %.3f%% over %d evaluations", tc.name, 100*errs[len(errs)/2], 100*p99, 100*errs[len(errs)-1], len(errs))
	}
}

// resetWithin reports whether the counter drops in (from, to]; pts are in time order.
func resetWithin(pts []Point, from, to int64) bool {
	i, _ := slices.BinarySearchFunc(pts, from+1, func(p Point, t int64) int { return cmp.Compare(p.T, t) })
	for i = max(i, 1); i < len(pts) && pts[i].T <= to; i++ {
		if pts[i].V < pts[i-1].V {
			return true
		}
	}
	return false
}

// randomCounterSeries is a counter scraped every interval (±2% jitter) for length: about
// 100/s, the rate of each scrape interval off by up to ±noise, reset every few hours to
// part of the increase since the previous scrape, and, if res > 0, reset twice a day or so
// exactly as a bucket begins.
func randomCounterSeries(rng *rand.Rand, interval, length, res int64, noise float64) ([]int64, []float64) {
	var (
		ts []int64
		vs []float64
		v  = rng.Float64() * 1e6
	)
	start := rng.Int64N(day1)
	for t := start; t < start+length; {
		dt := interval + rng.Int64N(interval/25+1) - interval/50
		inc := 100 * float64(dt) / 1000 * (1 - noise + 2*noise*rng.Float64())
		t += dt
		crossed := res > 0 && BucketStart(t, res) != BucketStart(t-dt, res)
		switch {
		case rng.IntN(int(6*hour/interval)) == 0:
			v = inc * rng.Float64()
		case crossed && rng.IntN(int(12*hour/res)+1) == 0:
			// The first sample of a bucket is a reset.
			v = inc * rng.Float64()
		default:
			v += inc
		}
		ts, vs = append(ts, t), append(vs, v)
	}
	return ts, vs
}

// promRate is Prometheus's rate() over float samples (extrapolatedRate in
// promql/functions.go, without the anchored and smoothed modifiers) for the range
// (at-rng, at], which Prometheus 3 selects.
func promRate(pts []Point, at, rng int64) (float64, bool) {
	// pts are in time order: (at-rng, at] is pts[lo:hi].
	lo, _ := slices.BinarySearchFunc(pts, at-rng+1, func(p Point, t int64) int { return cmp.Compare(p.T, t) })
	hi, _ := slices.BinarySearchFunc(pts, at+1, func(p Point, t int64) int { return cmp.Compare(p.T, t) })
	var (
		n           int
		first, last Point
		result      float64
	)
	for _, p := range pts[lo:hi] {
		if value.IsStaleNaN(p.V) {
			continue
		}
		if n == 0 {
			first = p
		} else if p.V < last.V {
			result += last.V
		}
		last = p
		n++
	}
	if n < 2 {
		return 0, false
	}
	result += last.V - first.V
	durationToStart := float64(first.T-(at-rng)) / 1000
	durationToEnd := float64(at-last.T) / 1000
	sampledInterval := float64(last.T-first.T) / 1000
	averageDurationBetweenSamples := sampledInterval / float64(n-1)
	extrapolationThreshold := averageDurationBetweenSamples * 1.1
	if durationToStart >= extrapolationThreshold {
		durationToStart = averageDurationBetweenSamples / 2
	}
	durationToZero := durationToStart
	if result > 0 && first.V >= 0 {
		durationToZero = sampledInterval * (first.V / result)
	}
	if durationToZero < durationToStart {
		durationToStart = durationToZero
	}
	if durationToEnd >= extrapolationThreshold {
		durationToEnd = averageDurationBetweenSamples / 2
	}
	factor := (sampledInterval + durationToStart + durationToEnd) / sampledInterval
	factor /= float64(rng) / 1000
	return result * factor, true
}

func equalPoints(a, b []Point) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].T != b[i].T || !sameFloat(a[i].V, b[i].V) {
			return false
		}
	}
	return true
}
