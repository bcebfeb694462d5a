package adapter

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/schema"
)

const day = schema.DayMillis

// daysBatch is a batch with one sample at noon of each of the given days, fingerprint fp.
func daysBatch(fp uint64, days ...int64) *Batch {
	b := &Batch{Series: []store.SeriesRow{{Fingerprint: fp}}}
	for _, d := range days {
		b.Targets = append(b.Targets, 1)
		b.Fingerprints = append(b.Fingerprints, fp)
		b.Timestamps = append(b.Timestamps, d*day+day/2)
		b.Values = append(b.Values, float64(d))
	}
	return b
}

func TestSplitDays(t *testing.T) {
	for _, tc := range []struct {
		name     string
		days     []int64
		maxDays  int64
		wantSpan int64
		want     [][]int64 // the days of each part
	}{
		{"one day", []int64{7, 7}, 2, 1, [][]int64{{7, 7}}},
		{"within the limit", []int64{8, 7}, 2, 2, [][]int64{{8, 7}}},
		{"three days in two parts", []int64{9, 7, 8}, 2, 3, [][]int64{{7, 8}, {9}}},
		{"a gap leaves no empty part", []int64{100, 1, 2}, 2, 100, [][]int64{{1, 2}, {100}}},
		{"parts in day order", []int64{1, 60, 30, 120, 2}, 50, 120, [][]int64{{1, 30, 2}, {60}, {120}}},
	} {
		b := daysBatch(42, tc.days...)
		if got := b.daySpan(); got != tc.wantSpan {
			t.Errorf("%s: span %d days, want %d", tc.name, got, tc.wantSpan)
		}
		parts := b.splitDays(tc.maxDays)
		var got [][]int64
		rows := 0
		for i, p := range parts {
			var ds []int64
			for _, ts := range p.Timestamps {
				ds = append(ds, ts/day)
			}
			got = append(got, ds)
			if (i == 0) != (len(p.Series) == 1) {
				t.Errorf("%s: part %d has %d series rows; want them all in the first part", tc.name, i, len(p.Series))
			}
			if len(p.Targets) != len(p.Timestamps) || len(p.Fingerprints) != len(p.Timestamps) || len(p.Values) != len(p.Timestamps) {
				t.Errorf("%s: part %d has columns of different lengths", tc.name, i)
			}
			rows += p.rows()
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: parts %v, want %v", tc.name, got, tc.want)
		}
		if rows != b.rows() {
			t.Errorf("%s: parts hold %d rows, want %d", tc.name, rows, b.rows())
		}
	}
}

// TestBatcherIsolatesRequestsSpanningDays writes requests spanning many days among
// ordinary ones, all at once, and records every batch the batcher hands to its insert: a
// request spanning more than sharedMaxDays days never shares a batch with another
// request's rows, no insert spans more than insertMaxDays days, and every row is inserted
// once.
func TestBatcherIsolatesRequestsSpanningDays(t *testing.T) {
	var (
		mu       sync.Mutex
		inserted []*Batch
	)
	cfg := Config{BatchRows: 1 << 20, BatchWait: 50 * time.Millisecond, InsertWorkers: 2, MaxRowsInFlight: 1 << 20, InsertTimeout: time.Minute}
	bt := newBatcher(cfg, newMetrics(prometheus.NewRegistry(), nil, func() int { return 0 }, func() int { return 0 }),
		func(_ context.Context, b *Batch) error {
			mu.Lock()
			defer mu.Unlock()
			c := &Batch{}
			c.appendBatch(b)
			inserted = append(inserted, c)
			return nil
		})
	requests := map[uint64]*Batch{}
	for fp := uint64(1); fp <= 8; fp++ {
		requests[fp] = daysBatch(fp, 20000, 20000, 20001) // ordinary: today and yesterday
	}
	wide := []int64{20001, 19880, 19940, 19999}
	requests[100] = daysBatch(100, wide...)                    // 122 days: three inserts of its own
	requests[101] = daysBatch(101, 19990, 19995, 20000, 20001) // 12 days: one insert of its own
	var wg sync.WaitGroup
	for _, b := range requests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := bt.write(context.Background(), b, &lease{}); err != nil {
				t.Errorf("write: %v", err)
			}
		}()
	}
	wg.Wait()
	if err := bt.close(context.Background()); err != nil {
		t.Fatal(err)
	}

	got := map[uint64]int{}
	for _, b := range inserted {
		fps := slices.Compact(slices.Sorted(slices.Values(b.Fingerprints)))
		for _, fp := range fps {
			if fp >= 100 && len(fps) > 1 {
				t.Errorf("request %d spanning many days shares an insert with %v", fp, fps)
			}
		}
		if span := b.daySpan(); span > insertMaxDays {
			t.Errorf("an insert spans %d days, more than %d", span, insertMaxDays)
		}
		for _, fp := range b.Fingerprints {
			got[fp]++
		}
	}
	for fp, b := range requests {
		if got[fp] != len(b.Timestamps) {
			t.Errorf("request %d: %d samples inserted, want %d", fp, got[fp], len(b.Timestamps))
		}
	}
}
