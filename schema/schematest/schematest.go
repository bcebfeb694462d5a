// Package schematest gives tests a real ClickHouse connection and a freshly migrated
// database of their own. It reads PYRAMID_TEST_CLICKHOUSE_ADDR (host:port of the native
// protocol); without it tests skip, unless PYRAMID_TEST_REQUIRE=1 (as `make test` sets),
// when they fail so that CI can never pass by skipping.
package schematest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/pyramid-metrics/pyramid/schema"
)

// Addr returns the test server's address, skipping or failing t when there is none.
func Addr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("PYRAMID_TEST_CLICKHOUSE_ADDR")
	if addr == "" {
		if os.Getenv("PYRAMID_TEST_REQUIRE") == "1" {
			t.Fatal("PYRAMID_TEST_CLICKHOUSE_ADDR is not set but PYRAMID_TEST_REQUIRE=1: run `make test`")
		}
		t.Skip("no ClickHouse: set PYRAMID_TEST_CLICKHOUSE_ADDR or run `make test`")
	}
	return addr
}

// Conn opens a connection to the test server, closed when t ends.
func Conn(t testing.TB) driver.Conn {
	t.Helper()
	return connAs(t, "default")
}

// QueryLoggedConn opens a connection as deploy/clickhouse/users.xml's query_logged user,
// whose every query lands in system.query_log, closed when t ends.
func QueryLoggedConn(t testing.TB) driver.Conn {
	t.Helper()
	return connAs(t, "query_logged")
}

func connAs(t testing.TB, user string) driver.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{Addr(t)},
		Auth:        clickhouse.Auth{Username: user},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("open ClickHouse: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := conn.Ping(context.Background()); err != nil {
		t.Fatalf("ping ClickHouse at %s: %v", Addr(t), err)
	}
	return conn
}

// Database creates an empty, migrated database named after the test and drops it when t
// ends (set PYRAMID_TEST_KEEP_DB=1 to keep it for a look).
func Database(t testing.TB, conn driver.Conn, retention time.Duration) schema.Config {
	t.Helper()
	cfg := Unmigrated(t, conn, retention)
	if _, err := schema.Migrate(context.Background(), conn, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatalf("migrate %s: %v", cfg.Database, err)
	}
	return cfg
}

// Unmigrated names a database of its own for t, as Database does, and drops it when t
// ends, but creates nothing: the test applies the schema itself.
func Unmigrated(t testing.TB, conn driver.Conn, retention time.Duration) schema.Config {
	t.Helper()
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, t.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	cfg := schema.Config{Database: fmt.Sprintf("t_%s_%08x", name, rand.Uint32()), RawRetention: retention}
	t.Cleanup(func() {
		if os.Getenv("PYRAMID_TEST_KEEP_DB") == "1" {
			return
		}
		if err := conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database); err != nil {
			t.Errorf("drop test database %s: %v", cfg.Database, err)
		}
	})
	return cfg
}
