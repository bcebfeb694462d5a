package e2e

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"time"

	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
)

// engine3 is the reference for pyramid's own query API: the Prometheus 3 engine pyramid
// embeds (the prometheus module in go.mod), run in the test, over Prometheus A's TSDB read
// through A's remote-read endpoint. pyramid's API must answer exactly as it does; where it
// differs from A itself, the engines differ, not the stores.
type engine3 struct {
	engine *promql.Engine
	q      storage.Queryable
}

// newEngine3 reads from the Prometheus at baseURL, with the settings pyramid's API has by
// default (PYRAMID_QUERY_*).
func newEngine3(baseURL string) (*engine3, error) {
	u, err := url.Parse(baseURL + "/api/v1/read")
	if err != nil {
		return nil, err
	}
	c, err := remote.NewReadClient("prometheus-a", &remote.ClientConfig{URL: &config_util.URL{URL: u}, Timeout: model.Duration(time.Minute), ChunkedReadLimit: 50e6})
	if err != nil {
		return nil, fmt.Errorf("remote-read client of %s: %w", baseURL, err)
	}
	rq := remote.NewSampleAndChunkQueryableClient(c, labels.EmptyLabels(), nil, true, func() (int64, error) { return 0, nil })
	return &engine3{
		engine: promql.NewEngine(promql.EngineOpts{
			MaxSamples: 50_000_000, Timeout: 2 * time.Minute, LookbackDelta: 5 * time.Minute,
			NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
			EnableAtModifier:         true, EnableNegativeOffset: true,
		}),
		q: dotAllQueryable{rq},
	}, nil
}

// run evaluates expr in mode.
func (e *engine3) run(ctx context.Context, expr string, mode queryMode) (promResult, error) {
	var (
		qry promql.Query
		err error
	)
	if mode.instant {
		qry, err = e.engine.NewInstantQuery(ctx, e.q, nil, expr, time.UnixMilli(mode.time))
	} else {
		qry, err = e.engine.NewRangeQuery(ctx, e.q, nil, expr, time.UnixMilli(mode.start), time.UnixMilli(mode.end), time.Duration(mode.step)*time.Millisecond)
	}
	if err != nil {
		return promResult{}, err
	}
	defer qry.Close()
	res := qry.Exec(ctx)
	if res.Err != nil {
		return promResult{}, res.Err
	}
	if len(res.Warnings) > 0 {
		if ws, _ := res.Warnings.AsStrings(expr, 10, 0); len(ws) > 0 {
			return promResult{}, fmt.Errorf("warnings: %q", ws)
		}
	}
	return fromEngine(res.Value)
}

// fromEngine normalises an engine result as decodeQuery normalises the API's JSON.
func fromEngine(v parser.Value) (promResult, error) {
	out := promResult{resultType: string(v.Type()), series: map[string][]promPoint{}}
	pt := func(t int64, f float64) promPoint {
		return promPoint{t: promTime(t), v: strconv.FormatFloat(f, 'g', -1, 64)}
	}
	key := func(l labels.Labels) string {
		var names, values []string
		l.Range(func(l labels.Label) { names, values = append(names, l.Name), append(values, l.Value) })
		return labelKey(names, values)
	}
	switch v := v.(type) {
	case promql.Matrix:
		for _, s := range v {
			ps := make([]promPoint, len(s.Floats), len(s.Floats)+len(s.Histograms))
			for i, p := range s.Floats {
				ps[i] = pt(p.T, p.F)
			}
			for _, p := range s.Histograms {
				hp, err := histogramPoint(p.T, p.H)
				if err != nil {
					return promResult{}, err
				}
				ps = append(ps, hp)
			}
			out.series[key(s.Metric)] = ps
		}
	case promql.Vector:
		for _, s := range v {
			p := pt(s.T, s.F)
			if s.H != nil {
				var err error
				if p, err = histogramPoint(s.T, s.H); err != nil {
					return promResult{}, err
				}
			}
			out.series[key(s.Metric)] = []promPoint{p}
		}
	case promql.Scalar:
		out.series["scalar"] = []promPoint{pt(v.T, v.V)}
	case promql.String:
		out.series["string"] = []promPoint{{t: promTime(v.T), v: v.V}}
	default:
		return promResult{}, fmt.Errorf("unknown result %T", v)
	}
	return out, nil
}

// dotAllQueryable asks a Prometheus 2 server with Prometheus 3's regex semantics: 2.x
// compiles a regex re as ^(?:re)$, where . does not match a newline, so each regex is sent
// as (?s:re), which 2.x compiles as 3.x compiles re.
type dotAllQueryable struct{ storage.Queryable }

func (q dotAllQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	in, err := q.Queryable.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	return dotAllQuerier{in}, nil
}

type dotAllQuerier struct{ storage.Querier }

func (q dotAllQuerier) Select(ctx context.Context, sortSeries bool, h *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	out := make([]*labels.Matcher, len(ms))
	for i, m := range ms {
		out[i] = m
		if m.Type == labels.MatchRegexp || m.Type == labels.MatchNotRegexp {
			sm, err := labels.NewMatcher(m.Type, m.Name, "(?s:"+m.Value+")")
			if err != nil {
				return storage.ErrSeriesSet(err)
			}
			out[i] = sm
		}
	}
	return q.Querier.Select(ctx, sortSeries, h, out...)
}
