package main

import (
	"flag"
	"fmt"
	"io"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/adapter/api"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/rollup/materialize"
	"github.com/pyramid-metrics/pyramid/schema"
)

// envPrefix prefixes every environment variable: PYRAMID_LISTEN_ADDR and so on.
const envPrefix = "PYRAMID"

// config is everything pyramid reads from its environment and flags. Each field is an
// environment variable (envconfig) and a flag of the same name in kebab case; a flag wins
// over the environment, which wins over the default.
type config struct {
	ListenAddr          string        `envconfig:"LISTEN_ADDR" default:":9201" desc:"HTTP listen address"`
	ClickHouseAddr      string        `envconfig:"CLICKHOUSE_ADDR" default:"127.0.0.1:9000" desc:"ClickHouse native-protocol address (host:port; comma-separate several for failover)"`
	ClickHouseDatabase  string        `envconfig:"CLICKHOUSE_DATABASE" default:"pyramid" desc:"database for pyramid's tables, created if missing"`
	ClickHouseCluster   string        `envconfig:"CLICKHOUSE_CLUSTER" default:"" desc:"cluster (from the servers' remote_servers) to keep the tables on: replicated within each shard, sharded by scrape target; empty for one server"`
	InsertQuorum        int           `envconfig:"INSERT_QUORUM" default:"0" desc:"on a cluster, replicas of a shard that must hold a write before it is acknowledged (ClickHouse's insert_quorum); 0 or 1: the one it reached"`
	ReplicaDelay        time.Duration `envconfig:"CLUSTER_MAX_REPLICA_DELAY" default:"5s" desc:"on a cluster, how far behind its shard a replica may be and still be read for rollups"`
	ClockSkew           time.Duration `envconfig:"CLUSTER_MAX_CLOCK_SKEW" default:"1s" desc:"on a cluster, how far the ClickHouse servers' clocks may differ"`
	ClickHouseUser      string        `envconfig:"CLICKHOUSE_USER" default:"default" desc:"ClickHouse user"`
	ClickHousePassword  string        `envconfig:"CLICKHOUSE_PASSWORD" default:"" desc:"ClickHouse password"`
	ClickHouseDial      time.Duration `envconfig:"CLICKHOUSE_DIAL_TIMEOUT" default:"5s" desc:"timeout for connecting to ClickHouse"`
	ClickHouseConns     int           `envconfig:"CLICKHOUSE_MAX_CONNS" default:"16" desc:"maximum open ClickHouse connections"`
	SamplesGranularity  int           `envconfig:"SAMPLES_INDEX_GRANULARITY" default:"1024" desc:"index_granularity of the raw samples table when pyramid creates it (an existing table keeps its own); rows per primary-index mark"`
	Tiers               string        `envconfig:"TIERS" default:"raw:30d,5m:365d,1h:0" desc:"resolution tiers as name:retention (raw first; 0 keeps forever); raw retention in whole days"`
	RollupInterval      time.Duration `envconfig:"ROLLUP_INTERVAL" default:"15s" desc:"how often rollups of buckets that received samples are recomputed"`
	RollupSettle        time.Duration `envconfig:"ROLLUP_SETTLE" default:"1m" desc:"how long after a bucket ends its rollups are first computed"`
	MaxRequestBytes     int64         `envconfig:"MAX_REQUEST_BYTES" default:"33554432" desc:"largest compressed remote-write body accepted (413 beyond)"`
	MaxDecodedBytes     int64         `envconfig:"MAX_DECODED_BYTES" default:"134217728" desc:"largest remote-write body after snappy decompression (413 beyond)"`
	BatchRows           int           `envconfig:"BATCH_ROWS" default:"100000" desc:"rows that make a batch insert go at once"`
	BatchWait           time.Duration `envconfig:"BATCH_WAIT" default:"100ms" desc:"longest a batch waits for more rows before its insert (each request waits up to this long); a batch of a tenth of PYRAMID_BATCH_ROWS goes at once when no insert runs and no other request is on its way"`
	MaxDecodes          int           `envconfig:"MAX_CONCURRENT_DECODES" default:"16" desc:"write requests decompressed and validated at once, once their body has arrived; more wait (bounds CPU)"`
	MemoryLimit         int64         `envconfig:"MEMORY_LIMIT" default:"1073741824" desc:"memory pyramid keeps under: half of it bounds request bodies, their decoding and rows waiting for insert (503 beyond), and 90% of it is the Go runtime's soft limit unless GOMEMLIMIT is set"`
	BodyTimeout         time.Duration `envconfig:"HTTP_BODY_TIMEOUT" default:"1m" desc:"longest a request body may take to arrive (408 beyond)"`
	IdleTimeout         time.Duration `envconfig:"HTTP_IDLE_TIMEOUT" default:"2m" desc:"how long an idle keep-alive connection stays open"`
	MaxConnections      int           `envconfig:"MAX_CONNECTIONS" default:"512" desc:"HTTP connections open at once; past it idle ones are closed, then new ones wait"`
	InsertWorkers       int           `envconfig:"INSERT_WORKERS" default:"2" desc:"batch inserts running at once"`
	MaxRowsInFlight     int           `envconfig:"MAX_ROWS_IN_FLIGHT" default:"2000000" desc:"rows accepted but not yet stored before writes get 503"`
	InsertTimeout       time.Duration `envconfig:"INSERT_TIMEOUT" default:"30s" desc:"timeout of one batch insert"`
	RetryAfter          time.Duration `envconfig:"RETRY_AFTER" default:"2s" desc:"Retry-After sent with 503 responses"`
	MaxFuture           time.Duration `envconfig:"MAX_FUTURE" default:"10m" desc:"how far ahead of the clock a sample may lie; later ones, and ones older than raw retention, get 400"`
	MaxHistogramBuckets int           `envconfig:"MAX_HISTOGRAM_BUCKETS" default:"0" desc:"a native histogram with more buckets has its resolution reduced until it fits, as Prometheus's native_histogram_bucket_limit; 0 is no limit"`
	SeriesCacheSize     int           `envconfig:"SERIES_CACHE_SIZE" default:"1000000" desc:"series remembered as catalogued, and label sets as validated (bounds memory: about 140 bytes a series for both)"`
	ReadMaxSeries       int           `envconfig:"READ_MAX_SERIES" default:"500000" desc:"most series one remote-read request may return, summed over its queries (429 beyond)"`
	ReadMaxSamples      int           `envconfig:"READ_MAX_SAMPLES" default:"50000000" desc:"most samples one remote-read request may return, summed over its queries (429 beyond)"`
	ReadMaxConcurrent   int           `envconfig:"READ_MAX_CONCURRENT" default:"10" desc:"remote-read requests answered at once; more wait"`
	ReadQueueWait       time.Duration `envconfig:"READ_QUEUE_WAIT" default:"10s" desc:"how long a remote read waits for a slot before 429"`
	ReadMaxFrameBytes   int           `envconfig:"READ_MAX_FRAME_BYTES" default:"50000000" desc:"largest streamed remote-read frame (one whole series); match the clients' chunked_read_limit"`
	ReadRollups         bool          `envconfig:"READ_ROLLUPS" default:"true" desc:"route remote reads to rollup tiers by step and function; false reads raw samples only"`
	ReadLookback        time.Duration `envconfig:"READ_LOOKBACK" default:"5m" desc:"the clients' --query.lookback-delta; selectors without a range read no tier coarser than this"`
	ReadTierRefresh     time.Duration `envconfig:"READ_TIER_REFRESH" default:"30s" desc:"how often reads relearn which time range each tier holds"`
	ReadCacheRows       int           `envconfig:"READ_CACHE_ROWS" default:"8388608" desc:"reads scanning at most this many rows keep what ClickHouse decompresses in its uncompressed cache; 0 leaves the server's settings"`
	QueryLookback       time.Duration `envconfig:"QUERY_LOOKBACK_DELTA" default:"5m" desc:"PromQL API: how far back an instant selector looks for a sample (Prometheus's --query.lookback-delta); a request's lookback_delta overrides it"`
	QueryMaxSamples     int           `envconfig:"QUERY_MAX_SAMPLES" default:"50000000" desc:"PromQL API: samples one query may read, estimated before it runs (422 beyond, without reading), and hold in the engine (Prometheus's --query.max-samples)"`
	QueryTimeout        time.Duration `envconfig:"QUERY_TIMEOUT" default:"2m" desc:"PromQL API: longest evaluation, waiting for a slot included; a request's timeout can only shorten it"`
	QueryMaxConcurrent  int           `envconfig:"QUERY_MAX_CONCURRENT" default:"20" desc:"PromQL API: queries evaluated at once; more wait within their timeout"`
	QuerySlow           time.Duration `envconfig:"QUERY_SLOW_THRESHOLD" default:"10s" desc:"PromQL API: queries evaluating longer are logged with their PromQL text; 0 logs none"`
	QueryEvalInterval   time.Duration `envconfig:"QUERY_DEFAULT_EVALUATION_INTERVAL" default:"1m" desc:"PromQL API: step of subqueries that name none ([30m:]), Prometheus's evaluation_interval"`
	ShutdownTimeout     time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"30s" desc:"how long shutdown waits for requests and inserts"`
	RetentionInterval   time.Duration `envconfig:"RETENTION_INTERVAL" default:"1h" desc:"how often expired rollup partitions, and on servers without TTL raw ones, are dropped"`
	LogLevel            string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	WebConfigFile       string        `envconfig:"WEB_CONFIG_FILE" flag:"web.config.file" default:"" desc:"web config file (Prometheus's --web.config.file format) for TLS, basic auth, bearer tokens and permissions; empty serves plain HTTP to anyone"`
	PprofAddr           string        `envconfig:"PPROF_ADDR" default:"" desc:"listen address of Go's /debug/pprof profiles, such as 127.0.0.1:6060; empty serves none"`

	// tiers is Tiers parsed, set by loadConfig, which refuses a ladder that does not parse.
	tiers []rollup.Tier
}

func (c config) adapterConfig() adapter.Config {
	return adapter.Config{
		MaxRequestBytes:      c.MaxRequestBytes,
		MaxDecodedBytes:      c.MaxDecodedBytes,
		BatchRows:            c.BatchRows,
		BatchWait:            c.BatchWait,
		InsertWorkers:        c.InsertWorkers,
		MaxConcurrentDecodes: c.MaxDecodes,
		MemoryBudget:         c.MemoryLimit / 2,
		BodyTimeout:          c.BodyTimeout,
		MaxRowsInFlight:      c.MaxRowsInFlight,
		InsertTimeout:        c.InsertTimeout,
		RetryAfter:           c.RetryAfter,
		MaxFuture:            c.MaxFuture,
		MaxHistogramBuckets:  c.MaxHistogramBuckets,
		SeriesCacheSize:      c.SeriesCacheSize,
		RollupUnitWidth:      rollup.UnitWidth(c.tiers),
		ReadMaxSeries:        c.ReadMaxSeries,
		ReadMaxSamples:       c.ReadMaxSamples,
		ReadMaxConcurrent:    c.ReadMaxConcurrent,
		ReadQueueWait:        c.ReadQueueWait,
		ReadMaxFrameBytes:    c.ReadMaxFrameBytes,
		Tiers:                c.tiers,
	}
}

func (c config) storeConfig() store.Config {
	return store.Config{
		Database: c.ClickHouseDatabase, Cluster: c.ClickHouseCluster, Tiers: c.tiers, Rollups: c.ReadRollups,
		Lookback: c.ReadLookback, TierRefresh: c.ReadTierRefresh, CacheRows: c.ReadCacheRows,
	}
}

// apiConfig is the PromQL API's. buildinfo reports pyramid's module version, which is
// "(devel)" for a build from a checkout.
func (c config) apiConfig() api.Config {
	b := api.BuildInfo{Version: "devel", Branch: "main"}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			b.Version = v
		}
		b.BuildDate = time.Now().UTC().Format("20060102-15:04:05")
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.time":
				b.BuildDate = s.Value
			}
		}
	}
	return api.Config{
		LookbackDelta: c.QueryLookback, MaxSamples: c.QueryMaxSamples, Timeout: c.QueryTimeout,
		MaxConcurrent: c.QueryMaxConcurrent, SlowQueryThreshold: c.QuerySlow,
		DefaultEvaluationInterval: c.QueryEvalInterval, MaxPoints: api.DefaultMaxPoints,
		RetryAfter: c.RetryAfter, Build: b,
	}
}

func (c config) schemaConfig() schema.Config {
	return schema.Config{Database: c.ClickHouseDatabase, RawRetention: c.rawRetention(), Cluster: c.ClickHouseCluster,
		SamplesGranularity: c.SamplesGranularity}
}

// clickhouseSettings are the settings of every query pyramid sends. On a cluster an insert
// into a Distributed table returns only once every shard has stored its rows (and, with a
// quorum, that many replicas of each), so that a 2xx still means the rows are stored.
// 18.16 takes only numeric settings from clickhouse-go, so every one here is a number.
func (c config) clickhouseSettings() map[string]any {
	if c.ClickHouseCluster == "" {
		return nil
	}
	s := map[string]any{"insert_distributed_sync": 1}
	if c.InsertQuorum > 1 {
		s["insert_quorum"] = c.InsertQuorum
		s["insert_quorum_timeout"] = int(c.InsertTimeout.Milliseconds())
	}
	return s
}

// rawRetention is the raw tier's retention, 0 for forever.
func (c config) rawRetention() time.Duration { return c.tiers[0].Retention }

func (c config) materializerConfig() materialize.Config {
	mc := materialize.Config{
		Tiers: c.tiers, Interval: c.RollupInterval, Settle: c.RollupSettle,
		MaxUnits: 10_000, TargetsPerRead: 64, Now: time.Now,
	}
	if c.ClickHouseCluster != "" {
		mc.ReplicaDelay, mc.ClockSkew = c.ReplicaDelay, c.ClockSkew
	}
	return mc
}

// loadConfig reads the environment and then args. It returns flag.ErrHelp after printing
// usage to out for -h/--help.
func loadConfig(args []string, out io.Writer) (config, []string, error) {
	var c config
	if err := envconfig.Process(envPrefix, &c); err != nil {
		return c, nil, fmt.Errorf("read environment: %w", err)
	}
	fs := flag.NewFlagSet("pyramid", flag.ContinueOnError)
	fs.SetOutput(out)
	bindFlags(fs, &c)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: pyramid [flags] [serve|migrate]\n\n"+
			"pyramid stores Prometheus remote_write in ClickHouse.\n"+
			"  serve    (default) run the HTTP server on the listen address\n"+
			"  migrate  apply the schema to ClickHouse and exit\n\n"+
			"Every flag is also an environment variable, shown in brackets; flags win.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, nil, err
	}
	tiers, err := rollup.ParseTiers(c.Tiers)
	if err != nil {
		return c, nil, fmt.Errorf("PYRAMID_TIERS: %w", err)
	}
	c.tiers = tiers
	if c.InsertQuorum < 0 || c.InsertQuorum > 1 && c.ClickHouseCluster == "" {
		return c, nil, fmt.Errorf("PYRAMID_INSERT_QUORUM %d: needs PYRAMID_CLICKHOUSE_CLUSTER and must not be negative", c.InsertQuorum)
	}
	return c, fs.Args(), nil
}

// bindFlags defines a flag for each field of c, named after its envconfig tag
// (CLICKHOUSE_ADDR -> -clickhouse-addr) unless a flag tag names it, and defaulting to the
// value already in c.
func bindFlags(fs *flag.FlagSet, c *config) {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue // Derived from the settings, not a setting.
		}
		env := f.Tag.Get("envconfig")
		name := strings.ToLower(strings.ReplaceAll(env, "_", "-"))
		if n := f.Tag.Get("flag"); n != "" {
			name = n // The name Prometheus and its exporters give the same setting.
		}
		usage := fmt.Sprintf("%s [%s_%s]", f.Tag.Get("desc"), envPrefix, env)
		ptr := v.Field(i).Addr().Interface()
		switch p := ptr.(type) {
		case *string:
			fs.StringVar(p, name, *p, usage)
		case *int:
			fs.IntVar(p, name, *p, usage)
		case *int64:
			fs.Int64Var(p, name, *p, usage)
		case *time.Duration:
			fs.DurationVar(p, name, *p, usage)
		case *bool:
			fs.BoolVar(p, name, *p, usage)
		default:
			panic("config field " + f.Name + " has a type bindFlags does not handle: " + strconv.Quote(f.Type.String()))
		}
	}
}
