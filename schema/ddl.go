package schema

import (
	"fmt"
	"strings"
)

// Table names. Every INSERT and SELECT in pyramid names its table through these.
const (
	TableMigrations   = "schema_migrations"
	TableSamples      = "samples"
	TableSeriesInput  = "series_input"
	TableSeries       = "series"
	TableSeriesLabels = "series_labels"
	TableMetadata     = "metadata"
	TableRollups      = "rollups"
	TableRollupDirty  = "rollup_dirty"
	TableRollupDone   = "rollup_done"
	TableHistograms   = "histograms"
	// TableHistogramRollups holds the rollup tiers of native histogram series.
	TableHistogramRollups = "histogram_rollups"
	// TableBackfillBlocks records the Prometheus blocks `pyramid backfill` has imported.
	TableBackfillBlocks = "backfill_blocks"
)

// RollupPartitionMillis is the width of one rollups partition per resolution: 30 days, so
// that a tier's retention drops whole partitions and a 1h tier kept forever holds a dozen
// partitions a year.
const RollupPartitionMillis = 30 * DayMillis

// DayMillis is the width of one samples partition: a UTC day in milliseconds.
const DayMillis = 86_400_000

// ddl renders one dialect's column types and clauses, for one server or a cluster.
type ddl struct {
	db      string
	d       Dialect
	cluster string
}

// codec returns " CODEC(spec)" where the server has codecs.
func (g ddl) codec(spec string) string {
	if !g.d.Codecs() {
		return ""
	}
	return " CODEC(" + spec + ")"
}

// lc wraps a type in LowCardinality where the server has it.
func (g ddl) lc(typ string) string {
	if !g.d.LowCardinality() {
		return typ
	}
	return "LowCardinality(" + typ + ")"
}

func (g ddl) table(name string) string { return g.db + "." + name }

// onCluster makes a statement run on every server of the cluster.
func (g ddl) onCluster() string {
	if g.cluster == "" {
		return ""
	}
	return " ON CLUSTER " + g.cluster
}

// stored is a table that holds rows.
type stored struct {
	name    string
	columns string // the parenthesised column list
	engine  string // a MergeTree family engine, or Null
	args    string // the engine's own arguments, if any
	clauses string // PARTITION BY, ORDER BY, TTL, SETTINGS
	// shardKey is the Distributed sharding expression on a cluster. Rows inserted
	// through the table go to shard shardKey % shards; without a key the Distributed
	// table only reads.
	shardKey string
}

// create renders the statements that make t. On one server that is t itself. On a cluster
// it is t.name_local on every server, replicated within its shard through ZooKeeper (the
// {shard} and {replica} macros of each server name the replica), and t.name, a Distributed
// table over it that every read and write goes through.
func (g ddl) create(t stored) []string {
	engine := t.engine
	if t.args != "" {
		engine += "(" + t.args + ")"
	}
	if g.cluster == "" {
		return []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s %s ENGINE = %s%s", g.table(t.name), t.columns, engine, t.clauses)}
	}
	local := t.name + localSuffix
	if t.engine != "Null" {
		args := fmt.Sprintf("'/clickhouse/tables/{shard}/%s/%s', '{replica}'", g.db, t.name)
		if t.args != "" {
			args += ", " + t.args
		}
		engine = "Replicated" + t.engine + "(" + args + ")"
	}
	dist := fmt.Sprintf("Distributed(%s, %s, %s", g.cluster, g.db, local)
	if t.shardKey != "" {
		dist += ", " + t.shardKey
	}
	return []string{
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s%s %s ENGINE = %s%s", g.table(local), g.onCluster(), t.columns, engine, t.clauses),
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s%s AS %s ENGINE = %s)", g.table(t.name), g.onCluster(), g.table(local), dist),
	}
}

// view renders a materialized view from one stored table into another. On a cluster both
// ends are the servers' own tables, so that each server's view fans out the rows that
// server receives into tables of the same shard.
func (g ddl) view(name, to, from, query string) string {
	if g.cluster != "" {
		to, from = to+localSuffix, from+localSuffix
	}
	return fmt.Sprintf("CREATE MATERIALIZED VIEW IF NOT EXISTS %s%s TO %s AS\n%s", g.table(name), g.onCluster(), g.table(to),
		strings.ReplaceAll(query, "@FROM@", g.table(from)))
}

func (g ddl) createDatabase() string {
	return "CREATE DATABASE IF NOT EXISTS " + g.db + g.onCluster()
}

// createMigrations makes the table of applied migrations. On a cluster every server is a
// replica of one table, so that any server pyramid connects to answers the readiness check
// from its own copy, whichever shards are up.
func (g ddl) createMigrations() string {
	engine := "MergeTree"
	if g.cluster != "" {
		engine = fmt.Sprintf("ReplicatedMergeTree('/clickhouse/tables/all/%s/%s', '{shard}-{replica}')", g.db, TableMigrations)
	}
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s%s (
    version UInt32,
    name String,
    dialect String,
    applied_ms Int64
) ENGINE = %s
ORDER BY version`, g.table(TableMigrations), g.onCluster(), engine)
}

// samplesTTL expires raw samples by the day partition they live in; ttl_only_drop_parts
// makes the server drop whole parts instead of rewriting them.
func (g ddl) samplesTTL(retentionDays int) string {
	if !g.d.TTL() || retentionDays == 0 {
		return ""
	}
	return fmt.Sprintf("\nTTL toDateTime(intDiv(ts, 1000)) + INTERVAL %d DAY\nSETTINGS ttl_only_drop_parts = 1", retentionDays)
}

// samplesTail is the raw samples table's clauses after ORDER BY: its TTL where the server
// has one, and its settings.
//
// A day of one series at 15 s is 5,760 rows, less than ClickHouse's default granule of
// 8,192, so a read of the last minutes or hours of many series touches every granule of
// the day's partition. Smaller granules let such reads skip the rest of each series' day.
func (g ddl) samplesTail(cfg Config) string {
	setting := fmt.Sprintf("index_granularity = %d", cfg.samplesGranularity())
	ttl := g.samplesTTL(cfg.retentionDays())
	if ttl == "" {
		return "\nSETTINGS " + setting
	}
	return ttl + ", " + setting
}

// initial is migration 1: raw samples, the series catalogue with its label index, and
// metric metadata.
func (g ddl) initial(cfg Config) []string {
	var out []string
	// One row per sample. ReplacingMergeTree collapses retried writes of the same
	// (series, timestamp) during merges; readers deduplicate the rest. Ordering by the
	// scrape target first puts series scraped together side by side, so their identical
	// timestamp runs compress to almost nothing. Values are compressed as the differences
	// between consecutive 64-bit patterns of one series: a counter's integer steps and a
	// rounded gauge's moves change a few bits in the same places, which ZSTD packs
	// tighter than Gorilla's XOR bit stream (BenchmarkCodecs in cmd/pyramid-loadgen
	// compares the choices on the load generator's data).
	out = append(out, g.create(stored{
		name: TableSamples,
		columns: fmt.Sprintf(`(
    target UInt64%s,
    fingerprint UInt64%s,
    ts Int64%s,
    value Float64%s
)`, g.codec("ZSTD(1)"), g.codec("ZSTD(1)"), g.codec("DoubleDelta, ZSTD(1)"), g.codec("Delta, ZSTD(1)")),
		engine: "ReplacingMergeTree",
		clauses: fmt.Sprintf(`
PARTITION BY intDiv(ts, %d)
ORDER BY (target, fingerprint, ts)%s`, DayMillis, g.samplesTail(cfg)),
		shardKey: "target",
	})...)

	// The series catalogue: labels once per series, and the span of time the series was
	// written in, kept as min/max states so rows from any number of writers merge.
	out = append(out, g.create(stored{
		name: TableSeries,
		columns: fmt.Sprintf(`(
    fingerprint UInt64,
    target UInt64,
    metric_name %s,
    label_names Array(%s),
    label_values Array(String),
    first_seen AggregateFunction(min, Int64),
    last_seen AggregateFunction(max, Int64)
)`, g.lc("String"), g.lc("String")),
		engine: "AggregatingMergeTree",
		clauses: `
ORDER BY (metric_name, fingerprint)`,
		shardKey: "target",
	})...)

	// The inverted label index: (name, value) -> fingerprints, so a matcher on any label
	// reads a key range instead of every series. On a cluster a series' index rows live
	// on its shard, filled there by the view below.
	out = append(out, g.create(stored{
		name: TableSeriesLabels,
		columns: fmt.Sprintf(`(
    name %s,
    value String,
    fingerprint UInt64
)`, g.lc("String")),
		engine: "ReplacingMergeTree",
		clauses: `
ORDER BY (name, value, fingerprint)`,
	})...)

	// Writers insert series rows here once; the Null engine stores nothing and the two
	// views below fan each row out into the catalogue and the label index.
	out = append(out, g.create(stored{
		name: TableSeriesInput,
		columns: `(
    fingerprint UInt64,
    target UInt64,
    metric_name String,
    label_names Array(String),
    label_values Array(String),
    first_seen Int64,
    last_seen Int64
)`,
		engine:   "Null",
		shardKey: "target",
	})...)

	out = append(out,
		g.view(TableSeries+"_mv", TableSeries, TableSeriesInput, `SELECT
    fingerprint,
    any(target) AS target,
    any(metric_name) AS metric_name,
    any(label_names) AS label_names,
    any(label_values) AS label_values,
    minState(first_seen) AS first_seen,
    maxState(last_seen) AS last_seen
FROM @FROM@
GROUP BY fingerprint`),
		g.view(TableSeriesLabels+"_mv", TableSeriesLabels, TableSeriesInput, `SELECT name, value, fingerprint
FROM @FROM@
ARRAY JOIN label_names AS name, label_values AS value`))

	// Metric metadata (TYPE, HELP, UNIT) as Prometheus sends it every minute; the newest
	// version of each metric family wins.
	out = append(out, g.create(stored{
		name: TableMetadata,
		columns: fmt.Sprintf(`(
    metric_family_name String,
    type %s,
    help String,
    unit %s,
    updated_ms Int64
)`, g.lc("String"), g.lc("String")),
		engine: "ReplacingMergeTree",
		args:   "updated_ms",
		clauses: `
ORDER BY metric_family_name`,
		shardKey: "cityHash64(metric_family_name)",
	})...)
	return out
}

// rollups is migration 2: the rollup tiers and the bookkeeping that keeps them exact (see
// rollup/README.md). Every tier lives in one table, told apart by res, so that changing
// PYRAMID_TIERS needs no DDL. All three are sharded by target like the samples, so that a
// work unit's marks, raw samples and rollups live on one shard.
func (g ddl) rollups(Config) []string {
	var out []string
	// One row per tier, series and bucket, as rollup.Aggregate defines it. A bucket is
	// recomputed from raw whenever it receives samples, and the newest computation
	// (version: the server time at which its raw read began) replaces the older ones.
	out = append(out, g.create(stored{
		name: TableRollups,
		columns: fmt.Sprintf(`(
    res Int64,
    target UInt64%[1]s,
    fingerprint UInt64%[1]s,
    bucket Int64%[5]s,
    cnt UInt64%[2]s,
    sum_hi Float64%[3]s,
    sum_lo Float64%[4]s,
    min_v Float64%[3]s,
    max_v Float64%[3]s,
    first_ts Int64%[5]s,
    first_v Float64%[3]s,
    last_ts Int64%[5]s,
    last_v Float64%[3]s,
    corr_hi Float64%[4]s,
    corr_lo Float64%[4]s,
    resets UInt64%[2]s,
    version UInt32%[4]s
)`,
			// Consecutive rows are one series' consecutive buckets: first_ts and last_ts
			// step by about the resolution (DoubleDelta), values drift (Gorilla), counts
			// are small integers (T64), and the compensation terms and corrections are
			// almost always zero.
			g.codec("ZSTD(1)"), g.codec("T64, ZSTD(1)"), g.codec("Gorilla, ZSTD(1)"), g.codec("ZSTD(1)"),
			g.codec("DoubleDelta, ZSTD(1)")),
		engine: "ReplacingMergeTree",
		args:   "version",
		clauses: fmt.Sprintf(`
PARTITION BY (res, intDiv(bucket, %d))
ORDER BY (res, target, fingerprint, bucket)`, RollupPartitionMillis),
		shardKey: "target",
	})...)

	// Work units (one scrape target over one bucket of the coarsest tier, which holds a
	// whole bucket of every tier) that received samples, stamped by the server when the
	// samples were already stored.
	out = append(out, g.create(stored{
		name: TableRollupDirty,
		columns: `(
    width Int64,
    unit Int64,
    target UInt64,
    marked UInt32 DEFAULT toUInt32(now())
)`,
		engine: "ReplacingMergeTree",
		args:   "marked",
		clauses: fmt.Sprintf(`
PARTITION BY intDiv(unit, %d)
ORDER BY (width, unit, target)`, RollupPartitionMillis),
		shardKey: "target",
	})...)

	// Work units whose rollups were computed, stamped with the server time at which their
	// raw read began: a unit is done while no mark is at or after that time.
	out = append(out, g.create(stored{
		name: TableRollupDone,
		columns: `(
    width Int64,
    unit Int64,
    target UInt64,
    version UInt32
)`,
		engine: "ReplacingMergeTree",
		args:   "version",
		clauses: fmt.Sprintf(`
PARTITION BY intDiv(unit, %d)
ORDER BY (width, unit, target)`, RollupPartitionMillis),
		shardKey: "target",
	})...)
	return out
}

// histograms is migration 3: native histogram samples, one row per series and timestamp,
// in the columns of Prometheus's model/histogram types. Integer histograms fill the _int
// counts and the delta-encoded bucket arrays, float histograms the _float counts and the
// absolute bucket arrays; the other set stays zero or empty and costs almost nothing once
// compressed. Spans are (offset, length) pairs kept as two arrays, which 18.16 stores
// without tuples. Retried writes collapse as in samples, and like samples the table
// expires by day partitions.
func (g ddl) histograms(cfg Config) []string {
	// Bucket arrays are most of a histogram's bytes, and ZSTD(3) packs their small
	// deltas far tighter than ZSTD(1); counts grow steadily (DoubleDelta) and sums drift
	// (Delta, as samples.value). BenchmarkHistogramCodecs in cmd/pyramid-loadgen compares
	// the choices.
	return g.create(stored{
		name: TableHistograms,
		columns: fmt.Sprintf(`(
    target UInt64%[1]s,
    fingerprint UInt64%[1]s,
    ts Int64%[2]s,
    is_float UInt8%[1]s,
    reset_hint UInt8%[1]s,
    schema Int8%[1]s,
    zero_threshold Float64%[1]s,
    count_int UInt64%[2]s,
    count_float Float64%[3]s,
    zero_count_int UInt64%[2]s,
    zero_count_float Float64%[3]s,
    sum Float64%[3]s,
    positive_offsets Array(Int32)%[4]s,
    positive_lengths Array(UInt32)%[4]s,
    positive_deltas Array(Int64)%[4]s,
    positive_counts Array(Float64)%[4]s,
    negative_offsets Array(Int32)%[4]s,
    negative_lengths Array(UInt32)%[4]s,
    negative_deltas Array(Int64)%[4]s,
    negative_counts Array(Float64)%[4]s,
    custom_values Array(Float64)%[4]s
)`, g.codec("ZSTD(1)"), g.codec("DoubleDelta, ZSTD(1)"), g.codec("Delta, ZSTD(1)"), g.codec("ZSTD(3)")),
		engine: "ReplacingMergeTree",
		clauses: fmt.Sprintf(`
PARTITION BY intDiv(ts, %d)
ORDER BY (target, fingerprint, ts)%s`, DayMillis, g.samplesTTL(cfg.retentionDays())),
		shardKey: "target",
	})
}

// histogramRollups is migration 4: the rollup tiers of native histogram series, one row per
// tier, series and bucket as rollup.HistogramAggregate defines it, versioned and
// partitioned like the float rollups so that the materializer and retention treat both
// alike. Each histogram is one prompb.Histogram message (float counts), an empty string
// where there is none: a bucket's few histograms are read and written whole, never
// filtered on, and the message keeps every float bit.
func (g ddl) histogramRollups(Config) []string {
	z := g.codec("ZSTD(1)")
	return g.create(stored{
		name: TableHistogramRollups,
		columns: fmt.Sprintf(`(
    res Int64,
    target UInt64%[1]s,
    fingerprint UInt64%[1]s,
    bucket Int64%[2]s,
    cnt UInt64%[1]s,
    first_ts Int64%[2]s,
    last_ts Int64%[2]s,
    resets UInt64%[1]s,
    incompatible UInt8%[1]s,
    first String%[1]s,
    last String%[1]s,
    correction String%[1]s,
    sum String%[1]s,
    version UInt32%[1]s
)`, z, g.codec("DoubleDelta, ZSTD(1)")),
		engine: "ReplacingMergeTree",
		args:   "version",
		clauses: fmt.Sprintf(`
PARTITION BY (res, intDiv(bucket, %d))
ORDER BY (res, target, fingerprint, bucket)`, RollupPartitionMillis),
		shardKey: "target",
	})
}

// backfillBlocks is migration 5: the Prometheus TSDB blocks `pyramid backfill` has stored
// completely, by block ULID and by the scope of the run (its time range and matchers), so
// that a run started again skips them. The newest record of a block and scope wins.
func (g ddl) backfillBlocks(Config) []string {
	return g.create(stored{
		name: TableBackfillBlocks,
		columns: `(
    block String,
    scope String,
    min_time Int64,
    max_time Int64,
    series UInt64,
    samples UInt64,
    histograms UInt64,
    done_ms Int64
)`,
		engine: "ReplacingMergeTree",
		args:   "done_ms",
		clauses: `
ORDER BY (block, scope)`,
		shardKey: "cityHash64(block)",
	})
}

// Statements returns every DDL statement pyramid runs for cfg on a server of dialect d, in
// order: the database, the migrations table, then each migration. Golden files pin it.
func Statements(cfg Config, d Dialect) []string {
	g := ddl{db: cfg.Database, d: d, cluster: cfg.Cluster}
	out := []string{g.createDatabase(), g.createMigrations()}
	for _, m := range migrationList() {
		out = append(out, m.statements(g, cfg)...)
	}
	return out
}
