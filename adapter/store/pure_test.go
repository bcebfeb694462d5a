package store

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"

	"github.com/pyramid-metrics/pyramid/rollup"
)

func TestWindow(t *testing.T) {
	for _, tc := range []struct {
		name               string
		start, end         int64
		hints              storage.SelectHints
		wantStart, wantEnd int64
	}{
		{"no hints window", 100, 200, storage.SelectHints{}, 100, 200},
		{"hints narrow the window", 100, 200, storage.SelectHints{Start: 150, End: 180}, 150, 180},
		{"hints never widen it", 100, 200, storage.SelectHints{Start: 50, End: 250}, 100, 200},
		{"zero hints window means none", 100, 200, storage.SelectHints{Step: 15000}, 100, 200},
		{"hints starting at 0", -100, 200, storage.SelectHints{Start: 0, End: 10}, 0, 10},
		{"disjoint hints give an empty window", 100, 200, storage.SelectHints{Start: 300, End: 400}, 300, 200},
	} {
		mint, maxt := window(tc.start, tc.end, &tc.hints)
		if mint != tc.wantStart || maxt != tc.wantEnd {
			t.Errorf("%s: window [%d, %d], want [%d, %d]", tc.name, mint, maxt, tc.wantStart, tc.wantEnd)
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct {
		prefix, want string
		ok           bool
	}{
		{"node_", "node`", true},
		{"a", "b", true},
		{"a\xff", "b", true},
		{"a\xff\xff", "b", true},
		{"\xff", "", false},
		{"ü", "\xc3\xbd", true}, // Bytes, not runes: ü is c3 bc.
	} {
		got, ok := prefixEnd(tc.prefix)
		if got != tc.want || ok != tc.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", tc.prefix, got, ok, tc.want, tc.ok)
		}
	}
	// Every string with the prefix lies in [prefix, end), and none without it does.
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte{0, 'a', 'b', 0xfe, 0xff}
	randStr := func() string {
		b := make([]byte, rng.IntN(4))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 20_000 {
		p, s := randStr(), randStr()
		if p == "" {
			continue
		}
		end, ok := prefixEnd(p)
		in := s >= p && (!ok || s < end)
		if in != strings.HasPrefix(s, p) {
			t.Fatalf("prefix %q, end %q (%v): %q in range = %v, has prefix = %v", p, end, ok, s, in, !in)
		}
	}
}

// TestBatchSizes checks the batch sizes: a first batch sized from the window for a sample a
// second, then batches sized from the samples per series seen so far.
func TestBatchSizes(t *testing.T) {
	const (
		day   = 86_400_000
		month = 30 * day
	)
	for _, tc := range []struct {
		name      string
		windowMs  int64
		series    int
		perSeries int
		want      []int
	}{
		{"fewer than a first batch", day, 5, 100, []int{5}},
		{"short series fill large batches", day, 5000, 10, []int{12, 2048, 2048, 892}},
		{"a day at 15s", day, 1000, 5760, []int{12, 182, 182, 182, 182, 182, 78}},
		{"series with more than a batch's samples go one by one", month, 10, 2 << 20, []int{8, 1, 1}},
		{"empty series count as one sample", day, 3000, 0, []int{12, 2048, 940}},
		{"an instant query's five minutes in one batch", 300_000, 1000, 20, []int{1000}},
		{"an hour at 15s", 3_600_000, 500, 240, []int{291, 209}},
		{"a point in time", 0, 3000, 1, []int{2048, 952}},
	} {
		var got []int
		for lo, size := 0, firstBatchSize(tc.windowMs); lo < tc.series; {
			hi := min(lo+size, tc.series)
			got = append(got, hi-lo)
			size = nextBatchSize((hi-lo)*tc.perSeries, hi-lo)
			lo = hi
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: batches %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPrefilterExact: the SQL conditions alone decide exactly the matchers of equality,
// inequality and regexes Prometheus proves to be literal sets; anything else also needs
// Prometheus's matcher.
func TestPrefilterExact(t *testing.T) {
	m := func(typ labels.MatchType, name, value string) *labels.Matcher {
		return labels.MustNewMatcher(typ, name, value)
	}
	for _, tc := range []struct {
		ms    []*labels.Matcher
		exact bool
	}{
		{nil, true},
		{[]*labels.Matcher{m(labels.MatchEqual, "__name__", "up")}, true},
		{[]*labels.Matcher{m(labels.MatchEqual, "__name__", "up"), m(labels.MatchNotEqual, "job", "a")}, true},
		{[]*labels.Matcher{m(labels.MatchRegexp, "job", "a|b")}, true},
		{[]*labels.Matcher{m(labels.MatchNotRegexp, "job", "a|b")}, true},
		{[]*labels.Matcher{m(labels.MatchRegexp, "job", "(?-s:a|b)")}, true},
		{[]*labels.Matcher{m(labels.MatchRegexp, "job", "a.*")}, false},
		{[]*labels.Matcher{m(labels.MatchRegexp, "job", ".*err.*")}, false},
		{[]*labels.Matcher{m(labels.MatchRegexp, "job", "(?i)a|b")}, false},
		{[]*labels.Matcher{m(labels.MatchEqual, "__name__", "up"), m(labels.MatchNotRegexp, "job", "a.+")}, false},
	} {
		if _, _, exact := prefilter(tc.ms, "db.series_labels"); exact != tc.exact {
			t.Errorf("%v: exact %v, want %v", tc.ms, exact, tc.exact)
		}
	}
}

// TestBucketColumnsMakeTheSamePoints reads random 5m buckets, with resets, NaN and
// negative values, through the columns of each kind alone (bucketColumns), merges them to
// 1h and makes that kind's points: they must be bit for bit the points of the full rows.
func TestBucketColumnsMakeTheSamePoints(t *testing.T) {
	const res, coarse = 300_000, 3_600_000
	rng := rand.New(rand.NewPCG(3, 5))
	value := func() float64 {
		switch rng.IntN(10) {
		case 0:
			return math.NaN()
		case 1:
			return -rng.Float64() * 100
		default:
			return rng.Float64() * 1000
		}
	}
	kinds := []rollup.Kind{rollup.KindAvg, rollup.KindMax, rollup.KindMin, rollup.KindSum, rollup.KindCounter, rollup.KindLast}
	for iter := range 200 {
		var full []rollup.BucketAggregate
		for b := range int64(48) {
			if rng.IntN(5) == 0 {
				continue // a gap
			}
			start := b * res
			first, last := start+rng.Int64N(1000), start+res-1-rng.Int64N(1000)
			full = append(full, rollup.BucketAggregate{Start: start, Res: res, Aggregate: rollup.Aggregate{
				Count: 1 + rng.Uint64N(20), Sum: value(), SumComp: value() / 1e17, Min: value(), Max: value(),
				FirstT: first, First: value(), LastT: last, Last: value(),
				Correction: value(), CorrectionComp: value() / 1e17, Resets: rng.Uint64N(3),
			}})
		}
		for _, kind := range kinds {
			pruned := make([]rollup.BucketAggregate, len(full))
			for i, b := range full {
				var f, p bucketRow
				f.BucketAggregate = b
				fcols, fdest := bucketColumns(nil, &f)
				pcols, pdest := bucketColumns(&kind, &p)
				names := strings.Split(fcols, ", ")
				for j, col := range strings.Split(pcols, ", ") {
					k := slices.Index(names, col)
					reflect.ValueOf(pdest[j]).Elem().Set(reflect.ValueOf(fdest[k]).Elem())
				}
				p.Res = res
				pruned[i] = p.BucketAggregate
			}
			want, err := pointsAt(kind, full, coarse)
			if err != nil {
				t.Fatal(err)
			}
			got, err := pointsAt(kind, pruned, coarse)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(got, want, func(a, b rollup.Point) bool {
				return a.T == b.T && math.Float64bits(a.V) == math.Float64bits(b.V)
			}) {
				t.Fatalf("iteration %d, %s: points of the %s columns differ from the full rows':\n%v\n%v", iter, kind, kind, got, want)
			}
		}
	}
}

// pointsAt merges buckets to res and makes kind's points.
func pointsAt(kind rollup.Kind, buckets []rollup.BucketAggregate, res int64) ([]rollup.Point, error) {
	merged, err := rollup.Rollup(buckets, res)
	if err != nil {
		return nil, err
	}
	return rollup.Points(kind, merged)
}

func TestUnitRanges(t *testing.T) {
	const w = int64(3_600_000)
	for _, tc := range []struct {
		name   string
		starts []int64
		want   [][2]int64
	}{
		{"one unit", []int64{10 * w}, [][2]int64{{10 * w, 11 * w}}},
		{"adjacent units join", []int64{10 * w, 11 * w, 12 * w}, [][2]int64{{10 * w, 13 * w}}},
		{"a gap splits", []int64{10 * w, 11 * w, 14 * w}, [][2]int64{{10 * w, 12 * w}, {14 * w, 15 * w}}},
		{"every unit apart", []int64{-w, 1 * w, 3 * w}, [][2]int64{{-w, 0}, {w, 2 * w}, {3 * w, 4 * w}}},
		{"across 1970", []int64{-w, 0}, [][2]int64{{-w, w}}},
	} {
		if got := unitRanges(w, tc.starts); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: unitRanges = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Database: "pyramid", TierRefresh: time.Minute}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"defaults", func(*Config) {}, true},
		{"no database", func(c *Config) { c.Database = "" }, false},
		{"negative lookback", func(c *Config) { c.Lookback = -time.Second }, false},
		{"no tier refresh", func(c *Config) { c.TierRefresh = 0 }, false},
		{"cache rows", func(c *Config) { c.CacheRows = 8 << 20 }, true},
		{"negative cache rows", func(c *Config) { c.CacheRows = -1 }, false},
		{"tiers out of order", func(c *Config) {
			c.Tiers = []rollup.Tier{{Name: "raw"}, {Name: "1h", Resolution: time.Hour}, {Name: "5m", Resolution: 5 * time.Minute}}
		}, false},
	} {
		cfg := ok
		tc.edit(&cfg)
		if err := cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestFloatIteratorMatchesListIterator drives floatIterator and storage's list iterator
// over the same samples with the same calls, hand-picked and random, and requires the
// same answers.
func TestFloatIteratorMatchesListIterator(t *testing.T) {
	type op struct {
		seek bool
		t    int64
	}
	next := op{}
	seek := func(t int64) op { return op{true, t} }
	ts := []int64{10, 20, 30, 40, 50}
	cases := []struct {
		name string
		ts   []int64
		ops  []op
	}{
		{"empty next", nil, []op{next, next}},
		{"empty seek", nil, []op{seek(0), next}},
		{"next through the end", ts, []op{next, next, next, next, next, next, next}},
		{"seek before the first", ts, []op{seek(-5), next}},
		{"seek onto a sample", ts, []op{seek(30), next, seek(40)}},
		{"seek between samples", ts, []op{seek(31), seek(31), next}},
		{"seek never goes back", ts, []op{seek(45), seek(10), next}},
		{"seek past the last", ts, []op{seek(51), next, seek(0)}},
		{"seek to the last", ts, []op{next, seek(50), next, seek(50)}},
		{"next then seek behind", ts, []op{next, next, next, seek(15)}},
	}
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 200 {
		var rts []int64
		for t := int64(r.IntN(3)); len(rts) < r.IntN(12); t += 1 + int64(r.IntN(4)) {
			rts = append(rts, t)
		}
		var ops []op
		for range 1 + r.IntN(15) {
			if r.IntN(2) == 0 {
				ops = append(ops, next)
			} else {
				ops = append(ops, seek(int64(r.IntN(40))-3))
			}
		}
		cases = append(cases, struct {
			name string
			ts   []int64
			ops  []op
		}{fmt.Sprintf("random %d", n), rts, ops})
	}
	for _, tc := range cases {
		values := make([]float64, len(tc.ts))
		list := make(chunks.SampleSlice, len(tc.ts))
		for i, t := range tc.ts {
			values[i] = float64(t) * 1.5
			list[i] = &floatSample{t: t, f: values[i]}
		}
		got := (&series{ts: tc.ts, values: values}).Iterator(nil)
		want := storage.NewListSeriesIterator(list)
		for k, o := range tc.ops {
			var g, w chunkenc.ValueType
			if o.seek {
				g, w = got.Seek(o.t), want.Seek(o.t)
			} else {
				g, w = got.Next(), want.Next()
			}
			if g != w {
				t.Fatalf("%s: call %d (%+v) gave %v, want %v", tc.name, k, o, g, w)
			}
			if g == chunkenc.ValNone {
				continue
			}
			gt, gv := got.At()
			wt, wv := want.At()
			if gt != wt || gv != wv || got.AtT() != wt {
				t.Fatalf("%s: after call %d (%+v) at (%d, %g), want (%d, %g)", tc.name, k, o, gt, gv, wt, wv)
			}
		}
	}
	// A float iterator passed back is reused.
	it := (&series{ts: ts, values: make([]float64, len(ts))}).Iterator(nil)
	if again := (&series{ts: ts[:2], values: make([]float64, 2)}).Iterator(it); again != it || again.Next() != chunkenc.ValFloat {
		t.Error("Iterator did not reuse the float iterator it was given, or reset it")
	}
}
