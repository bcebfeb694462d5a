package adapter

import (
	"math"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// FuzzDecodeWriteRequest feeds arbitrary bodies through decode and validate. Nothing may
// panic, the decoded size limit must hold, and whatever decodes must survive a round trip
// through the encoder with every label and every value's bits intact.
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
		req, err := decodeWriteRequest(body, maxDecoded, protoWriteV1, nil)
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
		again, err := decodeWriteRequest(snappy.Encode(nil, raw), math.MaxInt64, protoWriteV1, nil)
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
	})
}
