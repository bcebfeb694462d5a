package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/pyramid-metrics/pyramid/adapter/store"
)

func TestParseTime(t *testing.T) {
	for _, tc := range []struct {
		in     string
		wantMs int64
		err    bool
	}{
		{in: "0", wantMs: 0},
		{in: "1.5", wantMs: 1500},
		// Rounded to milliseconds, as Prometheus does.
		{in: "1.23456", wantMs: 1235},
		{in: "-1.5", wantMs: -1500},
		{in: "1435781451.781", wantMs: 1435781451781},
		{in: "2015-07-01T20:10:51.781Z", wantMs: 1435781451781},
		{in: "2015-07-01T22:10:51.781+02:00", wantMs: 1435781451781},
		{in: "-292273086-05-16T16:47:06Z", wantMs: minTimeUnix * 1000},
		{in: "292277025-08-18T07:12:54.999999999Z", wantMs: maxTimeUnix*1000 + 999},
		{in: "abc", err: true},
		{in: "2015-07-01", err: true},
	} {
		got, err := parseTime(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("parseTime(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseTime(%q): %v", tc.in, err)
			continue
		}
		if ms := got.UnixMilli(); ms != tc.wantMs {
			t.Errorf("parseTime(%q) = %d ms, want %d", tc.in, ms, tc.wantMs)
		}
	}
	// The bounds clients send back must be the ones Prometheus formats.
	if s := minTime().Format(time.RFC3339Nano); s != "-292273086-05-16T16:47:06Z" {
		t.Errorf("min time formats as %s", s)
	}
	if s := maxTime().Format(time.RFC3339Nano); s != "292277025-08-18T07:12:54.999999999Z" {
		t.Errorf("max time formats as %s", s)
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{in: "15", want: 15 * time.Second},
		{in: "1.5", want: 1500 * time.Millisecond},
		{in: "0.000000001", want: time.Nanosecond},
		{in: "1m30s", want: 90 * time.Second},
		{in: "5m", want: 5 * time.Minute},
		{in: "1d", want: 24 * time.Hour},
		{in: "-1", want: -time.Second},
		{in: "1e100", err: `cannot parse "1e100" to a valid duration. It overflows int64`},
		{in: "abc", err: `cannot parse "abc" to a valid duration`},
		{in: "1x", err: `cannot parse "1x" to a valid duration`},
	} {
		got, err := parseDuration(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("parseDuration(%q) = %v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		err  bool
	}{
		{in: "", want: 0},
		{in: "0", want: 0},
		{in: "3", want: 3},
		{in: "-1", err: true},
		{in: "x", err: true},
	} {
		got, err := parseLimit(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseLimit(%q) = %d, %v", tc.in, got, err)
		}
	}
	if got := hintLimit(3); got != 4 {
		t.Errorf("hintLimit(3) = %d, want 4", got)
	}
	if got := hintLimit(math.MaxInt); got != math.MaxInt {
		t.Errorf("hintLimit(MaxInt) overflows to %d", got)
	}
}

func TestFormatThousands(t *testing.T) {
	for in, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 11000: "11,000", 1234567: "1,234,567"} {
		if got := formatThousands(in); got != want {
			t.Errorf("formatThousands(%d) = %s, want %s", in, got, want)
		}
	}
}

// TestClassify covers every row of classify, the one mapping from errors to error types
// and status codes.
func TestClassify(t *testing.T) {
	_, parseErr := parser.NewParser(parser.Options{}).ParseExpr("sum(")
	for _, tc := range []struct {
		name      string
		err       error
		errorType string
		code      int
		retry     bool
	}{
		{"bad parameter", invalidParam(errors.New("x"), "time"), "bad_data", http.StatusBadRequest, false},
		{"parse error", parseErr, "bad_data", http.StatusBadRequest, false},
		{"one parse error", &parser.ParseErr{Err: errors.New("x")}, "bad_data", http.StatusBadRequest, false},
		{"unavailable", fmt.Errorf("expanding series: %w", fmt.Errorf("select: %w", store.ErrUnavailable)), "unavailable", http.StatusServiceUnavailable, true},
		{"refused", fmt.Errorf("expanding series: %w", &RefusedError{Reason: "too big"}), "execution", http.StatusUnprocessableEntity, false},
		{"too many samples", promql.ErrTooManySamples("query execution"), "execution", http.StatusUnprocessableEntity, false},
		{"query canceled", promql.ErrQueryCanceled("query execution"), "canceled", 499, false},
		{"context canceled", fmt.Errorf("expanding series: %w", context.Canceled), "canceled", 499, false},
		{"query timeout", promql.ErrQueryTimeout("query execution"), "timeout", http.StatusServiceUnavailable, false},
		{"deadline", fmt.Errorf("expanding series: %w", context.DeadlineExceeded), "timeout", http.StatusServiceUnavailable, false},
		{"storage", promql.ErrStorage{Err: errors.New("disk")}, "internal", http.StatusInternalServerError, false},
		{"storage unavailable", promql.ErrStorage{Err: store.ErrUnavailable}, "unavailable", http.StatusServiceUnavailable, true},
		{"evaluation", errors.New("vector cannot contain metrics with the same labelset"), "execution", http.StatusUnprocessableEntity, false},
	} {
		errorType, code, retry := classify(tc.err)
		if errorType != tc.errorType || code != tc.code || retry != tc.retry {
			t.Errorf("%s: classify(%v) = %s %d %v, want %s %d %v", tc.name, tc.err, errorType, code, retry, tc.errorType, tc.code, tc.retry)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, change := range map[string]func(*Config){
		"lookback":    func(c *Config) { c.LookbackDelta = 0 },
		"samples":     func(c *Config) { c.MaxSamples = 0 },
		"timeout":     func(c *Config) { c.Timeout = 0 },
		"concurrent":  func(c *Config) { c.MaxConcurrent = 0 },
		"slow":        func(c *Config) { c.SlowQueryThreshold = -1 },
		"interval":    func(c *Config) { c.DefaultEvaluationInterval = 0 },
		"points":      func(c *Config) { c.MaxPoints = 0 },
		"retry after": func(c *Config) { c.RetryAfter = time.Millisecond },
	} {
		c := testConfig()
		change(&c)
		if c.Validate() == nil {
			t.Errorf("%s: invalid config accepted", name)
		}
	}
}
