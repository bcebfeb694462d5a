package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/pyramid-metrics/pyramid/schema"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// TestMigrateCommand runs `pyramid migrate` against the real test server, twice, as an
// operator (or every replica's start-up) would.
func TestMigrateCommand(t *testing.T) {
	conn := schematest.Conn(t)
	db := fmt.Sprintf("t_migrate_cmd_%08x", rand.Uint32())
	t.Cleanup(func() { _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db) })
	t.Setenv("PYRAMID_CLICKHOUSE_ADDR", schematest.Addr(t))
	t.Setenv("PYRAMID_CLICKHOUSE_DATABASE", db)
	for i := range 2 {
		if err := run([]string{"migrate"}); err != nil {
			t.Fatalf("migrate, run %d: %v", i+1, err)
		}
	}
	v, err := schema.CurrentVersion(context.Background(), conn, schema.Config{Database: db})
	if err != nil || v != schema.LatestVersion() {
		t.Errorf("schema version after migrate = %d, %v; want %d", v, err, schema.LatestVersion())
	}
	if err := run([]string{"frobnicate"}); err == nil {
		t.Error("an unknown command succeeded")
	}
}
