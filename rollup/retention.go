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
func DropExpired(ctx context.Context, conn driver.Conn, p schema.Place, tiers []Tier, now time.Time) ([]string, error) {
	retention := map[int64]time.Duration{}
	for _, t := range tiers {
		if !t.IsRaw() {
			retention[t.ResolutionMs()] = t.Retention
		}
	}
	raw := tiers[0].Retention
	// Partitions are listed by the stored tables' names and kept by the logical ones.
	logical := map[string]string{}
	for _, t := range []string{schema.TableRollups, schema.TableRollupDirty, schema.TableRollupDone} {
		logical[p.Stored(t)] = t
	}
	rows, err := conn.Query(ctx, "SELECT DISTINCT table, partition, partition_id FROM "+p.Parts()+
		" WHERE active AND database = ? AND table IN (?, ?, ?)", p.Database,
		p.Stored(schema.TableRollups), p.Stored(schema.TableRollupDirty), p.Stored(schema.TableRollupDone))
	if err != nil {
		return nil, fmt.Errorf("list rollup partitions of %s: %w", p.Database, err)
	}
	defer rows.Close()
	type partition struct{ table, name, id string }
	var expired []partition
	for rows.Next() {
		var part partition
		if err := rows.Scan(&part.table, &part.name, &part.id); err != nil {
			return nil, fmt.Errorf("scan rollup partition: %w", err)
		}
		part.table = logical[part.table]
		var keep time.Duration // 0: forever.
		var block int64
		if part.table == schema.TableRollups {
			res, b, err := parsePartition(false, part.name)
			if err != nil {
				return nil, err
			}
			r, ok := retention[res]
			if !ok {
				continue
			}
			keep, block = r, b
		} else {
			b, err := strconv.ParseInt(part.name, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parse %s partition %q: %w", part.table, part.name, err)
			}
			keep, block = raw, b
		}
		if keep > 0 && (block+1)*schema.RollupPartitionMillis <= now.Add(-keep).UnixMilli() {
			expired = append(expired, part)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rollup partitions of %s: %w", p.Database, err)
	}
	var dropped []string
	for i, part := range expired {
		if err := conn.Exec(ctx, p.AlterStored(part.table)+" DROP PARTITION ID ?", part.id); err != nil {
			return dropped, fmt.Errorf("drop expired partition %s of %s (%d of %d): %w", part.name, part.table, i+1, len(expired), err)
		}
		dropped = append(dropped, part.table+":"+part.name)
	}
	return dropped, nil
}
