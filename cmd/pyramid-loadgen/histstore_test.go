package main

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/schema"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// The direct phase stores every generated histogram, and the storage phase measures the
// histograms table: its rows, every column, and a checksum that the same rows give
// whatever the batches, and other rows do not.
func TestHistogramStorage(t *testing.T) {
	conn := schematest.Conn(t)
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := mustPlan(t, histConfig(histKindBoth))

	load := func(batchRows int, edit func([]*adapter.Batch)) *storageResult {
		db := schematest.Database(t, conn, 0).Database
		var batches []*adapter.Batch
		dr := &directResult{}
		p.directBatches(batchRows, histogramSeries, func(b *adapter.Batch) {
			batches = append(batches, b)
			dr.Histograms += len(b.Histograms)
		})
		edit(batches)
		st, err := openStore(conn, db, logger)
		if err != nil {
			t.Fatal(err)
		}
		if err := insertDirect(ctx, st, batches, 2, dr); err != nil {
			t.Fatal(err)
		}
		sr, err := measureStorage(ctx, st, db, schema.TableHistograms)
		if err != nil {
			t.Fatal(err)
		}
		return sr
	}
	a := load(1000, func([]*adapter.Batch) {})
	if a.Rows != uint64(p.totalHistograms()) || a.Parts < 1 || a.CompressedBytes == 0 || a.Table != schema.TableHistograms {
		t.Fatalf("%d rows in %d parts, %d bytes, table %q; want %d rows", a.Rows, a.Parts, a.CompressedBytes, a.Table, p.totalHistograms())
	}
	sizes := map[string]uint64{}
	var sum uint64
	for _, c := range a.Columns {
		sizes[c.Name] = c.CompressedBytes
		sum += c.CompressedBytes
	}
	for _, col := range []string{"ts", "schema", "count_int", "sum", "positive_offsets", "positive_deltas", "custom_values"} {
		if sizes[col] == 0 {
			t.Errorf("column %s: no bytes (columns %v)", col, sizes)
		}
	}
	if sum != a.CompressedBytes {
		t.Errorf("columns sum to %d bytes, parts to %d", sum, a.CompressedBytes)
	}
	for _, o := range a.OtherTables {
		if o.Table != schema.TableHistogramRollups {
			t.Errorf("histograms table reported with table %s", o.Table)
		}
	}

	// The same rows in other batches, inserted in reverse: the same checksum.
	b := load(777, slices.Reverse)
	if b.Rows != a.Rows || b.Checksum != a.Checksum {
		t.Errorf("same rows in other batches: %d rows, checksum %x; first load %d rows, %x", b.Rows, b.Checksum, a.Rows, a.Checksum)
	}
	// One bucket count more in one histogram: another checksum.
	c := load(1000, func(bs []*adapter.Batch) {
		h := bs[0].Histograms[0].H
		h.PositiveBuckets[0]++
		h.Count++
	})
	if c.Rows != a.Rows || c.Checksum == a.Checksum {
		t.Errorf("one histogram changed: %d rows, checksum %x; first load %d rows, %x", c.Rows, c.Checksum, a.Rows, a.Checksum)
	}
}
