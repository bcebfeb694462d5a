package adapter

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// TestLabelCacheChangesNothing decodes and validates one request twice with one label
// cache, and checks which entries the cache answered the second time and that the batch,
// the series rows and the error are the same as without it.
func TestLabelCacheChangesNothing(t *testing.T) {
	label := func(name, value string) []byte {
		m := protowire.AppendBytes(protowire.AppendTag(nil, fieldLabelName, protowire.BytesType), []byte(name))
		if value != "" {
			m = protowire.AppendBytes(protowire.AppendTag(m, fieldLabelValue, protowire.BytesType), []byte(value))
		}
		return message(fieldSeriesLabels, m)
	}
	sample := func(ts int64, v float64) []byte {
		m := protowire.AppendTag(nil, fieldSampleValue, protowire.Fixed64Type)
		m = protowire.AppendFixed64(m, math.Float64bits(v))
		m = protowire.AppendTag(m, fieldSampleTimestamp, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(ts))
		return message(fieldSeriesSamples, m)
	}
	long := strings.Repeat("v", 200) // past the one-byte length of parseLabel's fast path
	entries := []struct {
		name   string
		fields [][]byte
		known  bool // answered by the cache on the second decode
	}{
		{"unsorted, with an empty value", [][]byte{label("job", "node"), label("__name__", "up"), label("zone", ""), label("instance", "a:9100"), sample(1000, 1)}, true},
		{"a value of 200 bytes", [][]byte{label("__name__", "long"), label("v", long), sample(1000, 2)}, true},
		{"a sample between its labels", [][]byte{label("__name__", "split"), sample(1000, 3), label("job", "node")}, false},
		{"no metric name", [][]byte{label("job", "node"), sample(1000, 4)}, false},
		{"a sample out of the window", [][]byte{label("__name__", "old"), sample(-5, 5), sample(2000, 6)}, true},
	}
	var body []byte
	for _, e := range entries {
		body = append(body, message(fieldWriteTimeseries, e.fields...)...)
	}
	known := newLabelCache(16)
	run := func() (*wireRequest, *Batch, string) {
		req, err := parseWriteRequest(body, nil, known, nil)
		if err != nil {
			t.Fatal(err)
		}
		var b Batch
		v := validator{cache: newSeriesCache(16), labels: known, accept: timeWindow{from: 0, to: 1 << 40}}
		verr := v.toBatch(req, &b)
		if verr == nil {
			t.Fatal("no validation error for the entry without a metric name")
		}
		return req, &b, verr.Error()
	}
	_, b1, e1 := run()
	req, b2, e2 := run()
	for i, e := range entries {
		if got := req.series[i].known; got != e.known {
			t.Errorf("%s: known = %v on the second decode, want %v", e.name, got, e.known)
		}
	}
	if known.len() != 3 {
		t.Errorf("cache holds %d entries, want the 3 valid entries with contiguous labels", known.len())
	}
	if diff := sameBatch(b1, b2); diff != "" {
		t.Error(diff)
	}
	if e1 != e2 {
		t.Errorf("errors differ:\n%s\n%s", e1, e2)
	}
	// The known entries' series rows carry their labels sorted, the empty one dropped.
	want := map[string]string{
		"up":   `[__name__ instance job] [up a:9100 node]`,
		"long": `[__name__ v] [long ` + long + `]`,
		"old":  `[__name__] [old]`,
	}
	for _, r := range b2.Series {
		if w, ok := want[r.MetricName]; ok {
			if got := strings.Join(r.Names, " ") + "] [" + strings.Join(r.Values, " "); "["+got+"]" != w {
				t.Errorf("series row of %s: [%s], want %s", r.MetricName, got, w)
			}
			delete(want, r.MetricName)
		}
	}
	if len(want) > 0 {
		t.Errorf("no series rows for %v", want)
	}
	if !strings.Contains(e2, `{__name__="old"}: 1 samples older than raw retention`) {
		t.Errorf("the out-of-window error does not name the known series: %s", e2)
	}
}

// TestLabelCacheEvicts: the cache never holds more than its bound.
func TestLabelCacheEvicts(t *testing.T) {
	c := newLabelCache(2)
	for i, raw := range []string{"a", "b", "c", "d"} {
		c.add([]labelKey{c.key([]byte(raw))}, []labelEntry{{fp: uint64(i)}})
	}
	if c.len() != 2 {
		t.Errorf("len = %d, want 2", c.len())
	}
	if e, ok := c.get(c.key([]byte("d"))); !ok || e.fp != 3 {
		t.Errorf("the entry added last is %v, %v", e, ok)
	}
}
