package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	jsoniter "github.com/json-iterator/go"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/jsonutil"
)

// histogramValue renders a native histogram of the query API's JSON ({"count", "sum",
// "buckets": [[boundary rule, lower, upper, count], ...]}) as one string, so that a
// promPoint can hold it and diffResults compare it. Numbers are kept in one spelling of
// their bits, as promPoint does for floats; a field the test does not know is an error
// rather than ignored.
func histogramValue(raw json.RawMessage) (string, error) {
	var h struct {
		Count   string              `json:"count"`
		Sum     string              `json:"sum"`
		Buckets [][]json.RawMessage `json:"buckets"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return "", fmt.Errorf("decode histogram %s: %w", raw, err)
	}
	norm := func(s string) (string, error) {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return "", fmt.Errorf("histogram %s: %w", raw, err)
		}
		return strconv.FormatFloat(f, 'g', -1, 64), nil
	}
	count, err := norm(h.Count)
	if err != nil {
		return "", err
	}
	sum, err := norm(h.Sum)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "histogram count=%s sum=%s buckets=[", count, sum)
	for i, bk := range h.Buckets {
		if len(bk) != 4 {
			return "", fmt.Errorf("histogram %s: bucket %d has %d elements, want 4", raw, i, len(bk))
		}
		var rule int
		if err := json.Unmarshal(bk[0], &rule); err != nil {
			return "", fmt.Errorf("histogram %s: bucket %d: %w", raw, i, err)
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d", rule)
		for _, field := range bk[1:] {
			var s string
			if err := json.Unmarshal(field, &s); err != nil {
				return "", fmt.Errorf("histogram %s: bucket %d: %w", raw, i, err)
			}
			n, err := norm(s)
			if err != nil {
				return "", err
			}
			b.WriteString(" " + n)
		}
	}
	b.WriteString("]")
	return b.String(), nil
}

// histogramPoint renders an engine's histogram as the query API does (Prometheus's own
// jsonutil) and then as histogramValue does, so that it compares with an API answer.
func histogramPoint(t int64, h *histogram.FloatHistogram) (promPoint, error) {
	s := jsoniter.ConfigCompatibleWithStandardLibrary.BorrowStream(nil)
	defer jsoniter.ConfigCompatibleWithStandardLibrary.ReturnStream(s)
	jsonutil.MarshalHistogram(h, s)
	if s.Error != nil {
		return promPoint{}, fmt.Errorf("render histogram at %d: %w", t, s.Error)
	}
	v, err := histogramValue(s.Buffer())
	if err != nil {
		return promPoint{}, err
	}
	return promPoint{t: promTime(t), v: v}, nil
}

// histQuery is one PromQL expression over the histograms and the modes it runs in;
// wantEmpty marks the ones that must answer nothing (a series past its stale marker).
type histQuery struct {
	expr      string
	modes     []queryMode
	wantEmpty bool
}

// histQueries is the suite: the histogram functions over counter histograms (counterSel:
// not the gauge, whose rate Prometheus 3 warns about), over the gauge histogram, and the
// histograms themselves, at instants before and after the counter reset, at the end, and
// over the whole run at steps of 1s, 5s and 1m.
func histQueries(f histFacts, at func(int64) int64) []histQuery {
	beforeReset := instantAt("instant before the reset", at(f.reset-4000))
	afterReset := instantAt("instant after the reset", at(f.reset+5000))
	end := instantAt("instant at the end", at(f.lastReal-500))
	afterStale := instantAt("instant after the stale markers", at(f.lastStale+2000))
	r1 := rangeOver("range 1s", at(f.first+1500), at(f.lastStale+3000), time.Second)
	r5 := rangeOver("range 5s", at(f.first+3000), at(f.lastStale+3000), 5*time.Second)
	r1m := rangeOver("range 1m", at(f.first-60_000), at(f.lastStale+60_000), time.Minute)
	std := []queryMode{beforeReset, afterReset, end, r1, r5, r1m}

	const counters = `{__name__=~"e2e_nh_(mixed|reset|wide)_seconds"}`
	const all = `{__name__=~"e2e_nh_.+"}`
	c := func(format string) string { return strings.ReplaceAll(format, "C", counters) }
	var qs []histQuery
	add := func(modes []queryMode, exprs ...string) {
		for _, e := range exprs {
			qs = append(qs, histQuery{expr: e, modes: modes})
		}
	}
	add(std,
		all,
		c(`histogram_quantile(0.9, rate(C[1m]))`),
		c(`histogram_count(rate(C[1m]))`),
		`histogram_sum(`+all+`)`,
		c(`rate(C[1m])`),
		c(`histogram_avg(rate(C[1m]))`),
		c(`sum by () (rate(C[1m]))`),
		c(`sum by (job) (rate(C[30s]))`),
		c(`irate(C[5s])`),
		c(`histogram_count(C)`),
		`increase(e2e_nh_reset_seconds[1m])`,
		`resets(e2e_nh_reset_seconds[1m])`,
		`histogram_quantile(0.1, rate(e2e_nh_mixed_seconds[30s]))`,
		`histogram_fraction(-1, 1, rate(e2e_nh_mixed_seconds[1m]))`,
		`histogram_stddev(rate(e2e_nh_wide_seconds[1m]))`,
		`rate(e2e_nh_wide_seconds[10s])`,
		`histogram_quantile(0.5, e2e_nh_gauge_bytes)`,
		`histogram_count(e2e_nh_gauge_bytes)`,
		`sum(e2e_nh_gauge_bytes)`,
		`count_over_time(`+all+`[10s])`,
	)
	add([]queryMode{afterStale}, `count_over_time(`+all+`[1m])`, `last_over_time(`+all+`[1m])`)
	qs = append(qs, histQuery{expr: all, modes: []queryMode{afterStale}, wantEmpty: true})
	return qs
}

// compareHistQueries runs histQueries on pyramid's own query API and on its reference, the
// Prometheus 3 engine over Prometheus A's remote read (newEngine3), and requires identical
// answers: the same series, timestamps, floats and histograms (count, sum and every
// populated bucket, as the API renders them).
func compareHistQueries(t *testing.T, ctx context.Context, promURL, pyramidURL string, data pointSet, f histFacts) {
	ref3, err := newEngine3(promURL)
	if err != nil {
		t.Fatal(err)
	}
	ref3.q = wideReadQueryable{Queryable: ref3.q, mint: 0, maxt: f.lastStale + time.Hour.Milliseconds()}
	// Both sides run Prometheus 3's engine, so window edges cannot part them; the instants
	// still avoid the milliseconds that hold samples, as the read test's do.
	stamps := seriesSet{}
	for k, ps := range data {
		for _, p := range ps {
			stamps[k] = append(stamps[k], sample{ts: p.t})
		}
	}
	residue, err := edgeFreeResidue(stamps)
	if err != nil {
		t.Fatalf("choose the evaluation instants: %v", err)
	}
	at := func(ms int64) int64 { return withResidue(ms, residue) }

	var table strings.Builder
	fmt.Fprintf(&table, "%-80s %5s %7s %7s %6s  %s\n", "query", "modes", "series", "points", "hist", "API")
	compared, differences := 0, 0
	for _, q := range histQueries(f, at) {
		series, points, hists, status := 0, 0, 0, "same"
		for _, mode := range q.modes {
			r3, err := ref3.run(ctx, q.expr, mode)
			if err != nil {
				t.Errorf("query %s (%s) on the Prometheus 3 engine over A: %v", q.expr, mode.name, err)
				status = "ERROR"
				continue
			}
			p, err := runQuery(ctx, pyramidURL, q.expr, mode)
			if err != nil {
				t.Errorf("query %s (%s) on pyramid's API: %v", q.expr, mode.name, err)
				status = "ERROR"
				continue
			}
			compared++
			series += len(r3.series)
			points += r3.points()
			for _, ps := range r3.series {
				for _, pt := range ps {
					if strings.HasPrefix(pt.v, "histogram ") {
						hists++
					}
				}
			}
			if d := diffResults(r3, p); d != "" {
				differences++
				status = "DIFF"
				t.Errorf("query %s (%s, %s): the Prometheus 3 engine over A and pyramid's API differ; the engine has %d series and %d points, pyramid %d and %d:\n%s",
					q.expr, mode.name, mode.describe(), len(r3.series), r3.points(), len(p.series), p.points(), d)
			}
		}
		switch {
		case q.wantEmpty && points > 0:
			t.Errorf("query %s: the engine over A answers %d points, want none; the test's timeline is off", q.expr, points)
			status = "ERROR"
		case !q.wantEmpty && points == 0:
			// An empty answer on both sides would compare equal and prove nothing.
			t.Errorf("query %s: the engine over A answers nothing in any mode, so the comparison would pass vacuously", q.expr)
			status = "ERROR"
		}
		label := q.expr
		if len(q.modes) == 1 {
			label += " (" + q.modes[0].name + ")"
		}
		fmt.Fprintf(&table, "%-80s %5d %7d %7d %6d  %s\n", label, len(q.modes), series, points, hists, status)
	}
	t.Logf("pyramid's API against the Prometheus 3 engine over A (series and points counted on the engine over all modes; hist: points that are histograms):\n%s", table.String())
	t.Logf("compared %d answers; %d differ", compared, differences)
}

// wideReadQueryable makes the reference engine read whole series from Prometheus A,
// whatever window a selector asks for. 2.42 re-encodes a chunk that the asked window cuts,
// and re-encoding a gauge histogram chunk fails there ("iterate chunk while re-encoding:
// detected unexpected counter reset in histogram", a 500); a chunk inside the window is
// served as stored. The engine reads only the samples its windows hold, so the extra
// samples change no answer.
type wideReadQueryable struct {
	storage.Queryable
	mint, maxt int64
}

func (q wideReadQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	in, err := q.Queryable.Querier(min(mint, q.mint), max(maxt, q.maxt))
	if err != nil {
		return nil, err
	}
	return wideReadQuerier{Querier: in, mint: q.mint, maxt: q.maxt}, nil
}

type wideReadQuerier struct {
	storage.Querier
	mint, maxt int64
}

func (q wideReadQuerier) Select(ctx context.Context, sortSeries bool, h *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	if h != nil {
		wide := *h
		wide.Start, wide.End = min(h.Start, q.mint), max(h.End, q.maxt)
		h = &wide
	}
	return q.Querier.Select(ctx, sortSeries, h, ms...)
}

// TestHistogramValueNormalises checks that histogramValue keeps what tells histograms apart
// and nothing else: spellings of the same numbers compare equal, any changed number or
// boundary rule does not, and a field the test does not know is refused.
func TestHistogramValueNormalises(t *testing.T) {
	base := `{"count":"3","sum":"1.5","buckets":[[3,"-0.001","0.001","1"],[0,"0.5","1","2"]]}`
	v, err := histogramValue(json.RawMessage(base))
	if err != nil {
		t.Fatal(err)
	}
	same, err := histogramValue(json.RawMessage(`{"count":"3e0","sum":"1.50","buckets":[[3,"-1e-3","0.001","1"],[0,"5e-1","1.0","2"]]}`))
	if err != nil || same != v {
		t.Errorf("another spelling of the same histogram reads %q (%v), want %q", same, err, v)
	}
	for _, changed := range []string{
		`{"count":"4","sum":"1.5","buckets":[[3,"-0.001","0.001","1"],[0,"0.5","1","2"]]}`,
		`{"count":"3","sum":"1.25","buckets":[[3,"-0.001","0.001","1"],[0,"0.5","1","2"]]}`,
		`{"count":"3","sum":"1.5","buckets":[[3,"-0.001","0.001","1"],[1,"0.5","1","2"]]}`,
		`{"count":"3","sum":"1.5","buckets":[[3,"-0.001","0.001","1"],[0,"0.25","1","2"]]}`,
		`{"count":"3","sum":"1.5","buckets":[[3,"-0.001","0.001","1"],[0,"0.5","1","1"]]}`,
		`{"count":"3","sum":"1.5","buckets":[[0,"0.5","1","2"]]}`,
		`{"count":"3","sum":"1.5","buckets":[[0,"0.5","1","2"],[3,"-0.001","0.001","1"]]}`,
	} {
		if got, err := histogramValue(json.RawMessage(changed)); err != nil || got == v {
			t.Errorf("%s reads as %q (%v), the same as %s", changed, got, err, base)
		}
	}
	if _, err := histogramValue(json.RawMessage(`{"count":"3","sum":"1.5","schema":3}`)); err == nil {
		t.Error("an unknown field is accepted")
	}
	// The engine's side renders through Prometheus's jsonutil and must read the same.
	h := &histogram.FloatHistogram{Schema: 0, ZeroThreshold: 0.001, ZeroCount: 1, Count: 3, Sum: 1.5,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []float64{2}}
	p, err := histogramPoint(1000, h)
	if err != nil {
		t.Fatal(err)
	}
	if p.v != v || p.t != "1.000" {
		t.Errorf("the engine's histogram reads %s, want [1.000, %q]", p, v)
	}
}
