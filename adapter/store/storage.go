package store

import (
	"context"
	"fmt"

	"github.com/pyramid-metrics/pyramid/schema"
)

// What the tables take on disk, for measuring ClickHouse rather than for serving: the load
// generator (cmd/pyramid-loadgen) reports these figures. They read system tables of one
// server, so on a cluster they describe the server that answers.

// PartStats sums the active parts of a table.
type PartStats struct {
	Rows, Parts, Partitions                        uint64
	CompressedBytes, UncompressedBytes, MarksBytes uint64
}

// ColumnSize is the size of one column of a table.
type ColumnSize struct {
	Name                               string
	CompressedBytes, UncompressedBytes uint64
}

// TableSize is the size of one table.
type TableSize struct {
	Table                 string
	Rows, CompressedBytes uint64
}

// TableExists reports whether the database holds table.
func (s *Store) TableExists(ctx context.Context, table string) (bool, error) {
	var n uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = ?", s.cfg.Database, table).Scan(&n); err != nil {
		return false, fmt.Errorf("look up table %s.%s: %w", s.cfg.Database, table, err)
	}
	return n > 0, nil
}

// CountSamples counts the rows of the samples table, duplicates not yet merged included.
func (s *Store) CountSamples(ctx context.Context) (uint64, error) {
	var n uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM "+s.cfg.Database+"."+schema.TableSamples).Scan(&n); err != nil {
		return 0, fmt.Errorf("count samples of %s: %w", s.cfg.Database, err)
	}
	return n, nil
}

// OptimizeFinal merges every partition of table into one part, collapsing duplicate rows.
// It goes partition by partition: that works on every server version, while OPTIMIZE
// without PARTITION merges only one partition on some.
func (s *Store) OptimizeFinal(ctx context.Context, table string) error {
	db := s.cfg.Database
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT partition_id FROM system.parts WHERE database = ? AND table = ? AND active ORDER BY partition_id", db, table)
	if err != nil {
		return fmt.Errorf("list partitions of %s.%s: %w", db, table, err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("scan a partition of %s.%s: %w", db, table, err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list partitions of %s.%s: %w", db, table, err)
	}
	for _, id := range ids {
		if err := s.conn.Exec(ctx, fmt.Sprintf("OPTIMIZE TABLE %s.%s PARTITION ID ? FINAL", db, table), id); err != nil {
			return fmt.Errorf("optimize %s.%s partition %s: %w", db, table, id, err)
		}
	}
	return nil
}

// SamplesParts sums the active parts of the samples table.
func (s *Store) SamplesParts(ctx context.Context) (PartStats, error) {
	var p PartStats
	q := `SELECT sum(rows), count(), uniqExact(partition_id), sum(data_compressed_bytes), sum(data_uncompressed_bytes), sum(marks_bytes)
FROM system.parts WHERE database = ? AND table = ? AND active`
	if err := s.conn.QueryRow(ctx, q, s.cfg.Database, schema.TableSamples).Scan(&p.Rows, &p.Parts, &p.Partitions, &p.CompressedBytes, &p.UncompressedBytes, &p.MarksBytes); err != nil {
		return p, fmt.Errorf("read parts of %s: %w", s.cfg.Database, err)
	}
	return p, nil
}

// SamplesColumns is the size of each column of the samples table.
func (s *Store) SamplesColumns(ctx context.Context) ([]ColumnSize, error) {
	rows, err := s.conn.Query(ctx, `SELECT name, data_compressed_bytes, data_uncompressed_bytes FROM system.columns
WHERE database = ? AND table = ?`, s.cfg.Database, schema.TableSamples)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", s.cfg.Database, err)
	}
	defer rows.Close()
	var out []ColumnSize
	for rows.Next() {
		var c ColumnSize
		if err := rows.Scan(&c.Name, &c.CompressedBytes, &c.UncompressedBytes); err != nil {
			return nil, fmt.Errorf("scan a column of %s: %w", s.cfg.Database, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", s.cfg.Database, err)
	}
	return out, nil
}

// OtherTables is the size of every table but the samples table that has parts.
func (s *Store) OtherTables(ctx context.Context) ([]TableSize, error) {
	rows, err := s.conn.Query(ctx, `SELECT table, sum(rows), sum(data_compressed_bytes) FROM system.parts
WHERE database = ? AND active AND table != ? GROUP BY table ORDER BY table`, s.cfg.Database, schema.TableSamples)
	if err != nil {
		return nil, fmt.Errorf("read other tables of %s: %w", s.cfg.Database, err)
	}
	defer rows.Close()
	var out []TableSize
	for rows.Next() {
		var t TableSize
		if err := rows.Scan(&t.Table, &t.Rows, &t.CompressedBytes); err != nil {
			return nil, fmt.Errorf("scan a table of %s: %w", s.cfg.Database, err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read other tables of %s: %w", s.cfg.Database, err)
	}
	return out, nil
}

// SamplesChecksum is sum(cityHash64(target, fingerprint, ts, value)) over the samples
// table, wrapping: equal for equal rows, whatever their order.
func (s *Store) SamplesChecksum(ctx context.Context) (uint64, error) {
	var n, sum uint64
	q := fmt.Sprintf("SELECT count(), sum(cityHash64(target, fingerprint, ts, value)) FROM %s.%s", s.cfg.Database, schema.TableSamples)
	if err := s.conn.QueryRow(ctx, q).Scan(&n, &sum); err != nil {
		return 0, fmt.Errorf("checksum %s: %w", s.cfg.Database, err)
	}
	return sum, nil
}

// RunningMerges counts the merges the server runs now, in every database.
func (s *Store) RunningMerges(ctx context.Context) (uint64, error) {
	var n uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.merges").Scan(&n); err != nil {
		return 0, fmt.Errorf("count running merges: %w", err)
	}
	return n, nil
}

// LargestSamplesPart is the directory of the samples table's largest active part on the
// server's disk.
func (s *Store) LargestSamplesPart(ctx context.Context) (string, error) {
	var path string
	q := "SELECT path FROM system.parts WHERE database = ? AND table = ? AND active ORDER BY rows DESC LIMIT 1"
	if err := s.conn.QueryRow(ctx, q, s.cfg.Database, schema.TableSamples).Scan(&path); err != nil {
		return "", fmt.Errorf("find a part of %s: %w", s.cfg.Database, err)
	}
	return path, nil
}
