package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/schema"
	"github.com/pyramid-metrics/pyramid/schema/chdbtest"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// histogramCodecVariants are the codec choices BenchmarkHistogramCodecs compares with the
// modern dialect's histograms table. The first and last rows set a codec the table
// already has: they copy it unchanged, and their difference shows the noise.
var histogramCodecVariants = []codecVariant{
	{"ts": "DoubleDelta, ZSTD(1)"},
	// One column's codec changed at a time.
	{"sum": "Gorilla, ZSTD(1)"},
	{"sum": "Delta, ZSTD(1)"},
	{"sum": "FPC, ZSTD(1)"},
	{"sum": "Delta, ZSTD(3)"},
	{"count_int": "ZSTD(1)"},
	{"count_int": "DoubleDelta, ZSTD(1)"},
	{"count_int": "T64, ZSTD(1)"},
	{"positive_deltas": "ZSTD(3)"},
	{"positive_deltas": "ZSTD(5)"},
	{"positive_deltas": "ZSTD(9)"},
	{"positive_deltas": "Delta, ZSTD(3)"},
	{"positive_deltas": "T64, ZSTD(1)"},
	{"positive_deltas": "T64, ZSTD(3)"},
	{"positive_offsets": "ZSTD(3)", "positive_lengths": "ZSTD(3)"},
	{"positive_offsets": "T64, ZSTD(1)", "positive_lengths": "T64, ZSTD(1)"},
	{"custom_values": "ZSTD(3)"},
	// Together: the best of each column above.
	{"sum": "Delta, ZSTD(1)", "count_int": "DoubleDelta, ZSTD(1)", "positive_deltas": "ZSTD(3)",
		"positive_offsets": "ZSTD(3)", "positive_lengths": "ZSTD(3)", "custom_values": "ZSTD(3)"},
	{"sum": "FPC, ZSTD(1)", "count_int": "DoubleDelta, ZSTD(1)", "positive_deltas": "ZSTD(3)",
		"positive_offsets": "ZSTD(3)", "positive_lengths": "ZSTD(3)", "custom_values": "ZSTD(3)"},
	{"ts": "DoubleDelta, ZSTD(1)"},
}

// BenchmarkHistogramCodecs measures what the histograms table costs on ClickHouse 26.5
// (chdbtest), in bytes per histogram after OPTIMIZE FINAL, for 1,000 native histogram
// series x 1,000 scrapes at 15 s of each kind the load generator makes (1M histograms,
// inserted with pyramid's own insert code): the modern dialect's table and every variant of
// histogramCodecVariants, each a copy of the table filled from it; and for comparison what
// Prometheus's TSDB writes to its chunk files for the same histograms. Run it with
//
//	PYRAMID_TEST_CHDB_LIB=$PWD/var/chdb/lib/libchdb.so go test ./cmd/pyramid-loadgen -run '^$' -bench HistogramCodecs -benchtime 1x -v
//
// It logs a table of every variant (column bytes per histogram, and the seconds its copy
// and OPTIMIZE FINAL took in wall-clock and in CPU time) and reports the modern dialect's
// figures as metrics.
func BenchmarkHistogramCodecs(b *testing.B) {
	conn := chdbtest.Conn(b)
	for _, kind := range []string{histKindExponential, histKindCustom} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			db := schematest.Database(b, conn, 0).Database
			p, err := newPlan(genConfig{Seed: 1, Targets: 50, Histograms: 20, HistogramKind: kind, Scrapes: 1000,
				IntervalMs: 15_000, EndMs: 1_750_000_000_000, ResetProb: 0.0005, Job: "node"})
			if err != nil {
				b.Fatal(err)
			}
			dr := &directResult{}
			var batches []*adapter.Batch
			p.directBatches(100_000, histogramSeries, func(batch *adapter.Batch) {
				batches = append(batches, batch)
				dr.Histograms += len(batch.Histograms)
			})
			st, err := openStore(conn, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			if err := insertDirect(ctx, st, batches, 2, dr); err != nil {
				b.Fatal(err)
			}
			batches = nil
			if err := st.OptimizeFinal(ctx, schema.TableHistograms); err != nil {
				b.Fatal(err)
			}
			rows := uint64(dr.Histograms)
			lines := []string{histVariantLine(b, db, schema.TableHistograms, "modern dialect", rows, 0, 0)}
			for i, v := range histogramCodecVariants {
				table := fmt.Sprintf("%s_variant_%d", schema.TableHistograms, i)
				wall, cpu := copyWithCodecs(b, db, schema.TableHistograms, table, v)
				lines = append(lines, histVariantLine(b, db, table, v.String(), rows, wall, cpu))
			}
			var onDisk uint64
			if err := conn.QueryRow(ctx, "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = ? AND table = ? AND active",
				db, schema.TableHistograms).Scan(&onDisk); err != nil {
				b.Fatal(err)
			}
			prom := float64(prometheusHistogramChunkBytes(p)) / float64(rows)
			b.Logf("%d %s histograms; bytes per histogram (column data) and seconds to copy and merge (wall clock, CPU):\n%-100s %8s %8s %8s %8s %8s %8s %8s %7s %7s\n%s\n"+
				"modern dialect on disk (marks, primary index, checksums included): %.3f B/histogram\n"+
				"Prometheus TSDB chunk files for the same histograms (histogram chunks cut at 1 KiB, with framing and CRC): %.3f B/histogram",
				rows, kind, "variant", "ts", "count", "sum", "deltas", "spans", "custom", "total", "secs", "cpu", strings.Join(lines, "\n"),
				float64(onDisk)/float64(rows), prom)
			b.ReportMetric(columnBytes(b, db, schema.TableHistograms, rows)["total"], "B/histogram")
			b.ReportMetric(float64(onDisk)/float64(rows), "disk-B/histogram")
			b.ReportMetric(prom, "prometheus-B/histogram")
		})
	}
}

func histVariantLine(b *testing.B, db, table, name string, rows uint64, wall, cpu time.Duration) string {
	b.Helper()
	c := columnBytes(b, db, table, rows)
	secs, cpuSecs := "-", "-"
	if wall > 0 {
		secs, cpuSecs = fmt.Sprintf("%.1f", wall.Seconds()), fmt.Sprintf("%.1f", cpu.Seconds())
	}
	return fmt.Sprintf("%-100s %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %7s %7s", name, c["ts"], c["count_int"], c["sum"],
		c["positive_deltas"], c["positive_offsets"]+c["positive_lengths"], c["custom_values"], c["total"], secs, cpuSecs)
}

// prometheusHistogramChunkBytes is what Prometheus's TSDB writes to its chunk files for the
// plan's histograms: histogram chunks per series, a new one when the appender asks for it
// (a counter reset) or once a chunk holds 1 KiB and at least 10 histograms (Prometheus's
// TargetBytesPerHistogramChunk and MinSamplesPerHistogramChunk; its head cuts by a time
// estimate aiming at that size), each framed by its length (uvarint), its encoding (one
// byte) and a CRC32 (four bytes). The index is not counted.
func prometheusHistogramChunkBytes(p *plan) int {
	type open struct {
		c   chunkenc.Chunk
		app *chunkenc.HistogramAppender
	}
	cur := map[uint64]*open{}
	total := 0
	flush := func(c chunkenc.Chunk) {
		n := len(c.Bytes())
		total += len(binary.AppendUvarint(nil, uint64(n))) + 1 + n + 4
	}
	p.walk(histogramSeries, func(d *seriesDef, ts int64, _ float64, h *histogram.Histogram) {
		o := cur[d.fp]
		if o == nil || (len(o.c.Bytes()) >= chunkenc.TargetBytesPerHistogramChunk && o.c.NumSamples() >= chunkenc.MinSamplesPerHistogramChunk) {
			if o != nil {
				flush(o.c)
			}
			c := chunkenc.NewHistogramChunk()
			app, err := c.Appender()
			if err != nil {
				panic(err) // A new chunk always has an appender.
			}
			o = &open{c, app.(*chunkenc.HistogramAppender)}
			cur[d.fp] = o
		}
		newChunk, recoded, app, err := o.app.AppendHistogram(nil, 0, ts, h, false)
		if err != nil {
			panic(fmt.Sprintf("append histogram: %v", err)) // Only appendOnly appends fail.
		}
		switch {
		case newChunk != nil && recoded:
			o.c = newChunk
		case newChunk != nil:
			flush(o.c)
			o.c = newChunk
		}
		o.app = app.(*chunkenc.HistogramAppender)
	})
	for _, o := range cur {
		flush(o.c)
	}
	return total
}
