// Package schema owns pyramid's ClickHouse tables: it detects the server version, picks the
// DDL dialect that version supports, applies versioned migrations idempotently, on one server
// or on every server of a cluster (replicated, sharded, behind Distributed tables; see Place).
// Every other statement, raw-sample retention on servers without TTL included, is package
// store's. See README.md for the tables and why they are laid out as they are.
package schema
