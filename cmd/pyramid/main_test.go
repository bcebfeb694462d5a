package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

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

// TestServeStopsOnAnotherPlacement: serving a single-server database with a cluster
// configured ends pyramid with the placement error, instead of retrying the schema forever
// while refusing every write.
func TestServeStopsOnAnotherPlacement(t *testing.T) {
	conn := schematest.Conn(t)
	db := fmt.Sprintf("t_placement_cmd_%08x", rand.Uint32())
	t.Cleanup(func() { _ = conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db) })
	t.Setenv("PYRAMID_CLICKHOUSE_ADDR", schematest.Addr(t))
	t.Setenv("PYRAMID_CLICKHOUSE_DATABASE", db)
	if err := run([]string{"migrate"}); err != nil {
		t.Fatalf("migrate for one server: %v", err)
	}
	t.Setenv("PYRAMID_CLICKHOUSE_CLUSTER", "pyramid")
	t.Setenv("PYRAMID_LISTEN_ADDR", "127.0.0.1:0")
	done := make(chan error, 1)
	go func() { done <- run(nil) }()
	select {
	case err := <-done:
		if !errors.Is(err, schema.ErrPlacement) {
			t.Errorf("serve ended with %v, want the placement error", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("serve still runs a minute after a placement error: it retries what cannot change")
	}
}
