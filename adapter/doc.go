// Package adapter owns pyramid's HTTP surface, the write path and the read path behind it.
// Every statement they send is package store's; the Server gets the process's one Store.
//
// Write: decode → validate → batch → store.
//
//	body.go           read: bodies under a deadline, growing only as the budget allows
//	memory.go         the byte budget every request's body, decoding and rows draw on
//	codec.go          decode: size limits, content negotiation, snappy
//	wire.go           decode: zero-copy parsing of the remote write 1.0 WriteRequest
//	wire2.go          decode: the same for remote write 2.0 (symbols, per-series metadata)
//	validate.go       validate: label rules, fingerprints, columnar rows
//	batcher.go        batch: group commit of concurrent requests into large inserts; requests
//	                  spanning many days inserted on their own
//	caches.go         what this process has already catalogued: series hours and metadata,
//	                  so that most batches insert samples alone (store.InsertSamples)
//	write_handler.go  POST /api/v1/write, tying the four together
//
// Read: matchers → store.Querier (series, tiers, samples) → encode.
//
//	read_codec.go     decode the ReadRequest; encode SAMPLES responses and frames
//	xorchunk.go       encode XOR chunks, byte for byte as Prometheus's chunkenc does
//	matchers.go       remote read's matchers: regex dialects and the empty-matcher check
//	read_handler.go   POST /api/v1/read: per-request budgets, one query at a time, both
//	                  response types
//	status.go         GET /api/v1/status/tiers: what each tier holds (store.Status)
//
//	errors.go         every error kind and the one function mapping it to a status
//	server.go         routes, /metrics, /-/healthy, /-/ready
//
// The subpackage auth serves TLS and checks credentials and permissions in front of it.
package adapter
