package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/docker/go-units"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/pyramid-metrics/pyramid/adapter/backfill"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/schema"
)

// backfillConfig parses `pyramid backfill [flags] PATH`.
func backfillConfig(args []string, cfg config, out io.Writer) (backfill.Config, error) {
	fs := flag.NewFlagSet("pyramid backfill", flag.ContinueOnError)
	fs.SetOutput(out)
	var (
		minTime, maxTime string
		matches          stringList
		bc               = backfill.Config{MinTime: math.MinInt64, MaxTime: math.MaxInt64, Tiers: cfg.tiers}
	)
	fs.StringVar(&minTime, "min-time", "", "import no sample before this time (RFC 3339, or Unix seconds); samples older than raw retention go into the rollup tiers that keep them")
	fs.StringVar(&maxTime, "max-time", "", "import no sample after this time (RFC 3339, or Unix seconds)")
	fs.Var(&matches, "match", `series selector of the series to import, such as '{job="node"}' (repeatable: a series matching any is imported; none imports every series)`)
	fs.IntVar(&bc.BatchRows, "batch-rows", 500_000, "rows held in memory and inserted at once")
	fs.Float64Var(&bc.RateLimit, "rate-limit", 0, "rows inserted per second at most, to leave ClickHouse room for live ingest; 0 is no limit")
	fs.StringVar(&bc.RemoteRead, "from-remote-read", "", "instead of PATH, the remote-read URL of a running Prometheus (such as http://prometheus:9090/api/v1/read), read a day at a time from --min-time")
	fs.StringVar(&bc.MetadataURL, "metadata-url", "", "with --from-remote-read, where the source's metric metadata is fetched from (default: the remote-read URL with /api/v1/metadata for /api/v1/read)")
	fs.Usage = func() {
		fmt.Fprintln(out, "usage: pyramid backfill [flags] PATH\n       pyramid backfill [flags] --from-remote-read URL --min-time T\n\nImports the blocks of a Prometheus data directory or snapshot at PATH, or what a running\nPrometheus serves through remote read, into ClickHouse, with the metric metadata the source\nhas: the metadata records of the data directory's WAL, or the running Prometheus's\n/api/v1/metadata.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return bc, err
	}
	switch {
	case bc.RemoteRead == "" && fs.NArg() != 1:
		fs.Usage()
		return bc, fmt.Errorf("backfill takes one path, got %d arguments", fs.NArg())
	case bc.RemoteRead != "" && fs.NArg() != 0:
		return bc, fmt.Errorf("backfill takes a path or --from-remote-read, not both")
	case bc.RemoteRead == "":
		bc.Path = fs.Arg(0)
	}
	var err error
	if bc.MinTime, err = parseTime(minTime, math.MinInt64); err != nil {
		return bc, fmt.Errorf("--min-time: %w", err)
	}
	if bc.MaxTime, err = parseTime(maxTime, math.MaxInt64); err != nil {
		return bc, fmt.Errorf("--max-time: %w", err)
	}
	if len(matches) > 1 {
		return bc, fmt.Errorf("--match given %d times; one selector is supported", len(matches))
	}
	for _, m := range matches {
		sel, err := parser.NewParser(parser.Options{}).ParseMetricSelector(m)
		if err != nil {
			return bc, fmt.Errorf("--match %q: %w", m, err)
		}
		bc.Matchers = sel
	}
	return bc, bc.Validate()
}

// parseTime reads RFC 3339 or Unix seconds; empty is def.
func parseTime(s string, def int64) (int64, error) {
	if s == "" {
		return def, nil
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		return int64(math.Round(secs * 1000)), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither RFC 3339 nor Unix seconds", s)
	}
	return t.UnixMilli(), nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return fmt.Sprint(*l) }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// runBackfill applies the schema and imports the blocks.
func runBackfill(ctx context.Context, cfg config, args []string, out io.Writer, conn driver.Conn, logger *slog.Logger) error {
	bc, err := backfillConfig(args, cfg, out)
	if err != nil {
		return err
	}
	if _, err := schema.Migrate(ctx, conn, cfg.schemaConfig(), logger); err != nil {
		return err
	}
	st, err := store.New(cfg.storeConfig(), conn, logger, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar := progressbar.NewOptions64(-1, progressbar.OptionSetWriter(out), progressbar.OptionShowCount(),
			progressbar.OptionShowIts(), progressbar.OptionSetItsString("samples"), progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
		defer bar.Close()
		bc.Progress = func(p backfill.Progress) {
			if p.ReadTotal > 0 && bar.GetMax64() != p.ReadTotal {
				bar.ChangeMax64(p.ReadTotal)
			}
			bar.Describe(fmt.Sprintf("backfill: %d of %d", p.Units, p.UnitsTotal))
			_ = bar.Set64(p.Read)
		}
	}
	sum, err := backfill.Run(ctx, bc, st, logger)
	logger.Info("backfill: done", "blocks", sum.Blocks, "skipped_blocks", sum.Skipped, "series", sum.Series,
		"samples", sum.Samples, "histograms", sum.Histograms, "older_than_raw_retention", sum.ToTiers,
		"rollup_rows", sum.Rollups, "metadata", sum.Metadata, "metadata_failures", sum.MetadataFailures,
		"bytes_read", units.BytesSize(float64(sum.BytesRead)), "bytes_sent", units.BytesSize(float64(sum.BytesSent)),
		"seconds", math.Round(sum.Elapsed.Seconds()*10)/10)
	return err
}
