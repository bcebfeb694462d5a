package materialize_test

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyramid-metrics/pyramid/rollup/materialize"
	"github.com/pyramid-metrics/pyramid/schema"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// TestMaterializeBatchedMatchesUnitByUnit stores the same samples and histograms in two
// databases, six hours across a day boundary of five targets: every target at first, then
// late samples into a few hours of a few targets, one target only in two hours apart,
// conflicting rewrites in two hours of one series and a float at a histogram's timestamp.
// One materializer reads up to 64 units at once, so that hours of several targets share
// reads; the other reads one unit at a time, as before batches. Both must store the same
// rollup rows, floats and histograms, read back with FINAL (the newest version of each), and
// the floats must equal the aggregation of the deduplicated raw samples.
func TestMaterializeBatchedMatchesUnitByUnit(t *testing.T) {
	conn := schematest.Conn(t)
	start := epoch + 40*24*hour + 21*hour
	now := time.UnixMilli(start + 8*hour)
	var envs [2]*env
	for i, perRead := range []int{64, 1} {
		e := newEnvOn(t, conn, "raw:0,5m:0,1h:0")
		e.now = now
		m, err := materialize.New(materialize.Config{
			Tiers: e.tiers, Interval: time.Second, Settle: time.Minute, MaxUnits: 1000, TargetsPerRead: perRead,
			Now: func() time.Time { return now },
		}, e.st, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		e.m = m
		envs[i] = e
	}

	var first []sample
	for tg := range uint64(4) {
		for s := range uint64(2) {
			first = append(first, counterSamples(1+tg, 10*(1+tg)+s, start+int64(s)*7*minute, 6*240-60)...)
		}
	}
	// Target 5 only in the second and fifth hours.
	first = append(first, counterSamples(5, 51, start+hour, 100)...)
	first = append(first, counterSamples(5, 51, start+4*hour+10*minute, 100)...)
	// A float at one of the histograms' timestamps, which keeps the float.
	first = append(first, sample{2, 2001, start + 2*hour, 42})
	hists := latencyHistograms(rand.New(rand.NewPCG(3, 4)), 0.1, start+30*minute, 4*240, 500, 900)

	// Late samples: a gap filled in target 3's third hour, new series of target 4 in its
	// second and fourth hours and of target 1 in its sixth.
	var late []sample
	late = append(late, counterSamples(3, 39, start+2*hour+minute, 50)...)
	late = append(late, counterSamples(4, 49, start+hour+5*minute, 40)...)
	late = append(late, counterSamples(4, 49, start+3*hour+5*minute, 40)...)
	late = append(late, counterSamples(1, 19, start+5*hour, 200)...)
	// Rewrites of two timestamps of series 10 with other values, in its first and third
	// hours: the table keeps the last write.
	rewrites := []sample{{1, 10, start + 45_000, -1}, {1, 10, start + 2*hour + 30_000, -2}}

	for _, e := range envs {
		e.write(t, first)
		for lo := 0; lo < len(hists); lo += 300 {
			e.writeHistograms(t, 2, 2001, hists[lo:min(lo+300, len(hists))])
		}
	}
	var units [2][2]int
	for i, e := range envs {
		units[i][0] = e.materialize(t)
	}
	for _, e := range envs {
		e.write(t, late)
		e.write(t, rewrites)
	}
	for i, e := range envs {
		units[i][1] = e.materialize(t)
	}
	if units[0] != units[1] {
		t.Errorf("computed %v units batched, %v unit by unit", units[0], units[1])
	}
	// Target 1's first, third and sixth hours, target 3's third, target 4's second and
	// fourth.
	if units[1][1] != 6 {
		t.Errorf("the late samples left %d units pending, want 6", units[1][1])
	}

	// The rewritten values win, as the table keeps them: expected keeps the first of
	// equal timestamps.
	all := slices.Concat(rewrites, first, late)
	if d := diff(envs[0].stored(t), envs[0].expected(all)); d != "" {
		t.Errorf("batched rollups differ from raw: %s", d)
	}
	for _, q := range []string{
		"SELECT res, target, fingerprint, bucket, cnt, sum_hi, sum_lo, min_v, max_v, first_ts, first_v, last_ts, last_v, corr_hi, corr_lo, resets FROM %s." +
			schema.TableRollups + " FINAL ORDER BY res, target, fingerprint, bucket",
		"SELECT res, target, fingerprint, bucket, cnt, first_ts, last_ts, resets, incompatible, first, last, correction, sum FROM %s." +
			schema.TableHistogramRollups + " FINAL ORDER BY res, target, fingerprint, bucket",
	} {
		batched := schematest.Rows(t, conn, fmt.Sprintf(q, envs[0].db))
		single := schematest.Rows(t, conn, fmt.Sprintf(q, envs[1].db))
		if len(batched) == 0 {
			t.Errorf("%s: no rows", q)
		}
		if d := schematest.DiffRows(batched, single); d != "" {
			t.Errorf("%s: batched against unit by unit: %s", q, d)
		}
	}
}
