package rollup

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// DefaultTiers keeps raw samples for 30 days, 5-minute rollups for a year and hourly
// rollups forever: at a 15 s scrape interval that is 20 and 240 samples per rollup row.
const DefaultTiers = "raw:30d,5m:365d,1h:0"

// rawName names the raw tier in the PYRAMID_TIERS syntax and in Tier.Name.
const rawName = "raw"

// day is the partition length of every table; all resolutions must divide it so that a
// bucket never straddles two partitions and dropping a day drops whole buckets.
const day = 24 * time.Hour

// Tier is one level of the pyramid: raw samples (Resolution 0) or rollups at a resolution,
// kept for Retention (0 keeps them forever).
type Tier struct {
	// Name is "raw" or the resolution in Prometheus duration syntax ("5m", "1h"). Parsed
	// tiers carry the canonical spelling, so "60m" and "1h" name the same table.
	Name       string
	Resolution time.Duration
	Retention  time.Duration
}

// IsRaw reports whether the tier holds raw samples rather than rollups.
func (t Tier) IsRaw() bool { return t.Resolution == 0 }

// ResolutionMs is the bucket width in milliseconds, the unit of every timestamp in pyramid.
func (t Tier) ResolutionMs() int64 { return t.Resolution.Milliseconds() }

// Forever reports whether the tier is never expired.
func (t Tier) Forever() bool { return t.Retention == 0 }

// ExpiredBefore is where the tier's retention begins at now (ms): its data before it has
// expired. math.MinInt64 for a tier kept forever.
func (t Tier) ExpiredBefore(now int64) int64 {
	if t.Forever() {
		return math.MinInt64
	}
	return now - t.Retention.Milliseconds()
}

// String renders the tier in the PYRAMID_TIERS syntax.
func (t Tier) String() string {
	return t.Name + ":" + formatDuration(t.Retention)
}

// ParseTiers parses the PYRAMID_TIERS syntax: comma-separated resolution:retention entries,
// "raw" as the resolution of raw samples, durations in Prometheus syntax (ms, s, m, h, d, w,
// y, combinable as in "1h30m"), and retention 0 for forever. The result is validated (see
// ValidateTiers); errors name the offending entry as written.
func ParseTiers(s string) ([]Tier, error) {
	entries := strings.Split(s, ",")
	tiers := make([]Tier, 0, len(entries))
	for i, e := range entries {
		t, err := parseTier(strings.TrimSpace(e))
		if err != nil {
			return nil, fmt.Errorf("parse tier %d %q: %w", i+1, strings.TrimSpace(e), err)
		}
		tiers = append(tiers, t)
	}
	if err := validateTiers(tiers); err != nil {
		var te *tierError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("check tier %d %q: %s", te.index+1, strings.TrimSpace(entries[te.index]), te.msg)
		}
		return nil, fmt.Errorf("check tiers %q: %w", s, err)
	}
	return tiers, nil
}

func parseTier(e string) (Tier, error) {
	if e == "" {
		return Tier{}, errors.New("entry is empty; want resolution:retention")
	}
	res, ret, ok := strings.Cut(e, ":")
	if !ok || strings.Contains(ret, ":") {
		return Tier{}, errors.New("want exactly one colon, as in resolution:retention")
	}
	res, ret = strings.TrimSpace(res), strings.TrimSpace(ret)
	var t Tier
	if res == rawName {
		t.Name = rawName
	} else {
		d, err := model.ParseDuration(res)
		if err != nil {
			return Tier{}, fmt.Errorf("read resolution: %w", err)
		}
		if d == 0 {
			return Tier{}, fmt.Errorf("resolution %s must be positive (write %q for raw samples)", res, rawName)
		}
		t.Resolution = time.Duration(d)
		t.Name = formatDuration(t.Resolution)
	}
	d, err := model.ParseDuration(ret)
	if err != nil {
		return Tier{}, fmt.Errorf("read retention: %w", err)
	}
	t.Retention = time.Duration(d)
	return t, nil
}

// FormatTiers renders tiers in the PYRAMID_TIERS syntax; ParseTiers(FormatTiers(t)) == t for
// valid, parsed tiers.
func FormatTiers(tiers []Tier) string {
	parts := make([]string, len(tiers))
	for i, t := range tiers {
		parts[i] = t.String()
	}
	return strings.Join(parts, ",")
}

// ValidateTiers checks the constraints the rest of pyramid relies on:
//
//   - exactly one raw tier, and it comes first, because every rollup is computed from it;
//   - rollup resolutions strictly increase, each a whole multiple of the previous rollup's,
//     so a coarse bucket is a union of whole fine buckets and can be merged from them;
//   - every resolution divides a day, so buckets align with the daily partitions (and, with
//     the previous rule, with each other);
//   - resolutions are whole milliseconds, the unit of stored timestamps;
//   - a retention is at least the tier's resolution (a shorter one keeps no whole bucket),
//     and a coarser tier is kept at least as long as a finer one, forever (0) only after
//     forever, because the router falls back from fine to coarse as data ages.
func ValidateTiers(tiers []Tier) error {
	if err := validateTiers(tiers); err != nil {
		var te *tierError
		if errors.As(err, &te) {
			return fmt.Errorf("check tier %d %q: %s", te.index+1, tiers[te.index].Name, te.msg)
		}
		return err
	}
	return nil
}

// tierError carries the index of the bad tier so that ParseTiers can quote the entry as the
// user wrote it and ValidateTiers the tier's name.
type tierError struct {
	index int
	msg   string
}

func (e *tierError) Error() string { return fmt.Sprintf("tier %d: %s", e.index+1, e.msg) }

func badTier(i int, format string, args ...any) error {
	return &tierError{index: i, msg: fmt.Sprintf(format, args...)}
}

func validateTiers(tiers []Tier) error {
	if len(tiers) == 0 {
		return errors.New("no tiers; want at least the raw tier, as in " + DefaultTiers)
	}
	for i, t := range tiers {
		switch {
		case t.Resolution < 0:
			return badTier(i, "resolution %s is negative", t.Resolution)
		case t.Retention < 0:
			return badTier(i, "retention %s is negative", t.Retention)
		case t.IsRaw() && i > 0:
			return badTier(i, "raw samples may only be the first tier, and only once")
		case !t.IsRaw() && i == 0:
			return badTier(i, "the first tier must be raw, as every rollup is computed from raw samples")
		}
		if t.IsRaw() {
			continue
		}
		res := formatDuration(t.Resolution)
		if t.Resolution%time.Millisecond != 0 {
			return badTier(i, "resolution %s is not a whole number of milliseconds", t.Resolution)
		}
		if day%t.Resolution != 0 {
			return badTier(i, "resolution %s does not divide a day evenly, so its buckets would straddle daily partitions", res)
		}
		if !t.Forever() && t.Retention < t.Resolution {
			return badTier(i, "retention %s is shorter than the resolution %s, so no whole bucket would be kept", formatDuration(t.Retention), res)
		}
		if i == 1 {
			continue
		}
		prev := tiers[i-1]
		prevRes := formatDuration(prev.Resolution)
		switch {
		case t.Resolution <= prev.Resolution:
			return badTier(i, "resolution %s is not coarser than the previous tier's %s; list tiers from fine to coarse", res, prevRes)
		case t.Resolution%prev.Resolution != 0:
			return badTier(i, "resolution %s is not a whole multiple of the previous tier's %s, so its buckets could not be merged from whole finer buckets", res, prevRes)
		}
	}
	for i := 1; i < len(tiers); i++ {
		t, prev := tiers[i], tiers[i-1]
		switch {
		case t.Forever():
		case prev.Forever():
			return badTier(i, "retention %s is shorter than the previous tier's (forever); a coarser tier must be kept at least as long", formatDuration(t.Retention))
		case t.Retention < prev.Retention:
			return badTier(i, "retention %s is shorter than the previous tier's %s; a coarser tier must be kept at least as long", formatDuration(t.Retention), formatDuration(prev.Retention))
		}
	}
	return nil
}

// formatDuration spells d the way Prometheus does ("5m", "1y", "0s" printed as "0").
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return model.Duration(d).String()
}
