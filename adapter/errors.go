package adapter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Error kinds. Handlers wrap these (or return *ValidationError); statusFor turns any error
// into the status code Prometheus needs to decide between retrying and dropping a batch.
var (
	// ErrDecode: the body is not valid snappy or protobuf. Retrying cannot help.
	ErrDecode = errors.New("malformed request body")
	// ErrTooLarge: the body exceeds a size limit before or after decompression, or holds
	// more rows than may be in flight at once, so that it could never be taken.
	ErrTooLarge = errors.New("request too large")
	// ErrUnsupportedMediaType: a Content-Type or Content-Encoding pyramid does not speak.
	ErrUnsupportedMediaType = errors.New("unsupported media type")
	// ErrMethodNotAllowed: anything but POST on a write or read endpoint.
	ErrMethodNotAllowed = errors.New("method not allowed")
	// ErrOverloaded: more rows in flight than the configured cap, or no decode slot free.
	// It answers 503, not 429, because Prometheus drops a batch on 429 unless
	// retry_on_http_429 is set, and an overloaded store must never cost data.
	ErrOverloaded = errors.New("overloaded")
	// ErrMemoryBudget: the request memory budget is spent by other requests and rows
	// waiting for insert. 503 like ErrOverloaded, for the same reason.
	ErrMemoryBudget = errors.New("request memory budget exhausted")
	// ErrBodyTimeout: the request body did not arrive within the body timeout.
	ErrBodyTimeout = errors.New("request body not received in time")
	// ErrStoreUnavailable: ClickHouse did not take the rows; Prometheus should retry.
	ErrStoreUnavailable = errors.New("ClickHouse unavailable")
	// ErrNotReady: the schema has not been applied yet (ClickHouse was down at start-up).
	ErrNotReady = errors.New("schema not ready")
	// ErrShuttingDown: the server is draining and takes no new rows.
	ErrShuttingDown = errors.New("shutting down")
	// ErrInvalidQuery: a remote-read query pyramid cannot run as asked, such as a regex
	// that does not compile. Asking again cannot help.
	ErrInvalidQuery = errors.New("invalid query")
	// ErrNotAcceptable: a remote-read client accepts no response type pyramid speaks.
	ErrNotAcceptable = errors.New("no acceptable response type")
	// ErrTooManyReads: every read slot stayed busy for the queue wait; try again later.
	ErrTooManyReads = errors.New("too many concurrent reads")
)

// LimitError says which configured read limit a request passed. Retrying the same request
// cannot help, so it carries no Retry-After; a narrower one can.
type LimitError struct {
	// Limit names what is limited ("series per request"); Max is the configured value.
	Limit string
	Max   int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("limit of %d %s exceeded", e.Max, e.Limit)
}

// ValidationError lists the series of a request that break the remote-write label rules.
// The rest of the request is stored; these series are not, and never will be.
type ValidationError struct {
	// Rejected counts every series with rejected samples, Samples those samples (floats
	// and histograms), and Histograms the series rejected for their native histograms
	// (checkHistograms). TooOld and TooNew count the samples rejected for their timestamps
	// alone (older than raw retention, further ahead than the allowed future), whose
	// series' other samples are stored, and WindowSeries the series they belong to.
	// Examples holds the first few messages.
	Rejected     int
	Samples      int
	Histograms   int
	TooOld       int
	TooNew       int
	WindowSeries int
	Examples     []string
}

// maxValidationExamples bounds the size of a 400 response body.
const maxValidationExamples = 5

func (e *ValidationError) add(msg string, samples int) {
	e.Rejected++
	e.Samples += samples
	if len(e.Examples) < maxValidationExamples {
		e.Examples = append(e.Examples, msg)
	}
}

func (e *ValidationError) Error() string {
	more := ""
	if n := e.Rejected - len(e.Examples); n > 0 {
		more = fmt.Sprintf("; and %d more", n)
	}
	return fmt.Sprintf("rejected %d series: %s%s", e.Rejected, strings.Join(e.Examples, "; "), more)
}

// statusFor is the one mapping from error kinds to HTTP status codes. retry reports
// whether the response carries Retry-After.
func statusFor(err error) (code int, retry bool) {
	var (
		verr *ValidationError
		lerr *LimitError
	)
	switch {
	case err == nil:
		return http.StatusNoContent, false
	case errors.As(err, &verr), errors.Is(err, ErrDecode), errors.Is(err, ErrInvalidQuery):
		return http.StatusBadRequest, false
	case errors.As(err, &lerr):
		return http.StatusTooManyRequests, false
	case errors.Is(err, ErrTooManyReads):
		return http.StatusTooManyRequests, true
	case errors.Is(err, ErrNotAcceptable):
		return http.StatusNotAcceptable, false
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, false
	case errors.Is(err, ErrBodyTimeout):
		return http.StatusRequestTimeout, false
	case errors.Is(err, ErrUnsupportedMediaType):
		return http.StatusUnsupportedMediaType, false
	case errors.Is(err, ErrMethodNotAllowed):
		return http.StatusMethodNotAllowed, false
	case errors.Is(err, ErrOverloaded), errors.Is(err, ErrMemoryBudget), errors.Is(err, ErrStoreUnavailable),
		errors.Is(err, ErrNotReady), errors.Is(err, ErrShuttingDown):
		return http.StatusServiceUnavailable, true
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		// The client gave up or the insert timed out; either way the rows may not be
		// stored, so ask for a retry.
		return http.StatusServiceUnavailable, true
	default:
		return http.StatusInternalServerError, false
	}
}
