package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/pyramid-metrics/pyramid/schema"
)

// HistogramSample is one native histogram sample: exactly one of H and FH is set.
type HistogramSample struct {
	T  int64
	H  *histogram.Histogram
	FH *histogram.FloatHistogram
}

// HistogramRow is a histogram sample bound for schema.TableHistograms.
type HistogramRow struct {
	Target, Fingerprint uint64
	HistogramSample
}

// histogramColumns lists the columns of schema.TableHistograms after the key, in the
// order InsertHistograms appends and fetchHistograms scans them.
const histogramColumns = "is_float, reset_hint, schema, zero_threshold, count_int, count_float, " +
	"zero_count_int, zero_count_float, sum, positive_offsets, positive_lengths, positive_deltas, " +
	"positive_counts, negative_offsets, negative_lengths, negative_deltas, negative_counts, custom_values"

// histogramRecord is one row of schema.TableHistograms after its key, as clickhouse-go
// appends and scans it.
type histogramRecord struct {
	isFloat, resetHint     uint8
	schema                 int8
	zeroThreshold          float64
	countInt               uint64
	countFloat             float64
	zeroCountInt           uint64
	zeroCountFloat         float64
	sum                    float64
	posOffsets, negOffsets []int32
	posLengths, negLengths []uint32
	posDeltas, negDeltas   []int64
	posCounts, negCounts   []float64
	customValues           []float64
}

// record flattens a sample into its columns. The slices are shared with the sample.
func record(h HistogramSample) histogramRecord {
	var r histogramRecord
	if h.FH != nil {
		fh := h.FH
		r = histogramRecord{isFloat: 1, resetHint: uint8(fh.CounterResetHint), schema: int8(fh.Schema),
			zeroThreshold: fh.ZeroThreshold, countFloat: fh.Count, zeroCountFloat: fh.ZeroCount, sum: fh.Sum,
			posCounts: fh.PositiveBuckets, negCounts: fh.NegativeBuckets, customValues: fh.CustomValues}
		r.posOffsets, r.posLengths = splitSpans(fh.PositiveSpans)
		r.negOffsets, r.negLengths = splitSpans(fh.NegativeSpans)
		return r
	}
	ih := h.H
	r = histogramRecord{resetHint: uint8(ih.CounterResetHint), schema: int8(ih.Schema),
		zeroThreshold: ih.ZeroThreshold, countInt: ih.Count, zeroCountInt: ih.ZeroCount, sum: ih.Sum,
		posDeltas: ih.PositiveBuckets, negDeltas: ih.NegativeBuckets, customValues: ih.CustomValues}
	r.posOffsets, r.posLengths = splitSpans(ih.PositiveSpans)
	r.negOffsets, r.negLengths = splitSpans(ih.NegativeSpans)
	return r
}

// sample rebuilds the sample a record was made from.
func (r *histogramRecord) sample(t int64) HistogramSample {
	if r.isFloat != 0 {
		return HistogramSample{T: t, FH: &histogram.FloatHistogram{
			CounterResetHint: histogram.CounterResetHint(r.resetHint), Schema: int32(r.schema),
			ZeroThreshold: r.zeroThreshold, ZeroCount: r.zeroCountFloat, Count: r.countFloat, Sum: r.sum,
			PositiveSpans: joinSpans(r.posOffsets, r.posLengths), NegativeSpans: joinSpans(r.negOffsets, r.negLengths),
			PositiveBuckets: nilIfEmpty(r.posCounts), NegativeBuckets: nilIfEmpty(r.negCounts),
			CustomValues: nilIfEmpty(r.customValues),
		}}
	}
	return HistogramSample{T: t, H: &histogram.Histogram{
		CounterResetHint: histogram.CounterResetHint(r.resetHint), Schema: int32(r.schema),
		ZeroThreshold: r.zeroThreshold, ZeroCount: r.zeroCountInt, Count: r.countInt, Sum: r.sum,
		PositiveSpans: joinSpans(r.posOffsets, r.posLengths), NegativeSpans: joinSpans(r.negOffsets, r.negLengths),
		PositiveBuckets: nilIfEmpty(r.posDeltas), NegativeBuckets: nilIfEmpty(r.negDeltas),
		CustomValues: nilIfEmpty(r.customValues),
	}}
}

func splitSpans(spans []histogram.Span) (offsets []int32, lengths []uint32) {
	offsets, lengths = make([]int32, len(spans)), make([]uint32, len(spans))
	for i, s := range spans {
		offsets[i], lengths[i] = s.Offset, s.Length
	}
	return offsets, lengths
}

func joinSpans(offsets []int32, lengths []uint32) []histogram.Span {
	if len(offsets) == 0 {
		return nil
	}
	spans := make([]histogram.Span, len(offsets))
	for i := range spans {
		spans[i] = histogram.Span{Offset: offsets[i], Length: lengths[i]}
	}
	return spans
}

// nilIfEmpty gives empty columns back as nil, as Prometheus's decoders leave them.
func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// InsertHistograms writes histogram rows into the histograms table as one block.
func (s *Store) InsertHistograms(ctx context.Context, rows []HistogramRow) error {
	if len(rows) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Database+"."+schema.TableHistograms+
		" (target, fingerprint, ts, "+histogramColumns+")")
	if err != nil {
		return fmt.Errorf("prepare insert of %d histograms: %w", len(rows), err)
	}
	defer batch.Close()
	for i, row := range rows {
		r := record(row.HistogramSample)
		if err := batch.Append(row.Target, row.Fingerprint, row.T, r.isFloat, r.resetHint, r.schema,
			r.zeroThreshold, r.countInt, r.countFloat, r.zeroCountInt, r.zeroCountFloat, r.sum,
			r.posOffsets, r.posLengths, orEmpty(r.posDeltas), orEmpty(r.posCounts),
			r.negOffsets, r.negLengths, orEmpty(r.negDeltas), orEmpty(r.negCounts), orEmpty(r.customValues)); err != nil {
			return fmt.Errorf("append histogram %d of %d: %w", i, len(rows), err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d histograms: %w", len(rows), err)
	}
	return nil
}

// orEmpty turns a nil slice into an empty one, which clickhouse-go appends as an empty
// array rather than refusing.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// readHistograms reads the histogram samples of batch in [mint, maxt], by fingerprint,
// and how many there are. It only reads the batch's keys, so it may run while the batch's
// float samples are being filled in. FINAL applies the table's merge rule (the last write
// of a timestamp is kept) at read time, so that retried writes read back once and the
// answer does not change when ClickHouse merges.
func (s *Store) readHistograms(ctx context.Context, batch []*selected, mint, maxt int64) (map[uint64][]HistogramSample, int, error) {
	targets, fps := batchKeys(batch)
	rows, err := s.conn.Query(ctx, "SELECT fingerprint, ts, "+histogramColumns+" FROM "+s.cfg.Database+"."+
		schema.TableHistograms+" FINAL WHERE target IN ? AND fingerprint IN ? AND ts >= ? AND ts <= ?",
		inSet(targets), inSet(fps), mint, maxt)
	if err != nil {
		return nil, 0, unavailable(fmt.Errorf("query histograms of %d series: %w", len(batch), err))
	}
	byFP, _, n, err := scanHistograms(rows, false)
	if err != nil {
		return nil, n, unavailable(fmt.Errorf("read histograms of %d series: %w", len(batch), err))
	}
	return byFP, n, nil
}

// scanHistograms reads rows of fingerprint, ts and histogramColumns, followed by target
// when withTarget is set, by fingerprint, and closes them. targets is nil without it.
func scanHistograms(rows driver.Rows, withTarget bool) (byFP map[uint64][]HistogramSample, targets map[uint64]uint64, n int, err error) {
	defer rows.Close()
	byFP = map[uint64][]HistogramSample{}
	if withTarget {
		targets = map[uint64]uint64{}
	}
	for rows.Next() {
		var (
			fp, target uint64
			ts         int64
			r          histogramRecord
		)
		dest := []any{&fp, &ts, &r.isFloat, &r.resetHint, &r.schema, &r.zeroThreshold, &r.countInt,
			&r.countFloat, &r.zeroCountInt, &r.zeroCountFloat, &r.sum, &r.posOffsets, &r.posLengths,
			&r.posDeltas, &r.posCounts, &r.negOffsets, &r.negLengths, &r.negDeltas, &r.negCounts,
			&r.customValues}
		if withTarget {
			dest = append(dest, &target)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, nil, n, fmt.Errorf("scan histogram %d: %w", n, err)
		}
		byFP[fp] = append(byFP[fp], r.sample(ts))
		if withTarget {
			targets[fp] = target
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, nil, n, fmt.Errorf("after %d histograms: %w", n, err)
	}
	return byFP, targets, n, nil
}

// attachHistograms gives each series of batch its histograms, in time order, and returns
// how many it kept. A timestamp that also holds a float sample keeps the float and loses
// the histogram, so every reader sees one sample per timestamp; the floats must be in.
func attachHistograms(batch []*selected, byFP map[uint64][]HistogramSample) int {
	n := 0
	for _, rs := range batch {
		hs := byFP[rs.fingerprint]
		sortHistograms(hs)
		rs.hists = slices.DeleteFunc(hs, func(h HistogramSample) bool {
			_, found := slices.BinarySearch(rs.ts, h.T)
			return found
		})
		n += len(rs.hists)
	}
	return n
}

// sortHistograms puts hs in time order.
func sortHistograms(hs []HistogramSample) {
	slices.SortFunc(hs, func(a, b HistogramSample) int { return cmp.Compare(a.T, b.T) })
}

// histSample is a histogram sample as chunks.Sample.
type histSample struct{ s HistogramSample }

func (h *histSample) T() int64                { return h.s.T }
func (h *histSample) ST() int64               { return 0 }
func (h *histSample) F() float64              { return 0 }
func (h *histSample) H() *histogram.Histogram { return h.s.H }

// FH returns the sample as a float histogram, converting an integer one: Prometheus's
// engine reads every histogram through it.
func (h *histSample) FH() *histogram.FloatHistogram {
	if h.s.FH == nil {
		return h.s.H.ToFloat(nil)
	}
	return h.s.FH
}

func (h *histSample) Type() chunkenc.ValueType {
	if h.s.FH != nil {
		return chunkenc.ValFloatHistogram
	}
	return chunkenc.ValHistogram
}

func (h *histSample) Copy() chunks.Sample {
	c := HistogramSample{T: h.s.T}
	if h.s.H != nil {
		c.H = h.s.H.Copy()
	} else {
		c.FH = h.s.FH.Copy()
	}
	return &histSample{c}
}
