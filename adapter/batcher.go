package adapter

import (
	"context"
	"fmt"
	"sync"
	"time"
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

// write adds b's rows to the pending batch and waits for that batch's insert. b is copied;
// the caller may reuse it after return. Once the rows are taken, the batch also takes what
// mem holds and returns it after the insert. When ctx ends first, write returns ctx's error
// and the rows are still inserted (a retry then writes them again, which the tables absorb).
func (bt *batcher) write(ctx context.Context, b *Batch, mem *lease) error {
	n := b.rows()
	if n == 0 {
		return nil
	}
	if n > bt.cfg.MaxRowsInFlight {
		// Never accepted, however long the sender retries: 413, as for a body too large.
		return fmt.Errorf("%w: %d rows in one request, more than the %d rows that may be in flight", ErrTooLarge, n, bt.cfg.MaxRowsInFlight)
	}
	bt.mu.Lock()
	if bt.closed {
		bt.mu.Unlock()
		return ErrShuttingDown
	}
	if bt.inFlight+n > bt.cfg.MaxRowsInFlight {
		inFlight := bt.inFlight
		bt.mu.Unlock()
		return fmt.Errorf("%w: %d rows in flight, %d more would pass the cap of %d", ErrOverloaded, inFlight, n, bt.cfg.MaxRowsInFlight)
	}
	bt.inFlight += n
	bt.m.rowsInFlight.Set(float64(bt.inFlight))
	p := bt.cur
	if p == nil {
		p = &pendingBatch{done: make(chan struct{})}
		p.timer = time.AfterFunc(bt.cfg.BatchWait, func() { bt.flushIfPending(p) })
		bt.cur = p
	}
	p.b.appendBatch(b)
	p.mem.absorb(mem)
	if p.b.rows() >= bt.cfg.BatchRows {
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
		bt.inFlight -= p.b.rows()
		bt.m.rowsInFlight.Set(float64(bt.inFlight))
		p.mem.release()
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
