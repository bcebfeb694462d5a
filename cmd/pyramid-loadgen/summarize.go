package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"text/tabwriter"
)

// The receivers -receiver names.
const (
	receiverPyramid    = "pyramid"
	receiverPrometheus = "prometheus"
)

// runFigures are the figures of one float ingest run that the summary compares.
type runFigures struct {
	samplesPerSec float64
	// cpuPerMillion counts the receiver and, for pyramid, its ClickHouse, during the
	// ingest; cpuWithRollups, for pyramid, until its rollups had caught up (Prometheus:
	// the same as cpuPerMillion).
	cpuPerMillion, cpuWithRollups float64
	// peakRSSMiB is the receiver's VmHWM (for pyramid, without ClickHouse, and until its
	// rollups had caught up when that was measured).
	peakRSSMiB     float64
	latencyP99Ms   float64
	ingestToDirect float64 // pyramid only, 0 when the run had no direct phase
}

// figures extracts a run's figures from its result; ok is false for a result without a
// float ingest phase.
func figures(r *result) (f runFigures, ok bool) {
	in := r.Ingest
	if in == nil || in.Samples == 0 {
		return f, false
	}
	f.samplesPerSec, f.latencyP99Ms, f.ingestToDirect = in.SamplesPerSec, in.LatencyP99Ms, r.IngestToDirectRatio
	receiver := in.Pyramid
	if r.Receiver == receiverPrometheus {
		receiver = in.Prometheus
	}
	cpu := 0.0
	if receiver != nil {
		cpu += receiver.CPUSeconds
		f.peakRSSMiB = float64(receiver.VmHWMKiB) / 1024
	}
	if in.ClickHouse != nil {
		cpu += in.ClickHouse.CPUSeconds
	}
	f.cpuPerMillion = cpu / (float64(in.Samples) / 1e6)
	f.cpuWithRollups = f.cpuPerMillion
	if in.PyramidWithRollups != nil && in.ClickHouseWithRollups != nil {
		f.cpuWithRollups = (in.PyramidWithRollups.CPUSeconds + in.ClickHouseWithRollups.CPUSeconds) / (float64(in.Samples) / 1e6)
		f.peakRSSMiB = float64(in.PyramidWithRollups.VmHWMKiB) / 1024
	}
	return f, true
}

// spread is the median, minimum and maximum of some figures.
type spread struct{ median, lo, hi float64 }

// spreadOf returns the median (the mean of the middle two for an even count), the
// minimum and the maximum of xs; NaN throughout when xs is empty.
func spreadOf(xs []float64) spread {
	if len(xs) == 0 {
		return spread{math.NaN(), math.NaN(), math.NaN()}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{m, s[0], s[len(s)-1]}
}

// pairRatios divides a[i] by b[i] for every run index both have: runs are interleaved,
// so run i of each receiver saw the same machine at nearly the same time.
func pairRatios(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i] != 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

// summarize is the summarize command: it reads -json-file results of interleaved runs
// against pyramid and Prometheus, in run order, and prints each figure's median and
// spread per receiver and pyramid's ratios to Prometheus, per run and their median.
func summarize(files []string, out io.Writer) error {
	if len(files) == 0 {
		return errors.New("summarize: no result files given")
	}
	runs := map[string][]runFigures{}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			return fmt.Errorf("summarize: %w", err)
		}
		var r result
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("summarize: decode %s: %w", name, err)
		}
		f, ok := figures(&r)
		if !ok {
			return fmt.Errorf("summarize: %s has no float ingest phase", name)
		}
		runs[r.Receiver] = append(runs[r.Receiver], f)
	}
	py, pm := runs[receiverPyramid], runs[receiverPrometheus]
	col := func(rs []runFigures, get func(runFigures) float64) []float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = get(r)
		}
		return xs
	}
	type row struct {
		name string
		get  func(runFigures) float64
		goal string
	}
	rows := []row{
		{"samples/s", func(f runFigures) float64 { return f.samplesPerSec }, ">= 2 (issue 15)"},
		{"CPU s per million samples (pyramid with its ClickHouse)", func(f runFigures) float64 { return f.cpuPerMillion }, "<= 0.4 (issue 15)"},
		{"  the same, counting pyramid's rollups until caught up", func(f runFigures) float64 { return f.cpuWithRollups }, ""},
		{"peak RSS MiB (VmHWM of pyramid or Prometheus)", func(f runFigures) float64 { return f.peakRSSMiB }, ""},
		{"request latency p99 ms", func(f runFigures) float64 { return f.latencyP99Ms }, ""},
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "summary of %d pyramid and %d Prometheus runs (medians, [min..max])\n", len(py), len(pm))
	fmt.Fprintf(tw, "figure\tpyramid\tprometheus\tpyramid/prometheus per run\tmedian ratio\tgoal\n")
	for _, r := range rows {
		a, b := col(py, r.get), col(pm, r.get)
		ratios := pairRatios(a, b)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.name, formatSpread(spreadOf(a)), formatSpread(spreadOf(b)),
			formatList(ratios), formatFigure(spreadOf(ratios).median), r.goal)
	}
	if direct := col(py, func(f runFigures) float64 { return f.ingestToDirect }); len(direct) > 0 && slices.Max(direct) > 0 {
		fmt.Fprintf(tw, "pyramid ingest / direct clickhouse-go inserts\t%s\t\t%s\t\t>= 0.5 (issue 15)\n", formatSpread(spreadOf(direct)), formatList(direct))
	}
	return tw.Flush()
}

func formatFigure(x float64) string {
	switch {
	case math.IsNaN(x):
		return "-"
	case math.Abs(x) >= 1000:
		return fmt.Sprintf("%.0f", x)
	case math.Abs(x) >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.3g", x)
}

func formatSpread(s spread) string {
	if math.IsNaN(s.median) {
		return "-"
	}
	return fmt.Sprintf("%s [%s..%s]", formatFigure(s.median), formatFigure(s.lo), formatFigure(s.hi))
}

func formatList(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	s := ""
	for i, x := range xs {
		if i > 0 {
			s += ", "
		}
		s += formatFigure(x)
	}
	return s
}
