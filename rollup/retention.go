package rollup

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/pyramid-metrics/pyramid/schema"
)

// DropExpired enforces each rollup tier's retention by dropping the tier's 30-day
// partitions that end before now minus the retention, and drops the work marks of units
// older than raw retention, which can never be computed again. A tier no longer in the
// ladder keeps its rows: dropping data because a setting changed would be a surprise.
// Dropping a partition another replica dropped a moment ago is a no-op, so replicas may
// all run this. It returns the partitions dropped, as "table:partition".
func DropExpired(ctx context.Context, conn driver.Conn, db string, tiers []Tier, now time.Time) ([]string, error) {
	retention := map[int64]time.Duration{}
	for _, t := range tiers {
		if !t.IsRaw() {
			retention[t.ResolutionMs()] = t.Retention
		}
	}
	raw := tiers[0].Retention
	rows, err := conn.Query(ctx, "SELECT DISTINCT table, partition, partition_id FROM system.parts"+
		" WHERE active AND database = ? AND table IN (?, ?, ?)", db, schema.TableRollups, schema.TableRollupDirty, schema.TableRollupDone)
	if err != nil {
		return nil, fmt.Errorf("list rollup partitions of %s: %w", db, err)
	}
	defer rows.Close()
	type partition struct{ table, name, id string }
	var expired []partition
	for rows.Next() {
		var p partition
		if err := rows.Scan(&p.table, &p.name, &p.id); err != nil {
			return nil, fmt.Errorf("scan rollup partition: %w", err)
		}
		var keep time.Duration // 0: forever.
		var block int64
		if p.table == schema.TableRollups {
			res, b, err := parsePartition(p.table, p.name)
			if err != nil {
				return nil, err
			}
			r, ok := retention[res]
			if !ok {
				continue
			}
			keep, block = r, b
		} else {
			b, err := strconv.ParseInt(p.name, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parse %s partition %q: %w", p.table, p.name, err)
			}
			keep, block = raw, b
		}
		if keep > 0 && (block+1)*schema.RollupPartitionMillis <= now.Add(-keep).UnixMilli() {
			expired = append(expired, p)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rollup partitions of %s: %w", db, err)
	}
	var dropped []string
	for i, p := range expired {
		if err := conn.Exec(ctx, "ALTER TABLE "+db+"."+p.table+" DROP PARTITION ID ?", p.id); err != nil {
			return dropped, fmt.Errorf("drop expired partition %s of %s (%d of %d): %w", p.name, p.table, i+1, len(expired), err)
		}
		dropped = append(dropped, p.table+":"+p.name)
	}
	return dropped, nil
}
