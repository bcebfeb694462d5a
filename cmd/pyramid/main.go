// Command pyramid receives Prometheus remote_write and stores it in ClickHouse.
//
// Flags and environment are read here and nowhere else; packages get Config structs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/adapter/api"
	"github.com/pyramid-metrics/pyramid/adapter/auth"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup/materialize"
	"github.com/pyramid-metrics/pyramid/schema"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "pyramid:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cfg, rest, err := loadConfig(args, os.Stderr)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return fmt.Errorf("log level %q: %w", cfg.LogLevel, err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// Checked up front because serve applies the schema in a retry loop, where a setting
	// that can never work would only be logged, forever. adapter.New checks its own.
	if err := cfg.schemaConfig().Validate(); err != nil {
		return err
	}

	// The first reachable server takes every connection, the others stand by; in a cluster
	// each server can take any query, and opening connections round robin spreads the
	// work of splitting inserts across shards and merging their reads.
	strategy := clickhouse.ConnOpenInOrder
	if cfg.ClickHouseCluster != "" {
		strategy = clickhouse.ConnOpenRoundRobin
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:             strings.Split(cfg.ClickHouseAddr, ","),
		ConnOpenStrategy: strategy,
		Auth:             clickhouse.Auth{Database: "default", Username: cfg.ClickHouseUser, Password: cfg.ClickHousePassword},
		DialTimeout:      cfg.ClickHouseDial,
		MaxOpenConns:     cfg.ClickHouseConns,
		MaxIdleConns:     cfg.ClickHouseConns,
		Settings:         cfg.clickhouseSettings(),
	})
	if err != nil {
		return fmt.Errorf("open ClickHouse %s: %w", cfg.ClickHouseAddr, err)
	}
	defer conn.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	cmd := "serve"
	if len(rest) > 0 {
		cmd = rest[0]
	}
	switch cmd {
	case "migrate":
		info, err := schema.Migrate(ctx, conn, cfg.schemaConfig(), logger)
		if err != nil {
			return err
		}
		logger.Info("schema is current", "server", info.Server.String(), "dialect", info.Dialect.String(), "version", info.Schema)
		return nil
	case "serve":
		return serve(ctx, cfg, conn, logger)
	case "backfill":
		return runBackfill(ctx, cfg, rest[1:], os.Stderr, conn, logger)
	default:
		return fmt.Errorf("unknown command %q (want serve, migrate or backfill)", cmd)
	}
}

func serve(ctx context.Context, cfg config, conn driver.Conn, logger *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	st, err := store.New(cfg.storeConfig(), conn, logger, reg)
	if err != nil {
		return err
	}
	srv, err := adapter.New(cfg.adapterConfig(), st, logger, reg, reg)
	if err != nil {
		return err
	}
	promAPI, err := api.New(cfg.apiConfig(), st, logger, reg)
	if err != nil {
		return err
	}
	promAPI.Register(srv.Router())
	mat, err := materialize.New(cfg.materializerConfig(), st, logger, reg)
	if err != nil {
		return err
	}
	reg.MustRegister(store.NewStatusCollector(st, logger))
	srv.Handle("/api/v1/status/tiers", adapter.StatusHandler(st, logger))
	handler := srv.Handler()
	var guard *auth.Guard
	if cfg.WebConfigFile != "" {
		if guard, err = auth.New(auth.Config{File: cfg.WebConfigFile}, logger, reg); err != nil {
			return err
		}
		handler = guard.Handler(handler)
	}
	if err := checkConnectionLimit(cfg.MaxConnections); err != nil {
		return err
	}
	// The request memory budget is half of the limit (adapterConfig); the other half is
	// for the rest of the process and the garbage of everything else, which a soft limit
	// makes the collector reclaim sooner as the process nears it. The soft limit is set
	// below the limit, as Prometheus's --auto-gomemlimit.ratio=0.9 does, because the
	// runtime passes it while a collection runs and the binary's own pages are not in it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.MemoryLimit / 10 * 9)
	}
	tcp, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	// TLS goes on top of the connection limit, which counts and closes raw connections.
	limited := newConnLimiter(tcp, cfg.MaxConnections, reg)
	var ln net.Listener = limited
	if guard != nil {
		ln = guard.Listener(ln)
	}
	httpSrv := newHTTPServer(handler, cfg, limited)
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()
	logger.Info("pyramid listening", "addr", ln.Addr().String(), "tls", guard != nil && guard.TLS(), "clickhouse", cfg.ClickHouseAddr, "database", cfg.ClickHouseDatabase, "cluster", cfg.ClickHouseCluster)
	if cfg.PprofAddr != "" {
		_, stopPprof, err := servePprof(cfg.PprofAddr, logger)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	// ClickHouse may start after pyramid (a sidecar races its peers), so the schema is
	// applied in the background until it works; writes get 503 until then.
	migrateErr := make(chan error, 1)
	go migrateUntilDone(ctx, cfg, conn, st, srv, mat, logger, migrateErr)

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve HTTP: %w", err)
	case err := <-migrateErr:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down: finishing requests and inserting accepted rows", "timeout", cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Stop taking requests first; requests already in progress wait for their batches,
	// which Close then inserts.
	httpErr := httpSrv.Shutdown(shutdownCtx)
	closeErr := srv.Close(shutdownCtx)
	if err := errors.Join(httpErr, closeErr); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	logger.Info("shut down cleanly")
	return nil
}

// migrateUntilDone applies the schema, retrying with backoff while ClickHouse is away,
// then opens the write path, starts the rollup materializer and, on servers without TTL,
// enforces raw retention. An error no retry can mend goes to fatal, which ends pyramid.
func migrateUntilDone(ctx context.Context, cfg config, conn driver.Conn, st *store.Store, srv *adapter.Server, mat *materialize.Materializer, logger *slog.Logger, fatal chan<- error) {
	backoff := time.Second
	var info schema.Info
	for {
		var err error
		info, err = schema.Migrate(ctx, conn, cfg.schemaConfig(), logger)
		if err == nil {
			break
		}
		if errors.Is(err, schema.ErrPlacement) {
			fatal <- err
			return
		}
		logger.Warn("schema not applied yet; retrying", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	srv.SchemaReady()
	go mat.Run(ctx)
	go dropExpiredRollups(ctx, cfg, st, logger)
	logger.Info("schema is current; accepting writes", "server", info.Server.String(), "dialect", info.Dialect.String(), "version", info.Schema)
	if info.Dialect.TTL() || cfg.rawRetention() == 0 {
		return
	}
	ticker := time.NewTicker(cfg.RetentionInterval)
	defer ticker.Stop()
	for {
		dropped, err := st.DropExpiredRaw(ctx, time.Now())
		if err != nil {
			logger.Error("drop expired raw partitions", "err", err)
		} else if len(dropped) > 0 {
			logger.Info("dropped expired raw partitions", "days", dropped, "retention", cfg.rawRetention())
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// dropExpiredRollups enforces the rollup tiers' retention every RetentionInterval, on
// every server version: the rollups table keeps all tiers, so no TTL could tell them apart.
func dropExpiredRollups(ctx context.Context, cfg config, st *store.Store, logger *slog.Logger) {
	ticker := time.NewTicker(cfg.RetentionInterval)
	defer ticker.Stop()
	for {
		dropped, err := st.DropExpiredRollups(ctx, time.Now())
		if err != nil && ctx.Err() == nil {
			logger.Error("drop expired rollup partitions", "err", err)
		} else if len(dropped) > 0 {
			logger.Info("dropped expired rollup partitions", "partitions", dropped)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
