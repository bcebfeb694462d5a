package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// queryMode is how one PromQL expression is evaluated: an instant query at time, or a range
// query over [start, end] with step. Times are unix milliseconds, sent as decimal seconds
// with three decimals, so that both servers evaluate at exactly the same instants.
type queryMode struct {
	name             string
	instant          bool
	time             int64
	start, end, step int64
}

func instantAt(name string, ms int64) queryMode {
	return queryMode{name: name, instant: true, time: ms}
}

func rangeOver(name string, start, end int64, step time.Duration) queryMode {
	return queryMode{name: name, start: start, end: end, step: step.Milliseconds()}
}

// params renders the mode as the form parameters of /api/v1/query or /api/v1/query_range.
func (m queryMode) params(expr string) (path string, form url.Values) {
	if m.instant {
		return "/api/v1/query", url.Values{"query": {expr}, "time": {promTime(m.time)}}
	}
	return "/api/v1/query_range", url.Values{
		"query": {expr},
		"start": {promTime(m.start)},
		"end":   {promTime(m.end)},
		"step":  {strconv.FormatFloat(float64(m.step)/1000, 'f', -1, 64)},
	}
}

// promTime renders unix milliseconds as the decimal seconds the HTTP API takes.
func promTime(ms int64) string {
	return strconv.FormatFloat(float64(ms)/1000, 'f', 3, 64)
}

// promPoint is one point of a result exactly as Prometheus wrote it: the timestamp's JSON
// number and the value's string. Prometheus formats floats with the shortest decimal that
// round-trips, so equal strings mean equal float bits, NaN payloads aside.
type promPoint struct {
	t, v string
}

func (p promPoint) String() string { return "[" + p.t + ", " + strconv.Quote(p.v) + "]" }

func (p *promPoint) UnmarshalJSON(data []byte) error {
	var pair []json.RawMessage
	if err := json.Unmarshal(data, &pair); err != nil {
		return err
	}
	if len(pair) != 2 {
		return fmt.Errorf("point %s has %d elements, want 2", data, len(pair))
	}
	// The timestamp is kept as Prometheus writes it (seconds with three decimals), so
	// that 1.5 and 1.500 compare equal: the same instant, whatever the JSON spelling.
	var ts json.Number
	if err := json.Unmarshal(pair[0], &ts); err != nil {
		return fmt.Errorf("decode timestamp of point %s: %w", data, err)
	}
	sec, err := ts.Float64()
	if err != nil {
		return fmt.Errorf("decode timestamp of point %s: %w", data, err)
	}
	p.t = promTime(int64(math.Round(sec * 1000)))
	if bytes.HasPrefix(bytes.TrimSpace(pair[1]), []byte("{")) {
		// A native histogram (see histogramValue).
		p.v, err = histogramValue(pair[1])
		return err
	}
	if err := json.Unmarshal(pair[1], &p.v); err != nil {
		return fmt.Errorf("decode value of point %s: %w", data, err)
	}
	// A number is kept in one spelling of its bits, so that 1e+308 and the same value
	// written out in full compare equal; a string result stays as it is.
	if f, err := strconv.ParseFloat(p.v, 64); err == nil {
		p.v = strconv.FormatFloat(f, 'g', -1, 64)
	}
	return nil
}

// promResult is a query's answer, normalised for comparison: each series, keyed by its
// canonical label string (see labelKey), with its points in the order Prometheus wrote them.
// A scalar or string result is one series with the key of its type.
type promResult struct {
	resultType string
	series     map[string][]promPoint
}

func (r promResult) points() int {
	n := 0
	for _, ps := range r.series {
		n += len(ps)
	}
	return n
}

// sortedKeys returns the result's series keys in order, for stable reports.
func (r promResult) sortedKeys() []string {
	keys := make([]string, 0, len(r.series))
	for k := range r.series {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// apiEnvelope is the common part of every Prometheus HTTP API answer.
type apiEnvelope struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
}

// promAPI posts form to a Prometheus API path and returns the data of a successful answer.
// Warnings count as failure: Prometheus turns a failed remote read into a warning and
// answers with whatever else it has, which for a server reading only remotely is nothing,
// so a warning would otherwise pass as an empty result.
func promAPI(ctx context.Context, baseURL, path string, form url.Values) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+path, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read answer of %s: %w", path, err)
	}
	var env apiEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("%s answered %s with no API envelope: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	if resp.StatusCode != http.StatusOK || env.Status != "success" {
		return nil, fmt.Errorf("%s answered %s: %s: %s", path, resp.Status, env.ErrorType, env.Error)
	}
	if len(env.Warnings) > 0 {
		return nil, fmt.Errorf("%s answered with warnings: %s", path, strings.Join(env.Warnings, "; "))
	}
	return env.Data, nil
}

// runQuery evaluates expr in mode on the Prometheus at baseURL.
func runQuery(ctx context.Context, baseURL, expr string, mode queryMode) (promResult, error) {
	path, form := mode.params(expr)
	return decodeQuery(promAPI(ctx, baseURL, path, form))
}

// decodeQuery decodes the data of a /api/v1/query or /api/v1/query_range answer; it takes
// the request's error too, so that it can wrap any call that returns both.
func decodeQuery(data json.RawMessage, err error) (promResult, error) {
	if err != nil {
		return promResult{}, err
	}
	var d struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return promResult{}, fmt.Errorf("decode query data: %w", err)
	}
	out := promResult{resultType: d.ResultType, series: map[string][]promPoint{}}
	add := func(metric map[string]string, ps []promPoint) error {
		key := metricKey(metric)
		if _, dup := out.series[key]; dup {
			return fmt.Errorf("result holds series %s twice", key)
		}
		out.series[key] = ps
		return nil
	}
	switch d.ResultType {
	case "matrix":
		var ms []struct {
			Metric     map[string]string `json:"metric"`
			Values     []promPoint       `json:"values"`
			Histograms []promPoint       `json:"histograms"`
		}
		if err := json.Unmarshal(d.Result, &ms); err != nil {
			return promResult{}, fmt.Errorf("decode matrix: %w", err)
		}
		for _, m := range ms {
			// Floats first, then histograms, as Prometheus writes them.
			if err := add(m.Metric, append(m.Values, m.Histograms...)); err != nil {
				return promResult{}, err
			}
		}
	case "vector":
		var vs []struct {
			Metric    map[string]string `json:"metric"`
			Value     promPoint         `json:"value"`
			Histogram *promPoint        `json:"histogram"`
		}
		if err := json.Unmarshal(d.Result, &vs); err != nil {
			return promResult{}, fmt.Errorf("decode vector: %w", err)
		}
		for _, v := range vs {
			if v.Histogram != nil {
				v.Value = *v.Histogram
			}
			if err := add(v.Metric, []promPoint{v.Value}); err != nil {
				return promResult{}, err
			}
		}
	case "scalar", "string":
		var p promPoint
		if err := json.Unmarshal(d.Result, &p); err != nil {
			return promResult{}, fmt.Errorf("decode %s: %w", d.ResultType, err)
		}
		out.series[d.ResultType] = []promPoint{p}
	default:
		return promResult{}, fmt.Errorf("unknown result type %q", d.ResultType)
	}
	return out, nil
}

// metricKey is labelKey for a label map.
func metricKey(metric map[string]string) string {
	names := make([]string, 0, len(metric))
	values := make([]string, 0, len(metric))
	for n, v := range metric {
		names = append(names, n)
		values = append(values, v)
	}
	return labelKey(names, values)
}

// diffResults returns "" when a and b are identical (same result type, same series, same
// points) and otherwise a report naming the series only on one side and, for series on
// both, the first point where they part.
func diffResults(a, b promResult) string {
	const maxSeries = 5
	var out strings.Builder
	if a.resultType != b.resultType {
		fmt.Fprintf(&out, "  result type: A %s, B %s\n", a.resultType, b.resultType)
	}
	firstPoint := func(ps []promPoint) string {
		if len(ps) == 0 {
			return "no points"
		}
		return fmt.Sprintf("%d points, first %s", len(ps), ps[0])
	}
	var onlyA, onlyB, differ []string
	for _, k := range a.sortedKeys() {
		bp, ok := b.series[k]
		switch {
		case !ok:
			onlyA = append(onlyA, k)
		case !slices.Equal(a.series[k], bp):
			differ = append(differ, k)
		}
	}
	for _, k := range b.sortedKeys() {
		if _, ok := a.series[k]; !ok {
			onlyB = append(onlyB, k)
		}
	}
	report := func(side string, keys []string, r promResult) {
		for i, k := range keys {
			if i == maxSeries {
				fmt.Fprintf(&out, "  ... and %d more series only in %s\n", len(keys)-maxSeries, side)
				break
			}
			fmt.Fprintf(&out, "  only in %s: %s (%s)\n", side, k, firstPoint(r.series[k]))
		}
	}
	report("A", onlyA, a)
	report("B", onlyB, b)
	for i, k := range differ {
		if i == maxSeries {
			fmt.Fprintf(&out, "  ... and %d more series with different points\n", len(differ)-maxSeries)
			break
		}
		ap, bp := a.series[k], b.series[k]
		j := 0
		for j < len(ap) && j < len(bp) && ap[j] == bp[j] {
			j++
		}
		show := func(ps []promPoint) string {
			if j < len(ps) {
				return ps[j].String()
			}
			return "(none)"
		}
		fmt.Fprintf(&out, "  %s: A has %d points, B %d; first difference at point %d: A %s, B %s\n",
			k, len(ap), len(bp), j, show(ap), show(bp))
	}
	return out.String()
}

// seriesWindow is a /api/v1/series request: the match[] selectors and the time range.
type seriesWindow struct {
	name       string
	matches    []string
	start, end int64
}

// runSeries asks the Prometheus at baseURL for the series of w and returns their canonical
// label strings, sorted.
func runSeries(ctx context.Context, baseURL string, w seriesWindow) ([]string, error) {
	form := url.Values{"match[]": w.matches, "start": {promTime(w.start)}, "end": {promTime(w.end)}}
	return decodeSeriesKeys(promAPI(ctx, baseURL, "/api/v1/series", form))
}

// decodeSeriesKeys decodes the data of a /api/v1/series answer into the series' canonical
// label strings, sorted; it takes the request's error too, as decodeQuery does.
func decodeSeriesKeys(data json.RawMessage, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	var ms []map[string]string
	if err := json.Unmarshal(data, &ms); err != nil {
		return nil, fmt.Errorf("decode series: %w", err)
	}
	keys := make([]string, len(ms))
	for i, m := range ms {
		keys[i] = metricKey(m)
	}
	sort.Strings(keys)
	return keys, nil
}

// diffKeys returns "" when two sorted key lists are equal, and otherwise the keys only on
// one side.
func diffKeys(a, b []string) string {
	const maxKeys = 8
	var onlyA, onlyB []string
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i] < b[j]):
			onlyA = append(onlyA, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			onlyB = append(onlyB, b[j])
			j++
		default:
			i++
			j++
		}
	}
	var out strings.Builder
	for _, s := range []struct {
		side string
		keys []string
	}{{"A", onlyA}, {"B", onlyB}} {
		side, keys := s.side, s.keys
		for n, k := range keys {
			if n == maxKeys {
				fmt.Fprintf(&out, "  ... and %d more only in %s\n", len(keys)-maxKeys, side)
				break
			}
			fmt.Fprintf(&out, "  only in %s: %s\n", side, k)
		}
	}
	return out.String()
}
