package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// TestClusterWriteSurvivesFailures runs Prometheus 2.42 remote-writing through pyramid into
// a 2x2 ClickHouse cluster (deploy/cluster.sh) and fails the cluster three ways while it
// scrapes:
//
//   - (a) one replica of each shard is killed (SIGKILL) and restarted: writes go on through
//     the other replicas, remote reads through pyramid answer with every target meanwhile,
//     and the restarted replicas catch up with their peers;
//   - (b) both replicas of one shard stop for 20s: pyramid acknowledges no write meanwhile
//     (a Distributed insert reaches every shard) and answers 503, a remote read fails
//     rather than answer without the shard, and Prometheus retries;
//   - (c) ZooKeeper stops for 20s: the replicated tables go read-only, pyramid acknowledges
//     no write and answers 503, remote reads still answer, and writes recover once it is
//     back.
//
// Then it checks, as TestWriteMatchesPrometheusTSDB does on one server, that pyramid holds
// exactly what Prometheus's own TSDB holds over the whole window, read through the
// Distributed tables of two different servers and through pyramid's remote read, that
// Prometheus gave up on no sample, and that both replicas of each shard hold the same
// samples.
func TestClusterWriteSurvivesFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of about two minutes; skipped in -short mode")
	}
	const db = "e2e_cluster_write"
	tools := requireTools(t, "bash", "clickhouse-server", "clickhouse-client", "prometheus")
	began := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("[%5.1fs] "+format, append([]any{time.Since(began).Seconds()}, args...)...)
	}
	work := t.TempDir()
	bin := buildPyramid(t, work)
	cl := startCluster(t)
	logf("cluster ready: %s", cl.addrs())
	pyr := startPyramid(t, bin, cl.addrs(), db, work, "PYRAMID_CLICKHOUSE_CLUSTER="+clusterName)
	logf("pyramid ready on %s", pyr.url)
	exp := startExporter(t)
	// Prometheus's own target and pyramid's land on a shard their random ports decide;
	// the exporter's jobs make sure that each shard holds the data of two targets.
	jobs := spreadExporterJobs(exp.hostPort())
	prom := startPrometheus(t, tools["prometheus"], work, exp.hostPort(), pyr.url, jobs...)
	promReady := time.Now()
	logf("Prometheus ready on %s, scraping the exporter as jobs exporter, %s", prom.url, strings.Join(jobs, ", "))
	mon := startWriteMonitor(t, pyr.url)
	procs := []*process{pyr.process, prom.process}
	windowStart := promReady.Add(3 * time.Second).UnixMilli()
	targets := 3 + len(jobs)

	waitFor(t, "pyramid to store a first remote write", time.Minute, func() error {
		if err := allAlive(procs...); err != nil {
			return stopWaiting(err)
		}
		c, err := readWriteCounts(pyr.url)
		if err != nil {
			return err
		}
		if c.ok == 0 {
			return fmt.Errorf("no 2xx answers to remote writes yet")
		}
		return nil
	})
	sleepUntil(t, promReady.Add(10*time.Second), procs...)
	retried := func() float64 {
		t.Helper()
		n, err := sumMetric(prom.url+"/metrics", "prometheus_remote_storage_samples_retried_total", nil)
		if err != nil {
			t.Fatalf("read Prometheus's retried samples: %v", err)
		}
		return n
	}
	// A phase is one failure: from when it began to when it was repaired (the servers
	// answer again), and to when writes were acknowledged again.
	type phase struct {
		name               string
		from, repaired, to time.Time
		retried            float64 // samples Prometheus retried meanwhile
		reads              string  // what remote reads through pyramid got while it lasted
		note               string
	}
	var phases []phase

	// (a) One replica of each shard crashes. Each shard keeps a live replica, so writes
	// go on; reads must answer with every target, including samples written since.
	retriedBefore := retried()
	s1r1, s1r2, s2r1, s2r2 := cl.node(t, "s1r1"), cl.node(t, "s1r2"), cl.node(t, "s2r1"), cl.node(t, "s2r2")
	killed := time.Now()
	cl.nodeAction(t, "kill", s1r1.name)
	cl.nodeAction(t, "kill", s2r2.name)
	logf("(a) killed %s and %s", s1r1.name, s2r2.name)
	okAtKill := mon.last().ok
	reads := 0
	err := poll(time.Minute, func() error {
		if err := allAlive(procs...); err != nil {
			return stopWaiting(err)
		}
		reads++
		return readsEveryTarget(pyr.url, windowStart, killed.Add(time.Second).UnixMilli(), targets)
	})
	readsA := fmt.Sprintf("%d reads: 200, every target, samples written since the crash", reads)
	if err != nil {
		readsA = "failed"
		t.Errorf("(a) remote read through pyramid while a replica of each shard was down: %v", err)
	} else {
		logf("(a) a remote read through pyramid answered every target's samples from after the crash (%d reads)", reads)
	}
	sleepUntil(t, killed.Add(12*time.Second), procs...)
	if ok := mon.last().ok; ok <= okAtKill {
		t.Errorf("(a) pyramid acknowledged no write while one replica of each shard was down (%v 2xx before and after)", ok)
	}
	cl.nodeAction(t, "start", s1r1.name)
	cl.nodeAction(t, "start", s2r2.name)
	restarted := time.Now()
	logf("(a) restarted %s and %s (down for %.1fs)", s1r1.name, s2r2.name, restarted.Sub(killed).Seconds())
	// The restarted replicas fetch what their peers stored meanwhile.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var caughtUp string
	waitFor(t, "the restarted replicas to catch up", 2*time.Minute, func() error {
		if err := allAlive(procs...); err != nil {
			return stopWaiting(err)
		}
		var counts []string
		for _, pair := range [][2]clusterNode{{s1r1, s1r2}, {s2r2, s2r1}} {
			a, err := pair[0].localSamples(ctx, db, windowStart, restarted.UnixMilli())
			if err != nil {
				return err
			}
			b, err := pair[1].localSamples(ctx, db, windowStart, restarted.UnixMilli())
			if err != nil {
				return err
			}
			if a != b || a == 0 {
				return fmt.Errorf("%s holds %d samples of the window up to the restart, %s %d", pair[0].name, a, pair[1].name, b)
			}
			counts = append(counts, fmt.Sprintf("%s and %s %d", pair[0].name, pair[1].name, a))
		}
		caughtUp = strings.Join(counts, ", ")
		return nil
	})
	catchUp := time.Since(restarted)
	var missed []string
	for _, n := range []clusterNode{s1r2, s2r1} {
		c, err := n.localSamples(ctx, db, killed.UnixMilli(), restarted.UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		missed = append(missed, fmt.Sprintf("%d on shard %d", c, n.shard))
	}
	logf("(a) the restarted replicas caught up %.1fs after their restart: %s; samples stored while they were down: %s",
		catchUp.Seconds(), caughtUp, strings.Join(missed, ", "))
	sleepUntil(t, restarted.Add(5*time.Second), procs...)
	phases = append(phases, phase{name: "(a) kill -9 one replica of each shard", from: killed, repaired: restarted, to: time.Now(),
		retried: retried() - retriedBefore, reads: readsA,
		note: fmt.Sprintf("restarted replicas equal to their peers %.1fs after their restart (%s stored meanwhile)", catchUp.Seconds(), strings.Join(missed, ", "))})

	// (b) Shard 2 has no replica for 20s. A sync Distributed insert reaches every shard,
	// so every write fails, whichever shards its rows belong to.
	retriedBefore = retried()
	shardDown := time.Now()
	cl.nodeAction(t, "stop", s2r1.name)
	cl.nodeAction(t, "stop", s2r2.name)
	logf("(b) stopped %s and %s", s2r1.name, s2r2.name)
	sleepUntil(t, time.Now().Add(3*time.Second), procs...)
	okDown := mon.last().ok
	code, err := readStatus(pyr.url, windowStart)
	readsB := fmt.Sprintf("%d", code)
	if err != nil {
		readsB = "failed"
		t.Errorf("(b) remote read while shard 2 is down: %v", err)
	} else if code/100 == 2 {
		t.Errorf("(b) remote read while shard 2 is down answered %d: an answer without the shard's series", code)
	} else {
		logf("(b) a remote read while shard 2 is down answered %d", code)
	}
	sleepUntil(t, shardDown.Add(20*time.Second), procs...)
	okUp := mon.last().ok
	cl.nodeAction(t, "start", s2r1.name)
	cl.nodeAction(t, "start", s2r2.name)
	shardUp := time.Now()
	logf("(b) restarted %s and %s (shard down for %.1fs)", s2r1.name, s2r2.name, shardUp.Sub(shardDown).Seconds())
	if okUp != okDown {
		t.Errorf("(b) pyramid acknowledged %v writes while shard 2 had no live replica", okUp-okDown)
	}
	waitWritesAccepted(t, mon, shardUp, procs)
	phases = append(phases, phase{name: "(b) stop both replicas of shard 2", from: shardDown, repaired: shardUp, to: time.Now(),
		retried: retried() - retriedBefore, reads: readsB})

	// (c) ZooKeeper is away for 20s: the replicated tables cannot insert.
	retriedBefore = retried()
	zkDown := time.Now()
	cl.zookeeper(t, "stop")
	logf("(c) stopped ZooKeeper")
	sleepUntil(t, time.Now().Add(3*time.Second), procs...)
	okDown = mon.last().ok
	readsC := "200, every target"
	if err := readsEveryTarget(pyr.url, windowStart, windowStart, targets); err != nil {
		readsC = "failed"
		t.Errorf("(c) remote read through pyramid while ZooKeeper was down: %v", err)
	} else {
		logf("(c) a remote read through pyramid answered every target while ZooKeeper was down")
	}
	sleepUntil(t, zkDown.Add(20*time.Second), procs...)
	okUp = mon.last().ok
	cl.zookeeper(t, "start")
	zkUp := time.Now()
	logf("(c) restarted ZooKeeper (down for %.1fs)", zkUp.Sub(zkDown).Seconds())
	if okUp != okDown {
		t.Errorf("(c) pyramid acknowledged %v writes while ZooKeeper was down", okUp-okDown)
	}
	waitWritesAccepted(t, mon, zkUp, procs)
	phases = append(phases, phase{name: "(c) stop ZooKeeper", from: zkDown, repaired: zkUp, to: time.Now(),
		retried: retried() - retriedBefore, reads: readsC})

	sleepUntil(t, time.Now().Add(8*time.Second), procs...)
	windowEnd := time.Now().Add(-4 * time.Second).UnixMilli()
	logf("window is %d..%d (%.1fs)", windowStart, windowEnd, float64(windowEnd-windowStart)/1000)
	prom.stopScraping(t)
	logf("Prometheus stopped scraping")
	err = poll(2*time.Minute, func() error {
		if err := allAlive(procs...); err != nil {
			return stopWaiting(err)
		}
		return remoteWriteDone(prom.url, windowEnd/1000+3)
	})
	if err != nil {
		t.Logf("pyramid's metrics:\n%s", grepMetrics(pyr.url, "pyramid_http_requests_total", "pyramid_write_rows_in_flight"))
		t.Logf("Prometheus's remote-write metrics:\n%s", grepMetrics(prom.url, "prometheus_remote_storage_"))
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
	totalRetried := retried()
	if other := mon.last().other; other != 0 {
		t.Errorf("pyramid answered %v writes with a status other than 2xx and 503", other)
	}

	want, err := readPrometheus(ctx, prom.url, windowStart, windowEnd)
	if err != nil {
		t.Fatalf("read Prometheus TSDB: %v", err)
	}
	if n := want.samplesIn(); n < 10000 {
		t.Errorf("only %d samples in the window; the comparison proves little", n)
	}
	// Every server's Distributed tables answer for the whole cluster: read through a server
	// of each shard.
	for _, n := range []clusterNode{s1r1, s2r2} {
		got, stats, err := readPyramid(ctx, n.addr(), db, windowStart, windowEnd)
		if err != nil {
			t.Fatalf("read pyramid's tables through %s: %v", n.name, err)
		}
		logf("Prometheus TSDB: %d series, %d samples; pyramid through %s: %d series, %d samples (%d rows, %d duplicates from retries)",
			len(want), want.samplesIn(), n.name, len(got), got.samplesIn(), stats.rows, stats.duplicates)
		if diff := diffSeriesSets(want, got, windowStart); diff != "" {
			t.Errorf("through %s: %s", n.name, diff)
		}
		// The exporter serves its special values to every job; check one job's.
		exporterJob := seriesSet(got.findSeries("job", "exporter"))
		for _, s := range specialValues {
			checkSpecialValue(t, exporterJob, s.kind, math.Float64bits(s.value))
		}
	}
	// pyramid's own remote read, through the cluster, answers the window as Prometheus's
	// TSDB does, bit for bit.
	viaRead, err := readPrometheus(ctx, pyr.url, windowStart, windowEnd)
	if err != nil {
		t.Fatalf("remote-read the window from pyramid: %v", err)
	}
	logf("pyramid's remote read: %d series, %d samples", len(viaRead), viaRead.samplesIn())
	if diff := diffSeriesSets(want, viaRead, windowStart); diff != "" {
		t.Errorf("through pyramid's remote read: %s", diff)
	}

	// Both replicas of each shard hold the same samples, and both shards hold some.
	waitFor(t, "the replicas of each shard to agree", time.Minute, func() error {
		var counts []string
		for _, pair := range [][2]clusterNode{{s1r1, s1r2}, {s2r1, s2r2}} {
			a, err := pair[0].localSamples(ctx, db, windowStart, windowEnd)
			if err != nil {
				return err
			}
			b, err := pair[1].localSamples(ctx, db, windowStart, windowEnd)
			if err != nil {
				return err
			}
			if a != b {
				return fmt.Errorf("%s holds %d samples of the window, %s %d", pair[0].name, a, pair[1].name, b)
			}
			if a == 0 {
				return stopWaiting(fmt.Errorf("shard %d holds no sample of the window: the test did not spread its targets", pair[0].shard))
			}
			counts = append(counts, fmt.Sprintf("shard %d: %d", pair[0].shard, a))
		}
		logf("both replicas of each shard hold the same samples: %s", strings.Join(counts, ", "))
		return nil
	})

	var table strings.Builder
	table.WriteString("| failure | lasted | writes answered 503 | first..last 503 | writes acknowledged again | samples Prometheus retried | remote reads meanwhile | notes |\n|---|---|---|---|---|---|---|---|\n")
	for _, p := range phases {
		r := mon.refusals(p.from, p.to)
		span, back := "-", "-"
		if r.count > 0 {
			span = fmt.Sprintf("%.0fs..%.0fs", r.first.Sub(p.from).Seconds(), r.last.Sub(p.from).Seconds())
		}
		if !r.recovered.IsZero() {
			back = fmt.Sprintf("%.0fs (%+.0fs after the repair)", r.recovered.Sub(p.from).Seconds(), r.recovered.Sub(p.repaired).Seconds())
		}
		fmt.Fprintf(&table, "| %s | %.0fs | %.0f | %s | %s | %.0f | %s | %s |\n", p.name, p.repaired.Sub(p.from).Seconds(), r.count, span, back, p.retried, p.reads, p.note)
	}
	logf("failure behaviour, times from the failure's start (%d samples compared; Prometheus retried %.0f samples in all):\n%s", want.samplesIn(), totalRetried, table.String())
}

// spreadExporterJobs names extra jobs scraping the exporter at exporterAddr until each of
// the two shards holds the rows of two exporter targets, the job "exporter" included.
func spreadExporterJobs(exporterAddr string) []string {
	var jobs []string
	perShard := [2]int{}
	perShard[shardOf("exporter", exporterAddr)]++
	for k := 2; perShard[0] < 2 || perShard[1] < 2; k++ {
		job := fmt.Sprintf("exporter-%d", k)
		if s := shardOf(job, exporterAddr); perShard[s] < 2 {
			perShard[s]++
			jobs = append(jobs, job)
		}
	}
	return jobs
}

// readUp posts a remote read of every target's up series from start to now to pyramid.
func readUp(ctx context.Context, pyramidURL string, start int64) (*http.Response, []byte, error) {
	return postRead(ctx, pyramidURL, &prompb.ReadRequest{Queries: []*prompb.Query{{
		StartTimestampMs: start,
		EndTimestampMs:   time.Now().UnixMilli(),
		Matchers:         []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: "up"}},
	}}})
}

// readsEveryTarget reads the up series of every target through pyramid's remote read and
// returns nil if the answer is a 200 with want targets, each with a sample at or after
// since. Any answer but a 200 stops waitFor at once.
func readsEveryTarget(pyramidURL string, start, since int64, want int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, body, err := readUp(ctx, pyramidURL, start)
	if err != nil {
		return err
	}
	rresp, err := decodeSamples(resp, body)
	if err != nil {
		return stopWaiting(err)
	}
	if len(rresp.Results) != 1 {
		return stopWaiting(fmt.Errorf("remote read returned %d results for 1 query", len(rresp.Results)))
	}
	series := rresp.Results[0].Timeseries
	if len(series) != want {
		return fmt.Errorf("remote read returned %d up series, want one for each of %d targets", len(series), want)
	}
	for _, s := range series {
		if n := len(s.Samples); n == 0 || s.Samples[n-1].Timestamp < since {
			return fmt.Errorf("up%v has no sample at or after %d yet", s.Labels, since)
		}
	}
	return nil
}

// readStatus reads every up series since start through pyramid and returns the status.
func readStatus(pyramidURL string, start int64) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, _, err := readUp(ctx, pyramidURL, start)
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// waitWritesAccepted waits until pyramid acknowledges a write again after since.
func waitWritesAccepted(t *testing.T, mon *writeMonitor, since time.Time, procs []*process) {
	t.Helper()
	okAt := mon.last().ok
	waitFor(t, "pyramid to acknowledge writes again", 3*time.Minute, func() error {
		if err := allAlive(procs...); err != nil {
			return stopWaiting(err)
		}
		if p := mon.last(); p.ok <= okAt || p.at.Before(since) {
			return fmt.Errorf("no 2xx since %s", since.Format(time.TimeOnly))
		}
		return nil
	})
}

// TestClusterRollupReadMatchesPrometheus is TestRollupReadMatchesPrometheus on a 2x2
// cluster: PromQL through remote read from pyramid, raw and rollup tiers alike, must give
// the answers it gives on one server, within the same documented error. The data's three
// targets land on both shards, so every answer merges the two.
func TestClusterRollupReadMatchesPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of about a minute; skipped in -short mode")
	}
	tools := requireTools(t, "bash", "clickhouse-server", "clickhouse-client", "prometheus", "promtool")
	cl := startCluster(t)
	t.Logf("cluster ready: %s", cl.addrs())
	// A second pyramid on the same tables, reaching the servers in the other order, whose
	// materializer computes the same units as the first one's: the rollups must stay
	// exact with several pyramids running.
	work := t.TempDir()
	addrs := strings.Split(cl.addrs(), ",")
	slices.Reverse(addrs)
	second := startPyramid(t, buildPyramid(t, work), strings.Join(addrs, ","), accuracyDB, work,
		"PYRAMID_CLICKHOUSE_CLUSTER="+clusterName, "PYRAMID_TIERS=raw:30d,5m:365d,1h:0",
		"PYRAMID_ROLLUP_SETTLE=1s", "PYRAMID_ROLLUP_INTERVAL=1s")
	checkRollupAccuracy(t, tools, cl.addrs(), "PYRAMID_CLICKHOUSE_CLUSTER="+clusterName)
	units, err := sumMetric(second.url+"/metrics", "pyramid_rollup_units_total", nil)
	if err != nil {
		t.Fatalf("read the second pyramid's rollup units: %v", err)
	}
	t.Logf("the second pyramid computed %v units", units)
	if units == 0 {
		t.Error("the second pyramid computed no rollup unit: the test ran one materializer, not several")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range cl.nodes {
		if n.replica != 1 {
			continue
		}
		rows, err := n.query(ctx, "SELECT count() FROM "+accuracyDB+".samples_local")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("shard %d holds %d samples", n.shard, rows)
		if rows == 0 {
			t.Errorf("shard %d holds no sample: the comparison did not read across shards", n.shard)
		}
	}
}

// TestClusterInsertQuorum checks PYRAMID_INSERT_QUORUM=2: with one replica of a shard
// down, a remote write is refused with 503 rather than acknowledged with a single copy;
// once the replica is back, the retried write is acknowledged, and at that moment every
// replica holds its samples exactly once, though the refused attempt may have stored the
// other shard's rows already.
func TestClusterInsertQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of about half a minute; skipped in -short mode")
	}
	const db = "e2e_cluster_quorum"
	work := t.TempDir()
	bin := buildPyramid(t, work)
	cl := startCluster(t)
	pyr := startPyramid(t, bin, cl.addrs(), db, work, "PYRAMID_CLICKHOUSE_CLUSTER="+clusterName, "PYRAMID_INSERT_QUORUM=2")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// The cluster's database, configured for one server, is refused: pyramid would write
	// into its Distributed tables without waiting for the shards.
	migrate := exec.CommandContext(ctx, bin, "migrate")
	migrate.Env = append(os.Environ(), "PYRAMID_CLICKHOUSE_ADDR="+cl.nodes[0].addr(), "PYRAMID_CLICKHOUSE_DATABASE="+db)
	if out, err := migrate.CombinedOutput(); err == nil || !strings.Contains(string(out), "created for a cluster") {
		t.Errorf("pyramid migrate of the cluster's database for one server: %v\n%s\nwant a refusal naming the cluster's tables", err, out)
	}
	url := pyr.url + "/api/v1/write"

	// One series on each shard. The first write, with every server up, stores a minute
	// of samples and the series; the second, the next minute, then inserts only samples,
	// so that the quorum meets the samples insert itself.
	const perSeries = 60
	var instances []string
	covered := [2]bool{}
	for k := 0; !covered[0] || !covered[1]; k++ {
		instance := fmt.Sprintf("quorum-host-%d:9100", k)
		if s := shardOf("e2e_quorum", instance); !covered[s] {
			covered[s] = true
			instances = append(instances, instance)
		}
	}
	start := time.Now().Add(-10 * time.Minute).Truncate(time.Minute).UnixMilli()
	// minute is the write request of minute m, for the series of one shard (0 or 1) or,
	// with shard -1, of both.
	minute := func(m, shard int) []byte {
		var wr prompb.WriteRequest
		for k, instance := range instances {
			if shard >= 0 && shardOf("e2e_quorum", instance) != shard {
				continue
			}
			ts := prompb.TimeSeries{Labels: []prompb.Label{
				{Name: "__name__", Value: "e2e_quorum_gauge"}, {Name: "instance", Value: instance}, {Name: "job", Value: "e2e_quorum"},
			}}
			for i := range perSeries {
				ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: start + int64(m*perSeries+i)*1000, Value: float64(k*1e6 + m*perSeries + i)})
			}
			wr.Timeseries = append(wr.Timeseries, ts)
		}
		raw, err := wr.Marshal()
		if err != nil {
			t.Fatalf("marshal write request: %v", err)
		}
		return snappy.Encode(nil, raw)
	}
	if err := postRemoteWrite(ctx, url, minute(0, -1)); err != nil {
		t.Fatalf("write the first minute with every server up: %v", err)
	}

	down := cl.node(t, "s1r2")
	cl.nodeAction(t, "stop", down.name)
	second := minute(1, -1)
	resp, msg, err := postSnappy(ctx, url, second, false)
	if err != nil {
		t.Fatalf("post a remote write: %v", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("with %s down, a write needing 2 replicas of each shard answered %s, want 503", down.name, resp.Status)
	} else if resp.Header.Get("Retry-After") == "" {
		t.Errorf("the 503 has no Retry-After header")
	}
	t.Logf("with %s down the second minute's write answered %s: %s", down.name, resp.Status, bytes.TrimSpace(msg[:min(len(msg), 200)]))
	for _, n := range cl.nodes {
		if n.name == down.name {
			continue
		}
		rows, err := n.query(ctx, "SELECT count() FROM "+db+".samples_local")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("after the refused write %s holds %d sample rows", n.name, rows)
	}

	cl.nodeAction(t, "start", down.name)
	if err := postRemoteWrite(ctx, url, second); err != nil {
		t.Fatalf("retry the write after %s came back: %v", down.name, err)
	}
	// The quorum means that every replica of both shards holds the rows once the write is
	// acknowledged: count them at once, and count rows, so that a duplicate shows.
	for _, n := range cl.nodes {
		rows, err := n.query(ctx, "SELECT count() FROM "+db+".samples_local")
		if err != nil {
			t.Fatal(err)
		}
		if rows != 2*perSeries {
			t.Errorf("%s holds %d sample rows right after the retried write was acknowledged, want %d (its shard's series, each sample once)", n.name, rows, 2*perSeries)
		}
	}

	// With shard 2 gone, a write whose rows all belong to shard 1 (both of its replicas
	// up, so the quorum holds) is refused too: on 18.16 a synchronous Distributed insert
	// connects to every shard, whether it has rows for it or not.
	cl.nodeAction(t, "stop", "s2r1")
	cl.nodeAction(t, "stop", "s2r2")
	resp, msg, err = postSnappy(ctx, url, minute(2, 0), false)
	if err != nil {
		t.Fatalf("post a remote write: %v", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("with shard 2 down, a write with rows for shard 1 only answered %s, want 503", resp.Status)
	}
	t.Logf("with shard 2 down, a write with rows for shard 1 only answered %s: %s", resp.Status, bytes.TrimSpace(msg[:min(len(msg), 200)]))
}
