package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// limitedServer serves h on a loopback listener limited to max connections.
func limitedServer(t *testing.T, max int, h http.Handler) (*connLimiter, string, <-chan error) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newConnLimiter(tcp, max, prometheus.NewRegistry())
	srv := newHTTPServer(h, config{IdleTimeout: time.Minute}, ln)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln, tcp.Addr().String(), served
}

// get sends a keep-alive GET on c and reads the response.
func get(c net.Conn, path string) (int, error) {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: pyramid\r\n\r\n", path); err != nil {
		return 0, err
	}
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (l *connLimiter) openNow() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// TestConnLimiterClosesIdleConnections: with the limit taken by idle keep-alive
// connections, a new connection is served, and the server closes one idle connection to
// make room for it.
func TestConnLimiterClosesIdleConnections(t *testing.T) {
	ln, addr, _ := limitedServer(t, 2, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if code, err := get(c, "/"); err != nil || code != http.StatusOK {
			t.Fatalf("first requests: %d, %v", code, err)
		}
		idle = append(idle, c)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if code, err := get(c, "/"); err != nil || code != http.StatusOK {
		t.Fatalf("request past the limit: %d, %v; want 200", code, err)
	}
	closed := 0
	for _, c := range idle {
		// The server closed its end before it took the new connection; a second is
		// plenty for the end of the stream to arrive, and a timeout means still open.
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, io.EOF) {
			closed++
		}
	}
	if closed != 1 {
		t.Errorf("%d idle connections closed to make room, want 1", closed)
	}
	if n := ln.openNow(); n > 2 {
		t.Errorf("%d connections open, limit 2", n)
	}
}

// TestConnLimiterWaitsForBusyConnections: with every connection busy, a new one waits
// until one ends rather than being served past the limit; closing the listener ends such
// a wait.
func TestConnLimiterWaitsForBusyConnections(t *testing.T) {
	release := make(chan struct{}, 10) // one token lets one busy request finish
	busy := make(chan struct{}, 10)
	ln, addr, served := limitedServer(t, 1, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		busy <- struct{}{}
		<-release
	}))
	dialBusy := func() (net.Conn, <-chan int) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		done := make(chan int, 1)
		go func() { code, _ := get(c, "/"); done <- code }()
		return c, done
	}
	first, firstDone := dialBusy()
	<-busy
	_, secondDone := dialBusy()
	if n := ln.openNow(); n != 1 {
		t.Errorf("%d connections open while the only one is busy, want 1", n)
	}
	// The first request ends and its client closes the connection, which makes room for
	// the second.
	release <- struct{}{}
	if code := <-firstDone; code != http.StatusOK {
		t.Fatalf("first request: %d", code)
	}
	first.Close()
	<-busy // the second is being served, and stays busy

	// A third waits for room; closing the listener must end the wait.
	dialBusy()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve returned %v after the listener closed, want net.ErrClosed", err)
	}
	release <- struct{}{}
	if code := <-secondDone; code != http.StatusOK {
		t.Errorf("second request: %d, want 200", code)
	}
}

func TestCheckConnectionLimit(t *testing.T) {
	if err := checkConnectionLimit(0); err == nil {
		t.Error("a limit of 0 connections was accepted")
	}
	fds, ok := fileDescriptorLimit()
	if !ok {
		t.Skip("no file descriptor limit on this system")
	}
	if err := checkConnectionLimit(int(fds)); err == nil || !strings.Contains(err.Error(), "file descriptors") {
		t.Errorf("a limit of %d connections with %d file descriptors: %v, want an error naming them", fds, fds, err)
	}
	if err := checkConnectionLimit(int(fds) - fdReserve); err != nil {
		t.Errorf("a limit leaving %d descriptors: %v", fdReserve, err)
	}
}

// TestHeaderSizeLimit: a header past maxHeaderBytes is refused with 431 instead of being
// held in memory, which every open connection could do.
func TestHeaderSizeLimit(t *testing.T) {
	_, addr, _ := limitedServer(t, 2, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := strings.Repeat("x", maxHeaderBytes+8<<10) // net/http allows 4 KiB over the limit
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: pyramid\r\nX-Big: %s\r\n\r\n", big); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("header of %d bytes: %s, want 431", len(big), resp.Status)
	}
}
