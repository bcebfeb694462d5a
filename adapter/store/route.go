package store

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/prometheus/storage"

	"github.com/pyramid-metrics/pyramid/rollup"
)

// Plan is how one selection is answered: its window and the tiers that answer it.
type Plan struct {
	mint, maxt int64
	// empty is set when nothing is read: the window is empty, or no tier holds data in it.
	empty bool
	// segments is how the tiers answer; nil reads raw samples as they are.
	segments []rollup.Segment
	rawTier  string
}

// Tiers names what answers the plan, in time order, one token per segment: "raw" is raw
// samples as stored; "5m/avg" points of that kind from the 5m tier (or from raw at 5m,
// "raw/avg", where the rollups lag); a trailing "~" marks an approximation (raw expired
// where no aggregate answers the function, or a tier coarser than the query asks for);
// "none" is a selection for which nothing is read, its window empty or holding no tier's
// data.
func (p Plan) Tiers() string {
	if p.empty {
		return "none"
	}
	if p.segments == nil {
		return p.rawTier
	}
	var b strings.Builder
	for i, sg := range p.segments {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(sg.Tier.Name)
		if sg.Kind != rollup.KindRaw || sg.Res != 0 {
			b.WriteByte('/')
			b.WriteString(sg.Kind.String())
		}
		if sg.Approximate {
			b.WriteByte('~')
		}
	}
	return b.String()
}

// tierExtents caches what each tier holds, for routing. It is refreshed at most every
// Config.TierRefresh: reads only need to know roughly where raw data ends and how far
// the rollup job has come, and Status costs a handful of queries.
type tierExtents struct {
	mu     sync.Mutex
	at     time.Time
	status []rollup.TierStatus
	// interval is raw's average sample interval in ms (rawInterval); 0 until it is
	// computed from status.
	interval int64
}

// extentsAt returns what each of the tiers holds (rollup.ExtentsOf), raw retention
// counted from now, which moves on between refreshes.
func (s *Store) extentsAt(ctx context.Context, now time.Time) ([]rollup.Extent, error) {
	e := &s.extents
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := s.refresh(ctx, now); err != nil {
		return nil, err
	}
	return rollup.ExtentsOf(e.status, s.cfg.Tiers, now.UnixMilli()), nil
}

// refresh renews the cached tier status when it is older than Config.TierRefresh. The
// caller holds s.extents.mu.
func (s *Store) refresh(ctx context.Context, now time.Time) error {
	e := &s.extents
	if e.status != nil && now.Sub(e.at) < s.cfg.TierRefresh && !now.Before(e.at) {
		return nil
	}
	status, err := s.Status(ctx)
	if err != nil {
		return unavailable(err)
	}
	e.status, e.at, e.interval = status, now, 0
	return nil
}

// plan decides which tiers answer a selection of [mint, maxt] narrowed to the hints'
// window, as the hints ask. Raw samples answer the whole window as they are (nil
// segments) when routing is off, when there are no rollup tiers, and when the rules pick
// raw (instant queries, functions no aggregate answers, steps finer than every tier, and
// windows rollups do not cover); the window is then narrowed to raw's part of it, so that
// samples past raw retention that wait to be dropped are not read. Nothing is read for a
// window no tier holds data for.
func (s *Store) plan(ctx context.Context, mint, maxt int64, h *storage.SelectHints, lookback time.Duration) (Plan, error) {
	if h == nil {
		h = &storage.SelectHints{}
	}
	p := Plan{rawTier: s.cfg.rawTier()}
	p.mint, p.maxt = window(mint, maxt, h)
	if p.mint > p.maxt {
		p.empty = true
		return p, nil
	}
	if !s.cfg.Rollups || len(s.cfg.Tiers) < 2 || h.Func == "series" {
		return p, nil
	}
	// A client may send a negative step or range; nothing sensible reads them but raw.
	if h.Step < 0 || h.Range < 0 {
		return p, nil
	}
	ext, err := s.extentsAt(ctx, s.cfg.now())
	if err != nil {
		return p, err
	}
	rh := rollup.Hints{LookbackMs: lookback.Milliseconds(), StepMs: h.Step, RangeMs: h.Range, Func: h.Func}
	segs, err := rollup.Route(s.cfg.Tiers, ext, p.mint, p.maxt, rh)
	if err != nil {
		// Route refuses only extents it cannot order (a tier whose newest bucket is
		// before its oldest). Raw samples still answer correctly wherever they exist, so
		// the read goes on without rollups rather than failing.
		s.logger.Warn("read falls back to raw samples", "err", err)
		return p, nil
	}
	switch {
	case len(segs) == 0:
		p.empty = true
	case len(segs) == 1 && segs[0].Kind == rollup.KindRaw && segs[0].Res == 0:
		p.mint, p.maxt = segs[0].From, segs[0].To
	default:
		p.segments = segs
	}
	return p, nil
}

// window is the time range to read for a selection of [mint, maxt]: narrowed to the
// hints' window when they have one. The querier's range covers every selector of a PromQL
// expression and the hints the range this selector needs, which is also what Prometheus's
// own TSDB reads.
func window(mint, maxt int64, h *storage.SelectHints) (int64, int64) {
	if h.Start != 0 || h.End != 0 {
		return max(mint, h.Start), min(maxt, h.End)
	}
	return mint, maxt
}

// countSegments records which tiers answered a selection that found series.
func (s *Store) countSegments(p *Plan, series int) {
	if series == 0 {
		return
	}
	if p.segments == nil {
		s.m.segments.WithLabelValues(p.rawTier, rollup.KindRaw.String(), "false").Inc()
		return
	}
	for _, sg := range p.segments {
		s.m.segments.WithLabelValues(sg.Tier.Name, sg.Kind.String(), strconv.FormatBool(sg.Approximate)).Inc()
	}
}

// fetch fills in the samples of batch, charging them against *left, the remaining sample
// budget. It returns how many rows it read, which sizes the next batch.
func (s *Store) fetch(ctx context.Context, p *Plan, batch []*selected, left *int) (int, error) {
	ctx = s.cacheReads(ctx)
	// Histograms are read alongside the floats, on a connection of their own, so that
	// series without any cost one query's wait only once; a routed plan reads them from
	// the same tiers as the floats (routedHistograms).
	type histograms struct {
		byFP map[uint64][]HistogramSample
		err  error
	}
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hch := make(chan histograms, 1)
	go func() {
		var h histograms
		if p.segments == nil {
			h.byFP, _, h.err = s.readHistograms(hctx, batch, p.mint, p.maxt)
		} else {
			h.byFP, h.err = s.routedHistograms(hctx, p, batch)
		}
		hch <- h
	}()
	var n, rows int
	var err error
	if p.segments == nil {
		n, err = s.fetchSamples(ctx, batch, p.mint, p.maxt, *left)
		rows = n
	} else {
		n, rows, err = s.fetchRouted(ctx, p, batch, *left)
	}
	if err != nil {
		cancel()
		<-hch
		return rows, err
	}
	hs := <-hch
	if hs.err != nil {
		return rows, hs.err
	}
	h := attachHistograms(batch, hs.byFP)
	n, rows = n+h, rows+h
	if n > *left {
		return rows, ErrSampleBudget
	}
	*left -= n
	s.m.samples.Add(float64(n))
	return rows, nil
}

// cacheReads makes the reads under ctx use ClickHouse's uncompressed cache up to
// Config.CacheRows rows. It replaces any settings ctx already carries, which clickhouse-go
// gives no way to merge; the read path sets none.
func (s *Store) cacheReads(ctx context.Context) context.Context {
	if s.cfg.CacheRows == 0 {
		return ctx
	}
	return clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"use_uncompressed_cache":           1,
		"merge_tree_max_rows_to_use_cache": s.cfg.CacheRows,
	}))
}

// seriesPoints collects one series' output over a routed selection's segments.
type seriesPoints struct {
	ts     []int64
	values []float64
	// counter carries the reset correction from each counter segment into the next.
	counter rollup.Counter
}

// add appends a point if it lies in [mint, maxt]. Points of a bucket overlapping the
// window's edge may be stamped outside it; the segments promise increasing timestamps
// otherwise, and a point that breaks the promise is dropped so that readers never see
// time go backwards.
func (sp *seriesPoints) add(p rollup.Point, mint, maxt int64) {
	if p.T < mint || p.T > maxt || (len(sp.ts) > 0 && p.T <= sp.ts[len(sp.ts)-1]) {
		return
	}
	sp.ts = append(sp.ts, p.T)
	sp.values = append(sp.values, p.V)
}

// fetchRouted fills in the points of batch for a routed plan, segment by segment. It
// returns how many points there are, which count against budget like raw samples, and how
// many rows it read to make them, which sizes the next batch: a segment aggregating raw
// samples on the fly reads far more rows than it returns points.
func (s *Store) fetchRouted(ctx context.Context, p *Plan, batch []*selected, budget int) (points, rows int, err error) {
	out := make([]seriesPoints, len(batch))
	for _, sg := range p.segments {
		var n int
		if sg.Res == 0 {
			n, err = s.routedRaw(ctx, sg, batch, out, p, budget-points)
		} else {
			n, err = s.routedBuckets(ctx, sg, batch, out, p)
		}
		if err != nil {
			return points, rows, err
		}
		rows += n
		points = 0
		for i := range out {
			points += len(out[i].ts)
		}
		if points > budget {
			return points, rows, ErrSampleBudget
		}
	}
	for i, rs := range batch {
		rs.ts, rs.values = out[i].ts, out[i].values
	}
	return points, rows, nil
}

// routedRaw appends a raw segment's samples, through each series' Counter when the segment
// continues counter segments, and returns how many it read.
func (s *Store) routedRaw(ctx context.Context, sg rollup.Segment, batch []*selected, out []seriesPoints, p *Plan, budget int) (int, error) {
	n, err := s.fetchSamples(ctx, batch, sg.From, sg.To, budget)
	if err != nil {
		return n, err
	}
	for i, rs := range batch {
		sp := &out[i]
		for j, t := range rs.ts {
			pt := rollup.Point{T: t, V: rs.values[j]}
			if sg.Kind == rollup.KindCounter {
				pt = sp.counter.Sample(t, rs.values[j])
			}
			sp.add(pt, p.mint, p.maxt)
		}
		rs.ts, rs.values = rs.ts[:0], rs.values[:0]
	}
	return n, nil
}

// routedBuckets appends the points of a bucket segment, the buckets of width sg.Res that
// overlap [sg.From, sg.To], and returns how many rows it read for them. Its reads are not
// charged to the sample budget, as they never reach the reader; the batch size bounds the
// memory they take.
func (s *Store) routedBuckets(ctx context.Context, sg rollup.Segment, batch []*selected, out []seriesPoints, p *Plan) (int, error) {
	from := rollup.BucketStart(sg.From, sg.Res)
	to := rollup.BucketStart(sg.To, sg.Res) + sg.Res - 1
	if sg.Kind != rollup.KindLast && sg.Kind != rollup.KindCounter {
		// These points are stamped at their bucket's last millisecond, so a bucket
		// reaching past maxt has its point dropped: it need not be read. (Last and counter
		// points sit at the bucket's last sample, which may still lie within the window.)
		to = min(to, rollup.BucketStart(saturatingAdd(p.maxt, 1), sg.Res)-1)
	}
	if from > to {
		return 0, nil
	}
	buckets := make(map[uint64][]rollup.BucketAggregate, len(batch))
	var rows int
	if sg.Tier.IsRaw() {
		n, err := s.fetchSamples(ctx, batch, from, to, math.MaxInt)
		if err != nil {
			return n, err
		}
		rows = n
		for _, rs := range batch {
			buckets[rs.fingerprint] = rollup.Downsample(rs.ts, rs.values, sg.Res)
			rs.ts, rs.values = rs.ts[:0], rs.values[:0]
		}
	} else {
		targets, fps := batchKeys(batch)
		tres := sg.Tier.ResolutionMs()
		// Rows of a finer tier are merged, so every one starting within the coarse
		// buckets is read.
		stored, n, err := s.readBuckets(ctx, tres, &sg.Kind, targets, fps, from, to)
		if err != nil {
			return n, unavailable(err)
		}
		rows = n
		for fp, bs := range stored {
			if tres != sg.Res {
				if bs, err = rollup.Rollup(bs, sg.Res); err != nil {
					return rows, fmt.Errorf("merge %s rollups of series %d to %d ms: %w", sg.Tier.Name, fp, sg.Res, err)
				}
			}
			buckets[fp] = bs
		}
	}
	var pts []rollup.Point
	for i, rs := range batch {
		sp := &out[i]
		for _, b := range buckets[rs.fingerprint] {
			if sg.Kind == rollup.KindCounter {
				pts = sp.counter.Bucket(pts[:0], b)
				for _, pt := range pts {
					sp.add(pt, p.mint, p.maxt)
				}
				continue
			}
			if b.Count == 0 {
				continue
			}
			pt, err := b.Point(sg.Kind, b.Start, b.Res)
			if err != nil {
				return rows, err
			}
			sp.add(pt, p.mint, p.maxt)
		}
	}
	return rows, nil
}
