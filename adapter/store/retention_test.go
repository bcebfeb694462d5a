package store_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// TestDropExpiredRaw writes one sample into each of several days and checks which
// day partitions a 30-day retention drops, computed by hand from a fixed "now".
func TestDropExpiredRaw(t *testing.T) {
	conn := schematest.Conn(t)
	cfg := schematest.Database(t, conn, 30*24*time.Hour)
	ctx := context.Background()
	st := retentionStore(t, conn, cfg.Database, "raw:30d")
	const day = int64(86_400_000)
	// now is day 20000 (2024-10-04) at 12:00 UTC; the cutoff is day 19970 at 12:00, so days
	// up to 19969 are wholly expired while 19970 still holds unexpired hours.
	now := time.UnixMilli(20000*day + day/2)
	days := []int64{19950, 19969, 19970, 19999, 20000}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+cfg.Database+"."+schema.TableSamples+" (target, fingerprint, ts, value)")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range days {
		if err := b.Append(uint64(1), uint64(1), d*day+1, 1.0); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	// Histograms expire by the same days, in a table of their own.
	var hists []store.HistogramRow
	for _, d := range []int64{19960, 19980} {
		hists = append(hists, store.HistogramRow{Target: 1, Fingerprint: 2,
			HistogramSample: store.HistogramSample{T: d*day + 1, H: &histogram.Histogram{}}})
	}
	if err := st.InsertHistograms(ctx, hists); err != nil {
		t.Fatal(err)
	}
	dropped, err := st.DropExpiredRaw(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{19950, 19960, 19969}; !slices.Equal(dropped, want) {
		t.Errorf("dropped %v, want %v", dropped, want)
	}
	daysLeft := func(table string) []int64 {
		var left []int64
		rows, err := conn.Query(ctx, "SELECT intDiv(ts, 86400000) AS d FROM "+cfg.Database+"."+table+" ORDER BY d")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var d int64
			if err := rows.Scan(&d); err != nil {
				t.Fatal(err)
			}
			left = append(left, d)
		}
		return left
	}
	if left, want := daysLeft(schema.TableSamples), []int64{19970, 19999, 20000}; !slices.Equal(left, want) {
		t.Errorf("sample days left %v, want %v", left, want)
	}
	if left, want := daysLeft(schema.TableHistograms), []int64{19980}; !slices.Equal(left, want) {
		t.Errorf("histogram days left %v, want %v", left, want)
	}
	// A second run finds nothing more to drop.
	if again, err := st.DropExpiredRaw(ctx, now); err != nil || len(again) != 0 {
		t.Errorf("second run dropped %v, %v; want nothing", again, err)
	}
}

// retentionStore is a store on db with these tiers.
func retentionStore(t *testing.T, conn driver.Conn, db, tiers string) *store.Store {
	t.Helper()
	ts, err := rollup.ParseTiers(tiers)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(store.Config{Database: db, Tiers: ts, TierRefresh: time.Minute}, conn, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return st
}
