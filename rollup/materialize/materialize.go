// Package materialize runs the rollup job: it keeps the rollup tables equal to the raw
// samples, cycle after cycle, with package rollup's rules and package store's statements.
// It lives apart from both because the store imports rollup's rules, and the job is
// neither a rule nor a statement: scheduling, seeding, settling and versions.
package materialize

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema"
)

// The materializer keeps the rollup tables equal to an aggregation of the deduplicated raw
// samples, whatever order, however late and however often the samples arrive
// (rollup/README.md draws it):
//
//  1. The write path marks a work unit dirty after its samples are stored (rollup.Marker,
//     store.InsertMarks). A
//     unit is one scrape target over one bucket of the coarsest tier, so it holds whole
//     buckets of every tier. The server stamps the mark with its own clock.
//  2. Each cycle, a materializer takes the server time T, finds the units whose newest mark
//     is at or after their last computation's T (or that were never computed) and whose
//     bucket ended at least Settle ago, reads their raw samples, deduplicates them,
//     aggregates every tier's buckets and inserts them with version T, then records the
//     unit done at T.
//  3. Readers keep, per series and bucket, the row with the highest version.
//
// A computation reads everything stored before T, so the highest version is always the
// most complete; a retried batch only repeats samples that deduplication removes; two
// replicas computing one unit at once write the same rows; and a sample arriving during a
// computation leaves a mark at or after T, so the unit is computed again.

// Config configures the rollup worker.
type Config struct {
	// Tiers is the ladder, raw first (rollup.ParseTiers).
	Tiers []rollup.Tier
	// Interval is the pause between cycles; Settle how long after a unit's end it is first
	// computed, so that the samples of its last scrapes are in.
	Interval, Settle time.Duration
	// MaxUnits bounds the units one cycle computes, a unit being one target over one
	// bucket of the coarsest tier. TargetsPerRead bounds the units one computation reads
	// and holds at once: that many targets of one unit, or fewer targets over several
	// units of one day (see batches).
	MaxUnits, TargetsPerRead int
	// Now is the clock deciding which units have settled and which raw is still kept.
	Now func() time.Time
	// ReplicaDelay and ClockSkew are zero on one server. On a cluster a computation's
	// reads go only to replicas at most ReplicaDelay behind their shard (whole seconds,
	// rounded up), and the servers' clocks, which stamp marks and versions, may differ by
	// ClockSkew. A computation then counts as having seen what was stored
	// ReplicaDelay+ClockSkew before it began, so marks made since are computed again.
	ReplicaDelay, ClockSkew time.Duration
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Interval <= 0:
		return fmt.Errorf("rollup interval %s must be positive", c.Interval)
	case c.Settle < 0:
		return fmt.Errorf("rollup settle time %s must not be negative", c.Settle)
	case c.MaxUnits <= 0 || c.TargetsPerRead <= 0:
		return fmt.Errorf("rollup batch sizes must be positive (units %d, targets %d)", c.MaxUnits, c.TargetsPerRead)
	case c.Now == nil:
		return errors.New("rollup clock must be set")
	case c.ReplicaDelay < 0 || c.ClockSkew < 0:
		return fmt.Errorf("replica delay %s and clock skew %s must not be negative", c.ReplicaDelay, c.ClockSkew)
	}
	return rollup.ValidateTiers(c.Tiers)
}

// Materializer computes rollups from raw samples.
type Materializer struct {
	cfg    Config
	st     *store.Store
	logger *slog.Logger
	width  int64
	// rawRetention is the raw tier's retention; units older than it are never computed,
	// because their raw samples may be gone and a computation would replace rollups of the
	// whole bucket with rollups of what is left.
	rawRetention time.Duration
	units        prometheus.Counter
	rows         prometheus.Counter
	conflicts    prometheus.Counter
	cycles       *prometheus.CounterVec
	// seeded is set once the marks of this unit width are known to exist (see seed).
	seeded bool
}

// New checks cfg and registers the worker's metrics with reg. The materializer reads and
// writes through st.
func New(cfg Config, st *store.Store, logger *slog.Logger, reg prometheus.Registerer) (*Materializer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rollup config: %w", err)
	}
	m := &Materializer{cfg: cfg, st: st, logger: logger, width: rollup.UnitWidth(cfg.Tiers), rawRetention: cfg.Tiers[0].Retention,
		units: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyramid_rollup_units_total", Help: "Work units (target x coarsest bucket) whose rollups were computed.",
		}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyramid_rollup_rows_written_total", Help: "Rollup rows written, all tiers.",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyramid_rollup_sample_conflicts_total",
			Help: "Timestamps at which stored raw samples of one series disagree (a later write with another value), as found by rollup computations; the last write is kept.",
		}),
		cycles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyramid_rollup_cycles_total", Help: "Materializer cycles by result.",
		}, []string{"result"}),
	}
	reg.MustRegister(m.units, m.rows, m.conflicts, m.cycles)
	return m, nil
}

// Run computes rollups every Interval until ctx ends. Failures are logged and retried on
// the next cycle: marks stay until a computation succeeds.
func (m *Materializer) Run(ctx context.Context) {
	if m.width == 0 {
		return
	}
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		n, err := m.Cycle(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			m.cycles.WithLabelValues("error").Inc()
			m.logger.Warn("rollup cycle failed", "units", n, "err", err)
		case err == nil:
			m.cycles.WithLabelValues("ok").Inc()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Cycle computes the pending units, at most MaxUnits of them, and returns how many it
// computed.
func (m *Materializer) Cycle(ctx context.Context) (int, error) {
	if m.width == 0 {
		return 0, nil
	}
	ctx = m.readSettings(ctx)
	if !m.seeded {
		if err := m.seed(ctx); err != nil {
			return 0, err
		}
		m.seeded = true
	}
	// The version is taken before anything is read: every sample stored before it is
	// in the reads below.
	version, err := m.st.ServerClock(ctx)
	if err != nil {
		return 0, err
	}
	_, visibility := replicaLag(m.cfg.ReplicaDelay, m.cfg.ClockSkew)
	version -= uint32(visibility / time.Second)
	pending, err := m.pending(ctx)
	if err != nil {
		return 0, err
	}
	done := 0
	for _, b := range batches(pending, m.cfg.TargetsPerRead) {
		if err := m.compute(ctx, b, version); err != nil {
			return done, err
		}
		n := len(b.starts) * len(b.targets)
		done += n
		m.units.Add(float64(n))
	}
	return done, nil
}

// batch is the work of one computation: units of one day, each of its targets pending over
// each of its starts (ascending).
type batch struct {
	starts  []int64
	targets []uint64
}

// batches groups the pending units (PendingUnits' order) into computations of at most
// perRead units each, oldest day first.
//
// The samples table is sorted by (target, fingerprint, ts) in day partitions, so reading
// any unit of a target reads nearly all of the target's granules in that day: computed
// hour by hour, a day of history was read up to 24 times. A batch therefore takes all the
// pending units of its targets in one day, which reads each target's day once. It never
// spans two days: the second day's granules are read either way, so joining days saves
// nothing and would only make the grouping below coarser.
//
// A batch's targets are those pending over exactly the same units of the day. Consecutive
// units often have different targets (late samples of a few), and a union would read and
// discard samples of units that are not pending; with this rule every sample read is
// computed and every unit computed was pending, at the price of more, smaller reads when
// targets' units differ. Each target's day is still read once.
//
// perRead bounds units, not targets, so that a batch holds as many samples as one unit of
// perRead targets did before batches (64 target-hours of 100 series at 15 s are 1.5M
// samples): 24 hours of 2 targets, or 1 hour of 64. Only a target pending over more than
// perRead units of one day, with a coarsest tier finer than a day / perRead, has its day
// read more than once.
func batches(pending []store.PendingUnit, perRead int) []batch {
	var out []batch
	for lo := 0; lo < len(pending); {
		day := rollup.BucketStart(pending[lo].Start, schema.DayMillis)
		hi := lo + 1
		for hi < len(pending) && rollup.BucketStart(pending[hi].Start, schema.DayMillis) == day {
			hi++
		}
		// Each target's units of the day, ascending, and the targets in the order they
		// first appear, which is oldest unit first.
		startsOf := map[uint64][]int64{}
		var order []uint64
		for _, u := range pending[lo:hi] {
			for _, t := range u.Targets {
				if startsOf[t] == nil {
					order = append(order, t)
				}
				startsOf[t] = append(startsOf[t], u.Start)
			}
		}
		// The targets that share their units, groups in the order of their first target.
		group := map[string]int{}
		var groups []batch
		for _, t := range order {
			k := fmt.Sprint(startsOf[t])
			i, ok := group[k]
			if !ok {
				i = len(groups)
				group[k] = i
				groups = append(groups, batch{starts: startsOf[t]})
			}
			groups[i].targets = append(groups[i].targets, t)
		}
		for _, g := range groups {
			out = append(out, split(g, perRead)...)
		}
		lo = hi
	}
	return out
}

// split divides g into batches of at most perRead units: runs of at most perRead starts,
// each with its targets in as few and as even chunks as that bound allows.
func split(g batch, perRead int) []batch {
	var out []batch
	for lo := 0; lo < len(g.starts); lo += perRead {
		starts := g.starts[lo:min(lo+perRead, len(g.starts))]
		per := max(1, perRead/len(starts))
		reads := (len(g.targets) + per - 1) / per
		size := (len(g.targets) + reads - 1) / reads
		for t := 0; t < len(g.targets); t += size {
			out = append(out, batch{starts: starts, targets: g.targets[t:min(t+size, len(g.targets))]})
		}
	}
	return out
}

// replicaLag turns a cluster's allowances into what the materializer uses: the replica
// delay as ClickHouse's max_replica_delay_for_distributed_queries takes it (whole seconds,
// at least one), and how long before a computation's version a stored sample may still be
// missing from its reads. Both are zero on one server.
func replicaLag(replicaDelay, clockSkew time.Duration) (delaySeconds int, visibility time.Duration) {
	if replicaDelay == 0 && clockSkew == 0 {
		return 0, 0
	}
	ceil := func(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }
	delaySeconds = max(1, ceil(replicaDelay))
	// The servers' now() counts whole seconds, hence the second added.
	return delaySeconds, time.Duration(delaySeconds+ceil(clockSkew)+1) * time.Second
}

// readSettings makes a cycle's Distributed reads skip replicas more than ReplicaDelay
// behind, failing rather than reading a stale one.
func (m *Materializer) readSettings(ctx context.Context) context.Context {
	delay, _ := replicaLag(m.cfg.ReplicaDelay, m.cfg.ClockSkew)
	if delay == 0 {
		return ctx
	}
	return store.FreshReplicas(ctx, delay)
}

// seed marks every unit of the raw samples when no unit of this width was ever computed:
// after an upgrade from a pyramid without rollups, whose samples carry no marks, and after a
// change of the coarsest tier, which changes the unit width. Either way every rollup within
// raw retention is then computed from raw. Marks that the write path made meanwhile only
// repeat some of these, which is harmless.
func (m *Materializer) seed(ctx context.Context) error {
	done, err := m.st.UnitsComputed(ctx, m.width)
	if err != nil {
		return err
	}
	if done > 0 {
		return nil
	}
	if err := m.st.MarkStoredSamples(ctx, m.width); err != nil {
		return err
	}
	m.logger.Info("marked the units of the stored samples for their first rollups", "width_ms", m.width)
	return nil
}

// pending lists the units to compute, oldest first, grouped by unit.
func (m *Materializer) pending(ctx context.Context) ([]store.PendingUnit, error) {
	now := m.cfg.Now()
	// A unit may be computed once it ended Settle ago.
	latest := now.Add(-m.cfg.Settle).UnixMilli() - m.width
	oldest := int64(-1 << 62)
	if m.rawRetention > 0 {
		// Raw day partitions are dropped whole; a unit in a day that may be partly
		// dropped already is left alone.
		oldest = rollup.BucketStart(now.Add(-m.rawRetention).UnixMilli(), schema.DayMillis) + schema.DayMillis
	}
	return m.st.PendingUnits(ctx, m.width, oldest, latest, m.cfg.MaxUnits)
}

// compute recomputes every tier's rollups of b's units. One read and one insert per table
// serve them all: units hold whole buckets of every tier, so the buckets of the units
// together are those of each, and every row carries the cycle's version, so the rows of
// several units are stored exactly as those of one. The done marks of all the units follow
// the rollups; a failure before them leaves every unit of b pending.
func (m *Materializer) compute(ctx context.Context, b batch, version uint32) error {
	series, err := m.st.ReadUnits(ctx, m.width, b.starts, b.targets)
	if err != nil {
		return err
	}
	fps := make([]uint64, 0, len(series))
	conflicts := map[uint64][]int64{}
	for fp, s := range series {
		fps = append(fps, fp)
		var c []int64
		if s.Timestamps, s.Values, c = rollup.SortDedup(s.Timestamps, s.Values); c != nil {
			conflicts[fp] = c
			m.conflicts.Add(float64(len(c)))
		}
	}
	slices.Sort(fps)
	if len(conflicts) > 0 {
		winners, err := m.st.ReadWinners(ctx, b.targets, conflicts)
		if err != nil {
			return err
		}
		for fp, w := range winners {
			rollup.ApplyWinners(series[fp].Timestamps, series[fp].Values, w)
		}
	}

	var rows []store.RollupRow
	for _, fp := range fps {
		s := series[fp]
		for _, tier := range m.cfg.Tiers {
			if tier.IsRaw() {
				continue
			}
			for _, b := range rollup.Downsample(s.Timestamps, s.Values, tier.ResolutionMs()) {
				rows = append(rows, store.RollupRow{Target: s.Target, Fingerprint: fp, BucketAggregate: b})
			}
		}
	}
	if err := m.st.InsertRollups(ctx, rows, version); err != nil {
		return fmt.Errorf("store the rollups of %d series: %w", len(series), err)
	}
	m.rows.Add(float64(len(rows)))
	hrows, err := m.histogramRollups(ctx, b, series)
	if err != nil {
		return err
	}
	if err := m.st.InsertHistogramRollups(ctx, hrows, version); err != nil {
		return fmt.Errorf("store %d histogram rollup rows: %w", len(hrows), err)
	}
	m.rows.Add(float64(len(hrows)))
	return m.st.InsertDone(ctx, m.width, b.starts, b.targets, version)
}

// histogramRollups computes the rollup rows of the histogram series of b's units, every
// tier from raw as for floats. A histogram at a timestamp that also holds a float sample is
// left out, as reads leave it out.
func (m *Materializer) histogramRollups(ctx context.Context, b batch, floats map[uint64]*store.UnitSeries) ([]store.HistogramRollupRow, error) {
	hists, err := m.st.UnitHistograms(ctx, m.width, b.starts, b.targets)
	if err != nil {
		return nil, err
	}
	fps := make([]uint64, 0, len(hists))
	for fp := range hists {
		fps = append(fps, fp)
	}
	slices.Sort(fps)
	var rows []store.HistogramRollupRow
	for _, fp := range fps {
		s := hists[fp]
		if f := floats[fp]; f != nil {
			s.Histograms = slices.DeleteFunc(s.Histograms, func(h rollup.HistogramSample) bool {
				_, found := slices.BinarySearch(f.Timestamps, h.T)
				return found
			})
		}
		for _, tier := range m.cfg.Tiers {
			if tier.IsRaw() {
				continue
			}
			for _, b := range rollup.DownsampleHistograms(s.Histograms, tier.ResolutionMs()) {
				rows = append(rows, store.HistogramRollupRow{Target: s.Target, Fingerprint: fp, BucketHistogramAggregate: b})
			}
		}
	}
	return rows, nil
}
