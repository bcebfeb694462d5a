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
}

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
	if c.RawRetention < 0 {
		return errors.New("raw retention must not be negative")
	}
	if c.RawRetention%(24*time.Hour) != 0 {
		return fmt.Errorf("raw retention %s: must be a whole number of days", c.RawRetention)
	}
	return nil
}

// retentionDays is RawRetention in days; 0 means forever.
func (c Config) retentionDays() int {
	return int(c.RawRetention / (24 * time.Hour))
}
