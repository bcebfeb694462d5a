// Package store owns every statement pyramid sends to ClickHouse but the DDL (package
// schema): it answers pyramid's reads through Prometheus's own query interface,
// storage.Queryable, so that remote read and PromQL consume the same series sets, and it
// holds the write path's inserts, the rollup job's statements, the tier status and
// retention. A Store holds the connection and where the tables are; one per process,
// shared by the handlers, the rollup job and the status collector.
//
// Matchers → series → samples from the right tier:
//
//	matchers.go  Prometheus's matcher semantics, and the exact SQL prefilter they allow
//	series.go    the series query on the catalogue, label names and values
//	samples.go   the raw sample query, deduplication of retried writes and conflicting ones
//	             (the last write wins, as merges decide)
//	histograms.go  native histograms: their columns, insert and raw read, merged into the
//	             series' samples (a float wins a timestamp both hold)
//	route.go     which tiers answer a selection (rollup.Route, from the select hints), and
//	             reading their segments
//	histroute.go the same segments for histogram series
//	querier.go   storage.Querier: plans, budgets and series sets fetched batch by batch
//	estimate.go  how many series and points a selection would read, from the catalogue
//
// Writes, the rollup job, status and retention:
//
//	write.go      the samples, series and metadata INSERTs, and the schema version
//	marks.go      the rollup work marks the write path leaves (rollup.Marker decides which)
//	rollups.go    rollup reads (ReadBuckets), the kept value of conflicting samples
//	              (ReadWinners), and the rollup job's statements (rollup/materialize runs it)
//	histrollups.go  the histogram rollup rows: insert, read, and the raw histograms of units
//	status.go     what each tier holds (Status), and its cached pyramid_tier_* metrics
//	retention.go  dropping expired partitions: raw on servers without TTL, and rollups
//	storage.go    what the tables take on disk, for the load generator's report
//	backfill.go   the blocks `pyramid backfill` has stored, so that a run started again skips them
//	rowbytes.go   what a row of each table weighs uncompressed, for backfill's bytes sent
package store
