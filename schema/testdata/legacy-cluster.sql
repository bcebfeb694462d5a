CREATE DATABASE IF NOT EXISTS pyramid ON CLUSTER pyramid;

CREATE TABLE IF NOT EXISTS pyramid.schema_migrations ON CLUSTER pyramid (
    version UInt32,
    name String,
    dialect String,
    applied_ms Int64
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/pyramid/schema_migrations', '{shard}-{replica}')
ORDER BY version;

CREATE TABLE IF NOT EXISTS pyramid.samples_local ON CLUSTER pyramid (
    target UInt64,
    fingerprint UInt64,
    ts Int64,
    value Float64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pyramid/samples', '{replica}')
PARTITION BY intDiv(ts, 86400000)
ORDER BY (target, fingerprint, ts)
SETTINGS index_granularity = 1024;

CREATE TABLE IF NOT EXISTS pyramid.samples ON CLUSTER pyramid AS pyramid.samples_local ENGINE = Distributed(pyramid, pyramid, samples_local, target);

CREATE TABLE IF NOT EXISTS pyramid.series_local ON CLUSTER pyramid (
    fingerprint UInt64,
    target UInt64,
    metric_name String,
    label_names Array(String),
    label_values Array(String),
    first_seen AggregateFunction(min, Int64),
    last_seen AggregateFunction(max, Int64)
) ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/pyramid/series', '{replica}')
ORDER BY (metric_name, fingerprint);

CREATE TABLE IF NOT EXISTS pyramid.series ON CLUSTER pyramid AS pyramid.series_local ENGINE = Distributed(pyramid, pyramid, series_local, target);

CREATE TABLE IF NOT EXISTS pyramid.series_labels_local ON CLUSTER pyramid (
    name String,
    value String,
    fingerprint UInt64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pyramid/series_labels', '{replica}')
ORDER BY (name, value, fingerprint);

CREATE TABLE IF NOT EXISTS pyramid.series_labels ON CLUSTER pyramid AS pyramid.series_labels_local ENGINE = Distributed(pyramid, pyramid, series_labels_local);

CREATE TABLE IF NOT EXISTS pyramid.series_input_local ON CLUSTER pyramid (
    fingerprint UInt64,
    target UInt64,
    metric_name String,
    label_names Array(String),
    label_values Array(String),
    first_seen Int64,
    last_seen Int64
) ENGINE = Null;

CREATE TABLE IF NOT EXISTS pyramid.series_input ON CLUSTER pyramid AS pyramid.series_input_local ENGINE = Distributed(pyramid, pyramid, series_input_local, target);

CREATE MATERIALIZED VIEW IF NOT EXISTS pyramid.series_mv ON CLUSTER pyramid TO pyramid.series_local AS
SELECT
    fingerprint,
    any(target) AS target,
    any(metric_name) AS metric_name,
    any(label_names) AS label_names,
    any(label_values) AS label_values,
    minState(first_seen) AS first_seen,
    maxState(last_seen) AS last_seen
FROM pyramid.series_input_local
GROUP BY fingerprint;

CREATE MATERIALIZED VIEW IF NOT EXISTS pyramid.series_labels_mv ON CLUSTER pyramid TO pyramid.series_labels_local AS
SELECT name, value, fingerprint
FROM pyramid.series_input_local
ARRAY JOIN label_names AS name, label_values AS value;

CREATE TABLE IF NOT EXISTS pyramid.metadata_local ON CLUSTER pyramid (
    metric_family_name String,
    type String,
    help String,
    unit String,
    updated_ms Int64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pyramid/metadata', '{replica}', updated_ms)
ORDER BY metric_family_name;

CREATE TABLE IF NOT EXISTS pyramid.metadata ON CLUSTER pyramid AS pyramid.metadata_local ENGINE = Distributed(pyramid, pyramid, metadata_local, cityHash64(metric_family_name));

CREATE TABLE IF NOT EXISTS pyramid.rollups_local ON CLUSTER pyramid (
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
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pyramid/rollups', '{replica}', version)
PARTITION BY (res, intDiv(bucket, 2592000000))
ORDER BY (res, target, fingerprint, bucket);

CREATE TABLE IF NOT EXISTS pyramid.rollups ON CLUSTER pyramid AS pyramid.rollups_local ENGINE = Distributed(pyramid, pyramid, rollups_local, target);

CREATE TABLE IF NOT EXISTS pyramid.rollup_dirty_local ON CLUSTER pyramid (
    width Int64,
    unit Int64,
    target UInt64,
    marked UInt32 DEFAULT toUInt32(now())
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pyramid/rollup_dirty', '{replica}', marked)
PARTITION BY intDiv(unit, 2592000000)
ORDER BY (width, unit, target);

CREATE TABLE IF NOT EXISTS pyramid.rollup_dirty ON CLUSTER pyramid AS pyramid.rollup_dirty_local ENGINE = Distributed(pyramid, pyramid, rollup_dirty_local, target);

CREATE TABLE IF NOT EXISTS pyramid.rollup_done_local ON CLUSTER pyramid (
    width Int64,
    unit Int64,
    target UInt64,
    version UInt32
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pyramid/rollup_done', '{replica}', version)
PARTITION BY intDiv(unit, 2592000000)
ORDER BY (width, unit, target);

CREATE TABLE IF NOT EXISTS pyramid.rollup_done ON CLUSTER pyramid AS pyramid.rollup_done_local ENGINE = Distributed(pyramid, pyramid, rollup_done_local, target);

CREATE TABLE IF NOT EXISTS pyramid.histograms_local ON CLUSTER pyramid (
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
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pyramid/histograms', '{replica}')
PARTITION BY intDiv(ts, 86400000)
ORDER BY (target, fingerprint, ts);

CREATE TABLE IF NOT EXISTS pyramid.histograms ON CLUSTER pyramid AS pyramid.histograms_local ENGINE = Distributed(pyramid, pyramid, histograms_local, target);

CREATE TABLE IF NOT EXISTS pyramid.histogram_rollups_local ON CLUSTER pyramid (
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
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pyramid/histogram_rollups', '{replica}', version)
PARTITION BY (res, intDiv(bucket, 2592000000))
ORDER BY (res, target, fingerprint, bucket);

CREATE TABLE IF NOT EXISTS pyramid.histogram_rollups ON CLUSTER pyramid AS pyramid.histogram_rollups_local ENGINE = Distributed(pyramid, pyramid, histogram_rollups_local, target);

CREATE TABLE IF NOT EXISTS pyramid.backfill_blocks_local ON CLUSTER pyramid (
    block String,
    scope String,
    min_time Int64,
    max_time Int64,
    series UInt64,
    samples UInt64,
    histograms UInt64,
    done_ms Int64
) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pyramid/backfill_blocks', '{replica}', done_ms)
ORDER BY (block, scope);

CREATE TABLE IF NOT EXISTS pyramid.backfill_blocks ON CLUSTER pyramid AS pyramid.backfill_blocks_local ENGINE = Distributed(pyramid, pyramid, backfill_blocks_local, cityHash64(block));
