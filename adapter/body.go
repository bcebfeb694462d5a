package adapter

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// withBodyDeadline gives every request that has a body timeout to send it. readBody ends
// the deadline once the body has arrived: net/http reads on in the background while the
// handler runs, and a deadline passing then would cancel the request's context. A handler
// that answers without reading the body (a 415, a 503) leaves the deadline in place,
// because net/http then reads and discards what is left of a small body before it
// answers, and that must not wait on the client either.
func withBodyDeadline(next http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			// Only servers without deadlines (none in pyramid) refuse this.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
		}
		next.ServeHTTP(w, r)
	})
}

// readBody reads r's body into memory, at most limit bytes, charging l for the buffer as
// it grows with the bytes that arrive. A declared Content-Length over the limit is refused
// before anything is read, any other body as soon as it passes the limit. A client that
// sends its body too slowly (see withBodyDeadline) gets ErrBodyTimeout and holds no more
// of the budget than it has sent.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, l *lease) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: body of %d bytes exceeds the limit of %d", ErrTooLarge, r.ContentLength, limit)
	}
	// One byte more than the body can hold, so that the last read sees the end (which
	// lets net/http notice a client that goes away while the request waits), and an
	// undeclared body one byte over the limit shows itself.
	size := limit + 1
	if r.ContentLength >= 0 {
		size = r.ContentLength + 1
	}
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			if int64(cap(buf)) >= size {
				return nil, fmt.Errorf("%w: body exceeds the limit of %d bytes", ErrTooLarge, limit)
			}
			next := min(max(2*int64(cap(buf)), bodyFirstRead), size)
			if err := l.grow(next - int64(cap(buf))); err != nil {
				return nil, fmt.Errorf("read body after %d bytes: %w", len(buf), err)
			}
			grown := make([]byte, len(buf), next)
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case err == io.EOF:
			if int64(len(buf)) > limit {
				return nil, fmt.Errorf("%w: body exceeds the limit of %d bytes", ErrTooLarge, limit)
			}
			_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
			return buf, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, fmt.Errorf("%w: %d bytes arrived", ErrBodyTimeout, len(buf))
		case err != nil:
			return nil, fmt.Errorf("read body after %d bytes: %w", len(buf), err)
		}
	}
}
