package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/pyramid-metrics/pyramid/schema"
)

// DropExpiredRaw enforces raw retention (the first tier's) on servers without TTL: it
// drops every day partition of the samples and histograms tables that ends before now
// minus the retention. It returns the day numbers (days since 1970-01-01 UTC) it dropped
// from either. Dropping a partition that another replica dropped a moment ago is a no-op
// on the server, so replicas may all run this. On a cluster it lists the partitions of
// every shard and drops them on every server.
func (s *Store) DropExpiredRaw(ctx context.Context, now time.Time) ([]int64, error) {
	if len(s.cfg.Tiers) == 0 || s.cfg.Tiers[0].Retention == 0 {
		return nil, nil
	}
	days := int64(s.cfg.Tiers[0].Retention / (24 * time.Hour))
	// A partition holds day d, [d, d+1) days; it has expired once d+1 <= cutoff.
	cutoff := now.UnixMilli()/schema.DayMillis - days
	var dropped []int64
	for _, table := range []string{schema.TableSamples, schema.TableHistograms} {
		d, err := s.dropDaysBefore(ctx, table, cutoff)
		dropped = append(dropped, d...)
		if err != nil {
			return dropped, err
		}
	}
	slices.Sort(dropped)
	return slices.Compact(dropped), nil
}

// dropDaysBefore drops the day partitions of table that end at or before cutoff (a day
// number) and returns their days.
func (s *Store) dropDaysBefore(ctx context.Context, table string, cutoff int64) ([]int64, error) {
	p := s.cfg.place()
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT partition FROM "+p.Parts()+
		" WHERE database = ? AND table = ? AND active", p.Database, p.Stored(table))
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s.%s: %w", s.cfg.Database, table, err)
	}
	defer rows.Close()
	var expired []int64
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("scan partition: %w", err)
		}
		day, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("partition %q of %s is not a day number: %w", p, table, err)
		}
		if day+1 <= cutoff {
			expired = append(expired, day)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list partitions of %s.%s: %w", s.cfg.Database, table, err)
	}
	for i, day := range expired {
		q := fmt.Sprintf("%s DROP PARTITION %d", p.AlterStored(table), day)
		if err := s.conn.Exec(ctx, q); err != nil {
			return expired[:i], fmt.Errorf("drop expired partition %d of %s (%d of %d): %w", day, table, i+1, len(expired), err)
		}
	}
	return expired, nil
}

// DropExpiredRollups enforces each rollup tier's retention by dropping the tier's 30-day
// partitions that end before now minus the retention, and drops the work marks of units
// older than raw retention, which can never be computed again. A tier no longer in the
// ladder keeps its rows: dropping data because a setting changed would be a surprise.
// Dropping a partition another replica dropped a moment ago is a no-op, so replicas may
// all run this. It returns the partitions dropped, as "table:partition".
func (s *Store) DropExpiredRollups(ctx context.Context, now time.Time) ([]string, error) {
	p, tiers := s.cfg.place(), s.cfg.Tiers
	if len(tiers) == 0 {
		return nil, nil
	}
	retention := map[int64]time.Duration{}
	for _, t := range tiers {
		if !t.IsRaw() {
			retention[t.ResolutionMs()] = t.Retention
		}
	}
	raw := tiers[0].Retention
	// Partitions are listed by the stored tables' names and kept by the logical ones.
	logical := map[string]string{}
	for _, t := range []string{schema.TableRollups, schema.TableHistogramRollups, schema.TableRollupDirty, schema.TableRollupDone} {
		logical[p.Stored(t)] = t
	}
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT table, partition, partition_id FROM "+p.Parts()+
		" WHERE active AND database = ? AND table IN (?, ?, ?, ?)", p.Database,
		p.Stored(schema.TableRollups), p.Stored(schema.TableHistogramRollups), p.Stored(schema.TableRollupDirty),
		p.Stored(schema.TableRollupDone))
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
		if part.table == schema.TableRollups || part.table == schema.TableHistogramRollups {
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
		if err := s.conn.Exec(ctx, p.AlterStored(part.table)+" DROP PARTITION ID ?", part.id); err != nil {
			return dropped, fmt.Errorf("drop expired partition %s of %s (%d of %d): %w", part.name, part.table, i+1, len(expired), err)
		}
		dropped = append(dropped, part.table+":"+part.name)
	}
	return dropped, nil
}
