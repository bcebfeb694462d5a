package rollup

import (
	"math"
	"slices"
	"sort"
)

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
// and the caller replaces those values with the ones the samples table keeps (store.ReadWinners).
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

// ApplyWinners replaces the values at the timestamps in winners (store.ReadWinners' values of
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
