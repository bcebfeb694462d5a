package store

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/pyramid-metrics/pyramid/schema"
)

// defaultInterval is the sample interval an estimate assumes while raw holds too little to
// tell: Prometheus's most common scrape interval.
const defaultInterval = 15_000

// Estimate adds up what selections would read, without reading samples: Select in
// estimate mode (Options.Estimate) counts each selection's series in the catalogue and
// the points each series would give from the tiers its plan names. It is safe for
// concurrent use.
type Estimate struct {
	mu      sync.Mutex
	samples int64
	// largest is the selection with the most samples, which a refusal names.
	largest SelectionEstimate
}

// SelectionEstimate is one selection's share of an Estimate.
type SelectionEstimate struct {
	Selector string
	Series   int64
	// PointsPerSeries is how many samples or rollup points one series gives.
	PointsPerSeries int64
	Tiers           string
}

func (e *Estimate) add(s SelectionEstimate) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := s.Series * s.PointsPerSeries
	e.samples += n
	if n >= e.largest.Series*e.largest.PointsPerSeries {
		e.largest = s
	}
}

// Samples is the estimated total: series times points, summed over the selections.
func (e *Estimate) Samples() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.samples
}

// Largest is the selection that would read the most.
func (e *Estimate) Largest() SelectionEstimate {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.largest
}

// estimate records what the selection of ms with plan p would read.
func (s *Store) estimate(ctx context.Context, e *Estimate, p Plan, ms []*labels.Matcher) error {
	if p.empty {
		return nil
	}
	n, err := s.countSeries(ctx, ms, p.mint, p.maxt)
	if err != nil {
		return err
	}
	interval, err := s.rawInterval(ctx)
	if err != nil {
		return err
	}
	sel := make([]string, len(ms))
	for i, m := range ms {
		sel[i] = m.String()
	}
	e.add(SelectionEstimate{Selector: "{" + strings.Join(sel, ", ") + "}", Series: n,
		PointsPerSeries: pointsPerSeries(p, interval), Tiers: p.Tiers()})
	return nil
}

// pointsPerSeries is how many points one series gives under plan p: a sample every
// interval ms from raw, one point per bucket from a tier.
func pointsPerSeries(p Plan, interval int64) int64 {
	if p.segments == nil {
		return (p.maxt-p.mint)/interval + 1
	}
	var n int64
	for _, sg := range p.segments {
		step := sg.Res
		if step == 0 {
			step = interval
		}
		n += (sg.To-sg.From)/step + 1
	}
	return n
}

// countSeries counts the series ms select in [mint, maxt] from the catalogue alone, by the
// same conditions as a selection (seriesWhere). A regex the prefilter cannot express exactly is matched by ClickHouse's match(), anchored
// as Prometheus anchors it: RE2 on both sides, close enough for an estimate, which is all
// this count is for (answers always use Prometheus's own matcher).
func (s *Store) countSeries(ctx context.Context, ms []*labels.Matcher, mint, maxt int64) (int64, error) {
	where, args, _ := s.seriesWhere(ms, seriesFilter{mint: mint, maxt: maxt, firstSeenAfter: math.MinInt64})
	for _, m := range ms {
		if m.Type != labels.MatchRegexp && m.Type != labels.MatchNotRegexp {
			continue
		}
		if _, whole := valueConditions(m); whole {
			continue
		}
		col, colArgs := "metric_name", []any(nil)
		if m.Name != labels.MetricName {
			col, colArgs = "label_values[indexOf(label_names, ?)]", []any{m.Name}
		}
		cond := "match(" + col + ", ?)"
		if m.Type == labels.MatchNotRegexp {
			cond = "NOT " + cond
		}
		where += " AND " + cond
		args = append(append(args, colArgs...), "^(?s:"+m.Value+")$")
	}
	query := "SELECT uniqExact(fingerprint) FROM " + s.cfg.Database + "." + schema.TableSeries + " WHERE " + where
	var n uint64
	if err := s.conn.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		return 0, unavailable(fmt.Errorf("count series: %w", err))
	}
	return int64(n), nil
}

// rawInterval is the average time between two samples of a series in raw: raw's time
// span times the series catalogued, over the rows it holds. Rows not yet merged away and
// series that come and go make it rough, which an estimate can afford. It is cached with
// the tier status.
func (s *Store) rawInterval(ctx context.Context) (int64, error) {
	e := &s.extents
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := s.refresh(ctx, s.cfg.now()); err != nil {
		return 0, err
	}
	if e.interval != 0 {
		return e.interval, nil
	}
	e.interval = defaultInterval
	if len(e.status) == 0 {
		return e.interval, nil
	}
	raw := e.status[0]
	if raw.Oldest == nil || raw.Newest == nil || *raw.Newest <= *raw.Oldest {
		return e.interval, nil
	}
	var series uint64
	if err := s.conn.QueryRow(ctx, "SELECT uniq(fingerprint) FROM "+s.cfg.Database+"."+schema.TableSeries).Scan(&series); err != nil {
		return 0, unavailable(fmt.Errorf("count series: %w", err))
	}
	if series > 0 && raw.Rows > series {
		e.interval = max(1, int64(float64(*raw.Newest-*raw.Oldest)*float64(series)/float64(raw.Rows)))
	}
	return e.interval, nil
}
