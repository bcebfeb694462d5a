package rollup

import (
	"fmt"
	"math"
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
	// Now is a little after midnight; raw retention began 30 days ago (not on a boundary),
	// and raw still holds a day older than that, waiting to be dropped. The 5m tier lags
	// 5 minutes (newest bucket [now-10m, now-5m)), the 1h tier an hour (newest bucket
	// [now-2h, now-1h)) and goes back five years.
	const now = 20000 * day1
	rawOldest := now - 30*day1 + 12_345
	standard := []Extent{
		{HasData: true, Oldest: now - 31*day1 + 999, ExpiredBefore: rawOldest},
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
			name:    "instant query, no function, across raw's start: 5m averages where raw has expired, raw samples as they are after",
			extents: standard, mint: now - 30*day1 - hour, maxt: now - 29*day1, h: Hints{LookbackMs: DefaultLookbackMs},
			want: []seg1{
				{"5m", now - 30*day1 - hour, now - 30*day1 + 5*min1 - 1, KindAvg, min5, false},
				{"raw", now - 30*day1 + 5*min1, now - 29*day1, KindRaw, 0, false},
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

// TestRouteEdgesOfHistory is the case of a young deployment, the one issue 9 found: two
// hours of data three days ago, every bucket computed, and windows around the data. A
// window starting before the first sample ever stored is raw's (the rollup buckets holding
// the first samples hold nothing raw does not), so raw samples answer exactly unless the
// hints prefer a rollup tier.
func TestRouteEdgesOfHistory(t *testing.T) {
	tiers, err := ParseTiers(DefaultTiers)
	if err != nil {
		t.Fatal(err)
	}
	const now = 20000*day1 + 13*hour
	first := now - 3*day1 - 3*hour + 7*min1 + 30*sec // 10:07:30, three days ago
	last := first + 2*hour - 15*sec
	ext := []Extent{
		{HasData: true, Oldest: first, Newest: last, ExpiredBefore: now - 30*day1},
		{HasData: true, Oldest: first, Newest: last},
		{HasData: true, Oldest: first, Newest: last},
	}
	dayStart := BucketStart(first, day1)
	lookback := Hints{LookbackMs: DefaultLookbackMs}
	for _, tc := range []struct {
		name       string
		mint, maxt int64
		h          Hints
		want       []seg1
	}{
		{"first to last sample, no hints", first, last, lookback,
			[]seg1{{"raw", first, last, KindRaw, 0, false}}},
		{"from 1ms before, no hints", first - 1, last, lookback,
			[]seg1{{"raw", first - 1, last, KindRaw, 0, false}}},
		{"from 5m before, no hints", first - 5*min1, last, lookback,
			[]seg1{{"raw", first - 5*min1, last, KindRaw, 0, false}}},
		{"from 1h before to 1h after, no hints at all", first - hour, last + hour, Hints{},
			[]seg1{{"raw", first - hour, last + hour, KindRaw, 0, false}}},
		{"from 1h before, step 15s", first - hour, last, Hints{StepMs: 15 * sec, LookbackMs: DefaultLookbackMs},
			[]seg1{{"raw", first - hour, last, KindRaw, 0, false}}},
		{"from 5m before to 1ms before the last, step 60s", first - 5*min1, last - 1, Hints{StepMs: min1, LookbackMs: DefaultLookbackMs},
			[]seg1{{"raw", first - 5*min1, last - 1, KindRaw, 0, false}}},
		{"step 60s, rate[5m]", first - hour, last + hour, Hints{StepMs: min1, RangeMs: min5, Func: "rate", LookbackMs: DefaultLookbackMs},
			[]seg1{{"raw", first - hour, last + hour, KindRaw, 0, false}}},
		{"seven days before, no hints: raw from the day of the first sample", now - 10*day1, now, lookback,
			[]seg1{{"raw", dayStart, now, KindRaw, 0, false}}},
		{"seven days at step 1h, max_over_time[1h]: the 1h tier where it holds data, raw as 1h maxima around it",
			now - 10*day1, now, Hints{StepMs: hour, RangeMs: hour, Func: "max_over_time", LookbackMs: DefaultLookbackMs},
			[]seg1{
				{"raw", dayStart, BucketStart(first, hour) - 1, KindMax, hour, false},
				{"1h", BucketStart(first, hour), BucketStart(last, hour) + hour - 1, KindMax, hour, false},
				{"raw", BucketStart(last, hour) + hour, now, KindMax, hour, false},
			}},
		{"window before all data", now - 10*day1, dayStart - 1, lookback, nil},
	} {
		segs, err := Route(tiers, ext, tc.mint, tc.maxt, tc.h)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := simplify(segs); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, got, tc.want)
		}
	}
}

// TestExtentsOf turns tier status into extents: empty tiers hold nothing, raw retention is
// counted from now, and raw kept forever never expires.
func TestExtentsOf(t *testing.T) {
	p := func(v int64) *int64 { return &v }
	const now = 100 * day1
	status := []TierStatus{{Oldest: p(10 * day1), Newest: p(now - 1)}, {Oldest: p(20 * day1), Newest: p(now - hour)}, {}}
	for _, tc := range []struct {
		ladder string
		want   []Extent
	}{
		{DefaultTiers, []Extent{
			{HasData: true, Oldest: 10 * day1, Newest: now - 1, ExpiredBefore: now - 30*day1},
			{HasData: true, Oldest: 20 * day1, Newest: now - hour},
			{},
		}},
		{"raw:0,5m:0,1h:0", []Extent{
			{HasData: true, Oldest: 10 * day1, Newest: now - 1, ExpiredBefore: math.MinInt64},
			{HasData: true, Oldest: 20 * day1, Newest: now - hour},
			{},
		}},
	} {
		tiers, err := ParseTiers(tc.ladder)
		if err != nil {
			t.Fatal(err)
		}
		if got := ExtentsOf(status, tiers, now); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.ladder, got, tc.want)
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
// routing must satisfy:
//
//   - segments are in order, inside the window, and tile it wherever a usable tier holds
//     data, with no segment where none does (the union of the segments is the window's
//     part that the usable tiers hold);
//   - seams lie on bucket boundaries of both sides;
//   - every segment lies inside what its tier holds, raw's from rawFrom on;
//   - where raw holds the data, a rollup answers only as a tier the hints allow, preferred
//     over raw (a range query with a fine enough tier for the function), and never as an
//     approximation; past the seam's rounding, the rest is raw;
//   - raw samples are read as they are wherever raw holds them, unless the hints allow a
//     rollup tier (or an instant query's range reaches into expired raw data, where its
//     raw part is aggregated to the rollups' resolution);
//   - raw-as-buckets and raw-through-the-counter kinds only where they belong.
//
// The extents cover young deployments (rollups beginning in the bucket of raw's first
// sample, windows starting long before it) as well as old ones whose raw data expired.
func TestRouteInvariants(t *testing.T) {
	ladders := []string{DefaultTiers, "raw:7d,1m:30d,5m:1y,1h:5y,1d:0", "raw:2d,10s:2d,1m:2d", "raw:0", "raw:0,5m:0,1h:0"}
	funcs := []string{"", "rate", "irate", "increase", "max_over_time", "min_over_time", "sum_over_time",
		"avg_over_time", "last_over_time", "count_over_time", "deriv", "changes", "sum", "timestamp", "present_over_time"}
	ress := []int64{0, 10 * sec, 15 * sec, min1, min5, 10 * min1, hour, 4 * hour, day1}
	rng := rand.New(rand.NewPCG(11, 12))
	for n := range 30000 {
		tiers, err := ParseTiers(ladders[rng.IntN(len(ladders))])
		if err != nil {
			t.Fatal(err)
		}
		now := 20000*day1 + rng.Int64N(day1)
		extents := make([]Extent, len(tiers))
		young := rng.IntN(2) == 0
		// Raw: a young deployment's first sample some hours or days ago, or an old one's
		// reaching back beyond its retention (samples waiting to be dropped).
		rawFirst := now - rng.Int64N(3*day1)
		if !young {
			rawFirst = now - rng.Int64N(3*365*day1)
		}
		expired := int64(math.MinInt64)
		if !tiers[0].Forever() {
			expired = now - tiers[0].Retention.Milliseconds()
		}
		if rng.IntN(8) > 0 {
			extents[0] = Extent{HasData: true, Oldest: rawFirst, Newest: now - rng.Int64N(hour), ExpiredBefore: expired}
		}
		for i, tier := range tiers[1:] {
			if rng.IntN(6) == 0 {
				continue
			}
			lag := rng.Int64N(3*tier.ResolutionMs() + hour)
			oldest := rawFirst
			if !young {
				span := tier.Retention.Milliseconds()
				if span == 0 {
					span = 10 * 365 * day1
				}
				oldest = now - span/2 - rng.Int64N(span)
			}
			if oldest > now-lag {
				continue // nothing computed yet
			}
			extents[i+1] = Extent{HasData: true, Oldest: oldest, Newest: now - lag}
		}
		h := Hints{StepMs: ress[rng.IntN(len(ress))], Func: funcs[rng.IntN(len(funcs))]}
		if h.Func != "" && h.Func != "sum" && h.Func != "timestamp" || rng.IntN(4) == 0 {
			h.RangeMs = ress[1+rng.IntN(len(ress)-1)] * (1 + rng.Int64N(3))
		}
		if rng.IntN(2) == 0 {
			h.LookbackMs = DefaultLookbackMs
		}
		if rng.IntN(8) == 0 {
			h = Hints{} // no hints at all
		}
		// Windows of all widths around the places where routing changes: raw's first
		// sample, the start of raw retention, the rollups' edges, and now.
		anchors := []int64{rawFirst, now}
		if expired != math.MinInt64 {
			anchors = append(anchors, expired)
		}
		for _, e := range extents[1:] {
			anchors = append(anchors, e.Oldest, e.Newest)
		}
		width := []int64{min1, hour, day1, 7 * day1, 40 * day1, 2 * 365 * day1}[rng.IntN(6)]
		mint := anchors[rng.IntN(len(anchors))] - rng.Int64N(width)
		maxt := mint + rng.Int64N(2*width)
		segs, err := Route(tiers, extents, mint, maxt, h)
		if err != nil {
			t.Fatalf("case %d: %v", n, err)
		}
		fail := func(format string, args ...any) {
			t.Fatalf("case %d: tiers %s, extents %+v, window [%d, %d], hints %+v:\n%s\nsegments %v",
				n, FormatTiers(tiers), extents, mint, maxt, h, fmt.Sprintf(format, args...), simplify(segs))
		}

		// What each tier holds, written out here rather than taken from Route's helpers.
		rule := ruleFor(h.Func, h.RangeMs)
		type holding struct{ lo, hi int64 }
		holds := make([]*holding, len(tiers))
		var rawLo int64 = math.MaxInt64
		if e := extents[0]; e.HasData {
			rawLo = max(e.ExpiredBefore, BucketStart(e.Oldest, day1))
			holds[0] = &holding{rawLo, math.MaxInt64}
		}
		anyFine := false
		for i, tier := range tiers[1:] {
			res := tier.ResolutionMs()
			anyFine = anyFine || rule.kind != KindRaw && fine(res, rule, h)
			if e := extents[i+1]; e.HasData && (rule.kind != KindRaw || rule.fallback != KindRaw) {
				holds[i+1] = &holding{BucketStart(e.Oldest, res), BucketStart(e.Newest, res) + res - 1}
			}
		}
		held := func(a, b int64) bool {
			for _, hd := range holds {
				if hd != nil && hd.lo <= b && a <= hd.hi {
					return true
				}
			}
			return false
		}
		coarsest := tiers[len(tiers)-1].ResolutionMs()
		// A seam at raw's start moves up to the next boundary of the coarser side.
		rawExactFrom := rawLo
		if coarsest > 0 && rawLo != math.MaxInt64 && BucketStart(rawLo, coarsest) != rawLo {
			rawExactFrom = BucketStart(rawLo, coarsest) + coarsest
		}
		rollupsAllowed := anyFine && (h.StepMs > 0 || h.RangeMs > 0 && mint < rawExactFrom)

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
			ti := tierIndex(tiers, s.Tier.Name)
			if hd := holds[ti]; hd == nil || s.From < hd.lo || s.To > hd.hi {
				fail("segment %d [%d, %d] reaches beyond what tier %s holds (%+v)", i, s.From, s.To, s.Tier.Name, hd)
			}
			if res := s.Tier.ResolutionMs(); res > 0 {
				if s.Res < res || s.Res%res != 0 || s.Kind == KindRaw {
					fail("rollup segment %d has res %d and kind %s", i, s.Res, s.Kind)
				}
				if s.To >= rawExactFrom && (s.Approximate || h.StepMs == 0 || !fine(res, rule, h)) {
					fail("rollup segment %d [%d, %d] answers where raw holds the data (from %d), though the hints do not prefer it", i, s.From, s.To, rawExactFrom)
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
			if !rollupsAllowed && s.To >= rawExactFrom && !(s.Tier.IsRaw() && s.Res == 0) {
				fail("segment %d [%d, %d] is not raw samples as stored, though no rollup tier is allowed where raw holds the data (from %d)", i, s.From, s.To, rawExactFrom)
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
