package schema_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema"
	"github.com/pyramid-metrics/pyramid/schema/chdbtest"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// The conformance tests run the migrations and raw retention on the 18.16 test server
// (legacy dialect) and on ClickHouse 26.5 in-process (chdbtest, modern dialect).

type engine struct {
	name string
	conn driver.Conn
}

func engines(t *testing.T) []engine {
	return []engine{{"18.16", schematest.Conn(t)}, {"26.5", chdbtest.Conn(t)}}
}

// tables describes a database's tables as the server holds them: per table its engine and
// keys, per column its type and default, and (exact) the full CREATE statement with the
// database name taken out.
func tables(t *testing.T, conn driver.Conn, db string) (shape, exact []string) {
	t.Helper()
	for _, row := range schematest.Rows(t, conn, "SELECT name, engine, partition_key, sorting_key, primary_key, create_table_query"+
		" FROM system.tables WHERE database = ? ORDER BY name", db) {
		f := strings.Split(row, " | ")
		shape = append(shape, strings.Join(f[:5], " | "))
		exact = append(exact, strings.ReplaceAll(f[5], db+".", "DB."))
	}
	for _, row := range schematest.Rows(t, conn, "SELECT table, name, type, default_kind, default_expression"+
		" FROM system.columns WHERE database = ? ORDER BY table, name", db) {
		// LowCardinality is the modern dialect's storage of the same strings.
		shape = append(shape, strings.NewReplacer("LowCardinality(String)", "String").Replace(row))
	}
	return shape, exact
}

// TestConformanceMigrations applies the schema from empty and from every earlier version on
// both engines. An upgraded database must end exactly like a fresh one on the same engine,
// and both engines must hold the same tables, columns, engines and keys.
func TestConformanceMigrations(t *testing.T) {
	ctx := context.Background()
	var shapes [][]string
	for _, e := range engines(t) {
		fresh := schematest.Database(t, e.conn, 30*24*time.Hour)
		info, err := schema.Migrate(ctx, e.conn, fresh, discard())
		if err != nil {
			t.Fatalf("%s: migrate again: %v", e.name, err)
		}
		if want := schema.DialectFor(info.Server); info.Dialect != want || info.Schema != schema.LatestVersion() {
			t.Errorf("%s: migrated to %d in %v, want %d in %v", e.name, info.Schema, info.Dialect, schema.LatestVersion(), want)
		}
		shape, exact := tables(t, e.conn, fresh.Database)
		if len(exact) < 11 {
			t.Fatalf("%s: %d tables after migrating, want 11", e.name, len(exact))
		}
		shapes = append(shapes, shape)

		for from := uint32(1); from < schema.LatestVersion(); from++ {
			cfg := schematest.Unmigrated(t, e.conn, 30*24*time.Hour)
			if _, err := schema.MigrateTo(ctx, e.conn, cfg, from, discard()); err != nil {
				t.Fatalf("%s: migrate to %d: %v", e.name, from, err)
			}
			if v, err := schema.CurrentVersion(ctx, e.conn, cfg); err != nil || v != from {
				t.Fatalf("%s: version %d (%v) after migrating to %d", e.name, v, err, from)
			}
			_, before := tables(t, e.conn, cfg.Database)
			if len(before) >= len(exact) {
				t.Errorf("%s: version %d already has all %d tables", e.name, from, len(before))
			}
			if _, err := schema.Migrate(ctx, e.conn, cfg, discard()); err != nil {
				t.Fatalf("%s: migrate from %d: %v", e.name, from, err)
			}
			_, after := tables(t, e.conn, cfg.Database)
			if d := schematest.DiffRows(exact, after); d != "" {
				t.Errorf("%s: migrated from version %d, against fresh: %s", e.name, from, d)
			}
		}
	}
	if d := schematest.DiffRows(shapes[0], shapes[1]); d != "" {
		t.Errorf("tables on 18.16 against 26.5: %s", d)
	}
}

// TestConformanceRawRetention stores samples on days around a 30-day raw retention on both
// engines: 18.16 drops expired day partitions (store.DropExpiredRaw), 26.5 expires them
// by the table's TTL when parts merge. The same samples must remain.
func TestConformanceRawRetention(t *testing.T) {
	ctx := context.Background()
	const day = int64(schema.DayMillis)
	now := time.Now()
	today := now.UnixMilli() / day
	var stamps []int64
	for _, d := range []int64{-40, -32, -29, -1} {
		stamps = append(stamps, (today+d)*day+day/2)
	}
	stamps = append(stamps, now.UnixMilli()-3_600_000)
	var kept [][]string
	for _, e := range engines(t) {
		cfg := schematest.Database(t, e.conn, 30*24*time.Hour)
		b, err := e.conn.PrepareBatch(ctx, "INSERT INTO "+cfg.Database+"."+schema.TableSamples+" (target, fingerprint, ts, value)")
		if err != nil {
			t.Fatal(err)
		}
		for _, ts := range stamps {
			if err := b.Append(uint64(1), uint64(2), ts, float64(ts)); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
		if e.name == "18.16" {
			tiers, err := rollup.ParseTiers("raw:30d")
			if err != nil {
				t.Fatal(err)
			}
			st, err := store.New(store.Config{Database: cfg.Database, Tiers: tiers, TierRefresh: time.Minute}, e.conn,
				slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.DropExpiredRaw(ctx, now); err != nil {
				t.Fatal(err)
			}
		} else {
			for _, id := range schematest.Rows(t, e.conn, "SELECT DISTINCT partition_id FROM system.parts WHERE database = ? AND table = ? AND active",
				cfg.Database, schema.TableSamples) {
				if err := e.conn.Exec(ctx, fmt.Sprintf("OPTIMIZE TABLE %s.%s PARTITION ID %s FINAL", cfg.Database, schema.TableSamples, strings.ReplaceAll(id, `"`, "'"))); err != nil {
					t.Fatal(err)
				}
			}
		}
		kept = append(kept, schematest.Rows(t, e.conn, "SELECT ts FROM "+cfg.Database+"."+schema.TableSamples+" ORDER BY ts"))
	}
	var want []string
	for _, ts := range stamps[2:] {
		want = append(want, fmt.Sprint(ts))
	}
	for i, name := range []string{"18.16", "26.5"} {
		if !slices.Equal(kept[i], want) {
			t.Errorf("%s kept %v, want %v", name, kept[i], want)
		}
	}
}
