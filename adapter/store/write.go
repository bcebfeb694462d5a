package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/schema"
)

// SeriesRow is one row of schema.TableSeriesInput.
type SeriesRow struct {
	Fingerprint uint64
	Target      uint64
	MetricName  string
	// Names and Values are the sorted labels, __name__ included.
	Names, Values []string
	// FirstSeen and LastSeen bound the samples of this series in the batch (ms).
	FirstSeen, LastSeen int64
}

// InsertSamples writes sample rows, given as parallel columns, into the samples table as
// one block, appending whole columns rather than rows. The load generator calls it
// directly to measure what ClickHouse takes without pyramid's HTTP and batching in front.
func (s *Store) InsertSamples(ctx context.Context, targets, fingerprints []uint64, timestamps []int64, values []float64) error {
	n := len(timestamps)
	if n == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Database+"."+schema.TableSamples+" (target, fingerprint, ts, value)")
	if err != nil {
		return fmt.Errorf("prepare insert of %d samples: %w", n, err)
	}
	defer batch.Close()
	for i, col := range []any{targets, fingerprints, timestamps, values} {
		if err := batch.Column(i).Append(col); err != nil {
			return fmt.Errorf("append column %d of %d samples: %w", i, n, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d samples: %w", n, err)
	}
	return nil
}

// InsertSeries writes series rows into series_input, whose views fill the series
// catalogue and the label index.
func (s *Store) InsertSeries(ctx context.Context, rows []SeriesRow) error {
	if len(rows) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Database+"."+schema.TableSeriesInput+
		" (fingerprint, target, metric_name, label_names, label_values, first_seen, last_seen)")
	if err != nil {
		return fmt.Errorf("prepare insert of %d series: %w", len(rows), err)
	}
	defer batch.Close()
	for _, r := range rows {
		if err := batch.Append(r.Fingerprint, r.Target, r.MetricName, r.Names, r.Values, r.FirstSeen, r.LastSeen); err != nil {
			return fmt.Errorf("append series %d of %d: %w", r.Fingerprint, len(rows), err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d series: %w", len(rows), err)
	}
	return nil
}

// InsertMetadata stores metric metadata; nowMs versions the rows so the newest wins.
func (s *Store) InsertMetadata(ctx context.Context, md []prompb.MetricMetadata, nowMs int64) error {
	if len(md) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Database+"."+schema.TableMetadata+
		" (metric_family_name, type, help, unit, updated_ms)")
	if err != nil {
		return fmt.Errorf("prepare insert of %d metadata: %w", len(md), err)
	}
	defer batch.Close()
	for _, m := range md {
		if err := batch.Append(m.MetricFamilyName, strings.ToLower(m.Type.String()), m.Help, m.Unit, nowMs); err != nil {
			return fmt.Errorf("append metadata of %q: %w", m.MetricFamilyName, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d metadata: %w", len(md), err)
	}
	return nil
}

// SchemaVersion is the version of the schema the database holds (schema.CurrentVersion).
// Answering it also shows that ClickHouse is reachable.
func (s *Store) SchemaVersion(ctx context.Context) (uint32, error) {
	return schema.CurrentVersion(ctx, s.conn, schema.Config{Database: s.cfg.Database})
}
