package adapter

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pyramid-metrics/pyramid/schema"
)

// batcher implements group commit: concurrent write requests append their rows to one
// pending batch, which is inserted when it holds Config.BatchRows rows or Config.BatchWait
// after its first rows arrived. Every request waits for the insert of the batch holding its
// rows and gets that insert's result, so a 2xx always means "in ClickHouse".
type batcher struct {
	cfg    Config
	insert func(ctx context.Context, b *Batch) error
	m      *metrics

	mu       sync.Mutex
	cond     *sync.Cond // signals workers that ready has a batch or closed was set
	cur      *pendingBatch
	ready    []*pendingBatch
	inFlight int // rows accepted and not yet inserted or failed
	closed   bool
	// inserting counts batches the workers have taken and not finished.
	inserting int
	// arriving counts write requests between arrive and the append of their rows or
	// their failure (see shipEarlyLocked).
	arriving atomic.Int64
	// lastSamples is how many sample rows the last shipped batch held: the next pending
	// batch starts with room for as many, since under steady load batches are alike, and
	// a batch grown by appends would copy its columns over and over.
	lastSamples int

	workers sync.WaitGroup
	// stopCtx is cancelled only after the drain, or when Close's own context ends: it
	// bounds inserts, which must not follow any one request's context because a batch
	// carries the rows of many requests.
	stopCtx context.Context
	stop    context.CancelFunc
}

type pendingBatch struct {
	b     Batch
	timer *time.Timer
	done  chan struct{} // closed once err is set
	err   error
	// mem holds the memory budget of the batch's rows until their insert ends.
	mem lease
}

func newBatcher(cfg Config, m *metrics, insert func(ctx context.Context, b *Batch) error) *batcher {
	ctx, cancel := context.WithCancel(context.Background())
	bt := &batcher{cfg: cfg, insert: insert, m: m, stopCtx: ctx, stop: cancel}
	bt.cond = sync.NewCond(&bt.mu)
	for range cfg.InsertWorkers {
		bt.workers.Add(1)
		go bt.work()
	}
	return bt
}

// Day partitions of the samples table. ClickHouse writes a part per partition an insert
// touches, so an insert spanning many days is slow, and on ClickHouse 23+ one touching more
// than max_partitions_per_insert_block (100 by default) fails. A request whose rows span
// more than sharedMaxDays days is therefore inserted on its own, never in a batch shared
// with other senders' rows, and in inserts of at most insertMaxDays days each.
const (
	sharedMaxDays = 2
	insertMaxDays = 50
)

// write adds b's rows to the pending batch and waits for that batch's insert; arr, the
// request's arrival (nil in tests), ends when the rows are in. b is copied;
// the caller may reuse it after return. Once the rows are taken, the batch also takes what
// mem holds and returns it after the insert. When ctx ends first, write returns ctx's error
// and the rows are still inserted (a retry then writes them again, which the tables absorb).
func (bt *batcher) write(ctx context.Context, b *Batch, mem *lease, arr *arrival) error {
	defer arr.leave()
	n := b.rows()
	if n == 0 {
		return nil
	}
	if n > bt.cfg.MaxRowsInFlight {
		// Waiting cannot make room for a request bigger than the cap itself; a 503 would
		// have Prometheus retry it forever and hold back everything queued behind it.
		return fmt.Errorf("%w: %d rows in one request, more than the %d that may be in flight at once; lower the sender's max_samples_per_send", ErrTooLarge, n, bt.cfg.MaxRowsInFlight)
	}
	if b.daySpan() > sharedMaxDays {
		return bt.writeAlone(ctx, b, mem)
	}
	bt.mu.Lock()
	if err := bt.admitLocked(n); err != nil {
		bt.mu.Unlock()
		return err
	}
	p := bt.cur
	if p == nil {
		p = &pendingBatch{done: make(chan struct{})}
		p.b.growSamples(max(bt.lastSamples, b.Samples()))
		p.timer = time.AfterFunc(bt.cfg.BatchWait, func() { bt.flushIfPending(p) })
		bt.cur = p
	}
	p.b.appendBatch(b)
	p.mem.absorb(mem)
	arr.leave()
	if p.b.rows() >= bt.cfg.BatchRows || bt.shipEarlyLocked(p) {
		bt.shipLocked()
	}
	bt.mu.Unlock()

	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("wait for insert of %d rows: %w", n, ctx.Err())
	}
}

// arrival is a write request on its way to the batcher.
type arrival struct {
	bt   *batcher
	left bool
}

// arrive counts a write request that may bring rows; its arrival must leave once they are
// appended or the request fails without them.
func (bt *batcher) arrive() *arrival {
	bt.arriving.Add(1)
	return &arrival{bt: bt}
}

// leave ends the arrival; later calls, and calls on nil, do nothing. It is not safe for
// concurrent use: one request calls it.
func (a *arrival) leave() {
	if a != nil && !a.left {
		a.left = true
		a.bt.arriving.Add(-1)
	}
}

// shipEarlyLocked reports whether p should go before it is full or its wait is over: no
// insert is running or queued, no request is on its way, and p holds at least a tenth of
// a full batch. Then every sender is waiting for pyramid's answer, nobody will join p, and
// waiting out BatchWait would only idle both pyramid and ClickHouse; a batch of senders
// that fell out of step with the others would wait for it every time. The tenth keeps
// light load, which BatchWait gathers into fewer inserts, as it was. bt.mu must be held.
func (bt *batcher) shipEarlyLocked(p *pendingBatch) bool {
	return bt.inserting == 0 && len(bt.ready) == 0 && bt.arriving.Load() == 0 && p.b.rows() >= bt.cfg.BatchRows/10
}

// admitLocked takes n more rows in flight, or says why not. bt.mu must be held.
func (bt *batcher) admitLocked(n int) error {
	if bt.closed {
		return ErrShuttingDown
	}
	if bt.inFlight+n > bt.cfg.MaxRowsInFlight {
		return fmt.Errorf("%w: %d rows in flight, %d more would pass the cap of %d", ErrOverloaded, bt.inFlight, n, bt.cfg.MaxRowsInFlight)
	}
	bt.inFlight += n
	bt.m.rowsInFlight.Set(float64(bt.inFlight))
	return nil
}

// writeAlone inserts b in batches of its own, split by days (see sharedMaxDays), and waits
// for all of them; the first error is the request's. The first batch takes what mem holds.
func (bt *batcher) writeAlone(ctx context.Context, b *Batch, mem *lease) error {
	parts := b.splitDays(insertMaxDays)
	bt.mu.Lock()
	if err := bt.admitLocked(b.rows()); err != nil {
		bt.mu.Unlock()
		return err
	}
	pending := make([]*pendingBatch, len(parts))
	for i, part := range parts {
		pending[i] = &pendingBatch{b: *part, done: make(chan struct{})}
		bt.ready = append(bt.ready, pending[i])
	}
	pending[0].mem.absorb(mem)
	bt.cond.Broadcast()
	bt.mu.Unlock()

	var first error
	for _, p := range pending {
		select {
		case <-p.done:
			if first == nil && p.err != nil {
				first = p.err
			}
		case <-ctx.Done():
			return fmt.Errorf("wait for insert of %d rows: %w", b.rows(), ctx.Err())
		}
	}
	return first
}

// daySpan is how many days b's samples and histograms span, from the first to the last.
func (b *Batch) daySpan() int64 {
	lo, hi, ok := b.timeRange()
	if !ok {
		return 0
	}
	return dayOf(hi) - dayOf(lo) + 1
}

// timeRange is the first and last timestamp of b's samples and histograms; ok is false
// when b has neither.
func (b *Batch) timeRange() (lo, hi int64, ok bool) {
	lo, hi = math.MaxInt64, math.MinInt64
	for _, t := range b.Timestamps {
		lo, hi = min(lo, t), max(hi, t)
	}
	for i := range b.Histograms {
		lo, hi = min(lo, b.Histograms[i].T), max(hi, b.Histograms[i].T)
	}
	return lo, hi, lo <= hi
}

// splitDays splits b into batches whose samples each span at most maxDays days, in day
// order; the series rows go with the first.
func (b *Batch) splitDays(maxDays int64) []*Batch {
	if b.daySpan() <= maxDays {
		return []*Batch{b}
	}
	lo, _, _ := b.timeRange()
	first := dayOf(lo)
	var parts []*Batch
	part := func(t int64) *Batch {
		k := int((dayOf(t) - first) / maxDays)
		for len(parts) <= k {
			parts = append(parts, &Batch{})
		}
		return parts[k]
	}
	for i, t := range b.Timestamps {
		p := part(t)
		p.Targets = append(p.Targets, b.Targets[i])
		p.Fingerprints = append(p.Fingerprints, b.Fingerprints[i])
		p.Timestamps = append(p.Timestamps, t)
		p.Values = append(p.Values, b.Values[i])
	}
	for _, h := range b.Histograms {
		p := part(h.T)
		p.Histograms = append(p.Histograms, h)
	}
	parts = slices.DeleteFunc(parts, func(p *Batch) bool { return len(p.Timestamps)+len(p.Histograms) == 0 })
	parts[0].Series = b.Series
	return parts
}

// dayOf is the day partition of a timestamp, as the table's intDiv(ts, day) computes it.
func dayOf(ts int64) int64 { return ts / schema.DayMillis }

// flushIfPending ships p when its wait is over, unless it was shipped for being full.
func (bt *batcher) flushIfPending(p *pendingBatch) {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if bt.cur == p {
		bt.shipLocked()
	}
}

// shipLocked moves the pending batch to the ready queue. bt.mu must be held.
func (bt *batcher) shipLocked() {
	p := bt.cur
	bt.cur = nil
	bt.lastSamples = min(p.b.Samples(), 2*bt.cfg.BatchRows)
	p.timer.Stop()
	bt.ready = append(bt.ready, p)
	bt.cond.Signal()
}

func (bt *batcher) work() {
	defer bt.workers.Done()
	for {
		bt.mu.Lock()
		for len(bt.ready) == 0 && !bt.closed {
			bt.cond.Wait()
		}
		if len(bt.ready) == 0 { // closed and drained
			bt.mu.Unlock()
			return
		}
		p := bt.ready[0]
		bt.ready = bt.ready[1:]
		bt.inserting++
		bt.mu.Unlock()

		ctx, cancel := context.WithTimeout(bt.stopCtx, bt.cfg.InsertTimeout)
		start := time.Now()
		err := bt.insert(ctx, &p.b)
		cancel()
		bt.m.observeInsert(p.b.Samples(), time.Since(start), err)
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
		}
		p.err = err
		close(p.done)

		bt.mu.Lock()
		bt.inserting--
		bt.inFlight -= p.b.rows()
		bt.m.rowsInFlight.Set(float64(bt.inFlight))
		p.mem.release()
		// Rows that gathered during this insert go now if nobody else is coming.
		if bt.cur != nil && bt.shipEarlyLocked(bt.cur) {
			bt.shipLocked()
		}
		bt.mu.Unlock()
	}
}

// close stops taking rows, inserts everything pending and waits for the inserts. If ctx
// ends first, running inserts are cancelled and their requests get an error.
func (bt *batcher) close(ctx context.Context) error {
	bt.mu.Lock()
	if !bt.closed {
		bt.closed = true
		if bt.cur != nil {
			bt.shipLocked()
		}
		bt.cond.Broadcast()
	}
	bt.mu.Unlock()

	drained := make(chan struct{})
	go func() { bt.workers.Wait(); close(drained) }()
	select {
	case <-drained:
		bt.stop()
		return nil
	case <-ctx.Done():
		bt.stop()
		<-drained
		return fmt.Errorf("drain write batches: %w", ctx.Err())
	}
}
