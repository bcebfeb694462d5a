package adapter

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/rollup"
)

// tierExtents caches what each tier holds, for routing. It is refreshed at most every
// Config.ReadTierRefresh: reads only need to know roughly where raw data ends and how far
// the rollup job has come, and rollup.Status costs a handful of queries.
type tierExtents struct {
	mu     sync.Mutex
	at     time.Time
	status []rollup.TierStatus
}

// extents returns what each of cfg.Tiers holds (rollup.ExtentsOf), raw retention counted
// from now, which moves on between refreshes.
func (s *Server) extents(ctx context.Context) ([]rollup.Extent, error) {
	s.tierExtents.mu.Lock()
	defer s.tierExtents.mu.Unlock()
	now := time.Now()
	if s.cfg.Now != nil {
		now = s.cfg.Now()
	}
	if s.tierExtents.status == nil || now.Sub(s.tierExtents.at) >= s.cfg.ReadTierRefresh || now.Before(s.tierExtents.at) {
		status, err := rollup.Status(ctx, s.conn, s.cfg.place(), s.cfg.Tiers)
		if err != nil {
			return nil, err
		}
		s.tierExtents.status, s.tierExtents.at = status, now
	}
	return rollup.ExtentsOf(s.tierExtents.status, s.cfg.Tiers, now.UnixMilli()), nil
}

// route decides which tiers answer query q and records it in p (see readPlan.segments):
// nil segments when raw samples answer the whole window as they are, which is then read
// exactly as without rollups. That is so when routing is off, when there are no rollup
// tiers, and when the rules pick raw (instant queries, functions no aggregate answers,
// steps finer than every tier, and windows rollups do not cover); the window is then
// narrowed to raw's part of it, so that samples past raw retention that wait to be dropped
// are not read. Nothing is read for a window no tier holds data for (p.empty).
func (s *Server) route(ctx context.Context, q *prompb.Query, p *readPlan) error {
	if !s.cfg.ReadRollups || len(s.cfg.Tiers) < 2 {
		return nil
	}
	ext, err := s.extents(ctx)
	if err != nil {
		return err
	}
	h := rollup.Hints{LookbackMs: s.cfg.ReadLookback.Milliseconds()}
	if q.Hints != nil {
		h.StepMs, h.RangeMs, h.Func = q.Hints.StepMs, q.Hints.RangeMs, q.Hints.Func
	}
	// A client may send a negative step or range; nothing sensible reads them but raw.
	if h.StepMs < 0 || h.RangeMs < 0 {
		return nil
	}
	segs, err := rollup.Route(s.cfg.Tiers, ext, p.mint, p.maxt, h)
	if err != nil {
		// Route refuses only extents it cannot order (a tier whose newest bucket is
		// before its oldest). Raw samples still answer correctly wherever they exist, so
		// the read goes on without rollups rather than failing.
		s.logger.Warn("remote read falls back to raw samples", "err", err)
		return nil
	}
	switch {
	case len(segs) == 0:
		p.empty = true
	case len(segs) == 1 && segs[0].Kind == rollup.KindRaw && segs[0].Res == 0:
		p.mint, p.maxt = segs[0].From, segs[0].To
	default:
		p.segments = segs
	}
	return nil
}

// countSegments records which tiers answered a query that selected series.
func (s *Server) countSegments(p *readPlan, series int) {
	if series == 0 {
		return
	}
	if p.segments == nil {
		s.m.readSegments.WithLabelValues(s.rawTierName(), rollup.KindRaw.String(), "false").Inc()
		return
	}
	for _, sg := range p.segments {
		s.m.readSegments.WithLabelValues(sg.Tier.Name, sg.Kind.String(), strconv.FormatBool(sg.Approximate)).Inc()
	}
}

// tiersHeader is the X-Pyramid-Tiers value of a query: what answers it, in time order,
// one token per segment. "raw" is raw samples as stored; "5m/avg" points of that kind from
// the 5m tier (or from raw at 5m, "raw/avg", where the rollups lag); a trailing "~" marks
// an approximation (raw expired where no aggregate answers the function, or a tier coarser
// than the query asks for); "none" is a query for which nothing is read, its window empty
// or holding no tier's data. The header goes out before any query's series are selected,
// so a query whose matchers select nothing still names the tiers that would answer it.
func (s *Server) tiersHeader(p *readPlan) string {
	if p.empty {
		return "none"
	}
	if p.segments == nil {
		return s.rawTierName()
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

// rawTierName is the raw tier's name as configured, "raw" by default.
func (s *Server) rawTierName() string {
	if len(s.cfg.Tiers) > 0 {
		return s.cfg.Tiers[0].Name
	}
	return "raw"
}

// seriesPoints collects one series' output over a routed query's segments.
type seriesPoints struct {
	ts     []int64
	values []float64
	// counter carries the reset correction from each counter segment into the next.
	counter rollup.Counter
}

// add appends a point if it lies in [mint, maxt]. Points of a bucket overlapping the
// window's edge may be stamped outside it; the segments promise increasing timestamps
// otherwise, and a point that breaks the promise is dropped so that the chunk encoder never
// sees time go backwards.
func (sp *seriesPoints) add(p rollup.Point, mint, maxt int64) {
	if p.T < mint || p.T > maxt || (len(sp.ts) > 0 && p.T <= sp.ts[len(sp.ts)-1]) {
		return
	}
	sp.ts = append(sp.ts, p.T)
	sp.values = append(sp.values, p.V)
}

// fetchRouted fills in the points of batch for a routed plan, segment by segment. It
// returns how many points there are, which count against budget like raw samples, and how
// many rows it read to make them, which sizes the next batch (see batches): a segment
// aggregating raw samples on the fly reads far more rows than it returns points.
func fetchRouted(ctx context.Context, s *Server, p *readPlan, batch []*readSeries, budget int) (points, rows int, err error) {
	out := make([]seriesPoints, len(batch))
	for _, sg := range p.segments {
		var n int
		if sg.Res == 0 {
			n, err = routedRaw(ctx, s, sg, batch, out, p, budget-points)
		} else {
			n, err = routedBuckets(ctx, s, sg, batch, out, p)
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
			return points, rows, errSampleBudget
		}
	}
	for i, rs := range batch {
		rs.ts, rs.values = out[i].ts, out[i].values
	}
	return points, rows, nil
}

// routedRaw appends a raw segment's samples, through each series' Counter when the segment
// continues counter segments, and returns how many it read.
func routedRaw(ctx context.Context, s *Server, sg rollup.Segment, batch []*readSeries, out []seriesPoints, p *readPlan, budget int) (int, error) {
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
// charged to the sample limit, as they never reach the client; the batch size bounds the
// memory they take.
func routedBuckets(ctx context.Context, s *Server, sg rollup.Segment, batch []*readSeries, out []seriesPoints, p *readPlan) (int, error) {
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
		stored, n, err := rollup.ReadBuckets(ctx, s.conn, s.cfg.Database, tres, targets, fps, from, to)
		if err != nil {
			return n, err
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
