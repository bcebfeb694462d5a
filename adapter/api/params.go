package api

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// The parsing below is Prometheus's (web/api/v1/api.go), rule for rule and message for
// message, so that clients see the same answers to the same requests.

// Prometheus's default bounds of optional time ranges. They are not the int64 extremes
// (for historical reasons Prometheus keeps) and clients send them back formatted, so they
// must be exactly these.
const (
	minTimeUnix = math.MinInt64/1000 + 62135596801
	maxTimeUnix = math.MaxInt64/1000 - 62135596801
)

func minTime() time.Time { return time.Unix(minTimeUnix, 0).UTC() }
func maxTime() time.Time { return time.Unix(maxTimeUnix, 999999999).UTC() }

// invalidParam is Prometheus's bad_data error for one parameter.
func invalidParam(err error, name string) error {
	return &badDataError{fmt.Errorf("invalid parameter %q: %w", name, err)}
}

// parseTimeParam parses the named form value, def when it is absent.
func parseTimeParam(r *http.Request, name string, def time.Time) (time.Time, error) {
	v := r.FormValue(name)
	if v == "" {
		return def, nil
	}
	t, err := parseTime(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid time value for '%s': %w", name, err)
	}
	return t, nil
}

// parseTime accepts float seconds since the epoch (rounded to milliseconds) and RFC 3339,
// plus the formatted default bounds, whose years Go's parser cannot read.
func parseTime(s string) (time.Time, error) {
	if t, err := strconv.ParseFloat(s, 64); err == nil {
		s, ns := math.Modf(t)
		ns = math.Round(ns*1000) / 1000
		return time.Unix(int64(s), int64(ns*float64(time.Second))).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	switch s {
	case minTime().Format(time.RFC3339Nano):
		return minTime(), nil
	case maxTime().Format(time.RFC3339Nano):
		return maxTime(), nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

// parseDuration accepts float seconds and PromQL durations ("1m30s").
func parseDuration(s string) (time.Duration, error) {
	if d, err := strconv.ParseFloat(s, 64); err == nil {
		ts := d * float64(time.Second)
		if ts > float64(math.MaxInt64) || ts < float64(math.MinInt64) {
			return 0, fmt.Errorf("cannot parse %q to a valid duration. It overflows int64", s)
		}
		return time.Duration(ts), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
}

// parseLimit parses a limit; 0 means none.
func parseLimit(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	limit, err := strconv.Atoi(s)
	if err != nil {
		return 0, err
	}
	if limit < 0 {
		return 0, errors.New("limit must be non-negative")
	}
	return limit, nil
}

// hintLimit asks the storage for one more than the limit, so that truncation shows.
func hintLimit(limit int) int {
	if limit > 0 && limit < math.MaxInt {
		return limit + 1
	}
	return limit
}

// parseMatchers parses match[] selectors; each needs a matcher that does not match the
// empty string, or it would select every series.
func parseMatchers(p parser.Parser, sel []string) ([][]*labels.Matcher, error) {
	sets, err := p.ParseMetricSelectors(sel)
	if err != nil {
		return nil, err
	}
outer:
	for _, ms := range sets {
		for _, m := range ms {
			if m != nil && !m.Matches("") {
				continue outer
			}
		}
		return nil, errors.New("match[] must contain at least one non-empty matcher")
	}
	return sets, nil
}

// formatThousands writes n with comma separators, as Prometheus's "11,000".
func formatThousands(n int) string {
	s := strconv.Itoa(n)
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
