package adapter

import (
	"fmt"
	"runtime"
	runtimemetrics "runtime/metrics"
	"slices"
	"sync"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// The memory a request's rows take, as the budget counts it.
const (
	// sampleRowBytes is one sample row of a Batch: four 8-byte columns.
	sampleRowBytes = 32
	// inFlightCopies is how many copies of a row can be alive between its acceptance and
	// the end of its insert: the request's own Batch, the pending batch (twice, because
	// append may double its arrays), and the ClickHouse driver's column and the block it
	// encodes the columns into.
	inFlightCopies = 5
	// bodyFirstRead is the buffer a body is first read into. It grows by doubling as
	// bytes arrive, so a client that trickles its body holds little of the budget.
	bodyFirstRead = 16 << 10
)

// memoryBudget bounds the bytes that requests hold: bodies as they arrive, their
// decompressed and parsed forms, and the rows accepted but not yet inserted. Every step
// charges the budget before it allocates, and a charge that does not fit fails at once
// (503) rather than waiting: requests that hold part of the budget and wait for more
// could wait for each other. Grafana Mimir's distributor refuses requests past its
// in-flight bytes limit the same way.
//
// Bytes a request returns stay counted, as garbage, until a collection has freed them:
// otherwise requests that fail fast could allocate the budget many times over before the
// collector catches up. When garbage alone stands in the way of a charge, the charge
// runs a collection first.
type memoryBudget struct {
	limit int64

	mu   sync.Mutex
	used int64
	// recent is what requests returned after the two latest counts of completed
	// collections, older first: a collection frees it only if it began after the return.
	recent [2]returned

	collections prometheus.Counter
}

// returned is the bytes returned while at collections had completed.
type returned struct {
	at    uint64
	bytes int64
}

func newMemoryBudget(limit int64, reg prometheus.Registerer) *memoryBudget {
	m := &memoryBudget{limit: limit, collections: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pyramid_request_memory_collections_total",
		Help: "Garbage collections run because memory that requests returned was not yet freed and the budget was needed.",
	})}
	reg.MustRegister(m.collections,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pyramid_request_memory_bytes",
			Help: "Bytes of the request memory budget held by request bodies, their decoding and rows waiting for insert.",
		}, func() float64 { return float64(m.inUse()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pyramid_request_memory_limit_bytes",
			Help: "The request memory budget; requests past it get 503.",
		}, func() float64 { return float64(limit) }),
	)
	return m
}

func (m *memoryBudget) inUse() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.used
}

// chargeLocked takes n bytes for a holder that already has held. m.mu must be held; it
// is released while a collection runs.
func (m *memoryBudget) chargeLocked(held, n int64) error {
	if held+n > m.limit {
		return fmt.Errorf("%w: the request needs %d bytes of memory, more than the whole request memory budget of %d", ErrTooLarge, held+n, m.limit)
	}
	if m.used+n > m.limit {
		return fmt.Errorf("%w: %d of %d bytes in use, %d more needed", ErrMemoryBudget, m.used, m.limit, n)
	}
	if m.used+m.garbageLocked()+n > m.limit {
		// runtime.GC waits for a full collection, which frees all that was returned
		// before the call.
		before := m.recent
		m.mu.Unlock()
		runtime.GC()
		m.mu.Lock()
		m.collections.Inc()
		for i := range m.recent {
			for _, b := range before {
				if m.recent[i].at == b.at {
					m.recent[i].bytes -= b.bytes
				}
			}
		}
		if garbage := m.garbageLocked(); m.used+garbage+n > m.limit {
			return fmt.Errorf("%w: %d of %d bytes in use and %d not yet freed, %d more needed", ErrMemoryBudget, m.used, m.limit, garbage, n)
		}
	}
	m.used += n
	return nil
}

// garbageLocked is what requests returned that no collection has freed yet. m.mu must
// be held.
func (m *memoryBudget) garbageLocked() int64 {
	now := gcCycles()
	var n int64
	for _, r := range m.recent {
		if r.at+2 > now {
			n += r.bytes
		}
	}
	return n
}

// returnLocked gives n bytes back, counted as garbage until a collection has freed them.
// m.mu must be held.
func (m *memoryBudget) returnLocked(n int64) {
	m.used -= n
	if now := gcCycles(); now != m.recent[1].at {
		m.recent[0], m.recent[1] = m.recent[1], returned{at: now}
	}
	m.recent[1].bytes += n
}

// gcCycles is how many garbage collections have completed.
func gcCycles() uint64 {
	s := []runtimemetrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	runtimemetrics.Read(s)
	return s[0].Value.Uint64()
}

// lease is one request's share of a memoryBudget. The zero lease of a nil budget charges
// nothing, for callers without a budget.
type lease struct {
	m    *memoryBudget
	held int64
}

// grow charges n more bytes. A request that alone would pass the whole budget can never
// be taken and gets ErrTooLarge (413); otherwise a full budget is ErrMemoryBudget (503).
func (l *lease) grow(n int64) error {
	if l.m == nil || n <= 0 {
		return nil
	}
	m := l.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.chargeLocked(l.held, n); err != nil {
		return err
	}
	l.held += n
	return nil
}

// resize charges or returns bytes so that the lease holds n.
func (l *lease) resize(n int64) error {
	if n >= l.held {
		return l.grow(n - l.held)
	}
	if l.m == nil {
		return nil
	}
	l.m.mu.Lock()
	l.m.returnLocked(l.held - n)
	l.m.mu.Unlock()
	l.held = n
	return nil
}

// add charges n bytes, or returns -n bytes when n is negative: the charge function that
// parsing calls.
func (l *lease) add(n int64) error {
	if n < 0 {
		return l.resize(max(l.held+n, 0))
	}
	return l.grow(n)
}

// release returns everything the lease holds.
func (l *lease) release() { _ = l.resize(0) }

// absorb takes over what o holds, leaving o empty: a batch takes its requests' rows.
func (l *lease) absorb(o *lease) {
	if l.m == nil {
		l.m = o.m
	}
	l.held += o.held
	o.held = 0
}

// appendCharged appends v to s. When s is full, it first charges the array that append
// would allocate, so that a parse never holds more than its lease.
func appendCharged[T any](s []T, v T, charge func(int64) error) ([]T, error) {
	if len(s) == cap(s) && charge != nil {
		more := max(cap(s), 16)
		if err := charge(int64(more) * int64(unsafe.Sizeof(v))); err != nil {
			return s, err
		}
		s = slices.Grow(s, more)
	}
	return append(s, v), nil
}

// Sizes of what a parse and a batch hold, per element.
var (
	seriesRowBytes = int64(unsafe.Sizeof(store.SeriesRow{}))
	labelRefBytes  = 2 * int64(unsafe.Sizeof(""))
	metadataBytes  = int64(unsafe.Sizeof(prompb.MetricMetadata{}))
)

// batchBound is the most that validating r can add to a Batch: a sample row per sample
// and, per series, a row with a copy of its labels. It also covers the scratch buffer
// that hashes the largest series. In remote write 2.0 a label's bytes are a symbol that
// any number of series may share, so the copies can be far larger than the request.
func (r *wireRequest) batchBound() int64 {
	n := int64(len(r.samples))*sampleRowBytes + histogramsBytes(r.hists)
	var largest int64
	for i := range r.series {
		s := &r.series[i]
		if s.known {
			// Its labels are not parsed yet; their fields' bytes bound their size.
			size := int64(s.rawEnd - s.rawStart)
			n += seriesRowBytes + int64(s.rawLabels)*labelRefBytes + size
			largest = max(largest, size)
			continue
		}
		ls := r.seriesLabels(s)
		var size int64
		for _, l := range ls {
			size += int64(l.nameEnd-l.nameStart) + int64(l.valueEnd-l.valueStart) + 2
		}
		n += seriesRowBytes + int64(len(ls))*labelRefBytes + size
		largest = max(largest, size)
	}
	return n + largest
}

// bytes is what b's rows take once in memory.
func (b *Batch) bytes() int64 {
	n := int64(len(b.Timestamps)) * sampleRowBytes
	for i := range b.Histograms {
		n += histogramRowBytes + histogramBytes(b.Histograms[i].HistogramSample)
	}
	for i := range b.Series {
		s := &b.Series[i]
		n += seriesRowBytes + int64(len(s.Names))*labelRefBytes
		for j := range s.Names {
			n += int64(len(s.Names[j]) + len(s.Values[j]))
		}
	}
	return n
}

// histogramRowBytes is what a store.HistogramRow takes besides its histogram.
const histogramRowBytes = int64(unsafe.Sizeof(store.HistogramRow{}))

// histogramBytes is what one decoded histogram holds: the struct and its slices.
func histogramBytes(h store.HistogramSample) int64 {
	if h.H != nil {
		return int64(unsafe.Sizeof(*h.H)) + 8*int64(len(h.H.PositiveSpans)+len(h.H.NegativeSpans)+
			len(h.H.PositiveBuckets)+len(h.H.NegativeBuckets)+len(h.H.CustomValues))
	}
	return int64(unsafe.Sizeof(*h.FH)) + 8*int64(len(h.FH.PositiveSpans)+len(h.FH.NegativeSpans)+
		len(h.FH.PositiveBuckets)+len(h.FH.NegativeBuckets)+len(h.FH.CustomValues))
}

// histogramsBytes is what the histograms of a request take in a batch.
func histogramsBytes(hs []store.HistogramSample) int64 {
	var n int64
	for _, h := range hs {
		n += histogramRowBytes + histogramBytes(h)
	}
	return n
}

// metadataSize is what md holds in memory.
func metadataSize(md []prompb.MetricMetadata) int64 {
	n := int64(len(md)) * metadataBytes
	for i := range md {
		n += int64(len(md[i].MetricFamilyName) + len(md[i].Help) + len(md[i].Unit))
	}
	return n
}

// generatedBytesPerByte bounds what the generated protobuf code allocates per byte of the
// messages it decodes here (remote-read requests, and the exemplars and histograms that
// remote write checks and drops): an element of a repeated message takes two bytes on the
// wire at least, and in memory a struct in a slice that append may double, or a struct
// behind a pointer in such a slice; a packed varint takes one byte and eight in memory.
var generatedBytesPerByte = max(
	int64(unsafe.Sizeof(prompb.Label{})),
	int64(unsafe.Sizeof(prompb.BucketSpan{})),
	(int64(unsafe.Sizeof(prompb.Query{}))+2*int64(unsafe.Sizeof(uintptr(0))))/2,
	(int64(unsafe.Sizeof(prompb.LabelMatcher{}))+2*int64(unsafe.Sizeof(uintptr(0))))/2,
	16,
)
