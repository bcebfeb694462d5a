package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/gorilla/mux"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// checkContextEvery is how many series /series reads between looks at its context.
const checkContextEvery = 128

// seriesRequest is what /series, /labels and label values share: a time range, optional
// (for /series required) match[] selectors and a limit.
type seriesRequest struct {
	start, end int64
	matchers   [][]*labels.Matcher
	limit      int
}

func (a *API) parseSeriesRequest(r *http.Request) (seriesRequest, error) {
	var sr seriesRequest
	limit, err := parseLimit(r.FormValue("limit"))
	if err != nil {
		return sr, invalidParam(err, "limit")
	}
	start, err := parseTimeParam(r, "start", minTime())
	if err != nil {
		return sr, invalidParam(err, "start")
	}
	end, err := parseTimeParam(r, "end", maxTime())
	if err != nil {
		return sr, invalidParam(err, "end")
	}
	sr.matchers, err = parseMatchers(a.parser, r.Form["match[]"])
	if err != nil {
		return sr, err
	}
	sr.start, sr.end, sr.limit = timestamp.FromTime(start), timestamp.FromTime(end), limit
	return sr, nil
}

func (a *API) series(_ http.ResponseWriter, r *http.Request) result {
	if err := r.ParseForm(); err != nil {
		return result{err: &badDataError{fmt.Errorf("error parsing form values: %w", err)}}
	}
	if len(r.Form["match[]"]) == 0 {
		return result{err: &badDataError{errors.New("no match[] parameter provided")}}
	}
	sr, err := a.parseSeriesRequest(r)
	if err != nil {
		var bad *badDataError
		if !errors.As(err, &bad) {
			err = invalidParam(err, "match[]")
		}
		return result{err: err}
	}
	ctx := r.Context()
	var o store.Options
	if s := r.FormValue("first_seen_after"); s != "" {
		t, err := parseTime(s)
		if err != nil {
			return result{err: invalidParam(err, "first_seen_after")}
		}
		o.FirstSeenAfter = t
	}
	q, err := a.st.Queryable(o).Querier(sr.start, sr.end)
	if err != nil {
		return result{err: err}
	}
	defer q.Close()

	hints := &storage.SelectHints{
		Start: sr.start,
		End:   sr.end,
		// No function is called "series": Prometheus passes it to say no samples are needed.
		Func:  "series",
		Limit: hintLimit(sr.limit),
	}
	var set storage.SeriesSet
	if len(sr.matchers) > 1 {
		sets := make([]storage.SeriesSet, 0, len(sr.matchers))
		for _, ms := range sr.matchers {
			// Sorted, so that the merge drops series that several selectors match.
			sets = append(sets, q.Select(ctx, true, hints, ms...))
		}
		set = storage.NewMergeSeriesSet(sets, 0, storage.ChainedSeriesMerge)
	} else {
		set = q.Select(ctx, false, hints, sr.matchers[0]...)
	}
	metrics := []labels.Labels{}
	for i := 1; set.Next(); i++ {
		if i%checkContextEvery == 0 {
			if err := ctx.Err(); err != nil {
				return result{err: fmt.Errorf("list series after %d: %w", len(metrics), err), warnings: set.Warnings()}
			}
		}
		metrics = append(metrics, set.At().Labels())
		if sr.limit > 0 && len(metrics) > sr.limit {
			ws := set.Warnings()
			return result{data: metrics[:sr.limit], warnings: ws.Add(errTruncated)}
		}
	}
	if err := set.Err(); err != nil {
		return result{err: err, warnings: set.Warnings()}
	}
	return result{data: metrics, warnings: set.Warnings()}
}

func (a *API) labelNames(_ http.ResponseWriter, r *http.Request) result {
	sr, err := a.parseSeriesRequest(r)
	if err != nil {
		return result{err: asBadData(err)}
	}
	return a.labelList(r.Context(), sr, func(ctx context.Context, q storage.Querier, hints *storage.LabelHints, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
		return q.LabelNames(ctx, hints, ms...)
	})
}

func (a *API) labelValues(_ http.ResponseWriter, r *http.Request) result {
	name := mux.Vars(r)["name"]
	if strings.HasPrefix(name, "U__") {
		name = model.UnescapeName(name, model.ValueEncodingEscaping)
	}
	if !model.UTF8Validation.IsValidLabelName(name) {
		return result{err: &badDataError{fmt.Errorf("invalid label name: %q", name)}}
	}
	sr, err := a.parseSeriesRequest(r)
	if err != nil {
		return result{err: asBadData(err)}
	}
	return a.labelList(r.Context(), sr, func(ctx context.Context, q storage.Querier, hints *storage.LabelHints, ms []*labels.Matcher) ([]string, annotations.Annotations, error) {
		return q.LabelValues(ctx, name, hints, ms...)
	})
}

// asBadData makes a match[] parse error bad_data, as Prometheus does for labels and label
// values (without naming the parameter, unlike /series).
func asBadData(err error) error {
	var bad *badDataError
	if errors.As(err, &bad) {
		return err
	}
	return &badDataError{err}
}

type labelLister func(context.Context, storage.Querier, *storage.LabelHints, []*labels.Matcher) ([]string, annotations.Annotations, error)

// labelList answers /labels and label values: the sorted union over the selectors, cut at
// the limit.
func (a *API) labelList(ctx context.Context, sr seriesRequest, list labelLister) result {
	q, err := a.st.Queryable(store.Options{}).Querier(sr.start, sr.end)
	if err != nil {
		return result{err: err}
	}
	defer q.Close()
	hints := &storage.LabelHints{Limit: hintLimit(sr.limit)}

	var (
		vals     []string
		warnings annotations.Annotations
	)
	if len(sr.matchers) > 1 {
		set := map[string]struct{}{}
		for _, ms := range sr.matchers {
			vs, ws, err := list(ctx, q, hints, ms)
			warnings.Merge(ws)
			if err != nil {
				return result{err: err, warnings: warnings}
			}
			for _, v := range vs {
				set[v] = struct{}{}
			}
		}
		vals = make([]string, 0, len(set))
		for v := range set {
			vals = append(vals, v)
		}
	} else {
		var ms []*labels.Matcher
		if len(sr.matchers) == 1 {
			ms = sr.matchers[0]
		}
		vals, warnings, err = list(ctx, q, hints, ms)
		if err != nil {
			return result{err: err, warnings: warnings}
		}
	}
	if vals == nil {
		vals = []string{}
	}
	slices.Sort(vals)
	if sr.limit > 0 && len(vals) > sr.limit {
		vals = vals[:sr.limit]
		warnings = warnings.Add(errTruncated)
	}
	return result{data: vals, warnings: warnings}
}
