package adapter

import (
	"fmt"
	"net/http"
	"time"
)

// handleWrite serves POST /api/v1/write (remote write 1.0).
func (s *Server) handleWrite(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.respond(w, r, "write", s.write(r))
	s.m.requestDuration.WithLabelValues("write").Observe(time.Since(start).Seconds())
}

// write runs one request through decode, validate and batch. Valid series are stored even
// when others in the request are rejected; the 400 that follows then tells the sender
// which series were dropped, and Prometheus drops only what pyramid could never store.
func (s *Server) write(r *http.Request) error {
	if r.Method != http.MethodPost {
		return fmt.Errorf("%w: %s", ErrMethodNotAllowed, r.Method)
	}
	if !s.schemaReady.Load() {
		return ErrNotReady
	}
	if err := checkWriteHeaders(r.Header); err != nil {
		return err
	}
	body, err := readBody(r, s.cfg.MaxRequestBytes)
	if err != nil {
		return err
	}
	req, err := decodeWriteRequest(body, s.cfg.MaxDecodedBytes)
	if err != nil {
		return err
	}

	var b Batch
	v := validator{cache: s.cache}
	verr := v.toBatch(req, &b)
	s.countReceived(req, verr)

	if len(req.metadata) > 0 {
		if err := InsertMetadata(r.Context(), s.conn, s.cfg.Database, req.metadata, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
		}
		s.m.metadataWritten.Add(float64(len(req.metadata)))
	}
	if err := s.batcher.write(r.Context(), &b); err != nil {
		return err
	}
	if verr != nil {
		return verr
	}
	return nil
}

func (s *Server) countReceived(req *wireRequest, verr *ValidationError) {
	s.m.seriesReceived.Add(float64(len(req.series)))
	s.m.samplesReceived.Add(float64(len(req.samples)))
	if verr != nil {
		s.m.seriesRejected.WithLabelValues(reasonInvalidLabels).Add(float64(verr.Rejected - verr.Histograms))
		s.m.seriesRejected.WithLabelValues(reasonNativeHistogram).Add(float64(verr.Histograms))
		s.m.samplesRejected.WithLabelValues(reasonInvalidLabels).Add(float64(verr.Samples))
	}
}
