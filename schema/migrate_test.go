package schema_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/pyramid-metrics/pyramid/schema"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestMigrate runs the real migrations on the test server: twice, because every replica
// runs them at start-up, and then checks the tables exist with the version recorded.
func TestMigrate(t *testing.T) {
	conn := schematest.Conn(t)
	cfg := schematest.Database(t, conn, 30*24*time.Hour)
	ctx := context.Background()

	info, err := schema.Migrate(ctx, conn, cfg, discard())
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if info.Schema != schema.LatestVersion() {
		t.Errorf("schema version after migrate = %d, want %d", info.Schema, schema.LatestVersion())
	}
	if info.Dialect != schema.DialectFor(info.Server) {
		t.Errorf("dialect %v for server %v, want %v", info.Dialect, info.Server, schema.DialectFor(info.Server))
	}
	v, err := schema.CurrentVersion(ctx, conn, cfg)
	if err != nil || v != schema.LatestVersion() {
		t.Errorf("CurrentVersion = %d, %v; want %d", v, err, schema.LatestVersion())
	}

	rows, err := conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ? ORDER BY name", cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	want := []string{schema.TableMetadata, schema.TableSamples, schema.TableMigrations, schema.TableSeries,
		schema.TableSeriesInput, schema.TableSeriesLabels, schema.TableSeriesLabels + "_mv", schema.TableSeries + "_mv",
		schema.TableRollups, schema.TableRollupDirty, schema.TableRollupDone, schema.TableHistograms, schema.TableHistogramRollups, schema.TableBackfillBlocks}
	slices.Sort(want)
	if !slices.Equal(tables, want) {
		t.Errorf("tables = %v, want %v", tables, want)
	}
}

// TestSeriesInputFansOut checks the views behind series_input: first/last seen merge as
// min/max across inserts, and every label lands in the label index once.
func TestSeriesInputFansOut(t *testing.T) {
	conn := schematest.Conn(t)
	cfg := schematest.Database(t, conn, 0)
	ctx := context.Background()
	insert := func(first, last int64) {
		t.Helper()
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+cfg.Database+"."+schema.TableSeriesInput+
			" (fingerprint, target, metric_name, label_names, label_values, first_seen, last_seen)")
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := b.Append(uint64(42), uint64(7), "up", []string{"__name__", "job"}, []string{"up", "node"}, first, last); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	insert(1000, 2000)
	insert(500, 900)
	insert(3000, 4000)
	var first, last int64
	var name string
	if err := conn.QueryRow(ctx, "SELECT any(metric_name), minMerge(first_seen), maxMerge(last_seen) FROM "+
		cfg.Database+"."+schema.TableSeries+" WHERE fingerprint = 42").Scan(&name, &first, &last); err != nil {
		t.Fatal(err)
	}
	if name != "up" || first != 500 || last != 4000 {
		t.Errorf("series row = %q [%d, %d], want \"up\" [500, 4000]", name, first, last)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+"."+schema.TableSeriesLabels+
		" FINAL WHERE fingerprint = 42 AND ((name = '__name__' AND value = 'up') OR (name = 'job' AND value = 'node'))").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("label index rows for the series = %d, want 2", n)
	}
}

// TestMigrateRefusesAnotherPlacement: a database created for one server is not taken for a
// cluster's, and nothing is created in it: the check comes before any DDL (on this server,
// without the cluster, the ON CLUSTER DDL would fail otherwise, with another error).
func TestMigrateRefusesAnotherPlacement(t *testing.T) {
	conn := schematest.Conn(t)
	cfg := schematest.Database(t, conn, 0)
	cfg.Cluster = "pyramid"
	_, err := schema.Migrate(context.Background(), conn, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if !errors.Is(err, schema.ErrPlacement) {
		t.Fatalf("migrate a single-server database for a cluster: err = %v, want ErrPlacement", err)
	}
	t.Log(err)
	cfg.Cluster = ""
	if _, err := schema.Migrate(context.Background(), conn, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Errorf("migrate it again for one server: %v", err)
	}
}
