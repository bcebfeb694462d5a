package e2e

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestWriteMatchesPrometheusTSDB runs Prometheus 2.42 remote-writing into pyramid, crashes
// ClickHouse under load and brings it back, and then checks that pyramid holds exactly what
// Prometheus's own TSDB holds over the same window: the same series, the same timestamps and
// the same float bits, stale markers included. It proves that pyramid answers 2xx only for
// stored rows and that Prometheus's retries of everything else arrive intact.
func TestWriteMatchesPrometheusTSDB(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of about a minute; skipped in -short mode")
	}
	const db = "e2e_write"
	st := startScrapeStack(t, db, nil)
	logf := func(format string, args ...any) { t.Helper(); st.logf(t, format, args...) }
	ch, pyr, exp, prom := st.ch, st.pyr, st.exp, st.prom
	promReady := time.Now()

	// The compared window starts a few seconds after Prometheus became ready, past its
	// first scrapes and the start of its WAL watcher, which forwards only samples newer
	// than its own start. (Compared from time 0, the stores matched too: the watcher
	// starts before the first scrape.)
	windowStart := promReady.Add(3 * time.Second).UnixMilli()

	// Phase 1: normal operation. Make sure writes actually reach ClickHouse before the
	// crash, so that the crash interrupts a working pipeline.
	waitFor(t, "pyramid to store a first remote write", time.Minute, func() error {
		if err := allAlive(pyr.process, prom.process); err != nil {
			return stopWaiting(err)
		}
		samples, err := scrapeMetric(pyr.url+"/metrics", "pyramid_http_requests_total")
		if err != nil {
			return err
		}
		for _, s := range samples {
			if s.labels["handler"] == "write" && strings.HasPrefix(s.labels["code"], "2") && s.value > 0 {
				return nil
			}
		}
		return fmt.Errorf("no 2xx answers to remote writes yet")
	})
	sleepUntil(t, promReady.Add(10*time.Second), pyr.process, prom.process)

	// Phase 2: ClickHouse crashes (SIGKILL, no chance to flush or say goodbye) while
	// Prometheus keeps scraping and sending. A new series appears during the outage, so
	// its first samples reach pyramid only through Prometheus's retries.
	before503 := pyramid503s(t, pyr)
	ch.kill(t)
	crashed := time.Now()
	exp.setLate(true)
	logf("killed ClickHouse; pyramid had answered %v 503s", before503)
	sleepUntil(t, crashed.Add(8*time.Second), pyr.process, prom.process)
	// Prometheus sends at least every batch_send_deadline, so 503s come within seconds;
	// wait for one rather than assume it, since the proof of the outage is the point.
	var during503 float64
	waitFor(t, "pyramid to answer 503 while ClickHouse is down", time.Minute, func() error {
		if err := allAlive(pyr.process, prom.process); err != nil {
			return stopWaiting(err)
		}
		during503 = pyramid503s(t, pyr)
		if during503 <= before503 {
			return fmt.Errorf("503 count still %v", during503)
		}
		return nil
	})
	logf("pyramid answered %v 503s while ClickHouse was down; restarting ClickHouse", during503-before503)
	ch.start(t)
	restarted := time.Now()
	logf("ClickHouse is back (down for %.1fs)", restarted.Sub(crashed).Seconds())

	// Phase 3: recovery. The flapping series goes away, so Prometheus writes a stale
	// marker for it at the next scrape.
	sleepUntil(t, restarted.Add(5*time.Second), pyr.process, prom.process)
	exp.setFlapping(false)
	logf("removed the flapping series")
	sleepUntil(t, restarted.Add(15*time.Second), pyr.process, prom.process)
	end := time.Now()
	// The last scrapes before the end are at least 3s past the window's end, which the
	// wait below relies on.
	windowEnd := end.Add(-4 * time.Second).UnixMilli()
	logf("window is %d..%d (%.1fs)", windowStart, windowEnd, float64(windowEnd-windowStart)/1000)

	// Stop scraping so that the remote-write queue can drain. While 2.42 scrapes, its
	// pending-samples gauge is almost never 0: a shard sends a batch each time 500 samples
	// have queued up and restarts its batch_send_deadline timer every time it does, so at
	// more than 500 samples/s (Prometheus's own metrics alone are that many) the remainder
	// waits for the next full batch and pending hovers between 0 and 499.
	prom.stopScraping(t)
	logf("Prometheus stopped scraping")

	// Wait until Prometheus has sent everything up to the end of the window. A sent sample
	// 3s past the end (timestamps in whole seconds) means the WAL watcher has read every
	// scrape of the window (a scrape commits within its 1s timeout); no pending samples
	// then means every sample it read was answered with a 2xx.
	err := poll(90*time.Second, func() error {
		if err := allAlive(pyr.process, prom.process); err != nil {
			return stopWaiting(err)
		}
		return remoteWriteDone(prom.url, windowEnd/1000+3)
	})
	if err != nil {
		t.Logf("pyramid's metrics:\n%s", grepMetrics(pyr.url, "pyramid_http_requests_total", "pyramid_write_rows_in_flight", "pyramid_clickhouse_insert_duration_seconds_count"))
		t.Logf("Prometheus's remote-write metrics:\n%s", grepMetrics(prom.url, "prometheus_remote_storage_"))
		// A goroutine dump shows where a stuck request or insert waits; it ends pyramid,
		// which the test is about to do anyway.
		pyr.dumpGoroutines()
		t.Fatalf("wait for Prometheus to send the window to pyramid: %v", err)
	}
	logf("Prometheus has sent the window")
	for _, name := range []string{"prometheus_remote_storage_samples_failed_total", "prometheus_remote_storage_samples_dropped_total"} {
		n, err := sumMetric(prom.url+"/metrics", name, nil)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if n != 0 {
			t.Errorf("Prometheus reports %s = %v: it gave up on samples pyramid refused", name, n)
		}
	}
	retried, err := sumMetric(prom.url+"/metrics", "prometheus_remote_storage_samples_retried_total", nil)
	if err != nil {
		t.Fatalf("read prometheus_remote_storage_samples_retried_total: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want, err := readPrometheus(ctx, prom.url, windowStart, windowEnd)
	if err != nil {
		t.Fatalf("read Prometheus TSDB: %v", err)
	}
	got, stats, err := readPyramid(ctx, ch.addr(), db, windowStart, windowEnd)
	if err != nil {
		t.Fatalf("read pyramid's tables: %v", err)
	}
	logf("Prometheus TSDB: %d series, %d samples; pyramid: %d series, %d samples (%d rows, %d duplicates from retries); Prometheus retried %v samples",
		len(want), want.samplesIn(), len(got), got.samplesIn(), stats.rows, stats.duplicates, retried)

	if diff := diffSeriesSets(want, got, windowStart); diff != "" {
		t.Error(diff)
	}

	// The comparison above could pass vacuously (an empty window, a broken exporter), so
	// check that the interesting values are really there, in pyramid's data.
	if n := want.samplesIn(); n < 1000 {
		t.Errorf("only %d samples in the window; the comparison proves little", n)
	}
	for _, s := range specialValues {
		checkSpecialValue(t, got, s.kind, math.Float64bits(s.value))
	}
	for name, v := range oddLabelValues {
		if len(got.findSeries("__name__", "e2e_odd_labels", "case", name, "v", v)) != 1 {
			t.Errorf("pyramid has no series e2e_odd_labels{case=%q, v=%q}", name, v)
		}
	}
	// The flapping series must end with the stale marker written when it disappeared.
	flapping := got.findSeries("__name__", "e2e_flapping")
	if len(flapping) != 1 {
		t.Errorf("pyramid has %d e2e_flapping series, want 1", len(flapping))
	}
	for k, ss := range flapping {
		if last := ss[len(ss)-1]; last.bits != staleNaNBits {
			t.Errorf("%s ends with %#016x at %d, want the stale marker %#016x", k, last.bits, last.ts, staleNaNBits)
		}
	}
	stale := countStale(flapping)
	late := got.findSeries("__name__", "e2e_late")
	if len(late) != 1 {
		t.Errorf("pyramid has %d e2e_late series, want 1", len(late))
	}
	for k, ss := range late {
		if ss[0].ts > restarted.UnixMilli() {
			t.Errorf("%s starts only after ClickHouse came back; its samples from the outage are missing", k)
		}
	}
	// Prometheus sends TYPE and HELP as metadata-only requests (every 2s in this config).
	typ, help, err := readMetadata(ctx, ch.addr(), db, "e2e_scrapes_total")
	if err != nil {
		t.Errorf("read pyramid's metadata: %v", err)
	} else if typ != "counter" || help != "Scrapes served by the e2e exporter." {
		t.Errorf("metadata of e2e_scrapes_total = %q %q, want counter and the exporter's HELP", typ, help)
	}
	logf("checked: %d stale markers for e2e_flapping, NaN, ±Inf and extreme floats bit-exact, odd label values intact", stale)

	// SIGTERM drains pyramid: it stops taking requests, inserts what it accepted and exits 0.
	pyr.stop(30 * time.Second)
	if pyr.waitErr != nil {
		t.Errorf("pyramid did not exit cleanly on SIGTERM: %v", pyr.waitErr)
	}
	if log := tail(pyr.logPath, 20); !strings.Contains(log, "shut down cleanly") {
		t.Errorf("pyramid's log does not end with a clean shutdown:\n%s", log)
	}
}

// pyramidServer is the pyramid binary under test.
type pyramidServer struct {
	*process
	url string
}

// startPyramid runs the binary against ClickHouse at chAddr with its own database, and waits
// until it is ready (ClickHouse reachable, schema applied). env adds or overrides settings
// (PYRAMID_NAME=value); the log goes to pyramid.log in work, or to the file named by a
// setting PYRAMID_TEST_LOG=name, which pyramid itself ignores.
func startPyramid(t testing.TB, bin, chAddr, db, work string, env ...string) *pyramidServer {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	logName := "pyramid.log"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PYRAMID_TEST_LOG="); ok {
			logName = v
		}
	}
	p := startProcess(t, "pyramid", filepath.Join(work, logName), append([]string{
		"PYRAMID_LISTEN_ADDR=" + addr,
		"PYRAMID_CLICKHOUSE_ADDR=" + chAddr,
		"PYRAMID_CLICKHOUSE_DATABASE=" + db,
		"PYRAMID_BATCH_WAIT=100ms",
		"PYRAMID_LOG_LEVEL=info",
	}, env...), bin)
	s := &pyramidServer{process: p, url: "http://" + addr}
	waitReady(t, p, s.url+"/-/ready")
	return s
}

// pyramid503s reads how many remote writes pyramid has answered with 503.
func pyramid503s(t *testing.T, p *pyramidServer) float64 {
	t.Helper()
	n, err := sumMetric(p.url+"/metrics", "pyramid_http_requests_total", map[string]string{"handler": "write", "code": "503"})
	if err != nil {
		t.Fatalf("read pyramid's metrics: %v", err)
	}
	return n
}

// prometheusServer is a Prometheus scraping the exporter, pyramid and itself and
// remote-writing to pyramid.
type prometheusServer struct {
	*process
	url     string
	cfgPath string
	targets prometheusTargets
}

// prometheusTargets are the scrape targets (host:port) and the remote-write URL.
// exporterJobs, if any, are more jobs scraping the exporter, each a target of its own.
type prometheusTargets struct {
	self, pyramid, exporter, remoteWrite string
	exporterJobs                         []string
}

// prometheusConfig renders the config. It scrapes every second and retries quickly, so that
// the test sees many samples and a prompt recovery in well under a minute. No external
// labels: they would be added to what is sent but not to what remote read returns from the
// TSDB. Without scrape jobs the remote_write section stays the same, so that a reload keeps
// the running queue (Prometheus reuses a queue whose config hashes the same).
func prometheusConfig(tg prometheusTargets, scrape bool) string {
	jobs := "scrape_configs: []\n"
	if scrape {
		jobs = fmt.Sprintf(`scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: [%q]
  - job_name: pyramid
    static_configs:
      - targets: [%q]
  - job_name: exporter
    static_configs:
      - targets: [%q]
`, tg.self, tg.pyramid, tg.exporter)
		for _, job := range tg.exporterJobs {
			jobs += fmt.Sprintf("  - job_name: %q\n    static_configs:\n      - targets: [%q]\n", job, tg.exporter)
		}
	}
	return fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s

%s
remote_write:
  - url: %q
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 50ms
      max_backoff: 1s
    metadata_config:
      send_interval: 2s
`, jobs, tg.remoteWrite)
}

// startPrometheus runs Prometheus with its TSDB in work and waits until it is ready.
// exporterJobs name more jobs scraping the exporter.
func startPrometheus(t *testing.T, bin, work, exporterAddr, pyramidURL string, exporterJobs ...string) *prometheusServer {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	dir := filepath.Join(work, "prometheus")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatalf("create Prometheus directory: %v", err)
	}
	s := &prometheusServer{
		url:     "http://" + addr,
		cfgPath: filepath.Join(dir, "prometheus.yml"),
		targets: prometheusTargets{
			self:         addr,
			pyramid:      strings.TrimPrefix(pyramidURL, "http://"),
			exporter:     exporterAddr,
			remoteWrite:  pyramidURL + "/api/v1/write",
			exporterJobs: exporterJobs,
		},
	}
	if err := os.WriteFile(s.cfgPath, []byte(prometheusConfig(s.targets, true)), 0o644); err != nil {
		t.Fatalf("write Prometheus config: %v", err)
	}
	s.process = startProcess(t, "prometheus", filepath.Join(work, "prometheus.log"), nil, bin,
		"--config.file="+s.cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=info",
		// For TSDB snapshots, which the backfill test imports.
		"--web.enable-admin-api",
	)
	waitReady(t, s.process, s.url+"/-/ready")
	return s
}

// stopScraping reloads Prometheus (SIGHUP) with a config without scrape jobs and waits for
// the reload. Prometheus stops the scrape loops during the reload itself, and appends
// nothing after it: removing a whole job cancels its scrape pool, and 2.42 then skips the
// stale markers it writes for removed targets (dropTargets in read_test.go keeps the jobs
// and removes their targets when the markers are wanted).
func (s *prometheusServer) stopScraping(t *testing.T) {
	t.Helper()
	s.reloadConfig(t, prometheusConfig(s.targets, false))
}

// remoteWriteDone returns nil once Prometheus's remote-write queue has sent a sample at or
// after minSent (unix seconds) and holds no samples waiting to be sent.
func remoteWriteDone(promURL string, minSent int64) error {
	sent, err := scrapeMetric(promURL+"/metrics", "prometheus_remote_storage_queue_highest_sent_timestamp_seconds")
	if err != nil {
		return err
	}
	if len(sent) != 1 {
		return fmt.Errorf("found %d highest-sent-timestamp gauges, want 1 (one remote_write)", len(sent))
	}
	if s := int64(sent[0].value); s < minSent {
		return fmt.Errorf("highest sent timestamp %d, want >= %d", s, minSent)
	}
	pending, err := scrapeMetric(promURL+"/metrics", "prometheus_remote_storage_samples_pending")
	if err != nil {
		return err
	}
	if len(pending) != 1 {
		return fmt.Errorf("found %d pending-samples gauges, want 1", len(pending))
	}
	if pending[0].value != 0 {
		return fmt.Errorf("%v samples pending", pending[0].value)
	}
	return nil
}

// allAlive returns the first process's error if any has exited.
func allAlive(ps ...*process) error {
	for _, p := range ps {
		if err := p.checkAlive(); err != nil {
			return err
		}
	}
	return nil
}

// sleepUntil sleeps until the deadline, failing at once if one of the processes dies
// meanwhile. The timeline's pauses are plain waits: they shape the load, they assert nothing.
func sleepUntil(t *testing.T, deadline time.Time, ps ...*process) {
	t.Helper()
	for time.Now().Before(deadline) {
		if err := allAlive(ps...); err != nil {
			t.Fatal(err)
		}
		time.Sleep(min(200*time.Millisecond, time.Until(deadline)))
	}
}

// checkSpecialValue asserts that pyramid stored e2e_special{kind=...} with exactly the given
// bits. A stale marker is allowed too: Prometheus writes one to every series of a target
// whose scrape fails, which a slow scrape on a busy machine can cause.
func checkSpecialValue(t *testing.T, got seriesSet, kind string, bits uint64) {
	t.Helper()
	series := got.findSeries("__name__", "e2e_special", "kind", kind)
	if len(series) != 1 {
		t.Errorf("pyramid has %d e2e_special{kind=%q} series, want 1", len(series), kind)
		return
	}
	for k, ss := range series {
		exact, wrong := 0, 0
		for _, s := range ss {
			switch s.bits {
			case bits:
				exact++
			case staleNaNBits:
			default:
				if wrong++; wrong <= 3 {
					t.Errorf("%s at %d: pyramid has %v (%#016x), want %#016x", k, s.ts, math.Float64frombits(s.bits), s.bits, bits)
				}
			}
		}
		if exact == 0 {
			t.Errorf("%s: no sample with bits %#016x in pyramid", k, bits)
		}
	}
}

// countStale counts the stale markers in a set of series.
func countStale(series map[string][]sample) int {
	n := 0
	for _, ss := range series {
		for _, s := range ss {
			if s.bits == staleNaNBits {
				n++
			}
		}
	}
	return n
}
