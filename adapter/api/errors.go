package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// RefusedError is a query the store refuses to run as asked, such as one whose estimated
// cost passes a limit. Asking again cannot help, a narrower query can: the answer is 422
// "execution", as Prometheus answers queries that load too many samples.
type RefusedError struct {
	// Reason names what was refused and why, with the numbers that matter.
	Reason string
}

func (e *RefusedError) Error() string { return e.Reason }

// Prometheus's error types (the errorType field of an error response).
const (
	errorTimeout     = "timeout"
	errorCanceled    = "canceled"
	errorExec        = "execution"
	errorBadData     = "bad_data"
	errorInternal    = "internal"
	errorUnavailable = "unavailable"
)

// statusClientClosedRequest is nginx's code for a client that went away; Prometheus
// answers canceled queries with it.
const statusClientClosedRequest = 499

// badDataError is a request Prometheus would refuse as bad_data: a parameter that does not
// parse or breaks a rule.
type badDataError struct{ err error }

func (e *badDataError) Error() string { return e.err.Error() }
func (e *badDataError) Unwrap() error { return e.err }

// classify is the one mapping from errors to Prometheus's error types and HTTP status
// codes. retry reports whether the response carries Retry-After.
func classify(err error) (errorType string, code int, retry bool) {
	errorType, code, retry, _ = classifyKind(err)
	return errorType, code, retry
}

// classifyKind is classify; known is false for errors of no kind it knows, which are
// evaluation errors.
func classifyKind(err error) (errorType string, code int, retry, known bool) {
	var (
		bad      *badDataError
		parseErr parser.ParseErrors
		onePErr  *parser.ParseErr
		canceled promql.ErrQueryCanceled
		timeout  promql.ErrQueryTimeout
		samples  promql.ErrTooManySamples
		refused  *RefusedError
		storage  promql.ErrStorage
	)
	// ErrStorage does not unwrap; look inside it for the kinds below.
	if errors.As(err, &storage) && storage.Err != nil {
		if t, c, r, ok := classifyKind(storage.Err); ok {
			return t, c, r, true
		}
		return errorInternal, http.StatusInternalServerError, false, true
	}
	switch {
	case errors.As(err, &bad), errors.As(err, &parseErr), errors.As(err, &onePErr):
		return errorBadData, http.StatusBadRequest, false, true
	case errors.Is(err, store.ErrUnavailable):
		return errorUnavailable, http.StatusServiceUnavailable, true, true
	case errors.As(err, &refused), errors.As(err, &samples), errors.Is(err, store.ErrSampleBudget), errors.Is(err, store.ErrSeriesBudget):
		return errorExec, http.StatusUnprocessableEntity, false, true
	case errors.As(err, &canceled), errors.Is(err, context.Canceled):
		return errorCanceled, statusClientClosedRequest, false, true
	case errors.As(err, &timeout), errors.Is(err, context.DeadlineExceeded):
		// Prometheus answers a storage error carrying DeadlineExceeded as execution; it is
		// the query's timeout all the same, so say so.
		return errorTimeout, http.StatusServiceUnavailable, false, true
	default:
		// Anything else the engine returns is an evaluation error, such as "vector cannot
		// contain metrics with the same labelset".
		return errorExec, http.StatusUnprocessableEntity, false, false
	}
}
