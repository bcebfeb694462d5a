package auth

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/pyramid-metrics/pyramid/adapter/auth/authtest"
)

// BenchmarkHandler measures what the guard adds to a request: reading the web config
// file, and checking a cached password or a token. The bcrypt hash has the cost htpasswd
// and Prometheus's documentation use, which only the first request of a user pays.
func BenchmarkHandler(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	path := dir + "/web.yml"
	if err := os.WriteFile(path, []byte(fmt.Sprintf("basic_auth_users:\n  u: %s\npyramid:\n  bearer_tokens:\n    t: {sha256: %s}\n  unauthenticated_paths: [/-/healthy]\n",
		hash, authtest.SHA256("token"))), 0o600); err != nil {
		b.Fatal(err)
	}
	g, err := New(Config{File: path}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	h := g.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for _, c := range []struct {
		name, path string
		set        func(*http.Request)
	}{
		{"open path", "/-/healthy", func(*http.Request) {}},
		{"basic cached", "/api/v1/write", func(r *http.Request) { r.SetBasicAuth("u", "pw") }},
		{"bearer", "/api/v1/write", func(r *http.Request) { r.Header.Set("Authorization", "Bearer token") }},
	} {
		b.Run(c.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodPost, c.path, nil)
			c.set(req)
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d", w.Code)
				}
			}
		})
	}
}
