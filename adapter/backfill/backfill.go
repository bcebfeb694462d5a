// Package backfill imports the history a Prometheus server already holds into pyramid:
// the persisted blocks of a Prometheus data directory or snapshot, read with Prometheus's
// own tsdb package and inserted straight into ClickHouse through package store, in
// bounded column batches, with the rollup marks that make the materializer compute their
// tiers. Samples older than raw retention, which raw would drop and the materializer
// never computes, go straight into the rollup tiers that still keep them, aggregated here
// by the materializer's own rules. Every block stored completely is recorded, so a run
// started again (after a kill, or to be sure) skips it; a block cut short is stored again
// whole, which the tables absorb as they absorb retried writes. Series metadata (type, help,
// unit) comes along where the source has it: from the metadata records of a data
// directory's WAL, or from the /api/v1/metadata of the Prometheus read remotely.
package backfill

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/go-units"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"golang.org/x/time/rate"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
)

// Config is one backfill run.
type Config struct {
	// Path is a Prometheus data directory or snapshot: its block directories are read, and
	// of its WAL only the metadata records.
	Path string
	// RemoteRead, instead of Path, is the remote-read URL of a running Prometheus, read a
	// UTC day at a time from MinTime (required then) to MaxTime or now.
	RemoteRead string
	// MetadataURL is where the metadata of the Prometheus read remotely is fetched from;
	// empty is RemoteRead with its /api/v1/read path turned into /api/v1/metadata.
	MetadataURL string
	// MinTime and MaxTime bound the samples imported (ms, inclusive).
	MinTime, MaxTime int64
	// Matchers select the series imported; none imports every series.
	Matchers []*labels.Matcher
	// BatchRows bounds the rows held and inserted at once.
	BatchRows int
	// RateLimit bounds the rows inserted per second, so that a backfill leaves ClickHouse
	// room for live ingest; 0 is no limit.
	RateLimit float64
	// Progress, when set, is called after every batch stored, and the line logged per
	// block or day drops to debug level: a progress bar takes its place.
	Progress func(Progress)
	// Tiers is the resolution ladder, for raw retention and the rollup marks.
	Tiers []rollup.Tier
	// Now is the clock raw retention is counted from; nil is time.Now.
	Now func() time.Time
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case (c.Path == "") == (c.RemoteRead == ""):
		return errors.New("backfill needs either the path of a Prometheus data directory or snapshot, or a remote-read URL")
	case c.MetadataURL != "" && c.RemoteRead == "":
		return errors.New("a metadata URL goes with a remote-read URL: a data directory's metadata is read from its WAL")
	case c.RemoteRead != "" && c.MinTime == math.MinInt64:
		return errors.New("backfill from remote read needs a min time: a remote-read endpoint does not say where its data begins")
	case c.MinTime > c.MaxTime:
		return fmt.Errorf("min time %d is after max time %d", c.MinTime, c.MaxTime)
	case c.BatchRows <= 0:
		return fmt.Errorf("batch rows %d must be positive", c.BatchRows)
	case c.RateLimit < 0:
		return fmt.Errorf("rate limit %g must not be negative", c.RateLimit)
	case len(c.Tiers) == 0:
		return errors.New("backfill needs the tier ladder")
	}
	return nil
}

// scope names what a run imports besides the block: blocks recorded under another scope
// are imported again.
func (c Config) scope() string {
	ms := make([]string, len(c.Matchers))
	for i, m := range c.Matchers {
		ms[i] = m.String()
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%d|%d|%s", c.MinTime, c.MaxTime, strings.Join(ms, ",")))
	return hex.EncodeToString(sum[:8])
}

// Summary is what a run did. Samples and Histograms count what was read; ToTiers those
// of them older than raw retention, which went into the rollup tiers only, and Rollups
// the tier rows made of them.
type Summary struct {
	Blocks, Skipped, Series int
	Samples, Histograms     int64
	ToTiers, Rollups        int64
	// BytesRead is what was read of the source: the index and chunk files of the blocks
	// imported (not those skipped), or the remote-read response bodies as they came
	// (snappy-compressed).
	BytesRead int64
	// BytesSent is the uncompressed column bytes of the rows inserted into ClickHouse:
	// samples, histograms, series catalogue rows, tier rows and rollup marks
	// (store.SampleRowBytes and the rows' ColumnBytes).
	BytesSent int64
	// Metadata is how many metric families' metadata was stored. MetadataFailures counts
	// the metadata sources that could not be read, each logged as a warning: metadata is
	// optional in every source, so its failure stops no import.
	Metadata, MetadataFailures int
	Elapsed                    time.Duration
}

// Progress is how far a run has come: blocks (or days) done of all, samples and histograms
// read so far, and the samples and histograms the blocks hold in all (0 when unknown, as
// through remote read).
type Progress struct {
	Units, UnitsTotal int
	Read, ReadTotal   int64
}

// add counts another block's or day's figures in.
func (s *Summary) add(o Summary) {
	s.Blocks++
	s.Series += o.Series
	s.Samples += o.Samples
	s.Histograms += o.Histograms
	s.ToTiers += o.ToTiers
	s.Rollups += o.Rollups
	s.BytesRead += o.BytesRead
	s.BytesSent += o.BytesSent
}

// Run imports the blocks under cfg.Path, or the days cfg.RemoteRead serves, into st,
// logging progress per block or day.
func Run(ctx context.Context, cfg Config, st *store.Store, logger *slog.Logger) (Summary, error) {
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	start := time.Now()
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	cutoff := cfg.Tiers[0].ExpiredBefore(now().UnixMilli())
	scope := cfg.scope()
	done, err := st.BackfilledBlocks(ctx, scope)
	if err != nil {
		return Summary{}, err
	}
	w := &writer{st: st, marker: rollup.NewMarker(rollup.UnitWidth(cfg.Tiers)), now: now, max: cfg.BatchRows, tiers: cfg.Tiers,
		progress: cfg.Progress, logger: logger}
	if cfg.RemoteRead != "" && len(cfg.Matchers) > 0 {
		// The metric names of the series imported, whose families' metadata is stored.
		w.names = map[string]struct{}{}
	}
	if cfg.RateLimit > 0 {
		w.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), cfg.BatchRows)
	}
	if cfg.RemoteRead != "" {
		return runRemoteRead(ctx, cfg, w, done, scope, cutoff, start, logger)
	}
	db, err := tsdb.OpenDBReadOnly(cfg.Path, "", logger)
	if err != nil {
		return Summary{}, fmt.Errorf("open Prometheus data %s: %w", cfg.Path, err)
	}
	defer db.Close()
	blocks, err := db.Blocks()
	if err != nil {
		return Summary{}, fmt.Errorf("open the blocks of %s: %w", cfg.Path, err)
	}
	var sum Summary
	w.report.UnitsTotal = len(blocks)
	for _, b := range blocks {
		stats := b.Meta().Stats
		w.report.ReadTotal += int64(stats.NumFloatSamples + stats.NumHistogramSamples)
	}
	if w.report.ReadTotal == 0 {
		for _, b := range blocks {
			w.report.ReadTotal += int64(b.Meta().Stats.NumSamples)
		}
	}
	for i, b := range blocks {
		meta := b.Meta()
		id := meta.ULID.String()
		if done[id] {
			sum.Skipped++
			w.report.Units++
			stats := meta.Stats
			w.report.Read += int64(max(stats.NumSamples, stats.NumFloatSamples+stats.NumHistogramSamples))
			w.reportProgress()
			w.unitLog("backfill: block already stored", "block", id, "n", i+1, "of", len(blocks))
			continue
		}
		mint, maxt := max(meta.MinTime, cfg.MinTime), min(meta.MaxTime-1, cfg.MaxTime)
		if mint > maxt {
			continue
		}
		read, err := blockBytes(b)
		if err != nil {
			return sum, fmt.Errorf("backfill block %s (%d of %d): %w", id, i+1, len(blocks), err)
		}
		sent := w.sent
		bs, err := w.block(ctx, b, mint, maxt, cutoff, cfg.Matchers)
		if err != nil {
			return sum, fmt.Errorf("backfill block %s (%d of %d): %w", id, i+1, len(blocks), err)
		}
		bs.BytesRead, bs.BytesSent = read, w.sent-sent
		if err := st.InsertBackfilledBlock(ctx, store.BackfilledBlock{Block: id, Scope: scope, MinTime: meta.MinTime,
			MaxTime: meta.MaxTime, Series: uint64(bs.Series), Samples: uint64(bs.Samples), Histograms: uint64(bs.Histograms),
			DoneMs: time.Now().UnixMilli()}); err != nil {
			return sum, err
		}
		sum.add(bs)
		w.report.Units++
		w.reportProgress()
		elapsed := time.Since(start)
		w.unitLog("backfill: block stored", "block", id, "n", i+1, "of", len(blocks),
			"from", time.UnixMilli(meta.MinTime).UTC().Format(time.RFC3339), "to", time.UnixMilli(meta.MaxTime).UTC().Format(time.RFC3339),
			"series", bs.Series, "samples", bs.Samples, "histograms", bs.Histograms, "to_tiers", bs.ToTiers, "rollup_rows", bs.Rollups,
			"bytes_read", units.BytesSize(float64(bs.BytesRead)), "bytes_sent", units.BytesSize(float64(bs.BytesSent)),
			"samples_per_second", math.Round(float64(sum.Samples+sum.Histograms)/elapsed.Seconds()))
	}
	sum.Metadata, sum.MetadataFailures, err = w.walMetadata(ctx, cfg.Path, cfg.Matchers)
	sum.Elapsed = time.Since(start)
	return sum, err
}

// blockBytes is the size of a block's index and chunk files.
func blockBytes(b tsdb.BlockReader) (int64, error) {
	d, ok := b.(interface{ Dir() string })
	if !ok {
		return 0, fmt.Errorf("block of type %T has no directory", b)
	}
	files, err := filepath.Glob(filepath.Join(d.Dir(), "chunks", "*"))
	if err != nil {
		return 0, fmt.Errorf("list the chunk files of %s: %w", d.Dir(), err)
	}
	var n int64
	for _, f := range append(files, filepath.Join(d.Dir(), "index")) {
		fi, err := os.Stat(f)
		if err != nil {
			return 0, fmt.Errorf("size the block's files: %w", err)
		}
		n += fi.Size()
	}
	return n, nil
}

// writer gathers rows into column batches of at most max rows and stores them: series
// rows first, so that a reader never finds samples of an unknown series, then samples,
// histograms and the rollup marks.
type writer struct {
	st     *store.Store
	marker *rollup.Marker
	now    func() time.Time
	max    int
	tiers  []rollup.Tier
	// limiter paces the inserts (Config.RateLimit); nil is no limit.
	limiter *rate.Limiter
	// progress is Config.Progress, report what it is told.
	progress func(Progress)
	report   Progress
	logger   *slog.Logger
	// sent is the column bytes inserted so far (Summary.BytesSent).
	sent int64
	// names, when not nil, gathers the metric names of the series imported.
	names map[string]struct{}

	batch  adapter.Batch
	series map[uint64]int // fingerprint -> index in batch.Series
	// The samples of the current series older than raw retention, and the tier rows made
	// of them.
	oldTs    []int64
	oldVs    []float64
	oldHs    []rollup.HistogramSample
	rollups  []store.RollupRow
	hrollups []store.HistogramRollupRow
}

// block imports the samples of one block in [mint, maxt].
func (w *writer) block(ctx context.Context, b tsdb.BlockReader, mint, maxt, cutoff int64, ms []*labels.Matcher) (Summary, error) {
	q, err := tsdb.NewBlockQuerier(b, mint, maxt)
	if err != nil {
		return Summary{}, fmt.Errorf("query the block: %w", err)
	}
	defer q.Close()
	return w.seriesSet(ctx, q.Select(ctx, false, &storage.SelectHints{Start: mint, End: maxt}, selector(ms)...), cutoff)
}

// selector is ms, or every series when there are none.
func selector(ms []*labels.Matcher) []*labels.Matcher {
	if len(ms) == 0 {
		return []*labels.Matcher{labels.MustNewMatcher(labels.MatchRegexp, labels.MetricName, ".+")}
	}
	return ms
}

// seriesSet imports every sample of ss and stores the last batch; samples older than
// cutoff (raw retention) go to the rollup tiers only.
func (w *writer) seriesSet(ctx context.Context, ss storage.SeriesSet, cutoff int64) (Summary, error) {
	var sum Summary
	var it chunkenc.Iterator
	for ss.Next() {
		s := ss.At()
		lset := s.Labels()
		fp := labels.StableHash(lset)
		target := adapter.TargetHash(lset.Get("job"), lset.Get("instance"))
		it = s.Iterator(it)
		n := 0
		w.oldTs, w.oldVs, w.oldHs = w.oldTs[:0], w.oldVs[:0], w.oldHs[:0]
		for typ := it.Next(); typ != chunkenc.ValNone; typ = it.Next() {
			w.report.Read++
			var t int64
			switch typ {
			case chunkenc.ValFloat:
				var v float64
				t, v = it.At()
				sum.Samples++
				if t < cutoff {
					w.oldTs, w.oldVs = append(w.oldTs, t), append(w.oldVs, v)
					w.seen(lset, fp, target, t)
					sum.ToTiers++
					n++
					continue
				}
				w.batch.Targets = append(w.batch.Targets, target)
				w.batch.Fingerprints = append(w.batch.Fingerprints, fp)
				w.batch.Timestamps = append(w.batch.Timestamps, t)
				w.batch.Values = append(w.batch.Values, v)
			case chunkenc.ValHistogram, chunkenc.ValFloatHistogram:
				h := store.HistogramSample{}
				if typ == chunkenc.ValHistogram {
					t, h.H = it.AtHistogram(nil)
				} else {
					t, h.FH = it.AtFloatHistogram(nil)
				}
				h.T = t
				sum.Histograms++
				if t < cutoff {
					fh := h.FH
					if fh == nil {
						fh = h.H.ToFloat(nil)
					}
					w.oldHs = append(w.oldHs, rollup.HistogramSample{T: t, H: fh})
					w.seen(lset, fp, target, t)
					sum.ToTiers++
					n++
					continue
				}
				w.batch.Histograms = append(w.batch.Histograms, store.HistogramRow{Target: target, Fingerprint: fp, HistogramSample: h})
			default:
				return sum, fmt.Errorf("series %s: sample of unknown type %s", lset, typ)
			}
			w.seen(lset, fp, target, t)
			n++
			if w.rows() >= w.max {
				if err := w.flush(ctx); err != nil {
					return sum, err
				}
			}
		}
		if err := it.Err(); err != nil {
			return sum, fmt.Errorf("read series %s: %w", lset, err)
		}
		if n > 0 {
			sum.Series++
		}
		sum.Rollups += int64(w.aggregateOld(fp, target))
	}
	if err := ss.Err(); err != nil {
		return sum, fmt.Errorf("select series: %w", err)
	}
	// A block (or a day read remotely) is stored whole before it is recorded, and one
	// insert never spans more than its days (at most 31 for Prometheus's largest blocks).
	return sum, w.flush(ctx)
}

// seen records that the series has a sample at t in the current batch.
func (w *writer) seen(lset labels.Labels, fp, target uint64, t int64) {
	if i, ok := w.series[fp]; ok {
		r := &w.batch.Series[i]
		r.FirstSeen, r.LastSeen = min(r.FirstSeen, t), max(r.LastSeen, t)
		return
	}
	if w.series == nil {
		w.series = map[uint64]int{}
	}
	w.series[fp] = len(w.batch.Series)
	if w.names != nil {
		name := lset.Get(labels.MetricName)
		if _, ok := w.names[name]; !ok {
			w.names[strings.Clone(name)] = struct{}{}
		}
	}
	row := store.SeriesRow{Fingerprint: fp, Target: target, MetricName: lset.Get(labels.MetricName), FirstSeen: t, LastSeen: t}
	lset.Range(func(l labels.Label) {
		row.Names = append(row.Names, l.Name)
		row.Values = append(row.Values, l.Value)
	})
	w.batch.Series = append(w.batch.Series, row)
}

func (w *writer) rows() int {
	return len(w.batch.Timestamps) + len(w.batch.Histograms) + len(w.rollups) + len(w.hrollups)
}

// aggregateOld turns the current series' samples older than raw retention into the rows of
// every rollup tier that still keeps their buckets, and returns how many. Prometheus blocks
// start and end on whole hours, so a block holds whole buckets of every tier, and a bucket
// split between two blocks cannot happen. (Overlapping blocks, which only out-of-order
// ingestion makes, would each store a part of a shared bucket, and the later would win.)
func (w *writer) aggregateOld(fp, target uint64) int {
	if len(w.oldTs) == 0 && len(w.oldHs) == 0 {
		return 0
	}
	nowMs := w.now().UnixMilli()
	n := 0
	for _, tier := range w.tiers {
		if tier.IsRaw() {
			continue
		}
		res, expired := tier.ResolutionMs(), tier.ExpiredBefore(nowMs)
		for _, b := range rollup.Downsample(w.oldTs, w.oldVs, res) {
			if b.End() > expired {
				w.rollups = append(w.rollups, store.RollupRow{Target: target, Fingerprint: fp, BucketAggregate: b})
				n++
			}
		}
		for _, b := range rollup.DownsampleHistograms(w.oldHs, res) {
			if b.End() > expired {
				w.hrollups = append(w.hrollups, store.HistogramRollupRow{Target: target, Fingerprint: fp, BucketHistogramAggregate: b})
				n++
			}
		}
	}
	return n
}

// unitLog logs the line of a block or day: info, or debug under a progress bar.
func (w *writer) unitLog(msg string, args ...any) {
	level := slog.LevelInfo
	if w.progress != nil {
		level = slog.LevelDebug
	}
	w.logger.Log(context.Background(), level, msg, args...)
}

// reportProgress tells Config.Progress how far the run has come.
func (w *writer) reportProgress() {
	if w.progress != nil {
		w.progress(w.report)
	}
}

// pace waits until n more rows fit the rate limit.
func (w *writer) pace(ctx context.Context, n int) error {
	if w.limiter == nil {
		return nil
	}
	for n > 0 {
		k := min(n, w.limiter.Burst())
		if err := w.limiter.WaitN(ctx, k); err != nil {
			return fmt.Errorf("wait for the rate limit: %w", err)
		}
		n -= k
	}
	return nil
}

// flush stores the batch and empties it.
func (w *writer) flush(ctx context.Context) error {
	b := &w.batch
	if w.rows() == 0 {
		return nil
	}
	if err := w.pace(ctx, w.rows()); err != nil {
		return err
	}
	defer w.reportProgress()
	sent := int64(len(b.Timestamps))*store.SampleRowBytes + int64(len(w.rollups))*store.RollupRowBytes
	for _, r := range b.Series {
		sent += int64(r.ColumnBytes())
	}
	for _, r := range b.Histograms {
		sent += int64(r.ColumnBytes())
	}
	for _, r := range w.hrollups {
		sent += int64(r.ColumnBytes())
	}
	if err := w.st.InsertSeries(ctx, b.Series); err != nil {
		return err
	}
	if err := w.st.InsertSamples(ctx, b.Targets, b.Fingerprints, b.Timestamps, b.Values); err != nil {
		return err
	}
	if err := w.st.InsertHistograms(ctx, b.Histograms); err != nil {
		return err
	}
	if len(w.rollups)+len(w.hrollups) > 0 {
		// Versioned by the server's clock, as the materializer versions its rows.
		version, err := w.st.ServerClock(ctx)
		if err != nil {
			return err
		}
		if err := w.st.InsertRollups(ctx, w.rollups, version); err != nil {
			return err
		}
		if err := w.st.InsertHistogramRollups(ctx, w.hrollups, version); err != nil {
			return err
		}
		w.rollups, w.hrollups = w.rollups[:0], w.hrollups[:0]
	}
	targets, stamps := b.Marked()
	nowMs := w.now().UnixMilli()
	if units := w.marker.Unmarked(targets, stamps, nowMs); len(units) > 0 {
		if err := w.st.InsertMarks(ctx, w.marker.Width(), units); err != nil {
			return err
		}
		w.marker.Remember(units, nowMs)
		sent += int64(len(units)) * store.MarkRowBytes
	}
	w.sent += sent
	*b = adapter.Batch{Targets: b.Targets[:0], Fingerprints: b.Fingerprints[:0], Timestamps: b.Timestamps[:0], Values: b.Values[:0]}
	clear(w.series)
	return nil
}
