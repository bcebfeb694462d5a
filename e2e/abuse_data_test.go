package e2e

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// TestAbuseData runs issue 10's attacks on stored data against the real pyramid binary and
// a real ClickHouse:
//
//   - a conflicting write (another value at a stored timestamp) gets the same answer before
//     and after ClickHouse merges: the last write, counted as a conflict;
//   - samples on future days, before raw retention and at the int64 extremes get 400
//     naming the series and the bound, the good samples of the same request are stored,
//     and the tier status stays sane;
//   - requests spanning weeks, sent alongside ordinary senders, are stored whole and leave
//     every ordinary request answered 204 with its rows stored.
func TestAbuseData(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped in -short mode")
	}
	requireTools(t, "bash", "clickhouse-server", "clickhouse-client")
	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ch := startClickHouse(t)
	const db = "e2e_abuse_data"
	pyr := startPyramid(t, buildPyramid(t, work), ch.addr(), db, work, "PYRAMID_TIERS=raw:30d,5m:365d,1h:0", "PYRAMID_MAX_FUTURE=10m")
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{ch.addr()}, Auth: clickhouse.Auth{Database: "default"}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	now := time.Now().UnixMilli()
	const dayMs = 24 * 3_600_000

	t.Run("conflicting write", func(t *testing.T) {
		at := now - 3_600_000
		up := func(v float64) []byte {
			return writeBody(t, prompb.TimeSeries{Labels: promLabels("__name__", "up", "job", "synth"), Samples: []prompb.Sample{{Timestamp: at, Value: v}}})
		}
		// Merges wait until the test asks for one, so that the first read sees both writes.
		if err := conn.Exec(ctx, "SYSTEM STOP MERGES "+db+".samples"); err != nil {
			t.Fatal(err)
		}
		for _, v := range []float64{1, 0} {
			if err := postRemoteWrite(ctx, pyr.url+"/api/v1/write", up(v)); err != nil {
				t.Fatalf("write up=%v: %v", v, err)
			}
		}
		read := func(when string) {
			t.Helper()
			got, err := readPrometheus(ctx, pyr.url, at-1, at+1)
			if err != nil {
				t.Fatalf("%s: read: %v", when, err)
			}
			s := got[`{__name__="up", job="synth"}`]
			if len(s) != 1 || s[0].bits != math.Float64bits(0) {
				t.Errorf("%s: up{job=synth} reads %v, want one sample of 0 (the last write)", when, s)
			}
		}
		read("before merging")
		for _, q := range []string{"SYSTEM START MERGES " + db + ".samples", "OPTIMIZE TABLE " + db + ".samples FINAL"} {
			if err := conn.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		read("after OPTIMIZE FINAL")
		if n, err := sumMetric(pyr.url+"/metrics", "pyramid_read_sample_conflicts_total", nil); err != nil || n != 1 {
			t.Errorf("pyramid_read_sample_conflicts_total = %v (%v), want 1: one read saw the conflict, the one after the merge none", n, err)
		}
	})

	t.Run("timestamps out of bounds", func(t *testing.T) {
		var samples []prompb.Sample
		for d := int64(3000); d >= 1; d -= 3 { // a thousand future days, as the attack
			samples = append(samples, prompb.Sample{Timestamp: now + d*dayMs, Value: 1})
		}
		samples = append(samples, prompb.Sample{Timestamp: now - 31*dayMs, Value: 2}, prompb.Sample{Timestamp: now, Value: 3})
		body := writeBody(t,
			prompb.TimeSeries{Labels: promLabels("__name__", "future_days", "job", "synth"), Samples: samples},
			prompb.TimeSeries{Labels: promLabels("__name__", "extremes", "job", "synth"), Samples: []prompb.Sample{{Timestamp: math.MinInt64, Value: 1}, {Timestamp: math.MaxInt64, Value: 2}}},
		)
		resp, msg, err := postSnappy(ctx, pyr.url+"/api/v1/write", body, false)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %v %q (%v), want 400", resp, msg, err)
		}
		for _, want := range []string{
			`series {__name__="future_days", job="synth"}: 1 samples older than raw retention (before `,
			`1000 samples too far in the future (after `,
			`series {__name__="extremes", job="synth"}: 1 samples older than raw retention`,
		} {
			if !strings.Contains(string(msg), want) {
				t.Errorf("400 body %q lacks %q", msg, want)
			}
		}
		got, err := readPrometheus(ctx, pyr.url, 0, math.MaxInt64)
		if err != nil {
			t.Fatal(err)
		}
		if s := got[`{__name__="future_days", job="synth"}`]; len(s) != 1 || s[0].ts != now {
			t.Errorf("future_days holds %v, want only the sample at %d", s, now)
		}
		if s, ok := got[`{__name__="extremes", job="synth"}`]; ok {
			t.Errorf("extremes holds %v, want nothing", s)
		}
		var parts uint64
		if err := conn.QueryRow(ctx, "SELECT uniqExact(partition) FROM system.parts WHERE active AND database = ? AND table = 'samples'", db).Scan(&parts); err != nil {
			t.Fatal(err)
		}
		if parts > 2 {
			t.Errorf("the samples table has %d day partitions, want at most 2 (today and yesterday)", parts)
		}
		status, err := readTierStatus(pyr.url)
		if err != nil {
			t.Fatal(err)
		}
		raw := status[0]
		if raw.Oldest == nil || raw.Newest == nil || *raw.Oldest < now-30*dayMs || *raw.Newest > now+10*60_000 {
			t.Errorf("raw tier status %+v: oldest and newest should lie in [now-30d, now+10m]", raw)
		}
		for reason, want := range map[string]float64{"too_old": 2, "too_new": 1001} {
			if n, err := sumMetric(pyr.url+"/metrics", "pyramid_write_samples_rejected_total", map[string]string{"reason": reason}); err != nil || n != want {
				t.Errorf("pyramid_write_samples_rejected_total{reason=%q} = %v (%v), want %v", reason, n, err, want)
			}
		}
	})

	t.Run("wide requests beside ordinary senders", func(t *testing.T) {
		const senders, requests = 4, 10
		var wg sync.WaitGroup
		errs := make(chan error, senders*requests+requests)
		for s := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range requests {
					ts := prompb.TimeSeries{Labels: promLabels("__name__", "ordinary", "job", "synth", "sender", fmt.Sprint(s))}
					ts.Samples = []prompb.Sample{{Timestamp: now - int64(requests-r)*15_000, Value: float64(r)}}
					if resp, msg, err := postSnappy(ctx, pyr.url+"/api/v1/write", writeBody(t, ts), false); err != nil || resp.StatusCode != http.StatusNoContent {
						errs <- fmt.Errorf("ordinary sender %d request %d: %v %s (%v)", s, r, resp, msg, err)
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range requests {
				ts := prompb.TimeSeries{Labels: promLabels("__name__", "wide", "job", "synth", "request", fmt.Sprint(r))}
				for d := int64(25); d >= 0; d-- {
					ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: now - d*dayMs - int64(r), Value: float64(d)})
				}
				if resp, msg, err := postSnappy(ctx, pyr.url+"/api/v1/write", writeBody(t, ts), false); err != nil || resp.StatusCode != http.StatusNoContent {
					errs <- fmt.Errorf("wide request %d: %v %s (%v)", r, resp, msg, err)
				}
			}
		}()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		var ordinary, wide uint64
		q := "SELECT countIf(metric_name = 'ordinary'), countIf(metric_name = 'wide') FROM " + db + ".samples FINAL" +
			" ANY INNER JOIN (SELECT fingerprint, any(metric_name) AS metric_name FROM " + db + ".series GROUP BY fingerprint) USING fingerprint"
		if err := conn.QueryRow(ctx, q).Scan(&ordinary, &wide); err != nil {
			t.Fatal(err)
		}
		if ordinary != senders*requests || wide != requests*26 {
			t.Errorf("stored %d ordinary and %d wide samples, want %d and %d", ordinary, wide, senders*requests, requests*26)
		}
	})
}

// promLabels builds prompb labels from name, value pairs.
func promLabels(kv ...string) []prompb.Label {
	var ls []prompb.Label
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return ls
}

// writeBody encodes series as a snappy-compressed remote-write 1.0 body.
func writeBody(t *testing.T, ts ...prompb.TimeSeries) []byte {
	t.Helper()
	raw, err := (&prompb.WriteRequest{Timeseries: ts}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}
