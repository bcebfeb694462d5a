package adapter

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
)

// toPrompb converts a parsed request into the generated types, for comparing against
// prompb's own Unmarshal.
func toPrompb(r *wireRequest) *prompb.WriteRequest {
	out := &prompb.WriteRequest{Metadata: r.metadata}
	for i := range r.series {
		s := &r.series[i]
		var ts prompb.TimeSeries
		for _, smp := range r.seriesSamples(s) {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: smp.Timestamp, Value: smp.Value})
		}
		for _, l := range r.seriesLabels(s) {
			ts.Labels = append(ts.Labels, prompb.Label{Name: string(l.name(r.buf)), Value: string(l.value(r.buf))})
		}
		for _, h := range r.seriesHistograms(s) {
			if h.H != nil {
				ts.Histograms = append(ts.Histograms, prompb.FromIntHistogram(h.T, h.H))
			} else {
				ts.Histograms = append(ts.Histograms, prompb.FromFloatHistogram(h.T, h.FH))
			}
		}
		out.Timeseries = append(out.Timeseries, ts)
	}
	return out
}

// parseForTest encodes req and parses it back the way the handler does.
func parseForTest(t testing.TB, req *prompb.WriteRequest) *wireRequest {
	t.Helper()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseWriteRequest(raw, nil, nil, nil)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return r
}

// sameRequest reports the first difference between two requests, "" if none. Values are
// compared by their bits, so NaN payloads (stale markers) count.
func sameRequest(a, b *prompb.WriteRequest) string {
	if len(a.Timeseries) != len(b.Timeseries) || len(a.Metadata) != len(b.Metadata) {
		return "series or metadata counts differ"
	}
	for i := range a.Timeseries {
		x, y := a.Timeseries[i], b.Timeseries[i]
		if len(x.Labels) != len(y.Labels) || len(x.Samples) != len(y.Samples) || len(x.Histograms) != len(y.Histograms) {
			return "label, sample or histogram counts differ in a series"
		}
		for j := range x.Labels {
			if x.Labels[j].Name != y.Labels[j].Name || x.Labels[j].Value != y.Labels[j].Value {
				return "a label differs"
			}
		}
		for j := range x.Samples {
			if x.Samples[j].Timestamp != y.Samples[j].Timestamp || math.Float64bits(x.Samples[j].Value) != math.Float64bits(y.Samples[j].Value) {
				return "a sample differs"
			}
		}
		for j := range x.Histograms {
			if !sameHistogram(x.Histograms[j], y.Histograms[j]) {
				return fmt.Sprintf("histogram %d differs: %v vs %v", j, x.Histograms[j], y.Histograms[j])
			}
		}
	}
	for i := range a.Metadata {
		x, y := a.Metadata[i], b.Metadata[i]
		if x.Type != y.Type || x.MetricFamilyName != y.MetricFamilyName || x.Help != y.Help || x.Unit != y.Unit {
			return "metadata differs"
		}
	}
	return ""
}

// seedHistograms are histograms of every kind for the fuzzers' seeds: integer with spans
// on both sides and a zero bucket, float with a stale-marker sum, and custom buckets.
func seedHistograms() []prompb.Histogram {
	return []prompb.Histogram{
		prompb.FromIntHistogram(10, &histogram.Histogram{Schema: 3, ZeroThreshold: 1e-9, ZeroCount: 2, Count: 9, Sum: -1.5,
			CounterResetHint: histogram.CounterReset,
			PositiveSpans:    []histogram.Span{{Offset: -2, Length: 2}, {Offset: 3, Length: 1}}, PositiveBuckets: []int64{1, 2, -2},
			NegativeSpans: []histogram.Span{{Offset: 0, Length: 1}}, NegativeBuckets: []int64{3}}),
		prompb.FromFloatHistogram(20, &histogram.FloatHistogram{Schema: -4, Count: 2.5, Sum: math.Float64frombits(0x7ff0000000000002),
			CounterResetHint: histogram.GaugeType,
			PositiveSpans:    []histogram.Span{{Offset: 1, Length: 1}}, PositiveBuckets: []float64{2.5}}),
		prompb.FromIntHistogram(30, &histogram.Histogram{Schema: histogram.CustomBucketsSchema, Count: 3, Sum: 4,
			PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{1, 1},
			CustomValues: []float64{0.5, 1, math.Inf(1)}}),
	}
}

// sameHistogram compares two histogram messages bit for bit as Prometheus reads them:
// each goes through Prometheus's model form and back, which gives absent and zero oneof
// counts one form, and the encodings are compared.
func sameHistogram(x, y prompb.Histogram) bool {
	canonical := func(h prompb.Histogram) []byte {
		var c prompb.Histogram
		if h.IsFloatHistogram() {
			c = prompb.FromFloatHistogram(h.Timestamp, h.ToFloatHistogram())
		} else {
			c = prompb.FromIntHistogram(h.Timestamp, h.ToIntHistogram())
		}
		b, err := c.Marshal()
		if err != nil {
			panic(err)
		}
		return b
	}
	return bytes.Equal(canonical(x), canonical(y))
}

func TestParseWriteRequestMatchesPrompb(t *testing.T) {
	req := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{Labels: lbls("__name__", "up", "job", "a"), Samples: []prompb.Sample{{Value: math.Float64frombits(0x7ff0000000000002), Timestamp: -1}, {Value: 2, Timestamp: math.MaxInt64}}},
			{Labels: lbls("__name__", "h"), Histograms: []prompb.Histogram{{Timestamp: 5, Count: &prompb.Histogram_CountInt{CountInt: 3}}}},
			{Labels: lbls("__name__", "ex"), Samples: []prompb.Sample{{Value: 1, Timestamp: 1}},
				Exemplars: []prompb.Exemplar{{Labels: lbls("trace_id", "abc"), Value: 1, Timestamp: 1}}},
			{},
		},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_GAUGE, MetricFamilyName: "up", Help: "help", Unit: "s"}},
	}
	got := toPrompb(parseForTest(t, req))
	if diff := sameRequest(got, req); diff != "" {
		t.Errorf("%s:\n got %v\nwant %v", diff, got, req)
	}
}

// FuzzParseWriteRequest holds the zero-copy parser to prompb's generated Unmarshal: on any
// input where both succeed they must agree on every label and every value's bits, and the
// parser may be stricter than Unmarshal only for protobuf groups and for bytes that
// protowire, the reference wire decoder, calls malformed; no sender emits either.
func FuzzParseWriteRequest(f *testing.F) {
	for _, req := range []*prompb.WriteRequest{
		{Timeseries: []prompb.TimeSeries{{Labels: lbls("__name__", "up", "job", "a\"b"), Samples: []prompb.Sample{{Value: math.NaN(), Timestamp: -3}}}}},
		{Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "x", Help: "y"}}},
		{Timeseries: []prompb.TimeSeries{{Labels: lbls("__name__", "h"), Histograms: []prompb.Histogram{{Timestamp: 1}}}}},
		{Timeseries: []prompb.TimeSeries{{Labels: lbls("__name__", "h"), Histograms: seedHistograms()}}},
	} {
		raw, err := req.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var want prompb.WriteRequest
		wantErr := want.Unmarshal(raw)
		got, err := parseWriteRequest(raw, nil, nil, nil)
		switch {
		case err == nil && wantErr == nil:
			if diff := sameRequest(toPrompb(got), &want); diff != "" {
				t.Fatalf("%s:\n got %v\nwant %v", diff, toPrompb(got), &want)
			}
		case err == nil && wantErr != nil:
			t.Fatalf("parser accepted what prompb rejects (%v): %v", wantErr, toPrompb(got))
		case err != nil && wantErr == nil && !errors.Is(err, errGroup) && !errors.Is(err, errMalformed):
			t.Fatalf("parser rejected what prompb accepts: %v", err)
		}
	})
}
