CREATE DATABASE IF NOT EXISTS pyramid;

CREATE TABLE IF NOT EXISTS pyramid.schema_migrations (
    version UInt32,
    name String,
    dialect String,
    applied_ms Int64
) ENGINE = MergeTree
ORDER BY version;

CREATE TABLE IF NOT EXISTS pyramid.samples (
    target UInt64,
    fingerprint UInt64,
    ts Int64,
    value Float64
) ENGINE = ReplacingMergeTree
PARTITION BY intDiv(ts, 86400000)
ORDER BY (target, fingerprint, ts)
SETTINGS index_granularity = 1024;

CREATE TABLE IF NOT EXISTS pyramid.series (
    fingerprint UInt64,
    target UInt64,
    metric_name String,
    label_names Array(String),
    label_values Array(String),
    first_seen AggregateFunction(min, Int64),
    last_seen AggregateFunction(max, Int64)
) ENGINE = AggregatingMergeTree
ORDER BY (metric_name, fingerprint);

CREATE TABLE IF NOT EXISTS pyramid.series_labels (
    name String,
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
    type String,
    help String,
    unit String,
    updated_ms Int64
) ENGINE = ReplacingMergeTree(updated_ms)
ORDER BY metric_family_name;

CREATE TABLE IF NOT EXISTS pyramid.rollups (
    res Int64,
    target UInt64,
    fingerprint UInt64,
    bucket Int64,
    cnt UInt64,
    sum_hi Float64,
    sum_lo Float64,
    min_v Float64,
    max_v Float64,
    first_ts Int64,
    first_v Float64,
    last_ts Int64,
    last_v Float64,
    corr_hi Float64,
    corr_lo Float64,
    resets UInt64,
    version UInt32
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
    target UInt64,
    fingerprint UInt64,
    ts Int64,
    is_float UInt8,
    reset_hint UInt8,
    schema Int8,
    zero_threshold Float64,
    count_int UInt64,
    count_float Float64,
    zero_count_int UInt64,
    zero_count_float Float64,
    sum Float64,
    positive_offsets Array(Int32),
    positive_lengths Array(UInt32),
    positive_deltas Array(Int64),
    positive_counts Array(Float64),
    negative_offsets Array(Int32),
    negative_lengths Array(UInt32),
    negative_deltas Array(Int64),
    negative_counts Array(Float64),
    custom_values Array(Float64)
) ENGINE = ReplacingMergeTree
PARTITION BY intDiv(ts, 86400000)
ORDER BY (target, fingerprint, ts);

CREATE TABLE IF NOT EXISTS pyramid.histogram_rollups (
    res Int64,
    target UInt64,
    fingerprint UInt64,
    bucket Int64,
    cnt UInt64,
    first_ts Int64,
    last_ts Int64,
    resets UInt64,
    incompatible UInt8,
    first String,
    last String,
    correction String,
    sum String,
    version UInt32
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
