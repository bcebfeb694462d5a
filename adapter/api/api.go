// Package api serves Prometheus's HTTP query API (/api/v1/query, query_range, series,
// labels, label values, metadata, exemplars, buildinfo, format_query, parse_query) over
// pyramid's store, with Prometheus's own PromQL engine, parameter parsing, JSON envelope,
// error types and status codes.
//
//	api.go       New, Register: routes, the envelope, metrics, the query slots
//	query.go     /query and /query_range: evaluation, timeouts, stats, the slow-query log
//	guard.go     the query guard: what a query would read, estimated before it runs, and
//	             which tiers answered it
//	series.go    /series (with first_seen_after), /labels, /label/{name}/values
//	misc.go      /metadata, /query_exemplars, /status/buildinfo, /format_query, /parse_query
//	params.go    Prometheus's parsing of times, durations, limits and match[]
//	json.go      Prometheus's JSON encoding of results, byte for byte
//	errors.go    the error kinds and the one mapping to error types and status codes
package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/prometheus/prometheus/util/httputil"

	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// maxAnnotations bounds the warnings and infos a response lists, as in Prometheus.
const maxAnnotations = 10

// Storage is what the API reads: pyramid's store (*store.Store), whose queryables read on
// each request's terms (its lookback, budget, tier log, estimate or first-seen filter).
type Storage interface {
	Queryable(o store.Options) storage.Queryable
	Metadata(ctx context.Context, metric string, limit int) ([]store.Metadata, error)
}

// API answers the query endpoints from a Storage.
type API struct {
	cfg    Config
	st     Storage
	engine *promql.Engine
	parser parser.Parser
	logger *slog.Logger
	// slots holds a token per query being evaluated (Config.MaxConcurrent).
	slots    chan struct{}
	duration *prometheus.HistogramVec
	requests *prometheus.CounterVec
	refused  prometheus.Counter
}

// New builds the API over st. The engine's own metrics are registered with the prefix
// pyramid_ (pyramid_prometheus_engine_*), so that they cannot clash with a Prometheus
// library's in the same registry.
func New(cfg Config, st Storage, logger *slog.Logger, reg prometheus.Registerer) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("query API config: %w", err)
	}
	p := parser.NewParser(parser.Options{})
	interval := cfg.DefaultEvaluationInterval.Milliseconds()
	a := &API{
		cfg:    cfg,
		st:     st,
		parser: p,
		logger: logger,
		slots:  make(chan struct{}, cfg.MaxConcurrent),
		engine: promql.NewEngine(promql.EngineOpts{
			Logger:                   logger.With("component", "promql"),
			Reg:                      prometheus.WrapRegistererWithPrefix("pyramid_", reg),
			MaxSamples:               cfg.MaxSamples,
			Timeout:                  cfg.Timeout,
			LookbackDelta:            cfg.LookbackDelta,
			NoStepSubqueryIntervalFn: func(int64) int64 { return interval },
			EnableAtModifier:         true,
			EnableNegativeOffset:     true,
			Parser:                   p,
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pyramid_api_request_duration_seconds",
			Help: "Time to answer a Prometheus query API request, by endpoint and by the coarsest tier that answered" +
				" (\"none\" when no selection found series or the endpoint reads no samples).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"endpoint", "tier"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyramid_api_queries_refused_total",
			Help: "Queries the query guard refused before running them, their estimated samples past PYRAMID_QUERY_MAX_SAMPLES.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyramid_api_requests_total",
			Help: "Prometheus query API requests, by endpoint and HTTP status code.",
		}, []string{"endpoint", "code"}),
	}
	for _, c := range []prometheus.Collector{a.duration, a.requests, a.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register query API metrics: %w", err)
		}
	}
	return a, nil
}

// result is what an endpoint answers: data on success, or err; warnings either way.
type result struct {
	data     any
	err      error
	warnings annotations.Annotations
	// query is the PromQL text the warnings' positions refer to.
	query string
	// noContent answers 204 without a body, as Prometheus answers an exemplar query
	// without selectors.
	noContent bool
	// close, if set, releases what data refers to once it is written.
	close func()
	// tier is the coarsest tier that answered a query, for the duration metric.
	tier string
}

type endpoint func(w http.ResponseWriter, r *http.Request) result

// Register adds the endpoints under /api/v1 to r, with the methods Prometheus serves them
// with.
func (a *API) Register(r *mux.Router) {
	getPost := []string{http.MethodGet, http.MethodPost}
	get := []string{http.MethodGet}
	for _, e := range []struct {
		path, name string
		methods    []string
		f          endpoint
	}{
		{"/api/v1/query", "query", getPost, a.query},
		{"/api/v1/query_range", "query_range", getPost, a.queryRange},
		{"/api/v1/series", "series", getPost, a.series},
		{"/api/v1/labels", "labels", getPost, a.labelNames},
		{"/api/v1/label/{name}/values", "label_values", get, a.labelValues},
		{"/api/v1/metadata", "metadata", get, a.metadata},
		{"/api/v1/query_exemplars", "query_exemplars", getPost, a.queryExemplars},
		{"/api/v1/format_query", "format_query", getPost, a.formatQuery},
		{"/api/v1/parse_query", "parse_query", getPost, a.parseQuery},
		{"/api/v1/status/buildinfo", "buildinfo", get, a.buildInfo},
	} {
		// Responses are gzip- or deflate-compressed as the client accepts, as Prometheus's are:
		// a month of a dashboard's series is megabytes of JSON.
		r.Handle(e.path, httputil.CompressionHandler{Handler: a.wrap(e.name, e.f)}).Methods(e.methods...)
	}
}

// wrap answers an endpoint's result in Prometheus's envelope, and counts and times it.
func (a *API) wrap(name string, f endpoint) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		res := f(w, r)
		code := a.respond(w, r, name, res)
		if res.close != nil {
			res.close()
		}
		// The one place a request is observed.
		tier := res.tier
		if tier == "" {
			tier = "none"
		}
		a.duration.WithLabelValues(name, tier).Observe(time.Since(start).Seconds())
		a.requests.WithLabelValues(name, strconv.Itoa(code)).Inc()
	})
}

// respond writes res and returns its status code.
func (a *API) respond(w http.ResponseWriter, r *http.Request, name string, res result) int {
	if res.err != nil {
		errorType, code, retry := classify(res.err)
		if retry {
			w.Header().Set("Retry-After", strconv.Itoa(int(a.cfg.RetryAfter/time.Second)))
		}
		// Refused requests are the client's business; a 503 is ClickHouse's or the
		// query's timeout, a 500 a fault of pyramid's.
		level := slog.LevelDebug
		switch {
		case code == http.StatusInternalServerError:
			level = slog.LevelError
		case code >= 500:
			level = slog.LevelWarn
		}
		a.logger.Log(r.Context(), level, "query API request failed", "endpoint", name, "code", code,
			"remote", r.RemoteAddr, "err", res.err)
		body, err := encodeError(errorType, res.err.Error())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return http.StatusInternalServerError
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write(body)
		return code
	}
	if res.noContent {
		w.WriteHeader(http.StatusNoContent)
		return http.StatusNoContent
	}
	warnings, infos := res.warnings.AsStrings(res.query, maxAnnotations, maxAnnotations)
	err := encodeSuccess(res.data, warnings, infos, func(body []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
	if err != nil {
		a.logger.Error("encode query API response", "endpoint", name, "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return http.StatusInternalServerError
	}
	return http.StatusOK
}
