package adapter_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/pyramid-metrics/pyramid/adapter/api"
	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// apiConfig is the query API's configuration by cmd/pyramid's defaults.
func apiConfig() api.Config {
	return api.Config{
		LookbackDelta: 5 * time.Minute, MaxSamples: 50_000_000, Timeout: 2 * time.Minute, MaxConcurrent: 4,
		DefaultEvaluationInterval: time.Minute, MaxPoints: api.DefaultMaxPoints, RetryAfter: 5 * time.Second,
	}
}

// tsdbReference serves the query API from a Prometheus TSDB, the reference pyramid's
// answers are compared with. It holds no metadata.
type tsdbReference struct{ db *tsdb.DB }

func (r tsdbReference) Queryable(store.Options) storage.Queryable { return r.db }

func (r tsdbReference) Metadata(context.Context, string, int) ([]store.Metadata, error) {
	return nil, nil
}

// histogramTSDB opens a Prometheus TSDB holding ss, appended as Prometheus appends
// scraped samples.
func histogramTSDB(t *testing.T, ss []hseries) *tsdb.DB {
	t.Helper()
	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	app := db.Appender(context.Background())
	for _, s := range ss {
		var ref storage.SeriesRef
		for _, smp := range s.samples {
			if smp.h == nil && smp.fh == nil {
				ref, err = app.Append(ref, s.lset, smp.t, smp.f)
			} else {
				ref, err = app.AppendHistogram(ref, s.lset, smp.t, smp.h, smp.fh)
			}
			if err != nil {
				t.Fatalf("append %s %v: %v", s.lset, smp, err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	return db
}

// queryData asks base's query API and returns the result type and the results, each as
// its JSON, in the order of their label sets (an instant vector's order is the storage's).
// A list answer (series, label values) has the result type "list".
func queryData(t *testing.T, base, path string, params url.Values) (string, []string) {
	t.Helper()
	resp, err := http.Get(base + path + "?" + params.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s %v: %d %s", path, params, resp.StatusCode, b)
		return "", nil
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("%s %v: decode %s: %v", path, params, b, err)
	}
	var list []json.RawMessage
	if err := json.Unmarshal(env.Data, &list); err == nil {
		out := make([]string, len(list))
		for i, r := range list {
			out[i] = string(r)
		}
		slices.Sort(out)
		return "list", out
	}
	var data struct {
		ResultType string            `json:"resultType"`
		Result     []json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(env.Data, &data); err != nil {
		t.Fatalf("%s %v: decode %s: %v", path, params, b, err)
	}
	type keyed struct{ key, raw string }
	var rs []keyed
	for _, r := range data.Result {
		var m struct {
			Metric map[string]string `json:"metric"`
		}
		if err := json.Unmarshal(r, &m); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, keyed{labels.FromMap(m.Metric).String(), string(r)})
	}
	slices.SortFunc(rs, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.raw
	}
	return data.ResultType, out
}

// TestHistogramQueryAPI mounts pyramid's query API on the test server (as cmd/pyramid
// does), writes the histogram fixture through remote write, and asks for the histograms,
// their counts, rates, quantiles and resets at every instant of the fixture (and between,
// after and long after) and over a range, and for the series and labels: every answer
// must be the one Prometheus 3's engine gives over a Prometheus TSDB holding the same
// histograms.
func TestHistogramQueryAPI(t *testing.T) {
	s := newTestServer(t, nil)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	pyr, err := api.New(apiConfig(), s.srv.Store(), logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	pyr.Register(s.srv.Router())

	e := histogramEpoch()
	fixture := histogramFixture(e)
	if resp, msg := s.post(t, v1Body(t, fixture...)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write: %d %s", resp.StatusCode, msg)
	}
	ref, err := api.New(apiConfig(), tsdbReference{histogramTSDB(t, fixture)}, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r := mux.NewRouter()
	ref.Register(r)
	refServer := httptest.NewServer(r)
	t.Cleanup(refServer.Close)

	histograms := 0
	compare := func(path string, params url.Values) {
		t.Helper()
		wantType, want := queryData(t, refServer.URL, path, params)
		gotType, got := queryData(t, s.URL, path, params)
		if gotType != wantType || !slices.Equal(got, want) {
			t.Errorf("%s %v:\npyramid %s %q\nTSDB    %s %q", path, params, gotType, got, wantType, want)
		}
		for _, w := range want {
			histograms += strings.Count(w, `"histogram`)
		}
	}
	// rate and resets read the counter reset hints, which pyramid keeps as written and the
	// TSDB as its chunks encode them.
	exprs := []string{`hist_int`, `hist_float`, `histogram_count(hist_int)`, `histogram_count(hist_float)`,
		`rate(hist_int[1m])`, `rate(hist_float[1m])`, `histogram_quantile(0.7, hist_int)`, `resets(hist_int[2m])`, `resets(hist_float[2m])`}
	for _, at := range []int64{-15_000, 0, 7_500, 15_000, 30_000, 45_000, 60_000, 90_000, 6 * 60_000} {
		for _, q := range exprs {
			compare("/api/v1/query", url.Values{"query": {q}, "time": {fmt.Sprintf("%.3f", float64(e+at)/1000)}})
		}
	}
	for _, q := range exprs {
		compare("/api/v1/query_range", url.Values{"query": {q}, "start": {fmt.Sprint(e/1000 - 30)}, "end": {fmt.Sprint(e/1000 + 120)}, "step": {"15"}})
	}
	// Histogram series are in the catalogue: the series and label APIs find them.
	window := url.Values{"start": {fmt.Sprint(e/1000 - 30)}, "end": {fmt.Sprint(e/1000 + 120)}}
	for _, tc := range []struct {
		path  string
		match string
		n     int
	}{
		{"/api/v1/series", `{__name__=~"hist_.*"}`, 20},
		{"/api/v1/series", `hist_int`, 10},
		{"/api/v1/label/case/values", `hist_float`, 10},
		{"/api/v1/label/__name__/values", `{case="stale"}`, 2},
		{"/api/v1/labels", `hist_int`, 2},
	} {
		params := url.Values{"match[]": {tc.match}, "start": window["start"], "end": window["end"]}
		_, want := queryData(t, refServer.URL, tc.path, params)
		_, got := queryData(t, s.URL, tc.path, params)
		if !slices.Equal(got, want) || len(want) != tc.n {
			t.Errorf("%s %v:\npyramid %q\nTSDB    %q, want %d", tc.path, params, got, want, tc.n)
		}
	}
	// Equal answers prove nothing if no histogram was in them.
	if histograms < 50 {
		t.Errorf("the reference answered %d histograms in all, want at least 50", histograms)
	}
}

// relabelled is ss with the label name=value added to every series.
func relabelled(ss []hseries, name, value string) []hseries {
	out := make([]hseries, len(ss))
	for i, s := range ss {
		out[i] = hseries{labels.NewBuilder(s.lset).Set(name, value).Labels(), s.samples}
	}
	return out
}

// TestConformanceHistograms writes the histogram fixture to both engines through remote
// write 1.0 (twice, a retry) and 2.0, and reads it back in both response types: the
// answers must be the same bytes, and hold every histogram.
func TestConformanceHistograms(t *testing.T) {
	p := newEnginePair(t, nil)
	e := histogramEpoch()
	v1 := relabelled(histogramFixture(e), "proto", "1.0")
	v2 := relabelled(histogramFixture(e), "proto", "2.0")
	for attempt := range 2 {
		if code, msg, _ := p.post(t, fmt.Sprintf("1.0 write, attempt %d", attempt), "/api/v1/write", v1Body(t, v1...)); code != http.StatusNoContent {
			t.Fatalf("1.0 write: %d %s", code, msg)
		}
	}
	if code, msg, _ := p.post(t, "2.0 write", "/api/v1/write", v2HistogramBody(t, v2...),
		"Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request", "X-Prometheus-Remote-Write-Version", "2.0.0"); code != http.StatusNoContent {
		t.Fatalf("2.0 write: %d %s", code, msg)
	}
	matcherSets := [][]string{
		{`__name__=~"hist_.*"`},
		{`__name__="hist_int"`, `case="stale"`},
		{`__name__="hist_float"`, `case=~"schema_.*|custom"`},
		{`case="resets"`},
	}
	for name, types := range responseTypes {
		for _, ms := range matcherSets {
			what := fmt.Sprintf("read {%s}, %s", strings.Join(ms, ", "), name)
			code, b, _ := p.post(t, what, "/api/v1/read", readBody(t, e-60_000, e+600_000, nil, types, ms))
			if code != http.StatusOK {
				t.Errorf("%s: status %d: %s", what, code, b)
			}
		}
	}
	want := countHistograms(v1) + countHistograms(v2)
	if n := p.sameRows(t, "SELECT * FROM DB.histograms FINAL ORDER BY target, fingerprint, ts"); n != want {
		t.Errorf("%d histogram rows, want %d", n, want)
	}
	_, b, _ := p.post(t, "read of every histogram", "/api/v1/read", readBody(t, e-60_000, e+600_000, nil, responseTypes["SAMPLES"], []string{`__name__=~"hist_.*"`}))
	raw, err := snappy.Decode(nil, []byte(b))
	if err != nil {
		t.Fatal(err)
	}
	var rr prompb.ReadResponse
	if err := rr.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, ts := range rr.Results[0].Timeseries {
		got += len(ts.Histograms)
	}
	if got != want {
		t.Errorf("the read of every histogram returned %d, want %d", got, want)
	}
}
