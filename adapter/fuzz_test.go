package adapter

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// FuzzDecodeWriteRequest feeds arbitrary bodies through decode and validate. Nothing may
// panic, the decoded size limit must hold, and whatever decodes must survive a round trip
// through the encoder with every label and every value's bits intact. A label cache and
// reused buffers must change nothing: decoding and validating the body again, with the
// cache that the first validation taught and its buffers, gives the same request, batch
// and errors.
func FuzzDecodeWriteRequest(f *testing.F) {
	seed := &prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{{
			Labels: lbls("__name__", "up", "job", "a\"b", "instance", "zürich"),
			Samples: []prompb.Sample{
				{Value: math.Float64frombits(0x7ff0000000000002), Timestamp: 1},
				{Value: math.NaN(), Timestamp: 2}, {Value: math.Inf(-1), Timestamp: -3},
			},
		}, {Labels: lbls("job", "x", "job", "y"), Samples: []prompb.Sample{{Value: 1}}}},
		Metadata: []prompb.MetricMetadata{{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: "up", Help: "h"}},
	}
	raw, err := seed.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(snappy.Encode(nil, raw))
	f.Add([]byte{})
	f.Add([]byte{0x80, 0x80, 0x80, 0x80, 0x04})

	const maxDecoded = 1 << 20
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeWriteRequest(body, maxDecoded, protoWriteV1, nil, nil, nil)
		if err != nil {
			return
		}
		if n, _ := snappy.DecodedLen(body); n > maxDecoded {
			t.Fatalf("decoded %d bytes past the limit of %d", n, maxDecoded)
		}
		raw, err := toPrompb(req).Marshal()
		if err != nil {
			t.Fatalf("re-encode a decoded request: %v", err)
		}
		again, err := decodeWriteRequest(snappy.Encode(nil, raw), math.MaxInt64, protoWriteV1, nil, nil, nil)
		if err != nil {
			t.Fatalf("decode a re-encoded request: %v", err)
		}
		if diff := sameRequest(toPrompb(again), toPrompb(req)); diff != "" {
			t.Fatalf("round trip: %s", diff)
		}
		// Validation must not panic either, and keeps only well-formed rows.
		var b Batch
		v := validator{cache: newSeriesCache(16), accept: anyTime()}
		v.toBatch(req, &b)
		if len(b.Timestamps) != len(b.Values) || len(b.Fingerprints) != len(b.Values) || len(b.Targets) != len(b.Values) {
			t.Fatalf("batch columns of unequal length")
		}
		if diff := sameWithLabelCache(body, maxDecoded); diff != "" {
			t.Fatal(diff)
		}
	})
}

// sameWithLabelCache decodes and validates body twice with one label cache, which the
// first validation teaches, and one set of buffers, which the second decode reuses, and
// describes how the second result differs from the first:
// the parsed request, the batch or the validation error. "" means they are the same.
func sameWithLabelCache(body []byte, maxDecoded int64) string {
	known, bufs := newLabelCache(1<<10), &decodeBuffers{}
	decodeValidate := func() (*prompb.WriteRequest, *Batch, string, error) {
		req, err := decodeWriteRequest(body, maxDecoded, protoWriteV1, nil, known, bufs)
		if err != nil {
			return nil, nil, "", err
		}
		defer req.release()
		for i := range req.series {
			if err := req.parseKnownLabels(&req.series[i]); err != nil {
				return nil, nil, "", fmt.Errorf("parse the labels of known series %d: %w", i, err)
			}
		}
		parsed := toPrompb(req) // before validation sorts the labels
		var b Batch
		v := validator{cache: newSeriesCache(16), labels: known, accept: anyTime()}
		verr := ""
		if e := v.toBatch(req, &b); e != nil {
			verr = e.Error()
		}
		return parsed, &b, verr, nil
	}
	p1, b1, e1, err1 := decodeValidate()
	p2, b2, e2, err2 := decodeValidate()
	switch {
	case (err1 == nil) != (err2 == nil):
		return fmt.Sprintf("decode errors differ with a warm label cache: %v, then %v", err1, err2)
	case err1 != nil:
		return ""
	case sameRequest(p1, p2) != "":
		return "with a warm label cache: " + sameRequest(p1, p2)
	case e1 != e2:
		return fmt.Sprintf("validation errors differ with a warm label cache:\n%s\nthen\n%s", e1, e2)
	}
	return sameBatch(b1, b2)
}

// sameBatch describes the first difference between two batches; "" means none. Float
// values are compared bit for bit; histograms by series and timestamp.
func sameBatch(a, b *Batch) string {
	if !slices.Equal(a.Targets, b.Targets) || !slices.Equal(a.Fingerprints, b.Fingerprints) || !slices.Equal(a.Timestamps, b.Timestamps) {
		return "sample rows differ"
	}
	if !slices.EqualFunc(a.Values, b.Values, func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) }) {
		return "sample values differ"
	}
	if !slices.EqualFunc(a.Histograms, b.Histograms, func(x, y store.HistogramRow) bool {
		return x.Target == y.Target && x.Fingerprint == y.Fingerprint && x.T == y.T
	}) {
		return "histogram rows differ"
	}
	if !reflect.DeepEqual(a.Series, b.Series) {
		return fmt.Sprintf("series rows differ: %+v vs %+v", a.Series, b.Series)
	}
	return ""
}
