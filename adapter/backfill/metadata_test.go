package backfill_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/pyramid-metrics/pyramid/adapter/backfill"
	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// TestBackfillWALMetadata has Prometheus's own TSDB, with --enable-feature=metadata-wal-records
// on, write series and their metadata (one family's help changed later) into its WAL, and
// backfills the data directory: with --match '{job="a"}' only the families of job a's
// series are stored, a classic histogram's under its family name; without a selector
// every family is, each with the metadata written last.
func TestBackfillWALMetadata(t *testing.T) {
	ctx := context.Background()
	st, tiers, logger := newTestStore(t, "raw:30d,1h:0")

	dir := t.TempDir()
	opts := tsdb.DefaultOptions()
	opts.EnableMetadataWALRecords = true
	tdb, err := tsdb.Open(dir, logger, nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	type series struct {
		lset labels.Labels
		md   metadata.Metadata
	}
	temp := labels.FromStrings("__name__", "temp_celsius", "job", "b")
	for i, s := range []series{
		{labels.FromStrings("__name__", "req_total", "job", "a"), metadata.Metadata{Type: model.MetricTypeCounter, Help: "Requests served."}},
		{labels.FromStrings("__name__", "lat_seconds_bucket", "job", "a", "le", "1"), metadata.Metadata{Type: model.MetricTypeHistogram, Help: "Latency.", Unit: "seconds"}},
		{labels.FromStrings("__name__", "lat_seconds_count", "job", "a"), metadata.Metadata{Type: model.MetricTypeHistogram, Help: "Latency.", Unit: "seconds"}},
		{temp, metadata.Metadata{Type: model.MetricTypeGauge, Help: "Temperature.", Unit: "celsius"}},
		{temp, metadata.Metadata{Type: model.MetricTypeGauge, Help: "Temperature of the room.", Unit: "celsius"}},
	} {
		app := tdb.Appender(ctx)
		ref, err := app.Append(0, s.lset, time.Now().UnixMilli()+int64(i), float64(i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := app.UpdateMetadata(ref, s.lset, s.md); err != nil {
			t.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if err := tdb.Close(); err != nil {
		t.Fatal(err)
	}

	stored := func() []store.Metadata {
		t.Helper()
		md, err := st.Metadata(ctx, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		return md
	}
	cfg := backfill.Config{Path: dir, MinTime: math.MinInt64, MaxTime: math.MaxInt64, BatchRows: 1000, Tiers: tiers,
		Matchers: []*labels.Matcher{labels.MustNewMatcher(labels.MatchEqual, "job", "a")}}
	sum, err := backfill.Run(ctx, cfg, st, logger)
	if err != nil {
		t.Fatal(err)
	}
	jobA := []store.Metadata{
		{Family: "lat_seconds", Type: "histogram", Help: "Latency.", Unit: "seconds"},
		{Family: "req_total", Type: "counter", Help: "Requests served."},
	}
	if got := stored(); sum.Metadata != 2 || sum.MetadataFailures != 0 || !slices.Equal(got, jobA) {
		t.Fatalf("with {job=\"a\"}: %d families stored and %d failures, metadata %+v; want 2, 0 and %+v", sum.Metadata, sum.MetadataFailures, got, jobA)
	}

	cfg.Matchers = nil
	if sum, err = backfill.Run(ctx, cfg, st, logger); err != nil {
		t.Fatal(err)
	}
	all := slices.Insert(jobA, 2, store.Metadata{Family: "temp_celsius", Type: "gauge", Help: "Temperature of the room.", Unit: "celsius"})
	if got := stored(); sum.Metadata != 3 || sum.MetadataFailures != 0 || !slices.Equal(got, all) {
		t.Fatalf("without a selector: %d families stored and %d failures, metadata %+v; want 3, 0 and %+v", sum.Metadata, sum.MetadataFailures, got, all)
	}
}

func TestMetadataURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://prometheus:9090/api/v1/read":          "http://prometheus:9090/api/v1/metadata",
		"https://h/prom/api/v1/read/?x=1":             "https://h/prom/api/v1/metadata",
		"http://user:pw@h:1/a%2Fb/api/v1/read#frag":   "http://user:pw@h:1/a%2Fb/api/v1/metadata",
		"http://thanos/api/v1/receive":                "",
		"http://h/api/v1/read/more":                   "",
		"http://h/api/v1/readings":                    "",
		"http://h/API/V1/READ":                        "",
		"http://h/:bad%zz":                            "",
		"http://prometheus:9090/prefix/api/v1/read/":  "http://prometheus:9090/prefix/api/v1/metadata",
		"http://[::1]:9090/api/v1/read":               "http://[::1]:9090/api/v1/metadata",
		"http://127.0.0.1:9090/sub/path/api/v1/read":  "http://127.0.0.1:9090/sub/path/api/v1/metadata",
		"http://h/api/v1/read?match[]=up&other=param": "http://h/api/v1/metadata",
	} {
		got, err := backfill.MetadataURL(in)
		if want == "" {
			if err == nil {
				t.Errorf("MetadataURL(%q) = %q, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("MetadataURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := backfill.MetadataURL("http://h/x"); !errors.Is(err, backfill.ErrNoMetadataURL) {
		t.Errorf("MetadataURL of a path without /api/v1/read: %v, want ErrNoMetadataURL", err)
	}
}
