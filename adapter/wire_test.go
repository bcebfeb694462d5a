package adapter

import (
	"errors"
	"math"
	"testing"

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
		for range s.histograms {
			ts.Histograms = append(ts.Histograms, prompb.Histogram{})
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
	r, err := parseWriteRequest(raw, nil)
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
	}
	for i := range a.Metadata {
		x, y := a.Metadata[i], b.Metadata[i]
		if x.Type != y.Type || x.MetricFamilyName != y.MetricFamilyName || x.Help != y.Help || x.Unit != y.Unit {
			return "metadata differs"
		}
	}
	return ""
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
		got, err := parseWriteRequest(raw, nil)
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
