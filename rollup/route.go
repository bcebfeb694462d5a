package rollup

import (
	"errors"
	"fmt"
	"math"
)

// Kind is how a segment's data is read and turned into samples: raw samples, or one field
// of the rollup rows (see Aggregate.Point and Counter).
type Kind uint8

// The kinds. KindRaw hands over raw samples as they are; the others hand over points made
// from bucket aggregates, of a rollup tier or of raw samples aggregated on the fly (see
// Segment).
const (
	KindRaw Kind = iota
	KindAvg
	KindMax
	KindMin
	KindSum
	KindCounter
	KindLast
)

// String names the kind as the routing table does.
func (k Kind) String() string {
	switch k {
	case KindRaw:
		return "raw"
	case KindAvg:
		return "avg"
	case KindMax:
		return "max"
	case KindMin:
		return "min"
	case KindSum:
		return "sum"
	case KindCounter:
		return "counter"
	case KindLast:
		return "last"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// DefaultLookbackMs is Prometheus's default lookback delta (--query.lookback-delta), in ms.
const DefaultLookbackMs = 5 * 60 * 1000

// Hints is what the router needs to know of the query, taken from the remote read hints
// (prompb.ReadHints) by the caller, so that this package stays free of protocol types.
type Hints struct {
	// StepMs is the range query's step; 0 for instant queries.
	StepMs int64
	// RangeMs is the range of the matrix selector (5m in rate(x[5m])); 0 for instant
	// selectors, including those inside subqueries.
	RangeMs int64
	// Func is the innermost function or aggregation over the selector ("rate", "sum"), or
	// "" if none, as Prometheus fills ReadHints.func.
	Func string
	// LookbackMs is the querier's lookback delta, if known. A selector without a range
	// sees a sample only within the lookback before each evaluation, and rollup points sit
	// at bucket ends, so a tier coarser than the lookback shows nothing at evaluation times
	// more than a lookback after a bucket boundary. With LookbackMs set, such tiers are
	// not chosen for range-less selectors. Zero means unknown, and assumes evaluations on
	// bucket boundaries (as Grafana aligns them to the step); Prometheus's own UI does not
	// align, so callers should pass DefaultLookbackMs unless configured otherwise.
	LookbackMs int64
}

// Extent is the time range a tier holds data for, as far as the caller knows (from the
// tables' partitions or min/max timestamps; see ExtentsOf).
//
// For a rollup tier, Oldest and Newest are timestamps within (or the starts of) the oldest
// and newest buckets, whose whole buckets count as covered; past Newest the rollup job has
// not yet caught up.
//
// For the raw tier, Oldest is its oldest stored sample and ExpiredBefore the start of raw
// retention; Newest is not used, as raw is the freshest data and reaches to the present.
// Raw answers from max(ExpiredBefore, the start of Oldest's UTC day) on (see rawFrom).
type Extent struct {
	HasData        bool
	Oldest, Newest int64
	// ExpiredBefore (raw only) is now minus the raw retention, or math.MinInt64 when raw
	// is kept forever. Raw samples before it count as expired even while they wait to be
	// dropped, so that a query sees the same data whether or not the drop has happened yet.
	ExpiredBefore int64
}

// rawFrom is where the raw tier holds every sample there is: from the start of its
// retention, and not before the UTC day of its oldest stored sample. Rollups are computed
// from raw samples, so from that day on they hold nothing raw does not, and before it they
// hold only what raw has lost: days dropped under an earlier, shorter retention. Retention
// drops whole days, and bucket widths divide a day, so no rollup bucket straddles the day's
// start. A window that starts before the first sample ever stored is raw's to answer (with
// nothing before that sample), not the rollup bucket's that holds the sample.
func rawFrom(e Extent) int64 {
	return max(e.ExpiredBefore, BucketStart(e.Oldest, day.Milliseconds()))
}

// ExtentsOf turns the tiers' status (Status) at time now (ms) into the extents Route takes:
// a tier without rows holds nothing, and raw samples older than raw retention count as
// expired.
func ExtentsOf(status []TierStatus, tiers []Tier, now int64) []Extent {
	ext := make([]Extent, len(status))
	for i, st := range status {
		if st.Oldest == nil || st.Newest == nil {
			continue
		}
		ext[i] = Extent{HasData: true, Oldest: *st.Oldest, Newest: *st.Newest}
		if i < len(tiers) && tiers[i].IsRaw() {
			ext[i].ExpiredBefore = tiers[i].ExpiredBefore(now)
		}
	}
	return ext
}

// Segment is a part of the query window served by one tier and kind. The reader turns
// each segment into samples and concatenates them per series, in order:
//
//   - Kind KindRaw: the raw samples in [From, To], as they are.
//   - Kind KindCounter with Res 0 (raw tier only, after counter segments): the raw samples
//     in [From, To], each through the series' Counter (Counter.Sample), so that they
//     continue the corrected counter of the segments before.
//   - Any other kind: the buckets of width Res overlapping [From, To], turned into points
//     by Aggregate.Point, or for KindCounter by the series' Counter (one per series for the
//     whole query). The buckets are the tier's rows when the tier's resolution is Res,
//     the tier's rows merged with Rollup when it is finer, and for the raw tier the raw
//     samples aggregated with Downsample. The reader then drops points outside [mint,
//     maxt]: the point of a bucket reaching past maxt may be stamped after it.
//
// Interior seams lie on boundaries of the coarser side's buckets, so no bucket belongs to two
// segments and no timestamp is returned twice; segments are contiguous wherever some tier
// holds data, and there are no segments where none does.
type Segment struct {
	Tier     Tier
	From, To int64
	Kind     Kind
	// Res is the width (ms) of the buckets the segment's points stand for; 0 for raw
	// samples. It is the tier's resolution or, to give the whole query evenly spaced points,
	// the query's resolution (see Route).
	Res int64
	// Approximate is set when the segment does not answer the query the way the routing
	// rules intend: a function no aggregate answers, served from rollups because raw
	// data has expired, or a tier coarser than the query asks for, used because no finer
	// one holds data there. The reader may count or log it.
	Approximate bool
}

// rangeRule is how fine a tier must be for a function's range.
type rangeRule uint8

const (
	// rangeAny: no range constraint (selectors without range).
	rangeAny rangeRule = iota
	// rangeWhole: the range is a whole number of buckets, so that a range ending on a
	// bucket boundary holds whole buckets only; a range of 7m over 5m buckets would
	// aggregate 5 or 10 minutes of data.
	rangeWhole
	// rangeHalf: the range holds at least two buckets, so that it holds at least two
	// counter points whatever its alignment (rate needs two).
	rangeHalf
	// rangeOne: the range holds at least one bucket, so that it holds a point whatever
	// its alignment; enough where one point answers (last, presence).
	rangeOne
)

// funcRule is the routing rule of one function.
type funcRule struct {
	// kind is the aggregate answering the function, KindRaw if none does.
	kind Kind
	rng  rangeRule
	// fallback is, for kind KindRaw, the aggregate served where raw data has expired
	// (always Approximate); KindRaw means none, leaving that part unanswered.
	fallback Kind
}

// ruleFor is the function → aggregate table.
//
// Range functions are answered by the aggregate that computes the same thing over whole
// buckets; see Aggregate.Point for what each costs in accuracy. Functions no aggregate
// answers read raw samples. Where raw samples have expired, the answer is to leave the gap
// when any rollup would give numbers of a different magnitude or meaning, and to serve
// bucket averages, flagged Approximate, when they estimate the same quantity:
//
//   - count_over_time: rollup points are one per bucket, so Prometheus would count buckets,
//     off by the samples per bucket (20 or 240), and no representation can carry a count
//     into a function that counts points. Gap.
//   - quantile_over_time, stddev_over_time, stdvar_over_time, mad_over_time: statistics of
//     bucket means shrink the spread by roughly the square root of the samples per bucket;
//     the tails of a quantile would be far off. Gap.
//   - changes, resets, idelta: they count or measure sample-to-sample steps, which bucket
//     values do not have (a reset-corrected counter has no resets at all). Gap.
//   - first_over_time, ts_of_*_over_time: return sample timestamps or first values the
//     routing does not carry. Gap.
//   - delta, deriv, predict_linear, double_exponential_smoothing (holt_winters): trend
//     estimates, which bucket means preserve (lagging half a bucket). Averages.
//   - a bare range selector (x[5m], no function): the user asked for the samples. Averages.
//   - timestamp(): the sample timestamps. Averages, stamped at bucket ends.
//   - last_over_time has an aggregate: the last sample of the newest bucket in the range
//     is the raw answer whenever the evaluation time is at a bucket boundary (see
//     Aggregate.Point), the same alignment every rollup kind needs.
//   - present_over_time and absent_over_time only ask whether a sample exists, which a
//     bucket's point answers exactly.
//   - Unknown range functions read raw, with a gap where raw has expired: nothing is known
//     to answer them.
//
// Selectors without a range (RangeMs 0: plain selectors, functions of instant vectors,
// aggregations like sum(x), and selectors inside subqueries, whose hints name the outer
// function) are answered with bucket averages, as a smoothed value at each evaluation;
// timestamp() reads raw.
func ruleFor(fn string, rangeMs int64) funcRule {
	if rangeMs == 0 {
		if fn == "timestamp" {
			return funcRule{kind: KindRaw, rng: rangeAny, fallback: KindAvg}
		}
		return funcRule{kind: KindAvg, rng: rangeAny, fallback: KindRaw}
	}
	table := [...]struct {
		fn   string
		rule funcRule // aggregate, range rule, served where raw has expired
	}{
		{"avg_over_time", funcRule{KindAvg, rangeWhole, KindRaw}},
		{"max_over_time", funcRule{KindMax, rangeWhole, KindRaw}},
		{"min_over_time", funcRule{KindMin, rangeWhole, KindRaw}},
		{"sum_over_time", funcRule{KindSum, rangeWhole, KindRaw}},
		{"last_over_time", funcRule{KindLast, rangeOne, KindRaw}},
		{"present_over_time", funcRule{KindAvg, rangeOne, KindRaw}},
		{"absent_over_time", funcRule{KindAvg, rangeOne, KindRaw}},
		{"rate", funcRule{KindCounter, rangeHalf, KindRaw}},
		{"increase", funcRule{KindCounter, rangeHalf, KindRaw}},
		{"irate", funcRule{KindCounter, rangeHalf, KindRaw}},
		{"", funcRule{KindRaw, rangeAny, KindAvg}},
		{"delta", funcRule{KindRaw, rangeAny, KindAvg}},
		{"deriv", funcRule{KindRaw, rangeAny, KindAvg}},
		{"predict_linear", funcRule{KindRaw, rangeAny, KindAvg}},
		{"double_exponential_smoothing", funcRule{KindRaw, rangeAny, KindAvg}},
		{"holt_winters", funcRule{KindRaw, rangeAny, KindAvg}},
		{"count_over_time", funcRule{KindRaw, rangeAny, KindRaw}},
		{"quantile_over_time", funcRule{KindRaw, rangeAny, KindRaw}},
		{"stddev_over_time", funcRule{KindRaw, rangeAny, KindRaw}},
		{"stdvar_over_time", funcRule{KindRaw, rangeAny, KindRaw}},
		{"mad_over_time", funcRule{KindRaw, rangeAny, KindRaw}},
		{"changes", funcRule{KindRaw, rangeAny, KindRaw}},
		{"resets", funcRule{KindRaw, rangeAny, KindRaw}},
		{"idelta", funcRule{KindRaw, rangeAny, KindRaw}},
		{"first_over_time", funcRule{KindRaw, rangeAny, KindRaw}},
		{"ts_of_first_over_time", funcRule{KindRaw, rangeAny, KindRaw}},
		{"ts_of_last_over_time", funcRule{KindRaw, rangeAny, KindRaw}},
		{"ts_of_max_over_time", funcRule{KindRaw, rangeAny, KindRaw}},
		{"ts_of_min_over_time", funcRule{KindRaw, rangeAny, KindRaw}},
	}
	for _, e := range table {
		if e.fn == fn {
			return e.rule
		}
	}
	// A range function this table does not know: raw only, nothing is known to answer it.
	return funcRule{KindRaw, rangeAny, KindRaw}
}

// fine reports whether a rollup of resolution res may answer the query as the rules intend:
// it is at most the step (a coarser tier would return fewer points than the step asks
// for), fine enough for the function's range, and, for selectors without a range, at most
// the lookback.
func fine(res int64, r funcRule, h Hints) bool {
	if h.StepMs > 0 && res > h.StepMs {
		return false
	}
	switch r.rng {
	case rangeWhole:
		return h.RangeMs >= res && h.RangeMs%res == 0
	case rangeHalf:
		return h.RangeMs >= 2*res
	case rangeOne:
		return h.RangeMs >= res
	}
	return h.RangeMs > 0 || h.LookbackMs <= 0 || res <= h.LookbackMs
}

// candidate is a tier in the router's order of preference, with what it holds.
type candidate struct {
	tier   int
	res    int64
	kind   Kind
	approx bool
	// lo and hi bound what the tier holds (inclusive ms); for rollups both are bucket
	// boundaries (hi+1 is one).
	lo, hi int64
}

// Route decides which tiers and aggregates serve the query window [mint, maxt] (ms), given
// the tiers (validated as by ValidateTiers), what each holds (extents[i] for tiers[i]) and
// the query's hints. The segments are in time order.
//
// Raw holds data from rawFrom on, rollups their computed buckets; a part of the window no
// tier holds gets no segment.
//
// The order of preference, per point in time, among tiers holding data there:
//
//  1. Functions without an aggregate (see ruleFor): raw; where raw has expired, their
//     fallback from the finest rollup holding data, Approximate, or nothing.
//  2. Instant queries (StepMs 0): raw, as they are cheap and raw is exact; where raw has
//     expired, the rollups fine enough for the function (see fine), finest first, then
//     the others.
//  3. Range queries: the rollups fine enough for the step and the function, coarsest
//     first, then raw, then the rollups too coarse, finest first, Approximate. The
//     coarsest tier serves whatever it holds; finer ones fill in what it does not hold
//     yet (rollups lag behind raw) or no longer holds.
//
// The query's resolution is the coarsest resolution among the rollups serving it as
// intended. Finer tiers serving it, raw included, are aggregated to that resolution too, so
// that the whole query sees one point per bucket at one spacing: rate() extrapolates
// assuming even spacing, and where sparse rollup points meet dense raw samples in one range
// it would stop short of the range start and lose up to a bucket's increase (15-25% at the
// right edge of every graph, where the lagging rollups end); avg_over_time would weigh raw
// samples as much as bucket means. The results also do not change when the rollup job
// catches up. A query served by raw alone reads raw samples as they are, and so do instant
// queries of selectors without a range (see queryRes) where raw holds the data.
//
// Seams are moved onto bucket boundaries of the coarser side, into the tier that holds data
// on the far side (the start of raw retention rarely is one: the seam moves up to the next
// boundary, served by the rollup, whose bucket covers the expired part).
func Route(tiers []Tier, extents []Extent, mint, maxt int64, h Hints) ([]Segment, error) {
	if err := ValidateTiers(tiers); err != nil {
		return nil, fmt.Errorf("route query: %w", err)
	}
	switch {
	case len(extents) != len(tiers):
		return nil, fmt.Errorf("route query: %d extents for %d tiers", len(extents), len(tiers))
	case mint > maxt:
		return nil, fmt.Errorf("route query: window start %d is after its end %d", mint, maxt)
	case h.StepMs < 0 || h.RangeMs < 0 || h.LookbackMs < 0:
		return nil, errors.New("route query: step, range and lookback must not be negative")
	}
	all := make([]candidate, 0, len(tiers))
	for i, t := range tiers {
		e := extents[i]
		if !e.HasData {
			continue
		}
		if !t.IsRaw() && e.Newest < e.Oldest {
			return nil, fmt.Errorf("route query: tier %s holds data up to %d, before its oldest %d", t.Name, e.Newest, e.Oldest)
		}
		c := candidate{tier: i, res: t.ResolutionMs(), lo: rawFrom(e), hi: math.MaxInt64}
		if !t.IsRaw() {
			c.lo = BucketStart(e.Oldest, c.res)
			c.hi = BucketStart(e.Newest, c.res) + c.res - 1
		}
		all = append(all, c)
	}
	rule := ruleFor(h.Func, h.RangeMs)
	prefs := preferences(all, rule, h)
	segs := alignSeams(cover(mint, maxt, prefs))
	if q := queryRes(segs, rule, h); q > 0 {
		// A second pass with the finer tiers at the query's resolution, which moves their
		// seams onto its boundaries.
		for i := range prefs {
			if !prefs[i].approx && prefs[i].res < q {
				prefs[i].res, prefs[i].kind = q, rule.kind
			}
		}
		segs = alignSeams(cover(mint, maxt, prefs))
	}
	out := make([]Segment, len(segs))
	counterBefore := false
	for i, s := range segs {
		out[i] = Segment{Tier: tiers[s.c.tier], From: s.from, To: s.to, Kind: s.c.kind, Res: s.c.res, Approximate: s.c.approx}
		if s.c.kind == KindRaw && counterBefore {
			out[i].Kind = KindCounter
		}
		counterBefore = counterBefore || s.c.kind == KindCounter
	}
	return out, nil
}

// queryRes is the query's resolution: the coarsest rollup serving it as intended, or 0 if
// none does (raw alone, or a function without an aggregate), or if the query is an instant
// one of a selector without a range (or has no hints at all). Such a query sees one point
// per evaluation, so mixed spacings do not matter to it, and raw samples stay exact where
// raw holds them while rollups answer only where raw has expired.
func queryRes(segs []seg, r funcRule, h Hints) int64 {
	var q int64
	if r.kind == KindRaw || h.StepMs == 0 && h.RangeMs == 0 {
		return 0
	}
	for _, s := range segs {
		if !s.c.approx {
			q = max(q, s.c.res)
		}
	}
	return q
}

// preferences orders the tiers holding data (all, raw first if present, then from fine to
// coarse) as Route documents, with the kind each serves.
func preferences(all []candidate, r funcRule, h Hints) []candidate {
	var raw, fit, coarse []candidate
	for _, c := range all {
		switch {
		case c.res == 0:
			c.kind = KindRaw
			raw = append(raw, c)
		case r.kind == KindRaw:
			if r.fallback != KindRaw {
				c.kind, c.approx = r.fallback, true
				coarse = append(coarse, c)
			}
		case fine(c.res, r, h):
			c.kind = r.kind
			fit = append(fit, c)
		default:
			c.kind, c.approx = r.kind, true
			coarse = append(coarse, c)
		}
	}
	if r.kind == KindRaw || h.StepMs == 0 {
		return append(append(raw, fit...), coarse...)
	}
	prefs := make([]candidate, 0, len(all))
	for i := len(fit) - 1; i >= 0; i-- {
		prefs = append(prefs, fit[i])
	}
	return append(append(prefs, raw...), coarse...)
}

// seg is a segment under construction.
type seg struct {
	c        candidate
	from, to int64
}

// cover assigns every millisecond of [a, b] that some candidate holds to the first
// candidate holding it. Seams fall where a candidate's data begins or ends.
func cover(a, b int64, prefs []candidate) []seg {
	if a > b || len(prefs) == 0 {
		return nil
	}
	c, rest := prefs[0], prefs[1:]
	u, v := max(a, c.lo), min(b, c.hi)
	if u > v {
		return cover(a, b, rest)
	}
	var out []seg
	if u > a {
		out = cover(a, u-1, rest)
	}
	out = append(out, seg{c: c, from: u, to: v})
	if v < b {
		out = append(out, cover(v+1, b, rest)...)
	}
	return out
}

// alignSeams moves every seam between adjacent segments onto a bucket boundary of the
// coarser of the two tiers, so that no bucket is split. A seam lies where one side's data
// begins or ends, which is a bucket boundary of that side; when the other side is coarser,
// the seam moves to its nearest boundary in the direction where the coarser tier still
// holds data (it always does in one direction, as its own data ends on a boundary), and
// the finer side gives up that sliver. A segment that shrinks to nothing is dropped and the
// new seam is checked in turn; each step aligns a seam or drops a segment, so it ends.
func alignSeams(segs []seg) []seg {
	for i := 0; i+1 < len(segs); {
		p, n := &segs[i], &segs[i+1]
		r := max(p.c.res, n.c.res)
		s := n.from
		if p.to+1 != s || BucketStart(s, r) == s {
			i++
			continue
		}
		down := BucketStart(s, r)
		up := down + r
		if p.c.res > n.c.res {
			// The coarser tier is before the seam and holds data up to a boundary at or
			// after s, so it can take the rest of its bucket.
			if p.c.hi >= up-1 {
				s = up
			} else {
				s = down
			}
		} else {
			if n.c.lo <= down {
				s = down
			} else {
				s = up
			}
		}
		s = min(max(s, p.from), n.to+1)
		p.to, n.from = s-1, s
		switch {
		case n.from > n.to:
			segs = append(segs[:i+1], segs[i+2:]...)
		case p.from > p.to:
			segs = append(segs[:i], segs[i+1:]...)
			if i > 0 {
				i--
			}
		}
	}
	return segs
}
