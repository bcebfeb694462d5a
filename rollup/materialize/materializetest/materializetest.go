// Package materializetest computes every pending rollup for tests that read rollups.
package materializetest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/rollup/materialize"
)

// Drain runs a materializer over st until a cycle finds no more work.
func Drain(t testing.TB, st *store.Store, tiers []rollup.Tier) {
	t.Helper()
	m, err := materialize.New(materialize.Config{
		Tiers: tiers, Interval: time.Second, MaxUnits: 1000, TargetsPerRead: 64, Now: time.Now,
	}, st, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// The materializer versions by the second, and a unit marked in the second of its
	// computation is computed again in the next cycle.
	for i := 0; ; i++ {
		n, err := m.Cycle(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if i == 5 {
			t.Fatal("the materializer still finds work after 5 cycles")
		}
		time.Sleep(1100 * time.Millisecond)
	}
}
