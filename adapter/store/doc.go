// Package store answers pyramid's reads from ClickHouse through Prometheus's own query
// interface, storage.Queryable: remote read and PromQL consume the same series sets.
//
// Matchers → series → samples from the right tier:
//
//	matchers.go  Prometheus's matcher semantics, and the exact SQL prefilter they allow
//	series.go    the series query on the catalogue, label names and values
//	samples.go   the raw sample query, deduplication of retried writes and conflicting ones
//	             (the last write wins, as merges decide)
//	route.go     which tiers answer a selection (rollup.Route, from the select hints), and
//	             reading their segments
//	querier.go   storage.Querier: plans, budgets and series sets fetched batch by batch
//
// Every statement here reads; the write path, the materializer and retention keep theirs.
package store
