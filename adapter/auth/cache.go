package auth

import (
	"crypto/sha256"
	"sync"
)

// verifiedCacheSize bounds the remembered (user, hash, password) triples; a deployment
// has a handful of users, and the cache forgets at random when full.
const verifiedCacheSize = 1024

// verifiedCache remembers which (user, hash, password) triples bcrypt has accepted. Keys
// are SHA-256 digests, so that passwords are not kept in memory as they arrived.
type verifiedCache struct {
	mu   sync.Mutex
	max  int
	keys map[[32]byte]struct{}
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{max: max, keys: make(map[[32]byte]struct{})}
}

// cacheKey digests the triple; the hash is part of it, so a changed password in the file
// needs bcrypt again.
func cacheKey(user, hash, pass string) [32]byte {
	h := sha256.New()
	for _, s := range []string{user, hash, pass} {
		// Lengths first, so that no two triples run together into the same bytes.
		var n [8]byte
		for i := range n {
			n[i] = byte(len(s) >> (8 * i))
		}
		h.Write(n[:])
		h.Write([]byte(s))
	}
	return [32]byte(h.Sum(nil))
}

func (c *verifiedCache) has(k [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.keys[k]
	return ok
}

func (c *verifiedCache) add(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.keys) >= c.max {
		// Map iteration order is unspecified; good enough for forgetting one.
		for old := range c.keys {
			delete(c.keys, old)
			break
		}
	}
	c.keys[k] = struct{}{}
}
