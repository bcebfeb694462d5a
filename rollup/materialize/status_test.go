package materialize_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
)

// TestStatus reports what each tier holds, before and after the rollups are computed,
// through Status, the JSON handler and the /metrics collector.
func TestStatus(t *testing.T) {
	e := newEnv(t, "raw:60d,5m:365d,1h:0")
	base := epoch + 700*hour
	e.write(t, counterSamples(9, 91, base, 480)) // Two hours at 15 s, then a stale marker.

	st, err := e.st.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	raw := st[0]
	if raw.Name != "raw" || raw.Rows != 481 || raw.Oldest == nil || *raw.Oldest != base || *raw.Newest != base+480*15_000 {
		t.Fatalf("raw before rollups: %+v", raw)
	}
	if st[1].Rows != 0 || st[1].Newest != nil || st[1].LagMs != -1 {
		t.Errorf("5m tier before rollups: %+v, want empty with lag -1", st[1])
	}

	e.materialize(t)
	// Rows count unmerged versions too; merge them so that the counts are exact.
	if err := e.conn.Exec(context.Background(), "OPTIMIZE TABLE "+e.db+".rollups FINAL"); err != nil {
		t.Fatal(err)
	}
	st, err = e.st.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Two hours of samples make 24 five-minute buckets and 2 hourly ones; the stale
	// marker at base+2h is in a bucket of its own but is no value, so it makes none.
	for i, want := range []struct {
		rows           uint64
		oldest, newest int64
		retention      string
	}{{481, base, base + 2*hour, "60d"}, {24, base, base + 2*hour - 5*minute, "1y"}, {2, base, base + hour, "forever"}} {
		s := st[i]
		if s.Rows != want.rows || *s.Oldest != want.oldest || *s.Newest != want.newest || s.Retention != want.retention || s.BytesOnDisk == 0 {
			t.Errorf("tier %s: %+v (oldest %d, newest %d); want rows %d, oldest %d, newest %d, retention %s",
				s.Name, s, *s.Oldest, *s.Newest, want.rows, want.oldest, want.newest, want.retention)
		}
	}
	// Raw's newest sample is the stale marker at base+2h; both tiers end at base+2h-1.
	if st[1].LagMs != 1 || st[2].LagMs != 1 {
		t.Errorf("lags %d and %d ms, want 1 and 1", st[1].LagMs, st[2].LagMs)
	}

	rec := httptest.NewRecorder()
	adapter.StatusHandler(e.st, slog.New(slog.NewTextHandler(io.Discard, nil))).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	var body struct {
		Tiers []rollup.TierStatus `json:"tiers"`
	}
	if err := json.NewDecoder(rec.Body).Decode(&body); err != nil || len(body.Tiers) != 3 || body.Tiers[2].Rows != 2 {
		t.Errorf("status JSON: %v, %+v", err, body)
	}

	// A sample in another partition: the bounds come from the oldest and the newest one.
	later := base + 40*24*hour
	e.write(t, []sample{{9, 91, later, 1}})
	st, err = e.st.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if *st[0].Oldest != base || *st[0].Newest != later {
		t.Errorf("raw over two partitions: oldest %d, newest %d; want %d and %d", *st[0].Oldest, *st[0].Newest, base, later)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(store.NewStatusCollector(e.st, slog.New(slog.NewTextHandler(io.Discard, nil))))
	// The collector reads the status in the background; the first figures come with a
	// scrape soon.
	waitTierFigures(t, reg, "the tier metrics", func(map[string]float64, float64) error {
		if n, err := testutil.GatherAndCount(reg, "pyramid_tier_rows", "pyramid_tier_lag_seconds", "pyramid_tier_status_age_seconds"); err != nil || n != 6 {
			return fmt.Errorf("%d series (%v), want 3 row counts, 2 lags and the age", n, err)
		}
		return nil
	})
}
