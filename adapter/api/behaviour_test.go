package api

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// gatedQueryable is a real TSDB whose Select waits until its context ends, as a slow
// ClickHouse query would, and reports what ended it. With release set it waits for that
// instead, as a storage that ignores cancellation would.
type gatedQueryable struct {
	storage.Queryable
	entered chan struct{}
	ended   chan error
	release chan struct{}
}

func newGated(q storage.Queryable) *gatedQueryable {
	return &gatedQueryable{Queryable: q, entered: make(chan struct{}, 16), ended: make(chan error, 16)}
}

func (g *gatedQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := g.Queryable.Querier(mint, maxt)
	return &gatedQuerier{Querier: q, g: g}, err
}

type gatedQuerier struct {
	storage.Querier
	g *gatedQueryable
}

func (q *gatedQuerier) Select(ctx context.Context, _ bool, _ *storage.SelectHints, _ ...*labels.Matcher) storage.SeriesSet {
	q.g.entered <- struct{}{}
	if q.g.release != nil {
		<-q.g.release
	} else {
		<-ctx.Done()
	}
	q.g.ended <- ctx.Err()
	return storage.ErrSeriesSet(fmt.Errorf("select series: %w", ctx.Err()))
}

// failingQueryable is a real TSDB whose reads fail with err, as the store's do when
// ClickHouse is down or a query is refused.
type failingQueryable struct {
	storage.Queryable
	err error
}

func (f *failingQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	q, err := f.Queryable.Querier(mint, maxt)
	return &failingQuerier{Querier: q, err: f.err}, err
}

type failingQuerier struct {
	storage.Querier
	err error
}

func (q *failingQuerier) Select(context.Context, bool, *storage.SelectHints, ...*labels.Matcher) storage.SeriesSet {
	return storage.ErrSeriesSet(fmt.Errorf("select series: %w", q.err))
}

func (q *failingQuerier) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, fmt.Errorf("label names: %w", q.err)
}

func (q *failingQuerier) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, fmt.Errorf("label values: %w", q.err)
}

// waitFor waits for cond, which the handler makes true after its response is sent.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 600 {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("never: %s", what)
}

func TestSeriesAndLabels(t *testing.T) {
	srv := newTestServer(t, testConfig(), openTSDB(t, valueData()))
	bothMethods(t, srv, func(t *testing.T, ask ask) {
		for _, tc := range []struct {
			name, path string
			params     url.Values
			want       string
			warning    bool
		}{
			{"series", "/api/v1/series", url.Values{"match[]": {"g"}}, `[{"__name__":"g","job":"a"},{"__name__":"g","job":"b"}]`, false},
			{"series in range", "/api/v1/series", url.Values{"match[]": {"g"}, "start": {"5000"}, "end": {"6000"}}, `[{"__name__":"g","job":"b"}]`, false},
			{"series RFC 3339 range", "/api/v1/series", url.Values{"match[]": {"g"}, "start": {"1970-01-01T00:00:00Z"}, "end": {"1970-01-01T00:10:00Z"}}, `[{"__name__":"g","job":"a"}]`, false},
			{"series limit", "/api/v1/series", url.Values{"match[]": {"g"}, "limit": {"1"}}, `[{"__name__":"g","job":"a"}]`, true},
			{"series at limit", "/api/v1/series", url.Values{"match[]": {"g"}, "limit": {"2"}}, `[{"__name__":"g","job":"a"},{"__name__":"g","job":"b"}]`, false},
			{"series union", "/api/v1/series", url.Values{"match[]": {`g{job="a"}`, `{job="a"}`}}, `[{"__name__":"g","job":"a"},{"__name__":"h","job":"a"}]`, false},
			{"series none", "/api/v1/series", url.Values{"match[]": {"nothing"}}, `[]`, false},
			{"labels", "/api/v1/labels", nil, `["__name__","job","k"]`, false},
			{"labels match", "/api/v1/labels", url.Values{"match[]": {"f"}}, `["__name__","k"]`, false},
			{"labels union", "/api/v1/labels", url.Values{"match[]": {"f", "g"}}, `["__name__","job","k"]`, false},
			{"labels limit", "/api/v1/labels", url.Values{"limit": {"2"}}, `["__name__","job"]`, true},
			{"labels none", "/api/v1/labels", url.Values{"match[]": {"nothing"}}, `[]`, false},
		} {
			got := ask(t, tc.path, tc.params)
			e := got.decode(t)
			if got.code != 200 || string(e.Data) != tc.want {
				t.Errorf("%s: %d %s, want data %s", tc.name, got.code, got.body, tc.want)
			}
			if wantW := map[bool]int{true: 1}[tc.warning]; len(e.Warnings) != wantW || wantW == 1 && e.Warnings[0] != "results truncated due to limit" {
				t.Errorf("%s: warnings %q", tc.name, e.Warnings)
			}
		}
	})
	for _, tc := range []struct {
		name   string
		path   string
		params url.Values
		want   string
	}{
		{"job", "/api/v1/label/job/values", nil, `["a","b","html"]`},
		{"job of g", "/api/v1/label/job/values", url.Values{"match[]": {"g"}}, `["a","b"]`},
		{"job union", "/api/v1/label/job/values", url.Values{"match[]": {`g{job="b"}`, "h"}}, `["a","b","html"]`},
		{"names", "/api/v1/label/__name__/values", nil, `["f","g","h"]`},
		{"escaped name", "/api/v1/label/U__job/values", url.Values{"match[]": {"g"}}, `["a","b"]`},
		{"limit", "/api/v1/label/__name__/values", url.Values{"limit": {"1"}}, `["f"]`},
		{"unknown label", "/api/v1/label/nope/values", nil, `[]`},
	} {
		got := srv.get(t, tc.path, tc.params)
		if e := got.decode(t); got.code != 200 || string(e.Data) != tc.want {
			t.Errorf("%s: %d %s, want data %s", tc.name, got.code, got.body, tc.want)
		}
	}
}

func TestQueryOptions(t *testing.T) {
	srv := newTestServer(t, testConfig(), openTSDB(t, valueData()))
	bothMethods(t, srv, func(t *testing.T, ask ask) {
		// stats=all adds the engine's statistics, as Prometheus does.
		got := ask(t, "/api/v1/query_range", url.Values{"query": {"g"}, "start": {"0"}, "end": {"200"}, "step": {"10"}, "stats": {"all"}})
		var d struct {
			Stats struct {
				Timings map[string]float64 `json:"timings"`
				Samples map[string]any     `json:"samples"`
			} `json:"stats"`
		}
		if err := json.Unmarshal(got.decode(t).Data, &d); err != nil || got.code != 200 {
			t.Fatalf("stats: %d %s: %v", got.code, got.body, err)
		}
		if _, ok := d.Stats.Timings["evalTotalTime"]; !ok {
			t.Errorf("stats without evalTotalTime: %s", got.body)
		}
		// One sample, read at each of the 11 steps from 100 s on.
		if n, _ := d.Stats.Samples["totalQueryableSamples"].(float64); n != 11 {
			t.Errorf("totalQueryableSamples = %v, want 11: %s", d.Stats.Samples["totalQueryableSamples"], got.body)
		}
		if got := ask(t, "/api/v1/query", url.Values{"query": {"g"}, "time": {"100"}}); strings.Contains(got.body, "stats") {
			t.Errorf("stats without asking: %s", got.body)
		}
		// lookback_delta shortens how far back an instant selector looks: g{job="a"} is
		// 60 s old at 160 s.
		if got := ask(t, "/api/v1/query", url.Values{"query": {"g"}, "time": {"160"}, "lookback_delta": {"30s"}}); string(got.decode(t).Data) != `{"resultType":"vector","result":[]}` {
			t.Errorf("lookback_delta 30s: %s", got.body)
		}
		if got := ask(t, "/api/v1/query", url.Values{"query": {"g"}, "time": {"160"}}); !strings.Contains(got.body, `"job":"a"`) {
			t.Errorf("default lookback: %s", got.body)
		}
		// limit cuts vectors and matrices with Prometheus's warning.
		got = ask(t, "/api/v1/query", url.Values{"query": {"f"}, "time": {"10"}, "limit": {"2"}})
		if e := got.decode(t); strings.Count(string(e.Data), `"metric"`) != 2 || len(e.Warnings) != 1 || e.Warnings[0] != "results truncated due to limit" {
			t.Errorf("limit: %s", got.body)
		}
		// Subqueries without a step use the default evaluation interval (1m): 10 points in
		// 10 minutes.
		got = ask(t, "/api/v1/query", url.Values{"query": {"count_over_time(vector(1)[10m:])"}, "time": {"600"}})
		if !strings.Contains(got.body, `"value":[600,"10"]`) {
			t.Errorf("subquery without step: %s", got.body)
		}
		// @ and negative offsets are on, as in Prometheus.
		got = ask(t, "/api/v1/query", url.Values{"query": {"g @ 100 + g offset -1m"}, "time": {"40"}})
		if got.code != 200 || !strings.Contains(got.body, `"value":[40,"2"]`) {
			t.Errorf("@ and negative offset: %s", got.body)
		}
	})
}

// TestTimeout: a per-request timeout too short for any query, and Config.Timeout bounding a
// longer one, both end in Prometheus's timeout error, and the storage's query is cancelled.
func TestTimeout(t *testing.T) {
	db := openTSDB(t, valueData())
	srv := newTestServer(t, testConfig(), db)
	got := srv.get(t, "/api/v1/query", url.Values{"query": {"f"}, "time": {"10"}, "timeout": {"0.000000001"}})
	if e := got.decode(t); got.code != http.StatusServiceUnavailable || e.ErrorType != "timeout" {
		t.Errorf("1ns timeout: %d %s", got.code, got.body)
	}

	gated := newGated(db)
	cfg := testConfig()
	cfg.Timeout = time.Second
	srv = newTestServer(t, cfg, gated)
	got = srv.get(t, "/api/v1/query", url.Values{"query": {"f"}, "time": {"10"}, "timeout": {"1h"}})
	if e := got.decode(t); got.code != http.StatusServiceUnavailable || e.ErrorType != "timeout" {
		t.Errorf("config timeout: %d %s", got.code, got.body)
	}
	if err := <-gated.ended; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("storage query ended by %v, want the deadline", err)
	}
}

// TestCancel: a client that goes away stops its query and the storage's, which is
// answered (to nobody) and counted as Prometheus's 499.
func TestCancel(t *testing.T) {
	gated := newGated(openTSDB(t, valueData()))
	srv := newTestServer(t, testConfig(), gated)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/query?query=f&time=10", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	<-gated.entered
	cancel()
	if err := <-gated.ended; !errors.Is(err, context.Canceled) {
		t.Errorf("storage query ended by %v, want cancel", err)
	}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("client got %v", err)
	}
	waitFor(t, "request counted as 499", func() bool {
		return testutil.ToFloat64(srv.api.requests.WithLabelValues("query", "499")) == 1
	})
}

// TestConcurrencyLimit: with every slot taken, a query waits for one only as long as its
// timeout allows, and gets the next free one.
func TestConcurrencyLimit(t *testing.T) {
	gated := newGated(openTSDB(t, valueData()))
	cfg := testConfig()
	cfg.MaxConcurrent = 1
	srv := newTestServer(t, cfg, gated)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/v1/query?query=f&time=10", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-gated.entered
	got := srv.get(t, "/api/v1/query", url.Values{"query": {"1"}, "timeout": {"0.2"}})
	if e := got.decode(t); got.code != http.StatusServiceUnavailable || e.ErrorType != "timeout" || !strings.Contains(e.Error, "query slots") {
		t.Errorf("query past the slots: %d %s", got.code, got.body)
	}
	cancel()
	<-done
	<-gated.ended
	if got := srv.get(t, "/api/v1/query", url.Values{"query": {"1"}}); got.code != 200 {
		t.Errorf("query after the slot freed: %d %s", got.code, got.body)
	}

	// A longer timeout than Config.Timeout does not let a query wait longer for a slot.
	gated.release = make(chan struct{})
	cfg.Timeout = time.Second
	srv = newTestServer(t, cfg, gated)
	done = make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.Get(srv.URL + "/api/v1/query?query=f&time=10"); err == nil {
			resp.Body.Close()
		}
	}()
	<-gated.entered
	got = srv.get(t, "/api/v1/query", url.Values{"query": {"1"}, "timeout": {"1h"}})
	if e := got.decode(t); got.code != http.StatusServiceUnavailable || e.ErrorType != "timeout" || !strings.Contains(e.Error, "query slots") {
		t.Errorf("query past the slots with a long timeout: %d %s", got.code, got.body)
	}
	close(gated.release)
	<-done
}

// TestStorageErrors: the store's sentinel errors reach the client as Prometheus's error
// types, through the engine and the series and label endpoints alike.
func TestStorageErrors(t *testing.T) {
	db := openTSDB(t, valueData())
	for _, tc := range []struct {
		name      string
		err       error
		code      int
		errorType string
	}{
		{"unavailable", fmt.Errorf("connect to ClickHouse: %w", store.ErrUnavailable), http.StatusServiceUnavailable, "unavailable"},
		{"refused", &RefusedError{Reason: "estimated 9000000 samples, limit 1000: use a larger step"}, http.StatusUnprocessableEntity, "execution"},
	} {
		srv := newTestServer(t, testConfig(), &failingQueryable{Queryable: db, err: tc.err})
		for _, req := range []struct {
			path   string
			params url.Values
		}{
			{"/api/v1/query", url.Values{"query": {"f"}, "time": {"10"}}},
			{"/api/v1/query_range", url.Values{"query": {"rate(f[5m])"}, "start": {"0"}, "end": {"100"}, "step": {"10"}}},
			{"/api/v1/series", url.Values{"match[]": {"f"}}},
			{"/api/v1/labels", url.Values{"match[]": {"f"}}},
			{"/api/v1/label/k/values", nil},
		} {
			got := srv.get(t, req.path, req.params)
			e := got.decode(t)
			if got.code != tc.code || e.ErrorType != tc.errorType || !strings.Contains(e.Error, tc.err.Error()) {
				t.Errorf("%s %s: %d %s", tc.name, req.path, got.code, got.body)
			}
			if retry := got.header.Get("Retry-After"); (tc.errorType == "unavailable") != (retry == "5") {
				t.Errorf("%s %s: Retry-After %q", tc.name, req.path, retry)
			}
		}
	}
}

func TestMiscEndpoints(t *testing.T) {
	cfg := testConfig()
	cfg.Build = BuildInfo{Version: "v1.4.0-rc.1", Revision: "abc123", Branch: "main", BuildUser: "ci", BuildDate: "20261202"}
	srv := newTestServer(t, cfg, openTSDB(t, valueData()))

	got := srv.get(t, "/api/v1/status/buildinfo", nil)
	var b map[string]string
	if err := json.Unmarshal(got.decode(t).Data, &b); err != nil {
		t.Fatal(err)
	}
	if b["version"] != "3.11.0+pyramid.1.4.0-rc.1" || b["revision"] != "abc123" || b["branch"] != "main" ||
		b["buildUser"] != "ci" || b["buildDate"] != "20261202" || !strings.HasPrefix(b["goVersion"], "go") {
		t.Errorf("buildinfo: %s", got.body)
	}
	for in, want := range map[string]string{"1.4.0": "1.4.0", "dev build/x": "dev-build-x", "1..2": "1.-.2", "v0.1.0+dirty": "0.1.0-dirty"} {
		if got := semverBuildMetadata(in); got != want {
			t.Errorf("semverBuildMetadata(%q) = %q, want %q", in, got, want)
		}
	}

	bothMethods(t, srv, func(t *testing.T, ask ask) {
		for _, tc := range []struct {
			name, path string
			params     url.Values
			code       int
			want       string
		}{
			{"format", "/api/v1/format_query", url.Values{"query": {"sum(rate(x[5m]))by(job)"}}, 200, `{"status":"success","data":"sum by (job) (rate(x[5m]))"}`},
			{"parse", "/api/v1/parse_query", url.Values{"query": {"up"}}, 200,
				`{"status":"success","data":{"anchored":false,"matchers":[{"name":"__name__","type":"=","value":"up"}],"name":"up","offset":0,"smoothed":false,"startOrEnd":null,"timestamp":null,"type":"vectorSelector"}}`},
			{"exemplars", "/api/v1/query_exemplars", url.Values{"query": {"f"}, "start": {"0"}, "end": {"100"}}, 200, `{"status":"success","data":[]}`},
			// Prometheus answers an exemplar query without selectors with no content.
			{"exemplars without selectors", "/api/v1/query_exemplars", url.Values{"query": {"1"}}, 204, ``},
		} {
			got := ask(t, tc.path, tc.params)
			if got.code != tc.code || got.body != tc.want {
				t.Errorf("%s: %d %s, want %d %s", tc.name, got.code, got.body, tc.code, tc.want)
			}
		}
	})
}

// TestEngineVersion keeps EngineVersion the release of the Prometheus module in go.mod.
func TestEngineVersion(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(mod)) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "github.com/prometheus/prometheus" {
			continue
		}
		// v0.311.0 is Prometheus 3.11.0: the minor version is major*100 + minor.
		var minor, patch int
		if _, err := fmt.Sscanf(f[1], "v0.%d.%d", &minor, &patch); err != nil {
			t.Fatalf("module version %s: %v", f[1], err)
		}
		if want := fmt.Sprintf("%d.%d.%d", minor/100, minor%100, patch); EngineVersion != want {
			t.Errorf("EngineVersion %s, module %s is %s", EngineVersion, f[1], want)
		}
		return
	}
	t.Fatal("prometheus module not in go.mod")
}

func TestMetricsAndSlowLog(t *testing.T) {
	cfg := testConfig()
	cfg.SlowQueryThreshold = time.Nanosecond
	srv := newTestServer(t, cfg, openTSDB(t, valueData()))
	srv.get(t, "/api/v1/query", url.Values{"query": {`sum(g{job="a"})`}, "time": {"100"}})
	srv.get(t, "/api/v1/query_range", url.Values{"query": {"g"}, "start": {"0"}, "end": {"100"}, "step": {"10"}})
	srv.get(t, "/api/v1/query", url.Values{"query": {"sum("}})
	for _, c := range []struct {
		endpoint, code string
		want           float64
	}{{"query", "200", 1}, {"query", "400", 1}, {"query_range", "200", 1}} {
		if got := testutil.ToFloat64(srv.api.requests.WithLabelValues(c.endpoint, c.code)); got != c.want {
			t.Errorf("requests %s %s = %v, want %v", c.endpoint, c.code, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(srv.api.duration); n != 2 {
		t.Errorf("duration series = %d, want 2 (query, query_range)", n)
	}
	families, err := srv.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var engine bool
	for _, f := range families {
		engine = engine || f.GetName() == "pyramid_prometheus_engine_queries"
	}
	if !engine {
		t.Error("engine metrics not registered as pyramid_prometheus_engine_*")
	}
	logs := srv.logs.String()
	for _, want := range []string{`msg="slow query" endpoint=query query="sum(g{job=\"a\"})"`, `msg="slow query" endpoint=query_range query=g`, "step=10s"} {
		if !strings.Contains(logs, want) {
			t.Errorf("slow query log lacks %s:\n%s", want, logs)
		}
	}
}

// TestCompression: responses are compressed for clients that accept it, as Prometheus's.
func TestCompression(t *testing.T) {
	srv := newTestServer(t, testConfig(), openTSDB(t, valueData()))
	plain := srv.get(t, "/api/v1/query", url.Values{"query": {"f"}, "time": {"10"}})
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/query?query=f&time=10", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "gzip")
	// A transport that leaves the body compressed, unlike Go's default.
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != plain.body || plain.code != 200 {
		t.Errorf("gzip body %s, plain %d %s", body, plain.code, plain.body)
	}
}
