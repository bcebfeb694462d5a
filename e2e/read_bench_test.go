package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// The data set of BenchmarkRemoteRead: benchSeries series of one metric, one sample every
// benchStepMs for one day, the same in pyramid and in a Prometheus 2.42 TSDB.
const (
	benchMetric     = "bench_metric"
	benchSeries     = 1000
	benchStepMs     = 15_000
	benchPerSeries  = 24 * 60 * 60 * 1000 / benchStepMs // 5,760
	benchTargets    = 10                                // instances the series are spread over
	benchDB         = "e2e_read_bench"
	benchBlockRange = 54 * time.Hour // a TSDB block range that promtool can write (see benchDay)
)

// BenchmarkRemoteRead measures remote read of 1, 100 and 1,000 series over one day at 15s
// (5,760 samples a series) from pyramid and, side by side in the same run, from Prometheus
// 2.42 answering the same protocol out of its own TSDB, plus the same selector as a PromQL
// range query as the anchor a dashboard user sees:
//
//	<N>/pyramid/samples          pyramid's /api/v1/read, SAMPLES (no accepted response types, as Prometheus <= 2.54 asks)
//	<N>/pyramid/streamed         pyramid's /api/v1/read, STREAMED_XOR_CHUNKS through Prometheus 3's own read client
//	<N>/pyramid/query_range      a second Prometheus 2.42 with an empty TSDB and remote_read to pyramid: /api/v1/query_range
//	<N>/prometheus/samples       Prometheus's /api/v1/read, SAMPLES
//	<N>/prometheus/streamed      Prometheus's /api/v1/read, STREAMED_XOR_CHUNKS
//	<N>/prometheus/query_range   Prometheus's /api/v1/query_range of the selector, step 15s
//
// One op is one request answered and decoded down to (timestamp, float) pairs: every sample
// is iterated, so decoding counts. Every answer is checked against the generated data (series,
// sample count and a digest of every label set, timestamp and float bit pattern), so a
// benchmark can neither measure an empty answer nor a wrong one. Custom metrics:
//
//	samples/op       samples returned (N x 5,760)
//	wire-B/sample    response bytes read off the TCP connection (headers, framing and
//	                 compression included) per sample
//	ttfb-ms/op       time to the first response byte: for SAMPLES and query_range the
//	                 server's whole work, for streamed responses the start of the stream
//	<proc>-cpu-ms/op CPU time (user + system, from /proc, 10ms ticks) of each process that
//	                 served the read: pyramid, clickhouse, prometheus (for pyramid/query_range
//	                 the Prometheus reading from pyramid), and client, the benchmark itself
//
// Setup takes about half a minute on a 2-core machine and is not timed: it loads the day into a private ClickHouse
// through pyramid's remote write and into a TSDB with promtool, and checks that both hold
// exactly benchSeries x benchPerSeries samples. Run it alone (`make bench-read`): every server
// shares the machine's cores with the benchmark. It needs clickhouse-server, clickhouse-client,
// prometheus and promtool, and skips without them unless PYRAMID_TEST_REQUIRE=1.
// PYRAMID_BENCH_OPTIMIZE=0 skips the OPTIMIZE ... FINAL that otherwise merges pyramid's parts
// before measuring, the way a day-old partition ends up after background merges.
func BenchmarkRemoteRead(b *testing.B) {
	env := setupBenchRead(b)
	for _, sel := range env.selections {
		b.Run(sel.name, func(b *testing.B) {
			pyr, prom, viaPyr := env.pyramidProcs, env.promProcs, env.remoteProcs
			b.Run("pyramid/samples", func(b *testing.B) { runBenchRead(b, env.pyramidSamples, sel, pyr) })
			b.Run("pyramid/streamed", func(b *testing.B) { runBenchRead(b, env.pyramidStreamed, sel, pyr) })
			b.Run("pyramid/query_range", func(b *testing.B) { runBenchRead(b, env.pyramidPromQL, sel, viaPyr) })
			b.Run("prometheus/samples", func(b *testing.B) { runBenchRead(b, env.promSamples, sel, prom) })
			b.Run("prometheus/streamed", func(b *testing.B) { runBenchRead(b, env.promStreamed, sel, prom) })
			b.Run("prometheus/query_range", func(b *testing.B) { runBenchRead(b, env.promPromQL, sel, prom) })
		})
	}
}

// benchReadEnv is everything the sub-benchmarks share: the data's window, the selections and
// a reader per store and protocol.
type benchReadEnv struct {
	start, last int64 // first and last sample timestamp (ms)
	selections  []benchSelection

	pyramidSamples, pyramidStreamed, pyramidPromQL benchReader
	promSamples, promStreamed, promPromQL          benchReader

	// The processes that serve each kind of read, whose CPU time the reads report.
	pyramidProcs, promProcs, remoteProcs []benchProc

	// The servers themselves, for benchmarks that ask them more (BenchmarkQueryAPI).
	pyramid                    *pyramidServer
	promURL, chAddr, bin, work string
}

// benchProc is a server process whose CPU time a sub-benchmark reports as name-cpu-ms/op.
type benchProc struct {
	name string
	pid  int
}

// benchCPUTime returns the user + system CPU time of a process so far, from /proc/<pid>/stat
// (fields 14 and 15, in the kernel's USER_HZ ticks, 100 a second on Linux).
func benchCPUTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces; count from after it.
	rest := raw[bytes.LastIndexByte(raw, ')')+1:]
	fields := strings.Fields(string(rest))
	if len(fields) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields after the command name", pid, len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100), nil
}

// benchSelection is one series selector, as remote-read matchers and as PromQL, with the
// digest of what it must return.
type benchSelection struct {
	name     string
	matchers []*prompb.LabelMatcher
	promql   string
	want     benchDigest
}

// benchReader answers one selection; it returns what it decoded, the response bytes read off the
// wire and the time to the first response byte.
type benchReader func(ctx context.Context, sel benchSelection) (benchDigest, benchReadStats, error)

type benchReadStats struct {
	wire int64
	ttfb time.Duration
}

// runBenchRead is one sub-benchmark: the same read b.N times, each answer checked in full.
func runBenchRead(b *testing.B, read benchReader, sel benchSelection, procs []benchProc) {
	b.ReportAllocs()
	ctx := context.Background()
	readChecked := func() benchReadStats {
		got, st, err := read(ctx, sel)
		if err != nil {
			b.Fatal(err)
		}
		if got != sel.want {
			b.Fatalf("answer differs from the data loaded: got %d series, %d samples, digest %#x; want %d series, %d samples, digest %#x",
				got.series, got.samples, got.sum, sel.want.series, sel.want.samples, sel.want.sum)
		}
		return st
	}
	// One untimed read first, so that every store is measured warm: connections open and
	// the selection's data in the page cache and the servers' own caches.
	readChecked()
	// That read, and the previous sub-benchmark, may have left hundreds of MB of garbage;
	// collect it now so that its cost is not billed to the timed reads.
	runtime.GC()
	var wire int64
	var ttfb time.Duration
	// A full slice expression: the shared procs must not gain the client entry in place.
	procs = append(procs[:len(procs):len(procs)], benchProc{"client", os.Getpid()})
	cpuBefore := make([]time.Duration, len(procs))
	for i, p := range procs {
		var err error
		if cpuBefore[i], err = benchCPUTime(p.pid); err != nil {
			b.Logf("no CPU time for %s: %v", p.name, err)
			cpuBefore[i] = -1
		}
	}
	for b.Loop() {
		st := readChecked()
		wire += st.wire
		ttfb += st.ttfb
	}
	for i, p := range procs {
		if after, err := benchCPUTime(p.pid); err == nil && cpuBefore[i] >= 0 {
			b.ReportMetric(float64((after-cpuBefore[i]).Microseconds())/1000/float64(b.N), p.name+"-cpu-ms/op")
		}
	}
	b.ReportMetric(float64(sel.want.samples), "samples/op")
	b.ReportMetric(float64(wire)/float64(b.N)/float64(sel.want.samples), "wire-B/sample")
	b.ReportMetric(float64(ttfb.Microseconds())/1000/float64(b.N), "ttfb-ms/op")
}

// benchDigest sums up an answer independently of series order: a hash per series of its label
// set and of its samples in the order received (so samples out of time order, a missing or
// an extra sample, or one changed bit all change it), added over the series.
type benchDigest struct {
	series, samples int
	sum             uint64
}

// benchSeriesHash folds one series' samples, in order, FNV-style.
type benchSeriesHash uint64

const benchFNVPrime = 1099511628211

func (h benchSeriesHash) add(ts int64, v float64) benchSeriesHash {
	h = (h ^ benchSeriesHash(uint64(ts))) * benchFNVPrime
	return (h ^ benchSeriesHash(math.Float64bits(v))) * benchFNVPrime
}

func (d *benchDigest) addSeries(lset labels.Labels, h benchSeriesHash, samples int) {
	d.series++
	d.samples += samples
	// The splitmix64 finalizer, so that series with related hashes do not cancel out.
	x := lset.Hash() ^ uint64(h)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	d.sum += x
}

// benchDigestSeriesSet iterates every sample of ss, as PromQL would, into a digest. A series may
// come in several pieces (a streamed series cut across frames, say): the pieces of one label
// set must follow each other, and they are folded as one series.
func benchDigestSeriesSet(ss storage.SeriesSet) (benchDigest, error) {
	var d benchDigest
	var it chunkenc.Iterator
	var cur labels.Labels
	var h benchSeriesHash
	n := 0
	flush := func() {
		if n > 0 {
			d.addSeries(cur, h, n)
		}
	}
	for ss.Next() {
		s := ss.At()
		if !labels.Equal(s.Labels(), cur) {
			flush()
			cur, h, n = s.Labels(), 0, 0
		}
		it = s.Iterator(it)
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			if vt != chunkenc.ValFloat {
				return d, fmt.Errorf("series %s holds a %s sample; the data has floats only", cur, vt)
			}
			ts, v := it.At()
			h = h.add(ts, v)
			n++
		}
		if err := it.Err(); err != nil {
			return d, fmt.Errorf("iterate series %s: %w", cur, err)
		}
	}
	if err := ss.Err(); err != nil {
		return d, fmt.Errorf("read series: %w", err)
	}
	flush()
	return d, nil
}

// benchCountingDialer dials TCP and counts every byte read from its connections: the response
// bytes as they crossed the wire, whatever the body's encoding.
type benchCountingDialer struct{ read atomic.Int64 }

func (d *benchCountingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &benchCountingConn{Conn: c, n: &d.read}, nil
}

type benchCountingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *benchCountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// benchMeasure runs do with a trace that records the first response byte, and returns the bytes
// the dialer read meanwhile. The readers run one request at a time, so the count is this
// request's response.
func benchMeasure(ctx context.Context, d *benchCountingDialer, do func(ctx context.Context) (benchDigest, error)) (benchDigest, benchReadStats, error) {
	before := d.read.Load()
	began := time.Now()
	var first time.Time
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotFirstResponseByte: func() { first = time.Now() }})
	got, err := do(ctx)
	st := benchReadStats{wire: d.read.Load() - before}
	if !first.IsZero() {
		st.ttfb = first.Sub(began)
	}
	return got, st, err
}

func newBenchCountingClient(d *benchCountingDialer) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 2,
		// The requests name their own Accept-Encoding; the transport must not decode for us,
		// or gzip would count as decoded rather than as on the wire.
		DisableCompression: true,
	}}
}

// remoteQuery is the remote-read query for sel over the day. The hints are those of a
// PromQL range query of the bare selector at a 15s step.
func (env *benchReadEnv) remoteQuery(sel benchSelection) *prompb.Query {
	return &prompb.Query{
		StartTimestampMs: env.start,
		EndTimestampMs:   env.last,
		Matchers:         sel.matchers,
		Hints:            &prompb.ReadHints{StartMs: env.start, EndMs: env.last, StepMs: benchStepMs},
	}
}

// samplesReader posts remote-read requests the way Prometheus 2.42's client does (no
// accepted response types, so the answer is SAMPLES) and decodes the answer with the
// decoding Prometheus 3's client uses for SAMPLES.
func (env *benchReadEnv) samplesReader(url string) benchReader {
	d := &benchCountingDialer{}
	client := newBenchCountingClient(d)
	return func(ctx context.Context, sel benchSelection) (benchDigest, benchReadStats, error) {
		return benchMeasure(ctx, d, func(ctx context.Context) (benchDigest, error) {
			raw, err := (&prompb.ReadRequest{Queries: []*prompb.Query{env.remoteQuery(sel)}}).Marshal()
			if err != nil {
				return benchDigest{}, fmt.Errorf("marshal read request: %w", err)
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(snappy.Encode(nil, raw)))
			if err != nil {
				return benchDigest{}, err
			}
			req.Header.Set("Content-Encoding", "snappy")
			req.Header.Set("Accept-Encoding", "snappy")
			req.Header.Set("Content-Type", "application/x-protobuf")
			req.Header.Set("User-Agent", "Prometheus/2.42.0")
			req.Header.Set("X-Prometheus-Remote-Read-Version", "0.1.0")
			resp, err := client.Do(req)
			if err != nil {
				return benchDigest{}, fmt.Errorf("post remote read: %w", err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return benchDigest{}, fmt.Errorf("read remote-read response: %w", err)
			}
			if resp.StatusCode != http.StatusOK {
				return benchDigest{}, fmt.Errorf("remote read %s: %s: %s", url, resp.Status, benchTruncate(body, 300))
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/x-protobuf" {
				return benchDigest{}, fmt.Errorf("remote read %s answered Content-Type %q, want SAMPLES (application/x-protobuf)", url, ct)
			}
			decoded, err := snappy.Decode(nil, body)
			if err != nil {
				return benchDigest{}, fmt.Errorf("snappy-decode remote-read response: %w", err)
			}
			var rr prompb.ReadResponse
			if err := rr.Unmarshal(decoded); err != nil {
				return benchDigest{}, fmt.Errorf("unmarshal remote-read response: %w", err)
			}
			if len(rr.Results) != 1 {
				return benchDigest{}, fmt.Errorf("remote read returned %d results for 1 query", len(rr.Results))
			}
			return benchDigestSeriesSet(remote.FromQueryResult(false, rr.Results[0]))
		})
	}
}

// streamedReader reads through Prometheus 3's remote-read client, asking for
// STREAMED_XOR_CHUNKS only. That client picks its decoder by the response's Content-Type,
// so the reader also checks afterwards, from the client's own metrics, that the answers really
// were streamed.
func (env *benchReadEnv) streamedReader(tb testing.TB, name, rawURL string) benchReader {
	tb.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		tb.Fatalf("parse %s: %v", rawURL, err)
	}
	d := &benchCountingDialer{}
	client, err := remote.NewReadClient(name, &remote.ClientConfig{
		URL:                   &config_util.URL{URL: u},
		Timeout:               model.Duration(10 * time.Minute),
		ChunkedReadLimit:      config.DefaultChunkedReadLimit,
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS},
	}, config_util.WithDialContextFunc(d.DialContext))
	if err != nil {
		tb.Fatalf("create remote-read client for %s: %v", rawURL, err)
	}
	return func(ctx context.Context, sel benchSelection) (benchDigest, benchReadStats, error) {
		got, st, err := benchMeasure(ctx, d, func(ctx context.Context) (benchDigest, error) {
			ss, err := client.Read(ctx, env.remoteQuery(sel), false)
			if err != nil {
				return benchDigest{}, fmt.Errorf("remote read %s: %w", rawURL, err)
			}
			return benchDigestSeriesSet(ss)
		})
		if err == nil {
			err = benchCheckStreamed(name)
		}
		return got, st, err
	}
}

// benchCheckStreamed fails if the remote-read client called name has ever received anything but
// a streamed answer.
func benchCheckStreamed(name string) error {
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return fmt.Errorf("gather the remote-read client's metrics: %w", err)
	}
	for _, f := range families {
		if f.GetName() != "prometheus_remote_read_client_queries_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var remoteName, responseType string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "remote_name":
					remoteName = l.GetValue()
				case "response_type":
					responseType = l.GetValue()
				}
			}
			if remoteName == name && responseType != "chunked" && m.GetCounter().GetValue() > 0 {
				return fmt.Errorf("%s answered %v requests with response type %q, not streamed chunks", name, m.GetCounter().GetValue(), responseType)
			}
		}
	}
	return nil
}

// rangeReader asks a Prometheus for /api/v1/query_range of the selection over the day at
// the sample interval, with gzip as browsers and Grafana ask, and decodes the JSON.
func (env *benchReadEnv) rangeReader(baseURL string) benchReader {
	d := &benchCountingDialer{}
	client := newBenchCountingClient(d)
	return func(ctx context.Context, sel benchSelection) (benchDigest, benchReadStats, error) {
		return benchMeasure(ctx, d, func(ctx context.Context) (benchDigest, error) {
			q := url.Values{
				"query": {sel.promql},
				"start": {benchFormatMs(env.start)},
				"end":   {benchFormatMs(env.last)},
				"step":  {strconv.Itoa(benchStepMs / 1000)},
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/api/v1/query_range?"+q.Encode(), nil)
			if err != nil {
				return benchDigest{}, err
			}
			req.Header.Set("Accept-Encoding", "gzip")
			resp, err := client.Do(req)
			if err != nil {
				return benchDigest{}, fmt.Errorf("query %s: %w", baseURL, err)
			}
			defer resp.Body.Close()
			var body io.Reader = resp.Body
			if resp.Header.Get("Content-Encoding") == "gzip" {
				gz, err := gzip.NewReader(resp.Body)
				if err != nil {
					return benchDigest{}, fmt.Errorf("gunzip query_range response: %w", err)
				}
				body = gz
			}
			var r benchRangeResponse
			if err := json.NewDecoder(body).Decode(&r); err != nil {
				return benchDigest{}, fmt.Errorf("decode query_range response (%s): %w", resp.Status, err)
			}
			// Drain what the decoder left (the gzip trailer, a newline) so the connection is
			// reused and its bytes counted.
			_, _ = io.Copy(io.Discard, body)
			if resp.StatusCode != http.StatusOK || r.Status != "success" {
				return benchDigest{}, fmt.Errorf("query_range %q on %s: %s: %s", sel.promql, baseURL, resp.Status, r.Error)
			}
			if r.Data.ResultType != "matrix" {
				return benchDigest{}, fmt.Errorf("query_range returned a %s, want a matrix", r.Data.ResultType)
			}
			var dg benchDigest
			for _, s := range r.Data.Result {
				var h benchSeriesHash
				for _, p := range s.Values {
					h = h.add(p.t, p.v)
				}
				dg.addSeries(labels.FromMap(s.Metric), h, len(s.Values))
			}
			return dg, nil
		})
	}
}

// benchRangeResponse is the part of a query_range answer the benchmark reads.
type benchRangeResponse struct {
	Status   string   `json:"status"`
	Error    string   `json:"error"`
	Warnings []string `json:"warnings"`
	Data     struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Values []benchRangePoint `json:"values"`
		} `json:"result"`
	} `json:"data"`
}

// benchRangePoint is one [<unix seconds>, "<value>"] pair of a matrix.
type benchRangePoint struct {
	t int64
	v float64
}

func (p *benchRangePoint) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	comma := strings.IndexByte(s, ',')
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' || comma < 0 {
		return fmt.Errorf("point %s is not [time, \"value\"]", benchTruncate(b, 80))
	}
	sec, err := strconv.ParseFloat(strings.TrimSpace(s[1:comma]), 64)
	if err != nil {
		return fmt.Errorf("parse time of point %s: %w", benchTruncate(b, 80), err)
	}
	v, err := strconv.Unquote(strings.TrimSpace(s[comma+1 : len(s)-1]))
	if err != nil {
		return fmt.Errorf("unquote value of point %s: %w", benchTruncate(b, 80), err)
	}
	p.t = int64(math.Round(sec * 1000))
	p.v, err = strconv.ParseFloat(v, 64)
	if err != nil {
		return fmt.Errorf("parse value of point %s: %w", benchTruncate(b, 80), err)
	}
	return nil
}

// benchFormatMs renders a millisecond timestamp as the API's unix seconds.
func benchFormatMs(ms int64) string { return strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64) }

func benchTruncate(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// benchData is the generated day: per series its labels and values; series i has a sample
// at start + k*benchStepMs for every k < benchPerSeries.
type benchData struct {
	start  int64
	labels []labels.Labels
	values [][]float64
}

// benchKinds are the shapes of value, one per series in turn, chosen to span what
// compresses well and what does not: integer counters, counters of fractional seconds (no
// exact binary form), integer gauges and arbitrary doubles.
var benchKinds = []string{"requests", "cpu_seconds", "bytes", "ratio"}

// benchDay picks the day to load: in the past (it ends at least 2 hours ago, so no store
// could be answering from memory) and inside one benchBlockRange-aligned window. Prometheus
// aligns blocks to their range, so promtool then writes the day as one block, and Prometheus,
// which never compacts its newest block, serves it as it is: the shape a day takes in the
// compacted blocks of a long-running Prometheus.
func benchDay(now time.Time) (start int64) {
	br := benchBlockRange.Milliseconds()
	day := (24 * time.Hour).Milliseconds()
	end := (now.UnixMilli() - 2*time.Hour.Milliseconds()) / (2 * time.Hour.Milliseconds()) * (2 * time.Hour.Milliseconds())
	if window := (end - 1) / br * br; end-day < window {
		end = window
	}
	return end - day
}

// generateBenchData builds the day deterministically: the same values in every run, only
// the timestamps move with the clock.
func generateBenchData(start int64) *benchData {
	d := &benchData{start: start, labels: make([]labels.Labels, benchSeries), values: make([][]float64, benchSeries)}
	for i := range benchSeries {
		kind := benchKinds[i%len(benchKinds)]
		d.labels[i] = labels.FromStrings(
			"__name__", benchMetric,
			"instance", fmt.Sprintf("host-%02d:9100", i%benchTargets),
			"job", "bench",
			"kind", kind,
			"series", fmt.Sprintf("%04d", i),
		)
		rng := uint64(i)*0x9e3779b97f4a7c15 + 1
		next := func() uint64 { // xorshift64*
			rng ^= rng >> 12
			rng ^= rng << 25
			rng ^= rng >> 27
			return rng * 2685821657736338717
		}
		vs := make([]float64, benchPerSeries)
		v := 0.0
		switch kind {
		case "requests":
			v = float64(next() % 1_000_000)
		case "cpu_seconds":
			v = float64(next()%1_000_000) / 100
		case "bytes":
			v = float64(1<<30 + next()%(1<<30))
		}
		for k := range vs {
			switch kind {
			case "requests":
				v += float64(next() % 100)
			case "cpu_seconds":
				v += float64(next()%1500) / 100
			case "bytes":
				v += float64(next()%2_000_001) - 1_000_000
			case "ratio":
				v = float64(next()>>11) / (1 << 53)
			}
			vs[k] = v
		}
		d.values[i] = vs
	}
	return d
}

func (d *benchData) ts(k int) int64 { return d.start + int64(k)*benchStepMs }

// want is the digest of the series in idx.
func (d *benchData) want(idx []int) benchDigest {
	var dg benchDigest
	for _, i := range idx {
		var h benchSeriesHash
		for k, v := range d.values[i] {
			h = h.add(d.ts(k), v)
		}
		dg.addSeries(d.labels[i], h, benchPerSeries)
	}
	return dg
}

// selections are the selectors measured: one series by equality, 100 by a regex on the
// series label, and the whole metric by name alone, as a dashboard would ask for each.
func (d *benchData) selections() []benchSelection {
	name := &prompb.LabelMatcher{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: benchMetric}
	all := make([]int, benchSeries)
	for i := range all {
		all[i] = i
	}
	return []benchSelection{
		{
			name:     "series=1",
			matchers: []*prompb.LabelMatcher{name, {Type: prompb.LabelMatcher_EQ, Name: "series", Value: "0000"}},
			promql:   benchMetric + `{series="0000"}`,
			want:     d.want(all[:1]),
		},
		{
			name:     "series=100",
			matchers: []*prompb.LabelMatcher{name, {Type: prompb.LabelMatcher_RE, Name: "series", Value: "00.."}},
			promql:   benchMetric + `{series=~"00.."}`,
			want:     d.want(all[:100]),
		},
		{
			name:     "series=1000",
			matchers: []*prompb.LabelMatcher{name},
			promql:   benchMetric,
			want:     d.want(all),
		},
	}
}

// writeOpenMetrics writes the day as OpenMetrics text for promtool.
func (d *benchData) writeOpenMetrics(path string) error {
	om, err := createOpenMetrics(path)
	if err != nil {
		return err
	}
	for i, lset := range d.labels {
		om.series(lset)
		for k, v := range d.values[i] {
			om.sample(d.ts(k), v)
		}
	}
	return om.close()
}

// remoteWrite sends the day to a remote-write endpoint as Prometheus does, oldest samples
// first, in requests of benchWriteSlice samples of every series, two requests at a time.
// A 5xx is retried as Prometheus would retry it; anything else but 2xx is an error.
func (d *benchData) remoteWrite(ctx context.Context, url string) error {
	const benchWriteSlice = 48 // samples per series per request: 48,000 samples a request
	slices := make(chan int)
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k0 := range slices {
				if err := d.writeSlice(ctx, url, k0, min(k0+benchWriteSlice, benchPerSeries)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for k0 := 0; k0 < benchPerSeries; k0 += benchWriteSlice {
		select {
		case slices <- k0:
		case err = <-errs:
			break feed
		}
	}
	close(slices)
	wg.Wait()
	if err != nil {
		return err
	}
	select {
	case err = <-errs:
		return err
	default:
		return nil
	}
}

func (d *benchData) writeSlice(ctx context.Context, url string, k0, k1 int) error {
	wr := prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, benchSeries)}
	for i, lset := range d.labels {
		ts := &wr.Timeseries[i]
		lset.Range(func(l labels.Label) { ts.Labels = append(ts.Labels, prompb.Label{Name: l.Name, Value: l.Value}) })
		ts.Samples = make([]prompb.Sample, 0, k1-k0)
		for k := k0; k < k1; k++ {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: d.ts(k), Value: d.values[i][k]})
		}
	}
	raw, err := wr.Marshal()
	if err != nil {
		return fmt.Errorf("marshal write request: %w", err)
	}
	if err := postRemoteWrite(ctx, url, snappy.Encode(nil, raw)); err != nil {
		return fmt.Errorf("write samples %d..%d: %w", k0, k1, err)
	}
	return nil
}

// setupBenchRead loads the day into both stores, starts the servers and checks that both
// hold all of it. Everything it starts ends with b.
func setupBenchRead(b *testing.B) *benchReadEnv {
	b.Helper()
	tools := requireTools(b, "bash", "clickhouse-server", "clickhouse-client", "prometheus", "promtool")
	began := time.Now()
	logf := func(format string, args ...any) {
		b.Helper()
		b.Logf("[%5.1fs] "+format, append([]any{time.Since(began).Seconds()}, args...)...)
	}
	work := b.TempDir()
	data := generateBenchData(benchDay(time.Now()))
	env := &benchReadEnv{start: data.start, last: data.ts(benchPerSeries - 1), selections: data.selections()}
	logf("generated %d series x %d samples, %s .. %s", benchSeries, benchPerSeries,
		time.UnixMilli(env.start).UTC().Format(time.RFC3339), time.UnixMilli(env.last).UTC().Format(time.RFC3339))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	// Prometheus: the day as TSDB blocks written by Prometheus 2.42's own promtool.
	omPath := filepath.Join(work, "day.om")
	if err := data.writeOpenMetrics(omPath); err != nil {
		b.Fatalf("write OpenMetrics: %v", err)
	}
	tsdbDir := filepath.Join(work, "prometheus-tsdb")
	out, err := createBlocks(ctx, tools["promtool"], omPath, tsdbDir)
	if err != nil {
		b.Fatal(err)
	}
	logf("promtool wrote the blocks:\n%s", bytes.TrimSpace(out))
	if err := os.Remove(omPath); err != nil {
		b.Fatalf("remove OpenMetrics file: %v", err)
	}
	prom := startQueryPrometheus(b, tools["prometheus"], work, "prometheus", tsdbDir, "scrape_configs: []\n")
	promURL := prom.url
	logf("Prometheus ready on %s", promURL)
	if err := benchCheckPrometheus(ctx, promURL, env.last); err != nil {
		b.Fatal(err)
	}
	blocks, err := sumMetric(promURL+"/metrics", "prometheus_tsdb_blocks_loaded", nil)
	if err != nil {
		b.Fatalf("read Prometheus's metrics: %v", err)
	}
	logf("Prometheus holds %d series x %d samples in %v block(s)", benchSeries, benchPerSeries, blocks)

	// pyramid: the day through its remote write into a private ClickHouse.
	bin := buildPyramid(b, work)
	ch := startClickHouse(b)
	logf("ClickHouse ready on %s", ch.addr())
	pyr := startPyramid(b, bin, ch.addr(), benchDB, work)
	pyrURL := pyr.url
	logf("pyramid ready on %s", pyrURL)
	loadStart := time.Now()
	if err := data.remoteWrite(ctx, pyrURL+"/api/v1/write"); err != nil {
		b.Fatalf("load the day into pyramid: %v", err)
	}
	logf("wrote %d samples to pyramid in %.1fs", benchSeries*benchPerSeries, time.Since(loadStart).Seconds())
	parts, err := benchSettlePyramid(ctx, ch.addr(), os.Getenv("PYRAMID_BENCH_OPTIMIZE") != "0")
	if err != nil {
		b.Fatal(err)
	}
	logf("ClickHouse: %s", parts)
	if err := benchCheckPyramid(ctx, ch.addr(), env.start, env.last); err != nil {
		b.Fatal(err)
	}
	logf("pyramid holds %d series x %d samples", benchSeries, benchPerSeries)

	// A second Prometheus with an empty TSDB that reads everything from pyramid: the same
	// PromQL answered over pyramid, as a user of Prometheus + pyramid gets it.
	remote := startQueryPrometheus(b, tools["prometheus"], work, "prometheus-remote", filepath.Join(work, "prometheus-remote-tsdb"),
		fmt.Sprintf("scrape_configs: []\nremote_read:\n  - url: %q\n    read_recent: true\n    remote_timeout: 10m\n", pyrURL+"/api/v1/read"))
	remoteURL := remote.url
	logf("Prometheus reading from pyramid ready on %s", remoteURL)

	chPID, err := os.ReadFile(filepath.Join(ch.dir, "clickhouse.pid"))
	if err != nil {
		b.Fatalf("read ClickHouse's pid: %v", err)
	}
	chProc := benchProc{"clickhouse", 0}
	if chProc.pid, err = strconv.Atoi(strings.TrimSpace(string(chPID))); err != nil {
		b.Fatalf("parse ClickHouse's pid %q: %v", chPID, err)
	}
	pyrProc := benchProc{"pyramid", pyr.cmd.Process.Pid}
	env.pyramidProcs = []benchProc{pyrProc, chProc}
	env.promProcs = []benchProc{{"prometheus", prom.cmd.Process.Pid}}
	env.remoteProcs = []benchProc{{"prometheus", remote.cmd.Process.Pid}, pyrProc, chProc}

	env.pyramid, env.promURL, env.chAddr, env.bin, env.work = pyr, promURL, ch.addr(), bin, work
	env.pyramidSamples = env.samplesReader(pyrURL + "/api/v1/read")
	env.pyramidStreamed = env.streamedReader(b, "pyramid", pyrURL+"/api/v1/read")
	env.pyramidPromQL = env.rangeReader(remoteURL)
	env.promSamples = env.samplesReader(promURL + "/api/v1/read")
	env.promStreamed = env.streamedReader(b, "prometheus", promURL+"/api/v1/read")
	env.promPromQL = env.rangeReader(promURL)
	return env
}

// benchCheckPrometheus checks through PromQL that the TSDB holds every sample of the day:
// blocks older than the head must be queryable, not just present.
func benchCheckPrometheus(ctx context.Context, promURL string, last int64) error {
	for _, c := range []struct {
		query string
		want  int
	}{
		{"count(count_over_time(" + benchMetric + "[1d]))", benchSeries},
		{"sum(count_over_time(" + benchMetric + "[1d]))", benchSeries * benchPerSeries},
	} {
		q := url.Values{"query": {c.query}, "time": {benchFormatMs(last)}}
		body, err := httpGet(promURL + "/api/v1/query?" + q.Encode())
		if err != nil {
			return fmt.Errorf("query Prometheus: %w", err)
		}
		var r struct {
			Data struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return fmt.Errorf("decode %s: %w", c.query, err)
		}
		got := "nothing"
		if len(r.Data.Result) == 1 {
			got = fmt.Sprint(r.Data.Result[0].Value[1])
		}
		if got != strconv.Itoa(c.want) {
			return fmt.Errorf("Prometheus answers %s = %s, want %d: the TSDB does not hold the day", c.query, got, c.want)
		}
	}
	return nil
}

// benchSettlePyramid merges each table's parts with OPTIMIZE ... FINAL (unless told not to), and
// describes the samples table's parts.
func benchSettlePyramid(ctx context.Context, addr string, optimize bool) (string, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Auth: clickhouse.Auth{Database: "default"}, DialTimeout: 10 * time.Second})
	if err != nil {
		return "", fmt.Errorf("open ClickHouse %s: %w", addr, err)
	}
	defer conn.Close()
	describe := func() (string, error) {
		var parts, rows, bytes uint64
		err := conn.QueryRow(ctx, "SELECT count(), sum(rows), sum(bytes_on_disk) FROM system.parts WHERE active AND database = ? AND table = 'samples'", benchDB).Scan(&parts, &rows, &bytes)
		if err != nil {
			return "", fmt.Errorf("describe the samples table's parts: %w", err)
		}
		return fmt.Sprintf("samples: %d parts, %d rows, %.2f B/row", parts, rows, float64(bytes)/float64(max(rows, 1))), nil
	}
	before, err := describe()
	if err != nil || !optimize {
		return before, err
	}
	for _, table := range []string{"samples", "series", "series_labels"} {
		rows, err := conn.Query(ctx, "SELECT DISTINCT partition_id FROM system.parts WHERE active AND database = ? AND table = ?", benchDB, table)
		if err != nil {
			return "", fmt.Errorf("list the partitions of %s: %w", table, err)
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return "", fmt.Errorf("scan a partition of %s: %w", table, err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		for _, id := range ids {
			if err := conn.Exec(ctx, fmt.Sprintf("OPTIMIZE TABLE %s.%s PARTITION ID '%s' FINAL", benchDB, table, id)); err != nil {
				return "", fmt.Errorf("optimize %s partition %s: %w", table, id, err)
			}
		}
	}
	after, err := describe()
	return "before OPTIMIZE FINAL " + before + "; after " + after, err
}

// benchCheckPyramid counts the day's samples and series in ClickHouse, duplicates collapsed.
func benchCheckPyramid(ctx context.Context, addr string, start, last int64) error {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Auth: clickhouse.Auth{Database: "default"}, DialTimeout: 10 * time.Second})
	if err != nil {
		return fmt.Errorf("open ClickHouse %s: %w", addr, err)
	}
	defer conn.Close()
	var samples, series uint64
	err = conn.QueryRow(ctx, "SELECT count(), uniqExact(fingerprint) FROM "+benchDB+".samples FINAL WHERE ts >= ? AND ts <= ?", start, last).Scan(&samples, &series)
	if err != nil {
		return fmt.Errorf("count pyramid's samples: %w", err)
	}
	if samples != benchSeries*benchPerSeries || series != benchSeries {
		return fmt.Errorf("pyramid holds %d series, %d samples; want %d, %d", series, samples, benchSeries, benchSeries*benchPerSeries)
	}
	return nil
}
