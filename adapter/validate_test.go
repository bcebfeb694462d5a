package adapter

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/pyramid-metrics/pyramid/adapter/store"
)

func lbls(kv ...string) []prompb.Label {
	out := make([]prompb.Label, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

// wireLabels lays labels out in a body the way the parser would find them.
func wireLabels(ls []prompb.Label) ([]byte, []wireLabel) {
	var body []byte
	out := make([]wireLabel, len(ls))
	for i, l := range ls {
		out[i].nameStart = uint32(len(body))
		body = append(body, l.Name...)
		out[i].nameEnd, out[i].valueStart = uint32(len(body)), uint32(len(body))
		body = append(body, l.Value...)
		out[i].valueEnd = uint32(len(body))
	}
	return body, out
}

func labelsEqual(body []byte, a []wireLabel, b []prompb.Label) bool {
	return slices.EqualFunc(a, b, func(x wireLabel, y prompb.Label) bool {
		return string(x.name(body)) == y.Name && string(x.value(body)) == y.Value
	})
}

// fp is the fingerprint of labels given as name, value pairs, in sorted order.
func fp(kv ...string) uint64 {
	var names, values []string
	for i := 0; i < len(kv); i += 2 {
		names, values = append(names, kv[i]), append(values, kv[i+1])
	}
	return Fingerprint(names, values)
}

func TestNormalizeLabels(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        []prompb.Label
		want      []prompb.Label
		wantLabel string // the label a rejection names; "" when accepted
	}{
		{"sorted", lbls("__name__", "up", "job", "a"), lbls("__name__", "up", "job", "a"), ""},
		{"unsorted is sorted for the sender", lbls("job", "a", "__name__", "up", "instance", "i"), lbls("__name__", "up", "instance", "i", "job", "a"), ""},
		{"empty value means no label", lbls("__name__", "up", "env", "", "job", "a"), lbls("__name__", "up", "job", "a"), ""},
		{"UTF-8 names as Prometheus 3 allows", lbls("__name__", "höhe.m", "zürich", "ja"), lbls("__name__", "höhe.m", "zürich", "ja"), ""},
		{"odd values are kept verbatim", lbls("__name__", "x", "q", "a\"b\\c\nd"), lbls("__name__", "x", "q", "a\"b\\c\nd"), ""},
		{"no metric name", lbls("job", "a"), nil, "__name__"},
		{"empty metric name", lbls("__name__", "", "job", "a"), nil, "__name__"},
		{"duplicate name", lbls("__name__", "up", "job", "a", "job", "b"), nil, "job"},
		{"duplicate name, empty value", lbls("__name__", "up", "job", "", "job", "b"), nil, "job"},
		{"empty label name", lbls("__name__", "up", "", "v"), nil, ""},
		{"invalid UTF-8 name", lbls("__name__", "up", "a\xff", "v"), nil, "a\xff"},
		{"invalid UTF-8 value", lbls("__name__", "up", "job", "\xc3\x28"), nil, "job"},
	} {
		body, in := wireLabels(tc.in)
		got, label, problem := normalizeLabels(body, in)
		if tc.want != nil {
			if problem != "" || !labelsEqual(body, got, tc.want) {
				t.Errorf("%s: got %v (problem %q), want %v", tc.name, got, problem, tc.want)
			}
			continue
		}
		if problem == "" || string(label) != tc.wantLabel {
			t.Errorf("%s: accepted %v or named label %q (problem %q), want rejection naming %q", tc.name, got, label, problem, tc.wantLabel)
		}
	}
}

// TestFingerprintIsStableHash holds pyramid's fingerprint to Prometheus's labels.StableHash,
// which Prometheus promises never to change.
func TestFingerprintIsStableHash(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var buf []byte
	for i := range 500 {
		n := 1 + r.IntN(12)
		b := labels.NewScratchBuilder(n)
		for j := range n {
			// Long values every so often exercise StableHash's path for sets over 1 KiB.
			v := strings.Repeat(string(rune('a'+r.IntN(26))), 1+r.IntN(1+200*(i%3)))
			b.Add("l"+string(rune('a'+j)), v)
		}
		b.Sort()
		ls := b.Labels()
		var pb []prompb.Label
		var names, values []string
		ls.Range(func(l labels.Label) {
			pb = append(pb, prompb.Label{Name: l.Name, Value: l.Value})
			names, values = append(names, l.Name), append(values, l.Value)
		})
		var got uint64
		body, wls := wireLabels(pb)
		got, _, buf = hashes(body, wls, buf)
		want := labels.StableHash(ls)
		if got != want || Fingerprint(names, values) != want {
			t.Fatalf("hashes(%v) = %x, Fingerprint = %x, labels.StableHash = %x", ls, got, Fingerprint(names, values), want)
		}
	}
}

func TestToBatch(t *testing.T) {
	stale := math.Float64frombits(0x7ff0000000000002)
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: lbls("__name__", "up", "job", "a", "instance", "i1"), Samples: []prompb.Sample{{Value: 1, Timestamp: 1000}}},
		{Labels: lbls("instance", "i1", "job", "a", "__name__", "up"), Samples: []prompb.Sample{{Value: stale, Timestamp: 2000}}},
		{Labels: lbls("__name__", "temp", "job", "a", "instance", "i1"), Samples: []prompb.Sample{{Value: math.NaN(), Timestamp: 1500}, {Value: math.Inf(1), Timestamp: 3_600_000}}},
		{Labels: lbls("job", "a"), Samples: []prompb.Sample{{Value: 5, Timestamp: 1000}}},
		{Labels: lbls("__name__", "h"), Histograms: []prompb.Histogram{{Timestamp: 1}}},
		// Count 3 with no observation in any bucket fails Prometheus's validation.
		{Labels: lbls("__name__", "bad_h"), Histograms: []prompb.Histogram{{Timestamp: 1, Count: &prompb.Histogram_CountInt{CountInt: 3}}}},
		{Labels: lbls("__name__", "mixed"), Samples: []prompb.Sample{{Value: 1, Timestamp: 5}}, Histograms: []prompb.Histogram{{Timestamp: 5}}},
		{Labels: lbls("__name__", "no_samples")},
	}}
	var b Batch
	v := validator{cache: newSeriesCache(10), accept: anyTime()}
	verr := v.toBatch(parseForTest(t, req), &b)

	if verr == nil || verr.Rejected != 3 || verr.Histograms != 2 || verr.Samples != 4 {
		t.Fatalf("validation error = %+v, want 3 rejected (2 for histograms), 4 samples", verr)
	}
	for _, want := range []string{
		`series {job="a"} label "__name__": missing metric name`,
		`series {__name__="bad_h"}: invalid native histogram at 1970-01-01T00:00:00.001Z: 0 observations found in buckets, but the Count field is 3`,
		`series {__name__="mixed"}: a float sample and a native histogram at one timestamp (1970-01-01T00:00:00.005Z)`,
	} {
		if !strings.Contains(verr.Error(), want) {
			t.Errorf("message %q does not say %q", verr.Error(), want)
		}
	}
	if len(b.Histograms) != 1 || b.Histograms[0].T != 1 || b.Histograms[0].H == nil || b.Histograms[0].Fingerprint != fp("__name__", "h") {
		t.Errorf("histogram rows %+v, want the one of h", b.Histograms)
	}
	if got := b.Samples(); got != 4 {
		t.Fatalf("samples = %d, want 4", got)
	}
	upFp := fp("__name__", "up", "instance", "i1", "job", "a")
	tempFp := fp("__name__", "temp", "instance", "i1", "job", "a")
	target := TargetHash("a", "i1")
	if want := []uint64{upFp, upFp, tempFp, tempFp}; !slices.Equal(b.Fingerprints, want) {
		t.Errorf("fingerprints %x, want %x (unsorted labels must give the same series)", b.Fingerprints, want)
	}
	if slices.ContainsFunc(b.Targets, func(x uint64) bool { return x != target }) {
		t.Errorf("targets %x, want all %x", b.Targets, target)
	}
	if want := []int64{1000, 2000, 1500, 3_600_000}; !slices.Equal(b.Timestamps, want) {
		t.Errorf("timestamps %v, want %v", b.Timestamps, want)
	}
	wantBits := []uint64{math.Float64bits(1), 0x7ff0000000000002, math.Float64bits(math.NaN()), math.Float64bits(math.Inf(1))}
	for i, v := range b.Values {
		if math.Float64bits(v) != wantBits[i] {
			t.Errorf("value %d bits %x, want %x", i, math.Float64bits(v), wantBits[i])
		}
	}
	// One series row per series, spanning its samples in this request.
	if len(b.Series) != 3 || b.Series[2].MetricName != "h" {
		t.Fatalf("series rows = %+v, want up, temp and h", b.Series)
	}
	up := b.Series[0]
	if up.Fingerprint != upFp || up.MetricName != "up" || up.FirstSeen != 1000 || up.LastSeen != 2000 ||
		!slices.Equal(up.Names, []string{"__name__", "instance", "job"}) || !slices.Equal(up.Values, []string{"up", "i1", "a"}) {
		t.Errorf("series row %+v", up)
	}
	if tmp := b.Series[1]; tmp.FirstSeen != 1500 || tmp.LastSeen != 3_600_000 {
		t.Errorf("temp spans [%d, %d], want [1500, 3600000]", tmp.FirstSeen, tmp.LastSeen)
	}

	// Once the cache knows the series for those hours, the same request writes no series rows.
	v.cache.add(b.Series)
	var again Batch
	v.toBatch(parseForTest(t, req), &again)
	if len(again.Series) != 0 || again.Samples() != 4 {
		t.Errorf("after caching: %d series rows, %d samples; want 0 and 4", len(again.Series), again.Samples())
	}
}

// TestToBatchTimeWindow keeps the samples inside the accepted window and names, per series,
// how many lie outside it and the bound they passed; a series with none left gets no row.
func TestToBatchTimeWindow(t *testing.T) {
	const from, to = 10 * hourMillis, 20 * hourMillis
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: lbls("__name__", "mixed"), Samples: []prompb.Sample{
			{Timestamp: math.MinInt64, Value: 1}, {Timestamp: from - 1, Value: 2}, {Timestamp: from, Value: 3},
			{Timestamp: to, Value: 4}, {Timestamp: to + 1, Value: 5}, {Timestamp: math.MaxInt64, Value: 6},
		}},
		{Labels: lbls("__name__", "old"), Samples: []prompb.Sample{{Timestamp: -5000, Value: 1}, {Timestamp: 0, Value: 1}}},
		{Labels: lbls("__name__", "fine"), Samples: []prompb.Sample{{Timestamp: 15 * hourMillis, Value: 1}}},
	}}
	var b Batch
	v := validator{cache: newSeriesCache(10), accept: timeWindow{from, to}}
	verr := v.toBatch(parseForTest(t, req), &b)
	if verr == nil || verr.Rejected != 2 || verr.WindowSeries != 2 || verr.Samples != 6 || verr.TooOld != 4 || verr.TooNew != 2 {
		t.Fatalf("validation error = %+v, want 2 series with 4 samples too old and 2 too new", verr)
	}
	for _, want := range []string{
		`series {__name__="mixed"}: 2 samples older than raw retention (before 1970-01-01T10:00:00Z), 2 samples too far in the future (after 1970-01-01T20:00:00Z)`,
		`series {__name__="old"}: 2 samples older than raw retention (before 1970-01-01T10:00:00Z)`,
	} {
		if !strings.Contains(verr.Error(), want) {
			t.Errorf("message %q lacks %q", verr.Error(), want)
		}
	}
	if want := []int64{from, to, 15 * hourMillis}; !slices.Equal(b.Timestamps, want) {
		t.Errorf("timestamps %v, want %v", b.Timestamps, want)
	}
	if len(b.Series) != 2 || b.Series[0].FirstSeen != from || b.Series[0].LastSeen != to || b.Series[1].MetricName != "fine" {
		t.Errorf("series rows %+v, want mixed over [%d, %d] and fine", b.Series, from, to)
	}
}

func TestSeriesCache(t *testing.T) {
	const h = hourMillis
	for _, tc := range []struct {
		name     string
		recorded [][2]int64 // spans added, in order
		min, max int64
		want     bool
	}{
		{"unknown series", nil, 0, 1, false},
		{"same hour", [][2]int64{{10, 20}}, 30, h - 1, true},
		{"next hour", [][2]int64{{10, 20}}, 30, h, false},
		{"spans merge", [][2]int64{{0, 0}, {5 * h, 5 * h}}, 2 * h, 3 * h, true},
		{"earlier hour", [][2]int64{{h, h}}, h - 1, h, false},
		{"negative times floor", [][2]int64{{-1, -1}}, -h, -1, true},
		{"negative hour boundary", [][2]int64{{-1, -1}}, -h - 1, -1, false},
	} {
		c := newSeriesCache(10)
		for _, s := range tc.recorded {
			c.add([]store.SeriesRow{{Fingerprint: 7, FirstSeen: s[0], LastSeen: s[1]}})
		}
		if got := c.covers(7, tc.min, tc.max); got != tc.want {
			t.Errorf("%s: covers(%d, %d) = %v, want %v", tc.name, tc.min, tc.max, got, tc.want)
		}
	}
	c := newSeriesCache(3)
	for fp := range uint64(10) {
		c.add([]store.SeriesRow{{Fingerprint: fp}})
	}
	if c.len() != 3 {
		t.Errorf("cache holds %d entries, want its bound 3", c.len())
	}
}
