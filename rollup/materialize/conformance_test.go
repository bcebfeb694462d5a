package materialize_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema"
	"github.com/pyramid-metrics/pyramid/schema/chdbtest"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// The conformance tests run the materializer, the rollup reads, the tier status and the
// rollup retention with the same data on the 18.16 test server (legacy dialect) and on
// ClickHouse 26.5 in-process (chdbtest, modern dialect), and require the same results, bit
// for bit.

// enginePair is one environment per engine, on the same tiers.
func enginePair(t *testing.T, tiers string) (legacy, modern *env) {
	t.Helper()
	return newEnvOn(t, schematest.Conn(t), tiers), newEnvOn(t, chdbtest.Conn(t), tiers)
}

// optimize merges every partition of the rollup and samples tables, so that row counts no
// longer depend on when each engine happened to merge.
func (e *env) optimize(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, table := range []string{schema.TableSamples, schema.TableRollups} {
		for _, id := range schematest.Rows(t, e.conn, "SELECT DISTINCT partition_id FROM system.parts WHERE database = ? AND table = ? AND active", e.db, table) {
			var pid string
			if _, err := fmt.Sscanf(id, "%q", &pid); err != nil {
				t.Fatal(err)
			}
			if err := e.conn.Exec(ctx, "OPTIMIZE TABLE "+e.db+"."+table+" PARTITION ID ? FINAL", pid); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// storedRows renders env.stored, sorted, for comparison.
func storedRows(t *testing.T, e *env) []string {
	t.Helper()
	var out []string
	for k, a := range e.stored(t) {
		out = append(out, fmt.Sprintf("%+v %x", k, bits(a)))
	}
	slices.Sort(out)
	return out
}

// bucketRows renders ReadBuckets' answer, by fingerprint and time.
func bucketRows(t *testing.T, e *env, res int64, targets, fps []uint64, from, to int64) []string {
	t.Helper()
	// The rows read count versions that merges have not collapsed yet, which depends on
	// when each engine merged; the buckets returned do not.
	got, _, err := e.st.ReadBuckets(context.Background(), res, targets, fps, from, to)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, fp := range slices.Sorted(func(yield func(uint64) bool) {
		for fp := range got {
			if !yield(fp) {
				return
			}
		}
	}) {
		for _, b := range got[fp] {
			out = append(out, fmt.Sprintf("%d %d %d %x", fp, b.Res, b.Start, bits(b.Aggregate)))
		}
	}
	return out
}

// materializeBoth is env.materialize on both engines at once, which halves the waits for
// the server clock's next second. It returns the units each engine's first cycle computed.
func materializeBoth(t *testing.T, envs ...*env) []int {
	t.Helper()
	first := make([]int, len(envs))
	for cycle := range 5 {
		busy := false
		for i, e := range envs {
			n, err := e.m.Cycle(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if cycle == 0 {
				first[i] = n
			}
			busy = busy || n > 0
		}
		if !busy {
			return first
		}
		time.Sleep(1100 * time.Millisecond)
	}
	t.Fatal("the materializer still finds work after 5 cycles")
	return nil
}

func sameRows(t *testing.T, what string, legacy, modern []string) {
	t.Helper()
	if d := schematest.DiffRows(legacy, modern); d != "" {
		t.Errorf("%s, 18.16 against 26.5: %s", what, d)
	}
}

// TestConformanceMaterialize computes rollups on both engines from samples that need
// every part of the materializer: unmarked samples (seeding, some before 1970), marked
// ones, a retried batch, a conflicting value (read back with FINAL), late samples and
// special floats. The rollups, the work marks and ReadBuckets' answers must be the same.
func TestConformanceMaterialize(t *testing.T) {
	legacy, modern := enginePair(t, "raw:0,5m:0,1h:0")
	unmarked := append(counterSamples(8, 81, epoch+10*hour, 300), counterSamples(8, 82, -2*hour, 100)...)
	var first []sample
	first = append(first, counterSamples(1, 11, epoch, 400)...)
	first = append(first, counterSamples(1, 12, epoch+7*minute, 200)...)
	first = append(first, counterSamples(2, 21, epoch+hour, 240)...)
	for i, v := range []float64{math.NaN(), math.Inf(1), -0.0, math.Inf(-1), 1e308, -5e-324, math.Float64frombits(staleNaN), 3} {
		first = append(first, sample{2, 22, epoch + int64(i)*60_000, v})
	}
	conflict := []sample{{1, 11, epoch + 15_000, 42}, {2, 22, epoch + 60_000, 7}}
	var late []sample
	for i := range int64(30) {
		late = append(late, sample{1, 12, epoch + 7*minute + i*15_000 + 5_000, float64(i)})
	}
	both := []*env{legacy, modern}
	for _, e := range both {
		e.insertUnmarked(t, unmarked)
	}
	if n := materializeBoth(t, both...); n[0] == 0 || n[0] != n[1] {
		t.Fatalf("units of the unmarked samples computed: %v, want as many on both", n)
	}
	for _, e := range both {
		e.write(t, first)
	}
	materializeBoth(t, both...)
	for _, e := range both {
		e.write(t, first)
		e.write(t, conflict)
		e.write(t, late)
	}
	if n := materializeBoth(t, both...); n[0] == 0 || n[0] != n[1] {
		t.Fatalf("units recomputed after late samples: %v, want as many on both", n)
	}
	l, m := storedRows(t, legacy), storedRows(t, modern)
	if len(l) < 50 {
		t.Fatalf("%d rollup rows, want at least 50", len(l))
	}
	sameRows(t, "rollups", l, m)
	for _, q := range []string{
		"SELECT DISTINCT width, unit, target FROM DB.rollup_dirty ORDER BY width, unit, target",
		"SELECT DISTINCT width, unit, target FROM DB.rollup_done ORDER BY width, unit, target",
		"SELECT target, fingerprint, ts, value FROM DB.samples FINAL ORDER BY target, fingerprint, ts",
	} {
		sameRows(t, q, schematest.Rows(t, legacy.conn, dbQuery(q, legacy.db)), schematest.Rows(t, modern.conn, dbQuery(q, modern.db)))
	}

	fps := []uint64{11, 12, 21, 22, 81, 82, 99}
	for _, w := range []struct {
		res      int64
		targets  []uint64
		from, to int64
		min      int // buckets at least
	}{
		{5 * minute, []uint64{1, 2, 8}, math.MinInt64, math.MaxInt64, 60},
		{hour, []uint64{1, 2, 8}, math.MinInt64, math.MaxInt64, 8},
		{5 * minute, []uint64{1}, epoch + 10*minute, epoch + 40*minute, 10},
		{hour, []uint64{8}, -3 * hour, 0, 1},
		{5 * minute, []uint64{3}, math.MinInt64, math.MaxInt64, 0},
	} {
		l := bucketRows(t, legacy, w.res, w.targets, fps, w.from, w.to)
		if len(l) < w.min {
			t.Errorf("ReadBuckets(%d, %v, [%d, %d]) returned %d buckets, want at least %d", w.res, w.targets, w.from, w.to, len(l), w.min)
		}
		sameRows(t, fmt.Sprintf("ReadBuckets(%d, %v, [%d, %d])", w.res, w.targets, w.from, w.to), l, bucketRows(t, modern, w.res, w.targets, fps, w.from, w.to))
	}
}

func dbQuery(q, db string) string { return strings.ReplaceAll(q, "DB.", db+".") }

// TestConformanceStatusAndRetention fills the tiers over two 30-day blocks on both engines,
// then compares the tier status (rows, bounds, lag) and what DropExpired drops and keeps.
func TestConformanceStatusAndRetention(t *testing.T) {
	legacy, modern := enginePair(t, "raw:30d,5m:60d,1h:0")
	day := 24 * hour
	var status [2][]rollup.TierStatus
	var dropped [2][]string
	both := []*env{legacy, modern}
	for _, e := range both {
		e.write(t, counterSamples(7, 71, epoch, 40))
		e.write(t, counterSamples(7, 72, epoch+3*hour, 480))
		e.now = time.UnixMilli(epoch + 2*day)
	}
	materializeBoth(t, both...)
	for _, e := range both {
		e.write(t, counterSamples(7, 71, epoch+100*day, 40))
		e.now = time.UnixMilli(epoch + 101*day)
	}
	materializeBoth(t, both...)
	for i, e := range both {
		e.optimize(t)

		st, err := e.st.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for j := range st {
			if st[j].BytesOnDisk == 0 {
				t.Errorf("tier %s holds no bytes", st[j].Name)
			}
			st[j].BytesOnDisk = 0 // Compressed sizes differ between versions and codecs.
		}
		status[i] = st

		d, err := e.st.DropExpiredRollups(context.Background(), e.now)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(d)
		dropped[i] = d
	}
	render := func(st []rollup.TierStatus) []string {
		var out []string
		for _, s := range st {
			if s.Oldest == nil || s.Newest == nil {
				t.Fatalf("tier %s is empty", s.Name)
			}
			out = append(out, fmt.Sprintf("%s res %d retention %s rows %d oldest %d newest %d lag %d", s.Name, s.ResolutionMs, s.Retention, s.Rows, *s.Oldest, *s.Newest, s.LagMs))
		}
		return out
	}
	sameRows(t, "Status", render(status[0]), render(status[1]))
	if len(dropped[0]) == 0 {
		t.Error("DropExpired dropped nothing on 18.16")
	}
	sameRows(t, "DropExpired", dropped[0], dropped[1])
	for _, q := range []string{
		"SELECT res, fingerprint, bucket, cnt FROM DB.rollups FINAL ORDER BY res, fingerprint, bucket",
		"SELECT DISTINCT width, unit, target FROM DB.rollup_dirty ORDER BY width, unit, target",
		"SELECT DISTINCT width, unit, target FROM DB.rollup_done ORDER BY width, unit, target",
	} {
		sameRows(t, q, schematest.Rows(t, legacy.conn, dbQuery(q, legacy.db)), schematest.Rows(t, modern.conn, dbQuery(q, modern.db)))
	}
}
