package materialize_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyramid-metrics/pyramid/rollup/materialize"
	"github.com/pyramid-metrics/pyramid/schema"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// TestMaterializeReadAmplification stores 8 hours of 6 targets of 50 series at 15 s in one
// insert, so that they sit in one part of their day partition as merged history does, runs
// one cycle with the production batch sizes and logs what its reads of the samples and
// histograms tables read (system.query_log, through deploy/clickhouse/users.xml's
// query_logged user). The samples table's key leads with target and fingerprint, so a read
// of any hour of a target reads nearly all of the target's granules in that day: reading
// hour by hour read the day 8 times over. The test requires at most 1.5 rows read per
// sample stored. It then stores a ninth hour, merges the day and computes again, as at the
// end of every hour, and logs that read too, which no batching can narrow.
func TestMaterializeReadAmplification(t *testing.T) {
	conn := schematest.QueryLoggedConn(t)
	e := newEnvOn(t, conn, "raw:0,5m:0,1h:0")
	const targets, seriesPerTarget = 6, 50
	start := epoch + 40*24*hour + 8*hour
	hours := func(from, to int64) []sample {
		var out []sample
		for tg := range uint64(targets) {
			for s := range uint64(seriesPerTarget) {
				for i := from * 240; i < to*240; i++ {
					out = append(out, sample{100 + tg, 1000*tg + s, start + i*15_000, float64(i) + float64(s)})
				}
			}
		}
		return out
	}
	m, err := materialize.New(materialize.Config{
		Tiers: e.tiers, Interval: time.Second, Settle: time.Minute, MaxUnits: 10_000, TargetsPerRead: 64,
		Now: func() time.Time { return e.now },
	}, e.st, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The first cycle seeds marks of the samples stored (none yet), which would mark the
	// units of the first write again in the second they are computed.
	if _, err := m.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	// logged sums the finished reads (type 2 is QueryFinish) of a table of the test's
	// database so far.
	logged := func(table string) (queries, readRows, readBytes uint64) {
		t.Helper()
		if err := conn.Exec(ctx, "SYSTEM FLUSH LOGS"); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, "SELECT count(), sum(read_rows), sum(read_bytes) FROM system.query_log"+
			" WHERE type = 2 AND query LIKE 'SELECT%' AND query LIKE ? AND query NOT LIKE '%query_log%'", "%FROM "+e.db+"."+table+" %").Scan(&queries, &readRows, &readBytes); err != nil {
			t.Fatal(err)
		}
		return queries, readRows, readBytes
	}

	var all []sample
	for _, phase := range []struct {
		name     string
		from, to int64 // hours after start
	}{{"8 hours", 0, 8}, {"a ninth hour", 8, 9}} {
		var before [2][3]uint64
		for i, table := range []string{schema.TableSamples, schema.TableHistograms} {
			before[i][0], before[i][1], before[i][2] = logged(table)
		}
		e.now = time.UnixMilli(start + (phase.to+1)*hour)
		written := hours(phase.from, phase.to)
		e.write(t, written)
		all = append(all, written...)
		if err := conn.Exec(ctx, "OPTIMIZE TABLE "+e.db+"."+schema.TableSamples+" FINAL"); err != nil {
			t.Fatal(err)
		}
		// Marks made in the second a cycle begins leave their units pending; a second
		// later the cycle computes each unit once.
		time.Sleep(1100 * time.Millisecond)
		n, err := m.Cycle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := targets * int(phase.to-phase.from); n != want {
			t.Fatalf("%s: computed %d units, want %d", phase.name, n, want)
		}
		if d := diff(e.stored(t), e.expected(all)); d != "" {
			t.Fatalf("%s: %s", phase.name, d)
		}
		for i, table := range []string{schema.TableSamples, schema.TableHistograms} {
			queries, readRows, readBytes := logged(table)
			queries, readRows, readBytes = queries-before[i][0], readRows-before[i][1], readBytes-before[i][2]
			t.Logf("%s: %s: %d queries read %d rows (%.2f per sample computed), %d bytes (%.2f per sample)", phase.name, table,
				queries, readRows, float64(readRows)/float64(len(written)), readBytes, float64(readBytes)/float64(len(written)))
			if phase.from == 0 && table == schema.TableSamples && readRows > uint64(len(written))*3/2 {
				t.Errorf("the cycle read %d rows of samples for %d samples stored", readRows, len(written))
			}
		}
	}
}
