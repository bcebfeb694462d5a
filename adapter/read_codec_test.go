package adapter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

func TestNegotiateResponseType(t *testing.T) {
	S, C := prompb.ReadRequest_SAMPLES, prompb.ReadRequest_STREAMED_XOR_CHUNKS
	for _, tc := range []struct {
		accepted []prompb.ReadRequest_ResponseType
		want     prompb.ReadRequest_ResponseType
		err      error
	}{
		{nil, S, nil}, // Prometheus before 2.55.
		{[]prompb.ReadRequest_ResponseType{C, S}, C, nil}, // Prometheus 3.
		{[]prompb.ReadRequest_ResponseType{S, C}, S, nil},
		{[]prompb.ReadRequest_ResponseType{7, C}, C, nil},
		{[]prompb.ReadRequest_ResponseType{7}, 0, ErrNotAcceptable},
	} {
		got, err := negotiateResponseType(tc.accepted)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("accepted %v: %v, %v; want %v, %v", tc.accepted, got, err, tc.want, tc.err)
		}
	}
}

// TestFrameWriterMatchesPrometheusReader writes frames and reads them back with
// Prometheus's own chunked reader, which checks the length prefix and the checksum.
func TestFrameWriterMatchesPrometheusReader(t *testing.T) {
	rec := httptest.NewRecorder()
	fw := &frameWriter{w: rec, flusher: rec}
	var sent []*prompb.ChunkedReadResponse
	for i := range 3 {
		ts := []int64{int64(i), int64(i) + 1000}
		chunks := xorChunks(ts, []float64{1.5, math.Float64frombits(0x7ff0000000000002)})
		lbls := []prompb.Label{{Name: "__name__", Value: "x"}, {Name: "i", Value: strings.Repeat("v", i*200)}}
		if err := fw.writeSeries(int64(i%2), lbls, chunks, 1<<20); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, &prompb.ChunkedReadResponse{
			ChunkedSeries: []*prompb.ChunkedSeries{{Labels: lbls, Chunks: chunks}}, QueryIndex: int64(i % 2),
		})
	}
	if err := fw.writeSeries(0, nil, nil, 1<<20); err != nil { // No samples: no frame.
		t.Fatal(err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse" {
		t.Errorf("Content-Type %q", ct)
	}
	r := remote.NewChunkedReader(bytes.NewReader(rec.Body.Bytes()), 1<<20, nil)
	for i, want := range sent {
		var got prompb.ChunkedReadResponse
		if err := r.NextProto(&got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !sameProto(t, &got, want) {
			t.Errorf("frame %d: got %v, want %v", i, &got, want)
		}
	}
	if _, err := r.Next(); err == nil {
		t.Error("a frame more than was sent")
	}
	// A flipped byte must fail the checksum.
	b := slices.Clone(rec.Body.Bytes())
	b[len(b)-1] ^= 1
	r = remote.NewChunkedReader(bytes.NewReader(b), 1<<20, nil)
	var err error
	for err == nil {
		_, err = r.Next()
	}
	if !strings.Contains(err.Error(), "checksum") {
		t.Errorf("corrupted stream read as %v; want a checksum error", err)
	}
}

// FuzzXORChunks encodes arbitrary samples and decodes them with Prometheus's chunk
// iterator: every timestamp and every value's bits must survive, in chunks of at most 120
// samples whose min and max times are right. Each chunk must also be byte for byte what
// Prometheus's own encoder writes for its samples.
func FuzzXORChunks(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 0xf0, 0, 0, 0, 0, 0, 2}, int64(-5))
	f.Add(bytes.Repeat([]byte{0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18, 1}, 300), int64(1e12))
	// Steps that change by every delta-of-delta bucket, and values that keep, narrow and
	// widen the XOR window.
	f.Add([]byte{
		0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0x20,
		0x3f, 0xf0, 0, 0, 0, 0, 0, 1, 0x20,
		0x3f, 0xf0, 0, 0, 0, 0, 0, 3, 0x5f,
		0x3f, 0xf0, 0, 0, 0, 0, 0x10, 3, 0x7f,
		0xbf, 0xf0, 0, 0, 0, 0, 0x10, 2, 0x9f,
		0xbf, 0xf0, 0, 0, 0, 0, 0x10, 2, 0xdf,
		0x7f, 0xf0, 0, 0, 0, 0, 0, 2, 0xff,
		0x7f, 0xf0, 0, 0, 0, 0, 0, 2, 0x01,
		0x7f, 0xf8, 0, 0, 0, 0, 0, 1, 0x01,
	}, int64(1_700_000_000_000))
	f.Fuzz(func(t *testing.T, data []byte, start int64) {
		// Each 9 bytes make a sample: 8 of value bits, 1 of timestamp step. The step is
		// 1 + (low 5 bits) << (3 x top 3 bits), up to about 2^26, so that consecutive
		// steps differ by amounts in every bucket chunkenc sizes them by.
		var ts []int64
		var values []float64
		at := start
		for len(data) >= 9 {
			values = append(values, math.Float64frombits(binaryUint64(data[:8])))
			ts = append(ts, at)
			at += 1 + int64(data[8]&0x1f)<<(3*(data[8]>>5))
			data = data[9:]
		}
		if len(ts) > 0 && at < start { // The timestamps wrapped around.
			return
		}
		chunks := xorChunks(ts, values)
		want, err := chunkencXORChunks(ts, values)
		if err != nil {
			t.Fatal(err)
		}
		if err := sameChunks(chunks, want); err != nil {
			t.Fatal(err)
		}
		i := 0
		for _, c := range chunks {
			chk, err := chunkenc.FromData(chunkenc.EncXOR, c.Data)
			if err != nil {
				t.Fatal(err)
			}
			if n := chk.NumSamples(); n == 0 || n > samplesPerChunk {
				t.Fatalf("chunk of %d samples", n)
			}
			if c.MinTimeMs != ts[i] || c.MaxTimeMs != ts[i+chk.NumSamples()-1] {
				t.Fatalf("chunk [%d, %d], samples [%d, %d]", c.MinTimeMs, c.MaxTimeMs, ts[i], ts[i+chk.NumSamples()-1])
			}
			it := chk.Iterator(nil)
			for it.Next() == chunkenc.ValFloat {
				gotT, gotV := it.At()
				if gotT != ts[i] || math.Float64bits(gotV) != math.Float64bits(values[i]) {
					t.Fatalf("sample %d: (%d, %x), want (%d, %x)", i, gotT, math.Float64bits(gotV), ts[i], math.Float64bits(values[i]))
				}
				i++
			}
			if err := it.Err(); err != nil {
				t.Fatal(err)
			}
		}
		if i != len(ts) {
			t.Fatalf("decoded %d samples of %d", i, len(ts))
		}
	})
}

// sameProto compares two messages by their encoding, which is deterministic for the
// generated prompb types and keeps unknown fields.
func sameProto(t *testing.T, a, b interface{ Marshal() ([]byte, error) }) bool {
	t.Helper()
	ra, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(ra, rb)
}

func binaryUint64(b []byte) uint64 {
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}

// FuzzDecodeReadRequest feeds arbitrary bodies to the read decoder: nothing may panic, the
// decoded size limit holds, and whatever decodes survives a round trip through the encoder.
func FuzzDecodeReadRequest(f *testing.F) {
	seed := &prompb.ReadRequest{
		Queries: []*prompb.Query{{
			StartTimestampMs: -1, EndTimestampMs: math.MaxInt64,
			Matchers: []*prompb.LabelMatcher{
				{Type: prompb.LabelMatcher_RE, Name: "__name__", Value: "(?i)up|"},
				{Type: prompb.LabelMatcher_NEQ, Name: "job", Value: "a'\"\\\n"},
			},
			Hints: &prompb.ReadHints{StepMs: 15000, Func: "rate", RangeMs: 300000, Grouping: []string{"job"}, By: true},
		}},
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS, prompb.ReadRequest_SAMPLES},
	}
	raw, err := seed.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(snappy.Encode(nil, raw))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})

	const maxDecoded = 1 << 16
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeReadRequest(body, maxDecoded, nil)
		if err != nil {
			if !errors.Is(err, ErrDecode) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error of no known kind: %v", err)
			}
			return
		}
		if n, _ := snappy.DecodedLen(body); n > maxDecoded {
			t.Fatalf("decoded %d bytes past the limit of %d", n, maxDecoded)
		}
		// The generated encoder writes a negative response type (which no client sends
		// and negotiation skips) as zero bytes, so the round trip leaves them out.
		req.AcceptedResponseTypes = slices.DeleteFunc(req.AcceptedResponseTypes, func(t prompb.ReadRequest_ResponseType) bool { return t < 0 })
		raw, err := req.Marshal()
		if err != nil {
			t.Fatalf("re-encode a decoded request: %v", err)
		}
		again, err := decodeReadRequest(snappy.Encode(nil, raw), math.MaxInt64, nil)
		if err != nil {
			t.Fatalf("decode a re-encoded request: %v", err)
		}
		if !sameProto(t, again, req) {
			t.Fatalf("round trip changed the request:\n%v\n%v", req, again)
		}
		// Compiling the matchers must not panic whatever they hold.
		for _, q := range req.Queries {
			_, _ = newSelector(q.Matchers, regexPrometheus3)
			_, _ = newSelector(q.Matchers, regexPrometheus2)
		}
	})
}

// FuzzQuoteRoundTrip sends arbitrary label values through the same argument binding that
// the series query uses, to the real ClickHouse: a value must come back byte for byte, and
// an equality matcher on it must select exactly the series that has it, whatever quotes,
// backslashes, control bytes or UTF-8 it holds.
func FuzzQuoteRoundTrip(f *testing.F) {
	for _, s := range []string{"", "x", "'", `\`, `\'`, `'; DROP TABLE x; --`, "a\x00b", "line\nbreak\r\t", "ü😀", "\xff\xfe", "?", "{p:String}", "$1", "%s"} {
		f.Add(s)
	}
	conn := schematest.Conn(f)
	db := schematest.Database(f, conn, 0).Database
	ctx := context.Background()
	st, err := store.New(store.Config{Database: db, TierRefresh: time.Minute}, conn, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, v string) {
		var back string
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT ?, length(?)", v, v).Scan(&back, &n); err != nil {
			t.Fatalf("SELECT %q: %v", v, err)
		}
		if back != v || n != uint64(len(v)) {
			t.Fatalf("sent %q (%d bytes), got back %q (%d bytes)", v, len(v), back, n)
		}
		if v == "" {
			return
		}
		// One series per input, told apart by a fingerprint of its own.
		fp := rand.Uint64()
		fpLabel := strconv.FormatUint(fp, 10)
		row := store.SeriesRow{Fingerprint: fp, Target: 1, MetricName: "fuzz", Names: []string{"__name__", "fp", "v"}, Values: []string{"fuzz", fpLabel, v}, LastSeen: 1}
		if err := st.InsertSeries(ctx, []store.SeriesRow{row}); err != nil {
			t.Fatal(err)
		}
		sel, err := newSelector([]*prompb.LabelMatcher{
			{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: "fuzz"},
			{Type: prompb.LabelMatcher_EQ, Name: "v", Value: v},
		}, regexPrometheus3)
		if err != nil {
			t.Fatal(err)
		}
		ss := st.Querier(0, 1, store.Options{}).Select(ctx, true, &storage.SelectHints{Start: 0, End: 1, Func: "series"}, sel.matchers...)
		var series []storage.Series
		for ss.Next() {
			series = append(series, ss.At())
		}
		if err := ss.Err(); err != nil {
			t.Fatalf("select v=%q: %v", v, err)
		}
		found := false
		for _, s := range series {
			if s.Labels().Get("v") != v {
				t.Fatalf("v=%q selected a series with v=%q", v, s.Labels().Get("v"))
			}
			found = found || s.Labels().Get("fp") == fpLabel
		}
		if !found {
			t.Fatalf("v=%q did not select its own series (%v)", v, labels.FromStrings("v", v))
		}
	})
}

// encodeBoth encodes queries (each a list of series) with samplesEncoder and with prompb's
// generated Marshal, the reference, and returns both uncompressed: the encoder's through
// snappy's own decoder.
func encodeBoth(t testing.TB, queries [][]testSeries) (got, want []byte) {
	t.Helper()
	var e samplesEncoder
	resp := &prompb.ReadResponse{}
	for _, q := range queries {
		result := &prompb.QueryResult{}
		for _, s := range q {
			if err := e.addSeries(s.lset, s.ts, s.values, nil); err != nil {
				t.Fatal(err)
			}
			ps := prompb.TimeSeries{Samples: toSamples(s.ts, s.values)}
			s.lset.Range(func(l labels.Label) { ps.Labels = append(ps.Labels, prompb.Label{Name: l.Name, Value: l.Value}) })
			result.Timeseries = append(result.Timeseries, &ps)
		}
		e.endQuery()
		resp.Results = append(resp.Results, result)
	}
	want, err := resp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	if err := e.writeTo(&body); err != nil {
		t.Fatal(err)
	}
	if body.Len() != e.len() {
		t.Fatalf("encoder wrote %d bytes, announced %d", body.Len(), e.len())
	}
	got, err = snappy.Decode(nil, body.Bytes())
	if err != nil {
		t.Fatalf("snappy-decode the encoder's response: %v", err)
	}
	return got, want
}

type testSeries struct {
	lset   labels.Labels
	ts     []int64
	values []float64
}

// TestSamplesEncoderMatchesPrompb: the encoder writes the bytes prompb's Marshal writes,
// for the values a store most easily mangles (zero and negative zero, which protobuf
// leaves out, NaN, stale markers, infinities), timestamps zero, negative and large, empty
// label values, series without samples and queries without series.
func TestSamplesEncoderMatchesPrompb(t *testing.T) {
	special := []float64{0, math.Copysign(0, -1), 1, -1.5, math.NaN(), math.Float64frombits(0x7ff0000000000002), math.Inf(1), math.Inf(-1), math.SmallestNonzeroFloat64, math.MaxFloat64}
	stamps := []int64{0, 1, -1, 1_700_000_000_000, math.MaxInt64, math.MinInt64}
	var s testSeries
	s.lset = labels.FromStrings("__name__", "x", "empty", "", "utf8", "ä€𝄞")
	for i := range 60 {
		s.ts = append(s.ts, stamps[i%len(stamps)])
		s.values = append(s.values, special[i%len(special)])
	}
	// Past samplesPieceBytes: many series, and one series bigger than a piece on its own.
	rng := rand.New(rand.NewPCG(3, 4))
	var many []testSeries
	for i := range 200 {
		m := testSeries{lset: labels.FromStrings("__name__", "many", "i", strings.Repeat("i", i%9+1))}
		for k := range 500 + i {
			m.ts = append(m.ts, int64(k)*15_000+rng.Int64N(100))
			m.values = append(m.values, rng.NormFloat64())
		}
		many = append(many, m)
	}
	big := testSeries{lset: labels.FromStrings("__name__", "big")}
	for k := range 20_000 {
		big.ts = append(big.ts, int64(k))
		big.values = append(big.values, float64(k%17))
	}
	cases := map[string][][]testSeries{
		"several pieces":               {many[:100], {big}, many[100:], {}},
		"nothing":                      nil,
		"one empty query":              {{}},
		"special values and stamps":    {{s}},
		"series without samples":       {{{lset: labels.FromStrings("a", "b")}}},
		"several queries, one empty":   {{s, s}, {}, {s}},
		"no labels (not sent, but ok)": {{{ts: []int64{5}, values: []float64{6}}}},
	}
	for name, qs := range cases {
		got, want := encodeBoth(t, qs)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: encoder wrote %d bytes %x\nprompb wrote %d bytes %x", name, len(got), head64(got), len(want), head64(want))
		}
	}
}

func head64(b []byte) []byte { return b[:min(64, len(b))] }

// FuzzSamplesEncoder: for arbitrary samples and label values the encoder writes the bytes
// prompb's Marshal writes, and they decode back to the same bits.
func FuzzSamplesEncoder(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 0xf0, 0, 0, 0, 0, 0, 2, 0xff}, int64(-5), "v", uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, start int64, value string, queries uint8) {
		var s testSeries
		s.lset = labels.FromStrings("__name__", "m", "l", value)
		at := start
		// Each 9 bytes make a sample: 8 of value bits, 1 of timestamp step.
		for len(data) >= 9 {
			s.values = append(s.values, math.Float64frombits(binaryUint64(data[:8])))
			s.ts = append(s.ts, at)
			at += int64(data[8])
			data = data[9:]
		}
		qs := make([][]testSeries, queries%4)
		for i := range qs {
			qs[i] = make([]testSeries, i%3)
			for j := range qs[i] {
				qs[i][j] = s
			}
		}
		got, want := encodeBoth(t, qs)
		if !bytes.Equal(got, want) {
			t.Fatalf("encoder wrote %x\nprompb wrote %x", head64(got), head64(want))
		}
		var back prompb.ReadResponse
		if err := back.Unmarshal(got); err != nil {
			t.Fatal(err)
		}
		for _, r := range back.Results {
			for _, ts := range r.Timeseries {
				for k, smp := range ts.Samples {
					// Protobuf cannot carry -0 (it is left out as zero); everything else
					// must come back bit for bit.
					wantBits := math.Float64bits(s.values[k])
					if s.values[k] == 0 {
						wantBits = 0
					}
					if smp.Timestamp != s.ts[k] || math.Float64bits(smp.Value) != wantBits {
						t.Fatalf("sample %d: (%d, %x), want (%d, %x)", k, smp.Timestamp, math.Float64bits(smp.Value), s.ts[k], wantBits)
					}
				}
			}
		}
	})
}

// BenchmarkEncodeSamplesResponse encodes 1,000 series x 2,880 samples (a day at 30 s) as a
// SAMPLES response, through prompb structs and Marshal, and with samplesEncoder.
func BenchmarkEncodeSamplesResponse(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	series := make([]testSeries, 1000)
	for i := range series {
		s := &series[i]
		s.lset = labels.FromStrings("__name__", "node_cpu_seconds_total", "cpu", strings.Repeat("1", i%3+1), "instance", "host:9100", "job", "node", "series", strings.Repeat("x", i%7))
		v := rng.Float64() * 1000
		for k := range 2880 {
			v += rng.Float64()
			s.ts = append(s.ts, 1_700_000_000_000+int64(k)*30_000)
			s.values = append(s.values, v)
		}
	}
	b.Run("prompb", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			resp := &prompb.ReadResponse{Results: []*prompb.QueryResult{{}}}
			for _, s := range series {
				ps := &prompb.TimeSeries{Samples: toSamples(s.ts, s.values)}
				s.lset.Range(func(l labels.Label) { ps.Labels = append(ps.Labels, prompb.Label{Name: l.Name, Value: l.Value}) })
				resp.Results[0].Timeseries = append(resp.Results[0].Timeseries, ps)
			}
			if _, err := encodeReadResponse(resp); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoder", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var e samplesEncoder
			for _, s := range series {
				if err := e.addSeries(s.lset, s.ts, s.values, nil); err != nil {
					b.Fatal(err)
				}
			}
			e.endQuery()
			if err := e.writeTo(io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// encodeReadResponse marshals and compresses a SAMPLES response the way pyramid did before
// samplesEncoder: the baseline of BenchmarkEncodeSamplesResponse.
func encodeReadResponse(resp *prompb.ReadResponse) ([]byte, error) {
	raw, err := resp.Marshal()
	if err != nil {
		return nil, fmt.Errorf("marshal read response of %d results: %w", len(resp.Results), err)
	}
	return snappy.Encode(nil, raw), nil
}

// toSamples converts a series' samples to their protobuf form.
func toSamples(ts []int64, values []float64) []prompb.Sample {
	out := make([]prompb.Sample, len(ts))
	for i := range ts {
		out[i] = prompb.Sample{Timestamp: ts[i], Value: values[i]}
	}
	return out
}
