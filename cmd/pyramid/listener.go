package main

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fdReserve is the file descriptors kept free of client connections: ClickHouse
// connections, the listener, log and runtime files.
const fdReserve = 64

// Limits of a request's header: the time it may take to arrive, and its size, which
// every open connection may hold in memory (net/http answers 431 past it; remote write
// and read send a few hundred bytes).
const (
	headerTimeout  = 10 * time.Second
	maxHeaderBytes = 64 << 10
)

// newHTTPServer serves h on ln with pyramid's connection limits. Bodies have their own
// deadline (PYRAMID_HTTP_BODY_TIMEOUT, which adapter's handler sets on each request): a
// server-wide ReadTimeout would also cancel long remote reads.
func newHTTPServer(h http.Handler, cfg config, ln *connLimiter) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: headerTimeout, MaxHeaderBytes: maxHeaderBytes,
		IdleTimeout: cfg.IdleTimeout, ConnState: ln.connState}
}

// connLimiter bounds the connections the HTTP server holds open, so that clients cannot
// take every file descriptor (Prometheus bounds its own with --web.max-connections and
// netutil.LimitListener). Past the limit, a new connection first closes an idle keep-alive
// connection to make room, as nginx does when it runs out of connections; only when every
// connection is busy does it wait for one to end, and further ones wait in the kernel's
// accept queue. Busy connections end by themselves: every request has deadlines for its
// header and its body.
type connLimiter struct {
	net.Listener
	max int

	mu     sync.Mutex
	freed  *sync.Cond // signalled when a connection closes, or the listener does
	open   int
	closed bool
	// idle holds the connections waiting for their next request, as the server names
	// them in ConnState.
	idle map[net.Conn]struct{}
}

func newConnLimiter(ln net.Listener, max int, reg prometheus.Registerer) *connLimiter {
	l := &connLimiter{Listener: ln, max: max, idle: make(map[net.Conn]struct{})}
	l.freed = sync.NewCond(&l.mu)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pyramid_http_open_connections", Help: "HTTP connections open, at most PYRAMID_MAX_CONNECTIONS.",
	}, func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(l.open)
	}))
	return l
}

// Accept accepts a connection and then, while the limit is reached, closes idle
// connections or waits for one to close before handing it to the server.
func (l *connLimiter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	for l.open >= l.max && !l.closed {
		victim := l.anyIdleLocked()
		if victim == nil {
			l.freed.Wait()
			continue
		}
		// Closing takes l.mu (limitedConn.Close), so it happens unlocked.
		l.mu.Unlock()
		_ = victim.Close()
		l.mu.Lock()
	}
	if l.closed {
		l.mu.Unlock()
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.open++
	l.mu.Unlock()
	return &limitedConn{Conn: c, l: l}, nil
}

// anyIdleLocked takes an idle connection out of the idle set, or returns nil.
func (l *connLimiter) anyIdleLocked() net.Conn {
	for c := range l.idle {
		delete(l.idle, c)
		return c
	}
	return nil
}

// Close closes the listener and wakes an Accept waiting for room.
func (l *connLimiter) Close() error {
	l.mu.Lock()
	l.closed = true
	l.freed.Broadcast()
	l.mu.Unlock()
	return l.Listener.Close()
}

// connState is the http.Server's ConnState hook: it keeps track of idle connections.
func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if state == http.StateIdle {
		l.idle[c] = struct{}{}
	} else {
		delete(l.idle, c)
	}
}

// limitedConn gives its place back when it closes.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.freed.Signal()
		c.l.mu.Unlock()
	})
	return err
}

// checkConnectionLimit refuses a connection limit that would leave too few file
// descriptors for ClickHouse and the rest of the process: past the descriptor limit
// pyramid could accept nothing, not even a health check.
func checkConnectionLimit(max int) error {
	if max <= 0 {
		return fmt.Errorf("PYRAMID_MAX_CONNECTIONS %d must be positive", max)
	}
	fds, ok := fileDescriptorLimit()
	if ok && uint64(max)+fdReserve > fds {
		return fmt.Errorf("PYRAMID_MAX_CONNECTIONS %d leaves fewer than %d of the process's %d file descriptors (ulimit -n) for ClickHouse and files", max, fdReserve, fds)
	}
	return nil
}
