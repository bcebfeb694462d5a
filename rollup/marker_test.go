package rollup

import "testing"

// TestMarkerSkipsOpenUnits: a unit that has not ended is marked once however many batches
// it receives, an ended one on every batch (its computation may begin at any moment), and
// an open unit is marked again once it has ended.
func TestMarkerSkipsOpenUnits(t *testing.T) {
	const hour = int64(3_600_000)
	m := NewMarker(hour)
	unit := 100 * hour
	now := unit + hour/2
	// mark is Mark without the INSERT: the units it would write, then remembered.
	mark := func(targets []uint64, ts []int64) int {
		units := m.Unmarked(targets, ts, now)
		m.Remember(units, now)
		return len(units)
	}
	open, ended := 0, 0
	for i := range int64(10) {
		open += mark([]uint64{1, 1, 2}, []int64{unit + i, unit + i + 1, unit + i})
		ended += mark([]uint64{1}, []int64{unit - hour + i})
	}
	if open != 2 || ended != 10 {
		t.Errorf("after 10 batches: %d marks of the open units (targets 1 and 2), %d of the ended one; want 2 and 10", open, ended)
	}
	now = unit + hour
	if n := mark([]uint64{1}, []int64{unit + hour - 1}); n != 1 {
		t.Errorf("a batch after the unit ended: %d marks, want 1", n)
	}
	if len(m.open) != 0 {
		t.Errorf("ended units still remembered: %v", m.open)
	}
	if n := len(NewMarker(0).Unmarked([]uint64{1}, []int64{1}, now)); n != 0 {
		t.Errorf("width 0 marked %d units", n)
	}
}

// BenchmarkMarkerUnits is the write path's cost of finding the units of a 100,000-sample
// batch: 5,000 series of 20 samples at 15 s, 50 series per target.
func BenchmarkMarkerUnits(b *testing.B) {
	const n = 100_000
	targets, ts := make([]uint64, n), make([]int64, n)
	for i := range n {
		series := i / 20
		targets[i], ts[i] = uint64(series/50), 1_000_000_000_000+int64(i%20)*15_000
	}
	m := NewMarker(3_600_000)
	b.ReportAllocs()
	for b.Loop() {
		m.Unmarked(targets, ts, 0)
	}
}
