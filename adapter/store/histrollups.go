package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema"
)

// HistogramRollupRow is one histogram series' rollup of one bucket.
type HistogramRollupRow struct {
	Target, Fingerprint uint64
	rollup.BucketHistogramAggregate
}

// encodeHistogram is a float histogram as stored in histogram_rollups: a prompb.Histogram
// message, "" for none.
func encodeHistogram(h *histogram.FloatHistogram) (string, error) {
	if h == nil {
		return "", nil
	}
	m := prompb.FromFloatHistogram(0, h)
	b, err := m.Marshal()
	if err != nil {
		return "", fmt.Errorf("encode a histogram of %d buckets: %w", len(h.PositiveBuckets)+len(h.NegativeBuckets), err)
	}
	return string(b), nil
}

func decodeHistogram(s string) (*histogram.FloatHistogram, error) {
	if s == "" {
		return nil, nil
	}
	var m prompb.Histogram
	if err := m.Unmarshal([]byte(s)); err != nil {
		return nil, fmt.Errorf("decode a stored histogram of %d bytes: %w", len(s), err)
	}
	return m.ToFloatHistogram(), nil
}

// InsertHistogramRollups writes histogram rollup rows, all with this version.
func (s *Store) InsertHistogramRollups(ctx context.Context, rows []HistogramRollupRow, version uint32) error {
	if len(rows) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Database+"."+schema.TableHistogramRollups+
		" (res, target, fingerprint, bucket, cnt, first_ts, last_ts, resets, incompatible, first, last, correction, sum, version)")
	if err != nil {
		return fmt.Errorf("prepare %d histogram rollup rows: %w", len(rows), err)
	}
	defer batch.Close()
	for _, r := range rows {
		a := r.HistogramAggregate
		var enc [4]string
		for i, h := range []*histogram.FloatHistogram{a.First, a.Last, a.Correction, a.Sum} {
			if enc[i], err = encodeHistogram(h); err != nil {
				return err
			}
		}
		var incompatible uint8
		if a.Incompatible {
			incompatible = 1
		}
		if err := batch.Append(r.Res, r.Target, r.Fingerprint, r.Start, a.Count, a.FirstT, a.LastT, a.Resets,
			incompatible, enc[0], enc[1], enc[2], enc[3], version); err != nil {
			return fmt.Errorf("append histogram rollup row: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d histogram rollup rows: %w", len(rows), err)
	}
	return nil
}

// ReadHistogramBuckets is ReadBuckets for histogram series: the stored buckets of
// resolution res starting in [from, to], highest version per bucket, by fingerprint in time
// order, and how many rows were read.
func (s *Store) ReadHistogramBuckets(ctx context.Context, res int64, targets, fingerprints []uint64, from, to int64) (map[uint64][]rollup.BucketHistogramAggregate, int, error) {
	out := make(map[uint64][]rollup.BucketHistogramAggregate)
	if len(fingerprints) == 0 || from > to {
		return out, 0, nil
	}
	rows, err := s.conn.Query(ctx, "SELECT fingerprint, bucket, cnt, first_ts, last_ts, resets, incompatible,"+
		" first, last, correction, sum, version FROM "+s.cfg.Database+"."+schema.TableHistogramRollups+
		" WHERE res = ? AND target IN ? AND fingerprint IN ? AND bucket >= ? AND bucket <= ?",
		res, inSet(targets), inSet(fingerprints), from, to)
	if err != nil {
		return nil, 0, fmt.Errorf("query %d ms histogram rollups of %d series: %w", res, len(fingerprints), err)
	}
	defer rows.Close()
	type versioned struct {
		rollup.BucketHistogramAggregate
		version uint32
	}
	byFP := map[uint64][]versioned{}
	n := 0
	for rows.Next() {
		var (
			fp                   uint64
			v                    versioned
			a                    = &v.HistogramAggregate
			incompatible         uint8
			first, last, cor, sm string
		)
		if err := rows.Scan(&fp, &v.Start, &a.Count, &a.FirstT, &a.LastT, &a.Resets, &incompatible,
			&first, &last, &cor, &sm, &v.version); err != nil {
			return nil, n, fmt.Errorf("scan %d ms histogram rollup row %d: %w", res, n, err)
		}
		a.Incompatible = incompatible != 0
		for _, d := range []struct {
			dst **histogram.FloatHistogram
			src string
		}{{&a.First, first}, {&a.Last, last}, {&a.Correction, cor}, {&a.Sum, sm}} {
			if *d.dst, err = decodeHistogram(d.src); err != nil {
				return nil, n, fmt.Errorf("read %d ms histogram rollup row %d of series %d: %w", res, n, fp, err)
			}
		}
		v.Res = res
		byFP[fp] = append(byFP[fp], v)
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, n, fmt.Errorf("read %d ms histogram rollups of %d series after %d rows: %w", res, len(fingerprints), n, err)
	}
	for fp, vs := range byFP {
		slices.SortFunc(vs, func(a, b versioned) int {
			if a.Start != b.Start {
				return cmp.Compare(a.Start, b.Start)
			}
			return cmp.Compare(b.version, a.version)
		})
		buckets := make([]rollup.BucketHistogramAggregate, 0, len(vs))
		for i, v := range vs {
			if i > 0 && v.Start == vs[i-1].Start {
				continue
			}
			buckets = append(buckets, v.BucketHistogramAggregate)
		}
		out[fp] = buckets
	}
	return out, n, nil
}

// UnitHistogramSeries is one series' histograms within some units, deduplicated and in time
// order, as float histograms.
type UnitHistogramSeries struct {
	Target     uint64
	Histograms []rollup.HistogramSample
}

// UnitHistograms reads the histograms of the targets within the units of this width
// starting at starts (ascending), by fingerprint, the units' histograms together, as
// ReadUnits reads samples. FINAL keeps one histogram per timestamp, the last written, as
// every read does; the time condition may go in PREWHERE under FINAL because ts is in the
// table's key, so every version of a row passes it or none does.
func (s *Store) UnitHistograms(ctx context.Context, width int64, starts []int64, targets []uint64) (map[uint64]*UnitHistogramSeries, error) {
	cond, args := unitCondition(width, starts)
	rows, err := s.conn.Query(ctx, "SELECT fingerprint, ts, "+histogramColumns+", target FROM "+s.cfg.Database+"."+
		schema.TableHistograms+" FINAL PREWHERE "+cond+" WHERE target IN ?", append(args, inSet(targets))...)
	if err != nil {
		return nil, fmt.Errorf("query raw histograms of %d targets over %d units: %w", len(targets), len(starts), err)
	}
	byFP, targetOf, _, err := scanHistograms(rows, true)
	if err != nil {
		return nil, fmt.Errorf("read raw histograms of %d targets over %d units: %w", len(targets), len(starts), err)
	}
	out := make(map[uint64]*UnitHistogramSeries, len(byFP))
	for fp, hs := range byFP {
		out[fp] = &UnitHistogramSeries{Target: targetOf[fp], Histograms: toFloatSamples(hs)}
	}
	return out, nil
}

// toFloatSamples sorts hs by time and converts them to the rollup rules' float form.
func toFloatSamples(hs []HistogramSample) []rollup.HistogramSample {
	sortHistograms(hs)
	out := make([]rollup.HistogramSample, len(hs))
	for i, h := range hs {
		out[i] = rollup.HistogramSample{T: h.T, H: h.FH}
		if h.FH == nil {
			out[i].H = h.H.ToFloat(nil)
		}
	}
	return out
}
