package schema

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a ClickHouse server version as reported by SELECT version().
type Version struct {
	Major, Minor, Patch int
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// AtLeast reports whether v is major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// ParseVersion reads "18.16.1", "22.8.21.38" or "25.3.2.39-lts".
func ParseVersion(s string) (Version, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) < 2 {
		return Version{}, fmt.Errorf("parse server version %q: want at least major.minor", s)
	}
	var nums [3]int
	for i := 0; i < len(parts) && i < 3; i++ {
		digits := parts[i]
		if j := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
			digits = digits[:j]
		}
		n, err := strconv.Atoi(digits)
		if err != nil {
			return Version{}, fmt.Errorf("parse server version %q: component %d: %w", s, i+1, err)
		}
		nums[i] = n
	}
	return Version{Major: nums[0], Minor: nums[1], Patch: nums[2]}, nil
}

// Dialect is the family of DDL pyramid writes for a server.
type Dialect int

// The two dialects. Modern is what every supported current server (22.8 to 25.x) gets;
// Legacy is plain types that 18.16 accepts without experimental settings.
const (
	Legacy Dialect = iota
	Modern
)

func (d Dialect) String() string {
	if d == Modern {
		return "modern"
	}
	return "legacy"
}

// Codecs reports per-column CODEC support (DoubleDelta for timestamps, Delta for values).
func (d Dialect) Codecs() bool { return d == Modern }

// TTL reports whether the server expires raw samples itself; without it pyramid drops
// expired day partitions (see Retention).
func (d Dialect) TTL() bool { return d == Modern }

// LowCardinality reports whether label and metric names are dictionary-encoded.
// 18.16 has the type only behind an experimental setting, which pyramid does not turn on.
func (d Dialect) LowCardinality() bool { return d == Modern }

// DialectFor picks the dialect for a server version. 22.8 is the oldest modern release
// pyramid targets (its DDL is parsed in tests); anything older gets the plain dialect,
// which every release since 18.16 runs.
func DialectFor(v Version) Dialect {
	if v.AtLeast(22, 8) {
		return Modern
	}
	return Legacy
}
