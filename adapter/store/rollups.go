package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema"
)

// ReadBuckets returns the stored buckets of resolution res (a rollup tier's) whose start
// lies in [from, to], of the series with these fingerprints under these targets, by
// fingerprint and in time order. Of the several versions a bucket may have until the
// table merges them, it keeps the highest, which is the most complete computation (see
// the materializer, package rollup/materialize). It also returns how many rows it read, versions included.
//
// The returned slices belong to the caller.
func (s *Store) ReadBuckets(ctx context.Context, res int64, targets, fingerprints []uint64, from, to int64) (map[uint64][]rollup.BucketAggregate, int, error) {
	return s.readBuckets(ctx, res, nil, targets, fingerprints, from, to)
}

// bucketRow is one row of the rollups table as read.
type bucketRow struct {
	fp uint64
	rollup.BucketAggregate
	version uint32
}

// bucketColumns returns the rollup columns that make the points of kind, or every column
// for a nil kind, and where each goes in r. Merge combines each field from the same
// fields alone (the counter correction from first and last too), so the fields of columns
// left unread stay zero through every merge without touching those kind reads. Fewer
// columns are less for ClickHouse to decompress and send.
func bucketColumns(kind *rollup.Kind, r *bucketRow) (string, []any) {
	a := &r.Aggregate
	cols := []string{"fingerprint", "bucket", "cnt", "version"}
	dest := []any{&r.fp, &r.Start, &a.Count, &r.version}
	add := func(col string, d any) {
		cols = append(cols, col)
		dest = append(dest, d)
	}
	all := kind == nil
	k := rollup.KindRaw
	if !all {
		k = *kind
	}
	if all || k == rollup.KindAvg || k == rollup.KindSum {
		add("sum_hi", &a.Sum)
		add("sum_lo", &a.SumComp)
	}
	if all || k == rollup.KindMin {
		add("min_v", &a.Min)
	}
	if all || k == rollup.KindMax {
		add("max_v", &a.Max)
	}
	if all || k == rollup.KindLast || k == rollup.KindCounter {
		add("last_ts", &a.LastT)
		add("last_v", &a.Last)
	}
	if all || k == rollup.KindCounter {
		add("first_ts", &a.FirstT)
		add("first_v", &a.First)
		add("corr_hi", &a.Correction)
		add("corr_lo", &a.CorrectionComp)
	}
	if all {
		add("resets", &a.Resets)
	}
	return strings.Join(cols, ", "), dest
}

// readBuckets is ReadBuckets reading only the columns of kind (bucketColumns).
func (s *Store) readBuckets(ctx context.Context, res int64, kind *rollup.Kind, targets, fingerprints []uint64, from, to int64) (map[uint64][]rollup.BucketAggregate, int, error) {
	out := make(map[uint64][]rollup.BucketAggregate, len(fingerprints))
	if len(fingerprints) == 0 || from > to {
		return out, 0, nil
	}
	// res and target lead the sorting key and res and bucket the partition key, so
	// ClickHouse reads only these targets' granules in this window; the fingerprints go
	// in PREWHERE for the reason fetchSamples gives.
	// One argument slice for every row, as in fetchSamples; each row is copied out of r.
	var r bucketRow
	cols, dest := bucketColumns(kind, &r)
	rows, err := s.conn.Query(ctx, "SELECT "+cols+" FROM "+s.cfg.Database+"."+schema.TableRollups+
		" PREWHERE fingerprint IN ? WHERE res = ? AND target IN ? AND bucket >= ? AND bucket <= ?",
		inSet(fingerprints), res, inSet(targets), from, to)
	if err != nil {
		return nil, 0, fmt.Errorf("query %d ms rollups of %d series: %w", res, len(fingerprints), err)
	}
	defer rows.Close()
	byFP := make(map[uint64][]bucketRow, len(fingerprints))
	n := 0
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, n, fmt.Errorf("scan %d ms rollup row %d: %w", res, n, err)
		}
		r.Res = res
		byFP[r.fp] = append(byFP[r.fp], r)
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, n, fmt.Errorf("read %d ms rollups of %d series after %d rows: %w", res, len(fingerprints), n, err)
	}
	for fp, vs := range byFP {
		// Highest version first within a bucket, so that the first row of each bucket is
		// the one kept.
		slices.SortFunc(vs, func(a, b bucketRow) int {
			if a.Start != b.Start {
				return cmp.Compare(a.Start, b.Start)
			}
			return cmp.Compare(b.version, a.version)
		})
		buckets := make([]rollup.BucketAggregate, 0, len(vs))
		for i, v := range vs {
			if i > 0 && v.Start == vs[i-1].Start {
				continue
			}
			buckets = append(buckets, v.BucketAggregate)
		}
		out[fp] = buckets
	}
	return out, n, nil
}

// ReadWinners returns, for the conflicting timestamps of each series (fingerprint →
// timestamps, as rollup.SortDedup returns them), the value the samples table keeps: it reads them
// with FINAL, which applies the merges' own rule at read time. targets are the series'
// targets, which lead the table's key.
func (s *Store) ReadWinners(ctx context.Context, targets []uint64, conflicts map[uint64][]int64) (map[uint64]map[int64]float64, error) {
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
	rows, err := s.conn.Query(ctx, "SELECT fingerprint, ts, value FROM "+s.cfg.Database+"."+schema.TableSamples+
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

// The rollup job's statements (package rollup/materialize runs the job; rollup/README.md
// draws the tables). Marks and versions are stamped with the servers' clocks, never with
// pyramid's.

// FreshReplicas makes the Distributed reads under ctx skip replicas more than
// delaySeconds behind their shard, failing rather than reading a stale one.
func FreshReplicas(ctx context.Context, delaySeconds int) context.Context {
	return clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"max_replica_delay_for_distributed_queries":          delaySeconds,
		"fallback_to_stale_replicas_for_distributed_queries": 0,
	}))
}

// ServerClock is the server's clock in whole seconds, which versions rollups.
func (s *Store) ServerClock(ctx context.Context) (uint32, error) {
	var now uint32
	if err := s.conn.QueryRow(ctx, "SELECT toUInt32(now())").Scan(&now); err != nil {
		return 0, fmt.Errorf("read the server clock: %w", err)
	}
	return now, nil
}

// UnitsComputed counts the units of this width whose rollups were ever computed.
func (s *Store) UnitsComputed(ctx context.Context, width int64) (uint64, error) {
	var done uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM "+s.cfg.Database+"."+schema.TableRollupDone+" WHERE width = ?", width).Scan(&done); err != nil {
		return 0, fmt.Errorf("count computed rollup units: %w", err)
	}
	return done, nil
}

// MarkStoredSamples marks the unit of this width of every stored sample and histogram
// dirty, for rollups that were never computed at this width.
func (s *Store) MarkStoredSamples(ctx context.Context, width int64) error {
	for _, table := range []string{schema.TableSamples, schema.TableHistograms} {
		// intDiv truncates towards zero; the if() rounds negative timestamps down as
		// rollup.BucketStart does.
		q := fmt.Sprintf(`INSERT INTO %[1]s.%[2]s (width, unit, target)
SELECT ?, intDiv(ts, ?) * ? - if(ts %% ? < 0, ?, 0) AS u, target FROM %[1]s.%[3]s GROUP BY u, target`,
			s.cfg.Database, schema.TableRollupDirty, table)
		w := width
		if err := s.conn.Exec(ctx, q, w, w, w, w, w); err != nil {
			return fmt.Errorf("mark the units of stored %s for width %d: %w", table, w, err)
		}
	}
	return nil
}

// PendingUnit is a unit start and the targets whose rollups over it need computing.
type PendingUnit struct {
	Start   int64
	Targets []uint64
}

// PendingUnits lists at most limit units of this width starting in [oldest, latest] whose
// newest mark is at or after their last computation's version, or that were never
// computed: oldest first, grouped by unit.
func (s *Store) PendingUnits(ctx context.Context, width, oldest, latest int64, limit int) ([]PendingUnit, error) {
	q := fmt.Sprintf(`SELECT d.unit, d.target FROM
(SELECT unit, target, max(marked) AS m FROM %[1]s.%[2]s WHERE width = ? AND unit >= ? AND unit <= ? GROUP BY unit, target) AS d
ANY LEFT JOIN
(SELECT unit, target, max(version) AS v FROM %[1]s.%[3]s WHERE width = ? AND unit >= ? AND unit <= ? GROUP BY unit, target) AS r
USING (unit, target)
WHERE m >= v
ORDER BY d.unit, d.target
LIMIT ?`, s.cfg.Database, schema.TableRollupDirty, schema.TableRollupDone)
	rows, err := s.conn.Query(ctx, q, width, oldest, latest, width, oldest, latest, limit)
	if err != nil {
		return nil, fmt.Errorf("find pending rollup units: %w", err)
	}
	defer rows.Close()
	var out []PendingUnit
	for rows.Next() {
		var (
			unit   int64
			target uint64
		)
		if err := rows.Scan(&unit, &target); err != nil {
			return nil, fmt.Errorf("scan pending rollup unit: %w", err)
		}
		if len(out) == 0 || out[len(out)-1].Start != unit {
			out = append(out, PendingUnit{Start: unit})
		}
		out[len(out)-1].Targets = append(out[len(out)-1].Targets, target)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending rollup units: %w", err)
	}
	return out, nil
}

// UnitSeries is one series' raw samples within some units, as stored: unsorted, duplicates
// included.
type UnitSeries struct {
	Target     uint64
	Timestamps []int64
	Values     []float64
}

// ReadUnits reads the raw samples of the targets within the units of this width starting
// at starts (ascending), by fingerprint, the units' samples together: units hold whole
// buckets of every tier, so rollups computed over them all are those of each unit.
//
// The samples table is sorted by (target, fingerprint, ts) within day partitions, so its
// index narrows a read to the targets' granules of the days touched but not to the units
// asked for: reading several units of a day at once reads those granules once instead of
// once per unit. The time condition goes in PREWHERE, so that of the granules holding no
// sample of the units only the ts column is read (18.16 moves no condition on a key column
// there itself): computing the last hour of 9 hours merged into one part read 96 bytes per
// sample instead of 288 (TestMaterializeReadAmplification).
func (s *Store) ReadUnits(ctx context.Context, width int64, starts []int64, targets []uint64) (map[uint64]*UnitSeries, error) {
	cond, args := unitCondition(width, starts)
	rows, err := s.conn.Query(ctx, "SELECT target, fingerprint, ts, value FROM "+s.cfg.Database+"."+schema.TableSamples+
		" PREWHERE "+cond+" WHERE target IN ?", append(args, inSet(targets))...)
	if err != nil {
		return nil, fmt.Errorf("query raw samples of %d targets over %d units: %w", len(targets), len(starts), err)
	}
	defer rows.Close()
	out := make(map[uint64]*UnitSeries)
	var (
		target, fp uint64
		ts         int64
		v          float64
		cur        *UnitSeries
		curFP      uint64
	)
	// One argument slice for every row: Scan's variadic arguments would otherwise be
	// allocated row by row.
	dest := []any{&target, &fp, &ts, &v}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("scan raw sample: %w", err)
		}
		if cur == nil || fp != curFP {
			if cur = out[fp]; cur == nil {
				cur = &UnitSeries{Target: target}
				out[fp] = cur
			}
			curFP = fp
		}
		cur.Timestamps = append(cur.Timestamps, ts)
		cur.Values = append(cur.Values, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read raw samples of %d targets over %d units: %w", len(targets), len(starts), err)
	}
	return out, nil
}

// unitCondition is the condition that ts lies within one of the units of this width
// starting at starts (ascending), and its arguments: one range per run of adjacent units.
func unitCondition(width int64, starts []int64) (string, []any) {
	var (
		conds []string
		args  []any
	)
	for _, r := range unitRanges(width, starts) {
		conds = append(conds, "(ts >= ? AND ts < ?)")
		args = append(args, r[0], r[1])
	}
	return "(" + strings.Join(conds, " OR ") + ")", args
}

// unitRanges returns the time ranges [from, to) that the units of this width starting at
// starts (ascending) cover, adjacent units joined.
func unitRanges(width int64, starts []int64) [][2]int64 {
	var out [][2]int64
	for _, st := range starts {
		if n := len(out); n > 0 && out[n-1][1] == st {
			out[n-1][1] = st + width
			continue
		}
		out = append(out, [2]int64{st, st + width})
	}
	return out
}

// RollupRow is one series' rollup of one bucket.
type RollupRow struct {
	Target, Fingerprint uint64
	rollup.BucketAggregate
}

// InsertRollups writes rollup rows, all with this version.
func (s *Store) InsertRollups(ctx context.Context, rows []RollupRow, version uint32) error {
	if len(rows) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Database+"."+schema.TableRollups+
		" (res, target, fingerprint, bucket, cnt, sum_hi, sum_lo, min_v, max_v, first_ts, first_v, last_ts, last_v, corr_hi, corr_lo, resets, version)")
	if err != nil {
		return fmt.Errorf("prepare %d rollup rows: %w", len(rows), err)
	}
	defer batch.Close()
	for _, r := range rows {
		a := r.Aggregate
		if err := batch.Append(r.Res, r.Target, r.Fingerprint, r.Start, a.Count, a.Sum, a.SumComp, a.Min, a.Max,
			a.FirstT, a.First, a.LastT, a.Last, a.Correction, a.CorrectionComp, a.Resets, version); err != nil {
			return fmt.Errorf("append rollup row: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rollup rows: %w", len(rows), err)
	}
	return nil
}

// InsertDone records the units of this width starting at starts computed for the targets,
// every start for every target, as of version.
func (s *Store) InsertDone(ctx context.Context, width int64, starts []int64, targets []uint64, version uint32) error {
	n := len(starts) * len(targets)
	done, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.cfg.Database+"."+schema.TableRollupDone+" (width, unit, target, version)")
	if err != nil {
		return fmt.Errorf("prepare %d done marks: %w", n, err)
	}
	defer done.Close()
	for _, st := range starts {
		for _, t := range targets {
			if err := done.Append(width, st, t, version); err != nil {
				return fmt.Errorf("append done mark: %w", err)
			}
		}
	}
	if err := done.Send(); err != nil {
		return fmt.Errorf("insert %d done marks: %w", n, err)
	}
	return nil
}
