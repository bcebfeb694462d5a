package store

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/pyramid-metrics/pyramid/schema"
)

// hourMillis is the precision of the catalogue's first and last sample times.
const hourMillis = 3_600_000

// selected is one series a selection found, and once fetched, its samples: strictly
// increasing timestamps, one sample per timestamp.
type selected struct {
	fingerprint, target uint64
	labels              labels.Labels
	ts                  []int64
	values              []float64
}

// seriesFilter is what a series query asks of the catalogue besides the matchers.
type seriesFilter struct {
	mint, maxt int64
	// firstSeenAfter keeps only series whose first sample is after it (ms); MinInt64
	// keeps every series.
	firstSeenAfter int64
	// limit is how many matching series may be found before ErrSeriesBudget; negative is
	// no limit.
	limit int
}

// selectSeries returns the series that ms select and that may hold samples in
// [f.mint, f.maxt], sorted by labels as Prometheus sorts them. The catalogue records first and
// last sample times only to the hour (see the write path's series cache), so the window is
// widened by an hour on each side; a series with no sample in the window then simply has
// none to return. More than f.limit matching series is ErrSeriesBudget, found without
// holding more than f.limit of them: rows the prefilter lets through but the matchers reject are
// dropped as they arrive.
func (s *Store) selectSeries(ctx context.Context, ms []*labels.Matcher, f seriesFilter) ([]*selected, error) {
	p := s.cfg.place()
	where, args, _ := prefilter(ms, p.Database+"."+p.Stored(schema.TableSeriesLabels))
	query := "SELECT fingerprint, any(target), any(label_names), any(label_values) FROM " + p.Database + "." + schema.TableSeries +
		" WHERE " + where +
		" GROUP BY fingerprint HAVING minMerge(first_seen) <= ? AND maxMerge(last_seen) >= ?"
	args = append(args, saturatingAdd(f.maxt, hourMillis), saturatingAdd(f.mint, -hourMillis))
	if f.firstSeenAfter != math.MinInt64 {
		// The catalogue's first_seen is never before a series' first sample, and at most
		// within the same hour after it (samples of an hour already recorded write no
		// row), so no series new since then is missed, and a series found may be older
		// by less than an hour.
		query += " AND minMerge(first_seen) > ?"
		args = append(args, f.firstSeenAfter)
	}
	rows, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, unavailable(fmt.Errorf("query series: %w", err))
	}
	defer rows.Close()

	var (
		out           []*selected
		names, values []string
		b             labels.ScratchBuilder
	)
	for rows.Next() {
		var fp, target uint64
		if err := rows.Scan(&fp, &target, &names, &values); err != nil {
			return nil, unavailable(fmt.Errorf("scan series row %d: %w", len(out), err))
		}
		if len(names) != len(values) || !matches(ms, names, values) {
			continue
		}
		if len(out) == f.limit {
			return nil, ErrSeriesBudget
		}
		b.Reset()
		for i := range names {
			b.Add(names[i], values[i])
		}
		b.Sort()
		out = append(out, &selected{fingerprint: fp, target: target, labels: b.Labels()})
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(fmt.Errorf("read series after %d rows: %w", len(out), err))
	}
	slices.SortFunc(out, func(a, b *selected) int { return labels.Compare(a.labels, b.labels) })
	return out, nil
}

// labelNames returns the sorted label names of the series ms select in [mint, maxt] (all
// series without matchers).
func (s *Store) labelNames(ctx context.Context, mint, maxt int64, ms []*labels.Matcher) ([]string, error) {
	return s.distinct(ctx, "arrayJoin(names)", nil, mint, maxt, ms, func(names, _ []string, add func(string)) {
		for _, n := range names {
			add(n)
		}
	})
}

// labelValues returns the sorted values of label name among the series ms select in
// [mint, maxt]. A series without the label contributes nothing.
func (s *Store) labelValues(ctx context.Context, name string, mint, maxt int64, ms []*labels.Matcher) ([]string, error) {
	expr, args := "vals[indexOf(names, ?)]", []any{name}
	if name == labels.MetricName {
		expr, args = "name", nil
	}
	return s.distinct(ctx, expr, args, mint, maxt, ms, func(names, values []string, add func(string)) {
		for i, n := range names {
			if n == name {
				add(values[i])
				return
			}
		}
	})
}

// distinct answers a label query from the catalogue alone, never the samples. Where the
// matchers' SQL prefilter is exact (equality, and regexes Prometheus proves to be a
// literal set), ClickHouse computes the distinct expr itself (over the columns name, names
// and vals of each series); otherwise the candidate
// series stream through the matchers and each adds its strings with pick.
func (s *Store) distinct(ctx context.Context, expr string, exprArgs []any, mint, maxt int64, ms []*labels.Matcher,
	pick func(names, values []string, add func(string))) ([]string, error) {
	p := s.cfg.place()
	where, args, exact := prefilter(ms, p.Database+"."+p.Stored(schema.TableSeriesLabels))
	window := []any{saturatingAdd(maxt, hourMillis), saturatingAdd(mint, -hourMillis)}
	// The aliases differ from the columns, which the WHERE clause names.
	inner := "SELECT any(metric_name) AS name, any(label_names) AS names, any(label_values) AS vals FROM " +
		p.Database + "." + schema.TableSeries + " WHERE " + where +
		" GROUP BY fingerprint HAVING minMerge(first_seen) <= ? AND maxMerge(last_seen) >= ?"
	set := map[string]struct{}{}
	if exact {
		query := "SELECT DISTINCT " + expr + " AS v FROM (" + inner + ") WHERE v != ''"
		rows, err := s.conn.Query(ctx, query, append(append(exprArgs, args...), window...)...)
		if err != nil {
			return nil, unavailable(fmt.Errorf("query distinct %s: %w", expr, err))
		}
		defer rows.Close()
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				return nil, unavailable(fmt.Errorf("scan distinct %s after %d: %w", expr, len(set), err))
			}
			set[v] = struct{}{}
		}
		if err := rows.Err(); err != nil {
			return nil, unavailable(fmt.Errorf("read distinct %s after %d: %w", expr, len(set), err))
		}
	} else {
		rows, err := s.conn.Query(ctx, "SELECT names, vals FROM ("+inner+")", append(args, window...)...)
		if err != nil {
			return nil, unavailable(fmt.Errorf("query series for %s: %w", expr, err))
		}
		defer rows.Close()
		var names, values []string
		add := func(v string) { set[v] = struct{}{} }
		n := 0
		for rows.Next() {
			if err := rows.Scan(&names, &values); err != nil {
				return nil, unavailable(fmt.Errorf("scan series row %d: %w", n, err))
			}
			n++
			if len(names) == len(values) && matches(ms, names, values) {
				pick(names, values, add)
			}
		}
		if err := rows.Err(); err != nil {
			return nil, unavailable(fmt.Errorf("read series after %d rows: %w", n, err))
		}
	}
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	slices.Sort(out)
	return out, nil
}

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

// Metadata is a metric family's stored metadata, as the last write left it.
type Metadata struct {
	Family, Type, Help, Unit string
}

// Metadata returns the stored metadata of the metric family named metric, or of every
// family when metric is empty, sorted by family; at most limit families when limit > 0.
func (s *Store) Metadata(ctx context.Context, metric string, limit int) ([]Metadata, error) {
	query := "SELECT metric_family_name, argMax(type, updated_ms), argMax(help, updated_ms), argMax(unit, updated_ms) FROM " +
		s.cfg.Database + "." + schema.TableMetadata
	var args []any
	if metric != "" {
		query += " WHERE metric_family_name = ?"
		args = append(args, metric)
	}
	query += " GROUP BY metric_family_name ORDER BY metric_family_name"
	if limit > 0 {
		query += " LIMIT ?"
		args = append(args, limit)
	}
	rows, err := s.conn.Query(ctx, query, args...)
	if err != nil {
		return nil, unavailable(fmt.Errorf("query metadata: %w", err))
	}
	defer rows.Close()
	var out []Metadata
	for rows.Next() {
		var m Metadata
		if err := rows.Scan(&m.Family, &m.Type, &m.Help, &m.Unit); err != nil {
			return nil, unavailable(fmt.Errorf("scan metadata row %d: %w", len(out), err))
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(fmt.Errorf("read metadata after %d rows: %w", len(out), err))
	}
	return out, nil
}
