package store

import (
	"context"
	"fmt"

	"github.com/pyramid-metrics/pyramid/rollup"
)

// histogramPoints collects one histogram series' output over a routed selection's
// segments, as seriesPoints does for floats.
type histogramPoints struct {
	out     []HistogramSample
	counter rollup.HistogramCounter
}

// add appends a point if it lies in [mint, maxt] and after the last one.
func (hp *histogramPoints) add(h HistogramSample, mint, maxt int64) {
	if h.T < mint || h.T > maxt || (len(hp.out) > 0 && h.T <= hp.out[len(hp.out)-1].T) {
		return
	}
	hp.out = append(hp.out, h)
}

func (hp *histogramPoints) addRollup(pts []rollup.HistogramSample, mint, maxt int64) {
	for _, pt := range pts {
		hp.add(HistogramSample{T: pt.T, FH: pt.H}, mint, maxt)
	}
}

// routedHistograms reads the histograms of batch for a routed plan, segment by segment, as
// fetchRouted reads floats: raw histograms as stored in raw segments (through each series'
// HistogramCounter after counter segments), and the points of the histogram rollups where a
// tier answers. It only reads the batch's keys, so it may run while the floats are read.
func (s *Store) routedHistograms(ctx context.Context, p *Plan, batch []*selected) (map[uint64][]HistogramSample, error) {
	states := map[uint64]*histogramPoints{}
	state := func(fp uint64) *histogramPoints {
		st := states[fp]
		if st == nil {
			st = &histogramPoints{}
			states[fp] = st
		}
		return st
	}
	targets, fps := batchKeys(batch)
	var scratch []rollup.HistogramSample
	for _, sg := range p.segments {
		if sg.Res == 0 {
			raw, _, err := s.readHistograms(ctx, batch, sg.From, sg.To)
			if err != nil {
				return nil, err
			}
			for fp, hs := range raw {
				st := state(fp)
				if sg.Kind != rollup.KindCounter {
					sortHistograms(hs)
					for _, h := range hs {
						st.add(h, p.mint, p.maxt)
					}
					continue
				}
				for _, h := range toFloatSamples(hs) {
					scratch = st.counter.Sample(scratch[:0], h.T, h.H)
					st.addRollup(scratch, p.mint, p.maxt)
				}
			}
			continue
		}
		from := rollup.BucketStart(sg.From, sg.Res)
		to := rollup.BucketStart(sg.To, sg.Res) + sg.Res - 1
		if sg.Kind != rollup.KindLast && sg.Kind != rollup.KindCounter {
			to = min(to, rollup.BucketStart(saturatingAdd(p.maxt, 1), sg.Res)-1)
		}
		if from > to {
			continue
		}
		buckets := map[uint64][]rollup.BucketHistogramAggregate{}
		if sg.Tier.IsRaw() {
			raw, _, err := s.readHistograms(ctx, batch, from, to)
			if err != nil {
				return nil, err
			}
			for fp, hs := range raw {
				buckets[fp] = rollup.DownsampleHistograms(toFloatSamples(hs), sg.Res)
			}
		} else {
			tres := sg.Tier.ResolutionMs()
			stored, _, err := s.ReadHistogramBuckets(ctx, tres, targets, fps, from, to)
			if err != nil {
				return nil, unavailable(err)
			}
			for fp, bs := range stored {
				if tres != sg.Res {
					if bs, err = rollup.RollupHistograms(bs, sg.Res); err != nil {
						return nil, fmt.Errorf("merge %s histogram rollups of series %d to %d ms: %w", sg.Tier.Name, fp, sg.Res, err)
					}
				}
				buckets[fp] = bs
			}
		}
		for fp, bs := range buckets {
			st := state(fp)
			for _, b := range bs {
				if sg.Kind == rollup.KindCounter {
					scratch = st.counter.Bucket(scratch[:0], b)
					st.addRollup(scratch, p.mint, p.maxt)
					continue
				}
				pt, ok, err := b.Point(sg.Kind, b.Start, b.Res)
				if err != nil {
					return nil, err
				}
				if ok {
					st.add(HistogramSample{T: pt.T, FH: pt.H}, p.mint, p.maxt)
				}
			}
		}
	}
	out := make(map[uint64][]HistogramSample, len(states))
	for fp, st := range states {
		if len(st.out) > 0 {
			out[fp] = st.out
		}
	}
	return out, nil
}
