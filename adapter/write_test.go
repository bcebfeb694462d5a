package adapter_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

const staleBits = 0x7ff0000000000002

// serverConfig is a test server's configuration: the adapter's, and its store's.
type serverConfig struct {
	adapter.Config
	Database                      string
	ReadRollups                   bool
	ReadLookback, ReadTierRefresh time.Duration
	Now                           func() time.Time
}

func testConfig(db string) serverConfig {
	return serverConfig{Database: db, ReadLookback: 5 * time.Minute, ReadTierRefresh: time.Minute, Config: adapter.Config{
		MaxRequestBytes: 1 << 20, MaxDecodedBytes: 4 << 20,
		BatchRows: 10_000, BatchWait: 20 * time.Millisecond, InsertWorkers: 2, MaxConcurrentDecodes: 4,
		MemoryBudget: 256 << 20, BodyTimeout: 10 * time.Second,
		MaxRowsInFlight: 100_000, InsertTimeout: 10 * time.Second, RetryAfter: 2 * time.Second,
		SeriesCacheSize: 1000, MaxFuture: 10 * time.Minute,
		ReadMaxSeries: 10_000, ReadMaxSamples: 1_000_000, ReadMaxConcurrent: 4, ReadQueueWait: time.Second,
		ReadMaxFrameBytes: 50e6,
	}}
}

type testServer struct {
	*httptest.Server
	srv  *adapter.Server
	conn driver.Conn
	db   string
	reg  *prometheus.Registry
}

// newTestServer runs the write path against a fresh database on the real test ClickHouse.
func newTestServer(t *testing.T, tweak func(*serverConfig)) *testServer {
	t.Helper()
	conn := schematest.Conn(t)
	scfg := schematest.Database(t, conn, 0)
	cfg := testConfig(scfg.Database)
	if tweak != nil {
		tweak(&cfg)
	}
	return startServer(t, conn, cfg, true)
}

func startServer(t *testing.T, conn driver.Conn, cfg serverConfig, ready bool) *testServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.New(store.Config{Database: cfg.Database, Tiers: cfg.Tiers, Rollups: cfg.ReadRollups,
		Lookback: cfg.ReadLookback, TierRefresh: cfg.ReadTierRefresh, Now: cfg.Now}, conn, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adapter.New(cfg.Config, st, logger, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	if ready {
		srv.SchemaReady()
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Close(ctx); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return &testServer{Server: hs, srv: srv, conn: conn, db: cfg.Database, reg: reg}
}

func body(t testing.TB, req *prompb.WriteRequest) []byte {
	t.Helper()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

// post sends a remote-write request with Prometheus's headers, overridden by kv pairs.
func (s *testServer) post(t testing.TB, b []byte, kv ...string) (*http.Response, string) {
	t.Helper()
	return s.postTo(t, "/api/v1/write", b, kv...)
}

// postTo sends b to path with Prometheus's remote-write headers, overridden by kv pairs;
// remote read sends the same Content-Type and Content-Encoding.
func (s *testServer) postTo(t testing.TB, path string, b []byte, kv ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	return resp, string(msg)
}

type storedSample struct {
	labels string
	ts     int64
	bits   uint64
}

// stored reads every sample back, deduplicated, with its series' labels.
func (s *testServer) stored(t testing.TB) []storedSample {
	t.Helper()
	q := fmt.Sprintf(`SELECT l.names, l.values, s.ts, s.value
FROM (SELECT fingerprint, ts, value FROM %[1]s.samples FINAL) AS s
ANY INNER JOIN (SELECT fingerprint, any(label_names) AS names, any(label_values) AS values FROM %[1]s.series GROUP BY fingerprint) AS l
USING fingerprint
ORDER BY s.ts`, s.db)
	rows, err := s.conn.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []storedSample
	for rows.Next() {
		var names, values []string
		var ts int64
		var v float64
		if err := rows.Scan(&names, &values, &ts, &v); err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		for i := range names {
			fmt.Fprintf(&sb, "%s=%q,", names[i], values[i])
		}
		out = append(out, storedSample{labels: sb.String(), ts: ts, bits: math.Float64bits(v)})
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *testServer) count(t testing.TB, query string) uint64 {
	t.Helper()
	var n uint64
	if err := s.conn.QueryRow(context.Background(), strings.ReplaceAll(query, "DB.", s.db+".")).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func series(name string, kv []string, samples ...prompb.Sample) prompb.TimeSeries {
	ls := []prompb.Label{{Name: "__name__", Value: name}}
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return prompb.TimeSeries{Labels: ls, Samples: samples}
}

// TestWriteStoresExactBits sends the values a store most easily mangles and the label
// values that most easily break a query, and reads them back from ClickHouse.
func TestWriteStoresExactBits(t *testing.T) {
	s := newTestServer(t, nil)
	// Negative zero is not here: protobuf omits a zero double, so -0 arrives as +0 from
	// any remote-write sender, Prometheus included.
	odd := "quote\" backslash\\ newline\n tab\t zürich ✓ '; DROP TABLE x; --"
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series("up", []string{"job", "node"}, prompb.Sample{Timestamp: 1000, Value: 1}),
		series("up", []string{"job", "node"}, prompb.Sample{Timestamp: 2000, Value: math.Float64frombits(staleBits)}),
		series("odd", []string{"v", odd}, prompb.Sample{Timestamp: 1000, Value: math.NaN()}),
		series("odd", []string{"v", odd}, prompb.Sample{Timestamp: 2000, Value: math.Inf(1)}),
		series("odd", []string{"v", odd}, prompb.Sample{Timestamp: 3000, Value: math.Inf(-1)}),
		series("odd", []string{"v", odd}, prompb.Sample{Timestamp: 500, Value: -math.SmallestNonzeroFloat64}),
	}}
	resp, msg := s.post(t, body(t, req))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d: %s", resp.StatusCode, msg)
	}
	got := s.stored(t)
	oddLabels := fmt.Sprintf("__name__=%q,v=%q,", "odd", odd)
	want := []storedSample{
		{oddLabels, 500, math.Float64bits(-math.SmallestNonzeroFloat64)},
		{oddLabels, 1000, math.Float64bits(math.NaN())},
		{`__name__="up",job="node",`, 1000, math.Float64bits(1)},
		{oddLabels, 2000, math.Float64bits(math.Inf(1))},
		{`__name__="up",job="node",`, 2000, staleBits},
		{oddLabels, 3000, math.Float64bits(math.Inf(-1))},
	}
	slices.SortFunc(got, func(a, b storedSample) int { return cmpSample(a, b) })
	slices.SortFunc(want, func(a, b storedSample) int { return cmpSample(a, b) })
	if !slices.Equal(got, want) {
		t.Errorf("stored:\n%v\nwant:\n%v", got, want)
	}
	// The label index finds the odd series by its exact value.
	if n := s.count(t, fmt.Sprintf("SELECT count() FROM DB.series_labels WHERE name = 'v' AND value = '%s'",
		strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`, "\t", `\t`).Replace(odd))); n != 1 {
		t.Errorf("label index rows for the odd value = %d, want 1", n)
	}
}

func cmpSample(a, b storedSample) int {
	if a.ts != b.ts {
		return int(a.ts - b.ts)
	}
	return strings.Compare(a.labels, b.labels)
}

// TestWriteRetryIsIdempotent sends the same batch twice, as Prometheus does after a lost
// response, and checks that every (series, timestamp) is stored once.
func TestWriteRetryIsIdempotent(t *testing.T) {
	s := newTestServer(t, nil)
	var ts []prompb.TimeSeries
	for i := range 50 {
		ts = append(ts, series("m", []string{"i", fmt.Sprint(i % 5)}, prompb.Sample{Timestamp: int64(i/5) * 15000, Value: float64(i)}))
	}
	b := body(t, &prompb.WriteRequest{Timeseries: ts})
	for range 2 {
		if resp, msg := s.post(t, b); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("status %d: %s", resp.StatusCode, msg)
		}
	}
	if n := s.count(t, "SELECT count() FROM DB.samples FINAL"); n != 50 {
		t.Errorf("samples after a retried batch = %d, want 50", n)
	}
	if n := s.count(t, "SELECT uniqExact(fingerprint) FROM DB.series"); n != 5 {
		t.Errorf("series = %d, want 5", n)
	}
}

// TestWriteMarksRollupWork: stored samples mark their target's rollup units, one per
// target and coarsest bucket, so the materializer recomputes exactly those.
func TestWriteMarksRollupWork(t *testing.T) {
	s := newTestServer(t, func(c *serverConfig) { c.RollupUnitWidth = 3_600_000 })
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series("m", []string{"job", "a"}, prompb.Sample{Timestamp: 1000, Value: 1}, prompb.Sample{Timestamp: 3_600_000, Value: 2}),
		series("n", []string{"job", "a"}, prompb.Sample{Timestamp: 2000, Value: 1}),
		series("m", []string{"job", "b"}, prompb.Sample{Timestamp: 7_300_000, Value: 1}),
	}}
	if resp, msg := s.post(t, body(t, req)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d: %s", resp.StatusCode, msg)
	}
	if n := s.count(t, "SELECT count() FROM (SELECT DISTINCT unit, target FROM DB.rollup_dirty WHERE width = 3600000)"); n != 3 {
		t.Errorf("rollup units marked = %d, want 3 (job a in hours 0 and 1, job b in hour 2)", n)
	}
	if n := s.count(t, "SELECT count() FROM DB.rollup_dirty WHERE unit NOT IN (0, 3600000, 7200000)"); n != 0 {
		t.Errorf("%d marks outside the written hours", n)
	}
}

// TestWriteRejectsBadSeriesKeepsGood: the bad series is named in a 400 and dropped, the good
// ones in the same request are stored, so nothing that could be stored is lost.
func TestWriteRejectsBadSeriesKeepsGood(t *testing.T) {
	s := newTestServer(t, nil)
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series("good", nil, prompb.Sample{Timestamp: 1, Value: 1}),
		{Labels: []prompb.Label{{Name: "job", Value: "nameless"}}, Samples: []prompb.Sample{{Timestamp: 1, Value: 2}}},
		series("dup", []string{"a", "1", "a", "2"}, prompb.Sample{Timestamp: 1, Value: 3}),
		series("bad_utf8", []string{"a", "\xff"}, prompb.Sample{Timestamp: 1, Value: 4}),
	}}
	resp, msg := s.post(t, body(t, req))
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400: %s", resp.StatusCode, msg)
	}
	for _, want := range []string{"rejected 3 series", `{job="nameless"} label "__name__"`, `label "a": duplicate label name`, `{__name__="bad_utf8", a="\xff"} label "a": label value is not valid UTF-8`} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	got := s.stored(t)
	if len(got) != 1 || got[0].labels != `__name__="good",` {
		t.Errorf("stored %v, want only the good series", got)
	}
}

func TestWriteMetadataOnly(t *testing.T) {
	s := newTestServer(t, nil)
	req := &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{
		{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "http_requests_total", Help: "Requests.", Unit: ""},
		{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "temp_celsius", Help: "Temperature.", Unit: "celsius"},
	}}
	if resp, msg := s.post(t, body(t, req)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d: %s", resp.StatusCode, msg)
	}
	var typ, help, unit string
	if err := s.conn.QueryRow(context.Background(), "SELECT type, help, unit FROM "+s.db+".metadata FINAL WHERE metric_family_name = ?",
		"temp_celsius").Scan(&typ, &help, &unit); err != nil {
		t.Fatal(err)
	}
	if typ != "gauge" || help != "Temperature." || unit != "celsius" {
		t.Errorf("metadata = %q %q %q", typ, help, unit)
	}
}

// TestWriteStatuses covers each bad-input class end to end: status, message, nothing stored.
func TestWriteStatuses(t *testing.T) {
	s := newTestServer(t, func(c *serverConfig) { c.MaxRequestBytes = 2048; c.MaxDecodedBytes = 4096 })
	valid := body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("x", nil, prompb.Sample{Timestamp: 1, Value: 1})}})
	big := &prompb.WriteRequest{}
	for i := range 200 { // compresses well below 2 KiB but decodes past 4 KiB
		big.Timeseries = append(big.Timeseries, series("compressible_metric_name", []string{"job", "j"}, prompb.Sample{Timestamp: int64(i)}))
	}
	bigBody := body(t, big)
	if len(bigBody) > 2048 {
		t.Fatalf("test body is %d bytes; it must fit the request limit to test the decoded one", len(bigBody))
	}
	for _, tc := range []struct {
		name    string
		method  string
		body    []byte
		headers []string
		code    int
		msg     string
	}{
		{"GET", http.MethodGet, nil, nil, 405, "method not allowed"},
		{"gzip", http.MethodPost, valid, []string{"Content-Encoding", "gzip"}, 415, "Content-Encoding"},
		{"json", http.MethodPost, valid, []string{"Content-Type", "application/json"}, 415, "Content-Type"},
		{"unknown proto", http.MethodPost, valid, []string{"Content-Type", "application/x-protobuf;proto=io.prometheus.write.v3.Request"}, 415, "proto"},
		{"body over limit", http.MethodPost, bytes.Repeat([]byte{1}, 3000), nil, 413, "exceeds the limit of 2048"},
		{"decoded over limit", http.MethodPost, bigBody, nil, 413, "over the limit of 4096"},
		{"not snappy", http.MethodPost, []byte("hello, world"), nil, 400, "snappy"},
		{"not protobuf", http.MethodPost, snappy.Encode(nil, []byte{0x0a, 0xff, 0xff}), nil, 400, "protobuf"},
	} {
		var resp *http.Response
		var msg string
		if tc.method == http.MethodPost {
			resp, msg = s.post(t, tc.body, tc.headers...)
		} else {
			r, err := http.Get(s.URL + "/api/v1/write")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			resp, msg = r, string(b)
		}
		if resp.StatusCode != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %d %q, want %d containing %q", tc.name, resp.StatusCode, msg, tc.code, tc.msg)
		}
	}
	if n := s.count(t, "SELECT count() FROM DB.samples"); n != 0 {
		t.Errorf("%d samples stored from rejected requests", n)
	}
}

// TestWriteClickHouseDown: with no ClickHouse behind it, a write gets 503 and Retry-After,
// which Prometheus retries, never a 2xx.
func TestWriteClickHouseDown(t *testing.T) {
	ln := httptest.NewServer(http.NotFoundHandler()) // a port that speaks HTTP, not ClickHouse
	addr := strings.TrimPrefix(ln.URL, "http://")
	ln.Close() // and now nothing listens there
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := startServer(t, conn, testConfig("pyramid"), true)
	resp, msg := s.post(t, body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("x", nil, prompb.Sample{Timestamp: 1, Value: 1})}}))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("status %d Retry-After %q (%s), want 503 and 2", resp.StatusCode, resp.Header.Get("Retry-After"), msg)
	}
	if code := getStatus(t, s.URL+"/-/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("ready with ClickHouse down: %d, want 503", code)
	}
}

// TestWriteBeforeSchema: until migrations have run, writes get 503 and readiness fails.
func TestWriteBeforeSchema(t *testing.T) {
	conn := schematest.Conn(t)
	scfg := schematest.Database(t, conn, 0)
	s := startServer(t, conn, testConfig(scfg.Database), false)
	valid := body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("x", nil, prompb.Sample{Timestamp: 1, Value: 1})}})
	if resp, _ := s.post(t, valid); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("write before schema: %d, want 503", resp.StatusCode)
	}
	if code := getStatus(t, s.URL+"/-/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("ready before schema: %d, want 503", code)
	}
	s.srv.SchemaReady()
	if resp, msg := s.post(t, valid); resp.StatusCode != http.StatusNoContent {
		t.Errorf("write after schema: %d %s", resp.StatusCode, msg)
	}
	if code := getStatus(t, s.URL+"/-/ready"); code != http.StatusOK {
		t.Errorf("ready after schema: %d, want 200", code)
	}
	if code := getStatus(t, s.URL+"/-/healthy"); code != http.StatusOK {
		t.Errorf("healthy: %d, want 200", code)
	}
}

// TestGroupCommit: concurrent requests are all stored and answered through real HTTP and
// ClickHouse, with BatchRows exactly their total and BatchWait a minute: each insert is
// either the full batch or an early one that went when no other request was on its way
// (the batcher's own test pins down which requests share an insert).
func TestGroupCommit(t *testing.T) {
	const requests, perRequest = 8, 250
	s := newTestServer(t, func(c *serverConfig) { c.BatchRows = requests * perRequest; c.BatchWait = time.Minute })
	var wg sync.WaitGroup
	codes := make([]int, requests)
	for r := range requests {
		var ts []prompb.TimeSeries
		for i := range perRequest {
			ts = append(ts, series("g", []string{"r", fmt.Sprint(r)}, prompb.Sample{Timestamp: int64(i), Value: float64(i)}))
		}
		b := body(t, &prompb.WriteRequest{Timeseries: ts})
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := s.post(t, b)
			codes[r] = resp.StatusCode
		}()
	}
	wg.Wait()
	for r, c := range codes {
		if c != http.StatusNoContent {
			t.Errorf("request %d: status %d", r, c)
		}
	}
	// With BatchWait a minute, the requests end only through a full batch or an early one
	// (TestBatcherShipsEarlyWhenNobodyComes); either way they share inserts or each went
	// when nobody else was on the way.
	if inserts := histogramCount(t, s.reg, "pyramid_write_batch_samples"); inserts < 1 || inserts > requests {
		t.Errorf("%d inserts for %d concurrent requests, want 1 to %d", inserts, requests, requests)
	}
	if n := s.count(t, "SELECT count() FROM DB.samples"); n != requests*perRequest {
		t.Errorf("stored %d samples, want %d", n, requests*perRequest)
	}
}

// TestOverloadAndShutdown: past the in-flight cap a write gets 503 straight away, and one
// larger than the cap 413; on shutdown the rows already accepted are inserted and their
// request gets its 204.
func TestOverloadAndShutdown(t *testing.T) {
	s := newTestServer(t, func(c *serverConfig) { c.BatchRows = 1000; c.MaxRowsInFlight = 1000; c.BatchWait = time.Minute })
	mk := func(name string) []byte {
		var ts []prompb.TimeSeries
		for i := range 600 { // 600 samples + 1 series row
			ts = append(ts, series(name, nil, prompb.Sample{Timestamp: int64(i), Value: 1}))
		}
		return body(t, &prompb.WriteRequest{Timeseries: ts})
	}
	first := make(chan int)
	go func() {
		resp, _ := s.post(t, mk("first"))
		first <- resp.StatusCode
	}()
	// Wait until the first request's rows are in flight, then overflow the cap.
	deadline := time.Now().Add(30 * time.Second)
	for gaugeValue(t, s.reg, "pyramid_write_rows_in_flight") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("first request never got in flight")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, msg := s.post(t, mk("second"))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(msg, "in flight") {
		t.Errorf("over the cap: %d %q Retry-After %q, want 503 with Retry-After", resp.StatusCode, msg, resp.Header.Get("Retry-After"))
	}
	// A request that alone passes the cap could never be taken, and a 503 would have the
	// sender retry it forever.
	var huge []prompb.TimeSeries
	for i := range 1000 { // 1,000 samples + 1 series row
		huge = append(huge, series("huge", nil, prompb.Sample{Timestamp: int64(i), Value: 1}))
	}
	if resp, msg := s.post(t, body(t, &prompb.WriteRequest{Timeseries: huge})); resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "1001 rows in one request") {
		t.Errorf("request larger than the cap: %d %q, want 413 naming its rows", resp.StatusCode, msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if code := <-first; code != http.StatusNoContent {
		t.Errorf("request waiting at shutdown got %d, want 204", code)
	}
	if n := s.count(t, "SELECT count() FROM DB.samples"); n != 600 {
		t.Errorf("stored %d samples after shutdown, want 600", n)
	}
	if resp, _ := s.post(t, mk("late")); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("write after shutdown: %d, want 503", resp.StatusCode)
	}
}

// getStatus GETs url and returns the status code, failing t if there is no response.
func getStatus(t *testing.T, url string) int {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	r.Body.Close()
	return r.StatusCode
}

// metric returns the single series of the metric family name.
func metric(t *testing.T, g prometheus.Gatherer, name string) *dto.Metric {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0]
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func histogramCount(t *testing.T, g prometheus.Gatherer, name string) uint64 {
	return metric(t, g, name).GetHistogram().GetSampleCount()
}

func gaugeValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	return metric(t, g, name).GetGauge().GetValue()
}

// TestWriteTimestampBounds sends samples older than raw retention, too far in the future
// and at the int64 extremes among good ones: the good ones are stored, the others refused
// with a 400 naming each series and the bound it passed, and counted by reason. A request
// whose samples span two months (inside a year's raw retention) is stored whole.
func TestWriteTimestampBounds(t *testing.T) {
	tiers, err := rollup.ParseTiers("raw:365d,1h:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, func(c *serverConfig) { c.Tiers, c.MaxFuture = tiers, 10*time.Minute })
	now := time.Now().UnixMilli()
	const dayMs = 24 * 3_600_000
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series("bounds", []string{"job", "b"},
			prompb.Sample{Timestamp: now - 366*dayMs, Value: 1},
			prompb.Sample{Timestamp: now - 364*dayMs, Value: 2},
			prompb.Sample{Timestamp: now, Value: 3},
			prompb.Sample{Timestamp: now + 5*60_000, Value: 4},
			prompb.Sample{Timestamp: now + 3_600_000, Value: 5},
		),
		series("extremes", []string{"job", "b"},
			prompb.Sample{Timestamp: math.MinInt64, Value: 1},
			prompb.Sample{Timestamp: math.MaxInt64, Value: 2},
		),
	}}
	resp, msg := s.post(t, body(t, req))
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d %q, want 400", resp.StatusCode, msg)
	}
	for _, want := range []string{
		`series {__name__="bounds", job="b"}: 1 samples older than raw retention (before `,
		`, 1 samples too far in the future (after `,
		`series {__name__="extremes", job="b"}: 1 samples older than raw retention`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("400 body %q lacks %q", msg, want)
		}
	}
	got := s.stored(t)
	var ts []int64
	for _, smp := range got {
		ts = append(ts, smp.ts)
	}
	slices.Sort(ts)
	if want := []int64{now - 364*dayMs, now, now + 5*60_000}; !slices.Equal(ts, want) {
		t.Errorf("stored timestamps %v, want %v", ts, want)
	}
	for reason, want := range map[string]float64{"too_old": 2, "too_new": 2} {
		if got := labelledCounter(t, s.reg, "pyramid_write_samples_rejected_total", "reason", reason); got != want {
			t.Errorf("pyramid_write_samples_rejected_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}

	// Two months of one series in one request: inserted apart from other senders, in
	// inserts of at most 50 days, and all stored.
	long := series("long", []string{"job", "b"})
	for d := int64(60); d >= 0; d-- {
		long.Samples = append(long.Samples, prompb.Sample{Timestamp: now - d*dayMs, Value: float64(d)})
	}
	s.write(t, long)
	n := 0
	for _, smp := range s.stored(t) {
		if strings.Contains(smp.labels, `__name__="long"`) {
			n++
		}
	}
	if n != len(long.Samples) {
		t.Errorf("%d samples of the two months stored, want %d", n, len(long.Samples))
	}
}

// labelledCounter is the value of the counter name{label=value} in g.
func labelledCounter(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no metric %s{%s=%q}", name, label, value)
	return 0
}
