package adapter_test

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/rollup/materialize/materializetest"
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
// its write path and computes the rollups. Reads count raw retention from now(), which a
// test may move forward to put data beyond it.
func newRoutedServer(t *testing.T, d routeData, now func() time.Time) *testServer {
	t.Helper()
	s, tiers := newTieredServer(t, now)
	d.write(t, s)
	materializetest.Drain(t, s.srv.Store(), tiers)
	return s
}

// newTieredServer starts a server routing reads over the default tiers, which relearns the
// tiers' extents on every read (so that a test's rollups and deletions are seen at once)
// and counts raw retention from now() (time.Now when nil).
func newTieredServer(t *testing.T, now func() time.Time) (*testServer, []rollup.Tier) {
	t.Helper()
	tiers, err := rollup.ParseTiers("raw:30d,5m:365d,1h:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, func(c *serverConfig) {
		c.Tiers, c.ReadRollups, c.RollupUnitWidth = tiers, true, rollup.UnitWidth(tiers)
		c.ReadTierRefresh = time.Nanosecond
		c.Now = now
	})
	return s, tiers
}

// routedRead reads the named series' samples for [mint, maxt] with these hints.
func routedRead(t *testing.T, s *testServer, name string, mint, maxt int64, h prompb.ReadHints) []prompb.Sample {
	t.Helper()
	h.StartMs, h.EndMs = mint, maxt
	return routedReadHints(t, s, name, mint, maxt, &h)
}

// routedReadHints is routedRead with the hints as sent, nil for none.
func routedReadHints(t *testing.T, s *testServer, name string, mint, maxt int64, h *prompb.ReadHints) []prompb.Sample {
	t.Helper()
	status, resp, msg := s.readHTTP(t, &prompb.ReadRequest{Queries: []*prompb.Query{{
		StartTimestampMs: mint, EndTimestampMs: maxt, Hints: h,
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
	var clockShift atomic.Int64
	s := newRoutedServer(t, d, func() time.Time { return time.Now().Add(time.Duration(clockShift.Load())) })
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
		// The reads' clock moves 30 days and a bit on, so that raw retention (30 days)
		// begins 100 s after cut, three hours into the data. The raw samples before cut
		// go, as retention drops them; the rollups stay. A seam between the 5m tier and
		// raw then moves up to the next 5m boundary, cut+5m, served by the rollup.
		cut := d.start + 3*hourMs
		clockShift.Store(int64(time.UnixMilli(cut + 100_000).Add(30 * 24 * time.Hour).Sub(time.Now())))
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

		// An instant selector (and a read without hints) is answered by 5m means where
		// raw has expired, and by raw samples as they are after the seam: it sees one
		// point per evaluation, so the spacing need not be even.
		for _, h := range []*prompb.ReadHints{{}, nil} {
			before = segments(t, s)
			got = routedReadHints(t, s, "route_gauge", d.start, d.end, h)
			if diff := diffSamples(got, want); diff != "" {
				t.Errorf("instant selector, hints %v: %s", h, diff)
			}
			after = segments(t, s)
			if after["5m/avg"] != before["5m/avg"]+1 || after["raw/raw"] != before["raw/raw"]+1 {
				t.Errorf("instant selector, hints %v: segments went from %v to %v, want one more 5m/avg and raw/raw", h, before, after)
			}
		}

		// A range query's plain selector at a step as coarse as 5m is answered by 5m
		// means, so raw after the seam is aggregated to 5m too: one spacing throughout,
		// and the same points as before the deletion.
		before = segments(t, s)
		got = routedRead(t, s, "route_gauge", d.start, d.end, prompb.ReadHints{StepMs: 5 * minuteMs})
		if diff := diffSamples(got, d.bucketPoints(d.gauge, 5*minuteMs, d.start, d.end, meanOf)); diff != "" {
			t.Errorf("plain selector at step 5m: %s", diff)
		}
		after = segments(t, s)
		if after["5m/avg"] != before["5m/avg"]+1 || after["raw/avg"] != before["raw/avg"]+1 {
			t.Errorf("plain selector at step 5m: segments went from %v to %v, want one more 5m/avg and raw/avg", before, after)
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

// TestReadEdgesOfHistory is issue 9's table against the real ClickHouse: 30 series of 480
// samples at 15 s (two hours, three days ago), every rollup computed, and remote reads of
// {job="probe"} over windows around the data, with no hints and with a raw selector's hints
// at steps finer than every tier. Each must return every series' 480 samples bit for bit,
// in both response types, and say in X-Pyramid-Tiers that raw samples answered. A query
// whose hints prefer a tier (max_over_time[1h] at a 1h step over seven days) gets 1h maxima.
func TestReadEdgesOfHistory(t *testing.T) {
	const nSeries, nSamples = 30, 480
	first := (time.Now().UnixMilli()/hourMs-72)*hourMs + 7*minuteMs + 30_000 // hh:07:30, three days ago
	last := first + (nSamples-1)*routeStepMs
	s, tiers := newTieredServer(t, nil)
	want := map[string][]readSample{}
	var written []prompb.TimeSeries
	for i := range nSeries {
		ts := series("probe_value", []string{"instance", fmt.Sprintf("host-%02d", i), "job", "probe"})
		var samples []readSample
		for k := range int64(nSamples) {
			v := float64(i*1000) + math.Sin(float64(k)/17)
			if k == nSamples-1 && i%2 == 0 {
				v = math.Float64frombits(staleBits) // half the series end with a stale marker
			}
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: first + k*routeStepMs, Value: v})
			samples = append(samples, readSample{first + k*routeStepMs, math.Float64bits(v)})
		}
		written = append(written, ts)
		l := labels.FromStrings("__name__", "probe_value", "instance", fmt.Sprintf("host-%02d", i), "job", "probe")
		want[l.String()] = samples
	}
	s.write(t, written...)
	materializetest.Drain(t, s.srv.Store(), tiers)

	probe := []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "job", Value: "probe"}}
	lb := int64(5 * minuteMs)
	windows := []struct {
		name       string
		mint, maxt int64
	}{
		{"first to last sample", first, last},
		{"from 1ms before", first - 1, last},
		{"from 5m before", first - 5*minuteMs, last},
		{"from 1h before", first - hourMs, last},
		{"from 1h before to 1ms before the last", first - hourMs, last - 1},
		{"from 5m before to 1h after", first - 5*minuteMs, last + hourMs},
		{"seven days up to now", time.Now().UnixMilli() - 7*24*hourMs, time.Now().UnixMilli()},
	}
	hints := []struct {
		name string
		h    func(mint, maxt int64) *prompb.ReadHints
	}{
		{"no hints", func(int64, int64) *prompb.ReadHints { return nil }},
		{"instant", func(mint, maxt int64) *prompb.ReadHints { return &prompb.ReadHints{StartMs: mint, EndMs: maxt} }},
		{"step 15s", func(mint, maxt int64) *prompb.ReadHints {
			return &prompb.ReadHints{StartMs: mint, EndMs: maxt, StepMs: 15_000}
		}},
		{"step 60s", func(mint, maxt int64) *prompb.ReadHints {
			return &prompb.ReadHints{StartMs: mint, EndMs: maxt, StepMs: 60_000}
		}},
		{"step 60s, rate[5m]", func(mint, maxt int64) *prompb.ReadHints {
			return &prompb.ReadHints{StartMs: mint, EndMs: maxt, StepMs: 60_000, Func: "rate", RangeMs: lb}
		}},
	}
	c := readClient(t, s, []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS})
	for _, w := range windows {
		for _, hc := range hints {
			q := &prompb.Query{StartTimestampMs: w.mint, EndTimestampMs: w.maxt, Matchers: probe, Hints: hc.h(w.mint, w.maxt)}
			name := w.name + ", " + hc.name
			// The samples the window holds, as Prometheus's TSDB would return them.
			expect := map[string][]readSample{}
			for k, ss := range want {
				for _, sm := range ss {
					if sm.t >= w.mint && sm.t <= w.maxt {
						expect[k] = append(expect[k], sm)
					}
				}
			}

			resp, rr, msg := s.readHTTPResponse(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}})
			if rr == nil {
				t.Fatalf("%s: SAMPLES read: %d %s", name, resp.StatusCode, msg)
			}
			if got := resp.Header.Values("X-Pyramid-Tiers"); len(got) != 1 || got[0] != "raw" {
				t.Errorf("%s: X-Pyramid-Tiers %q, want [raw]", name, got)
			}
			got := map[string][]readSample{}
			for _, ts := range rr.Results[0].Timeseries {
				var l labels.ScratchBuilder
				for _, lp := range ts.Labels {
					l.Add(lp.Name, lp.Value)
				}
				for _, sm := range ts.Samples {
					got[l.Labels().String()] = append(got[l.Labels().String()], readSample{sm.Timestamp, math.Float64bits(sm.Value)})
				}
			}
			if diff := diffReadSamples(got, expect); diff != "" {
				t.Errorf("%s, SAMPLES: %s", name, diff)
			}

			ss, err := c.Read(context.Background(), q, false)
			if err != nil {
				t.Fatalf("%s: streamed read: %v", name, err)
			}
			got, _, err = collect(t, ss)
			if err != nil {
				t.Fatalf("%s: streamed read: %v", name, err)
			}
			if diff := diffReadSamples(got, expect); diff != "" {
				t.Errorf("%s, STREAMED_XOR_CHUNKS: %s", name, diff)
			}
		}
	}

	// Hints that prefer the 1h tier: a week's max_over_time(probe_value[1h]) at a 1h step.
	// The 1h tier answers the hours it holds; the rest of the window, where raw holds
	// nothing, is raw's, aggregated the same way.
	now := time.Now().UnixMilli()
	mint := (now-7*24*hourMs)/hourMs*hourMs - hourMs
	q := &prompb.Query{StartTimestampMs: mint, EndTimestampMs: now, Matchers: probe,
		Hints: &prompb.ReadHints{StartMs: mint, EndMs: now, StepMs: hourMs, RangeMs: hourMs, Func: "max_over_time"}}
	resp, rr, msg := s.readHTTPResponse(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}})
	if rr == nil {
		t.Fatalf("max_over_time read: %d %s", resp.StatusCode, msg)
	}
	if got, want := resp.Header.Get("X-Pyramid-Tiers"), "raw/max 1h/max raw/max"; got != want {
		t.Errorf("max_over_time: X-Pyramid-Tiers %q, want %q", got, want)
	}
	if len(rr.Results[0].Timeseries) != nSeries {
		t.Fatalf("max_over_time: %d series, want %d", len(rr.Results[0].Timeseries), nSeries)
	}
	for _, ts := range rr.Results[0].Timeseries {
		// Two hours from hh:07:30: three 1h buckets, their maxima stamped at each hour's end.
		if len(ts.Samples) != 3 {
			t.Errorf("max_over_time of %v: %d points, want 3: %v", ts.Labels, len(ts.Samples), ts.Samples)
			continue
		}
		for k, p := range ts.Samples {
			if want := (first/hourMs+int64(k)+1)*hourMs - 1; p.Timestamp != want {
				t.Errorf("max_over_time of %v: point %d at %d, want %d", ts.Labels, k, p.Timestamp, want)
			}
		}
	}
}

// diffReadSamples describes the first difference between two reads, by series.
func diffReadSamples(got, want map[string][]readSample) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d series, want %d", len(got), len(want))
	}
	for k, w := range want {
		g := got[k]
		if len(g) != len(w) {
			return fmt.Sprintf("series %s: %d samples, want %d", k, len(g), len(w))
		}
		for i := range w {
			if g[i] != w[i] {
				return fmt.Sprintf("series %s: sample %d is %v, want %v", k, i, g[i], w[i])
			}
		}
	}
	return ""
}

// TestConflictingWritesAnswerLikeMerges writes a sample, then another value at the same
// timestamp (and a second series the other way round, and a third whose retry repeats the
// same value), and reads them before and after ClickHouse merges the table: raw reads,
// rollups and the pyramid_read_sample_conflicts_total count all follow the rule the merges
// apply, the last write kept, so that no answer changes by itself.
func TestConflictingWritesAnswerLikeMerges(t *testing.T) {
	s, tiers := newTieredServer(t, nil)
	base := (time.Now().UnixMilli()/hourMs - 3) * hourMs
	at := base + 10*minuteMs + 7_000
	mk := func(job string, v float64) prompb.TimeSeries {
		return series("synth_up", []string{"job", job},
			prompb.Sample{Timestamp: at - routeStepMs, Value: 1},
			prompb.Sample{Timestamp: at, Value: v},
			prompb.Sample{Timestamp: at + routeStepMs, Value: 1})
	}
	// Separate requests, so that the writes are separate inserts, in this order. Merges
	// wait until the test asks for one, so that the first reads see both writes.
	if err := s.conn.Exec(context.Background(), "SYSTEM STOP MERGES "+s.db+".samples"); err != nil {
		t.Fatal(err)
	}
	s.write(t, mk("a", 1), mk("b", 0), mk("c", 1))
	s.write(t, mk("a", 0), mk("b", 1), mk("c", 1))
	want := map[string]float64{"a": 0, "b": 1, "c": 1}
	materializetest.Drain(t, s.srv.Store(), tiers)

	check := func(when string, wantConflicts float64) {
		t.Helper()
		before := counterValue(t, s, "pyramid_read_sample_conflicts_total")
		for job, v := range want {
			q := &prompb.Query{StartTimestampMs: base, EndTimestampMs: base + hourMs,
				Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "job", Value: job}}}
			_, resp, msg := s.readHTTP(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}})
			if resp == nil {
				t.Fatalf("%s: read job %s: %s", when, job, msg)
			}
			got := resp.Results[0].Timeseries[0].Samples
			if len(got) != 3 || got[1].Timestamp != at || got[1].Value != v {
				t.Errorf("%s: job %s reads %v, want %v at %d", when, job, got, v, at)
			}
			// The 1h tier's minimum of the hour holding the conflict follows the same rule.
			q.Hints = &prompb.ReadHints{StartMs: base, EndMs: base + hourMs, StepMs: hourMs, RangeMs: hourMs, Func: "min_over_time"}
			_, resp, msg = s.readHTTP(t, &prompb.ReadRequest{Queries: []*prompb.Query{q}})
			if resp == nil {
				t.Fatalf("%s: read min_over_time of job %s: %s", when, job, msg)
			}
			if got := resp.Results[0].Timeseries[0].Samples; len(got) != 1 || got[0].Value != min(v, 1) {
				t.Errorf("%s: job %s has the 1h minimum %v, want %v", when, job, got, min(v, 1))
			}
		}
		if got := counterValue(t, s, "pyramid_read_sample_conflicts_total") - before; got != wantConflicts {
			t.Errorf("%s: %v conflicts counted, want %v", when, got, wantConflicts)
		}
	}
	check("before merging", 2)
	for _, q := range []string{"SYSTEM START MERGES " + s.db + ".samples", "OPTIMIZE TABLE " + s.db + ".samples FINAL"} {
		if err := s.conn.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	check("after OPTIMIZE FINAL", 0)
	if got := counterValue(t, s, "pyramid_read_sample_conflicts_total"); got != 2 {
		t.Errorf("%v conflicts counted in all, want 2", got)
	}
}

// counterValue is a counter's value in s's registry, 0 if it has none yet.
func counterValue(t *testing.T, s *testServer, name string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			v := 0.0
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	return 0
}
