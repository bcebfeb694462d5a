package rollup

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/util/kahansum"
)

const (
	sec  = int64(1000)
	min1 = 60 * sec
	min5 = 5 * min1
	hour = 60 * min1
	day1 = 24 * hour
)

var (
	stale = math.Float64frombits(value.StaleNaN)
	nan   = math.NaN()
	inf   = math.Inf(1)
	negZ  = math.Copysign(0, -1)
)

func TestBucketStart(t *testing.T) {
	for _, tc := range []struct{ ts, res, want int64 }{
		{0, min5, 0},
		{1, min5, 0},
		{min5 - 1, min5, 0},
		{min5, min5, min5},
		{min5 + 1, min5, min5},
		{-1, min5, -min5},
		{-min5, min5, -min5},
		{-min5 - 1, min5, -2 * min5},
		{-min5 + 1, min5, -min5},
		{1700000123456, hour, 1700000123456 / hour * hour},
		{-1700000123456, hour, -(1700000123456/hour + 1) * hour},
		{7, 1, 7},
		{-7, 1, -7},
	} {
		if got := BucketStart(tc.ts, tc.res); got != tc.want {
			t.Errorf("BucketStart(%d, %d) = %d, want %d", tc.ts, tc.res, got, tc.want)
		}
	}
}

// agg builds an expected Aggregate whose sums are exact, so SumComp and CorrectionComp
// are 0.
func agg(count uint64, sum, lo, hi float64, firstT, lastT int64, first, last, corr float64, resets uint64) Aggregate {
	return Aggregate{Count: count, Sum: sum, Min: lo, Max: hi, FirstT: firstT, LastT: lastT,
		First: first, Last: last, Correction: corr, Resets: resets}
}

func TestAggregateBucket(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ts       []int64
		vs       []float64
		want     Aggregate
		ok       bool
		increase float64
	}{
		{
			name: "empty",
		},
		{
			name: "single sample",
			ts:   []int64{42}, vs: []float64{7},
			want: agg(1, 7, 7, 7, 42, 42, 7, 7, 0, 0), ok: true, increase: 0,
		},
		{
			name: "counter without reset",
			ts:   []int64{0, 15, 30, 45}, vs: []float64{10, 12, 12, 20},
			want: agg(4, 54, 10, 20, 0, 45, 10, 20, 0, 0), ok: true, increase: 10,
		},
		{
			// 10 → 15 (+5), reset to 3 (+3), → 8 (+5): increase 13 = 8 - 10 + 15.
			name: "one reset",
			ts:   []int64{0, 15, 30, 45}, vs: []float64{10, 15, 3, 8},
			want: agg(4, 36, 3, 15, 0, 45, 10, 8, 15, 1), ok: true, increase: 13,
		},
		{
			// 5 → 9 (+4), reset to 2 (+2), → 6 (+4), reset to 0 (+0), → 1 (+1), flat.
			// Increase 11 = 1 - 5 + (9 + 6).
			name: "several resets",
			ts:   []int64{0, 1, 2, 3, 4, 5, 6}, vs: []float64{5, 9, 2, 6, 0, 1, 1},
			want: agg(7, 24, 0, 9, 0, 6, 5, 1, 15, 2), ok: true, increase: 11,
		},
		{
			// A reset to a value above the first: 100 → 200 (+100), reset to 150 (+150).
			// Increase 250 = 150 - 100 + 200.
			name: "reset above first value",
			ts:   []int64{0, 1, 2}, vs: []float64{100, 200, 150},
			want: agg(3, 450, 100, 200, 0, 2, 100, 150, 200, 1), ok: true, increase: 250,
		},
		{
			name: "only stale markers",
			ts:   []int64{0, 15}, vs: []float64{stale, stale},
		},
		{
			// The stale marker is skipped entirely: 3 < 5 is a reset, as in rate().
			name: "stale between values",
			ts:   []int64{0, 15, 30, 45}, vs: []float64{5, stale, 3, 4},
			want: agg(3, 12, 3, 5, 0, 45, 5, 4, 5, 1), ok: true, increase: 4,
		},
		{
			name: "stale first and last",
			ts:   []int64{0, 15, 30, 45}, vs: []float64{stale, 1, 2, stale},
			want: agg(2, 3, 1, 2, 15, 30, 1, 2, 0, 0), ok: true, increase: 1,
		},
		{
			// A real NaN is a value: counted and summed; min and max skip it as
			// min_over_time and max_over_time do; no reset around it.
			name: "real NaN among values",
			ts:   []int64{0, 1, 2}, vs: []float64{4, nan, 2},
			want: agg(3, nan, 2, 4, 0, 2, 4, 2, 0, 0), ok: true, increase: -2,
		},
		{
			name: "real NaN first",
			ts:   []int64{0, 1, 2}, vs: []float64{nan, 4, 2},
			want: agg(3, nan, 2, 4, 0, 2, nan, 2, 4, 1), ok: true, increase: nan,
		},
		{
			name: "only real NaN",
			ts:   []int64{0, 1}, vs: []float64{nan, nan},
			want: agg(2, nan, nan, nan, 0, 1, nan, nan, 0, 0), ok: true, increase: nan,
		},
		{
			name: "negative timestamps",
			ts:   []int64{-3 * min1, -2 * min1, -1}, vs: []float64{1, 2, 4},
			want: agg(3, 7, 1, 4, -3*min1, -1, 1, 4, 0, 0), ok: true, increase: 3,
		},
		{
			name: "infinities",
			ts:   []int64{0, 1, 2}, vs: []float64{1, inf, 2},
			want: agg(3, inf, 1, inf, 0, 2, 1, 2, inf, 1), ok: true, increase: inf,
		},
		{
			name: "opposite infinities",
			ts:   []int64{0, 1}, vs: []float64{inf, -inf},
			want: agg(2, nan, -inf, inf, 0, 1, inf, -inf, inf, 1), ok: true, increase: nan,
		},
	} {
		got, ok := AggregateBucket(tc.ts, tc.vs)
		if ok != tc.ok {
			t.Errorf("%s: ok = %v, want %v", tc.name, ok, tc.ok)
			continue
		}
		if d := diffAggregate(got, tc.want, 0); d != "" {
			t.Errorf("%s: %s", tc.name, d)
		}
		if ok && !sameFloat(got.Increase(), tc.increase) {
			t.Errorf("%s: Increase() = %v, want %v", tc.name, got.Increase(), tc.increase)
		}
	}
}

func TestAggregateBucketSignedZero(t *testing.T) {
	// Of equal values the earliest wins, as in min_over_time and max_over_time.
	a, _ := AggregateBucket([]int64{0, 1}, []float64{negZ, 0})
	if !math.Signbit(a.Min) || !math.Signbit(a.Max) {
		t.Errorf("min %v max %v of [-0, 0]: want -0 for both", a.Min, a.Max)
	}
	b, _ := AggregateBucket([]int64{2, 3}, []float64{0, negZ})
	if math.Signbit(b.Min) || math.Signbit(b.Max) {
		t.Errorf("min %v max %v of [0, -0]: want +0 for both", b.Min, b.Max)
	}
	if m := Merge(b, a); math.Signbit(m.Min) || math.Signbit(m.Max) {
		t.Errorf("merged min %v max %v: want the earlier +0", m.Min, m.Max)
	}
}

func TestDownsample(t *testing.T) {
	// Three 5m buckets with samples, one empty bucket between, one holding only a stale
	// marker, and a reset exactly at a bucket boundary: the last sample of [0, 5m) is 30,
	// the first of [5m, 10m) is 2. The boundary reset belongs to neither bucket; Merge
	// (and the counter points) account for it.
	ts := []int64{0, 1 * min1, 4 * min1, 5 * min1, 6 * min1, 9*min1 + 59*sec, 16 * min1, 21 * min1, 22 * min1}
	vs := []float64{10, 20, 30, 2, 5, 9, stale, 1, 3}
	got := Downsample(ts, vs, min5)
	want := []BucketAggregate{
		{Start: 0, Res: min5, Aggregate: agg(3, 60, 10, 30, 0, 4*min1, 10, 30, 0, 0)},
		{Start: min5, Res: min5, Aggregate: agg(3, 16, 2, 9, 5*min1, 9*min1+59*sec, 2, 9, 0, 0)},
		{Start: 4 * min5, Res: min5, Aggregate: agg(2, 4, 1, 3, 21*min1, 22*min1, 1, 3, 0, 0)},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d buckets %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i].Start != want[i].Start || got[i].Res != want[i].Res {
			t.Errorf("bucket %d: [%d, +%d), want [%d, +%d)", i, got[i].Start, got[i].Res, want[i].Start, want[i].Res)
		}
		if d := diffAggregate(got[i].Aggregate, want[i].Aggregate, 0); d != "" {
			t.Errorf("bucket %d: %s", i, d)
		}
	}
	// The 10m rollup of the first two buckets sees the boundary reset.
	up, err := Rollup(got, 2*min5)
	if err != nil {
		t.Fatal(err)
	}
	if first := up[0]; first.Resets != 1 || first.Correction != 30 || first.Increase() != 29 {
		t.Errorf("10m bucket: resets %d correction %v increase %v, want 1, 30, 29 (+20 to 30, reset to 2, +7 to 9)", first.Resets, first.Correction, first.Increase())
	}
}

func TestDownsampleNegativeTimestamps(t *testing.T) {
	// Samples before 1970 land in the buckets their floor gives, and one straddling zero
	// splits at 0.
	ts := []int64{-min5 - 1, -min5, -1, 0, min5 - 1}
	vs := []float64{1, 2, 3, 4, 5}
	got := Downsample(ts, vs, min5)
	wantStarts := []int64{-2 * min5, -min5, 0}
	wantCounts := []uint64{1, 2, 2}
	if len(got) != 3 {
		t.Fatalf("got %d buckets, want 3: %+v", len(got), got)
	}
	for i, b := range got {
		if b.Start != wantStarts[i] || b.Count != wantCounts[i] {
			t.Errorf("bucket %d: start %d count %d, want %d, %d", i, b.Start, b.Count, wantStarts[i], wantCounts[i])
		}
	}
}

func TestMergeIdentity(t *testing.T) {
	a, _ := AggregateBucket([]int64{1, 2}, []float64{3, 1})
	if d := diffAggregate(Merge(a, Aggregate{}), a, 0); d != "" {
		t.Errorf("a ⊕ empty: %s", d)
	}
	if d := diffAggregate(Merge(Aggregate{}, a), a, 0); d != "" {
		t.Errorf("empty ⊕ a: %s", d)
	}
}

// TestMergeSplits checks Merge against AggregateBucket on hand-made series split at every
// position: both halves' aggregates merged must equal the whole's, including a reset at
// the split, stale markers and NaNs on either side.
func TestMergeSplits(t *testing.T) {
	for _, vs := range [][]float64{
		{10, 15, 3, 8},
		{5, 9, 2, 6, 0, 1, 1},
		{30, 2, 5, 9},
		{5, stale, 3, 4},
		{stale, stale, 1},
		{4, nan, 2, nan, 7},
		{nan, nan, 3, 3},
		{negZ, 0, negZ, 1, 0},
		{0.1, 0.2, 0.3, 1e16, -1e16, 0.4},
		{inf, 1, -inf},
	} {
		ts := make([]int64, len(vs))
		for i := range ts {
			ts[i] = int64(i) * 15 * sec
		}
		whole, ok := AggregateBucket(ts, vs)
		for cut := 0; cut <= len(vs); cut++ {
			l, _ := AggregateBucket(ts[:cut], vs[:cut])
			r, _ := AggregateBucket(ts[cut:], vs[cut:])
			m := Merge(l, r)
			if (m.Count > 0) != ok {
				t.Errorf("%v cut at %d: merged count %d, whole ok %v", vs, cut, m.Count, ok)
				continue
			}
			if d := diffAggregate(m, whole, 1); d != "" {
				t.Errorf("%v cut at %d: %s", vs, cut, d)
			}
		}
	}
}

// TestSumIsPrometheusSum: the bucket sum is bitwise what sum_over_time computes over the
// same samples (kahansum.Inc, then sum + c unless the sum is infinite).
func TestSumIsPrometheusSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 2000 {
		vs := make([]float64, 1+rng.IntN(300))
		ts := make([]int64, len(vs))
		for i := range vs {
			ts[i] = int64(i)
			vs[i] = randomValue(rng)
		}
		a, _ := AggregateBucket(ts, vs)
		var s, c float64
		for _, v := range vs {
			s, c = kahansum.Inc(v, s, c)
		}
		if !math.IsInf(s, 0) {
			s += c
		}
		if !sameFloat(a.Sum, s) {
			t.Fatalf("series %d: Sum %v (%#x), sum_over_time %v (%#x)", n, a.Sum, math.Float64bits(a.Sum), s, math.Float64bits(s))
		}
	}
}

// TestMinMaxArePrometheus: Min and Max are bitwise min_over_time and max_over_time (the
// loop of compareOverTime in promql/functions.go), NaNs and signed zeros included.
func TestMinMaxArePrometheus(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pick := []float64{nan, 0, negZ, 1, -1, inf, -inf, 2}
	for range 5000 {
		vs := make([]float64, 1+rng.IntN(8))
		ts := make([]int64, len(vs))
		for i := range vs {
			ts[i] = int64(i)
			vs[i] = pick[rng.IntN(len(pick))]
		}
		a, _ := AggregateBucket(ts, vs)
		lo, hi := vs[0], vs[0]
		for _, v := range vs {
			if (v < lo) || math.IsNaN(lo) {
				lo = v
			}
			if (v > hi) || math.IsNaN(hi) {
				hi = v
			}
		}
		if math.Float64bits(a.Min) != math.Float64bits(lo) || math.Float64bits(a.Max) != math.Float64bits(hi) {
			t.Fatalf("%v: min %v max %v, Prometheus %v %v", vs, a.Min, a.Max, lo, hi)
		}
	}
}

// TestIncreaseIsPrometheusIncrease: Increase is rate()'s numerator before extrapolation
// (extrapolatedRate: last - first, plus the previous value at every drop), exactly for
// integer counters and within a few ulps of the result otherwise.
func TestIncreaseIsPrometheusIncrease(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for n := range 2000 {
		integer := n%2 == 0
		vs := randomCounter(rng, 2+rng.IntN(300), integer)
		ts := make([]int64, len(vs))
		for i := range ts {
			ts[i] = int64(i)
		}
		a, _ := AggregateBucket(ts, vs)
		want := vs[len(vs)-1] - vs[0]
		for i := 1; i < len(vs); i++ {
			if vs[i] < vs[i-1] {
				want += vs[i-1]
			}
		}
		if integer && a.Increase() != want {
			t.Fatalf("integer series %d: Increase %v, Prometheus %v", n, a.Increase(), want)
		}
		if d := ulps(a.Increase(), want); d > 4 {
			t.Fatalf("series %d: Increase %v, Prometheus %v: %d ulps apart", n, a.Increase(), want, d)
		}
	}
}

// TestRollupEqualsDownsample is the property the pyramid rests on: a tier computed from the
// finer tier equals the tier computed from raw, bitwise for everything but the sums, which
// are at most one ulp apart (and bitwise equal for integer-valued series).
func TestRollupEqualsDownsample(t *testing.T) {
	ladder := []int64{min1, min5, hour, day1}
	var sums, sumDiffs int
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 42))
		ts, vs := randomSeries(rng, seed%4 != 0)
		integer := seed%3 == 0
		if integer {
			for i, v := range vs {
				if !math.IsNaN(v) {
					vs[i] = math.Round(v)
				}
			}
		}
		prev := Downsample(ts, vs, ladder[0])
		for _, res := range ladder[1:] {
			up, err := Rollup(prev, res)
			if err != nil {
				t.Fatal(err)
			}
			direct := Downsample(ts, vs, res)
			if len(up) != len(direct) {
				t.Fatalf("seed %d, %d ms: %d buckets rolled up, %d from raw", seed, res, len(up), len(direct))
			}
			for i := range direct {
				if up[i].Start != direct[i].Start || up[i].Res != direct[i].Res {
					t.Fatalf("seed %d, %d ms, bucket %d: [%d,+%d) rolled up, [%d,+%d) from raw", seed, res, i, up[i].Start, up[i].Res, direct[i].Start, direct[i].Res)
				}
				tolerance := uint64(1)
				if integer {
					tolerance = 0
				}
				if d := diffAggregate(up[i].Aggregate, direct[i].Aggregate, tolerance); d != "" {
					t.Fatalf("seed %d, %d ms, bucket %d: %s", seed, res, i, d)
				}
				if isFinite(direct[i].Sum) {
					sums++
				}
				if !sameFloat(up[i].Sum, direct[i].Sum) {
					sumDiffs++
				}
			}
			prev = up
		}
	}
	t.Logf("%d rolled-up sums differ from the raw sums by one ulp; %d of all are finite", sumDiffs, sums)
}

func TestRollupErrors(t *testing.T) {
	b := func(start, res int64) BucketAggregate {
		return BucketAggregate{Start: start, Res: res, Aggregate: agg(1, 1, 1, 1, start, start, 1, 1, 0, 0)}
	}
	for _, tc := range []struct {
		name    string
		buckets []BucketAggregate
		res     int64
		want    string
	}{
		{"zero resolution", []BucketAggregate{b(0, min5)}, 0, "must be positive"},
		{"not a multiple", []BucketAggregate{b(0, min5)}, 7 * min1, "does not divide"},
		{"misaligned", []BucketAggregate{b(min1, min5)}, hour, "not a multiple of its resolution"},
		{"out of order", []BucketAggregate{b(min5, min5), b(0, min5)}, hour, "before the end"},
		{"overlapping", []BucketAggregate{b(0, hour), b(min5, min5)}, hour, "before the end"},
	} {
		if _, err := Rollup(tc.buckets, tc.res); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// randomValue draws from a mix meant to stress summation: small and large magnitudes of
// both signs, occasional NaN and infinities.
func randomValue(rng *rand.Rand) float64 {
	switch rng.IntN(20) {
	case 0:
		return nan
	case 1:
		return math.Inf(1 - 2*rng.IntN(2))
	case 2, 3, 4:
		return rng.NormFloat64() * 1e12
	case 5:
		return float64(rng.IntN(1000))
	default:
		return rng.NormFloat64() * math.Pow(10, float64(rng.IntN(10)-3))
	}
}

// randomCounter is a counter of n samples with random increments and resets.
func randomCounter(rng *rand.Rand, n int, integer bool) []float64 {
	vs := make([]float64, n)
	v := 0.0
	for i := range vs {
		inc := rng.ExpFloat64() * 100
		if integer {
			inc = math.Floor(inc)
		}
		v += inc
		if rng.IntN(20) == 0 {
			v = 0
			if !integer {
				v = rng.Float64()
			}
		}
		vs[i] = v
	}
	return vs
}

// randomSeries is one series' samples for a few days around a random start, possibly
// before 1970: scrapes at a random interval with jitter, gaps, stale markers, real NaNs if
// asked for (they make every sum they reach NaN), and values that are either a counter with
// resets or a gauge of random sign and magnitude.
func randomSeries(rng *rand.Rand, withNaN bool) ([]int64, []float64) {
	interval := []int64{sec, 10 * sec, 15 * sec, min1}[rng.IntN(4)]
	t := (rng.Int64N(200*day1) - 100*day1)
	end := t + (1+rng.Int64N(3))*day1
	counter := rng.IntN(2) == 0
	var (
		ts []int64
		vs []float64
		v  = rng.Float64() * 1000
	)
	for t < end {
		switch r := rng.IntN(1000); {
		case r < 3: // a gap of up to 3 hours
			t += rng.Int64N(3 * hour)
			if rng.IntN(2) == 0 {
				ts, vs = append(ts, t), append(vs, stale)
				t += interval
			}
			continue
		case r < 5:
			ts, vs = append(ts, t), append(vs, stale)
		case r < 7 && withNaN:
			ts, vs = append(ts, t), append(vs, nan)
		default:
			if counter {
				v += rng.ExpFloat64() * 10
				if rng.IntN(500) == 0 {
					v = rng.Float64()
				}
			} else {
				v = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(8)-2))
			}
			ts, vs = append(ts, t), append(vs, v)
		}
		t += interval + rng.Int64N(interval/10+1) - interval/20
	}
	return ts, vs
}

// diffAggregate describes how got differs from want: bitwise for the exact fields, within
// sumULPs ulps for Sum and Correction (and their compensations are not compared: they are
// the rounding error of a sum computed in a different order).
func diffAggregate(got, want Aggregate, sumULPs uint64) string {
	var d string
	field := func(name string, g, w float64) {
		if math.Float64bits(g) != math.Float64bits(w) && !(math.IsNaN(g) && math.IsNaN(w)) {
			d += fmt.Sprintf(" %s %v (%#x), want %v (%#x);", name, g, math.Float64bits(g), w, math.Float64bits(w))
		}
	}
	if got.Count != want.Count {
		d += fmt.Sprintf(" count %d, want %d;", got.Count, want.Count)
	}
	if got.Resets != want.Resets {
		d += fmt.Sprintf(" resets %d, want %d;", got.Resets, want.Resets)
	}
	if got.FirstT != want.FirstT || got.LastT != want.LastT {
		d += fmt.Sprintf(" first/last t %d/%d, want %d/%d;", got.FirstT, got.LastT, want.FirstT, want.LastT)
	}
	field("min", got.Min, want.Min)
	field("max", got.Max, want.Max)
	field("first", got.First, want.First)
	field("last", got.Last, want.Last)
	if u := ulps(got.Sum, want.Sum); u > sumULPs {
		d += fmt.Sprintf(" sum %v, want %v (%d ulps);", got.Sum, want.Sum, u)
	}
	if u := ulps(got.Correction, want.Correction); u > sumULPs {
		d += fmt.Sprintf(" correction %v, want %v (%d ulps);", got.Correction, want.Correction, u)
	}
	return d
}

// ulps is the distance between a and b in units in the last place; 0 for equal values
// (0 and -0, two NaNs, equal infinities), the maximum for NaN against a number.
func ulps(a, b float64) uint64 {
	switch {
	case math.IsNaN(a) || math.IsNaN(b):
		if math.IsNaN(a) && math.IsNaN(b) {
			return 0
		}
		return math.MaxUint64
	case a == b:
		return 0
	}
	oa, ob := ordered(a), ordered(b)
	if oa > ob {
		return uint64(oa - ob)
	}
	return uint64(ob - oa)
}

// ordered maps floats to integers in the same order, adjacent floats to adjacent integers.
func ordered(f float64) int64 {
	b := int64(math.Float64bits(f))
	if b < 0 {
		return math.MinInt64 - b
	}
	return b
}

func sameFloat(a, b float64) bool {
	return math.Float64bits(a) == math.Float64bits(b) || (math.IsNaN(a) && math.IsNaN(b))
}
func TestSortDedup(t *testing.T) {
	for _, tc := range []struct {
		name          string
		ts            []int64
		values        []float64
		wantTs        []int64
		wantValues    []float64
		wantConflicts []int64
	}{
		{"empty", nil, nil, nil, nil, nil},
		{"sorted", []int64{1, 2, 3}, []float64{1, 2, 3}, []int64{1, 2, 3}, []float64{1, 2, 3}, nil},
		{"two parts", []int64{4, 5, 1, 2}, []float64{4, 5, 1, 2}, []int64{1, 2, 4, 5}, []float64{1, 2, 4, 5}, nil},
		{"retried write", []int64{1, 2, 1, 2}, []float64{1, 2, 1, 2}, []int64{1, 2}, []float64{1, 2}, nil},
		{"conflict: the first value until resolved", []int64{3, 1, 3}, []float64{30, 10, 31}, []int64{1, 3}, []float64{10, 30}, []int64{3}},
		{"conflicts listed once, in order", []int64{5, 2, 5, 2, 5, 2}, []float64{1, 1, 2, 2, 1, 1}, []int64{2, 5}, []float64{1, 1}, []int64{2, 5}},
		{"NaN payloads differ", []int64{1, 1}, []float64{math.NaN(), math.Float64frombits(0x7ff0000000000002)}, []int64{1}, []float64{math.NaN()}, []int64{1}},
		{"same bits retried thrice", []int64{1, 1, 1}, []float64{-0.5, -0.5, -0.5}, []int64{1}, []float64{-0.5}, nil},
		// Runs merged: three parts' rows interleaved by two reading threads.
		{"three runs", []int64{7, 8, 1, 4, 9, 2, 3}, []float64{7, 8, 1, 4, 9, 2, 3}, []int64{1, 2, 3, 4, 7, 8, 9}, []float64{1, 2, 3, 4, 7, 8, 9}, nil},
		{"runs of one", []int64{5, 4, 3, 2, 1}, []float64{5, 4, 3, 2, 1}, []int64{1, 2, 3, 4, 5}, []float64{1, 2, 3, 4, 5}, nil},
		{"a conflict across runs keeps the earlier run's value", []int64{2, 3, 1, 3}, []float64{2, 30, 1, 31}, []int64{1, 2, 3}, []float64{1, 2, 30}, []int64{3}},
		{"a conflict within a run keeps its first value", []int64{4, 1, 1, 2}, []float64{4, 10, 11, 2}, []int64{1, 2, 4}, []float64{10, 2, 4}, []int64{1}},
		// 17 runs, one more than merged: the stable sort answers alike.
		{"too many runs to merge", []int64{17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1},
			[]float64{17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 100},
			[]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17},
			[]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, []int64{1}},
	} {
		ts, values, conflicts := SortDedup(slices.Clone(tc.ts), slices.Clone(tc.values))
		if !slices.Equal(ts, tc.wantTs) || !slices.EqualFunc(values, tc.wantValues, sameFloat) || !slices.Equal(conflicts, tc.wantConflicts) {
			t.Errorf("%s: %v %v %v, want %v %v %v", tc.name, ts, values, conflicts, tc.wantTs, tc.wantValues, tc.wantConflicts)
		}
	}
}

// TestSortRunsIsStableSort checks the run merge against sort.Stable on random series made
// of 1 to 20 ascending runs with repeated timestamps, as unmerged parts return them.
func TestSortRunsIsStableSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for iter := range 2000 {
		var ts []int64
		var values []float64
		for range 1 + rng.IntN(20) {
			at := rng.Int64N(50)
			for range rng.IntN(30) {
				at += rng.Int64N(3) // 0 repeats a timestamp within the run
				ts = append(ts, at)
				values = append(values, float64(len(values)))
			}
		}
		wantTs, wantValues := slices.Clone(ts), slices.Clone(values)
		sort.Stable(samplesByTime{wantTs, wantValues})
		gotTs, gotValues := sortRuns(slices.Clone(ts), slices.Clone(values))
		if !slices.Equal(gotTs, wantTs) || !slices.Equal(gotValues, wantValues) {
			t.Fatalf("iteration %d: %v %v\nsorted  %v %v\nwant    %v %v", iter, ts, values, gotTs, gotValues, wantTs, wantValues)
		}
	}
}
