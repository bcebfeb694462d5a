package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// Limits of the pyramid under attack in TestAbuseLimits, small so that the attacks are
// cheap to mount.
const (
	abuseDB              = "e2e_abuse"
	abuseBatchRows       = 1000
	abuseMaxRowsInFlight = 5000
	abuseMaxSeries       = 250
	abuseMaxSamples      = 25_000
	// abuseSparse series hold abuseSparseSamples samples each, abuseDense ones
	// abuseDenseSamples.
	abuseSparse, abuseSparseSamples = 100, 100
	abuseDense, abuseDenseSamples   = 5, 3000
)

// TestAbuseLimits runs the attacks of issue 10 that limits answer against the real pyramid
// binary and a real ClickHouse, over real sockets, and checks each outcome: the status the
// attacker gets, that nothing of what others sent is lost, and that other senders and
// readers are answered as usual meanwhile.
//
//   - A write with more rows than may ever be in flight gets 413, which Prometheus drops,
//     instead of a 503 it would retry forever.
//   - A remote read whose queries pass the series or sample limit together, though each
//     alone is within it, gets 429 naming the per-request limit (SAMPLES), or a broken
//     stream once frames are out (STREAMED_XOR_CHUNKS).
//   - A selector with no matcher that rejects "" gets 400.
//   - Profiles answer on PYRAMID_PPROF_ADDR and never on the main listener.
//   - /metrics answers while ClickHouse is stopped, with the last tier figures and their
//     growing age.
func TestAbuseLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped in -short mode")
	}
	requireTools(t, "bash", "clickhouse-server", "clickhouse-client")
	work := t.TempDir()
	bin := buildPyramid(t, work)
	ch := startClickHouse(t)
	pprofAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	pyr := startPyramid(t, bin, ch.addr(), abuseDB, work,
		"PYRAMID_BATCH_ROWS="+strconv.Itoa(abuseBatchRows),
		"PYRAMID_MAX_ROWS_IN_FLIGHT="+strconv.Itoa(abuseMaxRowsInFlight),
		"PYRAMID_READ_MAX_SERIES="+strconv.Itoa(abuseMaxSeries),
		"PYRAMID_READ_MAX_SAMPLES="+strconv.Itoa(abuseMaxSamples),
		"PYRAMID_PPROF_ADDR="+pprofAddr)

	t.Run("rows past the in-flight cap in one request", func(t *testing.T) { abuseTooManyRows(t, pyr) })
	t.Run("read budget per request", func(t *testing.T) { abuseReadBudget(t, pyr) })
	t.Run("selector of everything", func(t *testing.T) { abuseSelectEverything(t, pyr) })
	t.Run("pprof", func(t *testing.T) { abusePprof(t, pyr, pprofAddr) })
	// Last: it stops ClickHouse.
	t.Run("metrics while ClickHouse is stopped", func(t *testing.T) { abuseMetricsWithoutClickHouse(t, pyr, ch) })
}

// abuseTooManyRows sends writes bigger than the in-flight cap while another sender writes
// requests of ordinary size. The big ones get 413 without Retry-After every time; every
// ordinary one is stored, and nothing of the big ones.
func abuseTooManyRows(t *testing.T, pyr *pyramidServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const requests, perRequest = 40, 500
	base := abuseBase()
	var wg sync.WaitGroup
	senderErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r := range requests {
			if err := postRemoteWrite(ctx, pyr.url+"/api/v1/write", abuseWriteBody(t, "abuse_ordinary", base, r, 0, 1, perRequest)); err != nil {
				senderErr <- fmt.Errorf("ordinary request %d: %w", r, err)
				return
			}
		}
	}()
	// One series of cap+1 samples, and many series of one sample each: rows are samples
	// plus new series.
	bodies := map[string][]byte{
		"one series":    abuseWriteBody(t, "abuse_huge", base, 0, 0, 1, abuseMaxRowsInFlight+1),
		"many series":   abuseWriteBody(t, "abuse_wide", base, 0, 0, abuseMaxRowsInFlight/2+1, 1),
		"a whole shard": abuseWriteBody(t, "abuse_shard", base, 0, 0, 10, abuseMaxRowsInFlight),
	}
	for round := range 5 {
		for name, body := range bodies {
			resp, msg, err := postSnappy(ctx, pyr.url+"/api/v1/write", body, false)
			if err != nil {
				t.Fatalf("%s, round %d: %v", name, round, err)
			}
			if retry := resp.Header.Get("Retry-After"); resp.StatusCode != http.StatusRequestEntityTooLarge || retry != "" || !strings.Contains(string(msg), "rows in one request") {
				t.Errorf("%s, round %d: %d %q (Retry-After %q); want 413 without Retry-After naming the rows", name, round, resp.StatusCode, msg, retry)
			}
		}
	}
	wg.Wait()
	select {
	case err := <-senderErr:
		t.Fatalf("the ordinary sender was refused: %v", err)
	default:
	}
	n, err := abuseCountSamples(ctx, pyr, `__name__=~"abuse_ordinary|abuse_huge|abuse_wide|abuse_shard"`, base, base+requests*perRequest*abuseStepMs)
	if err != nil {
		t.Fatal(err)
	}
	if n["abuse_ordinary"] != requests*perRequest || len(n) != 1 {
		t.Errorf("stored samples by metric %v; want all %d of abuse_ordinary and nothing else", n, requests*perRequest)
	}
}

// abuseReadBudget writes abuseSparse series of abuseSparseSamples samples and abuseDense
// series of abuseDenseSamples, and reads them in requests of several queries.
func abuseReadBudget(t *testing.T, pyr *pyramidServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	base := abuseBase()
	// In requests within the in-flight cap.
	for k := 0; k < abuseSparse; k += 20 {
		if err := postRemoteWrite(ctx, pyr.url+"/api/v1/write", abuseWriteBody(t, "abuse_sparse", base, 0, k, k+20, abuseSparseSamples)); err != nil {
			t.Fatal(err)
		}
	}
	for k := range abuseDense {
		if err := postRemoteWrite(ctx, pyr.url+"/api/v1/write", abuseWriteBody(t, "abuse_dense", base, 0, k, k+1, abuseDenseSamples)); err != nil {
			t.Fatal(err)
		}
	}
	end := base + int64(abuseDenseSamples)*abuseStepMs
	sparse := abuseQuery(base, end, `__name__="abuse_sparse"`) // 100 series, 10,000 samples
	dense := abuseQuery(base, end, `__name__="abuse_dense"`)   // 5 series, 15,000 samples
	repeat := func(q *prompb.Query, n int) []*prompb.Query {
		out := make([]*prompb.Query, n)
		for i := range out {
			out[i] = q
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		queries []*prompb.Query
		limit   string // "" for 200
		samples int
	}{
		{"two queries within the budget", repeat(sparse, 2), "", 2 * abuseSparse * abuseSparseSamples},
		{"three queries of 100 series", repeat(sparse, 3), fmt.Sprintf("%d series per request", abuseMaxSeries), 0},
		{"fifty queries of 100 series", repeat(sparse, 50), fmt.Sprintf("%d series per request", abuseMaxSeries), 0},
		{"dense once", repeat(dense, 1), "", abuseDense * abuseDenseSamples},
		{"dense twice", repeat(dense, 2), fmt.Sprintf("%d samples per request", abuseMaxSamples), 0},
	} {
		resp, body, err := abuseRead(ctx, pyr, false, tc.queries...)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.limit != "" {
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "" || !strings.Contains(string(body), tc.limit) {
				t.Errorf("%s: %d %q; want 429 naming %q", tc.name, resp.StatusCode, abuseHead(body), tc.limit)
			}
			continue
		}
		rr, err := decodeSamples(resp, body)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		n := 0
		for _, res := range rr.Results {
			for _, ts := range res.Timeseries {
				n += len(ts.Samples)
			}
		}
		if len(rr.Results) != len(tc.queries) || n != tc.samples {
			t.Errorf("%s: %d results with %d samples, want %d with %d", tc.name, len(rr.Results), n, len(tc.queries), tc.samples)
		}
		if tiers := resp.Header.Values("X-Pyramid-Tiers"); len(tiers) != len(tc.queries) {
			t.Errorf("%s: X-Pyramid-Tiers %q, want one value per query", tc.name, tiers)
		}
	}
	// Streamed, frames of the first query are out before the later ones pass the budget:
	// the stream must break off, never end as if complete.
	resp, body, err := abuseRead(ctx, pyr, true, repeat(sparse, 3)...)
	if resp == nil || resp.StatusCode != http.StatusOK || err == nil {
		t.Errorf("streamed, past the budget in the third query: %v, %d bytes, body error %v; want 200 and a broken stream", abuseStatus(resp), len(body), err)
	}
	// Meanwhile everyone else is answered as usual: a reader within the limits and a writer.
	if _, err := abuseCountSamples(ctx, pyr, `__name__="abuse_dense"`, base, end); err != nil {
		t.Errorf("an ordinary read after the attacks: %v", err)
	}
	if err := postRemoteWrite(ctx, pyr.url+"/api/v1/write", abuseWriteBody(t, "abuse_after_reads", base, 0, 0, 1, 10)); err != nil {
		t.Errorf("an ordinary write after the attacks: %v", err)
	}
}

// abuseSelectEverything reads with selectors that have no matcher rejecting "", next to a
// good query: 400 naming the query and PromQL's rule, before anything is sent.
func abuseSelectEverything(t *testing.T, pyr *pyramidServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	now := time.Now().UnixMilli()
	good := abuseQuery(now-time.Hour.Milliseconds(), now, `__name__="abuse_sparse"`)
	for _, ms := range [][]string{nil, {`job=""`}, {`__name__=~".*"`}, {`job!="x"`, `instance=~"a|"`}} {
		for _, streamed := range []bool{false, true} {
			resp, body, err := abuseRead(ctx, pyr, streamed, good, abuseQuery(now-time.Hour.Milliseconds(), now, ms...))
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "query 1") ||
				!strings.Contains(string(body), "does not match the empty string") {
				t.Errorf("{%s}, streamed %v: %d %q; want 400 naming query 1 and the rule", strings.Join(ms, ", "), streamed, resp.StatusCode, abuseHead(body))
			}
		}
	}
}

// abusePprof: the profiles answer on the pprof address and not on the main listener.
func abusePprof(t *testing.T, pyr *pyramidServer, pprofAddr string) {
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/profile?seconds=1"} {
		resp, err := http.Get(pyr.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("main listener, GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
	body, err := httpGet("http://" + pprofAddr + "/debug/pprof/heap?debug=1")
	if err != nil || !bytes.Contains(body, []byte("heap profile")) {
		t.Errorf("pprof listener, heap profile: %v, %q", err, abuseHead(body))
	}
	body, err = httpGet("http://" + pprofAddr + "/debug/pprof/profile?seconds=1")
	if err != nil || !bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
		t.Errorf("pprof listener, CPU profile: %v, %d bytes; want a gzipped profile", err, len(body))
	}
}

// abuseMetricsWithoutClickHouse scrapes /metrics while ClickHouse hangs (SIGSTOP: the
// kernel still accepts its connections, and nothing answers them) and while it is stopped.
// Every scrape answers, with the tier figures last read and an age that grows; once
// ClickHouse answers again, the figures are read afresh.
func abuseMetricsWithoutClickHouse(t *testing.T, pyr *pyramidServer, ch *clickhouseServer) {
	metricsURL := pyr.url + "/metrics"
	var rows, age float64
	waitFor(t, "the tier figures on /metrics", time.Minute, func() error {
		var err error
		rows, age, err = abuseTierFigures(metricsURL)
		if err == nil && rows <= 0 {
			err = errors.New("no raw rows counted yet")
		}
		return err
	})

	pidText, err := os.ReadFile(filepath.Join(ch.dir, "clickhouse.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("stop ClickHouse's process: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	hung := abuseScrapeCached(t, metricsURL, "hangs", rows, age)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatalf("continue ClickHouse's process: %v", err)
	}
	waitFor(t, "fresh tier figures once ClickHouse answers again", time.Minute, func() error {
		got, later, err := abuseTierFigures(metricsURL)
		if err != nil {
			return err
		}
		if got != rows || later < 0 || later >= hung {
			return fmt.Errorf("raw rows %v, age %v; want %v rows read since", got, later, rows)
		}
		age = later
		return nil
	})

	if err := ch.run("stop"); err != nil {
		t.Fatalf("stop ClickHouse: %v", err)
	}
	if _, err := httpGet(pyr.url + "/-/ready"); err == nil {
		t.Fatal("pyramid is ready with ClickHouse stopped; the test is not testing what it means to")
	}
	abuseScrapeCached(t, metricsURL, "is stopped", rows, age)
}

// abuseScrapeCached scrapes /metrics until the tier figures are old enough that a scrape
// has tried to read them afresh (older than the five seconds after which a scrape
// refreshes them, past the age they had). Every scrape must answer with the raw rows last
// read and an age no lower than the one before. It returns the last age.
func abuseScrapeCached(t *testing.T, metricsURL, state string, rows, age float64) float64 {
	t.Helper()
	scrapes, prev := 0, age
	var slowest time.Duration
	waitFor(t, "the figures' age to grow while ClickHouse "+state, 2*time.Minute, func() error {
		scrapes++
		start := time.Now()
		got, later, err := abuseTierFigures(metricsURL)
		slowest = max(slowest, time.Since(start))
		if err != nil {
			return stopWaiting(fmt.Errorf("scrape %d while ClickHouse %s: %w", scrapes, state, err))
		}
		if got != rows || later < 0 || later < prev {
			return stopWaiting(fmt.Errorf("scrape %d while ClickHouse %s: raw rows %v, age %v after %v; want the %v rows last read, growing older",
				scrapes, state, got, later, prev, rows))
		}
		prev = later
		if later <= age+5 {
			return fmt.Errorf("age %v, not yet past %v", later, age+5)
		}
		return nil
	})
	t.Logf("%d scrapes while ClickHouse %s, all with the %v raw rows last read, aged up to %.1fs; slowest scrape %s",
		scrapes, state, rows, prev, slowest.Round(time.Millisecond))
	return prev
}

// abuseTierFigures scrapes /metrics once and returns the raw tier's rows and the figures'
// age, each -1 when the page lacks it.
func abuseTierFigures(metricsURL string) (rows, age float64, err error) {
	body, err := httpGet(metricsURL)
	if err != nil {
		return 0, 0, err
	}
	rows, age = -1, -1
	for _, line := range strings.Split(string(body), "\n") {
		var dst *float64
		switch {
		case strings.HasPrefix(line, `pyramid_tier_rows{tier="raw"} `):
			dst = &rows
		case strings.HasPrefix(line, "pyramid_tier_status_age_seconds "):
			dst = &age
		default:
			continue
		}
		if *dst, err = strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err != nil {
			return 0, 0, fmt.Errorf("parse %q: %w", line, err)
		}
	}
	return rows, age, nil
}

// abuseBase is where the test's samples start: recent enough for raw retention.
func abuseBase() int64 { return (time.Now().UnixMilli()/3_600_000 - 3) * 3_600_000 }

// abuseStepMs spaces the test's samples: dense enough that every request's samples lie
// between abuseBase and now, as pyramid refuses samples from the future.
const abuseStepMs = 100

// abuseWriteBody is a remote-write 1.0 body of series name{i="k"} for k0 <= k < k1, each
// with samples abuseStepMs apart from base, request r's after those of the requests before it.
func abuseWriteBody(t *testing.T, name string, base int64, r, k0, k1, samples int) []byte {
	t.Helper()
	var wr prompb.WriteRequest
	for k := k0; k < k1; k++ {
		ts := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: name}, {Name: "i", Value: strconv.Itoa(k)}}}
		for j := range samples {
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: base + int64(r*samples+j)*abuseStepMs, Value: float64(r)})
		}
		wr.Timeseries = append(wr.Timeseries, ts)
	}
	raw, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

// abuseQuery is a query over [start, end] with matchers written as in PromQL (name,
// operator, quoted value).
func abuseQuery(start, end int64, ms ...string) *prompb.Query {
	q := &prompb.Query{StartTimestampMs: start, EndTimestampMs: end}
	for _, m := range ms {
		for _, op := range []struct {
			tok string
			typ prompb.LabelMatcher_Type
		}{{"!~", prompb.LabelMatcher_NRE}, {"=~", prompb.LabelMatcher_RE}, {"!=", prompb.LabelMatcher_NEQ}, {"=", prompb.LabelMatcher_EQ}} {
			if name, quoted, ok := strings.Cut(m, op.tok); ok {
				value, err := strconv.Unquote(quoted)
				if err != nil {
					panic(fmt.Sprintf("matcher %s: %v", m, err))
				}
				q.Matchers = append(q.Matchers, &prompb.LabelMatcher{Type: op.typ, Name: name, Value: value})
				break
			}
		}
	}
	return q
}

// abuseRead posts a remote-read request asking for SAMPLES, or for STREAMED_XOR_CHUNKS
// only when streamed is set, and returns the response, its body and the error reading the
// body ended with (a stream broken off mid-way ends in one).
func abuseRead(ctx context.Context, pyr *pyramidServer, streamed bool, queries ...*prompb.Query) (*http.Response, []byte, error) {
	rr := &prompb.ReadRequest{Queries: queries}
	if streamed {
		rr.AcceptedResponseTypes = []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS}
	}
	return postRead(ctx, pyr.url, rr)
}

// abuseCountSamples reads the selector over [mint, maxt] through pyramid's remote read
// and counts the samples by metric name.
func abuseCountSamples(ctx context.Context, pyr *pyramidServer, matcher string, mint, maxt int64) (map[string]int, error) {
	q := abuseQuery(mint, maxt, matcher)
	resp, body, err := abuseRead(ctx, pyr, false, q)
	if err != nil {
		return nil, err
	}
	rr, err := decodeSamples(resp, body)
	if err != nil {
		return nil, err
	}
	n := map[string]int{}
	for _, ts := range rr.Results[0].Timeseries {
		for _, l := range ts.Labels {
			if l.Name == "__name__" {
				n[l.Value] += len(ts.Samples)
			}
		}
	}
	return n, nil
}

func abuseHead(b []byte) []byte { return b[:min(200, len(b))] }

func abuseStatus(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	return resp.Status
}
