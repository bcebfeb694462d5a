package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/rollup/materialize/materializetest"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// storeFixture is the API over pyramid's store on the real test ClickHouse, through a
// connection that logs its queries (system.query_log), with series job="guard" (0..n-1)
// sampled every 15 s for two hours ending a little before now, a series job="new" that
// starts an hour later, and metadata.
type storeFixture struct {
	*testServer
	conn  driver.Conn
	db    string
	start int64
	end   int64
}

func newStoreFixture(t *testing.T, cfg Config, n int) *storeFixture {
	t.Helper()
	conn := schematest.Conn(t)
	db := schematest.Database(t, conn, 0).Database
	logged, err := clickhouse.Open(&clickhouse.Options{Addr: []string{schematest.Addr(t)}, Settings: clickhouse.Settings{"log_queries": 1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = logged.Close() })
	tiers, err := rollup.ParseTiers("raw:30d,5m:365d,1h:0")
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(store.Config{Database: db, Tiers: tiers, Rollups: true, Lookback: 5 * time.Minute, TierRefresh: time.Minute},
		logged, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	const steps = 480
	start := (time.Now().Add(-3*time.Hour).UnixMilli() / 15_000) * 15_000
	var (
		targets, fps []uint64
		stamps       []int64
		values       []float64
		series       []store.SeriesRow
	)
	add := func(fp uint64, from int, names, vals []string) {
		for k := from; k < steps; k++ {
			targets, fps = append(targets, 1), append(fps, fp)
			stamps, values = append(stamps, start+int64(k)*15_000), append(values, float64(k))
		}
		series = append(series, store.SeriesRow{Fingerprint: fp, Target: 1, MetricName: vals[0], Names: names, Values: vals,
			FirstSeen: start + int64(from)*15_000, LastSeen: start + (steps-1)*15_000})
	}
	for i := range n {
		add(uint64(100+i), 0, []string{"__name__", "i", "job"}, []string{"guard_total", strconv.Itoa(i), "guard"})
	}
	add(99, 240, []string{"__name__", "job"}, []string{"fresh_total", "new"})
	ctx := context.Background()
	if err := st.InsertSeries(ctx, series); err != nil {
		t.Fatal(err)
	}
	if err := st.InsertSamples(ctx, targets, fps, stamps, values); err != nil {
		t.Fatal(err)
	}
	// The rollups of the samples, as the write path marks them and the materializer
	// computes them.
	width := rollup.UnitWidth(tiers)
	if err := st.InsertMarks(ctx, width, rollup.NewMarker(width).Unmarked(targets, stamps, time.Now().UnixMilli())); err != nil {
		t.Fatal(err)
	}
	materializetest.Drain(t, st, tiers)
	md := []prompb.MetricMetadata{
		{MetricFamilyName: "guard_total", Type: prompb.MetricMetadata_COUNTER, Help: "Guarded things.", Unit: ""},
		{MetricFamilyName: "fresh_total", Type: prompb.MetricMetadata_COUNTER, Help: "Fresh things.", Unit: "seconds"},
	}
	if err := st.InsertMetadata(ctx, md, time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
	return &storeFixture{testServer: newServerOn(t, cfg, st), conn: conn, db: db, start: start, end: start + (steps-1)*15_000}
}

// samplesQueries counts the logged queries of the fixture's samples table.
func (f *storeFixture) samplesQueries(t *testing.T) uint64 {
	t.Helper()
	if err := f.conn.Exec(context.Background(), "SYSTEM FLUSH LOGS"); err != nil {
		t.Fatal(err)
	}
	var n uint64
	if err := f.conn.QueryRow(context.Background(), "SELECT count() FROM system.query_log WHERE type = 1 AND query LIKE ?",
		"%FROM "+f.db+".samples %").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestGuardRefusesBeforeReading: a query whose estimate passes MaxSamples is refused with
// 422 execution, naming the estimate and the limit, and sends no query to the samples
// table (the tier status, which routing caches, is warmed first: its refresh reads the
// bounds of raw's oldest and newest day); a narrower query is answered and does read
// samples, which shows that the query log would have caught a read.
func TestGuardRefusesBeforeReading(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSamples = 5_000 // 20 series x 480 samples is 9,600.
	f := newStoreFixture(t, cfg, 20)
	if r := f.get(t, "/api/v1/query", url.Values{"query": {`guard_total{i="1"}`}}); r.code != 200 {
		t.Fatalf("warm-up query: %d %s", r.code, r.body)
	}
	before := f.samplesQueries(t)
	form := url.Values{"query": {`sum(rate(guard_total[5m]))`}, "start": {fmt.Sprint(f.start / 1000)},
		"end": {fmt.Sprint(f.end / 1000)}, "step": {"15"}}
	r := f.post(t, "/api/v1/query_range", form)
	e := r.decode(t)
	if r.code != 422 || e.ErrorType != "execution" || !strings.Contains(e.Error, "5000") || !strings.Contains(e.Error, "20 series") {
		t.Fatalf("guarded query: %d %s %q; want 422 execution naming 20 series and the limit 5000", r.code, e.ErrorType, e.Error)
	}
	if n := f.samplesQueries(t); n != before {
		t.Errorf("the refused query sent %d queries to the samples table, want none", n-before)
	}
	if got := testutil.ToFloat64(f.api.refused); got != 1 {
		t.Errorf("pyramid_api_queries_refused_total = %v, want 1", got)
	}
	// A year at a 15 s step passes Prometheus's 11,000 points per series too; the guard's
	// estimate, which says what to change, comes first.
	year := url.Values{"query": {`count({__name__=~".+"})`}, "start": {fmt.Sprint(f.end/1000 - 365*86400)},
		"end": {fmt.Sprint(f.end / 1000)}, "step": {"15"}}
	r = f.post(t, "/api/v1/query_range", year)
	if e := r.decode(t); r.code != 422 || !strings.Contains(e.Error, "query would read about") {
		t.Errorf("a year of every series at 15s: %d %q; want 422 with the estimate", r.code, e.Error)
	}
	year.Set("query", `count(guard_total{i="1"})`)
	if r := f.post(t, "/api/v1/query_range", year); r.code != 400 || r.decode(t).ErrorType != "bad_data" {
		t.Errorf("a year of one series at 15s: %d %s; want Prometheus's 400 for more than 11,000 points", r.code, r.body)
	}
	form.Set("query", `sum(rate(guard_total{i="1"}[5m]))`)
	if r := f.post(t, "/api/v1/query_range", form); r.code != 200 {
		t.Fatalf("the query over one series: %d %s; want 200", r.code, r.body)
	}
	if n := f.samplesQueries(t); n == before {
		t.Error("an answered query sent no query to the samples table: the log check proves nothing")
	}
}

// TestTiersReported: the response names what answered in X-Pyramid-Tiers, and says so in
// an info when rollups did.
func TestTiersReported(t *testing.T) {
	f := newStoreFixture(t, testConfig(), 3)
	form := url.Values{"query": {`guard_total`}, "time": {fmt.Sprint(f.end / 1000)}}
	r := f.post(t, "/api/v1/query", form)
	if r.code != 200 || r.header.Get(headerTiers) != "raw" || len(r.decode(t).Infos) != 0 {
		t.Errorf("instant query: %d, tiers %q, infos %q; want 200 from raw without infos", r.code, r.header.Get(headerTiers), r.decode(t).Infos)
	}
	form = url.Values{"query": {`avg_over_time(guard_total[1h])`}, "start": {fmt.Sprint(f.start / 1000)},
		"end": {fmt.Sprint(f.end / 1000)}, "step": {"3600"}}
	r = f.post(t, "/api/v1/query_range", form)
	tiers := r.header.Get(headerTiers)
	e := r.decode(t)
	if r.code != 200 || !strings.Contains(tiers, "/avg") || len(e.Infos) != 1 || !strings.Contains(e.Infos[0], tiers) {
		t.Errorf("hourly query: %d, tiers %q, infos %q; want 200 from */avg with an info naming them", r.code, tiers, e.Infos)
	}
	if got := histogramCount(t, f.reg, "pyramid_api_request_duration_seconds", "query_range", "raw"); got != 1 {
		t.Errorf("query_range answered from raw counted %d times, want 1", got)
	}
}

// TestSeriesFirstSeenAfterAndMetadata: first_seen_after finds only the series that began
// after it; /metadata answers the stored metadata as Prometheus shapes it.
func TestSeriesFirstSeenAfterAndMetadata(t *testing.T) {
	f := newStoreFixture(t, testConfig(), 3)
	form := url.Values{"match[]": {`{job=~".+"}`}, "first_seen_after": {fmt.Sprint((f.start + 1_800_000) / 1000)}}
	r := f.get(t, "/api/v1/series", form)
	var series []map[string]string
	if err := json.Unmarshal(r.decode(t).Data, &series); err != nil || r.code != 200 {
		t.Fatalf("series: %d %s (%v)", r.code, r.body, err)
	}
	if len(series) != 1 || series[0]["__name__"] != "fresh_total" {
		t.Errorf("series first seen after 30 minutes: %v, want fresh_total alone", series)
	}
	form.Del("first_seen_after")
	if err := json.Unmarshal(f.get(t, "/api/v1/series", form).decode(t).Data, &series); err != nil || len(series) != 4 {
		t.Errorf("series without first_seen_after: %v (%v), want 4", series, err)
	}
	r = f.get(t, "/api/v1/metadata", url.Values{"limit": {"40000"}})
	want := `{"status":"success","data":{"fresh_total":[{"type":"counter","help":"Fresh things.","unit":"seconds"}],` +
		`"guard_total":[{"type":"counter","help":"Guarded things.","unit":""}]}}`
	if r.code != 200 || r.body != want {
		t.Errorf("metadata: %d %s\nwant %s", r.code, r.body, want)
	}
	r = f.get(t, "/api/v1/metadata", url.Values{"metric": {"guard_total"}})
	if want := `{"status":"success","data":{"guard_total":[{"type":"counter","help":"Guarded things.","unit":""}]}}`; r.body != want {
		t.Errorf("metadata of guard_total: %s, want %s", r.body, want)
	}
}

// histogramCount is the observations of the duration histogram for endpoint and tier.
func histogramCount(t *testing.T, reg *prometheus.Registry, name, endpoint, tier string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if got["endpoint"] == endpoint && got["tier"] == tier {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}
