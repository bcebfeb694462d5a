package schema

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// migration is one step of the schema. Steps are append-only: a released step never
// changes, later issues add tables with new steps.
type migration struct {
	version    uint32
	name       string
	statements func(g ddl, cfg Config) []string
}

func migrationList() []migration {
	return []migration{
		{version: 1, name: "initial", statements: ddl.initial},
		{version: 2, name: "rollups", statements: ddl.rollups},
		{version: 3, name: "histograms", statements: ddl.histograms},
		{version: 4, name: "histogram_rollups", statements: ddl.histogramRollups},
		{version: 5, name: "backfill_blocks", statements: ddl.backfillBlocks},
	}
}

// LatestVersion is the schema version this build of pyramid expects.
func LatestVersion() uint32 {
	list := migrationList()
	return list[len(list)-1].version
}

// Info describes the server and schema pyramid is running against.
type Info struct {
	Server  Version
	Dialect Dialect
	Schema  uint32
}

// ServerVersion asks the server for its version.
func ServerVersion(ctx context.Context, conn driver.Conn) (Version, error) {
	var s string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&s); err != nil {
		return Version{}, fmt.Errorf("query server version: %w", err)
	}
	return ParseVersion(s)
}

// CurrentVersion returns the newest migration applied in cfg.Database.
func CurrentVersion(ctx context.Context, conn driver.Conn, cfg Config) (uint32, error) {
	var v uint32
	q := fmt.Sprintf("SELECT max(version) FROM %s.%s", cfg.Database, TableMigrations)
	if err := conn.QueryRow(ctx, q).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version of %s: %w", cfg.Database, err)
	}
	return v, nil
}

// Drop drops the database and every table in it, on every server of the cluster when
// there is one. The load generator starts its runs from empty tables with it.
func Drop(ctx context.Context, conn driver.Conn, cfg Config) error {
	q := "DROP DATABASE IF EXISTS " + cfg.Database
	if cfg.Cluster != "" {
		q += " ON CLUSTER " + cfg.Cluster
	}
	if err := conn.Exec(ctx, q); err != nil {
		return fmt.Errorf("drop database %s: %w", cfg.Database, err)
	}
	return nil
}

// Migrate creates the database and applies every migration newer than the one recorded.
// All DDL is IF NOT EXISTS, so replicas that migrate at the same time do no harm: the worst
// case is a step recorded twice.
func Migrate(ctx context.Context, conn driver.Conn, cfg Config, logger *slog.Logger) (Info, error) {
	return migrateTo(ctx, conn, cfg, LatestVersion(), logger)
}

// migrateTo is Migrate up to and including migration target; tests use it to create the
// schema of an earlier release.
func migrateTo(ctx context.Context, conn driver.Conn, cfg Config, target uint32, logger *slog.Logger) (Info, error) {
	if err := cfg.Validate(); err != nil {
		return Info{}, err
	}
	server, err := ServerVersion(ctx, conn)
	if err != nil {
		return Info{}, err
	}
	if err := checkPlacement(ctx, conn, cfg); err != nil {
		return Info{}, err
	}
	d := DialectFor(server)
	g := ddl{db: cfg.Database, d: d, cluster: cfg.Cluster}
	for _, stmt := range []string{g.createDatabase(), g.createMigrations()} {
		if err := conn.Exec(ctx, stmt); err != nil {
			return Info{}, fmt.Errorf("create %s: %w", cfg.Database, err)
		}
	}
	current, err := CurrentVersion(ctx, conn, cfg)
	if err != nil {
		return Info{}, err
	}
	for _, m := range migrationList() {
		if m.version <= current || m.version > target {
			continue
		}
		stmts := m.statements(g, cfg)
		for i, stmt := range stmts {
			if err := conn.Exec(ctx, stmt); err != nil {
				return Info{}, fmt.Errorf("apply migration %d (%s) statement %d of %d: %w", m.version, m.name, i+1, len(stmts), err)
			}
		}
		if err := recordMigration(ctx, conn, g, m); err != nil {
			return Info{}, err
		}
		logger.Info("applied schema migration", "version", m.version, "name", m.name, "dialect", d.String(), "statements", len(stmts))
		current = m.version
	}
	return Info{Server: server, Dialect: d, Schema: current}, nil
}

// ErrPlacement: the database's tables were created for one server and the configuration
// names a cluster, or the other way round. Retrying cannot help.
var ErrPlacement = errors.New("tables created for another placement")

// checkPlacement refuses a database laid out for the other mode before any DDL runs. Every
// statement is IF NOT EXISTS, so without this a cluster configuration would leave a
// single-server database as it is and write into one server's tables, and a single-server
// configuration would write into a cluster's Distributed tables without waiting for the
// shards.
func checkPlacement(ctx context.Context, conn driver.Conn, cfg Config) error {
	var (
		n      uint64
		engine string
	)
	if err := conn.QueryRow(ctx, "SELECT count(), any(engine) FROM system.tables WHERE database = ? AND name = ?",
		cfg.Database, TableSamples).Scan(&n, &engine); err != nil {
		return fmt.Errorf("read the engine of %s.%s: %w", cfg.Database, TableSamples, err)
	}
	switch distributed := engine == "Distributed"; {
	case n == 0:
		return nil
	case cfg.Cluster != "" && !distributed:
		return fmt.Errorf("%w: %s.%s is a %s table of one server, not the Distributed table of cluster %s; use a new database for the cluster, or copy the data into one with INSERT ... SELECT",
			ErrPlacement, cfg.Database, TableSamples, engine, cfg.Cluster)
	case cfg.Cluster == "" && distributed:
		return fmt.Errorf("%w: %s.%s is a Distributed table, created for a cluster; name that cluster in the configuration",
			ErrPlacement, cfg.Database, TableSamples)
	}
	return nil
}

func recordMigration(ctx context.Context, conn driver.Conn, g ddl, m migration) error {
	batch, err := conn.PrepareBatch(ctx, fmt.Sprintf("INSERT INTO %s (version, name, dialect, applied_ms)", g.table(TableMigrations)))
	if err != nil {
		return fmt.Errorf("record migration %d: %w", m.version, err)
	}
	defer batch.Close()
	if err := batch.Append(m.version, m.name, g.d.String(), time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("record migration %d: %w", m.version, err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("record migration %d: %w", m.version, err)
	}
	return nil
}
