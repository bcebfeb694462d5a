package adapter

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unsafe"

	"github.com/prometheus/prometheus/prompb"
)

// Remote write 2.0 response headers: what the receiver stored. Prometheus 3 treats a 2xx
// without them, for a request that carried data, as a failure.
const (
	headerSamplesWritten    = "X-Prometheus-Remote-Write-Samples-Written"
	headerHistogramsWritten = "X-Prometheus-Remote-Write-Histograms-Written"
	headerExemplarsWritten  = "X-Prometheus-Remote-Write-Exemplars-Written"
)

// handleWrite serves POST /api/v1/write, remote write 1.0 and 2.0.
func (s *Server) handleWrite(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	proto, written, err := s.write(w, r)
	if proto == protoWriteV2 {
		// Every 2.0 response says what was stored, failures included (then usually 0).
		// Exemplars are never stored yet, and say so.
		w.Header().Set(headerSamplesWritten, strconv.Itoa(written.samples))
		w.Header().Set(headerHistogramsWritten, strconv.Itoa(written.histograms))
		w.Header().Set(headerExemplarsWritten, "0")
	}
	s.respond(w, r, "write", err)
	s.m.requestDuration.WithLabelValues("write").Observe(time.Since(start).Seconds())
}

// writtenCounts is what one write request stored.
type writtenCounts struct{ samples, histograms int }

// write runs one request through decode, validate and batch, and returns the request's
// protocol and how many samples and histograms it stored. Valid series are stored even when others in the
// request are rejected; the 400 that follows then tells the sender which series were
// dropped, and Prometheus drops only what pyramid could never store.
func (s *Server) write(w http.ResponseWriter, r *http.Request) (proto string, written writtenCounts, err error) {
	if r.Method != http.MethodPost {
		return "", written, fmt.Errorf("%w: %s", ErrMethodNotAllowed, r.Method)
	}
	proto, err = checkWriteHeaders(r.Header)
	if err != nil {
		return "", written, err
	}
	if !s.schemaReady.Load() {
		return proto, written, ErrNotReady
	}
	arr := s.batcher.arrive()
	defer arr.leave()
	mem := lease{m: s.mem}
	defer mem.release()
	var b Batch
	metadata, verr, err := s.decode(w, r, proto, &b, &mem)
	if err != nil {
		return proto, written, err
	}
	// What the request read and decoded is garbage now; its rows and metadata remain,
	// and the rows stay charged, as the batch's, until their insert ends.
	rowBytes := inFlightCopies * b.bytes()
	if err := mem.resize(rowBytes + metadataSize(metadata)); err != nil {
		return proto, written, fmt.Errorf("hold %d rows: %w", b.rows(), err)
	}

	if md := s.metadata.unseen(metadata); len(md) > 0 {
		if err := s.store.InsertMetadata(r.Context(), md, time.Now().UnixMilli()); err != nil {
			return proto, written, fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
		}
		s.metadata.add(md)
		s.m.metadataWritten.Add(float64(len(md)))
	}
	_ = mem.resize(rowBytes)
	stored := writtenCounts{samples: b.Samples(), histograms: len(b.Histograms)}
	if err := s.batcher.write(r.Context(), &b, &mem, arr); err != nil {
		return proto, written, err
	}
	if verr != nil {
		return proto, stored, verr
	}
	return proto, stored, nil
}

// decode reads, decodes and validates the body into b and returns the request's
// metadata, charging mem before each step allocates. The body is read before a decode
// slot is taken, so a client that sends slowly holds only the bytes it has sent, never a
// slot; the slot bounds the CPU spent decoding. It is released before the caller waits
// for its batch: b and the metadata own their memory, and nothing refers to the request
// body any more.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, proto string, b *Batch, mem *lease) ([]prompb.MetricMetadata, *ValidationError, error) {
	body, err := readBody(w, r, s.cfg.MaxRequestBytes, mem)
	if err != nil {
		return nil, nil, err
	}
	// The wait is bounded like an insert is: a request that cannot even start within
	// InsertTimeout gets a 503 and comes back later.
	wait := time.NewTimer(s.cfg.InsertTimeout)
	defer wait.Stop()
	select {
	case s.decodeSlots <- struct{}{}:
	case <-wait.C:
		return nil, nil, fmt.Errorf("%w: all %d decode slots busy for %s", ErrOverloaded, cap(s.decodeSlots), s.cfg.InsertTimeout)
	case <-r.Context().Done():
		return nil, nil, fmt.Errorf("%w: wait for one of %d decode slots: %w", ErrOverloaded, cap(s.decodeSlots), r.Context().Err())
	}
	defer func() { <-s.decodeSlots }()
	bufs, _ := s.decodeBufs.Get().(*decodeBuffers)
	if bufs == nil {
		bufs = &decodeBuffers{}
	}
	// b, the metadata and the validation error own copies of what they keep from the
	// request, so its buffers can serve the next one once validation is done.
	defer s.putDecodeBuffers(bufs)
	req, err := decodeWriteRequest(body, s.cfg.MaxDecodedBytes, proto, mem.add, s.labels, bufs)
	if err != nil {
		return nil, nil, err
	}
	defer req.release()
	if err := mem.grow(req.batchBound()); err != nil {
		return nil, nil, fmt.Errorf("validate %d series: %w", len(req.series), err)
	}
	v := validator{cache: s.cache, labels: s.labels, accept: s.acceptWindow(time.Now()), maxBuckets: s.cfg.MaxHistogramBuckets}
	verr := v.toBatch(req, b)
	s.countReceived(req, verr)
	return req.metadata, verr, nil
}

// maxPooledBytes bounds the decode buffers kept for reuse: the buffers of an unusually
// large request go to the garbage collector rather than stay resident, uncharged.
const maxPooledBytes = 4 << 20

// putDecodeBuffers keeps bufs for the next request unless it has grown past maxPooledBytes.
func (s *Server) putDecodeBuffers(bufs *decodeBuffers) {
	size := cap(bufs.raw) + cap(bufs.samples)*int(unsafe.Sizeof(wireSample{})) +
		cap(bufs.labels)*int(unsafe.Sizeof(wireLabel{})) + cap(bufs.series)*int(unsafe.Sizeof(wireSeries{}))
	if size <= maxPooledBytes {
		s.decodeBufs.Put(bufs)
	}
}

func (s *Server) countReceived(req *wireRequest, verr *ValidationError) {
	s.m.seriesReceived.Add(float64(len(req.series)))
	s.m.samplesReceived.Add(float64(len(req.samples)))
	if verr != nil {
		s.m.seriesRejected.WithLabelValues(reasonInvalidLabels).Add(float64(verr.Rejected - verr.Histograms - verr.WindowSeries))
		s.m.seriesRejected.WithLabelValues(reasonInvalidHistogram).Add(float64(verr.Histograms))
		s.m.samplesRejected.WithLabelValues(reasonInvalidLabels).Add(float64(verr.Samples - verr.TooOld - verr.TooNew))
		s.m.samplesRejected.WithLabelValues(reasonTooOld).Add(float64(verr.TooOld))
		s.m.samplesRejected.WithLabelValues(reasonTooNew).Add(float64(verr.TooNew))
	}
}

// acceptWindow is the range of sample timestamps a write may store at now: not older than
// raw retention (such samples would be dropped with their day partition within the hour,
// after a 2xx had promised them), nor before 1970, and at most Config.MaxFuture ahead
// (every future day is a partition that retention will not drop for years).
func (s *Server) acceptWindow(now time.Time) timeWindow {
	w := timeWindow{from: 0, to: now.Add(s.cfg.MaxFuture).UnixMilli()}
	if len(s.cfg.Tiers) > 0 {
		w.from = max(w.from, s.cfg.Tiers[0].ExpiredBefore(now.UnixMilli()))
	}
	return w
}
