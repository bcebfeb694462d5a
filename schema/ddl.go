package schema

import (
	"fmt"
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
)

// RollupPartitionMillis is the width of one rollups partition per resolution: 30 days, so
// that a tier's retention drops whole partitions and a 1h tier kept forever holds a dozen
// partitions a year.
const RollupPartitionMillis = 30 * DayMillis

// DayMillis is the width of one samples partition: a UTC day in milliseconds.
const DayMillis = 86_400_000

// ddl renders one dialect's column types and clauses.
type ddl struct {
	db string
	d  Dialect
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

func (g ddl) createDatabase() string {
	return "CREATE DATABASE IF NOT EXISTS " + g.db
}

func (g ddl) createMigrations() string {
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    version UInt32,
    name String,
    dialect String,
    applied_ms Int64
) ENGINE = MergeTree
ORDER BY version`, g.table(TableMigrations))
}

// samplesTTL expires raw samples by the day partition they live in; ttl_only_drop_parts
// makes the server drop whole parts instead of rewriting them.
func (g ddl) samplesTTL(retentionDays int) string {
	if !g.d.TTL() || retentionDays == 0 {
		return ""
	}
	return fmt.Sprintf("\nTTL toDateTime(intDiv(ts, 1000)) + INTERVAL %d DAY\nSETTINGS ttl_only_drop_parts = 1", retentionDays)
}

// initial is migration 1: raw samples, the series catalogue with its label index, and
// metric metadata.
func (g ddl) initial(cfg Config) []string {
	return []string{
		// One row per sample. ReplacingMergeTree collapses retried writes of the same
		// (series, timestamp) during merges; readers deduplicate the rest. Ordering by the
		// scrape target first puts series scraped together side by side, so their
		// identical timestamp runs compress to almost nothing. Values are compressed as
		// the differences between consecutive 64-bit patterns of one series: a counter's
		// integer steps and a rounded gauge's moves change a few bits in the same places,
		// which ZSTD packs tighter than Gorilla's XOR bit stream (BenchmarkCodecs in
		// cmd/pyramid-loadgen compares the choices on the load generator's data).
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    target UInt64%s,
    fingerprint UInt64%s,
    ts Int64%s,
    value Float64%s
) ENGINE = ReplacingMergeTree
PARTITION BY intDiv(ts, %d)
ORDER BY (target, fingerprint, ts)%s`, g.table(TableSamples),
			g.codec("ZSTD(1)"), g.codec("ZSTD(1)"), g.codec("DoubleDelta, ZSTD(1)"), g.codec("Delta, ZSTD(1)"),
			DayMillis, g.samplesTTL(cfg.retentionDays())),

		// The series catalogue: labels once per series, and the span of time the series
		// was written in, kept as min/max states so rows from any number of writers merge.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    fingerprint UInt64,
    target UInt64,
    metric_name %s,
    label_names Array(%s),
    label_values Array(String),
    first_seen AggregateFunction(min, Int64),
    last_seen AggregateFunction(max, Int64)
) ENGINE = AggregatingMergeTree
ORDER BY (metric_name, fingerprint)`, g.table(TableSeries), g.lc("String"), g.lc("String")),

		// The inverted label index: (name, value) -> fingerprints, so a matcher on any
		// label reads a key range instead of every series.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    name %s,
    value String,
    fingerprint UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (name, value, fingerprint)`, g.table(TableSeriesLabels), g.lc("String")),

		// Writers insert series rows here once; the Null engine stores nothing and the two
		// views below fan each row out into the catalogue and the label index.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    fingerprint UInt64,
    target UInt64,
    metric_name String,
    label_names Array(String),
    label_values Array(String),
    first_seen Int64,
    last_seen Int64
) ENGINE = Null`, g.table(TableSeriesInput)),

		fmt.Sprintf(`CREATE MATERIALIZED VIEW IF NOT EXISTS %s TO %s AS
SELECT
    fingerprint,
    any(target) AS target,
    any(metric_name) AS metric_name,
    any(label_names) AS label_names,
    any(label_values) AS label_values,
    minState(first_seen) AS first_seen,
    maxState(last_seen) AS last_seen
FROM %s
GROUP BY fingerprint`, g.table(TableSeries+"_mv"), g.table(TableSeries), g.table(TableSeriesInput)),

		fmt.Sprintf(`CREATE MATERIALIZED VIEW IF NOT EXISTS %s TO %s AS
SELECT name, value, fingerprint
FROM %s
ARRAY JOIN label_names AS name, label_values AS value`, g.table(TableSeriesLabels+"_mv"), g.table(TableSeriesLabels), g.table(TableSeriesInput)),

		// Metric metadata (TYPE, HELP, UNIT) as Prometheus sends it every minute; the newest
		// version of each metric family wins.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    metric_family_name String,
    type %s,
    help String,
    unit %s,
    updated_ms Int64
) ENGINE = ReplacingMergeTree(updated_ms)
ORDER BY metric_family_name`, g.table(TableMetadata), g.lc("String"), g.lc("String")),
	}
}

// rollups is migration 2: the rollup tiers and the bookkeeping that keeps them exact (see
// rollup/README.md). Every tier lives in one table, told apart by res, so that changing
// PYRAMID_TIERS needs no DDL.
func (g ddl) rollups(Config) []string {
	return []string{
		// One row per tier, series and bucket, as rollup.Aggregate defines it. A bucket is
		// recomputed from raw whenever it receives samples, and the newest computation
		// (version: the server time at which its raw read began) replaces the older ones.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %[1]s (
    res Int64,
    target UInt64%[2]s,
    fingerprint UInt64%[2]s,
    bucket Int64%[6]s,
    cnt UInt64%[3]s,
    sum_hi Float64%[4]s,
    sum_lo Float64%[5]s,
    min_v Float64%[4]s,
    max_v Float64%[4]s,
    first_ts Int64%[6]s,
    first_v Float64%[4]s,
    last_ts Int64%[6]s,
    last_v Float64%[4]s,
    corr_hi Float64%[5]s,
    corr_lo Float64%[5]s,
    resets UInt64%[3]s,
    version UInt32%[5]s
) ENGINE = ReplacingMergeTree(version)
PARTITION BY (res, intDiv(bucket, %[7]d))
ORDER BY (res, target, fingerprint, bucket)`, g.table(TableRollups),
			// Consecutive rows are one series' consecutive buckets: first_ts and last_ts
			// step by about the resolution (DoubleDelta), values drift (Gorilla), counts
			// are small integers (T64), and the compensation terms and corrections are
			// almost always zero.
			g.codec("ZSTD(1)"), g.codec("T64, ZSTD(1)"), g.codec("Gorilla, ZSTD(1)"), g.codec("ZSTD(1)"),
			g.codec("DoubleDelta, ZSTD(1)"), RollupPartitionMillis),

		// Work units (one scrape target over one bucket of the coarsest tier, which holds a
		// whole bucket of every tier) that received samples, stamped by the server when the
		// samples were already stored.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    width Int64,
    unit Int64,
    target UInt64,
    marked UInt32 DEFAULT toUInt32(now())
) ENGINE = ReplacingMergeTree(marked)
PARTITION BY intDiv(unit, %d)
ORDER BY (width, unit, target)`, g.table(TableRollupDirty), RollupPartitionMillis),

		// Work units whose rollups were computed, stamped with the server time at which
		// their raw read began: a unit is done while no mark is at or after that time.
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    width Int64,
    unit Int64,
    target UInt64,
    version UInt32
) ENGINE = ReplacingMergeTree(version)
PARTITION BY intDiv(unit, %d)
ORDER BY (width, unit, target)`, g.table(TableRollupDone), RollupPartitionMillis),
	}
}

// Statements returns every DDL statement pyramid runs for cfg on a server of dialect d, in
// order: the database, the migrations table, then each migration. Golden files pin it.
func Statements(cfg Config, d Dialect) []string {
	g := ddl{db: cfg.Database, d: d}
	out := []string{g.createDatabase(), g.createMigrations()}
	for _, m := range migrationList() {
		out = append(out, m.statements(g, cfg)...)
	}
	return out
}
