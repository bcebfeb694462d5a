package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/pyramid-metrics/pyramid/schema"
)

// storageResult is the on-disk size of one database's samples table after OPTIMIZE FINAL.
type storageResult struct {
	Database          string       `json:"database"`
	OptimizeSeconds   float64      `json:"optimize_seconds"`
	Rows              uint64       `json:"rows"`
	Parts             uint64       `json:"active_parts"`
	Partitions        uint64       `json:"partitions"`
	CompressedBytes   uint64       `json:"data_compressed_bytes"`
	UncompressedBytes uint64       `json:"data_uncompressed_bytes"`
	MarksBytes        uint64       `json:"marks_bytes"`
	BytesPerSample    float64      `json:"bytes_per_sample"`
	Columns           []columnStat `json:"columns"`
	OtherTables       []tableStat  `json:"other_tables"`
	Checksum          uint64       `json:"checksum"` // sum(cityHash64(target, fingerprint, ts, value)), wrapping
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
	BytesPerSample  float64 `json:"bytes_per_sample"` // this table's bytes per sample of the samples table
}

func tableExists(ctx context.Context, conn driver.Conn, db, table string) (bool, error) {
	var n uint64
	err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", db, table).Scan(&n)
	return n > 0, err
}

func countRows(ctx context.Context, conn driver.Conn, db string) (uint64, error) {
	var n uint64
	err := conn.QueryRow(ctx, "SELECT count() FROM "+db+"."+schema.TableSamples).Scan(&n)
	return n, err
}

// optimizeFinal merges every partition of db.samples into one part, collapsing duplicate
// (target, fingerprint, ts) rows. It goes partition by partition: that works on every
// server version, while OPTIMIZE without PARTITION merges only one partition on some.
func optimizeFinal(ctx context.Context, conn driver.Conn, db, table string) error {
	rows, err := conn.Query(ctx, "SELECT DISTINCT partition_id FROM system.parts WHERE database = ? AND table = ? AND active ORDER BY partition_id", db, table)
	if err != nil {
		return fmt.Errorf("list partitions of %s.%s: %w", db, table, err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		if err := conn.Exec(ctx, fmt.Sprintf("OPTIMIZE TABLE %s.%s PARTITION ID ? FINAL", db, table), id); err != nil {
			return fmt.Errorf("optimize %s.%s partition %s: %w", db, table, id, err)
		}
	}
	return nil
}

// measureStorage runs OPTIMIZE FINAL on db's samples table and reads its sizes.
func measureStorage(ctx context.Context, conn driver.Conn, db string) (*storageResult, error) {
	res := &storageResult{Database: db}
	t0 := time.Now()
	if err := optimizeFinal(ctx, conn, db, schema.TableSamples); err != nil {
		return nil, err
	}
	res.OptimizeSeconds = time.Since(t0).Seconds()

	q := `SELECT sum(rows), count(), uniqExact(partition_id), sum(data_compressed_bytes), sum(data_uncompressed_bytes), sum(marks_bytes)
FROM system.parts WHERE database = ? AND table = ? AND active`
	if err := conn.QueryRow(ctx, q, db, schema.TableSamples).Scan(&res.Rows, &res.Parts, &res.Partitions, &res.CompressedBytes, &res.UncompressedBytes, &res.MarksBytes); err != nil {
		return nil, fmt.Errorf("read parts of %s: %w", db, err)
	}
	if res.Rows > 0 {
		res.BytesPerSample = float64(res.CompressedBytes) / float64(res.Rows)
	}

	rows, err := conn.Query(ctx, `SELECT name, data_compressed_bytes, data_uncompressed_bytes FROM system.columns
WHERE database = ? AND table = ?`, db, schema.TableSamples)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", db, err)
	}
	for rows.Next() {
		var c columnStat
		if err := rows.Scan(&c.Name, &c.CompressedBytes, &c.UncompressedBytes); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan a column of %s: %w", db, err)
		}
		if res.Rows > 0 {
			c.BytesPerSample = float64(c.CompressedBytes) / float64(res.Rows)
		}
		if c.CompressedBytes > 0 {
			c.Ratio = float64(c.UncompressedBytes) / float64(c.CompressedBytes)
		}
		res.Columns = append(res.Columns, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	rows, err = conn.Query(ctx, `SELECT table, sum(rows), sum(data_compressed_bytes) FROM system.parts
WHERE database = ? AND active AND table != ? GROUP BY table ORDER BY table`, db, schema.TableSamples)
	if err != nil {
		return nil, fmt.Errorf("read other tables of %s: %w", db, err)
	}
	for rows.Next() {
		var t tableStat
		if err := rows.Scan(&t.Table, &t.Rows, &t.CompressedBytes); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan a table of %s: %w", db, err)
		}
		if res.Rows > 0 {
			t.BytesPerSample = float64(t.CompressedBytes) / float64(res.Rows)
		}
		res.OtherTables = append(res.OtherTables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	var n uint64
	q = fmt.Sprintf("SELECT count(), sum(cityHash64(target, fingerprint, ts, value)) FROM %s.%s", db, schema.TableSamples)
	if err := conn.QueryRow(ctx, q).Scan(&n, &res.Checksum); err != nil {
		return nil, fmt.Errorf("checksum %s: %w", db, err)
	}
	return res, nil
}

// waitMerges waits until the server runs no merges (or timeout), so that one phase's
// background merges do not eat into the next phase's measurement.
func waitMerges(ctx context.Context, conn driver.Conn, timeout time.Duration) (time.Duration, uint64, error) {
	start := time.Now()
	for {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.merges").Scan(&n); err != nil {
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
// of db.samples (layout: 16-byte checksum, method, sizes). It works only when the server's
// data directory is readable from here.
func detectCompression(ctx context.Context, conn driver.Conn, db string) (string, error) {
	var path string
	q := "SELECT path FROM system.parts WHERE database = ? AND table = ? AND active ORDER BY rows DESC LIMIT 1"
	if err := conn.QueryRow(ctx, q, db, schema.TableSamples).Scan(&path); err != nil {
		return "", fmt.Errorf("find a part of %s: %w", db, err)
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
