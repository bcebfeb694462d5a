package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/schema"
)

// storageResult is the on-disk size of one database's samples or histograms table after
// OPTIMIZE FINAL. Bytes per sample are per row: per histogram for the histograms table.
type storageResult struct {
	Database          string       `json:"database"`
	Table             string       `json:"table"`
	OptimizeSeconds   float64      `json:"optimize_seconds"`
	Rows              uint64       `json:"rows"`
	Parts             uint64       `json:"active_parts"`
	Partitions        uint64       `json:"partitions"`
	CompressedBytes   uint64       `json:"data_compressed_bytes"`
	UncompressedBytes uint64       `json:"data_uncompressed_bytes"`
	MarksBytes        uint64       `json:"marks_bytes"`
	BytesPerSample    float64      `json:"bytes_per_sample"`
	Columns           []columnStat `json:"columns"`
	OtherTables       []tableStat  `json:"other_tables"` // the tables that belong to this one
	Checksum          uint64       `json:"checksum"`     // sum(cityHash64(every column)), wrapping
}

type columnStat struct {
	Name              string  `json:"name"`
	CompressedBytes   uint64  `json:"data_compressed_bytes"`
	UncompressedBytes uint64  `json:"data_uncompressed_bytes"`
	BytesPerSample    float64 `json:"bytes_per_sample"`
	Ratio             float64 `json:"compression_ratio"`
}

type tableStat struct {
	Table           string  `json:"table"`
	Rows            uint64  `json:"rows"`
	CompressedBytes uint64  `json:"data_compressed_bytes"`
	BytesPerSample  float64 `json:"bytes_per_sample"` // per row of the table it belongs to
}

// openStore is a store on db for the load generator's statements; it reads nothing, and
// its metrics go nowhere.
func openStore(conn driver.Conn, db string, logger *slog.Logger) (*store.Store, error) {
	return store.New(store.Config{Database: db, TierRefresh: time.Minute}, conn, logger, prometheus.NewRegistry())
}

// measureStorage runs OPTIMIZE FINAL on table (the samples or the histograms table) of
// st's database and reads its sizes.
func measureStorage(ctx context.Context, st *store.Store, db, table string) (*storageResult, error) {
	res := &storageResult{Database: db, Table: table}
	t0 := time.Now()
	if err := st.OptimizeFinal(ctx, table); err != nil {
		return nil, err
	}
	res.OptimizeSeconds = time.Since(t0).Seconds()

	samples := table == schema.TableSamples
	parts, columns, checksum := st.SamplesParts, st.SamplesColumns, st.SamplesChecksum
	if !samples {
		parts, columns, checksum = st.HistogramsParts, st.HistogramsColumns, st.HistogramsChecksum
	}
	ps, err := parts(ctx)
	if err != nil {
		return nil, err
	}
	res.Rows, res.Parts, res.Partitions = ps.Rows, ps.Parts, ps.Partitions
	res.CompressedBytes, res.UncompressedBytes, res.MarksBytes = ps.CompressedBytes, ps.UncompressedBytes, ps.MarksBytes
	if res.Rows > 0 {
		res.BytesPerSample = float64(res.CompressedBytes) / float64(res.Rows)
	}

	cols, err := columns(ctx)
	if err != nil {
		return nil, err
	}
	for _, col := range cols {
		c := columnStat{Name: col.Name, CompressedBytes: col.CompressedBytes, UncompressedBytes: col.UncompressedBytes}
		if res.Rows > 0 {
			c.BytesPerSample = float64(c.CompressedBytes) / float64(res.Rows)
		}
		if c.CompressedBytes > 0 {
			c.Ratio = float64(c.UncompressedBytes) / float64(c.CompressedBytes)
		}
		res.Columns = append(res.Columns, c)
	}

	if res.Checksum, err = checksum(ctx); err != nil {
		return nil, err
	}
	tables, err := st.OtherTables(ctx)
	if err != nil {
		return nil, err
	}
	for _, tb := range tables {
		// The histograms table and its rollups go with the histograms, every other table
		// with the samples.
		histograms := tb.Table == schema.TableHistograms || tb.Table == schema.TableHistogramRollups
		if histograms == samples || tb.Table == table {
			continue
		}
		t := tableStat{Table: tb.Table, Rows: tb.Rows, CompressedBytes: tb.CompressedBytes}
		if res.Rows > 0 {
			t.BytesPerSample = float64(t.CompressedBytes) / float64(res.Rows)
		}
		res.OtherTables = append(res.OtherTables, t)
	}
	return res, nil
}

// waitMerges waits until the server runs no merges (or timeout), so that one phase's
// background merges do not eat into the next phase's measurement.
func waitMerges(ctx context.Context, st *store.Store, timeout time.Duration) (time.Duration, uint64, error) {
	start := time.Now()
	for {
		n, err := st.RunningMerges(ctx)
		if err != nil {
			return time.Since(start), 0, err
		}
		if n == 0 || time.Since(start) >= timeout {
			return time.Since(start), n, nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), n, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// detectCompression reads the method byte of the first compressed block of a column file
// of the samples table of st's database (layout: 16-byte checksum, method, sizes). It works
// only when the server's data directory is readable from here.
func detectCompression(ctx context.Context, st *store.Store) (string, error) {
	path, err := st.LargestSamplesPart(ctx)
	if err != nil {
		return "", err
	}
	f, err := os.Open(filepath.Join(path, "value.bin"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	var hdr [17]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return "", fmt.Errorf("read %s: %w", f.Name(), err)
	}
	switch m := hdr[16]; m {
	case 0x82:
		return "lz4", nil
	case 0x90:
		return "zstd", nil
	case 0x02:
		return "none", nil
	case 0x91:
		return "multiple codecs (CODEC(...))", nil
	default:
		return fmt.Sprintf("unknown method byte 0x%02x", m), nil
	}
}
