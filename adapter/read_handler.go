package adapter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/rollup"
)

// Batches of series whose samples are fetched with one ClickHouse query. The first batch
// is small because nothing is known yet about how many samples a series has in the
// window; later ones are sized to hold about readBatchSamples samples, which bounds the
// memory of a streamed response whatever the query's size.
const (
	readFirstBatch   = 8
	readMaxBatch     = 2048
	readBatchSamples = 1 << 20
)

// headerTiers names, in a remote-read response, the tiers that answered each query.
const headerTiers = "X-Pyramid-Tiers"

// readPlan is one query of a request: its matchers, its window and how the tiers answer
// it. The query's series are selected only when its turn comes (see answerQuery).
type readPlan struct {
	sel        *selector
	mint, maxt int64
	// empty is set when nothing is read for the query: its window is empty, or no tier
	// holds data in it.
	empty bool
	// segments is how the tiers answer the query (see Server.route); nil reads raw
	// samples as they are.
	segments []rollup.Segment
}

// readBudget is what is left of a request's series and sample limits. Every query of the
// request draws on the same budget, so that many queries in one request cost no more than
// one query may.
type readBudget struct {
	series, samples int
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
	// query's matchers, and its routing, which needs the hints and the tiers' extents but
	// no series. Series are selected query by query as the response is built, so that
	// one query's series are held at a time.
	plans := make([]readPlan, len(req.Queries))
	dialect := regexDialectOf(r.UserAgent())
	for i, q := range req.Queries {
		sel, err := newSelector(q.Matchers, dialect)
		if err != nil {
			return false, fmt.Errorf("query %d: %w", i, err)
		}
		if !sel.narrows() {
			return false, fmt.Errorf("query %d: %w: selector %s must contain at least one matcher that does not match the empty string,"+
				" as in PromQL; without one it selects every series that lacks its labels", i, ErrInvalidQuery, sel)
		}
		mint, maxt := queryWindow(q)
		plans[i] = readPlan{sel: sel, mint: mint, maxt: maxt, empty: mint > maxt}
	}
	for i, q := range req.Queries {
		if plans[i].empty {
			continue
		}
		if err := s.route(r.Context(), q, &plans[i]); err != nil {
			return false, fmt.Errorf("query %d: route: %w", i, s.readError(err))
		}
	}
	// Remote read has no field for it, so a header tells, query by query, which tiers
	// answer (see tiersHeader).
	for i := range plans {
		w.Header().Add(headerTiers, s.tiersHeader(&plans[i]))
	}

	budget := readBudget{series: s.cfg.ReadMaxSeries, samples: s.cfg.ReadMaxSamples}
	if respType == prompb.ReadRequest_STREAMED_XOR_CHUNKS {
		return s.streamChunks(r.Context(), w, plans, &budget)
	}
	return false, s.writeSamples(r.Context(), w, plans, &budget)
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

// queryWindow is the time range to read for q: the query's own, narrowed to the hints'
// window when the client sent one. Prometheus sets the query's range to cover every
// selector of a PromQL expression and the hints to the range this selector needs, which is
// also what its own TSDB reads.
func queryWindow(q *prompb.Query) (mint, maxt int64) {
	mint, maxt = q.StartTimestampMs, q.EndTimestampMs
	if h := q.Hints; h != nil && (h.StartMs != 0 || h.EndMs != 0) {
		mint, maxt = max(mint, h.StartMs), min(maxt, h.EndMs)
	}
	return mint, maxt
}

// batches calls fn for consecutive batches of series, sized as the comment on
// readBatchSamples says, and stops at fn's first error. fn returns how many samples its
// batch held.
func batches(series []*readSeries, fn func(batch []*readSeries) (int, error)) error {
	size := readFirstBatch
	for lo := 0; lo < len(series); {
		hi := min(lo+size, len(series))
		n, err := fn(series[lo:hi])
		if err != nil {
			return err
		}
		perSeries := max(1, n/(hi-lo))
		size = min(readMaxBatch, max(1, readBatchSamples/perSeries))
		lo = hi
	}
	return nil
}

// answerQuery selects p's series and hands them to emit batch by batch, their samples
// fetched; both are charged to budget. The series are let go when it returns, so that a
// request holds the series of one query at a time.
func (s *Server) answerQuery(ctx context.Context, p *readPlan, budget *readBudget, emit func(batch []*readSeries) error) error {
	if p.empty {
		return nil
	}
	series, err := selectSeries(ctx, s.conn, s.cfg.place(), p.sel, p.mint, p.maxt, budget.series)
	if errors.Is(err, errSeriesBudget) {
		return &LimitError{Limit: "series per request", Max: s.cfg.ReadMaxSeries}
	}
	if err != nil {
		return s.readError(err)
	}
	budget.series -= len(series)
	s.countSegments(p, len(series))
	return batches(series, func(batch []*readSeries) (int, error) {
		n, err := s.fetch(ctx, p, batch, &budget.samples)
		if err != nil {
			return n, err
		}
		return n, emit(batch)
	})
}

// fetch fills in the samples of batch, charging them against *left, the request's
// remaining sample budget. It returns how many rows it read, which sizes the next batch.
func (s *Server) fetch(ctx context.Context, p *readPlan, batch []*readSeries, left *int) (int, error) {
	var n, rows int
	var err error
	if p.segments == nil {
		n, err = s.fetchSamples(ctx, batch, p.mint, p.maxt, *left)
		rows = n
	} else {
		n, rows, err = fetchRouted(ctx, s, p, batch, *left)
	}
	if errors.Is(err, errSampleBudget) {
		return rows, &LimitError{Limit: "samples per request", Max: s.cfg.ReadMaxSamples}
	}
	if err != nil {
		return rows, s.readError(err)
	}
	*left -= n
	s.m.readSamples.Add(float64(n))
	return rows, nil
}

// writeSamples answers with one snappy-compressed ReadResponse holding every query's
// result, encoded and compressed as the batches arrive (samplesEncoder). Nothing is sent
// before the last query is done, so a failure in any query still becomes a status code.
// Series without samples in the window are left out, as Prometheus's TSDB leaves them out.
func (s *Server) writeSamples(ctx context.Context, w http.ResponseWriter, plans []readPlan, budget *readBudget) error {
	var enc samplesEncoder
	for i := range plans {
		sent := 0
		err := s.answerQuery(ctx, &plans[i], budget, func(batch []*readSeries) error {
			for _, rs := range batch {
				if len(rs.ts) > 0 {
					enc.addSeries(rs.labels, rs.ts, rs.values)
					sent++
				}
				rs.ts, rs.values = nil, nil // The encoded copy is all that is needed now.
			}
			return nil
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
func (s *Server) streamChunks(ctx context.Context, w http.ResponseWriter, plans []readPlan, budget *readBudget) (streaming bool, err error) {
	flusher, _ := w.(http.Flusher)
	fw := &frameWriter{w: w, flusher: flusher}
	for i := range plans {
		sent := 0
		err := s.answerQuery(ctx, &plans[i], budget, func(batch []*readSeries) error {
			for _, rs := range batch {
				chunks, err := xorChunks(rs.ts, rs.values)
				if err != nil {
					return err
				}
				rs.ts, rs.values = nil, nil
				if err := fw.writeSeries(int64(i), toLabels(rs), chunks, s.cfg.ReadMaxFrameBytes); err != nil {
					return err
				}
				if len(chunks) > 0 {
					sent++
				}
			}
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

// readError marks a ClickHouse failure as unavailability (503 with Retry-After), unless
// the request was cancelled or it is a limit, which keep their own meaning.
func (s *Server) readError(err error) error {
	var lerr *LimitError
	if errors.As(err, &lerr) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
}
