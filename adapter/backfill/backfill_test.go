package backfill_test

import (
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/adapter/backfill"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

const hour = int64(3_600_000)

// TestBackfillOlderThanRawRetention writes three days of a counter (with a reset and a
// stale marker) and a native histogram into a block with Prometheus's own BlockWriter, and
// backfills it with a one-day raw retention: the last day must land in raw and the two
// days before only in the 5m and 1h tiers, each row equal to what the materializer's rules
// (rollup.Downsample, DownsampleHistograms) make of those samples; a second run stores
// nothing.
func TestBackfillOlderThanRawRetention(t *testing.T) {
	ctx := context.Background()
	st, tiers, logger := newTestStore(t, "raw:1d,5m:0,1h:0")
	end := int64(1_750_003_200_000) // a whole hour
	start := end - 72*hour
	now := time.UnixMilli(end + hour)
	cutoff := now.UnixMilli() - 24*hour

	counter := labels.FromStrings("__name__", "c_total", "job", "j", "instance", "i")
	hist := labels.FromStrings("__name__", "h", "job", "j", "instance", "i")
	var (
		ts        []int64
		vs        []float64
		hs        []rollup.HistogramSample
		recentF   int
		recentH   int
		oldF      []int64
		oldV      []float64
		oldH      []rollup.HistogramSample
		blockDir  = t.TempDir()
		v         float64
		histCount uint64
	)
	w, err := tsdb.NewBlockWriter(logger, blockDir, 4*24*hour)
	if err != nil {
		t.Fatal(err)
	}
	app := w.Appender(ctx)
	for t0 := start + 7_000; t0 < end; t0 += 15_000 {
		v += 3
		if t0 == start+30*hour+7_000 {
			v = 1 // A restart.
		}
		val := v
		if t0 == start+60*hour+7_000 {
			val = math.Float64frombits(value.StaleNaN)
		}
		if _, err := app.Append(0, counter, t0, val); err != nil {
			t.Fatal(err)
		}
		histCount += 2
		h := &histogram.Histogram{Schema: 0, Count: histCount, Sum: float64(histCount) * 1.5,
			PositiveSpans: []histogram.Span{{Offset: 1, Length: 1}}, PositiveBuckets: []int64{int64(histCount)}}
		if _, err := app.AppendHistogram(0, hist, t0, h, nil); err != nil {
			t.Fatal(err)
		}
		ts, vs = append(ts, t0), append(vs, val)
		hs = append(hs, rollup.HistogramSample{T: t0, H: h.ToFloat(nil)})
		if t0 < cutoff {
			oldF, oldV = append(oldF, t0), append(oldV, val)
			oldH = append(oldH, rollup.HistogramSample{T: t0, H: h.ToFloat(nil)})
		} else {
			recentF++
			recentH++
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	var last backfill.Progress
	cfg := backfill.Config{Path: blockDir, MinTime: math.MinInt64, MaxTime: math.MaxInt64, BatchRows: 1000,
		RateLimit: 1e7, Tiers: tiers, Now: func() time.Time { return now }, Progress: func(p backfill.Progress) { last = p }}
	sum, err := backfill.Run(ctx, cfg, st, logger)
	if err != nil {
		t.Fatal(err)
	}
	if total := int64(len(ts) + len(hs)); last != (backfill.Progress{Units: 1, UnitsTotal: 1, Read: total, ReadTotal: total}) {
		t.Errorf("last progress %+v, want 1 of 1 block and %d of %d samples", last, total, total)
	}
	if sum.Blocks != 1 || sum.Series != 2 || sum.Samples != int64(len(ts)) || sum.Histograms != int64(len(hs)) ||
		sum.ToTiers != int64(len(oldF)+len(oldH)) || sum.Metadata != 0 || sum.MetadataFailures != 0 {
		t.Errorf("summary %+v, want 1 block, 2 series, %d samples, %d histograms, %d to tiers, and no metadata (no WAL) nor failure",
			sum, len(ts), len(hs), len(oldF)+len(oldH))
	}
	// Bytes read: the block's index and chunk files, sized here from the directory.
	files, err := filepath.Glob(filepath.Join(blockDir, "*", "chunks", "*"))
	if err != nil {
		t.Fatal(err)
	}
	indexes, err := filepath.Glob(filepath.Join(blockDir, "*", "index"))
	if err != nil || len(indexes) != 1 || len(files) == 0 {
		t.Fatalf("the block directory holds %d index files and %d chunk files (%v), want 1 and some", len(indexes), len(files), err)
	}
	var blockBytes int64
	for _, f := range append(files, indexes...) {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		blockBytes += fi.Size()
	}
	if sum.BytesRead != blockBytes {
		t.Errorf("%d bytes read, want the block's index and chunks: %d", sum.BytesRead, blockBytes)
	}
	// Bytes sent: at least the raw rows and the float tier rows, at most twice that (the
	// series rows, histogram tier rows and marks weigh far less than the samples).
	histRow := store.HistogramRow{HistogramSample: store.HistogramSample{H: &histogram.Histogram{
		PositiveSpans: []histogram.Span{{Offset: 1, Length: 1}}, PositiveBuckets: []int64{1}}}}
	least := int64(recentF)*store.SampleRowBytes + int64(recentH)*int64(histRow.ColumnBytes()) +
		int64(len(rollup.Downsample(oldF, oldV, 5*60_000))+len(rollup.Downsample(oldF, oldV, hour)))*store.RollupRowBytes
	if sum.BytesSent < least || sum.BytesSent > 2*least {
		t.Errorf("%d bytes sent, want from %d (the rows' columns) to twice that", sum.BytesSent, least)
	}
	n, err := st.CountSamples(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != uint64(recentF) {
		t.Errorf("%d raw samples stored, want the last day's %d", n, recentF)
	}

	fp, target := labels.StableHash(counter), adapter.TargetHash("j", "i")
	hfp := labels.StableHash(hist)
	for _, res := range []int64{5 * 60_000, hour} {
		got, _, err := st.ReadBuckets(ctx, res, []uint64{target}, []uint64{fp}, math.MinInt64, cutoff)
		if err != nil {
			t.Fatal(err)
		}
		want := rollup.Downsample(oldF, oldV, res)
		if len(got[fp]) != len(want) || len(want) == 0 {
			t.Fatalf("%d ms: %d float buckets stored before the cutoff, want %d", res, len(got[fp]), len(want))
		}
		for i := range want {
			if got[fp][i] != want[i] {
				t.Fatalf("%d ms bucket %d: stored %+v, want %+v", res, i, got[fp][i], want[i])
			}
		}
		hgot, _, err := st.ReadHistogramBuckets(ctx, res, []uint64{target}, []uint64{hfp}, math.MinInt64, cutoff)
		if err != nil {
			t.Fatal(err)
		}
		hwant := rollup.DownsampleHistograms(oldH, res)
		if len(hgot[hfp]) != len(hwant) {
			t.Fatalf("%d ms: %d histogram buckets stored, want %d", res, len(hgot[hfp]), len(hwant))
		}
		for i, w := range hwant {
			g := hgot[hfp][i]
			if g.Start != w.Start || g.Count != w.Count || !g.Last.Equals(w.Last) || !g.Sum.Equals(w.Sum) {
				t.Fatalf("%d ms histogram bucket %d: stored %+v, want %+v", res, i, g, w)
			}
		}
	}

	again, err := backfill.Run(ctx, cfg, st, logger)
	if err != nil {
		t.Fatal(err)
	}
	if again.Blocks != 0 || again.Skipped != 1 || again.BytesRead != 0 || again.BytesSent != 0 {
		t.Errorf("a second run stored %d blocks and skipped %d, reading %d bytes and sending %d; want 0, 1, 0, 0",
			again.Blocks, again.Skipped, again.BytesRead, again.BytesSent)
	}
}

// BenchmarkBackfill measures backfill against the direct insert ceiling in one run: 1,000
// series x 1 day at 15 s (5.76M samples) written with Prometheus's BlockWriter, then per
// op either backfilled from the block into a fresh database (read with Prometheus's tsdb
// package, batched, series rows and rollup marks included) or inserted directly as the
// same columns with store.InsertSamples in 500,000-row batches, nothing else. Run it alone:
//
//	PYRAMID_TEST_CLICKHOUSE_ADDR=127.0.0.1:19000 go test ./adapter/backfill -run '^$' -bench Backfill -benchtime 3x
func BenchmarkBackfill(b *testing.B) {
	ctx := context.Background()
	conn := schematest.Conn(b)
	tiers, err := rollup.ParseTiers("raw:30d,5m:365d,1h:0")
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	const series, perSeries = 1000, 5760
	end := time.Now().Add(-time.Hour).UnixMilli() / hour * hour
	start := end - 24*hour
	dir := b.TempDir()
	w, err := tsdb.NewBlockWriter(logger, dir, 2*24*hour)
	if err != nil {
		b.Fatal(err)
	}
	var targets, fps []uint64
	var stamps []int64
	var values []float64
	for s := range series {
		lset := labels.FromStrings("__name__", "bench_metric", "job", "bench", "instance", "i"+string(rune('a'+s%10)), "id", string(rune('A'+s%26))+string(rune('A'+s/26%26)))
		fp, target := labels.StableHash(lset), adapter.TargetHash("bench", lset.Get("instance"))
		app := w.Appender(ctx)
		v := float64(s)
		for i := range perSeries {
			t0 := start + int64(i)*15_000
			v += float64(i % 7)
			if _, err := app.Append(0, lset, t0, v); err != nil {
				b.Fatal(err)
			}
			targets, fps, stamps, values = append(targets, target), append(fps, fp), append(stamps, t0), append(values, v)
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := w.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	newStore := func() *store.Store {
		db := schematest.Database(b, conn, 30*24*time.Hour).Database
		st, err := store.New(store.Config{Database: db, Tiers: tiers, TierRefresh: time.Minute}, conn, logger, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		return st
	}
	total := float64(series * perSeries)
	b.Run("backfill", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			st := newStore()
			b.StartTimer()
			sum, err := backfill.Run(ctx, backfill.Config{Path: dir, MinTime: math.MinInt64, MaxTime: math.MaxInt64,
				BatchRows: 500_000, Tiers: tiers}, st, logger)
			if err != nil {
				b.Fatal(err)
			}
			if sum.Samples != int64(total) {
				b.Fatalf("backfilled %d samples, want %d", sum.Samples, int(total))
			}
		}
		b.ReportMetric(total*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	})
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			st := newStore()
			b.StartTimer()
			for lo := 0; lo < len(stamps); lo += 500_000 {
				hi := min(lo+500_000, len(stamps))
				if err := st.InsertSamples(ctx, targets[lo:hi], fps[lo:hi], stamps[lo:hi], values[lo:hi]); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(total*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	})
}

// newTestStore makes a store over a fresh database with the tier ladder, and a logger
// that discards.
func newTestStore(t *testing.T, ladder string) (*store.Store, []rollup.Tier, *slog.Logger) {
	t.Helper()
	conn := schematest.Conn(t)
	db := schematest.Database(t, conn, 24*time.Hour).Database
	tiers, err := rollup.ParseTiers(ladder)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.New(store.Config{Database: db, Tiers: tiers, TierRefresh: time.Minute}, conn, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return st, tiers, logger
}
