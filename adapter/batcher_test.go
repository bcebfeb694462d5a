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
			if err := bt.write(context.Background(), b, &lease{}, nil); err != nil {
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

// rowsBatch is a batch of n samples of fingerprint fp, all on one day.
func rowsBatch(fp uint64, n int) *Batch {
	days := make([]int64, n)
	for i := range days {
		days[i] = 20000
	}
	return daysBatch(fp, days...)
}

// TestBatcherShipsEarlyWhenNobodyComes: with BatchWait an hour, a request holding a tenth
// of a batch is inserted at once when no insert runs and no other request is on its way,
// and the requests that arrive during an insert share the next one, which goes as soon as
// that insert ends.
func TestBatcherShipsEarlyWhenNobodyComes(t *testing.T) {
	release := make(chan struct{})
	var (
		mu       sync.Mutex
		inserted [][]uint64 // the fingerprints of each insert, in order
	)
	cfg := Config{BatchRows: 1000, BatchWait: time.Hour, InsertWorkers: 2, MaxRowsInFlight: 1 << 20, InsertTimeout: time.Minute}
	bt := newBatcher(cfg, newMetrics(prometheus.NewRegistry(), nil, func() int { return 0 }, func() int { return 0 }),
		func(_ context.Context, b *Batch) error {
			mu.Lock()
			first := len(inserted) == 0
			inserted = append(inserted, slices.Compact(slices.Sorted(slices.Values(b.Fingerprints))))
			mu.Unlock()
			if first {
				<-release
			}
			return nil
		})
	defer func() { _ = bt.close(context.Background()) }()
	// A test that hangs fails by this deadline: without the early insert, each write
	// would wait BatchWait, an hour.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	write := func(fp uint64, rows int) chan error {
		arr := bt.arrive()
		done := make(chan error, 1)
		go func() { done <- bt.write(ctx, rowsBatch(fp, rows), &lease{}, arr) }()
		return done
	}

	first := write(1, 100) // a tenth of a batch, alone: inserted at once, and held there
	for {
		mu.Lock()
		n := len(inserted)
		mu.Unlock()
		if n == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the first request was not inserted before the deadline")
		}
		time.Sleep(time.Millisecond)
	}
	// During that insert three more requests come; they wait for it, in one batch.
	later := []chan error{write(2, 100), write(3, 100), write(4, 100)}
	for {
		bt.mu.Lock()
		rows := 0
		if bt.cur != nil {
			rows = bt.cur.b.Samples()
		}
		bt.mu.Unlock()
		if rows == 300 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d rows pending at the deadline, want 300", rows)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	for _, done := range append(later, first) {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := [][]uint64{{1}, {2, 3, 4}}
	if fmt.Sprint(inserted) != fmt.Sprint(want) {
		t.Errorf("inserts %v, want %v", inserted, want)
	}
}
