package store

import (
	"context"
	"fmt"

	"github.com/pyramid-metrics/pyramid/schema"
)

// What the histograms table takes on disk, for the load generator, as storage.go reports
// the samples table.

// HistogramsParts sums the active parts of the histograms table.
func (s *Store) HistogramsParts(ctx context.Context) (PartStats, error) {
	var p PartStats
	q := `SELECT sum(rows), count(), uniqExact(partition_id), sum(data_compressed_bytes), sum(data_uncompressed_bytes), sum(marks_bytes)
FROM system.parts WHERE database = ? AND table = ? AND active`
	if err := s.conn.QueryRow(ctx, q, s.cfg.Database, schema.TableHistograms).Scan(&p.Rows, &p.Parts, &p.Partitions,
		&p.CompressedBytes, &p.UncompressedBytes, &p.MarksBytes); err != nil {
		return p, fmt.Errorf("read parts of %s.%s: %w", s.cfg.Database, schema.TableHistograms, err)
	}
	return p, nil
}

// HistogramsColumns is the size of each column of the histograms table, in table order.
func (s *Store) HistogramsColumns(ctx context.Context) ([]ColumnSize, error) {
	rows, err := s.conn.Query(ctx, `SELECT name, data_compressed_bytes, data_uncompressed_bytes FROM system.columns
WHERE database = ? AND table = ?`, s.cfg.Database, schema.TableHistograms)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s.%s: %w", s.cfg.Database, schema.TableHistograms, err)
	}
	defer rows.Close()
	var out []ColumnSize
	for rows.Next() {
		var c ColumnSize
		if err := rows.Scan(&c.Name, &c.CompressedBytes, &c.UncompressedBytes); err != nil {
			return nil, fmt.Errorf("scan a column of %s.%s: %w", s.cfg.Database, schema.TableHistograms, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s.%s: %w", s.cfg.Database, schema.TableHistograms, err)
	}
	return out, nil
}

// HistogramsChecksum is the wrapping sum of a hash of every row of the histograms table,
// every column included: equal for equal rows, whatever their order.
func (s *Store) HistogramsChecksum(ctx context.Context) (uint64, error) {
	var sum uint64
	q := fmt.Sprintf("SELECT sum(cityHash64(target, fingerprint, ts, %s)) FROM %s.%s", histogramColumns, s.cfg.Database, schema.TableHistograms)
	if err := s.conn.QueryRow(ctx, q).Scan(&sum); err != nil {
		return 0, fmt.Errorf("checksum %s.%s: %w", s.cfg.Database, schema.TableHistograms, err)
	}
	return sum, nil
}
