package schema

import (
	"errors"
	"fmt"
	"time"
)

// Config says where the tables live and how long raw samples are kept.
type Config struct {
	// Database is created if missing. It must be a plain identifier because it is spliced
	// into DDL, where ClickHouse accepts no query parameters.
	Database string
	// RawRetention is how long raw samples are kept; 0 keeps them forever. Retention works
	// on whole days (one partition per UTC day), so it must be a multiple of 24h.
	RawRetention time.Duration
	// Cluster, when set, is the cluster (from the servers' remote_servers) whose every
	// server holds the tables: replicated within each shard, sharded by scrape target and
	// reached through Distributed tables (see Place). Like Database it is spliced into DDL.
	Cluster string
	// SamplesGranularity is the raw samples table's index_granularity, the rows per mark of
	// its primary index; 0 is DefaultSamplesGranularity. It applies when the table is
	// created: an existing table keeps its own.
	SamplesGranularity int
}

// DefaultSamplesGranularity keeps reads of short windows to a fraction of each series'
// day (about a sixth of a day at 15 s) while the primary index stays small: 24 bytes of
// memory per mark, a few hundred MiB for ten billion rows.
const DefaultSamplesGranularity = 1024

// isIdentifier reports whether s is a plain ClickHouse identifier: [A-Za-z_][A-Za-z0-9_]*.
func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		letter := r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !letter && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	if !isIdentifier(c.Database) {
		return fmt.Errorf("database name %q: must match [A-Za-z_][A-Za-z0-9_]*", c.Database)
	}
	if c.Cluster != "" && !isIdentifier(c.Cluster) {
		return fmt.Errorf("cluster name %q: must match [A-Za-z_][A-Za-z0-9_]*", c.Cluster)
	}
	if c.SamplesGranularity < 0 || c.SamplesGranularity > 65536 {
		return fmt.Errorf("samples index granularity %d: must be between 1 and 65536, or 0 for %d",
			c.SamplesGranularity, DefaultSamplesGranularity)
	}
	if c.RawRetention < 0 {
		return errors.New("raw retention must not be negative")
	}
	if c.RawRetention%(24*time.Hour) != 0 {
		return fmt.Errorf("raw retention %s: must be a whole number of days", c.RawRetention)
	}
	return nil
}

func (c Config) samplesGranularity() int {
	if c.SamplesGranularity == 0 {
		return DefaultSamplesGranularity
	}
	return c.SamplesGranularity
}

// retentionDays is RawRetention in days; 0 means forever.
func (c Config) retentionDays() int {
	return int(c.RawRetention / (24 * time.Hour))
}
