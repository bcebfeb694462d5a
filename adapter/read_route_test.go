package adapter_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/rollup"
)

const (
	minuteMs = int64(60_000)
	hourMs   = 60 * minuteMs
	// routeStepMs and routeOffsetMs place the test's samples every 15 s, 7 s past the grid,
	// so that no sample lies on a bucket boundary.
	routeStepMs   = int64(15_000)
	routeOffsetMs = int64(7_000)
)

// routeData is the routing tests' data: a gauge and a counter over six whole hours ending
// two hours ago, with integer values so that every sum and mean below is exact.
type routeData struct {
	start, end int64 // hour boundaries; samples lie in [start, end)
	ts         []int64
	gauge      []float64
	counter    []float64
}

func newRouteData() routeData {
	end := (time.Now().UnixMilli()/hourMs - 2) * hourMs
	d := routeData{start: end - 6*hourMs, end: end}
	c := 0.0
	for k := int64(0); ; k++ {
		t := d.start + routeOffsetMs + k*routeStepMs
		if t >= end {
			break
		}
		d.ts = append(d.ts, t)
		// A gauge that wanders between -50 and 50 with a spike every 97 samples.
		g := float64((k*37)%101) - 50
		if k%97 == 0 {
			g = 1000
		}
		d.gauge = append(d.gauge, g)
		// A counter growing by 0 to 6 per scrape, restarting at 3 twice.
		c += float64(k % 7)
		if k == 500 || k == 1111 {
			c = 3
		}
		d.counter = append(d.counter, c)
	}
	return d
}

func (d routeData) write(t *testing.T, s *testServer) {
	t.Helper()
	g := series("route_gauge", []string{"job", "route"})
	c := series("route_counter_total", []string{"job", "route"})
	for i, ts := range d.ts {
		g.Samples = append(g.Samples, prompb.Sample{Timestamp: ts, Value: d.gauge[i]})
		c.Samples = append(c.Samples, prompb.Sample{Timestamp: ts, Value: d.counter[i]})
	}
	s.write(t, g, c)
}

// bucketPoints is the oracle for bucket kinds, computed straight from the samples: for
// each bucket of width res in [from, to), the reduction of its samples, stamped at the
// bucket's last millisecond.
func (d routeData) bucketPoints(vs []float64, res, from, to int64, reduce func([]float64) float64) []prompb.Sample {
	var out []prompb.Sample
	for b := from; b < to; b += res {
		var in []float64
		for i, t := range d.ts {
			if t >= b && t < b+res {
				in = append(in, vs[i])
			}
		}
		if len(in) > 0 {
			out = append(out, prompb.Sample{Timestamp: b + res - 1, Value: reduce(in)})
		}
	}
	return out
}

func maxOf(vs []float64) float64 {
	m := vs[0]
	for _, v := range vs {
		m = max(m, v)
	}
	return m
}

func sumOf(vs []float64) float64 {
	s := 0.0
	for _, v := range vs {
		s += v
	}
	return s
}

func meanOf(vs []float64) float64 { return sumOf(vs) / float64(len(vs)) }

// newRoutedServer starts a server routing reads over the default tiers, stores d through
// its write path and computes the rollups.
func newRoutedServer(t *testing.T, d routeData) *testServer {
	t.Helper()
	tiers, err := rollup.ParseTiers("raw:30d,5m:365d,1h:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, func(c *adapter.Config) {
		c.Tiers, c.ReadRollups, c.RollupUnitWidth = tiers, true, rollup.UnitWidth(tiers)
		// Every read relearns the tiers' extents, so that the raw deletion below is seen.
		c.ReadTierRefresh = time.Nanosecond
	})
	d.write(t, s)
	m, err := rollup.NewMaterializer(rollup.MaterializerConfig{
		Database: s.db, Tiers: tiers, Interval: time.Second, MaxUnits: 1000, TargetsPerRead: 64, Now: time.Now,
	}, s.conn, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// The materializer versions by the second, and a unit marked in the second of its
	// computation is computed again in the next cycle.
	for i := 0; ; i++ {
		n, err := m.Cycle(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if i == 5 {
			t.Fatal("the materializer still finds work after 5 cycles")
		}
		time.Sleep(1100 * time.Millisecond)
	}
	return s
}

// routedRead reads both series' samples for [mint, maxt] with these hints.
func routedRead(t *testing.T, s *testServer, name string, mint, maxt int64, h prompb.ReadHints) []prompb.Sample {
	t.Helper()
	h.StartMs, h.EndMs = mint, maxt
	status, resp, msg := s.readHTTP(t, &prompb.ReadRequest{Queries: []*prompb.Query{{
		StartTimestampMs: mint, EndTimestampMs: maxt, Hints: &h,
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: name}},
	}}})
	if status != 200 {
		t.Fatalf("read %s: %d %s", name, status, msg)
	}
	if len(resp.Results[0].Timeseries) != 1 {
		t.Fatalf("read %s: %d series, want 1", name, len(resp.Results[0].Timeseries))
	}
	return resp.Results[0].Timeseries[0].Samples
}

// segments returns pyramid_read_segments_total by "tier/kind", approximate or not.
func segments(t *testing.T, s *testServer) map[string]float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "pyramid_read_segments_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			out[l["tier"]+"/"+l["kind"]] += m.GetCounter().GetValue()
		}
	}
	return out
}

func diffSamples(got, want []prompb.Sample) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d samples, want %d\ngot  %v\nwant %v", len(got), len(want), head5(got), head5(want))
	}
	for i := range got {
		if got[i].Timestamp != want[i].Timestamp || math.Float64bits(got[i].Value) != math.Float64bits(want[i].Value) {
			return fmt.Sprintf("sample %d is %v, want %v", i, got[i], want[i])
		}
	}
	return ""
}

func head5(s []prompb.Sample) []prompb.Sample { return s[:min(5, len(s))] }

// TestReadRoutesToRollups reads through the routing against the real ClickHouse and checks
// every answer against an aggregation computed here from the samples written.
func TestReadRoutesToRollups(t *testing.T) {
	d := newRouteData()
	s := newRoutedServer(t, d)
	// A range query of max_over_time(x[1h]) with a 1h step starting at start+1h asks for
	// [start, end]: Prometheus subtracts the range from the first evaluation.
	cases := []struct {
		name       string
		series     string
		mint, maxt int64
		hints      prompb.ReadHints
		want       []prompb.Sample
		segment    string
	}{
		{
			name: "max_over_time 1h step 1h from the 1h tier", series: "route_gauge",
			mint: d.start, maxt: d.end, hints: prompb.ReadHints{StepMs: hourMs, RangeMs: hourMs, Func: "max_over_time"},
			want: d.bucketPoints(d.gauge, hourMs, d.start, d.end, maxOf), segment: "1h/max",
		},
		{
			name: "sum_over_time 5m step 5m from the 5m tier", series: "route_gauge",
			mint: d.start + hourMs, maxt: d.start + 2*hourMs, hints: prompb.ReadHints{StepMs: 5 * minuteMs, RangeMs: 5 * minuteMs, Func: "sum_over_time"},
			want: d.bucketPoints(d.gauge, 5*minuteMs, d.start+hourMs, d.start+2*hourMs, sumOf), segment: "5m/sum",
		},
		{
			name: "avg_over_time 2h step 1h: 1h buckets", series: "route_gauge",
			mint: d.start, maxt: d.end, hints: prompb.ReadHints{StepMs: hourMs, RangeMs: 2 * hourMs, Func: "avg_over_time"},
			want: d.bucketPoints(d.gauge, hourMs, d.start, d.end, meanOf), segment: "1h/avg",
		},
		{
			// A step of 30m is finer than 1h: the 5m tier answers.
			name: "plain selector step 30m: 5m means", series: "route_gauge",
			mint: d.start, maxt: d.end, hints: prompb.ReadHints{StepMs: 30 * minuteMs},
			want: d.bucketPoints(d.gauge, 5*minuteMs, d.start, d.end, meanOf), segment: "5m/avg",
		},
		{
			// The window ends mid-bucket: the bucket's point would be stamped after maxt
			// and is left out; raw would not have its later samples either.
			name: "window ending mid-bucket", series: "route_gauge",
			mint: d.start, maxt: d.end - 30*minuteMs, hints: prompb.ReadHints{StepMs: hourMs, RangeMs: hourMs, Func: "max_over_time"},
			want: d.bucketPoints(d.gauge, hourMs, d.start, d.end-hourMs, maxOf), segment: "1h/max",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := segments(t, s)[tc.segment]
			got := routedRead(t, s, tc.series, tc.mint, tc.maxt, tc.hints)
			if diff := diffSamples(got, tc.want); diff != "" {
				t.Error(diff)
			}
			if after := segments(t, s)[tc.segment]; after != before+1 {
				t.Errorf("segments %s went from %v to %v, want one more", tc.segment, before, after)
			}
		})
	}

	t.Run("count_over_time reads raw samples", func(t *testing.T) {
		before := segments(t, s)["raw/raw"]
		got := routedRead(t, s, "route_gauge", d.start, d.end, prompb.ReadHints{StepMs: hourMs, RangeMs: hourMs, Func: "count_over_time"})
		var want []prompb.Sample
		for i, ts := range d.ts {
			want = append(want, prompb.Sample{Timestamp: ts, Value: d.gauge[i]})
		}
		if diff := diffSamples(got, want); diff != "" {
			t.Error(diff)
		}
		if after := segments(t, s)["raw/raw"]; after != before+1 {
			t.Errorf("raw segments went from %v to %v, want one more", before, after)
		}
	})

	t.Run("rate 4h step 1h: reset-free counter points", func(t *testing.T) {
		got := routedRead(t, s, "route_counter_total", d.start, d.end, prompb.ReadHints{StepMs: hourMs, RangeMs: 4 * hourMs, Func: "rate"})
		// One point per hour at the hour's last sample, and before them one at the first
		// sample, as the first bucket opens the data; each step between two points is the
		// raw increase between those samples, resets included.
		if len(got) != 7 {
			t.Fatalf("%d counter points, want 7: %v", len(got), got)
		}
		idx := map[int64]int{}
		for i, ts := range d.ts {
			idx[ts] = i
		}
		for k, p := range got {
			want := d.start + int64(k)*hourMs - routeStepMs + routeOffsetMs
			if k == 0 {
				want = d.ts[0]
			}
			if p.Timestamp != want {
				t.Errorf("point %d at %d, want %d", k, p.Timestamp, want)
			}
			if k == 0 {
				if p.Value != d.counter[0] {
					t.Errorf("first point %v, want the raw value %v", p.Value, d.counter[0])
				}
				continue
			}
			i0, i1 := idx[got[k-1].Timestamp], idx[p.Timestamp]
			inc := 0.0
			for i := i0 + 1; i <= i1; i++ {
				if d.counter[i] < d.counter[i-1] {
					inc += d.counter[i]
				} else {
					inc += d.counter[i] - d.counter[i-1]
				}
			}
			if p.Value-got[k-1].Value != inc {
				t.Errorf("points %d..%d rise by %v, want the raw increase %v", k-1, k, p.Value-got[k-1].Value, inc)
			}
		}
	})

	t.Run("seams where raw has expired", func(t *testing.T) {
		// Raw samples of the first three hours go, as retention would drop them; the
		// rollups stay. The oldest raw sample is then cut+7s, and a seam between the 5m
		// tier and raw moves up to the next 5m boundary, cut+5m, served by the rollup.
		cut := d.start + 3*hourMs
		if err := s.conn.Exec(context.Background(), "ALTER TABLE "+s.db+".samples DELETE WHERE ts < ?", cut); err != nil {
			t.Fatal(err)
		}
		waitMutations(t, s)
		seam := cut + 5*minuteMs

		// deriv has no aggregate: raw where raw exists, and before it 5m means, flagged
		// approximate.
		want := d.bucketPoints(d.gauge, 5*minuteMs, d.start, seam, meanOf)
		for i, ts := range d.ts {
			if ts >= seam {
				want = append(want, prompb.Sample{Timestamp: ts, Value: d.gauge[i]})
			}
		}
		before := segments(t, s)
		got := routedRead(t, s, "route_gauge", d.start, d.end, prompb.ReadHints{RangeMs: 10 * minuteMs, Func: "deriv"})
		if diff := diffSamples(got, want); diff != "" {
			t.Errorf("deriv: %s", diff)
		}
		after := segments(t, s)
		if after["5m/avg"] != before["5m/avg"]+1 || after["raw/raw"] != before["raw/raw"]+1 {
			t.Errorf("deriv: segments went from %v to %v, want one more 5m/avg and raw/raw", before, after)
		}

		// An instant selector is answered by 5m means, so raw after the seam is
		// aggregated to 5m too: one spacing throughout, and the same points as before the
		// deletion.
		before = segments(t, s)
		got = routedRead(t, s, "route_gauge", d.start, d.end, prompb.ReadHints{})
		if diff := diffSamples(got, d.bucketPoints(d.gauge, 5*minuteMs, d.start, d.end, meanOf)); diff != "" {
			t.Errorf("instant selector: %s", diff)
		}
		after = segments(t, s)
		if after["5m/avg"] != before["5m/avg"]+1 || after["raw/avg"] != before["raw/avg"]+1 {
			t.Errorf("instant selector: segments went from %v to %v, want one more 5m/avg and raw/avg", before, after)
		}
	})
}

// waitMutations waits until ClickHouse has applied every mutation of the test's tables.
func waitMutations(t *testing.T, s *testServer) {
	t.Helper()
	for range 100 {
		if s.count(t, "SELECT count() FROM system.mutations WHERE database = '"+s.db+"' AND is_done = 0") == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("mutations still running after 10 s")
}
