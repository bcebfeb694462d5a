package materialize_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/rollup/materialize"
	"github.com/pyramid-metrics/pyramid/schema"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

const (
	minute = int64(60_000)
	hour   = 60 * minute
	// epoch is where the test data starts: 2020-01-01T00:00:00Z, long settled.
	epoch = int64(1_577_836_800_000)
	// staleNaN is Prometheus's stale marker.
	staleNaN = 0x7ff0000000000002
)

type sample struct {
	target, fp uint64
	ts         int64
	v          float64
}

type env struct {
	marker *rollup.Marker
	st     *store.Store
	conn   driver.Conn
	db     string
	tiers  []rollup.Tier
	m      *materialize.Materializer
	now    time.Time
}

func newEnv(t *testing.T, tiers string) *env {
	t.Helper()
	return newEnvOn(t, schematest.Conn(t), tiers)
}

// newEnvOn is newEnv on the engine behind conn.
func newEnvOn(t *testing.T, conn driver.Conn, tiers string) *env {
	t.Helper()
	db := schematest.Database(t, conn, 0).Database
	ts, err := rollup.ParseTiers(tiers)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{conn: conn, db: db, tiers: ts, now: time.UnixMilli(epoch + 1000*hour), marker: rollup.NewMarker(rollup.UnitWidth(ts))}
	e.st, err = store.New(store.Config{Database: db, Tiers: ts, TierRefresh: time.Minute}, conn, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e.m, err = materialize.New(materialize.Config{
		Tiers: ts, Interval: time.Second, Settle: time.Minute,
		MaxUnits: 1000, TargetsPerRead: 2, Now: func() time.Time { return e.now },
	}, e.st, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// write stores samples as the write path does: the rows, then the marks.
func (e *env) write(t *testing.T, samples []sample) {
	t.Helper()
	ctx := context.Background()
	batch, err := e.conn.PrepareBatch(ctx, "INSERT INTO "+e.db+"."+schema.TableSamples+" (target, fingerprint, ts, value)")
	if err != nil {
		t.Fatal(err)
	}
	targets := make([]uint64, len(samples))
	stamps := make([]int64, len(samples))
	for i, s := range samples {
		if err := batch.Append(s.target, s.fp, s.ts, s.v); err != nil {
			t.Fatal(err)
		}
		targets[i], stamps[i] = s.target, s.ts
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	units := e.marker.Unmarked(targets, stamps, e.now.UnixMilli())
	if err := e.st.InsertMarks(ctx, e.marker.Width(), units); err != nil {
		t.Fatal(err)
	}
	e.marker.Remember(units, e.now.UnixMilli())
}

// materialize runs cycles until one finds nothing to do and returns the units the first
// cycle computed. The server clock has whole seconds, so a unit marked in the second its
// computation began is computed once more (harmless, and what keeps a sample stored
// during a computation from being missed); waiting a second between cycles lets that end.
func (e *env) materialize(t *testing.T) int {
	t.Helper()
	first := -1
	for range 5 {
		n, err := e.m.Cycle(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if first < 0 {
			first = n
		}
		if n == 0 {
			return first
		}
		time.Sleep(1100 * time.Millisecond)
	}
	t.Fatal("the materializer still finds work after 5 cycles")
	return 0
}

type key struct {
	res, bucket int64
	fp          uint64
}

// stored reads the newest version of every rollup row.
func (e *env) stored(t *testing.T) map[key]rollup.Aggregate {
	t.Helper()
	rows, err := e.conn.Query(context.Background(), "SELECT res, fingerprint, bucket, cnt, sum_hi, sum_lo, min_v, max_v, first_ts, first_v, last_ts, last_v, corr_hi, corr_lo, resets, version FROM "+
		e.db+"."+schema.TableRollups)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[key]rollup.Aggregate{}
	versions := map[key]uint32{}
	for rows.Next() {
		var (
			k key
			a rollup.Aggregate
			v uint32
		)
		if err := rows.Scan(&k.res, &k.fp, &k.bucket, &a.Count, &a.Sum, &a.SumComp, &a.Min, &a.Max, &a.FirstT, &a.First,
			&a.LastT, &a.Last, &a.Correction, &a.CorrectionComp, &a.Resets, &v); err != nil {
			t.Fatal(err)
		}
		if old, ok := versions[k]; !ok || v > old {
			out[k], versions[k] = a, v
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// expected aggregates samples in Go: deduplicated per series (the first of equal
// timestamps wins, as retries repeat values), then downsampled for every rollup tier.
func (e *env) expected(samples []sample) map[key]rollup.Aggregate {
	bySeries := map[uint64]map[int64]float64{}
	for _, s := range samples {
		if bySeries[s.fp] == nil {
			bySeries[s.fp] = map[int64]float64{}
		}
		if _, dup := bySeries[s.fp][s.ts]; !dup {
			bySeries[s.fp][s.ts] = s.v
		}
	}
	out := map[key]rollup.Aggregate{}
	for fp, m := range bySeries {
		ts := slices.Sorted(func(yield func(int64) bool) {
			for t := range m {
				if !yield(t) {
					return
				}
			}
		})
		vs := make([]float64, len(ts))
		for i, t := range ts {
			vs[i] = m[t]
		}
		for _, tier := range e.tiers[1:] {
			for _, b := range rollup.Downsample(ts, vs, tier.ResolutionMs()) {
				out[key{res: b.Res, bucket: b.Start, fp: fp}] = b.Aggregate
			}
		}
	}
	return out
}

// bits is an aggregate with every float as its bits, so that == compares exactly.
func bits(a rollup.Aggregate) [15]uint64 {
	f := math.Float64bits
	return [15]uint64{a.Count, f(a.Sum), f(a.SumComp), f(a.Min), f(a.Max), uint64(a.FirstT), f(a.First), uint64(a.LastT), f(a.Last),
		f(a.Correction), f(a.CorrectionComp), a.Resets}
}

// diff describes how got differs from want, or returns "".
func diff(got, want map[key]rollup.Aggregate) string {
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			return fmt.Sprintf("missing rollup %+v, want %+v", k, w)
		}
		if bits(g) != bits(w) {
			return fmt.Sprintf("rollup %+v is\n %+v, want\n %+v", k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			return fmt.Sprintf("unexpected rollup %+v: %+v", k, g)
		}
	}
	return ""
}

// counterSamples is a counter at 15 s that resets once and ends with a stale marker.
func counterSamples(target, fp uint64, from, n int64) []sample {
	var out []sample
	v := 0.0
	for i := range n {
		v += float64(i%7) + 0.5
		if i == n/2 {
			v = 1 // A reset in the middle.
		}
		out = append(out, sample{target, fp, from + i*15_000, v})
	}
	return append(out, sample{target, fp, from + n*15_000, math.Float64frombits(staleNaN)})
}

// TestMaterializeRetryLeavesRollupsUnchanged stores a batch, computes its rollups, stores
// the same batch again (Prometheus retrying it) and computes again: every column of every
// rollup must be unchanged, and equal to the aggregation of the raw samples.
func TestMaterializeRetryLeavesRollupsUnchanged(t *testing.T) {
	e := newEnv(t, "raw:0,5m:0,1h:0")
	var batch []sample
	batch = append(batch, counterSamples(1, 11, epoch, 400)...)
	batch = append(batch, counterSamples(1, 12, epoch+7*minute, 200)...)
	batch = append(batch, counterSamples(2, 21, epoch+hour, 240)...)
	e.write(t, batch)
	if n := e.materialize(t); n == 0 {
		t.Fatal("nothing computed")
	}
	first := e.stored(t)
	if d := diff(first, e.expected(batch)); d != "" {
		t.Fatalf("after the first write: %s", d)
	}

	e.write(t, batch)
	if n := e.materialize(t); n == 0 {
		t.Fatal("the retried batch marked nothing to recompute")
	}
	if d := diff(e.stored(t), first); d != "" {
		t.Errorf("the retried batch changed the rollups: %s", d)
	}
}

// TestMaterializeLateData computes rollups, then stores samples that arrive late and out
// of order into computed buckets, and a backfill of an old hour: the rollups must become
// the aggregation of everything, and change where the late samples fell.
func TestMaterializeLateData(t *testing.T) {
	e := newEnv(t, "raw:0,5m:0,1h:0")
	base := epoch + 500*hour
	var all []sample
	onTime := counterSamples(3, 31, base, 240)
	// Every third sample of the first half hour is missing at first.
	var late []sample
	for i, s := range onTime {
		if i < 120 && i%3 == 0 {
			late = append(late, s)
			continue
		}
		all = append(all, s)
	}
	e.write(t, all)
	e.materialize(t)
	before := e.stored(t)
	if d := diff(before, e.expected(all)); d != "" {
		t.Fatalf("before the late samples: %s", d)
	}

	slices.Reverse(late) // Out of order, too.
	backfill := counterSamples(3, 32, base-100*hour, 100)
	e.write(t, append(late, backfill...))
	if n := e.materialize(t); n != 2 {
		t.Errorf("computed %d units after the late write, want 2 (the late hour and the backfilled one)", n)
	}
	all = append(append(all, late...), backfill...)
	after := e.stored(t)
	if d := diff(after, e.expected(all)); d != "" {
		t.Errorf("after the late samples: %s", d)
	}
	k := key{res: hour, bucket: base, fp: 31}
	if before[k].Count == after[k].Count {
		t.Errorf("the late samples did not change the hour's count (%d)", after[k].Count)
	}
}

// TestMaterializeMatchesRaw writes random series in random batches, with retried batches,
// gaps, counter resets, stale markers and late samples, computing rollups between writes:
// in the end every rollup equals the aggregation of the deduplicated raw samples.
func TestMaterializeMatchesRaw(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			e := newEnv(t, "raw:0,1m:0,5m:0,1h:0")
			e.now = time.UnixMilli(epoch + 5000*hour)
			rng := rand.New(rand.NewPCG(seed, 42))
			var all []sample
			for s := range 6 {
				target, fp := uint64(1+s%3), uint64(100+s)
				ts := epoch + 2000*hour + rng.Int64N(hour)
				v := rng.Float64() * 100
				for range 200 + rng.IntN(300) {
					ts += 1000 + rng.Int64N(60_000)
					if rng.IntN(50) == 0 {
						ts += rng.Int64N(2 * hour) // A gap.
					}
					switch rng.IntN(20) {
					case 0:
						v = rng.Float64() // A reset.
					case 1:
						all = append(all, sample{target, fp, ts, math.Float64frombits(staleNaN)})
						continue
					default:
						v += rng.Float64() * 10
					}
					all = append(all, sample{target, fp, ts, v})
				}
			}
			rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
			for lo := 0; lo < len(all); {
				hi := min(len(all), lo+1+rng.IntN(800))
				e.write(t, all[lo:hi])
				if rng.IntN(3) == 0 {
					e.write(t, all[lo:hi]) // A retry.
				}
				if rng.IntN(2) == 0 {
					e.materialize(t)
				}
				lo = hi
			}
			e.materialize(t)
			want := e.expected(all)
			if d := diff(e.stored(t), want); d != "" {
				t.Errorf("%d samples, %d rollups: %s", len(all), len(want), d)
			}
		})
	}
}

// TestMaterializeReplicas runs two materializers on one database at once, as two pyramid
// replicas do, while batches keep arriving, some retried and some late for hours already
// computed: once the writes stop and both find nothing left to do, every rollup equals the
// aggregation of the deduplicated raw samples.
func TestMaterializeReplicas(t *testing.T) {
	e := newEnv(t, "raw:0,5m:0,1h:0")
	second, err := materialize.New(materialize.Config{
		Tiers: e.tiers, Interval: time.Second, Settle: time.Minute,
		MaxUnits: 1000, TargetsPerRead: 2, Now: func() time.Time { return e.now },
	}, e.st, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var all []sample
	for s := range 6 {
		all = append(all, counterSamples(uint64(1+s%3), uint64(200+s), epoch+100*hour+int64(s)*17*minute, 960)...)
	}
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		wg       sync.WaitGroup
		writesAt atomic.Int64 // when the last write ended (unix ms), 0 while writing
		idle     [2]atomic.Bool
		errs     = make(chan error, 2)
	)
	for i, m := range []*materialize.Materializer{e.m, second} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				began := time.Now().UnixMilli()
				n, err := m.Cycle(ctx)
				if err != nil {
					if ctx.Err() == nil {
						errs <- fmt.Errorf("materializer %d: %w", i, err)
					}
					return
				}
				// Idle only counts for a cycle that began a second after the last write:
				// the server clock has whole seconds (see materialize).
				end := writesAt.Load()
				idle[i].Store(n == 0 && end > 0 && began > end+1000)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	for lo := 0; lo < len(all); {
		hi := min(len(all), lo+1+rng.IntN(600))
		e.write(t, all[lo:hi])
		if rng.IntN(3) == 0 {
			e.write(t, all[lo:hi]) // A retry.
		}
		lo = hi
		// Writes spread over a few seconds, so that computations begin between them and
		// within the same seconds as they do.
		time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
	}
	writesAt.Store(time.Now().UnixMilli())
	deadline := time.Now().Add(time.Minute)
	for !idle[0].Load() || !idle[1].Load() {
		select {
		case err := <-errs:
			t.Fatal(err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the materializers still find work a minute after the last write")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	want := e.expected(all)
	if d := diff(e.stored(t), want); d != "" {
		t.Errorf("%d samples, %d rollups: %s", len(all), len(want), d)
	}
}

// TestMaterializeWaits checks the two units the materializer leaves alone: one that has
// not settled yet, and one whose raw samples may already be expiring.
func TestMaterializeWaits(t *testing.T) {
	e := newEnv(t, "raw:0,5m:0,1h:0")
	unit := epoch + 3000*hour
	e.write(t, counterSamples(5, 51, unit, 10))

	e.now = time.UnixMilli(unit + hour + 30_000) // Ended 30 s ago; Settle is 1 min.
	if n := e.materialize(t); n != 0 {
		t.Errorf("computed %d units before they settled", n)
	}
	e.now = time.UnixMilli(unit + hour + 61_000)
	if n := e.materialize(t); n != 1 {
		t.Errorf("computed %d units once settled, want 1", n)
	}

	// With 2 days of raw, a unit 3 days old is left alone.
	tiers, err := rollup.ParseTiers("raw:2d,1h:0")
	if err != nil {
		t.Fatal(err)
	}
	old, err := materialize.New(materialize.Config{
		Tiers: tiers, Interval: time.Second, Settle: 0, MaxUnits: 10, TargetsPerRead: 1,
		Now: func() time.Time { return time.UnixMilli(unit + 72*hour) },
	}, e.st, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e.write(t, counterSamples(5, 52, unit, 10))
	if n, err := old.Cycle(context.Background()); err != nil || n != 0 {
		t.Errorf("computed %d units (%v) older than raw retention", n, err)
	}
}

// TestDropExpired keeps each tier for its own retention: the 5m tier's old block goes, the
// 1h tier (kept forever) keeps it, and marks of units older than raw retention go.
func TestDropExpired(t *testing.T) {
	e := newEnv(t, "raw:30d,5m:60d,1h:0")
	day := 24 * hour
	e.write(t, counterSamples(7, 71, epoch, 40))
	e.now = time.UnixMilli(epoch + 2*day)
	e.materialize(t)
	e.write(t, counterSamples(7, 71, epoch+100*day, 40))
	e.now = time.UnixMilli(epoch + 101*day)
	e.materialize(t)

	count := func(q string) uint64 {
		t.Helper()
		var n uint64
		if err := e.conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before5m := count("SELECT count() FROM " + e.db + ".rollups WHERE res = 300000 AND bucket < " + fmt.Sprint(epoch+day))
	if before5m == 0 {
		t.Fatal("no 5m rollups of the old day to expire")
	}
	dropped, err := e.st.DropExpiredRollups(context.Background(), e.now)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dropped %v", dropped)
	old := fmt.Sprint(epoch + day)
	for _, c := range []struct {
		what string
		q    string
		want func(uint64) bool
	}{
		{"old 5m rollups", "SELECT count() FROM " + e.db + ".rollups WHERE res = 300000 AND bucket < " + old, func(n uint64) bool { return n == 0 }},
		{"new 5m rollups", "SELECT count() FROM " + e.db + ".rollups WHERE res = 300000 AND bucket > " + old, func(n uint64) bool { return n > 0 }},
		{"old 1h rollups (kept forever)", "SELECT count() FROM " + e.db + ".rollups WHERE res = 3600000 AND bucket < " + old, func(n uint64) bool { return n > 0 }},
		{"old marks", "SELECT count() FROM " + e.db + ".rollup_dirty WHERE unit < " + old, func(n uint64) bool { return n == 0 }},
		{"old done marks", "SELECT count() FROM " + e.db + ".rollup_done WHERE unit < " + old, func(n uint64) bool { return n == 0 }},
		{"new marks", "SELECT count() FROM " + e.db + ".rollup_dirty WHERE unit > " + old, func(n uint64) bool { return n > 0 }},
	} {
		if n := count(c.q); !c.want(n) {
			t.Errorf("%s: %d rows", c.what, n)
		}
	}
}

// insertUnmarked stores samples without marks, as a pyramid without rollups did.
func (e *env) insertUnmarked(t *testing.T, samples []sample) {
	t.Helper()
	batch, err := e.conn.PrepareBatch(context.Background(), "INSERT INTO "+e.db+"."+schema.TableSamples+" (target, fingerprint, ts, value)")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range samples {
		if err := batch.Append(s.target, s.fp, s.ts, s.v); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
}

// TestMaterializeSeedsUnmarkedSamples: samples stored before the rollup tables existed
// carry no marks; a materializer that finds no mark of its unit width marks them all.
func TestMaterializeSeedsUnmarkedSamples(t *testing.T) {
	e := newEnv(t, "raw:0,5m:0,1h:0")
	samples := append(counterSamples(8, 81, epoch+10*hour, 300), counterSamples(8, 82, -2*hour, 100)...)
	e.insertUnmarked(t, samples)
	// 300 samples from a full hour span two hours plus the marker's; the series before
	// 1970 spans [-2h, -1h35m].
	if n := e.materialize(t); n != 3 {
		t.Errorf("computed %d units of unmarked samples, want 3", n)
	}
	if d := diff(e.stored(t), e.expected(samples)); d != "" {
		t.Error(d)
	}
}

// TestMaterializeReplicaLag: with cluster allowances a unit is computed again on every
// cycle for as long as its newest mark may postdate what the replica a computation read had
// stored (a minute here); on one server the unit settles once a cycle begins a second after
// its marks.
func TestMaterializeReplicaLag(t *testing.T) {
	for _, tc := range []struct {
		name         string
		replicaDelay time.Duration
		last         int // units the third cycle computes
	}{{"one server", 0, 0}, {"cluster", time.Minute, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "raw:0,5m:0,1h:0")
			unit := epoch + 3000*hour
			e.write(t, counterSamples(5, 51, unit, 10))
			e.now = time.UnixMilli(unit + 2*hour)
			m, err := materialize.New(materialize.Config{
				Tiers: e.tiers, Interval: time.Second, Settle: time.Minute,
				MaxUnits: 1000, TargetsPerRead: 2, Now: func() time.Time { return e.now },
				ReplicaDelay: tc.replicaDelay,
			}, e.st, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			// Three cycles a second apart: the marks' second is over by the third.
			var counts []int
			for i := range 3 {
				if i > 0 {
					time.Sleep(1100 * time.Millisecond)
				}
				n, err := m.Cycle(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				counts = append(counts, n)
			}
			if counts[0] != 1 || counts[2] != tc.last {
				t.Errorf("cycles computed %v units, want 1 first and %d last", counts, tc.last)
			}
			want := e.expected(counterSamples(5, 51, unit, 10))
			if d := diff(e.stored(t), want); d != "" {
				t.Errorf("rollups differ from raw:\n%s", d)
			}
		})
	}
}
