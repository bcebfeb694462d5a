package rollup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyramid-metrics/pyramid/schema"
)

// The materializer keeps the rollup tables equal to an aggregation of the deduplicated raw
// samples, whatever order, however late and however often the samples arrive
// (rollup/README.md draws it):
//
//  1. The write path marks a work unit dirty after its samples are stored (Marker). A
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

// MaterializerConfig configures the rollup worker.
type MaterializerConfig struct {
	// Database holds the tables (package schema).
	Database string
	// Tiers is the ladder, raw first (ParseTiers).
	Tiers []Tier
	// Interval is the pause between cycles; Settle how long after a unit's end it is first
	// computed, so that the samples of its last scrapes are in.
	Interval, Settle time.Duration
	// MaxUnits bounds the units one cycle computes; TargetsPerRead how many targets of one
	// unit are read with one query.
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
func (c MaterializerConfig) Validate() error {
	switch {
	case c.Database == "":
		return errors.New("database must be set")
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
	return ValidateTiers(c.Tiers)
}

// Materializer computes rollups from raw samples.
type Materializer struct {
	cfg    MaterializerConfig
	conn   driver.Conn
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

// NewMaterializer checks cfg and registers the worker's metrics with reg.
func NewMaterializer(cfg MaterializerConfig, conn driver.Conn, logger *slog.Logger, reg prometheus.Registerer) (*Materializer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rollup config: %w", err)
	}
	m := &Materializer{cfg: cfg, conn: conn, logger: logger, width: UnitWidth(cfg.Tiers), rawRetention: cfg.Tiers[0].Retention,
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
	var version uint32
	if err := m.conn.QueryRow(ctx, "SELECT toUInt32(now())").Scan(&version); err != nil {
		return 0, fmt.Errorf("read the server clock: %w", err)
	}
	_, visibility := replicaLag(m.cfg.ReplicaDelay, m.cfg.ClockSkew)
	version -= uint32(visibility / time.Second)
	pending, err := m.pending(ctx)
	if err != nil {
		return 0, err
	}
	done := 0
	for _, u := range pending {
		for lo := 0; lo < len(u.targets); lo += m.cfg.TargetsPerRead {
			targets := u.targets[lo:min(lo+m.cfg.TargetsPerRead, len(u.targets))]
			if err := m.compute(ctx, u.start, targets, version); err != nil {
				return done, err
			}
			done += len(targets)
			m.units.Add(float64(len(targets)))
		}
	}
	return done, nil
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
	return clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"max_replica_delay_for_distributed_queries":          delay,
		"fallback_to_stale_replicas_for_distributed_queries": 0,
	}))
}

// seed marks every unit of the raw samples when no unit of this width was ever computed:
// after an upgrade from a pyramid without rollups, whose samples carry no marks, and after a
// change of the coarsest tier, which changes the unit width. Either way every rollup within
// raw retention is then computed from raw. Marks that the write path made meanwhile only
// repeat some of these, which is harmless.
func (m *Materializer) seed(ctx context.Context) error {
	db := m.cfg.Database
	var done uint64
	if err := m.conn.QueryRow(ctx, "SELECT count() FROM "+db+"."+schema.TableRollupDone+" WHERE width = ?", m.width).Scan(&done); err != nil {
		return fmt.Errorf("count computed rollup units: %w", err)
	}
	if done > 0 {
		return nil
	}
	// intDiv truncates towards zero; the if() rounds negative timestamps down as
	// BucketStart does.
	q := fmt.Sprintf(`INSERT INTO %[1]s.%[2]s (width, unit, target)
SELECT ?, intDiv(ts, ?) * ? - if(ts %% ? < 0, ?, 0) AS u, target FROM %[1]s.%[3]s GROUP BY u, target`,
		db, schema.TableRollupDirty, schema.TableSamples)
	w := m.width
	if err := m.conn.Exec(ctx, q, w, w, w, w, w); err != nil {
		return fmt.Errorf("mark the units of stored samples for width %d: %w", w, err)
	}
	m.logger.Info("marked the units of the stored samples for their first rollups", "width_ms", w)
	return nil
}

type pendingUnit struct {
	start   int64
	targets []uint64
}

// pending lists the units to compute, oldest first, grouped by unit.
func (m *Materializer) pending(ctx context.Context) ([]pendingUnit, error) {
	now := m.cfg.Now()
	// A unit may be computed once it ended Settle ago.
	latest := now.Add(-m.cfg.Settle).UnixMilli() - m.width
	oldest := int64(-1 << 62)
	if m.rawRetention > 0 {
		// Raw day partitions are dropped whole; a unit in a day that may be partly
		// dropped already is left alone.
		oldest = BucketStart(now.Add(-m.rawRetention).UnixMilli(), schema.DayMillis) + schema.DayMillis
	}
	db := m.cfg.Database
	q := fmt.Sprintf(`SELECT d.unit, d.target FROM
(SELECT unit, target, max(marked) AS m FROM %[1]s.%[2]s WHERE width = ? AND unit >= ? AND unit <= ? GROUP BY unit, target) AS d
ANY LEFT JOIN
(SELECT unit, target, max(version) AS v FROM %[1]s.%[3]s WHERE width = ? AND unit >= ? AND unit <= ? GROUP BY unit, target) AS r
USING (unit, target)
WHERE m >= v
ORDER BY d.unit, d.target
LIMIT ?`, db, schema.TableRollupDirty, schema.TableRollupDone)
	rows, err := m.conn.Query(ctx, q, m.width, oldest, latest, m.width, oldest, latest, m.cfg.MaxUnits)
	if err != nil {
		return nil, fmt.Errorf("find pending rollup units: %w", err)
	}
	defer rows.Close()
	var out []pendingUnit
	for rows.Next() {
		var (
			unit   int64
			target uint64
		)
		if err := rows.Scan(&unit, &target); err != nil {
			return nil, fmt.Errorf("scan pending rollup unit: %w", err)
		}
		if len(out) == 0 || out[len(out)-1].start != unit {
			out = append(out, pendingUnit{start: unit})
		}
		out[len(out)-1].targets = append(out[len(out)-1].targets, target)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending rollup units: %w", err)
	}
	return out, nil
}

// rawSeries is one series' samples within a unit.
type rawSeries struct {
	target uint64
	ts     []int64
	values []float64
}

// compute recomputes every tier's rollups of the targets over the unit starting at start.
func (m *Materializer) compute(ctx context.Context, start int64, targets []uint64, version uint32) error {
	series, err := m.readRaw(ctx, start, targets)
	if err != nil {
		return err
	}
	fps := make([]uint64, 0, len(series))
	conflicts := map[uint64][]int64{}
	for fp, s := range series {
		fps = append(fps, fp)
		var c []int64
		if s.ts, s.values, c = SortDedup(s.ts, s.values); c != nil {
			conflicts[fp] = c
			m.conflicts.Add(float64(len(c)))
		}
	}
	slices.Sort(fps)
	if len(conflicts) > 0 {
		winners, err := ReadWinners(ctx, m.conn, m.cfg.Database, targets, conflicts)
		if err != nil {
			return err
		}
		for fp, w := range winners {
			ApplyWinners(series[fp].ts, series[fp].values, w)
		}
	}

	batch, err := m.conn.PrepareBatch(ctx, "INSERT INTO "+m.cfg.Database+"."+schema.TableRollups+
		" (res, target, fingerprint, bucket, cnt, sum_hi, sum_lo, min_v, max_v, first_ts, first_v, last_ts, last_v, corr_hi, corr_lo, resets, version)")
	if err != nil {
		return fmt.Errorf("prepare rollups of %d series: %w", len(series), err)
	}
	defer batch.Close()
	rows := 0
	for _, fp := range fps {
		s := series[fp]
		for _, tier := range m.cfg.Tiers {
			if tier.IsRaw() {
				continue
			}
			for _, b := range Downsample(s.ts, s.values, tier.ResolutionMs()) {
				a := b.Aggregate
				if err := batch.Append(b.Res, s.target, fp, b.Start, a.Count, a.Sum, a.SumComp, a.Min, a.Max,
					a.FirstT, a.First, a.LastT, a.Last, a.Correction, a.CorrectionComp, a.Resets, version); err != nil {
					return fmt.Errorf("append rollup row: %w", err)
				}
				rows++
			}
		}
	}
	if rows > 0 {
		if err := batch.Send(); err != nil {
			return fmt.Errorf("insert %d rollup rows of %d series: %w", rows, len(series), err)
		}
	}
	m.rows.Add(float64(rows))

	done, err := m.conn.PrepareBatch(ctx, "INSERT INTO "+m.cfg.Database+"."+schema.TableRollupDone+" (width, unit, target, version)")
	if err != nil {
		return fmt.Errorf("prepare %d done marks: %w", len(targets), err)
	}
	defer done.Close()
	for _, t := range targets {
		if err := done.Append(m.width, start, t, version); err != nil {
			return fmt.Errorf("append done mark: %w", err)
		}
	}
	if err := done.Send(); err != nil {
		return fmt.Errorf("insert %d done marks: %w", len(targets), err)
	}
	return nil
}

// readRaw reads the raw samples of the targets within the unit, by fingerprint.
func (m *Materializer) readRaw(ctx context.Context, start int64, targets []uint64) (map[uint64]*rawSeries, error) {
	rows, err := m.conn.Query(ctx, "SELECT target, fingerprint, ts, value FROM "+m.cfg.Database+"."+schema.TableSamples+
		" WHERE target IN ? AND ts >= ? AND ts < ?", inSet(targets), start, start+m.width)
	if err != nil {
		return nil, fmt.Errorf("query raw samples of %d targets: %w", len(targets), err)
	}
	defer rows.Close()
	out := make(map[uint64]*rawSeries)
	var (
		target, fp uint64
		ts         int64
		v          float64
		cur        *rawSeries
		curFP      uint64
	)
	for rows.Next() {
		if err := rows.Scan(&target, &fp, &ts, &v); err != nil {
			return nil, fmt.Errorf("scan raw sample: %w", err)
		}
		if cur == nil || fp != curFP {
			if cur = out[fp]; cur == nil {
				cur = &rawSeries{target: target}
				out[fp] = cur
			}
			curFP = fp
		}
		cur.ts = append(cur.ts, ts)
		cur.values = append(cur.values, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read raw samples of %d targets: %w", len(targets), err)
	}
	return out, nil
}

// SortDedup orders samples by timestamp and keeps one of each run of equal timestamps:
// what a retried write left behind before the table merged it away. It reorders ts and
// values in place and returns them shortened; the caller must not use the slices it passed
// in afterwards. Rows of a series arrive as a few runs already in order (one per data
// part), so the common case is a check that finds them sorted.
//
// Equal timestamps with different value bits are a conflict: two writes disagree. The
// table's merges keep the last write (ReplacingMergeTree without a version), and every
// reader must answer as the merges will, so that an answer never changes by itself.
// SortDedup cannot know which row was written last; it returns the conflicting timestamps
// in order (nil when there are none, the common case) and keeps the first value meanwhile,
// and the caller replaces those values with ReadWinners'.
func SortDedup(ts []int64, values []float64) ([]int64, []float64, []int64) {
	if !slices.IsSorted(ts) {
		sort.Stable(samplesByTime{ts, values})
	}
	var conflicts []int64
	out := 0
	for i := range ts {
		if i > 0 && ts[i] == ts[out-1] {
			if math.Float64bits(values[i]) != math.Float64bits(values[out-1]) &&
				(len(conflicts) == 0 || conflicts[len(conflicts)-1] != ts[i]) {
				conflicts = append(conflicts, ts[i])
			}
			continue
		}
		ts[out], values[out] = ts[i], values[i]
		out++
	}
	return ts[:out], values[:out], conflicts
}

// ReadWinners returns, for the conflicting timestamps of each series (fingerprint →
// timestamps, as SortDedup returns them), the value the samples table keeps: it reads them
// with FINAL, which applies the merges' own rule at read time. targets are the series'
// targets, which lead the table's key.
func ReadWinners(ctx context.Context, conn driver.Conn, db string, targets []uint64, conflicts map[uint64][]int64) (map[uint64]map[int64]float64, error) {
	out := make(map[uint64]map[int64]float64, len(conflicts))
	if len(conflicts) == 0 {
		return out, nil
	}
	fps := make([]uint64, 0, len(conflicts))
	var stamps []int64
	for fp, ts := range conflicts {
		fps = append(fps, fp)
		stamps = append(stamps, ts...)
	}
	slices.Sort(stamps)
	stamps = slices.Compact(stamps)
	rows, err := conn.Query(ctx, "SELECT fingerprint, ts, value FROM "+db+"."+schema.TableSamples+
		" FINAL WHERE target IN ? AND fingerprint IN ? AND ts IN ?", inSet(targets), inSet(fps), inSet(stamps))
	if err != nil {
		return nil, fmt.Errorf("query the kept values of %d conflicting timestamps of %d series: %w", len(stamps), len(fps), err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			fp uint64
			ts int64
			v  float64
		)
		if err := rows.Scan(&fp, &ts, &v); err != nil {
			return nil, fmt.Errorf("scan a kept value: %w", err)
		}
		if _, ok := slices.BinarySearch(conflicts[fp], ts); !ok {
			continue // another series' conflicting timestamp
		}
		if out[fp] == nil {
			out[fp] = map[int64]float64{}
		}
		out[fp][ts] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the kept values of %d series: %w", len(fps), err)
	}
	return out, nil
}

// ApplyWinners replaces the values at the timestamps in winners (ReadWinners' values of
// one series) in a series SortDedup returned.
func ApplyWinners(ts []int64, values []float64, winners map[int64]float64) {
	for t, v := range winners {
		if i, ok := slices.BinarySearch(ts, t); ok {
			values[i] = v
		}
	}
}

// samplesByTime sorts two parallel slices by the first.
type samplesByTime struct {
	ts     []int64
	values []float64
}

func (s samplesByTime) Len() int           { return len(s.ts) }
func (s samplesByTime) Less(i, j int) bool { return s.ts[i] < s.ts[j] }
func (s samplesByTime) Swap(i, j int) {
	s.ts[i], s.ts[j] = s.ts[j], s.ts[i]
	s.values[i], s.values[j] = s.values[j], s.values[i]
}
