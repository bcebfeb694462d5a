package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/schema"
	"github.com/pyramid-metrics/pyramid/schema/chdbtest"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// codecVariant is a copy of the samples table with other codecs on some columns (column
// name to CODEC arguments), other table settings (key "settings", the body of a SETTINGS
// clause) or other settings of a column (key "<column> settings", such as
// "max_compress_block_size = 16384").
type codecVariant map[string]string

// settingsKey is the codecVariant key that holds table settings rather than a column; a
// column name followed by it holds that column's settings.
const settingsKey = "settings"

// codecVariants are the codec choices BenchmarkCodecs compares with the modern dialect's
// own table. The first and last rows copy the modern dialect's table unchanged: their
// seconds are the reference for the others' cost, and their difference shows the noise.
var codecVariants = []codecVariant{
	{"value": "Delta, ZSTD(1)"},
	// One column's codec changed at a time.
	{"value": "Gorilla, ZSTD(1)"},
	{"value": "Gorilla"},
	{"value": "Gorilla, LZ4"},
	{"value": "FPC, ZSTD(1)"},
	{"value": "ZSTD(1)"},
	{"value": "ZSTD(3)"},
	{"value": "DoubleDelta, ZSTD(1)"},
	{"value": "Delta, LZ4"},
	{"value": "Delta, ZSTD(2)"},
	{"value": "Delta, ZSTD(3)"},
	{"value": "Delta, ZSTD(5)"},
	{"value": "Delta, ZSTD(6)"},
	{"value": "Delta, ZSTD(7)"},
	{"value": "Delta, ZSTD(8)"},
	{"value": "Delta, ZSTD(9)"},
	{"value": "Delta, ZSTD(15)"},
	{"value": "Delta, ZSTD(19)"},
	{"ts": "Delta, ZSTD(1)"},
	{"ts": "DoubleDelta"},
	{"ts": "ZSTD(1)"},
	{"target": "ZSTD(3)", "fingerprint": "ZSTD(3)"},
	{"target": "LZ4", "fingerprint": "LZ4"},
	{"target": "Delta, ZSTD(1)", "fingerprint": "Delta, ZSTD(1)"},
	// Compression block sizes: for the whole table, then for the values alone, where
	// smaller blocks let ZSTD's entropy tables follow fewer series each.
	{"settings": "index_granularity = 2048"},
	{"settings": "min_compress_block_size = 262144"},
	{"settings": "min_compress_block_size = 1048576"},
	{"settings": "min_compress_block_size = 4194304, max_compress_block_size = 4194304"},
	{"value settings": "min_compress_block_size = 32768, max_compress_block_size = 32768"},
	{"value settings": "min_compress_block_size = 16384, max_compress_block_size = 16384"},
	{"value settings": "min_compress_block_size = 8192, max_compress_block_size = 8192"},
	{"value": "Delta, ZSTD(3)", "value settings": "min_compress_block_size = 16384, max_compress_block_size = 16384"},
	{"value": "Delta, ZSTD(5)", "value settings": "min_compress_block_size = 16384, max_compress_block_size = 16384"},
	{"value": "Delta, ZSTD(7)", "value settings": "min_compress_block_size = 16384, max_compress_block_size = 16384"},
	{"value": "Delta, ZSTD(8)", "value settings": "min_compress_block_size = 16384, max_compress_block_size = 16384"},
	{"value": "Delta, ZSTD(9)", "value settings": "min_compress_block_size = 16384, max_compress_block_size = 16384"},
	{"value": "Delta, ZSTD(11)", "value settings": "min_compress_block_size = 16384, max_compress_block_size = 16384"},
	{"value": "Delta, ZSTD(13)", "value settings": "min_compress_block_size = 16384, max_compress_block_size = 16384"},
	{"value": "Delta, ZSTD(19)", "value settings": "min_compress_block_size = 16384, max_compress_block_size = 16384"},
	// Both: larger blocks for the key columns, small ones for the values.
	{"settings": "min_compress_block_size = 262144", "value": "Delta, ZSTD(8)",
		"value settings": "min_compress_block_size = 16384, max_compress_block_size = 16384"},
	{"settings": "min_compress_block_size = 1048576", "value": "Delta, ZSTD(8)",
		"value settings": "min_compress_block_size = 16384, max_compress_block_size = 16384"},
	// The smallest this data gets with these codecs, whatever the cost.
	{"settings": "min_compress_block_size = 1048576", "value": "Delta, ZSTD(19)"},
	{"value": "Delta, ZSTD(1)"},
}

// BenchmarkCodecs measures what the samples table costs on ClickHouse 26.5 (chdbtest), in
// bytes per sample after OPTIMIZE FINAL, for the load generator's default data (5,000
// node-exporter-like series x 2,000 scrapes at 15 s, 10M samples, inserted with pyramid's
// own insert code): the modern dialect's table, and with realistic gauges every variant of
// codecVariants, each a copy of the table filled from it; and for comparison what
// Prometheus's TSDB writes to its chunk files for the same samples. Run it with
//
//	PYRAMID_TEST_CHDB_LIB=$PWD/var/chdb/lib/libchdb.so go test ./cmd/pyramid-loadgen -run '^$' -bench Codecs -benchtime 1x -v
//
// It logs a table of every variant (column bytes per sample, and the seconds its copy and
// OPTIMIZE FINAL took in wall-clock and in CPU time, a sign of what the codecs cost every
// insert and merge) and reports the modern dialect's figures as metrics.
func BenchmarkCodecs(b *testing.B) {
	conn := chdbtest.Conn(b)
	for _, gauges := range []string{"realistic", "full"} {
		b.Run(gauges, func(b *testing.B) {
			ctx := context.Background()
			db := schematest.Database(b, conn, 0).Database
			p, err := newPlan(genConfig{Seed: 1, Targets: 50, SeriesPerTarget: 100, Scrapes: 2000, IntervalMs: 15_000,
				EndMs: 1_750_000_000_000, ResetProb: 0.0005, Job: "node", FullPrecisionGauges: gauges == "full"})
			if err != nil {
				b.Fatal(err)
			}
			dr := &directResult{}
			var batches []*adapter.Batch
			p.directBatches(100_000, nil, func(batch *adapter.Batch) {
				batches = append(batches, batch)
				dr.Samples += batch.Samples()
			})
			st, err := openStore(conn, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			if err := insertDirect(ctx, st, batches, 2, dr); err != nil {
				b.Fatal(err)
			}
			batches = nil
			if err := st.OptimizeFinal(ctx, schema.TableSamples); err != nil {
				b.Fatal(err)
			}
			samples := uint64(dr.Samples)
			lines := []string{variantLine(b, db, schema.TableSamples, "modern dialect", samples, 0, 0)}
			if gauges == "realistic" {
				for i, v := range codecVariants {
					table := fmt.Sprintf("%s_variant_%d", schema.TableSamples, i)
					wall, cpu := copyWithCodecs(b, db, schema.TableSamples, table, v)
					lines = append(lines, variantLine(b, db, table, v.String(), samples, wall, cpu))
				}
			}
			var onDisk uint64
			if err := conn.QueryRow(ctx, "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = ? AND table = ? AND active",
				db, schema.TableSamples).Scan(&onDisk); err != nil {
				b.Fatal(err)
			}
			prom := float64(prometheusChunkBytes(p)) / float64(samples)
			b.Logf("%d samples, %s gauges; bytes per sample (column data) and seconds to copy and merge (wall clock, CPU):\n%-60s %8s %8s %8s %8s %8s %7s %7s\n%s\n"+
				"modern dialect on disk (marks, primary index, checksums included): %.3f B/sample\n"+
				"Prometheus TSDB chunk files for the same samples (XOR, 120 samples a chunk, with framing and CRC): %.3f B/sample",
				samples, gauges, "variant", "target", "fp", "ts", "value", "total", "secs", "cpu", strings.Join(lines, "\n"),
				float64(onDisk)/float64(samples), prom)
			b.ReportMetric(columnBytes(b, db, schema.TableSamples, samples)["total"], "B/sample")
			b.ReportMetric(float64(onDisk)/float64(samples), "disk-B/sample")
			b.ReportMetric(prom, "prometheus-B/sample")
		})
	}
}

func (v codecVariant) String() string {
	var parts []string
	for _, col := range slices.Sorted(func(yield func(string) bool) {
		for c := range v {
			if !yield(c) {
				return
			}
		}
	}) {
		parts = append(parts, col+" "+v[col])
	}
	return strings.Join(parts, ", ")
}

// copyWithCodecs creates table as a copy of the source table with v's codecs and
// settings, fills it from the source table and merges it; it returns how long the filling
// and merging took, in wall-clock time and in CPU time of the process (the engine runs in
// it), which other work on a shared machine does not inflate.
func copyWithCodecs(b *testing.B, db, source, table string, v codecVariant) (wall, cpu time.Duration) {
	b.Helper()
	conn := chdbtest.Conn(b)
	ctx := context.Background()
	create := fmt.Sprintf("CREATE TABLE %s.%s AS %[1]s.%[3]s", db, table, source)
	if settings := v[settingsKey]; settings != "" {
		create += " SETTINGS " + settings
	}
	if err := conn.Exec(ctx, create); err != nil {
		b.Fatalf("%s: %v", create, err)
	}
	for key, spec := range v {
		var alter string
		switch col, isSettings := strings.CutSuffix(key, " "+settingsKey); {
		case key == settingsKey:
			continue
		case isSettings:
			alter = fmt.Sprintf("ALTER TABLE %s.%s MODIFY COLUMN %s MODIFY SETTING %s", db, table, col, spec)
		default:
			alter = fmt.Sprintf("ALTER TABLE %s.%s MODIFY COLUMN %s CODEC(%s)", db, table, key, spec)
		}
		if err := conn.Exec(ctx, alter); err != nil {
			b.Fatalf("%s: %v", alter, err)
		}
	}
	start, startCPU := time.Now(), processCPU(b)
	if err := conn.Exec(ctx, fmt.Sprintf("INSERT INTO %s.%s SELECT * FROM %[1]s.%[3]s", db, table, source)); err != nil {
		b.Fatal(err)
	}
	st, err := openStore(conn, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	if err := st.OptimizeFinal(ctx, table); err != nil {
		b.Fatal(err)
	}
	return time.Since(start), processCPU(b) - startCPU
}

// processCPU is the user and system CPU time the process has used so far.
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// columnBytes returns the compressed bytes per sample (per row) of each column of table,
// and their "total", checking first that the table holds every sample once.
func columnBytes(b *testing.B, db, table string, samples uint64) map[string]float64 {
	b.Helper()
	conn := chdbtest.Conn(b)
	ctx := context.Background()
	var rows uint64
	if err := conn.QueryRow(ctx, "SELECT sum(rows) FROM system.parts WHERE database = ? AND table = ? AND active", db, table).Scan(&rows); err != nil {
		b.Fatal(err)
	}
	if rows != samples {
		b.Fatalf("%s holds %d rows after OPTIMIZE FINAL, want the %d generated", table, rows, samples)
	}
	q, err := conn.Query(ctx, "SELECT name, data_compressed_bytes FROM system.columns WHERE database = ? AND table = ?", db, table)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	out := map[string]float64{}
	for q.Next() {
		var name string
		var n uint64
		if err := q.Scan(&name, &n); err != nil {
			b.Fatal(err)
		}
		out[name] = float64(n) / float64(samples)
		out["total"] += float64(n) / float64(samples)
	}
	if err := q.Err(); err != nil {
		b.Fatal(err)
	}
	return out
}

func variantLine(b *testing.B, db, table, name string, samples uint64, wall, cpu time.Duration) string {
	b.Helper()
	c := columnBytes(b, db, table, samples)
	secs, cpuSecs := "-", "-"
	if wall > 0 {
		secs, cpuSecs = fmt.Sprintf("%.1f", wall.Seconds()), fmt.Sprintf("%.1f", cpu.Seconds())
	}
	return fmt.Sprintf("%-60s %8.3f %8.3f %8.3f %8.3f %8.3f %7s %7s", name, c["target"], c["fingerprint"], c["ts"], c["value"], c["total"], secs, cpuSecs)
}

// prometheusChunkBytes is what Prometheus's TSDB writes to its chunk files for the plan's
// samples: XOR chunks of 120 samples per series, each framed by its length (uvarint), its
// encoding (one byte) and a CRC32 (four bytes). The index is not counted.
func prometheusChunkBytes(p *plan) int {
	type open struct {
		c   *chunkenc.XORChunk
		app chunkenc.Appender
	}
	cur := map[uint64]*open{}
	total := 0
	flush := func(o *open) {
		n := len(o.c.Bytes())
		total += len(binary.AppendUvarint(nil, uint64(n))) + 1 + n + 4
	}
	p.walk(nil, func(d *seriesDef, ts int64, v float64, _ *histogram.Histogram) {
		o := cur[d.fp]
		if o == nil || o.c.NumSamples() == 120 {
			if o != nil {
				flush(o)
			}
			c := chunkenc.NewXORChunk()
			app, err := c.Appender()
			if err != nil {
				panic(err) // A new chunk always has an appender.
			}
			o = &open{c, app}
			cur[d.fp] = o
		}
		o.app.Append(0, ts, v)
	})
	for _, o := range cur {
		flush(o)
	}
	return total
}
