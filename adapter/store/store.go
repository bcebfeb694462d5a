package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema"
)

// Config says where the tables are and how reads use the tiers.
type Config struct {
	// Database holds pyramid's tables; Cluster is the ClickHouse cluster they are spread
	// over, empty on one server (schema.Place).
	Database string
	Cluster  string
	// Tiers is the resolution ladder (rollup.ParseTiers). With Rollups set and more than the
	// raw tier, each selection is routed across the tiers by rollup.Route; otherwise every
	// read returns raw samples.
	Tiers   []rollup.Tier
	Rollups bool
	// Lookback is the readers' lookback delta when they do not say (Options.Lookback): it
	// decides how coarse a tier may answer selectors without a range (rollup.Hints).
	Lookback time.Duration
	// TierRefresh is how long routing trusts what it last learnt of the time range each tier
	// holds. Longer saves a few small queries; shorter uses fresh rollups sooner.
	TierRefresh time.Duration
	// CacheRows is the most rows a samples or rollup read may scan and still keep the
	// blocks it decompresses in ClickHouse's uncompressed cache (use_uncompressed_cache,
	// merge_tree_max_rows_to_use_cache). Dashboards re-read the same recent windows, and a
	// cached block skips decompression, the largest part of ClickHouse's work on them; the
	// server's own limit (about a million rows) leaves out a day of a few hundred series.
	// 0 leaves the server's settings.
	CacheRows int
	// Now is the clock raw retention is counted from when routing; nil is time.Now.
	Now func() time.Time
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Database == "":
		return errors.New("database must be set")
	case c.Lookback < 0:
		return fmt.Errorf("lookback %s must not be negative", c.Lookback)
	case c.TierRefresh <= 0:
		return fmt.Errorf("tier refresh %s must be positive", c.TierRefresh)
	case c.CacheRows < 0:
		return fmt.Errorf("cache rows %d must not be negative", c.CacheRows)
	}
	if len(c.Tiers) > 0 {
		if err := rollup.ValidateTiers(c.Tiers); err != nil {
			return err
		}
	}
	return nil
}

func (c Config) place() schema.Place { return schema.Place{Database: c.Database, Cluster: c.Cluster} }

func (c Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// rawTier is the raw tier's name as configured, "raw" by default.
func (c Config) rawTier() string {
	if len(c.Tiers) > 0 {
		return c.Tiers[0].Name
	}
	return "raw"
}

// Errors a read may end with. A ClickHouse failure is ErrUnavailable, which readers turn
// into 503 with Retry-After; a passed budget is ErrSeriesBudget or ErrSampleBudget, whose
// limit the reader that set the budget knows.
// ErrEstimated ends the series sets of an estimating reader (Options.Estimate): it is how
// an estimate ends, not a failure.
var (
	ErrEstimated    = errors.New("selection estimated, not read")
	ErrUnavailable  = errors.New("ClickHouse unavailable")
	ErrSeriesBudget = errors.New("series budget exhausted")
	ErrSampleBudget = errors.New("sample budget exhausted")
)

// Store reads pyramid's tables. It is safe for concurrent use.
type Store struct {
	cfg     Config
	conn    driver.Conn
	logger  *slog.Logger
	m       *metrics
	extents tierExtents
}

// New returns a Store reading through conn; its metrics go to reg.
func New(cfg Config, conn driver.Conn, logger *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("store config: %w", err)
	}
	m := &metrics{
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyramid_read_segments_total",
			Help: "Parts of selections by the tier and aggregate that answered them; approximate is true where no tier answers as the routing rules intend.",
		}, []string{"tier", "kind", "approximate"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyramid_read_sample_conflicts_total",
			Help: "Timestamps at which stored samples of one series disagree (a later write with another value), as found by reads; the last write is returned.",
		}),
		samples: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyramid_read_samples_total",
			Help: "Samples returned by reads (remote read and PromQL): raw samples after deduplication, or points made from rollups.",
		}),
	}
	for _, c := range []prometheus.Collector{m.segments, m.conflicts, m.samples} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register store metrics: %w", err)
		}
	}
	return &Store{cfg: cfg, conn: conn, logger: logger, m: m}, nil
}

type metrics struct {
	segments  *prometheus.CounterVec
	conflicts prometheus.Counter
	samples   prometheus.Counter
}

// unavailable marks a ClickHouse failure as ErrUnavailable, unless the read was cancelled
// or ran out of time, which keep their own meaning.
func unavailable(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, ErrUnavailable) || errors.Is(err, ErrSeriesBudget) || errors.Is(err, ErrSampleBudget) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
