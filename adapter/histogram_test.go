package adapter_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

// The native-histogram tests write hand-built histograms through remote write 1.0 and,
// with Prometheus 3's own client, 2.0, and read them back through Prometheus 3's own
// remote-read client in both response types.

// hsample is one sample of a test series: a float (h and fh nil), an integer histogram
// or a float histogram. It is a chunks.Sample, so that Prometheus's own chunk encoder can
// encode the expected samples.
type hsample struct {
	t  int64
	f  float64
	h  *histogram.Histogram
	fh *histogram.FloatHistogram
}

func (s hsample) T() int64                      { return s.t }
func (s hsample) ST() int64                     { return 0 }
func (s hsample) F() float64                    { return s.f }
func (s hsample) H() *histogram.Histogram       { return s.h }
func (s hsample) FH() *histogram.FloatHistogram { return s.fh }

func (s hsample) Type() chunkenc.ValueType {
	switch {
	case s.h != nil:
		return chunkenc.ValHistogram
	case s.fh != nil:
		return chunkenc.ValFloatHistogram
	default:
		return chunkenc.ValFloat
	}
}

func (s hsample) Copy() chunks.Sample {
	c := s
	if s.h != nil {
		c.h = s.h.Copy()
	}
	if s.fh != nil {
		c.fh = s.fh.Copy()
	}
	return c
}

func (s hsample) String() string {
	switch {
	case s.h != nil:
		return fmt.Sprintf("@%d int %s hint=%d sum=%#x", s.t, s.h, s.h.CounterResetHint, math.Float64bits(s.h.Sum))
	case s.fh != nil:
		return fmt.Sprintf("@%d float %s hint=%d sum=%#x", s.t, s.fh, s.fh.CounterResetHint, math.Float64bits(s.fh.Sum))
	default:
		return fmt.Sprintf("@%d float sample %#x", s.t, math.Float64bits(s.f))
	}
}

// diff describes how got differs from want ("" if it does not): the timestamp, the kind,
// the histogram by Prometheus's own Equals (which compares Sum by its bits), the Sum bits
// once more and the counter reset hint, which Equals ignores.
func (s hsample) diff(want hsample) string {
	switch {
	case s.t != want.t:
		return fmt.Sprintf("timestamp %d, want %d", s.t, want.t)
	case s.Type() != want.Type():
		return fmt.Sprintf("%v, want %v", s, want)
	case want.h != nil:
		if !s.h.Equals(want.h) || math.Float64bits(s.h.Sum) != math.Float64bits(want.h.Sum) || s.h.CounterResetHint != want.h.CounterResetHint {
			return fmt.Sprintf("%v, want %v", s, want)
		}
	case want.fh != nil:
		if !s.fh.Equals(want.fh) || math.Float64bits(s.fh.Sum) != math.Float64bits(want.fh.Sum) || s.fh.CounterResetHint != want.fh.CounterResetHint {
			return fmt.Sprintf("%v, want %v", s, want)
		}
	case math.Float64bits(s.f) != math.Float64bits(want.f):
		return fmt.Sprintf("%v, want %v", s, want)
	}
	return ""
}

// hseries is a test series: labels and samples in time order.
type hseries struct {
	lset    labels.Labels
	samples []hsample
}

// histogramEpoch is where the fixtures lie: a whole minute half an hour ago.
func histogramEpoch() int64 {
	return (time.Now().Add(-30*time.Minute).UnixMilli() / 60_000) * 60_000
}

// exponential is three samples of a counter histogram of the schema: a zero bucket with a
// threshold, positive and negative spans with a gap of three buckets, then every bucket
// grown, then one bucket more. posOff and negOff place the first span of each side, above
// the zero threshold.
func exponential(schema, posOff, negOff int32) []*histogram.Histogram {
	pos := []histogram.Span{{Offset: posOff, Length: 2}, {Offset: 3, Length: 1}}
	neg := []histogram.Span{{Offset: negOff, Length: 1}, {Offset: 2, Length: 2}}
	return []*histogram.Histogram{
		// zero 2 + positive 1, 3, 2 + negative 3, 1, 5.
		{Schema: schema, ZeroThreshold: 0.001, ZeroCount: 2, Count: 17, Sum: 12.5,
			PositiveSpans: pos, PositiveBuckets: []int64{1, 2, -1}, NegativeSpans: neg, NegativeBuckets: []int64{3, -2, 4}},
		// zero 3 + positive 2, 4, 3 + negative 4, 2, 6.
		{CounterResetHint: histogram.NotCounterReset, Schema: schema, ZeroThreshold: 0.001, ZeroCount: 3, Count: 24, Sum: 20,
			PositiveSpans: pos, PositiveBuckets: []int64{2, 2, -1}, NegativeSpans: neg, NegativeBuckets: []int64{4, -2, 4}},
		// zero 4 + positive 2, 4, 3, 4 + negative 4, 2, 6.
		{Schema: schema, ZeroThreshold: 0.001, ZeroCount: 4, Count: 29, Sum: 31.25,
			PositiveSpans: []histogram.Span{{Offset: posOff, Length: 2}, {Offset: 3, Length: 2}}, PositiveBuckets: []int64{2, 2, -1, 1},
			NegativeSpans: neg, NegativeBuckets: []int64{4, -2, 4}},
	}
}

// simple is a histogram of one positive span starting at bucket 0 with the given counts.
func simple(schema int32, hint histogram.CounterResetHint, counts ...int64) *histogram.Histogram {
	h := &histogram.Histogram{CounterResetHint: hint, Schema: schema, PositiveSpans: []histogram.Span{{Offset: 0, Length: uint32(len(counts))}}}
	var prev int64
	for _, c := range counts {
		h.PositiveBuckets = append(h.PositiveBuckets, c-prev)
		h.Count += uint64(c)
		prev = c
	}
	h.Sum = float64(h.Count) * 1.5
	return h
}

// staleHistogram is the stale marker Prometheus writes for a histogram series.
func staleHistogram() *histogram.Histogram {
	return &histogram.Histogram{Sum: math.Float64frombits(value.StaleNaN)}
}

// scaledFloat is h as a float histogram with every count a quarter of h's (so not whole),
// the Sum's bits kept as they are (a stale marker stays one).
func scaledFloat(h *histogram.Histogram) *histogram.FloatHistogram {
	fh := h.ToFloat(nil)
	fh.Count /= 4
	fh.ZeroCount /= 4
	for i := range fh.PositiveBuckets {
		fh.PositiveBuckets[i] /= 4
	}
	for i := range fh.NegativeBuckets {
		fh.NegativeBuckets[i] /= 4
	}
	return fh
}

// histogramFixture is the set of test histograms, every case once as integer histograms
// (hist_int{case=...}) and once as float histograms (hist_float{case=...}), 15 s apart
// from e on.
func histogramFixture(e int64) []hseries {
	customBounds := []float64{0.1, 0.5, 1, 5, 10}
	cases := []struct {
		name string
		hs   []*histogram.Histogram
	}{
		{"schema_-4", exponential(-4, 1, 1)},
		{"schema_0", exponential(0, 1, -1)},
		{"schema_3", exponential(3, 1, -1)},
		{"schema_8", exponential(8, 100, -100)},
		// Custom buckets (NHCB): counts 1, 2, 2, 1 then 2, 3, 3, 2 with a gap of one bucket.
		{"custom", []*histogram.Histogram{
			{Schema: histogram.CustomBucketsSchema, Count: 6, Sum: 7.5, CustomValues: customBounds,
				PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}, {Offset: 1, Length: 2}}, PositiveBuckets: []int64{1, 1, 0, -1}},
			{CounterResetHint: histogram.NotCounterReset, Schema: histogram.CustomBucketsSchema, Count: 10, Sum: 13, CustomValues: customBounds,
				PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}, {Offset: 1, Length: 2}}, PositiveBuckets: []int64{2, 1, 0, -1}},
		}},
		// Every counter reset hint of a counter, with resets both hinted and not.
		{"resets", []*histogram.Histogram{
			simple(1, histogram.UnknownCounterReset, 1, 2, 3),
			simple(1, histogram.NotCounterReset, 2, 3, 4),
			simple(1, histogram.CounterReset, 1, 0, 1),
			simple(1, histogram.UnknownCounterReset, 0, 0, 1),
			simple(1, histogram.NotCounterReset, 1, 1, 1),
		}},
		{"gauge", []*histogram.Histogram{
			simple(2, histogram.GaugeType, 5, 2, 1),
			simple(2, histogram.GaugeType, 3, 4, 0),
			simple(2, histogram.GaugeType, 6, 0, 0),
		}},
		{"stale", []*histogram.Histogram{simple(0, histogram.UnknownCounterReset, 1, 1), staleHistogram(), simple(0, histogram.UnknownCounterReset, 2, 1)}},
		{"no_buckets", []*histogram.Histogram{
			{Schema: 0},
			{CounterResetHint: histogram.NotCounterReset, Schema: 0, ZeroThreshold: 0.01},
		}},
		// NaN observations count in Count but in no bucket.
		{"nan_sum", []*histogram.Histogram{
			{Schema: 0, Count: 3, Sum: math.NaN(), PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{1}},
		}},
	}
	var out []hseries
	for _, c := range cases {
		ints := hseries{lset: labels.FromStrings("__name__", "hist_int", "case", c.name)}
		floats := hseries{lset: labels.FromStrings("__name__", "hist_float", "case", c.name)}
		for i, h := range c.hs {
			ts := e + int64(i)*15_000
			ints.samples = append(ints.samples, hsample{t: ts, h: h})
			floats.samples = append(floats.samples, hsample{t: ts, fh: scaledFloat(h)})
		}
		out = append(out, ints, floats)
	}
	return out
}

// countHistograms is the number of histogram samples in ss.
func countHistograms(ss []hseries) int {
	n := 0
	for _, s := range ss {
		for _, smp := range s.samples {
			if smp.Type() != chunkenc.ValFloat {
				n++
			}
		}
	}
	return n
}

// v1Series is s as remote write 1.0 sends it.
func v1Series(s hseries) prompb.TimeSeries {
	ts := prompb.TimeSeries{Labels: prompb.FromLabels(s.lset, nil)}
	for _, smp := range s.samples {
		switch {
		case smp.h != nil:
			ts.Histograms = append(ts.Histograms, prompb.FromIntHistogram(smp.t, smp.h))
		case smp.fh != nil:
			ts.Histograms = append(ts.Histograms, prompb.FromFloatHistogram(smp.t, smp.fh))
		default:
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: smp.t, Value: smp.f})
		}
	}
	return ts
}

func v1Body(t testing.TB, ss ...hseries) []byte {
	t.Helper()
	req := &prompb.WriteRequest{}
	for _, s := range ss {
		req.Timeseries = append(req.Timeseries, v1Series(s))
	}
	return body(t, req)
}

// v2HistogramBody is ss as Prometheus 3 sends it with remote write 2.0, snappy-encoded.
func v2HistogramBody(t testing.TB, ss ...hseries) []byte {
	t.Helper()
	st := writev2.NewSymbolTable()
	req := &writev2.Request{}
	for _, s := range ss {
		ts := writev2.TimeSeries{LabelsRefs: st.SymbolizeLabels(s.lset, nil)}
		for _, smp := range s.samples {
			switch {
			case smp.h != nil:
				ts.Histograms = append(ts.Histograms, writev2.FromIntHistogram(smp.t, smp.h))
			case smp.fh != nil:
				ts.Histograms = append(ts.Histograms, writev2.FromFloatHistogram(smp.t, smp.fh))
			default:
				ts.Samples = append(ts.Samples, writev2.Sample{Timestamp: smp.t, Value: smp.f})
			}
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	req.Symbols = st.Symbols()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

// readSamplesRaw reads the series selected by matchers over [mint, maxt] as SAMPLES and
// decodes each prompb histogram with prompb's ToIntHistogram or ToFloatHistogram; the
// floats and histograms of a series are merged in time order. It fails t unless the
// answer is 200.
func readSamplesRaw(t testing.TB, s *testServer, mint, maxt int64, matchers ...string) map[string][]hsample {
	t.Helper()
	q := &prompb.Query{StartTimestampMs: mint, EndTimestampMs: maxt}
	for _, m := range matchers {
		q.Matchers = append(q.Matchers, matcher(t, m))
	}
	code, rr, msg := s.readHTTP(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}})
	if code != http.StatusOK {
		t.Fatalf("SAMPLES read of %v: %d %s", matchers, code, msg)
	}
	out := map[string][]hsample{}
	for _, ts := range rr.Results[0].Timeseries {
		lb := labels.NewScratchBuilder(len(ts.Labels))
		for _, l := range ts.Labels {
			lb.Add(l.Name, l.Value)
		}
		key := lb.Labels().String()
		if _, dup := out[key]; dup {
			t.Errorf("SAMPLES: series %s returned twice", key)
		}
		var samples []hsample
		for _, smp := range ts.Samples {
			samples = append(samples, hsample{t: smp.Timestamp, f: smp.Value})
		}
		for _, h := range ts.Histograms {
			if h.IsFloatHistogram() {
				samples = append(samples, hsample{t: h.Timestamp, fh: h.ToFloatHistogram()})
			} else {
				samples = append(samples, hsample{t: h.Timestamp, h: h.ToIntHistogram()})
			}
		}
		slices.SortStableFunc(samples, func(a, b hsample) int { return int(a.t - b.t) })
		out[key] = samples
	}
	return out
}

// drain reads every sample of a chunk or series iterator.
func drain(it chunkenc.Iterator) ([]hsample, error) {
	var out []hsample
	for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
		switch vt {
		case chunkenc.ValFloat:
			ts, v := it.At()
			out = append(out, hsample{t: ts, f: v})
		case chunkenc.ValHistogram:
			ts, h := it.AtHistogram(nil)
			out = append(out, hsample{t: ts, h: h})
		case chunkenc.ValFloatHistogram:
			ts, fh := it.AtFloatHistogram(nil)
			out = append(out, hsample{t: ts, fh: fh})
		default:
			return nil, fmt.Errorf("value type %v", vt)
		}
	}
	return out, it.Err()
}

// readStreamed reads the series selected by matchers over [mint, maxt] through Prometheus
// 3's remote-read client asking for STREAMED_XOR_CHUNKS only, and decodes the samples
// with the client's own chunk iterators.
func readStreamed(t testing.TB, s *testServer, mint, maxt int64, matchers ...*labels.Matcher) map[string][]hsample {
	t.Helper()
	c := readClient(t, s, []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS})
	q, err := remote.ToQuery(mint, maxt, matchers, nil)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := c.Read(context.Background(), q, false)
	if err != nil {
		t.Fatalf("streamed read of %v: %v", matchers, err)
	}
	out := map[string][]hsample{}
	var it chunkenc.Iterator
	for ss.Next() {
		key := ss.At().Labels().String()
		if _, dup := out[key]; dup {
			t.Errorf("streamed: series %s returned twice", key)
		}
		it = ss.At().Iterator(it)
		samples, err := drain(it)
		if err != nil {
			t.Fatalf("streamed: series %s: %v", key, err)
		}
		out[key] = samples
	}
	if err := ss.Err(); err != nil {
		t.Fatalf("streamed read of %v: %v", matchers, err)
	}
	return out
}

// asWritten is the samples of ss by series, as SAMPLES must return them.
func asWritten(ss []hseries) map[string][]hsample {
	out := map[string][]hsample{}
	for _, s := range ss {
		out[s.lset.String()] = s.samples
	}
	return out
}

// chunkEncoded is the samples of ss by series as a streamed read must return them:
// encoded into chunks by Prometheus's own storage.NewSeriesToChunkEncoder and decoded
// again from the chunks' bytes, so that the counter reset hints are those Prometheus's
// chunk encoding gives.
func chunkEncoded(t testing.TB, ss []hseries) map[string][]hsample {
	t.Helper()
	out := map[string][]hsample{}
	for _, s := range ss {
		list := make([]chunks.Sample, len(s.samples))
		for i, smp := range s.samples {
			list[i] = smp
		}
		it := storage.NewSeriesToChunkEncoder(storage.NewListSeries(s.lset, list)).Iterator(nil)
		var samples []hsample
		for it.Next() {
			meta := it.At()
			chk, err := chunkenc.FromData(meta.Chunk.Encoding(), meta.Chunk.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			got, err := drain(chk.Iterator(nil))
			if err != nil {
				t.Fatal(err)
			}
			samples = append(samples, got...)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		out[s.lset.String()] = samples
	}
	return out
}

// diffRead lists every difference between what a read returned and what it should have.
func diffRead(got, want map[string][]hsample) []string {
	var out []string
	for _, key := range slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if !yield(k) {
				return
			}
		}
	}) {
		g, w := got[key], want[key]
		if len(g) != len(w) {
			out = append(out, fmt.Sprintf("%s: %d samples %v, want %d %v", key, len(g), g, len(w), w))
			continue
		}
		for i := range w {
			if d := g[i].diff(w[i]); d != "" {
				out = append(out, fmt.Sprintf("%s sample %d: %s", key, i, d))
			}
		}
	}
	for key, g := range got {
		if _, ok := want[key]; !ok {
			out = append(out, fmt.Sprintf("%s: %d samples %v, want no such series", key, len(g), g))
		}
	}
	return out
}

func reportDiffs(t testing.TB, what string, diffs []string) {
	t.Helper()
	for _, d := range diffs {
		t.Errorf("%s: %s", what, d)
	}
}

// TestHistogramRoundTrip writes the fixture through remote write 1.0 and, with Prometheus
// 3's client, 2.0, each request twice (a retry); the 2.0 responses must confirm every
// histogram. Read back as SAMPLES, every histogram must be the one written (Prometheus's
// Equals, Sum bits, reset hint) and stored once; read back streamed through Prometheus 3's
// client, the histograms decoded from the chunks must be what Prometheus's own chunk
// encoder makes of the same samples.
func TestHistogramRoundTrip(t *testing.T) {
	e := histogramEpoch()
	fixture := histogramFixture(e)
	for _, ss := range fixture {
		for _, smp := range ss.samples {
			if err := validate(smp); err != nil {
				t.Fatalf("fixture %s %v: %v", ss.lset, smp, err)
			}
		}
	}
	n := countHistograms(fixture)
	for _, proto := range []string{"1.0", "2.0"} {
		t.Run("remote write "+proto, func(t *testing.T) {
			s := newTestServer(t, nil)
			for attempt := range 2 {
				if proto == "1.0" {
					if resp, msg := s.post(t, v1Body(t, fixture...)); resp.StatusCode != http.StatusNoContent {
						t.Fatalf("write, attempt %d: %d %s", attempt, resp.StatusCode, msg)
					}
					continue
				}
				stats, err := prometheus3Client(t, s).Store(context.Background(), v2HistogramBody(t, fixture...), attempt)
				if err != nil {
					t.Fatalf("write, attempt %d: %v", attempt, err)
				}
				if !stats.Confirmed || stats.Histograms != n || stats.Samples != 0 || stats.Exemplars != 0 {
					t.Errorf("write, attempt %d: response stats %+v, want %d histograms confirmed", attempt, stats, n)
				}
			}
			mint, maxt := e-60_000, e+600_000
			reportDiffs(t, "SAMPLES", diffRead(readSamplesRaw(t, s, mint, maxt, `__name__=~"hist_.*"`), asWritten(fixture)))
			reportDiffs(t, "streamed", diffRead(
				readStreamed(t, s, mint, maxt, labels.MustNewMatcher(labels.MatchRegexp, "__name__", "hist_.*")),
				chunkEncoded(t, fixture)))
		})
	}
}

// validate is Prometheus's own validation of a histogram sample.
func validate(smp hsample) error {
	switch {
	case smp.h != nil:
		return smp.h.Validate()
	case smp.fh != nil:
		return smp.fh.Validate()
	}
	return nil
}

// TestHistogramAndFloatAtOneTimestampInOneRequest: a series with a float and a histogram
// at the same timestamp in one entry of a request is refused with a 400 naming it, and
// nothing of it is stored; the other series of the request, float and histogram, are
// stored, and a 2.0 response counts them.
func TestHistogramAndFloatAtOneTimestampInOneRequest(t *testing.T) {
	checkMixedInOneRequest(t, false)
}

// TestHistogramAndFloatAtOneTimestampInTwoEntries is the same with the series' float and
// its histograms in two entries of the same labels in the request: it is still one
// series with a float and a histogram at one timestamp in one request.
func TestHistogramAndFloatAtOneTimestampInTwoEntries(t *testing.T) {
	checkMixedInOneRequest(t, true)
}

func checkMixedInOneRequest(t *testing.T, twoEntries bool) {
	s := newTestServer(t, nil)
	e := histogramEpoch()
	h := simple(0, histogram.UnknownCounterReset, 1, 2)
	var want []hseries
	for _, proto := range []string{"1.0", "2.0"} {
		okFloat := hseries{labels.FromStrings("__name__", "mixed_ok_float", "proto", proto), []hsample{{t: e, f: 2}}}
		okHist := hseries{labels.FromStrings("__name__", "mixed_ok_hist", "proto", proto), []hsample{{t: e, fh: scaledFloat(h)}}}
		bad := labels.FromStrings("__name__", "mixed_bad", "proto", proto)
		req := []hseries{okFloat, {bad, []hsample{{t: e, f: 1}, {t: e, h: h}, {t: e + 15_000, h: h}}}, okHist}
		if twoEntries {
			req = []hseries{okFloat, {bad, []hsample{{t: e, f: 1}}}, okHist, {bad, []hsample{{t: e, h: h}, {t: e + 15_000, h: h}}}}
		}
		want = append(want, okFloat, okHist)

		var msg string
		if proto == "1.0" {
			var resp *http.Response
			resp, msg = s.post(t, v1Body(t, req...))
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s: status %d %s, want 400", proto, resp.StatusCode, msg)
			}
		} else {
			stats, err := prometheus3Client(t, s).Store(context.Background(), v2HistogramBody(t, req...), 0)
			var recoverable remote.RecoverableError
			if err == nil || errors.As(err, &recoverable) || !strings.Contains(err.Error(), "400") {
				t.Errorf("%s: error %v, want a 400 that Prometheus does not retry", proto, err)
			}
			if err != nil {
				msg = err.Error()
			}
			if !stats.Confirmed || stats.Samples != 1 || stats.Histograms != 1 {
				t.Errorf("%s: response stats %+v, want the other series' 1 sample and 1 histogram confirmed", proto, stats)
			}
		}
		if !strings.Contains(msg, "mixed_bad") || !strings.Contains(msg, proto) || strings.Contains(msg, "mixed_ok") {
			t.Errorf("%s: message %q, want it to name mixed_bad{proto=%q} alone", proto, msg, proto)
		}
	}
	mint, maxt := e-60_000, e+60_000
	reportDiffs(t, "SAMPLES", diffRead(readSamplesRaw(t, s, mint, maxt, `__name__=~"mixed_.*"`), asWritten(want)))
	reportDiffs(t, "streamed", diffRead(
		readStreamed(t, s, mint, maxt, labels.MustNewMatcher(labels.MatchRegexp, "__name__", "mixed_.*")),
		chunkEncoded(t, want)))
}

// TestHistogramAndFloatAtOneTimestampAcrossRequests: a float stored first and a histogram
// at the same timestamp later, or the reverse, are both accepted, and reads return the
// float there; the series' histogram at another timestamp is read as written.
func TestHistogramAndFloatAtOneTimestampAcrossRequests(t *testing.T) {
	s := newTestServer(t, nil)
	e := histogramEpoch()
	h1 := simple(3, histogram.UnknownCounterReset, 1, 2)
	h2 := simple(3, histogram.NotCounterReset, 2, 3)
	var want []hseries
	for _, proto := range []string{"1.0", "2.0"} {
		for _, floatFirst := range []bool{true, false} {
			lset := labels.FromStrings("__name__", "across", "proto", proto, "float_first", fmt.Sprint(floatFirst))
			floats := hseries{lset, []hsample{{t: e, f: 42}}}
			hists := hseries{lset, []hsample{{t: e, h: h1}, {t: e + 15_000, h: h2}}}
			order := []hseries{hists, floats}
			if floatFirst {
				order = []hseries{floats, hists}
			}
			for i, req := range order {
				if proto == "1.0" {
					if resp, msg := s.post(t, v1Body(t, req)); resp.StatusCode != http.StatusNoContent {
						t.Errorf("%s request %d: %d %s", lset, i, resp.StatusCode, msg)
					}
				} else if _, err := prometheus3Client(t, s).Store(context.Background(), v2HistogramBody(t, req), 0); err != nil {
					t.Errorf("%s request %d: %v", lset, i, err)
				}
			}
			want = append(want, hseries{lset, []hsample{{t: e, f: 42}, {t: e + 15_000, h: h2}}})
		}
	}
	mint, maxt := e-60_000, e+60_000
	reportDiffs(t, "SAMPLES", diffRead(readSamplesRaw(t, s, mint, maxt, `__name__="across"`), asWritten(want)))
	reportDiffs(t, "streamed", diffRead(
		readStreamed(t, s, mint, maxt, labels.MustNewMatcher(labels.MatchEqual, "__name__", "across")),
		chunkEncoded(t, want)))
}

// TestHistogramInvalidRefused sends histograms that Prometheus's own Validate refuses,
// each in a series that also has a valid histogram and beside a valid series: the answer
// is a 400 naming the series, nothing of that series is stored, and the valid series is.
func TestHistogramInvalidRefused(t *testing.T) {
	s := newTestServer(t, nil)
	e := histogramEpoch()
	valid := simple(0, histogram.UnknownCounterReset, 1, 2)
	ints := []struct {
		name string
		h    *histogram.Histogram
	}{
		{"spans_longer_than_buckets", &histogram.Histogram{Schema: 0, Count: 2, Sum: 1,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 3}}, PositiveBuckets: []int64{1, 0}}},
		{"negative_spans_shorter", &histogram.Histogram{Schema: 0, Count: 3, Sum: 1,
			NegativeSpans: []histogram.Span{{Offset: 0, Length: 1}}, NegativeBuckets: []int64{1, 1}}},
		{"negative_bucket", &histogram.Histogram{Schema: 0, Count: 1, Sum: 1,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{2, -3}}},
		{"count_mismatch", &histogram.Histogram{Schema: 0, Count: 5, Sum: 1,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{1, 1}}},
		{"custom_without_bounds", &histogram.Histogram{Schema: histogram.CustomBucketsSchema, Count: 1, Sum: 1,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{1, -1}}},
		{"exponential_with_bounds", &histogram.Histogram{Schema: 0, Count: 1, Sum: 1, CustomValues: []float64{1},
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{1}}},
		{"unknown_schema", &histogram.Histogram{Schema: 100, Count: 1, Sum: 1,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{1}}},
	}
	floats := []struct {
		name string
		fh   *histogram.FloatHistogram
	}{
		{"float_negative_bucket", &histogram.FloatHistogram{Schema: 0, Count: 1, Sum: 1,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []float64{1, -0.5}}},
		{"float_negative_count", &histogram.FloatHistogram{Schema: 0, Count: -1, Sum: 1}},
		{"float_negative_zero_count", &histogram.FloatHistogram{Schema: 0, Count: 1, Sum: 1, ZeroThreshold: 0.1, ZeroCount: -1}},
		{"float_spans_shorter", &histogram.FloatHistogram{Schema: 0, Count: 2, Sum: 1,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []float64{1, 1}}},
	}
	type invalidCase struct {
		name string
		smp  hsample
	}
	var cases []invalidCase
	for _, c := range ints {
		cases = append(cases, invalidCase{c.name, hsample{t: e + 15_000, h: c.h}})
	}
	for _, c := range floats {
		cases = append(cases, invalidCase{c.name, hsample{t: e + 15_000, fh: c.fh}})
	}
	var want []hseries
	for _, c := range cases {
		if validate(c.smp) == nil {
			t.Fatalf("%s: Prometheus's Validate accepts %v", c.name, c.smp)
		}
		for _, proto := range []string{"1.0", "2.0"} {
			bad := hseries{labels.FromStrings("__name__", "invalid_bad", "case", c.name, "proto", proto), []hsample{{t: e, h: valid}, c.smp}}
			good := hseries{labels.FromStrings("__name__", "invalid_good", "case", c.name, "proto", proto), []hsample{{t: e, h: valid}}}
			want = append(want, good)
			var msg string
			if proto == "1.0" {
				var resp *http.Response
				if resp, msg = s.post(t, v1Body(t, good, bad)); resp.StatusCode != http.StatusBadRequest {
					t.Errorf("%s over %s: status %d %s, want 400", c.name, proto, resp.StatusCode, msg)
				}
			} else {
				stats, err := prometheus3Client(t, s).Store(context.Background(), v2HistogramBody(t, good, bad), 0)
				var recoverable remote.RecoverableError
				if err == nil || errors.As(err, &recoverable) || !strings.Contains(err.Error(), "400") {
					t.Errorf("%s over %s: error %v, want a 400 that Prometheus does not retry", c.name, proto, err)
				}
				if err != nil {
					msg = err.Error()
				}
				if !stats.Confirmed || stats.Histograms != 1 {
					t.Errorf("%s over %s: response stats %+v, want the valid series' 1 histogram confirmed", c.name, proto, stats)
				}
			}
			if !strings.Contains(msg, "invalid_bad") || !strings.Contains(msg, c.name) || strings.Contains(msg, "invalid_good") {
				t.Errorf("%s over %s: message %q, want it to name invalid_bad{case=%q} alone", c.name, proto, msg, c.name)
			}
		}
	}
	mint, maxt := e-60_000, e+60_000
	reportDiffs(t, "SAMPLES", diffRead(readSamplesRaw(t, s, mint, maxt, `__name__=~"invalid_.*"`), asWritten(want)))
}
