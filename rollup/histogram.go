package rollup

import (
	"fmt"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
)

// HistogramAggregate is the rollup row of one native histogram series over one bucket, the
// histogram counterpart of Aggregate: defined by the bucket's deduplicated raw histograms in
// time order, stale markers (a stale NaN sum) left out. Histograms are kept as float
// histograms, the form PromQL computes in; integer counts below 2^53 stay exact.
//
// A reset is what Prometheus's rate() takes for one: a histogram for which DetectReset
// against the one before is true (its hint says so, or a count, a bucket or the zero
// bucket went down, or the bucket layout changed in a way only a restart explains).
type HistogramAggregate struct {
	// Count is the number of histograms.
	Count uint64
	// FirstT and First are the first histogram and its timestamp (ms), LastT and Last the
	// last one's.
	FirstT, LastT int64
	First, Last   *histogram.FloatHistogram
	// Correction is the sum of the histograms just before each reset (nil when there is
	// none), so that the increase over the bucket is Last - First + Correction, and Resets
	// counts the resets.
	Correction *histogram.FloatHistogram
	Resets     uint64
	// Sum is the sum of the histograms, for averages and sum_over_time.
	Sum *histogram.FloatHistogram
	// Incompatible is set when the bucket mixes exponential and custom buckets, which
	// Prometheus cannot add: such a bucket answers last_over_time only.
	Incompatible bool
}

// HistogramSample is one raw histogram sample as the rollup rules take it.
type HistogramSample struct {
	T int64
	H *histogram.FloatHistogram
}

// BucketHistogramAggregate is the aggregate of the bucket [Start, Start+Res) (ms).
type BucketHistogramAggregate struct {
	Start, Res int64
	HistogramAggregate
}

// End is the first millisecond after the bucket.
func (b BucketHistogramAggregate) End() int64 { return b.Start + b.Res }

// add returns sum+h, sum nil being zero; ok is false when the two cannot be added.
// Neither argument is changed.
func add(sum, h *histogram.FloatHistogram) (*histogram.FloatHistogram, bool) {
	if sum == nil {
		return h.Copy(), true
	}
	res, _, _, err := sum.Copy().Add(h)
	return res, err == nil
}

// AggregateHistogramBucket aggregates one bucket's histograms, sorted by timestamp and free
// of duplicates. It reports false if nothing is left once stale markers are skipped.
func AggregateHistogramBucket(hs []HistogramSample) (HistogramAggregate, bool) {
	var a HistogramAggregate
	for _, s := range hs {
		if value.IsStaleNaN(s.H.Sum) {
			continue
		}
		ok := true
		if a.Count == 0 {
			a.FirstT, a.First = s.T, s.H
		} else if s.H.DetectReset(a.Last) {
			a.Resets++
			a.Correction, ok = add(a.Correction, a.Last)
		}
		var sumOK bool
		a.Sum, sumOK = add(a.Sum, s.H)
		a.Incompatible = a.Incompatible || !ok || !sumOK
		a.Count++
		a.LastT, a.Last = s.T, s.H
	}
	return a, a.Count > 0
}

// DownsampleHistograms aggregates one series' histograms, sorted and deduplicated, into
// buckets of width res (ms); buckets without a histogram produce nothing.
func DownsampleHistograms(hs []HistogramSample, res int64) []BucketHistogramAggregate {
	if res <= 0 {
		panic(fmt.Sprintf("rollup: resolution %d ms must be positive", res))
	}
	var out []BucketHistogramAggregate
	for i := 0; i < len(hs); {
		start := BucketStart(hs[i].T, res)
		j := i + 1
		for j < len(hs) && hs[j].T-start < res {
			j++
		}
		if a, ok := AggregateHistogramBucket(hs[i:j]); ok {
			out = append(out, BucketHistogramAggregate{Start: start, Res: res, HistogramAggregate: a})
		}
		i = j
	}
	return out
}

// MergeHistograms returns the aggregate of the union of two adjacent ranges, a entirely
// before b, as AggregateHistogramBucket would compute it from their histograms (sums
// rounded in another order). A reset between a's last and b's first histogram adds a.Last
// to the correction.
func MergeHistograms(a, b HistogramAggregate) HistogramAggregate {
	if a.Count == 0 {
		return b
	}
	if b.Count == 0 {
		return a
	}
	m := HistogramAggregate{
		Count: a.Count + b.Count, FirstT: a.FirstT, First: a.First, LastT: b.LastT, Last: b.Last,
		Resets: a.Resets + b.Resets, Correction: a.Correction,
		Incompatible: a.Incompatible || b.Incompatible,
	}
	ok := true
	if b.First.DetectReset(a.Last) {
		m.Resets++
		m.Correction, ok = add(m.Correction, a.Last)
		m.Incompatible = m.Incompatible || !ok
	}
	if b.Correction != nil {
		m.Correction, ok = add(m.Correction, b.Correction)
		m.Incompatible = m.Incompatible || !ok
	}
	switch {
	case a.Sum == nil:
		m.Sum = b.Sum
	case b.Sum == nil:
		m.Sum = a.Sum
	default:
		m.Sum, ok = add(a.Sum, b.Sum)
		m.Incompatible = m.Incompatible || !ok
	}
	return m
}

// RollupHistograms merges the buckets of one series, in time order and each aligned to its
// own resolution, into buckets of width res, a multiple of every input resolution.
func RollupHistograms(buckets []BucketHistogramAggregate, res int64) ([]BucketHistogramAggregate, error) {
	if res <= 0 {
		return nil, fmt.Errorf("roll up histograms to %d ms: resolution must be positive", res)
	}
	var out []BucketHistogramAggregate
	for i, b := range buckets {
		switch {
		case b.Res <= 0 || res%b.Res != 0:
			return nil, fmt.Errorf("roll up histogram bucket %d to %d ms: its resolution %d ms does not divide it", i, res, b.Res)
		case i > 0 && b.Start < buckets[i-1].End():
			return nil, fmt.Errorf("roll up histogram bucket %d: start %d is before the end %d of the bucket before it", i, b.Start, buckets[i-1].End())
		case b.Count == 0:
			continue
		}
		start := BucketStart(b.Start, res)
		if n := len(out); n > 0 && out[n-1].Start == start {
			out[n-1].HistogramAggregate = MergeHistograms(out[n-1].HistogramAggregate, b.HistogramAggregate)
			continue
		}
		out = append(out, BucketHistogramAggregate{Start: start, Res: res, HistogramAggregate: b.HistogramAggregate})
	}
	return out, nil
}

// Point is the histogram the aggregate contributes for a bucket-valued kind, as
// Aggregate.Point does for floats: the mean (Sum/Count) at Stamp for avg, the sum at Stamp
// for sum, the last histogram at its own timestamp for last. Prometheus's max_over_time and
// min_over_time ignore histograms, so those kinds have no point (ok false), and neither has
// an incompatible bucket except for last. The returned histogram is the caller's.
func (a HistogramAggregate) Point(kind Kind, bucketStart, res int64) (p HistogramSample, ok bool, err error) {
	if a.Count == 0 {
		return HistogramSample{}, false, fmt.Errorf("make %s histogram point of bucket %d: the aggregate is empty", kind, bucketStart)
	}
	switch kind {
	case KindLast:
		return HistogramSample{T: a.LastT, H: a.Last.Copy()}, true, nil
	case KindAvg, KindSum:
		if a.Incompatible {
			return HistogramSample{}, false, nil
		}
		h := a.Sum.Copy()
		if kind == KindAvg {
			h.Div(float64(a.Count))
		}
		// A mean or a sum of counters is no counter sample of its own: rate() over such
		// points is not asked for (the router gives rate counter points), and a reset
		// hint from one of the summed histograms would not describe it.
		h.CounterResetHint = histogram.UnknownCounterReset
		if a.Last.CounterResetHint == histogram.GaugeType {
			h.CounterResetHint = histogram.GaugeType
		}
		return HistogramSample{T: Stamp(bucketStart, res), H: h}, true, nil
	case KindMax, KindMin:
		return HistogramSample{}, false, nil
	case KindCounter:
		return HistogramSample{}, false, fmt.Errorf("make %s histogram point of bucket %d: counter points depend on the buckets before, use HistogramCounter", kind, bucketStart)
	default:
		return HistogramSample{}, false, fmt.Errorf("make %s histogram point of bucket %d: not an aggregate kind", kind, bucketStart)
	}
}

// HistogramCounter is Counter for native histograms: it turns one series' counter
// histograms, buckets and raw samples of a query's segments in time order, into a reset-free
// cumulative counter whose points carry the NotCounterReset hint, so that rate() and
// increase() see no reset and the difference between two points is the increase between
// those raw histograms, resets included. The points are placed as Counter places them: one
// per bucket at its last histogram, plus one at the first histogram of a bucket that opens
// the data. A series that switches between exponential and custom buckets cannot be added
// across the switch; the counter starts afresh there, as if the series began anew.
type HistogramCounter struct {
	offset *histogram.FloatHistogram // nil is zero
	last   *histogram.FloatHistogram
	seen   bool
	end    int64
}

// Bucket appends the points of b to dst.
func (c *HistogramCounter) Bucket(dst []HistogramSample, b BucketHistogramAggregate) []HistogramSample {
	if b.Count == 0 {
		return dst
	}
	if b.Incompatible {
		// No increase can be computed across the bucket: start afresh after it.
		*c = HistogramCounter{}
		return dst
	}
	if c.seen && b.First.DetectReset(c.last) && !c.addOffset(c.last) {
		*c = HistogramCounter{}
	}
	if (!c.seen || b.Start > c.end) && b.FirstT < b.LastT {
		dst = c.emit(dst, b.FirstT, b.First)
	}
	if b.Correction != nil && !c.addOffset(b.Correction) {
		*c = HistogramCounter{}
		return dst
	}
	dst = c.emit(dst, b.LastT, b.Last)
	c.last, c.end = b.Last, b.End()
	return dst
}

// Sample appends raw histogram (t, h) corrected. A stale marker is appended unchanged and
// leaves the state alone, as rate() ignores it.
func (c *HistogramCounter) Sample(dst []HistogramSample, t int64, h *histogram.FloatHistogram) []HistogramSample {
	if value.IsStaleNaN(h.Sum) {
		return append(dst, HistogramSample{T: t, H: h})
	}
	if c.seen && h.DetectReset(c.last) && !c.addOffset(c.last) {
		*c = HistogramCounter{}
	}
	dst = c.emit(dst, t, h)
	c.last, c.end = h, t+1
	return dst
}

// addOffset adds h to the offset; false when the two cannot be added.
func (c *HistogramCounter) addOffset(h *histogram.FloatHistogram) bool {
	sum, ok := add(c.offset, h)
	if ok {
		c.offset = sum
	}
	return ok
}

// emit appends h plus the offset at t, hinted as no reset. A point that cannot take the
// offset starts the counter afresh from its own value.
func (c *HistogramCounter) emit(dst []HistogramSample, t int64, h *histogram.FloatHistogram) []HistogramSample {
	out := h.Copy()
	if c.offset != nil {
		sum, ok := add(out, c.offset)
		if !ok {
			*c = HistogramCounter{}
		} else {
			out = sum
		}
	}
	out.CounterResetHint = histogram.NotCounterReset
	c.seen = true
	return append(dst, HistogramSample{T: t, H: out})
}
