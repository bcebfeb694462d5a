package rollup

import (
	"fmt"
	"math"

	"github.com/prometheus/prometheus/model/value"
)

// Aggregate is the rollup row of one series over one bucket: what is left of its samples
// once the raw tier has expired. Every field is defined by the bucket's deduplicated raw
// samples in time order, leaving out stale markers (value.IsStaleNaN), which Prometheus
// drops from range selections too. A real NaN sample is a value: it is counted and summed.
//
// Merge combines the aggregates of adjacent ranges into the aggregate of their union, which
// is how a coarse tier is computed from a finer one. Count, Min, Max, FirstT, LastT, First,
// Last and Resets of a merged aggregate are bitwise equal to those computed from raw. Sum
// and Correction are float sums, whose rounding depends on the order of the additions; they
// are kept as compensated pairs (Sum, SumComp) so that both ways of computing them round
// the same almost exact result, and agree to within one ulp (see Merge).
type Aggregate struct {
	// Count is the number of samples, real NaNs included, as count_over_time counts them.
	Count uint64
	// Sum is the sum of the values, rounded once from the compensated pair Sum+SumComp.
	// It is bitwise what sum_over_time computes over the same samples (Prometheus uses the
	// same Neumaier summation), except that it is ±Inf or NaN where that is. SumComp is
	// the rounding error left over, at most half an ulp of Sum; it is only needed to merge.
	Sum, SumComp float64
	// Min and Max follow min_over_time and max_over_time: NaN values lose against every
	// number, so they are NaN only if every value is NaN, and of equal values (0 and -0)
	// the earliest wins.
	Min, Max float64
	// FirstT and First are the timestamp (ms) and value of the first sample, LastT and
	// Last those of the last one.
	FirstT, LastT int64
	First, Last   float64
	// Correction is the counter reset correction: the sum of the values just before each
	// reset, where a reset is a sample lower than the one before it (the test rate() uses).
	// Resets counts them. Together with First and Last they give the counter increase
	// within the bucket, see Increase. CorrectionComp is Correction's rounding error, as
	// SumComp is Sum's.
	Correction, CorrectionComp float64
	Resets                     uint64
}

// Increase is the counter increase from the first to the last sample of the bucket with
// resets handled: Last - First + Correction, the formula of Prometheus's increase() before
// extrapolation. It equals the sum of the positive deltas plus the new value after each
// reset (each reset contributes -prev + new, and Correction adds prev back), but it is
// rounded far less: First and Last are exact and only the corrections are summed.
func (a Aggregate) Increase() float64 { return a.Last - a.First + a.Correction }

// Avg is the mean of the values, as avg_over_time computes it for the bucket.
func (a Aggregate) Avg() float64 { return a.Sum / float64(a.Count) }

// BucketAggregate is the aggregate of the bucket [Start, Start+Res) (milliseconds).
type BucketAggregate struct {
	Start, Res int64
	Aggregate
}

// End is the first millisecond after the bucket.
func (b BucketAggregate) End() int64 { return b.Start + b.Res }

// BucketStart is the start of the bucket of width res holding ts: ts rounded down to a
// multiple of res, also for negative ts (before 1970), where Go's division rounds towards
// zero. res must be positive.
func BucketStart(ts, res int64) int64 {
	q := ts / res
	if ts%res < 0 {
		q--
	}
	return q * res
}

// AggregateBucket aggregates one bucket's samples, which must be sorted by timestamp and
// free of duplicates (as the raw read deduplicates them). It reports false if no sample is
// left once stale markers are skipped: such a bucket has no rollup row, just as a range
// holding only stale markers has no value in Prometheus.
func AggregateBucket(ts []int64, vs []float64) (Aggregate, bool) {
	checkLengths(ts, vs)
	var (
		a         Aggregate
		sum, corr compensated
	)
	for i, v := range vs {
		if value.IsStaleNaN(v) {
			continue
		}
		if a.Count == 0 {
			a.FirstT, a.First, a.Min, a.Max = ts[i], v, v, v
		} else {
			// Comparisons with NaN are false, so a NaN neither is nor follows a reset,
			// as in rate().
			if v < a.Last {
				a.Resets++
				corr.add(a.Last)
			}
			a.Min = minOverTime(a.Min, v)
			a.Max = maxOverTime(a.Max, v)
		}
		sum.add(v)
		a.Count++
		a.LastT, a.Last = ts[i], v
	}
	if a.Count == 0 {
		return Aggregate{}, false
	}
	a.Sum, a.SumComp = sum.result()
	a.Correction, a.CorrectionComp = corr.result()
	return a, true
}

// Downsample aggregates one series' samples, sorted by timestamp and deduplicated, into
// buckets of width res (ms). Buckets without a non-stale sample produce no aggregate, so the
// result has gaps where the series has.
func Downsample(ts []int64, vs []float64, res int64) []BucketAggregate {
	checkLengths(ts, vs)
	if res <= 0 {
		panic(fmt.Sprintf("rollup: resolution %d ms must be positive", res))
	}
	var out []BucketAggregate
	for i := 0; i < len(ts); {
		start := BucketStart(ts[i], res)
		j := i + 1
		for j < len(ts) && ts[j]-start < res {
			j++
		}
		if a, ok := AggregateBucket(ts[i:j], vs[i:j]); ok {
			out = append(out, BucketAggregate{Start: start, Res: res, Aggregate: a})
		}
		i = j
	}
	return out
}

// Merge returns the aggregate of the union of two adjacent ranges, a entirely before b, as
// AggregateBucket would compute it from their samples. An empty aggregate (Count 0) is the
// identity. The counter correction carries across the boundary: b.First < a.Last is a reset
// between a's last and b's first sample, which adds a.Last.
//
// Summation order. Computed from raw, Sum is the samples added in time order with Neumaier
// compensation; merged, it is the two compensated pairs added. Both are the exact sum up to
// an error of about n²·2⁻¹⁰⁶·Σ|x| before the one final rounding, so they round to the same
// float64 or, when the exact sum lies within that error of a rounding boundary, to
// neighbouring ones: at most one ulp apart. That holds while the condition number Σ|x|/|Σx|
// stays below about 2⁵⁰/n², i.e. for every sum not cancelling to nearly nothing, and
// whenever all partial sums are exact (integer values below 2⁵³, typical of counters) the
// results are bitwise equal. The same holds for Correction. One case is not covered: when
// an intermediate sum overflows in one order but not the other (values near ±1.8e308),
// one side is ±Inf and the other finite.
func Merge(a, b Aggregate) Aggregate {
	if a.Count == 0 {
		return b
	}
	if b.Count == 0 {
		return a
	}
	m := Aggregate{
		Count:  a.Count + b.Count,
		Min:    minOverTime(a.Min, b.Min),
		Max:    maxOverTime(a.Max, b.Max),
		FirstT: a.FirstT,
		First:  a.First,
		LastT:  b.LastT,
		Last:   b.Last,
		Resets: a.Resets + b.Resets,
	}
	m.Sum, m.SumComp = mergeCompensated(a.Sum, a.SumComp, b.Sum, b.SumComp)
	corr, corrComp := a.Correction, a.CorrectionComp
	if b.First < a.Last {
		m.Resets++
		corr, corrComp = mergeCompensated(corr, corrComp, a.Last, 0)
	}
	m.Correction, m.CorrectionComp = mergeCompensated(corr, corrComp, b.Correction, b.CorrectionComp)
	return m
}

// Rollup merges the buckets of one series, in time order and each aligned to its own
// resolution, into buckets of width res, which must be a multiple of every input bucket's
// resolution: how the 1h tier is computed from the 5m tier.
func Rollup(buckets []BucketAggregate, res int64) ([]BucketAggregate, error) {
	if res <= 0 {
		return nil, fmt.Errorf("roll up to %d ms: resolution must be positive", res)
	}
	var out []BucketAggregate
	for i, b := range buckets {
		switch {
		case b.Res <= 0 || res%b.Res != 0:
			return nil, fmt.Errorf("roll up bucket %d to %d ms: its resolution %d ms does not divide it", i, res, b.Res)
		case BucketStart(b.Start, b.Res) != b.Start:
			return nil, fmt.Errorf("roll up bucket %d: start %d is not a multiple of its resolution %d ms", i, b.Start, b.Res)
		case i > 0 && b.Start < buckets[i-1].End():
			return nil, fmt.Errorf("roll up bucket %d: start %d is before the end %d of the bucket before it", i, b.Start, buckets[i-1].End())
		case b.Count == 0:
			continue
		}
		start := BucketStart(b.Start, res)
		if n := len(out); n > 0 && out[n-1].Start == start {
			out[n-1].Aggregate = Merge(out[n-1].Aggregate, b.Aggregate)
			continue
		}
		out = append(out, BucketAggregate{Start: start, Res: res, Aggregate: b.Aggregate})
	}
	return out, nil
}

// minOverTime and maxOverTime are the comparisons of Prometheus's min_over_time and
// max_over_time (promql/functions.go): the running value is replaced by a strictly smaller
// (larger) one or when it is NaN. Scanning samples in order with them and combining the
// results of two adjacent ranges with them give the same bits, including which of 0 and -0
// and which NaN wins.
func minOverTime(cur, v float64) float64 {
	if v < cur || math.IsNaN(cur) {
		return v
	}
	return cur
}

func maxOverTime(cur, v float64) float64 {
	if v > cur || math.IsNaN(cur) {
		return v
	}
	return cur
}

// compensated is a running sum with its rounding error, kept exactly by TwoSum: after each
// addition hi+lo equals the exact sum up to the rounding of the tiny lo additions. The
// sequence of hi values and the lo additions are those of Prometheus's kahansum.Inc.
type compensated struct{ hi, lo float64 }

func (c *compensated) add(x float64) {
	s, e := twoSum(c.hi, x)
	c.hi, c.lo = s, c.lo+e
}

// result rounds the pair once, returning the rounded sum and what is left of the error.
func (c compensated) result() (float64, float64) {
	return normalize(c.hi, c.lo)
}

// mergeCompensated adds two compensated pairs.
func mergeCompensated(ahi, alo, bhi, blo float64) (float64, float64) {
	if !isFinite(ahi) || !isFinite(bhi) {
		return ahi + bhi, 0
	}
	s, e := twoSum(ahi, bhi)
	return normalize(s, e+(alo+blo))
}

// normalize returns hi+lo rounded and its rounding error. Once the sum is ±Inf or NaN the
// error is meaningless (Inf-Inf), so it is dropped, as kahansum.Inc drops it.
func normalize(hi, lo float64) (float64, float64) {
	if !isFinite(hi) {
		return hi, 0
	}
	s, e := twoSum(hi, lo)
	if !isFinite(s) {
		return s, 0
	}
	return s, e
}

// twoSum returns a+b rounded and its exact rounding error (Knuth), for any finite a and b.
func twoSum(a, b float64) (float64, float64) {
	s := a + b
	bv := s - a
	av := s - bv
	return s, (a - av) + (b - bv)
}

func isFinite(f float64) bool { return !math.IsInf(f, 0) && !math.IsNaN(f) }

// checkLengths panics on mismatched columns: a caller bug, not a data condition.
func checkLengths(ts []int64, vs []float64) {
	if len(ts) != len(vs) {
		panic(fmt.Sprintf("rollup: %d timestamps but %d values", len(ts), len(vs)))
	}
}
