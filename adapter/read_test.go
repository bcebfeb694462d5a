package adapter_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/golang/snappy"
	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// readHTTP sends a remote-read request as Prometheus 2.x does (no accepted response types,
// so SAMPLES) and returns the status, the decoded response on 200 and the body otherwise.
func (s *testServer) readHTTP(t testing.TB, req *prompb.ReadRequest, kv ...string) (int, *prompb.ReadResponse, string) {
	t.Helper()
	resp, rr, msg := s.readHTTPResponse(t, req, kv...)
	return resp.StatusCode, rr, msg
}

// readHTTPResponse is readHTTP returning the whole HTTP response, for its headers.
func (s *testServer) readHTTPResponse(t testing.TB, req *prompb.ReadRequest, kv ...string) (*http.Response, *prompb.ReadResponse, string) {
	t.Helper()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	resp, b := s.postTo(t, "/api/v1/read", snappy.Encode(nil, raw), append([]string{"X-Prometheus-Remote-Read-Version", "0.1.0"}, kv...)...)
	if resp.StatusCode != http.StatusOK {
		return resp, nil, b
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-protobuf" || resp.Header.Get("Content-Encoding") != "snappy" {
		t.Fatalf("SAMPLES response with Content-Type %q, Content-Encoding %q", ct, resp.Header.Get("Content-Encoding"))
	}
	dec, err := snappy.Decode(nil, []byte(b))
	if err != nil {
		t.Fatalf("snappy-decode response: %v", err)
	}
	var rr prompb.ReadResponse
	if err := rr.Unmarshal(dec); err != nil {
		t.Fatalf("unmarshal response: %v", err)
	}
	return resp, &rr, ""
}

// write stores series through the write path and fails t unless they are all stored.
func (s *testServer) write(t testing.TB, ts ...prompb.TimeSeries) {
	t.Helper()
	resp, msg := s.post(t, body(t, &prompb.WriteRequest{Timeseries: ts}))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write %d series: %d %s", len(ts), resp.StatusCode, msg)
	}
}

// matcher builds a prompb matcher from PromQL-like notation: `a="x"`, `a!="x"`, `a=~"x"`,
// `a!~"x"`. The value is a Go-quoted string.
func matcher(t testing.TB, s string) *prompb.LabelMatcher {
	t.Helper()
	for _, op := range []struct {
		tok string
		typ prompb.LabelMatcher_Type
	}{{"!~", prompb.LabelMatcher_NRE}, {"=~", prompb.LabelMatcher_RE}, {"!=", prompb.LabelMatcher_NEQ}, {"=", prompb.LabelMatcher_EQ}} {
		if name, quoted, ok := strings.Cut(s, op.tok); ok {
			var value string
			if _, err := fmt.Sscanf(quoted, "%q", &value); err != nil {
				t.Fatalf("matcher %s: value %s: %v", s, quoted, err)
			}
			return &prompb.LabelMatcher{Type: op.typ, Name: name, Value: value}
		}
	}
	t.Fatalf("matcher %s: no operator", s)
	return nil
}

// TestReadMatcherSemantics runs each matcher case through remote read against the real
// ClickHouse and compares the selected series (named by their id label) with the answer
// Prometheus gives, worked out by hand. The fixture has the values that trip up stores
// which translate matchers into ClickHouse regexes or paste values into SQL.
func TestReadMatcherSemantics(t *testing.T) {
	s := newTestServer(t, nil)
	smp := []prompb.Sample{{Value: 1, Timestamp: 1000}}
	s.write(t,
		series("m", []string{"id", "x", "a", "x"}, smp...),
		series("m", []string{"id", "X", "a", "X"}, smp...),
		series("m", []string{"id", "xy", "a", "xy"}, smp...),
		series("m", []string{"id", "yx", "a", "yx"}, smp...),
		series("m", []string{"id", "noa", "b", "x"}, smp...),
		series("m", []string{"id", "quote", "a", `q"u'o\te`}, smp...),
		series("m", []string{"id", "newline", "a", "line\nbreak"}, smp...),
		series("m", []string{"id", "utf8", "a", "ünï€😀"}, smp...),
		series("m", []string{"id", "empty", "a", ""}, smp...), // An empty value is no label.
		series("m_total", []string{"id", "total", "a", "x"}, smp...),
		series("M", []string{"id", "upper", "a", "x"}, smp...),
	)
	allM := []string{"X", "empty", "newline", "noa", "quote", "utf8", "x", "xy", "yx"}
	without := func(ids ...string) []string {
		return slices.DeleteFunc(slices.Clone(allM), func(id string) bool { return slices.Contains(ids, id) })
	}
	for _, tc := range []struct {
		matchers []string
		want     []string
		// userAgent is the client's; Prometheus 2.x's regex dot does not match "\n".
		userAgent string
	}{
		{[]string{`__name__="m"`}, allM, ""},
		{[]string{`__name__=~"m"`}, allM, ""}, // Anchored: not m_total.
		{[]string{`__name__=~"m.*"`}, append(slices.Clone(allM), "total"), ""},
		{[]string{`__name__=~"m_.+|M"`}, []string{"total", "upper"}, ""},
		{[]string{`__name__=~"(?i)M"`}, append(slices.Clone(allM), "upper"), ""},
		{[]string{`__name__!~"m|M"`, `a="x"`}, []string{"total"}, ""},
		{[]string{`__name__="m"`, `a="x"`}, []string{"x"}, ""},
		{[]string{`__name__="m"`, `a=~"x"`}, []string{"x"}, ""}, // Not xy or yx: anchored both ends.
		{[]string{`__name__="m"`, `a=~"x|"`}, []string{"empty", "noa", "x"}, ""},
		{[]string{`__name__="m"`, `a=~"|x"`}, []string{"empty", "noa", "x"}, ""},
		{[]string{`__name__="m"`, `a=~"(?i)x"`}, []string{"X", "x"}, ""},
		{[]string{`__name__="m"`, `a=~"(?i)X.*"`}, []string{"X", "x", "xy"}, ""},
		{[]string{`__name__="m"`, `a=~"(?i:Y)x"`}, []string{"yx"}, ""},
		{[]string{`__name__="m"`, `a=~"(?i:Y)X"`}, nil, ""}, // The flag covers only its group.
		{[]string{`__name__="m"`, `a=~"x.*"`}, []string{"x", "xy"}, ""},
		{[]string{`__name__="m"`, `a=~".*x"`}, []string{"x", "yx"}, ""},
		{[]string{`__name__="m"`, `a=~"x|xy"`}, []string{"x", "xy"}, ""},
		{[]string{`__name__="m"`, `a!~"x|xy"`}, without("x", "xy"), ""},
		{[]string{`__name__="m"`, `a!~"x"`}, without("x"), ""},
		{[]string{`__name__="m"`, `a!~".*x.*"`}, []string{"X", "empty", "newline", "noa", "quote", "utf8"}, ""},
		{[]string{`__name__="m"`, `a!="x"`}, without("x"), ""},
		{[]string{`__name__="m"`, `a=""`}, []string{"empty", "noa"}, ""},
		{[]string{`__name__="m"`, `a!=""`}, without("empty", "noa"), ""},
		{[]string{`__name__="m"`, `a=~".*"`}, allM, ""},
		{[]string{`__name__="m"`, `a=~".+"`}, without("empty", "noa"), ""},
		{[]string{`__name__="m"`, `a!~".+"`}, []string{"empty", "noa"}, ""},
		{[]string{`__name__="m"`, `zz=~"x|"`}, allM, ""}, // No series has zz, and "" matches.
		{[]string{`__name__="m"`, `zz="x"`}, nil, ""},
		{[]string{`__name__="m"`, `a="q\"u'o\\te"`}, []string{"quote"}, ""},
		{[]string{`__name__="m"`, `a=~"q\"u'o\\\\te"`}, []string{"quote"}, ""},
		{[]string{`__name__="m"`, `a="x' OR '1'='1"`}, nil, ""},
		{[]string{`__name__="m"`, `a="x\\' OR 1=1 --"`}, nil, ""},
		{[]string{`__name__="m"`, `a="line\nbreak"`}, []string{"newline"}, ""},
		{[]string{`__name__="m"`, `a=~"line.break"`}, []string{"newline"}, ""}, // Prometheus 3: . matches \n.
		{[]string{`__name__="m"`, `a=~"line.break"`}, []string{"newline"}, "Prometheus/3.5.0"},
		{[]string{`__name__="m"`, `a!~".*"`}, nil, ""},
		{[]string{`__name__="m"`, `a=~"line.break"`}, nil, "Prometheus/2.42.0"},
		{[]string{`__name__="m"`, `a=~"(?s)line.break"`}, []string{"newline"}, "Prometheus/2.42.0"},
		{[]string{`__name__="m"`, `a!~".*"`}, []string{"newline"}, "Prometheus/2.42.0"},
		{[]string{`__name__="m"`, `a=~".+"`}, without("empty", "noa", "newline"), "Prometheus/2.42.0"},
		{[]string{`__name__="m"`, `a=~"x|xy"`}, []string{"x", "xy"}, "Prometheus/2.42.0"},
		{[]string{`__name__="m"`, `a=~"ü.*😀"`}, []string{"utf8"}, ""},
		{[]string{`__name__="m"`, `a=~"[^x]+"`}, []string{"X", "newline", "quote", "utf8"}, ""},
		{[]string{`__name__="m"`, `a=~"x"`, `a!~"xy"`}, []string{"x"}, ""},
		{[]string{`__name__="m"`, `a=~"x.*"`, `a!~"xy"`}, []string{"x"}, ""},
		{[]string{`__name__="m"`, `b="x"`, `a=""`}, []string{"noa"}, ""},
		{[]string{`id="upper"`}, []string{"upper"}, ""}, // No metric name matcher at all.
		{[]string{`a=~"x"`, `id=~"t.*|u.*"`}, []string{"total", "upper"}, ""},
		{[]string{`id=~"n.*"`}, []string{"newline", "noa"}, ""},                       // The label index, by prefix.
		{[]string{`a=~"(?i)x"`, `id!="X"`}, []string{"total", "upper", "x"}, ""},      // No index: no literal.
		{[]string{`b=~"x|"`, `id=~"noa|x|upper"`}, []string{"noa", "upper", "x"}, ""}, // b absent or "x".
	} {
		name := strings.Join(tc.matchers, ",")
		q := &prompb.Query{StartTimestampMs: 0, EndTimestampMs: 10_000}
		for _, m := range tc.matchers {
			q.Matchers = append(q.Matchers, matcher(t, m))
		}
		ua := tc.userAgent
		if ua == "" {
			ua = "Go-http-client/1.1"
		}
		code, rr, msg := s.readHTTP(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}}, "User-Agent", ua)
		name += " as " + ua
		if code != http.StatusOK {
			t.Errorf("{%s}: status %d: %s", name, code, msg)
			continue
		}
		var got []string
		for _, ts := range rr.Results[0].Timeseries {
			for _, l := range ts.Labels {
				if l.Name == "id" {
					got = append(got, l.Value)
				}
			}
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(tc.want))
		if !slices.Equal(got, want) {
			t.Errorf("{%s}: selected %q, want %q", name, got, want)
		}
	}

	// A regex that does not compile is the client's mistake, named in a 400.
	q := &prompb.Query{EndTimestampMs: 10_000, Matchers: []*prompb.LabelMatcher{matcher(t, `a=~"x)|(.*"`)}}
	if code, _, msg := s.readHTTP(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}}); code != http.StatusBadRequest || !strings.Contains(msg, `x)|(.*`) {
		t.Errorf("bad regex: status %d %q; want 400 naming the regex", code, msg)
	}
}

// readClient is Prometheus 3's own remote-read client, asking for the given response types
// (nil asks for what Prometheus 3 asks: STREAMED_XOR_CHUNKS, then SAMPLES).
func readClient(t testing.TB, s *testServer, types []prompb.ReadRequest_ResponseType) remote.ReadClient {
	t.Helper()
	u, err := url.Parse(s.URL + "/api/v1/read")
	if err != nil {
		t.Fatal(err)
	}
	c, err := remote.NewReadClient("pyramid", &remote.ClientConfig{
		URL: &config_util.URL{URL: u}, Timeout: model.Duration(30 * time.Second),
		ChunkedReadLimit: 50e6, AcceptedResponseTypes: types,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type readSample struct {
	t    int64
	bits uint64
}

// collect drains a series set into labels → samples, failing on a set error. A label set
// seen twice is an error too: Prometheus's client does not merge series.
func collect(t testing.TB, ss storage.SeriesSet) (map[string][]readSample, []string, error) {
	t.Helper()
	out := map[string][]readSample{}
	var order []string
	var it chunkenc.Iterator
	for ss.Next() {
		ser := ss.At()
		key := ser.Labels().String()
		if _, dup := out[key]; dup {
			return nil, nil, fmt.Errorf("series %s returned twice", key)
		}
		order = append(order, key)
		it = ser.Iterator(it)
		var samples []readSample
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if vt != chunkenc.ValFloat {
				return nil, nil, fmt.Errorf("series %s: value type %v", key, vt)
			}
			ts, v := it.At()
			samples = append(samples, readSample{ts, math.Float64bits(v)})
		}
		if err := it.Err(); err != nil {
			return nil, nil, err
		}
		out[key] = samples
	}
	return out, order, ss.Err()
}

// TestReadRoundTripWithPrometheusClient writes series whose samples cross chunk
// boundaries, carry stale markers and special floats, arrive twice (a retried write) and
// out of order, and reads them back through Prometheus's own remote-read client with each
// response type: every sample must come back once, in time order, with its exact bits.
func TestReadRoundTripWithPrometheusClient(t *testing.T) {
	s := newTestServer(t, func(c *serverConfig) {
		c.MaxRequestBytes, c.MaxDecodedBytes, c.MaxRowsInFlight = 8<<20, 8<<20, 200_000
	})
	const n = 1000
	long := series("rt_long", []string{"job", "a"})
	for i := range n {
		long.Samples = append(long.Samples, prompb.Sample{Timestamp: int64(i) * 15_000, Value: float64(i*i) / 7})
	}
	special := series("rt_special", []string{"job", "a"},
		prompb.Sample{Timestamp: 0, Value: math.Inf(1)},
		prompb.Sample{Timestamp: 15_000, Value: math.Inf(-1)},
		prompb.Sample{Timestamp: 30_000, Value: math.Float64frombits(staleBits)},
		prompb.Sample{Timestamp: 45_000, Value: math.Float64frombits(0x7ff8000000000001)},
		prompb.Sample{Timestamp: 60_000, Value: math.SmallestNonzeroFloat64},
		prompb.Sample{Timestamp: 75_000, Value: -math.MaxFloat64},
	)
	// The late half of a series arrives first; the early half and a retry of the late
	// half follow.
	late := series("rt_ooo", []string{"job", "b"})
	for i := range 300 {
		late.Samples = append(late.Samples, prompb.Sample{Timestamp: int64(i) * 1000, Value: float64(i)})
	}
	// A series whose chunks pass 1 MiB, where Prometheus's own server would cut it into
	// frames that its client then reads as separate series with equal labels.
	big := series("rt_big", []string{"job", "c"})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 150_000 {
		big.Samples = append(big.Samples, prompb.Sample{Timestamp: int64(i) * 100, Value: rng.NormFloat64()})
	}
	if b := chunkBytes(t, big.Samples); b <= 1<<20 {
		t.Fatalf("rt_big encodes to %d bytes of chunks; the test needs more than 1 MiB", b)
	}
	s.write(t, long, special, prompb.TimeSeries{Labels: late.Labels, Samples: late.Samples[150:]})
	s.write(t, big)
	s.write(t, prompb.TimeSeries{Labels: late.Labels, Samples: late.Samples[:150]})
	s.write(t, prompb.TimeSeries{Labels: late.Labels, Samples: late.Samples[150:]})
	s.write(t, special) // A retried batch.

	want := map[string][]readSample{}
	for _, ts := range []prompb.TimeSeries{long, special, late, big} {
		var lb labels.ScratchBuilder
		for _, l := range ts.Labels {
			lb.Add(l.Name, l.Value)
		}
		lb.Sort()
		var samples []readSample
		for _, smp := range ts.Samples {
			samples = append(samples, readSample{smp.Timestamp, math.Float64bits(smp.Value)})
		}
		want[lb.Labels().String()] = samples
	}
	wantOrder := slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if !yield(k) {
				return
			}
		}
	})

	for _, tc := range []struct {
		name  string
		types []prompb.ReadRequest_ResponseType
	}{
		{"samples", []prompb.ReadRequest_ResponseType{prompb.ReadRequest_SAMPLES}},
		{"streamed", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := readClient(t, s, tc.types)
			q, err := remote.ToQuery(0, 20_000_000, []*labels.Matcher{
				labels.MustNewMatcher(labels.MatchRegexp, "__name__", "rt_.*"),
			}, &storage.SelectHints{Start: 0, End: 20_000_000})
			if err != nil {
				t.Fatal(err)
			}
			ss, err := c.Read(context.Background(), q, false)
			if err != nil {
				t.Fatal(err)
			}
			got, order, err := collect(t, ss)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(order, wantOrder) {
				t.Errorf("series order %q, want %q", order, wantOrder)
			}
			for k, w := range want {
				if !slices.Equal(got[k], w) {
					t.Errorf("%s: got %d samples %v..., want %d %v...", k, len(got[k]), head(got[k]), len(w), head(w))
				}
			}

			// A narrower window, from the hints, returns exactly its samples: both ends
			// are inclusive.
			q, err = remote.ToQuery(0, 20_000_000, []*labels.Matcher{
				labels.MustNewMatcher(labels.MatchEqual, "__name__", "rt_long"),
			}, &storage.SelectHints{Start: 30_000, End: 45_000 * 100})
			if err != nil {
				t.Fatal(err)
			}
			ss, err = c.Read(context.Background(), q, false)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err = collect(t, ss)
			if err != nil {
				t.Fatal(err)
			}
			key := labels.FromStrings("__name__", "rt_long", "job", "a").String()
			if w := want[key][2:301]; !slices.Equal(got[key], w) {
				t.Errorf("window [30s, 4500s]: got %d samples from %v, want %d from %v", len(got[key]), head(got[key]), len(w), head(w))
			}
		})
	}
}

func head(s []readSample) []readSample { return s[:min(3, len(s))] }

// chunkBytes is the size of samples as XOR chunks of 120 samples.
func chunkBytes(t testing.TB, samples []prompb.Sample) int {
	t.Helper()
	total := 0
	for lo := 0; lo < len(samples); lo += 120 {
		c := chunkenc.NewXORChunk()
		app, err := c.Appender()
		if err != nil {
			t.Fatal(err)
		}
		for _, smp := range samples[lo:min(lo+120, len(samples))] {
			app.Append(0, smp.Timestamp, smp.Value)
		}
		total += len(c.Bytes())
	}
	return total
}

// TestReadMultipleQueries sends several queries in one request, as Prometheus 3's
// ReadMultiple does: each answer must reach its own query, in both response types.
func TestReadMultipleQueries(t *testing.T) {
	s := newTestServer(t, nil)
	for i := range 3 {
		s.write(t, series(fmt.Sprintf("mq_%d", i), []string{"job", "x"}, prompb.Sample{Timestamp: 1000, Value: float64(i)}))
	}
	for _, types := range [][]prompb.ReadRequest_ResponseType{{prompb.ReadRequest_SAMPLES}, nil} {
		c := readClient(t, s, types)
		var queries []*prompb.Query
		for _, name := range []string{"mq_2", "mq_0", "mq_nothing", "mq_1"} {
			q, err := remote.ToQuery(0, 5000, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", name)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			queries = append(queries, q)
		}
		ss, err := c.ReadMultiple(context.Background(), queries, false)
		if err != nil {
			t.Fatal(err)
		}
		_, order, err := collect(t, ss)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{`{__name__="mq_2", job="x"}`, `{__name__="mq_0", job="x"}`, `{__name__="mq_1", job="x"}`}
		if !slices.Equal(order, want) {
			t.Errorf("types %v: series %q, want %q", types, order, want)
		}
	}
}

// TestReadLimits checks that a query past a limit gets 429 naming the limit, in both
// response types, and that a streamed response that passes the sample limit after it has
// begun ends as a broken stream that the client reports, never as a shorter answer.
func TestReadLimits(t *testing.T) {
	s := newTestServer(t, func(c *serverConfig) {
		c.ReadMaxSeries = 30
		c.ReadMaxSamples = 150
		c.ReadMaxFrameBytes = 1024
	})
	var batch []prompb.TimeSeries
	for i := range 20 {
		ts := series("lim", []string{"i", fmt.Sprintf("%02d", i)})
		for j := range 10 {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: int64(j) * 1000, Value: 1})
		}
		batch = append(batch, ts)
	}
	for i := range 40 {
		batch = append(batch, series("many", []string{"i", fmt.Sprintf("%02d", i)}, prompb.Sample{Timestamp: 0, Value: 1}))
	}
	// 140 samples of random floats take well over the 1024-byte frame limit.
	wide := series("wide", nil)
	for j := range 140 {
		wide.Samples = append(wide.Samples, prompb.Sample{Timestamp: int64(j), Value: 1 / float64(j+3)})
	}
	batch = append(batch, wide)
	s.write(t, batch...)

	query := func(name string, end int64) *prompb.Query {
		return &prompb.Query{EndTimestampMs: end, Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: name}}}
	}
	for _, tc := range []struct {
		name  string
		q     *prompb.Query
		limit string
	}{
		{"series", query("many", 10_000), "30 series per request"},
		{"samples", query("lim", 10_000), "150 samples per request"},
	} {
		code, _, msg := s.readHTTP(t, &prompb.ReadRequest{Queries: []*prompb.Query{tc.q}})
		if code != http.StatusTooManyRequests || !strings.Contains(msg, tc.limit) {
			t.Errorf("%s limit, SAMPLES: status %d %q; want 429 naming %q", tc.name, code, msg, tc.limit)
		}
	}
	// Within the limits: 14 series of 10 samples.
	if code, rr, msg := s.readHTTP(t, &prompb.ReadRequest{Queries: []*prompb.Query{{
		EndTimestampMs: 10_000, Matchers: []*prompb.LabelMatcher{matcher(t, `__name__="lim"`), matcher(t, `i=~"0.|1[0-3]"`)},
	}}}); code != http.StatusOK || len(rr.Results[0].Timeseries) != 14 {
		t.Errorf("within limits: status %d %s", code, msg)
	}

	// Streamed: the series limit is known before the stream begins and gets a status.
	c := readClient(t, s, nil)
	q, _ := remote.ToQuery(0, 10_000, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "many")}, nil)
	if _, err := c.Read(context.Background(), q, false); err == nil || !strings.Contains(err.Error(), "429") || !strings.Contains(err.Error(), "30 series per request") {
		t.Errorf("series limit, streamed: error %v; want 429 naming the limit", err)
	}
	q, _ = remote.ToQuery(0, 10_000, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "wide")}, nil)
	if _, err := c.Read(context.Background(), q, false); err == nil || !strings.Contains(err.Error(), "429") || !strings.Contains(err.Error(), "1024 bytes in a streamed frame") {
		t.Errorf("frame limit, streamed: error %v; want 429 naming the limit", err)
	}
	// The sample limit is passed by the second batch of series, after the first frames:
	// the client must see an error, and never the 20 series complete.
	q, _ = remote.ToQuery(0, 10_000, []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "lim")}, nil)
	ss, err := c.Read(context.Background(), q, false)
	if err == nil {
		var got map[string][]readSample
		got, _, err = collect(t, ss)
		if err == nil {
			t.Errorf("sample limit passed mid-stream: client read %d series without an error", len(got))
		}
	}
	if err != nil {
		t.Logf("mid-stream limit reached the client as: %v", err)
	}
}

// TestReadConcurrencyLimit: a read whose body never ends holds no read slot, so the next
// read is answered; a read that is being answered holds the only slot (its ClickHouse
// query is slow on purpose), and the next read waits ReadQueueWait and gets 429 with
// Retry-After, naming the limit.
func TestReadConcurrencyLimit(t *testing.T) {
	reader, slowQuery := slowReadServer(t, newTestServer(t, nil), 1_000_000, func(c *serverConfig) {
		c.ReadMaxConcurrent = 1
		c.ReadQueueWait = 100 * time.Millisecond
	})
	q := &prompb.Query{EndTimestampMs: 1000, Matchers: []*prompb.LabelMatcher{matcher(t, `__name__="x"`)}}

	pr, pw := io.Pipe()
	trickling := postInBackground(reader.URL+"/api/v1/read", pr)
	if _, err := pw.Write([]byte{0xff}); err != nil { // the server is now reading this body
		t.Fatal(err)
	}
	waitGauge(t, reader, "pyramid_request_memory_bytes", 16<<10)
	if code, _, msg := reader.readHTTP(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}}); code != http.StatusOK {
		t.Errorf("read while another read's body trickles in: %d %s; want 200", code, msg)
	}
	pw.CloseWithError(errors.New("client gives up"))
	<-trickling

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raw, err := (&prompb.ReadRequest{Queries: []*prompb.Query{slowQuery}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, reader.URL+"/api/v1/read", bytes.NewReader(snappy.Encode(nil, raw)))
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		held <- err
	}()
	waitGauge(t, reader, "pyramid_reads_in_flight", 1)

	raw, err = (&prompb.ReadRequest{Queries: []*prompb.Query{q}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	resp, msg := reader.postTo(t, "/api/v1/read", snappy.Encode(nil, raw))
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(msg, "all 1 read slots") {
		t.Errorf("read while the slot is held: %d (Retry-After %q) %q; want 429 with Retry-After naming the limit",
			resp.StatusCode, resp.Header.Get("Retry-After"), msg)
	}

	cancel()
	<-held
	waitGauge(t, reader, "pyramid_reads_in_flight", 0)
	if code, _, msg := reader.readHTTP(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}}); code != http.StatusOK {
		t.Errorf("read after the slot was released: %d %s", code, msg)
	}
	waitGauge(t, reader, "pyramid_request_memory_bytes", 0)
}

// postInBackground posts body to url as a remote-read or -write request would be sent,
// and reports the client's error (nil once any response arrived) on the channel.
func postInBackground(url string, body io.Reader) <-chan error {
	done := make(chan error, 1)
	go func() {
		req, err := http.NewRequest(http.MethodPost, url, body)
		if err != nil {
			done <- err
			return
		}
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("Content-Type", "application/x-protobuf")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	return done
}

// waitGauge polls the server's registry until the gauge has the value.
func waitGauge(t *testing.T, s *testServer, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := gaugeValue(t, s.reg, name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after 10s, want %v", name, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReadCancelStopsClickHouseQuery cancels a remote read while its sample query runs and
// checks, in ClickHouse's own query log, that the query ended with the cancellation rather
// than running to completion. The reading server's connection makes ClickHouse slow on
// purpose (blocks of one row, one thread), so the query runs for seconds.
func TestReadCancelStopsClickHouseQuery(t *testing.T) {
	s := newTestServer(t, nil)
	const n = 1_000_000
	reader, q := slowReadServer(t, s, n, nil)
	ctx := context.Background()

	reqCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	raw, err := (&prompb.ReadRequest{Queries: []*prompb.Query{q}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, reader.URL+"/api/v1/read", bytes.NewReader(snappy.Encode(nil, raw)))
		if err != nil {
			done <- err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("read finished with %d before it was cancelled", resp.StatusCode)
		}
		done <- err
	}()

	// The sample query's text is unique to this database.
	like := "%fingerprint, ts, value FROM " + s.db + ".samples%"
	running := func() uint64 {
		return s.count(t, "SELECT count() FROM system.processes WHERE query LIKE '"+like+"' AND query NOT LIKE '%system.processes%'")
	}
	deadline := time.Now().Add(30 * time.Second)
	for running() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sample query never showed up in system.processes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v; want context.Canceled", err)
	}
	for running() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sample query still runs after the client cancelled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.conn.Exec(ctx, "SYSTEM FLUSH LOGS"); err != nil {
		t.Fatal(err)
	}
	// type 2 is QueryFinish and 4 ExceptionWhileProcessing; 18.16 may log a cancelled query
	// as both. Either way, it must have stopped before reading all the rows.
	ended := s.count(t, "SELECT count() FROM system.query_log WHERE type IN (2, 4) AND query LIKE '"+like+"'")
	maxRead := s.count(t, "SELECT max(read_rows) FROM system.query_log WHERE type IN (2, 4) AND query LIKE '"+like+"'")
	if ended == 0 || maxRead >= n {
		t.Errorf("query log: %d entries for the ended query, which read up to %d of %d rows; want it stopped early", ended, maxRead, n)
	}
}

// slowReadServer stores one series of n samples in s's database and starts a second
// server on the same tables whose ClickHouse connection reads in blocks of one row on one
// thread, so that reading the series takes seconds. It returns that server and the query
// that reads the series.
func slowReadServer(t *testing.T, s *testServer, n int64, tweak func(*serverConfig)) (*testServer, *prompb.Query) {
	t.Helper()
	b := adapter.Batch{
		Targets: make([]uint64, n), Fingerprints: make([]uint64, n), Timestamps: make([]int64, n), Values: make([]float64, n),
		Series: []store.SeriesRow{{Fingerprint: 42, Target: 7, MetricName: "slow", Names: []string{"__name__"}, Values: []string{"slow"},
			FirstSeen: 0, LastSeen: (n - 1) * 100}},
	}
	for i := range n {
		b.Targets[i], b.Fingerprints[i], b.Timestamps[i], b.Values[i] = 7, 42, i*100, float64(i)
	}
	ctx := context.Background()
	if err := s.srv.Store().InsertSeries(ctx, b.Series); err != nil {
		t.Fatal(err)
	}
	if err := s.srv.Store().InsertSamples(ctx, b.Targets, b.Fingerprints, b.Timestamps, b.Values); err != nil {
		t.Fatal(err)
	}
	slow, err := clickhouse.Open(&clickhouse.Options{
		Addr: []string{schematest.Addr(t)},
		Settings: clickhouse.Settings{
			"max_block_size": 1, "max_threads": 1, "log_queries": 1,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slow.Close() })
	cfg := testConfig(s.db)
	cfg.ReadMaxSamples = 2 * int(n)
	if tweak != nil {
		tweak(&cfg)
	}
	return startServer(t, slow, cfg, true), &prompb.Query{EndTimestampMs: n * 100, Matchers: []*prompb.LabelMatcher{matcher(t, `__name__="slow"`)}}
}
