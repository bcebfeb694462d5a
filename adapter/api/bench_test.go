package api

import (
	"fmt"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
)

// BenchmarkEncodeMatrix encodes a 30-day dashboard's answer at a 1 h step: 500 series of
// 720 points.
func BenchmarkEncodeMatrix(b *testing.B) {
	m := make(promql.Matrix, 500)
	for i := range m {
		m[i].Metric = labels.FromStrings("__name__", "http_requests_total", "instance", fmt.Sprintf("host-%d:9100", i), "job", "node")
		m[i].Floats = make([]promql.FPoint, 720)
		for j := range m[i].Floats {
			m[i].Floats[j] = promql.FPoint{T: 1_700_000_000_000 + int64(j)*3_600_000, F: float64(i*j) / 7}
		}
	}
	data := &queryData{resultType: m.Type(), result: m}
	var size int
	b.ReportAllocs()
	for b.Loop() {
		if err := encodeSuccess(data, nil, nil, func(body []byte) { size = len(body) }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(size), "bytes/response")
}
