package store

import (
	"github.com/gogo/protobuf/proto"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
)

// The bytes a row of each table weighs in ClickHouse's native format before compression:
// fixed-width columns at their width, a string as its uvarint length and its bytes, an
// array as its 8-byte offset and its elements. `pyramid backfill` reports their sum as the
// bytes it sent; clickhouse-go's LZ4 compresses them on the wire.

// SampleRowBytes is one row of the samples table: target, fingerprint, ts and value.
const SampleRowBytes = 8 + 8 + 8 + 8

// MarkRowBytes is one rollup mark (InsertMarks): width, unit and target.
const MarkRowBytes = 8 + 8 + 8

// RollupRowBytes is one row of the rollups table (InsertRollups): sixteen 8-byte columns
// and the 4-byte version.
const RollupRowBytes = 16*8 + 4

// arrayBytes is an array column's offset and its n elements of size bytes each.
func arrayBytes(n, size int) int { return 8 + n*size }

// stringBytes is a String column's value.
func stringBytes(s string) int { return proto.SizeVarint(uint64(len(s))) + len(s) }

// ColumnBytes is the row's weight in series_input (InsertSeries).
func (r SeriesRow) ColumnBytes() int {
	n := 8 + 8 + stringBytes(r.MetricName) + arrayBytes(0, 0) + arrayBytes(0, 0) + 8 + 8
	for i := range r.Names {
		n += stringBytes(r.Names[i]) + stringBytes(r.Values[i])
	}
	return n
}

// ColumnBytes is the row's weight in the histograms table (InsertHistograms): the key,
// the nine scalar columns and the nine arrays of spans, buckets and custom values.
func (r HistogramRow) ColumnBytes() int {
	const fixed = 8 + 8 + 8 + 1 + 1 + 1 + 8 + 8 + 8 + 8 + 8 + 8
	var pos, neg []histogram.Span
	var posB, negB, custom int
	if r.FH != nil {
		pos, neg, posB, negB, custom = r.FH.PositiveSpans, r.FH.NegativeSpans, len(r.FH.PositiveBuckets), len(r.FH.NegativeBuckets), len(r.FH.CustomValues)
	} else if r.H != nil {
		pos, neg, posB, negB, custom = r.H.PositiveSpans, r.H.NegativeSpans, len(r.H.PositiveBuckets), len(r.H.NegativeBuckets), len(r.H.CustomValues)
	}
	// Offsets and lengths per side, then deltas and counts per side (one of the two is
	// empty), then custom values.
	return fixed + arrayBytes(len(pos), 4)*2 + arrayBytes(len(neg), 4)*2 +
		arrayBytes(posB, 8) + arrayBytes(0, 0) + arrayBytes(negB, 8) + arrayBytes(0, 0) + arrayBytes(custom, 8)
}

// ColumnBytes is the row's weight in histogram_rollups (InsertHistogramRollups), its four
// histograms at the size of their encoded prompb.Histogram messages.
func (r HistogramRollupRow) ColumnBytes() int {
	n := 8*8 + 1 + 4
	a := r.HistogramAggregate
	for _, h := range []*histogram.FloatHistogram{a.First, a.Last, a.Correction, a.Sum} {
		size := 0
		if h != nil {
			m := prompb.FromFloatHistogram(0, h)
			size = m.Size()
		}
		n += proto.SizeVarint(uint64(size)) + size
	}
	return n
}
