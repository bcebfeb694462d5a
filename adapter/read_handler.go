package adapter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"

	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// headerTiers names, in a remote-read response, the tiers that answered each query.
const headerTiers = "X-Pyramid-Tiers"

// readPlan is one query of a request: its matchers and how the store answers it. The
// query's series are selected only when its turn comes (see answerQuery).
type readPlan struct {
	sel     *selector
	querier *store.Querier
	plan    store.Plan
}

// handleRead serves POST /api/v1/read: remote read, answered in SAMPLES or
// STREAMED_XOR_CHUNKS as the client prefers.
func (s *Server) handleRead(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() { s.m.requestDuration.WithLabelValues("read").Observe(time.Since(start).Seconds()) }()
	streaming, err := s.read(w, r)
	switch {
	case err == nil:
		s.m.requests.WithLabelValues("read", "200").Inc()
	case !streaming:
		w.Header().Del(headerTiers)
		s.respond(w, r, "read", err)
	default:
		// The status line went out with the first frame. Ending the stream cleanly would
		// look like a complete answer, so the connection is torn down instead: the client
		// sees a broken stream, never a silently shortened one.
		s.m.requests.WithLabelValues("read", "aborted").Inc()
		s.logger.Error("remote read aborted mid-stream", "remote", r.RemoteAddr, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// read answers one request. streaming reports whether the response had begun when err
// happened; until then nothing has been written and err can still become a status code.
func (s *Server) read(w http.ResponseWriter, r *http.Request) (streaming bool, err error) {
	if r.Method != http.MethodPost {
		return false, fmt.Errorf("%w: %s", ErrMethodNotAllowed, r.Method)
	}
	if err := checkReadHeaders(r.Header); err != nil {
		return false, err
	}
	if !s.schemaReady.Load() {
		return false, ErrNotReady
	}
	// The body is read and decoded before a read slot is taken, so that a client that
	// sends slowly holds no slot, only the memory it has sent.
	mem := lease{m: s.mem}
	defer mem.release()
	body, err := readBody(w, r, s.cfg.MaxRequestBytes, &mem)
	if err != nil {
		return false, err
	}
	req, err := decodeReadRequest(body, s.cfg.MaxDecodedBytes, mem.add)
	if err != nil {
		return false, err
	}
	release, err := s.acquireReadSlot(r.Context())
	if err != nil {
		return false, err
	}
	defer release()
	respType, err := negotiateResponseType(req.AcceptedResponseTypes)
	if err != nil {
		return false, err
	}

	// Whatever can refuse the request outright is decided before anything is sent: every
	// query's matchers, and its plan, which needs the hints and the tiers' extents but no
	// series. Series are selected query by query as the response is built, so that one
	// query's series are held at a time. Every query draws on the same budget, so that
	// many queries in one request cost no more than one query may.
	plans := make([]readPlan, len(req.Queries))
	dialect := regexDialectOf(r.UserAgent())
	budget := &store.Budget{Series: s.cfg.ReadMaxSeries, Samples: s.cfg.ReadMaxSamples}
	for i, q := range req.Queries {
		sel, err := newSelector(q.Matchers, dialect)
		if err != nil {
			return false, fmt.Errorf("query %d: %w", i, err)
		}
		if !sel.narrows() {
			return false, fmt.Errorf("query %d: %w: selector %s must contain at least one matcher that does not match the empty string,"+
				" as in PromQL; without one it selects every series that lacks its labels", i, ErrInvalidQuery, sel)
		}
		plans[i] = readPlan{sel: sel, querier: s.store.Querier(q.StartTimestampMs, q.EndTimestampMs,
			store.Options{Budget: budget, Stream: true})}
	}
	for i, q := range req.Queries {
		p, err := plans[i].querier.Plan(r.Context(), selectHints(q.Hints))
		if err != nil {
			return false, fmt.Errorf("query %d: route: %w", i, s.readError(err))
		}
		plans[i].plan = p
	}
	// Remote read has no field for it, so a header tells, query by query, which tiers
	// answer (store.Plan.Tiers). It goes out before any query's series are selected, so a
	// query whose matchers select nothing still names the tiers that would answer it.
	for i := range plans {
		w.Header().Add(headerTiers, plans[i].plan.Tiers())
	}

	if respType == prompb.ReadRequest_STREAMED_XOR_CHUNKS {
		return s.streamChunks(r.Context(), w, plans)
	}
	return false, s.writeSamples(r.Context(), w, plans)
}

// selectHints are a remote-read query's hints as the store takes them; no hints are zero
// hints.
func selectHints(h *prompb.ReadHints) *storage.SelectHints {
	if h == nil {
		return &storage.SelectHints{}
	}
	return &storage.SelectHints{Start: h.StartMs, End: h.EndMs, Step: h.StepMs, Func: h.Func,
		Grouping: h.Grouping, By: h.By, Range: h.RangeMs}
}

// acquireReadSlot waits up to ReadQueueWait for one of ReadMaxConcurrent read slots.
func (s *Server) acquireReadSlot(ctx context.Context) (release func(), err error) {
	release = func() { <-s.readSlots }
	select {
	case s.readSlots <- struct{}{}:
		return release, nil
	default:
	}
	timer := time.NewTimer(s.cfg.ReadQueueWait)
	defer timer.Stop()
	select {
	case s.readSlots <- struct{}{}:
		return release, nil
	case <-timer.C:
		return nil, fmt.Errorf("%w: all %d read slots stayed busy for %s", ErrTooManyReads, s.cfg.ReadMaxConcurrent, s.cfg.ReadQueueWait)
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for a read slot: %w", context.Cause(ctx))
	}
}

// answerQuery hands p's series to emit one by one, with their samples (which emit must
// not keep). The store selects the series when the set is first advanced and fetches
// their samples in batches, and lets each go once emit is done with it.
func (s *Server) answerQuery(ctx context.Context, p *readPlan, emit func(series storage.Series, ts []int64, values []float64, hists []store.HistogramSample) error) error {
	ss := p.querier.SelectPlan(ctx, p.plan, p.sel.matchers...)
	for ss.Next() {
		series := ss.At()
		ts, values, ok := store.Samples(series)
		if !ok {
			return fmt.Errorf("series %s did not come from the store", series.Labels())
		}
		if err := emit(series, ts, values, store.Histograms(series)); err != nil {
			return err
		}
	}
	return s.readError(ss.Err())
}

// writeSamples answers with one snappy-compressed ReadResponse holding every query's
// result, encoded and compressed as the batches arrive (samplesEncoder). Nothing is sent
// before the last query is done, so a failure in any query still becomes a status code.
// Series without samples in the window are left out, as Prometheus's TSDB leaves them out.
func (s *Server) writeSamples(ctx context.Context, w http.ResponseWriter, plans []readPlan) error {
	var enc samplesEncoder
	for i := range plans {
		sent := 0
		err := s.answerQuery(ctx, &plans[i], func(series storage.Series, ts []int64, values []float64, hists []store.HistogramSample) error {
			sent++
			return enc.addSeries(series.Labels(), ts, values, hists)
		})
		if err != nil {
			return fmt.Errorf("query %d: %w", i, err)
		}
		enc.endQuery()
		s.m.readSeries.Add(float64(sent))
	}
	h := w.Header()
	h.Set("Content-Type", contentTypeSamples)
	h.Set("Content-Encoding", "snappy")
	h.Set("Content-Length", strconv.Itoa(enc.len()))
	w.WriteHeader(http.StatusOK)
	if err := enc.writeTo(w); err != nil {
		s.logger.Debug("remote read client went away", "bytes", enc.len(), "err", err)
	}
	return nil
}

// streamChunks answers with STREAMED_XOR_CHUNKS frames: for each query in order, its
// series in label order, one series per frame. The status line goes out with the first
// frame, so a failure before it (such as a limit passed by the first batch) still becomes
// a status code; a failure after it, in the same query or a later one, breaks the stream
// (see handleRead).
func (s *Server) streamChunks(ctx context.Context, w http.ResponseWriter, plans []readPlan) (streaming bool, err error) {
	flusher, _ := w.(http.Flusher)
	fw := &frameWriter{w: w, flusher: flusher}
	for i := range plans {
		sent := 0
		err := s.answerQuery(ctx, &plans[i], func(series storage.Series, ts []int64, values []float64, hists []store.HistogramSample) error {
			var chunks []prompb.Chunk
			if len(hists) == 0 {
				chunks = xorChunks(ts, values)
			} else {
				var err error
				if chunks, err = encodeChunks(series); err != nil {
					return err
				}
			}
			if err := fw.writeSeries(int64(i), toLabels(series.Labels()), chunks, s.cfg.ReadMaxFrameBytes); err != nil {
				return err
			}
			sent++
			return nil
		})
		if err != nil {
			return fw.started, fmt.Errorf("query %d: %w", i, err)
		}
		s.m.readSeries.Add(float64(sent))
	}
	// A request whose queries selected nothing still gets a valid, empty stream.
	fw.start()
	return true, nil
}

// readError turns the store's errors into the request's: a spent budget into the
// *LimitError naming the request's limit, a ClickHouse failure into unavailability (503
// with Retry-After). Others, cancellation included, keep their own meaning.
func (s *Server) readError(err error) error {
	switch {
	case errors.Is(err, store.ErrSeriesBudget):
		return &LimitError{Limit: "series per request", Max: s.cfg.ReadMaxSeries}
	case errors.Is(err, store.ErrSampleBudget):
		return &LimitError{Limit: "samples per request", Max: s.cfg.ReadMaxSamples}
	case errors.Is(err, store.ErrUnavailable):
		return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	return err
}
