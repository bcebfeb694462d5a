package rollup

import (
	"fmt"

	"github.com/prometheus/prometheus/model/value"
)

// Point is one sample handed to Prometheus: a timestamp in milliseconds and a value.
type Point struct {
	T int64
	V float64
}

// Stamp is the timestamp of the point standing for the bucket [bucketStart, bucketStart+res):
// its last millisecond.
//
// The last millisecond is the one stamp that makes a range of exactly one bucket see exactly
// one point under both range rules. Take the bucket [S, S+res) and a range of width res
// evaluated at the bucket's end, t = S+res (where Grafana puts evaluations when the step is a
// multiple of the resolution). Prometheus 3 selects (t-res, t] = (S, S+res]: it holds S+res-1
// and not S-1, the stamp of the bucket before. Prometheus 2 selects [t-res, t] = [S, S+res]:
// the same single point. Stamping at the start S would select the next bucket in Prometheus
// 3 (S+res, a bucket lying after t) and two points in Prometheus 2; stamping at the end S+res
// would select two points in Prometheus 2 and collide with a raw sample at S+res on a seam.
// And since every sample of the bucket is at or before S+res-1, a point never carries data
// from after its timestamp: evaluations never see the future.
func Stamp(bucketStart, res int64) int64 { return bucketStart + res - 1 }

// Point is the sample the aggregate contributes for a bucket-valued kind:
//
//	avg    Sum/Count  at Stamp   avg_over_time, present_over_time, plain selectors
//	max    Max        at Stamp   max_over_time
//	min    Min        at Stamp   min_over_time
//	sum    Sum        at Stamp   sum_over_time
//	last   Last       at LastT   last_over_time
//
// Last is stamped with its own timestamp rather than the bucket's end: it is a real sample,
// and at its own time it is exactly what raw data would show from then to the next sample.
// LastT lies inside the bucket, so a range of one bucket still sees one point, with the
// exception raw data has too: Prometheus 3's left-open range (S, S+res] leaves out a sample
// exactly at the bucket start S, and takes one exactly at S+res from the next bucket.
// Counter points depend on the buckets before them (see Counter), and raw is no aggregate,
// so both are errors here.
//
// Approximation errors, compared with the same query over raw samples:
//
//   - max, min: exact when the range is a whole number of buckets and the evaluation time
//     a bucket boundary (t ≡ 0 mod res; in Prometheus 3 also t ≡ -1). Otherwise the buckets
//     whose stamps fall in the range stand for it, so the window effectively moves back by
//     up to res-1 ms to bucket boundaries; it never reaches past t. NaN handling is
//     Prometheus's exactly.
//   - sum: as max and min, plus float rounding of a different addition order (a few ulps).
//   - avg: over a whole number of buckets avg_over_time returns the unweighted mean of the
//     bucket means, which equals the raw mean when every bucket holds as many samples
//     (regular scrapes) and otherwise weighs sparse buckets too much. For plain selectors
//     the value at a bucket's end is the bucket's mean instead of its last sample: spikes
//     shorter than a bucket are flattened (max and min keep them) and trends lag by half a
//     bucket.
//   - last: exact when the evaluation time lies at or after the LastT of its bucket (in
//     particular at bucket ends); earlier in a bucket it returns the previous bucket's last
//     sample, up to one bucket old.
func (a Aggregate) Point(kind Kind, bucketStart, res int64) (Point, error) {
	if a.Count == 0 {
		return Point{}, fmt.Errorf("make %s point of bucket %d: the aggregate is empty", kind, bucketStart)
	}
	switch kind {
	case KindAvg:
		return Point{T: Stamp(bucketStart, res), V: a.Avg()}, nil
	case KindMax:
		return Point{T: Stamp(bucketStart, res), V: a.Max}, nil
	case KindMin:
		return Point{T: Stamp(bucketStart, res), V: a.Min}, nil
	case KindSum:
		return Point{T: Stamp(bucketStart, res), V: a.Sum}, nil
	case KindLast:
		return Point{T: a.LastT, V: a.Last}, nil
	case KindCounter:
		return Point{}, fmt.Errorf("make %s point of bucket %d: counter points depend on the buckets before, use Counter", kind, bucketStart)
	default:
		return Point{}, fmt.Errorf("make %s point of bucket %d: not an aggregate kind", kind, bucketStart)
	}
}

// Points turns the buckets of one series, in time order and not overlapping (they may come
// from several tiers), into the samples returned for kind. For KindCounter they are one
// Counter's output; a reader continuing the series with raw samples must feed those to the
// same Counter instead (see there).
func Points(kind Kind, buckets []BucketAggregate) ([]Point, error) {
	pts := make([]Point, 0, len(buckets))
	var c Counter
	for i, b := range buckets {
		if i > 0 && b.Start < buckets[i-1].End() {
			return nil, fmt.Errorf("make %s points: bucket %d starts at %d, before the end %d of the bucket before it", kind, i, b.Start, buckets[i-1].End())
		}
		if b.Count == 0 {
			continue
		}
		if kind == KindCounter {
			pts = c.Bucket(pts, b)
			continue
		}
		p, err := b.Point(kind, b.Start, b.Res)
		if err != nil {
			return nil, err
		}
		pts = append(pts, p)
	}
	return pts, nil
}

// Counter turns one series' counter data, the buckets and raw samples of a query's segments
// in time order, into a reset-free cumulative counter: the points Prometheus needs for
// rate(), increase() and irate() (the design of Thanos's counter aggregate). A reader keeps
// one Counter per series for the whole query.
//
// Each bucket becomes one point at its last sample: (LastT, Last + offset), where offset is
// the sum of the values before every reset seen so far, resets inside buckets (Correction)
// and between one bucket's last sample and the next one's first included. Raw samples get
// the same treatment sample by sample. The result never drops, so rate() finds no resets to
// correct, and the difference between any two points is exactly the increase, with resets,
// between those two raw samples. The offset starts at zero, so the first point is a raw
// value and no point is below its raw value.
//
// Why raw samples after counter buckets go through the Counter too: a point after a reset
// is above its raw value, and the next raw sample handed over unchanged would look like a
// drop, counted as a reset of the whole offset. Why the offset accumulates forward rather
// than backward from the seam (which would leave raw alone): points would then be lowered
// below their raw values, to zero or less, and rate() stops extrapolating at the counter's
// extrapolated zero, so a range starting just before a reset would lose up to a bucket's
// increase.
//
// Why one point per bucket at LastT: the points are then real samples (shifted by the
// offset) spaced evenly at about one resolution, and rate()'s extrapolation to the range
// boundaries, which assumes even spacing and stops short at a gap over 1.1 times the mean
// interval, works as on raw data. Two points per bucket (first and last) would be spaced
// unevenly, a scrape interval then almost a bucket, and cut extrapolation short by up to a
// bucket. For the same reason the router gives a query one resolution throughout: sparse
// points next to dense ones in one range (at a seam) are uneven spacing too.
//
// The exception is a bucket that opens the data: the first of the query, or the first after
// a bucket with no samples. It also gets a point at its first sample, (FirstT, First +
// offset), about one resolution before its last, so the spacing stays even. Without it, a
// range holding only that bucket of a series (its first hours, or the first after a scrape
// outage) would hold one point, and rate() needs two; raw has a rate there. In a range where
// the series begins, rate() extrapolates from the first point towards the range start: by
// half the mean spacing of the points when the gap is longer than 1.1 of them, which is
// half a bucket here and half a scrape on raw, and otherwise by the whole gap, up to 1.1
// buckets here. It extrapolates no further than the counter's zero, so a counter starting
// near zero is unaffected; one that enters with a large value has its first ranges' rate
// high by that over the time the series covers: for rate[4h] over 1h buckets +50% one hour
// in, +25% two hours in, +33% three hours in, nothing once it fills the range
// (TestCounterOpeningPointRate). Without the opening point there would be no rate one hour
// in, and the others low by up to half a bucket.
//
// Approximation error of rate(x[r]) over the points against rate over raw, for r of at
// least two buckets (the router's rule): the points in the range span it minus up to one
// bucket at the start, and rate() extrapolates their mean rate to the whole range, while
// raw spans it minus a scrape interval. So the error is how far the mean rate over that
// missing piece (at most res/r of the range) is from the rate over the rest: zero for a
// steady rate; for r ≥ 4·res within 1% while the rate varies up to ±5% from scrape to
// scrape, and for ±20% within 2% for 99% of evaluations (tested); up to res/r times the
// change when the rate changes abruptly at the range start. A range holding a reset adds up
// to scrape/r: the increase between the last scrape and the restart is lost on raw too, and
// the two extrapolate around that dent differently. irate over the points is the mean rate
// over the last bucket, not over the last scrape interval. Counters are assumed to be
// non-negative: the output is kept monotonic by clamping, so a negative value after a
// reset is not corrected as raw would be.
type Counter struct {
	offset float64
	last   float64 // the last raw value seen, for the reset test
	out    float64 // the last value returned, to keep the output monotonic
	seen   bool
	// end is the end of the last bucket, or one past the last raw sample; a bucket
	// starting after it follows a gap.
	end int64
}

// Bucket appends the points of b to dst: its last sample's, preceded by its first sample's
// when b opens the data (see Counter). An empty bucket adds nothing.
func (c *Counter) Bucket(dst []Point, b BucketAggregate) []Point {
	if b.Count == 0 {
		return dst
	}
	if c.seen && b.First < c.last {
		c.offset += c.last
	}
	if (!c.seen || b.Start > c.end) && b.FirstT < b.LastT {
		dst = append(dst, Point{T: b.FirstT, V: c.emit(b.First)})
	}
	c.offset += b.Correction
	c.last, c.end = b.Last, b.End()
	return append(dst, Point{T: b.LastT, V: c.emit(b.Last)})
}

// Sample returns raw sample (t, v) corrected. A stale marker is returned unchanged and leaves
// the state alone, as rate() ignores it.
func (c *Counter) Sample(t int64, v float64) Point {
	if value.IsStaleNaN(v) {
		return Point{T: t, V: v}
	}
	if c.seen && v < c.last {
		c.offset += c.last
	}
	c.last, c.end = v, t+1
	return Point{T: t, V: c.emit(v)}
}

// emit adds the offset and keeps the output from dropping. For non-negative counters the
// corrected series cannot drop, but the offset and the value are rounded separately, and a
// drop of one ulp would make rate() see a reset and add the whole value.
func (c *Counter) emit(v float64) float64 {
	out := v + c.offset
	if c.seen && out < c.out {
		out = c.out
	}
	c.seen, c.out = true, out
	return out
}
