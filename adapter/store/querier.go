package store

import (
	"context"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
)

// Batches of series whose samples are fetched with one ClickHouse query. Nothing is known
// yet about how many samples a series has in the window when the first batch goes, so it
// is sized for a sample a second (firstBatchSize), or kept at minFirstBatch in a streamed
// read, whose first frame waits for it; later ones are sized from what the
// previous one read to hold about batchSamples samples, which bounds the memory of a
// streamed read whatever the query's size.
const (
	minFirstBatch = 8
	maxBatch      = 2048
	batchSamples  = 1 << 20
)

// firstBatchSize is the size of the first batch over a window of windowMs milliseconds:
// as many series as batchSamples holds at a sample a second, faster than any scrape
// interval in use, but at least minFirstBatch. A short window (an instant query's
// lookback, a dashboard's last hour) is then read in one query instead of two.
func firstBatchSize(windowMs int64) int {
	perSeries := max(1, windowMs/1000+1)
	return int(min(maxBatch, max(minFirstBatch, batchSamples/perSeries)))
}

// Options are one reader's terms.
type Options struct {
	// Lookback is the reader's lookback delta; 0 is Config.Lookback.
	Lookback time.Duration
	// Budget is what the reader may still take, shared by its selections; nil is no
	// limit.
	Budget *Budget
	// Stream lets a series' samples go once the set moves past it, which bounds a
	// reader's memory to a batch; a reader that keeps series (PromQL) must not set it.
	Stream bool
	// Tiers, when set, records what answered each selection that found series.
	Tiers *TierLog
	// FirstSeenAfter, when set, selects only series whose first sample is after it, as the
	// catalogue records it: none is missed, and one found may be older by less than an
	// hour (selectSeries).
	FirstSeenAfter time.Time
	// Estimate, when set, makes Select read nothing: each selection adds what it would read
	// to the estimate, and its series set fails with ErrEstimated. Prometheus's engine
	// selects every selector of a query before it evaluates any, so the first failure ends
	// the query with every selection estimated, however many steps it has.
	Estimate *Estimate
}

// Budget is what is left of a reader's series and sample limits. Selections past it end
// with ErrSeriesBudget or ErrSampleBudget. It is not safe for concurrent selections.
type Budget struct {
	Series, Samples int
}

// TierLog records what answered a reader's selections (Plan.Tiers), once each, and the
// coarsest tier among them. It is safe for concurrent use.
type TierLog struct {
	mu       sync.Mutex
	tiers    []string
	coarsest string
	res      int64
}

func (l *TierLog) add(p Plan) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t := p.Tiers(); !slices.Contains(l.tiers, t) {
		l.tiers = append(l.tiers, t)
	}
	name, res := p.rawTier, int64(0)
	for _, sg := range p.segments {
		if sg.Res > res || name == "" {
			name, res = sg.Tier.Name, sg.Res
		}
	}
	if l.coarsest == "" || res > l.res {
		l.coarsest, l.res = name, res
	}
}

// Tiers returns what answered, in the order first seen.
func (l *TierLog) Tiers() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.tiers)
}

// Coarsest is the name of the coarsest tier that answered, "" before any did.
func (l *TierLog) Coarsest() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.coarsest
}

// Queryable returns a storage.Queryable whose queriers read on o's terms.
func (s *Store) Queryable(o Options) storage.Queryable { return queryable{s: s, o: o} }

type queryable struct {
	s *Store
	o Options
}

func (q queryable) Querier(mint, maxt int64) (storage.Querier, error) {
	return q.s.Querier(mint, maxt, q.o), nil
}

// Querier reads the series and samples of [mint, maxt] on o's terms.
func (s *Store) Querier(mint, maxt int64, o Options) *Querier {
	if o.Lookback == 0 {
		o.Lookback = s.cfg.Lookback
	}
	return &Querier{s: s, mint: mint, maxt: maxt, o: o}
}

// Querier is a storage.Querier over pyramid's tables. Select plans each selection from
// its hints (which tiers answer), selects the series when the set is first advanced, and
// fetches their samples batch by batch as it moves on. Series come sorted by labels;
// series without samples in the window are left out, as Prometheus's TSDB leaves them out.
type Querier struct {
	s          *Store
	mint, maxt int64
	o          Options
}

// Plan decides how the selection the hints describe is answered, without selecting
// series, so that a reader can refuse or announce it before reading anything.
func (q *Querier) Plan(ctx context.Context, h *storage.SelectHints) (Plan, error) {
	return q.s.plan(ctx, q.mint, q.maxt, h, q.o.Lookback)
}

// Select implements storage.Querier. Series are always sorted; hints with Func "series"
// select labels only, from the catalogue, never reading samples.
func (q *Querier) Select(ctx context.Context, _ bool, h *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	p, err := q.Plan(ctx, h)
	if err != nil {
		return storage.ErrSeriesSet(err)
	}
	if q.o.Estimate != nil {
		if err := q.s.estimate(ctx, q.o.Estimate, p, ms); err != nil {
			return storage.ErrSeriesSet(err)
		}
		return storage.ErrSeriesSet(ErrEstimated)
	}
	ss := q.SelectPlan(ctx, p, ms...)
	if h != nil && h.Func == "series" {
		ss.(*seriesSet).labelsOnly = true
	}
	return ss
}

// SelectPlan selects the series ms match and reads them as p says.
func (q *Querier) SelectPlan(ctx context.Context, p Plan, ms ...*labels.Matcher) storage.SeriesSet {
	return &seriesSet{q: q, ctx: ctx, plan: p, ms: ms, pos: -1}
}

// LabelValues implements storage.Querier from the series catalogue.
func (q *Querier) LabelValues(ctx context.Context, name string, h *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	vs, err := q.s.labelValues(ctx, name, q.mint, q.maxt, ms)
	return limit(vs, h), nil, err
}

// LabelNames implements storage.Querier from the series catalogue.
func (q *Querier) LabelNames(ctx context.Context, h *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	ns, err := q.s.labelNames(ctx, q.mint, q.maxt, ms)
	return limit(ns, h), nil, err
}

func limit(vs []string, h *storage.LabelHints) []string {
	if h != nil && h.Limit > 0 && len(vs) > h.Limit {
		return vs[:h.Limit]
	}
	return vs
}

// Close implements storage.Querier; a Querier holds nothing between selections.
func (q *Querier) Close() error { return nil }

// seriesSet is one selection's series, selected on the first Next and fetched in batches.
type seriesSet struct {
	q          *Querier
	ctx        context.Context
	plan       Plan
	ms         []*labels.Matcher
	labelsOnly bool

	started bool
	series  []*selected
	pos     int // the current series
	fetched int // series before it have their samples
	size    int // the next batch's size
	err     error
}

func (ss *seriesSet) Next() bool {
	if ss.err != nil {
		return false
	}
	if !ss.started {
		ss.started = true
		if !ss.selectSeries() {
			return false
		}
	}
	for {
		if ss.q.o.Stream && ss.pos >= 0 && ss.pos < len(ss.series) {
			ss.series[ss.pos] = nil // Its samples were consumed; let them go.
		}
		ss.pos++
		if ss.pos >= len(ss.series) {
			return false
		}
		if !ss.labelsOnly && ss.pos == ss.fetched && !ss.fetchBatch() {
			return false
		}
		if cur := ss.series[ss.pos]; ss.labelsOnly || len(cur.ts) > 0 || len(cur.hists) > 0 {
			return true
		}
	}
}

// selectSeries finds the series, charging them to the budget.
func (ss *seriesSet) selectSeries() bool {
	if ss.plan.empty {
		return false
	}
	q := ss.q
	f := seriesFilter{mint: ss.plan.mint, maxt: ss.plan.maxt, firstSeenAfter: math.MinInt64, limit: -1}
	if !q.o.FirstSeenAfter.IsZero() {
		f.firstSeenAfter = q.o.FirstSeenAfter.UnixMilli()
	}
	if b := q.o.Budget; b != nil {
		f.limit = max(b.Series, 0)
	}
	series, err := q.s.selectSeries(ss.ctx, ss.ms, f)
	if err != nil {
		ss.err = err
		return false
	}
	if b := q.o.Budget; b != nil {
		b.Series -= len(series)
	}
	ss.series, ss.size = series, firstBatchSize(ss.plan.maxt-ss.plan.mint)
	if q.o.Stream {
		// A streamed read's first frame waits for the first batch: keep it small.
		ss.size = minFirstBatch
	}
	q.s.countSegments(&ss.plan, len(series))
	if q.o.Tiers != nil && len(series) > 0 {
		q.o.Tiers.add(ss.plan)
	}
	return true
}

// fetchBatch reads the samples of the next batch of series, sized as the comment on
// batchSamples says.
func (ss *seriesSet) fetchBatch() bool {
	lo := ss.fetched
	hi := min(lo+ss.size, len(ss.series))
	left := math.MaxInt
	if b := ss.q.o.Budget; b != nil {
		left = b.Samples
	}
	rows, err := ss.q.s.fetch(ss.ctx, &ss.plan, ss.series[lo:hi], &left)
	if err != nil {
		ss.err = err
		return false
	}
	if b := ss.q.o.Budget; b != nil {
		b.Samples = left
	}
	ss.size = nextBatchSize(rows, hi-lo)
	ss.fetched = hi
	return true
}

// nextBatchSize sizes the batch after one of n series that read rows rows.
func nextBatchSize(rows, n int) int {
	perSeries := max(1, rows/n)
	return min(maxBatch, max(1, batchSamples/perSeries))
}

func (ss *seriesSet) At() storage.Series { return (*series)(ss.series[ss.pos]) }

func (ss *seriesSet) Err() error { return ss.err }

func (ss *seriesSet) Warnings() annotations.Annotations { return nil }

// series is a selected series as storage.Series. Its samples belong to the set until the
// set moves past it in a streaming read, and to the reader otherwise.
type series selected

func (s *series) Labels() labels.Labels { return s.labels }

// Iterator returns an iterator over the samples: floatIterator over a series of floats
// only, reusing it when it is one, and Prometheus's list iterator over floats and
// histograms merged.
func (s *series) Iterator(it chunkenc.Iterator) chunkenc.Iterator {
	if len(s.hists) == 0 {
		fi, ok := it.(*floatIterator[int64])
		if !ok {
			fi = &floatIterator[int64]{}
		}
		*fi = floatIterator[int64]{ts: s.ts, values: s.values, i: -1}
		return fi
	}
	return storage.NewListSeriesIterator(mergeSamples(s.ts, s.values, s.hists))
}

// floatIterator is a chunkenc.Iterator over float samples held as two slices, as
// storage's list iterator walks them but without three interface calls per sample, which
// PromQL's range functions pay for every sample of every window.
//
// T is always int64. Seek's parameter is a type parameter only because go vet requires a
// method named Seek(int64) to have io.Seeker's signature; chunkenc.Iterator's is another.
type floatIterator[T ~int64] struct {
	ts     []int64
	values []float64
	i      int // the current sample; -1 before the first Next or Seek
}

func (it *floatIterator[T]) Next() chunkenc.ValueType {
	if it.i < len(it.ts) {
		it.i++
	}
	if it.i == len(it.ts) {
		return chunkenc.ValNone
	}
	return chunkenc.ValFloat
}

// Seek moves to the first sample at or after t, never backwards.
func (it *floatIterator[T]) Seek(t T) chunkenc.ValueType {
	if it.i == -1 {
		it.i = 0
	}
	if it.i == len(it.ts) {
		return chunkenc.ValNone
	}
	if it.ts[it.i] < int64(t) {
		rest := it.ts[it.i:]
		it.i += sort.Search(len(rest), func(k int) bool { return rest[k] >= int64(t) })
		if it.i == len(it.ts) {
			return chunkenc.ValNone
		}
	}
	return chunkenc.ValFloat
}

func (it *floatIterator[T]) At() (int64, float64) { return it.ts[it.i], it.values[it.i] }

func (it *floatIterator[T]) AtHistogram(*histogram.Histogram) (int64, *histogram.Histogram) {
	return it.ts[it.i], nil
}

func (it *floatIterator[T]) AtFloatHistogram(*histogram.FloatHistogram) (int64, *histogram.FloatHistogram) {
	return it.ts[it.i], nil
}

func (it *floatIterator[T]) AtT() int64  { return it.ts[it.i] }
func (it *floatIterator[T]) AtST() int64 { return 0 }
func (it *floatIterator[T]) Err() error  { return nil }

// mergeSamples lists floats and histograms (at distinct timestamps) in time order.
func mergeSamples(ts []int64, values []float64, hists []HistogramSample) chunks.SampleSlice {
	out := make(chunks.SampleSlice, 0, len(ts)+len(hists))
	i, j := 0, 0
	for i < len(ts) || j < len(hists) {
		if j == len(hists) || (i < len(ts) && ts[i] < hists[j].T) {
			out = append(out, &floatSample{t: ts[i], f: values[i]})
			i++
			continue
		}
		out = append(out, &histSample{hists[j]})
		j++
	}
	return out
}

// Samples returns the float samples of a series a Querier selected: strictly increasing
// timestamps and their values, which the caller must not change. ok is false for any other
// series. Remote read encodes them straight from the slices.
func Samples(s storage.Series) (ts []int64, values []float64, ok bool) {
	ss, ok := s.(*series)
	if !ok {
		return nil, nil, false
	}
	return ss.ts, ss.values, true
}

// Histograms returns the histogram samples of a series a Querier selected, in time order
// and at timestamps that hold no float sample; the caller must not change them.
func Histograms(s storage.Series) []HistogramSample {
	if ss, ok := s.(*series); ok {
		return ss.hists
	}
	return nil
}

// floatSample is one float sample as chunks.Sample.
type floatSample struct {
	t int64
	f float64
}

func (s *floatSample) T() int64                      { return s.t }
func (s *floatSample) ST() int64                     { return 0 }
func (s *floatSample) F() float64                    { return s.f }
func (s *floatSample) H() *histogram.Histogram       { return nil }
func (s *floatSample) FH() *histogram.FloatHistogram { return nil }
func (s *floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s *floatSample) Copy() chunks.Sample           { c := *s; return &c }
