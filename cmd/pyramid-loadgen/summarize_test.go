package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpreadOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		xs   []float64
		want spread
	}{
		{"one", []float64{3}, spread{3, 3, 3}},
		{"odd count, unsorted", []float64{5, 1, 3}, spread{3, 1, 5}},
		{"even count takes the mean of the middle two", []float64{4, 1, 2, 10}, spread{3, 1, 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := spreadOf(tc.xs); got != tc.want {
				t.Errorf("spreadOf(%v) = %+v, want %+v", tc.xs, got, tc.want)
			}
		})
	}
	if got := spreadOf(nil); !math.IsNaN(got.median) {
		t.Errorf("spreadOf(nil).median = %v, want NaN", got.median)
	}
}

func TestPairRatios(t *testing.T) {
	got := pairRatios([]float64{10, 9, 8}, []float64{5, 0})
	// Run 3 has no partner, and run 2's zero divisor is skipped.
	if len(got) != 1 || got[0] != 2 {
		t.Errorf("pairRatios = %v, want [2]", got)
	}
}

func TestFigures(t *testing.T) {
	py := &result{Receiver: receiverPyramid, IngestToDirectRatio: 0.3, Ingest: &ingestResult{
		Samples: 2_000_000, SamplesPerSec: 500_000, LatencyP99Ms: 120,
		Pyramid:    &procStats{CPUSeconds: 3, VmHWMKiB: 150 * 1024},
		ClickHouse: &procStats{CPUSeconds: 1, VmHWMKiB: 900 * 1024},
	}}
	f, ok := figures(py)
	// pyramid and its ClickHouse: 4 CPU s for 2 M samples; RSS is pyramid's alone.
	want := runFigures{samplesPerSec: 500_000, cpuPerMillion: 2, cpuWithRollups: 2, peakRSSMiB: 150, latencyP99Ms: 120, ingestToDirect: 0.3}
	if !ok || f != want {
		t.Errorf("pyramid figures = %+v, %v; want %+v", f, ok, want)
	}
	// Measured until the rollups caught up: 5 + 3 CPU s for 2 M samples, and the peak then.
	py.Ingest.PyramidWithRollups = &procStats{CPUSeconds: 5, VmHWMKiB: 200 * 1024}
	py.Ingest.ClickHouseWithRollups = &procStats{CPUSeconds: 3}
	f, _ = figures(py)
	want.cpuWithRollups, want.peakRSSMiB = 4, 200
	if f != want {
		t.Errorf("pyramid figures with rollups = %+v; want %+v", f, want)
	}
	pm := &result{Receiver: receiverPrometheus, Ingest: &ingestResult{
		Samples: 1_000_000, SamplesPerSec: 400_000,
		Prometheus: &procStats{CPUSeconds: 3.5, VmHWMKiB: 512 * 1024},
	}}
	f, ok = figures(pm)
	want = runFigures{samplesPerSec: 400_000, cpuPerMillion: 3.5, cpuWithRollups: 3.5, peakRSSMiB: 512}
	if !ok || f != want {
		t.Errorf("prometheus figures = %+v, %v; want %+v", f, ok, want)
	}
	if _, ok := figures(&result{Receiver: receiverPyramid}); ok {
		t.Error("a result without an ingest phase has figures")
	}
}

func TestSummarizeReadsRunsInOrder(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	files := []string{
		write("py1.json", `{"receiver":"pyramid","ingest":{"samples":1000000,"samples_per_sec":800000,"pyramid":{"cpu_seconds":1,"vm_hwm_kib":102400}}}`),
		write("pm1.json", `{"receiver":"prometheus","ingest":{"samples":1000000,"samples_per_sec":400000,"prometheus":{"cpu_seconds":4,"vm_hwm_kib":204800}}}`),
	}
	var out strings.Builder
	if err := summarize(files, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1 pyramid and 1 Prometheus runs", "800000 [800000..800000]", "0.25"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if err := summarize([]string{write("bad.json", `{"receiver":"pyramid"}`)}, &out); err == nil {
		t.Error("summarize accepted a result without an ingest phase")
	}
}
