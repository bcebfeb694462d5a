package adapter

import (
	"testing"

	"github.com/prometheus/prometheus/model/histogram"

	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// TestLimitBuckets checks the bucket limit against resolutions reduced by hand: at schema 1
// bucket i holds (2^((i-1)/2), 2^(i/2)], and one schema coarser buckets i and i+1 of an odd
// i merge into bucket (i+1)/2.
func TestLimitBuckets(t *testing.T) {
	schema1 := func() *histogram.Histogram {
		return &histogram.Histogram{Schema: 1, Count: 10, Sum: 20,
			PositiveSpans: []histogram.Span{{Offset: 1, Length: 4}}, PositiveBuckets: []int64{1, 1, 1, 1}} // counts 1 2 3 4
	}
	for _, tc := range []struct {
		name       string
		h          store.HistogramSample
		limit      int
		wantSchema int32
		wantSpans  []histogram.Span
		wantCounts []float64 // absolute counts
		wantErr    bool
	}{
		{name: "no limit", h: store.HistogramSample{H: schema1()}, limit: 0,
			wantSchema: 1, wantSpans: []histogram.Span{{Offset: 1, Length: 4}}, wantCounts: []float64{1, 2, 3, 4}},
		{name: "within the limit", h: store.HistogramSample{H: schema1()}, limit: 4,
			wantSchema: 1, wantSpans: []histogram.Span{{Offset: 1, Length: 4}}, wantCounts: []float64{1, 2, 3, 4}},
		{name: "one schema down", h: store.HistogramSample{H: schema1()}, limit: 2,
			wantSchema: 0, wantSpans: []histogram.Span{{Offset: 1, Length: 2}}, wantCounts: []float64{3, 7}},
		{name: "two schemas down", h: store.HistogramSample{H: schema1()}, limit: 1,
			wantSchema: -1, wantSpans: []histogram.Span{{Offset: 1, Length: 1}}, wantCounts: []float64{10}},
		{name: "float histogram", h: store.HistogramSample{FH: schema1().ToFloat(nil)}, limit: 2,
			wantSchema: 0, wantSpans: []histogram.Span{{Offset: 1, Length: 2}}, wantCounts: []float64{3, 7}},
		{name: "custom buckets cannot be reduced", limit: 1, wantErr: true, h: store.HistogramSample{H: &histogram.Histogram{
			Schema: histogram.CustomBucketsSchema, Count: 3, PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}},
			PositiveBuckets: []int64{1, 1}, CustomValues: []float64{1, 2}}}},
		{name: "the coarsest schema cannot be reduced", limit: 1, wantErr: true, h: store.HistogramSample{H: &histogram.Histogram{
			Schema: -4, Count: 2, PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{1, 0}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := limitBuckets(&tc.h, tc.limit)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error, want one")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fh := tc.h.FH
			if tc.h.H != nil {
				if err := tc.h.H.Validate(); err != nil {
					t.Fatalf("reduced histogram is invalid: %v", err)
				}
				fh = tc.h.H.ToFloat(nil)
			}
			if fh.Schema != tc.wantSchema {
				t.Errorf("schema %d, want %d", fh.Schema, tc.wantSchema)
			}
			if len(fh.PositiveSpans) != len(tc.wantSpans) {
				t.Fatalf("spans %v, want %v", fh.PositiveSpans, tc.wantSpans)
			}
			for i := range tc.wantSpans {
				if fh.PositiveSpans[i] != tc.wantSpans[i] {
					t.Errorf("spans %v, want %v", fh.PositiveSpans, tc.wantSpans)
				}
			}
			if len(fh.PositiveBuckets) != len(tc.wantCounts) {
				t.Fatalf("buckets %v, want %v", fh.PositiveBuckets, tc.wantCounts)
			}
			for i, c := range tc.wantCounts {
				if fh.PositiveBuckets[i] != c {
					t.Errorf("buckets %v, want %v", fh.PositiveBuckets, tc.wantCounts)
				}
			}
			if fh.Count != 10 {
				t.Errorf("count %v, want 10: reducing resolution loses no observation", fh.Count)
			}
		})
	}
}

// TestBatchMarked: histograms mark units like samples, and the batch's own columns keep
// their length and contents even when they have room to grow.
func TestBatchMarked(t *testing.T) {
	b := Batch{Targets: make([]uint64, 1, 8), Timestamps: make([]int64, 1, 8)}
	b.Targets[0], b.Timestamps[0] = 1, 10
	if targets, stamps := b.Marked(); len(targets) != 1 || targets[0] != 1 || stamps[0] != 10 {
		t.Fatalf("without histograms: %v %v, want [1] [10]", targets, stamps)
	}
	b.Histograms = []store.HistogramRow{{Target: 2, HistogramSample: store.HistogramSample{T: 20}}}
	targets, stamps := b.Marked()
	if len(targets) != 2 || targets[1] != 2 || stamps[1] != 20 || len(stamps) != 2 {
		t.Fatalf("with a histogram: %v %v, want [1 2] [10 20]", targets, stamps)
	}
	targets[0] = 99
	if b.Targets[0] != 1 || len(b.Targets) != 1 {
		t.Errorf("Marked shares or grows the batch's columns: %v", b.Targets)
	}
}
