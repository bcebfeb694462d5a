// Package adapter owns pyramid's HTTP surface and the write path behind it:
//
//	codec.go          decode: size limits, content negotiation, snappy
//	wire.go           decode: zero-copy protobuf parsing of the WriteRequest
//	validate.go       validate: label rules, fingerprints, columnar rows
//	batcher.go        batch: group commit of concurrent requests into large inserts
//	clickhouse.go     ClickHouse: the INSERTs and the series cache
//	write_handler.go  POST /api/v1/write, tying the four together
//	errors.go         every error kind and the one function mapping it to a status
//	server.go         routes, /metrics, /-/healthy, /-/ready
package adapter
