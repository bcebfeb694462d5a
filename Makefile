# pyramid: Prometheus remote-write storage on ClickHouse.
#   make run      install ClickHouse + Prometheus if missing, build, start the local stack
#   make stop     stop the local stack (data stays in var/stack)
#   make run-cluster / stop-cluster   the same with a 2x2 ClickHouse cluster (var/stack-cluster)
#   make test     what CI runs: go test ./... against a private ClickHouse, then brief fuzzing
#   make bench / bench-load / bench-read / bench-rollup / bench-query / bench-cluster / fuzz / clean
# The shell scripts in deploy/ do the work; each says what it does at the top.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go

# Fuzz targets as PKGDIR:FuzzName, space-separated; `make test` fuzzes each for
# TEST_FUZZTIME, `make fuzz` for FUZZTIME.
FUZZ_TARGETS ?= adapter:FuzzDecodeWriteRequest adapter:FuzzParseWriteRequest adapter:FuzzParseWriteRequestV2 \
	adapter:FuzzDecodeReadRequest adapter:FuzzXORChunks adapter:FuzzSamplesEncoder adapter:FuzzQuoteRoundTrip
TEST_FUZZTIME ?= 15s
FUZZTIME ?= 60s

.PHONY: build run stop run-cluster stop-cluster test bench bench-load bench-read bench-rollup bench-query bench-cluster fuzz clean

build:
	CGO_ENABLED=0 $(GO) build -o bin/pyramid ./cmd/pyramid
	CGO_ENABLED=0 $(GO) build -o bin/pyramid-loadgen ./cmd/pyramid-loadgen

run:
	bash deploy/install.sh
	$(MAKE) build
	bash deploy/stack.sh up

stop:
	bash deploy/stack.sh down

# ZooKeeper and 2 shards x 2 replicas of ClickHouse 18.16 on this machine, pyramid in
# cluster mode, Prometheus writing to it; the ports are the stack's, ClickHouse's from 9300.
run-cluster:
	bash deploy/install.sh
	$(MAKE) build
	STACK_CLUSTER=2x2 PYRAMID_HOME=$(CURDIR)/var/stack-cluster bash deploy/stack.sh up

stop-cluster:
	PYRAMID_HOME=$(CURDIR)/var/stack-cluster bash deploy/stack.sh down

test:
	FUZZ_TARGETS='$(FUZZ_TARGETS)' FUZZTIME='$(TEST_FUZZTIME)' bash deploy/test.sh test

bench:
	bash deploy/test.sh bench

# The load generator's 10M samples into pyramid (with direct inserts of the same rows) and into
# Prometheus 2.42's own remote-write receiver, interleaved, BENCH_RUNS (3) pairs, then the
# medians and ratios.
bench-load: build
	bash deploy/install.sh
	bash deploy/bench-load.sh

# Remote read of 1, 100 and 1,000 series x 1 day from pyramid and from Prometheus 2.42, side
# by side, then the ratios. BENCHTIME (default 5x) sets the timed reads per case.
bench-read:
	bash deploy/bench-read.sh

# A 30-day query_range at a 1h step over 500 series, answered from raw samples and routed to
# the 1h tier, side by side; then the latency ratio. Also the load rate, the time the rollups
# take, and bytes on disk per tier. BENCHTIME (default 3x) sets the timed queries per case;
# ROLLUP_BENCH_DAYS / ROLLUP_BENCH_SERIES shrink the data.
bench-rollup:
	bash deploy/bench-rollup.sh

# pyramid's own /api/v1/query_range against the same PromQL through Prometheus 2.42, same run:
# on the bench-rollup data against a Prometheus reading pyramid by remote read, and on the
# bench-read day against Prometheus's own TSDB; every answer compared, peak memory of each
# side, and the guard's refusal of a year at a 15s step timed. BENCHTIME (default 3x),
# ROLLUP_BENCH_DAYS / ROLLUP_BENCH_SERIES shrink the rollup data.
bench-query:
	bash deploy/bench-query.sh

# Ingest through pyramid into a 1-shard and a 2-shard local ClickHouse cluster, one after
# the other, then the rate ratio and CPU per million samples (CLUSTER_LAYOUTS, LOADGEN_ARGS).
bench-cluster: build
	bash deploy/install.sh
	bash deploy/bench-cluster.sh

fuzz:
	FUZZ_TARGETS='$(FUZZ_TARGETS)' FUZZTIME='$(FUZZTIME)' bash deploy/test.sh fuzz

# Stop what runs out of var/ first: deleting a live server's files under it helps nobody.
clean:
	bash deploy/stack.sh down
	PYRAMID_HOME=$(CURDIR)/var/stack-cluster bash deploy/stack.sh down
	for d in var/*/; do \
		if [ -f "$$d/clickhouse.pid" ]; then bash deploy/clickhouse.sh stop "$$d"; fi; \
	done
	rm -rf bin var
