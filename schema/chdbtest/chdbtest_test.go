package chdbtest_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/pyramid-metrics/pyramid/schema"
	"github.com/pyramid-metrics/pyramid/schema/chdbtest"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// TestEngine checks what the conformance tests rely on: the engine is a modern ClickHouse,
// pyramid's migrations run on it, float bits (a stale marker's NaN payload) survive an
// insert and a read, a large insert arrives whole, arrays of LowCardinality strings scan,
// and a failing statement is a *clickhouse.Exception with the server's code.
func TestEngine(t *testing.T) {
	conn := chdbtest.Conn(t)
	ctx := context.Background()
	v, err := schema.ServerVersion(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if schema.DialectFor(v) != schema.Modern || !v.AtLeast(26, 1) {
		t.Fatalf("chDB reports ClickHouse %v, want 26.x and the modern dialect", v)
	}
	cfg := schematest.Database(t, conn, 30*24*time.Hour)
	// Timestamps are recent: the table drops whole expired parts in the background, and a
	// part of 1970 samples could vanish before it is read.
	now := time.Now().UnixMilli()
	stale := math.Float64frombits(0x7ff0000000000002)
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+cfg.Database+"."+schema.TableSamples+" (target, fingerprint, ts, value)")
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range []float64{stale, math.Inf(-1), math.Copysign(0, -1), 0.1} {
		if err := b.Append(uint64(1), uint64(2), now+int64(i), v); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, "SELECT value FROM "+cfg.Database+"."+schema.TableSamples+" WHERE target IN ? ORDER BY ts",
		clickhouse.GroupSet{Value: []any{uint64(1)}})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for rows.Next() {
		var f float64
		if err := rows.Scan(&f); err != nil {
			t.Fatal(err)
		}
		got = append(got, math.Float64bits(f))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []uint64{0x7ff0000000000002, math.Float64bits(math.Inf(-1)), 1 << 63, math.Float64bits(0.1)}
	if len(got) != len(want) {
		t.Fatalf("read %d values, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("value %d: bits %#x, want %#x", i, got[i], want[i])
		}
	}

	// A large block holds every byte sequence, "\n\n" included, which would end inline
	// data early; every row must arrive.
	b, err = conn.PrepareBatch(ctx, "INSERT INTO "+cfg.Database+"."+schema.TableSamples+" (target, fingerprint, ts, value)")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var sum uint64
	const n = 200_000
	for i := range n {
		fp := rng.Uint64()
		sum += fp
		if err := b.Append(uint64(2), fp, now+int64(i), rng.NormFloat64()); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatalf("insert %d rows: %v", n, err)
	}
	var count, gotSum uint64
	if err := conn.QueryRow(ctx, "SELECT count(), sum(fingerprint) FROM "+cfg.Database+"."+schema.TableSamples+" WHERE target = 2").Scan(&count, &gotSum); err != nil {
		t.Fatal(err)
	}
	if count != n || gotSum != sum {
		t.Errorf("stored %d rows with fingerprint sum %d, want %d rows summing to %d", count, gotSum, n, sum)
	}

	var names []string
	if err := conn.QueryRow(ctx, "SELECT CAST(['a', 'b'], 'Array(LowCardinality(String))')").Scan(&names); err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 || names[0] != "a" || names[1] != "b" {
		t.Errorf("array of LowCardinality strings = %q", names)
	}

	err = conn.Exec(ctx, "SELECT * FROM "+cfg.Database+".no_such_table")
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) || ex.Code != 60 {
		t.Errorf("query of a missing table: %v, want a *clickhouse.Exception with code 60", err)
	}
}
