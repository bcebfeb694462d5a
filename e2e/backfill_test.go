package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/prometheus/prompb"
)

// backfillDB is the rollup accuracy test's database, whose rollups waitAccuracyRollups
// waits for (every e2e test has a ClickHouse of its own).
const backfillDB = accuracyDB

// TestBackfillMatchesPrometheus imports TSDB blocks written by Prometheus 2.42's own
// promtool (the rollup accuracy test's two days of counters with resets, gauges, a gappy
// gauge and odd label values) with `pyramid backfill`, while pyramid serves the same
// database:
//   - a first run is killed (SIGKILL) once it has stored some rows, and a second run ends
//     with pyramid's remote read equal to Prometheus's own /api/v1/read over the blocks,
//     bit for bit, in both response types;
//   - a third run finds every block recorded and stores nothing; a fourth with another
//     scope imports the blocks again, and the answer is still the same;
//   - a backfill from the Prometheus serving the blocks, through its remote read, into
//     another database gives the same answer, and a second one stores nothing;
//   - the backfilled hours get their rollups, and pyramid's query API holds the rollup
//     accuracy bounds on them against Prometheus.
func TestBackfillMatchesPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of about a minute; skipped in -short mode")
	}
	tools := requireTools(t, "bash", "clickhouse-server", "clickhouse-client", "prometheus", "promtool")
	began := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("[%5.1fs] "+format, append([]any{time.Since(began).Seconds()}, args...)...)
	}
	ch := startClickHouse(t)
	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	data := generateAccuracyData(accuracyEnd(time.Now()))
	omPath := filepath.Join(work, "data.om")
	if err := data.writeOpenMetrics(omPath); err != nil {
		t.Fatalf("write OpenMetrics: %v", err)
	}
	blocks := filepath.Join(work, "prometheus-tsdb")
	if _, err := createBlocks(ctx, tools["promtool"], omPath, blocks); err != nil {
		t.Fatal(err)
	}
	promA := startQueryPrometheus(t, tools["prometheus"], work, "prometheus-a", blocks, "scrape_configs: []\n")
	logf("%d series, %d samples as promtool's blocks; Prometheus A serves them on %s", len(data.series), data.samples(), promA.url)

	env := []string{"PYRAMID_TIERS=raw:30d,5m:365d,1h:0", "PYRAMID_ROLLUP_SETTLE=1s", "PYRAMID_ROLLUP_INTERVAL=1s", "PYRAMID_READ_TIER_REFRESH=1s"}
	bin := buildPyramid(t, work)
	pyr := startPyramid(t, bin, ch.addr(), backfillDB, work, env...)
	backfill := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, bin, append([]string{"backfill"}, args...)...)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "PYRAMID_CLICKHOUSE_ADDR=" + ch.addr(),
			"PYRAMID_CLICKHOUSE_DATABASE=" + backfillDB}, env...)
		return cmd
	}

	// 1. Killed once rows are in.
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{ch.addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	killed := backfill("--batch-rows", "500", blocks)
	var killedOut bytes.Buffer
	killed.Stdout, killed.Stderr = &killedOut, &killedOut
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first backfill to store some rows", time.Minute, func() error {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+backfillDB+".samples").Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("no rows yet")
		}
		return nil
	})
	if err := killed.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = killed.Wait()
	if strings.Contains(killedOut.String(), "backfill: done") {
		t.Fatalf("the first backfill ended before it was killed (%v); the test proves nothing about resuming:\n%s", err, killedOut.String())
	}
	logf("first backfill killed halfway: %v", err)

	// 2. Run again to the end: pyramid now answers what Prometheus holds.
	out := runBackfill(t, backfill(blocks))
	stored := summaryField(t, out, "blocks")
	if stored == "0" {
		t.Fatalf("the second backfill stored no block:\n%s", out)
	}
	logf("second backfill: %s blocks stored", stored)
	q := &prompb.Query{StartTimestampMs: data.start - accuracyHourMs, EndTimestampMs: data.end + accuracyHourMs,
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "job", Value: accuracyJob}}}
	sameAsPrometheus := func(pyrURL, when string) {
		t.Helper()
		want, err := readChunked(ctx, promA.url, q)
		if err != nil {
			t.Fatalf("remote-read Prometheus A: %v", err)
		}
		if len(want.points()) != len(data.series) {
			t.Fatalf("Prometheus A answers %d series, want %d", len(want.points()), len(data.series))
		}
		sampled, err := readSampled(ctx, pyrURL, q)
		if err != nil {
			t.Fatalf("remote-read pyramid (SAMPLES): %v", err)
		}
		if d := diffPointSets(want.points(), sampled); d != "" {
			t.Fatalf("%s: pyramid's SAMPLES answer differs from Prometheus's:\n%s", when, d)
		}
		streamed, err := readChunked(ctx, pyrURL, q)
		if err != nil {
			t.Fatalf("remote-read pyramid (STREAMED_XOR_CHUNKS): %v", err)
		}
		if d := diffPointSets(want.points(), streamed.points()); d != "" {
			t.Fatalf("%s: pyramid's streamed answer differs from Prometheus's:\n%s", when, d)
		}
		logf("%s: pyramid's remote read equals Prometheus's, bit for bit, in both response types", when)
	}
	sameAsPrometheus(pyr.url, "after the killed and the completed run")

	// 3. Nothing left to do.
	out = runBackfill(t, backfill(blocks))
	if got := summaryField(t, out, "blocks"); got != "0" || summaryField(t, out, "skipped_blocks") != stored {
		t.Fatalf("a third backfill stored %s blocks and skipped %s, want 0 and %s:\n%s", got, summaryField(t, out, "skipped_blocks"), stored, out)
	}
	// 4. Another scope imports every block again, which changes no answer.
	out = runBackfill(t, backfill("--min-time", "0", blocks))
	if got := summaryField(t, out, "blocks"); got != stored {
		t.Fatalf("a backfill with another scope stored %s blocks, want %s:\n%s", got, stored, out)
	}
	logf("a backfill of every block again (scope changed): %s samples in %s s, while pyramid serves",
		summaryField(t, out, "samples"), summaryField(t, out, "seconds"))
	sameAsPrometheus(pyr.url, "after importing every block a second time")

	// From the running Prometheus through remote read instead, into another database.
	fromRemote := func() string {
		cmd := backfill("--from-remote-read", promA.url+"/api/v1/read", "--min-time", strconv.FormatInt(data.start/1000-3600, 10))
		cmd.Env = append(cmd.Env, "PYRAMID_CLICKHOUSE_DATABASE="+backfillDB+"_remote")
		return runBackfill(t, cmd)
	}
	out = fromRemote()
	days := summaryField(t, out, "blocks")
	logf("backfill through remote read: %s days, %s samples in %s s", days, summaryField(t, out, "samples"), summaryField(t, out, "seconds"))
	remote := startPyramid(t, bin, ch.addr(), backfillDB+"_remote", work, append(env, "PYRAMID_TEST_LOG=pyramid-remote.log")...)
	sameAsPrometheus(remote.url, "after a backfill through remote read")
	if out = fromRemote(); summaryField(t, out, "blocks") != "0" || summaryField(t, out, "skipped_blocks") != days {
		t.Fatalf("a second backfill through remote read stored %s days and skipped %s, want 0 and %s:\n%s",
			summaryField(t, out, "blocks"), summaryField(t, out, "skipped_blocks"), days, out)
	}

	// 5. Rollups of the backfilled hours, and the accuracy bounds on them.
	waitAccuracyRollups(t, ctx, pyr, ch.addr(), data)
	time.Sleep(2500 * time.Millisecond) // Routing relearns the tiers every second.
	checked := 0
	for _, aq := range accuracyQueries(data) {
		a, err := runQuery(ctx, promA.url, aq.expr, aq.mode)
		if err != nil {
			t.Fatalf("query %s (%s) on A: %v", aq.expr, aq.mode.name, err)
		}
		p, err := runQuery(ctx, pyr.url, aq.expr, aq.mode)
		if err != nil {
			t.Fatalf("query %s (%s) on pyramid: %v", aq.expr, aq.mode.name, err)
		}
		if a.points() == 0 {
			t.Errorf("query %s (%s): A answers nothing, so the comparison would pass vacuously", aq.expr, aq.mode.name)
		}
		c := compareAccuracy(a, p, func(key string, ts int64) accuracyTolerance { return aq.tolerance(data, key, ts) })
		if len(c.problems) > 0 {
			t.Errorf("query %s (%s): pyramid is not within %s of Prometheus on backfilled data; %d of %d points differ:\n%s",
				aq.expr, aq.mode.name, aq.allowed, len(c.problems), c.points, c.report())
		}
		checked++
	}
	logf("%d accuracy queries over the backfilled range hold their bounds", checked)
}

// runBackfill runs a backfill to the end and returns its output.
func runBackfill(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pyramid backfill: %v\n%s", err, out)
	}
	return string(out)
}

// summaryField reads a field of the backfill's final log line, unquoted.
func summaryField(t *testing.T, out, field string) string {
	t.Helper()
	line := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, `msg="backfill: done"`) {
			line = l
		}
	}
	m := regexp.MustCompile(`(?:^| )` + regexp.QuoteMeta(field) + `=("[^"]*"|\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no %s in the backfill's summary:\n%s", field, out)
	}
	return strings.Trim(m[1], `"`)
}

// TestBackfillPrometheusSnapshot backfills the TSDB of a real Prometheus 2.42: it scrapes the
// exporter (odd label values, counters that reset, a series that appears late) for a while,
// drops its targets so that it writes stale markers, and takes a snapshot through its admin
// API (the head included). pyramid's remote read of a database filled only by `pyramid
// backfill SNAPSHOT` must then equal Prometheus's own /api/v1/read, bit for bit, stale
// markers included. Before the targets are dropped (Prometheus answers /api/v1/metadata
// from its live targets only), `pyramid backfill --from-remote-read` imports what it holds
// so far into another database: with a metadata URL that fails, the samples are imported
// and the failure counted; run again with the metadata URL derived from the remote-read
// URL, it stores the metadata, and pyramid's /api/v1/metadata and remote read then answer
// as Prometheus's. A backfill of Prometheus's live data directory reads its 2.42 WAL,
// which holds no metadata records, without a failure.
func TestBackfillPrometheusSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of about half a minute; skipped in -short mode")
	}
	st := startScrapeStack(t, "e2e_snapshot", writeReadSeries)
	logf := func(format string, args ...any) { t.Helper(); st.logf(t, format, args...) }
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	time.Sleep(12 * time.Second) // a dozen scrapes
	st.exp.setLate(true)
	time.Sleep(4 * time.Second)

	bin := buildPyramid(t, st.work)
	const remoteDB = "e2e_snapshot_remote"
	// Samples up to a few scrape intervals ago are all committed by the time they are read.
	remoteMin, remoteMax := began.Add(-time.Minute).Unix(), time.Now().Add(-3*time.Second).Unix()
	fromRemote := func(args ...string) string {
		cmd := exec.CommandContext(ctx, bin, append([]string{"backfill", "--from-remote-read", st.prom.url + "/api/v1/read",
			"--min-time", strconv.FormatInt(remoteMin, 10), "--max-time", strconv.FormatInt(remoteMax, 10)}, args...)...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "PYRAMID_CLICKHOUSE_ADDR=" + st.ch.addr(), "PYRAMID_CLICKHOUSE_DATABASE=" + remoteDB}
		return runBackfill(t, cmd)
	}
	out := fromRemote("--metadata-url", st.prom.url+"/api/v1/no-such-endpoint")
	days := summaryField(t, out, "blocks")
	if days == "0" || summaryField(t, out, "samples") == "0" || summaryField(t, out, "metadata") != "0" ||
		summaryField(t, out, "metadata_failures") != "1" || summaryField(t, out, "bytes_read") == "0 B" || summaryField(t, out, "bytes_sent") == "0 B" {
		t.Fatalf("a backfill through remote read with a metadata URL that fails: want days, samples and bytes stored, no metadata and 1 failure:\n%s", out)
	}
	logf("backfill through remote read with a failing metadata URL: %s samples, %s read, %s sent, metadata failures %s",
		summaryField(t, out, "samples"), summaryField(t, out, "bytes_read"), summaryField(t, out, "bytes_sent"), summaryField(t, out, "metadata_failures"))
	sourceMetadata := func() map[string][]string {
		t.Helper()
		data, err := apiDo(ctx, http.MethodGet, st.prom.url, "/api/v1/metadata", nil)
		if err != nil {
			t.Fatalf("metadata of Prometheus: %v", err)
		}
		md, err := metadataFamilies(data)
		if err != nil {
			t.Fatal(err)
		}
		return md
	}
	metaBefore := sourceMetadata()
	out = fromRemote()
	metaAfter := sourceMetadata()
	if summaryField(t, out, "blocks") != "0" || summaryField(t, out, "skipped_blocks") != days ||
		summaryField(t, out, "metadata_failures") != "0" || summaryField(t, out, "metadata") == "0" {
		t.Fatalf("a second backfill through remote read: want every day skipped (%s), metadata stored and no failure:\n%s", days, out)
	}
	logf("second backfill through remote read: %s days skipped, metadata of %s families stored", days, summaryField(t, out, "metadata"))
	st.prom.dropTargets(t)
	// Dropped targets get their stale markers at what would have been their next scrape.
	all := &prompb.Query{StartTimestampMs: began.Add(-time.Minute).UnixMilli(), EndTimestampMs: time.Now().Add(time.Hour).UnixMilli(),
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_RE, Name: "job", Value: ".+"}}}
	waitFor(t, "Prometheus to end every series with a stale marker", time.Minute, func() error {
		got, err := readChunked(ctx, st.prom.url, all)
		if err != nil {
			return err
		}
		for k, ps := range got.points() {
			if !ps[len(ps)-1].isStale() {
				return fmt.Errorf("%s does not end with a stale marker yet", k)
			}
		}
		return nil
	})
	resp, err := http.Post(st.prom.url+"/api/v1/admin/tsdb/snapshot", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var snap struct {
		Data struct{ Name string } `json:"data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&snap)
	resp.Body.Close()
	if err != nil || snap.Data.Name == "" {
		t.Fatalf("take a snapshot: %s, %v", resp.Status, err)
	}
	dir := filepath.Join(st.work, "prometheus", "data", "snapshots", snap.Data.Name)
	logf("Prometheus 2.42 scraped for 16s, dropped its targets, wrote stale markers and took snapshot %s", snap.Data.Name)

	cmd := exec.CommandContext(ctx, bin, "backfill", dir)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "PYRAMID_CLICKHOUSE_ADDR=" + st.ch.addr(), "PYRAMID_CLICKHOUSE_DATABASE=e2e_snapshot_backfill"}
	out = runBackfill(t, cmd)
	logf("backfilled %s blocks, %s samples", summaryField(t, out, "blocks"), summaryField(t, out, "samples"))
	pyr := startPyramid(t, bin, st.ch.addr(), "e2e_snapshot_backfill", st.work, "PYRAMID_TEST_LOG=pyramid-backfilled.log")

	q := &prompb.Query{StartTimestampMs: began.Add(-time.Minute).UnixMilli(), EndTimestampMs: time.Now().UnixMilli(),
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_RE, Name: "job", Value: ".+"}}}
	want, err := readChunked(ctx, st.prom.url, q)
	if err != nil {
		t.Fatalf("remote-read Prometheus: %v", err)
	}
	stale, series := 0, 0
	for _, ps := range want.points() {
		series++
		for _, p := range ps {
			if p.isStale() {
				stale++
			}
		}
	}
	if stale == 0 || series < 50 {
		t.Fatalf("Prometheus holds %d series and %d stale markers; want both, or the comparison proves little", series, stale)
	}
	sampled, err := readSampled(ctx, pyr.url, q)
	if err != nil {
		t.Fatalf("remote-read pyramid (SAMPLES): %v", err)
	}
	if d := diffPointSets(want.points(), sampled); d != "" {
		t.Fatalf("pyramid's SAMPLES answer differs from Prometheus's:\n%s", d)
	}
	streamed, err := readChunked(ctx, pyr.url, q)
	if err != nil {
		t.Fatalf("remote-read pyramid (STREAMED_XOR_CHUNKS): %v", err)
	}
	if d := diffPointSets(want.points(), streamed.points()); d != "" {
		t.Fatalf("pyramid's streamed answer differs from Prometheus's:\n%s", d)
	}
	logf("pyramid's remote read of the backfilled snapshot equals Prometheus's: %d series, %d stale markers, bit for bit", series, stale)
	if summaryField(t, out, "metadata") != "0" || summaryField(t, out, "metadata_failures") != "0" || summaryField(t, out, "bytes_read") == "0 B" {
		t.Errorf("the snapshot's backfill: want bytes read, and neither metadata nor a failure (a snapshot has no WAL):\n%s", out)
	}

	// The database filled through remote read, while the targets were live.
	remote := startPyramid(t, bin, st.ch.addr(), remoteDB, st.work, "PYRAMID_TEST_LOG=pyramid-remote.log")
	data, err := apiDo(ctx, http.MethodGet, remote.url, "/api/v1/metadata", nil)
	if err != nil {
		t.Fatalf("metadata of pyramid: %v", err)
	}
	got, err := metadataFamilies(data)
	if err != nil {
		t.Fatal(err)
	}
	// A family both answers of Prometheus list, taken around the backfill's own request,
	// must be pyramid's with one of Prometheus's entries; pyramid has no family that
	// neither lists.
	both := map[string][]string{}
	for k, v := range metaAfter {
		if metaBefore[k] != nil {
			both[k] = v
		}
	}
	if len(both) < 20 || both["e2e_scrapes_total"] == nil {
		t.Fatalf("Prometheus lists metadata of %d families and none for e2e_scrapes_total; the comparison would prove little", len(both))
	}
	if d := diffMetadata(both, got); d != "" {
		t.Errorf("metadata of Prometheus (%d families) and of pyramid after a backfill through remote read (%d) differ:\n%s", len(both), len(got), d)
	}
	for k := range got {
		if metaBefore[k] == nil && metaAfter[k] == nil {
			t.Errorf("pyramid holds metadata of %s, which Prometheus does not list", k)
		}
	}
	rq := &prompb.Query{StartTimestampMs: remoteMin * 1000, EndTimestampMs: remoteMax * 1000,
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_RE, Name: "job", Value: ".+"}}}
	if want, err = readChunked(ctx, st.prom.url, rq); err != nil {
		t.Fatalf("remote-read Prometheus: %v", err)
	}
	if sampled, err = readSampled(ctx, remote.url, rq); err != nil {
		t.Fatalf("remote-read pyramid (SAMPLES): %v", err)
	}
	if len(want.points()) < 50 {
		t.Fatalf("Prometheus holds %d series up to the remote backfill's max time; the comparison would prove little", len(want.points()))
	}
	if d := diffPointSets(want.points(), sampled); d != "" {
		t.Fatalf("pyramid's answer after a backfill through remote read differs from Prometheus's:\n%s", d)
	}
	logf("after a backfill through remote read: pyramid's metadata (%d families) and remote read (%d series) answer as Prometheus's",
		len(got), len(want.points()))

	// Prometheus's live data directory: its 2.42 WAL holds series and samples but no
	// metadata records, which that version cannot write.
	cmd = exec.CommandContext(ctx, bin, "backfill", filepath.Join(st.work, "prometheus", "data"))
	cmd.Env = []string{"PATH=/usr/bin:/bin", "PYRAMID_CLICKHOUSE_ADDR=" + st.ch.addr(), "PYRAMID_CLICKHOUSE_DATABASE=e2e_snapshot_datadir"}
	out = runBackfill(t, cmd)
	if summaryField(t, out, "metadata") != "0" || summaryField(t, out, "metadata_failures") != "0" {
		t.Errorf("a backfill of Prometheus 2.42's data directory: want no metadata and no failure reading its WAL:\n%s", out)
	}
}
