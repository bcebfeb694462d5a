package store

import (
	"context"
	"fmt"

	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema"
)

// InsertMarks records rollup work units of this width as dirty (rollup.Marker says which),
// stamped with the server's clock. Call it only once the units' samples are stored.
func (s *Store) InsertMarks(ctx context.Context, width int64, units []rollup.Unit) error {
	if len(units) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Database+"."+schema.TableRollupDirty+" (width, unit, target)")
	if err != nil {
		return fmt.Errorf("prepare %d rollup marks: %w", len(units), err)
	}
	defer batch.Close()
	for _, u := range units {
		if err := batch.Append(width, u.Start, u.Target); err != nil {
			return fmt.Errorf("append rollup mark: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rollup marks: %w", len(units), err)
	}
	return nil
}
