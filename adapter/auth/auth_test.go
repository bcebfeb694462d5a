package auth

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/pyramid-metrics/pyramid/adapter/auth/authtest"
)

// writeFile writes a web config into dir and returns its path.
func writeFile(t *testing.T, dir, content string) string {
	t.Helper()
	path := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newGuard(t *testing.T, path string) *Guard {
	t.Helper()
	g, err := New(Config{File: path}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("load web config: %v", err)
	}
	return g
}

// reached counts the requests that got past the guard, by path.
type reached struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *reached) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.n[r.URL.Path]++
	h.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

func (h *reached) count(path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[path]
}

// credentials set a request's Authorization header.
type credentials func(*http.Request)

func basic(user, pass string) credentials {
	return func(r *http.Request) { r.SetBasicAuth(user, pass) }
}

func header(v string) credentials {
	return func(r *http.Request) { r.Header.Set("Authorization", v) }
}

func bearer(tok string) credentials { return header("Bearer " + tok) }

// TestPermissions runs real HTTP requests through the guard: who gets 200, 401 and 403 on
// which route, and that a refused request never reaches the handler behind the guard.
func TestPermissions(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, fmt.Sprintf(`
basic_auth_users:
  admin: %s
  writer: %s
  reader: %s
  nobody: %s
pyramid:
  user_permissions:
    writer: [write]
    reader: [read]
    nobody: []
  bearer_tokens:
    push: {sha256: %s, permissions: [write]}
    pull: {sha256: %s, permissions: [read]}
    both: {sha256: %s}
    none: {sha256: %s, permissions: []}
  unauthenticated_paths: [/-/healthy]
`, authtest.Bcrypt(t, "admin-pw"), authtest.Bcrypt(t, "writer-pw"), authtest.Bcrypt(t, "reader-pw"), authtest.Bcrypt(t, "nobody-pw"),
		authtest.SHA256("push-token"), authtest.SHA256("pull-token"), authtest.SHA256("both-token"), authtest.SHA256("none-token")))
	g := newGuard(t, path)
	next := &reached{n: map[string]int{}}
	srv := httptest.NewServer(g.Handler(next))
	defer srv.Close()

	const (
		write  = "/api/v1/write"
		read   = "/api/v1/read"
		tiers  = "/api/v1/status/tiers"
		health = "/-/healthy"
		ready  = "/-/ready"
		metric = "/metrics"
	)
	cases := []struct {
		name string
		path string
		cred credentials
		want int
	}{
		{"no credentials, write", write, nil, 401},
		{"no credentials, read", read, nil, 401},
		{"no credentials, metrics not opened", metric, nil, 401},
		{"no credentials, ready not opened", ready, nil, 401},
		{"no credentials, healthy opened", health, nil, 200},
		{"opened path is exact", health + "/", nil, 401},
		{"user without permissions entry writes", write, basic("admin", "admin-pw"), 200},
		{"user without permissions entry reads", read, basic("admin", "admin-pw"), 200},
		{"writer writes", write, basic("writer", "writer-pw"), 200},
		{"writer cannot read", read, basic("writer", "writer-pw"), 403},
		{"writer cannot read tier status", tiers, basic("writer", "writer-pw"), 403},
		{"writer cannot read an unknown route", "/api/v1/query", basic("writer", "writer-pw"), 403},
		{"writer scrapes metrics", metric, basic("writer", "writer-pw"), 200},
		{"reader reads", read, basic("reader", "reader-pw"), 200},
		{"reader reads tier status", tiers, basic("reader", "reader-pw"), 200},
		{"reader cannot write", write, basic("reader", "reader-pw"), 403},
		{"empty permissions cannot write", write, basic("nobody", "nobody-pw"), 403},
		{"empty permissions cannot read", read, basic("nobody", "nobody-pw"), 403},
		{"empty permissions probes", ready, basic("nobody", "nobody-pw"), 200},
		{"wrong password", write, basic("writer", "reader-pw"), 401},
		{"wrong password, second time", write, basic("writer", "reader-pw"), 401},
		{"unknown user", write, basic("mallory", "writer-pw"), 401},
		{"unknown user with the decoy hash's password", write, basic("mallory", "fakepassword"), 401},
		{"empty password", write, basic("writer", ""), 401},
		{"malformed basic", write, header("Basic !!!"), 401},
		{"write token writes", write, bearer("push-token"), 200},
		{"write token cannot read", read, bearer("push-token"), 403},
		{"read token reads", read, bearer("pull-token"), 200},
		{"read token cannot write", write, bearer("pull-token"), 403},
		{"token without permissions writes", write, bearer("both-token"), 200},
		{"token without permissions reads", read, bearer("both-token"), 200},
		{"token with empty permissions cannot write", write, bearer("none-token"), 403},
		{"token with empty permissions cannot read", read, bearer("none-token"), 403},
		{"token with empty permissions scrapes metrics", metric, bearer("none-token"), 200},
		{"scheme is case-insensitive", write, header("bearer push-token"), 200},
		{"wrong token", write, bearer("push-token2"), 401},
		{"empty token", write, header("Bearer "), 401},
		{"token as a password", write, basic("push", "push-token"), 401},
		{"password as a token", write, bearer("writer-pw"), 401},
		{"other scheme", write, header("Digest username=writer"), 401},
	}
	want := map[string]float64{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := next.count(tc.path)
			req, err := http.NewRequest(http.MethodPost, srv.URL+tc.path, strings.NewReader("body"))
			if err != nil {
				t.Fatal(err)
			}
			if tc.cred != nil {
				tc.cred(req)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, strings.TrimSpace(string(body)), tc.want)
			}
			got := next.count(tc.path) - before
			if (tc.want == 200) != (got == 1) {
				t.Errorf("the handler behind the guard ran %d times, want %d", got, map[bool]int{true: 1}[tc.want == 200])
			}
			switch tc.want {
			case 401:
				ch := resp.Header.Values("WWW-Authenticate")
				if strings.Join(ch, ", ") != `Basic realm="pyramid", Bearer realm="pyramid"` {
					t.Errorf("WWW-Authenticate %q, want the Basic and Bearer challenges", ch)
				}
				if tc.cred == nil {
					want[reasonMissing]++
				} else {
					want[reasonWrong]++
				}
			case 403:
				want[reasonForbidden]++
			}
		})
	}
	for _, reason := range []string{reasonMissing, reasonWrong, reasonForbidden} {
		if got := testutil.ToFloat64(g.failures.WithLabelValues(reason)); got != want[reason] {
			t.Errorf("pyramid_auth_failures_total{reason=%q} = %v, want %v", reason, got, want[reason])
		}
	}
}

// TestToolkitFilesAgree feeds files without pyramid's section to pyramid and to
// exporter-toolkit's own validator: a file one accepts the other must accept too, so that
// a web config written for Prometheus or an exporter works unchanged.
func TestToolkitFilesAgree(t *testing.T) {
	ca := authtest.NewCA(t)
	srv := ca.Server(t, "server")
	hash := authtest.Bcrypt(t, "pw")
	tlsBlock := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", srv.CertFile, srv.KeyFile)
	files := []struct {
		name, content string
		ok            bool
	}{
		{"empty", "", true},
		{"users only", "basic_auth_users:\n  u: " + hash + "\n", true},
		{"tls only", tlsBlock, true},
		{"tls and users", tlsBlock + "basic_auth_users:\n  u: " + hash + "\n", true},
		{"client certificates", tlsBlock + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: " + ca.CertFile + "\n", true},
		{"tls options", tlsBlock + "  min_version: TLS13\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [X25519]\n", true},
		{"http2 off and headers", "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n", true},
		{"rate limit", "rate_limit:\n  interval: 1s\n  burst: 10\n", true},
		{"plain-text password", "basic_auth_users:\n  u: secret\n", false},
		{"unknown key", "basic_auth_user:\n  u: " + hash + "\n", false},
		{"missing key file", "tls_server_config:\n  cert_file: " + srv.CertFile + "\n", false},
		{"certificate file not there", "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n", false},
		{"client CA without client auth", tlsBlock + "  client_ca_file: " + ca.CertFile + "\n", false},
		{"bad client auth type", tlsBlock + "  client_auth_type: Sometimes\n", false},
		{"bad TLS version", tlsBlock + "  min_version: TLS99\n", false},
		{"header not allowed", "http_server_config:\n  headers:\n    Server: pyramid\n", false},
		{"header value not allowed", "http_server_config:\n  headers:\n    X-Frame-Options: allow\n", false},
	}
	for _, f := range files {
		t.Run(f.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), f.content)
			toolkitErr := web.Validate(path)
			_, err := New(Config{File: path}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
			if (err == nil) != f.ok || (toolkitErr == nil) != f.ok {
				t.Errorf("pyramid: %v; exporter-toolkit: %v; want ok=%v from both", err, toolkitErr, f.ok)
			}
		})
	}
}

// TestPyramidSectionErrors: mistakes in pyramid's own section stop start-up with an error
// naming the entry, rather than leaving a door open.
func TestPyramidSectionErrors(t *testing.T) {
	hash := authtest.Bcrypt(t, "pw")
	for _, tc := range []struct{ name, content, want string }{
		{"permission typo", "basic_auth_users:\n  u: " + hash + "\npyramid:\n  user_permissions:\n    u: [wirte]\n", `"wirte"`},
		{"permissions of an unknown user", "basic_auth_users:\n  u: " + hash + "\npyramid:\n  user_permissions:\n    v: [read]\n", `user "v" is not in basic_auth_users`},
		{"token in plain text", "pyramid:\n  bearer_tokens:\n    t: {sha256: my-secret-token}\n", `token "t"`},
		{"token hash too short", "pyramid:\n  bearer_tokens:\n    t: {sha256: abcdef}\n", `token "t"`},
		{"token permission typo", "pyramid:\n  bearer_tokens:\n    t: {sha256: " + authtest.SHA256("x") + ", permissions: [admin]}\n", `"admin"`},
		{"two names for one token", "pyramid:\n  bearer_tokens:\n    a: {sha256: " + authtest.SHA256("x") + "}\n    b: {sha256: " + authtest.SHA256("x") + "}\n", "same hash"},
		{"opening a data path", "pyramid:\n  unauthenticated_paths: [/api/v1/read]\n", `"/api/v1/read" cannot be opened`},
		{"unknown key in the section", "pyramid:\n  tokens: {}\n", "tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), tc.content)
			_, err := New(Config{File: path}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %s", err, tc.want)
			}
		})
	}
	if _, err := New(Config{File: filepath.Join(t.TempDir(), "missing.yml")}, slog.Default(), prometheus.NewRegistry()); err == nil {
		t.Error("a missing web config file loaded")
	}
}

// serveTLS serves h through the guard's listener on a loopback port and returns its URL.
func serveTLS(t *testing.T, g *Guard, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: g.Handler(h)}
	go func() { _ = srv.Serve(g.Listener(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String()
}

func tlsClient(cfg *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
}

// TestTLS serves real TLS from the file: the certificate verifies against the test CA,
// HTTP/2 follows http_server_config, and client certificates are required when configured.
func TestTLS(t *testing.T) {
	ca := authtest.NewCA(t)
	server := ca.Server(t, "server")
	client := ca.Client(t, "prometheus")
	tlsBlock := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", server.CertFile, server.KeyFile)
	next := &reached{n: map[string]int{}}

	t.Run("server certificate and HTTP/2", func(t *testing.T) {
		g := newGuard(t, writeFile(t, t.TempDir(), tlsBlock))
		if !g.TLS() {
			t.Fatal("TLS() is false for a file with tls_server_config")
		}
		url := serveTLS(t, g, next)
		resp, err := tlsClient(&tls.Config{RootCAs: ca.Pool()}).Get(url + "/-/ready")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Errorf("status %d over %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
		}
		if _, err := tlsClient(&tls.Config{}).Get(url + "/-/ready"); err == nil {
			t.Error("a client that does not trust the test CA connected")
		}
		if resp, err := http.Get(strings.Replace(url, "https", "http", 1) + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("plain HTTP to the TLS port: status %d, want 400", resp.StatusCode)
			}
		}
	})
	t.Run("http2 off", func(t *testing.T) {
		g := newGuard(t, writeFile(t, t.TempDir(), tlsBlock+"http_server_config:\n  http2: false\n"))
		resp, err := tlsClient(&tls.Config{RootCAs: ca.Pool()}).Get(serveTLS(t, g, next) + "/-/ready")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 1 {
			t.Errorf("served over %s with http2: false", resp.Proto)
		}
	})
	t.Run("client certificates", func(t *testing.T) {
		g := newGuard(t, writeFile(t, t.TempDir(), tlsBlock+"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: "+ca.CertFile+"\n"))
		url := serveTLS(t, g, next)
		if _, err := tlsClient(&tls.Config{RootCAs: ca.Pool()}).Get(url + "/-/ready"); err == nil {
			t.Error("a client without a certificate connected")
		}
		other := authtest.NewCA(t).Client(t, "stranger")
		if _, err := tlsClient(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{other.TLS}}).Get(url + "/-/ready"); err == nil {
			t.Error("a client with a certificate of another CA connected")
		}
		resp, err := tlsClient(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client.TLS}}).Get(url + "/-/ready")
		if err != nil {
			t.Fatalf("client with a certificate of the CA: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("status %d with a client certificate, want 200", resp.StatusCode)
		}
	})
	t.Run("no TLS", func(t *testing.T) {
		g := newGuard(t, writeFile(t, t.TempDir(), "basic_auth_users: {}\n"))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if g.TLS() || g.Listener(ln) != ln {
			t.Error("a file without tls_server_config serves TLS")
		}
	})
}

// TestReload: the file is read again on each request, as exporter-toolkit does. A new user
// gets in without a restart; a broken file fails requests with 500 (Prometheus retries
// them) instead of opening the door, and fixing it brings the service back.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	first := "basic_auth_users:\n  old: " + authtest.Bcrypt(t, "old-pw") + "\n"
	path := writeFile(t, dir, first)
	g := newGuard(t, path)
	srv := httptest.NewServer(g.Handler(&reached{n: map[string]int{}}))
	defer srv.Close()
	status := func(cred credentials) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/write", nil)
		if cred != nil {
			cred(req)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(basic("new", "new-pw")); got != 401 {
		t.Fatalf("unknown user: %d, want 401", got)
	}
	writeFile(t, dir, "basic_auth_users:\n  new: "+authtest.Bcrypt(t, "new-pw")+"\n")
	if got := status(basic("new", "new-pw")); got != 200 {
		t.Errorf("user added to the file: %d, want 200", got)
	}
	if got := status(basic("old", "old-pw")); got != 401 {
		t.Errorf("user removed from the file: %d, want 401", got)
	}
	writeFile(t, dir, "basic_auth_users:\n  new: plain-text\n")
	if got := status(basic("new", "new-pw")); got != 500 {
		t.Errorf("broken file: %d, want 500", got)
	}
	if got := status(nil); got != 500 {
		t.Errorf("broken file, no credentials: %d, want 500", got)
	}
	if v := testutil.ToFloat64(g.loaded); v != 0 {
		t.Errorf("pyramid_web_config_last_reload_successful = %v with a broken file, want 0", v)
	}
	writeFile(t, dir, first)
	if got := status(basic("old", "old-pw")); got != 200 {
		t.Errorf("file fixed: %d, want 200", got)
	}
	if v := testutil.ToFloat64(g.loaded); v != 1 {
		t.Errorf("pyramid_web_config_last_reload_successful = %v after the fix, want 1", v)
	}
}

// TestRateLimitAndHeaders: the file's rate_limit and response headers apply, as in
// exporter-toolkit, before credentials are checked.
func TestRateLimitAndHeaders(t *testing.T) {
	g := newGuard(t, writeFile(t, t.TempDir(), "rate_limit:\n  interval: 1h\n  burst: 1\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"))
	srv := httptest.NewServer(g.Handler(&reached{n: map[string]int{}}))
	defer srv.Close()
	var codes []int
	for range 2 {
		resp, err := srv.Client().Get(srv.URL + "/-/healthy")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
		if h := resp.Header.Get("X-Content-Type-Options"); h != "nosniff" {
			t.Errorf("X-Content-Type-Options %q, want nosniff", h)
		}
	}
	if codes[0] != 200 || codes[1] != 429 {
		t.Errorf("statuses %v with a burst of 1 per hour, want [200 429]", codes)
	}
}
