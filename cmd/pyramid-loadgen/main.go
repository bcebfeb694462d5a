// Command pyramid-loadgen measures pyramid's write path in one run:
//
//  1. ingest: realistic node-exporter traffic sent as Prometheus 2.44+ remote-write 1.0
//     requests (2,000 samples each, one sample per TimeSeries, time-ordered, one sender per
//     shard of series) to pyramid, with retries like Prometheus;
//  2. direct: the same rows inserted straight into ClickHouse with pyramid's own insert
//     functions (store.InsertSeries / InsertSamples), batch size and concurrency, into a
//     second database with the same schema: the physical limit pyramid could reach;
//  3. storage: bytes per sample after OPTIMIZE FINAL, in total and per column.
//
// With -histograms, each target also has native histogram series (request latencies,
// exponential or custom buckets, see hist.go), sent 2,000 histograms a request. Each phase
// then runs twice, float series first and histogram series second, measured apart, and
// the storage phase reports the histograms table too.
//
// Request bodies and direct batches are generated before their phase's clock starts
// (-pregenerate, the default), so on a small machine the generator does not compete with
// pyramid and ClickHouse for CPU.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/schema"
)

type options struct {
	url                string
	clickhouseAddr     string
	clickhouseUser     string
	clickhousePassword string
	database           string
	directDatabase     string
	targets            int
	seriesPerTarget    int
	scrapes            int
	interval           time.Duration
	endMs              int64
	seed               uint64
	resetProb          float64
	job                string
	gauges             string
	histograms         int
	histogramKind      string
	samplesPerRequest  int
	concurrency        int
	batchRows          int
	directWorkers      int
	rawRetention       time.Duration
	receiver           string
	waitRollups        bool
	rollupWidth        time.Duration
	rollupSettle       time.Duration
	pyramidPID         int
	prometheusPID      int
	clickhousePID      int
	skipDirect         bool
	skipIngest         bool
	skipStorage        bool
	pregenerate        bool
	pipelineDepth      int
	maxRetries         int
	timeout            time.Duration
	readyTimeout       time.Duration
	settleTimeout      time.Duration
	compressionLabel   string
	jsonOut            bool
	jsonFile           string
	cpuProfile         string
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("pyramid-loadgen", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:9201/api/v1/write", "pyramid's remote-write URL")
	fs.StringVar(&o.clickhouseAddr, "clickhouse-addr", "127.0.0.1:9000", "ClickHouse native-protocol address pyramid writes to")
	fs.StringVar(&o.clickhouseUser, "clickhouse-user", "default", "ClickHouse user")
	fs.StringVar(&o.clickhousePassword, "clickhouse-password", "", "ClickHouse password")
	fs.StringVar(&o.database, "database", "pyramid", "pyramid's database")
	fs.StringVar(&o.directDatabase, "direct-database", "", `database for the direct inserts, dropped and recreated at start (default "<database>_direct")`)
	fs.IntVar(&o.targets, "targets", 50, "scrape targets (job/instance pairs)")
	fs.IntVar(&o.seriesPerTarget, "series-per-target", 100, "float series per target")
	fs.IntVar(&o.scrapes, "scrapes", 2000, "samples per series (scrapes), history ending now")
	fs.DurationVar(&o.interval, "interval", 15*time.Second, "scrape interval")
	fs.Int64Var(&o.endMs, "end-ms", 0, "timestamp (ms) the history ends at; 0 = now")
	fs.Uint64Var(&o.seed, "seed", 1, "generation seed: same seed (and -end-ms), same data")
	fs.Float64Var(&o.resetProb, "reset-probability", 0.0005, "per target and scrape: probability of a restart that resets its counters")
	fs.StringVar(&o.job, "job", "node", "job label of every target")
	fs.StringVar(&o.gauges, "gauges", "realistic", `gauge values: "realistic" (rounded like node exporter: bytes to KiB/pages, load to 0.01, temperatures and counts to 1; 2 of 28 gauges full doubles) or "full" (every gauge an arbitrary double: worst case for compression)`)
	fs.IntVar(&o.histograms, "histograms", 0, "native histogram series per target, besides -series-per-target float series (0: none); sent and measured apart from the floats")
	fs.StringVar(&o.histogramKind, "histogram-kind", histKindExponential, `native histograms: "exponential" (client_golang's schema 3), "custom" (classic buckets converted to custom buckets, schema -53) or "both"`)
	fs.IntVar(&o.samplesPerRequest, "samples-per-request", 2000, "samples, or histograms, per remote-write request (Prometheus 2.44+: 2000)")
	fs.IntVar(&o.concurrency, "concurrency", 4, "concurrent senders, each owning a shard of series")
	fs.IntVar(&o.batchRows, "batch-rows", 100000, "rows per direct insert (pyramid's PYRAMID_BATCH_ROWS)")
	fs.IntVar(&o.directWorkers, "direct-workers", 2, "concurrent direct inserts (pyramid's PYRAMID_INSERT_WORKERS)")
	fs.DurationVar(&o.rawRetention, "raw-retention", 720*time.Hour, "raw retention the direct database is migrated with (the raw tier of pyramid's PYRAMID_TIERS)")
	fs.StringVar(&o.receiver, "receiver", receiverPyramid, `what -url is: "pyramid", or "prometheus" (a Prometheus with --web.enable-remote-write-receiver: the ingest phase only, nothing read from ClickHouse)`)
	fs.IntVar(&o.pyramidPID, "pyramid-pid", 0, "pyramid's pid, for peak RSS (VmHWM, sampled VmRSS) and CPU time")
	fs.BoolVar(&o.waitRollups, "wait-rollups", true, "after the ingest, also measure until pyramid's materializer has computed every settled unit, so that the rollup work of the ingested samples is counted whenever its cycles fall (at most -settle-timeout)")
	fs.DurationVar(&o.rollupWidth, "rollup-width", time.Hour, "pyramid's work-unit width, its coarsest tier (PYRAMID_TIERS)")
	fs.DurationVar(&o.rollupSettle, "rollup-settle", time.Minute, "pyramid's PYRAMID_ROLLUP_SETTLE")
	fs.IntVar(&o.prometheusPID, "prometheus-pid", 0, "with -receiver prometheus: Prometheus's pid, for its peak RSS and CPU time")
	fs.IntVar(&o.clickhousePID, "clickhouse-pid", 0, "clickhouse-server's pid, for its RSS and CPU time (optional)")
	fs.BoolVar(&o.skipDirect, "skip-direct", false, "skip the direct-insert phase")
	fs.BoolVar(&o.skipIngest, "skip-ingest", false, "skip the ingest-through-pyramid phase")
	fs.BoolVar(&o.skipStorage, "skip-storage", false, "skip OPTIMIZE FINAL and the storage report")
	fs.BoolVar(&o.pregenerate, "pregenerate", true, "encode every request body before the clock starts (false: a generation pipeline per sender)")
	fs.IntVar(&o.pipelineDepth, "pipeline-depth", 32, "requests buffered per sender with -pregenerate=false")
	fs.IntVar(&o.maxRetries, "max-retries", 100, "retries of one request before giving up")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "timeout of one HTTP attempt (Prometheus remote_timeout)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 60*time.Second, "how long to wait for pyramid's /-/ready")
	fs.DurationVar(&o.settleTimeout, "settle-timeout", 120*time.Second, "longest wait for ClickHouse merges to finish between phases")
	fs.StringVar(&o.compressionLabel, "compression-label", "", "compression the server is configured with, printed as given (it is also detected from a column file when the data directory is readable)")
	fs.BoolVar(&o.jsonOut, "json", false, "also print one JSON object with every figure at the end")
	fs.StringVar(&o.jsonFile, "json-file", "", "also write that JSON object to this file (read by the summarize command)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the loadgen to this file")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: pyramid-loadgen [flags]\n       pyramid-loadgen summarize RESULT.json...\n\nMeasures ingest through pyramid, direct ClickHouse inserts of the same rows, and bytes per sample;\nsummarize compares the -json-file results of runs against pyramid and Prometheus.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if o.directDatabase == "" {
		o.directDatabase = o.database + "_direct"
	}
	if o.receiver == receiverPrometheus {
		// Prometheus keeps its samples in its own TSDB: there is nothing to insert
		// directly or to measure in ClickHouse.
		o.skipDirect, o.skipStorage = true, true
	}
	switch {
	case o.samplesPerRequest <= 0 || o.concurrency <= 0 || o.batchRows <= 0 || o.directWorkers <= 0:
		return o, errors.New("-samples-per-request, -concurrency, -batch-rows and -direct-workers must be positive")
	case o.directDatabase == o.database:
		return o, errors.New("-direct-database must differ from -database: it is dropped at start")
	case o.gauges != "realistic" && o.gauges != "full":
		return o, fmt.Errorf("-gauges %q: want realistic or full", o.gauges)
	case o.pipelineDepth <= 0 || o.maxRetries < 0:
		return o, errors.New("-pipeline-depth must be positive and -max-retries not negative")
	case o.receiver != receiverPyramid && o.receiver != receiverPrometheus:
		return o, fmt.Errorf("-receiver %q: want %s or %s", o.receiver, receiverPyramid, receiverPrometheus)
	case o.histogramKind != histKindExponential && o.histogramKind != histKindCustom && o.histogramKind != histKindBoth:
		return o, fmt.Errorf("-histogram-kind %q: want %s, %s or %s", o.histogramKind, histKindExponential, histKindCustom, histKindBoth)
	}
	for _, db := range []string{o.database, o.directDatabase} {
		if err := (schema.Config{Database: db}).Validate(); err != nil {
			return o, err
		}
	}
	return o, nil
}

// config is what one run generated and how it sent it.
type config struct {
	Targets           int            `json:"targets"`
	SeriesPerTarget   int            `json:"series_per_target"`
	Series            int            `json:"series"`
	Scrapes           int            `json:"scrapes"`
	Samples           int            `json:"samples"`
	IntervalMs        int64          `json:"interval_ms"`
	FirstTsMs         int64          `json:"first_ts_ms"`
	EndMs             int64          `json:"end_ms"`
	Seed              uint64         `json:"seed"`
	ResetProbability  float64        `json:"reset_probability"`
	SamplesPerRequest int            `json:"samples_per_request"`
	Concurrency       int            `json:"concurrency"`
	BatchRows         int            `json:"batch_rows"`
	DirectWorkers     int            `json:"direct_workers"`
	Pregenerate       bool           `json:"pregenerate"`
	Gauges            string         `json:"gauges"`
	Mix               map[string]int `json:"series_mix"`
	Histograms        int            `json:"histograms_per_target"`
	HistogramKind     string         `json:"histogram_kind,omitempty"`
	HistogramSamples  int            `json:"histogram_samples"`
}

// result is everything one run measured; -json prints it.
type result struct {
	Config  config `json:"config"`
	Machine struct {
		NumCPU     int    `json:"num_cpu"`
		GOMAXPROCS int    `json:"gomaxprocs"`
		Note       string `json:"note"`
	} `json:"machine"`
	// Receiver is -receiver: what the ingest phase wrote to.
	Receiver            string        `json:"receiver"`
	ServerVersion       string        `json:"server_version"`
	Compression         string        `json:"compression"`
	CompressionLabel    string        `json:"compression_label,omitempty"`
	Ingest              *ingestResult `json:"ingest,omitempty"`
	SettleSeconds       float64       `json:"settle_seconds"`
	MergesLeft          uint64        `json:"merges_left_at_direct_start"`
	Direct              *directResult `json:"direct,omitempty"`
	IngestToDirectRatio float64       `json:"ingest_to_direct_ratio,omitempty"`
	RowsBefore          uint64        `json:"pyramid_rows_before_ingest"`
	// The histogram series' phases, run after the float series' ones.
	IngestHistograms        *ingestResult `json:"ingest_histograms,omitempty"`
	DirectHistograms        *directResult `json:"direct_histograms,omitempty"`
	HistIngestToDirectRatio float64       `json:"histograms_ingest_to_direct_ratio,omitempty"`
	HistogramRowsBefore     uint64        `json:"pyramid_histogram_rows_before_ingest"`
	// Storage holds the samples table of each database, then the histograms table of each.
	Storage []*storageResult `json:"storage,omitempty"`
	Checks  []string         `json:"checks"`
}

func main() {
	run := run
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "summarize" {
		run, args = func(files []string) error { return summarize(files, os.Stdout) }, args[1:]
	}
	if err := run(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "pyramid-loadgen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	o, err := parseFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	end := o.endMs
	if end == 0 {
		end = time.Now().UnixMilli()
	}
	gc := genConfig{Seed: o.seed, Targets: o.targets, SeriesPerTarget: o.seriesPerTarget, Scrapes: o.scrapes,
		IntervalMs: o.interval.Milliseconds(), EndMs: end, ResetProb: o.resetProb, Job: o.job,
		FullPrecisionGauges: o.gauges == "full", Histograms: o.histograms, HistogramKind: o.histogramKind}
	p, err := newPlan(gc)
	if err != nil {
		return err
	}

	var res result
	c := &res.Config
	c.Targets, c.SeriesPerTarget, c.Series, c.Scrapes, c.Samples = o.targets, o.seriesPerTarget, p.totalSeries(), o.scrapes, p.totalSamples()
	c.IntervalMs, c.EndMs, c.Seed, c.ResetProbability = gc.IntervalMs, end, o.seed, o.resetProb
	c.SamplesPerRequest, c.Concurrency, c.BatchRows, c.DirectWorkers, c.Pregenerate = o.samplesPerRequest, o.concurrency, o.batchRows, o.directWorkers, o.pregenerate
	c.FirstTsMs = end
	c.Gauges = o.gauges
	c.Histograms, c.HistogramSamples = o.histograms, p.totalHistograms()
	if o.histograms > 0 {
		c.HistogramKind = o.histogramKind
	}
	c.Mix = map[string]int{}
	for _, t := range p.targets {
		c.FirstTsMs = min(c.FirstTsMs, scrapeTs(t.last, gc.IntervalMs, 0, gc.Scrapes))
		for _, d := range t.series {
			c.Mix[d.spec.kind.String()]++
		}
	}
	res.Machine.NumCPU, res.Machine.GOMAXPROCS = runtime.NumCPU(), runtime.GOMAXPROCS(0)
	res.Machine.Note = fmt.Sprintf("loadgen, pyramid and ClickHouse share %d CPUs", runtime.NumCPU())
	res.CompressionLabel = o.compressionLabel

	res.Receiver = o.receiver
	var conn driver.Conn
	if o.receiver == receiverPyramid {
		conn, err = clickhouse.Open(&clickhouse.Options{
			Addr:         strings.Split(o.clickhouseAddr, ","),
			Auth:         clickhouse.Auth{Database: "default", Username: o.clickhouseUser, Password: o.clickhousePassword},
			DialTimeout:  5 * time.Second,
			MaxOpenConns: o.directWorkers + 4,
			MaxIdleConns: o.directWorkers + 4,
		})
		if err != nil {
			return fmt.Errorf("open ClickHouse %s: %w", o.clickhouseAddr, err)
		}
		defer conn.Close()
		v, err := schema.ServerVersion(ctx, conn)
		if err != nil {
			return err
		}
		res.ServerVersion = v.String()
	} else {
		res.Machine.Note = fmt.Sprintf("loadgen and Prometheus share %d CPUs", runtime.NumCPU())
	}
	logger.Info("plan", "series", c.Series, "samples", c.Samples, "histograms", c.HistogramSamples,
		"from", time.UnixMilli(c.FirstTsMs).UTC(), "to", time.UnixMilli(end).UTC(), "mix", c.Mix, "clickhouse", res.ServerVersion)

	// The float series' phase first, then the histogram series'.
	type part struct {
		name   string
		keep   func(*seriesDef) bool
		ingest **ingestResult
		direct **directResult
	}
	var parts []part
	if p.totalSamples() > 0 {
		parts = append(parts, part{"floats", floatSeries, &res.Ingest, &res.Direct})
	}
	if p.totalHistograms() > 0 {
		parts = append(parts, part{"histograms", histogramSeries, &res.IngestHistograms, &res.DirectHistograms})
	}
	// settle waits for the previous phase's merges, so that they do not eat into the next
	// phase's measurement.
	settle := func(db string) (time.Duration, uint64, error) {
		st, err := openStore(conn, db, logger)
		if err != nil {
			return 0, 0, err
		}
		waited, left, err := waitMerges(ctx, st, o.settleTimeout)
		if err != nil {
			return 0, 0, err
		}
		logger.Info("merges settled", "waited", waited.Round(time.Millisecond), "merges_left", left)
		return waited, left, nil
	}
	if !o.skipIngest {
		if conn != nil {
			if err := rowsBefore(ctx, o, conn, &res, logger); err != nil {
				return fmt.Errorf("ingest: %w", err)
			}
		}
		for i, pt := range parts {
			if i > 0 && conn != nil {
				if _, _, err := settle(o.database); err != nil {
					return err
				}
			}
			ir, err := phaseIngest(ctx, o, p, pt.name, pt.keep, conn, logger)
			*pt.ingest = ir
			if err != nil {
				return fmt.Errorf("ingest: %w", err)
			}
			debug.FreeOSMemory()
		}
	}
	if !o.skipDirect {
		if !o.skipIngest {
			waited, left, err := settle(o.database)
			if err != nil {
				return err
			}
			res.SettleSeconds, res.MergesLeft = waited.Seconds(), left
		}
		if err := resetDatabase(ctx, conn, o.directDatabase, o.rawRetention, logger); err != nil {
			return fmt.Errorf("direct: %w", err)
		}
		for i, pt := range parts {
			if i > 0 {
				if _, _, err := settle(o.directDatabase); err != nil {
					return err
				}
			}
			dr, err := phaseDirect(ctx, o, p, pt.keep, conn, logger)
			if err != nil {
				return fmt.Errorf("direct: %w", err)
			}
			*pt.direct = dr
			debug.FreeOSMemory()
		}
	}
	if res.Ingest != nil && res.Direct != nil && res.Direct.RowsPerSec > 0 {
		res.IngestToDirectRatio = res.Ingest.SamplesPerSec / res.Direct.RowsPerSec
	}
	if res.IngestHistograms != nil && res.DirectHistograms != nil && res.DirectHistograms.RowsPerSec > 0 {
		res.HistIngestToDirectRatio = res.IngestHistograms.HistogramsPerSec / res.DirectHistograms.RowsPerSec
	}
	if !o.skipStorage {
		if err := phaseStorage(ctx, o, p, conn, &res, logger); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
	}
	printReport(os.Stdout, &res)
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		if err := enc.Encode(&res); err != nil {
			return err
		}
	}
	if o.jsonFile != "" {
		data, err := json.Marshal(&res)
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonFile, append(data, '\n'), 0o644); err != nil {
			return fmt.Errorf("write -json-file: %w", err)
		}
	}
	return nil
}

// ingestRequests prepares each sender's requests for the series keep selects: all of them
// up front (pregenerate) or through a bounded pipeline per sender.
func ingestRequests(ctx context.Context, o options, p *plan, keep func(*seriesDef) bool) (next func(int) (request, bool), total int) {
	shards := o.concurrency
	if o.pregenerate {
		all := make([][]request, shards)
		var wg sync.WaitGroup
		sem := make(chan struct{}, runtime.GOMAXPROCS(0))
		for sh := range shards {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				p.shardRequests(sh, shards, o.samplesPerRequest, keep, func(r request) { all[sh] = append(all[sh], r) })
			}()
		}
		wg.Wait()
		pos := make([]int, shards)
		for _, rs := range all {
			total += len(rs)
		}
		return func(sh int) (request, bool) {
			if pos[sh] >= len(all[sh]) {
				return request{}, false
			}
			r := all[sh][pos[sh]]
			all[sh][pos[sh]] = request{} // let the body go once sent
			pos[sh]++
			return r, true
		}, total
	}
	chans := make([]chan request, shards)
	for sh := range shards {
		chans[sh] = make(chan request, o.pipelineDepth)
		go func() {
			defer close(chans[sh])
			p.shardRequests(sh, shards, o.samplesPerRequest, keep, func(r request) {
				select {
				case chans[sh] <- r:
				case <-ctx.Done():
				}
			})
		}()
	}
	return func(sh int) (request, bool) {
		r, ok := <-chans[sh]
		return r, ok
	}, -1
}

// rowsBefore counts what pyramid's database holds before the ingest phase: storage figures
// then include those rows.
func rowsBefore(ctx context.Context, o options, conn driver.Conn, res *result, logger *slog.Logger) error {
	st, err := openStore(conn, o.database, logger)
	if err != nil {
		return err
	}
	if ok, err := st.TableExists(ctx, schema.TableSamples); err != nil {
		return err
	} else if ok {
		if res.RowsBefore, err = st.CountSamples(ctx); err != nil {
			return err
		}
		if res.RowsBefore > 0 {
			logger.Warn("pyramid's samples table is not empty: storage figures will include earlier rows", "rows", res.RowsBefore)
		}
	}
	if ok, err := st.TableExists(ctx, schema.TableHistograms); err != nil {
		return err
	} else if ok {
		parts, err := st.HistogramsParts(ctx)
		if err != nil {
			return err
		}
		if res.HistogramRowsBefore = parts.Rows; parts.Rows > 0 {
			logger.Warn("pyramid's histograms table is not empty: storage figures will include earlier rows", "rows", parts.Rows)
		}
	}
	return nil
}

// phaseIngest sends the requests of the series keep selects to pyramid and measures.
func phaseIngest(ctx context.Context, o options, p *plan, name string, keep func(*seriesDef) bool, conn driver.Conn, logger *slog.Logger) (*ingestResult, error) {
	client := &http.Client{
		Timeout: o.timeout,
		Transport: &http.Transport{
			MaxIdleConns:        o.concurrency * 2,
			MaxIdleConnsPerHost: o.concurrency * 2,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	if err := waitReady(ctx, client, o.url, o.readyTimeout); err != nil {
		return nil, err
	}

	ir := &ingestResult{Series: name, Receiver: o.receiver}
	t0 := time.Now()
	next, n := ingestRequests(ctx, o, p, keep)
	ir.PregenSeconds = time.Since(t0).Seconds()
	if o.pregenerate {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		logger.Info("request bodies encoded", "series", ir.Series, "requests", n, "took", time.Since(t0).Round(time.Millisecond), "heap_mib", ms.HeapAlloc>>20)
	}

	var pw, mw, cw *procWatcher
	var err error
	if o.pyramidPID > 0 {
		if pw, err = watchProc(o.pyramidPID, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if o.prometheusPID > 0 {
		if mw, err = watchProc(o.prometheusPID, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if o.clickhousePID > 0 {
		if cw, err = watchProc(o.clickhousePID, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
	s := &sender{client: client, url: o.url, userAgent: "Prometheus/2.53.0 (pyramid-loadgen)", maxRetries: o.maxRetries, statuses: map[string]int64{}}
	logger.Info("ingest started", "series", ir.Series, "url", o.url, "senders", o.concurrency)
	cpu0 := selfCPUSeconds()
	err = runSenders(ctx, s, o.concurrency, next, ir)
	ir.LoadgenCPUSec = selfCPUSeconds() - cpu0
	if err == nil && o.receiver == receiverPyramid && o.waitRollups && conn != nil && pw != nil && cw != nil {
		ir.Pyramid, ir.ClickHouse = pw.snapshot(), cw.snapshot()
		t0 := time.Now()
		// Without the figures until the rollups caught up, the run still has the ingest's.
		if err := waitRollups(ctx, conn, o, logger); err != nil {
			logger.Warn("no figures until the rollups caught up", "err", err)
		} else {
			ir.RollupsCaughtUpSeconds = time.Since(t0).Seconds()
			ir.PyramidWithRollups, ir.ClickHouseWithRollups = pw.finish(), cw.finish()
			pw, cw = nil, nil
		}
	}
	if pw != nil {
		if st := pw.finish(); ir.Pyramid == nil {
			ir.Pyramid = st
		}
	}
	if mw != nil {
		ir.Prometheus = mw.finish()
	}
	if cw != nil {
		if st := cw.finish(); ir.ClickHouse == nil {
			ir.ClickHouse = st
		}
	}
	if err != nil {
		return ir, err
	}
	logger.Info("ingest done", "series", ir.Series, "samples", ir.Samples, "histograms", ir.Histograms, "seconds", fmt.Sprintf("%.1f", ir.WallSeconds),
		"rows_per_sec", fmt.Sprintf("%.0f", ir.SamplesPerSec+ir.HistogramsPerSec))
	return ir, nil
}

// waitRollups waits until pyramid's materializer has computed every unit that has settled,
// polling the units pending in pyramid's database, for at most -settle-timeout.
func waitRollups(ctx context.Context, conn driver.Conn, o options, logger *slog.Logger) error {
	st, err := openStore(conn, o.database, logger)
	if err != nil {
		return err
	}
	width := o.rollupWidth.Milliseconds()
	deadline := time.Now().Add(o.settleTimeout)
	for {
		latest := time.Now().Add(-o.rollupSettle).UnixMilli() - width
		pending, err := st.PendingUnits(ctx, width, -1<<62, latest, 1)
		if err != nil {
			return fmt.Errorf("wait for rollups: %w", err)
		}
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rollups not caught up %s after the ingest: units from %s still pending", o.settleTimeout, time.UnixMilli(pending[0].Start).UTC())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// phaseDirect inserts the rows of the series keep selects straight into the direct
// database, which the caller has reset, and measures.
func phaseDirect(ctx context.Context, o options, p *plan, keep func(*seriesDef) bool, conn driver.Conn, logger *slog.Logger) (*directResult, error) {
	dr := &directResult{Database: o.directDatabase, BatchRows: o.batchRows}
	t0 := time.Now()
	var batches []*adapter.Batch
	p.directBatches(o.batchRows, keep, func(b *adapter.Batch) {
		batches = append(batches, b)
		dr.Samples += b.Samples()
		dr.Histograms += len(b.Histograms)
		dr.SeriesRows += len(b.Series)
	})
	dr.Batches = len(batches)
	dr.PregenSeconds = time.Since(t0).Seconds()
	logger.Info("direct batches built", "batches", dr.Batches, "samples", dr.Samples, "histograms", dr.Histograms,
		"series_rows", dr.SeriesRows, "took", time.Since(t0).Round(time.Millisecond))

	var cw *procWatcher
	var err error
	if o.clickhousePID > 0 {
		if cw, err = watchProc(o.clickhousePID, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
	cpu0 := selfCPUSeconds()
	st, err := openStore(conn, o.directDatabase, logger)
	if err != nil {
		return nil, err
	}
	err = insertDirect(ctx, st, batches, o.directWorkers, dr)
	dr.LoadgenCPUSec = selfCPUSeconds() - cpu0
	if cw != nil {
		dr.ClickHouse = cw.finish()
	}
	if err != nil {
		return nil, err
	}
	logger.Info("direct done", "rows", dr.Samples+dr.Histograms, "seconds", fmt.Sprintf("%.1f", dr.WallSeconds), "rows_per_sec", fmt.Sprintf("%.0f", dr.RowsPerSec))
	return dr, nil
}

func phaseStorage(ctx context.Context, o options, p *plan, conn driver.Conn, res *result, logger *slog.Logger) error {
	var dbs []string
	if !o.skipIngest {
		dbs = append(dbs, o.database)
	}
	if !o.skipDirect {
		dbs = append(dbs, o.directDatabase)
	}
	if len(dbs) == 0 { // both phases skipped: report whatever pyramid's database holds
		dbs = append(dbs, o.database)
	}
	// Each table holds what was generated for it, plus what pyramid's database held before.
	type table struct {
		name         string
		want, before uint64
	}
	tables := []table{{schema.TableSamples, uint64(p.totalSamples()), res.RowsBefore}}
	if p.totalHistograms() > 0 {
		tables = append(tables, table{schema.TableHistograms, uint64(p.totalHistograms()), res.HistogramRowsBefore})
	}
	var first *store.Store
	for _, tb := range tables {
		var measured []*storageResult
		for _, db := range dbs {
			st, err := openStore(conn, db, logger)
			if err != nil {
				return err
			}
			ok, err := st.TableExists(ctx, tb.name)
			if err != nil {
				return err
			}
			if !ok {
				logger.Warn("no such table; skipping", "database", db, "table", tb.name)
				continue
			}
			logger.Info("OPTIMIZE FINAL", "database", db, "table", tb.name)
			sr, err := measureStorage(ctx, st, db, tb.name)
			if err != nil {
				return err
			}
			res.Storage = append(res.Storage, sr)
			measured = append(measured, sr)
			if first == nil && tb.name == schema.TableSamples {
				first = st
			}
			expect := tb.want
			if db == o.database {
				expect += tb.before
			}
			if sr.Rows == expect {
				res.Checks = append(res.Checks, fmt.Sprintf("OK   %s.%s: %d rows after OPTIMIZE FINAL, as generated", db, tb.name, sr.Rows))
			} else {
				res.Checks = append(res.Checks, fmt.Sprintf("FAIL %s.%s: %d rows after OPTIMIZE FINAL, generated %d", db, tb.name, sr.Rows, expect))
			}
		}
		if len(measured) == 2 && tb.before == 0 {
			a, b := measured[0], measured[1]
			if a.Checksum == b.Checksum {
				res.Checks = append(res.Checks, fmt.Sprintf("OK   %[1]s.%[2]s and %[3]s.%[2]s hold identical rows (checksum %016[4]x)", a.Database, tb.name, b.Database, a.Checksum))
			} else {
				res.Checks = append(res.Checks, fmt.Sprintf("FAIL %[1]s.%[2]s and %[3]s.%[2]s differ (checksums %016[4]x, %016[5]x)", a.Database, tb.name, b.Database, a.Checksum, b.Checksum))
			}
		}
	}
	if first != nil && p.totalSamples() > 0 {
		comp, err := detectCompression(ctx, first)
		if err != nil {
			logger.Warn("cannot detect the server's compression from its files", "err", err)
			comp = "unknown"
		} else {
			comp += " (from the block header of value.bin)"
		}
		res.Compression = comp
	}
	return nil
}

// ---- report -----------------------------------------------------------------------------

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// printProc prints a process's figures over a phase that stored rows rows (samples or
// histograms), with its CPU time per million of them.
func printProc(tw io.Writer, name string, ps *procStats, wall float64, rows int) {
	if ps == nil {
		return
	}
	fmt.Fprintf(tw, "  %s (pid %d)\tVmHWM %s (process lifetime); VmRSS max %s during phase (start %s, end %s); CPU %.1f s = %.2f cores = %.1f s per million\n",
		name, ps.PID, mib(ps.VmHWMKiB), mib(ps.MaxRSSKiB), mib(ps.StartRSSKiB), mib(ps.EndRSSKiB), ps.CPUSeconds, ps.CPUSeconds/wall,
		ps.CPUSeconds/(float64(max(rows, 1))/1e6))
}

func printIngest(tw io.Writer, c *config, in *ingestResult) {
	unit, rows, rate := "samples", in.Samples, in.SamplesPerSec
	if in.Series == "histograms" {
		unit, rows, rate = "histograms", in.Histograms, in.HistogramsPerSec
	}
	fmt.Fprintf(tw, "ingest through %s: %s\n", in.Receiver, in.Series)
	fmt.Fprintf(tw, "  requests\t%d x <=%d %s from %d senders, %.1f MiB of snappy bodies (%.1f B each), generated in %.1f s before the clock\n",
		in.Requests, c.SamplesPerRequest, unit, in.Senders, float64(in.BodyBytes)/(1<<20), float64(in.BodyBytes)/float64(max(rows, 1)), in.PregenSeconds)
	fmt.Fprintf(tw, "  accepted\t%d %s in %.2f s = %.0f %[2]s/s (wall clock)\n", rows, unit, in.WallSeconds, rate)
	fmt.Fprintf(tw, "  latency\tp50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (2xx attempts); max with retries %.1f ms\n",
		in.LatencyP50Ms, in.LatencyP90Ms, in.LatencyP99Ms, in.LatencyMaxMs, in.EndToEndMaxMs)
	fmt.Fprintf(tw, "  retries\t%d %v\n", in.Retries, in.RetryStatuses)
	printProc(tw, "pyramid", in.Pyramid, in.WallSeconds, rows)
	printProc(tw, "prometheus", in.Prometheus, in.WallSeconds, rows)
	printProc(tw, "clickhouse", in.ClickHouse, in.WallSeconds, rows)
	if in.PyramidWithRollups != nil {
		fmt.Fprintf(tw, "  rollups\tcaught up %.1f s after the ingest; from the ingest's start until then:\n", in.RollupsCaughtUpSeconds)
		printProc(tw, "  pyramid", in.PyramidWithRollups, in.WallSeconds+in.RollupsCaughtUpSeconds, rows)
		printProc(tw, "  clickhouse", in.ClickHouseWithRollups, in.WallSeconds+in.RollupsCaughtUpSeconds, rows)
	}
	fmt.Fprintf(tw, "  loadgen\tCPU %.1f s = %.2f cores\n", in.LoadgenCPUSec, in.LoadgenCPUSec/in.WallSeconds)
}

func printDirect(tw io.Writer, r *result, d *directResult) {
	what, rows := "InsertSamples", d.Samples
	if d.Histograms > 0 {
		what, rows = "InsertHistograms", d.Histograms
	}
	fmt.Fprintf(tw, "direct inserts (store.InsertSeries/%s into %s)\n", what, d.Database)
	fmt.Fprintf(tw, "  batches\t%d x <=%d rows, %d series rows, %d workers; built in %.1f s before the clock",
		d.Batches, d.BatchRows, d.SeriesRows, d.Workers, d.PregenSeconds)
	if d == r.Direct || r.Direct == nil {
		fmt.Fprintf(tw, "; waited %.1f s for merges first (%d left)", r.SettleSeconds, r.MergesLeft)
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "  inserted\t%d rows in %.2f s = %.0f rows/s; batch p50 %.1f ms, max %.1f ms\n", rows, d.WallSeconds, d.RowsPerSec, d.BatchP50Ms, d.BatchMaxMs)
	printProc(tw, "clickhouse", d.ClickHouse, d.WallSeconds, rows)
	fmt.Fprintf(tw, "  loadgen\tCPU %.1f s = %.2f cores\n", d.LoadgenCPUSec, d.LoadgenCPUSec/d.WallSeconds)
}

func printReport(w io.Writer, r *result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	c := &r.Config
	fmt.Fprintf(tw, "pyramid-loadgen\n")
	fmt.Fprintf(tw, "  workload\t%d targets x %d series = %d series (%d counters, %d gauges, %d constants) x %d scrapes @ %dms = %d samples\n",
		c.Targets, c.SeriesPerTarget, c.Targets*c.SeriesPerTarget, c.Mix["counter"], c.Mix["gauge"], c.Mix["constant"], c.Scrapes, c.IntervalMs, c.Samples)
	if c.Histograms > 0 {
		fmt.Fprintf(tw, "  histograms\t%d targets x %d native histogram series = %d series (%d exponential schema %d, %d custom buckets) x %d scrapes = %d histograms\n",
			c.Targets, c.Histograms, c.Targets*c.Histograms, c.Mix["exponential"], expSchema, c.Mix["custom"], c.Scrapes, c.HistogramSamples)
	}
	fmt.Fprintf(tw, "  time range\t%s .. %s, seed %d, reset probability %g, %s gauges\n",
		time.UnixMilli(c.FirstTsMs).UTC().Format(time.RFC3339), time.UnixMilli(c.EndMs).UTC().Format(time.RFC3339), c.Seed, c.ResetProbability, c.Gauges)
	fmt.Fprintf(tw, "  machine\t%s (GOMAXPROCS %d)\n", r.Machine.Note, r.Machine.GOMAXPROCS)
	if r.Receiver == receiverPyramid {
		fmt.Fprintf(tw, "  ClickHouse\t%s, compression %s", r.ServerVersion, orDash(r.Compression))
		if r.CompressionLabel != "" {
			fmt.Fprintf(tw, ", labelled %q", r.CompressionLabel)
		}
		fmt.Fprintln(tw)
	}
	for _, in := range []*ingestResult{r.Ingest, r.IngestHistograms} {
		if in != nil {
			printIngest(tw, c, in)
		}
	}
	if f, h := r.Ingest, r.IngestHistograms; f != nil && h != nil && f.SamplesPerSec > 0 {
		fmt.Fprintf(tw, "histograms / floats\t%d / %d requests; %.3f times the rows per second", h.Requests, f.Requests, h.HistogramsPerSec/f.SamplesPerSec)
		if f.Pyramid != nil && h.Pyramid != nil && f.Pyramid.CPUSeconds > 0 && f.Samples > 0 {
			fmt.Fprintf(tw, "; pyramid CPU per row %.2f times, per request %.2f times",
				(h.Pyramid.CPUSeconds/float64(h.Histograms))/(f.Pyramid.CPUSeconds/float64(f.Samples)),
				(h.Pyramid.CPUSeconds/float64(h.Requests))/(f.Pyramid.CPUSeconds/float64(f.Requests)))
		}
		fmt.Fprintln(tw)
	}
	for _, d := range []*directResult{r.Direct, r.DirectHistograms} {
		if d != nil {
			printDirect(tw, r, d)
		}
	}
	if r.IngestToDirectRatio > 0 {
		fmt.Fprintf(tw, "ingest / direct\t%.3f (%.1f%% of the physical limit)\n", r.IngestToDirectRatio, 100*r.IngestToDirectRatio)
	}
	if r.HistIngestToDirectRatio > 0 {
		fmt.Fprintf(tw, "ingest / direct, histograms\t%.3f (%.1f%% of the physical limit)\n", r.HistIngestToDirectRatio, 100*r.HistIngestToDirectRatio)
	}
	for _, s := range r.Storage {
		unit := "sample"
		if s.Table == schema.TableHistograms {
			unit = "histogram"
		}
		fmt.Fprintf(tw, "storage of %s.%s after OPTIMIZE FINAL (%.1f s)\n", s.Database, s.Table, s.OptimizeSeconds)
		fmt.Fprintf(tw, "  total\t%d rows, %d active parts in %d partitions, %d B compressed (%d uncompressed, %d marks) = %.3f bytes/%s\n",
			s.Rows, s.Parts, s.Partitions, s.CompressedBytes, s.UncompressedBytes, s.MarksBytes, s.BytesPerSample, unit)
		for _, col := range s.Columns {
			fmt.Fprintf(tw, "  column %s\t%.3f bytes/%s (%d B compressed, ratio %.1f)\n", col.Name, col.BytesPerSample, unit, col.CompressedBytes, col.Ratio)
		}
		for _, t := range s.OtherTables {
			fmt.Fprintf(tw, "  table %s\t%d rows, %d B compressed (%.4f bytes per %s)\n", t.Table, t.Rows, t.CompressedBytes, t.BytesPerSample, unit)
		}
	}
	for _, ch := range r.Checks {
		fmt.Fprintf(tw, "check\t%s\n", ch)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
