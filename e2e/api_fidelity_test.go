package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// pyramid's own query API evaluates PromQL with Prometheus 3's engine (the module version
// in go.mod), while A and B are Prometheus 2.42. Both engines give the same answer, bit for
// bit, except where 3.x changed the language on purpose. apiDifferences lists those
// expressions of readQueries, each with an expression that gives Prometheus 3's answer
// when 2.42 evaluates it on A; for every other expression pyramid's API must answer
// exactly what A answers.
type apiDifference struct {
	onA    string // 2.42's spelling of what Prometheus 3 answers for the expression
	reason string
	// differs says that onA answers differently from the expression itself on A, which
	// shows that the case the entry documents really occurs in the data.
	differs bool
}

// apiDifferences is keyed by expression. The reasons go into the README's "What differs
// from Prometheus".
var apiDifferences = map[string]apiDifference{
	// Prometheus 3 compiles a regex matcher as ^(?s:re)$: a dot also matches a newline,
	// which 2.42's ^(?:re)$ does not. The label value "line1\nline2" shows it.
	`e2e_odd_labels{v=~".+"}`: {
		onA: `e2e_odd_labels{v=~"(?s:.+)"}`, differs: true,
		reason: "a regex's . matches a newline in Prometheus 3",
	},
	`e2e_odd_labels{v=~".*"}`: {
		onA: `e2e_odd_labels{v=~"(?s:.*)"}`, differs: true,
		reason: "a regex's . matches a newline in Prometheus 3",
	},
	`e2e_odd_labels{v!~".*"}`: {
		onA: `e2e_odd_labels{v!~"(?s:.*)"}`, differs: true,
		reason: "a regex's . matches a newline in Prometheus 3, so .* matches every value",
	},
	`e2e_odd_labels{v=~"line1.line2|zürich"}`: {
		onA: `e2e_odd_labels{v=~"(?s:line1.line2|zürich)"}`, differs: true,
		reason: "a regex's . matches a newline in Prometheus 3",
	},
	// Range selectors are left-open in Prometheus 3: a sample exactly at t-range is out of
	// the window, where 2.42 takes it in. Timestamps are whole milliseconds, so (t-10s, t]
	// is [t-9.999s, t]. Only the edge mode (see readQueries) puts a sample on the edge.
	`count_over_time(e2e_scrapes_total[10s])`: {
		onA: `count_over_time(e2e_scrapes_total[9999ms])`, differs: true,
		reason: "range windows are left-open in Prometheus 3: a sample exactly at t-range is not in x[range]",
	},
	`sum_over_time(e2e_scrapes_total[10s])`: {
		onA: `sum_over_time(e2e_scrapes_total[9999ms])`, differs: true,
		reason: "range windows are left-open in Prometheus 3: a sample exactly at t-range is not in x[range]",
	},
	// A subquery without a step steps by the default evaluation interval: A's
	// evaluation_interval is 1s, pyramid's default is Prometheus's default, 1m.
	`max_over_time(deriv(e2e_scrapes_total[10s])[30s:])`: {
		onA:    `max_over_time(deriv(e2e_scrapes_total[10s])[30s:1m])`,
		reason: "a subquery without a step steps by pyramid's default evaluation interval, 1m, not by A's configured 1s",
	},
}

// edgeFreeResidue returns the millisecond within a second at which no sample of s lies,
// nearest to 500. Every range, step and offset of the suite is a whole number of seconds,
// so instants that all share this residue put no sample on the left edge of a range or
// lookback window, where Prometheus 2.42 (closed windows) and 3.x (left-open) disagree.
// Subqueries step at whole multiples of their step, so residue 0 is never chosen.
func edgeFreeResidue(s seriesSet) (int64, error) {
	used := make([]bool, 1000)
	used[0] = true
	for _, ss := range s {
		for _, p := range ss {
			used[((p.ts%1000)+1000)%1000] = true
		}
	}
	for d := int64(0); d < 500; d++ {
		for _, r := range []int64{500 + d, 500 - d} {
			if r > 0 && r < 1000 && !used[r] {
				return r, nil
			}
		}
	}
	return 0, errors.New("every millisecond of the second holds a sample")
}

// withResidue moves ms to the nearest instant whose millisecond within the second is r.
func withResidue(ms, r int64) int64 {
	base := ms - ((ms%1000)+1000)%1000 + r
	switch {
	case base-ms > 500:
		return base - 1000
	case ms-base > 500:
		return base + 1000
	}
	return base
}

// subqueryEdgeFree reports whether no sample of s lies on a whole second. Subqueries
// evaluate their inner expression at whole multiples of their step, so a sample there sits
// on the left edge of the inner range or lookback window whatever the outer instants are.
func subqueryEdgeFree(s seriesSet) bool {
	for _, ss := range s {
		for _, p := range ss {
			if p.ts%1000 == 0 {
				return false
			}
		}
	}
	return true
}

// diffWithin is diffResults with a relative tolerance for values: Prometheus 3 sums with
// Kahan compensation and computes averages differently, so float sums of inexact values
// may differ from 2.42's in the last bits. Timestamps, series and special values must
// still match exactly.
func diffWithin(a, b promResult, rel float64) string {
	if d := diffResults(a, b); d == "" {
		return ""
	}
	var out strings.Builder
	if a.resultType != b.resultType {
		fmt.Fprintf(&out, "  result type: A %s, B %s\n", a.resultType, b.resultType)
	}
	for _, k := range a.sortedKeys() {
		bp, ok := b.series[k]
		if !ok {
			fmt.Fprintf(&out, "  only in A: %s\n", k)
			continue
		}
		ap := a.series[k]
		if len(ap) != len(bp) {
			fmt.Fprintf(&out, "  %s: A has %d points, B %d\n", k, len(ap), len(bp))
			continue
		}
		for i := range ap {
			if !closeEnough(ap[i], bp[i], rel) {
				fmt.Fprintf(&out, "  %s: point %d: A %s, B %s\n", k, i, ap[i], bp[i])
				break
			}
		}
	}
	for _, k := range b.sortedKeys() {
		if _, ok := a.series[k]; !ok {
			fmt.Fprintf(&out, "  only in B: %s\n", k)
		}
	}
	return out.String()
}

func closeEnough(a, b promPoint, rel float64) bool {
	if a == b {
		return true
	}
	if a.t != b.t {
		return false
	}
	x, errA := strconv.ParseFloat(a.v, 64)
	y, errB := strconv.ParseFloat(b.v, 64)
	if errA != nil || errB != nil || math.IsNaN(x) || math.IsNaN(y) || math.IsInf(x, 0) || math.IsInf(y, 0) {
		return false
	}
	return math.Abs(x-y) <= rel*math.Max(math.Abs(x), math.Abs(y))
}

// labelRequest is a /api/v1/labels or /api/v1/label/<name>/values request.
type labelRequest struct {
	path string
	form url.Values
}

func (r labelRequest) String() string {
	if len(r.form) == 0 {
		return r.path
	}
	return r.path + "?" + r.form.Encode()
}

// runLabelList asks the API at baseURL for a list of strings (label names or values)
// and returns it sorted.
func runLabelList(ctx context.Context, baseURL string, r labelRequest) ([]string, error) {
	// Prometheus 2.42 serves label values to GET only.
	return labelList(ctx, http.MethodGet, baseURL, r)
}

// labelList sends r with method and returns the list of strings it answers, sorted.
func labelList(ctx context.Context, method, baseURL string, r labelRequest) ([]string, error) {
	data, err := apiDo(ctx, method, baseURL, r.path, r.form)
	if err != nil {
		return nil, err
	}
	var out []string
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("decode %s: %w", r.path, err)
	}
	sort.Strings(out)
	return out, nil
}

// labelRequests are the label name and value lookups, with and without match[], start
// and end. Their windows hold every sample A has: Prometheus's TSDB answers these from
// its index, by the series in a block that overlaps the window whether or not a sample of
// the series falls into it, so only windows that hold all of each series compare as sets
// with a store that judges by samples.
func labelRequests(allStart, allEnd int64) []labelRequest {
	window := func(matches ...string) url.Values {
		f := url.Values{"start": {promTime(allStart)}, "end": {promTime(allEnd)}}
		if len(matches) > 0 {
			f["match[]"] = matches
		}
		return f
	}
	return []labelRequest{
		{"/api/v1/labels", nil},
		{"/api/v1/labels", window()},
		{"/api/v1/labels", url.Values{"match[]": {`e2e_odd_labels`}}},
		{"/api/v1/labels", window(`{job="exporter"}`, `up`)},
		{"/api/v1/labels", window(`{__name__=~"e2e_(late|flapping)"}`)},
		{"/api/v1/label/__name__/values", nil},
		{"/api/v1/label/__name__/values", window()},
		{"/api/v1/label/__name__/values", window(`{job="exporter"}`)},
		{"/api/v1/label/job/values", window()},
		{"/api/v1/label/job/values", url.Values{"match[]": {`{__name__=~"e2e_.+"}`}}},
		{"/api/v1/label/v/values", window()},
		{"/api/v1/label/code/values", window(`e2e_requests_total{method=~"GET|get"}`)},
		{"/api/v1/label/state/values", window()},
		{"/api/v1/label/le/values", window(`e2e_latency_seconds_bucket`)},
	}
}
