package adapter

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"google.golang.org/protobuf/encoding/protowire"
)

// Response content types of remote read. Prometheus picks its decoder by these exact
// strings (a prefix match on the streamed one), so they must not change.
const (
	contentTypeSamples  = "application/x-protobuf"
	contentTypeStreamed = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
)

// samplesPerChunk is where a series' XOR chunk is cut, as Prometheus's TSDB cuts its own.
const samplesPerChunk = 120

// castagnoli is the CRC32 table of the streamed frame checksum.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// decodeReadRequest decompresses and parses a remote-read body (see decompress for the
// size check), charging what that may allocate to charge (nil charges nothing).
func decodeReadRequest(body []byte, maxDecoded int64, charge func(int64) error) (*prompb.ReadRequest, error) {
	raw, err := decompress(body, maxDecoded, charge, nil)
	if err != nil {
		return nil, err
	}
	if charge != nil {
		if err := charge(int64(len(raw)) * generatedBytesPerByte); err != nil {
			return nil, fmt.Errorf("parse ReadRequest of %d bytes: %w", len(raw), err)
		}
	}
	var req prompb.ReadRequest
	if err := req.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("%w: protobuf ReadRequest of %d bytes: %v", ErrDecode, len(raw), err)
	}
	return &req, nil
}

// checkReadHeaders refuses bodies that are not snappy-compressed protobuf. Prometheus
// sends both headers; a client that omits Content-Type gets the benefit of the doubt.
func checkReadHeaders(h http.Header) error {
	if enc := h.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "snappy") {
		return fmt.Errorf("%w: Content-Encoding %q, want snappy", ErrUnsupportedMediaType, enc)
	}
	if ct := h.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, contentTypeSamples) {
		return fmt.Errorf("%w: Content-Type %q, want %s", ErrUnsupportedMediaType, ct, contentTypeSamples)
	}
	return nil
}

// negotiateResponseType returns the first accepted type pyramid speaks. No list at all
// means SAMPLES, which is all that Prometheus before 2.55 understands.
func negotiateResponseType(accepted []prompb.ReadRequest_ResponseType) (prompb.ReadRequest_ResponseType, error) {
	if len(accepted) == 0 {
		return prompb.ReadRequest_SAMPLES, nil
	}
	for _, t := range accepted {
		if t == prompb.ReadRequest_SAMPLES || t == prompb.ReadRequest_STREAMED_XOR_CHUNKS {
			return t, nil
		}
	}
	return 0, fmt.Errorf("%w: accepted response types %v, pyramid speaks SAMPLES and STREAMED_XOR_CHUNKS", ErrNotAcceptable, accepted)
}

// samplesEncoder builds a compressed SAMPLES ReadResponse as the series arrive, so that a
// response held in memory costs about its compressed size instead of prompb structs (48
// bytes a sample), their encoding and its compression all at once
// (BenchmarkEncodeSamplesResponse). The protobuf bytes are those prompb's Marshal writes:
// fields in number order, zero values (including -0) left out.
//
// It relies on the snappy block format: a preamble holding the uncompressed length, then
// literal and copy elements whose copies reach back only within the uncompressed bytes
// before them. Elements that compress consecutive pieces of the input separately
// (snappy.Encode without its preamble) therefore concatenate into the elements of the
// whole, which is also how snappy.Encode itself handles inputs past 64 KiB. A query's
// result header, which must precede its series but holds their total length, is
// compressed on its own once the query ends and put in front of them.
type samplesEncoder struct {
	pieces     [][]byte // compressed elements, in response order
	pending    []byte   // uncompressed bytes not yet compressed into a piece
	rawLen     int      // uncompressed length of the whole response so far
	queryStart int      // index in pieces where the current query's series begin
	queryLen   int      // uncompressed length of the current query's series
	scratch    []byte   // snappy output before it is copied into a piece of its size
}

// samplesPieceBytes is how much uncompressed response is compressed at once: snappy's own
// block size, so that compression is as good as in one piece.
const samplesPieceBytes = 64 << 10

// Protobuf field numbers of the SAMPLES response (prompb/remote.proto); those of the
// series, labels and samples are shared with the write path's parser (wire.go).
const (
	fieldReadResults      = 1 // ReadResponse.results
	fieldResultTimeseries = 1 // QueryResult.timeseries
)

// addSeries appends a series with its samples and histograms to the current query. The
// encoder keeps no reference to lset, ts, values or hists.
func (e *samplesEncoder) addSeries(lset labels.Labels, ts []int64, values []float64, hists []store.HistogramSample) error {
	size := 0
	lset.Range(func(l labels.Label) {
		n := labelSize(l)
		size += 1 + protowire.SizeBytes(n)
	})
	for i, t := range ts {
		size += 1 + protowire.SizeBytes(sampleSize(t, values[i]))
	}
	// Histograms are few and intricate, so prompb's generated code encodes them.
	var encoded []prompb.Histogram
	if len(hists) > 0 {
		encoded = make([]prompb.Histogram, len(hists))
		for i, h := range hists {
			if h.H != nil {
				encoded[i] = prompb.FromIntHistogram(h.T, h.H)
			} else {
				encoded[i] = prompb.FromFloatHistogram(h.T, h.FH)
			}
			size += 1 + protowire.SizeBytes(encoded[i].Size())
		}
	}
	b := e.pending
	start := len(b)
	b = protowire.AppendTag(b, fieldResultTimeseries, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	lset.Range(func(l labels.Label) {
		b = protowire.AppendTag(b, fieldSeriesLabels, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(labelSize(l)))
		if l.Name != "" {
			b = protowire.AppendTag(b, fieldLabelName, protowire.BytesType)
			b = protowire.AppendString(b, l.Name)
		}
		if l.Value != "" {
			b = protowire.AppendTag(b, fieldLabelValue, protowire.BytesType)
			b = protowire.AppendString(b, l.Value)
		}
	})
	for i, t := range ts {
		v := values[i]
		b = protowire.AppendTag(b, fieldSeriesSamples, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sampleSize(t, v)))
		if v != 0 {
			b = protowire.AppendTag(b, fieldSampleValue, protowire.Fixed64Type)
			b = protowire.AppendFixed64(b, math.Float64bits(v))
		}
		if t != 0 {
			b = protowire.AppendTag(b, fieldSampleTimestamp, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(t))
		}
	}
	for i := range encoded {
		n := encoded[i].Size()
		b = protowire.AppendTag(b, fieldSeriesHistogram, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(n))
		b = slices.Grow(b, n)
		if _, err := encoded[i].MarshalToSizedBuffer(b[len(b) : len(b)+n]); err != nil {
			return fmt.Errorf("marshal histogram of %d bytes: %w", n, err)
		}
		b = b[:len(b)+n]
	}
	e.pending = b
	e.queryLen += len(b) - start
	if len(e.pending) >= samplesPieceBytes {
		e.flush()
	}
	return nil
}

// labelSize and sampleSize are the encoded sizes of a Label and a Sample message.
func labelSize(l labels.Label) int {
	n := 0
	if l.Name != "" {
		n += 1 + protowire.SizeBytes(len(l.Name))
	}
	if l.Value != "" {
		n += 1 + protowire.SizeBytes(len(l.Value))
	}
	return n
}

func sampleSize(t int64, v float64) int {
	n := 0
	if v != 0 {
		n += 1 + 8
	}
	if t != 0 {
		n += 1 + protowire.SizeVarint(uint64(t))
	}
	return n
}

// flush compresses the pending bytes into a piece.
func (e *samplesEncoder) flush() {
	if len(e.pending) == 0 {
		return
	}
	e.pieces = append(e.pieces, e.compress(e.pending))
	e.rawLen += len(e.pending)
	e.pending = e.pending[:0]
}

// compress returns the snappy elements of b, without the preamble, in a slice of their
// own size.
func (e *samplesEncoder) compress(b []byte) []byte {
	e.scratch = snappy.Encode(e.scratch[:cap(e.scratch)], b)
	_, n := binary.Uvarint(e.scratch)
	return append([]byte(nil), e.scratch[n:]...)
}

// endQuery closes the current query's result; every query gets one, empty or not.
func (e *samplesEncoder) endQuery() {
	e.flush()
	header := protowire.AppendTag(nil, fieldReadResults, protowire.BytesType)
	header = protowire.AppendVarint(header, uint64(e.queryLen))
	e.pieces = slices.Insert(e.pieces, e.queryStart, e.compress(header))
	e.rawLen += len(header)
	e.queryStart, e.queryLen = len(e.pieces), 0
}

// len is the size of the compressed response; call it after the last endQuery.
func (e *samplesEncoder) len() int {
	n := protowire.SizeVarint(uint64(e.rawLen))
	for _, p := range e.pieces {
		n += len(p)
	}
	return n
}

// writeTo writes the compressed response: the preamble, then the pieces.
func (e *samplesEncoder) writeTo(w io.Writer) error {
	if _, err := w.Write(binary.AppendUvarint(nil, uint64(e.rawLen))); err != nil {
		return err
	}
	for _, p := range e.pieces {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// toLabels converts a series' labels to their protobuf form. The strings are shared, not
// copied.
func toLabels(lset labels.Labels) []prompb.Label {
	out := make([]prompb.Label, 0, lset.Len())
	lset.Range(func(l labels.Label) { out = append(out, prompb.Label{Name: l.Name, Value: l.Value}) })
	return out
}

// encodeChunks encodes a series holding histograms as Prometheus's own storage layer
// does for a querier without chunks: a new chunk for each change of sample type and every
// 120 samples, histogram chunks cut and recoded by the chunk appender, which also sets each
// chunk's counter-reset header.
func encodeChunks(series storage.Series) ([]prompb.Chunk, error) {
	var out []prompb.Chunk
	it := storage.NewSeriesToChunkEncoder(series).Iterator(nil)
	for it.Next() {
		m := it.At()
		out = append(out, prompb.Chunk{MinTimeMs: m.MinTime, MaxTimeMs: m.MaxTime,
			Type: prompb.Chunk_Encoding(m.Chunk.Encoding()), Data: m.Chunk.Bytes()})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("encode chunks of series %s: %w", series.Labels(), err)
	}
	return out, nil
}

// frameWriter writes the frames of a streamed response: uvarint(length), the big-endian
// CRC32-Castagnoli of the message, then the message, each flushed so that the client can
// decode while pyramid reads on.
type frameWriter struct {
	w       http.ResponseWriter
	flusher http.Flusher
	buf     []byte
	// started is set once the status line is out; from then on a failure can no longer
	// become a status code.
	started bool
}

// start sends the status line and the streamed content type, once.
func (f *frameWriter) start() {
	if f.started {
		return
	}
	f.w.Header().Set("Content-Type", contentTypeStreamed)
	f.w.WriteHeader(http.StatusOK)
	f.started = true
}

// writeFrame marshals msg into one frame and sends it.
func (f *frameWriter) writeFrame(msg *prompb.ChunkedReadResponse) error {
	f.start()
	size := msg.Size()
	var head [binary.MaxVarintLen64 + 4]byte
	n := binary.PutUvarint(head[:], uint64(size))
	if cap(f.buf) < size {
		f.buf = make([]byte, size)
	}
	body := f.buf[:size]
	if _, err := msg.MarshalToSizedBuffer(body); err != nil {
		return fmt.Errorf("marshal frame of %d bytes: %w", size, err)
	}
	binary.BigEndian.PutUint32(head[n:], crc32.Checksum(body, castagnoli))
	if _, err := f.w.Write(head[:n+4]); err != nil {
		return fmt.Errorf("write frame header: %w", err)
	}
	if _, err := f.w.Write(body); err != nil {
		return fmt.Errorf("write frame of %d bytes: %w", size, err)
	}
	if f.flusher != nil {
		f.flusher.Flush()
	}
	return nil
}

// writeSeries sends one whole series as one frame: labels, then its chunks in time
// order. Prometheus's own server cuts a series whose chunks pass 1 MiB into several
// frames, but its client reads every frame as a series of its own and never merges
// neighbours with equal labels, so PromQL over such a series fails with "vector cannot
// contain metrics with the same labelset". pyramid therefore never splits a series; a
// series whose frame would pass maxFrameBytes (set it to the client's chunked_read_limit)
// is a *LimitError instead, which the client sees rather than a wrong answer. A series
// without samples sends nothing, as in Prometheus.
func (f *frameWriter) writeSeries(queryIndex int64, lbls []prompb.Label, chunks []prompb.Chunk, maxFrameBytes int) error {
	if len(chunks) == 0 {
		return nil
	}
	msg := &prompb.ChunkedReadResponse{
		ChunkedSeries: []*prompb.ChunkedSeries{{Labels: lbls, Chunks: chunks}},
		QueryIndex:    queryIndex,
	}
	if size := msg.Size(); size > maxFrameBytes {
		return &LimitError{Limit: "bytes in a streamed frame (one series)", Max: maxFrameBytes}
	}
	return f.writeFrame(msg)
}
