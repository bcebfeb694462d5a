package adapter

import (
	"fmt"

	"github.com/prometheus/prometheus/model/histogram"

	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// checkHistograms applies Prometheus's rules for native histograms to one series'
// histograms: each must pass Prometheus's own Validate, and one with more than maxBuckets
// buckets (0: no limit) has its resolution reduced until it fits, as Prometheus's
// native_histogram_bucket_limit does at scrape time. It returns what is wrong, or "".
// Histograms are changed in place when reduced.
func checkHistograms(hists []store.HistogramSample, maxBuckets int) string {
	for i := range hists {
		h := &hists[i]
		var err error
		if h.H != nil {
			err = h.H.Validate()
		} else {
			err = h.FH.Validate()
		}
		if err != nil {
			return fmt.Sprintf("invalid native histogram at %s: %v", formatMs(h.T), err)
		}
		if err := limitBuckets(h, maxBuckets); err != nil {
			return fmt.Sprintf("native histogram at %s: %v", formatMs(h.T), err)
		}
	}
	return ""
}

// limitBuckets reduces h's resolution one schema at a time until it has at most max
// buckets, as Prometheus's bucketLimitAppender does: custom buckets cannot be reduced, nor
// can the coarsest exponential schema.
func limitBuckets(h *store.HistogramSample, max int) error {
	if max <= 0 {
		return nil
	}
	buckets := func() int {
		if h.H != nil {
			return len(h.H.PositiveBuckets) + len(h.H.NegativeBuckets)
		}
		return len(h.FH.PositiveBuckets) + len(h.FH.NegativeBuckets)
	}
	schema := func() int32 {
		if h.H != nil {
			return h.H.Schema
		}
		return h.FH.Schema
	}
	for n := buckets(); n > max; n = buckets() {
		if !histogram.IsExponentialSchema(schema()) || schema() <= histogram.ExponentialSchemaMin {
			return fmt.Errorf("%d buckets, more than the limit of %d, at schema %d, which cannot be reduced", n, max, schema())
		}
		var err error
		if h.H != nil {
			err = h.H.ReduceResolution(h.H.Schema - 1)
		} else {
			err = h.FH.ReduceResolution(h.FH.Schema - 1)
		}
		if err != nil {
			return fmt.Errorf("reduce resolution of %d buckets from schema %d: %w", n, schema(), err)
		}
	}
	return nil
}
