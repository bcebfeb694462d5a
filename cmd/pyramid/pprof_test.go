package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"testing"
)

// TestPprof: the profiles are off by default (PYRAMID_PPROF_ADDR is empty); when an
// address is set, they answer there, over a real socket, a CPU profile included.
func TestPprof(t *testing.T) {
	c, _, err := loadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.PprofAddr != "" {
		t.Errorf("PYRAMID_PPROF_ADDR defaults to %q, want empty (off)", c.PprofAddr)
	}

	addr, stop, err := servePprof("127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for _, tc := range []struct {
		path string
		want []byte
	}{
		{"/debug/pprof/", []byte("goroutine")},
		{"/debug/pprof/heap?debug=1", []byte("heap profile")},
		{"/debug/pprof/profile?seconds=1", []byte{0x1f, 0x8b}}, // a gzipped profile
		{"/debug/pprof/cmdline", []byte("pyramid")},
	} {
		resp, err := http.Get("http://" + addr + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(body, tc.want) {
			t.Errorf("GET %s: %d, %d bytes (%v); want 200 with %q", tc.path, resp.StatusCode, len(body), err, tc.want)
		}
	}
}
