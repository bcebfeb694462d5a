package adapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema"
)

// maxMetadataFamilies bounds the metadata cache; a Prometheus rarely has more than a few
// thousand metric families.
const maxMetadataFamilies = 100_000

// Server is pyramid's HTTP front: remote write, remote read, health, readiness and metrics.
type Server struct {
	cfg      Config
	logger   *slog.Logger
	m        *metrics
	cache    *seriesCache
	labels   *labelCache
	metadata *metadataCache
	batcher  *batcher
	// decodeSlots holds a token per request being decoded (Config.MaxConcurrentDecodes).
	decodeSlots chan struct{}
	// decodeBufs keeps *decodeBuffers for reuse by the next write request.
	decodeBufs sync.Pool
	// mem is the request memory budget (Config.MemoryBudget).
	mem *memoryBudget
	// marker marks the rollup work of stored samples.
	marker *rollup.Marker
	// readSlots holds a token per remote read being answered (Config.ReadMaxConcurrent).
	readSlots chan struct{}
	// store holds every statement: the inserts and the reads.
	store  *store.Store
	router *mux.Router
	// schemaReady is set once migrations have run; until then writes get 503.
	schemaReady atomic.Bool
}

// New builds a Server that writes to and reads from st. Metrics go to reg and are served
// from gatherer (normally the same registry).
func New(cfg Config, st *store.Store, logger *slog.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("adapter config: %w", err)
	}
	s := &Server{cfg: cfg, store: st, logger: logger, cache: newSeriesCache(cfg.SeriesCacheSize),
		labels: newLabelCache(cfg.SeriesCacheSize), metadata: newMetadataCache(maxMetadataFamilies), decodeSlots: make(chan struct{}, cfg.MaxConcurrentDecodes),
		readSlots: make(chan struct{}, cfg.ReadMaxConcurrent), marker: rollup.NewMarker(cfg.RollupUnitWidth)}
	s.m = newMetrics(reg, s.cache.len, func() int { return len(s.decodeSlots) }, func() int { return len(s.readSlots) })
	s.mem = newMemoryBudget(cfg.MemoryBudget, reg)
	s.batcher = newBatcher(cfg, s.m, s.insert)

	r := mux.NewRouter()
	r.HandleFunc("/api/v1/write", s.handleWrite)
	r.HandleFunc("/api/v1/read", s.handleRead)
	r.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("pyramid is healthy.\n"))
	})
	r.HandleFunc("/-/ready", s.handleReady)
	r.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	s.router = r
	return s, nil
}

// Store is what answers the server's reads, for other readers of the same tables (the
// PromQL API) to share its tier cache and metrics.
func (s *Server) Store() *store.Store { return s.store }

// Router is the server's router, for handlers that need methods or path variables (the
// PromQL API).
func (s *Server) Router() *mux.Router { return s.router }

// Handle adds a route served next to pyramid's own, such as the rollup status.
func (s *Server) Handle(path string, h http.Handler) { s.router.Handle(path, h) }

// Handler returns the routes.
func (s *Server) Handler() http.Handler { return withBodyDeadline(s.router, s.cfg.BodyTimeout) }

// SchemaReady lets writes and reads through; call it once schema.Migrate has succeeded.
func (s *Server) SchemaReady() { s.schemaReady.Store(true) }

// Close stops taking writes and inserts every row already accepted, waiting until ctx ends
// at most. Call it after the HTTP server has stopped taking requests.
func (s *Server) Close(ctx context.Context) error { return s.batcher.close(ctx) }

// insert stores one batch: series first, so that a reader never finds samples whose
// series it cannot name, then samples, then the rollup work they cause. The series cache learns of the series only once
// both are in.
func (s *Server) insert(ctx context.Context, b *Batch) error {
	series := s.cache.uncovered(b.Series)
	if err := s.store.InsertSeries(ctx, series); err != nil {
		return err
	}
	if err := s.store.InsertSamples(ctx, b.Targets, b.Fingerprints, b.Timestamps, b.Values); err != nil {
		return err
	}
	if err := s.store.InsertHistograms(ctx, b.Histograms); err != nil {
		return err
	}
	// The rollups of these samples' buckets are recomputed once the marks are in; a
	// failure here fails the batch, whose retry stores the samples again (harmlessly) and
	// the marks for the first time.
	now := time.Now().UnixMilli()
	targets, stamps := b.Marked()
	if units := s.marker.Unmarked(targets, stamps, now); len(units) > 0 {
		if err := s.store.InsertMarks(ctx, s.marker.Width(), units); err != nil {
			return err
		}
		s.marker.Remember(units, now)
	}
	s.cache.add(series)
	s.m.seriesWritten.Add(float64(len(series)))
	return nil
}

// handleReady answers 200 when ClickHouse answers and holds the schema this build expects.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	err := s.ready(ctx)
	if err != nil {
		http.Error(w, "pyramid is not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("pyramid is ready.\n"))
}

func (s *Server) ready(ctx context.Context) error {
	if !s.schemaReady.Load() {
		return ErrNotReady
	}
	// One query answers both questions: ClickHouse is reachable, and holds the schema.
	v, err := s.store.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if v != schema.LatestVersion() {
		return fmt.Errorf("schema version %d, want %d", v, schema.LatestVersion())
	}
	return nil
}

// respond writes err's status and message, counts the request and logs failures.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, handler string, err error) {
	code, retry := statusFor(err)
	if retry {
		w.Header().Set("Retry-After", strconv.Itoa(int(s.cfg.RetryAfter/time.Second)))
	}
	s.m.requests.WithLabelValues(handler, strconv.Itoa(code)).Inc()
	if err == nil {
		w.WriteHeader(code)
		return
	}
	level := slog.LevelWarn
	if code >= 500 && !errors.Is(err, ErrNotReady) {
		level = slog.LevelError
	}
	s.logger.Log(r.Context(), level, "request failed", "handler", handler, "code", code, "remote", r.RemoteAddr, "err", err)
	http.Error(w, err.Error(), code)
}
