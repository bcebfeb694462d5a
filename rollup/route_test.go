package rollup

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// seg1 is an expected segment: tier name, bounds, kind, bucket width, approximate.
type seg1 struct {
	tier     string
	from, to int64
	kind     Kind
	res      int64
	approx   bool
}

func (s seg1) String() string {
	a := ""
	if s.approx {
		a = " approx"
	}
	return fmt.Sprintf("{%s [%d, %d] %s res %d%s}", s.tier, s.from, s.to, s.kind, s.res, a)
}

func simplify(segs []Segment) []seg1 {
	out := make([]seg1, len(segs))
	for i, s := range segs {
		out[i] = seg1{s.Tier.Name, s.From, s.To, s.Kind, s.Res, s.Approximate}
	}
	return out
}

func TestRoute(t *testing.T) {
	tiers, err := ParseTiers(DefaultTiers)
	if err != nil {
		t.Fatal(err)
	}
	// Now is midnight; raw goes back 30 days and a bit (its oldest sample is not on a
	// boundary), the 5m tier lags 5 minutes (newest bucket [now-10m, now-5m)), the 1h tier
	// an hour (newest bucket [now-2h, now-1h)) and goes back five years.
	const now = 20000 * day1
	rawOldest := now - 30*day1 + 12_345
	standard := []Extent{
		{HasData: true, Oldest: rawOldest},
		{HasData: true, Oldest: now - 365*day1, Newest: now - 10*min1},
		{HasData: true, Oldest: now - 5*365*day1, Newest: now - 2*hour},
	}
	no1h := []Extent{standard[0], standard[1], {}}
	old1h := []Extent{standard[0], standard[1], {HasData: true, Oldest: now - 5*365*day1, Newest: now - 400*day1}}
	for _, tc := range []struct {
		name       string
		extents    []Extent
		mint, maxt int64
		h          Hints
		want       []seg1
	}{
		{
			name:    "instant query, no function: raw",
			extents: standard, mint: now - 5*min1 + 1, maxt: now,
			want: []seg1{{"raw", now - 5*min1 + 1, now, KindRaw, 0, false}},
		},
		{
			name:    "instant query, rate[5m]: raw",
			extents: standard, mint: now - 5*min1 + 1, maxt: now, h: Hints{RangeMs: min5, Func: "rate"},
			want: []seg1{{"raw", now - 5*min1 + 1, now, KindRaw, 0, false}},
		},
		{
			name:    "instant query, max_over_time[1d]: raw, even though 1h would do",
			extents: standard, mint: now - day1 + 1, maxt: now, h: Hints{RangeMs: day1, Func: "max_over_time"},
			want: []seg1{{"raw", now - day1 + 1, now, KindRaw, 0, false}},
		},
		{
			name:    "step 1m, rate[5m]: raw, as 5m is not at most half of 5m",
			extents: standard, mint: now - 6*hour, maxt: now, h: Hints{StepMs: min1, RangeMs: min5, Func: "rate"},
			want: []seg1{{"raw", now - 6*hour, now, KindRaw, 0, false}},
		},
		{
			name:    "step 5m, rate[10m]: the 5m tier, then raw as 5m buckets where it lags",
			extents: standard, mint: now - day1, maxt: now, h: Hints{StepMs: min5, RangeMs: 10 * min1, Func: "rate"},
			want: []seg1{
				{"5m", now - day1, now - 5*min1 - 1, KindCounter, min5, false},
				{"raw", now - 5*min1, now, KindCounter, min5, false},
			},
		},
		{
			name:    "step 1h, rate[4h]: the 1h tier; its lag from raw as 1h buckets",
			extents: standard, mint: now - 7*day1, maxt: now, h: Hints{StepMs: hour, RangeMs: 4 * hour, Func: "rate"},
			want: []seg1{
				{"1h", now - 7*day1, now - hour - 1, KindCounter, hour, false},
				{"raw", now - hour, now, KindCounter, hour, false},
			},
		},
		{
			name:    "step 1h, rate[4h], no 1h data: the 5m tier",
			extents: no1h, mint: now - 7*day1, maxt: now, h: Hints{StepMs: hour, RangeMs: 4 * hour, Func: "rate"},
			want: []seg1{
				{"5m", now - 7*day1, now - 5*min1 - 1, KindCounter, min5, false},
				{"raw", now - 5*min1, now, KindCounter, min5, false},
			},
		},
		{
			name:    "step 1h, rate[4h], 1h data only long before the window: the 5m tier",
			extents: old1h, mint: now - 7*day1, maxt: now, h: Hints{StepMs: hour, RangeMs: 4 * hour, Func: "rate"},
			want: []seg1{
				{"5m", now - 7*day1, now - 5*min1 - 1, KindCounter, min5, false},
				{"raw", now - 5*min1, now, KindCounter, min5, false},
			},
		},
		{
			name:    "step 1h, no function: 1h averages",
			extents: standard, mint: now - 7*day1, maxt: now, h: Hints{StepMs: hour},
			want: []seg1{
				{"1h", now - 7*day1, now - hour - 1, KindAvg, hour, false},
				{"raw", now - hour, now, KindAvg, hour, false},
			},
		},
		{
			name:    "step 1h, no function, lookback 5m: 5m averages, as 1h points would be out of sight",
			extents: standard, mint: now - 7*day1, maxt: now, h: Hints{StepMs: hour, LookbackMs: DefaultLookbackMs},
			want: []seg1{
				{"5m", now - 7*day1, now - 5*min1 - 1, KindAvg, min5, false},
				{"raw", now - 5*min1, now, KindAvg, min5, false},
			},
		},
		{
			name:    "step 1h, sum(x): averages like a plain selector",
			extents: standard, mint: now - 7*day1, maxt: now, h: Hints{StepMs: hour, Func: "sum"},
			want: []seg1{
				{"1h", now - 7*day1, now - hour - 1, KindAvg, hour, false},
				{"raw", now - hour, now, KindAvg, hour, false},
			},
		},
		{
			name:    "step 10m, max_over_time[10m]: 5m maxima",
			extents: standard, mint: now - 2*day1, maxt: now, h: Hints{StepMs: 10 * min1, RangeMs: 10 * min1, Func: "max_over_time"},
			want: []seg1{
				{"5m", now - 2*day1, now - 5*min1 - 1, KindMax, min5, false},
				{"raw", now - 5*min1, now, KindMax, min5, false},
			},
		},
		{
			name:    "step 1h, min_over_time[2h]: 1h minima",
			extents: standard, mint: now - 200*day1, maxt: now - 100*day1, h: Hints{StepMs: hour, RangeMs: 2 * hour, Func: "min_over_time"},
			want: []seg1{{"1h", now - 200*day1, now - 100*day1, KindMin, hour, false}},
		},
		{
			name:    "step 1h, sum_over_time[1h]",
			extents: standard, mint: now - 200*day1, maxt: now - 100*day1, h: Hints{StepMs: hour, RangeMs: hour, Func: "sum_over_time"},
			want: []seg1{{"1h", now - 200*day1, now - 100*day1, KindSum, hour, false}},
		},
		{
			name:    "step 1h, last_over_time[1h]",
			extents: standard, mint: now - 200*day1, maxt: now - 100*day1, h: Hints{StepMs: hour, RangeMs: hour, Func: "last_over_time"},
			want: []seg1{{"1h", now - 200*day1, now - 100*day1, KindLast, hour, false}},
		},
		{
			name:    "step 1h, last_over_time[90m]: one bucket in the range is enough",
			extents: standard, mint: now - 200*day1, maxt: now - 100*day1, h: Hints{StepMs: hour, RangeMs: 90 * min1, Func: "last_over_time"},
			want: []seg1{{"1h", now - 200*day1, now - 100*day1, KindLast, hour, false}},
		},
		{
			name:    "step 1h, avg_over_time[1h]",
			extents: standard, mint: now - 200*day1, maxt: now - 100*day1, h: Hints{StepMs: hour, RangeMs: hour, Func: "avg_over_time"},
			want: []seg1{{"1h", now - 200*day1, now - 100*day1, KindAvg, hour, false}},
		},
		{
			name:    "step 1h, max_over_time[90m]: 1h does not divide 90m, 5m does",
			extents: standard, mint: now - 200*day1, maxt: now - 100*day1, h: Hints{StepMs: hour, RangeMs: 90 * min1, Func: "max_over_time"},
			want: []seg1{{"5m", now - 200*day1, now - 100*day1, KindMax, min5, false}},
		},
		{
			name:    "step 1h, max_over_time[7m]: no tier divides 7m, so raw, and too coarse 5m maxima where raw has expired",
			extents: standard, mint: now - 31*day1, maxt: now - 29*day1, h: Hints{StepMs: hour, RangeMs: 7 * min1, Func: "max_over_time"},
			want: []seg1{
				{"5m", now - 31*day1, now - 30*day1 + 5*min1 - 1, KindMax, min5, true},
				{"raw", now - 30*day1 + 5*min1, now - 29*day1, KindRaw, 0, false},
			},
		},
		{
			name:    "step 1d, count_over_time[1d]: raw, even for huge steps",
			extents: standard, mint: now - 7*day1, maxt: now, h: Hints{StepMs: day1, RangeMs: day1, Func: "count_over_time"},
			want: []seg1{{"raw", now - 7*day1, now, KindRaw, 0, false}},
		},
		{
			name:    "step 1d, count_over_time[1d] past raw retention: raw where it exists, nothing before",
			extents: standard, mint: now - 60*day1, maxt: now, h: Hints{StepMs: day1, RangeMs: day1, Func: "count_over_time"},
			want: []seg1{{"raw", rawOldest, now, KindRaw, 0, false}},
		},
		{
			name:    "step 1h, deriv[1h] past raw retention: raw, and 5m averages before it",
			extents: standard, mint: now - 60*day1, maxt: now, h: Hints{StepMs: hour, RangeMs: hour, Func: "deriv"},
			want: []seg1{
				{"5m", now - 60*day1, now - 30*day1 + 5*min1 - 1, KindAvg, min5, true},
				{"raw", now - 30*day1 + 5*min1, now, KindRaw, 0, false},
			},
		},
		{
			name:    "step 1h, resets[1h]: raw only, a corrected counter has no resets",
			extents: standard, mint: now - 60*day1, maxt: now, h: Hints{StepMs: hour, RangeMs: hour, Func: "resets"},
			want: []seg1{{"raw", rawOldest, now, KindRaw, 0, false}},
		},
		{
			name:    "step 1h, unknown range function: raw only",
			extents: standard, mint: now - 60*day1, maxt: now, h: Hints{StepMs: hour, RangeMs: hour, Func: "future_over_time"},
			want: []seg1{{"raw", rawOldest, now, KindRaw, 0, false}},
		},
		{
			name:    "instant max_over_time[2d] across raw's start: 5m maxima, then raw as 5m maxima, seam on a 5m boundary",
			extents: standard, mint: now - 31*day1 + 1, maxt: now - 29*day1, h: Hints{RangeMs: 2 * day1, Func: "max_over_time"},
			want: []seg1{
				{"5m", now - 31*day1 + 1, now - 30*day1 + 5*min1 - 1, KindMax, min5, false},
				{"raw", now - 30*day1 + 5*min1, now - 29*day1, KindMax, min5, false},
			},
		},
		{
			name:    "instant query, no function, a year ago: 5m averages, the finest",
			extents: standard, mint: now - 300*day1 - 5*min1 + 1, maxt: now - 300*day1, h: Hints{LookbackMs: DefaultLookbackMs},
			want: []seg1{{"5m", now - 300*day1 - 5*min1 + 1, now - 300*day1, KindAvg, min5, false}},
		},
		{
			name:    "step 1h, window entirely before raw: the 1h tier only",
			extents: standard, mint: now - 200*day1, maxt: now - 100*day1, h: Hints{StepMs: hour},
			want: []seg1{{"1h", now - 200*day1, now - 100*day1, KindAvg, hour, false}},
		},
		{
			name:    "step 5m, rate[20m], window before the 5m tier: 1h counters, too coarse",
			extents: standard, mint: now - 400*day1, maxt: now - 399*day1, h: Hints{StepMs: min5, RangeMs: 20 * min1, Func: "rate"},
			want: []seg1{{"1h", now - 400*day1, now - 399*day1, KindCounter, hour, true}},
		},
		{
			name:    "step 1m, rate[5m] across raw's start: too coarse 5m counters, then raw samples through the counter",
			extents: standard, mint: now - 31*day1, maxt: now - 29*day1, h: Hints{StepMs: min1, RangeMs: min5, Func: "rate"},
			want: []seg1{
				{"5m", now - 31*day1, now - 30*day1 + 5*min1 - 1, KindCounter, min5, true},
				{"raw", now - 30*day1 + 5*min1, now - 29*day1, KindCounter, 0, false},
			},
		},
		{
			name:    "step 1h, rate[4h] across 5m's start: 1h throughout",
			extents: standard, mint: now - 400*day1, maxt: now - 300*day1, h: Hints{StepMs: hour, RangeMs: 4 * hour, Func: "rate"},
			want: []seg1{{"1h", now - 400*day1, now - 300*day1, KindCounter, hour, false}},
		},
		{
			name: "step 1h, rate[4h], 1h lags more than an hour: 5m rows and raw as 1h buckets, seams on hours",
			extents: []Extent{standard[0], standard[1],
				{HasData: true, Oldest: now - 5*365*day1, Newest: now - 5*hour}},
			mint: now - 2*day1, maxt: now, h: Hints{StepMs: hour, RangeMs: 4 * hour, Func: "rate"},
			want: []seg1{
				{"1h", now - 2*day1, now - 4*hour - 1, KindCounter, hour, false},
				{"5m", now - 4*hour, now - hour - 1, KindCounter, hour, false},
				{"raw", now - hour, now, KindCounter, hour, false},
			},
		},
		{
			name:    "subquery max_over_time(x[1d:1h]): an instant selector, averages",
			extents: standard, mint: now - 200*day1, maxt: now - 100*day1, h: Hints{StepMs: hour, Func: "max_over_time"},
			want: []seg1{{"1h", now - 200*day1, now - 100*day1, KindAvg, hour, false}},
		},
		{
			name:    "step 1h, timestamp(x): raw, 5m averages before it",
			extents: standard, mint: now - 31*day1, maxt: now, h: Hints{StepMs: hour, Func: "timestamp"},
			want: []seg1{
				{"5m", now - 31*day1, now - 30*day1 + 5*min1 - 1, KindAvg, min5, true},
				{"raw", now - 30*day1 + 5*min1, now, KindRaw, 0, false},
			},
		},
		{
			name:    "no tier holds data",
			extents: []Extent{{}, {}, {}}, mint: now - day1, maxt: now, h: Hints{StepMs: hour},
		},
		{
			name:    "window before all data",
			extents: standard, mint: now - 10*365*day1, maxt: now - 9*365*day1, h: Hints{StepMs: hour},
		},
		{
			name:    "window starting before all data",
			extents: standard, mint: now - 6*365*day1, maxt: now - 4*365*day1, h: Hints{StepMs: hour},
			want: []seg1{{"1h", now - 5*365*day1, now - 4*365*day1, KindAvg, hour, false}},
		},
	} {
		segs, err := Route(tiers, tc.extents, tc.mint, tc.maxt, tc.h)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		got := simplify(segs)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, got, tc.want)
		}
	}
}

func TestRouteErrors(t *testing.T) {
	tiers, _ := ParseTiers(DefaultTiers)
	three := make([]Extent, 3)
	for _, tc := range []struct {
		name       string
		tiers      []Tier
		extents    []Extent
		mint, maxt int64
		h          Hints
		want       string
	}{
		{"invalid tiers", []Tier{{Name: "5m", Resolution: 5 * 60e9}}, make([]Extent, 1), 0, 1, Hints{}, "first tier must be raw"},
		{"extents mismatch", tiers, make([]Extent, 2), 0, 1, Hints{}, "2 extents for 3 tiers"},
		{"empty window", tiers, three, 2, 1, Hints{}, "after its end"},
		{"negative step", tiers, three, 0, 1, Hints{StepMs: -1}, "must not be negative"},
		{"inverted extent", tiers, []Extent{{}, {HasData: true, Oldest: 10, Newest: 5}, {}}, 0, 1, Hints{}, "before its oldest"},
	} {
		if _, err := Route(tc.tiers, tc.extents, tc.mint, tc.maxt, tc.h); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// TestRouteInvariants checks, on random tier ladders, extents, windows and hints, what every
// routing must satisfy: segments in order, inside the window, contiguous except where no
// usable tier holds data, seams on bucket boundaries of both sides, rollup segments inside
// what their tier holds, and the raw-as-buckets and raw-through-the-counter kinds only where
// they belong.
func TestRouteInvariants(t *testing.T) {
	ladders := []string{DefaultTiers, "raw:7d,1m:30d,5m:1y,1h:5y,1d:0", "raw:2d,10s:2d,1m:2d", "raw:0"}
	funcs := []string{"", "rate", "irate", "increase", "max_over_time", "min_over_time", "sum_over_time",
		"avg_over_time", "last_over_time", "count_over_time", "deriv", "changes", "sum", "timestamp", "present_over_time"}
	ress := []int64{0, 10 * sec, min1, min5, 10 * min1, hour, 4 * hour, day1}
	rng := rand.New(rand.NewPCG(11, 12))
	for n := range 20000 {
		tiers, err := ParseTiers(ladders[rng.IntN(len(ladders))])
		if err != nil {
			t.Fatal(err)
		}
		now := 20000*day1 + rng.Int64N(day1)
		extents := make([]Extent, len(tiers))
		for i, tier := range tiers {
			if rng.IntN(6) == 0 {
				continue
			}
			span := tier.Retention.Milliseconds()
			if span == 0 {
				span = 10 * 365 * day1
			}
			span = span/2 + rng.Int64N(span)
			lag := rng.Int64N(3*tier.ResolutionMs() + hour)
			extents[i] = Extent{HasData: true, Oldest: now - span, Newest: now - lag}
		}
		h := Hints{StepMs: ress[rng.IntN(len(ress))], Func: funcs[rng.IntN(len(funcs))]}
		if h.Func != "" && h.Func != "sum" && h.Func != "timestamp" || rng.IntN(4) == 0 {
			h.RangeMs = ress[1+rng.IntN(len(ress)-1)] * (1 + rng.Int64N(3))
		}
		if rng.IntN(2) == 0 {
			h.LookbackMs = DefaultLookbackMs
		}
		width := []int64{min1, hour, day1, 40 * day1, 2 * 365 * day1}[rng.IntN(5)]
		maxt := now - rng.Int64N(3*365*day1)
		if rng.IntN(3) == 0 {
			maxt = now
		}
		mint := maxt - rng.Int64N(width)
		segs, err := Route(tiers, extents, mint, maxt, h)
		if err != nil {
			t.Fatalf("case %d: %v", n, err)
		}
		fail := func(format string, args ...any) {
			t.Fatalf("case %d: tiers %s, extents %+v, window [%d, %d], hints %+v:\n%s\nsegments %v",
				n, FormatTiers(tiers), extents, mint, maxt, h, fmt.Sprintf(format, args...), simplify(segs))
		}
		// Where the candidates hold data, by the router's own preference list.
		rule := ruleFor(h.Func, h.RangeMs)
		var all []candidate
		for i, tier := range tiers {
			if e := extents[i]; e.HasData {
				c := candidate{tier: i, res: tier.ResolutionMs(), lo: e.Oldest, hi: 1<<63 - 1}
				if !tier.IsRaw() {
					c.lo, c.hi = BucketStart(e.Oldest, c.res), BucketStart(e.Newest, c.res)+c.res-1
				}
				all = append(all, c)
			}
		}
		prefs := preferences(all, rule, h)
		held := func(a, b int64) bool {
			for _, c := range prefs {
				if c.lo <= b && a <= c.hi {
					return true
				}
			}
			return false
		}
		prev := mint - 1
		counterSeen := false
		for i, s := range segs {
			if s.From > s.To || s.From < mint || s.To > maxt {
				fail("segment %d [%d, %d] empty or outside the window", i, s.From, s.To)
			}
			if s.From <= prev {
				fail("segment %d starts at %d, not after %d", i, s.From, prev)
			}
			if s.From > prev+1 && held(prev+1, s.From-1) {
				fail("gap [%d, %d] before segment %d although a tier holds data there", prev+1, s.From-1, i)
			}
			if i > 0 && s.From == prev+1 {
				r := max(segs[i-1].Res, s.Res, segs[i-1].Tier.ResolutionMs(), s.Tier.ResolutionMs())
				if BucketStart(s.From, r) != s.From {
					fail("seam %d before segment %d is not on a boundary of %d ms", s.From, i, r)
				}
			}
			if res := s.Tier.ResolutionMs(); res > 0 {
				e := extents[tierIndex(tiers, s.Tier.Name)]
				if BucketStart(s.From, res) < BucketStart(e.Oldest, res) && s.From != mint || s.To > BucketStart(e.Newest, res)+res-1 && s.To != maxt {
					fail("segment %d [%d, %d] reaches beyond what tier %s holds", i, s.From, s.To, s.Tier.Name)
				}
				if s.Res < res || s.Res%res != 0 || s.Kind == KindRaw {
					fail("rollup segment %d has res %d and kind %s", i, s.Res, s.Kind)
				}
			}
			if s.Tier.IsRaw() {
				switch {
				case s.Kind == KindRaw && s.Res != 0:
					fail("raw samples with res %d", s.Res)
				case s.Kind == KindCounter && s.Res == 0 && !counterSeen:
					fail("raw samples through the counter with no counter before")
				case s.Kind != KindRaw && s.Kind != KindCounter && s.Res == 0:
					fail("raw segment of kind %s without res", s.Kind)
				}
			}
			counterSeen = counterSeen || s.Kind == KindCounter
			prev = s.To
		}
		if prev < maxt && held(prev+1, maxt) {
			fail("nothing after %d although a tier holds data there", prev)
		}
	}
}

func tierIndex(tiers []Tier, name string) int {
	for i, t := range tiers {
		if t.Name == name {
			return i
		}
	}
	return -1
}
