package adapter_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// TestWriteBiggerThanInFlightCap: a request with more rows than may ever be in flight at
// once can never be taken, so it gets 413 without Retry-After (Prometheus drops it rather
// than retrying it forever), nothing of it is stored, and a request that fits is stored
// as before, on the same server, right after.
func TestWriteBiggerThanInFlightCap(t *testing.T) {
	s := newTestServer(t, func(c *serverConfig) { c.BatchRows = 1000; c.MaxRowsInFlight = 1000 })
	mk := func(name string, n int) []byte {
		var ts []prompb.TimeSeries
		for i := range n { // n samples + 1 series row
			ts = append(ts, series(name, nil, prompb.Sample{Timestamp: int64(i), Value: 1}))
		}
		return body(t, &prompb.WriteRequest{Timeseries: ts})
	}
	for _, v2 := range []bool{false, true} {
		b, kv := mk("huge", 1000), []string(nil)
		if v2 {
			b, kv = v2Body(t, 1000), []string{"Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request", "X-Prometheus-Remote-Write-Version", "2.0.0"}
		}
		resp, msg := s.post(t, b, kv...)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("Retry-After") != "" || !strings.Contains(msg, "1001 rows in one request") {
			t.Errorf("v2 %v: %d rows in one request: %d %q (Retry-After %q); want 413 without Retry-After naming the rows",
				v2, 1001, resp.StatusCode, msg, resp.Header.Get("Retry-After"))
		}
	}
	if resp, msg := s.post(t, mk("fits", 999)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("request of 1000 rows: %d %s", resp.StatusCode, msg)
	}
	if n := s.count(t, "SELECT count() FROM DB.samples"); n != 999 {
		t.Errorf("stored %d samples, want the 999 of the request that fits", n)
	}
	if g := gaugeValue(t, s.reg, "pyramid_write_rows_in_flight"); g != 0 {
		t.Errorf("rows in flight after the writes: %v, want 0", g)
	}
}

// v2Body is a remote write 2.0 body of one series with n samples.
func v2Body(t *testing.T, n int) []byte {
	t.Helper()
	st := writev2.NewSymbolTable()
	ts := writev2.TimeSeries{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("__name__", "huge2"), nil)}
	for i := range n {
		ts.Samples = append(ts.Samples, writev2.Sample{Value: 1, Timestamp: int64(i)})
	}
	req := &writev2.Request{Timeseries: []writev2.TimeSeries{ts}, Symbols: st.Symbols()}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

// readRaw posts a remote-read request asking for SAMPLES, or for STREAMED_XOR_CHUNKS only
// when streamed is set, and returns the response with its whole body. bodyErr is what
// reading the body ended with: a streamed response broken off mid-way ends in an error.
func readRaw(t *testing.T, s *testServer, streamed bool, queries ...*prompb.Query) (resp *http.Response, body []byte, bodyErr error) {
	t.Helper()
	req := &prompb.ReadRequest{Queries: queries}
	if streamed {
		req.AcceptedResponseTypes = []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS}
	}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	hr, err := http.NewRequest(http.MethodPost, s.URL+"/api/v1/read", bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Encoding", "snappy")
	hr.Header.Set("Content-Type", "application/x-protobuf")
	hr.Header.Set("X-Prometheus-Remote-Read-Version", "0.1.0")
	resp, err = http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, bodyErr = io.ReadAll(resp.Body)
	return resp, body, bodyErr
}

// head200 is the start of a response body, for messages.
func head200(b []byte) []byte { return b[:min(200, len(b))] }

// selectorQuery is a query over [0, 10s] with matchers in the notation of matcher.
func selectorQuery(t *testing.T, ms ...string) *prompb.Query {
	t.Helper()
	q := &prompb.Query{EndTimestampMs: 10_000}
	for _, m := range ms {
		q.Matchers = append(q.Matchers, matcher(t, m))
	}
	return q
}

// TestReadBudgetPerRequest: the series and sample limits cover a whole request, summed over
// its queries, so that repeating a query many times in one request costs what one query
// may. Each query alone is within the limits; together they pass one, and get 429 naming
// it, in SAMPLES; a streamed response that passes it in a later query is broken off rather
// than ended short. X-Pyramid-Tiers has one value per query, in order.
func TestReadBudgetPerRequest(t *testing.T) {
	s := newTestServer(t, func(c *serverConfig) { c.ReadMaxSeries = 15; c.ReadMaxSamples = 150 })
	var batch []prompb.TimeSeries
	for i := range 10 { // b: 10 series of 10 samples
		ts := series("b", []string{"i", fmt.Sprintf("%02d", i)})
		for j := range 10 {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: int64(j) * 1000, Value: 1})
		}
		batch = append(batch, ts)
	}
	for i := range 2 { // c: 2 series of 60 samples
		ts := series("c", []string{"i", strconv.Itoa(i)})
		for j := range 60 {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: int64(j) * 100, Value: 1})
		}
		batch = append(batch, ts)
	}
	s.write(t, batch...)
	eight := selectorQuery(t, `__name__="b"`, `i=~"0[0-7]"`) // 8 series, 80 samples
	five := selectorQuery(t, `__name__="b"`, `i=~"0[0-4]"`)  // 5 series, 50 samples
	c := selectorQuery(t, `__name__="c"`)                    // 2 series, 120 samples
	nothing := selectorQuery(t, `__name__="nothing"`)
	emptyWindow := &prompb.Query{StartTimestampMs: 10, EndTimestampMs: 5, Matchers: eight.Matchers}

	for _, tc := range []struct {
		name    string
		queries []*prompb.Query
		limit   string // "" for 200
		series  int
		tiers   []string
	}{
		{"one query of 8 series", []*prompb.Query{eight}, "", 8, []string{"raw"}},
		{"three queries of 15 series and 150 samples in all", []*prompb.Query{five, five, five}, "", 15, []string{"raw", "raw", "raw"}},
		{"8 series twice", []*prompb.Query{eight, eight}, "15 series per request", 0, nil},
		{"120 and 50 samples", []*prompb.Query{c, five}, "150 samples per request", 0, nil},
		{"queries that read nothing", []*prompb.Query{eight, nothing, emptyWindow}, "", 8, []string{"raw", "raw", "none"}},
	} {
		resp, body, err := readRaw(t, s, false, tc.queries...)
		if err != nil {
			t.Fatalf("%s: read the body: %v", tc.name, err)
		}
		if tc.limit != "" {
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "" || !strings.Contains(string(body), tc.limit) {
				t.Errorf("%s, SAMPLES: %d %q; want 429 naming %q", tc.name, resp.StatusCode, head200(body), tc.limit)
			}
			continue
		}
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s, SAMPLES: %d %q", tc.name, resp.StatusCode, head200(body))
			continue
		}
		dec, err := snappy.Decode(nil, body)
		if err != nil {
			t.Fatal(err)
		}
		var rr prompb.ReadResponse
		if err := rr.Unmarshal(dec); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, res := range rr.Results {
			n += len(res.Timeseries)
		}
		if len(rr.Results) != len(tc.queries) || n != tc.series {
			t.Errorf("%s, SAMPLES: %d results with %d series, want %d with %d", tc.name, len(rr.Results), n, len(tc.queries), tc.series)
		}
		if got := resp.Header.Values("X-Pyramid-Tiers"); !slices.Equal(got, tc.tiers) {
			t.Errorf("%s: X-Pyramid-Tiers %q, want %q", tc.name, got, tc.tiers)
		}
	}

	// Streamed, the first query's frames are out before the second passes the budget:
	// the stream must break, not end as if complete.
	for _, queries := range [][]*prompb.Query{{eight, eight}, {c, five}} {
		resp, body, err := readRaw(t, s, true, queries...)
		if resp.StatusCode != http.StatusOK || err == nil {
			t.Errorf("streamed, passing the budget in the second query: %d, %d bytes, body error %v; want 200 and a broken stream",
				resp.StatusCode, len(body), err)
		}
	}
}

// TestReadRefusesSelectorOfEverything: a selector without a matcher that rejects the empty
// string (no matchers at all, or only ones like a="", a!="x", a=~".*") selects every series
// that lacks its labels, which is the whole database. PromQL refuses such a selector; remote
// read answers it with 400 naming the query, before anything is sent, even when other
// queries of the request are fine.
func TestReadRefusesSelectorOfEverything(t *testing.T) {
	s := newTestServer(t, nil)
	s.write(t, series("m", []string{"a", "x"}, prompb.Sample{Timestamp: 1000, Value: 1}),
		series("n", []string{"b", "y"}, prompb.Sample{Timestamp: 1000, Value: 2}))
	good := selectorQuery(t, `__name__="m"`)
	for _, ms := range [][]string{
		nil,
		{`a=""`},
		{`a!="x"`},
		{`__name__=~".*"`},
		{`a=~"x|"`, `b!~"y"`},
	} {
		for _, streamed := range []bool{false, true} {
			resp, body, _ := readRaw(t, s, streamed, good, selectorQuery(t, ms...))
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "query 1") ||
				!strings.Contains(string(body), "at least one matcher that does not match the empty string") {
				t.Errorf("{%s}, streamed %v: %d %q; want 400 naming query 1 and the rule", strings.Join(ms, ", "), streamed, resp.StatusCode, head200(body))
			}
		}
	}
	// One matcher that rejects "" is enough, however broad: the limits then bound it.
	for _, ms := range [][]string{{`__name__=~".+"`}, {`a=~".*"`, `__name__!=""`}, {`b="y"`, `a=""`}} {
		resp, body, _ := readRaw(t, s, false, selectorQuery(t, ms...))
		if resp.StatusCode != http.StatusOK {
			t.Errorf("{%s}: %d %q; want 200", strings.Join(ms, ", "), resp.StatusCode, head200(body))
		}
	}
}
