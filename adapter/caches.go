package adapter

import (
	"sync"

	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// hourMillis is the resolution of the series catalogue's first_seen and last_seen: a
// series row is written again only when its samples reach an hour not yet recorded.
const hourMillis = 3_600_000

// HourOf is the catalogue hour (hours since 1970, rounded down) holding timestamp ms. The
// load generator uses it to write the series rows pyramid would write.
func HourOf(ms int64) int64 {
	h := ms / hourMillis
	if ms%hourMillis < 0 {
		h--
	}
	return h
}

// seriesCache remembers, per fingerprint, the hours this process has already recorded in
// the series catalogue, so that most batches write no series rows at all. It holds at
// most max entries; past that it forgets arbitrary ones, which costs only a repeated (and
// harmless, because the catalogue merges) series row.
type seriesCache struct {
	mu  sync.RWMutex
	m   map[uint64]hourSpan
	max int
}

type hourSpan struct{ lo, hi int64 }

func newSeriesCache(max int) *seriesCache {
	return &seriesCache{m: make(map[uint64]hourSpan), max: max}
}

// covers reports whether the catalogue already records fp over [minTs, maxTs] to the hour.
func (c *seriesCache) covers(fp uint64, minTs, maxTs int64) bool {
	c.mu.RLock()
	s, ok := c.m[fp]
	c.mu.RUnlock()
	return ok && s.lo <= HourOf(minTs) && HourOf(maxTs) <= s.hi
}

// uncovered returns the rows whose span is not yet recorded. Call it just before an insert:
// another batch may have recorded a row since validation.
func (c *seriesCache) uncovered(rows []store.SeriesRow) []store.SeriesRow {
	out := rows[:0:0]
	for _, r := range rows {
		if !c.covers(r.Fingerprint, r.FirstSeen, r.LastSeen) {
			out = append(out, r)
		}
	}
	return out
}

// add records rows that ClickHouse has accepted.
func (c *seriesCache) add(rows []store.SeriesRow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rows {
		lo, hi := HourOf(r.FirstSeen), HourOf(r.LastSeen)
		if s, ok := c.m[r.Fingerprint]; ok {
			c.m[r.Fingerprint] = hourSpan{lo: min(lo, s.lo), hi: max(hi, s.hi)}
			continue
		}
		if len(c.m) >= c.max {
			for k := range c.m { // Go's map iteration order is random enough to evict by.
				delete(c.m, k)
				break
			}
		}
		c.m[r.Fingerprint] = hourSpan{lo: lo, hi: hi}
	}
}

func (c *seriesCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// metadataCache remembers the metadata this process has stored, so that what Prometheus
// repeats (every minute in remote write 1.0, on every request in 2.0) is inserted once per
// change instead of once per request. It holds at most max metric families.
type metadataCache struct {
	mu  sync.Mutex
	m   map[string]prompb.MetricMetadata
	max int
}

func newMetadataCache(max int) *metadataCache {
	return &metadataCache{m: make(map[string]prompb.MetricMetadata), max: max}
}

// unseen returns the entries that differ from what was stored last for their family.
func (c *metadataCache) unseen(md []prompb.MetricMetadata) []prompb.MetricMetadata {
	if len(md) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []prompb.MetricMetadata
	for _, m := range md {
		if old, ok := c.m[m.MetricFamilyName]; !ok || old.Type != m.Type || old.Help != m.Help || old.Unit != m.Unit {
			out = append(out, m)
		}
	}
	return out
}

// add records entries ClickHouse has accepted.
func (c *metadataCache) add(md []prompb.MetricMetadata) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range md {
		if _, ok := c.m[m.MetricFamilyName]; !ok && len(c.m) >= c.max {
			for k := range c.m {
				delete(c.m, k)
				break
			}
		}
		c.m[m.MetricFamilyName] = prompb.MetricMetadata{Type: m.Type, Help: m.Help, Unit: m.Unit}
	}
}
