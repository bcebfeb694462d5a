// Package rollup owns the rules of pyramid's rollup pyramid: which resolutions exist, what
// a rollup row holds and how it is computed, which resolution and aggregate answer a
// query, and which work units stored samples dirty. The rules are pure Go and know nothing
// of ClickHouse, HTTP or the remote read protocol, so that they can be tested exhaustively
// and the writer and the reader cannot disagree on them. Package store sends the
// statements, and package rollup/materialize runs the job that keeps the rollup tables
// equal to the raw samples with both. README.md draws the tables and the data flow.
//
//	tiers.go      the tier ladder (PYRAMID_TIERS=raw:30d,5m:365d,1h:0): parsing and the
//	              constraints that keep buckets aligned across tiers and day partitions
//	aggregate.go  the rollup row of one series and bucket (count, sum, min, max, first, last,
//	              counter correction), computed from raw samples or merged from finer rows
//	route.go      the query router: which tier and aggregate serve which part of a window
//	points.go     how rollup rows become the samples Prometheus sees, and what each kind
//	              gets wrong compared with raw
//	histogram.go  the same for native histograms: their rollup row, merge, points and
//	              reset-corrected counter
//	dedup.go      ordering raw samples and removing retried duplicates; conflicting values
//	              resolved as the table's merges resolve them
//	marker.go     the work units (target x coarsest bucket) that stored samples dirty
//	status.go     what a tier holds (TierStatus), for /api/v1/status/tiers and routing
//
// Three invariants hold everything together. A rollup row equals the aggregation of the
// deduplicated raw samples of its bucket, whether it was computed from raw or merged from a
// finer tier (exactly for everything but the two float sums, which agree to within one ulp).
// Bucket boundaries of every tier are boundaries of every finer tier and of UTC days, so a
// seam between two tiers never splits a bucket. And a rollup point is never stamped before
// a sample it summarizes, so no query ever sees data from after its evaluation time.
package rollup
