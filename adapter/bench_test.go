package adapter

import (
	"fmt"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// prometheusShapedRequest builds what Prometheus 2.44+ sends: 2,000 TimeSeries entries of one
// sample each, drawn from series with node-exporter-like labels, repeating within the request.
func prometheusShapedRequest(series int) *prompb.WriteRequest {
	const samples = 2000
	req := &prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, 0, samples)}
	for i := range samples {
		s := i % series
		req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
			Labels: []prompb.Label{
				{Name: "__name__", Value: fmt.Sprintf("node_metric_%d_total", s%40)},
				{Name: "cpu", Value: fmt.Sprint(s % 8)},
				{Name: "instance", Value: fmt.Sprintf("host-%03d.example.org:9100", s/400)},
				{Name: "job", Value: "node"},
				{Name: "mode", Value: []string{"idle", "user", "system", "iowait", "irq"}[s%5]},
			},
			Samples: []prompb.Sample{{Value: float64(i) * 1.5, Timestamp: 1_700_000_000_000 + int64(i/series)*15000}},
		})
	}
	return req
}

// BenchmarkDecodeValidate measures the CPU and allocations one 2,000-sample request costs
// before it reaches the batcher: snappy + protobuf decode, then validation into columns.
// The sub-benchmarks split the two so their ratio shows where the time goes; run with
// `go test -run '^$' -bench DecodeValidate -benchmem ./adapter/`.
func BenchmarkDecodeValidate(b *testing.B) {
	req := prometheusShapedRequest(1000)
	raw, err := req.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	body := encodeWriteRequest(b, req)
	samples := float64(len(req.Timeseries))

	// The baseline: what decoding cost with the generated prompb code, which allocates a
	// string per label name and value.
	b.Run("decode-prompb-baseline", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			plain, err := snappy.Decode(nil, body)
			if err != nil {
				b.Fatal(err)
			}
			var r prompb.WriteRequest
			if err := r.Unmarshal(plain); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(samples*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if _, err := decodeWriteRequest(body, 1<<30, protoWriteV1, nil, nil, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(samples*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	})
	b.Run("validate", func(b *testing.B) {
		// Validation sorts labels in place, so each iteration gets a fresh decode, which
		// is excluded from the timing.
		b.ReportAllocs()
		cache := newSeriesCache(1 << 20)
		for b.Loop() {
			b.StopTimer()
			r, _ := decodeWriteRequest(body, 1<<30, protoWriteV1, nil, nil, nil)
			b.StartTimer()
			validateInto(b, cache, r)
		}
		b.ReportMetric(samples*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	})
	b.Run("decode+validate", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		cache := newSeriesCache(1 << 20)
		for b.Loop() {
			r, err := decodeWriteRequest(body, 1<<30, protoWriteV1, nil, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			validateInto(b, cache, r)
		}
		b.ReportMetric(samples*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	})
	// As the handler runs: Prometheus sends each series again at every scrape, in the same
	// bytes, so the label cache knows all but the first request's entries; and then with
	// the request's buffers reused too, as the handler reuses them.
	for _, reuse := range []bool{false, true} {
		name := "decode+validate-label-cache"
		if reuse {
			name += "-reused-buffers"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			cache, known := newSeriesCache(1<<20), newLabelCache(1<<20)
			var bufs *decodeBuffers
			if reuse {
				bufs = &decodeBuffers{}
			}
			for b.Loop() {
				r, err := decodeWriteRequest(body, 1<<30, protoWriteV1, nil, known, bufs)
				if err != nil {
					b.Fatal(err)
				}
				var batch Batch
				v := validator{cache: cache, labels: known, accept: anyTime()}
				if verr := v.toBatch(r, &batch); verr != nil {
					b.Fatal(verr)
				}
				cache.add(batch.Series)
				if reuse {
					r.release()
				}
			}
			b.ReportMetric(samples*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}

// validateInto validates r as the handler does and records its series as catalogued, as a
// successful insert would.
func validateInto(b *testing.B, cache *seriesCache, r *wireRequest) {
	var batch Batch
	v := validator{cache: cache, accept: anyTime()}
	if verr := v.toBatch(r, &batch); verr != nil {
		b.Fatal(verr)
	}
	cache.add(batch.Series)
}
