package adapter

import (
	"hash/maphash"
	"sync"
)

// labelCache remembers, for the label fields of a remote-write 1.0 series entry exactly as
// they arrived, the fingerprint and target hash they normalize to. Prometheus sends every
// series again at each scrape in the same bytes, so most entries skip parsing, validating,
// sorting and hashing their labels (see BenchmarkDecodeValidate).
//
// A key is two 64-bit hashes of the bytes under independent random seeds (hash/maphash),
// so a wrong answer needs both to collide at once, and a client cannot aim for that
// without the process's seeds. Only labels that passed validation are added, so a known
// entry is valid. The cache holds at most max entries; past that it forgets arbitrary
// ones, which costs only a computation done again.
type labelCache struct {
	seeds [2]maphash.Seed
	mu    sync.RWMutex
	m     map[labelKey]labelEntry
	max   int
}

// labelKey identifies the label bytes of a series entry.
type labelKey [2]uint64

// labelEntry is what a series entry's labels hash to.
type labelEntry struct{ fp, target uint64 }

func newLabelCache(max int) *labelCache {
	return &labelCache{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, m: make(map[labelKey]labelEntry), max: max}
}

// key hashes the label bytes of one series entry.
func (c *labelCache) key(raw []byte) labelKey {
	return labelKey{maphash.Bytes(c.seeds[0], raw), maphash.Bytes(c.seeds[1], raw)}
}

func (c *labelCache) get(k labelKey) (labelEntry, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	return e, ok
}

// add records the entries of keys, which must come from validated labels.
func (c *labelCache) add(keys []labelKey, entries []labelEntry) {
	if len(keys) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, k := range keys {
		if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
			for old := range c.m { // Go's map iteration order is random enough to evict by.
				delete(c.m, old)
				break
			}
		}
		c.m[k] = entries[i]
	}
}

func (c *labelCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
