CREATE DATABASE IF NOT EXISTS pyramid;

CREATE TABLE IF NOT EXISTS pyramid.schema_migrations (
    version UInt32,
    name String,
    dialect String,
    applied_ms Int64
) ENGINE = MergeTree
ORDER BY version;

CREATE TABLE IF NOT EXISTS pyramid.samples (
    target UInt64 CODEC(ZSTD(1)),
    fingerprint UInt64 CODEC(ZSTD(1)),
    ts Int64 CODEC(DoubleDelta, ZSTD(1)),
    value Float64 CODEC(Delta, ZSTD(1))
) ENGINE = ReplacingMergeTree
PARTITION BY intDiv(ts, 86400000)
ORDER BY (target, fingerprint, ts)
TTL toDateTime(intDiv(ts, 1000)) + INTERVAL 30 DAY
SETTINGS ttl_only_drop_parts = 1, index_granularity = 1024;

CREATE TABLE IF NOT EXISTS pyramid.series (
    fingerprint UInt64,
    target UInt64,
    metric_name LowCardinality(String),
    label_names Array(LowCardinality(String)),
    label_values Array(String),
    first_seen AggregateFunction(min, Int64),
    last_seen AggregateFunction(max, Int64)
) ENGINE = AggregatingMergeTree
ORDER BY (metric_name, fingerprint);

CREATE TABLE IF NOT EXISTS pyramid.series_labels (
    name LowCardinality(String),
    value String,
    fingerprint UInt64
) ENGINE = ReplacingMergeTree
ORDER BY (name, value, fingerprint);

CREATE TABLE IF NOT EXISTS pyramid.series_input (
    fingerprint UInt64,
    target UInt64,
    metric_name String,
    label_names Array(String),
    label_values Array(String),
    first_seen Int64,
    last_seen Int64
) ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS pyramid.series_mv TO pyramid.series AS
SELECT
    fingerprint,
    any(target) AS target,
    any(metric_name) AS metric_name,
    any(label_names) AS label_names,
    any(label_values) AS label_values,
    minState(first_seen) AS first_seen,
    maxState(last_seen) AS last_seen
FROM pyramid.series_input
GROUP BY fingerprint;

CREATE MATERIALIZED VIEW IF NOT EXISTS pyramid.series_labels_mv TO pyramid.series_labels AS
SELECT name, value, fingerprint
FROM pyramid.series_input
ARRAY JOIN label_names AS name, label_values AS value;

CREATE TABLE IF NOT EXISTS pyramid.metadata (
    metric_family_name String,
    type LowCardinality(String),
    help String,
    unit LowCardinality(String),
    updated_ms Int64
) ENGINE = ReplacingMergeTree(updated_ms)
ORDER BY metric_family_name;

CREATE TABLE IF NOT EXISTS pyramid.rollups (
    res Int64,
    target UInt64 CODEC(ZSTD(1)),
    fingerprint UInt64 CODEC(ZSTD(1)),
    bucket Int64 CODEC(DoubleDelta, ZSTD(1)),
    cnt UInt64 CODEC(T64, ZSTD(1)),
    sum_hi Float64 CODEC(Gorilla, ZSTD(1)),
    sum_lo Float64 CODEC(ZSTD(1)),
    min_v Float64 CODEC(Gorilla, ZSTD(1)),
    max_v Float64 CODEC(Gorilla, ZSTD(1)),
    first_ts Int64 CODEC(DoubleDelta, ZSTD(1)),
    first_v Float64 CODEC(Gorilla, ZSTD(1)),
    last_ts Int64 CODEC(DoubleDelta, ZSTD(1)),
    last_v Float64 CODEC(Gorilla, ZSTD(1)),
    corr_hi Float64 CODEC(ZSTD(1)),
    corr_lo Float64 CODEC(ZSTD(1)),
    resets UInt64 CODEC(T64, ZSTD(1)),
    version UInt32 CODEC(ZSTD(1))
) ENGINE = ReplacingMergeTree(version)
PARTITION BY (res, intDiv(bucket, 2592000000))
ORDER BY (res, target, fingerprint, bucket);

CREATE TABLE IF NOT EXISTS pyramid.rollup_dirty (
    width Int64,
    unit Int64,
    target UInt64,
    marked UInt32 DEFAULT toUInt32(now())
) ENGINE = ReplacingMergeTree(marked)
PARTITION BY intDiv(unit, 2592000000)
ORDER BY (width, unit, target);

CREATE TABLE IF NOT EXISTS pyramid.rollup_done (
    width Int64,
    unit Int64,
    target UInt64,
    version UInt32
) ENGINE = ReplacingMergeTree(version)
PARTITION BY intDiv(unit, 2592000000)
ORDER BY (width, unit, target);

CREATE TABLE IF NOT EXISTS pyramid.histograms (
    target UInt64 CODEC(ZSTD(1)),
    fingerprint UInt64 CODEC(ZSTD(1)),
    ts Int64 CODEC(DoubleDelta, ZSTD(1)),
    is_float UInt8 CODEC(ZSTD(1)),
    reset_hint UInt8 CODEC(ZSTD(1)),
    schema Int8 CODEC(ZSTD(1)),
    zero_threshold Float64 CODEC(ZSTD(1)),
    count_int UInt64 CODEC(DoubleDelta, ZSTD(1)),
    count_float Float64 CODEC(Delta, ZSTD(1)),
    zero_count_int UInt64 CODEC(DoubleDelta, ZSTD(1)),
    zero_count_float Float64 CODEC(Delta, ZSTD(1)),
    sum Float64 CODEC(Delta, ZSTD(1)),
    positive_offsets Array(Int32) CODEC(ZSTD(3)),
    positive_lengths Array(UInt32) CODEC(ZSTD(3)),
    positive_deltas Array(Int64) CODEC(ZSTD(3)),
    positive_counts Array(Float64) CODEC(ZSTD(3)),
    negative_offsets Array(Int32) CODEC(ZSTD(3)),
    negative_lengths Array(UInt32) CODEC(ZSTD(3)),
    negative_deltas Array(Int64) CODEC(ZSTD(3)),
    negative_counts Array(Float64) CODEC(ZSTD(3)),
    custom_values Array(Float64) CODEC(ZSTD(3))
) ENGINE = ReplacingMergeTree
PARTITION BY intDiv(ts, 86400000)
ORDER BY (target, fingerprint, ts)
TTL toDateTime(intDiv(ts, 1000)) + INTERVAL 30 DAY
SETTINGS ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS pyramid.histogram_rollups (
    res Int64,
    target UInt64 CODEC(ZSTD(1)),
    fingerprint UInt64 CODEC(ZSTD(1)),
    bucket Int64 CODEC(DoubleDelta, ZSTD(1)),
    cnt UInt64 CODEC(ZSTD(1)),
    first_ts Int64 CODEC(DoubleDelta, ZSTD(1)),
    last_ts Int64 CODEC(DoubleDelta, ZSTD(1)),
    resets UInt64 CODEC(ZSTD(1)),
    incompatible UInt8 CODEC(ZSTD(1)),
    first String CODEC(ZSTD(1)),
    last String CODEC(ZSTD(1)),
    correction String CODEC(ZSTD(1)),
    sum String CODEC(ZSTD(1)),
    version UInt32 CODEC(ZSTD(1))
) ENGINE = ReplacingMergeTree(version)
PARTITION BY (res, intDiv(bucket, 2592000000))
ORDER BY (res, target, fingerprint, bucket);

CREATE TABLE IF NOT EXISTS pyramid.backfill_blocks (
    block String,
    scope String,
    min_time Int64,
    max_time Int64,
    series UInt64,
    samples UInt64,
    histograms UInt64,
    done_ms Int64
) ENGINE = ReplacingMergeTree(done_ms)
ORDER BY (block, scope);
