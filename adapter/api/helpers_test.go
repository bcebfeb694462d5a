package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// testConfig is what cmd/pyramid sets by default.
func testConfig() Config {
	return Config{
		LookbackDelta:             5 * time.Minute,
		MaxSamples:                50_000_000,
		Timeout:                   2 * time.Minute,
		MaxConcurrent:             4,
		DefaultEvaluationInterval: time.Minute,
		MaxPoints:                 DefaultMaxPoints,
		RetryAfter:                5 * time.Second,
	}
}

// sample is one stored sample of a test series.
type sample struct {
	ts int64
	v  float64
}

// openTSDB opens a real Prometheus TSDB in a temporary directory holding data.
func openTSDB(t *testing.T, data map[string][]sample) *tsdb.DB {
	t.Helper()
	opts := tsdb.DefaultOptions()
	opts.RetentionDuration = 0
	// Tests write samples far in the past; the head takes them only out of order.
	opts.OutOfOrderTimeWindow = 1 << 62
	db, err := tsdb.Open(t.TempDir(), nil, nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	// Series are appended in name order, so that the head's order of series (by reference)
	// is label order, as it is in a compacted block.
	app := db.Appender(context.Background())
	for _, series := range slices.Sorted(maps.Keys(data)) {
		samples := data[series]
		lset, err := parserFor().ParseMetric(series)
		if err != nil {
			t.Fatalf("parse %s: %v", series, err)
		}
		var ref storage.SeriesRef
		for _, s := range samples {
			if ref, err = app.Append(ref, lset, s.ts, s.v); err != nil {
				t.Fatalf("append %s: %v", series, err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	return db
}

// testServer serves the API over q on a real socket.
type testServer struct {
	*httptest.Server
	api  *API
	reg  *prometheus.Registry
	logs *syncBuffer
}

func newTestServer(t *testing.T, cfg Config, q storage.Queryable) *testServer {
	t.Helper()
	return newServerOn(t, cfg, tsdbStorage{q})
}

// newServerOn serves the API over st on a real socket.
func newServerOn(t *testing.T, cfg Config, st Storage) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	a, err := New(cfg, st, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), reg)
	if err != nil {
		t.Fatal(err)
	}
	r := mux.NewRouter()
	a.Register(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return &testServer{Server: srv, api: a, reg: reg, logs: logs}
}

// response is a raw answer.
type response struct {
	code   int
	header http.Header
	body   string
}

// get asks path with params in the URL.
func (s *testServer) get(t *testing.T, path string, params url.Values) response {
	t.Helper()
	u := s.URL + path
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	return readResponse(t, resp)
}

// post asks path with params as a form body.
func (s *testServer) post(t *testing.T, path string, params url.Values) response {
	t.Helper()
	resp, err := http.Post(s.URL+path, "application/x-www-form-urlencoded", strings.NewReader(params.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	return readResponse(t, resp)
}

func readResponse(t *testing.T, resp *http.Response) response {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

// envelope is Prometheus's response, decoded.
type envelope struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
	Infos     []string        `json:"infos"`
}

func (r response) decode(t *testing.T) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return e
}

// syncBuffer lets the handlers' goroutines log into one buffer the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func parserFor() parser.Parser { return parser.NewParser(parser.Options{}) }

// tsdbStorage serves the API from a Prometheus TSDB, the reference these tests compare
// with. The store's per-request terms (lookback, budget, tier log, estimate) mean nothing
// to it, so the query guard never refuses and no tier is reported; those are tested over
// the store itself. It holds no metadata.
type tsdbStorage struct{ q storage.Queryable }

func (s tsdbStorage) Queryable(store.Options) storage.Queryable { return s.q }

func (s tsdbStorage) Metadata(context.Context, string, int) ([]store.Metadata, error) {
	return nil, nil
}
