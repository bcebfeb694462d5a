package adapter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
)

// TestStatusFor is the one table of error kinds and the status each one answers, with the
// reason Prometheus cares about: 2xx done, 5xx retried, 4xx dropped.
func TestStatusFor(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		wantCode  int
		wantRetry bool
	}{
		{"success", nil, http.StatusNoContent, false},
		{"invalid series", &ValidationError{Rejected: 1, Examples: []string{"x"}}, http.StatusBadRequest, false},
		{"wrapped invalid series", fmt.Errorf("write: %w", &ValidationError{Rejected: 2}), http.StatusBadRequest, false},
		{"bad snappy or protobuf", fmt.Errorf("%w: snappy", ErrDecode), http.StatusBadRequest, false},
		{"too large", fmt.Errorf("%w: 40 MiB", ErrTooLarge), http.StatusRequestEntityTooLarge, false},
		{"more rows than may be in flight", fmt.Errorf("%w: 3M rows in one request", ErrTooLarge), http.StatusRequestEntityTooLarge, false},
		{"unsupported media type", fmt.Errorf("%w: gzip", ErrUnsupportedMediaType), http.StatusUnsupportedMediaType, false},
		{"method", fmt.Errorf("%w: GET", ErrMethodNotAllowed), http.StatusMethodNotAllowed, false},
		{"overloaded", fmt.Errorf("%w: 3M rows", ErrOverloaded), http.StatusServiceUnavailable, true},
		{"memory budget spent", fmt.Errorf("read body: %w", ErrMemoryBudget), http.StatusServiceUnavailable, true},
		{"body too slow", fmt.Errorf("%w: 3 bytes in 1m", ErrBodyTimeout), http.StatusRequestTimeout, false},
		{"ClickHouse down", fmt.Errorf("%w: %w", ErrStoreUnavailable, errors.New("dial tcp: refused")), http.StatusServiceUnavailable, true},
		{"schema not ready", ErrNotReady, http.StatusServiceUnavailable, true},
		{"shutting down", ErrShuttingDown, http.StatusServiceUnavailable, true},
		{"insert timed out", fmt.Errorf("wait: %w", context.DeadlineExceeded), http.StatusServiceUnavailable, true},
		{"client went away", fmt.Errorf("wait: %w", context.Canceled), http.StatusServiceUnavailable, true},
		{"bad regex in a read", fmt.Errorf("%w: a=~\"(\"", ErrInvalidQuery), http.StatusBadRequest, false},
		{"read limit", fmt.Errorf("query 0: %w", &LimitError{Limit: "samples per request", Max: 10}), http.StatusTooManyRequests, false},
		{"read slots busy", fmt.Errorf("wait 10s: %w", ErrTooManyReads), http.StatusTooManyRequests, true},
		{"no acceptable read response", fmt.Errorf("%w: [7]", ErrNotAcceptable), http.StatusNotAcceptable, false},
		{"anything else", errors.New("surprise"), http.StatusInternalServerError, false},
	} {
		code, retry := statusFor(tc.err)
		if code != tc.wantCode || retry != tc.wantRetry {
			t.Errorf("%s: statusFor(%v) = %d, retry %v; want %d, retry %v", tc.name, tc.err, code, retry, tc.wantCode, tc.wantRetry)
		}
	}
}

func TestValidationErrorMessage(t *testing.T) {
	e := &ValidationError{}
	for i := range maxValidationExamples + 3 {
		e.add(fmt.Sprintf("series %d bad", i), 2)
	}
	want := "rejected 8 series: series 0 bad; series 1 bad; series 2 bad; series 3 bad; series 4 bad; and 3 more"
	if e.Error() != want || e.Samples != 16 {
		t.Errorf("message %q, samples %d; want %q, 16", e.Error(), e.Samples, want)
	}
}
