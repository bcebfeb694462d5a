package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/stats"

	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// errTruncated is Prometheus's warning for answers cut at the limit parameter.
var errTruncated = errors.New("results truncated due to limit")

// evaluation is one PromQL query as a request asks for it.
type evaluation struct {
	endpoint string
	query    string
	// start == end and step 0 for an instant query.
	start, end time.Time
	step       time.Duration
	limit      int
	// tooManyPoints, when set, refuses the query once the guard has admitted it.
	tooManyPoints error
}

func (a *API) query(w http.ResponseWriter, r *http.Request) result {
	limit, err := parseLimit(r.FormValue("limit"))
	if err != nil {
		return result{err: invalidParam(err, "limit")}
	}
	ts, err := parseTimeParam(r, "time", time.Now())
	if err != nil {
		return result{err: invalidParam(err, "time")}
	}
	return a.evaluate(w, r, evaluation{endpoint: "query", query: r.FormValue("query"), start: ts, end: ts, limit: limit})
}

func (a *API) queryRange(w http.ResponseWriter, r *http.Request) result {
	limit, err := parseLimit(r.FormValue("limit"))
	if err != nil {
		return result{err: invalidParam(err, "limit")}
	}
	start, err := parseTime(r.FormValue("start"))
	if err != nil {
		return result{err: invalidParam(err, "start")}
	}
	end, err := parseTime(r.FormValue("end"))
	if err != nil {
		return result{err: invalidParam(err, "end")}
	}
	if end.Before(start) {
		return result{err: invalidParam(errors.New("end timestamp must not be before start time"), "end")}
	}
	step, err := parseDuration(r.FormValue("step"))
	if err != nil {
		return result{err: invalidParam(err, "step")}
	}
	if step <= 0 {
		return result{err: invalidParam(errors.New("zero or negative query resolution step widths are not accepted. Try a positive integer"), "step")}
	}
	e := evaluation{endpoint: "query_range", query: r.FormValue("query"), start: start, end: end, step: step, limit: limit}
	// Prometheus's guard, with its message: a point per step, MaxPoints at most. The
	// query guard still runs first, so that a query that would also read too much is
	// refused with its estimate, which says what to change.
	if end.Sub(start)/step > time.Duration(a.cfg.MaxPoints) {
		e.tooManyPoints = &badDataError{fmt.Errorf("exceeded maximum resolution of %s points per timeseries. Try decreasing the query resolution (?step=XX)",
			formatThousands(a.cfg.MaxPoints))}
	}
	return a.evaluate(w, r, e)
}

// evaluate runs e on the engine under the request's context, so that a client that goes
// away or a timeout stops it and the storage's queries with it.
func (a *API) evaluate(w http.ResponseWriter, r *http.Request, e evaluation) (res result) {
	ctx := r.Context()
	timeout := a.cfg.Timeout
	if to := r.FormValue("timeout"); to != "" {
		d, err := parseDuration(to)
		if err != nil {
			return result{err: invalidParam(err, "timeout")}
		}
		timeout = min(timeout, d)
	}
	// The deadline covers the wait for a slot too, as Prometheus's covers its queue.
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	lookback := a.cfg.LookbackDelta
	var reqLookback time.Duration
	if s := r.FormValue("lookback_delta"); s != "" {
		d, err := parseDuration(s)
		if err != nil {
			return result{err: &badDataError{fmt.Errorf("error parsing lookback delta duration: %w", err)}}
		}
		reqLookback = d
		if d > 0 {
			lookback = d
		}
	}
	statsParam := r.FormValue("stats")
	opts := promql.NewPrometheusQueryOpts(statsParam == "all", reqLookback)

	// The store's budget stops a query whose estimate fell short (admit) once it has read
	// more samples than the engine would hold, before it holds them all.
	var tiers store.TierLog
	q := a.st.Queryable(store.Options{Lookback: lookback, Tiers: &tiers,
		Budget: &store.Budget{Series: math.MaxInt, Samples: a.cfg.MaxSamples}})
	qry, err := a.newQuery(ctx, q, opts, e)
	if err != nil {
		return result{err: invalidParam(err, "query")}
	}
	// On success the result is encoded from memory the query owns: respond closes it.
	defer func() {
		if res.close == nil {
			qry.Close()
		}
	}()

	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return result{err: fmt.Errorf("wait for one of %d query slots: %w", a.cfg.MaxConcurrent, ctx.Err())}
	}
	began := time.Now()
	out := &promql.Result{Err: a.admit(ctx, e, opts, lookback)}
	if out.Err == nil && e.tooManyPoints != nil {
		out.Err = e.tooManyPoints
	}
	if out.Err == nil {
		out = qry.Exec(ctx)
	}
	<-a.slots
	a.logSlow(r, e, time.Since(began), out.Err)

	if errors.Is(out.Err, store.ErrSampleBudget) {
		out.Err = &RefusedError{Reason: fmt.Sprintf("query read more than %d samples (the limit) though its estimate was below it;"+
			" try a larger step, a shorter range or narrower matchers", a.cfg.MaxSamples)}
	}
	if out.Err != nil {
		return result{err: out.Err, warnings: out.Warnings, query: e.query}
	}
	warnings := out.Warnings
	value := out.Value
	if e.limit > 0 {
		switch v := value.(type) {
		case promql.Matrix:
			if len(v) > e.limit {
				value = v[:e.limit]
				warnings = warnings.Add(errTruncated)
			}
		case promql.Vector:
			if len(v) > e.limit {
				value = v[:e.limit]
				warnings = warnings.Add(errTruncated)
			}
		}
	}
	tier, warnings := a.reportTiers(w, &tiers, warnings)
	data := &queryData{resultType: value.Type(), result: value}
	if statsParam != "" {
		data.stats = stats.NewQueryStats(qry.Stats())
	}
	return result{data: data, warnings: warnings, query: e.query, close: qry.Close, tier: tier}
}

// newQuery prepares e on the engine over q.
func (a *API) newQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, e evaluation) (promql.Query, error) {
	if e.step == 0 {
		return a.engine.NewInstantQuery(ctx, q, opts, e.query, e.start)
	}
	return a.engine.NewRangeQuery(ctx, q, opts, e.query, e.start, e.end, e.step)
}

// logSlow logs a query that took longer than Config.SlowQueryThreshold.
func (a *API) logSlow(r *http.Request, e evaluation, took time.Duration, err error) {
	if a.cfg.SlowQueryThreshold == 0 || took < a.cfg.SlowQueryThreshold {
		return
	}
	args := []any{"endpoint", e.endpoint, "query", e.query, "duration", took, "remote", r.RemoteAddr}
	if e.step == 0 {
		args = append(args, "time", e.start)
	} else {
		args = append(args, "start", e.start, "end", e.end, "step", e.step)
	}
	if err != nil {
		args = append(args, "err", err)
	}
	a.logger.WarnContext(r.Context(), "slow query", args...)
}
