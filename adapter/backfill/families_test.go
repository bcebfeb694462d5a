package backfill

import (
	"maps"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/tsdb/record"
)

// TestFamilies: the families a series name can belong to are the name and the name
// without one family suffix, so that --match keeps a classic histogram's metadata.
func TestFamilies(t *testing.T) {
	got := families(map[string]struct{}{"lat_seconds_bucket": {}, "req_total": {}, "up": {}, "_sum": {}})
	want := []string{"_sum", "lat_seconds", "lat_seconds_bucket", "req", "req_total", "up"}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) {
		t.Errorf("families %q, want %q", keys, want)
	}
}

// TestFamilyOf: only histogram and summary series lose their suffix.
func TestFamilyOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  record.MetricType
		want string
	}{
		{"lat_seconds_bucket", record.HistogramSample, "lat_seconds"},
		{"lat_seconds_sum", record.Summary, "lat_seconds"},
		{"q_gcount", record.GaugeHistogram, "q"},
		{"lat_seconds", record.HistogramSample, "lat_seconds"},
		{"req_total", record.Counter, "req_total"},
		{"x_count", record.Gauge, "x_count"},
		{"_bucket", record.HistogramSample, "_bucket"},
	} {
		if got := familyOf(tc.name, uint8(tc.typ)); got != tc.want {
			t.Errorf("familyOf(%q, %d) = %q, want %q", tc.name, tc.typ, got, tc.want)
		}
	}
}
