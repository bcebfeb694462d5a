package store

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

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
	// hists are the series' histogram samples, at timestamps that hold no float.
	hists []HistogramSample
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

// seriesWhere returns conditions on the series table, and their arguments, that hold for
// the rows of every series ms select that may hold samples in [f.mint, f.maxt] (and was
// first seen after f.firstSeenAfter): the matchers' prefilter, and the fingerprints whose
// merged first and last sample fit the window. The window needs the rows of a series
// merged, so it is a subquery over fingerprints alone; the label arrays are then read only
// for the series it keeps. It names the stored table, because on a cluster it runs on each
// shard as part of the Distributed query, and a series' rows live on its shard. exact
// reports that no matcher is left for Prometheus's matcher to decide.
//
// The catalogue records first and last sample times only as the write path saw them (a
// row is written when a series reaches an hour not yet recorded), so the window is widened
// by an hour on each side; a series with no sample in the window then has none to return.
func (s *Store) seriesWhere(ms []*labels.Matcher, f seriesFilter) (where string, args []any, exact bool) {
	p := s.cfg.place()
	where, args, exact = prefilter(ms, p.Database+"."+p.Stored(schema.TableSeriesLabels))
	var having []string
	var hargs []any
	// Samples are never before 1970 nor far in the future, so such bounds select every
	// series and need no subquery.
	if f.mint > 0 || f.maxt < 1<<53 {
		having = append(having, "minMerge(first_seen) <= ? AND maxMerge(last_seen) >= ?")
		hargs = append(hargs, saturatingAdd(f.maxt, hourMillis), saturatingAdd(f.mint, -hourMillis))
	}
	if f.firstSeenAfter != math.MinInt64 {
		// The catalogue's first_seen is never before a series' first sample, and at most
		// within the same hour after it (samples of an hour already recorded write no
		// row), so no series new since then is missed, and a series found may be older
		// by less than an hour.
		having = append(having, "minMerge(first_seen) > ?")
		hargs = append(hargs, f.firstSeenAfter)
	}
	if len(having) == 0 {
		return where, args, exact
	}
	sub := "SELECT fingerprint FROM " + p.Database + "." + p.Stored(schema.TableSeries) + " WHERE " + where +
		" GROUP BY fingerprint HAVING " + strings.Join(having, " AND ")
	return where + " AND fingerprint IN (" + sub + ")", append(append(slices.Clone(args), args...), hargs...), exact
}

// selectSeries returns the series that ms select and that may hold samples in
// [f.mint, f.maxt] (seriesWhere), sorted by labels as Prometheus sorts them. More than
// f.limit matching series is ErrSeriesBudget, found without holding more than f.limit of
// them: rows the prefilter lets through but the matchers reject are dropped as they arrive.
func (s *Store) selectSeries(ctx context.Context, ms []*labels.Matcher, f seriesFilter) ([]*selected, error) {
	where, args, _ := s.seriesWhere(ms, f)
	query := "SELECT fingerprint, target, label_names, label_values FROM " + s.cfg.Database + "." + schema.TableSeries +
		" WHERE " + where + " LIMIT 1 BY fingerprint"
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
	return s.distinct(ctx, "arrayJoin(label_names)", nil, mint, maxt, ms)
}

// labelValues returns the sorted values of label name among the series ms select in
// [mint, maxt]. A series without the label contributes nothing.
func (s *Store) labelValues(ctx context.Context, name string, mint, maxt int64, ms []*labels.Matcher) ([]string, error) {
	if name == labels.MetricName {
		return s.distinct(ctx, "metric_name", nil, mint, maxt, ms)
	}
	return s.distinct(ctx, "label_values[indexOf(label_names, ?)]", []any{name}, mint, maxt, ms)
}

// distinct answers a label query from the catalogue alone, never the samples: the
// distinct values of expr (with exprArgs) over the series ms select in [mint, maxt]. The
// matchers the prefilter decides exactly (equality, and regexes Prometheus proves to be a
// literal set) are left to ClickHouse; for each other one, ClickHouse returns the distinct
// combinations of expr with that matcher's label value, far fewer than the series, and
// Prometheus's matcher decides on them.
func (s *Store) distinct(ctx context.Context, expr string, exprArgs []any, mint, maxt int64, ms []*labels.Matcher) ([]string, error) {
	where, args, _ := s.seriesWhere(ms, seriesFilter{mint: mint, maxt: maxt, firstSeenAfter: math.MinInt64})
	cols := []string{expr + " AS v"}
	colArgs := slices.Clone(exprArgs)
	var undecided []*labels.Matcher
	for _, m := range ms {
		if _, whole := valueConditions(m); whole {
			continue
		}
		undecided = append(undecided, m)
		alias := fmt.Sprintf(" AS m%d", len(undecided))
		if m.Name == labels.MetricName {
			cols = append(cols, "metric_name"+alias)
			continue
		}
		cols = append(cols, "label_values[indexOf(label_names, ?)]"+alias)
		colArgs = append(colArgs, m.Name)
	}
	query := "SELECT DISTINCT * FROM (SELECT " + strings.Join(cols, ", ") + " FROM " + s.cfg.Database + "." + schema.TableSeries +
		" WHERE " + where + ") WHERE v != ''"
	rows, err := s.conn.Query(ctx, query, append(colArgs, args...)...)
	if err != nil {
		return nil, unavailable(fmt.Errorf("query distinct %s: %w", expr, err))
	}
	defer rows.Close()
	set := map[string]struct{}{}
	vals := make([]string, len(cols))
	dest := make([]any, len(cols))
	for i := range vals {
		dest[i] = &vals[i]
	}
	n := 0
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, unavailable(fmt.Errorf("scan distinct %s after %d rows: %w", expr, n, err))
		}
		n++
		ok := true
		for i, m := range undecided {
			ok = ok && m.Matches(vals[i+1])
		}
		if ok {
			set[vals[0]] = struct{}{}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable(fmt.Errorf("read distinct %s after %d rows: %w", expr, n, err))
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
