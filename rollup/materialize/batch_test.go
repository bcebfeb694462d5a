package materialize

import (
	"fmt"
	"testing"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/schema"
)

// TestBatches groups pending hourly units into computations by hand-computed cases.
func TestBatches(t *testing.T) {
	const h = int64(3_600_000)
	day := int64(40 * schema.DayMillis)
	u := func(start int64, targets ...uint64) store.PendingUnit {
		return store.PendingUnit{Start: start, Targets: targets}
	}
	b := func(starts []int64, targets ...uint64) batch { return batch{starts: starts, targets: targets} }
	for _, tc := range []struct {
		name    string
		pending []store.PendingUnit
		perRead int
		want    []batch
	}{
		{"nothing pending", nil, 64, nil},
		{"one unit, targets split evenly", []store.PendingUnit{u(day, 1, 2, 3, 4, 5)}, 4,
			[]batch{b([]int64{day}, 1, 2, 3), b([]int64{day}, 4, 5)}},
		{"one unit, two targets a read", []store.PendingUnit{u(day, 1, 2, 3, 4, 5)}, 2,
			[]batch{b([]int64{day}, 1, 2), b([]int64{day}, 3, 4), b([]int64{day}, 5)}},
		{"hours of the same targets in one read", []store.PendingUnit{u(day, 1, 2, 3, 4), u(day+h, 1, 2, 3, 4), u(day+2*h, 1, 2, 3, 4)}, 64,
			[]batch{b([]int64{day, day + h, day + 2*h}, 1, 2, 3, 4)}},
		{"hours of the same targets, fewer targets a read", []store.PendingUnit{u(day, 1, 2, 3, 4), u(day+h, 1, 2, 3, 4), u(day+2*h, 1, 2, 3, 4)}, 6,
			[]batch{b([]int64{day, day + h, day + 2*h}, 1, 2), b([]int64{day, day + h, day + 2*h}, 3, 4)}},
		{"more hours than a read holds", []store.PendingUnit{u(day, 1), u(day+h, 1), u(day+2*h, 1)}, 2,
			[]batch{b([]int64{day, day + h}, 1), b([]int64{day + 2*h}, 1)}},
		{"targets pending over other hours", []store.PendingUnit{u(day, 1, 2), u(day+h, 1, 2, 3), u(day+2*h, 2, 3)}, 64,
			[]batch{b([]int64{day, day + h}, 1), b([]int64{day, day + h, day + 2*h}, 2), b([]int64{day + h, day + 2*h}, 3)}},
		{"a gap", []store.PendingUnit{u(day, 1), u(day+5*h, 1)}, 64,
			[]batch{b([]int64{day, day + 5*h}, 1)}},
		{"two days", []store.PendingUnit{u(day-2*h, 1, 2), u(day-h, 1, 2), u(day, 1, 2), u(day+h, 1)}, 64,
			[]batch{b([]int64{day - 2*h, day - h}, 1, 2), b([]int64{day, day + h}, 1), b([]int64{day}, 2)}},
		{"before 1970", []store.PendingUnit{u(-2*h, 1), u(-h, 1), u(0, 1)}, 64,
			[]batch{b([]int64{-2 * h, -h}, 1), b([]int64{0}, 1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := batches(tc.pending, tc.perRead)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("batches = %v, want %v", got, tc.want)
			}
			units := 0
			for _, u := range tc.pending {
				units += len(u.Targets)
			}
			for _, g := range got {
				units -= len(g.starts) * len(g.targets)
				if len(g.starts)*len(g.targets) > tc.perRead {
					t.Errorf("batch %v holds more than %d units", g, tc.perRead)
				}
			}
			if units != 0 {
				t.Errorf("the batches hold %d units fewer than pending", units)
			}
		})
	}
}
