package api

import (
	"errors"
	"fmt"
	"time"
)

// DefaultMaxPoints is the number of points per series past which Prometheus refuses a
// range query ("exceeded maximum resolution of 11,000 points per timeseries").
const DefaultMaxPoints = 11000

// Config sets the query engine's limits and what /api/v1/status/buildinfo reports.
// cmd/pyramid fills it from flags and environment, where the defaults live.
type Config struct {
	// LookbackDelta is how far back an instant selector looks for a sample (Prometheus's
	// --query.lookback-delta); a request's lookback_delta overrides it.
	LookbackDelta time.Duration
	// MaxSamples is the engine's limit on samples one query holds in memory at once
	// (Prometheus's --query.max-samples); past it the query fails with 422.
	MaxSamples int
	// Timeout bounds one query; a request's timeout parameter may only shorten it.
	Timeout time.Duration
	// MaxConcurrent bounds the queries evaluated at once; others wait for a slot for as
	// long as their request and timeout allow.
	MaxConcurrent int
	// SlowQueryThreshold: queries slower than this are logged with their PromQL text.
	// Zero logs none.
	SlowQueryThreshold time.Duration
	// DefaultEvaluationInterval is the step of subqueries that name none ([30m:]), as
	// Prometheus's global evaluation_interval is.
	DefaultEvaluationInterval time.Duration
	// MaxPoints bounds the points per series of a range query (DefaultMaxPoints).
	MaxPoints int
	// RetryAfter is sent with every 503 caused by store.ErrUnavailable.
	RetryAfter time.Duration
	// Build is reported by /api/v1/status/buildinfo.
	Build BuildInfo
}

// BuildInfo describes the running pyramid binary.
type BuildInfo struct {
	// Version is pyramid's own version; it is reported as semver build metadata of
	// EngineVersion (see buildInfo).
	Version   string
	Revision  string
	Branch    string
	BuildUser string
	BuildDate string
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.LookbackDelta <= 0:
		return fmt.Errorf("query lookback delta %v: must be positive", c.LookbackDelta)
	case c.MaxSamples <= 0:
		return fmt.Errorf("query max samples %d: must be positive", c.MaxSamples)
	case c.Timeout <= 0:
		return fmt.Errorf("query timeout %v: must be positive", c.Timeout)
	case c.MaxConcurrent <= 0:
		return fmt.Errorf("query max concurrent %d: must be positive", c.MaxConcurrent)
	case c.SlowQueryThreshold < 0:
		return fmt.Errorf("slow query threshold %v: must not be negative", c.SlowQueryThreshold)
	case c.DefaultEvaluationInterval <= 0:
		return fmt.Errorf("default evaluation interval %v: must be positive", c.DefaultEvaluationInterval)
	case c.MaxPoints <= 0:
		return fmt.Errorf("max points per series %d: must be positive", c.MaxPoints)
	case c.RetryAfter < time.Second:
		return errors.New("retry after: must be at least 1s, as Retry-After counts whole seconds")
	}
	return nil
}
