package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/teststorage"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// fixture is the same data in pyramid's tables and in a Prometheus TSDB, the reference.
type fixture struct {
	st    *store.Store
	db    string
	tsdb  *teststorage.TestStorage
	start int64 // the first sample, ms
	end   int64 // the last sample, ms
}

// fixtureSeries are the series of the fixture: a counter family with resets, a gauge, a
// classic histogram, odd label values, and a series that starts late and one that goes
// stale in the middle.
func fixtureSeries() []labels.Labels {
	var out []labels.Labels
	for _, code := range []string{"200", "500"} {
		for _, inst := range []string{"a:1", "b:2"} {
			out = append(out, labels.FromStrings("__name__", "http_requests_total", "job", "api", "instance", inst, "code", code))
		}
	}
	for _, le := range []string{"0.1", "0.5", "1", "+Inf"} {
		out = append(out, labels.FromStrings("__name__", "latency_seconds_bucket", "job", "api", "le", le))
	}
	out = append(out,
		labels.FromStrings("__name__", "temperature", "job", "sensors", "room", "kitchen"),
		labels.FromStrings("__name__", "temperature", "job", "sensors", "room", "hall", "floor", "1"),
		labels.FromStrings("__name__", "odd", "job", "odd", "v", "line1\nline2"),
		labels.FromStrings("__name__", "odd", "job", "odd", "v", `q"uo'te\`),
		labels.FromStrings("__name__", "odd", "job", "odd", "v", "zürich"),
		labels.FromStrings("__name__", "late_series", "job", "late"),
		labels.FromStrings("__name__", "flapping", "job", "api"),
	)
	return out
}

// sampleAt is series i's value at step k (15 s apart), and whether it has one.
func sampleAt(lset labels.Labels, i, k int) (float64, bool) {
	name := lset.Get("__name__")
	switch {
	case name == "late_series" && k < 300:
		return 0, false
	case name == "flapping" && k >= 200 && k < 260:
		if k == 200 {
			return math.Float64frombits(value.StaleNaN), true
		}
		return 0, false
	case strings.HasSuffix(name, "_total") || strings.HasSuffix(name, "_bucket"):
		v := float64((k%170)*(i+1)) + float64(k/170)*0.25 // Resets every 170 steps.
		return v, true
	}
	return 20 + 5*math.Sin(float64(k*(i+1))/37), true
}

const steps = 480 // Two hours at 15 s.

func newFixture(t *testing.T, cfg store.Config) *fixture {
	t.Helper()
	return newFixtureOn(t, schematest.Conn(t), cfg)
}

// newFixtureOn is newFixture over a connection of the test's own.
func newFixtureOn(t *testing.T, conn driver.Conn, cfg store.Config) *fixture {
	t.Helper()
	db := schematest.Database(t, conn, 0).Database
	cfg.Database = db
	if cfg.TierRefresh == 0 {
		cfg.TierRefresh = time.Minute
	}
	st, err := store.New(cfg, conn, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ts := teststorage.New(t)
	t.Cleanup(func() { ts.Close() })
	// Samples end a little before now, so that no window reaches past the catalogue.
	start := (time.Now().Add(-3*time.Hour).UnixMilli() / 15_000) * 15_000
	f := &fixture{st: st, db: db, tsdb: ts, start: start, end: start + (steps-1)*15_000}
	insert(t, st, ts, start)
	return f
}

func insert(t *testing.T, st *store.Store, ts *teststorage.TestStorage, start int64) {
	ctx := context.Background()
	app := ts.Appender(ctx)
	var b adapter.Batch
	for i, lset := range fixtureSeries() {
		fp, target := uint64(1000+i), uint64(1+i%3)
		first, last := int64(math.MaxInt64), int64(math.MinInt64)
		for k := range steps {
			v, ok := sampleAt(lset, i, k)
			if !ok {
				continue
			}
			tms := start + int64(k)*15_000
			if _, err := app.Append(0, lset, tms, v); err != nil {
				t.Fatal(err)
			}
			b.Targets, b.Fingerprints = append(b.Targets, target), append(b.Fingerprints, fp)
			b.Timestamps, b.Values = append(b.Timestamps, tms), append(b.Values, v)
			first, last = min(first, tms), max(last, tms)
		}
		row := store.SeriesRow{Fingerprint: fp, Target: target, MetricName: lset.Get("__name__"), FirstSeen: first, LastSeen: last}
		lset.Range(func(l labels.Label) { row.Names, row.Values = append(row.Names, l.Name), append(row.Values, l.Value) })
		b.Series = append(b.Series, row)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := st.InsertSeries(ctx, b.Series); err != nil {
		t.Fatal(err)
	}
	if err := st.InsertSamples(ctx, b.Targets, b.Fingerprints, b.Timestamps, b.Values); err != nil {
		t.Fatal(err)
	}
}

// TestPromQLMatchesTSDB evaluates PromQL with Prometheus's engine over the store and over
// Prometheus's own TSDB holding the same samples: every answer must be identical, float
// bits included. It covers what the engine asks of a storage.Querier: selections with
// hints of every kind, sorted series, series without samples in a window, stale markers.
func TestPromQLMatchesTSDB(t *testing.T) {
	f := newFixture(t, store.Config{})
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute,
		EnableAtModifier: true, EnableNegativeOffset: true, NoStepSubqueryIntervalFn: func(int64) int64 { return 60_000 }})
	exprs := []string{
		`http_requests_total`,
		`http_requests_total{code="200"}`,
		`http_requests_total{code!="200", instance=~"a.*"}`,
		`{__name__=~"http_.*|temperature", job!~"sens.+"}`,
		`{job="api"}`,
		`odd{v=~".+"}`,
		`odd{v=~"line1.line2"}`,
		`odd{v!~"z.*"}`,
		`temperature{floor=""}`,
		`rate(http_requests_total[5m])`,
		`increase(http_requests_total[1m])`,
		`irate(http_requests_total[1m])`,
		`resets(http_requests_total[30m])`,
		`sum by (code) (rate(http_requests_total[2m]))`,
		`histogram_quantile(0.9, sum by (le) (rate(latency_seconds_bucket[5m])))`,
		`avg_over_time(temperature[10m])`,
		`max_over_time(temperature[7m] offset 3m)`,
		`deriv(temperature[15m])`,
		`predict_linear(temperature[15m], 600)`,
		`flapping`,
		`count_over_time(flapping[10m])`,
		`absent(nonexistent)`,
		`absent(late_series)`,
		`late_series`,
		`max_over_time(rate(http_requests_total[1m])[10m:1m])`,
		`http_requests_total / on (instance, code) group_left sum by (instance, code) (http_requests_total)`,
	}
	mid := f.start + 250*15_000 + 7_500
	for _, expr := range exprs {
		answered := false
		for _, mode := range []struct {
			name       string
			start, end int64
			step       time.Duration
		}{
			{"instant", mid, mid, 0},
			{"range", f.start + 3_000, f.end + 60_000, 97 * time.Second},
		} {
			run := func(q storage.Queryable) (string, error) {
				var qry promql.Query
				var err error
				if mode.step == 0 {
					qry, err = engine.NewInstantQuery(context.Background(), q, nil, expr, time.UnixMilli(mode.start))
				} else {
					qry, err = engine.NewRangeQuery(context.Background(), q, nil, expr, time.UnixMilli(mode.start), time.UnixMilli(mode.end), mode.step)
				}
				if err != nil {
					return "", err
				}
				defer qry.Close()
				res := qry.Exec(context.Background())
				if res.Err != nil {
					return "", res.Err
				}
				return render(res.Value), nil
			}
			want, err := run(f.tsdb)
			if err != nil {
				t.Fatalf("%s (%s) on the TSDB: %v", expr, mode.name, err)
			}
			got, err := run(f.st.Queryable(store.Options{}))
			if err != nil {
				t.Fatalf("%s (%s) on the store: %v", expr, mode.name, err)
			}
			if got != want {
				t.Errorf("%s (%s): the store answers\n%s\nthe TSDB\n%s", expr, mode.name, got, want)
			}
			answered = answered || want != ""
		}
		if !answered {
			t.Errorf("%s answers nothing on the TSDB: the comparison proves nothing", expr)
		}
	}
}

// render prints a result with float bits, so that equal strings mean identical answers.
func render(v any) string {
	var b strings.Builder
	switch v := v.(type) {
	case promql.Vector:
		// An instant vector's order is the selection's, which Prometheus leaves unsorted.
		var lines []string
		for _, s := range v {
			lines = append(lines, fmt.Sprintf("%s @%d %x\n", s.Metric, s.T, math.Float64bits(s.F)))
		}
		slices.Sort(lines)
		b.WriteString(strings.Join(lines, ""))
	case promql.Matrix:
		for _, s := range v {
			fmt.Fprintf(&b, "%s:", s.Metric)
			for _, p := range s.Floats {
				fmt.Fprintf(&b, " %d=%x", p.T, math.Float64bits(p.F))
			}
			b.WriteByte('\n')
		}
	default:
		fmt.Fprintf(&b, "%v", v)
	}
	return b.String()
}

// TestLabels compares label names and values, with and without matchers, with the TSDB's:
// the store answers them from the catalogue, in SQL alone where the matchers allow.
func TestLabels(t *testing.T) {
	f := newFixture(t, store.Config{})
	ctx := context.Background()
	m := labels.MustNewMatcher
	for _, ms := range [][]*labels.Matcher{
		nil,
		{m(labels.MatchEqual, "job", "api")},
		{m(labels.MatchRegexp, "__name__", "temp.*")},
		{m(labels.MatchEqual, "__name__", "odd"), m(labels.MatchNotRegexp, "v", ".*\n.*")},
		{m(labels.MatchRegexp, "job", "api|odd"), m(labels.MatchNotEqual, "code", "500")},
		{m(labels.MatchEqual, "job", "nope")},
	} {
		tq, err := f.tsdb.Querier(f.start, f.end)
		if err != nil {
			t.Fatal(err)
		}
		sq := f.st.Querier(f.start, f.end, store.Options{})
		wantNames, _, err := tq.LabelNames(ctx, nil, ms...)
		if err != nil {
			t.Fatal(err)
		}
		gotNames, _, err := sq.LabelNames(ctx, nil, ms...)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(gotNames, wantNames) {
			t.Errorf("label names of %v: %q, want %q", ms, gotNames, wantNames)
		}
		for _, name := range []string{"__name__", "job", "v", "code", "floor", "missing"} {
			want, _, err := tq.LabelValues(ctx, name, nil, ms...)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := sq.LabelValues(ctx, name, nil, ms...)
			if err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 && len(got) == 0 {
				continue
			}
			if !slices.Equal(got, want) {
				t.Errorf("values of %s for %v: %q, want %q", name, ms, got, want)
			}
		}
		tq.Close()
	}
}

// TestSeriesSearch selects series by labels alone (hints Func "series", as the series API
// asks) and by when they were first seen.
func TestSeriesSearch(t *testing.T) {
	f := newFixture(t, store.Config{})
	ctx := context.Background()
	names := func(o store.Options) []string {
		ss := f.st.Querier(f.start, f.end, o).Select(ctx, true, &storage.SelectHints{Start: f.start, End: f.end, Func: "series"},
			labels.MustNewMatcher(labels.MatchRegexp, "job", ".+"))
		var out []string
		for ss.Next() {
			out = append(out, ss.At().Labels().String())
		}
		if err := ss.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if all := names(store.Options{}); len(all) != len(fixtureSeries()) {
		t.Errorf("series search found %d series, want %d", len(all), len(fixtureSeries()))
	}
	// late_series starts 300 steps (75 minutes) in; every other series at the start.
	late := names(store.Options{FirstSeenAfter: time.UnixMilli(f.start + 60*60_000)})
	if want := []string{`{__name__="late_series", job="late"}`}; !slices.Equal(late, want) {
		t.Errorf("series first seen after an hour: %q, want %q", late, want)
	}
	if none := names(store.Options{FirstSeenAfter: time.UnixMilli(f.end)}); len(none) != 0 {
		t.Errorf("series first seen after the last sample: %q, want none", none)
	}
}

// TestEstimate: an estimate counts the series a selection finds in the catalogue and the
// samples each gives, from raw's measured interval (15 s here), and reads no samples.
func TestEstimate(t *testing.T) {
	f := newFixture(t, store.Config{})
	ctx := context.Background()
	for _, tc := range []struct {
		ms     []*labels.Matcher
		series int64
	}{
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "__name__", "http_requests_total")}, 4},
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".*_total|temp.*")}, 6},
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, "job", "(?i)API")}, 9},
		{[]*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "job", "nope")}, 0},
	} {
		var e store.Estimate
		// An hour's window: 240 intervals of 15 s, 241 samples.
		h := &storage.SelectHints{Start: f.start, End: f.start + 3_600_000}
		ss := f.st.Querier(f.start, f.end, store.Options{Estimate: &e}).Select(ctx, true, h, tc.ms...)
		if ss.Next() || !errors.Is(ss.Err(), store.ErrEstimated) {
			t.Fatalf("an estimate's selection found series or ended with %v, want ErrEstimated", ss.Err())
		}
		l := e.Largest()
		if l.Series != tc.series {
			t.Errorf("%v: estimated %d series, want %d", tc.ms, l.Series, tc.series)
		}
		if tc.series > 0 && (l.PointsPerSeries < 235 || l.PointsPerSeries > 245) {
			t.Errorf("%v: estimated %d points per series, want about 241", tc.ms, l.PointsPerSeries)
		}
		if e.Samples() != l.Series*l.PointsPerSeries {
			t.Errorf("%v: total %d, want series x points = %d", tc.ms, e.Samples(), l.Series*l.PointsPerSeries)
		}
	}
}

// TestReadsUseUncompressedCache reads a selection through stores with and without
// Config.CacheRows, as deploy/clickhouse/users.xml's query_logged user whose queries land in
// system.query_log, and checks the settings each samples read ran with there.
func TestReadsUseUncompressedCache(t *testing.T) {
	conn := schematest.QueryLoggedConn(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		cacheRows int
		want      string // the samples read's settings, as the log lists them
	}{
		{"cache", 123_456, "merge_tree_max_rows_to_use_cache=123456 use_uncompressed_cache=1"},
		{"server_settings", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixtureOn(t, conn, store.Config{CacheRows: tc.cacheRows})
			q := f.st.Querier(f.start, f.end, store.Options{})
			ss := q.Select(ctx, true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "temperature"))
			n := 0
			for ss.Next() {
				n++
			}
			if err := ss.Err(); err != nil || n != 2 {
				t.Fatalf("read %d series, %v; want 2", n, err)
			}
			if err := conn.Exec(ctx, "SYSTEM FLUSH LOGS"); err != nil {
				t.Fatal(err)
			}
			db := f.db
			var got []string
			rows, err := conn.Query(ctx, "SELECT arrayStringConcat(arraySort(arrayFilter(s -> s LIKE '%cache%', arrayMap((n, v) -> concat(n, '=', v),"+
				" Settings.Names, Settings.Values))), ' ') FROM system.query_log WHERE type = 2 AND query LIKE ?", "%FROM "+db+".samples %")
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil {
					t.Fatal(err)
				}
				got = append(got, s)
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 {
				t.Fatalf("no samples read of %s in system.query_log", db)
			}
			for _, s := range got {
				if s != tc.want {
					t.Errorf("a samples read ran with %q, want %q", s, tc.want)
				}
			}
		})
	}
}
