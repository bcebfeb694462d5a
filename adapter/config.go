package adapter

import (
	"fmt"
	"time"

	"github.com/pyramid-metrics/pyramid/rollup"
)

// Config holds the write path's limits and batching and the read path's limits. The
// store's own settings (where the tables are, how reads use the tiers) are store.Config.
// cmd/pyramid fills both from flags and environment, where the defaults live.
type Config struct {
	// MaxRequestBytes caps the compressed body; MaxDecodedBytes caps it after snappy.
	MaxRequestBytes int64
	MaxDecodedBytes int64
	// BatchRows and BatchWait drive group commit: a batch goes to ClickHouse when it holds
	// BatchRows rows or BatchWait after its first row arrived, whichever is first.
	BatchRows int
	BatchWait time.Duration
	// MaxConcurrentDecodes bounds the write requests being decompressed and validated at
	// once, which is CPU work: a request takes a slot only once its body has arrived.
	// Requests past it wait for a slot; requests waiting for their batch hold none.
	MaxConcurrentDecodes int
	// MemoryBudget bounds the bytes that request bodies, their decoded forms and the rows
	// waiting for insert hold together (see memoryBudget). Past it writes get 503.
	MemoryBudget int64
	// BodyTimeout bounds the time a request body may take to arrive; past it the client
	// gets 408 and its connection is closed.
	BodyTimeout time.Duration
	// InsertWorkers is how many batches may be inserted at once.
	InsertWorkers int
	// MaxRowsInFlight caps rows accepted but not yet stored; past it writes get 503.
	MaxRowsInFlight int
	// InsertTimeout bounds one INSERT.
	InsertTimeout time.Duration
	// RetryAfter is sent with every 503.
	RetryAfter time.Duration
	// MaxFuture is how far ahead of the clock a sample's timestamp may lie; samples
	// further ahead, and samples older than raw retention (Tiers[0]), are refused with 400.
	MaxFuture time.Duration
	// SeriesCacheSize bounds the series pyramid remembers having catalogued, and the
	// label sets it remembers having validated.
	SeriesCacheSize int
	// MaxHistogramBuckets bounds a native histogram's buckets: one with more has its
	// resolution reduced until it fits (checkHistograms). 0 is no limit.
	MaxHistogramBuckets int

	// RollupUnitWidth is rollup.UnitWidth of the tier ladder: stored samples mark their
	// target's unit of this width for the rollup materializer. 0 marks nothing.
	RollupUnitWidth int64

	// ReadMaxSeries and ReadMaxSamples cap what one remote-read request may return, summed
	// over its queries; past either the client gets 429 naming the limit, before pyramid
	// holds more than that.
	ReadMaxSeries  int
	ReadMaxSamples int
	// ReadMaxConcurrent bounds the remote-read requests answered at once. A request past
	// it waits up to ReadQueueWait for a slot, then gets 429 with Retry-After.
	ReadMaxConcurrent int
	ReadQueueWait     time.Duration
	// ReadMaxFrameBytes caps a streamed frame, which always holds one whole series (see
	// frameWriter.writeSeries); it should equal the clients' chunked_read_limit.
	ReadMaxFrameBytes int

	// Tiers is the resolution ladder (rollup.ParseTiers): writes refuse samples older than
	// raw retention (Tiers[0]).
	Tiers []rollup.Tier
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.MaxRequestBytes <= 0 || c.MaxDecodedBytes <= 0:
		return fmt.Errorf("size limits must be positive (request %d, decoded %d)", c.MaxRequestBytes, c.MaxDecodedBytes)
	case c.MaxDecodedBytes < c.MaxRequestBytes:
		return fmt.Errorf("decoded size limit %d is below the request size limit %d", c.MaxDecodedBytes, c.MaxRequestBytes)
	case c.BatchRows <= 0:
		return fmt.Errorf("batch rows %d must be positive", c.BatchRows)
	case c.BatchWait <= 0:
		return fmt.Errorf("batch wait %s must be positive", c.BatchWait)
	case c.MaxConcurrentDecodes <= 0:
		return fmt.Errorf("concurrent decodes %d must be positive", c.MaxConcurrentDecodes)
	case c.MemoryBudget <= 0:
		return fmt.Errorf("request memory budget %d must be positive", c.MemoryBudget)
	case c.BodyTimeout <= 0:
		return fmt.Errorf("body timeout %s must be positive", c.BodyTimeout)
	case c.InsertWorkers <= 0:
		return fmt.Errorf("insert workers %d must be positive", c.InsertWorkers)
	case c.MaxRowsInFlight < c.BatchRows:
		return fmt.Errorf("rows in flight %d must be at least one batch (%d)", c.MaxRowsInFlight, c.BatchRows)
	case c.InsertTimeout <= 0:
		return fmt.Errorf("insert timeout %s must be positive", c.InsertTimeout)
	case c.RetryAfter < time.Second:
		return fmt.Errorf("retry-after %s must be at least 1s (the header counts whole seconds)", c.RetryAfter)
	case c.MaxFuture <= 0:
		return fmt.Errorf("max future %s must be positive (clocks differ a little)", c.MaxFuture)
	case c.MaxHistogramBuckets < 0:
		return fmt.Errorf("histogram bucket limit %d must not be negative", c.MaxHistogramBuckets)
	case c.SeriesCacheSize <= 0:
		return fmt.Errorf("series cache size %d must be positive", c.SeriesCacheSize)
	case c.RollupUnitWidth < 0:
		return fmt.Errorf("rollup unit width %d must not be negative", c.RollupUnitWidth)
	case c.ReadMaxSeries <= 0 || c.ReadMaxSamples <= 0:
		return fmt.Errorf("read limits must be positive (series %d, samples %d)", c.ReadMaxSeries, c.ReadMaxSamples)
	case c.ReadMaxConcurrent <= 0:
		return fmt.Errorf("concurrent reads %d must be positive", c.ReadMaxConcurrent)
	case c.ReadQueueWait < 0:
		return fmt.Errorf("read queue wait %s must not be negative", c.ReadQueueWait)
	case c.ReadMaxFrameBytes < 1024:
		return fmt.Errorf("read frame size %d must be at least 1024 bytes", c.ReadMaxFrameBytes)
	}
	if len(c.Tiers) > 0 {
		if err := rollup.ValidateTiers(c.Tiers); err != nil {
			return err
		}
	}
	return nil
}
