package rollup

import (
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
)

// fh is a histogram of n observations, all in bucket 1 of schema 0, (1, 2], summing to 1.5n:
// small enough to add up by hand.
func fh(n float64) *histogram.FloatHistogram {
	return &histogram.FloatHistogram{Schema: 0, Count: n, Sum: 1.5 * n,
		PositiveSpans: []histogram.Span{{Offset: 1, Length: 1}}, PositiveBuckets: []float64{n}}
}

func hs(pairs ...any) []HistogramSample {
	var out []HistogramSample
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, HistogramSample{T: int64(pairs[i].(int)), H: pairs[i+1].(*histogram.FloatHistogram)})
	}
	return out
}

func sameH(a, b *histogram.FloatHistogram) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equals(b)
}

func staleH() *histogram.FloatHistogram {
	return &histogram.FloatHistogram{Sum: math.Float64frombits(value.StaleNaN)}
}

// TestAggregateHistogramBucket: 2, 5, then a reset to 1, a stale marker, 3. By hand: four
// histograms, one reset correcting by the 5 before it, so the increase is 3 - 2 + 5 = 6
// (+3, +1 after the restart, +2), and the sum is 2+5+1+3 = 11 observations.
func TestAggregateHistogramBucket(t *testing.T) {
	a, ok := AggregateHistogramBucket(hs(0, fh(2), 10, fh(5), 20, fh(1), 30, staleH(), 40, fh(3)))
	if !ok {
		t.Fatal("no aggregate")
	}
	if a.Count != 4 || a.FirstT != 0 || a.LastT != 40 || a.Resets != 1 || a.Incompatible {
		t.Errorf("count %d, first %d, last %d, resets %d, incompatible %v; want 4, 0, 40, 1, false", a.Count, a.FirstT, a.LastT, a.Resets, a.Incompatible)
	}
	for _, c := range []struct {
		name      string
		got, want *histogram.FloatHistogram
	}{{"first", a.First, fh(2)}, {"last", a.Last, fh(3)}, {"correction", a.Correction, fh(5)}, {"sum", a.Sum, fh(11)}} {
		if !sameH(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if _, ok := AggregateHistogramBucket(hs(0, staleH())); ok {
		t.Error("a bucket of stale markers only has an aggregate")
	}
	// Merging the two halves gives the whole, the reset between them included.
	m := MergeHistograms(
		must(AggregateHistogramBucket(hs(0, fh(2), 10, fh(5)))),
		must(AggregateHistogramBucket(hs(20, fh(1), 30, staleH(), 40, fh(3)))))
	if m.Count != a.Count || m.Resets != a.Resets || !sameH(m.Correction, a.Correction) || !sameH(m.Sum, a.Sum) ||
		!sameH(m.First, a.First) || !sameH(m.Last, a.Last) || m.FirstT != a.FirstT || m.LastT != a.LastT {
		t.Errorf("merged %+v, want %+v", m, a)
	}
}

func must(a HistogramAggregate, ok bool) HistogramAggregate {
	if !ok {
		panic("empty aggregate")
	}
	return a
}

// TestRollupHistogramsEqualsDownsample: 10 ms buckets rolled up to 20 ms equal 20 ms buckets
// computed from the same histograms.
func TestRollupHistogramsEqualsDownsample(t *testing.T) {
	in := hs(0, fh(2), 5, fh(4), 10, fh(5), 20, fh(1), 31, fh(3), 55, fh(9), 58, fh(2))
	got, err := RollupHistograms(DownsampleHistograms(in, 10), 20)
	if err != nil {
		t.Fatal(err)
	}
	want := DownsampleHistograms(in, 20)
	if len(got) != len(want) || len(want) != 3 {
		t.Fatalf("%d buckets, want %d (and 3)", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Start != w.Start || g.Count != w.Count || g.Resets != w.Resets || !sameH(g.Correction, w.Correction) ||
			!sameH(g.Sum, w.Sum) || !sameH(g.First, w.First) || !sameH(g.Last, w.Last) {
			t.Errorf("bucket %d: rolled up %+v, want %+v", i, g, w)
		}
	}
}

// TestHistogramCounter: 2@0, 5@10, 1@20 (a reset), 3@30, 4@40 in 20 ms buckets, then a raw
// 1@50 (another reset). By hand: the first bucket opens the data, so it gives its first
// and its last, 2@0 and 5@10; the second finds the reset against 5, so its last is 3+5 = 8
// @30; the third 4+5 = 9 @40; the raw sample 1 after 4 resets again, 1+5+4 = 10 @50. Every
// point says no reset, and 10 - 2 = 8 is the raw increase 3+1+2+1+1.
func TestHistogramCounter(t *testing.T) {
	var c HistogramCounter
	var pts []HistogramSample
	for _, b := range DownsampleHistograms(hs(0, fh(2), 10, fh(5), 20, fh(1), 30, fh(3), 40, fh(4)), 20) {
		pts = c.Bucket(pts, b)
	}
	pts = c.Sample(pts, 50, fh(1))
	pts = c.Sample(pts, 60, staleH())
	want := []struct {
		t int64
		n float64
	}{{0, 2}, {10, 5}, {30, 8}, {40, 9}, {50, 10}}
	if len(pts) != len(want)+1 {
		t.Fatalf("points %v, want %v and the stale marker", pts, want)
	}
	for i, w := range want {
		p := pts[i]
		exp := fh(w.n)
		exp.CounterResetHint = histogram.NotCounterReset
		if p.T != w.t || !sameH(p.H, exp) {
			t.Errorf("point %d = %d %v, want %d %v", i, p.T, p.H, w.t, exp)
		}
	}
	if last := pts[len(pts)-1]; last.T != 60 || !value.IsStaleNaN(last.H.Sum) {
		t.Errorf("last point %d %v, want the stale marker at 60", last.T, last.H)
	}
	// A gap opens the data again: the bucket after it gives its first histogram too.
	var g HistogramCounter
	var gp []HistogramSample
	for _, b := range DownsampleHistograms(hs(0, fh(2), 10, fh(3), 100, fh(4), 110, fh(6)), 20) {
		gp = g.Bucket(gp, b)
	}
	if len(gp) != 4 || gp[2].T != 100 || gp[3].T != 110 {
		t.Errorf("points after a gap %v, want 0, 10, 100, 110", gp)
	}
}

// TestHistogramPoint: the mean and sum points of 2@0 and 5@10 in a 20 ms bucket stand at
// 19 (the bucket's last millisecond) with 3.5 and 7 observations; last is 5@10; max and min
// have none.
func TestHistogramPoint(t *testing.T) {
	a := must(AggregateHistogramBucket(hs(0, fh(2), 10, fh(5))))
	for _, c := range []struct {
		kind Kind
		ok   bool
		t    int64
		want *histogram.FloatHistogram
	}{
		{KindAvg, true, 19, fh(3.5)},
		{KindSum, true, 19, fh(7)},
		{KindLast, true, 10, fh(5)},
		{KindMax, false, 0, nil},
		{KindMin, false, 0, nil},
	} {
		p, ok, err := a.Point(c.kind, 0, 20)
		if err != nil {
			t.Fatalf("%s: %v", c.kind, err)
		}
		if ok != c.ok || (ok && (p.T != c.t || !sameH(p.H, c.want))) {
			t.Errorf("%s: %d %v (%v), want %d %v (%v)", c.kind, p.T, p.H, ok, c.t, c.want, c.ok)
		}
	}
	if _, _, err := a.Point(KindCounter, 0, 20); err == nil {
		t.Error("a counter point without a HistogramCounter")
	}
	// Custom buckets next to exponential ones cannot be added: only last answers.
	custom := &histogram.FloatHistogram{Schema: histogram.CustomBucketsSchema, Count: 1, Sum: 1,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []float64{1}, CustomValues: []float64{1}}
	mixed := must(AggregateHistogramBucket(hs(0, custom, 10, fh(5))))
	if !mixed.Incompatible {
		t.Fatal("custom and exponential buckets added up")
	}
	if _, ok, _ := mixed.Point(KindAvg, 0, 20); ok {
		t.Error("an average of incompatible histograms")
	}
	if p, ok, _ := mixed.Point(KindLast, 0, 20); !ok || !sameH(p.H, fh(5)) {
		t.Errorf("last of incompatible histograms %v %v, want 5 observations", p.H, ok)
	}
}
