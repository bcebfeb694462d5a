package adapter

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/http"
	"strings"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
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
// size check).
func decodeReadRequest(body []byte, maxDecoded int64) (*prompb.ReadRequest, error) {
	raw, err := decompress(body, maxDecoded)
	if err != nil {
		return nil, err
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

// encodeReadResponse marshals and compresses a SAMPLES response.
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

// toLabels converts a series' labels to their protobuf form. The strings are shared, not
// copied.
func toLabels(s *readSeries) []prompb.Label {
	out := make([]prompb.Label, 0, s.labels.Len())
	s.labels.Range(func(l labels.Label) { out = append(out, prompb.Label{Name: l.Name, Value: l.Value}) })
	return out
}

// xorChunks encodes samples (strictly increasing timestamps) as XOR chunks of at most
// samplesPerChunk samples each, with Prometheus's own chunk encoder.
func xorChunks(ts []int64, values []float64) ([]prompb.Chunk, error) {
	chunks := make([]prompb.Chunk, 0, (len(ts)+samplesPerChunk-1)/samplesPerChunk)
	for lo := 0; lo < len(ts); lo += samplesPerChunk {
		hi := min(lo+samplesPerChunk, len(ts))
		c := chunkenc.NewXORChunk()
		app, err := c.Appender()
		if err != nil {
			return nil, fmt.Errorf("open XOR appender: %w", err)
		}
		for i := lo; i < hi; i++ {
			app.Append(0, ts[i], values[i])
		}
		chunks = append(chunks, prompb.Chunk{
			MinTimeMs: ts[lo], MaxTimeMs: ts[hi-1], Type: prompb.Chunk_XOR, Data: c.Bytes(),
		})
	}
	return chunks, nil
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
