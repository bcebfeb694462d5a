// Package adapter owns pyramid's HTTP surface, the write path and the read path behind it.
//
// Write: decode → validate → batch → ClickHouse.
//
//	body.go           read: bodies under a deadline, growing only as the budget allows
//	memory.go         the byte budget every request's body, decoding and rows draw on
//	codec.go          decode: size limits, content negotiation, snappy
//	wire.go           decode: zero-copy parsing of the remote write 1.0 WriteRequest
//	wire2.go          decode: the same for remote write 2.0 (symbols, per-series metadata)
//	validate.go       validate: label rules, fingerprints, columnar rows
//	batcher.go        batch: group commit of concurrent requests into large inserts; requests
//	                  spanning many days inserted on their own
//	clickhouse.go     ClickHouse: the INSERTs and the series cache
//	write_handler.go  POST /api/v1/write, tying the four together
//
// Read: matchers → series → samples → encode.
//
//	read_codec.go     decode the ReadRequest; encode SAMPLES responses, XOR chunks and frames
//	matchers.go       Prometheus's matcher semantics, and the exact SQL prefilter they allow
//	read_store.go     the series and sample queries, deduplication of retried writes and
//	                  conflicting ones (the last write wins, as merges decide)
//	read_route.go     which tiers answer a query (rollup.Route), and reading their segments
//	read_handler.go   POST /api/v1/read: per-request budgets, one query at a time, both
//	                  response types
//
//	errors.go         every error kind and the one function mapping it to a status
//	server.go         routes, /metrics, /-/healthy, /-/ready
//
// The subpackage auth serves TLS and checks credentials and permissions in front of it.
package adapter
