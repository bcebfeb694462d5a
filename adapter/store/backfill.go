package store

import (
	"context"
	"fmt"

	"github.com/pyramid-metrics/pyramid/schema"
)

// BackfilledBlock is one Prometheus block `pyramid backfill` stored completely within a
// scope (the run's time range and matchers).
type BackfilledBlock struct {
	Block, Scope                string
	MinTime, MaxTime            int64
	Series, Samples, Histograms uint64
	DoneMs                      int64
}

// BackfilledBlocks returns the blocks already stored within scope.
func (s *Store) BackfilledBlocks(ctx context.Context, scope string) (map[string]bool, error) {
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT block FROM "+s.cfg.Database+"."+schema.TableBackfillBlocks+
		" WHERE scope = ?", scope)
	if err != nil {
		return nil, fmt.Errorf("query backfilled blocks: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var b string
		if err := rows.Scan(&b); err != nil {
			return nil, fmt.Errorf("scan a backfilled block: %w", err)
		}
		out[b] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read backfilled blocks after %d: %w", len(out), err)
	}
	return out, nil
}

// InsertBackfilledBlock records a block as stored completely.
func (s *Store) InsertBackfilledBlock(ctx context.Context, b BackfilledBlock) error {
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Database+"."+schema.TableBackfillBlocks+
		" (block, scope, min_time, max_time, series, samples, histograms, done_ms)")
	if err != nil {
		return fmt.Errorf("prepare the record of block %s: %w", b.Block, err)
	}
	defer batch.Close()
	if err := batch.Append(b.Block, b.Scope, b.MinTime, b.MaxTime, b.Series, b.Samples, b.Histograms, b.DoneMs); err != nil {
		return fmt.Errorf("append the record of block %s: %w", b.Block, err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("record block %s as backfilled: %w", b.Block, err)
	}
	return nil
}
