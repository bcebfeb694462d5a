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
		ts, values = sortRuns(ts, values)
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

// maxMergedRuns is how many ascending runs sortRuns merges; more fall back to a sort.
const maxMergedRuns = 16

// sortRuns orders samples by timestamp, stably: of equal timestamps, the one met first
// stays first. ClickHouse returns a series' rows as a few ascending runs (one per data
// part and reading thread), which a merge orders in one pass where a general sort takes
// several; many runs fall back to sort.Stable in place. The merge returns new slices.
func sortRuns(ts []int64, values []float64) ([]int64, []float64) {
	starts := []int{0}
	for i := 1; i < len(ts); i++ {
		if ts[i] < ts[i-1] {
			if len(starts) == maxMergedRuns {
				sort.Stable(samplesByTime{ts, values})
				return ts, values
			}
			starts = append(starts, i)
		}
	}
	// heads[r] is the next sample of run r, ends[r] the end of run r.
	heads := slices.Clone(starts)
	ends := append(starts[1:], len(ts))
	outTs, outValues := make([]int64, 0, len(ts)), make([]float64, 0, len(ts))
	for len(outTs) < len(ts) {
		best := -1
		for r, h := range heads {
			// Strictly less: of equal timestamps the earlier run wins, which keeps the
			// merge stable.
			if h < ends[r] && (best < 0 || ts[h] < ts[heads[best]]) {
				best = r
			}
		}
		outTs = append(outTs, ts[heads[best]])
		outValues = append(outValues, values[heads[best]])
		heads[best]++
	}
	return outTs, outValues
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
