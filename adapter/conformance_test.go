package adapter_test

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/rollup/materialize/materializetest"
	"github.com/pyramid-metrics/pyramid/schema/chdbtest"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// The conformance tests send the same requests to two servers, one on the 18.16 test
// server (legacy dialect) and one on ClickHouse 26.5 in-process (chdbtest, modern dialect),
// and require the same answers and the same stored rows, bit for bit: every statement the
// write and read paths issue runs on both engines.

// enginePair is one server per engine, on the same configuration.
type enginePair struct {
	legacy, modern *testServer
}

func newEnginePair(t *testing.T, tweak func(*serverConfig)) enginePair {
	t.Helper()
	var servers []*testServer
	for _, conn := range []driver.Conn{schematest.Conn(t), chdbtest.Conn(t)} {
		cfg := testConfig(schematest.Database(t, conn, 0).Database)
		if tweak != nil {
			tweak(&cfg)
		}
		servers = append(servers, startServer(t, conn, cfg, true))
	}
	return enginePair{legacy: servers[0], modern: servers[1]}
}

// post sends one request (described by what) to both servers and requires the same
// status, body and headers; it returns them.
func (p enginePair) post(t *testing.T, what, path string, body []byte, kv ...string) (int, string, http.Header) {
	t.Helper()
	lr, lb := p.legacy.postTo(t, path, body, kv...)
	mr, mb := p.modern.postTo(t, path, body, kv...)
	if lr.StatusCode != mr.StatusCode || lb != mb {
		t.Fatalf("%s: 18.16 answered %d (%d bytes, %.200q), 26.5 %d (%d bytes, %.200q)",
			what, lr.StatusCode, len(lb), lb, mr.StatusCode, len(mb), mb)
	}
	for _, h := range []string{"X-Pyramid-Tiers", "Content-Type"} {
		if lr.Header.Get(h) != mr.Header.Get(h) {
			t.Fatalf("%s: %s is %q on 18.16, %q on 26.5", what, h, lr.Header.Get(h), mr.Header.Get(h))
		}
	}
	return lr.StatusCode, lb, lr.Header
}

// sameRows runs a query (DB. standing for each server's database) on both and requires
// the same rows; it returns how many.
func (p enginePair) sameRows(t *testing.T, query string) int {
	t.Helper()
	l := schematest.Rows(t, p.legacy.conn, strings.ReplaceAll(query, "DB.", p.legacy.db+"."))
	m := schematest.Rows(t, p.modern.conn, strings.ReplaceAll(query, "DB.", p.modern.db+"."))
	if d := schematest.DiffRows(l, m); d != "" {
		t.Errorf("%s\n18.16 against 26.5: %s", query, d)
	}
	return len(l)
}

// withRollups configures the default tiers, so that writes mark rollup units and reads
// route.
func withRollups(t *testing.T) func(*serverConfig) {
	tiers, err := rollup.ParseTiers("raw:30d,5m:365d,1h:0")
	if err != nil {
		t.Fatal(err)
	}
	return func(c *serverConfig) {
		c.Tiers, c.ReadRollups, c.RollupUnitWidth = tiers, true, rollup.UnitWidth(tiers)
		c.ReadTierRefresh = time.Nanosecond
	}
}

// conformanceEpoch is where the fixtures' samples lie: midnight UTC ten days ago, within
// raw retention and clear of the future limit.
func conformanceEpoch() int64 {
	const day = 86_400_000
	return (time.Now().UnixMilli()/day - 10) * day
}

// conformanceWrites are remote-write requests covering what the write path stores: the
// values and label values that are easiest to mangle, metadata, a retried batch, a
// conflicting value, a request with an invalid series among valid ones, and one that spans
// more than two days (inserted on its own, per day partitions).
func conformanceWrites(e int64) []*prompb.WriteRequest {
	odd := "quote\" backslash\\ newline\n tab\t zürich ✓ '; DROP TABLE x; --"
	smp := func(ts int64, v float64) prompb.Sample { return prompb.Sample{Timestamp: e + ts, Value: v} }
	first := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			series("up", []string{"job", "node", "instance", "a:9100"}, smp(0, 1), smp(15_000, 1), smp(30_000, math.Float64frombits(staleBits))),
			series("up", []string{"job", "node", "instance", "b:9100"}, smp(0, 0), smp(15_000, 1)),
			series("odd", []string{"v", odd, "job", "node", "instance", "a:9100"},
				smp(0, math.NaN()), smp(1000, math.Inf(1)), smp(2000, math.Inf(-1)),
				smp(3000, math.Float64frombits(0x7ff8000000000001)), smp(4000, math.SmallestNonzeroFloat64), smp(5000, -math.MaxFloat64)),
			series("node_cpu_seconds_total", []string{"cpu", "0", "mode", "idle", "job", "node", "instance", "a:9100", "empty", ""},
				smp(0, 100.5), smp(15_000, 115.25), smp(30_000, 3)),
			conformanceHistograms(e),
		},
		Metadata: []prompb.MetricMetadata{
			{MetricFamilyName: "up", Type: prompb.MetricMetadata_GAUGE, Help: "1 if the target is up"},
			{MetricFamilyName: "node_cpu_seconds_total", Type: prompb.MetricMetadata_COUNTER, Help: "CPU time.", Unit: "seconds"},
		},
	}
	conflict := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		series("up", []string{"job", "node", "instance", "b:9100"}, smp(15_000, 0.5), smp(45_000, 1)),
	}}
	invalid := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "job", Value: "nameless"}}, Samples: []prompb.Sample{smp(0, 1)}},
		series("later", []string{"job", "node", "instance", "a:9100"}, smp(3_600_000, 7)),
	}}
	wide := series("wide", []string{"job", "node", "instance", "c:9100"})
	for d := int64(0); d < 5; d++ {
		wide.Samples = append(wide.Samples, smp(d*86_400_000+12*3_600_000, float64(d)))
	}
	metadataOnly := &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{
		{MetricFamilyName: "up", Type: prompb.MetricMetadata_GAUGE, Help: "Whether the target answered."},
	}}
	return []*prompb.WriteRequest{first, first, conflict, invalid, {Timeseries: []prompb.TimeSeries{wide}}, metadataOnly}
}

// conformanceHistograms is a series of native histograms of every kind: integer with
// spans on both sides and a zero bucket, float with custom buckets, and a stale marker.
func conformanceHistograms(e int64) prompb.TimeSeries {
	h := &histogram.Histogram{Schema: 3, ZeroThreshold: 1e-9, ZeroCount: 2, Count: 10, Sum: -1.5,
		CounterResetHint: histogram.CounterReset,
		PositiveSpans:    []histogram.Span{{Offset: -2, Length: 2}, {Offset: 3, Length: 1}}, PositiveBuckets: []int64{1, 2, -2},
		NegativeSpans: []histogram.Span{{Offset: 0, Length: 1}}, NegativeBuckets: []int64{3}}
	fh := &histogram.FloatHistogram{Schema: histogram.CustomBucketsSchema, Count: 3.5, Sum: 4,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []float64{1, 2.5}, CustomValues: []float64{0.5, 1}}
	stale := &histogram.Histogram{Sum: math.Float64frombits(staleBits)}
	ts := series("latency_seconds", []string{"job", "node", "instance", "a:9100"})
	ts.Histograms = []prompb.Histogram{prompb.FromIntHistogram(e, h), prompb.FromFloatHistogram(e+15_000, fh),
		prompb.FromIntHistogram(e+30_000, stale)}
	return ts
}

// TestConformanceWrite sends the same remote writes to both engines and compares what
// each stored, table by table.
func TestConformanceWrite(t *testing.T) {
	p := newEnginePair(t, withRollups(t))
	statuses := map[int]int{}
	for i, req := range conformanceWrites(conformanceEpoch()) {
		code, _, _ := p.post(t, fmt.Sprintf("write %d", i), "/api/v1/write", body(t, req))
		statuses[code]++
	}
	if statuses[http.StatusNoContent] != 5 || statuses[http.StatusBadRequest] != 1 {
		t.Errorf("statuses %v, want five 204 and one 400", statuses)
	}
	for _, tc := range []struct {
		query   string
		minRows int
	}{
		{"SELECT target, fingerprint, ts, value FROM DB.samples FINAL ORDER BY target, fingerprint, ts", 20},
		{"SELECT * FROM DB.histograms FINAL ORDER BY target, fingerprint, ts", 3},
		{"SELECT fingerprint, any(target), any(metric_name), any(label_names), any(label_values), minMerge(first_seen), maxMerge(last_seen)" +
			" FROM DB.series GROUP BY fingerprint ORDER BY fingerprint", 6},
		{"SELECT name, value, fingerprint FROM DB.series_labels FINAL ORDER BY name, value, fingerprint", 20},
		{"SELECT metric_family_name, type, help, unit FROM DB.metadata FINAL ORDER BY metric_family_name", 2},
		// The marks' server timestamps differ; the units marked must not.
		{"SELECT DISTINCT width, unit, target FROM DB.rollup_dirty ORDER BY width, unit, target", 5},
		{"SELECT version, name FROM DB.schema_migrations ORDER BY version", 3},
	} {
		if n := p.sameRows(t, tc.query); n < tc.minRows {
			t.Errorf("%s: %d rows, want at least %d", tc.query, n, tc.minRows)
		}
	}
}

// readBody is a remote-read request of one query per matcher set over [mint, maxt], in
// the given response types.
func readBody(t *testing.T, mint, maxt int64, hints *prompb.ReadHints, types []prompb.ReadRequest_ResponseType, matcherSets ...[]string) []byte {
	t.Helper()
	req := &prompb.ReadRequest{AcceptedResponseTypes: types}
	for _, ms := range matcherSets {
		q := &prompb.Query{StartTimestampMs: mint, EndTimestampMs: maxt, Hints: hints}
		for _, m := range ms {
			q.Matchers = append(q.Matchers, matcher(t, m))
		}
		req.Queries = append(req.Queries, q)
	}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

var responseTypes = map[string][]prompb.ReadRequest_ResponseType{
	"SAMPLES":  {prompb.ReadRequest_SAMPLES},
	"STREAMED": {prompb.ReadRequest_STREAMED_XOR_CHUNKS},
}

// TestConformanceRead selects series with every kind of matcher and reads their samples
// (duplicates, a conflict resolved by FINAL, special floats, several days) from both
// engines, in both response types and both regex dialects: the responses must be the same
// bytes.
func TestConformanceRead(t *testing.T) {
	p := newEnginePair(t, nil)
	e := conformanceEpoch()
	for i, req := range conformanceWrites(e) {
		p.post(t, fmt.Sprintf("write %d", i), "/api/v1/write", body(t, req))
	}
	at := func(ts int64) []prompb.Sample { return []prompb.Sample{{Timestamp: e + ts, Value: float64(ts)}} }
	fixture := []prompb.TimeSeries{
		series("m", []string{"id", "x", "a", "x"}, at(1000)...),
		series("m", []string{"id", "X", "a", "X"}, at(2000)...),
		series("m", []string{"id", "xy", "a", "xy"}, at(3000)...),
		series("m", []string{"id", "yx", "a", "yx"}, at(4000)...),
		series("m", []string{"id", "noa", "b", "x"}, at(5000)...),
		series("m", []string{"id", "quote", "a", `q"u'o\te`}, at(6000)...),
		series("m", []string{"id", "newline", "a", "line\nbreak"}, at(7000)...),
		series("m", []string{"id", "utf8", "a", "ünï€😀"}, at(8000)...),
		series("m", []string{"id", "empty", "a", ""}, at(9000)...),
		series("m_total", []string{"id", "total", "a", "x"}, at(10_000)...),
		series("M", []string{"id", "upper", "a", "x"}, at(11_000)...),
	}
	p.post(t, "write of the matcher fixture", "/api/v1/write", body(t, &prompb.WriteRequest{Timeseries: fixture}))

	matcherSets := [][]string{
		{`__name__="m"`},
		{`__name__=~"m"`},
		{`__name__=~"m.*"`},
		{`__name__=~"m_.+|M"`},
		{`__name__=~"(?i)M"`},
		{`__name__!~"m|M"`, `a="x"`},
		{`__name__="m"`, `a="x"`},
		{`__name__="m"`, `a=~"x|"`},
		{`__name__="m"`, `a=~"(?i)X.*"`},
		{`__name__="m"`, `a=~"x.*"`},
		{`__name__="m"`, `a=~".*x"`},
		{`__name__="m"`, `a=~"x|xy"`},
		{`__name__="m"`, `a!~"x|xy"`},
		{`__name__="m"`, `a!~".*x.*"`},
		{`__name__="m"`, `a!="x"`},
		{`__name__="m"`, `a=""`},
		{`__name__="m"`, `a!=""`},
		{`__name__="m"`, `a=~".+"`},
		{`__name__="m"`, `a=~"line.break"`},
		{`__name__="m"`, `a="q\"u'o\\te"`},
		{`__name__="m"`, `a="x' OR '1'='1"`},
		{`__name__="m"`, `a=~"[^x]+"`},
		{`__name__="m"`, `zz=~"x|"`},
		{`id="upper"`},
		{`id=~"n.*"`},
		{`a=~"x"`, `id=~"t.*|u.*"`},
		{`a=~"(?i)x"`, `id!="X"`},
		{`b=~"x|"`, `id=~"noa|x|upper"`},
		{`job="node"`},
		{`__name__=~"up|odd|wide|later|node_cpu_seconds_total"`},
		{`__name__="up"`, `instance=~"b:.*"`},
	}
	series := 0
	for _, ua := range []string{"Prometheus/2.42.0", "Prometheus/3.5.0"} {
		for name, types := range responseTypes {
			for _, w := range []struct{ mint, maxt int64 }{{e, e + 5*86_400_000}, {e + 1000, e + 20_000}} {
				for _, ms := range matcherSets {
					what := fmt.Sprintf("read {%s} [%d, %d] as %s, %s", strings.Join(ms, ", "), w.mint, w.maxt, ua, name)
					code, b, _ := p.post(t, what, "/api/v1/read", readBody(t, w.mint, w.maxt, nil, types, ms), "User-Agent", ua)
					if code != http.StatusOK {
						t.Errorf("%s: status %d: %s", what, code, b)
					}
					if name == "SAMPLES" {
						series += countSeries(t, b)
					}
				}
			}
		}
	}
	// Equal answers prove nothing if they are all empty.
	if series < 100 {
		t.Errorf("the reads returned %d series in all, want at least 100", series)
	}
	// Several queries in one request, as Prometheus 3 batches them.
	p.post(t, "read of every matcher set in one request", "/api/v1/read", readBody(t, e, e+86_400_000, nil, responseTypes["STREAMED"], matcherSets...))
}

// countSeries decodes a SAMPLES response and counts its series.
func countSeries(t *testing.T, b string) int {
	t.Helper()
	raw, err := snappy.Decode(nil, []byte(b))
	if err != nil {
		t.Fatal(err)
	}
	var rr prompb.ReadResponse
	if err := rr.Unmarshal(raw); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rr.Results {
		n += len(r.Timeseries)
	}
	return n
}

// TestConformanceRoutedRead computes rollups on both engines and reads through the routing
// with the hints Prometheus sends: the rollup tiers, the raw tier and the tiers' extents
// (store.Status) must answer alike.
func TestConformanceRoutedRead(t *testing.T) {
	d := newRouteData()
	p := newEnginePair(t, withRollups(t))
	tiers, err := rollup.ParseTiers("raw:30d,5m:365d,1h:0")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*testServer{p.legacy, p.modern} {
		d.write(t, s)
		materializetest.Drain(t, s.srv.Store(), tiers)
	}
	routed := 0
	for _, tc := range []struct {
		mint, maxt int64
		hints      *prompb.ReadHints
	}{
		{d.start, d.end, &prompb.ReadHints{StepMs: hourMs, RangeMs: hourMs, Func: "max_over_time"}},
		{d.start + hourMs, d.start + 2*hourMs, &prompb.ReadHints{StepMs: 5 * minuteMs, RangeMs: 5 * minuteMs, Func: "sum_over_time"}},
		{d.start, d.end, &prompb.ReadHints{StepMs: hourMs, RangeMs: 2 * hourMs, Func: "avg_over_time"}},
		{d.start, d.end, &prompb.ReadHints{StepMs: hourMs, RangeMs: hourMs, Func: "min_over_time"}},
		{d.start, d.end, &prompb.ReadHints{StepMs: 30 * minuteMs}},
		{d.start, d.end - 30*minuteMs, &prompb.ReadHints{StepMs: hourMs, RangeMs: hourMs, Func: "max_over_time"}},
		{d.start, d.end, &prompb.ReadHints{StepMs: hourMs, RangeMs: 4 * hourMs, Func: "rate"}},
		{d.start, d.end, &prompb.ReadHints{StepMs: hourMs, RangeMs: 4 * hourMs, Func: "increase"}},
		{d.start, d.end, &prompb.ReadHints{StepMs: hourMs, RangeMs: hourMs, Func: "count_over_time"}},
		{d.start - 3*hourMs, d.end + hourMs, &prompb.ReadHints{StepMs: hourMs, RangeMs: hourMs, Func: "last_over_time"}},
		{d.start, d.end, nil},
	} {
		if tc.hints != nil {
			tc.hints.StartMs, tc.hints.EndMs = tc.mint, tc.maxt
		}
		for name, types := range responseTypes {
			for _, metric := range []string{"route_gauge", "route_counter_total"} {
				what := fmt.Sprintf("read %s [%d, %d] with hints %+v, %s", metric, tc.mint, tc.maxt, tc.hints, name)
				code, b, hdr := p.post(t, what, "/api/v1/read", readBody(t, tc.mint, tc.maxt, tc.hints, types, []string{`__name__="` + metric + `"`}))
				if code != http.StatusOK {
					t.Fatalf("%s: status %d: %s", what, code, b)
				}
				if tiers := hdr.Get("X-Pyramid-Tiers"); strings.Contains(tiers, "5m") || strings.Contains(tiers, "1h") {
					routed++
				}
			}
		}
	}
	// Reads that never reach a rollup tier would compare only raw reads.
	if routed < 10 {
		t.Errorf("%d reads were answered from rollups, want at least 10", routed)
	}
}
