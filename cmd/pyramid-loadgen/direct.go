package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/schema"
)

// directResult holds what phase 2 measured: the same rows inserted straight into
// ClickHouse with pyramid's own insert code, batch size and concurrency.
type directResult struct {
	Database      string     `json:"database"`
	Batches       int        `json:"batches"`
	Samples       int        `json:"samples"`
	Histograms    int        `json:"histograms"`
	SeriesRows    int        `json:"series_rows"`
	BatchRows     int        `json:"batch_rows"`
	Workers       int        `json:"workers"`
	PregenSeconds float64    `json:"pregen_seconds"`
	WallSeconds   float64    `json:"wall_seconds"`
	RowsPerSec    float64    `json:"rows_per_sec"`
	BatchP50Ms    float64    `json:"batch_p50_ms"`
	BatchMaxMs    float64    `json:"batch_max_ms"`
	ClickHouse    *procStats `json:"clickhouse,omitempty"`
	LoadgenCPUSec float64    `json:"loadgen_cpu_seconds"`
}

// resetDatabase drops db and creates it again with pyramid's schema, so that every run
// starts from the same empty tables.
func resetDatabase(ctx context.Context, conn driver.Conn, db string, retention time.Duration, logger *slog.Logger) error {
	cfg := schema.Config{Database: db, RawRetention: retention}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := schema.Drop(ctx, conn, cfg); err != nil {
		return err
	}
	if _, err := schema.Migrate(ctx, conn, cfg, logger); err != nil {
		return fmt.Errorf("migrate %s: %w", db, err)
	}
	return nil
}

// insertDirect inserts batches with `workers` concurrent inserters, each doing what
// pyramid's insert does for one batch: series rows first, then the samples, then the
// histograms.
func insertDirect(ctx context.Context, st *store.Store, batches []*adapter.Batch, workers int, res *directResult) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan *adapter.Batch)
	var mu sync.Mutex
	var firstErr error
	var lat []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				t0 := time.Now()
				err := st.InsertSeries(ctx, b.Series)
				if err == nil {
					err = st.InsertSamples(ctx, b.Targets, b.Fingerprints, b.Timestamps, b.Values)
				}
				if err == nil {
					err = st.InsertHistograms(ctx, b.Histograms)
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				if err != nil && firstErr == nil {
					firstErr = err
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, b := range batches {
		select {
		case work <- b:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	wall := time.Since(start)
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	slices.Sort(lat)
	res.Workers = workers
	res.WallSeconds = wall.Seconds()
	res.RowsPerSec = float64(res.Samples+res.Histograms) / wall.Seconds()
	res.BatchP50Ms = ms(percentile(lat, 0.5))
	if len(lat) > 0 {
		res.BatchMaxMs = ms(lat[len(lat)-1])
	}
	return nil
}
