package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// pprofHandler serves Go's runtime profiles under /debug/pprof/. Importing net/http/pprof
// also registers them on http.DefaultServeMux, which pyramid never serves: they are
// reachable only through this mux, on PYRAMID_PPROF_ADDR, and never on the listener that
// takes remote writes and reads.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// servePprof serves the profiles on addr until stop is called, and returns the address
// it listens on.
func servePprof(addr string, logger *slog.Logger) (bound string, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("listen for pprof on %s: %w", addr, err)
	}
	// No write timeout: a CPU profile or trace answers only after the seconds it was asked to run.
	srv := &http.Server{Handler: pprofHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			logger.Error("serve pprof", "addr", addr, "err", err)
		}
	}()
	logger.Info("pprof listening", "addr", ln.Addr().String())
	return ln.Addr().String(), func() { _ = srv.Close() }, nil
}
