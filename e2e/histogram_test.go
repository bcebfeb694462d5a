package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

// histScrapes is how many scrapes Prometheus A takes of the histogram exporter, about 40s
// at its 1s interval, before its target goes and it writes the stale markers.
const histScrapes = 42

// TestNativeHistogramsMatchPrometheus runs Prometheus 2.42 with native histograms scraping
// client_golang histograms (see histExporter) and remote-writing them to pyramid, and then
// checks that pyramid gives back exactly what A's own TSDB holds:
//
//   - remote read, STREAMED_XOR_CHUNKS and SAMPLES, sample by sample against A's own
//     STREAMED_XOR_CHUNKS (2.42 returns no histograms in SAMPLES): timestamps, and every
//     field of every histogram, the Sum's bits (stale markers) included;
//   - counter reset hints where they mean something (see checkHistHints);
//   - pyramid's PromQL API against the Prometheus 3 engine over A's remote read, for the
//     histogram functions, instant and range;
//   - all of it again, but the chunk checks, from a second pyramid that A sends only the
//     histogram series to, so that it holds no float sample at all.
func TestNativeHistogramsMatchPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of over a minute; skipped in -short mode")
	}
	tools := requireTools(t, "bash", "clickhouse-server", "clickhouse-client", "prometheus")
	began := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("[%5.1fs] "+format, append([]any{time.Since(began).Seconds()}, args...)...)
	}
	work := t.TempDir()
	bin := buildPyramid(t, work)
	ch := startClickHouse(t)
	pyr := startPyramid(t, bin, ch.addr(), "e2e_hist", work)
	// The second pyramid gets only the histogram series (write_relabel_configs), as a
	// user sending only some metrics would: its tables then hold no float sample at all.
	only := startPyramid(t, bin, ch.addr(), "e2e_hist_only", work, "PYRAMID_TEST_LOG=pyramid-only.log")
	only.name = "pyramid (histograms only)"
	exp := startHistExporter(t)
	promA := startHistPrometheus(t, tools["prometheus"], work, histPrometheusConfig(exp.hostPort(), pyr.url, only.url, true))
	logf("ClickHouse, pyramid (%s), pyramid with histograms only (%s) and Prometheus A (%s) ready", pyr.url, only.url, promA.url)

	waitFor(t, fmt.Sprintf("Prometheus A to scrape the histograms %d times", histScrapes), 3*time.Minute, func() error {
		if err := allAlive(pyr.process, only.process, promA.process); err != nil {
			return stopWaiting(err)
		}
		if n := exp.scrapeCount(); n < histScrapes {
			return fmt.Errorf("%d scrapes", n)
		}
		return nil
	})
	// The job stays and its target goes, which makes 2.42 write a stale marker to every
	// series of the target (see dropTargets in read_test.go).
	promA.reloadConfig(t, histPrometheusConfig(exp.hostPort(), pyr.url, only.url, false))
	logf("Prometheus A scraped %d times and dropped its target", exp.scrapeCount())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	query := &prompb.Query{
		StartTimestampMs: 0,
		EndTimestampMs:   time.Now().Add(time.Hour).UnixMilli(),
		Matchers:         []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "job", Value: "histograms"}},
	}
	var wantChunks chunkedSet
	waitFor(t, "Prometheus A to end every series with a stale marker", 90*time.Second, func() error {
		if err := allAlive(pyr.process, only.process, promA.process); err != nil {
			return stopWaiting(err)
		}
		s, err := readChunked(ctx, promA.url, query)
		if err != nil {
			return err
		}
		for k, ps := range s.points() {
			if last := ps[len(ps)-1]; !last.isStale() {
				return fmt.Errorf("%s ends with %s, not yet with a stale marker", k, last)
			}
		}
		wantChunks = s
		return nil
	})
	want := wantChunks.points()
	facts, err := histFactsOf(want)
	if err != nil {
		t.Fatalf("Prometheus A's data lacks what the test needs (the exporter or 2.42 behaves otherwise than assumed): %v\n%s", err, want.summary())
	}
	logf("Prometheus A holds %d series (%d histogram samples, %d stale markers); %s", len(want), facts.histograms, facts.stale, facts)

	// Wait until pyramid answers with everything A holds. Histograms that pyramid refuses
	// with a 4xx are dropped by Prometheus and counted as failed: retrying cannot help then.
	var writeDiff string
	err = poll(90*time.Second, func() error {
		if err := allAlive(pyr.process, only.process, promA.process); err != nil {
			return stopWaiting(err)
		}
		if err := histogramsFailed(promA.url, pyr.url); err != nil {
			return stopWaiting(err)
		}
		got, err := readSampled(ctx, pyr.url, query)
		if err != nil {
			return err
		}
		if writeDiff = diffPointSets(want, got); writeDiff != "" {
			return errors.New("pyramid's remote read (SAMPLES) does not yet answer what Prometheus A holds")
		}
		return nil
	})
	if err != nil {
		t.Logf("Prometheus A's remote-write metrics:\n%s", grepMetrics(promA.url, "prometheus_remote_storage_histograms", "prometheus_remote_storage_samples"))
		t.Fatalf("wait for pyramid to hold what Prometheus A holds: %v\n%s", err, writeDiff)
	}
	logf("pyramid's remote read (SAMPLES) answers what Prometheus A holds")

	t.Run("remote_read", func(t *testing.T) {
		sampled, err := readSampled(ctx, pyr.url, query)
		if err != nil {
			t.Fatalf("remote-read pyramid (SAMPLES): %v", err)
		}
		if d := diffPointSets(want, sampled); d != "" {
			t.Errorf("pyramid's SAMPLES answer differs from Prometheus A:\n%s", d)
		}
		streamed, err := readChunked(ctx, pyr.url, query)
		if err != nil {
			t.Fatalf("remote-read pyramid (STREAMED_XOR_CHUNKS): %v", err)
		}
		if d := diffPointSets(want, streamed.points()); d != "" {
			t.Errorf("pyramid's STREAMED_XOR_CHUNKS answer differs from Prometheus A:\n%s", d)
		}
		checkHistHints(t, wantChunks, sampled, streamed)
		checkChunkEncoding(t, sampled, streamed)
	})

	// The histogram-only pyramid must answer A's histogram series just the same, though
	// no float sample tells it that it holds data for the window.
	t.Run("histograms_only", func(t *testing.T) {
		wantHists := pointSet{}
		for k, ps := range want {
			if strings.Contains(k, `__name__="e2e_nh_`) {
				wantHists[k] = ps
			}
		}
		var diff string
		err := poll(30*time.Second, func() error {
			if err := allAlive(only.process, promA.process); err != nil {
				return stopWaiting(err)
			}
			if err := histogramsFailed(promA.url, only.url); err != nil {
				return stopWaiting(err)
			}
			got, err := readSampled(ctx, only.url, query)
			if err != nil {
				return err
			}
			if diff = diffPointSets(wantHists, got); diff != "" {
				return errors.New("its SAMPLES answer differs from Prometheus A's histogram series")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("pyramid holding only histograms: %v\n%s", err, diff)
		}
		streamed, err := readChunked(ctx, only.url, query)
		if err != nil {
			t.Fatalf("remote-read the histogram-only pyramid (STREAMED_XOR_CHUNKS): %v", err)
		}
		if d := diffPointSets(wantHists, streamed.points()); d != "" {
			t.Errorf("the histogram-only pyramid's STREAMED_XOR_CHUNKS answer differs from Prometheus A:\n%s", d)
		}
		// The queries select histogram series only, so the answers are the same.
		compareHistQueries(t, ctx, promA.url, only.url, want, facts)
	})

	t.Run("promql", func(t *testing.T) {
		compareHistQueries(t, ctx, promA.url, pyr.url, want, facts)
	})
}

// histFacts are the moments of A's data the checks and queries rely on, and counts that
// show the data holds what the exporter was built to produce.
type histFacts struct {
	first, lastReal, lastStale int64 // A's first sample, last sample that is not a stale marker, last stale marker
	reset                      int64 // the sample of e2e_nh_reset_seconds whose count fell
	schemas                    []int32
	histograms, stale          int
	negative, zeroCount, gauge int // histogram samples with negative buckets, a zero count, the gauge hint
}

func (f histFacts) String() string {
	return fmt.Sprintf("the reset is %.1fs in, e2e_nh_wide_seconds goes through schemas %v; %d samples with negative buckets, %d with a zero count, %d gauge histograms",
		float64(f.reset-f.first)/1000, f.schemas, f.negative, f.zeroCount, f.gauge)
}

// histFactsOf finds the facts and fails when the data lacks one of the cases: a test that
// compares only easy histograms would prove little.
func histFactsOf(s pointSet) (histFacts, error) {
	f := histFacts{first: math.MaxInt64}
	for k, ps := range s {
		for i, p := range ps {
			f.first = min(f.first, p.t)
			if p.isStale() {
				f.lastStale = max(f.lastStale, p.t)
			} else {
				f.lastReal = max(f.lastReal, p.t)
			}
			if p.h == nil {
				continue
			}
			if p.isStale() {
				f.stale++
				continue
			}
			f.histograms++
			if len(p.h.NegativeBuckets) > 0 {
				f.negative++
			}
			if p.h.ZeroCount > 0 {
				f.zeroCount++
			}
			if p.h.CounterResetHint == histogram.GaugeType {
				f.gauge++
			}
			if strings.Contains(k, `__name__="e2e_nh_reset_seconds"`) && i > 0 && ps[i-1].h != nil && p.h.Count < ps[i-1].h.Count {
				if f.reset != 0 {
					return f, fmt.Errorf("%s falls twice, at %d and %d", k, f.reset, p.t)
				}
				f.reset = p.t
			}
			if strings.Contains(k, `__name__="e2e_nh_wide_seconds"`) && !slices.Contains(f.schemas, p.h.Schema) {
				f.schemas = append(f.schemas, p.h.Schema)
			}
		}
	}
	var missing []string
	if f.histograms == 0 {
		missing = append(missing, "histograms")
	}
	if f.reset == 0 {
		missing = append(missing, "a counter reset of e2e_nh_reset_seconds")
	}
	if len(f.schemas) < 3 {
		missing = append(missing, fmt.Sprintf("schema changes of e2e_nh_wide_seconds (schemas %v)", f.schemas))
	}
	if f.negative == 0 || f.zeroCount == 0 {
		missing = append(missing, "negative buckets and zero counts")
	}
	if f.gauge == 0 {
		missing = append(missing, "gauge histograms")
	}
	if f.stale < 4 {
		missing = append(missing, fmt.Sprintf("a stale marker for each of the 4 histogram series (found %d)", f.stale))
	}
	if len(missing) > 0 {
		return f, errors.New("no " + strings.Join(missing, ", no "))
	}
	return f, nil
}

// histPoint is one sample of a series as remote read returns it: a float (kept as its bits)
// or an integer or float histogram.
type histPoint struct {
	t  int64
	f  uint64
	h  *histogram.Histogram
	fh *histogram.FloatHistogram
}

func (p histPoint) isStale() bool {
	switch {
	case p.h != nil:
		return value.IsStaleNaN(p.h.Sum)
	case p.fh != nil:
		return value.IsStaleNaN(p.fh.Sum)
	}
	return p.f == staleNaNBits
}

func (p histPoint) String() string {
	switch {
	case p.h != nil:
		return fmt.Sprintf("%d: histogram %s hint %s", p.t, p.h, hintName(p.h.CounterResetHint))
	case p.fh != nil:
		return fmt.Sprintf("%d: float histogram %s hint %s", p.t, p.fh, hintName(p.fh.CounterResetHint))
	}
	return fmt.Sprintf("%d: float %v (%#016x)", p.t, math.Float64frombits(p.f), p.f)
}

// The methods make a histPoint a chunks.Sample, for encoding points into chunks.
func (p histPoint) T() int64                      { return p.t }
func (p histPoint) ST() int64                     { return 0 }
func (p histPoint) F() float64                    { return math.Float64frombits(p.f) }
func (p histPoint) H() *histogram.Histogram       { return p.h }
func (p histPoint) FH() *histogram.FloatHistogram { return p.fh }
func (p histPoint) Copy() chunks.Sample           { return p }
func (p histPoint) Type() chunkenc.ValueType {
	switch {
	case p.h != nil:
		return chunkenc.ValHistogram
	case p.fh != nil:
		return chunkenc.ValFloatHistogram
	}
	return chunkenc.ValFloat
}

func hintName(h histogram.CounterResetHint) string {
	switch h {
	case histogram.UnknownCounterReset:
		return "unknown"
	case histogram.CounterReset:
		return "reset"
	case histogram.NotCounterReset:
		return "not-reset"
	case histogram.GaugeType:
		return "gauge"
	}
	return strconv.Itoa(int(h))
}

func headerName(h chunkenc.CounterResetHeader) string {
	switch h {
	case chunkenc.UnknownCounterReset:
		return "unknown"
	case chunkenc.CounterReset:
		return "reset"
	case chunkenc.NotCounterReset:
		return "not-reset"
	case chunkenc.GaugeType:
		return "gauge"
	}
	return fmt.Sprintf("%#x", byte(h))
}

// pointSet maps a series' canonical label string (labelKey) to its points in time order.
type pointSet map[string][]histPoint

func (s pointSet) summary() string {
	var b strings.Builder
	for _, k := range sortedKeys(s) {
		ps := s[k]
		fmt.Fprintf(&b, "  %s: %d points, %d..%d\n", k, len(ps), ps[0].t, ps[len(ps)-1].t)
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// histChunk is one chunk of a STREAMED_XOR_CHUNKS answer, decoded.
type histChunk struct {
	minT, maxT int64
	enc        chunkenc.Encoding
	header     chunkenc.CounterResetHeader // histogram chunks only
	data       []byte
	points     []histPoint
}

// chunkedSet maps a series' canonical label string to its chunks in order.
type chunkedSet map[string][]histChunk

func (s chunkedSet) points() pointSet {
	out := pointSet{}
	for k, cs := range s {
		for _, c := range cs {
			out[k] = append(out[k], c.points...)
		}
	}
	return out
}

func seriesKey(ls []prompb.Label) string {
	names := make([]string, len(ls))
	values := make([]string, len(ls))
	for i, l := range ls {
		names[i], values[i] = l.Name, l.Value
	}
	return labelKey(names, values)
}

// readChunked remote-reads q asking for STREAMED_XOR_CHUNKS only and decodes every chunk
// with Prometheus's chunkenc, keeping each chunk's counter reset header.
func readChunked(ctx context.Context, baseURL string, q *prompb.Query) (chunkedSet, error) {
	rr := &prompb.ReadRequest{
		Queries:               []*prompb.Query{q},
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS},
	}
	resp, body, err := postRead(ctx, baseURL, rr)
	if err != nil {
		return nil, fmt.Errorf("post remote read to %s: %w", baseURL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("remote read from %s: %s: %q", baseURL, resp.Status, body[:min(300, len(body))])
	}
	const streamed = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
	if ct := resp.Header.Get("Content-Type"); ct != streamed {
		return nil, fmt.Errorf("remote read from %s answered Content-Type %q, want %q", baseURL, ct, streamed)
	}
	out := chunkedSet{}
	last := ""
	cr := remote.NewChunkedReader(bytes.NewReader(body), 50e6, nil)
	for {
		var res prompb.ChunkedReadResponse
		if err := cr.NextProto(&res); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("read frame from %s: %w", baseURL, err)
		}
		for _, cs := range res.ChunkedSeries {
			k := seriesKey(cs.Labels)
			// A series may continue in the next frame, but never come back later.
			if _, seen := out[k]; seen && k != last {
				return nil, fmt.Errorf("%s returned series %s twice, apart", baseURL, k)
			}
			last = k
			for _, c := range cs.Chunks {
				hc, err := decodeChunk(c)
				if err != nil {
					return nil, fmt.Errorf("series %s from %s: %w", k, baseURL, err)
				}
				if cs := out[k]; len(cs) > 0 && cs[len(cs)-1].maxT >= hc.minT {
					return nil, fmt.Errorf("series %s from %s: chunk %d..%d overlaps or precedes the one before (..%d)", k, baseURL, hc.minT, hc.maxT, cs[len(cs)-1].maxT)
				}
				out[k] = append(out[k], hc)
			}
		}
	}
	return out, nil
}

func decodeChunk(c prompb.Chunk) (histChunk, error) {
	hc := histChunk{minT: c.MinTimeMs, maxT: c.MaxTimeMs, enc: chunkenc.Encoding(c.Type), data: c.Data}
	chk, err := chunkenc.FromData(hc.enc, c.Data)
	if err != nil {
		return hc, fmt.Errorf("decode %s chunk %d..%d: %w", c.Type, c.MinTimeMs, c.MaxTimeMs, err)
	}
	switch hchk := chk.(type) {
	case *chunkenc.HistogramChunk:
		hc.header = hchk.GetCounterResetHeader()
	case *chunkenc.FloatHistogramChunk:
		hc.header = hchk.GetCounterResetHeader()
	}
	it := chk.Iterator(nil)
	for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
		var p histPoint
		switch vt {
		case chunkenc.ValFloat:
			var v float64
			p.t, v = it.At()
			p.f = math.Float64bits(v)
		case chunkenc.ValHistogram:
			p.t, p.h = it.AtHistogram(nil)
		case chunkenc.ValFloatHistogram:
			p.t, p.fh = it.AtFloatHistogram(nil)
		default:
			return hc, fmt.Errorf("chunk %d..%d holds a %s sample", c.MinTimeMs, c.MaxTimeMs, vt)
		}
		hc.points = append(hc.points, p)
	}
	if err := it.Err(); err != nil {
		return hc, fmt.Errorf("iterate chunk %d..%d: %w", c.MinTimeMs, c.MaxTimeMs, err)
	}
	if n := len(hc.points); n == 0 || hc.points[0].t != c.MinTimeMs || hc.points[n-1].t != c.MaxTimeMs {
		return hc, fmt.Errorf("chunk claims %d..%d but holds %d samples from %v", c.MinTimeMs, c.MaxTimeMs, n, hc.points)
	}
	return hc, nil
}

// readSampled remote-reads q asking for SAMPLES, and merges each series' floats and
// histograms into one time-ordered list.
func readSampled(ctx context.Context, baseURL string, q *prompb.Query) (pointSet, error) {
	rr := &prompb.ReadRequest{
		Queries:               []*prompb.Query{q},
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_SAMPLES},
	}
	resp, body, err := postRead(ctx, baseURL, rr)
	if err != nil {
		return nil, fmt.Errorf("post remote read to %s: %w", baseURL, err)
	}
	rresp, err := decodeSamples(resp, body)
	if err != nil {
		return nil, err
	}
	if len(rresp.Results) != 1 {
		return nil, fmt.Errorf("remote read returned %d results for 1 query", len(rresp.Results))
	}
	out := pointSet{}
	for _, ts := range rresp.Results[0].Timeseries {
		k := seriesKey(ts.Labels)
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("remote read returned series %s twice", k)
		}
		var ps []histPoint
		for _, s := range ts.Samples {
			ps = append(ps, histPoint{t: s.Timestamp, f: math.Float64bits(s.Value)})
		}
		for _, h := range ts.Histograms {
			p := histPoint{t: h.Timestamp}
			if h.IsFloatHistogram() {
				p.fh = h.ToFloatHistogram()
			} else {
				p.h = h.ToIntHistogram()
			}
			ps = append(ps, p)
		}
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].t < ps[j].t })
		if len(ps) > 0 {
			out[k] = ps
		}
	}
	return out, nil
}

// diffPointSets returns "" when got holds the same series as want with the same points, and
// otherwise the first differences. Points must agree in timestamp, kind, and for floats in
// their bits; histograms in every field (histFieldDiff) but the counter reset hint, which
// checkHistHints judges.
func diffPointSets(want, got pointSet) string {
	const maxSeries, maxPoints = 6, 4
	var b strings.Builder
	n := 0
	for _, k := range sortedKeys(want) {
		if _, ok := got[k]; !ok {
			if n++; n <= maxSeries {
				fmt.Fprintf(&b, "  only in Prometheus A: %s (%d points)\n", k, len(want[k]))
			}
		}
	}
	for _, k := range sortedKeys(got) {
		if _, ok := want[k]; !ok {
			if n++; n <= maxSeries {
				fmt.Fprintf(&b, "  only in pyramid: %s (%d points)\n", k, len(got[k]))
			}
		}
	}
	for _, k := range sortedKeys(want) {
		g, ok := got[k]
		if !ok {
			continue
		}
		w := want[k]
		var diffs []string
		for i := 0; i < max(len(w), len(g)); i++ {
			switch {
			case i >= len(g):
				diffs = append(diffs, fmt.Sprintf("pyramid lacks %s", w[i]))
			case i >= len(w):
				diffs = append(diffs, fmt.Sprintf("pyramid has more: %s", g[i]))
			default:
				if d := pointDiff(w[i], g[i]); d != "" {
					diffs = append(diffs, d)
				}
			}
			if len(diffs) > maxPoints {
				break
			}
		}
		if len(diffs) == 0 {
			continue
		}
		if n++; n <= maxSeries {
			fmt.Fprintf(&b, "  %s (A %d points, pyramid %d):\n", k, len(w), len(g))
			for j, d := range diffs {
				if j == maxPoints {
					b.WriteString("      ...\n")
					break
				}
				fmt.Fprintf(&b, "      %s\n", d)
			}
		}
	}
	if n > maxSeries {
		fmt.Fprintf(&b, "  ... %d series differ in all\n", n)
	}
	return b.String()
}

// pointDiff describes how two points differ, or returns "".
func pointDiff(w, g histPoint) string {
	if w.t != g.t {
		return fmt.Sprintf("timestamp: A %s, pyramid %s", w, g)
	}
	if w.Type() != g.Type() {
		return fmt.Sprintf("at %d: A has a %s, pyramid a %s (%s)", w.t, w.Type(), g.Type(), g)
	}
	var d string
	switch {
	case w.h != nil:
		d = histFieldDiff(w.h, g.h)
	case w.fh != nil:
		d = floatHistFieldDiff(w.fh, g.fh)
	case w.f != g.f:
		d = fmt.Sprintf("value %#016x, pyramid %#016x", w.f, g.f)
	}
	if d == "" {
		return ""
	}
	return fmt.Sprintf("at %d: %s", w.t, d)
}

// histFieldDiff compares two integer histograms field by field: schema, zero threshold
// (bits), zero count, count, sum (bits, so a stale marker must stay one), custom values,
// and the positive and negative spans and buckets. The bucket layout is compared after
// Compact(0), which drops empty buckets and merges spans: a chunk holds all its samples in
// one layout, so Prometheus's TSDB returns a histogram with the empty buckets that later
// samples of its chunk needed, while remote write carried it as scraped. The populated
// buckets, their indexes and counts must match exactly.
func histFieldDiff(a, b *histogram.Histogram) string {
	ca, cb := a.Copy().Compact(0), b.Copy().Compact(0)
	var d []string
	add := func(field string, x, y any) {
		if fmt.Sprint(x) != fmt.Sprint(y) {
			d = append(d, fmt.Sprintf("%s A %v, pyramid %v", field, x, y))
		}
	}
	add("schema", ca.Schema, cb.Schema)
	add("zero threshold bits", math.Float64bits(ca.ZeroThreshold), math.Float64bits(cb.ZeroThreshold))
	add("zero count", ca.ZeroCount, cb.ZeroCount)
	add("count", ca.Count, cb.Count)
	add("sum bits", fmt.Sprintf("%#016x", math.Float64bits(ca.Sum)), fmt.Sprintf("%#016x", math.Float64bits(cb.Sum)))
	// Copy keeps custom values only for the custom-buckets schema: compare the originals.
	add("custom values", a.CustomValues, b.CustomValues)
	add("positive spans", ca.PositiveSpans, cb.PositiveSpans)
	add("positive buckets", ca.PositiveBuckets, cb.PositiveBuckets)
	add("negative spans", ca.NegativeSpans, cb.NegativeSpans)
	add("negative buckets", ca.NegativeBuckets, cb.NegativeBuckets)
	return strings.Join(d, "; ")
}

// floatHistFieldDiff is histFieldDiff for float histograms; counts compare by their bits.
func floatHistFieldDiff(a, b *histogram.FloatHistogram) string {
	ca, cb := a.Copy().Compact(0), b.Copy().Compact(0)
	bits := func(fs []float64) []string {
		out := make([]string, len(fs))
		for i, f := range fs {
			out[i] = fmt.Sprintf("%#x", math.Float64bits(f))
		}
		return out
	}
	var d []string
	add := func(field string, x, y any) {
		if fmt.Sprint(x) != fmt.Sprint(y) {
			d = append(d, fmt.Sprintf("%s A %v, pyramid %v", field, x, y))
		}
	}
	add("schema", ca.Schema, cb.Schema)
	add("zero threshold bits", math.Float64bits(ca.ZeroThreshold), math.Float64bits(cb.ZeroThreshold))
	add("zero count bits", math.Float64bits(ca.ZeroCount), math.Float64bits(cb.ZeroCount))
	add("count bits", math.Float64bits(ca.Count), math.Float64bits(cb.Count))
	add("sum bits", math.Float64bits(ca.Sum), math.Float64bits(cb.Sum))
	add("custom values", bits(a.CustomValues), bits(b.CustomValues))
	add("positive spans", ca.PositiveSpans, cb.PositiveSpans)
	add("positive buckets", bits(ca.PositiveBuckets), bits(cb.PositiveBuckets))
	add("negative spans", ca.NegativeSpans, cb.NegativeSpans)
	add("negative buckets", bits(ca.NegativeBuckets), bits(cb.NegativeBuckets))
	return strings.Join(d, "; ")
}

// checkHistHints compares counter reset hints where they carry meaning. What a hint means
// depends on where it comes from:
//
//   - Remote write: Prometheus 2.42 sends GAUGE for a gauge histogram and UNKNOWN for every
//     counter histogram and every stale marker (its head keeps no per-sample hints for
//     counters; it detects resets only to cut chunks). pyramid's SAMPLES answer returns the
//     hints as written, so it must say GAUGE exactly where A's chunks hold a gauge
//     histogram and UNKNOWN everywhere else.
//   - Chunks: a decoded sample's hint comes from its chunk. The first sample of a chunk
//     reads UNKNOWN (or GAUGE), every later one NOT_COUNTER_RESET (or GAUGE), whatever
//     the chunk's header says; so where the stores cut chunks differently, the decoded
//     hints differ without either being wrong. What must hold in pyramid's chunks: every
//     gauge histogram reads GAUGE, as in A's; no sample that really is a counter reset
//     (its count fell) reads NOT_COUNTER_RESET, for PromQL would then trust it and compute
//     a wrong rate; and the chunk that starts at the reset carries the CounterReset
//     header, as Prometheus's chunk appender sets it. A's own chunk there is logged, not
//     checked: 2.42's head starts it with an UNKNOWN header.
func checkHistHints(t *testing.T, want chunkedSet, sampled pointSet, streamed chunkedSet) {
	t.Helper()
	wantPoints := want.points()
	// Only the first few mismatches of a series are reported; the count says how many.
	const maxPerSeries = 3
	var (
		mismatches int
		current    string // the series being checked
		inSeries   int
	)
	mismatch := func(format string, args ...any) {
		t.Helper()
		mismatches++
		if inSeries++; inSeries <= maxPerSeries {
			t.Errorf(format, args...)
		} else if inSeries == maxPerSeries+1 {
			t.Errorf("%s: more hint mismatches, not shown", current)
		}
	}
	checked, resets := 0, 0
	for _, k := range sortedKeys(wantPoints) {
		current, inSeries = k, 0
		wp := wantPoints[k]
		sp := sampled[k]
		if len(sp) != len(wp) {
			continue // diffPointSets has reported it
		}
		for i, p := range wp {
			if p.h == nil {
				continue
			}
			wantHint := histogram.UnknownCounterReset
			if p.h.CounterResetHint == histogram.GaugeType {
				wantHint = histogram.GaugeType
			}
			if got := sp[i].H(); got != nil && got.CounterResetHint != wantHint {
				mismatch("%s at %d: pyramid's SAMPLES hint is %s, want %s as Prometheus 2.42 wrote it", k, p.t, hintName(got.CounterResetHint), hintName(wantHint))
			}
			checked++
		}

		// Where A's chunks cut, for the log.
		var aHeaders []string
		for _, c := range want[k] {
			if c.enc != chunkenc.EncXOR {
				aHeaders = append(aHeaders, fmt.Sprintf("%d:%s", c.minT, headerName(c.header)))
			}
		}

		var pp []histPoint
		starts := map[int64]chunkenc.CounterResetHeader{}
		for _, c := range streamed[k] {
			pp = append(pp, c.points...)
			starts[c.minT] = c.header
		}
		if len(pp) != len(wp) {
			continue
		}
		var pHeaders []string
		for _, c := range streamed[k] {
			if c.enc != chunkenc.EncXOR {
				pHeaders = append(pHeaders, fmt.Sprintf("%d:%s", c.minT, headerName(c.header)))
			}
		}
		if len(aHeaders) > 0 {
			t.Logf("%s: chunk headers in A %v, in pyramid %v", k, aHeaders, pHeaders)
		}
		for i, p := range wp {
			if p.h == nil || p.isStale() {
				continue
			}
			got := pp[i].H()
			if got == nil {
				continue
			}
			isGauge := p.h.CounterResetHint == histogram.GaugeType
			if (got.CounterResetHint == histogram.GaugeType) != isGauge {
				mismatch("%s at %d: pyramid's chunk reads hint %s, A's %s", k, p.t, hintName(got.CounterResetHint), hintName(p.h.CounterResetHint))
			}
			if isGauge || i == 0 || wp[i-1].h == nil || wp[i-1].isStale() || p.h.Count >= wp[i-1].h.Count {
				continue
			}
			resets++
			if got.CounterResetHint == histogram.NotCounterReset {
				mismatch("%s at %d: the count falls from %d to %d, but pyramid's chunk says not-reset", k, p.t, wp[i-1].h.Count, p.h.Count)
			}
			if h, ok := starts[p.t]; !ok || h != chunkenc.CounterReset {
				mismatch("%s at %d: the count falls from %d to %d, but no pyramid chunk with the reset header starts there (chunks %v)", k, p.t, wp[i-1].h.Count, p.h.Count, pHeaders)
			}
		}
	}
	if checked == 0 || resets == 0 {
		t.Errorf("checked %d SAMPLES hints and %d counter resets in chunks; the data should have both", checked, resets)
	}
	t.Logf("checked the hints of %d histograms in pyramid's SAMPLES answer and %d counter resets in its chunks; %d mismatches", checked, resets, mismatches)
}

// checkChunkEncoding checks that pyramid's histogram chunks are what Prometheus's own
// storage.NewSeriesToChunkEncoder makes of the series pyramid returns in SAMPLES: the same
// chunks, cut at the same samples, with the same headers and bytes. Float series are
// pyramid's own XOR encoding and were compared sample by sample already.
func checkChunkEncoding(t *testing.T, sampled pointSet, streamed chunkedSet) {
	t.Helper()
	compared := 0
	for _, k := range sortedKeys(sampled) {
		ps := sampled[k]
		if !slices.ContainsFunc(ps, func(p histPoint) bool { return p.h != nil || p.fh != nil }) {
			continue
		}
		got, ok := streamed[k]
		if !ok {
			continue // diffPointSets has reported it
		}
		samples := make([]chunks.Sample, len(ps))
		for i, p := range ps {
			samples[i] = p
		}
		it := storage.NewSeriesToChunkEncoder(storage.NewListSeries(labels.EmptyLabels(), samples)).Iterator(nil)
		var want []histChunk
		for it.Next() {
			m := it.At()
			c := histChunk{minT: m.MinTime, maxT: m.MaxTime, enc: m.Chunk.Encoding(), data: m.Chunk.Bytes()}
			if hc, ok := m.Chunk.(*chunkenc.HistogramChunk); ok {
				c.header = hc.GetCounterResetHeader()
			}
			want = append(want, c)
		}
		if err := it.Err(); err != nil {
			t.Errorf("encode %s like Prometheus: %v", k, err)
			continue
		}
		first := 0
		for first < min(len(want), len(got)) {
			w, g := want[first], got[first]
			if w.enc != g.enc || w.minT != g.minT || w.maxT != g.maxT || w.header != g.header || !bytes.Equal(w.data, g.data) {
				break
			}
			first++
		}
		// The chunks from the first that differs, a few of them.
		describe := func(cs []histChunk) string {
			var parts []string
			for i := first; i < min(len(cs), first+4); i++ {
				c := cs[i]
				parts = append(parts, fmt.Sprintf("%s %d..%d %s %dB", c.enc, c.minT, c.maxT, headerName(c.header), len(c.data)))
			}
			if len(cs) > first+4 {
				parts = append(parts, "...")
			}
			return strings.Join(parts, ", ")
		}
		if first < max(len(want), len(got)) {
			t.Errorf("%s: pyramid's chunks are not Prometheus's encoding of its own samples: %d and %d chunks, chunk %d differs:\n  want %s\n  got  %s",
				k, len(want), len(got), first, describe(want), describe(got))
		}
		compared++
	}
	if compared == 0 {
		t.Error("compared the chunks of no histogram series")
	}
}

// histogramsFailed returns an error if Prometheus at promURL has given up on histograms it
// sent to the pyramid at pyramidURL: a 4xx makes it drop them, and then waiting cannot help.
func histogramsFailed(promURL, pyramidURL string) error {
	failed, err := sumMetric(promURL+"/metrics", "prometheus_remote_storage_histograms_failed_total",
		map[string]string{"url": pyramidURL + "/api/v1/write"})
	if err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("Prometheus A failed to send %v histograms to %s: pyramid refused them; its log says why", failed, pyramidURL)
	}
	return nil
}

// startHistPrometheus runs Prometheus A with cfg (histPrometheusConfig): 2.42 with its
// native-histograms feature on.
func startHistPrometheus(t *testing.T, bin, work, cfg string) *prometheusServer {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	dir := filepath.Join(work, "prometheus-a")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create Prometheus A's directory: %v", err)
	}
	s := &prometheusServer{url: "http://" + addr, cfgPath: filepath.Join(dir, "prometheus.yml")}
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatalf("write Prometheus A's config: %v", err)
	}
	s.process = startProcess(t, "prometheus-a", filepath.Join(work, "prometheus-a.log"), nil, bin,
		"--config.file="+s.cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--enable-feature=native-histograms",
		"--log.level=info",
	)
	waitReady(t, s.process, s.url+"/-/ready")
	return s
}

// histPrometheusConfig renders A's config: it scrapes the histogram exporter every second
// and remote-writes everything to pyramidURL and only the histogram series to onlyURL.
// Without targets the job stays, so that its target's removal writes stale markers; the
// remote_write sections are the same either way, so that a reload keeps the running
// queues. send_native_histograms is 2.42's switch for sending histograms at all.
func histPrometheusConfig(exporter, pyramidURL, onlyURL string, targets bool) string {
	job := "  - job_name: histograms\n"
	if targets {
		job += fmt.Sprintf("    static_configs:\n      - targets: [%q]\n", exporter)
	}
	const queue = `    send_native_histograms: true
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 50ms
      max_backoff: 1s
`
	return fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s

scrape_configs:
%s
remote_write:
  - url: %q
%s  - url: %q
%s    write_relabel_configs:
      - source_labels: [__name__]
        regex: e2e_nh_.+
        action: keep
`, job, pyramidURL+"/api/v1/write", queue, onlyURL+"/api/v1/write", queue)
}

// reloadConfig writes cfg, makes Prometheus reload it (SIGHUP) and waits until it has.
func (s *prometheusServer) reloadConfig(t *testing.T, cfg string) {
	t.Helper()
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatalf("write Prometheus config: %v", err)
	}
	// The reload timestamp has whole seconds; one from before the signal must not count.
	signalled := time.Now().Unix()
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("signal Prometheus to reload: %v", err)
	}
	waitFor(t, "Prometheus to reload its config", time.Minute, func() error {
		if err := s.checkAlive(); err != nil {
			return stopWaiting(err)
		}
		ok, err := sumMetric(s.url+"/metrics", "prometheus_config_last_reload_successful", nil)
		if err != nil {
			return err
		}
		if ok != 1 {
			return stopWaiting(errors.New("reload failed; see the Prometheus log"))
		}
		ts, err := sumMetric(s.url+"/metrics", "prometheus_config_last_reload_success_timestamp_seconds", nil)
		if err != nil {
			return err
		}
		if int64(ts) < signalled {
			return fmt.Errorf("last successful reload at %d, signalled at %d", int64(ts), signalled)
		}
		return nil
	})
}

// TestHistogramComparisonSeesEveryField checks the comparison the end-to-end test relies
// on: a change in any one field of a histogram is a difference, a different layout of the
// same populated buckets (the empty buckets a chunk adds) is not, and a stale marker is
// only equal to a stale marker of the same kind.
func TestHistogramComparisonSeesEveryField(t *testing.T) {
	base := func() *histogram.Histogram {
		return &histogram.Histogram{
			Schema: 3, ZeroThreshold: 1.0 / 128, ZeroCount: 2, Count: 9, Sum: 12.5,
			PositiveSpans:   []histogram.Span{{Offset: -2, Length: 2}, {Offset: 3, Length: 1}},
			PositiveBuckets: []int64{1, 1, -1}, // 1, 2, 1
			NegativeSpans:   []histogram.Span{{Offset: 1, Length: 1}},
			NegativeBuckets: []int64{3},
		}
	}
	if d := histFieldDiff(base(), base()); d != "" {
		t.Fatalf("a histogram differs from itself: %s", d)
	}
	// The same populated buckets with empty ones between them, as a recoded chunk holds
	// them: spans [-2, 6] with counts 1 2 0 0 0 1.
	padded := base()
	padded.PositiveSpans = []histogram.Span{{Offset: -2, Length: 6}}
	padded.PositiveBuckets = []int64{1, 1, -2, 0, 0, 1}
	if d := histFieldDiff(base(), padded); d != "" {
		t.Errorf("empty buckets count as a difference: %s", d)
	}
	for name, change := range map[string]func(h *histogram.Histogram){
		"schema":          func(h *histogram.Histogram) { h.Schema = 2 },
		"zero threshold":  func(h *histogram.Histogram) { h.ZeroThreshold = 1.0 / 64 },
		"zero count":      func(h *histogram.Histogram) { h.ZeroCount++ },
		"count":           func(h *histogram.Histogram) { h.Count++ },
		"sum":             func(h *histogram.Histogram) { h.Sum = math.Nextafter(h.Sum, 13) },
		"stale sum":       func(h *histogram.Histogram) { h.Sum = math.Float64frombits(value.StaleNaN) },
		"bucket count":    func(h *histogram.Histogram) { h.PositiveBuckets[2]++ },
		"bucket index":    func(h *histogram.Histogram) { h.PositiveSpans[1].Offset++ },
		"negative bucket": func(h *histogram.Histogram) { h.NegativeBuckets[0]++ },
		"negative index":  func(h *histogram.Histogram) { h.NegativeSpans[0].Offset-- },
		"custom values":   func(h *histogram.Histogram) { h.CustomValues = []float64{1} },
	} {
		h := base()
		change(h)
		if d := histFieldDiff(base(), h); d == "" {
			t.Errorf("a change of the %s goes unnoticed", name)
		}
	}
	stale := histPoint{t: 5, h: &histogram.Histogram{Sum: math.Float64frombits(value.StaleNaN)}}
	if d := pointDiff(stale, stale); d != "" {
		t.Errorf("a stale marker differs from itself: %s", d)
	}
	if d := pointDiff(stale, histPoint{t: 5, f: staleNaNBits}); d == "" {
		t.Error("a histogram stale marker equals a float one")
	}
	if d := pointDiff(stale, histPoint{t: 5, h: &histogram.Histogram{Sum: math.NaN()}}); d == "" {
		t.Error("a histogram stale marker equals a histogram whose sum is an ordinary NaN")
	}
	if d := pointDiff(stale, histPoint{t: 6, h: stale.h}); d == "" {
		t.Error("a timestamp change goes unnoticed")
	}
}
