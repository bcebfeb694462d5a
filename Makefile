# pyramid: Prometheus remote-write storage on ClickHouse.
#   make run      install ClickHouse + Prometheus if missing, build, start the local stack
#   make stop     stop the local stack (data stays in var/stack)
#   make test     what CI runs: go test ./... against a private ClickHouse, then brief fuzzing
#   make bench / bench-load / bench-read / fuzz / clean
# The shell scripts in deploy/ do the work; each says what it does at the top.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go

# Fuzz targets as PKGDIR:FuzzName, space-separated; `make test` fuzzes each for
# TEST_FUZZTIME, `make fuzz` for FUZZTIME.
FUZZ_TARGETS ?= adapter:FuzzDecodeWriteRequest adapter:FuzzParseWriteRequest adapter:FuzzParseWriteRequestV2 \
	adapter:FuzzDecodeReadRequest adapter:FuzzXORChunks adapter:FuzzQuoteRoundTrip
TEST_FUZZTIME ?= 15s
FUZZTIME ?= 60s

.PHONY: build run stop test bench bench-load bench-read fuzz clean

build:
	CGO_ENABLED=0 $(GO) build -o bin/pyramid ./cmd/pyramid
	CGO_ENABLED=0 $(GO) build -o bin/pyramid-loadgen ./cmd/pyramid-loadgen

run:
	bash deploy/install.sh
	$(MAKE) build
	bash deploy/stack.sh up

stop:
	bash deploy/stack.sh down

test:
	FUZZ_TARGETS='$(FUZZ_TARGETS)' FUZZTIME='$(TEST_FUZZTIME)' bash deploy/test.sh test

bench:
	bash deploy/test.sh bench

bench-load: build
	bash deploy/install.sh
	bash deploy/bench-load.sh

# Remote read of 1, 100 and 1,000 series x 1 day from pyramid and from Prometheus 2.42, side
# by side, then the ratios. BENCHTIME (default 5x) sets the timed reads per case.
bench-read:
	bash deploy/bench-read.sh

fuzz:
	FUZZ_TARGETS='$(FUZZ_TARGETS)' FUZZTIME='$(FUZZTIME)' bash deploy/test.sh fuzz

# Stop what runs out of var/ first: deleting a live server's files under it helps nobody.
clean:
	bash deploy/stack.sh down
	for d in var/*/; do \
		if [ -f "$$d/clickhouse.pid" ]; then bash deploy/clickhouse.sh stop "$$d"; fi; \
	done
	rm -rf bin var
