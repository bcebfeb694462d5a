package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// headerTiers names, in a query response, what answered the query's selections (the
// store's Plan.Tiers tokens, one group per selection that found series, comma-separated).
const headerTiers = "X-Pyramid-Tiers"

// admit estimates what e would read before it runs: the engine starts it over a queryable
// in estimate mode, whose selections count series in the catalogue and points per series
// from the tier each would be read from, read no samples, and end the query once all are
// selected (store.ErrEstimated). Past
// Config.MaxSamples the query is refused (422), naming the estimate and the limit.
func (a *API) admit(ctx context.Context, e evaluation, opts promql.QueryOpts, lookback time.Duration) error {
	var est store.Estimate
	q := a.st.Queryable(store.Options{Lookback: lookback, Estimate: &est})
	qry, err := a.newQuery(ctx, q, opts, e)
	if err != nil {
		return invalidParam(err, "query")
	}
	defer qry.Close()
	if res := qry.Exec(ctx); res.Err != nil && !errors.Is(res.Err, store.ErrEstimated) {
		return res.Err
	}
	n := est.Samples()
	if n <= int64(a.cfg.MaxSamples) {
		return nil
	}
	a.refused.Inc()
	l := est.Largest()
	return &RefusedError{Reason: fmt.Sprintf("query would read about %d samples, past the limit of %d: its largest selection %s"+
		" finds %d series with about %d points each (from %s); try a larger step, a shorter range or narrower matchers",
		n, a.cfg.MaxSamples, l.Selector, l.Series, l.PointsPerSeries, l.Tiers)}
}

// reportTiers tells the client what answered: the X-Pyramid-Tiers header always, and an
// info annotation when anything but raw samples did, so that a panel drawn from rollups
// says so. It returns the coarsest tier's name, for the duration metric.
func (a *API) reportTiers(w http.ResponseWriter, log *store.TierLog, infos annotations.Annotations) (string, annotations.Annotations) {
	tiers := log.Tiers()
	if len(tiers) == 0 {
		return "", infos
	}
	w.Header().Set(headerTiers, strings.Join(tiers, ", "))
	rolled := false
	for _, t := range tiers {
		rolled = rolled || strings.Contains(t, "/")
	}
	if rolled {
		infos = infos.Add(fmt.Errorf("%w: pyramid answered from rollup tiers: %s", annotations.PromQLInfo, strings.Join(tiers, ", ")))
	}
	return log.Coarsest(), infos
}
