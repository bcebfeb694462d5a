package adapter

import (
	"bytes"
	"errors"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"google.golang.org/protobuf/encoding/protowire"
)

// repeated is n copies of field num with an empty length-delimited value: the smallest
// repeated element protobuf can carry, two bytes on the wire.
func repeated(num protowire.Number, n int) []byte {
	one := protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), nil)
	return bytes.Repeat(one, n)
}

// message wraps fields as field num of a message.
func message(num protowire.Number, fields ...[]byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), bytes.Join(fields, nil))
}

// allocated is how many bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDecodeChargesBeforeAllocating decodes bodies a few megabytes long whose elements
// each cost two bytes on the wire and tens of bytes in memory. Each is refused as larger
// than the whole budget, and decoding allocates at most about twice the budget on the way
// (the old array of a doubled arena lives on until the next collection). Without a budget
// the same bodies allocate many times more, so the cases are real.
func TestDecodeChargesBeforeAllocating(t *testing.T) {
	const budget = 8 << 20
	const n = 1 << 20
	name := message(1, protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "__name__"),
		protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "x"))
	for _, tc := range []struct {
		name  string
		proto string
		raw   []byte
	}{
		{"1.0 empty series", protoWriteV1, repeated(1, n)},
		{"1.0 empty samples", protoWriteV1, message(1, name, repeated(2, n))},
		{"1.0 empty labels", protoWriteV1, message(1, repeated(1, n))},
		{"1.0 empty metadata", protoWriteV1, repeated(3, n)},
		{"1.0 histogram of many spans", protoWriteV1, message(1, name, message(4, repeated(8, n)))},
		{"1.0 exemplar of many labels", protoWriteV1, message(1, name, message(3, repeated(1, n)))},
		{"2.0 empty symbols", protoWriteV2, repeated(4, n)},
		{"2.0 empty series", protoWriteV2, repeated(5, n)},
		{"2.0 empty samples", protoWriteV2, message(5, repeated(2, n))},
	} {
		body := snappy.Encode(nil, tc.raw)
		unbudgeted := allocated(func() { _, _ = decodeWriteRequest(body, 64<<20, tc.proto, nil, nil, nil) })
		m := newMemoryBudget(budget, prometheus.NewRegistry())
		l := lease{m: m}
		var err error
		used := allocated(func() { _, err = decodeWriteRequest(body, 64<<20, tc.proto, l.add, nil, nil) })
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: %v, want ErrTooLarge", tc.name, err)
		}
		if used > 2*budget+1<<20 {
			t.Errorf("%s: allocated %d bytes on a budget of %d", tc.name, used, budget)
		}
		if unbudgeted < 4*budget {
			t.Errorf("%s: only %d bytes allocated without a budget; not a case that needs one", tc.name, unbudgeted)
		}
		if l.held > budget || m.inUse() != l.held {
			t.Errorf("%s: lease holds %d, budget in use %d, limit %d", tc.name, l.held, m.inUse(), budget)
		}
		l.release()
		if m.inUse() != 0 {
			t.Errorf("%s: %d bytes still in use after release", tc.name, m.inUse())
		}
	}
}

// TestBatchBoundCoversSharedSymbols: in remote write 2.0 any number of series may name
// the same large symbol, and each series row copies it. batchBound counts every copy, so
// the handler refuses the request before validating it.
func TestBatchBoundCoversSharedSymbols(t *testing.T) {
	st := writev2.NewSymbolTable()
	big := string(bytes.Repeat([]byte("v"), 1<<20))
	req := &writev2.Request{}
	for i := range 100 {
		req.Timeseries = append(req.Timeseries, writev2.TimeSeries{
			LabelsRefs: st.SymbolizeLabels(labels.FromStrings("__name__", "x", "big", big, "i", string(rune('a'+i%26))+string(rune('a'+i/26))), nil),
			Samples:    []writev2.Sample{{Value: 1, Timestamp: 1}},
		})
	}
	req.Symbols = st.Symbols()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 2<<20 {
		t.Fatalf("request of %d bytes; the symbol should be stored once", len(raw))
	}
	r, err := parseWriteRequestV2(raw, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.batchBound(); got < 100<<20 {
		t.Errorf("batchBound = %d for 100 series that each copy a 1 MiB label; want at least %d", got, 100<<20)
	}
}

// TestBatchBytes: the size a batch is charged at counts its sample rows and the labels of
// its series rows.
func TestBatchBytes(t *testing.T) {
	var b Batch
	v := validator{cache: newSeriesCache(10), accept: anyTime()}
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "node"}},
		Samples: []prompb.Sample{{Timestamp: 1, Value: 1}, {Timestamp: 2, Value: 2}},
	}}}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r, err := parseWriteRequest(raw, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	bound := r.batchBound()
	if verr := v.toBatch(r, &b); verr != nil {
		t.Fatal(verr)
	}
	want := 2*sampleRowBytes + seriesRowBytes + 2*labelRefBytes + int64(len("__name__upjobnode"))
	if got := b.bytes(); got != want {
		t.Errorf("bytes() = %d, want %d", got, want)
	}
	if bound < want {
		t.Errorf("batchBound() = %d, below the batch's %d bytes", bound, want)
	}
}

// TestMemoryBudgetCountsGarbage: bytes a request returns stay counted until a collection
// has freed them. A charge that only garbage stands in the way of runs one collection and
// succeeds; one that a collection has already made room for runs none; one that live
// requests stand in the way of fails at once.
func TestMemoryBudgetCountsGarbage(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no collections but the budget's and ours
	reg := prometheus.NewRegistry()
	m := newMemoryBudget(100, reg)
	collections := func() float64 { return testutil.ToFloat64(m.collections) }

	a := lease{m: m}
	if err := a.grow(80); err != nil {
		t.Fatal(err)
	}
	a.release()
	b := lease{m: m}
	if err := b.grow(50); err != nil || collections() != 1 {
		t.Fatalf("charge past returned bytes: %v after %v collections; want success after 1", err, collections())
	}
	b.release()
	runtime.GC()
	runtime.GC()
	c := lease{m: m}
	if err := c.grow(90); err != nil || collections() != 1 {
		t.Fatalf("charge after two collections: %v after %v forced collections; want success and none more", err, collections())
	}
	d := lease{m: m}
	if err := d.grow(20); !errors.Is(err, ErrMemoryBudget) || collections() != 1 {
		t.Fatalf("charge past live bytes: %v after %v forced collections; want ErrMemoryBudget and none more", err, collections())
	}
	c.release()
	if m.inUse() != 0 {
		t.Errorf("%d bytes in use after every lease was released", m.inUse())
	}
}
