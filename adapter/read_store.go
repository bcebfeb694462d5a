package adapter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema"
)

// readSeries is one series a read selected, and once fetched, its samples: strictly
// increasing timestamps, one sample per timestamp.
type readSeries struct {
	fingerprint, target uint64
	labels              labels.Labels
	ts                  []int64
	values              []float64
}

// selectSeries returns the series that sel selects and that may hold samples in
// [mint, maxt], sorted by labels as Prometheus sorts them. The catalogue records first and
// last sample times only to the hour (see seriesCache), so the window is widened by an hour
// on each side; a series with no sample in the window then simply has none to return.
// More than maxSeries matching series is errSeriesBudget, found without holding more than
// maxSeries of them: rows the prefilter lets through but the matchers reject are dropped
// as they arrive.
func selectSeries(ctx context.Context, conn driver.Conn, p schema.Place, sel *selector, mint, maxt int64, maxSeries int) ([]*readSeries, error) {
	where, args := sel.prefilter(p.Database + "." + p.Stored(schema.TableSeriesLabels))
	query := "SELECT fingerprint, any(target), any(label_names), any(label_values) FROM " + p.Database + "." + schema.TableSeries +
		" WHERE " + where +
		" GROUP BY fingerprint HAVING minMerge(first_seen) <= ? AND maxMerge(last_seen) >= ?"
	args = append(args, saturatingAdd(maxt, hourMillis), saturatingAdd(mint, -hourMillis))
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query series: %w", err)
	}
	defer rows.Close()

	var (
		out           []*readSeries
		names, values []string
		b             labels.ScratchBuilder
	)
	for rows.Next() {
		var fp, target uint64
		if err := rows.Scan(&fp, &target, &names, &values); err != nil {
			return nil, fmt.Errorf("scan series row %d: %w", len(out), err)
		}
		if len(names) != len(values) || !sel.matches(names, values) {
			continue
		}
		if len(out) == maxSeries {
			return nil, errSeriesBudget
		}
		b.Reset()
		for i := range names {
			b.Add(names[i], values[i])
		}
		b.Sort()
		out = append(out, &readSeries{fingerprint: fp, target: target, labels: b.Labels()})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read series after %d rows: %w", len(out), err)
	}
	slices.SortFunc(out, func(a, b *readSeries) int { return labels.Compare(a.labels, b.labels) })
	return out, nil
}

// fetchSamples fills in the samples of batch in [mint, maxt] and returns how many there
// are. It stops with errSampleBudget as soon as they pass budget. Rows are read one per
// sample rather than grouped into arrays by ClickHouse: clickhouse-go converts array
// elements one by one through reflection, which made reading arrays three to four times
// slower than reading the same samples as rows (BenchmarkRemoteRead, 1,000 series x 1 day).
// Sorting and removing duplicates (a retried write that the table has not merged yet)
// happen here.
//
// Samples that disagree at one timestamp (a later write with another value) are resolved
// as the table's merges will resolve them, the last write kept (rollup.ReadWinners), so
// that the answer does not change when ClickHouse merges; each such timestamp is counted.
func (s *Server) fetchSamples(ctx context.Context, batch []*readSeries, mint, maxt int64, budget int) (int, error) {
	conn, db := s.conn, s.cfg.Database
	if len(batch) == 0 {
		return 0, nil
	}
	byFP := make(map[uint64]*readSeries, len(batch))
	for _, rs := range batch {
		rs.ts, rs.values = rs.ts[:0], rs.values[:0]
		byFP[rs.fingerprint] = rs
	}
	targets, fps := batchKeys(batch)
	// target leads the table's sorting key, so naming the targets lets ClickHouse skip to
	// their granules; the ts bounds prune day partitions and granules within a series.
	query := "SELECT fingerprint, ts, value FROM " + db + "." + schema.TableSamples +
		" WHERE target IN ? AND fingerprint IN ? AND ts >= ? AND ts <= ?"
	rows, err := conn.Query(ctx, query, inSet(targets), inSet(fps), mint, maxt)
	if err != nil {
		return 0, fmt.Errorf("query samples of %d series: %w", len(batch), err)
	}
	defer rows.Close()
	// Unmerged duplicates count against the budget until they are removed below, so allow
	// rows up to twice the budget before giving up early.
	var (
		rowCount int
		fp       uint64
		ts       int64
		value    float64
		cur      *readSeries
	)
	for rows.Next() {
		if err := rows.Scan(&fp, &ts, &value); err != nil {
			return 0, fmt.Errorf("scan sample %d of %d series: %w", rowCount, len(batch), err)
		}
		// The rows of one series come in runs, so the last series found usually matches.
		if cur == nil || cur.fingerprint != fp {
			if cur = byFP[fp]; cur == nil {
				return 0, fmt.Errorf("read samples of %d series: unexpected fingerprint %d", len(batch), fp)
			}
		}
		cur.ts = append(cur.ts, ts)
		cur.values = append(cur.values, value)
		if rowCount++; rowCount-budget > budget { // rowCount > 2*budget, without overflow for math.MaxInt
			return 0, errSampleBudget
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read samples of %d series after %d rows: %w", len(batch), rowCount, err)
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
			s.m.readConflicts.Add(float64(len(c)))
		}
		n += len(rs.ts)
	}
	if conflicts != nil {
		winners, err := rollup.ReadWinners(ctx, conn, db, targets, conflicts)
		if err != nil {
			return 0, err
		}
		for fp, w := range winners {
			rs := byFP[fp]
			rollup.ApplyWinners(rs.ts, rs.values, w)
		}
	}
	if n > budget {
		return n, errSampleBudget
	}
	return n, nil
}

// batchKeys returns the distinct targets and the fingerprints of batch.
func batchKeys(batch []*readSeries) (targets, fps []uint64) {
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

// errSeriesBudget and errSampleBudget tell selectSeries's and fetchSamples's callers that
// the request's series or sample limit was passed; the caller knows the limit and turns it
// into a *LimitError.
var (
	errSeriesBudget = errors.New("series budget exhausted")
	errSampleBudget = errors.New("sample budget exhausted")
)

// saturatingAdd returns a+b clamped to the int64 range; query bounds such as Prometheus's
// "no end" (close to math.MaxInt64) must not wrap around when widened.
func saturatingAdd(a, b int64) int64 {
	switch {
	case b > 0 && a > math.MaxInt64-b:
		return math.MaxInt64
	case b < 0 && a < math.MinInt64-b:
		return math.MinInt64
	}
	return a + b
}
