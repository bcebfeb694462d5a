package store

import (
	"context"
	"fmt"

	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema"
)

// fetchSamples fills in the samples of batch in [mint, maxt] and returns how many there
// are. It stops with ErrSampleBudget as soon as they pass budget. Rows are read one per
// sample rather than grouped into arrays by ClickHouse: clickhouse-go converts array
// elements one by one through reflection, which made reading arrays three to four times
// slower than reading the same samples as rows (BenchmarkRemoteRead, 1,000 series x 1 day).
// Sorting and removing duplicates (a retried write that the table has not merged yet)
// happen here.
//
// Samples that disagree at one timestamp (a later write with another value) are resolved
// as the table's merges will resolve them, the last write kept (ReadWinners), so
// that the answer does not change when ClickHouse merges; each such timestamp is counted.
func (s *Store) fetchSamples(ctx context.Context, batch []*selected, mint, maxt int64, budget int) (int, error) {
	db := s.cfg.Database
	if len(batch) == 0 {
		return 0, nil
	}
	byFP := make(map[uint64]*selected, len(batch))
	for _, rs := range batch {
		rs.ts, rs.values = rs.ts[:0], rs.values[:0]
		byFP[rs.fingerprint] = rs
	}
	targets, fps := batchKeys(batch)
	// target leads the table's sorting key, so naming the targets lets ClickHouse skip to
	// their granules; the ts bounds prune day partitions and granules within a series.
	// The fingerprints go in PREWHERE: a batch spanning several targets defeats the index
	// on fingerprint (ClickHouse then reads the targets' granules whole), and PREWHERE
	// filters those rows on the fingerprint column alone, which compresses to almost
	// nothing, before it reads their timestamps and values.
	query := "SELECT fingerprint, ts, value FROM " + db + "." + schema.TableSamples +
		" PREWHERE fingerprint IN ? WHERE target IN ? AND ts >= ? AND ts <= ?"
	rows, err := s.conn.Query(ctx, query, inSet(fps), inSet(targets), mint, maxt)
	if err != nil {
		return 0, unavailable(fmt.Errorf("query samples of %d series: %w", len(batch), err))
	}
	defer rows.Close()
	// Unmerged duplicates count against the budget until they are removed below, so allow
	// rows up to twice the budget before giving up early.
	var (
		rowCount int
		fp       uint64
		ts       int64
		value    float64
		cur      *selected
		started  int // series that have rows
	)
	// One argument slice for every row: Scan's variadic arguments would otherwise be
	// allocated row by row.
	dest := []any{&fp, &ts, &value}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return 0, unavailable(fmt.Errorf("scan sample %d of %d series: %w", rowCount, len(batch), err))
		}
		// The rows of one series come in runs, so the last series found usually matches.
		if cur == nil || cur.fingerprint != fp {
			if cur = byFP[fp]; cur == nil {
				return 0, unavailable(fmt.Errorf("read samples of %d series: unexpected fingerprint %d", len(batch), fp))
			}
			if cap(cur.ts) == 0 {
				// Series of a batch tend to hold alike numbers of samples: size a new one
				// as the average so far, so that it grows once or twice rather than a
				// dozen times.
				n := rowCount/max(started, 1) + 1
				cur.ts, cur.values = make([]int64, 0, n), make([]float64, 0, n)
				started++
			}
		}
		cur.ts = append(cur.ts, ts)
		cur.values = append(cur.values, value)
		if rowCount++; rowCount-budget > budget { // rowCount > 2*budget, without overflow for math.MaxInt
			return 0, ErrSampleBudget
		}
	}
	if err := rows.Err(); err != nil {
		return 0, unavailable(fmt.Errorf("read samples of %d series after %d rows: %w", len(batch), rowCount, err))
	}
	n := 0
	var conflicts map[uint64][]int64
	for _, rs := range batch {
		var c []int64
		if rs.ts, rs.values, c = rollup.SortDedup(rs.ts, rs.values); c != nil {
			if conflicts == nil {
				conflicts = map[uint64][]int64{}
			}
			conflicts[rs.fingerprint] = c
			s.m.conflicts.Add(float64(len(c)))
		}
		n += len(rs.ts)
	}
	if conflicts != nil {
		winners, err := s.ReadWinners(ctx, targets, conflicts)
		if err != nil {
			return 0, unavailable(err)
		}
		for fp, w := range winners {
			rs := byFP[fp]
			rollup.ApplyWinners(rs.ts, rs.values, w)
		}
	}
	if n > budget {
		return n, ErrSampleBudget
	}
	return n, nil
}

// batchKeys returns the distinct targets and the fingerprints of batch.
func batchKeys(batch []*selected) (targets, fps []uint64) {
	seen := make(map[uint64]bool)
	fps = make([]uint64, len(batch))
	for i, rs := range batch {
		fps[i] = rs.fingerprint
		if !seen[rs.target] {
			seen[rs.target] = true
			targets = append(targets, rs.target)
		}
	}
	return targets, fps
}
