package e2e

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadMatchesPrometheus checks remote read the way users meet it: through PromQL.
// Prometheus A scrapes the exporter and remote-writes to pyramid; once A has stopped and
// pyramid holds exactly A's samples, Prometheus B, with no data of its own, reads
// everything from pyramid through remote read. The same PromQL queries, instant and range,
// and the same series lookups must then give identical answers on A and B: the same series,
// timestamps and float values, down to the last bit.
//
// Both servers evaluate series in the same order, which makes even float aggregations
// (sum, avg) comparable bit for bit: Prometheus 2.42's fanout always merges the local TSDB
// with the remote storage, so the engine's selects are label-sorted on A (its TSDB sorts)
// and on B (the remote-read client sorts what pyramid returns).
func TestReadMatchesPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of over a minute; skipped in -short mode")
	}
	const db = "e2e_read"
	st := startScrapeStack(t, db, writeReadSeries)
	logf := func(format string, args ...any) { t.Helper(); st.logf(t, format, args...) }
	work, ch, pyr, exp, promA := st.work, st.ch, st.pyr, st.exp, st.prom
	// Scraping starts only once target discovery has passed on its first update, which
	// it does at most every 5s, so the timeline starts at the exporter's first scrape.
	waitFor(t, "Prometheus A to scrape the exporter", time.Minute, func() error {
		if err := allAlive(pyr.process, promA.process); err != nil {
			return stopWaiting(err)
		}
		exp.mu.Lock()
		n := exp.scrapes
		exp.mu.Unlock()
		if n == 0 {
			return errors.New("no scrape yet")
		}
		return nil
	})
	ready := time.Now()

	// The timeline gives the queries something to find: a series that appears late, one
	// that disappears (a stale marker) and comes back, and counters that reset. The pauses
	// are measured from the events themselves, so a slow machine stretches the timeline
	// but never squeezes the gaps that the chosen query times rely on.
	sleepUntil(t, ready.Add(12*time.Second), pyr.process, promA.process)
	exp.setLate(true)
	lateAt := time.Now()
	sleepUntil(t, lateAt.Add(8*time.Second), pyr.process, promA.process)
	exp.setFlapping(false)
	goneAt := time.Now()
	sleepUntil(t, goneAt.Add(12*time.Second), pyr.process, promA.process)
	exp.setFlapping(true)
	backAt := time.Now()
	sleepUntil(t, backAt.Add(18*time.Second), pyr.process, promA.process)
	stopAt := time.Now()
	// Prometheus answers /api/v1/metadata from its live targets only, so A's answer is
	// taken while it still scrapes, for the Grafana replay.
	metaA, err := apiDo(context.Background(), http.MethodGet, promA.url, "/api/v1/metadata", url.Values{"limit": {"40000"}})
	if err != nil {
		t.Fatalf("read A's metadata: %v", err)
	}
	promA.dropTargets(t)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	farFuture := time.Now().Add(time.Hour).UnixMilli()

	// About two scrape intervals after a target's scrape loop stops, Prometheus writes a
	// stale marker to each of its series. Those markers are part of what B must read back,
	// so wait for them: then every series in A ends with one, and A appends nothing more.
	// The targets go within seconds of the reload: discovery and the scrape manager each
	// pass on updates at most every 5s.
	var want seriesSet
	waitFor(t, "Prometheus A to write the stale markers of its removed targets", 90*time.Second, func() error {
		if err := allAlive(pyr.process, promA.process); err != nil {
			return stopWaiting(err)
		}
		if ok, err := sumMetric(promA.url+"/metrics", "prometheus_config_last_reload_successful", nil); err != nil {
			return err
		} else if ok != 1 {
			return stopWaiting(errors.New("reload failed; see the Prometheus log"))
		}
		// While a job still has targets, a scrape loop restarted by the reload may scrape
		// again after the old loop's stale markers; with none left, the markers that end
		// every series are the last samples A appends.
		pools, err := scrapeMetric(promA.url+"/metrics", "prometheus_target_scrape_pool_targets")
		if err != nil {
			return err
		}
		if len(pools) != 3 {
			return fmt.Errorf("found %d scrape pools, want 3", len(pools))
		}
		for _, p := range pools {
			if p.value != 0 {
				return fmt.Errorf("scrape job %s still has %v targets", p.labels["scrape_job"], p.value)
			}
		}
		s, err := readPrometheus(ctx, promA.url, 0, farFuture)
		if err != nil {
			return err
		}
		for k, ss := range s {
			if last := ss[len(ss)-1]; last.bits != staleNaNBits {
				return fmt.Errorf("%s ends with %#016x at %d, not yet with a stale marker", k, last.bits, last.ts)
			}
		}
		want = s
		return nil
	})
	// Now the jobs can go too, the way the write test stops scraping, which keeps the
	// remote-write queue running.
	promA.stopScraping(t)
	logf("Prometheus A stopped scraping after %.1fs", stopAt.Sub(ready).Seconds())
	lastStale, lastReal := int64(0), int64(0)
	for _, ss := range want {
		lastStale = max(lastStale, ss[len(ss)-1].ts)
		for _, s := range ss {
			if s.bits != staleNaNBits {
				lastReal = max(lastReal, s.ts)
			}
		}
	}
	logf("Prometheus A holds %d series, %d samples; its last stale markers are %.1fs after the stop",
		len(want), want.samplesIn(), float64(lastStale-stopAt.UnixMilli())/1000)
	scrapes := want.findSeries("__name__", "e2e_scrapes_total")
	if len(scrapes) != 1 {
		t.Fatalf("Prometheus A has %d e2e_scrapes_total series, want 1", len(scrapes))
	}
	var firstScrape int64
	for _, ss := range scrapes {
		firstScrape = ss[0].ts
	}

	// Wait until pyramid's tables hold exactly what A holds, from the very first sample:
	// PromQL's lookback and range windows reach back to A's start, so a sample missing
	// anywhere would show up as a difference that remote read did not cause. A failure
	// here is the write path's.
	var writeDiff string
	err = poll(90*time.Second, func() error {
		if err := allAlive(pyr.process, promA.process); err != nil {
			return stopWaiting(err)
		}
		if err := remoteWriteDone(promA.url, lastStale/1000); err != nil {
			return err
		}
		got, _, err := readPyramid(ctx, ch.addr(), db, 0, farFuture)
		if err != nil {
			return err
		}
		if writeDiff = diffSeriesSets(want, got, ready.UnixMilli()); writeDiff != "" {
			return errors.New("pyramid's tables do not hold what Prometheus A holds")
		}
		return nil
	})
	if err != nil {
		t.Logf("Prometheus A's remote-write metrics:\n%s", grepMetrics(promA.url, "prometheus_remote_storage_"))
		t.Fatalf("wait for pyramid to store everything A holds (a write-path problem, not a read one): %v\n%s", err, writeDiff)
	}
	logf("pyramid's tables hold exactly what Prometheus A holds")

	// The raw answer first: pyramid's remote read of every series must be A's own, bit for
	// bit, stale markers included. Both answer in SAMPLES, which readPrometheus asks for.
	got, err := readPrometheus(ctx, pyr.url, 0, farFuture)
	if err != nil {
		t.Errorf("remote-read every series from pyramid: %v", err)
	} else if d := diffSeriesSets(want, got, ready.UnixMilli()); d != "" {
		t.Errorf("pyramid's remote read of every series differs from Prometheus A's:\n%s", d)
	} else {
		logf("pyramid's remote read of every series is A's, bit for bit")
	}

	promB := startRemoteReader(t, st.prometheusBin, work, pyr.url)
	logf("Prometheus B ready on %s, reading from pyramid", promB.url)

	// pyramid's own API answers with Prometheus 3's engine, whose windows are left-open
	// (see apiDifferences). A's scrapes all land on the same millisecond of the second, so
	// instants taken from them would put samples on window edges; every instant moves to
	// a millisecond that holds no sample, except the edge instant, which puts an
	// e2e_scrapes_total sample exactly 10s before it on purpose.
	residue, err := edgeFreeResidue(want)
	if err != nil {
		t.Fatalf("choose the evaluation instants: %v", err)
	}
	var edgeSample int64
	for _, ss := range scrapes {
		edgeSample = ss[len(ss)/2].ts
	}
	at := func(ms int64) int64 { return withResidue(ms, residue) }
	tl := readTimeline{
		start:      at(firstScrape + 3000),
		end:        at(stopAt.Add(-1500 * time.Millisecond).UnixMilli()),
		late:       at(lateAt.Add(4 * time.Second).UnixMilli()),
		gap:        at(goneAt.Add(backAt.Sub(goneAt) / 2).UnixMilli()),
		beforeLate: at(lateAt.Add(-3 * time.Second).UnixMilli()),
		lastReal:   lastReal,
		afterStop:  at(lastStale + 2000),
		edge:       edgeSample + 10_000,
	}
	logf("instants fall on millisecond %d of the second, which holds no sample; the edge instant is %s", residue, promTime(tl.edge))
	// Subqueries evaluate on whole seconds; a sample there would sit on an inner window's
	// edge whatever the instants, so pyramid's answers to them are compared only when no
	// sample lies on a whole second.
	subqueriesComparable := subqueryEdgeFree(want)
	if !subqueriesComparable {
		logf("a sample lies on a whole second: subqueries are compared between A and B only")
	}
	// apiURL is pyramid's own Prometheus query API, whose reference is ref3: the same
	// Prometheus 3 engine over A's own TSDB.
	apiURL := pyr.url
	ref3, err := newEngine3(promA.url)
	if err != nil {
		t.Fatal(err)
	}
	engineDiffs := 0
	queries := readQueries(tl)
	var (
		table       strings.Builder
		compared    int
		differences int
		apiCompared int
		apiSkipped  int
	)
	fmt.Fprintf(&table, "%-84s %5s %8s %8s  %-6s %-6s %s\n", "query", "modes", "series", "points", "B", "API", "3.x engine vs 2.42")
	for _, q := range queries {
		series, points, status, apiStatus, engines := 0, 0, "same", "same", "same"
		diff, known := apiDifferences[q.expr]
		for _, mode := range q.modes {
			a, err := runQuery(ctx, promA.url, q.expr, mode)
			if err != nil {
				t.Errorf("query %s (%s) on A: %v", q.expr, mode.name, err)
				status = "ERROR"
				continue
			}
			b, err := runQuery(ctx, promB.url, q.expr, mode)
			if err != nil {
				t.Errorf("query %s (%s) on B: %v", q.expr, mode.name, err)
				status = "ERROR"
				continue
			}
			compared++
			series += len(a.series)
			points += a.points()
			switch {
			case q.wantEmpty && len(a.series) > 0:
				t.Errorf("query %s (%s): A answers %d series, want none; the test's timeline is off", q.expr, mode.name, len(a.series))
				status = "ERROR"
			case !q.wantEmpty && a.points() == 0:
				// An empty answer on both sides would compare equal and prove nothing.
				t.Errorf("query %s (%s): A answers nothing, so the comparison would pass vacuously", q.expr, mode.name)
				status = "ERROR"
			}
			if d := diffResults(a, b); d != "" {
				differences++
				status = "DIFF"
				t.Errorf("query %s (%s, %s): A (Prometheus TSDB) and B (remote read from pyramid) differ; A has %d series and %d points, B %d and %d:\n%s",
					q.expr, mode.name, mode.describe(), len(a.series), a.points(), len(b.series), b.points(), d)
			}

			// The third answer: pyramid's own API, which must be ref3's, bit for bit. Where
			// ref3 differs from A, the engines differ (Prometheus 3 against 2.42); the
			// expressions of apiDifferences say why, and A's answer to their 3.x spelling
			// must be ref3's.
			if !subqueriesComparable && isSubquery.MatchString(q.expr) {
				apiSkipped++
				apiStatus = "skip"
				continue
			}
			r3, err := ref3.run(ctx, q.expr, mode)
			if err != nil {
				t.Errorf("query %s (%s) on the Prometheus 3 engine over A: %v", q.expr, mode.name, err)
				apiStatus = "ERROR"
				continue
			}
			if diffResults(a, r3) != "" {
				engines = "differ"
				engineDiffs++
			}
			if known {
				onA, err := runQuery(ctx, promA.url, diff.onA, mode)
				if err != nil {
					t.Errorf("query %s (%s) on A: %v", diff.onA, mode.name, err)
					apiStatus = "ERROR"
					continue
				}
				if d := diffResults(onA, r3); d != "" {
					t.Errorf("query %s (%s): A's answer to %s is not Prometheus 3's, so %q does not explain the difference:\n%s",
						q.expr, mode.name, diff.onA, diff.reason, d)
				}
				if diff.differs && diffResults(a, r3) == "" {
					t.Errorf("query %s (%s): Prometheus 3 answers as A, so the difference %q does not show; the test's timeline is off",
						q.expr, mode.name, diff.reason)
				}
			}
			p, err := runQuery(ctx, apiURL, q.expr, mode)
			if err != nil {
				t.Errorf("query %s (%s) on pyramid's API: %v", q.expr, mode.name, err)
				apiStatus = "ERROR"
				continue
			}
			apiCompared++
			if d := diffResults(r3, p); d != "" {
				differences++
				apiStatus = "DIFF"
				t.Errorf("query %s (%s, %s): the Prometheus 3 engine over A and pyramid's API differ; the engine has %d series and %d points, pyramid %d and %d:\n%s",
					q.expr, mode.name, mode.describe(), len(r3.series), r3.points(), len(p.series), p.points(), d)
			}
		}
		if known {
			engines += " (" + diff.reason + ")"
		}
		label := q.expr
		if len(q.modes) == 1 {
			label += " (" + q.modes[0].name + ")"
		}
		fmt.Fprintf(&table, "%-84s %5d %8d %8d  %-6s %-6s %s\n", label, len(q.modes), series, points, status, apiStatus, engines)
	}
	for _, w := range readSeriesWindows(tl) {
		status, apiStatus := "same", "same"
		a, err := runSeries(ctx, promA.url, w)
		if err != nil {
			t.Errorf("series %s (%s) on A: %v", w.matches, w.name, err)
			continue
		}
		b, err := runSeries(ctx, promB.url, w)
		if err != nil {
			t.Errorf("series %s (%s) on B: %v", w.matches, w.name, err)
			continue
		}
		compared++
		if len(a) == 0 {
			t.Errorf("series %s (%s): A answers nothing, so the comparison would pass vacuously", w.matches, w.name)
			status = "ERROR"
		}
		if d := diffKeys(a, b); d != "" {
			differences++
			status = "DIFF"
			t.Errorf("series %s (%s, %s..%s): A (Prometheus TSDB) and B (remote read from pyramid) differ; A has %d series, B %d:\n%s",
				w.matches, w.name, promTime(w.start), promTime(w.end), len(a), len(b), d)
		}
		// pyramid answers series from its catalogue, which knows when each series has
		// samples only to the hour (as Prometheus's blocks know it to the chunk): every
		// series A has in the window, and none without a sample within two hours of it.
		wide := w
		wide.start, wide.end = w.start-2*3_600_000, w.end+2*3_600_000
		aWide, err := runSeries(ctx, promA.url, wide)
		if err != nil {
			t.Errorf("series %s (%s, widened) on A: %v", w.matches, w.name, err)
			continue
		}
		if p, err := runSeries(ctx, apiURL, w); err != nil {
			t.Errorf("series %s (%s) on pyramid's API: %v", w.matches, w.name, err)
			apiStatus = "ERROR"
		} else if d := outsideKeys(a, p, aWide); d != "" {
			differences++
			apiStatus = "DIFF"
			t.Errorf("series %s (%s, %s..%s): pyramid's API is not between A's answer and A's answer two hours wider; A has %d series, pyramid %d:\n%s",
				w.matches, w.name, promTime(w.start), promTime(w.end), len(a), len(p), d)
		} else {
			apiCompared++
			if len(p) > len(a) {
				apiStatus = "hour"
			}
		}
		fmt.Fprintf(&table, "%-84s %5d %8d %8s  %-6s %s\n", "series "+strings.Join(w.matches, " ")+" ("+w.name+")", 1, len(a), "-", status, apiStatus)
	}
	// Label names and values come from pyramid's API and A only: Prometheus 2.42 does not
	// ask remote read for them, so B would answer from its empty TSDB.
	for _, r := range labelRequests(firstScrape, lastStale) {
		apiStatus := "same"
		a, err := runLabelList(ctx, promA.url, r)
		if err != nil {
			t.Errorf("%s on A: %v", r, err)
			continue
		}
		if len(a) == 0 {
			t.Errorf("%s: A answers nothing, so the comparison would pass vacuously", r)
			apiStatus = "ERROR"
		}
		if p, err := runLabelList(ctx, apiURL, r); err != nil {
			t.Errorf("%s on pyramid's API: %v", r, err)
			apiStatus = "ERROR"
		} else if d := diffKeys(a, p); d != "" {
			differences++
			apiStatus = "DIFF"
			t.Errorf("%s: A (Prometheus TSDB) and pyramid's API differ; A has %d entries, pyramid %d:\n%s", r, len(a), len(p), d)
		} else {
			apiCompared++
		}
		fmt.Fprintf(&table, "%-84s %5d %8d %8s  %-6s %s\n", r.String(), 1, len(a), "-", "-", apiStatus)
	}
	t.Logf("A vs B and vs pyramid's API, query by query (series and points counted on A, over all modes; API \"3.x\": compared with A's answer to the expression's 3.x spelling, see apiDifferences):\n%s", table.String())
	logf("compared %d answers of %d queries between A and B and %d with pyramid's API (%d skipped); %d differ; Prometheus 3's engine answers %d of them otherwise than A's 2.42",
		compared, len(queries), apiCompared, apiSkipped, differences, engineDiffs)

	// B must really have read from pyramid, and without a single failed request: a
	// failed remote read becomes a warning, which runQuery already refuses, but a count of
	// the answers keeps the test honest about what it exercised.
	ok, err := sumMetric(pyr.url+"/metrics", "pyramid_http_requests_total", map[string]string{"handler": "read", "code": "200"})
	if err != nil {
		t.Fatalf("read pyramid's metrics: %v", err)
	}
	all, err := sumMetric(pyr.url+"/metrics", "pyramid_http_requests_total", map[string]string{"handler": "read"})
	if err != nil {
		t.Fatalf("read pyramid's metrics: %v", err)
	}
	if ok == 0 || all != ok {
		t.Errorf("pyramid answered %v remote reads, %v of them with 200; want all of at least one", all, ok)
	}
	logf("pyramid answered %v remote reads, %v of them with 200", all, ok)

	t.Run("grafana", func(t *testing.T) {
		replayGrafana(t, ctx, promA.url, apiURL, ref3, firstScrape, lastStale, metaA, subqueriesComparable)
	})
}

// readTimeline holds the fixed instants (unix ms) the queries are evaluated at, all taken
// from the run's events.
type readTimeline struct {
	start, end int64 // the compared window: after A's first scrapes, before it stopped
	late       int64 // e2e_late has appeared and e2e_flapping is present
	gap        int64 // e2e_flapping is gone (its stale marker is seconds old) and not yet back
	beforeLate int64 // e2e_late has not appeared yet
	lastReal   int64 // A's last scraped sample; after it come only stale markers
	afterStop  int64 // every series has its stale marker
	edge       int64 // an e2e_scrapes_total sample lies exactly 10s before it
}

// readQuery is one PromQL expression and the modes it is evaluated in. wantEmpty marks
// the queries whose answer must be empty on both servers (absent() of a present series, a
// series past its stale marker); every other one must find something on A.
type readQuery struct {
	expr      string
	modes     []queryMode
	wantEmpty bool
}

// isSubquery finds a subquery's range, such as [30s:] or [1m:5s].
var isSubquery = regexp.MustCompile(`\[[0-9a-z]+:`)

func (m queryMode) describe() string {
	if m.instant {
		return "time=" + promTime(m.time)
	}
	return fmt.Sprintf("start=%s end=%s step=%gs", promTime(m.start), promTime(m.end), float64(m.step)/1000)
}

// readQueries is the suite. Unless a query says otherwise, it runs as instant queries at
// three times and as range queries with steps of 5s, 10s (not aligned to the 5s ones) and
// 1m (reaching from before A's first sample to after its last). All instants but the
// edge one share a millisecond of the second that holds no sample (see edgeFreeResidue).
func readQueries(tl readTimeline) []readQuery {
	atLate := instantAt("instant, e2e_late there", tl.late)
	atGap := instantAt("instant, e2e_flapping gone", tl.gap)
	atEnd := instantAt("instant at the window's end", tl.end)
	r5 := rangeOver("range 5s", tl.start, tl.end, 5*time.Second)
	r10 := rangeOver("range 10s", tl.start+2000, tl.end, 10*time.Second)
	r1m := rangeOver("range 1m", tl.end-3*60_000, tl.end+60_000, time.Minute)
	acrossStop := rangeOver("range 1s across the stop", tl.end-10_000, tl.afterStop+10_000, time.Second)
	afterStop := instantAt("instant after the stale markers", tl.afterStop)
	atEdge := instantAt("instant with a sample on the 10s window's edge", tl.edge)
	std := []queryMode{atLate, atGap, atEnd, r5, r10, r1m}

	var qs []readQuery
	add := func(modes []queryMode, exprs ...string) {
		for _, e := range exprs {
			qs = append(qs, readQuery{expr: e, modes: modes})
		}
	}
	addEmpty := func(modes []queryMode, exprs ...string) {
		for _, e := range exprs {
			qs = append(qs, readQuery{expr: e, modes: modes, wantEmpty: true})
		}
	}

	// Matchers of every type, alone and combined.
	add(std,
		`e2e_requests_total`,
		`e2e_requests_total{code="200"}`,
		`e2e_requests_total{code!="200"}`,
		`e2e_requests_total{method=~"GET|POST"}`,
		`e2e_requests_total{method!~"G.*"}`,
		`e2e_requests_total{code="200", method!="POST"}`,
		`e2e_requests_total{code=~"2.*", method=~".*T"}`,
		`{job="exporter", __name__=~"e2e_re.*"}`,
		`up{job=~"exp.*|prom.*"}`,
		`{job="exporter"}`,
	)
	// Regexes are anchored at both ends: unanchored, each of these would select more.
	add(std,
		`{__name__=~"e2e_requests|e2e_random"}`,
		`{__name__=~"requests_total|e2e_late"}`,
		`e2e_requests_total{code=~"20|500"}`,
		`e2e_requests_total{code!~"20"}`,
	)
	// An alternation with an empty branch matches the empty string, so it also selects the
	// series without the label.
	add(std,
		`e2e_odd_labels{A_first=~"a|"}`,
		`e2e_odd_labels{A_first=~"b|"}`,
		`e2e_odd_labels{case=~"quote|"}`,
		`{__name__=~"e2e_(requests|resets)_total", code=~"2..|"}`,
	)
	// Case-insensitive regexes, as a leading flag and as a group.
	add(std,
		`e2e_requests_total{method=~"(?i)get"}`,
		`{__name__=~"(?i)E2E_RANDOM"}`,
		`e2e_requests_total{method!~"(?i)post"}`,
		`e2e_requests_total{method=~"(?i:G)et"}`,
		`e2e_odd_labels{case=~"(?i)QUOTE|Utf8"}`,
	)
	// Absent labels read as "": "" and ".*" select series without the label, != "" and
	// ".+" only those with it.
	add(std,
		`e2e_odd_labels{A_first=""}`,
		`e2e_odd_labels{A_first!=""}`,
		`e2e_odd_labels{A_first!~""}`,
		`e2e_odd_labels{nosuch=""}`,
		`e2e_odd_labels{nosuch=~".*"}`,
		`e2e_odd_labels{nosuch!~".+"}`,
		`e2e_odd_labels{nosuch!="x"}`,
		`e2e_odd_labels{blank=""}`,
		`{__name__="e2e_odd_labels", zz_last!=""}`,
	)
	// Label values with quotes, backslashes, UTF-8, SQL and a newline, matched exactly and
	// by regexes whose dot must take a whole UTF-8 character.
	for _, name := range sortedNames(oddLabelValues) {
		add(std, `e2e_odd_labels{v=`+strconv.Quote(oddLabelValues[name])+`}`)
	}
	add(std,
		`e2e_odd_labels{v=~"z.rich"}`,
		`e2e_odd_labels{case="cjk", v=~".."}`,
		`e2e_odd_labels{v=~".*\\\\"}`,
		`e2e_odd_labels{v=~".*\"hi\".*|'.*"}`,
		`e2e_odd_labels{v=~"\\Q'); DROP\\E.*"}`,
		`e2e_odd_labels{v=~"a=b,c\\{d\\}e'f"}`,
		`e2e_odd_labels{v=~"🙂.*|東京"}`,
		`e2e_odd_labels{case!="newline", v!~".*[a-z].*"}`,
	)
	// Whether a regex's dot matches a newline: not in Prometheus 2, which compiles
	// ^(?:re)$, but in Prometheus 3, which compiles ^(?s:re)$. B is a Prometheus 2.42
	// client, so pyramid must answer as 2.42's own TSDB does.
	add(std,
		`e2e_odd_labels{v=~".+"}`,
		`e2e_odd_labels{v=~".*"}`,
		`e2e_odd_labels{v!~".*"}`,
		`e2e_odd_labels{v=~"line1.line2|zürich"}`,
		`e2e_odd_labels{v=~"(?s)line1.line2|zürich"}`,
		`e2e_odd_labels{v=~"line1\nline2"}`,
	)

	// Counters, with and without resets.
	add(std,
		`rate(e2e_requests_total[1m])`,
		`rate(e2e_requests_total[5m])`,
		`increase(e2e_requests_total[30s])`,
		`irate(e2e_requests_total[10s])`,
		`rate(e2e_resets_total[30s])`,
		`increase(e2e_resets_total[1m])`,
		`irate(e2e_resets_total[5s])`,
		`resets(e2e_resets_total[2m])`,
		`changes(e2e_resets_total[1m])`,
		`rate(e2e_scrapes_total[5m])`,
	)
	// Functions over time.
	add(std,
		`avg_over_time(e2e_random[30s])`,
		`min_over_time(e2e_random[30s])`,
		`max_over_time(e2e_random[1m])`,
		`sum_over_time(e2e_requests_total[20s])`,
		`count_over_time(e2e_flapping[1m])`,
		`count_over_time(e2e_odd_labels[10s])`,
		`last_over_time(e2e_flapping[1m])`,
		`quantile_over_time(0.9, e2e_random[1m])`,
		`quantile_over_time(0.25, e2e_resets_total[30s])`,
		`stddev_over_time(e2e_random{shard=~"a|b|c"}[30s])`,
		`max_over_time(e2e_special[30s])`,
		`deriv(e2e_random{shard="a"}[30s])`,
	)
	// Aggregations and binary operations.
	add(std,
		`sum by (code) (rate(e2e_requests_total[1m]))`,
		`sum without (method) (e2e_requests_total)`,
		`avg without (shard) (e2e_random)`,
		`avg by (handler) (rate(e2e_latency_seconds_sum[30s]))`,
		`topk(2, e2e_random)`,
		`bottomk(2, rate(e2e_requests_total[30s]))`,
		`count(e2e_odd_labels)`,
		`count by (__name__) ({__name__=~"e2e_.+"})`,
		`count by (job) ({__name__=~".+"})`,
		`max by (job) (scrape_samples_scraped)`,
		`quantile(0.5, e2e_random{shard=~"a|b|c"})`,
		`count_values("value", e2e_resets_total)`,
		`sum(e2e_special)`,
		`rate(e2e_latency_seconds_sum[30s]) / rate(e2e_latency_seconds_count[30s])`,
		`e2e_requests_total / on() group_left sum(e2e_requests_total)`,
	)
	// Offsets, @ and subqueries move or widen the window a selector reads.
	add(std,
		`e2e_requests_total offset 10s`,
		`rate(e2e_requests_total[30s] offset 5s)`,
		fmt.Sprintf(`e2e_scrapes_total @ %s`, promTime(tl.late)),
		fmt.Sprintf(`sum_over_time(e2e_random[10s] @ %s)`, promTime(tl.gap)),
		`min_over_time(irate(e2e_requests_total[5s])[1m:5s])`,
		`avg_over_time(e2e_random[20s:3s])`,
		`max_over_time(deriv(e2e_scrapes_total[10s])[30s:])`,
		`rate(e2e_resets_total[20s:2s])`,
	)
	// start() and end() are the range's ends, which for the 1m mode lie before A's first
	// sample and after its last.
	add([]queryMode{atLate, atGap, atEnd, r5, r10}, `e2e_scrapes_total @ end()`, `rate(e2e_scrapes_total[10s] @ start())`)
	// The subquery evaluates at multiples of 30s, the latest of which may come before A's
	// second sample at the early instants.
	add([]queryMode{atEnd, r5, r10, r1m}, `max_over_time(rate(e2e_requests_total[1m])[5m:30s])`)
	// Classic histograms: _bucket series with le.
	add(std,
		`histogram_quantile(0.9, sum by (le) (rate(e2e_latency_seconds_bucket[30s])))`,
		`histogram_quantile(0.5, rate(e2e_latency_seconds_bucket{handler="api"}[1m]))`,
		`histogram_quantile(0.99, sum by (le, handler) (increase(e2e_latency_seconds_bucket[1m])))`,
	)
	// Series that come, go and come back, special floats, Prometheus's own series.
	add(std,
		`e2e_late`,
		`timestamp(e2e_late)`,
		`e2e_special`,
		`up`,
		`scrape_duration_seconds`,
		`{__name__=~"prometheus_tsdb_head_.*"}`,
		`absent(e2e_nonexistent{job="x"})`,
		`absent_over_time(e2e_nonexistent[1m])`,
	)
	add([]queryMode{atLate, atEnd, r5, r10, r1m}, `e2e_flapping`, `timestamp(e2e_flapping)`)
	add([]queryMode{atGap, r5, r10}, `absent(e2e_flapping)`)
	addEmpty([]queryMode{atGap}, `e2e_flapping`)
	addEmpty([]queryMode{atLate, atGap, atEnd, r5, r10}, `absent(e2e_scrapes_total)`, `absent(e2e_random{shard="a"})`)
	// The stale markers A wrote when it stopped scraping end every series on B too.
	add([]queryMode{acrossStop}, `e2e_scrapes_total`, `up`, `e2e_requests_total`)
	add([]queryMode{afterStop}, `absent(e2e_scrapes_total)`, `count_over_time(e2e_scrapes_total[1m])`, `last_over_time(up[1m])`)
	addEmpty([]queryMode{afterStop}, `e2e_scrapes_total`, `{job="exporter"}`, `up`)

	// A sample exactly on a range window's left edge: in it for Prometheus 2.42, out of
	// it for Prometheus 3 (see apiDifferences).
	add([]queryMode{atEdge}, `count_over_time(e2e_scrapes_total[10s])`, `sum_over_time(e2e_scrapes_total[10s])`)

	// More selectors.
	add(std,
		`e2e_requests_total{code=~"[45].."}`,
		`e2e_requests_total{code!="200", method!~"(?i)post"}`,
		`e2e_latency_seconds_bucket{le="+Inf"}`,
		`e2e_latency_seconds_bucket{handler="ui", le=~"0\\.[0-9]+"}`,
		`{__name__=~"e2e_latency_seconds_(sum|count)", handler!="api"}`,
	)
	// More over-time and counter functions.
	add(std,
		`deriv(e2e_scrapes_total[20s])`,
		`predict_linear(e2e_scrapes_total[30s], 60)`,
		`predict_linear(e2e_random{shard="b"}[1m], 10)`,
		`delta(e2e_random{shard="c"}[30s])`,
		`idelta(e2e_requests_total[10s])`,
		`increase(e2e_latency_seconds_count[1m])`,
		`rate(e2e_requests_total{code="500"}[20s])`,
		`irate(e2e_latency_seconds_sum[30s])`,
		`stdvar_over_time(e2e_requests_total[30s])`,
		`present_over_time(e2e_flapping[10s])`,
		`last_over_time(e2e_random[5s])`,
		`min_over_time(e2e_special[10s])`,
		`sum_over_time(e2e_random{shard=~"tiny|huge"}[30s])`,
		`quantile_over_time(0.5, e2e_special[30s])`,
		`changes(e2e_flapping[1m])`,
		`resets(e2e_requests_total[1m])`,
	)
	// More classic histograms.
	add(std,
		`histogram_quantile(0.5, sum by (le) (rate(e2e_latency_seconds_bucket[1m])))`,
		`histogram_quantile(0.75, e2e_latency_seconds_bucket)`,
		`histogram_quantile(1, sum without (handler) (rate(e2e_latency_seconds_bucket[30s])))`,
		`histogram_quantile(0, sum by (le, handler) (e2e_latency_seconds_bucket))`,
	)
	// More aggregations.
	add(std,
		`sum by (handler) (e2e_latency_seconds_count)`,
		`min by (kind) (e2e_special)`,
		`max without (code) (rate(e2e_requests_total[1m]))`,
		`count without (method) (e2e_requests_total)`,
		`stddev by (code) (e2e_requests_total)`,
		`stdvar(e2e_random{shard=~"a|b|c"})`,
		`topk by (code) (1, e2e_requests_total)`,
		`bottomk without (shard) (1, e2e_random)`,
		`quantile by (kind) (0.9, e2e_resets_total)`,
		`count_values by (code) ("v", e2e_requests_total{method="GET"})`,
		`group by (job) (up)`,
		`group(e2e_odd_labels)`,
		`avg(e2e_requests_total)`,
		`sum(rate(e2e_requests_total[1m]))`,
	)
	// More binary operators: matching, comparison with and without bool, set operators.
	add(std,
		`e2e_requests_total / on(code) group_left sum by (code) (e2e_requests_total)`,
		`sum by (code) (e2e_requests_total) / on(code) group_right e2e_requests_total`,
		`e2e_latency_seconds_bucket / on(handler) group_left e2e_latency_seconds_count`,
		`e2e_requests_total > 100`,
		`e2e_requests_total > bool 100`,
		`e2e_random < bool 500000`,
		`e2e_requests_total == bool 0`,
		`e2e_scrapes_total >= e2e_scrapes_total offset 5s`,
		`2 * e2e_requests_total + 1`,
		`e2e_random % 7`,
		`e2e_requests_total ^ 0.5`,
		`-e2e_random`,
		`e2e_requests_total and e2e_requests_total{code="200"}`,
		`e2e_requests_total or e2e_resets_total`,
		`e2e_requests_total unless e2e_requests_total{method="GET"}`,
		`e2e_requests_total and on(code) e2e_requests_total{method="get"}`,
		`e2e_late or e2e_flapping`,
	)
	// Functions of values, labels and time.
	add(std,
		`abs(e2e_random - 500000)`,
		`clamp(e2e_random, 1e5, 9e5)`,
		`clamp_min(e2e_requests_total, 50)`,
		`clamp_max(e2e_requests_total, 50)`,
		`ceil(e2e_random)`,
		`floor(e2e_random)`,
		`round(e2e_random, 1000)`,
		`sqrt(e2e_random)`,
		`exp(e2e_resets_total)`,
		`ln(e2e_random)`,
		`log2(e2e_requests_total)`,
		`log10(e2e_random)`,
		`sin(e2e_random)`,
		`atan(e2e_random)`,
		`asin(e2e_random{shard=~"a|b|c"} / 1e6)`,
		`deg(e2e_random)`,
		`sgn(e2e_random - 500000)`,
		`pi()`,
		`time()`,
		`vector(1)`,
		`vector(time())`,
		`scalar(sum(e2e_scrapes_total))`,
		`scalar(e2e_requests_total)`,
		`timestamp(e2e_scrapes_total)`,
		`sort(e2e_random)`,
		`sort_desc(e2e_requests_total)`,
		`label_replace(e2e_requests_total, "status", "${1}xx", "code", "(.).*")`,
		`label_replace(e2e_random, "shard", "", "shard", "a")`,
		`label_join(e2e_requests_total, "cm", "-", "code", "method")`,
		`hour(timestamp(e2e_scrapes_total))`,
		`day_of_week()`,
		`days_in_month(vector(time()))`,
	)
	// More subqueries and offsets.
	add(std,
		`max_over_time(e2e_random[30s:5s])`,
		`sum_over_time(rate(e2e_requests_total[10s])[30s:5s] offset 5s)`,
		`sum(e2e_requests_total offset 10s)`,
		fmt.Sprintf(`e2e_requests_total @ %s offset 5s`, promTime(tl.late)),
	)
	// The late instant lies about 16s after A's first scrape, so a 10s-step subquery may
	// find only one whole ten seconds with a sample there and rate answers nothing.
	add([]queryMode{atGap, atEnd, r5, r10, r1m}, `rate(e2e_requests_total[1m:10s])`)
	add([]queryMode{atGap}, `absent_over_time(e2e_flapping[3s])`)
	add([]queryMode{atLate, atGap, atEnd, r5, r10}, `max_over_time(e2e_random[10s] @ end())`)
	return qs
}

// readSeriesWindows are the /api/v1/series lookups. None lies inside e2e_flapping's gap:
// there A's TSDB, which judges by chunks, still lists the series (the chunk spans the
// gap), while a store that judges by samples does not; that is a quirk of Prometheus's
// index, not a fact about the data.
func readSeriesWindows(tl readTimeline) []seriesWindow {
	full := func(matches ...string) seriesWindow {
		return seriesWindow{name: "window", matches: matches, start: tl.start, end: tl.end}
	}
	return []seriesWindow{
		full(`e2e_odd_labels`),
		full(`{__name__=~"e2e_.+"}`),
		full(`e2e_late`, `e2e_flapping`),
		full(`{job="exporter", __name__!~"e2e_(odd|random).*"}`),
		full(`{__name__=~".+"}`),
		full(`up`, `{__name__=~"e2e_requests|e2e_random"}`),
		{name: "before e2e_late", matches: []string{`{__name__=~"e2e_.+"}`}, start: tl.start, end: tl.beforeLate},
		// Only stale markers lie in this window: every series scraped at the stop has one,
		// the series that ended earlier have none.
		{name: "only stale markers", matches: []string{`{__name__=~".+"}`}, start: tl.lastReal + 1, end: tl.afterStop},
	}
}

// sortedNames returns a map's keys in order.
func sortedNames(m map[string]string) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// writeReadSeries adds the exporter's series for the read test, all functions of the
// scrape number n so that nothing depends on timing: counters that only grow, by integer
// and by inexact fractional steps; counters that reset, to zero and to a lower non-zero
// value; and a classic histogram per handler whose distribution drifts over time, so that
// quantiles change from step to step.
func writeReadSeries(b *strings.Builder, n int) {
	b.WriteString("# HELP e2e_requests_total Requests by code and method.\n# TYPE e2e_requests_total counter\n")
	fmt.Fprintf(b, "e2e_requests_total{code=\"200\",method=\"GET\"} %d\n", 7*n)
	fmt.Fprintf(b, "e2e_requests_total{code=\"200\",method=\"POST\"} %s\n", formatFloat(1.1*float64(n)))
	fmt.Fprintf(b, "e2e_requests_total{code=\"404\",method=\"get\"} %d\n", 3*n)
	fmt.Fprintf(b, "e2e_requests_total{code=\"500\",method=\"GET\"} %s\n", formatFloat(float64(n*n)/4))

	b.WriteString("# HELP e2e_resets_total Counters that restart.\n# TYPE e2e_resets_total counter\n")
	fmt.Fprintf(b, "e2e_resets_total{kind=\"sawtooth\"} %s\n", formatFloat(2.5*float64(n%17)))
	fmt.Fprintf(b, "e2e_resets_total{kind=\"partial\"} %d\n", 5*(n%11)+1)

	b.WriteString("# HELP e2e_latency_seconds Latency.\n# TYPE e2e_latency_seconds histogram\n")
	bounds := []float64{0.05, 0.1, 0.25, 1, 2.5, math.Inf(1)}
	for h, handler := range []string{"api", "ui"} {
		cumulative, sum := 0, 0.0
		for i, le := range bounds {
			// Each bucket's own count grows linearly plus quadratically with n; the
			// quadratic part weighs the low buckets more, so latency falls over time.
			own := n*(i+1+h)/2 + n*n*(len(bounds)-i)/(40*(h+1))
			cumulative += own
			mid := 5.0
			if !math.IsInf(le, 1) {
				mid = le * 0.75
			}
			sum += float64(own) * mid
			fmt.Fprintf(b, "e2e_latency_seconds_bucket{handler=%q,le=%q} %d\n", handler, formatFloat(le), cumulative)
		}
		fmt.Fprintf(b, "e2e_latency_seconds_sum{handler=%q} %s\n", handler, formatFloat(sum))
		fmt.Fprintf(b, "e2e_latency_seconds_count{handler=%q} %d\n", handler, cumulative)
	}
}

// startRemoteReader runs Prometheus B: an empty TSDB of its own, no scrape jobs, and
// pyramid as its only remote-read endpoint. read_recent makes B read remotely even for
// windows its local storage claims to cover, which for a server started a moment ago is
// every window the test asks about. The evaluation interval is A's, because it is the
// default step of subqueries like x[30s:].
func startRemoteReader(t *testing.T, bin, work, pyramidURL string) *prometheusServer {
	t.Helper()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s

scrape_configs: []

remote_read:
  - url: %q
    read_recent: true
`, pyramidURL+"/api/v1/read")
	return startQueryPrometheus(t, bin, work, "prometheus-b", filepath.Join(work, "prometheus-b"), cfg)
}

// dropTargets reloads Prometheus (SIGHUP) with its scrape jobs kept but their targets
// gone, and returns without waiting. Only a target removed from a job that stays gets the
// stale markers Prometheus writes when scraping ends: removing the whole job, as
// stopScraping does, cancels the job's context, and 2.42 then writes none. The
// remote_write section is prometheusConfig's own, byte for byte, so that the reload keeps
// the running queue.
func (s *prometheusServer) dropTargets(t *testing.T) {
	t.Helper()
	const noJobs = "scrape_configs: []\n"
	cfg := prometheusConfig(s.targets, false)
	if !strings.Contains(cfg, noJobs) {
		t.Fatalf("Prometheus config without scrape jobs has no %q line:\n%s", noJobs, cfg)
	}
	cfg = strings.Replace(cfg, noJobs, "scrape_configs:\n  - job_name: prometheus\n  - job_name: pyramid\n  - job_name: exporter\n", 1)
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatalf("write Prometheus config: %v", err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("signal Prometheus to reload: %v", err)
	}
}

// outsideKeys returns "" when every key of inner is in got and every key of got is in
// outer, and otherwise the keys that break it.
func outsideKeys(inner, got, outer []string) string {
	var b strings.Builder
	for _, k := range inner {
		if !slices.Contains(got, k) {
			fmt.Fprintf(&b, "  missing: %s\n", k)
		}
	}
	for _, k := range got {
		if !slices.Contains(outer, k) {
			fmt.Fprintf(&b, "  no sample within two hours: %s\n", k)
		}
	}
	return b.String()
}
