package adapter

import (
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// encodeWriteRequest is what a remote-write sender puts on the wire.
func encodeWriteRequest(t testing.TB, req *prompb.WriteRequest) []byte {
	t.Helper()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

func TestCheckWriteHeaders(t *testing.T) {
	for _, tc := range []struct {
		encoding, contentType string
		want                  string // the proto accepted; "" for a 415
	}{
		{"snappy", "application/x-protobuf", protoWriteV1},
		{"SNAPPY", "application/x-protobuf", protoWriteV1},
		{"snappy", "application/x-protobuf;proto=prometheus.WriteRequest", protoWriteV1},
		{"snappy", "application/x-protobuf; proto=prometheus.WriteRequest", protoWriteV1},
		{"snappy", "", protoWriteV1},
		{"snappy", "application/x-protobuf;proto=io.prometheus.write.v2.Request", protoWriteV2},
		{"snappy", "application/x-protobuf;proto=something.Else", ""},
		{"snappy", "application/json", ""},
		{"snappy", "application/x-protobuf; proto=\"unterminated", ""},
		{"gzip", "application/x-protobuf", ""},
		{"", "application/x-protobuf", ""},
	} {
		h := http.Header{}
		if tc.encoding != "" {
			h.Set("Content-Encoding", tc.encoding)
		}
		if tc.contentType != "" {
			h.Set("Content-Type", tc.contentType)
		}
		got, err := checkWriteHeaders(h)
		if got != tc.want || (err == nil) != (tc.want != "") || (err != nil && !errors.Is(err, ErrUnsupportedMediaType)) {
			t.Errorf("encoding %q type %q: %q, %v; want %q (or ErrUnsupportedMediaType)", tc.encoding, tc.contentType, got, err, tc.want)
		}
	}
}

func TestReadBodyLimit(t *testing.T) {
	for _, tc := range []struct {
		name          string
		body          string
		contentLength int64
		limit         int64
		wantErr       error
	}{
		{"under", "abcd", 4, 5, nil},
		{"exactly", "abcde", 5, 5, nil},
		{"declared over", "abcdef", 6, 5, ErrTooLarge},
		{"undeclared over", "abcdef", -1, 5, ErrTooLarge},
		{"lying length", "abcdef", 3, 5, ErrTooLarge},
		{"undeclared under", "abc", -1, 5, nil},
	} {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/write", strings.NewReader(tc.body))
		r.ContentLength = tc.contentLength
		got, err := readBody(httptest.NewRecorder(), r, tc.limit, &lease{})
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.wantErr)
		}
		if tc.wantErr == nil && string(got) != tc.body {
			t.Errorf("%s: body %q, want %q", tc.name, got, tc.body)
		}
	}
}

func TestDecodeWriteRequest(t *testing.T) {
	stale := math.Float64frombits(0x7ff0000000000002)
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "up"}},
		Samples: []prompb.Sample{{Value: stale, Timestamp: 1}, {Value: math.Inf(-1), Timestamp: 2}},
	}}}
	valid := encodeWriteRequest(t, req)
	raw, _ := req.Marshal()

	for _, tc := range []struct {
		name       string
		body       []byte
		maxDecoded int64
		wantErr    error
	}{
		{"valid", valid, 1 << 20, nil},
		{"decoded size exactly at the limit", valid, int64(len(raw)), nil},
		{"decoded size over the limit", valid, int64(len(raw)) - 1, ErrTooLarge},
		{"not snappy", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 1 << 20, ErrDecode},
		{"empty body", nil, 1 << 20, ErrDecode},
		{"truncated snappy", valid[:len(valid)-3], 1 << 20, ErrDecode},
		{"snappy of garbage protobuf", snappy.Encode(nil, []byte{0x0a, 0xff, 0xff, 0x01}), 1 << 20, ErrDecode},
		// A 5-byte body whose header claims 1 GiB must be refused before anything is allocated.
		{"huge declared length", []byte{0x80, 0x80, 0x80, 0x80, 0x04}, 1 << 20, ErrTooLarge},
	} {
		got, err := decodeWriteRequest(tc.body, tc.maxDecoded, protoWriteV1, nil, nil, nil)
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.wantErr)
			continue
		}
		if tc.name == "valid" {
			if len(got.series) != 1 || len(got.samples) != 2 {
				t.Fatalf("decoded %d series with %d samples, want 1 with 2", len(got.series), len(got.samples))
			}
			s := got.samples
			if math.Float64bits(s[0].Value) != 0x7ff0000000000002 || !math.IsInf(s[1].Value, -1) {
				t.Errorf("values changed in decoding: %x %v", math.Float64bits(s[0].Value), s[1].Value)
			}
		}
	}
}
